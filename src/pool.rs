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
//! use mykafkams::Message;
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
//!         headers: Vec::new(),
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
mod handler;
pub mod routing;

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering as AO};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, SendTimeoutError, Sender, TryRecvError, TrySendError};
use parking_lot::{Condvar, Mutex};

use crate::Message;
use crate::offsets::{Completion, OffsetError, OffsetTracker, TopicPartition, finish_batch};
use capacity::{Capacity, Padded};
use routing::Router;

pub use handler::{Handler, HandlerError};
pub use routing::Ordering;

/// Callback of [`FailurePolicy::DeadLetter`]: gets the message and the last
/// error; `Ok` means the message is safely parked (e.g. produced to a DLQ
/// topic) and may be marked finished.
pub type DeadLetterFn = Arc<dyn Fn(&Message, &HandlerError) -> Result<(), String> + Send + Sync>;

/// What happens to a message whose handler still fails after all retries.
#[derive(Clone)]
pub enum FailurePolicy {
    /// Stop the pool: the message stays unfinished (the committable offset of
    /// its partition stays at it), [`Pool::submit`] returns
    /// [`SubmitError::Stopped`], and lanes run no further messages. The
    /// failure is available from [`Pool::failure`] and the shutdown report,
    /// so the process can commit and exit non-zero.
    Stop,
    /// Log a warning, count it in [`PoolStats::skipped`], mark it finished.
    Skip,
    /// Call the callback on the lane thread, then mark the message finished.
    /// If the callback fails (or panics) the pool stops as with
    /// [`FailurePolicy::Stop`].
    DeadLetter(DeadLetterFn),
}

impl fmt::Debug for FailurePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailurePolicy::Stop => f.write_str("Stop"),
            FailurePolicy::Skip => f.write_str("Skip"),
            FailurePolicy::DeadLetter(_) => f.write_str("DeadLetter(..)"),
        }
    }
}

/// Pool settings. `PoolConfig::default()` is a reasonable start; override
/// fields with struct update syntax.
#[derive(Clone, Debug)]
pub struct PoolConfig {
    /// Number of lanes (OS threads). Default: available parallelism.
    pub lanes: usize,
    /// Messages each lane can queue before submission waits. Default 1024.
    pub lane_capacity: usize,
    /// Messages accepted and not yet completed, over all lanes; submission
    /// waits above it. Default 10 000.
    pub max_in_flight: usize,
    /// What order is preserved. Default [`Ordering::Key`].
    pub ordering: Ordering,
    /// Extra attempts after a handler error or panic, before the failure
    /// policy applies. Default 3.
    pub retries: u32,
    /// Backoff before the first retry; doubles per retry. Default 100 ms.
    pub backoff_initial: Duration,
    /// Upper bound of the backoff. Default 5 s.
    pub backoff_max: Duration,
    /// What to do after the last failed attempt. Default [`FailurePolicy::Stop`]
    /// (never lose a message silently unless asked to).
    pub failure_policy: FailurePolicy,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            lanes: std::thread::available_parallelism().map_or(4, |n| n.get()),
            lane_capacity: 1024,
            max_in_flight: 10_000,
            ordering: Ordering::Key,
            retries: 3,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            failure_policy: FailurePolicy::Stop,
        }
    }
}

/// Why a pool could not be built.
#[derive(Debug)]
pub enum BuildError {
    /// A configuration value is out of range (the text names it).
    InvalidConfig(String),
    /// The OS refused to start a lane thread.
    Spawn(std::io::Error),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::InvalidConfig(s) => write!(f, "invalid pool configuration: {s}"),
            BuildError::Spawn(e) => write!(f, "cannot start a pool lane thread: {e}"),
        }
    }
}

impl std::error::Error for BuildError {}

/// Why a message was not accepted.
#[derive(Debug)]
pub enum SubmitError {
    /// The pool stopped after a failure under [`FailurePolicy::Stop`] (or a
    /// failed dead-letter callback); see [`Pool::failure`].
    Stopped,
    /// [`Pool::drain`] or [`Pool::abort`] was called.
    ShuttingDown,
    /// The offset tracker refused the offset (not increasing, or a negative
    /// partition). Nothing was queued.
    Offset(OffsetError),
}

impl fmt::Display for SubmitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubmitError::Stopped => f.write_str("worker pool stopped after a failed message"),
            SubmitError::ShuttingDown => f.write_str("worker pool is shutting down"),
            SubmitError::Offset(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for SubmitError {}

/// The message that stopped the pool and the last error it got.
#[derive(Clone, Debug)]
pub struct FailedMessage {
    /// The message; its offset is the committable offset of its partition.
    pub message: Message,
    /// The last handler error (or dead-letter callback error).
    pub error: HandlerError,
}

/// Counters of a pool, readable at any time ([`Pool::stats`]). Sums of
/// per-lane counters read without a global lock, so a snapshot taken while
/// running may be a few messages apart between fields.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Messages accepted by `submit`/`submit_async`/`submit_batch`/`submit_batch_async`.
    pub submitted: u64,
    /// Messages marked finished in the offset tracker (succeeded, skipped or
    /// dead-lettered).
    pub finished: u64,
    /// Messages whose last attempt failed (then the policy applied).
    pub failed: u64,
    /// Retry attempts (a message retried twice counts 2).
    pub retried: u64,
    /// Failed messages skipped by [`FailurePolicy::Skip`].
    pub skipped: u64,
    /// Failed messages handed to the dead-letter callback successfully.
    pub dead_lettered: u64,
    /// Messages dropped unprocessed because the pool stopped or aborted
    /// (left unfinished in the tracker, so they are redelivered).
    pub abandoned: u64,
    /// `submitted - finished`: accepted and not marked finished.
    pub in_flight: u64,
    /// Messages queued in each lane right now.
    pub lane_depth: Vec<usize>,
    /// Messages each lane has taken off its queue and run or abandoned.
    pub lane_processed: Vec<u64>,
    /// Messages of revoked partitions left unfinished here (another group
    /// member handles them now); see [`Pool::note_revoked`].
    pub revoked: u64,
}

/// One partition with work left unfinished at shutdown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnfinishedPartition {
    /// The partition.
    pub tp: TopicPartition,
    /// Its lowest unfinished offset: what to commit, where to resume.
    pub lowest_unfinished: i64,
    /// How many of its messages are unfinished.
    pub count: usize,
}

/// What [`Pool::drain`] / [`Pool::abort`] left undone.
#[derive(Clone, Debug)]
pub struct ShutdownReport {
    /// Messages accepted and never marked finished.
    pub unfinished: u64,
    /// Per partition (of the pool's tracker) with unfinished messages, sorted.
    pub partitions: Vec<UnfinishedPartition>,
    /// The message that stopped the pool, if one did.
    pub failure: Option<FailedMessage>,
    /// True if the timeout expired before the lanes were done.
    pub timed_out: bool,
    /// Lane threads still inside a handler when the call returned (detached:
    /// they exit after that handler returns and run nothing else).
    pub lanes_still_running: usize,
    /// Counters at the end.
    pub stats: PoolStats,
}

const RUNNING: u8 = 0;
const DRAINING: u8 = 1;
const ABORTING: u8 = 2;

/// A lane publishes completions (and returns capacity) in batches of at most
/// this many, to take its partition lock and touch the shared capacity
/// counter once per batch instead of once per message.
const COMPLETION_BATCH: usize = 32;

/// A batch submission handles at most this many messages per step: one
/// capacity reservation, one tracker lock per partition and one counter
/// update per step.
const SUBMIT_CHUNK: usize = 256;

/// How often a submitter blocked on a full lane re-checks for abort/stop.
const RECHECK: Duration = Duration::from_millis(10);

enum LaneMsg {
    Job(Job),
    /// Several jobs for one lane in submission order (a batch submission
    /// sends one per lane per step: one channel operation, one wakeup).
    Jobs(Vec<Job>),
    Shutdown,
}

impl LaneMsg {
    /// Messages this item carries.
    fn jobs(&self) -> usize {
        match self {
            LaneMsg::Job(_) => 1,
            LaneMsg::Jobs(v) => v.len(),
            LaneMsg::Shutdown => 0,
        }
    }
}

/// What a lane does after one job.
enum Next {
    Continue,
    Exit,
}

struct Job {
    msg: Message,
    done: Completion,
}

/// Per-lane counters, written only by the lane thread.
#[derive(Default)]
struct LaneCounters {
    processed: AtomicU64,
    finished: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
    skipped: AtomicU64,
    dead_lettered: AtomicU64,
    abandoned: AtomicU64,
}

fn bump(c: &AtomicU64) {
    // Single writer per counter: a plain load+store avoids a locked RMW.
    c.store(c.load(AO::Relaxed) + 1, AO::Relaxed);
}

/// State shared by the pool handle and its lane threads.
struct Shared {
    handler: Box<dyn Handler>,
    tracker: Arc<OffsetTracker>,
    retries: u32,
    backoff_initial: Duration,
    backoff_max: Duration,
    policy: FailurePolicy,
    phase: AtomicU8,
    failed: AtomicBool,
    failure: Mutex<Option<FailedMessage>>,
    capacity: Capacity,
    /// Messages queued per lane (reserved by submitters before sending,
    /// released by the lane when it takes them): keeps each lane within
    /// `lane_capacity` messages whatever the number of messages per item.
    queued: Vec<Padded<AtomicUsize>>,
    lane_capacity: usize,
    /// Submit calls currently between their state check and their send.
    active_submits: Padded<AtomicUsize>,
    /// Submitter-side counters (accepted / abandoned before reaching a lane).
    submitted: Padded<AtomicU64>,
    submit_abandoned: AtomicU64,
    /// Messages of revoked partitions that will never finish here.
    revoked: AtomicU64,
    lanes: Vec<Padded<LaneCounters>>,
    /// Interrupts backoff sleeps on abort/stop.
    wake_lock: Mutex<()>,
    wake_cv: Condvar,
}

impl Shared {
    #[inline]
    fn refusal(&self) -> Option<SubmitError> {
        if self.failed.load(AO::SeqCst) {
            Some(SubmitError::Stopped)
        } else if self.phase.load(AO::SeqCst) != RUNNING {
            Some(SubmitError::ShuttingDown)
        } else {
            None
        }
    }

    #[inline]
    fn aborting(&self) -> bool {
        self.phase.load(AO::Relaxed) == ABORTING
    }

    #[inline]
    fn halted(&self) -> bool {
        self.aborting() || self.failed.load(AO::Relaxed)
    }

    fn wake_everyone(&self) {
        self.capacity.signal_all();
        let _g = self.wake_lock.lock();
        self.wake_cv.notify_all();
    }

    /// Sleeps for a retry backoff; false if the pool halted meanwhile.
    fn backoff(&self, attempt: u32) -> bool {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        let delay = self
            .backoff_initial
            .saturating_mul(factor)
            .min(self.backoff_max);
        let deadline = Instant::now() + delay;
        let mut g = self.wake_lock.lock();
        loop {
            if self.halted() {
                return false;
            }
            if self.wake_cv.wait_until(&mut g, deadline).timed_out() {
                return !self.halted();
            }
        }
    }

    fn stop_with(&self, msg: Message, error: HandlerError) {
        tracing::error!(
            topic = %msg.topic, partition = msg.partition, offset = msg.offset, %error,
            "message failed after all retries; stopping the worker pool"
        );
        {
            let mut f = self.failure.lock();
            if f.is_none() {
                *f = Some(FailedMessage {
                    message: msg,
                    error,
                });
            }
        }
        self.failed.store(true, AO::SeqCst);
        self.wake_everyone();
    }

    /// Runs one message to its end (success, policy, or halt). Pushes its
    /// completion to `batch` if it is finished.
    fn run_job(&self, counters: &LaneCounters, job: Job, batch: &mut Vec<Completion>) {
        let mut attempt = 0u32;
        let error = loop {
            let outcome = catch_unwind(AssertUnwindSafe(|| self.handler.handle(&job.msg)));
            let error = match outcome {
                Ok(Ok(())) => {
                    bump(&counters.finished);
                    batch.push(job.done);
                    return;
                }
                Ok(Err(e)) => e,
                Err(payload) => HandlerError::from_panic(payload),
            };
            if attempt >= self.retries {
                break error;
            }
            attempt += 1;
            bump(&counters.retried);
            tracing::debug!(
                topic = %job.msg.topic, partition = job.msg.partition, offset = job.msg.offset,
                attempt, %error, "handler failed; retrying"
            );
            if !self.backoff(attempt) {
                // Aborted or stopped while waiting: leave it unfinished.
                bump(&counters.abandoned);
                return;
            }
            if job.done.is_revoked() {
                // Its partition moved to another member while we waited: no
                // more attempts here (nor a failure policy: it is not ours).
                return;
            }
        };
        bump(&counters.failed);
        match &self.policy {
            FailurePolicy::Stop => self.stop_with(job.msg, error),
            FailurePolicy::Skip => {
                tracing::warn!(
                    topic = %job.msg.topic, partition = job.msg.partition, offset = job.msg.offset,
                    %error, "message failed after all retries; skipping it"
                );
                bump(&counters.skipped);
                bump(&counters.finished);
                batch.push(job.done);
            }
            FailurePolicy::DeadLetter(dead_letter) => {
                match catch_unwind(AssertUnwindSafe(|| dead_letter(&job.msg, &error))) {
                    Ok(Ok(())) => {
                        bump(&counters.dead_lettered);
                        bump(&counters.finished);
                        batch.push(job.done);
                    }
                    Ok(Err(why)) => self.stop_with(
                        job.msg,
                        HandlerError::new(format!("dead-letter failed: {why} (handler: {error})")),
                    ),
                    Err(payload) => {
                        let why = HandlerError::from_panic(payload);
                        self.stop_with(
                            job.msg,
                            HandlerError::new(format!(
                                "dead-letter failed: {why} (handler: {error})"
                            )),
                        );
                    }
                }
            }
        }
    }

    fn flush(&self, batch: &mut Vec<Completion>, taken: &mut usize) {
        finish_batch(batch);
        self.capacity.release(std::mem::take(taken));
    }

    /// Runs one job taken off the queue (or drops it if the pool halted),
    /// and publishes completions when due.
    #[inline]
    fn lane_job(
        &self,
        counters: &LaneCounters,
        job: Job,
        batch: &mut Vec<Completion>,
        taken: &mut usize,
    ) -> Next {
        bump(&counters.processed);
        *taken += 1;
        if job.done.is_revoked() {
            // Its partition belongs to another member now: drop it unhandled.
            drop(job);
            return Next::Continue;
        }
        if self.halted() {
            // Dropping the job without finishing keeps its offset
            // uncommitted: it will be redelivered.
            bump(&counters.abandoned);
            drop(job);
            return if self.aborting() {
                Next::Exit
            } else {
                Next::Continue
            };
        }
        self.run_job(counters, job, batch);
        if batch.len() >= COMPLETION_BATCH
            || self.phase.load(AO::Relaxed) != RUNNING
            || self.capacity.has_waiters()
            || self.tracker.has_waiters()
        {
            self.flush(batch, taken);
        }
        if self.aborting() {
            Next::Exit
        } else {
            Next::Continue
        }
    }

    /// Counts jobs a lane drops unprocessed on its way out (they stay
    /// unfinished in the tracker) and returns their capacity.
    fn abandon_on_exit(&self, counters: &LaneCounters, jobs: usize) {
        for _ in 0..jobs {
            bump(&counters.processed);
            bump(&counters.abandoned);
        }
        self.capacity.release(jobs);
    }

    fn lane_main(&self, lane: usize, rx: Receiver<LaneMsg>) {
        let counters: &LaneCounters = &self.lanes[lane];
        let queued: &AtomicUsize = &self.queued[lane];
        let mut batch: Vec<Completion> = Vec::with_capacity(COMPLETION_BATCH);
        // Jobs taken off the queue whose capacity is not yet returned.
        let mut taken = 0usize;
        'run: loop {
            let item = match rx.try_recv() {
                Ok(item) => item,
                Err(TryRecvError::Empty) => {
                    // About to sleep: publish what is done first, so commits
                    // and waiters never wait on an idle lane.
                    self.flush(&mut batch, &mut taken);
                    match rx.recv() {
                        Ok(item) => item,
                        Err(_) => break,
                    }
                }
                Err(TryRecvError::Disconnected) => break,
            };
            let n = item.jobs();
            if n > 0 {
                // Queue room was freed: wake a submitter waiting for it.
                // Fenced (in `signal`), pairing with the waiter's fence, so
                // the wakeup is never lost; paid once per item, not per
                // message, when items carry batches.
                queued.fetch_sub(n, AO::SeqCst);
                self.capacity.signal();
            }
            match item {
                LaneMsg::Job(job) => {
                    if let Next::Exit = self.lane_job(counters, job, &mut batch, &mut taken) {
                        break;
                    }
                }
                LaneMsg::Jobs(jobs) => {
                    let mut jobs = jobs.into_iter();
                    while let Some(job) = jobs.next() {
                        if let Next::Exit = self.lane_job(counters, job, &mut batch, &mut taken) {
                            self.abandon_on_exit(counters, jobs.len());
                            break 'run;
                        }
                    }
                }
                LaneMsg::Shutdown => break,
            }
        }
        self.flush(&mut batch, &mut taken);
        // Count what is left in the queue so the stats add up; the jobs stay
        // unfinished in the tracker.
        while let Ok(item) = rx.try_recv() {
            let n = item.jobs();
            queued.fetch_sub(n, AO::SeqCst);
            self.abandon_on_exit(counters, n);
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

/// Room for `n` messages reserved in a lane's queue; returned on drop unless
/// the item carrying them was queued ([`keep`](Self::keep)).
struct LaneReservation<'a> {
    queued: &'a AtomicUsize,
    capacity: &'a Capacity,
    n: usize,
}

impl LaneReservation<'_> {
    /// The item was queued: the lane returns the room when it takes it.
    fn keep(self) {
        std::mem::forget(self);
    }
}

impl Drop for LaneReservation<'_> {
    fn drop(&mut self) {
        self.queued.fetch_sub(self.n, AO::SeqCst);
        self.capacity.signal();
    }
}

/// Capacity units a batch step holds and has not yet handed to a lane; they
/// are returned when it is dropped (error, cancellation, short batch).
struct BatchPermit<'a> {
    capacity: &'a Capacity,
    units: usize,
}

impl Drop for BatchPermit<'_> {
    fn drop(&mut self) {
        self.capacity.release(self.units);
    }
}

/// Returns one unit of capacity unless the message reached a lane.
struct CapacityPermit<'a> {
    capacity: &'a Capacity,
    armed: bool,
}

impl Drop for CapacityPermit<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.capacity.release(1);
        }
    }
}

/// The ordered worker pool. Share it as `Arc<Pool>`: every method takes
/// `&self`, so fetch tasks can submit while a signal handler drains.
pub struct Pool {
    shared: Arc<Shared>,
    router: Router,
    senders: Vec<Sender<LaneMsg>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Serialises drain/abort calls.
    shutdown: Mutex<()>,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("lanes", &self.senders.len())
            .field("stats", &self.stats())
            .finish()
    }
}

impl Pool {
    /// Starts the lane threads. Messages submitted later are dispatched in
    /// `tracker` and marked finished there by the lanes.
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
        if config.max_in_flight == 0 {
            return Err(BuildError::InvalidConfig(
                "max_in_flight must be at least 1".into(),
            ));
        }
        let shared = Arc::new(Shared {
            handler: Box::new(handler),
            tracker,
            retries: config.retries,
            backoff_initial: config.backoff_initial,
            backoff_max: config.backoff_max.max(config.backoff_initial),
            policy: config.failure_policy.clone(),
            phase: AtomicU8::new(RUNNING),
            failed: AtomicBool::new(false),
            failure: Mutex::new(None),
            capacity: Capacity::new(config.max_in_flight),
            queued: (0..config.lanes).map(|_| Padded::default()).collect(),
            lane_capacity: config.lane_capacity,
            active_submits: Padded(AtomicUsize::new(0)),
            submitted: Padded(AtomicU64::new(0)),
            submit_abandoned: AtomicU64::new(0),
            revoked: AtomicU64::new(0),
            lanes: (0..config.lanes).map(|_| Padded::default()).collect(),
            wake_lock: Mutex::new(()),
            wake_cv: Condvar::new(),
        });
        let mut senders = Vec::with_capacity(config.lanes);
        let mut threads = Vec::with_capacity(config.lanes);
        for lane in 0..config.lanes {
            let (tx, rx) = crossbeam_channel::bounded(config.lane_capacity);
            let sh = Arc::clone(&shared);
            let spawned = std::thread::Builder::new()
                .name(format!("mykafkams-lane-{lane}"))
                .spawn(move || sh.lane_main(lane, rx));
            match spawned {
                Ok(handle) => threads.push(handle),
                Err(e) => {
                    shared.phase.store(ABORTING, AO::SeqCst);
                    drop(senders); // disconnects started lanes
                    return Err(BuildError::Spawn(e));
                }
            }
            senders.push(tx);
        }
        Ok(Self {
            shared,
            router: Router::new(config.ordering, config.lanes),
            senders,
            threads: Mutex::new(threads),
            shutdown: Mutex::new(()),
        })
    }

    fn enter(&self) -> Result<ActiveSubmit<'_>, SubmitError> {
        self.shared.active_submits.fetch_add(1, AO::SeqCst);
        let guard = ActiveSubmit(&self.shared.active_submits);
        match self.shared.refusal() {
            Some(e) => Err(e),
            None => Ok(guard),
        }
    }

    fn try_capacity(&self) -> Option<Result<(), SubmitError>> {
        if let Some(e) = self.shared.refusal() {
            return Some(Err(e));
        }
        self.shared.capacity.try_acquire().then_some(Ok(()))
    }

    /// Routes and dispatches in the tracker.
    #[inline]
    fn prepare(&self, msg: Message) -> Result<(usize, Job), SubmitError> {
        let lane = self.router.lane(&msg);
        let done = self
            .shared
            .tracker
            .dispatch(&msg.topic, msg.partition, msg.offset)
            .map_err(SubmitError::Offset)?;
        Ok((lane, Job { msg, done }))
    }

    /// Reserves room for `n` messages in a lane's queue (all or nothing).
    #[inline]
    fn try_reserve(&self, lane: usize, n: usize) -> bool {
        let queued = &self.shared.queued[lane];
        let max = self.shared.lane_capacity;
        let mut cur = queued.load(AO::SeqCst);
        loop {
            if cur + n > max {
                return false;
            }
            match queued.compare_exchange_weak(cur, cur + n, AO::SeqCst, AO::Relaxed) {
                Ok(_) => return true,
                Err(actual) => cur = actual,
            }
        }
    }

    /// One attempt to reserve lane room; `None` = full, try again later.
    /// While draining, lanes keep consuming: keep waiting. Only a halted
    /// pool (stopped or aborting) will never make room.
    fn lane_room(&self, lane: usize, n: usize) -> Option<Result<LaneReservation<'_>, SubmitError>> {
        if self.try_reserve(lane, n) {
            return Some(Ok(self.reservation(lane, n)));
        }
        if let Some(e) = self.shared.refusal()
            && self.shared.halted()
        {
            return Some(Err(e));
        }
        None
    }

    fn reservation(&self, lane: usize, n: usize) -> LaneReservation<'_> {
        LaneReservation {
            queued: &self.shared.queued[lane],
            capacity: &self.shared.capacity,
            n,
        }
    }

    /// Counts messages that were dispatched but will never reach a lane: they
    /// stay unfinished in the tracker (redelivered after a restart).
    fn abandon(&self, n: usize) {
        self.shared
            .submit_abandoned
            .fetch_add(n as u64, AO::Relaxed);
    }

    /// One non-blocking send attempt of an item whose lane room is reserved;
    /// `None` = channel full (only possible behind shutdown markers), try
    /// again later.
    #[inline]
    fn try_send(
        &self,
        lane: usize,
        pending: &mut Option<LaneMsg>,
    ) -> Option<Result<(), SubmitError>> {
        let item = pending.take().expect("item present until sent");
        match self.senders[lane].try_send(item) {
            Ok(()) => Some(Ok(())),
            Err(TrySendError::Full(item)) => {
                if let Some(e) = self.shared.refusal()
                    && self.shared.halted()
                {
                    // Not queued: it stays unfinished in the tracker.
                    self.abandon(item.jobs());
                    return Some(Err(e));
                }
                *pending = Some(item);
                None
            }
            Err(TrySendError::Disconnected(item)) => {
                self.abandon(item.jobs());
                Some(Err(SubmitError::ShuttingDown))
            }
        }
    }

    /// Submits a message, blocking the calling thread while the pool is full.
    ///
    /// Messages of one partition must be submitted in increasing offset
    /// order by one caller at a time (the partition's fetcher). On `Ok` the
    /// message is queued on its lane and dispatched in the tracker. On error
    /// it was either never dispatched (`Offset`, or refused up front) or left
    /// unfinished in the tracker, which is safe: it will be redelivered.
    /// Do not call from a tokio worker thread; use [`submit_async`](Self::submit_async).
    /// For many messages at once prefer [`submit_batch`](Self::submit_batch).
    pub fn submit(&self, msg: Message) -> Result<(), SubmitError> {
        let _active = self.enter()?;
        let cap = &self.shared.capacity;
        if !cap.try_acquire() {
            cap.wait_blocking(|| self.try_capacity())?;
        }
        let mut permit = CapacityPermit {
            capacity: cap,
            armed: true,
        };
        let (lane, job) = self.prepare(msg)?;
        self.shared.submitted.fetch_add(1, AO::Relaxed);
        self.send_blocking(lane, LaneMsg::Job(job))?;
        permit.armed = false;
        Ok(())
    }

    /// Blocking send of an item to a lane: reserves room for its messages
    /// (waiting while the lane holds `lane_capacity` messages), then queues
    /// it. Gives up only if the pool halts (stopped or aborting), in which
    /// case the item is dropped and its messages stay unfinished.
    fn send_blocking(&self, lane: usize, item: LaneMsg) -> Result<(), SubmitError> {
        let n = item.jobs();
        let reserved = if self.try_reserve(lane, n) {
            self.reservation(lane, n)
        } else {
            match self
                .shared
                .capacity
                .wait_blocking(|| self.lane_room(lane, n))
            {
                Ok(r) => r,
                Err(e) => {
                    self.abandon(n);
                    return Err(e);
                }
            }
        };
        // Fast path without reading the clock (send_timeout computes a deadline).
        let mut item = match self.senders[lane].try_send(item) {
            Ok(()) => {
                reserved.keep();
                return Ok(());
            }
            Err(TrySendError::Full(back)) => back,
            Err(TrySendError::Disconnected(_)) => {
                self.abandon(n);
                return Err(SubmitError::ShuttingDown);
            }
        };
        // The room is reserved, so the channel is only full behind shutdown
        // markers; wait, waking up periodically to notice an abort or stop.
        loop {
            match self.senders[lane].send_timeout(item, RECHECK) {
                Ok(()) => {
                    reserved.keep();
                    return Ok(());
                }
                Err(SendTimeoutError::Timeout(back)) => {
                    if let Some(e) = self.shared.refusal()
                        && self.shared.halted()
                    {
                        self.abandon(n);
                        return Err(e);
                    }
                    item = back;
                }
                Err(SendTimeoutError::Disconnected(_)) => {
                    self.abandon(n);
                    return Err(SubmitError::ShuttingDown);
                }
            }
        }
    }

    /// Async counterpart of [`send_blocking`](Self::send_blocking): never
    /// blocks the executor thread. If the future is dropped, the item is
    /// dropped (its messages stay unfinished) and the lane room returned.
    async fn send_async(&self, lane: usize, item: LaneMsg) -> Result<(), SubmitError> {
        let n = item.jobs();
        let cap = &self.shared.capacity;
        let reserved = if self.try_reserve(lane, n) {
            self.reservation(lane, n)
        } else {
            match cap.wait_async(|| self.lane_room(lane, n)).await {
                Ok(r) => r,
                Err(e) => {
                    self.abandon(n);
                    return Err(e);
                }
            }
        };
        let mut pending = Some(item);
        match self.try_send(lane, &mut pending) {
            Some(r) => r?,
            None => cap.wait_async(|| self.try_send(lane, &mut pending)).await?,
        }
        reserved.keep();
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
        if !cap.try_acquire() {
            cap.wait_async(|| self.try_capacity()).await?;
        }
        let mut permit = CapacityPermit {
            capacity: cap,
            armed: true,
        };
        let (lane, job) = self.prepare(msg)?;
        self.shared.submitted.fetch_add(1, AO::Relaxed);
        self.send_async(lane, LaneMsg::Job(job)).await?;
        permit.armed = false;
        Ok(())
    }

    /// Submits a batch of messages (typically one fetch response), blocking
    /// the calling thread while the pool is full.
    ///
    /// Equivalent to calling [`submit`](Self::submit) for each message in
    /// order, with the same guarantees (per-key order, `max_in_flight` and
    /// `lane_capacity` respected, each message dispatched in the tracker
    /// before a lane can see it), but much cheaper per message: the batch is
    /// handled in steps of up to 256 messages, and each step reserves its
    /// in-flight budget with one atomic operation, dispatches its offsets
    /// under one tracker lock per partition, and hands each lane its share
    /// as one queue item (one channel operation and at most one wakeup per
    /// lane per step).
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
        let mut per_lane: Vec<Vec<Job>> = (0..self.lanes()).map(|_| Vec::new()).collect();
        while msgs.len() > 0 {
            let want = msgs.len().min(SUBMIT_CHUNK);
            let got = match self.try_capacity_up_to(want) {
                Some(r) => r?,
                None => cap.wait_blocking(|| self.try_capacity_up_to(want))?,
            };
            let mut permit = BatchPermit {
                capacity: cap,
                units: got,
            };
            let staging = self.stage(&mut msgs, got, &mut per_lane);
            for lane in 0..per_lane.len() {
                let mut jobs = std::mem::take(&mut per_lane[lane]);
                while !jobs.is_empty() {
                    let rest = self.split_for_lane(&mut jobs);
                    let n = jobs.len();
                    if let Err(e) = self.send_blocking(lane, LaneMsg::Jobs(jobs)) {
                        self.abandon(rest.len());
                        self.abandon_staged(&mut per_lane);
                        return Err(e);
                    }
                    permit.units -= n;
                    jobs = rest;
                }
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
        let mut per_lane: Vec<Vec<Job>> = (0..self.lanes()).map(|_| Vec::new()).collect();
        while msgs.peek().is_some() {
            let want = msgs.size_hint().0.clamp(1, SUBMIT_CHUNK);
            let got = match self.try_capacity_up_to(want) {
                Some(r) => r?,
                None => cap.wait_async(|| self.try_capacity_up_to(want)).await?,
            };
            let mut permit = BatchPermit {
                capacity: cap,
                units: got,
            };
            let staging = self.stage(&mut msgs, got, &mut per_lane);
            for lane in 0..per_lane.len() {
                let mut jobs = std::mem::take(&mut per_lane[lane]);
                while !jobs.is_empty() {
                    let rest = self.split_for_lane(&mut jobs);
                    let n = jobs.len();
                    if let Err(e) = self.send_async(lane, LaneMsg::Jobs(jobs)).await {
                        self.abandon(rest.len());
                        self.abandon_staged(&mut per_lane);
                        return Err(e);
                    }
                    permit.units -= n;
                    jobs = rest;
                }
            }
            staging?;
        }
        Ok(())
    }

    /// Keeps at most `lane_capacity` jobs in `jobs` (what one queue item may
    /// carry) and returns the rest.
    #[inline]
    fn split_for_lane(&self, jobs: &mut Vec<Job>) -> Vec<Job> {
        if jobs.len() > self.shared.lane_capacity {
            jobs.split_off(self.shared.lane_capacity)
        } else {
            Vec::new()
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

    /// Takes up to `n` messages from `msgs`, routes them and dispatches them
    /// in the tracker, holding each partition's lock once per run of
    /// messages of that partition, and appends each to its lane's list in
    /// order. Stops at the first message the tracker refuses: it and the
    /// messages after it are not dispatched; those staged before it are
    /// valid. Counts what it staged as submitted.
    fn stage(
        &self,
        msgs: &mut impl Iterator<Item = Message>,
        n: usize,
        per_lane: &mut [Vec<Job>],
    ) -> Result<(), SubmitError> {
        let tracker = &self.shared.tracker;
        let hint = n / per_lane.len() + n / (2 * per_lane.len()) + 4;
        for jobs in per_lane.iter_mut() {
            jobs.reserve(hint);
        }
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
                    let lane = self.router.lane(&msg);
                    let done = match dispatcher.dispatch(msg.offset) {
                        Ok(d) => d,
                        Err(e) => break 'outer Err(SubmitError::Offset(e)),
                    };
                    per_lane[lane].push(Job { msg, done });
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

    /// Drops staged jobs that will never be sent (the pool halted): they stay
    /// unfinished in the tracker and count as abandoned.
    fn abandon_staged(&self, per_lane: &mut [Vec<Job>]) {
        for jobs in per_lane {
            self.abandon(jobs.len());
            jobs.clear();
        }
    }

    /// The offset tracker this pool dispatches into.
    pub fn tracker(&self) -> &Arc<OffsetTracker> {
        &self.shared.tracker
    }

    /// Number of lanes.
    pub fn lanes(&self) -> usize {
        self.senders.len()
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
        for (lane, c) in sh.lanes.iter().enumerate() {
            s.finished += c.finished.load(AO::Relaxed);
            s.failed += c.failed.load(AO::Relaxed);
            s.retried += c.retried.load(AO::Relaxed);
            s.skipped += c.skipped.load(AO::Relaxed);
            s.dead_lettered += c.dead_lettered.load(AO::Relaxed);
            s.abandoned += c.abandoned.load(AO::Relaxed);
            s.lane_processed.push(c.processed.load(AO::Relaxed));
            s.lane_depth.push(sh.queued[lane].load(AO::Relaxed));
        }
        s.revoked = sh.revoked.load(AO::Relaxed);
        s.in_flight = s.submitted.saturating_sub(s.finished + s.revoked);
        s
    }

    /// Counts `n` messages of a revoked partition as never finishing here
    /// (they leave `in_flight`; the new owner processes them).
    pub fn note_revoked(&self, n: u64) {
        self.shared.revoked.fetch_add(n, AO::Relaxed);
    }

    /// Messages currently holding a unit of the `max_in_flight` budget.
    pub fn capacity_used(&self) -> usize {
        self.shared.capacity.used()
    }

    /// Stops accepting messages, lets the lanes finish everything queued,
    /// joins them and reports what is left. Bounded by `timeout`: when it
    /// expires the pool switches to [`abort`](Self::abort) behaviour (lanes
    /// finish only the message they are running) and returns; lanes still
    /// inside a handler are detached and counted in the report.
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
        // After this no new message can reach a lane, so a Shutdown marker
        // queued behind the last message really is last.
        let mut timed_out = !wait_until(deadline, || sh.active_submits.load(AO::SeqCst) == 0);
        if !timed_out {
            for tx in &self.senders {
                if tx
                    .send_deadline(LaneMsg::Shutdown, deadline)
                    .is_err_and(|e| matches!(e, crossbeam_channel::SendTimeoutError::Timeout(_)))
                {
                    timed_out = true;
                    break;
                }
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

    /// Stops accepting messages, lets each lane finish only the message it
    /// is running (queued ones are dropped, unfinished), joins the lanes and
    /// reports what is left. Bounded by `timeout` like [`drain`](Self::drain).
    pub fn abort(&self, timeout: Duration) -> ShutdownReport {
        let deadline = Instant::now() + timeout;
        let _one_at_a_time = self.shutdown.lock();
        self.begin_abort();
        let timed_out = !self.join_until(deadline);
        self.report(timed_out)
    }

    /// Escalates a running [`drain`](Self::drain) (on another thread) to
    /// abort behaviour without waiting for it: lanes finish only the message
    /// they are running and drop the rest, unfinished. Used when a second stop
    /// signal arrives during a graceful stop.
    pub fn interrupt(&self) {
        self.begin_abort();
    }

    fn begin_abort(&self) {
        self.shared.phase.store(ABORTING, AO::SeqCst);
        self.shared.wake_everyone();
        // Wake lanes sleeping on an empty queue; a full queue means its lane
        // is busy and will see the phase after its current message.
        for tx in &self.senders {
            let _ = tx.try_send(LaneMsg::Shutdown);
        }
    }

    /// Joins lane threads that finish by `deadline`; true if all did.
    fn join_until(&self, deadline: Instant) -> bool {
        let mut threads = self.threads.lock();
        let all = wait_until(deadline, || threads.iter().all(JoinHandle::is_finished));
        let mut still = Vec::new();
        for h in threads.drain(..) {
            if h.is_finished() {
                if h.join().is_err() {
                    tracing::error!("a pool lane thread panicked outside a handler");
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
            lanes_still_running: self.threads.lock().len(),
            stats,
        }
    }
}

impl Drop for Pool {
    /// Dropping a pool that was not drained aborts it without waiting: lanes
    /// finish their current message and exit on their own.
    fn drop(&mut self) {
        if !self.threads.get_mut().is_empty() {
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
