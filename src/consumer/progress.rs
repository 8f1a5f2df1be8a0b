//! The progress line printed every `--stats-interval`, and the final summary.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use crate::offsets::OffsetTracker;
use crate::pool::PoolStats;

/// High watermarks per partition, written by the fetchers, read for lag.
pub struct Watermarks {
    partitions: Vec<i32>,
    values: Vec<AtomicI64>,
}

impl Watermarks {
    /// Unknown (-1) watermarks for `partitions`.
    pub fn new(partitions: &[i32]) -> Self {
        Self {
            partitions: partitions.to_vec(),
            values: partitions.iter().map(|_| AtomicI64::new(-1)).collect(),
        }
    }

    /// Records the high watermark of the partition at `index` (position in the list).
    pub fn set(&self, index: usize, hwm: i64) {
        self.values[index].fetch_max(hwm, Ordering::Relaxed);
    }

    /// `(partition, lag)` with lag = high watermark − committable offset.
    pub fn lag(&self, topic: &Arc<str>, tracker: &OffsetTracker) -> Vec<(i32, i64)> {
        self.partitions
            .iter()
            .zip(&self.values)
            .map(|(&p, hwm)| {
                let hwm = hwm.load(Ordering::Relaxed);
                let done = tracker.committable(topic, p).unwrap_or(0);
                (p, if hwm < 0 { 0 } else { (hwm - done).max(0) })
            })
            .collect()
    }
}

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
    /// failed, and per-partition lag.
    pub fn line(&mut self, stats: &PoolStats, lag: &[(i32, i64)]) -> String {
        let now = Instant::now();
        let dt = now.duration_since(self.last_at).as_secs_f64().max(1e-9);
        let rate = stats.finished.saturating_sub(self.last_finished) as f64 / dt;
        self.last_at = now;
        self.last_finished = stats.finished;
        let mut s = format!(
            "consumer: {:.0} msg/s, {} handled, {} in flight, {} retried, {} failed, lag",
            rate, stats.finished, stats.in_flight, stats.retried, stats.failed
        );
        for (p, l) in lag {
            let _ = write!(s, " p{p}={l}");
        }
        s
    }
}
