//! The partitions this consumer reads right now, and their fetch tasks.
//!
//! Partitions come and go while the pipeline runs (group rebalances): each
//! one is started from a validated position with a reader task of its own
//! (`consumer::fetch`) and a fresh [`PartitionOffsets`] in the tracker (one per
//! assignment, so completions of an earlier assignment can never touch a
//! later one), and stopped by telling its reader and waiting until it has
//! returned, after which nothing more of it is submitted to the pool. The
//! readers share one fetch task per broker ([`Router`]) and one byte budget.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::cluster::ClusterConfig;
use crate::error::Result;
use crate::fetcher::budget::ByteBudget;
use crate::fetcher::router::Router;
use crate::fetcher::{FetchConfig, PartitionFetcher, Reset, broker};
use crate::offsets::{OffsetTracker, PartitionOffsets, TopicPartition};
use crate::pool::Pool;

use super::StartAt;
use super::committer::Start;
use super::fetch::{Ended, Reader};

/// A fetch task's report: which partition (and which assignment of it) ended how.
struct Done {
    tp: TopicPartition,
    id: u64,
    result: Result<Ended>,
}

/// One partition being read.
struct Running {
    id: u64,
    offsets: Arc<PartitionOffsets>,
    /// End of the readable log as last seen by the fetcher (-1 unknown).
    end: Arc<AtomicI64>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    at_end: bool,
}

/// What a partition needs to start fetching.
pub(crate) struct Settings {
    pub(crate) cluster: ClusterConfig,
    pub(crate) fetch: FetchConfig,
    pub(crate) start: StartAt,
    pub(crate) reset: Reset,
    pub(crate) exit_at_end: bool,
}

/// The running partitions.
pub(crate) struct Assignment {
    settings: Settings,
    pool: Arc<Pool>,
    tracker: Arc<OffsetTracker>,
    running: BTreeMap<TopicPartition, Running>,
    /// The fetch task of each broker leading a running partition.
    router: Arc<Router>,
    next_id: u64,
    done_tx: mpsc::UnboundedSender<Done>,
    done_rx: mpsc::UnboundedReceiver<Done>,
}

impl Assignment {
    pub(crate) fn new(settings: Settings, pool: Arc<Pool>, tracker: Arc<OffsetTracker>) -> Self {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let router = Router::new(broker::Settings {
            connection: settings.cluster.connection(),
            fetch: settings.fetch.clone(),
            exit_at_end: settings.exit_at_end,
            budget: ByteBudget::new(settings.fetch.buffer_bytes),
        });
        Self {
            router,
            settings,
            pool,
            tracker,
            running: BTreeMap::new(),
            next_id: 0,
            done_tx,
            done_rx,
        }
    }

    /// Starts fetching `tps`. `committed` holds the group's committed
    /// offsets and offset maps (used when the start is
    /// [`StartAt::Committed`]; the maps' skippers are taken). Each start
    /// is validated against the log first: a committed offset past the end
    /// (topic recreated) or before the start (retention) falls back to the
    /// reset position, with a warning, and its map is not used.
    pub(crate) async fn start(
        &mut self,
        tps: &[TopicPartition],
        committed: &mut HashMap<TopicPartition, Start>,
    ) -> Result<()> {
        for tp in tps {
            if self.running.contains_key(tp) {
                continue;
            }
            let cfg = FetchConfig {
                reset: self.settings.reset,
                ..self.settings.fetch.clone()
            };
            let mut f = PartitionFetcher::new(&self.settings.cluster, &tp.topic, tp.partition, cfg);
            let earliest = f.resolve(Reset::Earliest).await?;
            let latest = f.resolve(Reset::Latest).await?;
            let reset_to = match self.settings.reset {
                Reset::Earliest => earliest,
                Reset::Latest => latest,
            };
            let wanted = match self.settings.start {
                StartAt::Committed => committed.get(tp).map(|c| c.offset),
                StartAt::Earliest => Some(earliest),
                StartAt::Latest => Some(latest),
                StartAt::Offset(o) => Some(o),
            };
            // A group member reading uncommitted data may have committed an
            // offset inside an open transaction, past the stable end: valid.
            let end = match wanted {
                Some(o) if o > latest => f.log_end().await?,
                _ => latest,
            };
            let start = match wanted {
                Some(o) if (earliest..=end).contains(&o) => o,
                Some(o) => {
                    tracing::warn!(
                        "offset {o} of {tp} is outside the log ({earliest}..={end}); starting at the {:?} offset {reset_to}",
                        self.settings.reset
                    );
                    reset_to
                }
                None => reset_to,
            };
            f.seek(start);
            // The map describes what lies above the committed offset: only
            // valid when reading starts there.
            let done = committed
                .remove(tp)
                .filter(|c| c.offset == start)
                .and_then(|c| c.done);
            // Fetching goes over one connection per broker instead.
            f.release();
            // A fresh state per assignment: whatever an earlier assignment
            // of this partition left behind is no longer looked at.
            self.tracker.remove(&tp.topic, tp.partition);
            let offsets = self.tracker.partition(&tp.topic, tp.partition);
            offsets.set_next_fetch(start);
            tracing::debug!(%tp, "starting at offset {start} (end {latest})");
            let end = Arc::new(AtomicI64::new(f.high_watermark()));
            let (stop, stop_rx) = watch::channel(false);
            self.next_id += 1;
            let id = self.next_id;
            let reader = Reader {
                fetcher: f,
                pool: Arc::clone(&self.pool),
                part: Arc::clone(&offsets),
                end: Arc::clone(&end),
                router: Arc::clone(&self.router),
                exit_at_end: self.settings.exit_at_end,
                done,
            };
            let report = Reporter {
                tp: tp.clone(),
                id,
                tx: self.done_tx.clone(),
            };
            let task = tokio::spawn(async move {
                let result = reader.run(stop_rx).await;
                let _ = report.tx.send(Done {
                    tp: report.tp,
                    id: report.id,
                    result,
                });
            });
            self.running.insert(
                tp.clone(),
                Running {
                    id,
                    offsets,
                    end,
                    stop,
                    task,
                    at_end: false,
                },
            );
        }
        Ok(())
    }

    /// Stops fetching `tps` and waits until their fetch tasks returned (so
    /// nothing more of them reaches the pool). Returns their offset states;
    /// they stay in the tracker until [`forget`](Self::forget).
    pub(crate) async fn stop(
        &mut self,
        tps: &[TopicPartition],
    ) -> Vec<(TopicPartition, Arc<PartitionOffsets>)> {
        let mut stopped = Vec::with_capacity(tps.len());
        for tp in tps {
            if let Some(r) = self.running.remove(tp) {
                let _ = r.stop.send(true);
                stopped.push((tp.clone(), r.offsets, r.task));
            }
        }
        let mut out = Vec::with_capacity(stopped.len());
        for (tp, offsets, task) in stopped {
            let _ = task.await;
            out.push((tp, offsets));
        }
        out
    }

    /// Stops every partition; see [`stop`](Self::stop).
    pub(crate) async fn stop_all(&mut self) -> Vec<(TopicPartition, Arc<PartitionOffsets>)> {
        let all: Vec<TopicPartition> = self.running.keys().cloned().collect();
        self.stop(&all).await
    }

    /// Removes a stopped partition's state from the tracker, unless a later
    /// assignment already replaced it.
    pub(crate) fn forget(&self, offsets: &Arc<PartitionOffsets>) {
        self.tracker.remove_if_same(offsets);
    }

    /// The running partitions and their offset states.
    pub(crate) fn partitions(&self) -> Vec<(TopicPartition, Arc<PartitionOffsets>)> {
        self.running
            .iter()
            .map(|(tp, r)| (tp.clone(), Arc::clone(&r.offsets)))
            .collect()
    }

    /// Waits for the next fetch task that ends (reports of partitions
    /// stopped since, or re-assigned, are skipped) and records whether it
    /// reached the end of its log; a fetch error is returned. Cancel-safe.
    pub(crate) async fn next_done(&mut self) -> Result<()> {
        loop {
            let done = self
                .done_rx
                .recv()
                .await
                .expect("the assignment holds a sender");
            let Some(r) = self.running.get_mut(&done.tp) else {
                continue;
            };
            if r.id != done.id {
                continue;
            }
            if let Ended::CaughtUp = done.result? {
                r.at_end = true;
            }
            return Ok(());
        }
    }

    /// True when something runs and every running partition reached its end.
    pub(crate) fn all_at_end(&self) -> bool {
        !self.running.is_empty() && self.running.values().all(|r| r.at_end)
    }

    /// The running partitions whose fetching is paused because their
    /// offset map is over the metadata limit.
    pub(crate) fn paused(&self) -> Vec<TopicPartition> {
        self.running
            .iter()
            .filter(|(_, r)| r.offsets.map_full())
            .map(|(tp, _)| tp.clone())
            .collect()
    }

    /// `(partition, lag)`: end of the readable log minus the committable offset.
    pub(crate) fn lag(&self) -> Vec<(TopicPartition, i64)> {
        self.running
            .iter()
            .map(|(tp, r)| {
                let end = r.end.load(Ordering::Relaxed);
                let done = r.offsets.committable().unwrap_or(0);
                (tp.clone(), if end < 0 { 0 } else { (end - done).max(0) })
            })
            .collect()
    }
}

impl Drop for Assignment {
    /// A pipeline dropped without stopping (its run future cancelled) must
    /// not leave fetch tasks feeding the pool.
    fn drop(&mut self) {
        for r in self.running.values() {
            r.task.abort();
        }
        self.router.shutdown();
    }
}

/// Sends a fetch task's outcome to the assignment.
struct Reporter {
    tp: TopicPartition,
    id: u64,
    tx: mpsc::UnboundedSender<Done>,
}
