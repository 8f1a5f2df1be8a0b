//! The `keys` scheduler: a queue per key, and any free worker runs the next
//! ready key (DESIGN rule 1; the seed's "push each message into the queue of
//! its key, then let a thread pool work through the queues").
//!
//! A key is pinned to its queue, not to a thread. A key whose queue has
//! messages and which no worker holds is *ready*; a worker *claims* ready
//! keys (all of a key's queued messages at once), runs them in order, and
//! *holds* each claimed key until its messages are published (handler
//! flushed, completions in the tracker). Only then does the key go back to
//! the ready list if more arrived meanwhile. So a key never runs on two
//! workers at once, even when a buffering handler's output is still in a
//! worker's buffer, and no key waits behind another key's slow message: a
//! free worker takes any ready key (work-conserving), which the `lanes`
//! scheduler cannot do.
//!
//! Everything moves in batches under one lock: a submission queues a whole
//! step of messages with one lock and wakes only as many idle workers as
//! the new work needs; a worker claims about [`CLAIM_BUDGET`] of work per
//! lock (many keys when the handler is fast, one when it is slow, measured
//! as it runs), so neither side pays a lock or a wake-up per message.
//!
//! The key of the queue is the key's salted 64-bit [`lane_hash`]: two keys
//! sharing a hash would share a queue (still in order, just less parallel),
//! which at 64 bits does not happen in practice. Unkeyed messages (key
//! mode) and partition mode queue per topic-partition; unordered mode has
//! one free queue that workers take from in any order.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering as AO};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::routing::{Ordering, lane_hash};
use super::worker::{ABORTING, Job, Next, Shared, Worker};
use super::{BuildError, Handler};
use crate::Message;

/// How much work (by measured handler time) a worker claims at once: long
/// enough to amortise a lock, short enough that keys left in one worker's
/// claim never keep another worker idle for long.
const CLAIM_BUDGET: Duration = Duration::from_micros(100);

/// At most this many messages are claimed at once (and taken from one key).
const MAX_CLAIM: usize = 1024;

/// Empty queues are kept for reuse (no allocation when their key returns)
/// while there are at most this many queues; beyond it they are removed.
const KEEP_QUEUES: usize = 4096;

/// An empty queue keeps at most this much room (in jobs) for its key's
/// next messages; a larger one is freed.
const KEEP_CAPACITY: usize = 32;

/// A queue identity: the key's hash, or a topic-partition's.
pub(super) type QueueId = u64;

/// Hasher for already-mixed 64-bit ids: the id is the hash.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used for ids; fold anything else in.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, id: u64) {
        self.0 = id;
    }
}

/// The queue a message goes to, `None` for unordered mode (any worker).
#[inline]
pub(crate) fn queue_id(ordering: Ordering, msg: &Message) -> Option<QueueId> {
    match ordering {
        Ordering::Key => Some(match &msg.key {
            Some(key) => lane_hash(key),
            None => partition_id(&msg.topic, msg.partition),
        }),
        Ordering::Partition => Some(partition_id(&msg.topic, msg.partition)),
        Ordering::Unordered => None,
    }
}

/// A topic-partition's queue id: unrelated to any key's hash in practice.
#[inline]
fn partition_id(topic: &str, partition: i32) -> QueueId {
    const PARTITION_SALT: u64 = 0xbb67_ae85_84ca_a73b; // fractional bits of sqrt(3)
    lane_hash(topic.as_bytes()) ^ (u64::from(partition as u32) + 1).wrapping_mul(PARTITION_SALT)
}

/// What [`Sched::claim_one`] took.
#[derive(Clone, Copy)]
pub(super) enum Claimed {
    /// A key, now held: its messages are taken one by one.
    Key(QueueId),
    /// Unordered mode's queue: any message, any task.
    Free,
}

/// One key's messages in arrival order, and whether a worker holds the key.
#[derive(Default)]
struct KeyQueue {
    jobs: VecDeque<Job>,
    held: bool,
}

/// The scheduler's state, all under one lock. The async engine
/// ([`tasks`](super::tasks)) keeps the same queues; only who claims differs.
#[derive(Default)]
pub(super) struct Sched {
    queues: HashMap<QueueId, KeyQueue, BuildHasherDefault<IdHasher>>,
    /// Keys with queued messages that no worker holds, oldest first.
    /// Invariant: an id is here iff its queue is non-empty and not held.
    pub(super) ready: VecDeque<QueueId>,
    /// Unordered mode's messages: any worker, any order.
    pub(super) free: VecDeque<Job>,
    /// Messages queued (ready or behind a held key).
    pub(super) queued: usize,
    /// Messages a worker could claim right now (in ready keys or `free`).
    claimable: usize,
    /// Workers waiting for work.
    idle: usize,
    /// Draining: workers exit once nothing is left for them.
    closing: bool,
    /// Aborted: queued messages were dropped; workers exit.
    pub(super) aborted: bool,
}

impl Sched {
    /// Appends a job to its queue; returns 1 if it became claimable.
    #[inline]
    pub(super) fn push(&mut self, id: Option<QueueId>, job: Job) -> usize {
        self.queued += 1;
        let Some(id) = id else {
            self.free.push_back(job);
            self.claimable += 1;
            return 1;
        };
        let q = self.queues.entry(id).or_default();
        q.jobs.push_back(job);
        if q.held {
            return 0;
        }
        if q.jobs.len() == 1 {
            self.ready.push_back(id);
        }
        self.claimable += 1;
        1
    }

    /// Moves about `target` messages into `run` (whole keys, in order, at
    /// least one key), marking their keys held; false if nothing is ready.
    pub(super) fn claim(
        &mut self,
        target: usize,
        run: &mut Vec<Job>,
        held: &mut Vec<QueueId>,
    ) -> bool {
        let mut took = 0;
        while took < target {
            if let Some(job) = self.free.pop_front() {
                run.push(job);
                took += 1;
                continue;
            }
            let Some(id) = self.ready.pop_front() else {
                break;
            };
            let q = self.queues.get_mut(&id).expect("a ready key has a queue");
            q.held = true;
            let n = q.jobs.len().min(MAX_CLAIM);
            run.extend(q.jobs.drain(..n));
            took += n;
            held.push(id);
        }
        self.queued -= took;
        self.claimable -= took;
        took > 0
    }

    /// Takes one unit of work for a task of the async engine: a ready key
    /// (marked held; its messages stay queued and are taken one at a time
    /// with [`pop_claimed`](Self::pop_claimed)) or unordered mode's queue.
    pub(super) fn claim_one(&mut self) -> Option<Claimed> {
        if !self.free.is_empty() {
            return Some(Claimed::Free);
        }
        let id = self.ready.pop_front()?;
        let q = self.queues.get_mut(&id).expect("a ready key has a queue");
        q.held = true;
        self.claimable -= q.jobs.len();
        Some(Claimed::Key(id))
    }

    /// The next message of what a task claimed: of held key `id`, or of
    /// unordered mode's queue (`None` when there is none left, or an abort
    /// dropped them).
    pub(super) fn pop_claimed(&mut self, claimed: Claimed) -> Option<Job> {
        let job = match claimed {
            Claimed::Key(id) => self.queues.get_mut(&id)?.jobs.pop_front()?,
            Claimed::Free => {
                let job = self.free.pop_front()?;
                self.claimable -= 1;
                job
            }
        };
        self.queued -= 1;
        Some(job)
    }

    /// Gives held keys back: a key with messages that arrived meanwhile
    /// becomes ready again (at the back: keys take turns).
    pub(super) fn release(&mut self, held: &mut Vec<QueueId>) {
        for id in held.drain(..) {
            let many = self.queues.len() > KEEP_QUEUES;
            let q = self.queues.get_mut(&id).expect("a held key has a queue");
            q.held = false;
            if !q.jobs.is_empty() {
                self.claimable += q.jobs.len();
                self.ready.push_back(id);
            } else if many {
                self.queues.remove(&id);
            } else if q.jobs.capacity() > KEEP_CAPACITY {
                // A burst grew it: keep the map entry, not the memory (a
                // thousand keys each keeping a 1,000-job burst's room
                // would hold ~140 MB).
                q.jobs = VecDeque::new();
            }
        }
    }

    /// Empties every queue (abort): the jobs stay unfinished in the tracker.
    pub(super) fn drop_all(&mut self) -> usize {
        let n = self.queued;
        self.queues.clear();
        self.ready.clear();
        self.free.clear();
        self.queued = 0;
        self.claimable = 0;
        n
    }
}

/// The `keys` scheduler.
pub(crate) struct Keys {
    state: Mutex<Sched>,
    /// Idle workers wait here.
    work: Condvar,
    ordering: Ordering,
    /// Measured handler time per message (ns), a moving average over the
    /// workers' claims; 0 until the first claim ran.
    cost_ns: AtomicU64,
}

impl Keys {
    /// Starts `workers` threads running `shared`'s handler.
    pub(crate) fn start(
        shared: &Arc<Shared>,
        handler: &Arc<dyn Handler>,
        workers: usize,
        ordering: Ordering,
    ) -> Result<(Arc<Self>, Vec<JoinHandle<()>>), BuildError> {
        let keys = Arc::new(Self {
            state: Mutex::new(Sched::default()),
            work: Condvar::new(),
            ordering,
            cost_ns: AtomicU64::new(0),
        });
        let mut threads = Vec::with_capacity(workers);
        for index in 0..workers {
            let sh = Arc::clone(shared);
            let k = Arc::clone(&keys);
            let h = Arc::clone(handler);
            let spawned = std::thread::Builder::new()
                .name(format!("mykafkams-worker-{index}"))
                .spawn(move || k.worker_main(&sh, &*h, index));
            match spawned {
                Ok(handle) => threads.push(handle),
                Err(e) => {
                    shared.phase.store(ABORTING, AO::SeqCst);
                    keys.abort();
                    return Err(BuildError::Spawn(e));
                }
            }
        }
        Ok((keys, threads))
    }

    /// The queue of a message.
    #[inline]
    pub(crate) fn queue_of(&self, msg: &Message) -> Option<QueueId> {
        queue_id(self.ordering, msg)
    }

    /// Queues one job (a single `submit`).
    pub(crate) fn enqueue_one(&self, job: Job) {
        let id = self.queue_of(&job.msg);
        let target = self.claim_target();
        let mut s = self.state.lock();
        let claimable = s.push(id, job);
        self.wake(s, claimable, target);
    }

    /// Queues `jobs` (in order; `ids[i]` is the queue of `jobs[i]`) under
    /// one lock and empties both vectors (keeping their allocations).
    pub(crate) fn enqueue(&self, ids: &mut Vec<Option<QueueId>>, jobs: &mut Vec<Job>) {
        debug_assert_eq!(ids.len(), jobs.len());
        let target = self.claim_target();
        let mut s = self.state.lock();
        let mut claimable = 0;
        for (id, job) in ids.drain(..).zip(jobs.drain(..)) {
            claimable += s.push(id, job);
        }
        self.wake(s, claimable, target);
    }

    /// Releases the lock and wakes as many idle workers as `claimable` new
    /// messages need (one per `target` of them).
    fn wake(&self, s: parking_lot::MutexGuard<'_, Sched>, claimable: usize, target: usize) {
        let wake = claimable.div_ceil(target).min(s.idle);
        drop(s);
        for _ in 0..wake {
            self.work.notify_one();
        }
    }

    /// Messages queued, and keys ready for a worker (for stats).
    pub(crate) fn depth(&self) -> (usize, usize) {
        let s = self.state.lock();
        (s.queued, s.ready.len())
    }

    /// Drain: workers finish everything queued, then exit.
    pub(crate) fn close(&self) {
        self.state.lock().closing = true;
        self.work.notify_all();
    }

    /// Abort: drops everything queued (unfinished, so redelivered) and
    /// wakes the workers to exit; returns how many messages were dropped.
    pub(crate) fn abort(&self) -> usize {
        let n = {
            let mut s = self.state.lock();
            s.aborted = true;
            s.drop_all()
        };
        self.work.notify_all();
        n
    }

    /// How many messages a claim should take, from the measured cost.
    #[inline]
    fn claim_target(&self) -> usize {
        match self.cost_ns.load(AO::Relaxed) {
            0 => 1,
            cost => (CLAIM_BUDGET.as_nanos() as u64 / cost).clamp(1, MAX_CLAIM as u64) as usize,
        }
    }

    /// Folds one claim's measured time per message into the average.
    fn record_cost(&self, elapsed: Duration, messages: usize) {
        let per = (elapsed.as_nanos() as u64 / messages.max(1) as u64).max(1);
        let old = self.cost_ns.load(AO::Relaxed);
        let new = if old == 0 { per } else { (old * 7 + per) / 8 };
        self.cost_ns.store(new.max(1), AO::Relaxed);
    }

    /// A worker thread: claim, run, publish, release; sleep when idle.
    fn worker_main(&self, sh: &Shared, handler: &dyn Handler, index: usize) {
        let mut worker = Worker::new(sh, handler, index);
        let mut run: Vec<Job> = Vec::new();
        let mut held: Vec<QueueId> = Vec::new();
        // A handler that does not buffer gains nothing from publishing many
        // keys at once, and a hang of one of its messages must not hold
        // other keys' messages or completions: one key per claim, published
        // after it (see `Handler::buffers_output`).
        let one_key = !handler.buffers_output();
        loop {
            let mut s = self.state.lock();
            if !worker.has_unpublished() && !held.is_empty() {
                s.release(&mut held);
            }
            let target = if one_key { 1 } else { self.claim_target() };
            loop {
                if s.aborted || sh.aborting() {
                    drop(s);
                    worker.publish();
                    return;
                }
                if s.claim(target, &mut run, &mut held) {
                    break;
                }
                if worker.has_unpublished() || !held.is_empty() {
                    // Nothing to claim: publish before waiting, so output
                    // appears and commits advance on a quiet topic.
                    drop(s);
                    worker.publish();
                    s = self.state.lock();
                    s.release(&mut held);
                    continue;
                }
                if s.closing {
                    return;
                }
                s.idle += 1;
                self.work.wait(&mut s);
                s.idle -= 1;
            }
            // Others idle while plenty is ready: pass the wake-up on.
            let more = s.idle > 0 && s.claimable >= target;
            drop(s);
            if more {
                self.work.notify_one();
            }
            let started = Instant::now();
            let n = run.len();
            let mut jobs = run.drain(..);
            while let Some(job) = jobs.next() {
                if let Next::Exit = worker.take(job) {
                    worker.abandon_on_exit(jobs.len());
                    drop(jobs);
                    worker.publish();
                    return;
                }
                if worker.due() {
                    worker.publish();
                }
            }
            drop(jobs);
            self.record_cost(started.elapsed(), n);
            if one_key || worker.due() {
                worker.publish();
            }
        }
    }
}
