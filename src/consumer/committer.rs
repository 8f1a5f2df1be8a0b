//! Commits each partition's committable offset to the group (rule 3): only
//! offsets that changed since the last commit, so an idle consumer sends nothing.

use std::collections::HashMap;
use std::sync::Arc;

use crate::error::Result;
use crate::group::GroupClient;
use crate::offsets::OffsetTracker;

/// Commits what the tracker says is safe, as a standalone member (manual
/// assignment, generation -1), like Kafka's Java consumer after `assign()`.
pub struct Committer {
    group: GroupClient,
    topic: Arc<str>,
    partitions: Vec<i32>,
    last: HashMap<i32, i64>,
}

impl Committer {
    /// A committer for `partitions` of `topic`. `already` holds offsets the
    /// group has committed (skipped until they change).
    pub fn new(
        group: GroupClient,
        topic: Arc<str>,
        partitions: Vec<i32>,
        already: HashMap<i32, i64>,
    ) -> Self {
        Self {
            group,
            topic,
            partitions,
            last: already,
        }
    }

    /// The offsets committed so far, per partition.
    pub fn committed(&self) -> &HashMap<i32, i64> {
        &self.last
    }

    /// Commits every partition whose committable offset moved; returns how
    /// many were committed. On error nothing is recorded, so the next call
    /// tries again.
    pub async fn commit(&mut self, tracker: &OffsetTracker) -> Result<usize> {
        let changed: Vec<(Arc<str>, i32, i64)> = self
            .partitions
            .iter()
            .filter_map(|&p| {
                let off = tracker.committable(&self.topic, p)?;
                (self.last.get(&p) != Some(&off)).then(|| (Arc::clone(&self.topic), p, off))
            })
            .collect();
        if changed.is_empty() {
            return Ok(0);
        }
        self.group.commit_standalone(&changed).await?;
        for (_, p, off) in &changed {
            self.last.insert(*p, *off);
        }
        tracing::debug!(group = self.group.group_id(), "committed {changed:?}");
        Ok(changed.len())
    }
}
