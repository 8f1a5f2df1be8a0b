//! The ordered consumer pipeline (DESIGN "Data flow"):
//!
//! ```text
//! fetch task per partition ──submit_async──▶ pool lanes (hash of key) ──▶ handler
//!        ▲ pauses when the pool is full           │ completion
//!        │                                         ▼
//!   long-poll fetch                      offset tracker ──▶ committer ──▶ OffsetCommit
//! ```
//!
//! Guarantees: per-key order (or per-partition, or none, by [`Ordering`]);
//! at-least-once delivery, because the committed offset of a partition never
//! passes a message that has not finished; bounded memory, because a full
//! pool stops the fetchers. A stop (signal, end of log, failure) stops the
//! fetchers, drains the lanes within the drain timeout, and commits.

pub mod committer;
pub mod progress;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::cluster::{self, ClusterConfig};
use crate::error::{Error, Result};
use crate::fetcher::{FetchConfig, PartitionFetcher, Reset};
use crate::group::{GroupClient, GroupConfig};
use crate::offsets::{OffsetTracker, PartitionOffsets};
use crate::pool::{
    BuildError, FailedMessage, FailurePolicy, Handler, Ordering, Pool, PoolConfig, PoolStats,
    SubmitError,
};

use committer::Committer;
use progress::{Progress, Watermarks};

/// Where a partition starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartAt {
    /// The group's committed offset; without one, the `reset` position.
    Committed,
    /// The oldest record still in the log.
    Earliest,
    /// The end of the log.
    Latest,
    /// This exact offset (out of range: the `reset` position, with a warning).
    Offset(i64),
}

/// Which partitions to read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Partitions {
    /// Every partition of the topic.
    All,
    /// These partitions (each must exist).
    List(Vec<i32>),
}

/// Everything a consumer run needs besides its handler.
#[derive(Clone, Debug)]
pub struct ConsumerConfig {
    /// Brokers and timeouts.
    pub cluster: ClusterConfig,
    /// Topic to read.
    pub topic: String,
    /// Partitions to read (manual assignment).
    pub partitions: Partitions,
    /// Group whose offsets are read and committed.
    pub group: String,
    /// Start position.
    pub start: StartAt,
    /// Position when there is no committed offset or it is out of range.
    pub reset: Reset,
    /// Worker lanes (threads).
    pub workers: usize,
    /// What order the lanes keep.
    pub ordering: Ordering,
    /// Most messages fetched and not yet finished, over all partitions.
    pub max_in_flight: usize,
    /// Retries of a failing message before `on_failure` applies.
    pub retries: u32,
    /// First retry backoff (doubles per retry, capped at 30 s).
    pub retry_backoff: Duration,
    /// Stop once every partition is caught up and drained.
    pub exit_at_end: bool,
    /// How often committable offsets are committed.
    pub commit_interval: Duration,
    /// How often a progress line is printed (zero: never).
    pub stats_interval: Duration,
    /// Longest a graceful stop waits for the lanes.
    pub drain_timeout: Duration,
    /// Fetch tuning.
    pub fetch: FetchConfig,
}

impl ConsumerConfig {
    /// Defaults for reading `partitions` of `topic` for `group`.
    pub fn new(
        cluster: ClusterConfig,
        topic: impl Into<String>,
        partitions: Partitions,
        group: impl Into<String>,
    ) -> Self {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            cluster,
            topic: topic.into(),
            partitions,
            group: group.into(),
            start: StartAt::Committed,
            reset: Reset::Earliest,
            workers: cpus * 4,
            ordering: Ordering::Key,
            max_in_flight: 10_000,
            retries: 3,
            retry_backoff: Duration::from_millis(200),
            exit_at_end: false,
            commit_interval: Duration::from_secs(1),
            stats_interval: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(30),
            fetch: FetchConfig::default(),
        }
    }
}

/// Why a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// `exit_at_end` and every partition was caught up and drained.
    EndOfLog,
    /// SIGINT/SIGTERM (or the caller's shutdown signal): drained and committed.
    Signal,
    /// A second signal cut the drain short; what finished was committed.
    Aborted,
    /// A message failed under the `Stop` policy (or its dead-lettering failed).
    Failed,
}

/// What a run did.
#[derive(Clone, Debug)]
pub struct ConsumeSummary {
    /// Why it ended.
    pub reason: StopReason,
    /// Pool counters at the end.
    pub stats: PoolStats,
    /// Wall time.
    pub elapsed: Duration,
    /// Offsets committed to the group, per partition, sorted.
    pub committed: Vec<(i32, i64)>,
    /// The message that stopped the run, under `Stop`.
    pub failure: Option<FailedMessage>,
    /// Messages accepted and not finished at the end (redelivered next time).
    pub unfinished: u64,
}

impl ConsumeSummary {
    /// One line for stderr.
    pub fn line(&self) -> String {
        let s = &self.stats;
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        let committed: Vec<String> = self
            .committed
            .iter()
            .map(|(p, o)| format!("p{p}={o}"))
            .collect();
        format!(
            "consumer: {} handled ({} skipped, {} dead-lettered), {} failed, {} retried, {} unfinished in {:.2} s ({:.0} msg/s); committed {}",
            s.finished,
            s.skipped,
            s.dead_lettered,
            s.failed,
            s.retried,
            self.unfinished,
            secs,
            s.finished as f64 / secs,
            if committed.is_empty() {
                "nothing".into()
            } else {
                committed.join(" ")
            }
        )
    }

    /// The run as a result: `Ok` for a clean end or stop, the matching error
    /// (and exit code) for a failed message or an aborted stop.
    pub fn into_result(self) -> Result<()> {
        match self.reason {
            StopReason::EndOfLog if self.unfinished > 0 => Err(Error::FailedMessages(format!(
                "reached the end of the log but {} message(s) did not finish within the drain timeout; they will be redelivered",
                self.unfinished
            ))),
            StopReason::EndOfLog | StopReason::Signal => Ok(()),
            StopReason::Aborted => Err(Error::Aborted(format!(
                "stop aborted by a second signal: {} message(s) left unfinished will be redelivered",
                self.unfinished
            ))),
            StopReason::Failed => Err(Error::FailedMessages(match self.failure {
                Some(f) => format!(
                    "message {}/{}@{} failed after its retries: {} (committed up to it; it will be redelivered)",
                    f.message.topic, f.message.partition, f.message.offset, f.error
                ),
                None => "a message failed and stopped the consumer".into(),
            })),
        }
    }
}

/// Counter of stop requests: the first asks for a graceful stop, the second
/// for an abort. The binary bumps it from SIGINT/SIGTERM.
pub type ShutdownSignal = watch::Receiver<u32>;

/// Runs the pipeline until the end of the log (`exit_at_end`), a shutdown
/// request, or a failure under the `Stop` policy. Commits before returning.
pub async fn run<H: Handler>(
    cfg: ConsumerConfig,
    handler: H,
    on_failure: FailurePolicy,
    mut shutdown: ShutdownSignal,
) -> Result<ConsumeSummary> {
    let client = cluster::connect(&cfg.cluster).await?;
    let existing = cluster::topic_partitions(&client, &cfg.topic).await?;
    let partitions = select_partitions(&cfg, &existing)?;
    let topic: Arc<str> = Arc::from(cfg.topic.as_str());

    let group = GroupClient::connect(
        cfg.cluster.brokers.clone(),
        cfg.group.clone(),
        GroupConfig::default(),
    )
    .await?;
    let committed: HashMap<i32, i64> = if cfg.start == StartAt::Committed {
        group
            .fetch_committed(&[(cfg.topic.as_str(), partitions.as_slice())])
            .await?
            .into_iter()
            .filter_map(|((_, p), off)| off.map(|o| (p, o)))
            .collect()
    } else {
        HashMap::new()
    };

    let tracker = Arc::new(OffsetTracker::new());
    let watermarks = Arc::new(Watermarks::new(&partitions));
    let mut fetchers = Vec::with_capacity(partitions.len());
    for &p in &partitions {
        let fetch_cfg = FetchConfig {
            reset: cfg.reset,
            ..cfg.fetch.clone()
        };
        let mut f =
            PartitionFetcher::open(&client, &cfg.cluster.brokers, &cfg.topic, p, fetch_cfg).await?;
        // Validate the start against the log before anything is committed: a
        // committed offset past the end (topic recreated) or before the start
        // (retention) would otherwise be committed back or refused later.
        let earliest = f.resolve(Reset::Earliest).await?;
        let latest = f.resolve(Reset::Latest).await?; // also the end, for lag and exit-at-end
        let reset_to = match cfg.reset {
            Reset::Earliest => earliest,
            Reset::Latest => latest,
        };
        let wanted = match cfg.start {
            StartAt::Committed => committed.get(&p).copied(),
            StartAt::Earliest => Some(earliest),
            StartAt::Latest => Some(latest),
            StartAt::Offset(o) => Some(o),
        };
        let start = match wanted {
            Some(o) if (earliest..=latest).contains(&o) => o,
            Some(o) => {
                tracing::warn!(
                    "offset {o} of {topic}/{p} is outside the log ({earliest}..={latest}); starting at the {:?} offset {reset_to}",
                    cfg.reset
                );
                reset_to
            }
            None => reset_to,
        };
        f.seek(start);
        tracker.set_next_fetch(&topic, p, start);
        tracing::debug!(topic = %topic, partition = p, "starting at offset {start} (end {})", f.high_watermark());
        fetchers.push(f);
    }

    let pool_cfg = PoolConfig {
        lanes: cfg.workers.max(1),
        lane_capacity: cfg.max_in_flight.clamp(1, 1024),
        max_in_flight: cfg.max_in_flight.max(1),
        ordering: cfg.ordering,
        retries: cfg.retries,
        backoff_initial: cfg.retry_backoff,
        backoff_max: Duration::from_secs(30),
        failure_policy: on_failure,
    };
    let pool = Arc::new(Pool::new(pool_cfg, Arc::clone(&tracker), handler).map_err(
        |e| match e {
            BuildError::InvalidConfig(m) => Error::Usage(m),
            BuildError::Spawn(e) => Error::Internal(format!("starting worker threads: {e}")),
        },
    )?);
    let mut committer = Committer::new(group, Arc::clone(&topic), partitions.clone(), committed);

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    for (i, f) in fetchers.into_iter().enumerate() {
        let part = tracker.partition(&topic, f.partition());
        tasks.spawn(fetch_loop(
            f,
            i,
            Arc::clone(&pool),
            part,
            Arc::clone(&watermarks),
            stop_rx.clone(),
            cfg.exit_at_end,
        ));
    }

    let mut progress = Progress::new();
    let mut commit_tick = tokio::time::interval(cfg.commit_interval.max(Duration::from_millis(10)));
    let stats_every = if cfg.stats_interval.is_zero() {
        Duration::from_secs(3600 * 24 * 365)
    } else {
        cfg.stats_interval
    };
    let mut stats_tick =
        tokio::time::interval_at(tokio::time::Instant::now() + stats_every, stats_every);
    let mut health_tick = tokio::time::interval(Duration::from_millis(50));
    // A signal that arrived during start-up is still unseen here, so the loop
    // below stops at once. A caller that drops its sender just never stops us.
    let mut signals_open = true;
    let mut fetch_error = None;
    let mut reason = loop {
        tokio::select! {
            _ = commit_tick.tick() => {
                if let Err(e) = committer.commit(&tracker).await {
                    tracing::warn!("commit failed, retrying next interval: {e}");
                }
            }
            _ = stats_tick.tick() => {
                eprintln!("{}", progress.line(&pool.stats(), &watermarks.lag(&topic, &tracker)));
            }
            changed = shutdown.changed(), if signals_open => {
                if changed.is_err() { signals_open = false; continue; }
                tracing::info!("stop requested: finishing in-flight messages (a second signal aborts)");
                break StopReason::Signal;
            }
            done = tasks.join_next(), if !tasks.is_empty() => {
                match done {
                    Some(Ok(Ok(()))) if tasks.is_empty() && cfg.exit_at_end && !pool.is_stopped() => {
                        break StopReason::EndOfLog;
                    }
                    Some(Ok(Err(e))) => { fetch_error = Some(e); break StopReason::Signal; }
                    Some(Err(e)) => { fetch_error = Some(Error::Internal(format!("a fetch task failed: {e}"))); break StopReason::Signal; }
                    _ => {}
                }
            }
            _ = health_tick.tick() => {
                if pool.is_stopped() {
                    break StopReason::Failed;
                }
            }
        }
    };

    // Stop fetching first, so draining has a fixed amount of work.
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}

    let report = {
        let p = Arc::clone(&pool);
        let timeout = cfg.drain_timeout;
        let failed = reason == StopReason::Failed;
        let mut stopping = tokio::task::spawn_blocking(move || {
            if failed {
                p.abort(timeout)
            } else {
                p.drain(timeout)
            }
        });
        // The drain is cut short once two stop requests were made in all (two
        // signals may have arrived before the loop above saw the first).
        let second_signal = async {
            loop {
                if *shutdown.borrow_and_update() >= 2 {
                    return;
                }
                if shutdown.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::select! {
            r = &mut stopping => r,
            _ = second_signal, if reason != StopReason::Failed => {
                tracing::warn!("second signal: abandoning queued messages");
                reason = StopReason::Aborted;
                pool.interrupt();
                stopping.await
            }
        }
        .map_err(|e| Error::Internal(format!("stopping the worker pool: {e}")))?
    };
    if report.failure.is_some() {
        reason = StopReason::Failed;
    }
    if report.timed_out {
        tracing::warn!(
            "drain timeout ({:?}) expired with {} message(s) unfinished; they will be redelivered",
            cfg.drain_timeout,
            report.unfinished
        );
    }
    if let Err(e) = committer.commit(&tracker).await {
        return Err(fetch_error.unwrap_or(e));
    }
    if let Some(e) = fetch_error {
        return Err(e);
    }
    let mut committed: Vec<(i32, i64)> = committer
        .committed()
        .iter()
        .map(|(p, o)| (*p, *o))
        .collect();
    committed.sort();
    Ok(ConsumeSummary {
        reason,
        unfinished: report.unfinished,
        stats: report.stats,
        elapsed: progress.elapsed(),
        committed,
        failure: report.failure,
    })
}

/// Checks the requested partitions against the topic's.
fn select_partitions(cfg: &ConsumerConfig, existing: &BTreeSet<i32>) -> Result<Vec<i32>> {
    match &cfg.partitions {
        Partitions::All => Ok(existing.iter().copied().collect()),
        Partitions::List(list) => {
            let mut out = Vec::with_capacity(list.len());
            for &p in list {
                if !existing.contains(&p) {
                    return Err(Error::UnknownPartition {
                        topic: cfg.topic.clone(),
                        partition: p,
                        count: existing.len(),
                    });
                }
                if !out.contains(&p) {
                    out.push(p);
                }
            }
            Ok(out)
        }
    }
}

/// One partition's fetch task: fetch, submit in offset order (waiting while
/// the pool is full), advance the tracker's fetch position, repeat.
async fn fetch_loop(
    mut fetcher: PartitionFetcher,
    index: usize,
    pool: Arc<Pool>,
    part: Arc<PartitionOffsets>,
    watermarks: Arc<Watermarks>,
    mut stop: watch::Receiver<bool>,
    exit_at_end: bool,
) -> Result<()> {
    loop {
        watermarks.set(index, fetcher.high_watermark());
        if *stop.borrow() || (exit_at_end && fetcher.caught_up()) {
            return Ok(());
        }
        let batch = tokio::select! {
            b = fetcher.next_batch() => b?,
            _ = stop.changed() => return Ok(()),
        };
        // One batch submission per fetch: in offset order, awaiting room
        // without blocking the runtime (the offending offset, if any, is
        // named by the error itself).
        tokio::select! {
            r = pool.submit_batch_async(batch) => match r {
                Ok(()) => {}
                Err(SubmitError::Stopped | SubmitError::ShuttingDown) => return Ok(()),
                Err(e) => {
                    return Err(Error::kafka(
                        format!("dispatching {}/{}", part.topic_partition().topic, part.topic_partition().partition),
                        e,
                    ));
                }
            },
            // Leaving mid-submit is safe: what was queued is processed, the
            // rest stays unfinished (or undispatched) and is redelivered.
            _ = stop.changed() => return Ok(()),
        }
        part.set_next_fetch(fetcher.position());
    }
}
