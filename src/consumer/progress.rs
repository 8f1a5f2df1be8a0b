//! The progress line printed every `--stats-interval`, and the final summary.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::group::MemberStatus;
use crate::offsets::TopicPartition;
use crate::pool::PoolStats;

/// Turns successive pool counters into rates.
pub struct Progress {
    started: Instant,
    last_at: Instant,
    last_finished: u64,
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

/// `p3` when the consumer reads one topic, else `topic-3`: short lines for
/// the common case, unambiguous ones otherwise.
pub fn partition_label(tp: &TopicPartition, single_topic: bool) -> String {
    if single_topic {
        format!("p{}", tp.partition)
    } else {
        tp.to_string()
    }
}

impl Progress {
    /// Starts the clock.
    pub fn new() -> Self {
        let now = Instant::now();
        Self {
            started: now,
            last_at: now,
            last_finished: 0,
        }
    }

    /// Time since start.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// One progress line: rate since the last line, in flight, retried,
    /// failed, skipped as already done by an offset map, per-partition lag,
    /// the partitions paused because their offset map is full, and the
    /// group membership if any.
    pub fn line(
        &mut self,
        stats: &PoolStats,
        lag: &[(TopicPartition, i64)],
        paused: &[TopicPartition],
        single_topic: bool,
        group: Option<&MemberStatus>,
    ) -> String {
        let now = Instant::now();
        let dt = now.duration_since(self.last_at).as_secs_f64().max(1e-9);
        let rate = stats.finished.saturating_sub(self.last_finished) as f64 / dt;
        self.last_at = now;
        self.last_finished = stats.finished;
        let mut s = format!(
            "consumer: {:.0} msg/s, {} handled, {} in flight, {} retried, {} failed,",
            rate, stats.finished, stats.in_flight, stats.retried, stats.failed
        );
        if stats.already_done > 0 {
            let _ = write!(s, " {} already done (offset map),", stats.already_done);
        }
        s.push_str(" lag");
        if lag.is_empty() {
            s.push_str(" -");
        }
        for (tp, l) in lag {
            let _ = write!(s, " {}={l}", partition_label(tp, single_topic));
        }
        if !paused.is_empty() {
            s.push_str("; offset map full, fetch paused:");
            for tp in paused {
                let _ = write!(s, " {}", partition_label(tp, single_topic));
            }
        }
        if let Some(g) = group {
            let _ = write!(s, "; {}", g.line());
        }
        s
    }
}
