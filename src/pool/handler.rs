//! What a pool runs for each message (a [`Handler`] on worker threads, or
//! an [`AsyncHandler`] on tokio tasks), and how it reports failure.

use std::any::Any;
use std::fmt;
use std::future::Future;

use bytes::Bytes;

use crate::Message;

/// The user's processing step. Called on a lane thread, one message at a
/// time per lane; must be `Sync` because all lanes share one handler.
///
/// Returning an error (or panicking) makes the pool retry the message on the
/// same lane with backoff, then apply the configured
/// [`FailurePolicy`](crate::pool::FailurePolicy). Any closure
/// `Fn(&Message) -> Result<(), HandlerError>` is a handler.
pub trait Handler: Send + Sync + 'static {
    /// Processes one message. Must be idempotent enough to tolerate
    /// redelivery: delivery is at-least-once.
    fn handle(&self, msg: &Message) -> Result<(), HandlerError>;

    /// [`handle`](Self::handle), told which attempt this is (1 for the
    /// first, 2 for the first retry, ...): for handlers that pass it on
    /// (`--handler pipe` does). The pool calls this one; the default calls
    /// `handle`.
    fn handle_attempt(&self, msg: &Message, attempt: u32) -> Result<(), HandlerError> {
        let _ = attempt;
        self.handle(msg)
    }

    /// Makes the effect of every `handle` call this thread made since its
    /// last `flush` durable (written out), for handlers that buffer output
    /// (the print handler writes in blocks).
    ///
    /// The pool calls it on the worker thread that ran those messages,
    /// before it marks any of them finished, and whenever the worker is
    /// about to wait for work, so a quiet topic's output is not held back.
    /// A key's messages buffered on one thread are flushed before another
    /// thread may run that key, so per-key order holds in the output too.
    /// An error fails every message handled since the last successful flush
    /// on this thread (retried, then the failure policy). The default does
    /// nothing: a handler without buffering is done when `handle` returns.
    fn flush(&self) -> Result<(), HandlerError> {
        Ok(())
    }

    /// True for a handler whose [`flush`](Self::flush) writes buffered
    /// output: the `keys` scheduler then lets a worker claim many keys at
    /// once and publish them in one block (one write, one tracker update).
    /// False (the default, for handlers that are done when `handle`
    /// returns): a worker claims one key at a time and publishes after it,
    /// so a handler that hangs on one message holds back nothing of any
    /// other key or partition: no completion, no queued message (issue 15's
    /// stuck key). A handler that overrides `flush` must return true.
    fn buffers_output(&self) -> bool {
        false
    }
}

impl<F> Handler for F
where
    F: Fn(&Message) -> Result<(), HandlerError> + Send + Sync + 'static,
{
    fn handle(&self, msg: &Message) -> Result<(), HandlerError> {
        self(msg)
    }
}

/// The user's processing step as a future, for handlers that wait on I/O
/// (an HTTP call, a database): run by a pool built with
/// [`Pool::new_async`](crate::pool::Pool::new_async) on tokio tasks, so the
/// messages in flight are bounded by
/// [`PoolConfig::max_concurrency`](crate::pool::PoolConfig::max_concurrency),
/// not by threads.
///
/// The guarantees are those of [`Handler`]: at most one message per key
/// (per [`Ordering`](crate::pool::Ordering) group) is in flight, in offset
/// order; an error, a panic while polling, or running past
/// [`PoolConfig::handler_timeout`](crate::pool::PoolConfig::handler_timeout)
/// is retried with backoff, then the failure policy applies; only finished
/// prefixes are committable. Any closure `Fn(Message) -> impl Future<Output =
/// Result<(), HandlerError>>` is an async handler (it gets its own cheap
/// clone of the message: the payload is reference-counted).
///
/// ```
/// use mykafkams::Message;
/// use mykafkams::pool::{AsyncHandler, HandlerError};
///
/// struct Forward;
///
/// impl AsyncHandler for Forward {
///     async fn handle(&self, msg: &Message) -> Result<(), HandlerError> {
///         // e.g. an HTTP request with the value as its body
///         tokio::time::sleep(std::time::Duration::from_millis(1)).await;
///         let _ = msg.value.as_deref();
///         Ok(())
///     }
/// }
/// ```
pub trait AsyncHandler: Send + Sync + 'static {
    /// Processes one message. Must be idempotent enough to tolerate
    /// redelivery: delivery is at-least-once. Dropping the future (at a
    /// timeout) must leave nothing half-done that a retry cannot repeat.
    fn handle(&self, msg: &Message) -> impl Future<Output = Result<(), HandlerError>> + Send;

    /// [`handle`](Self::handle), told which attempt this is (1 for the
    /// first). The pool calls this one; the default calls `handle`.
    fn handle_attempt(
        &self,
        msg: &Message,
        attempt: u32,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        let _ = attempt;
        self.handle(msg)
    }
}

impl<F, Fut> AsyncHandler for F
where
    F: Fn(Message) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    fn handle(&self, msg: &Message) -> impl Future<Output = Result<(), HandlerError>> + Send {
        self(msg.clone())
    }
}

/// A handler failure: a human-readable reason (also what a dead-letter
/// callback receives and what is logged), optional named details for a
/// dead-letter copy's headers ([`with_detail`](Self::with_detail)), and the
/// number of attempts made, which the pool fills in before it hands the
/// error to the failure policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandlerError {
    message: String,
    permanent: bool,
    attempts: u32,
    details: Vec<(&'static str, Bytes)>,
}

impl HandlerError {
    /// An error with the given reason: retried with backoff, then the
    /// failure policy.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            permanent: false,
            attempts: 0,
            details: Vec::new(),
        }
    }

    /// An error that retrying cannot mend (the handler knows the message is
    /// bad): no retries, straight to the failure policy.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            permanent: true,
            ..Self::new(message)
        }
    }

    /// Attaches a named detail in raw bytes (an exit code, a stderr tail,
    /// ...). A dead-letter copy ([`crate::dlq`]) carries each one as a
    /// header of that name, e.g. [`crate::dlq::HEADER_STDERR`]; the pool's own
    /// headers win over a detail of the same name. A second detail of one
    /// name replaces the first.
    pub fn with_detail(mut self, name: &'static str, value: impl Into<Bytes>) -> Self {
        let value = value.into();
        match self.details.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.details.push((name, value)),
        }
        self
    }

    /// The detail attached under `name`, if any.
    pub fn detail(&self, name: &str) -> Option<&Bytes> {
        self.details
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
    }

    /// Every detail, in the order they were attached.
    pub fn details(&self) -> impl Iterator<Item = (&'static str, &Bytes)> {
        self.details.iter().map(|(n, v)| (*n, v))
    }

    /// How many times the handler ran the message before giving up (the
    /// first attempt and its retries), as the pool counted them when it
    /// applied the failure policy; 0 on an error the pool has not seen.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Records the attempts made; the worker calls it when it stops retrying.
    pub(crate) fn set_attempts(&mut self, attempts: u32) {
        self.attempts = attempts;
    }

    /// Whether this error skips the retries ([`permanent`](Self::permanent)).
    pub fn is_permanent(&self) -> bool {
        self.permanent
    }

    /// The reason text.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Turns a caught panic payload into an error, keeping the panic message
    /// when it is a string (what `panic!` produces).
    pub(crate) fn from_panic(payload: Box<dyn Any + Send>) -> Self {
        let text = if let Some(s) = payload.downcast_ref::<&str>() {
            (*s).to_owned()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else {
            "non-string panic payload".to_owned()
        };
        Self::new(format!("handler panicked: {text}"))
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for HandlerError {}

impl From<String> for HandlerError {
    fn from(message: String) -> Self {
        Self::new(message)
    }
}

impl From<&str> for HandlerError {
    fn from(message: &str) -> Self {
        Self::new(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_are_kept_by_name_and_a_second_one_replaces_the_first() {
        let err = HandlerError::permanent("bad")
            .with_detail("a", "1")
            .with_detail("b", Bytes::from_static(b"\xff"))
            .with_detail("a", "2");
        assert!(err.is_permanent());
        assert_eq!(err.detail("a").map(|v| &v[..]), Some(&b"2"[..]));
        assert_eq!(err.detail("b").map(|v| &v[..]), Some(&b"\xff"[..]));
        assert_eq!(err.detail("c"), None);
        let names: Vec<&str> = err.details().map(|(n, _)| n).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(err.attempts(), 0, "the pool sets it");
    }
}
