//! What a pool reports: its counters, and what a shutdown left undone.

use super::HandlerError;
use crate::Message;
use crate::offsets::TopicPartition;

/// The message that stopped the pool and the last error it got.
#[derive(Clone, Debug)]
pub struct FailedMessage {
    /// The message; its offset is the committable offset of its partition.
    pub message: Message,
    /// The last handler error (or dead-letter callback error).
    pub error: HandlerError,
}

/// Counters of a pool, readable at any time ([`Pool::stats`](super::Pool::stats)). Sums of
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
    /// Failed messages skipped by [`FailurePolicy::Skip`](super::FailurePolicy::Skip).
    pub skipped: u64,
    /// Failed messages handed to the dead-letter callback successfully.
    pub dead_lettered: u64,
    /// Messages dropped unprocessed because the pool stopped or aborted
    /// (left unfinished in the tracker, so they are redelivered).
    pub abandoned: u64,
    /// `submitted - finished`: accepted and not marked finished.
    pub in_flight: u64,
    /// Messages queued in each lane right now (`lanes` scheduler; empty
    /// for `keys`).
    pub lane_depth: Vec<usize>,
    /// Messages each worker thread has taken off a queue and run or abandoned.
    pub lane_processed: Vec<u64>,
    /// Messages waiting in the scheduler's queues right now (not yet taken
    /// by a worker).
    pub queued: u64,
    /// Keys with messages waiting for a free worker right now (`keys`
    /// scheduler; 0 for `lanes`).
    pub ready_keys: u64,
    /// Messages of revoked partitions left unfinished here (another group
    /// member handles them now); see [`Pool::note_revoked`](super::Pool::note_revoked).
    pub revoked: u64,
    /// Messages the committed offset map marked done: never submitted nor
    /// handled, finished in the tracker in their place; see
    /// [`Pool::note_already_done`](super::Pool::note_already_done).
    pub already_done: u64,
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

/// What [`Pool::drain`](super::Pool::drain) / [`Pool::abort`](super::Pool::abort) left undone.
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
