//! Reading partitions: long-poll Fetch requests over our own `Connection`,
//! decoded by `crate::records` into [`Message`]s, keeping the position and
//! the end of the readable log.
//!
//! The consumer fetches with one request per broker covering every assigned
//! partition that broker leads ([`broker`], routed by [`router`]), within a
//! byte budget ([`budget`]). [`PartitionFetcher`] is one partition's side of
//! it: its position, its offset lookups, its leader, and the one-line errors
//! that name it; on its own it also reads a single partition
//! ([`PartitionFetcher::next_batch`]).
//!
//! Idle partitions cost nothing: each fetch waits on the broker up to
//! `max_wait` for data (the broker's long poll), so there is no busy loop.
//!
//! Fetches are read-committed: records of open transactions are not returned
//! by the broker, records of aborted ones are dropped, and the end of the log
//! (for lag and exit-at-end) is the last stable offset. The leader is found
//! with a Metadata request to a bootstrap broker and found again when it moves
//! or the connection breaks, with backoff, within `request_timeout`.
//!
//! Offset lookups ([`PartitionFetcher::resolve`], ListOffsets) go to the same
//! leader connection: rskafka's fetch cannot decode transaction markers, and
//! its cached metadata does not know partitions added while we run.

pub mod broker;
pub mod budget;
pub mod router;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, FetchRequest, ListOffsetsRequest, MetadataRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use tokio::time::Instant;

use crate::cluster::ClusterConfig;
use crate::error::{Error, Result};
use crate::message::Message;
use crate::protocol::{Connection, ConnectionConfig, ProtocolError, VersionRange, format_addr};
use crate::records::{AbortedTxn, PartitionDecoder};

/// Fetch versions we build and read. Kafka 4 dropped v0-3; v13+ name topics
/// by id only, so we stop at v12 and name them.
const FETCH_VERSIONS: VersionRange = VersionRange { min: 4, max: 12 };
/// ListOffsets versions we build and read (v10 adds a tiered-storage timeout
/// we do not set).
const LIST_OFFSETS_VERSIONS: VersionRange = VersionRange { min: 1, max: 9 };
/// ListOffsets timestamps meaning "the earliest / latest offset".
const EARLIEST_TIMESTAMP: i64 = -2;
const LATEST_TIMESTAMP: i64 = -1;
/// Metadata versions we build and read (Kafka 4 dropped v0-3).
const METADATA_VERSIONS: VersionRange = VersionRange { min: 4, max: 12 };
/// Isolation level READ_COMMITTED (fetches, and the end offsets they reach).
pub(crate) const READ_COMMITTED: i8 = 1;
/// Isolation level READ_UNCOMMITTED (the whole log's end).
const READ_UNCOMMITTED: i8 = 0;
/// First pause between retries; doubles up to [`MAX_BACKOFF`].
pub(crate) const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
/// Longest pause between retries.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Longest wait for a TCP connection to a broker.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where to start when there is no usable position (none committed, or the
/// position fell out of the log through retention).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reset {
    /// The oldest record still in the log.
    Earliest,
    /// The end of the log: only records produced from now on.
    Latest,
}

/// Java's `fetch.max.bytes` default: most bytes of one Fetch response.
pub const DEFAULT_FETCH_MAX_BYTES: i32 = 52_428_800;
/// Java's `max.partition.fetch.bytes` default: most bytes of one partition
/// in one Fetch response.
pub const DEFAULT_PARTITION_FETCH_MAX_BYTES: i32 = 1_048_576;
/// Default of [`FetchConfig::buffer_bytes`].
pub const DEFAULT_FETCH_BUFFER_BYTES: usize = 8 * 1024 * 1024;

/// Tuning of fetches.
#[derive(Clone, Debug)]
pub struct FetchConfig {
    /// Longest the broker may hold a fetch waiting for data
    /// (`fetch.max.wait.ms`).
    pub max_wait: Duration,
    /// Most bytes one Fetch request may return over all its partitions
    /// (`fetch.max.bytes`). Like every limit here it is soft by one record
    /// batch: the broker returns the first batch whole so a consumer always
    /// makes progress.
    pub max_bytes: i32,
    /// Most bytes one partition may contribute to a Fetch response
    /// (`max.partition.fetch.bytes`).
    pub partition_max_bytes: i32,
    /// Least bytes the broker gathers before answering early
    /// (`fetch.min.bytes`); it answers after `max_wait` regardless.
    pub min_bytes: i32,
    /// Most record bytes held in memory at once, over all partitions: fetched
    /// and not yet submitted to the pool, or submitted and still referenced
    /// by a message in flight (messages share their response's buffer). A
    /// fetch is sent only when there is room, and asks for no more than the
    /// room left.
    pub buffer_bytes: usize,
    /// What to do when the position is out of range.
    pub reset: Reset,
    /// Longest a fetch may take beyond `max_wait` (retries included) before
    /// it fails: a broker that went silent must not stall a partition forever.
    pub request_timeout: Duration,
}

impl Default for FetchConfig {
    fn default() -> Self {
        Self {
            max_wait: Duration::from_millis(500),
            max_bytes: DEFAULT_FETCH_MAX_BYTES,
            partition_max_bytes: DEFAULT_PARTITION_FETCH_MAX_BYTES,
            min_bytes: 1,
            buffer_bytes: DEFAULT_FETCH_BUFFER_BYTES,
            reset: Reset::Earliest,
            request_timeout: Duration::from_secs(60),
        }
    }
}

/// A reader of one topic-partition.
pub struct PartitionFetcher {
    bootstrap: Vec<String>,
    /// Base settings of our connections (client id, connect timeout).
    connection: ConnectionConfig,
    /// Connection to the partition's leader, found on first use and dropped
    /// when it fails or the leader moves.
    leader: Option<Connection>,
    /// The leader's address as of the last [`release`](Self::release).
    released: Option<String>,
    topic: Arc<str>,
    partition: i32,
    next: i64,
    high_watermark: i64,
    cfg: FetchConfig,
}

/// Why one fetch attempt did not deliver.
#[derive(Debug)]
pub(crate) enum Attempt {
    /// Transient (leader moved, connection lost, timeout): find the leader
    /// again and retry after a backoff.
    Retry(String),
    /// The position is outside the log (the reason, for lookups where that
    /// cannot happen).
    OutOfRange(String),
    /// Permanent: give up with this reason.
    Fail(String),
    /// The broker refused us (TLS or SASL): give up with [`Error::Security`].
    Refused(String),
    /// TOPIC_AUTHORIZATION_FAILED: give up naming the missing ACL.
    Unauthorized,
}

impl PartitionFetcher {
    /// A reader of `topic`/`partition`; the cluster's bootstrap brokers are
    /// where the partition's leader is looked up (on first use). The start
    /// position is set with [`seek`](Self::seek) (see
    /// [`resolve`](Self::resolve)).
    pub fn new(cluster: &ClusterConfig, topic: &str, partition: i32, cfg: FetchConfig) -> Self {
        Self {
            bootstrap: cluster.brokers.clone(),
            connection: cluster.connection(),
            leader: None,
            released: None,
            topic: Arc::from(topic),
            partition,
            next: 0,
            high_watermark: -1,
            cfg,
        }
    }

    /// The topic this fetcher reads.
    pub fn topic(&self) -> &Arc<str> {
        &self.topic
    }

    /// The partition this fetcher reads.
    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// The offset the next fetch starts at.
    pub fn position(&self) -> i64 {
        self.next
    }

    /// The end of the readable log as last seen (-1 before any fetch or
    /// lookup): the last stable offset, since reads are read-committed, so
    /// it stops before an open transaction and lag counts readable records.
    pub fn high_watermark(&self) -> i64 {
        self.high_watermark
    }

    /// Whether the position has reached the end of the readable log as last
    /// seen (a log ending in a transaction marker, or with an open
    /// transaction ahead, counts as reached).
    pub fn caught_up(&self) -> bool {
        self.high_watermark >= 0 && self.next >= self.high_watermark
    }

    /// Moves the position.
    pub fn seek(&mut self, offset: i64) {
        self.next = offset;
    }

    /// The earliest or latest offset of the partition (latest: the last
    /// stable offset, as the lookup is read-committed). Transient failures
    /// are retried like fetches.
    pub async fn resolve(&mut self, at: Reset) -> Result<i64> {
        let offset = self.list_offsets(at, READ_COMMITTED).await?;
        if at == Reset::Latest {
            self.high_watermark = self.high_watermark.max(offset);
        }
        Ok(offset)
    }

    /// The end of the whole log (the high watermark, open transactions
    /// included): a read-uncommitted consumer of the group may have
    /// committed an offset up to here.
    pub async fn log_end(&mut self) -> Result<i64> {
        self.list_offsets(Reset::Latest, READ_UNCOMMITTED).await
    }

    /// One offset lookup, retried like fetches.
    async fn list_offsets(&mut self, at: Reset, isolation: i8) -> Result<i64> {
        let deadline = Instant::now() + self.cfg.request_timeout;
        let mut backoff = INITIAL_BACKOFF;
        loop {
            let outcome =
                match tokio::time::timeout_at(deadline, self.try_list_offsets(at, isolation)).await
                {
                    Ok(outcome) => outcome,
                    Err(_) => Err(Attempt::Retry(format!(
                        "no answer within {:?}",
                        self.cfg.request_timeout
                    ))),
                };
            let reason = match outcome {
                Ok(offset) => return Ok(offset),
                Err(Attempt::Retry(reason)) => reason,
                Err(Attempt::Fail(reason) | Attempt::OutOfRange(reason)) => {
                    return Err(self.lookup_error(at, reason));
                }
                Err(Attempt::Refused(reason)) => return Err(Error::Security(reason)),
                Err(Attempt::Unauthorized) => return Err(self.denied("Describe")),
            };
            self.leader = None;
            let now = Instant::now();
            if now >= deadline {
                return Err(self.lookup_error(at, format!("{reason} (gave up retrying)")));
            }
            tokio::time::sleep(backoff.min(deadline - now)).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    fn lookup_error(&self, at: Reset, reason: String) -> Error {
        Error::kafka(
            format!(
                "looking up the {} offset of {}/{}",
                format!("{at:?}").to_lowercase(),
                self.topic,
                self.partition
            ),
            reason,
        )
    }

    /// One ListOffsets round trip to the leader (found first if needed).
    async fn try_list_offsets(
        &mut self,
        at: Reset,
        isolation: i8,
    ) -> std::result::Result<i64, Attempt> {
        if self.leader.is_none() {
            self.leader = Some(self.find_leader().await?);
        }
        let conn = self.leader.as_ref().expect("just set");
        let version = conn
            .negotiate(ApiKey::ListOffsets, LIST_OFFSETS_VERSIONS)
            .map_err(protocol_failure)?;
        let timestamp = match at {
            Reset::Earliest => EARLIEST_TIMESTAMP,
            Reset::Latest => LATEST_TIMESTAMP,
        };
        let request = ListOffsetsRequest::default()
            .with_replica_id((-1).into())
            .with_isolation_level(isolation)
            .with_topics(vec![
                ListOffsetsTopic::default()
                    .with_name(TopicName(StrBytes::from_string(self.topic.to_string())))
                    .with_partitions(vec![
                        ListOffsetsPartition::default()
                            .with_partition_index(self.partition)
                            .with_current_leader_epoch(-1)
                            .with_timestamp(timestamp),
                    ]),
            ]);
        let response = conn
            .send(&request, version)
            .await
            .map_err(protocol_failure)?;
        let part = response
            .topics
            .iter()
            .filter(|t| *t.name.0 == *self.topic)
            .flat_map(|t| &t.partitions)
            .find(|p| p.partition_index == self.partition)
            .ok_or_else(|| self.absent_from(conn))?;
        match ResponseError::try_from_code(part.error_code) {
            None => Ok(part.offset),
            Some(e) => Err(classify(e)),
        }
    }

    /// Fetches the next records (possibly none, after the broker's long poll)
    /// and advances the position past every batch seen. A position outside
    /// the log is reset as configured, with a warning, like Java's
    /// `auto.offset.reset`. Transient failures are retried (finding the
    /// leader again) for up to `request_timeout` beyond `max_wait`.
    pub async fn next_batch(&mut self) -> Result<Vec<Message>> {
        let budget = self.cfg.max_wait + self.cfg.request_timeout;
        let deadline = Instant::now() + budget;
        let mut backoff = INITIAL_BACKOFF;
        loop {
            let outcome = match tokio::time::timeout_at(deadline, self.try_fetch()).await {
                Ok(outcome) => outcome,
                Err(_) => Err(Attempt::Retry(format!("no answer within {budget:?}"))),
            };
            let reason = match outcome {
                Ok(part) => return self.accept(part),
                Err(Attempt::OutOfRange(_)) => {
                    self.reset_out_of_range().await?;
                    return Ok(Vec::new());
                }
                Err(Attempt::Fail(reason)) => return Err(self.error(reason)),
                Err(Attempt::Refused(reason)) => return Err(Error::Security(reason)),
                Err(Attempt::Unauthorized) => return Err(self.denied("Read")),
                Err(Attempt::Retry(reason)) => reason,
            };
            self.leader = None;
            let now = Instant::now();
            if now >= deadline {
                return Err(self.error(format!("{reason} (gave up retrying after {budget:?})")));
            }
            tracing::debug!(topic = %self.topic, partition = self.partition, %reason, ?backoff, "retrying fetch");
            tokio::time::sleep(backoff.min(deadline - now)).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// The missing ACL that lets this client `operation` the topic.
    fn denied(&self, operation: &str) -> Error {
        Error::denied(
            "TOPIC_AUTHORIZATION_FAILED",
            &self.connection.security.principal_hint(),
            operation,
            &format!("Topic:{}", self.topic),
        )
    }

    /// The one-line error of a failed fetch, naming partition and offset.
    fn error(&self, reason: String) -> Error {
        Error::kafka(
            format!(
                "fetching {}/{} at offset {}",
                self.topic, self.partition, self.next
            ),
            reason,
        )
    }

    /// Decodes a partition's answer, moves the position and the end.
    fn accept(&mut self, part: PartitionData) -> Result<Vec<Message>> {
        self.high_watermark = end_of(&part);
        let aborted = aborted_of(&part);
        let Some(records) = part.records else {
            return Ok(Vec::new());
        };
        self.accept_records(&records, &aborted)
    }

    /// Decodes records fetched at the current position (dropping those
    /// before it and those of aborted transactions) and moves the position
    /// past every complete batch.
    pub(crate) fn accept_records(
        &mut self,
        records: &Bytes,
        aborted: &[AbortedTxn],
    ) -> Result<Vec<Message>> {
        let mut decoder = self.decoder(records, aborted);
        self.accept_window(&mut decoder, records, usize::MAX)
            .map(|(messages, _)| messages)
    }

    /// A decoder of `records` fetched at the current position, for
    /// [`accept_window`](Self::accept_window).
    pub(crate) fn decoder(&self, records: &Bytes, aborted: &[AbortedTxn]) -> PartitionDecoder {
        PartitionDecoder::new(&self.topic, self.partition, records, self.next, aborted)
    }

    /// [`accept_records`](Self::accept_records) a window at a time: the
    /// messages of the next whole batches of `decoder` (made by
    /// [`decoder`](Self::decoder) from `records`), at least `max_messages`
    /// of them when there are that many, and whether records are left.
    pub(crate) fn accept_window(
        &mut self,
        decoder: &mut PartitionDecoder,
        records: &Bytes,
        max_messages: usize,
    ) -> Result<(Vec<Message>, bool)> {
        let decoded = decoder
            .next_window(max_messages)
            .map_err(|e| self.error(format!("the broker sent undecodable records: {e}")))?;
        match decoded.next_offset {
            Some(next) => self.next = self.next.max(next),
            // Since Fetch v3 the broker always returns the first batch whole,
            // so data without one complete batch is corrupt; refetching it
            // would spin forever.
            None if !records.is_empty() => {
                return Err(self.error(format!(
                    "the broker returned {} bytes without one complete record batch",
                    records.len()
                )));
            }
            None => {}
        }
        Ok((decoded.messages, decoded.more))
    }

    /// The error a failed attempt ends a fetch with (`OutOfRange` is
    /// normally reset, not reported).
    pub(crate) fn failure(&self, attempt: Attempt) -> Error {
        match attempt {
            Attempt::Retry(reason) | Attempt::Fail(reason) | Attempt::OutOfRange(reason) => {
                self.error(reason)
            }
            Attempt::Refused(reason) => Error::Security(reason),
            Attempt::Unauthorized => self.denied("Read"),
        }
    }

    /// The one-line error of a fetch that kept failing transiently.
    pub(crate) fn gave_up(&self, reason: &str, after: Duration) -> Error {
        self.error(format!("{reason} (gave up retrying after {after:?})"))
    }

    /// How long transient failures are retried before a fetch gives up.
    pub(crate) fn retry_budget(&self) -> Duration {
        self.cfg.max_wait + self.cfg.request_timeout
    }

    /// Resets a position that fell outside the log, as configured (like
    /// Java's `auto.offset.reset`), with a warning. Fails when the reset
    /// would go back below the position: those offsets were handed out.
    pub(crate) async fn reset_out_of_range(&mut self) -> Result<()> {
        let to = self.resolve(self.cfg.reset).await?;
        // The lookup's connection is not kept: fetching has its own.
        self.leader = None;
        if to < self.next {
            // Offsets below the position were handed out already and
            // may be committed; going back would need the tracker to
            // forget them. A restart validates the start and resumes.
            return Err(self.error(format!(
                "the log now ends below offset {} (reset would go back to {to}): the topic was recreated or truncated; restart the consumer to resume from the {:?} offset",
                self.next, self.cfg.reset
            )));
        }
        tracing::warn!(
            topic = %self.topic,
            partition = self.partition,
            "offset {} is out of range; resetting to {:?} offset {to}",
            self.next,
            self.cfg.reset
        );
        self.next = to;
        Ok(())
    }

    /// Drops the leader connection (kept after offset lookups): the
    /// consumer fetches over one connection per broker instead.
    pub fn release(&mut self) {
        if let Some(c) = self.leader.take() {
            self.released = Some(c.broker().to_string());
        }
    }

    /// The leader's address ("host:port") as known when the connection was
    /// [released](Self::release), if it was.
    pub fn known_leader(&self) -> Option<&str> {
        self.released.as_deref()
    }

    /// The address ("host:port") of the partition's leader, asked of the
    /// bootstrap brokers in order (one attempt; the caller retries).
    pub(crate) async fn locate(&self) -> std::result::Result<String, Attempt> {
        if self.bootstrap.is_empty() {
            return Err(Attempt::Fail("no bootstrap broker given".into()));
        }
        let mut last = String::new();
        for addr in &self.bootstrap {
            let conn = match Connection::connect(addr, self.connection_config()).await {
                Ok(c) => c,
                Err(e) if e.is_transport() => {
                    last = e.to_string();
                    continue;
                }
                Err(e) => return Err(protocol_failure(e)),
            };
            return self.leader_address(&conn).await;
        }
        Err(Attempt::Retry(last))
    }

    /// One Fetch round trip to the leader (found first if needed).
    async fn try_fetch(&mut self) -> std::result::Result<PartitionData, Attempt> {
        if self.leader.is_none() {
            self.leader = Some(self.find_leader().await?);
        }
        let conn = self.leader.as_ref().expect("just set");
        let version = conn
            .negotiate(ApiKey::Fetch, FETCH_VERSIONS)
            .map_err(protocol_failure)?;
        let max_wait_ms = self.cfg.max_wait.as_millis().min(i32::MAX as u128) as i32;
        let max_bytes = self.cfg.max_bytes.max(1);
        let partition_max_bytes = self.cfg.partition_max_bytes.max(1);
        let topic_name = TopicName(StrBytes::from_string(self.topic.to_string()));
        let request = FetchRequest::default()
            .with_replica_id((-1).into())
            .with_max_wait_ms(max_wait_ms)
            .with_min_bytes(self.cfg.min_bytes.max(1))
            .with_max_bytes(max_bytes)
            .with_isolation_level(READ_COMMITTED)
            .with_session_id(0)
            .with_session_epoch(-1)
            .with_topics(vec![
                FetchTopic::default()
                    .with_topic(topic_name)
                    .with_partitions(vec![
                        FetchPartition::default()
                            .with_partition(self.partition)
                            .with_current_leader_epoch(-1)
                            .with_fetch_offset(self.next)
                            .with_log_start_offset(-1)
                            .with_partition_max_bytes(partition_max_bytes),
                    ]),
            ]);
        let response = conn
            .send(&request, version)
            .await
            .map_err(protocol_failure)?;
        if let Some(e) = ResponseError::try_from_code(response.error_code) {
            return Err(classify(e));
        }
        let part = response
            .responses
            .into_iter()
            .filter(|t| *t.topic.0 == *self.topic)
            .flat_map(|t| t.partitions)
            .find(|p| p.partition_index == self.partition)
            .ok_or_else(|| self.absent_from(conn))?;
        match ResponseError::try_from_code(part.error_code) {
            None => Ok(part),
            Some(e) => Err(classify(e)),
        }
    }

    /// Asks the bootstrap brokers, in order, for the partition's leader and
    /// connects to it.
    async fn find_leader(&self) -> std::result::Result<Connection, Attempt> {
        if self.bootstrap.is_empty() {
            return Err(Attempt::Fail("no bootstrap broker given".into()));
        }
        let mut last = String::new();
        for addr in &self.bootstrap {
            let conn = match Connection::connect(addr, self.connection_config()).await {
                Ok(c) => c,
                Err(e) if e.is_transport() => {
                    last = e.to_string();
                    continue;
                }
                Err(e) => return Err(protocol_failure(e)),
            };
            let leader = self.leader_address(&conn).await?;
            if leader == conn.broker() {
                return Ok(conn);
            }
            tracing::debug!(topic = %self.topic, partition = self.partition, %leader, "found the partition leader");
            return Connection::connect(&leader, self.connection_config())
                .await
                .map_err(|e| {
                    if e.is_transport() {
                        Attempt::Retry(format!("leader {leader}: {e}"))
                    } else {
                        protocol_failure(e)
                    }
                });
        }
        Err(Attempt::Retry(last))
    }

    /// One Metadata round trip: the leader's "host:port".
    async fn leader_address(&self, conn: &Connection) -> std::result::Result<String, Attempt> {
        let version = conn
            .negotiate(ApiKey::Metadata, METADATA_VERSIONS)
            .map_err(protocol_failure)?;
        let name = TopicName(StrBytes::from_string(self.topic.to_string()));
        let request = MetadataRequest::default()
            .with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(name)),
            ]))
            .with_allow_auto_topic_creation(false);
        let response = conn
            .send(&request, version)
            .await
            .map_err(protocol_failure)?;
        let topic = response
            .topics
            .iter()
            .find(|t| t.name.as_ref().is_some_and(|n| *n.0 == *self.topic))
            .ok_or_else(|| {
                Attempt::Retry(format!("{} did not describe the topic", conn.broker()))
            })?;
        if let Some(e) = ResponseError::try_from_code(topic.error_code) {
            return Err(classify(e));
        }
        let part = topic
            .partitions
            .iter()
            .find(|p| p.partition_index == self.partition)
            .ok_or_else(|| {
                Attempt::Fail(format!(
                    "topic {} has no partition {}",
                    self.topic, self.partition
                ))
            })?;
        if let Some(e) = ResponseError::try_from_code(part.error_code) {
            return Err(classify(e));
        }
        let broker = response
            .brokers
            .iter()
            .find(|b| b.node_id == part.leader_id)
            .ok_or_else(|| {
                Attempt::Retry(format!(
                    "no leader for {}/{} (leader id {})",
                    self.topic, self.partition, part.leader_id.0
                ))
            })?;
        Ok(format_addr(&broker.host, broker.port))
    }

    /// A leader's answer that leaves our partition out: retried (the leader
    /// may be moving).
    fn absent_from(&self, conn: &Connection) -> Attempt {
        Attempt::Retry(format!(
            "broker {} answered without {}/{}",
            conn.broker(),
            self.topic,
            self.partition
        ))
    }

    /// Timeouts of the leader connection: a request may legitimately take
    /// `max_wait` (the long poll) before the broker answers.
    fn connection_config(&self) -> ConnectionConfig {
        fetch_connection(&self.connection, &self.cfg)
    }
}

/// Timeouts of a fetch connection: a request may legitimately take
/// `max_wait` (the long poll) before the broker answers.
pub(crate) fn fetch_connection(base: &ConnectionConfig, cfg: &FetchConfig) -> ConnectionConfig {
    ConnectionConfig {
        connect_timeout: CONNECT_TIMEOUT
            .min(cfg.request_timeout)
            .min(base.connect_timeout),
        request_timeout: cfg.max_wait + cfg.request_timeout,
        ..base.clone()
    }
}

/// The end of the readable log a partition's answer reports: the last
/// stable offset (read-committed), else the high watermark.
pub(crate) fn end_of(part: &PartitionData) -> i64 {
    if part.last_stable_offset >= 0 {
        part.last_stable_offset
    } else {
        part.high_watermark
    }
}

/// The aborted transactions a partition's answer lists.
pub(crate) fn aborted_of(part: &PartitionData) -> Vec<AbortedTxn> {
    part.aborted_transactions
        .iter()
        .flatten()
        .map(|t| AbortedTxn {
            producer_id: t.producer_id.0,
            first_offset: t.first_offset,
        })
        .collect()
}

/// Leader trouble is retried after finding the leader again; a position
/// outside the log is reset; anything else fails.
pub(crate) fn classify(e: ResponseError) -> Attempt {
    use ResponseError as E;
    match e {
        E::OffsetOutOfRange => Attempt::OutOfRange(format!("{e:?} (code {})", e.code())),
        E::NotLeaderOrFollower
        | E::UnknownLeaderEpoch
        | E::FencedLeaderEpoch
        | E::LeaderNotAvailable
        | E::ReplicaNotAvailable
        | E::KafkaStorageError
        | E::NotEnoughReplicas
        | E::RequestTimedOut
        // Transient during reassignment or leader start-up; Java retries these
        // too. A topic that is really gone still fails once the budget is spent.
        | E::UnknownTopicOrPartition
        | E::OffsetNotAvailable
        | E::UnknownServerError => Attempt::Retry(format!("{e:?} (code {})", e.code())),
        E::TopicAuthorizationFailed => Attempt::Unauthorized,
        other => Attempt::Fail(format!("{other:?} (code {}): {other}", other.code())),
    }
}

/// A transport failure is retried on a new connection; a protocol mismatch
/// is not.
pub(crate) fn protocol_failure(e: ProtocolError) -> Attempt {
    match e {
        e if e.is_transport() => Attempt::Retry(e.to_string()),
        e @ ProtocolError::Security { .. } => Attempt::Refused(e.to_string()),
        e => Attempt::Fail(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leader_trouble_is_retried_out_of_range_resets_others_fail() {
        for e in [
            ResponseError::NotLeaderOrFollower,
            ResponseError::UnknownLeaderEpoch,
            ResponseError::FencedLeaderEpoch,
            ResponseError::LeaderNotAvailable,
        ] {
            assert!(matches!(classify(e), Attempt::Retry(_)), "{e:?}");
        }
        assert!(matches!(
            classify(ResponseError::OffsetOutOfRange),
            Attempt::OutOfRange(_)
        ));
        assert!(
            matches!(
                classify(ResponseError::TopicAuthorizationFailed),
                Attempt::Unauthorized
            ),
            "authorization errors are permanent and named as such"
        );
        match classify(ResponseError::InvalidRequest) {
            Attempt::Fail(reason) => {
                assert!(reason.contains("InvalidRequest"), "{reason}");
                assert!(!reason.contains('\n'), "{reason}");
            }
            _ => panic!("other errors are permanent"),
        }
    }
}
