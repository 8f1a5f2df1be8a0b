//! The `lanes` scheduler: N threads, each draining its own bounded queue.
//!
//! The original tool's design: a message goes to the lane its key hashes to
//! ([`Router`]), so one key's messages share a lane and run in order. Simple
//! and predictable, but a lane is bound to its keys: an unlucky lane holds
//! more keys than the others, and one slow message holds up every key of its
//! lane. The [`keys`](super::keys) scheduler removes both limits.
//!
//! Each lane is bounded by `lane_capacity` messages, counted in `queued`
//! (reserved by a submitter before it sends, released by the lane when it
//! takes them), so a queue item may carry a whole batch.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering as AO};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, SendTimeoutError, Sender, TryRecvError, TrySendError};

use super::capacity::{Capacity, Padded};
use super::routing::{Ordering, Router};
use super::worker::{ABORTING, Job, Next, Shared, Worker};
use super::{BuildError, Handler, SubmitError};

/// How often a submitter blocked on a full lane re-checks for abort/stop.
const RECHECK: Duration = Duration::from_millis(10);

pub(crate) enum LaneMsg {
    /// One job (a single `submit`: no vector allocated).
    Job(Job),
    /// Jobs for one lane in submission order (a batch submission sends one
    /// item per lane per step: one channel operation, one wakeup).
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

/// The lanes: their queues and the room left in each.
pub(crate) struct Lanes {
    router: Router,
    senders: Vec<Sender<LaneMsg>>,
    /// Messages queued per lane (shared with the lane threads).
    queued: Arc<Vec<Padded<AtomicUsize>>>,
    lane_capacity: usize,
}

impl Lanes {
    /// Starts `lanes` threads running `shared`'s handler.
    pub(crate) fn start(
        shared: &Arc<Shared>,
        handler: &Arc<dyn Handler>,
        lanes: usize,
        lane_capacity: usize,
        ordering: Ordering,
    ) -> Result<(Self, Vec<JoinHandle<()>>), BuildError> {
        let queued: Arc<Vec<Padded<AtomicUsize>>> =
            Arc::new((0..lanes).map(|_| Padded::default()).collect());
        let mut senders = Vec::with_capacity(lanes);
        let mut threads = Vec::with_capacity(lanes);
        for lane in 0..lanes {
            let (tx, rx) = crossbeam_channel::bounded(lane_capacity);
            let sh = Arc::clone(shared);
            let q = Arc::clone(&queued);
            let h = Arc::clone(handler);
            let spawned = std::thread::Builder::new()
                .name(format!("mykafkams-lane-{lane}"))
                .spawn(move || lane_main(&sh, &*h, &q[lane], lane, rx));
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
        let lanes = Self {
            router: Router::new(ordering, lanes),
            senders,
            queued,
            lane_capacity,
        };
        Ok((lanes, threads))
    }

    /// Number of lanes.
    pub(crate) fn len(&self) -> usize {
        self.senders.len()
    }

    /// The lane of a message.
    #[inline]
    pub(crate) fn lane_of(&self, msg: &crate::Message) -> usize {
        self.router.lane(msg)
    }

    /// Messages queued in each lane right now.
    pub(crate) fn depths(&self) -> Vec<usize> {
        self.queued.iter().map(|q| q.load(AO::Relaxed)).collect()
    }

    /// Keeps at most `lane_capacity` jobs in `jobs` (what one queue item may
    /// carry) and returns the rest.
    #[inline]
    pub(crate) fn split_for_lane(&self, jobs: &mut Vec<Job>) -> Vec<Job> {
        if jobs.len() > self.lane_capacity {
            jobs.split_off(self.lane_capacity)
        } else {
            Vec::new()
        }
    }

    /// Reserves room for `n` messages in a lane's queue (all or nothing).
    #[inline]
    fn try_reserve(&self, lane: usize, n: usize) -> bool {
        let queued = &self.queued[lane];
        let mut cur = queued.load(AO::SeqCst);
        loop {
            if cur + n > self.lane_capacity {
                return false;
            }
            match queued.compare_exchange_weak(cur, cur + n, AO::SeqCst, AO::Relaxed) {
                Ok(_) => return true,
                Err(actual) => cur = actual,
            }
        }
    }

    fn reservation<'a>(&'a self, cap: &'a Capacity, lane: usize, n: usize) -> LaneReservation<'a> {
        LaneReservation {
            queued: &self.queued[lane],
            capacity: cap,
            n,
        }
    }

    /// One attempt to reserve lane room; `None` = full, try again later.
    /// While draining, lanes keep consuming: keep waiting. Only a halted
    /// pool (stopped or aborting) will never make room.
    fn lane_room<'a>(
        &'a self,
        sh: &'a Shared,
        lane: usize,
        n: usize,
    ) -> Option<Result<LaneReservation<'a>, SubmitError>> {
        if self.try_reserve(lane, n) {
            return Some(Ok(self.reservation(&sh.capacity, lane, n)));
        }
        if let Some(e) = sh.refusal()
            && sh.halted()
        {
            return Some(Err(e));
        }
        None
    }

    /// One non-blocking send attempt of an item whose lane room is reserved;
    /// `None` = channel full (only possible behind shutdown markers).
    fn try_send(
        &self,
        sh: &Shared,
        lane: usize,
        pending: &mut Option<LaneMsg>,
    ) -> Option<Result<(), SubmitError>> {
        let item = pending.take().expect("item present until sent");
        match self.senders[lane].try_send(item) {
            Ok(()) => Some(Ok(())),
            Err(TrySendError::Full(item)) => {
                if let Some(e) = sh.refusal()
                    && sh.halted()
                {
                    // Not queued: it stays unfinished in the tracker.
                    sh.abandon(item.jobs());
                    return Some(Err(e));
                }
                *pending = Some(item);
                None
            }
            Err(TrySendError::Disconnected(item)) => {
                sh.abandon(item.jobs());
                Some(Err(SubmitError::ShuttingDown))
            }
        }
    }

    /// Blocking send of jobs to a lane: reserves room for them (waiting
    /// while the lane holds `lane_capacity` messages), then queues them.
    /// Gives up only if the pool halts (stopped or aborting), in which case
    /// the jobs are dropped and stay unfinished.
    pub(crate) fn send_blocking(
        &self,
        sh: &Shared,
        lane: usize,
        item: LaneMsg,
    ) -> Result<(), SubmitError> {
        let n = item.jobs();
        let reserved = if self.try_reserve(lane, n) {
            self.reservation(&sh.capacity, lane, n)
        } else {
            match sh.capacity.wait_blocking(|| self.lane_room(sh, lane, n)) {
                Ok(r) => r,
                Err(e) => {
                    sh.abandon(n);
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
                sh.abandon(n);
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
                    if let Some(e) = sh.refusal()
                        && sh.halted()
                    {
                        sh.abandon(n);
                        return Err(e);
                    }
                    item = back;
                }
                Err(SendTimeoutError::Disconnected(_)) => {
                    sh.abandon(n);
                    return Err(SubmitError::ShuttingDown);
                }
            }
        }
    }

    /// Async counterpart of [`send_blocking`](Self::send_blocking): never
    /// blocks the executor thread. If the future is dropped, the jobs are
    /// dropped (they stay unfinished) and the lane room returned.
    pub(crate) async fn send_async(
        &self,
        sh: &Shared,
        lane: usize,
        item: LaneMsg,
    ) -> Result<(), SubmitError> {
        let n = item.jobs();
        let cap = &sh.capacity;
        let reserved = if self.try_reserve(lane, n) {
            self.reservation(cap, lane, n)
        } else {
            match cap.wait_async(|| self.lane_room(sh, lane, n)).await {
                Ok(r) => r,
                Err(e) => {
                    sh.abandon(n);
                    return Err(e);
                }
            }
        };
        let mut pending = Some(item);
        match self.try_send(sh, lane, &mut pending) {
            Some(r) => r?,
            None => {
                cap.wait_async(|| self.try_send(sh, lane, &mut pending))
                    .await?
            }
        }
        reserved.keep();
        Ok(())
    }

    /// Queues a shutdown marker behind everything on every lane; false if
    /// `deadline` passed first.
    pub(crate) fn send_shutdown(&self, deadline: Instant) -> bool {
        self.senders.iter().all(|tx| {
            !tx.send_deadline(LaneMsg::Shutdown, deadline)
                .is_err_and(|e| matches!(e, SendTimeoutError::Timeout(_)))
        })
    }

    /// Wakes lanes sleeping on an empty queue after an abort; a full queue
    /// means its lane is busy and will see the phase after its current job.
    pub(crate) fn wake_for_abort(&self) {
        for tx in &self.senders {
            let _ = tx.try_send(LaneMsg::Shutdown);
        }
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

/// A lane thread: runs its queue in order, publishing in blocks.
fn lane_main(
    sh: &Shared,
    handler: &dyn Handler,
    queued: &AtomicUsize,
    lane: usize,
    rx: Receiver<LaneMsg>,
) {
    let mut worker = Worker::new(sh, handler, lane);
    'run: loop {
        let item = match rx.try_recv() {
            Ok(item) => item,
            Err(TryRecvError::Empty) => {
                // About to sleep: publish what is done first, so commits
                // and waiters never wait on an idle lane.
                if worker.has_unpublished() {
                    worker.publish();
                }
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
            // Fenced (in `signal`), pairing with the waiter's fence, so the
            // wakeup is never lost; paid once per item, not per message.
            queued.fetch_sub(n, AO::SeqCst);
            sh.capacity.signal();
        }
        match item {
            LaneMsg::Job(job) => {
                if let Next::Exit = worker.take(job) {
                    break;
                }
                if worker.due() {
                    worker.publish();
                }
            }
            LaneMsg::Jobs(jobs) => {
                let mut jobs = jobs.into_iter();
                while let Some(job) = jobs.next() {
                    if let Next::Exit = worker.take(job) {
                        worker.abandon_on_exit(jobs.len());
                        break 'run;
                    }
                    if worker.due() {
                        worker.publish();
                    }
                }
            }
            LaneMsg::Shutdown => break,
        }
    }
    worker.publish();
    // Count what is left in the queue so the stats add up; the jobs stay
    // unfinished in the tracker.
    while let Ok(item) = rx.try_recv() {
        let n = item.jobs();
        queued.fetch_sub(n, AO::SeqCst);
        worker.abandon_on_exit(n);
    }
}
