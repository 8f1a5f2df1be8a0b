//! The security settings every connection of a run shares: the security
//! protocol, the TLS client config built from it, and the SASL settings.
//!
//! One [`Security`] value is built at start-up (by the configuration layer)
//! and handed to both our own connections and rskafka's client, so no
//! connection the binaries open can end up with weaker settings than another.

use std::fmt;
use std::sync::Arc;

use super::sasl::SaslConfig;
use super::tls::TlsSettings;

/// Kafka's `security.protocol`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SecurityProtocol {
    /// No TLS, no SASL.
    #[default]
    Plaintext,
    /// TLS, optionally with a client certificate (mutual TLS).
    Ssl,
    /// SASL over plain TCP.
    SaslPlaintext,
    /// SASL over TLS: what managed clusters use.
    SaslSsl,
}

impl SecurityProtocol {
    /// Parses a `security.protocol` value (case-insensitive).
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_uppercase().as_str() {
            "PLAINTEXT" => Ok(Self::Plaintext),
            "SSL" => Ok(Self::Ssl),
            "SASL_PLAINTEXT" => Ok(Self::SaslPlaintext),
            "SASL_SSL" => Ok(Self::SaslSsl),
            _ => Err(format!(
                "security.protocol '{s}' is not one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"
            )),
        }
    }

    /// Kafka's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Plaintext => "PLAINTEXT",
            Self::Ssl => "SSL",
            Self::SaslPlaintext => "SASL_PLAINTEXT",
            Self::SaslSsl => "SASL_SSL",
        }
    }

    /// Whether connections use TLS.
    pub fn uses_tls(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }

    /// Whether connections authenticate with SASL.
    pub fn uses_sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }
}

/// What every connection to the cluster uses: TLS (when the protocol says
/// so) and SASL (likewise). Cloning is cheap; `Debug` shows no secret.
#[derive(Clone, Default)]
pub struct Security {
    protocol: SecurityProtocol,
    tls: Option<Arc<rustls::ClientConfig>>,
    sasl: Option<SaslConfig>,
}

impl Security {
    /// Checks that the pieces fit the protocol (TLS settings only for SSL
    /// and SASL_SSL, SASL settings required for the SASL protocols) and
    /// builds the TLS config, reading its files now.
    pub fn new(
        protocol: SecurityProtocol,
        tls: TlsSettings,
        sasl: Option<SaslConfig>,
    ) -> Result<Self, String> {
        if protocol.uses_sasl() && sasl.is_none() {
            return Err(format!(
                "security.protocol={} needs SASL credentials: set sasl.mechanism and sasl.username/sasl.password (or sasl.jaas.config)",
                protocol.name()
            ));
        }
        let sasl = if protocol.uses_sasl() { sasl } else { None };
        let tls = if protocol.uses_tls() {
            Some(tls.client_config()?)
        } else {
            None
        };
        Ok(Self {
            protocol,
            tls,
            sasl,
        })
    }

    /// Plain TCP, no authentication (the default).
    pub fn plaintext() -> Self {
        Self::default()
    }

    /// The security protocol.
    pub fn protocol(&self) -> SecurityProtocol {
        self.protocol
    }

    /// The TLS client config, for SSL and SASL_SSL.
    pub fn tls(&self) -> Option<&Arc<rustls::ClientConfig>> {
        self.tls.as_ref()
    }

    /// The SASL settings, for SASL_PLAINTEXT and SASL_SSL.
    pub fn sasl(&self) -> Option<&SaslConfig> {
        self.sasl.as_ref()
    }

    /// The principal the broker most likely sees, for messages about ACLs.
    pub fn principal_hint(&self) -> String {
        self.sasl
            .as_ref()
            .and_then(SaslConfig::principal_hint)
            .unwrap_or_else(|| match self.protocol {
                SecurityProtocol::Ssl => "the principal of your client certificate".into(),
                SecurityProtocol::Plaintext => "User:ANONYMOUS".into(),
                _ => "your principal".into(),
            })
    }
}

impl fmt::Debug for Security {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Security")
            .field("protocol", &self.protocol)
            .field("tls", &self.tls.is_some())
            .field("sasl", &self.sasl.as_ref().map(|s| s.mechanism))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::secret::Secret;
    use crate::protocol::sasl::{Credentials, Mechanism};

    fn scram() -> SaslConfig {
        SaslConfig {
            mechanism: Mechanism::ScramSha256,
            credentials: Credentials::Password {
                username: "alice".into(),
                password: Secret::literal("hunter2-secret"),
            },
        }
    }

    #[test]
    fn sasl_protocols_need_credentials() {
        let err =
            Security::new(SecurityProtocol::SaslSsl, TlsSettings::default(), None).unwrap_err();
        assert!(err.contains("sasl.mechanism"), "{err}");
    }

    #[test]
    fn plaintext_protocols_carry_no_tls_and_ssl_ones_do() {
        let s = Security::new(
            SecurityProtocol::SaslPlaintext,
            TlsSettings::default(),
            Some(scram()),
        )
        .unwrap();
        assert!(s.tls().is_none() && s.sasl().is_some());
        let s = Security::new(
            SecurityProtocol::Plaintext,
            TlsSettings::default(),
            Some(scram()),
        )
        .unwrap();
        assert!(
            s.sasl().is_none(),
            "SASL settings are ignored without a SASL protocol"
        );
    }

    #[test]
    fn protocol_names_round_trip() {
        for p in [
            SecurityProtocol::Plaintext,
            SecurityProtocol::Ssl,
            SecurityProtocol::SaslPlaintext,
            SecurityProtocol::SaslSsl,
        ] {
            assert_eq!(
                SecurityProtocol::parse(&p.name().to_lowercase()).unwrap(),
                p
            );
        }
        assert!(
            SecurityProtocol::parse("TLS")
                .unwrap_err()
                .contains("SASL_SSL")
        );
    }

    #[test]
    fn debug_names_the_mechanism_but_not_the_password() {
        let s = Security::new(
            SecurityProtocol::SaslPlaintext,
            TlsSettings::default(),
            Some(scram()),
        )
        .unwrap();
        let shown = format!("{s:?}");
        assert!(
            shown.contains("ScramSha256") && !shown.contains("hunter2"),
            "{shown}"
        );
    }
}
