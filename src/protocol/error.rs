//! Why a request on our own connection failed, and which failures a
//! caller should retry on a new connection ([`ProtocolError::is_transport`]).

use std::fmt;
use std::io;
use std::time::Duration;

use kafka_protocol::messages::ApiKey;

use super::VersionRange;

/// Why a request on a [`Connection`](super::Connection) failed. Every variant names the broker
/// and, where there is one, the API, and its `Display` is one line saying what
/// to do.
#[derive(Debug)]
pub enum ProtocolError {
    /// The TCP connection could not be established.
    Connect {
        /// Address we dialled.
        broker: String,
        /// The OS error.
        source: io::Error,
    },
    /// The TCP connection did not complete within the connect timeout.
    ConnectTimeout {
        /// Address we dialled.
        broker: String,
        /// The timeout that elapsed.
        after: Duration,
    },
    /// Reading or writing the socket failed (including the broker closing it).
    Io {
        /// Broker address.
        broker: String,
        /// API of the request in flight.
        api: ApiKey,
        /// The OS error.
        source: io::Error,
    },
    /// No complete response arrived within the request timeout.
    Timeout {
        /// Broker address.
        broker: String,
        /// API of the request in flight.
        api: ApiKey,
        /// The timeout that elapsed.
        after: Duration,
    },
    /// An earlier failure left the stream in an unknown state; the connection
    /// refuses further requests and must be replaced.
    Broken {
        /// Broker address.
        broker: String,
    },
    /// Our request could not be encoded (a bug: a field set that the chosen
    /// version does not have).
    Encode {
        /// Broker address.
        broker: String,
        /// API being encoded.
        api: ApiKey,
        /// Version being encoded.
        version: i16,
        /// What the encoder reported.
        detail: String,
    },
    /// The broker's response could not be decoded or did not fit the framing
    /// (truncated, oversized, wrong correlation id, garbage).
    Decode {
        /// Broker address.
        broker: String,
        /// API of the response.
        api: ApiKey,
        /// Version it was decoded at.
        version: i16,
        /// What went wrong.
        detail: String,
    },
    /// The broker and we share no version of an API.
    UnsupportedVersion {
        /// Broker address.
        broker: String,
        /// The API.
        api: ApiKey,
        /// Versions we implement.
        ours: VersionRange,
        /// Versions the broker advertised, `None` if it does not know the API.
        theirs: Option<VersionRange>,
    },
    /// The ApiVersions handshake returned an error code.
    Handshake {
        /// Broker address.
        broker: String,
        /// Kafka error code.
        code: i16,
    },
    /// The broker hung up while the connection was being set up (TLS
    /// handshake, first request, SASL handshake). Usually the port speaks
    /// another security protocol, but a restarting broker or a connection
    /// limit look the same, so this is retried like any lost connection;
    /// `hint` says which setting to check if it persists.
    ClosedEarly {
        /// The broker address.
        broker: String,
        /// Where it hung up and what to check, one line.
        hint: &'static str,
    },
    /// TLS or SASL failed: an untrusted certificate, a wrong password, a
    /// mechanism the broker does not enable, a TLS alert in answer to a
    /// plaintext request. Retrying cannot help; the settings must change.
    Security {
        /// The broker address.
        broker: String,
        /// What went wrong and what to change, one line, no secrets.
        detail: String,
    },
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Connect { broker, source } => write!(
                f,
                "cannot connect to Kafka broker {broker}: {source} (is the broker running and the address right?)"
            ),
            Self::ConnectTimeout { broker, after } => write!(
                f,
                "connecting to Kafka broker {broker} timed out after {after:?} (check the address, firewall and advertised.listeners)"
            ),
            Self::Io {
                broker,
                api,
                source,
            } => write!(
                f,
                "connection to Kafka broker {broker} failed during {api:?}: {source} (the broker may have restarted; retry)"
            ),
            Self::Timeout { broker, api, after } => write!(
                f,
                "Kafka broker {broker} did not answer {api:?} within {after:?} (broker overloaded or unreachable; retry)"
            ),
            Self::Broken { broker } => write!(
                f,
                "connection to Kafka broker {broker} is unusable after an earlier failure; reconnect"
            ),
            Self::Encode {
                broker,
                api,
                version,
                detail,
            } => write!(
                f,
                "cannot encode {api:?} v{version} for Kafka broker {broker}: {detail} (a bug in mykafkams; please report it)"
            ),
            Self::Decode {
                broker,
                api,
                version,
                detail,
            } => write!(
                f,
                "invalid {api:?} v{version} response from Kafka broker {broker}: {detail} (is this a Kafka broker?)"
            ),
            Self::UnsupportedVersion {
                broker,
                api,
                ours,
                theirs: Some(theirs),
            } => write!(
                f,
                "Kafka broker {broker} supports {api:?} versions {theirs}, mykafkams needs {ours} (upgrade the broker)"
            ),
            Self::UnsupportedVersion {
                broker,
                api,
                ours,
                theirs: None,
            } => write!(
                f,
                "Kafka broker {broker} does not support {api:?}, mykafkams needs versions {ours} (upgrade the broker)"
            ),
            Self::Handshake { broker, code } => write!(
                f,
                "Kafka broker {broker} rejected the ApiVersions handshake with error code {code} (is this a Kafka broker?)"
            ),
            Self::ClosedEarly { broker, hint } => {
                write!(f, "Kafka broker {broker} closed the connection {hint}")
            }
            Self::Security { broker, detail } => {
                write!(
                    f,
                    "secure connection to Kafka broker {broker} failed: {detail}"
                )
            }
        }
    }
}

impl std::error::Error for ProtocolError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Connect { source, .. } | Self::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl ProtocolError {
    /// True when the failure is about the transport (connect, I/O, timeout,
    /// broken stream), so reconnecting and retrying may succeed; false for
    /// protocol mismatches that a retry cannot fix.
    pub fn is_transport(&self) -> bool {
        matches!(
            self,
            Self::Connect { .. }
                | Self::ConnectTimeout { .. }
                | Self::Io { .. }
                | Self::Timeout { .. }
                | Self::Broken { .. }
                | Self::ClosedEarly { .. }
        )
    }
}
