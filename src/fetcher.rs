//! Reading one partition: long-poll fetches that turn rskafka records into
//! [`Message`]s and keep the position and the high watermark.
//!
//! Idle partitions cost nothing: each fetch waits on the broker up to
//! `max_wait` for data (the broker's long poll), so there is no busy loop.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rskafka::client::Client;
use rskafka::client::error::ProtocolError;
use rskafka::client::partition::{OffsetAt, PartitionClient, UnknownTopicHandling};

use crate::cluster::{is_protocol, short};
use crate::error::{Error, Result};
use crate::message::Message;

/// Where to start when there is no usable position (none committed, or the
/// position fell out of the log through retention).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reset {
    /// The oldest record still in the log.
    Earliest,
    /// The end of the log: only records produced from now on.
    Latest,
}

/// Tuning of one partition's fetches.
#[derive(Clone, Debug)]
pub struct FetchConfig {
    /// Longest the broker may hold a fetch waiting for data.
    pub max_wait: Duration,
    /// Most bytes one fetch may return.
    pub max_bytes: i32,
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
            max_bytes: 1024 * 1024,
            reset: Reset::Earliest,
            request_timeout: Duration::from_secs(60),
        }
    }
}

/// A reader of one topic-partition.
pub struct PartitionFetcher {
    client: PartitionClient,
    topic: Arc<str>,
    partition: i32,
    next: i64,
    high_watermark: i64,
    cfg: FetchConfig,
}

impl PartitionFetcher {
    /// Opens a reader on `topic`/`partition`. The start position is set later
    /// with [`seek`](Self::seek) (see [`resolve`](Self::resolve)).
    pub async fn open(
        client: &Client,
        topic: &str,
        partition: i32,
        cfg: FetchConfig,
    ) -> Result<Self> {
        let pc = client
            .partition_client(topic.to_string(), partition, UnknownTopicHandling::Error)
            .await
            .map_err(|e| {
                Error::kafka(
                    format!("connecting to the leader of {topic}/{partition}"),
                    short(&e),
                )
            })?;
        Ok(Self {
            client: pc,
            topic: Arc::from(topic),
            partition,
            next: 0,
            high_watermark: -1,
            cfg,
        })
    }

    /// The partition this fetcher reads.
    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// The offset the next fetch starts at.
    pub fn position(&self) -> i64 {
        self.next
    }

    /// The high watermark seen by the last fetch or lookup (-1 before any).
    pub fn high_watermark(&self) -> i64 {
        self.high_watermark
    }

    /// Whether the position has reached the end of the log as last seen.
    pub fn caught_up(&self) -> bool {
        self.high_watermark >= 0 && self.next >= self.high_watermark
    }

    /// Moves the position.
    pub fn seek(&mut self, offset: i64) {
        self.next = offset;
    }

    /// The earliest or latest offset of the partition.
    pub async fn resolve(&mut self, at: Reset) -> Result<i64> {
        let what = match at {
            Reset::Earliest => OffsetAt::Earliest,
            Reset::Latest => OffsetAt::Latest,
        };
        let offset = self.client.get_offset(what).await.map_err(|e| {
            Error::kafka(
                format!(
                    "looking up the {at:?} offset of {}/{}",
                    self.topic, self.partition
                )
                .to_lowercase(),
                short(&e),
            )
        })?;
        if at == Reset::Latest {
            self.high_watermark = self.high_watermark.max(offset);
        }
        Ok(offset)
    }

    /// An empty fetch below the high watermark means one of two things, told
    /// apart by the last stable offset (what `Latest` returns under rskafka's
    /// read-committed isolation):
    /// - position < LSO: the log at the position holds no data record at or
    ///   after it (a transaction marker, which rskafka drops, or a compacted
    ///   tail of a batch). Without a step the same fetch would repeat at once,
    ///   forever. Stepping one offset is safe: a data record at the position
    ///   would have been returned.
    /// - position >= LSO: an open transaction; wait for it (the broker's long
    ///   poll already did), and treat the LSO as the end for `caught_up`.
    async fn step_over_markers(&mut self) -> Result<()> {
        let lso = self.resolve(Reset::Latest).await?;
        if lso > self.next {
            tracing::debug!(
                topic = %self.topic,
                partition = self.partition,
                "no data record at offset {} (transaction marker or compacted); stepping over it",
                self.next
            );
            self.next += 1;
        } else {
            self.high_watermark = lso;
        }
        Ok(())
    }

    /// Fetches the next records (possibly none, after the broker's long poll)
    /// and advances the position past them. A position outside the log is reset
    /// as configured, with a warning, like Java's `auto.offset.reset`.
    pub async fn next_batch(&mut self) -> Result<Vec<Message>> {
        let max_wait = self.cfg.max_wait.as_millis().min(i32::MAX as u128) as i32;
        let fetch = self
            .client
            .fetch_records(self.next, 1..self.cfg.max_bytes.max(1), max_wait);
        let Ok(fetched) =
            tokio::time::timeout(self.cfg.max_wait + self.cfg.request_timeout, fetch).await
        else {
            return Err(Error::kafka(
                format!(
                    "fetching {}/{} at offset {}",
                    self.topic, self.partition, self.next
                ),
                format!(
                    "no answer within {:?}",
                    self.cfg.max_wait + self.cfg.request_timeout
                ),
            ));
        };
        let (records, hwm) = match fetched {
            Ok(r) => r,
            Err(e) if is_protocol(&e, ProtocolError::OffsetOutOfRange) => {
                let to = self.resolve(self.cfg.reset).await?;
                tracing::warn!(
                    topic = %self.topic,
                    partition = self.partition,
                    "offset {} is out of range; resetting to {:?} offset {to}",
                    self.next,
                    self.cfg.reset
                );
                self.next = to;
                return Ok(Vec::new());
            }
            Err(e) => {
                return Err(Error::kafka(
                    format!(
                        "fetching {}/{} at offset {}",
                        self.topic, self.partition, self.next
                    ),
                    short(&e),
                ));
            }
        };
        self.high_watermark = hwm;
        if records.is_empty() && hwm > self.next {
            self.step_over_markers().await?;
            return Ok(Vec::new());
        }
        let mut out = Vec::with_capacity(records.len());
        for r in records {
            // Offsets may have gaps (compaction, transaction markers): the next
            // position is after the last record seen, never a computed count.
            self.next = self.next.max(r.offset + 1);
            out.push(Message {
                topic: Arc::clone(&self.topic),
                partition: self.partition,
                offset: r.offset,
                key: r.record.key.map(Bytes::from),
                value: r.record.value.map(Bytes::from),
                timestamp_ms: r.record.timestamp.timestamp_millis(),
                headers: r
                    .record
                    .headers
                    .into_iter()
                    .map(|(k, v)| (k, Bytes::from(v)))
                    .collect(),
            });
        }
        Ok(out)
    }
}
