//! The async engine: the `keys` scheduler's per-key queues, run by tokio
//! tasks instead of threads, for [`AsyncHandler`]s.
//!
//! A task *claims* one ready key (all of its queued messages, as a thread
//! does in [`keys`](super::keys)), awaits the handler for each message in
//! order, publishes the completions and gives the key back; then it claims
//! the next ready key, or ends when there is none. So a key is never in two
//! tasks at once (DESIGN rule 1), and the number of messages in flight is
//! the number of tasks, which [`PoolConfig::max_concurrency`] bounds: a
//! submission spawns a task per newly ready key while below the bound, and
//! a running task picks up what is left. Nothing waits idle: with no work
//! there are no tasks.
//!
//! Retries sleep on the tokio timer and wake early on abort or stop; a
//! panic while polling the handler's future is caught and counts as a
//! failed attempt, and so does running past
//! [`PoolConfig::handler_timeout`] (the future is dropped). The failure
//! policy is the thread engine's ([`Shared::resolve_failure`]); a
//! dead-letter callback, which may block, runs on tokio's blocking pool.
//!
//! [`PoolConfig::max_concurrency`]: super::PoolConfig::max_concurrency
//! [`PoolConfig::handler_timeout`]: super::PoolConfig::handler_timeout

use std::any::Any;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering as AO};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::keys::{Claimed, QueueId, Sched, queue_id};
use super::routing::Ordering;
use super::worker::{Job, RUNNING, Resolution, Shared, WorkerCounters};
use super::{AsyncHandler, FailurePolicy, HandlerError};
use crate::Message;
use crate::offsets::{Completion, finish_batch};

/// A task publishes at the latest when this many messages are done...
const PUBLISH_BATCH: usize = 256;

/// ... or when the oldest unpublished one finished this long ago.
const PUBLISH_AGE: Duration = Duration::from_millis(1);

/// Starts one task; made where the handler's type is known.
type Spawn = Box<dyn Fn(Arc<Tasks>) + Send + Sync>;

/// The queues and the task count, under one lock.
#[derive(Default)]
struct State {
    sched: Sched,
    /// Tasks alive (running a key, or spawned and not yet claiming).
    active: usize,
    /// Tasks spawned that have not claimed yet: each will take a ready key.
    pending: usize,
}

/// The async engine of a pool.
pub(crate) struct Tasks {
    state: Mutex<State>,
    ordering: Ordering,
    max_concurrency: usize,
    spawn: Spawn,
}

impl Tasks {
    /// An engine running `handler` on `runtime`, at most `max_concurrency`
    /// messages at once. Tasks start only when messages arrive.
    pub(crate) fn start<H: AsyncHandler>(
        shared: &Arc<Shared>,
        handler: H,
        runtime: tokio::runtime::Handle,
        max_concurrency: usize,
        timeout: Option<Duration>,
        ordering: Ordering,
    ) -> Arc<Self> {
        let handler = Arc::new(handler);
        let shared = Arc::clone(shared);
        let spawn: Spawn = Box::new(move |tasks| {
            let run = task_main(tasks, Arc::clone(&shared), Arc::clone(&handler), timeout);
            drop(runtime.spawn(run));
        });
        Arc::new(Self {
            state: Mutex::new(State::default()),
            ordering,
            max_concurrency,
            spawn,
        })
    }

    /// The queue of a message.
    #[inline]
    pub(crate) fn queue_of(&self, msg: &Message) -> Option<QueueId> {
        queue_id(self.ordering, msg)
    }

    /// Queues one job (a single `submit`).
    pub(crate) fn enqueue_one(self: &Arc<Self>, job: Job) {
        let id = self.queue_of(&job.msg);
        let mut s = self.state.lock();
        s.sched.push(id, job);
        self.spawn_for(s);
    }

    /// Queues `jobs` (in order; `ids[i]` is the queue of `jobs[i]`) under
    /// one lock and empties both vectors (keeping their allocations).
    pub(crate) fn enqueue(self: &Arc<Self>, ids: &mut Vec<Option<QueueId>>, jobs: &mut Vec<Job>) {
        debug_assert_eq!(ids.len(), jobs.len());
        let mut s = self.state.lock();
        for (id, job) in ids.drain(..).zip(jobs.drain(..)) {
            s.sched.push(id, job);
        }
        self.spawn_for(s);
    }

    /// Releases the lock after spawning a task for each ready key no task
    /// is on its way to, within the concurrency bound.
    fn spawn_for(self: &Arc<Self>, mut s: parking_lot::MutexGuard<'_, State>) {
        let units = s.sched.ready.len() + s.sched.free.len();
        let n = units
            .saturating_sub(s.pending)
            .min(self.max_concurrency.saturating_sub(s.active));
        s.active += n;
        s.pending += n;
        drop(s);
        for _ in 0..n {
            (self.spawn)(Arc::clone(self));
        }
    }

    /// Messages queued, and keys ready for a task (for stats).
    pub(crate) fn depth(&self) -> (usize, usize) {
        let s = self.state.lock();
        (s.sched.queued, s.sched.ready.len())
    }

    /// Tasks alive: running a key's messages or about to.
    pub(crate) fn active(&self) -> usize {
        self.state.lock().active
    }

    /// Abort: drops everything queued (unfinished, so redelivered); running
    /// tasks finish the message they are awaiting and end. Returns how many
    /// messages were dropped.
    pub(crate) fn abort(&self) -> usize {
        let mut s = self.state.lock();
        s.sched.aborted = true;
        s.sched.drop_all()
    }

    /// Gives back the key the task held (if any) and claims the next unit
    /// of work; `None` (and the task counted out) when there is none or the
    /// engine aborted. `first` is true on a task's first claim, which ends
    /// its pending state.
    fn claim_or_end(&self, sh: &Shared, held: &mut Vec<QueueId>, first: bool) -> Option<Claimed> {
        let mut s = self.state.lock();
        if s.sched.aborted {
            // The queues were dropped, held keys with them.
            held.clear();
        } else {
            s.sched.release(held);
        }
        if first {
            s.pending -= 1;
        }
        if !s.sched.aborted && !sh.aborting() {
            if let Some(claimed) = s.sched.claim_one() {
                if let Claimed::Key(id) = claimed {
                    held.push(id);
                }
                return Some(claimed);
            }
        }
        s.active -= 1;
        None
    }

    /// The next message of what the task claimed, taken one at a time so
    /// a task holds one message, not a key's whole queue (memory at high
    /// concurrency); `None` when there is no more, or on abort.
    fn next_of(&self, claimed: Claimed) -> Option<Job> {
        let mut s = self.state.lock();
        if s.sched.aborted {
            return None;
        }
        s.sched.pop_claimed(claimed)
    }
}

/// Adds to a counter that several tasks write.
#[inline]
fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, AO::Relaxed);
}

/// One task: claim a key, run its messages in order, publish, repeat.
async fn task_main<H: AsyncHandler>(
    tasks: Arc<Tasks>,
    sh: Arc<Shared>,
    handler: Arc<H>,
    timeout: Option<Duration>,
) {
    let mut held: Vec<QueueId> = Vec::with_capacity(1);
    let mut out = Publisher {
        sh: &sh,
        done: Vec::new(),
        taken: 0,
        oldest: None,
        cap: sh.tracker.claim_block(PUBLISH_BATCH, tasks.max_concurrency),
        claimed: false,
    };
    // The job in hand. One slot, lent to `process`: a job passed by value
    // would be stored twice in the task's state (argument and local).
    let mut slot: Option<Job>;
    let mut first = true;
    while let Some(claimed) = tasks.claim_or_end(&sh, &mut held, std::mem::take(&mut first)) {
        // One message at a time: a task holds one job, not a queue.
        while let Some(job) = tasks.next_of(claimed) {
            slot = Some(job);
            if !out.take() {
                // The commit window is full. The wait is boxed: rare, and
                // kept out of every task's resident state.
                Box::pin(wait_for_claim(&sh, out.cap)).await;
                out.claimed = true;
                // The block's age counts from its claim, as a thread
                // worker's does: not published after a single message.
                out.oldest = Some(Instant::now());
            }
            process(&*handler, &sh, &mut out, &mut slot, timeout).await;
        }
        // The key is given back only after its messages are published.
        out.publish();
    }
}

/// Runs the job in `slot` (or drops it: its partition was revoked, or the
/// pool halted, and it stays unfinished), empties the slot, and publishes
/// when due.
async fn process<H: AsyncHandler>(
    handler: &H,
    sh: &Arc<Shared>,
    out: &mut Publisher<'_>,
    slot: &mut Option<Job>,
    timeout: Option<Duration>,
) {
    let counters = &sh.workers[0];
    add(&counters.processed, 1);
    let Some(job) = slot.as_ref() else { return };
    if job.done.is_revoked() {
        // Its partition belongs to another member now: drop it unhandled.
        *slot = None;
    } else if sh.halted() {
        add(&counters.abandoned, 1);
        *slot = None;
    } else {
        let ran = attempts(handler, sh, counters, job, timeout).await;
        let job = slot.take().expect("the slot holds the job");
        match ran {
            Ran::Done => {
                add(&counters.finished, 1);
                out.done.push(job.done);
            }
            Ran::Failed(error) => {
                // Boxed: rare, and kept out of every task's resident state.
                if let Some(done) = Box::pin(resolve(sh, counters, job, error)).await {
                    out.done.push(done);
                }
            }
            Ran::Left => {}
        }
    }
    if out.due() {
        out.publish();
    }
}

/// A task's finished messages not yet marked in the tracker.
struct Publisher<'a> {
    sh: &'a Shared,
    done: Vec<Completion>,
    /// Jobs taken whose in-flight budget is not yet returned.
    taken: usize,
    oldest: Option<Instant>,
    /// The most messages one block may hold: [`PUBLISH_BATCH`], or less
    /// under `--commit-every` so that every task's block fits in the commit
    /// window (read when the task starts).
    cap: usize,
    /// The block has claimed `cap` messages of the commit window, handed
    /// back on publishing.
    claimed: bool,
}

impl Publisher<'_> {
    /// Takes one more message into the block. A new block first claims
    /// room in the commit window (see [`Worker`](super::worker)'s blocks);
    /// `false` when the window is full: the caller waits for the claim
    /// ([`wait_for_claim`]) before it runs the message.
    fn take(&mut self) -> bool {
        let mut room = true;
        if self.taken == 0 {
            room = self.sh.tracker.try_claim(self.cap).is_some();
            self.claimed = room;
            self.oldest = Some(Instant::now());
        }
        self.taken += 1;
        room
    }

    /// A full block, an old one, or somebody waiting (a submitter for
    /// budget, a commit or revocation for the tracker, a draining pool).
    fn due(&self) -> bool {
        self.taken >= self.cap
            || self.sh.phase.load(AO::Relaxed) != RUNNING
            || self.sh.tracker.has_waiters()
            || self.oldest.is_some_and(|t| t.elapsed() >= PUBLISH_AGE)
    }

    fn publish(&mut self) {
        finish_batch(&mut self.done);
        self.sh.capacity.release(std::mem::take(&mut self.taken));
        if std::mem::take(&mut self.claimed) {
            self.sh.tracker.release_claim(self.cap as u64);
        }
        self.oldest = None;
    }
}

/// Claims `n` messages of the commit window, waiting while it is full,
/// unless nobody will commit by count meanwhile (the pool drains or halts,
/// or a revocation waits for work).
async fn wait_for_claim(sh: &Shared, n: usize) {
    sh.tracker.claim(n, &|| sh.claim_wait_pointless()).await;
}

/// How a message's attempts ended.
enum Ran {
    /// The handler succeeded.
    Done,
    /// The last attempt failed: the failure policy applies.
    Failed(HandlerError),
    /// It stays unfinished: the pool halted while it backed off, or its
    /// partition was revoked (another member has it now).
    Left,
}

/// Runs one message's attempts: until one succeeds, the retries are used
/// up (or the error is permanent), or the pool halts. Takes the job by
/// reference, so a task's resident state holds the job once.
async fn attempts<H: AsyncHandler>(
    handler: &H,
    sh: &Shared,
    c: &WorkerCounters,
    job: &Job,
    timeout: Option<Duration>,
) -> Ran {
    let mut retries = 0u32;
    loop {
        // In a block: the attempt's future (cut off by the timeout, say) is
        // dropped here, not kept through the backoff below.
        let outcome = {
            // Creating the future runs code too (a closure's body before its
            // `async` block): a panic there is a failed attempt as well.
            let (attempt, panicked) = match catch_unwind(AssertUnwindSafe(|| {
                handler.handle_attempt(&job.msg, retries + 1)
            })) {
                Ok(attempt) => (Some(attempt), None),
                Err(payload) => (None, Some(payload)),
            };
            let mut attempt = pin!(attempt);
            match (attempt.as_mut().as_pin_mut(), panicked) {
                (Some(attempt), _) => match timeout {
                    None => CatchUnwind(attempt).await,
                    // Boxed: the timer is only paid for by pools that have a timeout.
                    Some(limit) => {
                        match Box::pin(tokio::time::timeout(limit, CatchUnwind(attempt))).await {
                            Ok(outcome) => outcome,
                            Err(_) => Ok(Err(HandlerError::new(format!(
                                "handler timed out after {limit:?}"
                            )))),
                        }
                    }
                },
                (None, panicked) => Err(panicked.expect("no future means a panic")),
            }
        };
        let mut error = match outcome {
            Ok(Ok(())) => return Ran::Done,
            Ok(Err(e)) => e,
            Err(payload) => HandlerError::from_panic(payload),
        };
        if !sh.retries_left(retries, &error) {
            error.set_attempts(retries + 1);
            return Ran::Failed(error);
        }
        retries += 1;
        add(&c.retried, 1);
        tracing::debug!(
            topic = %job.msg.topic, partition = job.msg.partition, offset = job.msg.offset,
            attempt = retries, %error, "handler failed; retrying"
        );
        // Boxed: a rare path, kept out of every task's resident state.
        if !Box::pin(backoff(sh, retries)).await {
            // Aborted or stopped while waiting: leave it unfinished.
            add(&c.abandoned, 1);
            return Ran::Left;
        }
        if job.done.is_revoked() {
            // Its partition moved to another member while we waited.
            return Ran::Left;
        }
    }
}

/// The failure policy for a message whose last attempt failed (the thread
/// engine's, [`Shared::resolve_failure`]); its completion if it now counts
/// as finished.
async fn resolve(
    sh: &Arc<Shared>,
    c: &WorkerCounters,
    job: Job,
    error: HandlerError,
) -> Option<Completion> {
    add(&c.failed, 1);
    let resolution = if matches!(sh.policy, FailurePolicy::DeadLetter(_)) {
        // The callback may block (it produces and awaits the ack).
        let shared = Arc::clone(sh);
        match tokio::task::spawn_blocking(move || shared.resolve_failure(job, error)).await {
            Ok(resolution) => resolution,
            Err(e) => {
                // Cannot happen short of a runtime shutting down: the
                // message stays unfinished (redelivered), never lost.
                tracing::error!("dead-letter task did not complete: {e}");
                Resolution::Stopped
            }
        }
    } else {
        sh.resolve_failure(job, error)
    };
    resolution.counted(c, add)
}

/// Sleeps for retry number `retry`'s backoff; false if the pool halted
/// before or meanwhile. (`halt` is also notified by a drain, which does not
/// cut a backoff short: the check after each wake-up tells them apart.)
async fn backoff(sh: &Shared, retry: u32) -> bool {
    let deadline = tokio::time::Instant::now() + sh.backoff_delay(retry);
    loop {
        let mut halted = pin!(sh.halt.notified());
        // Registered before the check, so a halt between the two still wakes us.
        halted.as_mut().enable();
        if sh.halted() {
            return false;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => return !sh.halted(),
            _ = halted => {}
        }
    }
}

/// A future that turns a panic while polling `F` into an error value, so a
/// panicking handler fails its attempt instead of killing the task.
struct CatchUnwind<F>(F);

impl<F: Future + Unpin> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = &mut self.0;
        match catch_unwind(AssertUnwindSafe(|| Pin::new(inner).poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(payload) => Poll::Ready(Err(payload)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offsets::OffsetTracker;
    use crate::pool::{Pool, PoolConfig};

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn a_task_is_small() {
        // Every message in flight is a task: at concurrency 10,000 each
        // 100 bytes of task state are 1 MB of RSS (issue 14's RSS target).
        // Boxing the rare paths (backoff, failure policy, timeout) and
        // lending the job instead of moving it (a moved argument is stored
        // twice) brought it from 1,280 to 928 bytes, with no queue of jobs
        // on the heap beside it (a task takes one message at a time);
        // catching a panic while the future is created made it 976 (984
        // since), and the commit window's claim (its wait boxed) 992.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _inside = rt.enter();
        let sh = Pool::shared(&PoolConfig::default(), Arc::new(OffsetTracker::new()), 1).unwrap();
        let handler = |_m: Message| async {
            tokio::time::sleep(Duration::from_millis(1)).await;
            Ok::<(), HandlerError>(())
        };
        let tasks = Tasks::start(&sh, handler, rt.handle().clone(), 1, None, Ordering::Key);
        let task = task_main(tasks, Arc::clone(&sh), Arc::new(handler), None);
        let size = std::mem::size_of_val(&task);
        assert!(
            size <= 1000,
            "a task with a sleeping handler is {size} bytes"
        );
    }
}
