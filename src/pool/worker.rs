//! Running a message to its end on a worker thread, whatever the scheduler.
//!
//! Both schedulers ([`lanes`](super::lanes) and [`keys`](super::keys)) hand
//! their worker threads [`Job`]s; a [`Worker`] runs each one through the
//! handler with retries and backoff, then the failure policy (DESIGN rule 5),
//! and *publishes* what is done in blocks (rule 10): the handler's
//! [`flush`](super::Handler::flush) first (a buffering handler writes its
//! output), then one [`finish_batch`] for the tracker and one release of the
//! in-flight budget. A message therefore counts as finished only once its
//! output is written, and publishing costs one lock per partition and one
//! wake-up per block, not per message.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering as AO};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::capacity::{Capacity, Padded};
use super::{FailedMessage, FailurePolicy, Handler, HandlerError, SubmitError};
use crate::Message;
use crate::offsets::{Completion, OffsetTracker, finish_batch};

pub(crate) const RUNNING: u8 = 0;
pub(crate) const DRAINING: u8 = 1;
pub(crate) const ABORTING: u8 = 2;

/// A worker publishes at the latest when this many messages are done and
/// unpublished: with 100-byte lines, a print block of ~100 KiB.
const PUBLISH_BATCH: usize = 1024;

/// ... or when the oldest unpublished message finished this long ago, so
/// commits and waiters never lag a busy worker by more than this.
const PUBLISH_AGE: Duration = Duration::from_millis(1);

/// One message on its way through a worker, with its tracker token.
pub(crate) struct Job {
    pub(crate) msg: Message,
    pub(crate) done: Completion,
}

/// What a worker does after taking a job.
pub(crate) enum Next {
    Continue,
    Exit,
}

/// Per-worker counters, written only by their worker thread.
#[derive(Default)]
pub(crate) struct WorkerCounters {
    pub(crate) processed: AtomicU64,
    pub(crate) finished: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) skipped: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
    pub(crate) abandoned: AtomicU64,
}

/// Adds `n` to a counter that only one thread writes.
#[inline]
pub(crate) fn bump(c: &AtomicU64, n: u64) {
    // Single writer per counter: a plain load+store avoids a locked RMW.
    c.store(c.load(AO::Relaxed) + n, AO::Relaxed);
}

/// State shared by the pool handle, its scheduler and its worker threads.
pub(crate) struct Shared {
    pub(crate) tracker: Arc<OffsetTracker>,
    pub(crate) retries: u32,
    pub(crate) backoff_initial: Duration,
    pub(crate) backoff_max: Duration,
    pub(crate) policy: FailurePolicy,
    pub(crate) phase: AtomicU8,
    pub(crate) failed: AtomicBool,
    pub(crate) failure: Mutex<Option<FailedMessage>>,
    /// The `max_in_flight` budget: taken by submitters, returned on publish.
    pub(crate) capacity: Capacity,
    /// Submit calls currently between their state check and their hand-off.
    pub(crate) active_submits: Padded<AtomicUsize>,
    /// Submitter-side counters (accepted / abandoned before reaching a worker).
    pub(crate) submitted: Padded<AtomicU64>,
    pub(crate) submit_abandoned: AtomicU64,
    /// Messages of revoked partitions that will never finish here.
    pub(crate) revoked: AtomicU64,
    /// Messages an offset map marked done: skipped before the pool.
    pub(crate) already_done: AtomicU64,
    pub(crate) workers: Vec<Padded<WorkerCounters>>,
    /// Interrupts backoff sleeps on abort/stop.
    pub(crate) wake_lock: Mutex<()>,
    pub(crate) wake_cv: Condvar,
    /// The same for the async engine's backoff sleeps.
    pub(crate) halt: tokio::sync::Notify,
}

/// What the failure policy made of a message whose last attempt failed.
pub(crate) enum Resolution {
    /// [`FailurePolicy::Skip`]: finished, counted as skipped.
    Skipped(Completion),
    /// [`FailurePolicy::DeadLetter`] succeeded: finished, parked elsewhere.
    DeadLettered(Completion),
    /// The pool stopped on it (Stop, or a failed dead-letter callback): it
    /// stays unfinished.
    Stopped,
}

impl Resolution {
    /// Counts the outcome in `c` with `add` (a worker thread's
    /// single-writer [`bump`], or an atomic add where tasks share the
    /// counters); the completion if the message now counts as finished.
    pub(crate) fn counted(
        self,
        c: &WorkerCounters,
        add: fn(&AtomicU64, u64),
    ) -> Option<Completion> {
        match self {
            Resolution::Skipped(done) => {
                add(&c.skipped, 1);
                add(&c.finished, 1);
                Some(done)
            }
            Resolution::DeadLettered(done) => {
                add(&c.dead_lettered, 1);
                add(&c.finished, 1);
                Some(done)
            }
            Resolution::Stopped => None,
        }
    }
}

impl Shared {
    #[inline]
    pub(crate) fn refusal(&self) -> Option<SubmitError> {
        if self.failed.load(AO::SeqCst) {
            Some(SubmitError::Stopped)
        } else if self.phase.load(AO::SeqCst) != RUNNING {
            Some(SubmitError::ShuttingDown)
        } else {
            None
        }
    }

    #[inline]
    pub(crate) fn aborting(&self) -> bool {
        self.phase.load(AO::Relaxed) == ABORTING
    }

    #[inline]
    pub(crate) fn halted(&self) -> bool {
        self.aborting() || self.failed.load(AO::Relaxed)
    }

    /// Whether a claim on the commit window should stop waiting for room:
    /// nobody commits by count while the pool drains or halts, or while a
    /// revocation waits for work, so waiting would only stall them.
    pub(crate) fn claim_wait_pointless(&self) -> bool {
        self.phase.load(AO::Relaxed) != RUNNING || self.halted() || self.tracker.has_waiters()
    }

    pub(crate) fn wake_everyone(&self) {
        self.capacity.signal_all();
        self.halt.notify_waiters();
        let _g = self.wake_lock.lock();
        self.wake_cv.notify_all();
    }

    /// Whether a message that failed after `retries_done` retries gets
    /// another attempt (the same rule for every engine).
    #[inline]
    pub(crate) fn retries_left(&self, retries_done: u32, error: &HandlerError) -> bool {
        retries_done < self.retries && !error.is_permanent()
    }

    /// The wait before retry number `retry` (1 for the first): the initial
    /// backoff doubled per retry, capped at the maximum.
    pub(crate) fn backoff_delay(&self, retry: u32) -> Duration {
        let factor = 1u32
            .checked_shl(retry.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.backoff_initial
            .saturating_mul(factor)
            .min(self.backoff_max)
    }

    /// Counts messages that were dispatched but will never reach a worker:
    /// they stay unfinished in the tracker (redelivered after a restart).
    pub(crate) fn abandon(&self, n: usize) {
        self.submit_abandoned.fetch_add(n as u64, AO::Relaxed);
    }

    /// Sleeps for a retry backoff; false if the pool halted meanwhile.
    fn backoff(&self, attempt: u32) -> bool {
        let deadline = Instant::now() + self.backoff_delay(attempt);
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

    /// Applies the failure policy to a message whose last attempt failed
    /// (the same for every engine; the caller counts the outcome).
    pub(crate) fn resolve_failure(&self, job: Job, error: HandlerError) -> Resolution {
        match &self.policy {
            FailurePolicy::Stop => {
                self.stop_with(job.msg, error);
                Resolution::Stopped
            }
            FailurePolicy::Skip => {
                tracing::warn!(
                    topic = %job.msg.topic, partition = job.msg.partition, offset = job.msg.offset,
                    %error, "message failed after all retries; skipping it"
                );
                Resolution::Skipped(job.done)
            }
            FailurePolicy::DeadLetter(dead_letter) => {
                let why = match catch_unwind(AssertUnwindSafe(|| dead_letter(&job.msg, &error))) {
                    Ok(Ok(())) => return Resolution::DeadLettered(job.done),
                    Ok(Err(why)) => HandlerError::new(why),
                    Err(payload) => HandlerError::from_panic(payload),
                };
                self.stop_with(
                    job.msg,
                    HandlerError::new(format!("dead-letter failed: {why} (handler: {error})")),
                );
                Resolution::Stopped
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
}

/// One worker thread's state between publishing points.
pub(crate) struct Worker<'a> {
    shared: &'a Shared,
    handler: &'a dyn Handler,
    counters: &'a WorkerCounters,
    /// The handler returned `Ok`; finished once a flush succeeds.
    handled: Vec<Job>,
    /// Finished by the failure policy (skipped or dead-lettered): no output
    /// of theirs is buffered, so they do not wait for a flush.
    resolved: Vec<Completion>,
    /// Reused buffer of the completions of one publish.
    completions: Vec<Completion>,
    /// Jobs taken whose in-flight budget is not yet returned.
    taken: usize,
    /// When the oldest unpublished job was taken.
    oldest: Option<Instant>,
    /// The most jobs the current block may hold (see
    /// [`OffsetTracker::claim_block`](crate::offsets::OffsetTracker::claim_block)),
    /// read once when the block starts rather than once per job.
    cap: usize,
    /// The current block's claim on the commit window (`--commit-every`),
    /// handed back when it is published.
    claim: u64,
}

impl<'a> Worker<'a> {
    pub(crate) fn new(shared: &'a Shared, handler: &'a dyn Handler, index: usize) -> Self {
        Self {
            shared,
            handler,
            counters: &shared.workers[index],
            handled: Vec::with_capacity(PUBLISH_BATCH),
            resolved: Vec::new(),
            completions: Vec::with_capacity(PUBLISH_BATCH),
            taken: 0,
            oldest: None,
            cap: PUBLISH_BATCH,
            claim: 0,
        }
    }

    /// True if something taken is not yet published.
    #[inline]
    pub(crate) fn has_unpublished(&self) -> bool {
        self.taken > 0
    }

    /// Runs one job taken off a queue, or drops it (its partition was
    /// revoked, or the pool halted: it stays unfinished and is redelivered).
    #[inline]
    pub(crate) fn take(&mut self, job: Job) -> Next {
        bump(&self.counters.processed, 1);
        if self.taken == 0 {
            self.start_block();
        }
        self.taken += 1;
        if job.done.is_revoked() {
            // Its partition belongs to another member now: drop it unhandled.
            return Next::Continue;
        }
        if self.shared.halted() {
            bump(&self.counters.abandoned, 1);
            return if self.shared.aborting() {
                Next::Exit
            } else {
                Next::Continue
            };
        }
        self.run(job);
        if self.shared.aborting() {
            Next::Exit
        } else {
            Next::Continue
        }
    }

    /// Starts a block: claims room for it in the commit window, waiting
    /// (with nothing unpublished) while the window is full, so that a crash
    /// repeats at most about `--commit-every` messages. Nobody commits by
    /// count while the pool drains or a revocation waits for work: then it
    /// does not wait.
    fn start_block(&mut self) {
        let sh = self.shared;
        self.cap = sh.tracker.claim_block(PUBLISH_BATCH, sh.workers.len());
        self.claim = sh
            .tracker
            .claim_blocking(self.cap, &|| sh.claim_wait_pointless());
        self.oldest = Some(Instant::now());
    }

    /// Whether to publish now rather than take more work first: a full
    /// block, an old one, or somebody waiting (a submitter for budget, a
    /// commit or revocation for the tracker, a draining pool).
    #[inline]
    pub(crate) fn due(&self) -> bool {
        let sh = self.shared;
        // A block never outgrows the commit window (`--commit-every`): a
        // crash while its output is half written repeats at most that much.
        self.taken >= self.cap
            || sh.phase.load(AO::Relaxed) != RUNNING
            || sh.tracker.has_waiters()
            || self.oldest.is_some_and(|t| t.elapsed() >= PUBLISH_AGE)
    }

    /// Flushes the handler, marks everything done finished in the tracker
    /// and returns the in-flight budget of everything taken.
    pub(crate) fn publish(&mut self) {
        if !self.handled.is_empty() {
            self.flush_handled();
        }
        self.completions.append(&mut self.resolved);
        finish_batch(&mut self.completions);
        self.shared
            .capacity
            .release(std::mem::take(&mut self.taken));
        self.shared
            .tracker
            .release_claim(std::mem::take(&mut self.claim));
        self.oldest = None;
    }

    /// Counts jobs a worker drops unprocessed on its way out (they stay
    /// unfinished in the tracker) and returns their budget.
    pub(crate) fn abandon_on_exit(&mut self, jobs: usize) {
        bump(&self.counters.processed, jobs as u64);
        bump(&self.counters.abandoned, jobs as u64);
        self.shared.capacity.release(jobs);
    }

    /// The handler's flush with retries; then the handled jobs finish, or
    /// the failure policy applies to each of them.
    fn flush_handled(&mut self) {
        let shared = self.shared;
        let mut attempt = 0u32;
        let error = loop {
            let mut error = match catch_unwind(AssertUnwindSafe(|| self.handler.flush())) {
                Ok(Ok(())) => {
                    bump(&self.counters.finished, self.handled.len() as u64);
                    self.completions
                        .extend(self.handled.drain(..).map(|job| job.done));
                    return;
                }
                Ok(Err(e)) => e,
                Err(payload) => HandlerError::from_panic(payload),
            };
            if !shared.retries_left(attempt, &error) {
                error.set_attempts(attempt + 1);
                break error;
            }
            attempt += 1;
            bump(&self.counters.retried, self.handled.len() as u64);
            tracing::debug!(attempt, %error, messages = self.handled.len(), "handler flush failed; retrying");
            if !shared.backoff(attempt) {
                bump(&self.counters.abandoned, self.handled.len() as u64);
                self.handled.clear();
                return;
            }
        };
        let jobs: Vec<Job> = self.handled.drain(..).collect();
        for job in jobs {
            if shared.halted() {
                bump(&self.counters.abandoned, 1);
                continue;
            }
            if let Some(done) = self.apply_policy(job, error.clone()) {
                self.completions.push(done);
            }
        }
    }

    /// Runs one message through the handler until it succeeds or the
    /// failure policy dealt with it (or the pool halted while backing off).
    fn run(&mut self, job: Job) {
        let shared = self.shared;
        let handler = self.handler;
        let mut attempt = 0u32;
        let error = loop {
            let outcome = catch_unwind(AssertUnwindSafe(|| {
                handler.handle_attempt(&job.msg, attempt + 1)
            }));
            let mut error = match outcome {
                Ok(Ok(())) => {
                    self.handled.push(job);
                    return;
                }
                Ok(Err(e)) => e,
                Err(payload) => HandlerError::from_panic(payload),
            };
            if !shared.retries_left(attempt, &error) {
                error.set_attempts(attempt + 1);
                break error;
            }
            attempt += 1;
            bump(&self.counters.retried, 1);
            tracing::debug!(
                topic = %job.msg.topic, partition = job.msg.partition, offset = job.msg.offset,
                attempt, %error, "handler failed; retrying"
            );
            if !shared.backoff(attempt) {
                // Aborted or stopped while waiting: leave it unfinished.
                bump(&self.counters.abandoned, 1);
                return;
            }
            if job.done.is_revoked() {
                // Its partition moved to another member while we waited: no
                // more attempts here (nor a failure policy: it is not ours).
                return;
            }
        };
        if let Some(done) = self.apply_policy(job, error) {
            self.resolved.push(done);
        }
    }

    /// The failure policy for a message whose last attempt failed; returns
    /// its completion if it now counts as finished.
    fn apply_policy(&mut self, job: Job, error: HandlerError) -> Option<Completion> {
        bump(&self.counters.failed, 1);
        self.shared
            .resolve_failure(job, error)
            .counted(self.counters, bump)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn a_job_moves_inline() {
        // A job moves about ten times between the fetcher and a handler.
        // LLVM inlines a move of at most 128 bytes on x86-64 (8 stores of
        // 16); a larger one calls `memcpy`, which on musl was a third of the
        // consumer's CPU time (issue 11).
        assert!(
            std::mem::size_of::<Job>() <= 128,
            "{}",
            std::mem::size_of::<Job>()
        );
    }
}
