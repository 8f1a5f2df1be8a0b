//! The group coordinator: find it, read committed offsets, commit offsets,
//! and carry the membership requests of [`super::classic`] and
//! [`super::kip848`].
//!
//! [`GroupClient`] speaks FindCoordinator, OffsetFetch and OffsetCommit over
//! our own `crate::protocol::Connection`, because rskafka has no
//! consumer-group APIs. It commits the way Kafka's Java consumer does after
//! `assign()` (a standalone member: generation -1, empty member id), so the
//! offsets are the group's ordinary committed offsets: `kafka-consumer-groups
//! --describe` shows them and any Kafka client in the group resumes from them.
//!
//! Coordinator trouble is normal and transient (right after a broker starts,
//! `__consumer_offsets` is still being created; after a leader change the
//! coordinator moves), so those errors are retried with backoff within
//! [`GroupConfig::retry_deadline`], re-discovering the coordinator each time.
//! Everything else is returned at once as one clear [`GroupError`].

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::ResponseError;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::{
    ApiKey, FindCoordinatorRequest, GroupId, OffsetCommitRequest, OffsetFetchRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use tokio::sync::Mutex;

use super::error::GroupError;
use crate::protocol::{
    ApiRequest, Connection, ConnectionConfig, ProtocolError, VersionRange, format_addr,
};

/// FindCoordinator versions we build and read: v0-3 carry one key, v4+ a
/// batch of keys (we always send one).
const FIND_COORDINATOR_VERSIONS: VersionRange = VersionRange { min: 0, max: 6 };
/// OffsetFetch versions we build and read: v1-7 carry one group, v8+ a list
/// of groups. (Kafka 4 dropped v0; v10 switches to topic ids.)
const OFFSET_FETCH_VERSIONS: VersionRange = VersionRange { min: 1, max: 9 };
/// OffsetCommit versions we build and read. (Kafka 4 dropped v0-1; v10
/// switches to topic ids.)
const OFFSET_COMMIT_VERSIONS: VersionRange = VersionRange { min: 2, max: 9 };
/// FindCoordinator key type for consumer groups (1 = transactions, 2 = share groups).
const KEY_TYPE_GROUP: i8 = 0;

/// Generation id a standalone (manually assigned) member commits with.
pub const STANDALONE_GENERATION: i32 = -1;
/// Member id a standalone (manually assigned) member commits with.
pub const STANDALONE_MEMBER: &str = "";

/// Who a commit comes from. Kafka fences commits by it: a member of a
/// classic group commits with its generation and member id, a KIP-848
/// member with its member epoch and member id, a manually assigned
/// consumer as a standalone member.
/// A committed offset as OffsetFetch returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    /// The next offset to consume.
    pub offset: i64,
    /// The metadata string committed with it (empty when none): an offset
    /// map of ours or of parallel-consumer, or whatever another client put.
    pub metadata: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitIdentity {
    /// Classic generation id, or KIP-848 member epoch; -1 standalone.
    pub generation_or_epoch: i32,
    /// Member id; empty standalone.
    pub member_id: String,
    /// Static membership instance id (KIP-345), if any.
    pub instance_id: Option<String>,
}

impl CommitIdentity {
    /// The identity of a manually assigned consumer (Java's `assign()`).
    pub fn standalone() -> Self {
        Self {
            generation_or_epoch: STANDALONE_GENERATION,
            member_id: STANDALONE_MEMBER.to_string(),
            instance_id: None,
        }
    }

    /// True for a group member (not standalone).
    pub fn is_member(&self) -> bool {
        !self.member_id.is_empty()
    }
}

/// Timeouts and retry policy of a [`GroupClient`].
#[derive(Clone, Debug)]
pub struct GroupConfig {
    /// Per-connection timeouts (connect, each request, response size cap).
    pub connection: ConnectionConfig,
    /// How long one operation keeps retrying transient failures (coordinator
    /// not available / moved / loading, lost connection) before giving up.
    pub retry_deadline: Duration,
    /// First pause between retries; doubles each time up to `max_backoff`.
    pub initial_backoff: Duration,
    /// Longest pause between retries.
    pub max_backoff: Duration,
    /// Highest version to use per API, on top of what both sides support
    /// (empty: no cap). An escape hatch for a broker that misbehaves at a
    /// new version, and how tests exercise the older (non-flexible,
    /// single-group) request shapes against a new broker.
    pub max_versions: HashMap<ApiKey, i16>,
}

impl Default for GroupConfig {
    fn default() -> Self {
        Self {
            connection: ConnectionConfig::default(),
            retry_deadline: Duration::from_secs(30),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            max_versions: HashMap::new(),
        }
    }
}

/// Outcome of one attempt inside the retry loop.
enum Attempt {
    /// Transient; try again after a backoff. `rediscover` drops the cached
    /// coordinator connection first (it moved, died, or is unusable).
    Retry { rediscover: bool, reason: String },
    /// No bootstrap broker answered; retried like a coordinator failure, but
    /// reported as [`GroupError::Unreachable`] if it is the last word.
    Unreachable(String),
    /// Final.
    Fail(GroupError),
}

/// Runs `$attempt` (an expression yielding `Result<T, Attempt>`, with the
/// coordinator connection bound to `$conn`) against the coordinator,
/// retrying transient failures with exponential backoff until the retry
/// deadline. A macro rather than a function taking an async closure: such
/// futures are not `Send` for every lifetime, and the consumer's futures
/// must be spawnable.
macro_rules! retrying {
    ($client:expr, $op:expr, |$conn:ident| $attempt:expr) => {{
        let mut retry = Retrying::new(&$client.config);
        loop {
            let outcome: Result<_, Attempt> = match $client.coordinator_connection($op).await {
                Ok($conn) => (async { $attempt }).await,
                Err(e) => Err(e),
            };
            match outcome {
                Ok(v) => break Ok(v),
                Err(e) => {
                    if let Err(fatal) = retry.after($client, $op, e).await {
                        break Err(fatal);
                    }
                }
            }
        }
    }};
}

/// The backoff and deadline of one retried operation.
struct Retrying {
    started: Instant,
    deadline: Instant,
    backoff: Duration,
    max_backoff: Duration,
}

impl Retrying {
    fn new(config: &GroupConfig) -> Self {
        let started = Instant::now();
        Self {
            started,
            deadline: started + config.retry_deadline,
            backoff: config.initial_backoff,
            max_backoff: config.max_backoff,
        }
    }

    /// Handles a failed attempt: final failures and an expired deadline are
    /// returned as errors; otherwise drops the coordinator if asked and
    /// sleeps the backoff, so the caller can try again.
    async fn after(
        &mut self,
        client: &GroupClient,
        op: &'static str,
        failure: Attempt,
    ) -> Result<(), GroupError> {
        let (rediscover, unreachable, reason) = match failure {
            Attempt::Fail(e) => return Err(e),
            Attempt::Retry { rediscover, reason } => (rediscover, false, reason),
            Attempt::Unreachable(reason) => (true, true, reason),
        };
        if rediscover {
            *client.coordinator.lock().await = None;
        }
        let now = Instant::now();
        if now >= self.deadline {
            return Err(client.give_up(op, self.started.elapsed(), unreachable, reason));
        }
        tracing::debug!(group = %client.group_id, op, %reason, backoff = ?self.backoff, "retrying");
        tokio::time::sleep(self.backoff.min(self.deadline - now)).await;
        self.backoff = (self.backoff * 2).min(self.max_backoff);
        Ok(())
    }
}

/// Kafka errors that mean "the coordinator moved or is not ready yet".
fn coordinator_error(e: &ResponseError) -> Option<bool> {
    match e {
        ResponseError::NotCoordinator | ResponseError::CoordinatorNotAvailable => Some(true),
        // Same coordinator, just not ready / slow: retry without rediscovery.
        ResponseError::CoordinatorLoadInProgress | ResponseError::RequestTimedOut => Some(false),
        _ => None,
    }
}

/// Reads and commits the offsets of one consumer group.
///
/// Cheap to share (`Arc`) between tasks; requests to the coordinator are
/// serialised on one connection. The coordinator is discovered lazily on the
/// first call and re-discovered whenever it moves.
pub struct GroupClient {
    bootstrap: Vec<String>,
    group_id: String,
    config: GroupConfig,
    /// Cached connection to the group coordinator; `None` until discovered or
    /// after it failed. The lock also keeps concurrent callers from
    /// discovering at the same time.
    coordinator: Mutex<Option<Arc<Connection>>>,
}

impl fmt::Debug for GroupClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupClient")
            .field("bootstrap", &self.bootstrap)
            .field("group_id", &self.group_id)
            .finish_non_exhaustive()
    }
}

impl GroupClient {
    /// Creates a client for `group_id`, bootstrapping from `bootstrap`
    /// ("host:port" addresses, tried in order). Does no I/O: unreachable
    /// brokers surface on the first operation (or use [`GroupClient::connect`]).
    pub fn new<S: Into<String>>(
        bootstrap: impl IntoIterator<Item = S>,
        group_id: impl Into<String>,
        config: GroupConfig,
    ) -> Self {
        Self {
            bootstrap: bootstrap.into_iter().map(Into::into).collect(),
            group_id: group_id.into(),
            config,
            coordinator: Mutex::new(None),
        }
    }

    /// Like [`GroupClient::new`], then finds and connects to the coordinator,
    /// so a wrong address or a sick cluster fails here, at startup.
    pub async fn connect<S: Into<String>>(
        bootstrap: impl IntoIterator<Item = S>,
        group_id: impl Into<String>,
        config: GroupConfig,
    ) -> Result<Self, GroupError> {
        let client = Self::new(bootstrap, group_id, config);
        client.coordinator().await?;
        Ok(client)
    }

    /// The group id this client works for.
    pub fn group_id(&self) -> &str {
        &self.group_id
    }

    /// Address of the current coordinator, discovering it if needed.
    pub async fn coordinator(&self) -> Result<String, GroupError> {
        retrying!(self, "finding the coordinator", |conn| Ok(conn
            .broker()
            .to_string()))
    }

    /// Reads the group's committed offsets for the given partitions.
    ///
    /// Every requested (topic, partition) is a key of the result: `Some(o)`
    /// is the committed offset (the next offset to consume), `None` means the
    /// group has committed nothing for it. Fails with
    /// [`GroupError::Partition`] if the broker reports an error for a
    /// partition.
    pub async fn fetch_committed<T: AsRef<str>, P: AsRef<[i32]>>(
        &self,
        topics: &[(T, P)],
    ) -> Result<HashMap<(String, i32), Option<i64>>, GroupError> {
        Ok(self
            .fetch_committed_with_metadata(topics)
            .await?
            .into_iter()
            .map(|(tp, c)| (tp, c.map(|c| c.offset)))
            .collect())
    }

    /// Like [`fetch_committed`](Self::fetch_committed), with the metadata
    /// string each offset was committed with (where offset maps live).
    pub async fn fetch_committed_with_metadata<T: AsRef<str>, P: AsRef<[i32]>>(
        &self,
        topics: &[(T, P)],
    ) -> Result<HashMap<(String, i32), Option<Committed>>, GroupError> {
        let wanted: BTreeMap<&str, Vec<i32>> = {
            let mut m: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
            for (topic, partitions) in topics {
                let e = m.entry(topic.as_ref()).or_default();
                e.extend_from_slice(partitions.as_ref());
                e.sort_unstable();
                e.dedup();
            }
            m
        };
        if wanted.values().all(Vec::is_empty) {
            return Ok(HashMap::new());
        }
        retrying!(self, "fetching committed offsets", |conn| self
            .try_fetch(&conn, &wanted)
            .await)
    }

    /// Commits `offsets` — (topic, partition, next offset to consume) — as a
    /// standalone member (generation -1, empty member id), exactly like
    /// Kafka's Java consumer after `assign()`. Only valid while no member
    /// has joined the group through the group protocol.
    pub async fn commit_standalone<T: AsRef<str>>(
        &self,
        offsets: &[(T, i32, i64)],
    ) -> Result<(), GroupError> {
        self.commit(offsets, &CommitIdentity::standalone()).await
    }

    /// Commits `offsets` — (topic, partition, next offset to consume) — as
    /// `who` (use [`GroupClient::commit_standalone`] for manual assignment).
    /// A commit the group fences (see [`is_fencing_error`](super::is_fencing_error)) fails at once
    /// with that error, never retried.
    ///
    /// Guarantee on `Ok`: the coordinator acknowledged every partition. If a
    /// partition appears twice, the last offset wins. On error nothing can
    /// be assumed about the partitions not named in the error; committing
    /// the same offsets again is safe.
    pub async fn commit<T: AsRef<str>>(
        &self,
        offsets: &[(T, i32, i64)],
        who: &CommitIdentity,
    ) -> Result<(), GroupError> {
        let with: Vec<(&str, i32, i64, &str)> = offsets
            .iter()
            .map(|(t, p, o)| (t.as_ref(), *p, *o, ""))
            .collect();
        self.commit_with_metadata(&with, who).await
    }

    /// Like [`commit`](Self::commit), each offset with its metadata string
    /// (an offset map, or empty). A metadata string longer than the
    /// broker's `offset.metadata.max.bytes` fails the commit with
    /// OFFSET_METADATA_TOO_LARGE.
    pub async fn commit_with_metadata<T: AsRef<str>, M: AsRef<str>>(
        &self,
        offsets: &[(T, i32, i64, M)],
        who: &CommitIdentity,
    ) -> Result<(), GroupError> {
        let mut by_topic: BTreeMap<&str, BTreeMap<i32, (i64, &str)>> = BTreeMap::new();
        for (topic, partition, offset, metadata) in offsets {
            by_topic
                .entry(topic.as_ref())
                .or_default()
                .insert(*partition, (*offset, metadata.as_ref()));
        }
        if by_topic.is_empty() {
            return Ok(());
        }
        retrying!(self, "committing offsets", |conn| self
            .try_commit(&conn, &by_topic, who)
            .await)
    }

    /// Sends one membership request to the coordinator and returns the
    /// response and the version used. Transport failures and coordinator
    /// moves (NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE,
    /// COORDINATOR_LOAD_IN_PROGRESS, as `error_code` reads them from the
    /// response) are retried with backoff, re-discovering the coordinator,
    /// until the retry deadline; any other error code is returned inside the
    /// response for the caller's state machine. `timeout` bounds one attempt
    /// (a JoinGroup waits on the broker for the whole rebalance).
    pub(crate) async fn call<R: ApiRequest>(
        &self,
        op: &'static str,
        versions: VersionRange,
        timeout: Duration,
        build: impl Fn(i16) -> R,
        error_code: impl Fn(&R::Response) -> i16,
    ) -> Result<(R::Response, i16), GroupError> {
        retrying!(self, op, |conn| {
            let version = self.negotiate(op, &conn, R::KEY, versions)?;
            let response = conn
                .send_within(&build(version), version, timeout)
                .await
                .map_err(|e| self.protocol_failure(op, e))?;
            match ResponseError::try_from_code(error_code(&response))
                .and_then(|e| coordinator_error(&e).map(|r| (e, r)))
            {
                Some((e, rediscover)) => Err(Attempt::Retry {
                    rediscover,
                    reason: format!("{e} from {}", conn.broker()),
                }),
                None => Ok((response, version)),
            }
        })
    }

    /// The versions of `api` the coordinator supports (discovering it if
    /// needed); `None` if it does not support the API at all.
    pub async fn coordinator_supports(
        &self,
        api: ApiKey,
    ) -> Result<Option<VersionRange>, GroupError> {
        retrying!(self, "finding the coordinator", |conn| Ok(
            conn.broker_versions(api)
        ))
    }

    /// The error for a retry loop that ran out of time: "unreachable" if we
    /// never got a broker to talk to, else "coordinator unavailable".
    fn give_up(
        &self,
        op: &'static str,
        after: Duration,
        unreachable: bool,
        reason: String,
    ) -> GroupError {
        if unreachable {
            GroupError::Unreachable {
                group: self.group_id.clone(),
                brokers: self.bootstrap.join(","),
                detail: reason,
            }
        } else {
            GroupError::CoordinatorUnavailable {
                group: self.group_id.clone(),
                op,
                after,
                detail: reason,
            }
        }
    }

    /// Returns the cached coordinator connection or discovers a new one.
    async fn coordinator_connection(&self, op: &'static str) -> Result<Arc<Connection>, Attempt> {
        let mut slot = self.coordinator.lock().await;
        if let Some(conn) = slot.as_ref() {
            return Ok(Arc::clone(conn));
        }
        let conn = Arc::new(self.discover(op).await?);
        tracing::debug!(group = %self.group_id, coordinator = conn.broker(), "found group coordinator");
        *slot = Some(Arc::clone(&conn));
        Ok(conn)
    }

    /// Asks the bootstrap brokers, in order, for the group's coordinator and
    /// connects to it.
    async fn discover(&self, op: &'static str) -> Result<Connection, Attempt> {
        if self.bootstrap.is_empty() {
            return Err(Attempt::Fail(GroupError::Unreachable {
                group: self.group_id.clone(),
                brokers: String::new(),
                detail: "no bootstrap address given".into(),
            }));
        }
        let mut last_unreachable = String::new();
        for addr in &self.bootstrap {
            let conn = match Connection::connect(addr, self.config.connection.clone()).await {
                Ok(c) => c,
                Err(e) if e.is_transport() => {
                    last_unreachable = e.to_string();
                    continue;
                }
                Err(e) => return Err(self.protocol_failure(op, e)),
            };
            let (host, port) = self.find_coordinator(op, &conn).await?;
            let coordinator = format_addr(&host, port);
            if coordinator == conn.broker() {
                return Ok(conn);
            }
            return match Connection::connect(&coordinator, self.config.connection.clone()).await {
                Ok(c) => Ok(c),
                Err(e) if e.is_transport() => Err(Attempt::Retry {
                    rediscover: true,
                    reason: format!("coordinator {coordinator}: {e}"),
                }),
                Err(e) => Err(self.protocol_failure(op, e)),
            };
        }
        Err(Attempt::Unreachable(last_unreachable))
    }

    /// One FindCoordinator round trip; returns the coordinator's host and port.
    async fn find_coordinator(
        &self,
        op: &'static str,
        conn: &Connection,
    ) -> Result<(String, i32), Attempt> {
        let version =
            self.negotiate(op, conn, ApiKey::FindCoordinator, FIND_COORDINATOR_VERSIONS)?;
        let key = StrBytes::from_string(self.group_id.clone());
        let mut request = FindCoordinatorRequest::default();
        if version >= 1 {
            request = request.with_key_type(KEY_TYPE_GROUP);
        }
        if version >= 4 {
            request = request.with_coordinator_keys(vec![key]);
        } else {
            request = request.with_key(key);
        }
        let response = conn
            .send(&request, version)
            .await
            .map_err(|e| self.protocol_failure(op, e))?;
        let (code, message, host, port) = if version >= 4 {
            let Some(c) = response
                .coordinators
                .iter()
                .find(|c| c.key.as_str() == self.group_id)
            else {
                return Err(Attempt::Fail(self.invalid(
                    op,
                    conn,
                    "FindCoordinator answer does not mention the group".into(),
                )));
            };
            (
                c.error_code,
                c.error_message.clone(),
                c.host.clone(),
                c.port,
            )
        } else {
            (
                response.error_code,
                response.error_message.clone(),
                response.host.clone(),
                response.port,
            )
        };
        if let Some(error) = ResponseError::try_from_code(code) {
            return Err(match coordinator_error(&error) {
                Some(_) => Attempt::Retry {
                    rediscover: true,
                    reason: format!(
                        "FindCoordinator via {}: {error}{}",
                        conn.broker(),
                        message.map(|m| format!(" ({m})")).unwrap_or_default()
                    ),
                },
                None => Attempt::Fail(GroupError::Group {
                    group: self.group_id.clone(),
                    op,
                    broker: conn.broker().to_string(),
                    error,
                    principal: self.config.connection.security.principal_hint(),
                }),
            });
        }
        if host.is_empty() || !(1..=65535).contains(&port) {
            return Err(Attempt::Fail(self.invalid(
                op,
                conn,
                format!(
                    "FindCoordinator returned address '{}:{port}'",
                    host.as_str()
                ),
            )));
        }
        Ok((host.to_string(), port))
    }

    /// One OffsetFetch round trip.
    async fn try_fetch(
        &self,
        conn: &Connection,
        wanted: &BTreeMap<&str, Vec<i32>>,
    ) -> Result<HashMap<(String, i32), Option<Committed>>, Attempt> {
        const OP: &str = "fetching committed offsets";
        let version = self.negotiate(OP, conn, ApiKey::OffsetFetch, OFFSET_FETCH_VERSIONS)?;
        let group_id = GroupId(StrBytes::from_string(self.group_id.clone()));
        let topic_name = |t: &str| TopicName(StrBytes::from_string(t.to_string()));
        let request = if version >= 8 {
            let topics = wanted
                .iter()
                .map(|(t, ps)| {
                    OffsetFetchRequestTopics::default()
                        .with_name(topic_name(t))
                        .with_partition_indexes(ps.clone())
                })
                .collect();
            OffsetFetchRequest::default().with_groups(vec![
                OffsetFetchRequestGroup::default()
                    .with_group_id(group_id)
                    .with_topics(Some(topics)),
            ])
        } else {
            let topics = wanted
                .iter()
                .map(|(t, ps)| {
                    OffsetFetchRequestTopic::default()
                        .with_name(topic_name(t))
                        .with_partition_indexes(ps.clone())
                })
                .collect();
            OffsetFetchRequest::default()
                .with_group_id(group_id)
                .with_topics(Some(topics))
        };
        let response = conn
            .send(&request, version)
            .await
            .map_err(|e| self.protocol_failure(OP, e))?;

        // Flatten both response shapes into (group error, [(topic, partition,
        // offset, error)]); the two topic types are distinct generated types
        // with the same fields, hence a macro rather than a function.
        macro_rules! rows {
            ($topics:expr) => {
                $topics
                    .iter()
                    .flat_map(|t| {
                        t.partitions.iter().map(|p| {
                            (
                                t.name.to_string(),
                                p.partition_index,
                                p.committed_offset,
                                p.metadata
                                    .as_ref()
                                    .map(|m| m.to_string())
                                    .unwrap_or_default(),
                                p.error_code,
                            )
                        })
                    })
                    .collect()
            };
        }
        type Row = (String, i32, i64, String, i16);
        let (group_code, rows): (i16, Vec<Row>) = if version >= 8 {
            let Some(g) = response
                .groups
                .iter()
                .find(|g| g.group_id.as_str() == self.group_id)
            else {
                return Err(Attempt::Fail(self.invalid(
                    OP,
                    conn,
                    "OffsetFetch answer does not mention the group".into(),
                )));
            };
            (g.error_code, rows!(g.topics))
        } else {
            (response.error_code, rows!(response.topics))
        };
        self.check_group_code(OP, conn, group_code)?;

        let mut result: HashMap<(String, i32), Option<Committed>> = wanted
            .iter()
            .flat_map(|(t, ps)| ps.iter().map(|p| ((t.to_string(), *p), None)))
            .collect();
        for (topic, partition, offset, metadata, code) in rows {
            self.check_partition_code(OP, &topic, partition, code)?;
            if let Some(slot) = result.get_mut(&(topic, partition)) {
                // -1 is Kafka's "no committed offset".
                *slot = (offset >= 0).then_some(Committed { offset, metadata });
            }
        }
        Ok(result)
    }

    /// One OffsetCommit round trip.
    async fn try_commit(
        &self,
        conn: &Connection,
        by_topic: &BTreeMap<&str, BTreeMap<i32, (i64, &str)>>,
        who: &CommitIdentity,
    ) -> Result<(), Attempt> {
        const OP: &str = "committing offsets";
        let version = self.negotiate(OP, conn, ApiKey::OffsetCommit, OFFSET_COMMIT_VERSIONS)?;
        let topics = by_topic
            .iter()
            .map(|(topic, partitions)| {
                OffsetCommitRequestTopic::default()
                    .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                    .with_partitions(
                        partitions
                            .iter()
                            .map(|(&p, &(o, metadata))| {
                                OffsetCommitRequestPartition::default()
                                    .with_partition_index(p)
                                    .with_committed_offset(o)
                                    .with_committed_metadata(Some(StrBytes::from_string(
                                        metadata.to_string(),
                                    )))
                            })
                            .collect(),
                    )
            })
            .collect();
        let request = OffsetCommitRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(self.group_id.clone())))
            .with_generation_id_or_member_epoch(who.generation_or_epoch)
            .with_member_id(StrBytes::from_string(who.member_id.clone()))
            .with_group_instance_id(
                (version >= 7)
                    .then(|| who.instance_id.clone().map(StrBytes::from_string))
                    .flatten(),
            )
            .with_topics(topics);
        let response = conn
            .send(&request, version)
            .await
            .map_err(|e| self.protocol_failure(OP, e))?;

        let mut acked: BTreeMap<(&str, i32), i16> = BTreeMap::new();
        for t in &response.topics {
            let Some((&topic, _)) = by_topic.get_key_value(t.name.as_str()) else {
                continue;
            };
            for p in &t.partitions {
                acked.insert((topic, p.partition_index), p.error_code);
            }
        }
        // Coordinator errors come per partition in OffsetCommit; any of them
        // means the whole request should go to the (new) coordinator again.
        for code in acked.values() {
            if let Some(error) = ResponseError::try_from_code(*code)
                && let Some(rediscover) = coordinator_error(&error)
            {
                return Err(Attempt::Retry {
                    rediscover,
                    reason: format!("{error} from {}", conn.broker()),
                });
            }
        }
        for (topic, partitions) in by_topic {
            for &partition in partitions.keys() {
                match acked.get(&(*topic, partition)) {
                    Some(&code) => self.check_partition_code(OP, topic, partition, code)?,
                    None => {
                        return Err(Attempt::Fail(self.invalid(
                            OP,
                            conn,
                            format!("no acknowledgement for topic '{topic}' partition {partition}"),
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    /// The version of `api` to use with `conn`: the highest that we
    /// implement (`ours`), the broker supports, and the config allows.
    fn negotiate(
        &self,
        op: &'static str,
        conn: &Connection,
        api: ApiKey,
        mut ours: VersionRange,
    ) -> Result<i16, Attempt> {
        if let Some(&cap) = self.config.max_versions.get(&api) {
            ours.max = ours.max.min(cap);
        }
        conn.negotiate(api, ours)
            .map_err(|e| self.protocol_failure(op, e))
    }

    /// Classifies a group-level error code: retry coordinator trouble, fail
    /// on anything else.
    fn check_group_code(
        &self,
        op: &'static str,
        conn: &Connection,
        code: i16,
    ) -> Result<(), Attempt> {
        let Some(error) = ResponseError::try_from_code(code) else {
            return Ok(());
        };
        Err(match coordinator_error(&error) {
            Some(rediscover) => Attempt::Retry {
                rediscover,
                reason: format!("{error} from {}", conn.broker()),
            },
            None => Attempt::Fail(GroupError::Group {
                group: self.group_id.clone(),
                op,
                broker: conn.broker().to_string(),
                error,
                principal: self.config.connection.security.principal_hint(),
            }),
        })
    }

    /// Classifies a partition-level error code: retry coordinator trouble,
    /// fail naming the partition otherwise.
    fn check_partition_code(
        &self,
        op: &'static str,
        topic: &str,
        partition: i32,
        code: i16,
    ) -> Result<(), Attempt> {
        let Some(error) = ResponseError::try_from_code(code) else {
            return Ok(());
        };
        Err(match coordinator_error(&error) {
            Some(rediscover) => Attempt::Retry {
                rediscover,
                reason: format!("{error} for topic '{topic}' partition {partition}"),
            },
            None => Attempt::Fail(GroupError::Partition {
                group: self.group_id.clone(),
                op,
                topic: topic.to_string(),
                partition,
                error,
                principal: self.config.connection.security.principal_hint(),
            }),
        })
    }

    /// A protocol error during an operation: transport failures are retried
    /// on a fresh coordinator connection, the rest are final.
    fn protocol_failure(&self, op: &'static str, e: ProtocolError) -> Attempt {
        if e.is_transport() {
            return Attempt::Retry {
                rediscover: true,
                reason: e.to_string(),
            };
        }
        Attempt::Fail(GroupError::Protocol {
            group: self.group_id.clone(),
            op,
            source: e,
        })
    }

    /// An incomplete or inconsistent answer from `conn`'s broker.
    fn invalid(&self, op: &'static str, conn: &Connection, detail: String) -> GroupError {
        GroupError::InvalidResponse {
            group: self.group_id.clone(),
            op,
            broker: conn.broker().to_string(),
            detail,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coordinator_errors_are_retried_others_are_not() {
        assert_eq!(
            coordinator_error(&ResponseError::NotCoordinator),
            Some(true)
        );
        assert_eq!(
            coordinator_error(&ResponseError::CoordinatorNotAvailable),
            Some(true)
        );
        assert_eq!(
            coordinator_error(&ResponseError::CoordinatorLoadInProgress),
            Some(false)
        );
        assert_eq!(
            coordinator_error(&ResponseError::UnknownTopicOrPartition),
            None
        );
        assert_eq!(coordinator_error(&ResponseError::IllegalGeneration), None);
    }

    #[tokio::test]
    async fn unreachable_bootstrap_gives_up_at_the_deadline_with_a_clear_error() {
        let addr = {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap().to_string()
        };
        let config = GroupConfig {
            retry_deadline: Duration::from_millis(300),
            initial_backoff: Duration::from_millis(50),
            ..GroupConfig::default()
        };
        let client = GroupClient::new([addr.clone()], "g", config);
        let started = Instant::now();
        let err = client.commit_standalone(&[("t", 0, 1)]).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(matches!(err, GroupError::Unreachable { .. }), "{err}");
        let s = err.to_string();
        assert!(s.contains(&addr) && s.contains("just kafka-up"), "{s}");
        let crate_err: crate::error::Error = err.into();
        assert_eq!(crate_err.exit_code(), crate::error::EXIT_UNREACHABLE);
    }

    #[tokio::test]
    async fn empty_requests_need_no_broker() {
        let client = GroupClient::new(Vec::<String>::new(), "g", GroupConfig::default());
        let none: &[(&str, Vec<i32>)] = &[];
        assert!(client.fetch_committed(none).await.unwrap().is_empty());
        let nothing: &[(&str, i32, i64)] = &[];
        client.commit_standalone(nothing).await.unwrap();
    }
}
