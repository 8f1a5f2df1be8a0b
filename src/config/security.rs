//! The security flags both binaries share, and how they become one
//! [`Security`] value for every connection.
//!
//! Each flag is also a property (`security.protocol`, `sasl.*`, `ssl.*`,
//! folded into flags by [`fold`](super::fold)) and an environment variable
//! (`KAFKA_SECURITY_PROTOCOL`, ...). Secret flags are held as [`Secret`]s,
//! so they are redacted in `Debug`, and a `${env:NAME}` / `${file:PATH}`
//! value is read at each use rather than once.

use std::path::PathBuf;
use std::time::Duration;

use crate::config::jaas::{JaasConfig, LoginModule};
use crate::config::secret::Secret;
use crate::error::{Error, Result};
use crate::protocol::sasl::{Credentials, Mechanism, SaslConfig, TokenSource};
use crate::protocol::tls::TlsSettings;
use crate::protocol::{Security, SecurityProtocol};

fn secret(s: &str) -> std::result::Result<Secret, String> {
    Ok(Secret::parse(s))
}

/// TLS and SASL settings (properties `security.protocol`, `sasl.*`, `ssl.*`).
///
/// Their environment variables (`KAFKA_SECURITY_PROTOCOL`, ...) are read by
/// [`fold`](super::fold), not by clap: the SASL credentials are one setting
/// there (a JAAS line in a file must not be paired with a user name from the
/// environment), which needs to see every layer at once.
#[derive(clap::Args, Clone, Debug, Default)]
#[command(
    next_help_heading = "Security (property name in brackets; environment variable KAFKA_ + the name in capitals with _ for .)"
)]
pub struct SecurityArgs {
    /// PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL [security.protocol].
    #[arg(long, value_name = "PROTOCOL")]
    pub security_protocol: Option<String>,
    /// PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER [sasl.mechanism].
    #[arg(long, value_name = "MECHANISM")]
    pub sasl_mechanism: Option<String>,
    /// SASL user name [sasl.username].
    #[arg(long, value_name = "USER")]
    pub sasl_username: Option<String>,
    /// SASL password [sasl.password]; on the command line it is visible to
    /// other users, so prefer KAFKA_SASL_PASSWORD, --config, or ${file:PATH}.
    #[arg(long, value_parser = secret, value_name = "PASSWORD")]
    pub sasl_password: Option<Secret>,
    /// Java JAAS line with username/password, or OAuthBearerLoginModule's
    /// unsecuredLoginStringClaim_sub [sasl.jaas.config].
    #[arg(long, value_parser = secret, value_name = "JAAS")]
    pub sasl_jaas_config: Option<Secret>,
    /// OAUTHBEARER token (a JWT), best as ${file:PATH} or ${env:NAME}: read
    /// again at every (re-)authentication [sasl.oauthbearer.token].
    #[arg(long, value_parser = secret, value_name = "TOKEN")]
    pub sasl_oauthbearer_token: Option<Secret>,
    /// PEM file of the CA(s) to trust; default: the system store [ssl.ca.location].
    #[arg(long, value_name = "PEM")]
    pub ssl_ca_location: Option<PathBuf>,
    /// PEM client certificate, for mutual TLS [ssl.certificate.location].
    #[arg(long, value_name = "PEM")]
    pub ssl_certificate_location: Option<PathBuf>,
    /// PEM client key (PKCS#8, PKCS#1 or SEC1; encrypted PKCS#8 with
    /// --ssl-key-password) [ssl.key.location].
    #[arg(long, value_name = "PEM")]
    pub ssl_key_location: Option<PathBuf>,
    /// Password of an encrypted client key [ssl.key.password].
    #[arg(long, value_parser = secret, value_name = "PASSWORD")]
    pub ssl_key_password: Option<Secret>,
    /// `https` (default) checks the broker's host name; empty turns only
    /// that check off, as in Java [ssl.endpoint.identification.algorithm].
    #[arg(long, value_name = "ALGORITHM")]
    pub ssl_endpoint_identification_algorithm: Option<String>,
}

impl SecurityArgs {
    /// Builds the settings every connection uses, reading the TLS files now
    /// (so a bad path fails at start-up). Returns warnings for settings the
    /// protocol leaves unused. Errors are [`Error::Usage`], never with a secret.
    pub fn resolve(&self) -> Result<(Security, Vec<String>)> {
        let usage = Error::Usage;
        let protocol = match &self.security_protocol {
            Some(p) => SecurityProtocol::parse(p).map_err(usage)?,
            None => SecurityProtocol::Plaintext,
        };
        let mut warnings = Vec::new();
        let sasl_given = self.sasl_mechanism.is_some()
            || self.sasl_username.is_some()
            || self.sasl_password.is_some()
            || self.sasl_jaas_config.is_some()
            || self.sasl_oauthbearer_token.is_some();
        if sasl_given && !protocol.uses_sasl() {
            warnings.push(format!(
                "SASL settings are ignored with security.protocol={}: use SASL_SSL or SASL_PLAINTEXT to authenticate",
                protocol.name()
            ));
        }
        let tls_given = self.ssl_ca_location.is_some()
            || self.ssl_certificate_location.is_some()
            || self.ssl_key_location.is_some();
        if tls_given && !protocol.uses_tls() {
            warnings.push(format!(
                "ssl.* settings are ignored with security.protocol={}: use SSL or SASL_SSL for TLS",
                protocol.name()
            ));
        }
        let sasl = if protocol.uses_sasl() {
            Some(self.sasl()?)
        } else {
            None
        };
        let verify_hostname = match self.ssl_endpoint_identification_algorithm.as_deref() {
            None => true,
            Some(a) if a.eq_ignore_ascii_case("https") => true,
            Some(a) if a.trim().is_empty() || a.eq_ignore_ascii_case("none") => false,
            Some(other) => {
                return Err(Error::Usage(format!(
                    "ssl.endpoint.identification.algorithm '{other}' is not https or empty"
                )));
            }
        };
        let tls = TlsSettings {
            ca_location: self.ssl_ca_location.clone(),
            certificate_location: self.ssl_certificate_location.clone(),
            key_location: self.ssl_key_location.clone(),
            key_password: self.ssl_key_password.clone(),
            verify_hostname,
        };
        // Read every secret once now: a missing variable or file is a
        // configuration mistake to report before connecting.
        let secrets = [
            ("sasl.password", &self.sasl_password),
            ("sasl.oauthbearer.token", &self.sasl_oauthbearer_token),
            ("ssl.key.password", &self.ssl_key_password),
        ];
        for (name, secret) in secrets {
            if let Some(secret) = secret {
                secret
                    .reveal()
                    .map_err(|e| Error::Usage(format!("{name}: {e}")))?;
            }
        }
        if let Some(SaslConfig {
            credentials: Credentials::Password { password, .. },
            ..
        }) = &sasl
        {
            password
                .reveal()
                .map_err(|e| Error::Usage(format!("the SASL password: {e}")))?;
        }
        let security = Security::new(protocol, tls, sasl).map_err(usage)?;
        Ok((security, warnings))
    }

    /// The SASL mechanism and credentials, from the librdkafka-style
    /// properties (which win) and the Java JAAS line.
    fn sasl(&self) -> Result<SaslConfig> {
        let jaas = match &self.sasl_jaas_config {
            Some(secret) => {
                let text = secret
                    .reveal()
                    .map_err(|e| Error::Usage(format!("sasl.jaas.config: {e}")))?;
                Some(
                    // Its errors already start with "sasl.jaas.config: ".
                    JaasConfig::parse(&text).map_err(Error::Usage)?,
                )
            }
            None => None,
        };
        let module = jaas.as_ref().map(JaasConfig::module);
        let mechanism = match (&self.sasl_mechanism, module) {
            (Some(m), _) => Mechanism::parse(m).map_err(Error::Usage)?,
            (None, Some(LoginModule::Plain)) => Mechanism::Plain,
            (None, Some(LoginModule::OAuthBearer)) => Mechanism::OAuthBearer,
            (None, None) if self.sasl_oauthbearer_token.is_some() => Mechanism::OAuthBearer,
            (None, _) => {
                return Err(Error::Usage(
                    "set sasl.mechanism: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER".into(),
                ));
            }
        };
        let expected = match mechanism {
            Mechanism::Plain => LoginModule::Plain,
            Mechanism::ScramSha256 | Mechanism::ScramSha512 => LoginModule::Scram,
            Mechanism::OAuthBearer => LoginModule::OAuthBearer,
        };
        if let Some(found) = module
            && found != expected
        {
            return Err(Error::Usage(format!(
                "sasl.jaas.config names the {found:?} login module, but sasl.mechanism is {mechanism}: use the {expected:?} login module"
            )));
        }
        let credentials = if mechanism == Mechanism::OAuthBearer {
            if let Some(token) = &self.sasl_oauthbearer_token {
                Credentials::Token(TokenSource::Bearer(token.clone()))
            } else if let Some(subject) = jaas
                .as_ref()
                .and_then(|j| j.option("unsecuredLoginStringClaim_sub"))
            {
                let lifetime = jaas
                    .as_ref()
                    .and_then(|j| j.option("unsecuredLoginLifetimeSeconds"))
                    .and_then(|s| s.parse::<u64>().ok())
                    .unwrap_or(3600);
                Credentials::Token(TokenSource::Unsecured {
                    subject: subject.to_string(),
                    lifetime: Duration::from_secs(lifetime),
                })
            } else {
                return Err(Error::Usage(
                    "OAUTHBEARER needs a token: set sasl.oauthbearer.token (e.g. ${file:/run/secrets/token}), or for a development broker sasl.jaas.config with OAuthBearerLoginModule required unsecuredLoginStringClaim_sub=\"NAME\";".into(),
                ));
            }
        } else {
            let username = self.sasl_username.clone().or_else(|| {
                jaas.as_ref()
                    .and_then(|j| j.option("username"))
                    .map(str::to_string)
            });
            let password = self.sasl_password.clone().or_else(|| {
                jaas.as_ref()
                    .and_then(|j| j.option("password"))
                    .map(Secret::parse)
            });
            match (username, password) {
                (Some(username), Some(password)) => Credentials::Password { username, password },
                _ => {
                    return Err(Error::Usage(format!(
                        "SASL {mechanism} needs a user name and a password: set sasl.username and sasl.password, or sasl.jaas.config"
                    )));
                }
            }
        };
        Ok(SaslConfig {
            mechanism,
            credentials,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> SecurityArgs {
        SecurityArgs::default()
    }

    #[test]
    fn plaintext_is_the_default() {
        let (s, w) = args().resolve().unwrap();
        assert_eq!(s.protocol(), SecurityProtocol::Plaintext);
        assert!(w.is_empty());
    }

    #[test]
    fn a_scram_jaas_line_gives_user_and_password() {
        let a = SecurityArgs {
            security_protocol: Some("SASL_PLAINTEXT".into()),
            sasl_mechanism: Some("SCRAM-SHA-512".into()),
            sasl_jaas_config: Some(Secret::literal(
                r#"org.apache.kafka.common.security.scram.ScramLoginModule required username="scram512" password="hunter2-secret";"#,
            )),
            ..args()
        };
        let (s, _) = a.resolve().unwrap();
        let sasl = s.sasl().unwrap();
        assert_eq!(sasl.mechanism, Mechanism::ScramSha512);
        match &sasl.credentials {
            Credentials::Password { username, password } => {
                assert_eq!(username, "scram512");
                assert_eq!(password.reveal().unwrap(), "hunter2-secret");
            }
            other => panic!("{other:?}"),
        }
        assert!(!format!("{s:?} {a:?}").contains("hunter2-secret"));
    }

    #[test]
    fn librdkafka_style_credentials_win_over_the_jaas_line() {
        let a = SecurityArgs {
            security_protocol: Some("SASL_PLAINTEXT".into()),
            sasl_username: Some("bob".into()),
            sasl_jaas_config: Some(Secret::literal(
                r#"org.apache.kafka.common.security.plain.PlainLoginModule required username="alice" password="pw";"#,
            )),
            ..args()
        };
        let (s, _) = a.resolve().unwrap();
        let sasl = s.sasl().unwrap();
        assert_eq!(sasl.mechanism, Mechanism::Plain, "inferred from the module");
        assert_eq!(sasl.principal_hint().unwrap(), "User:bob");
    }

    #[test]
    fn a_module_that_does_not_match_the_mechanism_is_refused() {
        let a = SecurityArgs {
            security_protocol: Some("SASL_SSL".into()),
            sasl_mechanism: Some("SCRAM-SHA-256".into()),
            sasl_jaas_config: Some(Secret::literal(
                r#"org.apache.kafka.common.security.plain.PlainLoginModule required username="a" password="b";"#,
            )),
            ..args()
        };
        let err = a.resolve().unwrap_err().to_string();
        assert!(err.contains("Scram"), "{err}");
    }

    #[test]
    fn scram_without_a_mechanism_asks_for_one() {
        let a = SecurityArgs {
            security_protocol: Some("SASL_SSL".into()),
            sasl_jaas_config: Some(Secret::literal(
                r#"org.apache.kafka.common.security.scram.ScramLoginModule required username="a" password="b";"#,
            )),
            ..args()
        };
        assert!(
            a.resolve()
                .unwrap_err()
                .to_string()
                .contains("set sasl.mechanism")
        );
    }

    #[test]
    fn an_unsecured_oauth_login_makes_a_token_for_the_subject() {
        let a = SecurityArgs {
            security_protocol: Some("SASL_PLAINTEXT".into()),
            sasl_jaas_config: Some(Secret::literal(
                r#"org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required unsecuredLoginStringClaim_sub="oauth-user";"#,
            )),
            ..args()
        };
        let (s, _) = a.resolve().unwrap();
        assert_eq!(s.principal_hint(), "User:oauth-user");
    }

    #[test]
    fn unused_settings_are_warned_about() {
        let a = SecurityArgs {
            sasl_mechanism: Some("PLAIN".into()),
            ..args()
        };
        let (_, w) = a.resolve().unwrap();
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("SASL_SSL"), "{w:?}");
    }

    #[test]
    fn hostname_verification_is_off_only_when_asked() {
        for (value, ok) in [("https", true), ("", true), ("none", true), ("http", false)] {
            let a = SecurityArgs {
                ssl_endpoint_identification_algorithm: Some(value.into()),
                ..args()
            };
            assert_eq!(a.resolve().is_ok(), ok, "{value}");
        }
    }
}
