//! The ordered consumer pipeline (DESIGN "Data flow"):
//!
//! ```text
//! reader per partition ──submit_async──▶ pool lanes (hash of key) ──▶ handler
//!        ▲ pauses when the pool is full           │ completion
//!        │                                         ▼
//!   one long-poll fetch per broker       offset tracker ──▶ committer ──▶ OffsetCommit
//!   (all its partitions, byte budget)
//!        ▲
//!   assignment: fixed (manual), or from the group (membership events)
//! ```
//!
//! Guarantees: per-key order (or per-partition, or none, by [`Ordering`]);
//! at-least-once delivery, because the committed offset of a partition never
//! passes a message that has not finished; bounded memory, because a full
//! pool stops the fetchers. A stop (signal, end of log, failure) stops the
//! fetchers, drains the lanes within the drain timeout, commits, and leaves
//! the group.
//!
//! In a group, partitions are added and revoked while the pipeline runs
//! (DESIGN rule 7). A revoked partition stops fetching; what was already
//! fetched of it finishes (within a budget below the rebalance timeout, so a
//! graceful hand-over repeats nothing), whatever is left then is dropped
//! unhandled, its finished offsets are committed with the current generation
//! or member epoch, and only then is the revocation acknowledged. Each
//! assignment of a partition has its own offset state, so completions that
//! arrive after a revocation are never committed.

pub mod assignment;
mod builder;
pub mod committer;
mod fetch;
pub mod progress;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{oneshot, watch};

use crate::cluster::{self, ClusterConfig};
use crate::error::{Error, Result};
use crate::fetcher::FetchConfig;
use crate::group::{
    CommitFailure, CommitIdentity, GroupClient, GroupConfig, GroupEvent, MemberStatus, Membership,
    MembershipConfig, commit_failure,
};
use crate::metrics::{ConsumerMetrics, Timed};
use crate::offsets::{OffsetTracker, PartitionOffsets, TopicPartition};
use crate::pool::{
    AsyncHandler, BuildError, FailedMessage, FailurePolicy, Handler, Ordering, Pool, PoolConfig,
    PoolStats, Scheduler,
};

pub use crate::fetcher::Reset;
pub use crate::group::GroupProtocol;
pub use crate::group::assignor::Assignor;
pub use crate::protocol::Security;
pub use builder::{
    AsTasks, Consumer, ConsumerBuilder, OnFailure, OnThreads, RunHandler, ShutdownHandle,
};

use assignment::{Assignment, Settings};
use committer::Committer;
use progress::{Progress, partition_label};

/// Default of [`ConsumerConfig::commit_every`]. Each window costs a commit
/// round trip: reading 1,000,000 records from the local broker took
/// 10.5-11.6 s with 1,000, 1.35-1.44 s with 10,000, 0.45-0.55 s with 50,000
/// and 0.39-0.40 s without the window (`bench-consume`'s 6-partition topic
/// and flags, this machine, the window at the workers' claim).
pub const DEFAULT_COMMIT_EVERY: u64 = 50_000;

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
    /// Every partition of the topics (manual assignment).
    All,
    /// These partitions of every topic (manual assignment; each must exist).
    List(Vec<i32>),
    /// Whatever the group assigns: join the group ([`ConsumerConfig::membership`]).
    Group,
}

/// Everything a consumer run needs besides its handler.
#[derive(Clone, Debug)]
pub struct ConsumerConfig {
    /// Brokers and timeouts.
    pub cluster: ClusterConfig,
    /// Topics to read.
    pub topics: Vec<String>,
    /// Partitions to read: a manual assignment, or the group's.
    pub partitions: Partitions,
    /// Group whose offsets are read and committed.
    pub group: String,
    /// How to take part in the group when [`Partitions::Group`] (its
    /// `group` and `topics` are set from this config at run time).
    pub membership: MembershipConfig,
    /// Start position.
    pub start: StartAt,
    /// Position when there is no committed offset or it is out of range.
    pub reset: Reset,
    /// Worker threads (thread handlers, [`run`]).
    pub workers: usize,
    /// Messages in flight at once across keys (async handlers,
    /// [`run_async`]).
    pub max_concurrency: usize,
    /// Async handlers only: an attempt still running after this long is
    /// dropped and counts as failed (retried, then `on_failure`). `None`:
    /// no limit.
    pub handler_timeout: Option<Duration>,
    /// How messages are spread over the workers.
    pub scheduler: Scheduler,
    /// What order the workers keep.
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
    /// Bounds what a crash repeats: a commit each time half this many more
    /// finished, and workers start no more work while the messages
    /// finished beyond the last acknowledged commit plus those they have
    /// claimed (a block each, at most this many over twice the workers)
    /// reach this many. A crash then repeats fewer than this many plus one
    /// block, and the rate is at most about this many per commit round
    /// trip. Not enforced while the pool drains (commits go by
    /// `commit_interval` only) or a revocation waits for work (nothing is
    /// committed then). 0: commits every `commit_interval` only, no bound.
    pub commit_every: u64,
    /// Longest offset map a commit carries (issue 15, [`crate::offset_map`]):
    /// `None` the broker's `offset.metadata.max.bytes` (4096 when it cannot
    /// be read), `Some(0)` no maps, `Some(n)` at most `n` bytes (and at
    /// most the broker's).
    pub offset_map_bytes: Option<usize>,
    /// How often a progress line is printed (zero: never).
    pub stats_interval: Duration,
    /// Longest a graceful stop waits for the lanes.
    pub drain_timeout: Duration,
    /// Fetch tuning.
    pub fetch: FetchConfig,
    /// Metrics to feed (`--metrics-addr`): the handler is then timed, and
    /// counters and partitions are read at scrape time. None: no metrics.
    pub metrics: Option<ConsumerMetrics>,
}

impl ConsumerConfig {
    /// Defaults for reading `partitions` of `topic` (one name, or several
    /// separated by commas) for `group`.
    pub fn new(
        cluster: ClusterConfig,
        topic: impl Into<String>,
        partitions: Partitions,
        group: impl Into<String>,
    ) -> Self {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        let topics: Vec<String> = topic
            .into()
            .split(',')
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .collect();
        let group = group.into();
        Self {
            cluster,
            membership: MembershipConfig::new(group.clone(), topics.clone()),
            topics,
            partitions,
            group,
            start: StartAt::Committed,
            reset: Reset::Earliest,
            workers: cpus * 4,
            max_concurrency: 1024,
            handler_timeout: None,
            scheduler: Scheduler::default(),
            ordering: Ordering::Key,
            max_in_flight: 10_000,
            retries: 3,
            retry_backoff: Duration::from_millis(200),
            exit_at_end: false,
            commit_interval: Duration::from_secs(1),
            commit_every: DEFAULT_COMMIT_EVERY,
            offset_map_bytes: None,
            stats_interval: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(30),
            fetch: FetchConfig::default(),
            metrics: None,
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
    /// Offsets committed to the group, per partition, sorted (the
    /// partitions this consumer held at the end).
    pub committed: Vec<(TopicPartition, i64)>,
    /// The message that stopped the run, under `Stop`.
    pub failure: Option<FailedMessage>,
    /// Messages accepted and not finished at the end (redelivered next time).
    pub unfinished: u64,
    /// Partitions this member gave up in rebalances while running (revoked,
    /// not counting the final stop or partitions lost to fencing).
    pub revocations: u64,
}

impl ConsumeSummary {
    /// One line for stderr.
    pub fn line(&self) -> String {
        let s = &self.stats;
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        let single = self
            .committed
            .iter()
            .map(|(tp, _)| &tp.topic)
            .collect::<BTreeSet<_>>()
            .len()
            <= 1;
        let committed: Vec<String> = self
            .committed
            .iter()
            .map(|(tp, o)| format!("{}={o}", partition_label(tp, single)))
            .collect();
        let mut revoked = if self.revocations > 0 {
            format!(", {} partition(s) revoked in rebalances", self.revocations)
        } else {
            String::new()
        };
        if s.already_done > 0 {
            revoked.push_str(&format!(
                ", {} skipped as already done by the committed offset map",
                s.already_done
            ));
        }
        format!(
            "consumer: {} handled ({} skipped, {} dead-lettered), {} failed, {} retried, {} unfinished in {:.2} s ({:.0} msg/s){revoked}; committed {}",
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

    /// The committed offsets of `topic`'s partitions, as `(partition, offset)`.
    pub fn committed_of(&self, topic: &str) -> Vec<(i32, i64)> {
        self.committed
            .iter()
            .filter(|(tp, _)| &*tp.topic == topic)
            .map(|(tp, o)| (tp.partition, *o))
            .collect()
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
/// request, or a failure under the `Stop` policy, with `handler` on worker
/// threads. Commits before returning, and leaves the group if it joined one.
pub async fn run<H: Handler>(
    cfg: ConsumerConfig,
    handler: H,
    on_failure: FailurePolicy,
    shutdown: ShutdownSignal,
) -> Result<ConsumeSummary> {
    let metrics = cfg.metrics.clone();
    run_with(
        cfg,
        on_failure,
        shutdown,
        move |pool_cfg, tracker| match metrics {
            Some(m) => Pool::new(pool_cfg, tracker, Timed::new(handler, m.handler_latency())),
            None => Pool::new(pool_cfg, tracker, handler),
        },
    )
    .await
}

/// [`run`] with an [`AsyncHandler`]: up to
/// [`ConsumerConfig::max_concurrency`] messages in flight (of distinct
/// keys), each a task on the current tokio runtime, with the same
/// guarantees (per-key order, commits of finished prefixes only, retries
/// and `on_failure`).
pub async fn run_async<H: AsyncHandler>(
    cfg: ConsumerConfig,
    handler: H,
    on_failure: FailurePolicy,
    shutdown: ShutdownSignal,
) -> Result<ConsumeSummary> {
    let metrics = cfg.metrics.clone();
    run_with(
        cfg,
        on_failure,
        shutdown,
        move |pool_cfg, tracker| match metrics {
            Some(m) => Pool::new_async(pool_cfg, tracker, Timed::new(handler, m.handler_latency())),
            None => Pool::new_async(pool_cfg, tracker, handler),
        },
    )
    .await
}

/// The pipeline around the pool `build` makes.
async fn run_with(
    cfg: ConsumerConfig,
    on_failure: FailurePolicy,
    mut shutdown: ShutdownSignal,
    build: impl FnOnce(PoolConfig, Arc<OffsetTracker>) -> std::result::Result<Pool, BuildError>,
) -> Result<ConsumeSummary> {
    if cfg.topics.is_empty() {
        return Err(Error::Usage("no topic given".into()));
    }
    if cfg.partitions == Partitions::Group && cfg.start != StartAt::Committed {
        return Err(Error::Usage(
            "a group member starts each assigned partition at the group's committed offset (else --reset): leave out --from, or give partitions for a manual assignment".into(),
        ));
    }
    // Reachable, and TLS and SASL work, before anything else starts.
    cluster::preflight(&cfg.cluster).await?;
    let mut existing = HashMap::new();
    for topic in &cfg.topics {
        existing.insert(
            topic.clone(),
            cluster::within_new_topic_grace(|| cluster::topic_partitions(&cfg.cluster, topic))
                .await?,
        );
    }
    let manual = match cfg.partitions {
        Partitions::Group => None,
        _ => Some(select_partitions(&cfg, &existing)?),
    };
    let group = GroupClient::connect(
        cfg.cluster.brokers.clone(),
        cfg.group.clone(),
        GroupConfig {
            connection: cfg.cluster.connection(),
            ..GroupConfig::default()
        },
    )
    .await?;

    let tracker = Arc::new(OffsetTracker::new());
    tracker.set_commit_every(cfg.commit_every);
    let pool_cfg = PoolConfig {
        lanes: cfg.workers.max(1),
        scheduler: cfg.scheduler,
        lane_capacity: cfg.max_in_flight.clamp(1, 1024),
        max_in_flight: cfg.max_in_flight.max(1),
        ordering: cfg.ordering,
        retries: cfg.retries,
        backoff_initial: cfg.retry_backoff,
        backoff_max: Duration::from_secs(30),
        failure_policy: on_failure,
        max_concurrency: cfg.max_concurrency.max(1),
        handler_timeout: cfg.handler_timeout,
    };
    let pool = Arc::new(build(pool_cfg, Arc::clone(&tracker)).map_err(|e| match e {
        BuildError::InvalidConfig(m) => Error::Usage(m),
        BuildError::Spawn(e) => Error::Internal(format!("starting worker threads: {e}")),
    })?);
    if let Some(m) = &cfg.metrics {
        m.attach_pool(Arc::clone(&pool));
    }
    let settings = Settings {
        cluster: cfg.cluster.clone(),
        fetch: cfg.fetch.clone(),
        start: cfg.start,
        reset: cfg.reset,
        exit_at_end: cfg.exit_at_end,
    };
    let mut p = Pipeline {
        assignment: Assignment::new(settings, Arc::clone(&pool), tracker),
        committer: Committer::new(
            group,
            cfg.metrics.clone(),
            committer::map_limit(&cfg.cluster, &cfg.topics[0], cfg.offset_map_bytes).await,
        ),
        membership: None,
        pool,
        progress: Progress::new(),
        single_topic: cfg.topics.len() == 1,
        revocation_budget: cfg
            .membership
            .rebalance_timeout
            .saturating_sub(cfg.membership.heartbeat_interval + Duration::from_secs(5))
            .max(Duration::from_secs(1)),
        start: cfg.start,
        signals: shutdown.clone(),
        revocations: 0,
        metrics: cfg.metrics.clone(),
    };
    match manual {
        Some(tps) => p.assign(tps).await?,
        None => {
            let membership = MembershipConfig {
                group: cfg.group.clone(),
                topics: cfg.topics.clone(),
                ..cfg.membership.clone()
            };
            p.membership = Some(Membership::start(&cfg.cluster, membership).await?);
        }
    }
    let (reason, error) = p.consume(&cfg, &mut shutdown).await;
    p.finish(&cfg, reason, error, shutdown).await
}

/// Checks the requested partitions against the topics' (manual assignment).
fn select_partitions(
    cfg: &ConsumerConfig,
    existing: &HashMap<String, BTreeSet<i32>>,
) -> Result<Vec<TopicPartition>> {
    let mut out = Vec::new();
    for topic in &cfg.topics {
        let have = &existing[topic];
        let name: Arc<str> = Arc::from(topic.as_str());
        let wanted: Vec<i32> = match &cfg.partitions {
            Partitions::All => have.iter().copied().collect(),
            Partitions::List(list) => list.clone(),
            Partitions::Group => Vec::new(),
        };
        for p in wanted {
            if !have.contains(&p) {
                return Err(Error::UnknownPartition {
                    topic: topic.clone(),
                    partition: p,
                    count: have.len(),
                });
            }
            let tp = TopicPartition::new(Arc::clone(&name), p);
            if !out.contains(&tp) {
                out.push(tp);
            }
        }
    }
    Ok(out)
}

/// The running pipeline's parts, and what each kind of event does to them.
struct Pipeline {
    pool: Arc<Pool>,
    assignment: Assignment,
    committer: Committer,
    membership: Option<Membership>,
    progress: Progress,
    single_topic: bool,
    /// How long a revocation may wait for what was fetched to finish:
    /// the rebalance timeout, less a heartbeat and a margin, so the
    /// acknowledgement reaches the group before it gives up on us.
    revocation_budget: Duration,
    start: StartAt,
    /// The stop requests (a second one cuts a revocation short).
    signals: ShutdownSignal,
    /// Partitions revoked in rebalances so far.
    revocations: u64,
    /// Where the partitions' lag and committed offsets are published.
    metrics: Option<ConsumerMetrics>,
}

/// The next membership event, or never without a group.
async fn next_event(membership: &mut Option<Membership>) -> Option<GroupEvent> {
    match membership {
        Some(m) => m.next_event().await,
        None => std::future::pending().await,
    }
}

impl Pipeline {
    /// Who commits: the group member, or a standalone consumer.
    fn identity(&self) -> CommitIdentity {
        self.membership
            .as_ref()
            .map_or_else(CommitIdentity::standalone, Membership::identity)
    }

    fn member_status(&self) -> Option<MemberStatus> {
        self.membership.as_ref().map(Membership::status)
    }

    /// Starts `tps` from the group's committed offsets (or the configured
    /// start).
    async fn assign(&mut self, tps: Vec<TopicPartition>) -> Result<()> {
        let mut committed = if self.start == StartAt::Committed {
            self.committer.read_committed(&tps).await?
        } else {
            HashMap::new()
        };
        self.assignment.start(&tps, &mut committed).await
    }

    /// Gives partitions up (DESIGN rule 7): stop fetching; for a
    /// revocation (`commit`), let what was already fetched of them finish,
    /// so the committed offset covers everything handled and the next owner
    /// repeats nothing — at most until the revocation budget runs out, the
    /// group fences this member, or a second stop signal arrives; then drop
    /// what is left unhandled (queued messages are never started, running
    /// handlers are no longer waited for) and commit what finished (unless
    /// fenced). Lost partitions are dropped at once, uncommitted. Either way
    /// the partitions' offset state is forgotten, so late completions are
    /// never committed.
    async fn give_up(&mut self, tps: &[TopicPartition], commit: bool) {
        let parts = self.assignment.stop(tps).await;
        let offsets: Vec<Arc<PartitionOffsets>> =
            parts.iter().map(|(_, o)| Arc::clone(o)).collect();
        let deadline = tokio::time::Instant::now() + self.revocation_budget;
        let finished = commit
            && loop {
                let slice = offsets.clone();
                // Waiting registers as a waiter, so lanes publish completions at once.
                let idle = tokio::task::spawn_blocking(move || {
                    slice.iter().all(|o| o.wait_idle(Duration::from_millis(50)))
                })
                .await
                .unwrap_or(false);
                if idle || tokio::time::Instant::now() >= deadline || self.stop_waiting() {
                    break idle;
                }
            };
        // Whatever is left is not ours to handle any more.
        for o in &offsets {
            o.revoke();
        }
        let fenced = self.member_status().is_some_and(|s| s.fenced);
        if commit && fenced {
            tracing::warn!(
                "revoking {}: the group fenced this member meanwhile; dropped without committing",
                list(tps)
            );
        } else if commit {
            if !finished {
                tracing::warn!(
                    "revoking {}: not finished within {:?}; dropping the rest (the next owner handles it) and committing what finished",
                    list(tps),
                    self.revocation_budget
                );
            }
            let who = self.identity();
            let mut result = self.committer.commit(&parts, &who).await;
            if let Err(e) = &result
                && commit_failure(e.kafka_error()) == CommitFailure::Stale
                && self.identity() != who
            {
                // The epoch moved on in flight; the partitions are still
                // ours until acknowledged, so commit under the new one.
                result = self.committer.commit(&parts, &self.identity()).await;
            }
            if let Err(e) = result {
                tracing::warn!(
                    "revoking {}: commit failed, the next owner may repeat some messages: {e}",
                    list(tps)
                );
            }
        }
        for (tp, offsets) in &parts {
            self.pool.note_revoked(offsets.in_flight() as u64);
            self.assignment.forget(offsets);
            self.committer.forget(tp);
        }
    }

    /// Publishes lag and committed offsets per partition to the metrics
    /// (with each periodic commit, not per message).
    fn publish_metrics(&self) {
        if let Some(m) = &self.metrics {
            let rebalances = self.member_status().map_or(0, |s| s.rebalances);
            m.publish(
                self.assignment.lag(),
                self.committer.committed(),
                self.revocations,
                rebalances,
            );
        }
    }

    /// A revocation stops waiting for handlers once the group fenced this
    /// member or a second stop signal asks to abort.
    fn stop_waiting(&self) -> bool {
        *self.signals.borrow() >= 2 || self.member_status().is_some_and(|s| s.fenced)
    }

    /// Acts on one membership event.
    async fn on_event(&mut self, event: GroupEvent) -> Result<()> {
        match event {
            GroupEvent::Assigned(tps) => self.assign(tps).await,
            GroupEvent::Revoke { partitions, done } => {
                self.revocations += partitions.len() as u64;
                self.give_up(&partitions, true).await;
                let _ = done.send(());
                Ok(())
            }
            GroupEvent::Lost(tps) => {
                self.give_up(&tps, false).await;
                Ok(())
            }
            GroupEvent::Failed(e) => Err(e),
        }
    }

    /// Commits what finished. A commit the group fences means the
    /// partitions may be someone else's already: drop them all and rejoin —
    /// unless the commit merely raced a rebalance of this member (its epoch
    /// went stale in flight, its generation moved on, or a rebalance is
    /// under way): then the partitions are still ours and the next commit
    /// carries the new identity (see [`CommitFailure`]).
    async fn commit(&mut self) {
        let parts = self.assignment.partitions();
        let who = self.identity();
        // Taken before the partitions' states are read: an acknowledged
        // commit covers at least every message finished by then.
        let snapshot = self.pool.tracker().commit_snapshot();
        let e = match self.committer.commit(&parts, &who).await {
            Ok(_) => return self.pool.tracker().committed(snapshot),
            Err(e) => e,
        };
        match commit_failure(e.kafka_error()) {
            // Commits by count are frequent enough to race every KIP-848
            // epoch bump.
            CommitFailure::Stale if self.membership.is_some() => {
                tracing::debug!(
                    "commit raced an epoch bump ({e}); committing again with the new epoch"
                );
            }
            CommitFailure::Fenced if self.membership.is_some() => {
                let raced = self
                    .member_status()
                    .is_some_and(|s| !s.stable || s.identity() != who);
                if raced {
                    tracing::debug!(
                        "commit raced a rebalance ({e}); retrying with the new generation"
                    );
                    return;
                }
                tracing::warn!("commit fenced ({e}); dropping every partition and rejoining");
                let all: Vec<TopicPartition> = parts.into_iter().map(|(tp, _)| tp).collect();
                self.give_up(&all, false).await;
                if let Some(m) = &self.membership {
                    m.rejoin(format!("commit fenced: {e}"));
                }
            }
            _ => tracing::warn!("commit failed, retrying next interval: {e}"),
        }
    }

    /// True when every partition this consumer holds is caught up and the
    /// group (if any) is not rebalancing: `--exit-at-end` may stop.
    fn at_end(&self) -> bool {
        self.assignment.all_at_end()
            && !self.pool.is_stopped()
            && self.member_status().is_none_or(|s| s.stable)
    }

    /// A member the coordinator has not confirmed for a session timeout
    /// has lost its partitions to others, whatever its protocol task still
    /// hopes: stop handling them (uncommitted) and rejoin.
    async fn check_session(&mut self) {
        let expired = self
            .membership
            .as_ref()
            .is_some_and(Membership::session_expired);
        let held: Vec<TopicPartition> = self
            .assignment
            .partitions()
            .into_iter()
            .map(|(tp, _)| tp)
            .collect();
        if expired && !held.is_empty() {
            tracing::warn!(
                "no word from the group coordinator for a session timeout: dropping {} (the group has given them to others) and rejoining",
                list(&held)
            );
            self.give_up(&held, false).await;
            if let Some(m) = &self.membership {
                m.rejoin("session timed out".into());
            }
        }
    }

    /// The main loop: until a stop request, the end of the log, a failed
    /// message, or an error.
    async fn consume(
        &mut self,
        cfg: &ConsumerConfig,
        shutdown: &mut ShutdownSignal,
    ) -> (StopReason, Option<Error>) {
        let mut commit_tick =
            tokio::time::interval(cfg.commit_interval.max(Duration::from_millis(10)));
        let mut stats_tick = stats_interval(cfg.stats_interval);
        let mut health_tick = tokio::time::interval(Duration::from_millis(50));
        let tracker = Arc::clone(self.pool.tracker());
        // A signal that arrived during start-up is still unseen here, so the
        // loop stops at once. A caller that drops its sender never stops us.
        let mut signals_open = true;
        loop {
            tokio::select! {
                _ = commit_tick.tick() => {
                    self.commit().await;
                    self.publish_metrics();
                }
                _ = tracker.commit_wanted() => self.commit().await,
                _ = stats_tick.tick() => {
                    let line = self.progress.line(
                        &self.pool.stats(),
                        &self.assignment.lag(),
                        &self.assignment.paused(),
                        self.single_topic,
                        self.member_status().as_ref(),
                    );
                    eprintln!("{line}");
                }
                changed = shutdown.changed(), if signals_open => {
                    if changed.is_err() { signals_open = false; continue; }
                    tracing::info!("stop requested: finishing in-flight messages (a second signal aborts)");
                    return (StopReason::Signal, None);
                }
                event = next_event(&mut self.membership) => {
                    let Some(event) = event else {
                        return (StopReason::Signal, Some(Error::Internal("the group membership task ended".into())));
                    };
                    if let Err(e) = self.on_event(event).await {
                        return (StopReason::Signal, Some(e));
                    }
                }
                done = self.assignment.next_done() => match done {
                    Err(e) => return (StopReason::Signal, Some(e)),
                    Ok(_) if cfg.exit_at_end && self.at_end() => return (StopReason::EndOfLog, None),
                    Ok(_) => {}
                },
                _ = health_tick.tick() => {
                    if self.pool.is_stopped() {
                        return (StopReason::Failed, None);
                    }
                    // A partition may reach its end while a rebalance is
                    // under way, or the ones not at their end may be revoked.
                    if cfg.exit_at_end && self.at_end() {
                        return (StopReason::EndOfLog, None);
                    }
                    self.check_session().await;
                }
            }
        }
    }

    /// The stop: stop fetching, drain (or abort) the pool while still
    /// answering the group, commit, leave the group, report.
    async fn finish(
        mut self,
        cfg: &ConsumerConfig,
        mut reason: StopReason,
        error: Option<Error>,
        mut shutdown: ShutdownSignal,
    ) -> Result<ConsumeSummary> {
        if let Some(m) = &self.membership {
            m.begin_close();
        }
        // Stop fetching first, so draining has a fixed amount of work.
        let mut parts = self.assignment.stop_all().await;
        let p = Arc::clone(&self.pool);
        let timeout = cfg.drain_timeout;
        let failed = reason == StopReason::Failed;
        let mut stopping = tokio::task::spawn_blocking(move || {
            if failed {
                p.abort(timeout)
            } else {
                p.drain(timeout)
            }
        });
        // The drain is cut short once two stop requests were made in all
        // (two signals may have arrived before the main loop saw the first).
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
        tokio::pin!(second_signal);
        let mut acks: Vec<oneshot::Sender<()>> = Vec::new();
        let mut interrupted = false;
        // A drain may take long (`--exit-at-end` drains everything fetched,
        // a whole backlog with a large `--max-in-flight`): keep committing
        // what finishes and printing progress meanwhile, so a crash during
        // it repeats one interval's worth, not the whole drain.
        let every = cfg.commit_interval.max(Duration::from_millis(10));
        let mut commit_tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        commit_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stats_tick = stats_interval(cfg.stats_interval);
        let abandon = |pool: &Pool, reason: &mut StopReason, interrupted: &mut bool| {
            tracing::warn!("second signal: abandoning queued messages");
            *reason = StopReason::Aborted;
            *interrupted = true;
            pool.interrupt();
        };
        let report = loop {
            // Biased, group events first: a lost partition already reported
            // is left out of the next commit, the final one included (the
            // drain's end is seen only once no event is waiting).
            tokio::select! {
                biased;
                // The group keeps talking while we drain: revocations are
                // acknowledged after the final commit below, lost partitions
                // are not committed.
                event = next_event(&mut self.membership) => match event {
                    Some(GroupEvent::Revoke { done, .. }) => acks.push(done),
                    Some(GroupEvent::Lost(tps)) => parts.retain(|(tp, _)| !tps.contains(tp)),
                    Some(GroupEvent::Assigned(_)) => {}
                    Some(GroupEvent::Failed(e)) => tracing::warn!("group membership failed while stopping: {e}"),
                    None => self.membership = None,
                },
                r = &mut stopping => break r,
                _ = &mut second_signal, if reason != StopReason::Failed && !interrupted => {
                    abandon(&self.pool, &mut reason, &mut interrupted);
                }
                _ = commit_tick.tick() => {
                    let who = self.identity();
                    let commit = self.committer.commit(&parts, &who);
                    tokio::pin!(commit);
                    // A second signal during a slow commit abandons the
                    // queued messages at once; the commit itself, the final
                    // one and the leave below still run to their deadlines.
                    let result = loop {
                        tokio::select! {
                            r = &mut commit => break r,
                            _ = &mut second_signal, if reason != StopReason::Failed && !interrupted => {
                                abandon(&self.pool, &mut reason, &mut interrupted);
                            }
                        }
                    };
                    if let Err(e) = result {
                        tracing::debug!("commit while draining failed, the final commit retries: {e}");
                    }
                }
                _ = stats_tick.tick() => {
                    let line = self.progress.line(&self.pool.stats(), &[], &[], self.single_topic, None);
                    eprintln!("{line} (draining)");
                }
            }
        }
        .map_err(|e| Error::Internal(format!("stopping the worker pool: {e}")))?;
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
        let who = self.identity();
        let committed = self.committer.commit(&parts, &who).await;
        for done in acks {
            let _ = done.send(());
        }
        if let Some(m) = self.membership.take() {
            m.leave(Duration::from_secs(10)).await;
        }
        if let Err(e) = committed {
            return Err(error.unwrap_or_else(|| e.into()));
        }
        if let Some(e) = error {
            return Err(e);
        }
        let mut committed: Vec<(TopicPartition, i64)> = parts
            .iter()
            .filter_map(|(tp, _)| Some((tp.clone(), *self.committer.committed().get(tp)?)))
            .collect();
        committed.sort();
        Ok(ConsumeSummary {
            reason,
            unfinished: report.unfinished,
            stats: report.stats,
            elapsed: self.progress.elapsed(),
            committed,
            failure: report.failure,
            revocations: self.revocations,
        })
    }
}

/// The progress line's ticker: first after one `every`; `0` never ticks
/// (in practice: once a year).
fn stats_interval(every: Duration) -> tokio::time::Interval {
    let every = if every.is_zero() {
        Duration::from_secs(3600 * 24 * 365)
    } else {
        every
    };
    tokio::time::interval_at(tokio::time::Instant::now() + every, every)
}

/// `t-0,t-3` for log lines.
fn list(tps: &[TopicPartition]) -> String {
    tps.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}
