//! Commits each partition's committable offset to the group (rule 3), with
//! the offsets finished beyond it as an offset map in the commit's metadata
//! (issue 15, [`crate::offset_map`]): only partitions whose offset or map
//! changed since the last commit, so an idle consumer sends nothing, and
//! always as the member the group knows right now.
//!
//! The committer also enforces the map's size bound: a partition whose map
//! does not fit the broker's `offset.metadata.max.bytes` is committed with
//! the part that fits and paused (its reader fetches nothing more) until
//! its committed offset advances enough for the whole map to fit again.

use std::collections::HashMap;
use std::sync::Arc;

use crate::cluster::ClusterConfig;
use crate::group::{CommitIdentity, GroupClient, GroupError};
use crate::metrics::ConsumerMetrics;
use crate::offset_map::{Skipper, Source, read_metadata};
use crate::offsets::{PartitionOffsets, TopicPartition};

/// The broker's `offset.metadata.max.bytes` when it cannot be read.
pub const DEFAULT_MAP_LIMIT: usize = 4096;

/// The longest offset map a commit may carry: the broker's
/// `offset.metadata.max.bytes` (read from a broker leading `topic`; 4096,
/// Kafka's default, when it cannot be read), capped by `wanted` (`Some(0)`
/// turns maps off without asking the broker).
pub async fn map_limit(cluster: &ClusterConfig, topic: &str, wanted: Option<usize>) -> usize {
    if wanted == Some(0) {
        return 0;
    }
    let broker = match crate::cluster::broker_config(cluster, topic, "offset.metadata.max.bytes")
        .await
    {
        Ok(Some(v)) => v.trim().parse().ok(),
        Ok(None) => None,
        Err(e) => {
            tracing::debug!("reading offset.metadata.max.bytes: {e}; assuming {DEFAULT_MAP_LIMIT}");
            None
        }
    };
    let broker = broker.unwrap_or(DEFAULT_MAP_LIMIT);
    wanted.map_or(broker, |w| w.min(broker))
}

/// Where a partition starts by the group's commit, and which records above
/// that its offset map says are done.
#[derive(Debug)]
pub struct Start {
    /// The committed offset.
    pub offset: i64,
    /// The records the map marks done (skipped, never handled).
    pub done: Option<Skipper>,
}

/// Commits what the tracker says is safe for the partitions it is given.
pub struct Committer {
    group: GroupClient,
    last: HashMap<TopicPartition, i64>,
    /// The metadata (offset map) last committed per partition.
    last_map: HashMap<TopicPartition, String>,
    /// Per partition, the tracker version (see
    /// [`PartitionOffsets::commit_point_since`]) whose commit point is
    /// known committed: until it moves, the partition is not re-encoded.
    settled: HashMap<TopicPartition, u64>,
    metrics: Option<ConsumerMetrics>,
    /// Longest metadata a commit may carry; 0 turns offset maps off.
    map_limit: usize,
}

/// One partition's commit: topic, partition, offset, metadata.
type Entry = (Arc<str>, i32, i64, String);

/// A partition whose commit point moved: its tracker version and its entry.
struct Change {
    version: u64,
    entry: Entry,
}

impl Committer {
    /// A committer for the group behind `group`; each request's latency
    /// goes to `metrics`, if any. `map_limit` is the longest metadata
    /// string (offset map) a commit may carry: the broker's
    /// `offset.metadata.max.bytes` or less; 0 commits no maps.
    pub fn new(group: GroupClient, metrics: Option<ConsumerMetrics>, map_limit: usize) -> Self {
        Self {
            group,
            last: HashMap::new(),
            last_map: HashMap::new(),
            settled: HashMap::new(),
            metrics,
            map_limit,
        }
    }

    /// The client the committer uses (also for reading committed offsets).
    pub fn group(&self) -> &GroupClient {
        &self.group
    }

    /// Reads the group's committed offsets of `tps` with their offset maps
    /// (ours or parallel-consumer's), and records them as already
    /// committed. Metadata that is not a map we can read counts as nothing
    /// done beyond the committed offset, with one line saying so.
    pub async fn read_committed(
        &mut self,
        tps: &[TopicPartition],
    ) -> Result<HashMap<TopicPartition, Start>, GroupError> {
        let mut by_topic: HashMap<Arc<str>, Vec<i32>> = HashMap::new();
        for tp in tps {
            by_topic
                .entry(Arc::clone(&tp.topic))
                .or_default()
                .push(tp.partition);
        }
        let query: Vec<(Arc<str>, Vec<i32>)> = by_topic.into_iter().collect();
        let fetched = self.group.fetch_committed_with_metadata(&query).await?;
        let mut out = HashMap::new();
        for ((topic, partition), committed) in fetched {
            let Some(c) = committed else { continue };
            let tp = TopicPartition::new(topic, partition);
            let done = match read_metadata(c.offset, &c.metadata) {
                Ok(None) => None,
                Ok(Some((map, source))) => {
                    let by = match source {
                        Source::MyKafkaMs => "MyKafkaMS".to_string(),
                        Source::ParallelConsumer(enc) => format!("parallel-consumer ({enc})"),
                    };
                    tracing::info!(
                        "{tp}: the {by} offset map committed with offset {} marks {} records above it done: they are skipped",
                        c.offset,
                        map.done_count()
                    );
                    Skipper::new(map)
                }
                Err(why) => {
                    tracing::warn!(
                        "{tp}: the metadata committed with offset {} is not an offset map this consumer reads ({why}); handling every record from {}",
                        c.offset,
                        c.offset
                    );
                    None
                }
            };
            self.last.insert(tp.clone(), c.offset);
            self.last_map.insert(tp.clone(), c.metadata);
            out.insert(
                tp,
                Start {
                    offset: c.offset,
                    done,
                },
            );
        }
        Ok(out)
    }

    /// Forgets a partition (revoked or lost).
    pub fn forget(&mut self, tp: &TopicPartition) {
        self.last.remove(tp);
        self.last_map.remove(tp);
        self.settled.remove(tp);
    }

    /// The offsets committed so far (or known committed), per partition.
    pub fn committed(&self) -> &HashMap<TopicPartition, i64> {
        &self.last
    }

    /// The longest offset map a commit carries now (it shrinks if the
    /// broker refuses one as too large).
    pub fn map_limit(&self) -> usize {
        self.map_limit
    }

    /// Commits every partition of `parts` whose committable offset or
    /// offset map changed, as `who`; returns how many were committed. On
    /// error nothing is recorded, so the next call tries again — unless the
    /// error fences `who` (see [`crate::group::is_fencing_error`]): then the
    /// caller must drop the partitions.
    ///
    /// Also pauses or resumes each partition's fetching by whether its
    /// whole map fits the limit.
    pub async fn commit(
        &mut self,
        parts: &[(TopicPartition, Arc<PartitionOffsets>)],
        who: &CommitIdentity,
    ) -> Result<usize, GroupError> {
        loop {
            let changed = self.changed(parts);
            if changed.is_empty() {
                return Ok(0);
            }
            let started = std::time::Instant::now();
            let entries: Vec<(&str, i32, i64, &str)> = changed
                .iter()
                .map(|c| (&*c.entry.0, c.entry.1, c.entry.2, c.entry.3.as_str()))
                .collect();
            let result = self.group.commit_with_metadata(&entries, who).await;
            if let Some(m) = &self.metrics {
                m.observe_commit(started.elapsed(), result.is_ok());
            }
            match result {
                Ok(()) => {}
                Err(e) if self.map_limit > 0 && too_large(&e) => {
                    // The broker's limit is lower than we were told (its
                    // config could not be read): halve ours and try again.
                    self.map_limit /= 2;
                    // Every map is re-encoded within the new limit.
                    self.settled.clear();
                    tracing::warn!(
                        "the broker refused an offset map as too large; offset maps are now at most {} bytes",
                        self.map_limit
                    );
                    continue;
                }
                Err(e) => return Err(e),
            }
            for Change { version, entry } in &changed {
                let (topic, p, off, map) = entry;
                let tp = TopicPartition::new(Arc::clone(topic), *p);
                self.last.insert(tp.clone(), *off);
                self.last_map.insert(tp.clone(), map.clone());
                self.settled.insert(tp, *version);
            }
            tracing::debug!(
                group = self.group.group_id(),
                generation = who.generation_or_epoch,
                "committed {:?}",
                changed
                    .iter()
                    .map(|c| (&c.entry.0, c.entry.1, c.entry.2, c.entry.3.len()))
                    .collect::<Vec<_>>()
            );
            return Ok(changed.len());
        }
    }

    /// The partitions whose offset or map moved since their last commit,
    /// pausing or resuming each by whether its map fits. A partition whose
    /// tracker did not change since its commit point was last found
    /// committed is skipped without being walked or encoded.
    fn changed(&mut self, parts: &[(TopicPartition, Arc<PartitionOffsets>)]) -> Vec<Change> {
        let mut changed = Vec::new();
        for (tp, offsets) in parts {
            let Some((version, point)) = offsets.commit_point_since(self.settled.get(tp).copied())
            else {
                continue;
            };
            let Some((off, map)) = point else {
                continue;
            };
            let metadata = if self.map_limit == 0 {
                String::new()
            } else {
                let encoded = map.encode_within(self.map_limit);
                let was_full = offsets.set_map_full(encoded.truncated);
                if encoded.truncated && !was_full {
                    tracing::info!(
                        "{tp}: offset map over {} bytes ({} finished offsets above {off}): fetching paused until offset {off} is done",
                        self.map_limit,
                        map.done_count()
                    );
                } else if was_full && !encoded.truncated {
                    tracing::info!("{tp}: offset map fits again: fetching resumed");
                }
                encoded.metadata
            };
            let same = self.last.get(tp) == Some(&off)
                && self.last_map.get(tp).map_or("", String::as_str) == metadata;
            if same {
                self.settled.insert(tp.clone(), version);
            } else {
                changed.push(Change {
                    version,
                    entry: (Arc::clone(&tp.topic), tp.partition, off, metadata),
                });
            }
        }
        changed
    }
}

/// True when a commit failed because a metadata string was too long.
fn too_large(e: &GroupError) -> bool {
    matches!(
        e.kafka_error(),
        Some(kafka_protocol::ResponseError::OffsetMetadataTooLarge)
    )
}
