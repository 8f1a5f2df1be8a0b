//! The ordered worker pool: parallel across keys, in order within a key.
//!
//! Successor of the original C++ `cos_offline_thread_pool`. The pool owns N
//! OS threads ("lanes"), each draining its own bounded crossbeam channel one
//! message at a time, in arrival order. [`Ordering`] decides which lane a
//! message goes to, so everything that must stay ordered shares a lane
//! (DESIGN rule 1) while lane choice stays independent of Kafka's
//! partitioner (rule 2, see [`routing`]).
//!
//! Submission records the message in the shared [`OffsetTracker`]; a lane
//! marks it finished only after the handler succeeded or the failure policy
//! dealt with it (rule 3). Memory is bounded twice: per lane
//! ([`PoolConfig::lane_capacity`]) and globally
//! ([`PoolConfig::max_in_flight`]); a full pool makes [`Pool::submit`] block
//! and [`Pool::submit_async`] wait without blocking a tokio thread (rule 4).
//! [`Pool::submit_batch`] / [`Pool::submit_batch_async`] hand over a whole
//! fetch response at once with the same guarantees, paying for the budget,
//! the tracker lock and the lane hand-off once per step instead of once per
//! message (what the consumer's fetch loop uses).
//! Handler errors and panics are retried with exponential backoff on the same
//! lane, then [`FailurePolicy`] applies (rule 5).
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use bytes::Bytes;
//! use mykafkams::{Headers, Message};
//! use mykafkams::offsets::OffsetTracker;
//! use mykafkams::pool::{HandlerError, Pool, PoolConfig};
//!
//! let tracker = Arc::new(OffsetTracker::new());
//! let config = PoolConfig { lanes: 4, ..PoolConfig::default() };
//! let pool = Arc::new(
//!     Pool::new(config, Arc::clone(&tracker), |msg: &Message| -> Result<(), HandlerError> {
//!         // Runs on a lane thread; messages of one key arrive here in order.
//!         let _ = msg.value.as_deref();
//!         Ok(())
//!     })
//!     .expect("valid config"),
//! );
//!
//! let topic: Arc<str> = Arc::from("events");
//! tracker.set_next_fetch(&topic, 0, 0); // the fetch position on assignment
//! for offset in 0..100 {
//!     let msg = Message {
//!         topic: Arc::clone(&topic),
//!         partition: 0,
//!         offset,
//!         key: Some(Bytes::from(format!("account-{}", offset % 7))),
//!         value: Some(Bytes::from_static(b"payload")),
//!         timestamp_ms: 0,
//!         headers: Headers::new(),
//!     };
//!     pool.submit(msg).expect("pool is running");
//! }
//!
//! let report = pool.drain(Duration::from_secs(5));
//! assert_eq!(report.unfinished, 0);
//! // Everything finished: the committable offset is the next one to fetch.
//! assert_eq!(tracker.committable("events", 0), Some(100));
//! ```

mod capacity;
mod config;
mod handler;
mod keys;
mod lanes;
mod report;
pub mod routing;
mod tasks;
mod worker;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering as AO};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::Message;
use crate::offsets::OffsetTracker;
use capacity::{Capacity, Padded};
use keys::Keys;
use lanes::{LaneMsg, Lanes};
use tasks::Tasks;
use worker::{ABORTING, DRAINING, Job, RUNNING, Shared};

pub use config::{BuildError, DeadLetterFn, FailurePolicy, PoolConfig, Scheduler, SubmitError};
pub use handler::{AsyncHandler, Handler, HandlerError};
pub use report::{FailedMessage, PoolStats, ShutdownReport, UnfinishedPartition};
pub use routing::Ordering;

/// A batch submission handles at most this many messages per step: one
/// capacity reservation, one tracker lock per partition, one hand-off per
/// lane (or one scheduler lock) and one counter update per step.
const SUBMIT_CHUNK: usize = 256;

/// The scheduler behind a pool.
enum Engine {
    Lanes(Lanes),
    Keys(Arc<Keys>),
    /// The keys scheduler's queues run by tokio tasks ([`AsyncHandler`]).
    Tasks(Arc<Tasks>),
}

/// Jobs of one submission step, grouped the way the scheduler takes them.
enum Staged {
    /// Per lane, in submission order.
    Lanes(Vec<Vec<Job>>),
    /// In submission order, with each job's queue at the same index (two
    /// vectors, not one of pairs: a pair would be too large to move inline).
    Keys(Vec<Option<u64>>, Vec<Job>),
}

impl Staged {
    fn new(engine: &Engine) -> Self {
        match engine {
            Engine::Lanes(l) => Staged::Lanes((0..l.len()).map(|_| Vec::new()).collect()),
            Engine::Keys(_) | Engine::Tasks(_) => Staged::Keys(
                Vec::with_capacity(SUBMIT_CHUNK),
                Vec::with_capacity(SUBMIT_CHUNK),
            ),
        }
    }

    #[inline]
    fn push(&mut self, engine: &Engine, job: Job) {
        match (self, engine) {
            (Staged::Lanes(per_lane), Engine::Lanes(l)) => per_lane[l.lane_of(&job.msg)].push(job),
            (Staged::Keys(ids, jobs), Engine::Keys(k)) => {
                ids.push(k.queue_of(&job.msg));
                jobs.push(job);
            }
            (Staged::Keys(ids, jobs), Engine::Tasks(t)) => {
                ids.push(t.queue_of(&job.msg));
                jobs.push(job);
            }
            _ => unreachable!("staged for another scheduler"),
        }
    }

    fn reserve(&mut self, n: usize) {
        match self {
            Staged::Lanes(per_lane) => {
                let lanes = per_lane.len();
                let hint = n / lanes + n / (2 * lanes) + 4;
                per_lane.iter_mut().for_each(|v| v.reserve(hint));
            }
            Staged::Keys(ids, jobs) => {
                ids.reserve(n);
                jobs.reserve(n);
            }
        }
    }

    /// Drops staged jobs that will never be handed off (the pool halted):
    /// they stay unfinished in the tracker and count as abandoned.
    fn abandon(&mut self, sh: &Shared) {
        match self {
            Staged::Lanes(per_lane) => per_lane.iter_mut().for_each(|v| {
                sh.abandon(v.len());
                v.clear();
            }),
            Staged::Keys(ids, jobs) => {
                sh.abandon(jobs.len());
                ids.clear();
                jobs.clear();
            }
        }
    }
}

/// Decrements `active_submits` when a submit call ends, however it ends.
struct ActiveSubmit<'a>(&'a AtomicUsize);

impl Drop for ActiveSubmit<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, AO::SeqCst);
    }
}

/// Capacity units a submission holds and has not yet handed to a worker;
/// they are returned when it is dropped (error, cancellation, short batch).
struct Permit<'a> {
    capacity: &'a Capacity,
    units: usize,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.capacity.release(self.units);
    }
}

/// The ordered worker pool. Share it as `Arc<Pool>`: every method takes
/// `&self`, so fetch tasks can submit while a signal handler drains.
pub struct Pool {
    shared: Arc<Shared>,
    engine: Engine,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Serialises drain/abort calls.
    shutdown: Mutex<()>,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("scheduler", &self.scheduler())
            .field("workers", &self.lanes())
            .field("stats", &self.stats())
            .finish()
    }
}

impl Pool {
    /// Starts the worker threads. Messages submitted later are dispatched
    /// in `tracker` and marked finished there by the workers.
    pub fn new(
        config: PoolConfig,
        tracker: Arc<OffsetTracker>,
        handler: impl Handler,
    ) -> Result<Self, BuildError> {
        if config.lanes == 0 {
            return Err(BuildError::InvalidConfig("lanes must be at least 1".into()));
        }
        if config.lane_capacity == 0 {
            return Err(BuildError::InvalidConfig(
                "lane_capacity must be at least 1".into(),
            ));
        }
        let handler: Arc<dyn Handler> = Arc::new(handler);
        let shared = Self::shared(&config, tracker, config.lanes)?;
        let (engine, threads) = match config.scheduler {
            Scheduler::Lanes => {
                let (l, t) = Lanes::start(
                    &shared,
                    &handler,
                    config.lanes,
                    config.lane_capacity,
                    config.ordering,
                )?;
                (Engine::Lanes(l), t)
            }
            Scheduler::Keys => {
                let (k, t) = Keys::start(&shared, &handler, config.lanes, config.ordering)?;
                (Engine::Keys(k), t)
            }
        };
        Ok(Self {
            shared,
            engine,
            threads: Mutex::new(threads),
            shutdown: Mutex::new(()),
        })
    }

    /// A pool running an [`AsyncHandler`] on the current tokio runtime
    /// (call it from inside one): the `keys` scheduler's per-key queues,
    /// with up to [`PoolConfig::max_concurrency`] messages in flight, each
    /// in a task, instead of one per worker thread. Every guarantee and
    /// method is that of a thread pool ([`Pool::new`]); `lanes`,
    /// `lane_capacity` and `scheduler` are not used, and
    /// [`PoolConfig::handler_timeout`] is.
    ///
    /// The submit methods work from any thread; [`drain`](Self::drain) and
    /// [`abort`](Self::abort) block, so call them off the runtime's worker
    /// threads (e.g. in `spawn_blocking`), as with a thread pool.
    pub fn new_async(
        config: PoolConfig,
        tracker: Arc<OffsetTracker>,
        handler: impl AsyncHandler,
    ) -> Result<Self, BuildError> {
        if config.max_concurrency == 0 {
            return Err(BuildError::InvalidConfig(
                "max_concurrency must be at least 1".into(),
            ));
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            BuildError::InvalidConfig("an async pool must be built inside a tokio runtime".into())
        })?;
        // Backoffs and timeouts sleep on the runtime's timer; without one
        // they would panic inside a task, far from here.
        if std::panic::catch_unwind(|| drop(tokio::time::sleep(Duration::ZERO))).is_err() {
            return Err(BuildError::InvalidConfig(
                "an async pool needs a tokio runtime with its timer enabled (enable_time or enable_all)".into(),
            ));
        }
        // One set of counters: tasks move between threads, so they count
        // with atomic adds (see `tasks`).
        let shared = Self::shared(&config, tracker, 1)?;
        let tasks = Tasks::start(
            &shared,
            handler,
            runtime,
            config.max_concurrency,
            config.handler_timeout,
            config.ordering,
        );
        Ok(Self {
            shared,
            engine: Engine::Tasks(tasks),
            threads: Mutex::new(Vec::new()),
            shutdown: Mutex::new(()),
        })
    }

    /// The state every engine shares, with `workers` sets of counters.
    fn shared(
        config: &PoolConfig,
        tracker: Arc<OffsetTracker>,
        workers: usize,
    ) -> Result<Arc<Shared>, BuildError> {
        if config.max_in_flight == 0 {
            return Err(BuildError::InvalidConfig(
                "max_in_flight must be at least 1".into(),
            ));
        }
        Ok(Arc::new(Shared {
            tracker,
            retries: config.retries,
            backoff_initial: config.backoff_initial,
            backoff_max: config.backoff_max.max(config.backoff_initial),
            policy: config.failure_policy.clone(),
            phase: AtomicU8::new(RUNNING),
            failed: AtomicBool::new(false),
            failure: Mutex::new(None),
            capacity: Capacity::new(config.max_in_flight),
            active_submits: Padded(AtomicUsize::new(0)),
            submitted: Padded(AtomicU64::new(0)),
            submit_abandoned: AtomicU64::new(0),
            revoked: AtomicU64::new(0),
            already_done: AtomicU64::new(0),
            workers: (0..workers).map(|_| Padded::default()).collect(),
            wake_lock: Mutex::new(()),
            wake_cv: Condvar::new(),
            halt: tokio::sync::Notify::new(),
        }))
    }

    fn enter(&self) -> Result<ActiveSubmit<'_>, SubmitError> {
        self.shared.active_submits.fetch_add(1, AO::SeqCst);
        let guard = ActiveSubmit(&self.shared.active_submits);
        match self.shared.refusal() {
            Some(e) => Err(e),
            None => Ok(guard),
        }
    }

    /// Refusal check plus a multi-unit capacity reservation; `None` = full.
    fn try_capacity_up_to(&self, n: usize) -> Option<Result<usize, SubmitError>> {
        if let Some(e) = self.shared.refusal() {
            return Some(Err(e));
        }
        match self.shared.capacity.try_acquire_up_to(n) {
            0 => None,
            got => Some(Ok(got)),
        }
    }

    /// Dispatches one message in the tracker.
    fn prepare(&self, msg: Message) -> Result<Job, SubmitError> {
        let done = self
            .shared
            .tracker
            .dispatch(&msg.topic, msg.partition, msg.offset)
            .map_err(SubmitError::Offset)?;
        self.shared.submitted.fetch_add(1, AO::Relaxed);
        Ok(Job { msg, done })
    }

    /// Submits a message, blocking the calling thread while the pool is full.
    ///
    /// Messages of one partition must be submitted in increasing offset
    /// order by one caller at a time (the partition's fetcher). On `Ok` the
    /// message is queued and dispatched in the tracker. On error it was
    /// either never dispatched (`Offset`, or refused up front) or left
    /// unfinished in the tracker, which is safe: it will be redelivered.
    /// Do not call from a tokio worker thread; use [`submit_async`](Self::submit_async).
    /// For many messages at once prefer [`submit_batch`](Self::submit_batch).
    pub fn submit(&self, msg: Message) -> Result<(), SubmitError> {
        let _active = self.enter()?;
        let cap = &self.shared.capacity;
        let units = match self.try_capacity_up_to(1) {
            Some(r) => r?,
            None => cap.wait_blocking(|| self.try_capacity_up_to(1))?,
        };
        let mut permit = Permit {
            capacity: cap,
            units,
        };
        let job = self.prepare(msg)?;
        match &self.engine {
            Engine::Lanes(l) => {
                let lane = l.lane_of(&job.msg);
                l.send_blocking(&self.shared, lane, LaneMsg::Job(job))?;
            }
            Engine::Keys(k) => k.enqueue_one(job),
            Engine::Tasks(t) => t.enqueue_one(job),
        }
        permit.units = 0;
        Ok(())
    }

    /// Submits a message, awaiting room without blocking the executor thread
    /// (DESIGN rule 4). Same contract as [`submit`](Self::submit).
    ///
    /// Cancel safety: dropping the future before it completes may leave the
    /// message dispatched but never queued, i.e. unfinished in the tracker:
    /// safe (it will be redelivered) but it holds the partition's committable
    /// offset back, so only cancel when shutting down.
    pub async fn submit_async(&self, msg: Message) -> Result<(), SubmitError> {
        let _active = self.enter()?;
        let cap = &self.shared.capacity;
        let units = match self.try_capacity_up_to(1) {
            Some(r) => r?,
            None => cap.wait_async(|| self.try_capacity_up_to(1)).await?,
        };
        let mut permit = Permit {
            capacity: cap,
            units,
        };
        let job = self.prepare(msg)?;
        match &self.engine {
            Engine::Lanes(l) => {
                let lane = l.lane_of(&job.msg);
                l.send_async(&self.shared, lane, LaneMsg::Job(job)).await?;
            }
            Engine::Keys(k) => k.enqueue_one(job),
            Engine::Tasks(t) => t.enqueue_one(job),
        }
        permit.units = 0;
        Ok(())
    }

    /// Submits a batch of messages (typically one fetch response), blocking
    /// the calling thread while the pool is full.
    ///
    /// Equivalent to calling [`submit`](Self::submit) for each message in
    /// order, with the same guarantees (per-key order, `max_in_flight` and
    /// `lane_capacity` respected, each message dispatched in the tracker
    /// before a worker can see it), but much cheaper per message: the batch
    /// is handled in steps of up to 256 messages, and each step reserves its
    /// in-flight budget with one atomic operation, dispatches its offsets
    /// under one tracker lock per partition, and hands the step over with
    /// one queue item per lane (`lanes`) or one scheduler lock (`keys`), so
    /// at most one wake-up per lane or per claim's worth of work.
    ///
    /// Messages of one partition must be in increasing offset order, and one
    /// caller at a time submits a given partition, as for `submit`. On `Ok`
    /// every message is queued. On error, what was queued stays queued (it
    /// will be processed) and the rest is either never dispatched or left
    /// unfinished in the tracker (redelivered after a restart, never
    /// committed past). In particular [`SubmitError::Offset`] refuses the
    /// offending message and those after it, having queued those before it.
    /// Do not call from a tokio worker thread; use
    /// [`submit_batch_async`](Self::submit_batch_async).
    pub fn submit_batch(&self, msgs: Vec<Message>) -> Result<(), SubmitError> {
        let _active = self.enter()?;
        let cap = &self.shared.capacity;
        let mut msgs = msgs.into_iter();
        let mut staged = Staged::new(&self.engine);
        while msgs.len() > 0 {
            let want = msgs.len().min(SUBMIT_CHUNK);
            let got = match self.try_capacity_up_to(want) {
                Some(r) => r?,
                None => cap.wait_blocking(|| self.try_capacity_up_to(want))?,
            };
            let mut permit = Permit {
                capacity: cap,
                units: got,
            };
            let staging = self.stage(&mut msgs, got, &mut staged);
            match (&self.engine, &mut staged) {
                (Engine::Lanes(l), Staged::Lanes(per_lane)) => {
                    // Indexed: on error the lanes not yet sent are abandoned.
                    #[allow(clippy::needless_range_loop)]
                    for lane in 0..per_lane.len() {
                        let mut jobs = std::mem::take(&mut per_lane[lane]);
                        while !jobs.is_empty() {
                            let rest = l.split_for_lane(&mut jobs);
                            let n = jobs.len();
                            if let Err(e) = l.send_blocking(&self.shared, lane, LaneMsg::Jobs(jobs))
                            {
                                self.shared.abandon(rest.len());
                                staged.abandon(&self.shared);
                                return Err(e);
                            }
                            permit.units -= n;
                            jobs = rest;
                        }
                    }
                }
                (Engine::Keys(k), Staged::Keys(ids, jobs)) => {
                    permit.units -= jobs.len();
                    k.enqueue(ids, jobs);
                }
                (Engine::Tasks(t), Staged::Keys(ids, jobs)) => {
                    permit.units -= jobs.len();
                    t.enqueue(ids, jobs);
                }
                _ => unreachable!("staged for another scheduler"),
            }
            staging?;
        }
        Ok(())
    }

    /// Submits a batch of messages, awaiting room without blocking the
    /// executor thread (DESIGN rule 4). Same contract and guarantees as
    /// [`submit_batch`](Self::submit_batch); the iterator is consumed lazily,
    /// one step (at most 256 messages) at a time.
    ///
    /// Cancel safety: dropping the future before it completes leaves every
    /// message queued so far queued, and the others either never dispatched
    /// or dispatched but never queued, i.e. unfinished in the tracker: safe
    /// (redelivered after a restart; the committable offset never passes
    /// them) but it holds the partition's committable offset back, so only
    /// cancel when shutting down or giving the partition up. The in-flight
    /// budget and lane room of unqueued messages are returned.
    pub async fn submit_batch_async<I>(&self, msgs: I) -> Result<(), SubmitError>
    where
        I: IntoIterator<Item = Message>,
    {
        let _active = self.enter()?;
        let cap = &self.shared.capacity;
        let mut msgs = msgs.into_iter().peekable();
        let mut staged = Staged::new(&self.engine);
        while msgs.peek().is_some() {
            let want = msgs.size_hint().0.clamp(1, SUBMIT_CHUNK);
            let got = match self.try_capacity_up_to(want) {
                Some(r) => r?,
                None => cap.wait_async(|| self.try_capacity_up_to(want)).await?,
            };
            let mut permit = Permit {
                capacity: cap,
                units: got,
            };
            let staging = self.stage(&mut msgs, got, &mut staged);
            match (&self.engine, &mut staged) {
                (Engine::Lanes(l), Staged::Lanes(per_lane)) => {
                    // Indexed: on error the lanes not yet sent are abandoned.
                    #[allow(clippy::needless_range_loop)]
                    for lane in 0..per_lane.len() {
                        let mut jobs = std::mem::take(&mut per_lane[lane]);
                        while !jobs.is_empty() {
                            let rest = l.split_for_lane(&mut jobs);
                            let n = jobs.len();
                            let sent = l.send_async(&self.shared, lane, LaneMsg::Jobs(jobs)).await;
                            if let Err(e) = sent {
                                self.shared.abandon(rest.len());
                                staged.abandon(&self.shared);
                                return Err(e);
                            }
                            permit.units -= n;
                            jobs = rest;
                        }
                    }
                }
                (Engine::Keys(k), Staged::Keys(ids, jobs)) => {
                    permit.units -= jobs.len();
                    k.enqueue(ids, jobs);
                }
                (Engine::Tasks(t), Staged::Keys(ids, jobs)) => {
                    permit.units -= jobs.len();
                    t.enqueue(ids, jobs);
                }
                _ => unreachable!("staged for another scheduler"),
            }
            staging?;
        }
        Ok(())
    }

    /// Takes up to `n` messages from `msgs`, dispatches them in the tracker,
    /// holding each partition's lock once per run of messages of that
    /// partition, and stages each for its lane or queue, in order. Stops at
    /// the first message the tracker refuses: it and the messages after it
    /// are not dispatched; those staged before it are valid. Counts what it
    /// staged as submitted.
    fn stage(
        &self,
        msgs: &mut impl Iterator<Item = Message>,
        n: usize,
        staged: &mut Staged,
    ) -> Result<(), SubmitError> {
        let tracker = &self.shared.tracker;
        staged.reserve(n);
        let mut left = n;
        let mut next = if left > 0 { msgs.next() } else { None };
        let result = 'outer: {
            while let Some(first) = next.take() {
                let part = match tracker.try_partition(&first.topic, first.partition) {
                    Ok(p) => p,
                    Err(e) => break 'outer Err(SubmitError::Offset(e)),
                };
                let tp = part.topic_partition();
                let mut dispatcher = part.dispatcher();
                let mut msg = first;
                loop {
                    let done = match dispatcher.dispatch(msg.offset) {
                        Ok(d) => d,
                        Err(e) => break 'outer Err(SubmitError::Offset(e)),
                    };
                    staged.push(&self.engine, Job { msg, done });
                    left -= 1;
                    if left == 0 {
                        break 'outer Ok(());
                    }
                    match msgs.next() {
                        None => break 'outer Ok(()),
                        Some(m) if m.partition == tp.partition && *m.topic == *tp.topic => msg = m,
                        Some(m) => {
                            next = Some(m);
                            break;
                        }
                    }
                }
            }
            Ok(())
        };
        self.shared
            .submitted
            .fetch_add((n - left) as u64, AO::Relaxed);
        result
    }

    /// The offset tracker this pool dispatches into.
    pub fn tracker(&self) -> &Arc<OffsetTracker> {
        &self.shared.tracker
    }

    /// Number of worker threads (lanes, for the `lanes` scheduler); 1 for
    /// an async pool, whose counters are not per thread.
    pub fn lanes(&self) -> usize {
        self.shared.workers.len()
    }

    /// True for a pool running an [`AsyncHandler`] ([`Pool::new_async`]).
    pub fn is_async(&self) -> bool {
        matches!(self.engine, Engine::Tasks(_))
    }

    /// Which scheduler runs this pool (`keys` for an async pool: the same
    /// per-key queues, claimed by tasks).
    pub fn scheduler(&self) -> Scheduler {
        match self.engine {
            Engine::Lanes(_) => Scheduler::Lanes,
            Engine::Keys(_) | Engine::Tasks(_) => Scheduler::Keys,
        }
    }

    /// The message that stopped the pool under [`FailurePolicy::Stop`], if any.
    pub fn failure(&self) -> Option<FailedMessage> {
        self.shared.failure.lock().clone()
    }

    /// True once a failure stopped the pool.
    pub fn is_stopped(&self) -> bool {
        self.shared.failed.load(AO::SeqCst)
    }

    /// Current counters.
    pub fn stats(&self) -> PoolStats {
        let sh = &self.shared;
        let mut s = PoolStats {
            submitted: sh.submitted.load(AO::Relaxed),
            abandoned: sh.submit_abandoned.load(AO::Relaxed),
            ..PoolStats::default()
        };
        for c in sh.workers.iter() {
            s.finished += c.finished.load(AO::Relaxed);
            s.failed += c.failed.load(AO::Relaxed);
            s.retried += c.retried.load(AO::Relaxed);
            s.skipped += c.skipped.load(AO::Relaxed);
            s.dead_lettered += c.dead_lettered.load(AO::Relaxed);
            s.abandoned += c.abandoned.load(AO::Relaxed);
            s.lane_processed.push(c.processed.load(AO::Relaxed));
        }
        match &self.engine {
            Engine::Lanes(l) => {
                s.lane_depth = l.depths();
                s.queued = s.lane_depth.iter().sum::<usize>() as u64;
            }
            Engine::Keys(k) => {
                let (queued, ready) = k.depth();
                s.queued = queued as u64;
                s.ready_keys = ready as u64;
            }
            Engine::Tasks(t) => {
                let (queued, ready) = t.depth();
                s.queued = queued as u64;
                s.ready_keys = ready as u64;
            }
        }
        s.revoked = sh.revoked.load(AO::Relaxed);
        s.already_done = sh.already_done.load(AO::Relaxed);
        s.in_flight = s.submitted.saturating_sub(s.finished + s.revoked);
        s
    }

    /// Counts `n` messages of a revoked partition as never finishing here
    /// (they leave `in_flight`; the new owner processes them).
    pub fn note_revoked(&self, n: u64) {
        self.shared.revoked.fetch_add(n, AO::Relaxed);
    }

    /// Counts `n` messages skipped because the committed offset map marked
    /// them done (issue 15): they never reach the pool.
    pub fn note_already_done(&self, n: u64) {
        if n > 0 {
            self.shared.already_done.fetch_add(n, AO::Relaxed);
        }
    }

    /// Messages currently holding a unit of the `max_in_flight` budget.
    pub fn capacity_used(&self) -> usize {
        self.shared.capacity.used()
    }

    /// Stops accepting messages, lets the workers finish everything queued,
    /// joins them and reports what is left. Bounded by `timeout`: when it
    /// expires the pool switches to [`abort`](Self::abort) behaviour
    /// (workers finish only the message they are running) and returns;
    /// workers still inside a handler are detached and counted in the report.
    ///
    /// Safe to call from any thread, more than once, and concurrently with
    /// submitters (they get [`SubmitError::ShuttingDown`]).
    pub fn drain(&self, timeout: Duration) -> ShutdownReport {
        let deadline = Instant::now() + timeout;
        let _one_at_a_time = self.shutdown.lock();
        let sh = &self.shared;
        let _ = sh
            .phase
            .compare_exchange(RUNNING, DRAINING, AO::SeqCst, AO::SeqCst);
        sh.wake_everyone();
        // After this no new message can reach a worker, so what is queued
        // now really is the last of it.
        let mut timed_out = !wait_until(deadline, || sh.active_submits.load(AO::SeqCst) == 0);
        if !timed_out {
            match &self.engine {
                Engine::Lanes(l) => timed_out = !l.send_shutdown(deadline),
                Engine::Keys(k) => k.close(),
                // Tasks end by themselves once nothing is left to claim.
                Engine::Tasks(_) => {}
            }
        }
        if !timed_out {
            timed_out = !self.join_until(deadline);
        }
        if timed_out {
            self.begin_abort();
            // No extra time: what has not finished by the deadline stays
            // unfinished and is reported.
            self.join_until(Instant::now());
        }
        self.report(timed_out)
    }

    /// Stops accepting messages, lets each worker finish only the message it
    /// is running (queued ones are dropped, unfinished), joins the workers
    /// and reports what is left. Bounded by `timeout` like [`drain`](Self::drain).
    pub fn abort(&self, timeout: Duration) -> ShutdownReport {
        let deadline = Instant::now() + timeout;
        let _one_at_a_time = self.shutdown.lock();
        self.begin_abort();
        let timed_out = !self.join_until(deadline);
        self.report(timed_out)
    }

    /// Escalates a running [`drain`](Self::drain) (on another thread) to
    /// abort behaviour without waiting for it: workers finish only the
    /// message they are running and drop the rest, unfinished. Used when a
    /// second stop signal arrives during a graceful stop.
    pub fn interrupt(&self) {
        self.begin_abort();
    }

    fn begin_abort(&self) {
        let sh = &self.shared;
        sh.phase.store(ABORTING, AO::SeqCst);
        sh.wake_everyone();
        match &self.engine {
            Engine::Lanes(l) => l.wake_for_abort(),
            Engine::Keys(k) => {
                let dropped = k.abort();
                sh.abandon(dropped);
                sh.capacity.release(dropped);
            }
            Engine::Tasks(t) => {
                let dropped = t.abort();
                sh.abandon(dropped);
                sh.capacity.release(dropped);
            }
        }
    }

    /// Tasks of an async pool still running (0 for thread pools).
    fn tasks_running(&self) -> usize {
        match &self.engine {
            Engine::Tasks(t) => t.active(),
            _ => 0,
        }
    }

    /// Joins worker threads (waits for the tasks of an async pool) that
    /// finish by `deadline`; true if all did.
    fn join_until(&self, deadline: Instant) -> bool {
        let mut threads = self.threads.lock();
        let all = wait_until(deadline, || {
            threads.iter().all(JoinHandle::is_finished) && self.tasks_running() == 0
        });
        let mut still = Vec::new();
        for h in threads.drain(..) {
            if h.is_finished() {
                if h.join().is_err() {
                    tracing::error!("a pool worker thread panicked outside a handler");
                }
            } else {
                still.push(h);
            }
        }
        *threads = still;
        all
    }

    fn report(&self, timed_out: bool) -> ShutdownReport {
        let mut partitions: Vec<UnfinishedPartition> = self
            .shared
            .tracker
            .partitions()
            .into_iter()
            .filter_map(|p| {
                let count = p.in_flight();
                (count > 0).then(|| UnfinishedPartition {
                    tp: p.topic_partition().clone(),
                    lowest_unfinished: p.committable().unwrap_or_default(),
                    count,
                })
            })
            .collect();
        partitions.sort_by(|a, b| a.tp.cmp(&b.tp));
        let stats = self.stats();
        ShutdownReport {
            unfinished: stats.in_flight,
            partitions,
            failure: self.failure(),
            timed_out,
            lanes_still_running: self.threads.lock().len() + self.tasks_running(),
            stats,
        }
    }
}

impl Drop for Pool {
    /// Dropping a pool that was not drained aborts it without waiting:
    /// workers finish their current message and exit on their own.
    fn drop(&mut self) {
        if !self.threads.get_mut().is_empty() || self.tasks_running() > 0 {
            self.begin_abort();
        }
    }
}

/// Polls `done` until it holds or `deadline` passes. Only used on shutdown
/// paths, where a millisecond of latency is irrelevant.
fn wait_until(deadline: Instant, mut done: impl FnMut() -> bool) -> bool {
    loop {
        if done() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(1)));
    }
}
