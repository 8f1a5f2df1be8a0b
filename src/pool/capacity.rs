//! Waiting for room: the global in-flight cap and lane space (DESIGN rule 4).
//!
//! Submitters wait here, either blocking an OS thread ([`Capacity::wait_blocking`])
//! or as a future that never blocks a tokio worker ([`Capacity::wait_async`]).
//! Workers call [`Capacity::release`] / [`Capacity::signal`] when they make
//! room. Waking is only paid for when someone actually waits: a waiter first
//! registers (counter + SeqCst fence), then re-checks its condition; a worker
//! first changes state, then fences and reads the counters. With a SeqCst
//! fence on both sides at least one of them sees the other, so a wakeup is
//! never lost and the uncontended fast path is a fence and two loads.

use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering, fence};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use tokio::sync::Notify;

/// Pads a value to its own cache line pair so counters written by different
/// threads do not false-share.
#[repr(align(128))]
#[derive(Default)]
pub(crate) struct Padded<T>(pub(crate) T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// A blocking waiter re-checks at least this often even without a signal.
/// Correctness does not depend on it (signals are not lost); it bounds the
/// damage of a bug and lets waiters notice state changes made without signal.
const SAFETY_NET: Duration = Duration::from_millis(100);

/// Counts a registered async waiter and unregisters it even if the waiting
/// future is dropped (cancellation).
struct Registered<'a>(&'a AtomicUsize);

impl<'a> Registered<'a> {
    fn new(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        Self(counter)
    }
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

pub(crate) struct Capacity {
    /// Messages accepted and not yet released by a lane.
    used: Padded<AtomicUsize>,
    max: usize,
    sync_waiters: Padded<AtomicUsize>,
    async_waiters: AtomicUsize,
    lock: Mutex<()>,
    cv: Condvar,
    notify: Notify,
}

impl Capacity {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            used: Padded(AtomicUsize::new(0)),
            max,
            sync_waiters: Padded(AtomicUsize::new(0)),
            async_waiters: AtomicUsize::new(0),
            lock: Mutex::new(()),
            cv: Condvar::new(),
            notify: Notify::new(),
        }
    }

    /// Takes up to `n` units of the in-flight budget at once (as many as are
    /// free, at most `n`); returns how many it took, 0 if none are free.
    #[inline]
    pub(crate) fn try_acquire_up_to(&self, n: usize) -> usize {
        let mut cur = self.used.load(Ordering::SeqCst);
        loop {
            let take = self.max.saturating_sub(cur).min(n);
            if take == 0 {
                return 0;
            }
            match self.used.compare_exchange_weak(
                cur,
                cur + take,
                Ordering::SeqCst,
                Ordering::Relaxed,
            ) {
                Ok(_) => return take,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Returns `n` units and wakes waiters if any.
    #[inline]
    pub(crate) fn release(&self, n: usize) {
        if n > 0 {
            self.used.fetch_sub(n, Ordering::SeqCst);
            self.signal();
        }
    }

    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Wakes every waiter if any is registered. Call after making room.
    #[inline]
    pub(crate) fn signal(&self) {
        fence(Ordering::SeqCst);
        if self.sync_waiters.load(Ordering::Relaxed) > 0 {
            let _g = self.lock.lock();
            self.cv.notify_all();
        }
        if self.async_waiters.load(Ordering::Relaxed) > 0 {
            self.notify.notify_waiters();
        }
    }

    /// Wakes every waiter unconditionally (state changes: stop, shutdown).
    pub(crate) fn signal_all(&self) {
        {
            let _g = self.lock.lock();
            self.cv.notify_all();
        }
        self.notify.notify_waiters();
    }

    /// Blocks the calling thread until `attempt` returns `Some`.
    /// `attempt` must not block; it is re-run after every wakeup.
    pub(crate) fn wait_blocking<T>(&self, mut attempt: impl FnMut() -> Option<T>) -> T {
        // Brief optimistic retry before sleeping: room usually appears within
        // microseconds when lanes are busy, and a futex sleep/wake pair costs
        // more than that.
        for _ in 0..16 {
            if let Some(v) = attempt() {
                return v;
            }
            std::thread::yield_now();
        }
        loop {
            let mut guard = self.lock.lock();
            self.sync_waiters.fetch_add(1, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            let got = attempt();
            if got.is_none() {
                self.cv.wait_for(&mut guard, SAFETY_NET);
            }
            self.sync_waiters.fetch_sub(1, Ordering::SeqCst);
            drop(guard);
            if let Some(v) = got {
                return v;
            }
            if let Some(v) = attempt() {
                return v;
            }
        }
    }

    /// Waits as a future until `attempt` returns `Some`, never blocking the
    /// executor thread. Cancel-safe with respect to registration.
    pub(crate) async fn wait_async<T>(&self, mut attempt: impl FnMut() -> Option<T>) -> T {
        loop {
            if let Some(v) = attempt() {
                return v;
            }
            let mut notified = pin!(self.notify.notified());
            // Register with `Notify` before re-checking, so a
            // `notify_waiters` between the check and the await is not lost.
            notified.as_mut().enable();
            let _registered = Registered::new(&self.async_waiters);
            if let Some(v) = attempt() {
                return v;
            }
            notified.await;
        }
    }
}
