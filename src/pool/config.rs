//! What a pool is built from: the scheduler, the failure policy, the
//! settings, and why building or submitting can fail.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use super::{HandlerError, Ordering};
use crate::Message;
use crate::offsets::OffsetError;

/// How messages are spread over the worker threads. Both keep the order
/// [`Ordering`] asks for and the same commit, retry and failure rules.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Scheduler {
    /// The original design: each thread has its own queue and a key always
    /// goes to the same thread (`hash(key) % workers`). Predictable, but a
    /// busy thread holds up its keys while others idle, and one slow message
    /// holds up every key on its thread.
    Lanes,
    /// A queue per key, and any free thread runs the next ready key (never
    /// two threads one key): work-conserving, and a slow key holds up only
    /// itself. The default: faster than lanes in every benchmark row.
    #[default]
    Keys,
}

impl FromStr for Scheduler {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "lanes" => Ok(Self::Lanes),
            "keys" => Ok(Self::Keys),
            other => Err(format!("unknown scheduler '{other}' (keys, lanes)")),
        }
    }
}

impl fmt::Display for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Lanes => "lanes",
            Self::Keys => "keys",
        })
    }
}

/// Callback of [`FailurePolicy::DeadLetter`]: gets the message and the last
/// error; `Ok` means the message is safely parked (e.g. produced to a DLQ
/// topic) and may be marked finished.
pub type DeadLetterFn = Arc<dyn Fn(&Message, &HandlerError) -> Result<(), String> + Send + Sync>;

/// What happens to a message whose handler still fails after all retries.
#[derive(Clone)]
pub enum FailurePolicy {
    /// Stop the pool: the message stays unfinished (the committable offset of
    /// its partition stays at it), [`Pool::submit`](super::Pool::submit) returns
    /// [`SubmitError::Stopped`], and lanes run no further messages. The
    /// failure is available from [`Pool::failure`](super::Pool::failure) and the shutdown report,
    /// so the process can commit and exit non-zero.
    Stop,
    /// Log a warning, count it in [`PoolStats::skipped`](super::PoolStats::skipped), mark it finished.
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
    /// Number of worker threads (lanes). Default: available parallelism.
    pub lanes: usize,
    /// Which scheduler spreads messages over the threads. Default
    /// [`Scheduler::Keys`].
    pub scheduler: Scheduler,
    /// Messages each lane can queue before submission waits (`lanes`
    /// scheduler only; `keys` is bounded by `max_in_flight` alone).
    /// Default 1024.
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
    /// Async pools ([`Pool::new_async`](super::Pool::new_async)) only: at
    /// most this many messages (so keys) in flight at once, each a tokio
    /// task. Default 1024.
    pub max_concurrency: usize,
    /// Async pools only: an attempt whose future has not finished after
    /// this long is dropped and counts as a failed attempt (retried, then
    /// the failure policy). `None` (the default) waits forever. A thread
    /// cannot be interrupted, so thread pools ignore it.
    pub handler_timeout: Option<Duration>,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            lanes: std::thread::available_parallelism().map_or(4, |n| n.get()),
            scheduler: Scheduler::default(),
            lane_capacity: 1024,
            max_in_flight: 10_000,
            ordering: Ordering::Key,
            retries: 3,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            failure_policy: FailurePolicy::Stop,
            max_concurrency: 1024,
            handler_timeout: None,
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
    /// failed dead-letter callback); see [`Pool::failure`](super::Pool::failure).
    Stopped,
    /// [`Pool::drain`](super::Pool::drain) or [`Pool::abort`](super::Pool::abort) was called.
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
