//! Commits each partition's committable offset to the group (rule 3): only
//! offsets that changed since the last commit, so an idle consumer sends
//! nothing, and always as the member the group knows right now.

use std::collections::HashMap;
use std::sync::Arc;

use crate::group::{CommitIdentity, GroupClient, GroupError};
use crate::metrics::ConsumerMetrics;
use crate::offsets::{PartitionOffsets, TopicPartition};

/// Commits what the tracker says is safe for the partitions it is given.
pub struct Committer {
    group: GroupClient,
    last: HashMap<TopicPartition, i64>,
    metrics: Option<ConsumerMetrics>,
}

impl Committer {
    /// A committer for the group behind `group`; each request's latency
    /// goes to `metrics`, if any.
    pub fn new(group: GroupClient, metrics: Option<ConsumerMetrics>) -> Self {
        Self {
            group,
            last: HashMap::new(),
            metrics,
        }
    }

    /// The client the committer uses (also for reading committed offsets).
    pub fn group(&self) -> &GroupClient {
        &self.group
    }

    /// Records offsets the group already has (skipped until they change).
    pub fn already(&mut self, committed: &HashMap<TopicPartition, i64>) {
        self.last
            .extend(committed.iter().map(|(tp, o)| (tp.clone(), *o)));
    }

    /// Forgets a partition (revoked or lost).
    pub fn forget(&mut self, tp: &TopicPartition) {
        self.last.remove(tp);
    }

    /// The offsets committed so far (or known committed), per partition.
    pub fn committed(&self) -> &HashMap<TopicPartition, i64> {
        &self.last
    }

    /// Commits every partition of `parts` whose committable offset moved,
    /// as `who`; returns how many were committed. On error nothing is
    /// recorded, so the next call tries again — unless the error fences
    /// `who` (see [`crate::group::is_fencing_error`]): then the caller must
    /// drop the partitions.
    pub async fn commit(
        &mut self,
        parts: &[(TopicPartition, Arc<PartitionOffsets>)],
        who: &CommitIdentity,
    ) -> Result<usize, GroupError> {
        let changed: Vec<(Arc<str>, i32, i64)> = parts
            .iter()
            .filter_map(|(tp, offsets)| {
                let off = offsets.committable()?;
                (self.last.get(tp) != Some(&off))
                    .then(|| (Arc::clone(&tp.topic), tp.partition, off))
            })
            .collect();
        if changed.is_empty() {
            return Ok(0);
        }
        let started = std::time::Instant::now();
        let result = self.group.commit(&changed, who).await;
        if let Some(m) = &self.metrics {
            m.observe_commit(started.elapsed(), result.is_ok());
        }
        result?;
        for (topic, p, off) in &changed {
            self.last
                .insert(TopicPartition::new(Arc::clone(topic), *p), *off);
        }
        tracing::debug!(
            group = self.group.group_id(),
            generation = who.generation_or_epoch,
            "committed {changed:?}"
        );
        Ok(changed.len())
    }
}
