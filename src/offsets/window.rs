//! The commit window: how much work a crash may repeat (issue 15).
//!
//! A crash repeats every message that finished after the last acknowledged
//! commit was taken. `--commit-every N` bounds that to about `N` messages:
//!
//! - the committer is woken each time another `N / 2` messages finished;
//! - a worker *claims* a block of messages before it starts them, and may
//!   claim only while `finished beyond the last acknowledged commit` plus
//!   `claimed but not yet published` stays under `N`.
//!
//! Gating where work *starts* (not where readers hand it to the pool) is what
//! makes the bound exact: work already queued in the pool cannot finish
//! beyond it. Claims are counted as reservations of a whole block, so the
//! hot path pays one uncontended lock per block, not a cost per message.
//!
//! A stuck handler holds only its own block's claim. A block is at most
//! `N / (2 × workers)` messages, so even every worker hung holds half the
//! window and a hung key never closes it for the others, as long as `N` is
//! at least twice the workers (below that a block is one message, and `N`
//! hung handlers hold the whole window).
//!
//! Records an offset map skips count as finished without a claim. They
//! only tighten the window (a crash does not repeat them: the map that
//! skipped them is committed again), but they can take the finished count
//! past the bound.
//!
//! The window stands open while the pool drains or a revocation waits for
//! work (the caller's `give_up`): nobody commits by count then (a drain
//! commits by time only, a revocation not at all), and waiting would only
//! stall the hand-over.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

/// How often a blocked claim re-checks `give_up` (a drain, a revocation)
/// when no commit acknowledgement wakes it first.
const RECHECK: Duration = Duration::from_millis(10);

/// Finished messages over every partition of a tracker, and the claims of
/// blocks in progress. All counters are in messages.
#[derive(Default)]
pub(super) struct CommitWindow {
    /// Messages finished (counted while a limit is set).
    count: AtomicU64,
    /// Wake the committer each time this many more finished (0: never).
    every: AtomicU64,
    /// `count` when the last acknowledged commit's state was taken.
    covered: AtomicU64,
    /// Most messages finished-and-uncovered plus claimed (0: no limit).
    limit: AtomicU64,
    /// Messages claimed by blocks not yet published.
    claimed: AtomicU64,
    /// Held while a claim checks the window and takes its room, so that
    /// claims are decided one at a time (once per block, not per message).
    claim_lock: Mutex<()>,
    /// Tells the committer `every` more finished.
    wake: tokio::sync::Notify,
    /// Tells async claimers a commit was acknowledged.
    acked: tokio::sync::Notify,
    /// Tells blocked worker threads a commit was acknowledged.
    acked_lock: Mutex<()>,
    acked_cv: Condvar,
}

impl CommitWindow {
    /// Sets the bound `n` (0 turns the window and the commit wake-ups off).
    pub(super) fn set_limit(&self, n: u64) {
        self.every
            .store(if n == 0 { 0 } else { (n / 2).max(1) }, Ordering::Relaxed);
        self.limit.store(n, Ordering::Relaxed);
    }

    /// Counts `n` more finished messages (one atomic add per batch).
    #[inline]
    pub(super) fn add(&self, n: u64) {
        let every = self.every.load(Ordering::Relaxed);
        if every == 0 || n == 0 {
            return;
        }
        let before = self.count.fetch_add(n, Ordering::AcqRel);
        if before / every != (before + n) / every {
            // Stores a permit when the committer is busy: a wake-up is
            // never lost, and several coalesce into one commit.
            self.wake.notify_one();
        }
    }

    /// Finished messages so far.
    pub(super) fn count(&self) -> u64 {
        self.count.load(Ordering::Acquire)
    }

    /// A commit whose state was read after `count()` returned `snapshot`
    /// was acknowledged: that much is covered, claims may go on.
    pub(super) fn covered(&self, snapshot: u64) {
        self.covered.fetch_max(snapshot, Ordering::AcqRel);
        self.acked.notify_waiters();
        let _g = self.acked_lock.lock();
        self.acked_cv.notify_all();
    }

    /// Resolves once `every` more messages finished (never while off).
    pub(super) async fn commit_wanted(&self) {
        self.wake.notified().await;
    }

    /// How many messages one block may claim when `workers` claim at once:
    /// `max`, or less so that every worker's block fits in half the window
    /// (`limit / (2 × workers)`, at least 1): all of them can run while
    /// the other half waits for a commit's acknowledgement.
    pub(super) fn block(&self, max: usize, workers: usize) -> usize {
        match self.limit.load(Ordering::Relaxed) {
            0 => max,
            n => max.min((n / (2 * workers.max(1) as u64)).max(1) as usize),
        }
    }

    /// Claims `n` messages if the window has room for them. Always
    /// succeeds (and counts nothing) without a limit.
    pub(super) fn try_claim(&self, n: u64) -> bool {
        let limit = self.limit.load(Ordering::Relaxed);
        if limit == 0 {
            return true;
        }
        // Claimers take turns. A compare-and-swap on `claimed` alone is not
        // enough: a release and another claim of the same size can bring it
        // back to the value read (ABA), and the swap would then succeed on
        // a stale `count`, letting the window overshoot by a second block.
        let _turn = self.claim_lock.lock();
        // `claimed` first: a block released before this read counted its
        // messages in `count` before releasing, so they are seen below; a
        // block released after it is still in `claimed`. `covered` before
        // `count`: it only grows, so the uncovered count is never too small.
        let claimed = self.claimed.load(Ordering::Acquire);
        let covered = self.covered.load(Ordering::Acquire);
        let uncovered = self.count().saturating_sub(covered);
        if uncovered + claimed >= limit {
            return false;
        }
        self.claimed.fetch_add(n, Ordering::AcqRel);
        true
    }

    /// Claims `n` messages regardless of room (when waiting is pointless).
    fn force_claim(&self, n: u64) {
        if self.limit.load(Ordering::Relaxed) != 0 {
            self.claimed.fetch_add(n, Ordering::AcqRel);
        }
    }

    /// Claims `n` messages, blocking the thread while the window is full,
    /// unless `give_up()` says nobody will commit meanwhile (then it claims
    /// at once). Returns what was claimed: hand it to [`release`](Self::release).
    pub(super) fn claim_blocking(&self, n: usize, give_up: &dyn Fn() -> bool) -> u64 {
        let n = n as u64;
        loop {
            if self.try_claim(n) {
                return n;
            }
            if give_up() {
                self.force_claim(n);
                return n;
            }
            let mut g = self.acked_lock.lock();
            // Re-checked under the lock `covered` notifies under: an
            // acknowledgement between the check and the wait is not lost.
            if self.try_claim(n) {
                return n;
            }
            self.acked_cv.wait_for(&mut g, RECHECK);
        }
    }

    /// [`claim_blocking`](Self::claim_blocking) for async workers.
    pub(super) async fn claim(&self, n: usize, give_up: &(dyn Fn() -> bool + Sync)) -> u64 {
        let n = n as u64;
        loop {
            let acked = self.acked.notified();
            tokio::pin!(acked);
            acked.as_mut().enable();
            if self.try_claim(n) {
                return n;
            }
            if give_up() {
                self.force_claim(n);
                return n;
            }
            let _ = tokio::time::timeout(RECHECK, acked).await;
        }
    }

    /// Returns a claim: its block was published (finished messages are now
    /// counted in `count`) or dropped. Saturating: a claim taken while no
    /// limit was set counted nothing, and a limit set meanwhile must not
    /// make its release wrap the counter (the window is then looser until
    /// the blocks in progress end, never shut for good).
    pub(super) fn release(&self, n: u64) {
        if n > 0 {
            let _ = self
                .claimed
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
                    Some(c.saturating_sub(n))
                });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(limit: u64) -> CommitWindow {
        let w = CommitWindow::default();
        w.set_limit(limit);
        w
    }

    #[test]
    fn claims_stop_at_the_limit_counting_finished_and_claimed() {
        let w = window(100);
        assert!(w.try_claim(40));
        assert!(w.try_claim(40));
        // 80 claimed: one more block of 40 is let in (the check is before
        // the claim), then nothing.
        assert!(w.try_claim(40));
        assert!(!w.try_claim(1));
        // Publishing moves claims to finished: still no room.
        w.add(120);
        w.release(120);
        assert!(!w.try_claim(1));
        // A commit acknowledging 60 of them makes room for 40 more.
        w.covered(60);
        assert!(w.try_claim(1));
    }

    #[test]
    fn without_a_limit_claims_always_succeed_and_count_nothing() {
        let w = window(0);
        for _ in 0..10 {
            assert!(w.try_claim(1_000_000));
        }
        assert_eq!(w.claimed.load(Ordering::Relaxed), 0);
        w.release(5);
        assert_eq!(w.claimed.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_limit_set_while_claims_are_out_never_wraps_the_count() {
        let w = window(0);
        assert_eq!(w.claim_blocking(500, &|| false), 500);
        // Turned on while that claim is out: its release counts nothing
        // down below zero, and the window still lets work in.
        w.set_limit(100);
        assert!(w.try_claim(40));
        w.release(500);
        assert_eq!(w.claimed.load(Ordering::Relaxed), 0);
        assert!(w.try_claim(40));
        // Turned off and on again: claims taken while on are still given back.
        w.set_limit(0);
        w.release(40);
        w.set_limit(100);
        assert_eq!(w.claimed.load(Ordering::Relaxed), 0);
        assert!(w.try_claim(99));
    }

    #[test]
    fn a_block_fits_every_worker_in_half_the_window() {
        assert_eq!(window(100).block(1024, 16), 3);
        assert_eq!(window(50_000).block(1024, 16), 1024);
        assert_eq!(window(10).block(1024, 64), 1);
        assert_eq!(window(0).block(1024, 16), 1024);
    }

    #[test]
    fn a_blocked_claim_goes_on_when_a_commit_is_acknowledged() {
        let w = std::sync::Arc::new(window(10));
        w.add(10);
        let claimer = {
            let w = std::sync::Arc::clone(&w);
            std::thread::spawn(move || w.claim_blocking(5, &|| false))
        };
        // Only an acknowledgement can let it through: `give_up` never does.
        w.covered(10);
        assert_eq!(claimer.join().unwrap(), 5);
        assert_eq!(w.claimed.load(Ordering::Relaxed), 5);
    }

    #[test]
    fn a_blocked_claim_gives_up_waiting_when_told() {
        let w = window(10);
        w.add(10);
        let asked = std::sync::atomic::AtomicU32::new(0);
        let n = w.claim_blocking(3, &|| asked.fetch_add(1, Ordering::Relaxed) >= 2);
        assert_eq!(n, 3);
        assert_eq!(w.claimed.load(Ordering::Relaxed), 3);
    }
}
