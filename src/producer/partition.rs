//! One partition as the sender sees it: its queue of sealed batches, oldest
//! first, each unsent, in flight or written, and what decides when the next
//! one may go (leader, requests in flight, retry pause, sequence numbers).

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::sender::MAX_BACKOFF;

/// Where a batch is: waiting to be sent (again), in the request with this
/// token, or acknowledged (kept only until the batches before it are).
pub(super) enum State {
    Unsent,
    InFlight(u64),
    Written,
}

/// A sealed batch and what the report and the budget need when it is done.
pub(super) struct Batch {
    pub(super) data: Bytes,
    pub(super) records: i32,
    pub(super) numbers: Vec<u64>,
    pub(super) budget: usize,
    pub(super) created: Instant,
    pub(super) state: State,
    /// Base sequence, once assigned (idempotent only).
    pub(super) sequence: Option<i32>,
    pub(super) sent_before: bool,
}

/// One partition's queue and sending state.
#[derive(Default)]
pub(super) struct Part {
    pub(super) leader: Option<i32>,
    pub(super) queue: VecDeque<Batch>,
    pub(super) in_flight: usize,
    pub(super) in_flight_node: Option<i32>,
    pub(super) next_sequence: i32,
    pub(super) last_acked_offset: i64,
    /// A batch failed: resend from the oldest once nothing is in flight.
    pub(super) resend: bool,
    pub(super) retry_at: Option<Instant>,
    pub(super) backoff: Duration,
    pub(super) last_error: Option<String>,
    pub(super) stopped: bool,
    /// A batch of the current epoch was acknowledged here, so the broker
    /// holds our sequence state for this partition. Until then one batch at a
    /// time: a broker without state accepts any sequence, so a second batch
    /// could be written ahead of a first one that failed (a leader that was
    /// not ready yet, say) and the first could then never follow.
    pub(super) confirmed: bool,
}

impl Part {
    /// Where the batch sent in request `token` sits in the queue.
    pub(super) fn position_of(&self, token: u64) -> Option<usize> {
        self.queue
            .iter()
            .position(|b| matches!(b.state, State::InFlight(t) if t == token))
    }

    /// Batch `idx` goes back to unsent: nothing new is sent for this
    /// partition until its requests in flight are back, then the
    /// unacknowledged batches go again, oldest first.
    pub(super) fn resend_later(&mut self, idx: usize, why: String) {
        let batch = &mut self.queue[idx];
        batch.state = State::Unsent;
        batch.sent_before = true;
        self.resend = true;
        self.last_error = Some(why);
    }

    /// Like [`resend_later`](Self::resend_later), after a growing pause.
    pub(super) fn retry_later(&mut self, idx: usize, why: String, now: Instant) {
        self.resend_later(idx, why);
        self.retry_at = Some(now + self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }
}

/// The sequence after `records` more, wrapping to 0 after `i32::MAX` as
/// Kafka does.
pub(super) fn increment_sequence(sequence: i32, records: i32) -> i32 {
    if sequence > i32::MAX - records {
        records - (i32::MAX - sequence) - 1
    } else {
        sequence + records
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_wrap_like_kafka() {
        assert_eq!(increment_sequence(0, 5), 5);
        assert_eq!(increment_sequence(i32::MAX - 1, 1), i32::MAX);
        assert_eq!(increment_sequence(i32::MAX, 1), 0);
        assert_eq!(increment_sequence(i32::MAX - 2, 5), 2);
    }
}
