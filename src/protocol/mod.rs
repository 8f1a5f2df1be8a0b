//! A minimal Kafka connection of our own, for the APIs rskafka does not speak.
//!
//! rskafka covers produce and metadata but has no consumer-group APIs
//! (FindCoordinator, OffsetCommit, OffsetFetch, JoinGroup, ...), and its fetch
//! cannot decode transaction markers. Those, and our Metadata + Fetch, are
//! encoded with the `kafka-protocol` crate's generated message types and sent
//! over this connection: a tokio `TcpStream` with Kafka's 4-byte big-endian
//! length framing (`frame.rs`), a request header carrying a correlation id and the client
//! id [`CLIENT_ID`], and an ApiVersions handshake on connect so every request
//! goes out at the highest version both sides support.
//!
//! One [`Connection`] serves requests one at a time (a tokio mutex around the
//! socket): Kafka answers requests on one connection in order, and the group
//! APIs are low-volume, so pipelining is not worth its complexity here.
//!
//! Security lives below the framing: [`transport`] opens TCP or TLS
//! ([`tls`] builds the rustls config), and after the ApiVersions handshake
//! the connection authenticates with SASL ([`sasl`]) when the
//! [`Security`] settings say so, re-authenticating before the broker's
//! session lifetime runs out (KIP-368).

mod error;
mod frame;
pub mod pipeline;
pub mod sasl;
pub mod security;
pub mod tls;
pub mod transport;

pub use error::ProtocolError;
use frame::{FrameError, encode_frame, split_response_header};
pub use security::{Security, SecurityProtocol};

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, ConsumerGroupHeartbeatRequest,
    ConsumerGroupHeartbeatResponse, DescribeConfigsRequest, DescribeConfigsResponse, FetchRequest,
    FetchResponse, FindCoordinatorRequest, FindCoordinatorResponse, HeartbeatRequest,
    HeartbeatResponse, InitProducerIdRequest, InitProducerIdResponse, JoinGroupRequest,
    JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse, ListOffsetsRequest,
    ListOffsetsResponse, MetadataRequest, MetadataResponse, OffsetCommitRequest,
    OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse, ProduceRequest, ProduceResponse,
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
    SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use tokio::sync::Mutex;

use transport::Stream;

pub use kafka_protocol::protocol::VersionRange;

/// Default client id sent in request headers (see [`ConnectionConfig::client_id`]),
/// so broker logs, quotas and `kafka-consumer-groups --members` can
/// attribute our traffic.
pub const CLIENT_ID: &str = "mykafkams";

/// Kafka error code UNSUPPORTED_VERSION, the one ApiVersions error we recover
/// from (by retrying at a version the broker names).
const UNSUPPORTED_VERSION: i16 = 35;

/// The ApiVersions versions this module implements. v3+ is flexible (compact
/// encodings, tagged fields); v0 is what a broker answers with when it does
/// not support the version we asked for.
const API_VERSIONS_RANGE: VersionRange = VersionRange { min: 0, max: 4 };

/// A request type we can send: its API key and the response it expects.
///
/// `kafka-protocol`'s own `Request` trait is only implemented with both its
/// `client` and `broker` features (it needs requests to decode too); this is
/// the client half of it.
pub trait ApiRequest: Encodable + HeaderVersion {
    /// The API this request belongs to.
    const KEY: ApiKey;
    /// The response the broker answers with.
    type Response: Decodable + HeaderVersion;
}

macro_rules! api_requests {
    ($($req:ty => $resp:ty, $key:ident;)*) => {
        $(impl ApiRequest for $req {
            const KEY: ApiKey = ApiKey::$key;
            type Response = $resp;
        })*
    };
}

api_requests! {
    ApiVersionsRequest => ApiVersionsResponse, ApiVersions;
    FindCoordinatorRequest => FindCoordinatorResponse, FindCoordinator;
    OffsetFetchRequest => OffsetFetchResponse, OffsetFetch;
    OffsetCommitRequest => OffsetCommitResponse, OffsetCommit;
    // Classic group membership.
    JoinGroupRequest => JoinGroupResponse, JoinGroup;
    SyncGroupRequest => SyncGroupResponse, SyncGroup;
    HeartbeatRequest => HeartbeatResponse, Heartbeat;
    LeaveGroupRequest => LeaveGroupResponse, LeaveGroup;
    // KIP-848 group membership.
    ConsumerGroupHeartbeatRequest => ConsumerGroupHeartbeatResponse, ConsumerGroupHeartbeat;
    // The consumer's fetch path (rskafka cannot decode transaction markers).
    MetadataRequest => MetadataResponse, Metadata;
    FetchRequest => FetchResponse, Fetch;
    ListOffsetsRequest => ListOffsetsResponse, ListOffsets;
    SaslHandshakeRequest => SaslHandshakeResponse, SaslHandshake;
    SaslAuthenticateRequest => SaslAuthenticateResponse, SaslAuthenticate;
    // The idempotent producer (rskafka always sends producer id -1).
    ProduceRequest => ProduceResponse, Produce;
    InitProducerIdRequest => InitProducerIdResponse, InitProducerId;
    DescribeConfigsRequest => DescribeConfigsResponse, DescribeConfigs;
}

/// SaslHandshake v1: the mechanism's messages then travel in SaslAuthenticate
/// frames (v0 sent them raw; re-authentication needs v1).
const SASL_HANDSHAKE_VERSION: i16 = 1;
/// SaslAuthenticate versions we speak (v1 adds the session lifetime).
const SASL_AUTHENTICATE_VERSIONS: VersionRange = VersionRange { min: 0, max: 2 };
/// Kafka's UNSUPPORTED_SASL_MECHANISM error code.
const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
/// Kafka's ILLEGAL_SASL_STATE error code.
const ILLEGAL_SASL_STATE: i16 = 34;

/// Identity, timeouts and limits of one connection: every connection the
/// crate opens is built from one of these, so settings that apply to every
/// broker connection (client id, TLS, SASL) live here.
#[derive(Clone, Debug)]
pub struct ConnectionConfig {
    /// Client id sent in every request header (default [`CLIENT_ID`]).
    pub client_id: Arc<str>,
    /// Upper bound for establishing the TCP connection (per address tried).
    pub connect_timeout: Duration,
    /// Upper bound for one request: writing it and reading its whole response.
    pub request_timeout: Duration,
    /// Largest response frame accepted; a larger length prefix means a
    /// corrupt stream (or a non-Kafka peer) and fails the request instead of
    /// allocating it.
    pub max_response_bytes: usize,
    /// TLS and SASL for this connection.
    pub security: Security,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        Self {
            client_id: Arc::from(CLIENT_ID),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_response_bytes: 100 * 1024 * 1024,
            security: Security::plaintext(),
        }
    }
}

/// The socket and the correlation-id counter, guarded together so one
/// request's write and read are never interleaved with another's.
struct Wire {
    /// `None` once a failure (or a dropped request future) left the stream
    /// mid-frame: a late response could otherwise be taken as the answer to
    /// the next request.
    stream: Option<Stream>,
    next_correlation_id: i32,
    /// When SASL must run again on this connection (KIP-368): a little
    /// before the session lifetime the broker gave at the last authentication.
    reauthenticate_at: Option<Instant>,
}

/// One connection to one Kafka broker, with negotiated API versions.
///
/// Requests are sent one at a time; concurrent callers queue on an internal
/// mutex. After a transport failure or a framing error the connection reports
/// [`ProtocolError::Broken`] for every later request: drop it and connect
/// again.
pub struct Connection {
    broker: String,
    config: ConnectionConfig,
    /// Versions the broker advertised, by API key.
    broker_versions: HashMap<i16, VersionRange>,
    wire: Mutex<Wire>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("broker", &self.broker)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Connects to `broker` ("host:port") and runs the ApiVersions handshake.
    ///
    /// Guarantees on success: the TCP connection is up and
    /// [`Connection::negotiate`] knows the broker's supported versions. Fails
    /// within `config.connect_timeout + config.request_timeout` (per
    /// handshake attempt) otherwise.
    pub async fn connect(broker: &str, config: ConnectionConfig) -> Result<Self, ProtocolError> {
        let tls = config.security.tls().cloned();
        let stream = transport::open(broker, tls.as_ref(), config.connect_timeout).await?;
        let mut conn = Self {
            broker: broker.to_string(),
            config,
            broker_versions: HashMap::new(),
            wire: Mutex::new(Wire {
                stream: Some(stream),
                next_correlation_id: 0,
                reauthenticate_at: None,
            }),
        };
        conn.broker_versions = match conn.handshake().await {
            Ok(versions) => versions,
            Err(e) => return Err(conn.explain_failed_hello(e)),
        };
        if conn.config.security.sasl().is_some() {
            let mut wire = conn.wire.lock().await;
            conn.authenticate(&mut wire, conn.config.request_timeout)
                .await?;
        }
        Ok(conn)
    }

    /// A broker that hangs up on (or answers garbage to) our very first
    /// request most likely expects another security protocol on this port;
    /// say which setting to check.
    fn explain_failed_hello(&self, e: ProtocolError) -> ProtocolError {
        let tls = self.config.security.protocol().uses_tls();
        match e {
            // TLS 1.3 checks the client certificate after the handshake, so
            // a refused (or missing) certificate arrives as an alert on the
            // first read.
            ProtocolError::Io { broker, source, .. }
                if source
                    .get_ref()
                    .is_some_and(|inner| inner.is::<rustls::Error>()) =>
            {
                let detail = tls::explain_handshake_error(transport::host_of(&broker), &source);
                ProtocolError::Security { broker, detail }
            }
            ProtocolError::Io { broker, source, .. }
                if matches!(
                    source.kind(),
                    io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset
                ) =>
            {
                let hint = if tls {
                    "right after the TLS handshake (is this port a Kafka listener?)"
                } else {
                    "at the first request: if this port is a TLS listener, set security.protocol=SSL or SASL_SSL"
                };
                ProtocolError::ClosedEarly { broker, hint }
            }
            ProtocolError::Decode { broker, detail, .. } if detail.contains("TLS") => {
                ProtocolError::Security { broker, detail }
            }
            other => other,
        }
    }

    /// Runs SASL on `wire` (SaslHandshake v1, then SaslAuthenticate until the
    /// mechanism is done) and schedules the re-authentication the broker's
    /// session lifetime asks for. Used at connect and for KIP-368.
    async fn authenticate(&self, wire: &mut Wire, timeout: Duration) -> Result<(), ProtocolError> {
        let Some(sasl) = self.config.security.sasl() else {
            return Ok(());
        };
        let security = |detail: String| ProtocolError::Security {
            broker: self.broker.clone(),
            detail,
        };
        // A first authentication that the broker hangs up on means the port
        // is no SASL listener; a re-authentication that fails so is only a
        // lost connection (e.g. the session ran out during a long poll),
        // which callers retry on a new one.
        let first = wire.reauthenticate_at.is_none();
        let handshake = SaslHandshakeRequest::default()
            .with_mechanism(StrBytes::from_static_str(sasl.mechanism.name()));
        let answer = self
            .request_on(wire, &handshake, SASL_HANDSHAKE_VERSION, timeout)
            .await
            .map_err(|e| match e {
                ProtocolError::Io { broker, .. } if first => ProtocolError::ClosedEarly {
                    broker,
                    hint: "at the SASL handshake: this port may not be a SASL listener (check security.protocol)",
                },
                other => other,
            })?;
        match answer.error_code {
            0 => {}
            UNSUPPORTED_SASL_MECHANISM => {
                let offered: Vec<String> =
                    answer.mechanisms.iter().map(|m| m.to_string()).collect();
                return Err(security(if offered.is_empty() {
                    format!(
                        "the listener does not accept SASL (no mechanism enabled): use security.protocol={} for this port, or the broker's SASL port",
                        if self.config.security.protocol().uses_tls() {
                            "SSL"
                        } else {
                            "PLAINTEXT"
                        }
                    )
                } else {
                    format!(
                        "the broker does not enable SASL mechanism {} on this listener; it offers {}: set sasl.mechanism to one of them",
                        sasl.mechanism,
                        offered.join(", ")
                    )
                }));
            }
            ILLEGAL_SASL_STATE => {
                return Err(security(
                    "the broker did not expect SASL on this connection: this port may not be a SASL listener (check security.protocol)".into(),
                ));
            }
            code => {
                return Err(security(format!(
                    "SaslHandshake failed with error code {code}"
                )));
            }
        }
        let version = self.negotiate(ApiKey::SaslAuthenticate, SASL_AUTHENTICATE_VERSIONS)?;
        let mut session = sasl.start().map_err(security)?;
        let mut received: Option<Bytes> = None;
        let mut lifetime_ms = 0i64;
        loop {
            let step = session.step(received.as_deref()).map_err(security)?;
            if let Some(bytes) = step.send {
                let request =
                    SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(bytes));
                let answer = self.request_on(wire, &request, version, timeout).await?;
                if answer.error_code != 0 {
                    let said = answer
                        .error_message
                        .as_ref()
                        .map(|m| m.to_string())
                        .unwrap_or_else(|| format!("error code {}", answer.error_code));
                    return Err(security(format!(
                        "authentication as {} with {} failed: {} (check the user name and password or token: sasl.username/sasl.password, sasl.jaas.config or sasl.oauthbearer.token)",
                        sasl.principal_hint()
                            .unwrap_or_else(|| "the token's subject".into()),
                        sasl.mechanism,
                        said.trim()
                    )));
                }
                lifetime_ms = answer.session_lifetime_ms;
                received = Some(answer.auth_bytes);
            }
            if step.finished {
                break;
            }
        }
        // Java re-authenticates at 85-95 % of the lifetime; 85 % leaves room
        // for a long-poll fetch that is in flight when the moment comes.
        wire.reauthenticate_at = (lifetime_ms > 0).then(|| {
            Instant::now() + Duration::from_millis((lifetime_ms as u64).saturating_mul(85) / 100)
        });
        tracing::debug!(
            broker = %self.broker,
            mechanism = %sasl.mechanism,
            session_lifetime_ms = lifetime_ms,
            "SASL authentication complete"
        );
        Ok(())
    }

    /// The address this connection was opened to.
    pub fn broker(&self) -> &str {
        &self.broker
    }

    /// The versions of `api` the broker advertised, `None` if it does not
    /// support the API at all.
    pub fn broker_versions(&self, api: ApiKey) -> Option<VersionRange> {
        self.broker_versions.get(&(api as i16)).copied()
    }

    /// Picks the version to use for `api`: the highest one both the broker
    /// and `ours` (the versions the caller can build and read) support.
    pub fn negotiate(&self, api: ApiKey, ours: VersionRange) -> Result<i16, ProtocolError> {
        let theirs = self.broker_versions(api);
        match theirs.map(|t| t.intersect(&ours)) {
            Some(common) if !common.is_empty() => Ok(common.max),
            _ => Err(ProtocolError::UnsupportedVersion {
                broker: self.broker.clone(),
                api,
                ours,
                theirs,
            }),
        }
    }

    /// Sends `request` at `version` and returns the decoded response.
    ///
    /// The caller chooses `version` (normally via [`Connection::negotiate`])
    /// because request shapes differ between versions. Header versions
    /// (flexible or not) follow from `version`. The whole exchange is bounded
    /// by the request timeout; a malformed response is an error, never a
    /// panic.
    pub async fn send<R: ApiRequest>(
        &self,
        request: &R,
        version: i16,
    ) -> Result<R::Response, ProtocolError> {
        self.send_within(request, version, self.config.request_timeout)
            .await
    }

    /// Like [`send`](Self::send), with a timeout of its own for this one
    /// request: a JoinGroup may legitimately wait on the broker for the whole
    /// rebalance timeout, while a heartbeat must fail fast.
    pub async fn send_within<R: ApiRequest>(
        &self,
        request: &R,
        version: i16,
        timeout: Duration,
    ) -> Result<R::Response, ProtocolError> {
        let mut wire = self.wire.lock().await;
        if wire
            .reauthenticate_at
            .is_some_and(|at| Instant::now() >= at)
        {
            // KIP-368: a broker with connections.max.reauth.ms closes a
            // connection whose session expired at its next request, so
            // authenticate again first, on the same connection.
            self.authenticate(&mut wire, timeout.min(self.config.request_timeout))
                .await?;
            tracing::debug!(broker = %self.broker, "re-authenticated (KIP-368)");
        }
        self.request_on(&mut wire, request, version, timeout).await
    }

    /// One typed request on an already locked wire.
    async fn request_on<R: ApiRequest>(
        &self,
        wire: &mut Wire,
        request: &R,
        version: i16,
        timeout: Duration,
    ) -> Result<R::Response, ProtocolError> {
        let api = R::KEY;
        let mut body = self
            .exchange_on(
                wire,
                (api, version),
                (
                    R::header_version(version),
                    R::Response::header_version(version),
                ),
                timeout,
                |buf| request.encode(buf, version).map_err(|e| e.to_string()),
            )
            .await?;
        self.decode_body::<R::Response>(api, version, &mut body)
    }

    /// Decodes a response body, turning decoder errors and (defensively) any
    /// panic inside the generated decoder into [`ProtocolError::Decode`].
    fn decode_body<T: Decodable>(
        &self,
        api: ApiKey,
        version: i16,
        body: &mut Bytes,
    ) -> Result<T, ProtocolError> {
        let decode_error = |detail: String| ProtocolError::Decode {
            broker: self.broker.clone(),
            api,
            version,
            detail,
        };
        match catch_unwind(AssertUnwindSafe(|| T::decode(body, version))) {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(decode_error(e.to_string().trim().to_string())),
            Err(_) => Err(decode_error("decoder panicked on malformed input".into())),
        }
    }

    /// ApiVersions handshake: ask at our highest version; a broker that does
    /// not know it answers UNSUPPORTED_VERSION in a v0 body naming its own
    /// range, and we ask once more at the best common version.
    async fn handshake(&self) -> Result<HashMap<i16, VersionRange>, ProtocolError> {
        let mut version = API_VERSIONS_RANGE.max;
        for _attempt in 0..2 {
            let request = ApiVersionsRequest::default()
                .with_client_software_name(StrBytes::from_static_str(CLIENT_ID))
                .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
            let mut wire = self.wire.lock().await;
            let raw = self
                .exchange_on(
                    &mut wire,
                    (ApiKey::ApiVersions, version),
                    (
                        ApiVersionsRequest::header_version(version),
                        ApiVersionsResponse::header_version(version),
                    ),
                    self.config.request_timeout,
                    |buf| request.encode(buf, version).map_err(|e| e.to_string()),
                )
                .await?;
            let response = match self.decode_body::<ApiVersionsResponse>(
                ApiKey::ApiVersions,
                version,
                &mut raw.clone(),
            ) {
                Ok(r) if r.error_code != UNSUPPORTED_VERSION => r,
                // Either an explicit UNSUPPORTED_VERSION or an undecodable
                // body: both mean "the broker answered in v0".
                first => match self.decode_body::<ApiVersionsResponse>(
                    ApiKey::ApiVersions,
                    0,
                    &mut raw.clone(),
                ) {
                    Ok(r) if r.error_code == UNSUPPORTED_VERSION && version > 0 => {
                        let theirs = r
                            .api_keys
                            .iter()
                            .find(|k| k.api_key == ApiKey::ApiVersions as i16)
                            .map(|k| VersionRange {
                                min: k.min_version,
                                max: k.max_version,
                            });
                        let common = theirs.map(|t| t.intersect(&API_VERSIONS_RANGE));
                        match common {
                            Some(c) if !c.is_empty() && c.max < version => {
                                version = c.max;
                                continue;
                            }
                            _ => {
                                return Err(ProtocolError::UnsupportedVersion {
                                    broker: self.broker.clone(),
                                    api: ApiKey::ApiVersions,
                                    ours: API_VERSIONS_RANGE,
                                    theirs,
                                });
                            }
                        }
                    }
                    _ => first?,
                },
            };
            if response.error_code != 0 {
                return Err(ProtocolError::Handshake {
                    broker: self.broker.clone(),
                    code: response.error_code,
                });
            }
            return Ok(response
                .api_keys
                .iter()
                .map(|k| {
                    (
                        k.api_key,
                        VersionRange {
                            min: k.min_version,
                            max: k.max_version,
                        },
                    )
                })
                .collect());
        }
        Err(ProtocolError::Handshake {
            broker: self.broker.clone(),
            code: UNSUPPORTED_VERSION,
        })
    }

    /// Frames and sends one request, then reads its response frame and strips
    /// the response header. Returns the response body, undecoded.
    async fn exchange_on(
        &self,
        wire: &mut Wire,
        (api, version): (ApiKey, i16),
        (request_header_version, response_header_version): (i16, i16),
        timeout: Duration,
        encode_body: impl FnOnce(&mut BytesMut) -> Result<(), String>,
    ) -> Result<Bytes, ProtocolError> {
        let correlation_id = wire.next_correlation_id;
        wire.next_correlation_id = wire.next_correlation_id.wrapping_add(1);

        let frame = encode_frame(
            api,
            version,
            request_header_version,
            correlation_id,
            &self.config.client_id,
            256,
            encode_body,
        )
        .map_err(|detail| ProtocolError::Encode {
            broker: self.broker.clone(),
            api,
            version,
            detail,
        })?;

        // Out of the slot for the round trip: if the caller's future is
        // dropped mid-request (a timeout around it, a select), the stream
        // goes with it instead of staying behind mid-frame, and the next
        // request reports the connection broken (a transport error the
        // callers retry on a new connection).
        let Some(mut stream) = wire.stream.take() else {
            return Err(ProtocolError::Broken {
                broker: self.broker.clone(),
            });
        };
        let max = self.config.max_response_bytes;
        let result =
            tokio::time::timeout(timeout, frame::round_trip(&mut stream, &frame, max)).await;
        let response = match result {
            Err(_) => {
                return Err(ProtocolError::Timeout {
                    broker: self.broker.clone(),
                    api,
                    after: timeout,
                });
            }
            Ok(Err(FrameError::Io(source))) => {
                return Err(ProtocolError::Io {
                    broker: self.broker.clone(),
                    api,
                    source,
                });
            }
            Ok(Err(FrameError::Bad(detail))) => {
                return Err(ProtocolError::Decode {
                    broker: self.broker.clone(),
                    api,
                    version,
                    detail,
                });
            }
            Ok(Ok(response)) => response,
        };

        // A mismatched correlation id means responses and requests are out
        // of step; nothing later on this stream can be trusted, so the
        // stream is only put back after a good header.
        let body = split_response_header(response, response_header_version, correlation_id)
            .map_err(|detail| ProtocolError::Decode {
                broker: self.broker.clone(),
                api,
                version,
                detail,
            })?;
        wire.stream = Some(stream);
        Ok(body)
    }
}

/// A broker address as `host:port` from the host and port a broker reports
/// (Metadata, FindCoordinator), bracketing IPv6 literals so it parses again.
pub fn format_addr(host: &str, port: i32) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    //! Framing and handshake against an in-process fake broker. The fake
    //! writes hand-built response bytes because `kafka-protocol` only
    //! encodes responses with its `broker` feature, which we do not enable.

    use super::*;

    #[test]
    fn broker_addresses_bracket_ipv6_hosts() {
        assert_eq!(format_addr("::1", 9092), "[::1]:9092");
        assert_eq!(format_addr("[::1]", 9092), "[::1]:9092");
        assert_eq!(format_addr("kafka-1", 9092), "kafka-1:9092");
    }
    use super::frame::tests::with_header_v0;
    use bytes::Buf;
    use bytes::BufMut;
    use kafka_protocol::messages::{FindCoordinatorRequest, FindCoordinatorResponse};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    fn config() -> ConnectionConfig {
        ConnectionConfig {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_millis(500),
            max_response_bytes: 1024 * 1024,
            ..ConnectionConfig::default()
        }
    }

    /// A request as the fake broker sees it.
    struct Seen {
        api_key: i16,
        api_version: i16,
        correlation_id: i32,
        client_id: String,
    }

    async fn read_request(s: &mut TcpStream) -> Option<Seen> {
        let len = s.read_i32().await.ok()?;
        let mut buf = vec![0u8; len as usize];
        s.read_exact(&mut buf).await.ok()?;
        let mut b = &buf[..];
        let api_key = b.get_i16();
        let api_version = b.get_i16();
        let correlation_id = b.get_i32();
        let n = b.get_i16() as usize;
        let client_id = String::from_utf8(b[..n].to_vec()).unwrap();
        Some(Seen {
            api_key,
            api_version,
            correlation_id,
            client_id,
        })
    }

    async fn write_frame(s: &mut TcpStream, payload: &[u8]) {
        s.write_i32(payload.len() as i32).await.unwrap();
        s.write_all(payload).await.unwrap();
    }

    /// ApiVersions v3+ body (flexible): error, compact array of keys, throttle.
    fn api_versions_v3(keys: &[(i16, i16, i16)]) -> Vec<u8> {
        let mut b = BytesMut::new();
        b.put_i16(0);
        b.put_u8(keys.len() as u8 + 1);
        for &(k, min, max) in keys {
            b.put_i16(k);
            b.put_i16(min);
            b.put_i16(max);
            b.put_u8(0); // tagged fields
        }
        b.put_i32(0); // throttle
        b.put_u8(0); // tagged fields
        b.to_vec()
    }

    /// ApiVersions v0 body: error code and plain array of keys.
    fn api_versions_v0(error: i16, keys: &[(i16, i16, i16)]) -> Vec<u8> {
        let mut b = BytesMut::new();
        b.put_i16(error);
        b.put_i32(keys.len() as i32);
        for &(k, min, max) in keys {
            b.put_i16(k);
            b.put_i16(min);
            b.put_i16(max);
        }
        b.to_vec()
    }

    /// Starts a fake broker running `script` on the first accepted socket.
    async fn fake_broker<F, Fut>(script: F) -> String
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            script(s).await;
        });
        addr
    }

    const KEYS: &[(i16, i16, i16)] = &[(18, 0, 4), (10, 0, 6), (8, 2, 9), (9, 1, 9)];

    #[tokio::test]
    async fn handshake_negotiates_highest_common_version() {
        let addr = fake_broker(|mut s| async move {
            let req = read_request(&mut s).await.unwrap();
            assert_eq!(req.api_key, ApiKey::ApiVersions as i16);
            assert_eq!(req.api_version, 4);
            assert_eq!(req.client_id, CLIENT_ID);
            write_frame(
                &mut s,
                &with_header_v0(req.correlation_id, &api_versions_v3(KEYS)),
            )
            .await;
            // Keep the socket open until the client is done.
            let _ = read_request(&mut s).await;
        })
        .await;
        let conn = Connection::connect(&addr, config()).await.unwrap();
        let ours = VersionRange { min: 0, max: 12 };
        assert_eq!(conn.negotiate(ApiKey::OffsetCommit, ours).unwrap(), 9);
        let narrow = VersionRange { min: 3, max: 5 };
        assert_eq!(conn.negotiate(ApiKey::OffsetFetch, narrow).unwrap(), 5);
        let too_new = VersionRange { min: 10, max: 12 };
        let err = conn.negotiate(ApiKey::OffsetFetch, too_new).unwrap_err();
        assert!(
            err.to_string()
                .contains("supports OffsetFetch versions 1..9"),
            "{err}"
        );
        let err = conn.negotiate(ApiKey::JoinGroup, ours).unwrap_err();
        assert!(
            err.to_string().contains("does not support JoinGroup"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn handshake_falls_back_when_broker_answers_v0() {
        let addr = fake_broker(|mut s| async move {
            let req = read_request(&mut s).await.unwrap();
            assert_eq!(req.api_version, 4);
            let body = api_versions_v0(UNSUPPORTED_VERSION, &[(18, 0, 2)]);
            write_frame(&mut s, &with_header_v0(req.correlation_id, &body)).await;
            let req = read_request(&mut s).await.unwrap();
            assert_eq!(req.api_version, 2);
            // v1-2 = the v0 layout plus throttle_time_ms.
            let mut body = api_versions_v0(0, &[(18, 0, 2), (10, 0, 2)]);
            body.extend_from_slice(&0i32.to_be_bytes());
            write_frame(&mut s, &with_header_v0(req.correlation_id, &body)).await;
            let _ = read_request(&mut s).await;
        })
        .await;
        let conn = Connection::connect(&addr, config()).await.unwrap();
        assert_eq!(
            conn.broker_versions(ApiKey::FindCoordinator),
            Some(VersionRange { min: 0, max: 2 })
        );
    }

    #[tokio::test]
    async fn request_round_trip_uses_flexible_headers() {
        let addr = fake_broker(|mut s| async move {
            let req = read_request(&mut s).await.unwrap();
            write_frame(
                &mut s,
                &with_header_v0(req.correlation_id, &api_versions_v3(KEYS)),
            )
            .await;
            // FindCoordinator v3: flexible request header (v2), response header v1.
            let req = read_request(&mut s).await.unwrap();
            assert_eq!(req.api_key, ApiKey::FindCoordinator as i16);
            assert_eq!(req.api_version, 3);
            let mut b = BytesMut::new();
            b.put_i32(req.correlation_id);
            b.put_u8(0); // response header tag buffer
            b.put_i32(0); // throttle
            b.put_i16(0); // error
            b.put_u8(0); // error message: null compact string
            b.put_i32(1); // node id
            b.put_u8(10); // host: compact string of 9 bytes
            b.put_slice(b"localhost");
            b.put_i32(9092);
            b.put_u8(0); // tag buffer
            write_frame(&mut s, &b).await;
            let _ = read_request(&mut s).await;
        })
        .await;
        let conn = Connection::connect(&addr, config()).await.unwrap();
        let req = FindCoordinatorRequest::default().with_key(StrBytes::from_static_str("g"));
        let resp: FindCoordinatorResponse = conn.send(&req, 3).await.unwrap();
        assert_eq!(resp.host.as_str(), "localhost");
        assert_eq!(resp.port, 9092);
        assert_eq!(*resp.node_id, 1);
    }

    #[tokio::test]
    async fn garbage_response_is_an_error_and_breaks_the_connection() {
        let addr = fake_broker(|mut s| async move {
            let req = read_request(&mut s).await.unwrap();
            write_frame(
                &mut s,
                &with_header_v0(req.correlation_id, &api_versions_v3(KEYS)),
            )
            .await;
            let req = read_request(&mut s).await.unwrap();
            // Right correlation id, then a truncated body.
            write_frame(&mut s, &with_header_v0(req.correlation_id, &[0, 0, 0])).await;
            let req = read_request(&mut s).await;
            assert!(req.is_none(), "client must not reuse a broken stream");
        })
        .await;
        let conn = Connection::connect(&addr, config()).await.unwrap();
        let req = FindCoordinatorRequest::default().with_key(StrBytes::from_static_str("g"));
        let err = conn.send(&req, 2).await.unwrap_err();
        assert!(matches!(err, ProtocolError::Decode { .. }), "{err}");
    }

    #[tokio::test]
    async fn oversized_or_wrong_correlation_breaks_the_connection() {
        let addr = fake_broker(|mut s| async move {
            let req = read_request(&mut s).await.unwrap();
            write_frame(
                &mut s,
                &with_header_v0(req.correlation_id, &api_versions_v3(KEYS)),
            )
            .await;
            let req = read_request(&mut s).await.unwrap();
            write_frame(&mut s, &with_header_v0(req.correlation_id + 1, &[])).await;
            let _ = read_request(&mut s).await;
        })
        .await;
        let conn = Connection::connect(&addr, config()).await.unwrap();
        let req = FindCoordinatorRequest::default().with_key(StrBytes::from_static_str("g"));
        let err = conn.send(&req, 2).await.unwrap_err();
        assert!(err.to_string().contains("correlation id"), "{err}");
        let err = conn.send(&req, 2).await.unwrap_err();
        assert!(matches!(err, ProtocolError::Broken { .. }), "{err}");
    }

    #[tokio::test]
    async fn a_request_dropped_mid_flight_breaks_the_connection() {
        let addr = fake_broker(|mut s| async move {
            let req = read_request(&mut s).await.unwrap();
            write_frame(
                &mut s,
                &with_header_v0(req.correlation_id, &api_versions_v3(KEYS)),
            )
            .await;
            // Read the request and answer late, after the caller gave up.
            let req = read_request(&mut s).await.unwrap();
            tokio::time::sleep(Duration::from_millis(200)).await;
            write_frame(&mut s, &with_header_v0(req.correlation_id, &[0; 16])).await;
            let _ = read_request(&mut s).await;
        })
        .await;
        let conn = Connection::connect(&addr, config()).await.unwrap();
        let req = FindCoordinatorRequest::default().with_key(StrBytes::from_static_str("g"));
        let dropped = tokio::time::timeout(Duration::from_millis(50), conn.send(&req, 2)).await;
        assert!(dropped.is_err(), "the fake answers late");
        // The late answer must never be read as the next request's.
        let err = conn.send(&req, 2).await.unwrap_err();
        assert!(matches!(err, ProtocolError::Broken { .. }), "{err}");
        assert!(err.is_transport());
    }

    #[tokio::test]
    async fn silent_broker_times_out() {
        let addr = fake_broker(|mut s| async move {
            let _ = read_request(&mut s).await;
            tokio::time::sleep(Duration::from_secs(5)).await;
        })
        .await;
        let err = Connection::connect(&addr, config()).await.unwrap_err();
        assert!(matches!(err, ProtocolError::Timeout { .. }), "{err}");
        assert!(err.is_transport());
        assert!(
            err.to_string().contains("did not answer ApiVersions"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn refused_connection_names_the_broker() {
        // Bind then drop to get a port nobody listens on.
        let addr = {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap().to_string()
        };
        let err = Connection::connect(&addr, config()).await.unwrap_err();
        assert!(matches!(err, ProtocolError::Connect { .. }), "{err}");
        assert!(err.to_string().contains(&addr), "{err}");
    }

    #[tokio::test]
    async fn a_hang_up_at_the_first_request_is_retried_with_a_hint() {
        // A TLS listener, a connection limit or a restarting broker: all
        // hang up on the first request. Callers must retry it as a lost
        // connection, and the message says what to check if it persists.
        let addr = fake_broker(|s| async move { drop(s) }).await;
        let err = Connection::connect(&addr, config()).await.unwrap_err();
        assert!(matches!(err, ProtocolError::ClosedEarly { .. }), "{err}");
        assert!(err.is_transport(), "retried like a lost connection");
        assert!(err.to_string().contains("security.protocol=SSL"), "{err}");
    }

    #[tokio::test]
    async fn a_tls_alert_in_answer_to_plaintext_is_a_security_error() {
        let addr = fake_broker(|mut s| async move {
            let _ = read_request(&mut s).await;
            // A TLS alert record: content type 21, TLS 1.2, length 2.
            s.write_all(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x46])
                .await
                .unwrap();
        })
        .await;
        let err = Connection::connect(&addr, config()).await.unwrap_err();
        assert!(matches!(err, ProtocolError::Security { .. }), "{err}");
        assert!(!err.is_transport(), "retrying cannot help");
        assert!(err.to_string().contains("SASL_SSL"), "{err}");
    }
}
