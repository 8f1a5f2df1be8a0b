//! The ordered producer: batches records per partition and never has more than
//! one produce request in flight for a partition (DESIGN rule 8).
//!
//! Why not rskafka's `BatchProducer`: it flushes batches in background tasks
//! that may overlap, so a retried batch can land after a later one and reorder
//! a key's messages. Here each partition has one task that sends a batch, waits
//! for its acknowledgement (rskafka retries inside `produce`), and only then
//! sends the next. If a batch finally fails, that partition stops: later records
//! are reported unacknowledged rather than written out of order.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use rskafka::client::Client;
use rskafka::client::partition::{Compression as RsCompression, UnknownTopicHandling};
use rskafka::record::Record;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::cluster::{self, ClusterConfig, short};
use crate::error::{Error, Result};
use crate::partitioner::partition_for_key;

/// Record compression for produce requests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compression {
    /// No compression (default).
    #[default]
    None,
    /// gzip (pure Rust, on by default).
    Gzip,
    /// snappy (pure Rust, on by default).
    Snappy,
    /// lz4 (links C code; needs the `lz4` cargo feature).
    Lz4,
    /// zstd (links C code; needs the `zstd` cargo feature).
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
    /// The rskafka codec, or a usage error when this build lacks it.
    fn to_rskafka(self) -> Result<RsCompression> {
        let missing = |name: &str| {
            Err(Error::Usage(format!(
                "this build has no {name} support: rebuild with `cargo build --release --features {name}`"
            )))
        };
        match self {
            Self::None => Ok(RsCompression::NoCompression),
            #[cfg(feature = "gzip")]
            Self::Gzip => Ok(RsCompression::Gzip),
            #[cfg(feature = "snappy")]
            Self::Snappy => Ok(RsCompression::Snappy),
            #[cfg(feature = "lz4")]
            Self::Lz4 => Ok(RsCompression::Lz4),
            #[cfg(feature = "zstd")]
            Self::Zstd => Ok(RsCompression::Zstd),
            #[allow(unreachable_patterns)]
            other => missing(&other.to_string()),
        }
    }
}

/// How the producer batches and where it sends.
#[derive(Clone, Debug)]
pub struct ProducerConfig {
    /// Target topic.
    pub topic: String,
    /// Send every record to this partition instead of choosing by key.
    pub partition: Option<i32>,
    /// How long a partial batch may wait for more records.
    pub linger: Duration,
    /// Flush a batch once its records reach this many bytes (key + value + headers).
    pub batch_bytes: usize,
    /// Codec for produce requests.
    pub compression: Compression,
    /// Headers added to every record.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Longest a batch may wait for its acknowledgement, retries included;
    /// then the batch counts as failed (a broker that went silent must not
    /// hang the producer).
    pub request_timeout: Duration,
}

impl ProducerConfig {
    /// Defaults for `topic`: partition by key, 5 ms linger, 512 KiB batches, no compression.
    pub fn new(topic: impl Into<String>) -> Self {
        Self {
            topic: topic.into(),
            partition: None,
            linger: Duration::from_millis(5),
            batch_bytes: 512 * 1024,
            compression: Compression::None,
            headers: Vec::new(),
            request_timeout: Duration::from_secs(60),
        }
    }
}

/// Counts after [`Producer::close`]: what was sent and what the broker acknowledged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProduceSummary {
    /// Records handed to [`Producer::send`].
    pub sent: u64,
    /// Records the broker acknowledged.
    pub acknowledged: u64,
    /// Records not acknowledged (their batch failed, or a partition had stopped).
    pub failed: u64,
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

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    acknowledged: AtomicU64,
    failed: AtomicU64,
    first_error: parking_lot::Mutex<Option<String>>,
    denied: parking_lot::Mutex<Option<String>>,
}

impl Counters {
    fn fail(&self, n: u64, err: String) {
        self.failed.fetch_add(n, Ordering::Relaxed);
        self.first_error.lock().get_or_insert(err);
    }
}

/// A producer for one topic. Records of one partition are written in the order
/// [`send`](Self::send) was called; [`close`](Self::close) waits for every
/// acknowledgement.
pub struct Producer {
    topic: String,
    fixed_partition: Option<i32>,
    partitions: Vec<mpsc::Sender<Record>>,
    tasks: Vec<JoinHandle<()>>,
    headers: BTreeMap<String, Vec<u8>>,
    counters: Arc<Counters>,
    round_robin: AtomicUsize,
    started: Instant,
}

/// Records buffered per partition before `send` waits (bounded memory).
const QUEUE_PER_PARTITION: usize = 8192;

impl Producer {
    /// Looks up the topic's partitions and starts one sender task per partition.
    pub async fn new(
        client: &Client,
        cluster: &ClusterConfig,
        cfg: ProducerConfig,
    ) -> Result<Self> {
        let compression = cfg.compression.to_rskafka()?;
        let partitions = cluster::topic_partitions(cluster, &cfg.topic).await?;
        if let Some(p) = cfg.partition
            && !partitions.contains(&p)
        {
            return Err(Error::UnknownPartition {
                topic: cfg.topic.clone(),
                partition: p,
                count: partitions.len(),
            });
        }
        let counters = Arc::new(Counters::default());
        let mut senders = Vec::with_capacity(partitions.len());
        let mut tasks = Vec::with_capacity(partitions.len());
        // Partition ids of a topic are 0..n; the partitioner relies on it like Java's.
        for p in 0..partitions.len() as i32 {
            let pc = client
                .partition_client(cfg.topic.clone(), p, UnknownTopicHandling::Retry)
                .await
                .map_err(|e| {
                    Error::kafka(
                        format!("connecting to the leader of {}/{p}", cfg.topic),
                        short(&e),
                    )
                })?;
            let (tx, rx) = mpsc::channel(QUEUE_PER_PARTITION);
            senders.push(tx);
            let batcher = Batcher {
                client: pc,
                rx,
                linger: cfg.linger,
                batch_bytes: cfg.batch_bytes.max(1),
                compression,
                request_timeout: cfg.request_timeout,
                counters: Arc::clone(&counters),
                principal: cluster.security.principal_hint(),
            };
            tasks.push(tokio::spawn(batcher.run()));
        }
        Ok(Self {
            topic: cfg.topic,
            fixed_partition: cfg.partition,
            partitions: senders,
            tasks,
            headers: cfg.headers.into_iter().collect(),
            counters,
            round_robin: AtomicUsize::new(0),
            started: Instant::now(),
        })
    }

    /// Number of partitions of the topic.
    pub fn partition_count(&self) -> usize {
        self.partitions.len()
    }

    /// The partition a record with `key` goes to: the explicit partition if one
    /// was configured, else Kafka's Java default (murmur2), else round-robin for
    /// records without a key.
    pub fn partition_of(&self, key: Option<&[u8]>) -> i32 {
        if let Some(p) = self.fixed_partition {
            return p;
        }
        let n = self.partitions.len() as i32;
        match key {
            Some(k) => partition_for_key(k, n),
            None => (self.round_robin.fetch_add(1, Ordering::Relaxed) % n as usize) as i32,
        }
    }

    /// Queues one record; waits while the partition's queue is full. Fails when
    /// that partition has stopped after a failed batch (nothing later is sent to
    /// it, so its order is never broken).
    pub async fn send(&self, key: Option<Vec<u8>>, value: Vec<u8>) -> Result<()> {
        let p = self.partition_of(key.as_deref());
        let record = Record {
            key,
            value: Some(value),
            headers: self.headers.clone(),
            timestamp: Utc::now(),
        };
        self.counters.sent.fetch_add(1, Ordering::Relaxed);
        if self.partitions[p as usize].send(record).await.is_err() {
            let err = self
                .counters
                .first_error
                .lock()
                .clone()
                .unwrap_or_else(|| "sender stopped".into());
            self.counters.fail(1, err.clone());
            return Err(Error::FailedMessages(format!(
                "partition {}/{p} stopped after a failed write: {err}",
                self.topic
            )));
        }
        Ok(())
    }

    /// Records acknowledged so far (for progress lines).
    pub fn acknowledged(&self) -> u64 {
        self.counters.acknowledged.load(Ordering::Relaxed)
    }

    /// Flushes every partition, waits for all acknowledgements and reports.
    pub async fn close(self) -> ProduceSummary {
        drop(self.partitions);
        for t in self.tasks {
            if let Err(e) = t.await {
                self.counters.fail(0, format!("sender task failed: {e}"));
            }
        }
        let c = &self.counters;
        ProduceSummary {
            sent: c.sent.load(Ordering::Relaxed),
            acknowledged: c.acknowledged.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            elapsed: self.started.elapsed(),
            first_error: c.first_error.lock().clone(),
            denied: c.denied.lock().clone(),
        }
    }
}

/// One partition's sender: gathers a batch, sends it, waits for the ack, repeats.
struct Batcher {
    client: rskafka::client::partition::PartitionClient,
    rx: mpsc::Receiver<Record>,
    linger: Duration,
    batch_bytes: usize,
    compression: RsCompression,
    request_timeout: Duration,
    counters: Arc<Counters>,
    /// Who we are to the broker, to name a missing ACL.
    principal: String,
}

impl Batcher {
    async fn run(mut self) {
        while let Some(first) = self.rx.recv().await {
            let mut size = first.approximate_size();
            let mut batch = vec![first];
            let deadline = tokio::time::Instant::now() + self.linger;
            // Take what is already queued at once; wait up to `linger` for more.
            while size < self.batch_bytes {
                let next = match self.rx.try_recv() {
                    Ok(r) => Some(r),
                    Err(mpsc::error::TryRecvError::Disconnected) => None,
                    Err(mpsc::error::TryRecvError::Empty) => {
                        // A linger timeout ends the batch like a closed channel.
                        tokio::time::timeout_at(deadline, self.rx.recv())
                            .await
                            .ok()
                            .flatten()
                    }
                };
                match next {
                    Some(r) => {
                        size += r.approximate_size();
                        batch.push(r);
                    }
                    None => break,
                }
            }
            let n = batch.len() as u64;
            let sent = tokio::time::timeout(
                self.request_timeout,
                self.client.produce(batch, self.compression),
            )
            .await;
            let failure = match sent {
                Ok(Ok(_)) => None,
                Ok(Err(e)) => {
                    if cluster::is_protocol(
                        &e,
                        rskafka::client::error::ProtocolError::TopicAuthorizationFailed,
                    ) {
                        let denied = Error::denied(
                            "TOPIC_AUTHORIZATION_FAILED",
                            &self.principal,
                            "Write",
                            &format!("Topic:{}", self.client.topic()),
                        );
                        self.counters
                            .denied
                            .lock()
                            .get_or_insert(denied.to_string());
                    }
                    Some(short(&e))
                }
                Err(_) => Some(format!(
                    "no acknowledgement within {:?}",
                    self.request_timeout
                )),
            };
            match failure {
                None => {
                    self.counters.acknowledged.fetch_add(n, Ordering::Relaxed);
                }
                Some(e) => {
                    let msg = format!(
                        "producing to {}/{}: {e}",
                        self.client.topic(),
                        self.client.partition(),
                    );
                    tracing::error!("{msg}");
                    self.counters.fail(n, msg);
                    // Stop this partition: sending later records would put them
                    // before the failed ones. Count what is still queued as failed.
                    self.rx.close();
                    let mut rest = 0;
                    while self.rx.recv().await.is_some() {
                        rest += 1;
                    }
                    self.counters.failed.fetch_add(rest, Ordering::Relaxed);
                    return;
                }
            }
        }
    }
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
    fn default_build_has_the_pure_rust_codecs_only() {
        assert!(Compression::Gzip.to_rskafka().is_ok());
        assert!(Compression::Snappy.to_rskafka().is_ok());
        #[cfg(not(feature = "lz4"))]
        assert!(matches!(
            Compression::Lz4.to_rskafka(),
            Err(Error::Usage(_))
        ));
    }
}
