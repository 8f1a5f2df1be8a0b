//! The async engine's own promises (`Pool::new_async`), beyond the property
//! tests it shares with the thread schedulers (tests/prop_pool.rs): the
//! concurrency bound, one message per key in flight, the handler timeout,
//! and panics while polling.
//!
//! Waits are on events (a counter reaching a value, a drain returning), not
//! on elapsed time; the timeouts only bound a hang.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering as AO};
use std::time::Duration;

use bytes::Bytes;
use mykafkams::offsets::OffsetTracker;
use mykafkams::pool::{FailurePolicy, HandlerError, Pool, PoolConfig};
use mykafkams::{Headers, Message};
use parking_lot::Mutex;

const TOPIC: &str = "async";
const DRAIN: Duration = Duration::from_secs(30);

fn messages(n: usize, keys: usize) -> Vec<Message> {
    let topic: Arc<str> = Arc::from(TOPIC);
    (0..n)
        .map(|i| Message {
            topic: Arc::clone(&topic),
            partition: 0,
            offset: i as i64,
            key: Some(Bytes::from(format!("k{}", i % keys))),
            value: Some(Bytes::from(i.to_string())),
            timestamp_ms: 0,
            headers: Headers::new(),
        })
        .collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Tracks how many handler calls run at once, overall and per key.
#[derive(Default)]
struct InFlight {
    now: AtomicUsize,
    peak: AtomicUsize,
    per_key: Mutex<HashMap<Bytes, usize>>,
    overlaps: AtomicUsize,
}

impl InFlight {
    fn enter(&self, key: &Bytes) {
        let n = self.now.fetch_add(1, AO::SeqCst) + 1;
        self.peak.fetch_max(n, AO::SeqCst);
        let mut k = self.per_key.lock();
        let c = k.entry(key.clone()).or_default();
        *c += 1;
        if *c > 1 {
            self.overlaps.fetch_add(1, AO::SeqCst);
        }
    }

    fn leave(&self, key: &Bytes) {
        *self.per_key.lock().get_mut(key).unwrap() -= 1;
        self.now.fetch_sub(1, AO::SeqCst);
    }
}

/// 200 keys, concurrency 16: the pool keeps exactly 16 handlers running
/// (never more, and it does fill the bound), one per key, and finishes
/// everything with each key in offset order.
#[test]
fn concurrency_is_bounded_and_filled_with_one_message_per_key() {
    let rt = runtime();
    let _inside = rt.enter();
    let tracker = Arc::new(OffsetTracker::new());
    let flight = Arc::new(InFlight::default());
    let order: Arc<Mutex<HashMap<Bytes, i64>>> = Arc::default();
    let violations = Arc::new(AtomicUsize::new(0));
    let handler = {
        let (flight, order, violations) = (
            Arc::clone(&flight),
            Arc::clone(&order),
            Arc::clone(&violations),
        );
        move |m: Message| {
            let (flight, order, violations) = (
                Arc::clone(&flight),
                Arc::clone(&order),
                Arc::clone(&violations),
            );
            async move {
                let key = m.key.clone().unwrap();
                flight.enter(&key);
                tokio::time::sleep(Duration::from_millis(1)).await;
                if let Some(prev) = order.lock().insert(key.clone(), m.offset)
                    && prev > m.offset
                {
                    violations.fetch_add(1, AO::SeqCst);
                }
                flight.leave(&key);
                Ok::<(), HandlerError>(())
            }
        }
    };
    let cfg = PoolConfig {
        max_concurrency: 16,
        max_in_flight: 2_000,
        ..PoolConfig::default()
    };
    let pool = Pool::new_async(cfg, Arc::clone(&tracker), handler).unwrap();
    assert!(pool.is_async());
    pool.submit_batch(messages(2_000, 200)).unwrap();
    let report = pool.drain(DRAIN);
    assert!(!report.timed_out);
    assert_eq!(report.unfinished, 0);
    assert_eq!(report.stats.finished, 2_000);
    assert_eq!(
        flight.overlaps.load(AO::SeqCst),
        0,
        "a key ran twice at once"
    );
    assert_eq!(violations.load(AO::SeqCst), 0, "a key ran out of order");
    assert_eq!(flight.peak.load(AO::SeqCst), 16, "peak concurrency");
    assert_eq!(tracker.committable(TOPIC, 0), Some(2_000));
}

/// A future that never completes is dropped at the timeout and counts as a
/// failed attempt: retried, then the failure policy (skip), and the other
/// keys are not held up meanwhile.
#[test]
fn a_hung_future_times_out_retries_then_meets_the_policy() {
    let rt = runtime();
    let _inside = rt.enter();
    let tracker = Arc::new(OffsetTracker::new());
    let attempts = Arc::new(AtomicU32::new(0));
    let handler = {
        let attempts = Arc::clone(&attempts);
        move |m: Message| {
            let attempts = Arc::clone(&attempts);
            async move {
                if m.offset == 0 {
                    attempts.fetch_add(1, AO::SeqCst);
                    std::future::pending::<()>().await;
                }
                Ok::<(), HandlerError>(())
            }
        }
    };
    let cfg = PoolConfig {
        max_concurrency: 4,
        retries: 2,
        backoff_initial: Duration::from_millis(1),
        handler_timeout: Some(Duration::from_millis(50)),
        failure_policy: FailurePolicy::Skip,
        ..PoolConfig::default()
    };
    let pool = Pool::new_async(cfg, Arc::clone(&tracker), handler).unwrap();
    pool.submit_batch(messages(100, 10)).unwrap();
    let report = pool.drain(DRAIN);
    assert!(!report.timed_out);
    assert_eq!(attempts.load(AO::SeqCst), 3, "1 attempt + 2 retries");
    assert_eq!(report.stats.retried, 2);
    assert_eq!(report.stats.failed, 1);
    assert_eq!(report.stats.skipped, 1);
    assert_eq!(report.stats.finished, 100);
    assert_eq!(tracker.committable(TOPIC, 0), Some(100));
}

/// A panic while the future is polled fails that attempt only: the message
/// is retried and succeeds, and the task carries on with its key.
#[test]
fn a_panicking_future_is_retried() {
    let rt = runtime();
    let _inside = rt.enter();
    let tracker = Arc::new(OffsetTracker::new());
    /// Panics at the first attempt of every tenth message.
    struct PanicsFirst;
    impl mykafkams::pool::AsyncHandler for PanicsFirst {
        async fn handle(&self, _m: &Message) -> Result<(), HandlerError> {
            Ok(())
        }
        async fn handle_attempt(&self, m: &Message, attempt: u32) -> Result<(), HandlerError> {
            tokio::task::yield_now().await;
            if m.offset % 10 == 0 && attempt == 1 {
                std::panic::resume_unwind(Box::new("injected panic"));
            }
            Ok(())
        }
    }
    let cfg = PoolConfig {
        max_concurrency: 8,
        backoff_initial: Duration::from_millis(1),
        ..PoolConfig::default()
    };
    let pool = Pool::new_async(cfg, Arc::clone(&tracker), PanicsFirst).unwrap();
    pool.submit_batch(messages(100, 7)).unwrap();
    let report = pool.drain(DRAIN);
    assert!(!report.timed_out);
    assert!(report.failure.is_none());
    assert_eq!(report.stats.retried, 10);
    assert_eq!(report.stats.finished, 100);
    assert_eq!(tracker.committable(TOPIC, 0), Some(100));
}

/// A handler that panics while *creating* its future (before any `async`
/// block runs): that attempt fails and is retried like any other, and the
/// task carries on (a lost task would hold its key and the drain forever).
#[test]
fn a_panic_while_creating_the_future_is_retried() {
    /// Panics at the first attempt of every tenth message, outside its future.
    struct PanicsBeforeTheFuture;
    impl mykafkams::pool::AsyncHandler for PanicsBeforeTheFuture {
        async fn handle(&self, _m: &Message) -> Result<(), HandlerError> {
            Ok(())
        }
        fn handle_attempt(
            &self,
            m: &Message,
            attempt: u32,
        ) -> impl std::future::Future<Output = Result<(), HandlerError>> + Send {
            if m.offset % 10 == 0 && attempt == 1 {
                std::panic::resume_unwind(Box::new("injected panic"));
            }
            async { Ok(()) }
        }
    }
    let rt = runtime();
    let _inside = rt.enter();
    let tracker = Arc::new(OffsetTracker::new());
    let cfg = PoolConfig {
        max_concurrency: 8,
        backoff_initial: Duration::from_millis(1),
        ..PoolConfig::default()
    };
    let pool = Pool::new_async(cfg, Arc::clone(&tracker), PanicsBeforeTheFuture).unwrap();
    pool.submit_batch(messages(100, 7)).unwrap();
    let report = pool.drain(Duration::from_secs(10));
    assert!(!report.timed_out, "{report:?}");
    assert_eq!(report.stats.retried, 10);
    assert_eq!(report.stats.finished, 100);
    assert_eq!(tracker.committable(TOPIC, 0), Some(100));
}

/// An async pool on a runtime without a timer is a clear error at build
/// time, not a panic inside a task later.
#[test]
fn an_async_pool_needs_the_runtimes_timer() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let _inside = rt.enter();
    let err = Pool::new_async(
        PoolConfig::default(),
        Arc::new(OffsetTracker::new()),
        |_m: Message| async { Ok::<(), HandlerError>(()) },
    )
    .unwrap_err();
    assert!(err.to_string().contains("timer"), "{err}");
}

/// Building an async pool outside a tokio runtime is a clear error, not a
/// panic.
#[test]
fn an_async_pool_needs_a_runtime() {
    let err = Pool::new_async(
        PoolConfig::default(),
        Arc::new(OffsetTracker::new()),
        |_m: Message| async { Ok::<(), HandlerError>(()) },
    )
    .unwrap_err();
    assert!(err.to_string().contains("tokio runtime"), "{err}");
}
