//! The idempotent, pipelined producer (DESIGN rule 8): records of one
//! partition are written in the order [`TopicProducer::send`] was called, never
//! twice and never out of order, even across retries, broker restarts and
//! leader changes.
//!
//! Why not rskafka's producer: it always sends producer id -1, so a retry
//! after a lost acknowledgement writes the batch twice, and its batches may
//! overlap and reorder. The path here is Kafka's Java producer, in three
//! parts:
//! - `accumulator`: records are encoded straight into one open batch per
//!   partition (no per-record allocation), sealed when full or after
//!   `linger`, within a memory budget (`buffer.memory`) that makes `send`
//!   wait;
//! - `sender`: one task sends sealed batches to each partition's leader
//!   over a pipelined connection of our own, up to `max_in_flight` requests
//!   per broker, and retries in order;
//! - `idempotence`: the producer id and epoch (InitProducerId), sequence
//!   numbers, and what each produce error means (KIP-360), as Java does.

mod accumulator;
mod client;
mod delivery;
mod idempotence;
mod partition;
mod report;
mod sender;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use crate::cluster::{self, ClusterConfig};
use crate::error::{Error, Result};
use crate::partitioner::partition_for_key;
use accumulator::{Accumulator, Budget};

pub use client::{Producer, ProducerBuilder};
pub use delivery::{Delivery, DeliveryFuture};

/// Record compression for produce requests; every codec is pure Rust.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compression {
    /// No compression (default).
    #[default]
    None,
    /// gzip (flate2 on miniz_oxide).
    Gzip,
    /// snappy, in xerial's framing as Java writes it (snap).
    Snappy,
    /// lz4 frames (lz4_flex).
    Lz4,
    /// zstd (ruzstd, at its fastest level).
    Zstd,
}

impl FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "none" => Ok(Self::None),
            "gzip" => Ok(Self::Gzip),
            "snappy" => Ok(Self::Snappy),
            "lz4" => Ok(Self::Lz4),
            "zstd" => Ok(Self::Zstd),
            other => Err(format!(
                "unknown compression '{other}' (none, gzip, snappy, lz4, zstd)"
            )),
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Self::None => "none",
            Self::Gzip => "gzip",
            Self::Snappy => "snappy",
            Self::Lz4 => "lz4",
            Self::Zstd => "zstd",
        };
        f.write_str(s)
    }
}

impl Compression {
    /// The codec's id in a record batch's attributes.
    pub fn attribute(self) -> i16 {
        match self {
            Self::None => 0,
            Self::Gzip => 1,
            Self::Snappy => 2,
            Self::Lz4 => 3,
            Self::Zstd => 4,
        }
    }
}

/// How many replicas must have a batch before the broker acknowledges it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Acks {
    /// Every in-sync replica (`acks=all`, `-1`): the default, and required
    /// for idempotence.
    #[default]
    All,
    /// The leader only (`acks=1`): a leader crash can lose acknowledged records.
    Leader,
    /// No acknowledgement (`acks=0`): nothing is known about delivery, and
    /// no offsets are reported.
    None,
}

impl FromStr for Acks {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "all" | "-1" => Ok(Self::All),
            "1" => Ok(Self::Leader),
            "0" => Ok(Self::None),
            other => Err(format!("unknown acks '{other}' (all, 1 or 0)")),
        }
    }
}

impl fmt::Display for Acks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::All => "all",
            Self::Leader => "1",
            Self::None => "0",
        })
    }
}

impl Acks {
    /// The value of the Produce request's `acks` field.
    pub fn wire(self) -> i16 {
        match self {
            Self::All => -1,
            Self::Leader => 1,
            Self::None => 0,
        }
    }
}

/// Idempotence allows at most this many requests in flight per connection
/// (the broker keeps the last five batches per producer and partition to
/// recognise duplicates).
pub const MAX_IN_FLIGHT_IDEMPOTENT: usize = 5;

/// How the producer batches, where it sends, and what it guarantees.
#[derive(Clone, Debug)]
pub struct ProducerConfig {
    /// Target topic.
    pub topic: String,
    /// Send every record to this partition instead of choosing by key.
    pub partition: Option<i32>,
    /// How long a partial batch may wait for more records.
    pub linger: Duration,
    /// Seal a batch once its records reach this many bytes (uncompressed).
    pub batch_bytes: usize,
    /// Codec for produce requests.
    pub compression: Compression,
    /// Headers added to every record.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Longest the broker may take to answer one produce request; then the
    /// connection is dropped and the batches retried.
    pub request_timeout: Duration,
    /// Longest a record may wait for its acknowledgement, retries included;
    /// then it counts as failed (a broker that stays away must not hang the
    /// producer).
    pub delivery_timeout: Duration,
    /// Replicas that must have a batch before it is acknowledged.
    pub acks: Acks,
    /// Idempotence: producer id and sequence numbers, so that retries never
    /// duplicate. Needs `acks` = all and `max_in_flight` at most 5.
    pub idempotence: bool,
    /// Produce requests in flight per broker connection. Without idempotence
    /// this is forced to 1, because a retry could otherwise overtake a
    /// later batch and reorder a key.
    pub max_in_flight: usize,
    /// Bytes of records buffered (open, queued and in flight) before `send`
    /// waits.
    pub buffer_memory: usize,
    /// Write one line per record here: its number, then partition and
    /// offset, or the error.
    pub report: Option<PathBuf>,
}

impl ProducerConfig {
    /// Defaults for `topic`, as Java's producer has them where it matters:
    /// partition by key, idempotent, acks=all, 5 requests in flight, 5 ms
    /// linger, 256 KiB batches, 8 MiB of buffer, no compression.
    pub fn new(topic: impl Into<String>) -> Self {
        Self {
            topic: topic.into(),
            partition: None,
            linger: Duration::from_millis(5),
            batch_bytes: 256 * 1024,
            compression: Compression::None,
            headers: Vec::new(),
            request_timeout: Duration::from_secs(30),
            delivery_timeout: Duration::from_secs(120),
            acks: Acks::All,
            idempotence: true,
            max_in_flight: MAX_IN_FLIGHT_IDEMPOTENT,
            buffer_memory: 8 * 1024 * 1024,
            report: None,
        }
    }

    /// Checks the combination, as Java's producer does: idempotence needs
    /// acks=all and at most 5 requests in flight.
    pub fn validate(&self) -> Result<()> {
        if self.idempotence && self.acks != Acks::All {
            return Err(Error::Usage(format!(
                "acks={} conflicts with idempotence: an idempotent producer needs acks=all (or set --idempotence false)",
                self.acks
            )));
        }
        if self.idempotence && self.max_in_flight > MAX_IN_FLIGHT_IDEMPOTENT {
            return Err(Error::Usage(format!(
                "max.in.flight.requests.per.connection={} conflicts with idempotence: at most {MAX_IN_FLIGHT_IDEMPOTENT} (or set --idempotence false)",
                self.max_in_flight
            )));
        }
        if self.max_in_flight == 0 || self.batch_bytes == 0 || self.buffer_memory == 0 {
            return Err(Error::Usage(
                "max-in-flight, batch-size and buffer-memory must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// Counts after [`TopicProducer::close`]: what was sent and what the broker acknowledged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProduceSummary {
    /// Records handed to [`TopicProducer::send`].
    pub sent: u64,
    /// Records the broker acknowledged (with acks=0: records written to the socket).
    pub acknowledged: u64,
    /// Records not acknowledged (their batch failed, or a partition had stopped).
    pub failed: u64,
    /// Batches sent again after an error or a lost connection.
    pub retried_batches: u64,
    /// Wall time from creation to close.
    pub elapsed: Duration,
    /// The first error seen, if any.
    pub first_error: Option<String>,
    /// The broker refused a write for lack of an ACL: the missing ACL, as
    /// [`Error::Security`] text (the run should exit with its code).
    pub denied: Option<String>,
}

impl ProduceSummary {
    /// Acknowledged records per second over the producer's lifetime.
    pub fn rate(&self) -> f64 {
        self.acknowledged as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Counters shared by the caller's side and the sender task.
#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    acknowledged: AtomicU64,
    failed: AtomicU64,
    retried_batches: AtomicU64,
    /// Produce request round trips (one observation per request, not per record).
    request_latency: crate::metrics::Histogram,
    first_error: parking_lot::Mutex<Option<String>>,
    denied: parking_lot::Mutex<Option<String>>,
}

impl Counters {
    /// The error first, then the count: whoever sees the count finds it.
    fn fail(&self, n: u64, err: &str) {
        self.first_error
            .lock()
            .get_or_insert_with(|| err.to_string());
        self.failed.fetch_add(n, Ordering::Release);
    }
}

/// What the caller's side and the sender task share.
struct Shared {
    accumulator: parking_lot::Mutex<Accumulator>,
    budget: Budget,
    counters: Counters,
    /// Wakes the sender: a batch was sealed or opened, or close was asked.
    wake: tokio::sync::Notify,
    report: Option<report::Report>,
    /// Futures waiting for single records.
    waiters: delivery::Waiters,
    /// Notified each time records end (acknowledged or failed): `flush` waits on it.
    settled: tokio::sync::Notify,
}

/// A producer for one topic: the engine of [`Producer`], and what the
/// `producer` binary drives. Records of one partition are written in the
/// order [`send`](Self::send) was called, each at most once;
/// [`close`](Self::close) waits for every acknowledgement.
pub struct TopicProducer {
    shared: Arc<Shared>,
    partitions: i32,
    fixed_partition: Option<i32>,
    headers: Vec<(String, Vec<u8>)>,
    /// Largest record the topic takes (its `max.message.bytes`, less the
    /// batch header), checked before a record is queued.
    max_record: Option<(usize, u64)>,
    round_robin: AtomicUsize,
    sender: tokio::sync::Mutex<Option<JoinHandle<()>>>,
    started: Instant,
    topic: String,
}

impl TopicProducer {
    /// Looks up the topic, obtains a producer id (when idempotent) and starts
    /// the sender task.
    pub async fn new(cluster: &ClusterConfig, cfg: ProducerConfig) -> Result<Self> {
        cfg.validate()?;
        let leaders =
            cluster::within_new_topic_grace(|| cluster::topic_leaders(cluster, &cfg.topic)).await?;
        let partitions = leaders.partitions.len() as i32;
        if let Some(p) = cfg.partition
            && !(0..partitions).contains(&p)
        {
            return Err(Error::UnknownPartition {
                topic: cfg.topic.clone(),
                partition: p,
                count: partitions as usize,
            });
        }
        // The topic's size limit, to refuse an oversized record up front with
        // the limit named. Reading it needs DescribeConfigs rights; without
        // them the broker's own check (MESSAGE_TOO_LARGE) still applies.
        let max_message = cluster::topic_config(cluster, &cfg.topic, "max.message.bytes")
            .await
            .ok()
            .flatten()
            .and_then(|v| v.parse::<u64>().ok());
        let producer_id = if cfg.idempotence {
            Some(idempotence::init_producer_id(cluster, &cfg.topic, None).await?)
        } else {
            None
        };
        let report = match &cfg.report {
            Some(path) => Some(report::Report::create(path)?),
            None => None,
        };
        // One batch may not exceed what the topic accepts. Compressed, only
        // the broker can tell, but a batch whose records fit uncompressed
        // fits compressed too, give or take the codec's framing (a little
        // for incompressible data): so a record too large to share a batch
        // goes alone, and only it is refused.
        let batch_cap = match max_message.map(|m| m as usize) {
            Some(m) if cfg.compression == Compression::None => cfg.batch_bytes.min(m),
            Some(m) => cfg.batch_bytes.min(m.saturating_sub(m / 64 + 128)).max(1),
            None => cfg.batch_bytes,
        };
        let shared = Arc::new(Shared {
            accumulator: parking_lot::Mutex::new(Accumulator::new(
                partitions as usize,
                batch_cap,
                cfg.compression,
            )),
            budget: Budget::new(cfg.buffer_memory),
            counters: Counters::default(),
            wake: tokio::sync::Notify::new(),
            report,
            waiters: delivery::Waiters::default(),
            settled: tokio::sync::Notify::new(),
        });
        let sender = sender::Sender::new(
            cluster.clone(),
            &cfg,
            leaders,
            producer_id,
            max_message,
            Arc::clone(&shared),
        );
        let max_record = match max_message {
            Some(m) if cfg.compression == Compression::None => Some((
                (m as usize).saturating_sub(crate::records::encode::HEADER_BYTES),
                m,
            )),
            _ => None,
        };
        Ok(Self {
            shared,
            partitions,
            fixed_partition: cfg.partition,
            headers: cfg.headers,
            max_record,
            round_robin: AtomicUsize::new(0),
            sender: tokio::sync::Mutex::new(Some(tokio::spawn(sender.run()))),
            started: Instant::now(),
            topic: cfg.topic,
        })
    }

    /// Number of partitions of the topic.
    pub fn partition_count(&self) -> usize {
        self.partitions as usize
    }

    /// The partition a record with `key` goes to: the explicit partition if one
    /// was configured, else Kafka's Java default (murmur2), else round-robin for
    /// records without a key.
    pub fn partition_of(&self, key: Option<&[u8]>) -> i32 {
        if let Some(p) = self.fixed_partition {
            return p;
        }
        match key {
            Some(k) => partition_for_key(k, self.partitions),
            None => {
                (self.round_robin.fetch_add(1, Ordering::Relaxed) % self.partitions as usize) as i32
            }
        }
    }

    /// Queues one record, encoded into its partition's open batch, stamped
    /// with the current time; see [`send_at`](Self::send_at).
    pub async fn send(&self, key: Option<&[u8]>, value: &[u8]) -> Result<()> {
        self.send_at(key, value, now_ms()).await
    }

    /// Queues one record with create time `timestamp_ms` (milliseconds since
    /// the Unix epoch), encoded into its partition's open batch; waits while
    /// the buffer budget is spent. Records are numbered from 1 in the order
    /// they are queued (the numbers of the report file; for one sender, the
    /// order of its calls). A caller sending
    /// many records at once can read the clock once for all of them.
    ///
    /// Fails, without queuing the record, when it is larger than the topic
    /// takes, or when its partition stopped after a failed batch (nothing
    /// later is sent to it, so its order is never broken).
    pub async fn send_at(&self, key: Option<&[u8]>, value: &[u8], timestamp_ms: i64) -> Result<()> {
        let size = self.admit(key, value, &self.headers)?;
        self.shared.budget.acquire(size, &self.shared).await;
        self.append(key, value, &self.headers, timestamp_ms, size, false)
            .map(|_| ())
    }

    /// Queues one record with these `headers` (after the configured ones)
    /// and returns a future of its [`Delivery`]: the partition and offset
    /// once acknowledged. Waits while the buffer budget is spent; fails like
    /// [`send_at`](Self::send_at).
    pub async fn enqueue(
        &self,
        key: Option<&[u8]>,
        value: &[u8],
        headers: &[(&str, &[u8])],
    ) -> Result<DeliveryFuture> {
        let merged;
        let all: &[(String, Vec<u8>)] = if headers.is_empty() {
            &self.headers
        } else {
            merged = self
                .headers
                .iter()
                .cloned()
                .chain(headers.iter().map(|(k, v)| (k.to_string(), v.to_vec())))
                .collect::<Vec<_>>();
            &merged
        };
        let size = self.admit(key, value, all)?;
        self.shared.budget.acquire(size, &self.shared).await;
        let waiter = self.append(key, value, all, now_ms(), size, true)?;
        Ok(waiter.expect("asked for"))
    }

    /// Seals every open batch and waits until each record queued before
    /// the call was acknowledged or failed. Fails if any of them failed
    /// (each [`DeliveryFuture`] says which).
    pub async fn flush(&self) -> Result<()> {
        let c = &self.shared.counters;
        let target = c.sent.load(Ordering::Acquire);
        let failed_before = c.failed.load(Ordering::Acquire);
        self.shared.accumulator.lock().seal_all();
        self.shared.wake.notify_one();
        loop {
            let settled = self.shared.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            if self.shared.ended() >= target {
                break;
            }
            // Every record ends by its delivery timeout while the sender
            // runs; a sender that died (a bug) must not hang the caller.
            if tokio::time::timeout(Duration::from_secs(1), settled)
                .await
                .is_err()
                && self.sender_gone()
                && self.shared.ended() < target
            {
                return Err(Error::Internal(format!(
                    "the sender of '{}' stopped with records unacknowledged",
                    self.topic
                )));
            }
        }
        match c.failed.load(Ordering::Acquire) - failed_before {
            0 => Ok(()),
            n => Err(Error::FailedMessages(format!(
                "{n} record(s) to '{}' were not acknowledged; the first error: {}",
                self.topic,
                c.first_error.lock().as_deref().unwrap_or("unknown")
            ))),
        }
    }

    /// Whether the sender task has ended (or was awaited by `close`).
    fn sender_gone(&self) -> bool {
        self.sender
            .try_lock()
            .is_ok_and(|s| s.as_ref().is_none_or(|h| h.is_finished()))
    }

    /// [`send_at`](Self::send_at) when the buffer has room now: queues the
    /// record and returns `Ok(true)` without waiting, or returns `Ok(false)`
    /// having done nothing (not even numbered the record) when `send_at`
    /// would wait. A plain function, so a caller sending many records (the
    /// CLI's input loop) creates a `send_at` future, and moves it, only when
    /// the buffer is full; fails like `send_at`.
    pub fn try_send_at(&self, key: Option<&[u8]>, value: &[u8], timestamp_ms: i64) -> Result<bool> {
        let size = self.admit(key, value, &self.headers)?;
        if !self.shared.budget.try_acquire(size) {
            return Ok(false);
        }
        self.append(key, value, &self.headers, timestamp_ms, size, false)
            .map(|_| true)
    }

    /// The record's encoded size, or (numbering it, and counting it failed)
    /// the error when it is larger than the topic takes.
    fn admit(
        &self,
        key: Option<&[u8]>,
        value: &[u8],
        headers: &[(String, Vec<u8>)],
    ) -> Result<usize> {
        let size = crate::records::encode::BatchBuilder::record_size(key, value, headers);
        if let Some((max, limit)) = self.max_record
            && size > max
        {
            let number = self.shared.counters.sent.fetch_add(1, Ordering::Relaxed) + 1;
            let err = format!(
                "record {number} is {size} bytes encoded, over the topic's max.message.bytes ({limit}): not sent; raise the topic's max.message.bytes or send smaller records"
            );
            self.fail_record(number, &err);
            return Err(Error::FailedMessages(err));
        }
        Ok(size)
    }

    /// Numbers the record and appends it to its partition's open batch;
    /// `size` bytes of the budget are already taken. With `wait`, returns
    /// the future of its delivery, registered before the record is queued.
    fn append(
        &self,
        key: Option<&[u8]>,
        value: &[u8],
        headers: &[(String, Vec<u8>)],
        timestamp_ms: i64,
        size: usize,
        wait: bool,
    ) -> Result<Option<DeliveryFuture>> {
        let number = self.shared.counters.sent.fetch_add(1, Ordering::Relaxed) + 1;
        let waiter = wait.then(|| self.shared.waiters.register(number));
        let p = self.partition_of(key);
        let outcome = self.shared.accumulator.lock().append(
            p as usize,
            number,
            key,
            value,
            headers,
            timestamp_ms,
            size,
        );
        let err = match outcome {
            accumulator::Appended::Queued { wake } => {
                if wake {
                    self.shared.wake.notify_one();
                }
                return Ok(waiter);
            }
            accumulator::Appended::Closed => {
                format!(
                    "the producer of '{}' is closed: record not sent",
                    self.topic
                )
            }
            accumulator::Appended::Stopped(reason) => format!(
                "partition {}/{p} stopped after a failed write: {reason}",
                self.topic
            ),
        };
        // Not queued: its budget back, and the record failed (its future too).
        self.shared.budget.release(size);
        self.fail_record(number, &err);
        Err(Error::FailedMessages(err))
    }

    fn fail_record(&self, number: u64, err: &str) {
        self.shared.failed(&[number], err);
    }

    /// A live view of the counters, for metrics; valid after
    /// [`close`](Self::close) too.
    pub fn counters(&self) -> ProducerCounters {
        ProducerCounters(Arc::clone(&self.shared))
    }

    /// Records acknowledged so far (for progress lines).
    pub fn acknowledged(&self) -> u64 {
        self.shared.counters.acknowledged.load(Ordering::Relaxed)
    }

    /// Seals every open batch, waits for every acknowledgement (or failure)
    /// and reports. Records sent after `close` fail.
    pub async fn close(&self) -> ProduceSummary {
        self.shared.accumulator.lock().close();
        self.shared.wake.notify_one();
        if let Some(sender) = self.sender.lock().await.take()
            && let Err(e) = sender.await
        {
            self.shared
                .counters
                .fail(0, &format!("sender task failed: {e}"));
        }
        if let Some(r) = &self.shared.report
            && let Err(e) = r.flush()
        {
            self.shared
                .counters
                .fail(0, &format!("writing the report: {e}"));
        }
        let c = &self.shared.counters;
        ProduceSummary {
            sent: c.sent.load(Ordering::Relaxed),
            acknowledged: c.acknowledged.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            retried_batches: c.retried_batches.load(Ordering::Relaxed),
            elapsed: self.started.elapsed(),
            first_error: c.first_error.lock().clone(),
            denied: c.denied.lock().clone(),
        }
    }
}

impl Drop for TopicProducer {
    /// Without [`close`](Self::close): the sender still writes what was
    /// queued, then ends (nothing waits for it).
    fn drop(&mut self) {
        self.shared.accumulator.lock().close();
        self.shared.wake.notify_one();
    }
}

/// A cloneable, read-only view of a producer's counters, for metrics: reads
/// atomics, takes no lock, adds nothing per record.
#[derive(Clone)]
pub struct ProducerCounters(Arc<Shared>);

/// The counters at one moment (as in [`ProduceSummary`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProducerCounts {
    /// Records handed to [`TopicProducer::send`].
    pub sent: u64,
    /// Records the broker acknowledged.
    pub acknowledged: u64,
    /// Records not acknowledged.
    pub failed: u64,
    /// Batches sent again after an error or a lost connection.
    pub retried_batches: u64,
}

impl ProducerCounters {
    /// The counters now.
    pub fn snapshot(&self) -> ProducerCounts {
        let c = &self.0.counters;
        ProducerCounts {
            sent: c.sent.load(Ordering::Relaxed),
            acknowledged: c.acknowledged.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            retried_batches: c.retried_batches.load(Ordering::Relaxed),
        }
    }

    /// Produce request latency: sending a request to reading its response.
    pub fn request_latency(&self) -> &crate::metrics::Histogram {
        &self.0.counters.request_latency
    }
}

impl fmt::Debug for ProducerCounters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ProducerCounters")
            .field(&self.snapshot())
            .finish()
    }
}

/// The wall clock in milliseconds since the Unix epoch, as record
/// timestamps count.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_names_round_trip() {
        for c in ["none", "gzip", "snappy", "lz4", "zstd"] {
            assert_eq!(c.parse::<Compression>().unwrap().to_string(), c);
        }
        assert!("brotli".parse::<Compression>().is_err());
    }

    #[test]
    fn idempotence_refuses_weaker_acks_and_deeper_pipelines() {
        let mut cfg = ProducerConfig::new("t");
        assert!(cfg.validate().is_ok());
        for acks in [Acks::Leader, Acks::None] {
            cfg.acks = acks;
            let err = cfg.validate().unwrap_err().to_string();
            assert!(err.contains("idempotence"), "{err}");
        }
        cfg.acks = Acks::All;
        cfg.max_in_flight = 6;
        assert!(cfg.validate().is_err());
        cfg.idempotence = false;
        assert!(cfg.validate().is_ok());
        cfg.acks = Acks::None;
        assert!(cfg.validate().is_ok());
    }

    #[test]
    fn acks_parse_like_kafka() {
        assert_eq!("all".parse::<Acks>().unwrap(), Acks::All);
        assert_eq!("-1".parse::<Acks>().unwrap(), Acks::All);
        assert_eq!("1".parse::<Acks>().unwrap().wire(), 1);
        assert_eq!("0".parse::<Acks>().unwrap().wire(), 0);
        assert!("2".parse::<Acks>().is_err());
    }
}
