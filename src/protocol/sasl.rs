//! Who we are to the broker: the SASL mechanism, its credentials, and the
//! client side of each mechanism's exchange.
//!
//! The exchange itself (SaslHandshake v1, then SaslAuthenticate frames, and
//! KIP-368 re-authentication) is driven by [`Connection`](super::Connection);
//! this module only says what to send next. PLAIN and SCRAM-SHA-256/512 come
//! from `rsasl` (the crate rskafka uses too, so both halves of the client
//! authenticate the same way); OAUTHBEARER's one-message exchange (RFC 7628)
//! is written here, because its token has to be read fresh at every
//! authentication.
//!
//! Credentials are read through [`Secret`] at each authentication, so a
//! rotated password file or token file is picked up on the next connection
//! or re-authentication, and nothing here ever formats a secret.

use std::fmt;
use std::io::Cursor;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::config::secret::Secret;

/// A SASL mechanism we can authenticate with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mechanism {
    /// `PLAIN`: user name and password in the clear (use it over TLS only).
    Plain,
    /// `SCRAM-SHA-256` (RFC 7677).
    ScramSha256,
    /// `SCRAM-SHA-512`.
    ScramSha512,
    /// `OAUTHBEARER` (RFC 7628) with a JWT bearer token.
    OAuthBearer,
}

impl Mechanism {
    /// Every mechanism, in the order they are listed to users.
    pub const ALL: [Mechanism; 4] = [
        Mechanism::Plain,
        Mechanism::ScramSha256,
        Mechanism::ScramSha512,
        Mechanism::OAuthBearer,
    ];

    /// The name Kafka uses (`sasl.mechanism`, SaslHandshake).
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha512 => "SCRAM-SHA-512",
            Mechanism::OAuthBearer => "OAUTHBEARER",
        }
    }

    /// Parses a `sasl.mechanism` value (case-insensitive).
    pub fn parse(s: &str) -> Result<Self, String> {
        let upper = s.trim().to_ascii_uppercase();
        Self::ALL
            .into_iter()
            .find(|m| m.name() == upper)
            .ok_or_else(|| match upper.as_str() {
                "GSSAPI" => "sasl.mechanism GSSAPI (Kerberos) is not supported: use PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER".to_string(),
                _ => format!(
                    "sasl.mechanism '{s}' is not one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER"
                ),
            })
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where an OAUTHBEARER token comes from.
#[derive(Clone, Debug)]
pub enum TokenSource {
    /// A JWT read through a [`Secret`] (a file or an environment variable),
    /// read again at every authentication so a refreshed token is used.
    Bearer(Secret),
    /// An unsigned token for `subject` (`"alg":"none"`), for brokers that run
    /// Kafka's unsecured validator in development, as Java's
    /// `unsecuredLoginStringClaim_sub` JAAS option makes.
    Unsecured {
        /// The `sub` claim: the principal name the broker sees.
        subject: String,
        /// How long each generated token is valid.
        lifetime: Duration,
    },
}

impl TokenSource {
    /// The token to send now. A token whose `exp` claim has passed is an
    /// error here rather than a rejection by the broker, so the message can
    /// say where the stale token came from.
    pub fn token(&self) -> Result<String, String> {
        match self {
            TokenSource::Bearer(secret) => {
                let token = secret
                    .reveal()
                    .map_err(|e| format!("reading the OAUTHBEARER token: {e}"))?;
                let token = token.trim().to_string();
                if token.is_empty() {
                    return Err(format!(
                        "the OAUTHBEARER token from {} is empty",
                        secret.origin()
                    ));
                }
                if let Some(exp) = jwt_expiry(&token) {
                    if exp <= now_secs() {
                        return Err(format!(
                            "the OAUTHBEARER token from {} expired {} s ago: refresh it (the token is read again at every authentication)",
                            secret.origin(),
                            now_secs() - exp
                        ));
                    }
                }
                Ok(token)
            }
            TokenSource::Unsecured { subject, lifetime } => {
                let now = now_secs();
                let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#);
                let claims = serde_json::json!({
                    "sub": subject,
                    "iat": now,
                    "exp": now + lifetime.as_secs().max(1),
                });
                let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
                Ok(format!("{header}.{claims}."))
            }
        }
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The `exp` claim (seconds since the epoch) of a JWT, if it has one.
pub fn jwt_expiry(token: &str) -> Option<u64> {
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?.as_f64()?;
    (exp >= 0.0).then_some(exp as u64)
}

/// The credentials a mechanism needs.
#[derive(Clone, Debug)]
pub enum Credentials {
    /// PLAIN and SCRAM: a user name and its password.
    Password {
        /// The user (the principal `User:<username>` on the broker).
        username: String,
        /// The password; never formatted.
        password: Secret,
    },
    /// OAUTHBEARER: a token source.
    Token(TokenSource),
}

/// A mechanism and its credentials: everything SASL needs for one connection.
#[derive(Clone, Debug)]
pub struct SaslConfig {
    /// The mechanism to ask the broker for.
    pub mechanism: Mechanism,
    /// What that mechanism sends.
    pub credentials: Credentials,
}

impl SaslConfig {
    /// The principal the broker will most likely see (`User:alice`), for
    /// messages about missing ACLs; `None` when only the token knows.
    pub fn principal_hint(&self) -> Option<String> {
        match &self.credentials {
            Credentials::Password { username, .. } => Some(format!("User:{username}")),
            Credentials::Token(TokenSource::Unsecured { subject, .. }) => {
                Some(format!("User:{subject}"))
            }
            Credentials::Token(TokenSource::Bearer(_)) => None,
        }
    }

    /// Starts the client side of one exchange, reading the credentials now.
    pub(crate) fn start(&self) -> Result<Session, String> {
        match (&self.credentials, self.mechanism) {
            (Credentials::Token(source), Mechanism::OAuthBearer) => Ok(Session::OAuth {
                token: Some(source.token()?),
            }),
            (Credentials::Password { username, password }, mechanism)
                if mechanism != Mechanism::OAuthBearer =>
            {
                let password = password
                    .reveal()
                    .map_err(|e| format!("reading the SASL password: {e}"))?;
                let config =
                    rsasl::config::SASLConfig::with_credentials(None, username.clone(), password)
                        .map_err(|e| format!("SASL set-up failed: {e}"))?;
                let name = rsasl::mechname::Mechname::parse(mechanism.name().as_bytes())
                    .map_err(|e| format!("SASL set-up failed: {e}"))?;
                let session = rsasl::prelude::SASLClient::new(config)
                    .start_suggested(&[name])
                    .map_err(|e| format!("SASL {mechanism} is not available: {e}"))?;
                Ok(Session::Rsasl(Box::new(session)))
            }
            _ => Err(format!(
                "sasl.mechanism {} needs {}",
                self.mechanism,
                if self.mechanism == Mechanism::OAuthBearer {
                    "a token (sasl.oauthbearer.token, or sasl.jaas.config with OAuthBearerLoginModule)"
                } else {
                    "sasl.username and sasl.password (or sasl.jaas.config)"
                }
            )),
        }
    }

    /// The same settings for rskafka's client, which authenticates its own
    /// connections (metadata, produce). The password is read once here;
    /// an OAUTHBEARER token is read at every authentication.
    pub fn to_rskafka(&self) -> Result<rskafka::client::SaslConfig, String> {
        use rskafka::client::{
            Credentials as RsCredentials, OauthBearerCredentials, SaslConfig as Rs,
        };
        match &self.credentials {
            Credentials::Password { username, password } => {
                let password = password
                    .reveal()
                    .map_err(|e| format!("reading the SASL password: {e}"))?;
                let creds = RsCredentials::new(username.clone(), password);
                Ok(match self.mechanism {
                    Mechanism::Plain => Rs::Plain(creds),
                    Mechanism::ScramSha256 => Rs::ScramSha256(creds),
                    Mechanism::ScramSha512 => Rs::ScramSha512(creds),
                    Mechanism::OAuthBearer => {
                        return Err(
                            "sasl.mechanism OAUTHBEARER needs a token, not a password".into()
                        );
                    }
                })
            }
            Credentials::Token(source) => {
                let source = Arc::new(source.clone());
                Ok(Rs::Oauthbearer(OauthBearerCredentials {
                    callback: Arc::new(move || {
                        let source = source.clone();
                        Box::pin(async move {
                            source
                                .token()
                                .map_err(Box::<dyn std::error::Error + Send + Sync>::from)
                        })
                    }),
                    authz_id: None,
                    bearer_kvs: Vec::new(),
                }))
            }
        }
    }
}

/// What the client sends next, and whether the exchange is over on our side.
pub(crate) struct Step {
    /// Bytes for the next SaslAuthenticate request, if any.
    pub send: Option<Vec<u8>>,
    /// No further message is expected from the broker.
    pub finished: bool,
}

/// The client side of one authentication exchange.
pub(crate) enum Session {
    /// PLAIN and SCRAM.
    Rsasl(Box<rsasl::prelude::Session>),
    /// OAUTHBEARER: the token until the first message is sent.
    OAuth { token: Option<String> },
}

impl Session {
    /// Feeds the broker's last answer (`None` at the start) and returns what
    /// to send next. Errors never contain credentials.
    pub(crate) fn step(&mut self, received: Option<&[u8]>) -> Result<Step, String> {
        match self {
            Session::Rsasl(session) => {
                let mut out = Cursor::new(Vec::new());
                let state = session
                    .step(received, &mut out)
                    .map_err(|e| format!("the SASL exchange failed on our side: {e}"))?;
                Ok(Step {
                    send: state.has_sent_message().then(|| out.into_inner()),
                    finished: state.is_finished(),
                })
            }
            Session::OAuth { token } => match (token.take(), received) {
                // RFC 7628 initial client response: gs2 header, then kvpairs.
                (Some(t), _) => Ok(Step {
                    send: Some(format!("n,,\x01auth=Bearer {t}\x01\x01").into_bytes()),
                    finished: false,
                }),
                // An empty answer is success.
                (None, None) | (None, Some([])) => Ok(Step {
                    send: None,
                    finished: true,
                }),
                // A JSON error: the client must answer with a lone %x01, and
                // the broker then fails the exchange with its error message.
                (None, Some(_)) => Ok(Step {
                    send: Some(vec![0x01]),
                    finished: true,
                }),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mechanisms_parse_case_insensitively_and_gssapi_is_explained() {
        assert_eq!(
            Mechanism::parse("scram-sha-512").unwrap(),
            Mechanism::ScramSha512
        );
        assert_eq!(Mechanism::parse("PLAIN").unwrap(), Mechanism::Plain);
        assert!(Mechanism::parse("GSSAPI").unwrap_err().contains("Kerberos"));
        assert!(
            Mechanism::parse("SCRAM")
                .unwrap_err()
                .contains("SCRAM-SHA-256")
        );
    }

    #[test]
    fn unsecured_tokens_carry_subject_and_expiry() {
        let source = TokenSource::Unsecured {
            subject: "oauth-user".into(),
            lifetime: Duration::from_secs(600),
        };
        let token = source.token().unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[2], "", "unsigned");
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["sub"], "oauth-user");
        let exp = jwt_expiry(&token).unwrap();
        assert!(exp > now_secs() + 500 && exp <= now_secs() + 600);
    }

    #[test]
    fn an_expired_token_is_refused_with_its_origin_and_never_printed() {
        let claims = URL_SAFE_NO_PAD.encode(br#"{"sub":"x","exp":1000}"#);
        let token = format!("e30.{claims}.sig-very-secret");
        let secret = Secret::literal(token.clone());
        let err = TokenSource::Bearer(secret).token().unwrap_err();
        assert!(err.contains("expired"), "{err}");
        assert!(!err.contains("sig-very-secret"), "{err}");
    }

    #[test]
    fn oauthbearer_sends_the_rfc7628_message_then_acknowledges_an_error() {
        let mut s = Session::OAuth {
            token: Some("abc.def.".into()),
        };
        let first = s.step(None).unwrap();
        assert_eq!(first.send.unwrap(), b"n,,\x01auth=Bearer abc.def.\x01\x01");
        assert!(!first.finished);
        let err = s.step(Some(br#"{"status":"invalid_token"}"#)).unwrap();
        assert_eq!(err.send.unwrap(), vec![0x01]);
        let mut ok = Session::OAuth {
            token: Some("t".into()),
        };
        ok.step(None).unwrap();
        let done = ok.step(Some(b"")).unwrap();
        assert!(done.finished && done.send.is_none());
    }

    #[test]
    fn plain_sends_authzid_user_and_password() {
        let config = SaslConfig {
            mechanism: Mechanism::Plain,
            credentials: Credentials::Password {
                username: "alice".into(),
                password: Secret::literal("alice-secret"),
            },
        };
        let mut s = config.start().unwrap();
        let step = s.step(None).unwrap();
        assert_eq!(step.send.unwrap(), b"\0alice\0alice-secret");
    }

    #[test]
    fn debug_output_never_shows_the_password() {
        let config = SaslConfig {
            mechanism: Mechanism::ScramSha256,
            credentials: Credentials::Password {
                username: "alice".into(),
                password: Secret::literal("hunter2-secret"),
            },
        };
        let shown = format!("{config:?}");
        assert!(
            shown.contains("alice") && !shown.contains("hunter2-secret"),
            "{shown}"
        );
    }
}
