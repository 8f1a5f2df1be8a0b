//! Property tests of the ordered worker pool: order, completeness, safe
//! commits, crash replay, and lane balance (DESIGN rules 1-5).
//!
//! Timing only varies the interleavings; no assertion depends on it.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering as AO};
use std::sync::{Arc, Once, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mykafkams::offsets::OffsetTracker;
use mykafkams::partitioner::partition_for_key;
use mykafkams::pool::routing::lane_for_key;
use mykafkams::pool::{
    FailurePolicy, HandlerError, Ordering, Pool, PoolConfig, Scheduler, ShutdownReport, SubmitError,
};
use mykafkams::{Headers, Message};
use parking_lot::Mutex;
use proptest::prelude::*;

const TOPIC: &str = "orders";
const INJECTED: &str = "injected failure";

/// Injected panics are expected; keep the test output readable by not
/// printing them (every other panic still prints).
fn quiet_injected_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            if !msg.contains(INJECTED) {
                default(info);
            }
        }));
    });
}

/// One generated message before offsets are assigned.
#[derive(Clone, Debug)]
struct Spec {
    partition: i32,
    key: Option<u32>,
    /// Extra offsets skipped before this one (compaction, markers).
    gap: i64,
    delay_us: u8,
    /// Attempts that fail before one succeeds.
    fails: u8,
    /// Fail by panicking instead of returning an error.
    panic: bool,
}

fn spec(partitions: i32, key_space: u32, max_fails: u8) -> impl Strategy<Value = Spec> {
    (
        0..partitions,
        prop_oneof![1 => Just(None), 5 => (0..key_space).prop_map(Some)],
        prop_oneof![3 => Just(0i64), 1 => 1..5i64],
        prop_oneof![3 => Just(0u8), 1 => 0..20u8],
        prop_oneof![4 => Just(0u8), 1 => 0..=max_fails],
        any::<bool>(),
    )
        .prop_map(|(partition, key, gap, delay_us, fails, panic)| Spec {
            partition,
            key,
            gap,
            delay_us,
            fails,
            panic,
        })
}

/// Small key spaces (heavy per-key ordering) and large ones (spread).
fn specs(max_fails: u8) -> impl Strategy<Value = Vec<Spec>> {
    (1..5i32, prop_oneof![Just(3u32), Just(1000u32)]).prop_flat_map(move |(parts, keys)| {
        proptest::collection::vec(spec(parts, keys, max_fails), 0..160)
    })
}

/// Messages, per-message behaviour, and what happened to each.
struct World {
    msgs: Vec<Message>,
    specs: Vec<Spec>,
    index: HashMap<(i32, i64), usize>,
    attempts: Vec<AtomicU32>,
    successes: Vec<AtomicU32>,
    /// Message indices in the order their handler succeeded.
    log: Mutex<Vec<usize>>,
    violations: Mutex<Vec<String>>,
}

impl World {
    fn new(specs: Vec<Spec>) -> Arc<Self> {
        let topic: Arc<str> = Arc::from(TOPIC);
        let mut next: BTreeMap<i32, i64> = BTreeMap::new();
        let mut msgs = Vec::new();
        let mut index = HashMap::new();
        for (i, s) in specs.iter().enumerate() {
            let n = next.entry(s.partition).or_insert(0);
            *n += s.gap;
            let offset = *n;
            *n += 1;
            index.insert((s.partition, offset), i);
            msgs.push(Message {
                topic: Arc::clone(&topic),
                partition: s.partition,
                offset,
                key: s.key.map(|k| Bytes::from(format!("key-{k}"))),
                value: Some(Bytes::from_static(b"v")),
                timestamp_ms: 0,
                headers: Headers::new(),
            });
        }
        let n = msgs.len();
        Arc::new(Self {
            msgs,
            specs,
            index,
            attempts: (0..n).map(|_| AtomicU32::new(0)).collect(),
            successes: (0..n).map(|_| AtomicU32::new(0)).collect(),
            log: Mutex::new(Vec::new()),
            violations: Mutex::new(Vec::new()),
        })
    }

    /// The next offset to fetch per partition after all messages.
    fn ends(&self) -> BTreeMap<i32, i64> {
        let mut ends = BTreeMap::new();
        for m in &self.msgs {
            ends.insert(m.partition, m.offset + 1);
        }
        ends
    }

    fn violation(&self, v: String) {
        self.violations.lock().push(v);
    }

    /// The handler: checks the in-handler commit invariant, waits, fails as
    /// planned, records success.
    fn handler(
        self: &Arc<Self>,
        tracker: &Arc<OffsetTracker>,
    ) -> impl Fn(&Message) -> Result<(), HandlerError> + Send + Sync + 'static {
        let world = Arc::clone(self);
        let tracker = Arc::clone(tracker);
        move |m: &Message| {
            let i = world.index[&(m.partition, m.offset)];
            // This message is dispatched and not finished, so the
            // committable offset of its partition cannot have passed it.
            match tracker.committable(&m.topic, m.partition) {
                Some(c) if c <= m.offset => {}
                other => world.violation(format!(
                    "in handler of p{} o{}: committable {other:?}",
                    m.partition, m.offset
                )),
            }
            let s = &world.specs[i];
            spin(s.delay_us);
            let attempt = world.attempts[i].fetch_add(1, AO::SeqCst);
            if attempt < u32::from(s.fails) {
                if s.panic {
                    panic!("{INJECTED} p{} o{}", m.partition, m.offset);
                }
                return Err(HandlerError::from(INJECTED));
            }
            world.successes[i].fetch_add(1, AO::SeqCst);
            world.log.lock().push(i);
            Ok(())
        }
    }

    /// Ordering group of message `i`: its key, or its partition when unkeyed
    /// (Key mode); its partition (Partition mode).
    fn group(&self, i: usize, ordering: Ordering) -> (Option<u32>, i32) {
        let s = &self.specs[i];
        match (ordering, s.key) {
            (Ordering::Key, Some(k)) => (Some(k), -1),
            _ => (None, s.partition),
        }
    }

    /// Every group's successes appear in submission (index) order.
    fn check_order(&self, log: &[usize], ordering: Ordering) -> Result<(), String> {
        let mut last: HashMap<(Option<u32>, i32), usize> = HashMap::new();
        for &i in log {
            let g = self.group(i, ordering);
            if let Some(prev) = last.insert(g, i)
                && prev > i
            {
                return Err(format!(
                    "group {g:?}: message {i} finished after later message {prev}"
                ));
            }
        }
        Ok(())
    }
}

/// Busy-waits a few microseconds (sleep granularity is far coarser).
fn spin(us: u8) {
    if us == 0 {
        return;
    }
    let until = Instant::now() + Duration::from_micros(u64::from(us));
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}

/// What runs the handler: worker threads under a scheduler, or tokio tasks
/// (`Pool::new_async`, with `lanes` as its concurrency).
#[derive(Clone, Copy, Debug)]
enum Engine {
    Threads(Scheduler),
    Async,
}

fn config(
    engine: Engine,
    lanes: usize,
    ordering: Ordering,
    policy: FailurePolicy,
    retries: u32,
) -> PoolConfig {
    PoolConfig {
        lanes,
        scheduler: match engine {
            Engine::Threads(s) => s,
            Engine::Async => Scheduler::Keys,
        },
        lane_capacity: 4,
        max_in_flight: 32,
        ordering,
        retries,
        backoff_initial: Duration::from_micros(1),
        backoff_max: Duration::from_micros(20),
        failure_policy: policy,
        max_concurrency: lanes,
        handler_timeout: None,
    }
}

/// The runtime every async pool of these tests runs on.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .expect("test runtime")
    })
}

/// A pool on `engine` running the test's handler. On the async engine the
/// handler runs inside a future, after a yield (a real suspension point, so
/// tasks interleave as I/O-bound handlers do); its panics happen while the
/// future is polled.
fn new_pool<H>(
    engine: Engine,
    cfg: PoolConfig,
    tracker: Arc<OffsetTracker>,
    handler: H,
) -> Result<Pool, mykafkams::pool::BuildError>
where
    H: Fn(&Message) -> Result<(), HandlerError> + Send + Sync + 'static,
{
    match engine {
        Engine::Threads(_) => Pool::new(cfg, tracker, handler),
        Engine::Async => {
            let _inside = runtime().enter();
            let handler = Arc::new(handler);
            Pool::new_async(cfg, tracker, move |m: Message| {
                let handler = Arc::clone(&handler);
                async move {
                    tokio::task::yield_now().await;
                    handler(&m)
                }
            })
        }
    }
}

/// Submits `msgs` in order: one at a time (`batch == 0`) or with
/// `submit_batch` in batches of `batch` messages.
fn submit_all(pool: &Pool, msgs: &[Message], batch: usize) -> Result<(), SubmitError> {
    if batch == 0 {
        msgs.iter().try_for_each(|m| pool.submit(m.clone()))
    } else {
        msgs.chunks(batch)
            .try_for_each(|c| pool.submit_batch(c.to_vec()))
    }
}

/// Single submission, small batches (many steps, several partitions per
/// batch) and large ones (above the pool's step and capacities).
fn batch_size() -> impl Strategy<Value = usize> {
    prop_oneof![Just(0usize), 1..8usize, 8..400usize]
}

/// Every property runs against both thread schedulers and the async engine.
fn scheduler() -> impl Strategy<Value = Engine> {
    prop_oneof![
        Just(Engine::Threads(Scheduler::Lanes)),
        Just(Engine::Threads(Scheduler::Keys)),
        Just(Engine::Async),
    ]
}

fn ordering() -> impl Strategy<Value = Ordering> {
    prop_oneof![Just(Ordering::Key), Just(Ordering::Partition)]
}

const DRAIN: Duration = Duration::from_secs(30);

fn assert_drained(report: &ShutdownReport) -> Result<(), TestCaseError> {
    prop_assert!(!report.timed_out, "drain timed out: {:?}", report);
    prop_assert_eq!(report.lanes_still_running, 0);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Order + completeness with retriable failures (errors and panics, at
    /// most `retries` per message): each group finishes in submission order
    /// and every message succeeds exactly once.
    #[test]
    fn order_and_exactly_once_with_retries(
        specs in specs(2),
        lanes in 1..=64usize,
        scheduler in scheduler(),
        ordering in ordering(),
        batch in batch_size(),
    ) {
        quiet_injected_panics();
        let world = World::new(specs);
        let tracker = Arc::new(OffsetTracker::new());
        let pool = new_pool(scheduler, config(scheduler, lanes, ordering, FailurePolicy::Stop, 2), Arc::clone(&tracker), world.handler(&tracker)).unwrap();
        submit_all(&pool, &world.msgs, batch).unwrap();
        let report = pool.drain(DRAIN);
        assert_drained(&report)?;
        prop_assert_eq!(report.unfinished, 0, "{:?}", report);
        prop_assert!(report.failure.is_none());
        let log = world.log.lock().clone();
        prop_assert_eq!(log.len(), world.msgs.len());
        for (i, s) in world.successes.iter().enumerate() {
            prop_assert_eq!(s.load(AO::SeqCst), 1, "message {} handled {} times", i, s.load(AO::SeqCst));
        }
        if let Err(e) = world.check_order(&log, ordering) { prop_assert!(false, "{}", e); }
        let v = world.violations.lock().clone();
        prop_assert!(v.is_empty(), "{:?}", v);
        let stats = &report.stats;
        prop_assert_eq!(stats.submitted, world.msgs.len() as u64);
        prop_assert_eq!(stats.finished, world.msgs.len() as u64);
        let expected_retries: u64 = world.specs.iter().map(|s| u64::from(s.fails)).sum();
        prop_assert_eq!(stats.retried, expected_retries);
        prop_assert_eq!(pool.capacity_used(), 0);
        prop_assert!(stats.lane_depth.iter().all(|d| *d == 0), "{:?}", stats.lane_depth);
    }

    /// Unordered mode still handles everything exactly once.
    #[test]
    fn unordered_handles_everything_once(specs in specs(0), lanes in 1..=64usize, scheduler in scheduler()) {
        let world = World::new(specs);
        let tracker = Arc::new(OffsetTracker::new());
        let pool = new_pool(scheduler, config(scheduler, lanes, Ordering::Unordered, FailurePolicy::Stop, 0), Arc::clone(&tracker), world.handler(&tracker)).unwrap();
        for m in &world.msgs {
            pool.submit(m.clone()).unwrap();
        }
        let report = pool.drain(DRAIN);
        assert_drained(&report)?;
        for s in &world.successes {
            prop_assert_eq!(s.load(AO::SeqCst), 1);
        }
        for (p, end) in world.ends() {
            prop_assert_eq!(tracker.committable(TOPIC, p), Some(end));
        }
    }

    /// Skip and DeadLetter: messages failing more often than `retries` are
    /// reported failed exactly once (skipped / dead-lettered), every other
    /// message is handled exactly once, and all of them end finished.
    #[test]
    fn permanent_failures_are_skipped_or_dead_lettered_once(
        specs in specs(4),
        lanes in 1..=64usize,
        scheduler in scheduler(),
        ordering in ordering(),
        dead_letter in any::<bool>(),
    ) {
        quiet_injected_panics();
        let world = World::new(specs);
        let tracker = Arc::new(OffsetTracker::new());
        let retries = 1;
        let lettered: Arc<Mutex<Vec<(i32, i64)>>> = Arc::default();
        let attempts: Arc<Mutex<Vec<u32>>> = Arc::default();
        let policy = if dead_letter {
            let lettered = Arc::clone(&lettered);
            let attempts = Arc::clone(&attempts);
            FailurePolicy::DeadLetter(Arc::new(move |m: &Message, e: &HandlerError| {
                assert!(e.message().contains(INJECTED));
                lettered.lock().push((m.partition, m.offset));
                attempts.lock().push(e.attempts());
                Ok(())
            }))
        } else {
            FailurePolicy::Skip
        };
        let pool = new_pool(scheduler, config(scheduler, lanes, ordering, policy, retries), Arc::clone(&tracker), world.handler(&tracker)).unwrap();
        for m in &world.msgs {
            pool.submit(m.clone()).unwrap();
        }
        let report = pool.drain(DRAIN);
        assert_drained(&report)?;
        prop_assert_eq!(report.unfinished, 0);
        let mut expect_failed = Vec::new();
        for (i, s) in world.specs.iter().enumerate() {
            let permanent = u32::from(s.fails) > retries;
            prop_assert_eq!(world.successes[i].load(AO::SeqCst), u32::from(!permanent), "message {}", i);
            if permanent {
                expect_failed.push((world.msgs[i].partition, world.msgs[i].offset));
            }
        }
        let stats = &report.stats;
        prop_assert_eq!(stats.failed, expect_failed.len() as u64);
        prop_assert_eq!(stats.finished, world.msgs.len() as u64);
        if dead_letter {
            let mut got = lettered.lock().clone();
            got.sort();
            expect_failed.sort();
            prop_assert_eq!(got, expect_failed);
            prop_assert_eq!(stats.dead_lettered, stats.failed);
            // The policy is told every attempt made: the first and each retry.
            for a in attempts.lock().iter() {
                prop_assert_eq!(*a, retries + 1);
            }
        } else {
            prop_assert_eq!(stats.skipped, stats.failed);
        }
        if let Err(e) = world.check_order(&world.log.lock(), ordering) { prop_assert!(false, "{}", e); }
        for (p, end) in world.ends() {
            prop_assert_eq!(tracker.committable(TOPIC, p), Some(end));
        }
    }

    /// Safe commits, observed concurrently by a sampler thread and in every
    /// handler call: every offset below a partition's committable offset is
    /// finished. After drain, committable is the next offset to fetch (or a
    /// later fetch position the fetcher reported).
    #[test]
    fn committable_only_covers_finished_messages(
        specs in specs(2),
        lanes in 1..=64usize,
        scheduler in scheduler(),
        ordering in ordering(),
        skip_ahead in proptest::collection::vec(0..3i64, 4),
        batch in batch_size(),
    ) {
        quiet_injected_panics();
        let world = World::new(specs);
        let tracker = Arc::new(OffsetTracker::new());
        for p in 0..4 {
            tracker.set_next_fetch(&Arc::from(TOPIC), p, 0);
        }
        let pool = new_pool(scheduler, config(scheduler, lanes, ordering, FailurePolicy::Stop, 2), Arc::clone(&tracker), world.handler(&tracker)).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = {
            let world = Arc::clone(&world);
            let tracker = Arc::clone(&tracker);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut by_partition: BTreeMap<i32, Vec<(i64, usize)>> = BTreeMap::new();
                for (i, m) in world.msgs.iter().enumerate() {
                    by_partition.entry(m.partition).or_default().push((m.offset, i));
                }
                let mut samples = 0u64;
                loop {
                    let last_round = stop.load(AO::SeqCst);
                    for (p, offs) in &by_partition {
                        let c = tracker.committable(TOPIC, *p).unwrap_or(0);
                        for (o, i) in offs.iter().take_while(|(o, _)| *o < c) {
                            if world.successes[*i].load(AO::SeqCst) == 0 {
                                world.violation(format!("sampled committable {c} of p{p} but offset {o} unfinished"));
                            }
                        }
                    }
                    samples += 1;
                    if last_round { return samples; }
                    std::thread::yield_now();
                }
            })
        };
        submit_all(&pool, &world.msgs, batch).unwrap();
        let mut expect = world.ends();
        for (p, extra) in skip_ahead.iter().enumerate() {
            let p = p as i32;
            let end = expect.get(&p).copied().unwrap_or(0) + extra;
            tracker.set_next_fetch(&Arc::from(TOPIC), p, end);
            expect.insert(p, end);
        }
        let report = pool.drain(DRAIN);
        stop.store(true, AO::SeqCst);
        let samples = sampler.join().unwrap();
        prop_assert!(samples > 0);
        assert_drained(&report)?;
        let v = world.violations.lock().clone();
        prop_assert!(v.is_empty(), "{:?}", v);
        for (p, end) in expect {
            prop_assert_eq!(tracker.committable(TOPIC, p), Some(end), "partition {}", p);
        }
    }

    /// Crash replay: abort after an arbitrary prefix, then run a fresh pool
    /// over every message from each partition's committable offset on.
    /// Together nothing is lost, and the second run keeps per-key order.
    #[test]
    fn crash_replay_loses_nothing(
        specs in specs(0),
        lanes in 1..=64usize,
        scheduler in scheduler(),
        cut in any::<proptest::sample::Index>(),
    ) {
        let world = World::new(specs);
        let topic: Arc<str> = Arc::from(TOPIC);
        let tracker = Arc::new(OffsetTracker::new());
        for p in 0..4 {
            tracker.set_next_fetch(&topic, p, 0);
        }
        let pool = new_pool(scheduler, config(scheduler, lanes, Ordering::Key, FailurePolicy::Stop, 0), Arc::clone(&tracker), world.handler(&tracker)).unwrap();
        let cut = if world.msgs.is_empty() { 0 } else { cut.index(world.msgs.len() + 1) };
        for m in &world.msgs[..cut] {
            pool.submit(m.clone()).unwrap();
        }
        let report = pool.abort(DRAIN);
        prop_assert!(!report.timed_out);
        prop_assert!(matches!(pool.submit(world.msgs.first().cloned().unwrap_or_else(|| dummy(&topic))), Err(SubmitError::ShuttingDown)));
        let first_run: Vec<u32> = world.successes.iter().map(|s| s.load(AO::SeqCst)).collect();
        let resume: BTreeMap<i32, i64> = (0..4).map(|p| (p, tracker.committable(TOPIC, p).unwrap())).collect();
        for u in &report.partitions {
            prop_assert_eq!(Some(&u.lowest_unfinished), resume.get(&u.tp.partition));
        }

        // Restart: what a consumer would fetch from the committed offsets.
        let log_len_before = world.log.lock().len();
        let tracker2 = Arc::new(OffsetTracker::new());
        for (p, c) in &resume {
            tracker2.set_next_fetch(&topic, *p, *c);
        }
        let pool2 = new_pool(scheduler, config(scheduler, lanes, Ordering::Key, FailurePolicy::Stop, 0), Arc::clone(&tracker2), world.handler(&tracker2)).unwrap();
        let mut replayed = Vec::new();
        for (i, m) in world.msgs.iter().enumerate() {
            if m.offset >= resume[&m.partition] {
                pool2.submit(m.clone()).unwrap();
                replayed.push(i);
            }
        }
        let report2 = pool2.drain(DRAIN);
        assert_drained(&report2)?;
        prop_assert_eq!(report2.unfinished, 0);
        for (i, s) in world.successes.iter().enumerate() {
            prop_assert!(s.load(AO::SeqCst) >= 1, "message {} lost (first run {})", i, first_run[i]);
        }
        let second_log: Vec<usize> = world.log.lock()[log_len_before..].to_vec();
        prop_assert_eq!(second_log.len(), replayed.len());
        if let Err(e) = world.check_order(&second_log, Ordering::Key) { prop_assert!(false, "{}", e); }
    }

    /// Stop policy: the first permanently failing message stops the pool, is
    /// never marked finished, and the committable offset of its partition
    /// does not pass it.
    #[test]
    fn stop_keeps_committable_at_the_failed_message(
        specs in specs(3),
        lanes in 1..=64usize,
        scheduler in scheduler(),
        ordering in ordering(),
        batch in batch_size(),
    ) {
        quiet_injected_panics();
        let world = World::new(specs);
        let tracker = Arc::new(OffsetTracker::new());
        let pool = new_pool(scheduler, config(scheduler, lanes, ordering, FailurePolicy::Stop, 1), Arc::clone(&tracker), world.handler(&tracker)).unwrap();
        let mut refused = false;
        match submit_all(&pool, &world.msgs, batch) {
            Ok(()) => {}
            Err(SubmitError::Stopped) => refused = true,
            Err(e) => prop_assert!(false, "unexpected {:?}", e),
        }
        let report = pool.drain(DRAIN);
        assert_drained(&report)?;
        let any_permanent = world.specs.iter().any(|s| s.fails > 1);
        // A permanently failing message either ran (and stopped the pool)
        // or was dropped because an earlier one already had.
        prop_assert_eq!(report.failure.is_some(), any_permanent);
        match &report.failure {
            None => prop_assert!(!refused),
            Some(f) => {
                let i = world.index[&(f.message.partition, f.message.offset)];
                prop_assert!(world.specs[i].fails > 1);
                prop_assert_eq!(world.successes[i].load(AO::SeqCst), 0);
                let c = tracker.committable(TOPIC, f.message.partition).unwrap();
                prop_assert!(c <= f.message.offset, "committable {} passed failed offset {}", c, f.message.offset);
                prop_assert!(report.unfinished >= 1);
            }
        }
        let v = world.violations.lock().clone();
        prop_assert!(v.is_empty(), "{:?}", v);
        // Whatever happened, every offset below committable succeeded.
        for (i, m) in world.msgs.iter().enumerate() {
            if let Some(c) = tracker.committable(TOPIC, m.partition)
                && m.offset < c
            {
                prop_assert_eq!(world.successes[i].load(AO::SeqCst), 1);
            }
        }
    }

    /// Async submission with tiny capacities: never deadlocks (no lost
    /// wakeup), keeps order, handles everything once.
    #[test]
    fn async_submit_keeps_order_without_blocking_the_runtime(
        specs in specs(0),
        lanes in 1..=8usize,
        scheduler in scheduler(),
        cap in 1..4usize,
        batch in batch_size(),
    ) {
        let world = World::new(specs);
        let tracker = Arc::new(OffsetTracker::new());
        let cfg = PoolConfig { lane_capacity: 1, max_in_flight: cap, ..config(scheduler, lanes, Ordering::Key, FailurePolicy::Stop, 0) };
        let pool = Arc::new(new_pool(scheduler, cfg, Arc::clone(&tracker), world.handler(&tracker)).unwrap());
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let msgs = world.msgs.clone();
        let p = Arc::clone(&pool);
        let done = rt.block_on(async move {
            tokio::time::timeout(Duration::from_secs(30), async move {
                if batch == 0 {
                    for m in msgs {
                        p.submit_async(m).await.unwrap();
                    }
                } else {
                    for c in msgs.chunks(batch) {
                        // A lazily consumed iterator, as a fetch loop may pass.
                        p.submit_batch_async(c.iter().cloned()).await.unwrap();
                    }
                }
            }).await
        });
        prop_assert!(done.is_ok(), "submit_async hung");
        let report = pool.drain(DRAIN);
        assert_drained(&report)?;
        for s in &world.successes {
            prop_assert_eq!(s.load(AO::SeqCst), 1);
        }
        if let Err(e) = world.check_order(&world.log.lock(), Ordering::Key) { prop_assert!(false, "{}", e); }
    }
}

/// A handler that runs only as many messages as it is allowed to (the rest
/// wait), so a test can hold the pool full at a chosen point.
struct Gate {
    allowed: AtomicU32,
    open: AtomicBool,
}

impl Gate {
    fn new(allowed: u32) -> Arc<Self> {
        Arc::new(Self {
            allowed: AtomicU32::new(allowed),
            open: AtomicBool::new(false),
        })
    }

    fn pass(&self) {
        loop {
            if self.open.load(AO::SeqCst) {
                return;
            }
            let a = self.allowed.load(AO::SeqCst);
            if a > 0
                && self
                    .allowed
                    .compare_exchange(a, a - 1, AO::SeqCst, AO::SeqCst)
                    .is_ok()
            {
                return;
            }
            std::thread::yield_now();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Bounded memory under batch submission: sampled continuously, the
    /// in-flight budget in use, the tracker's unfinished messages and every
    /// lane's queue stay within `max_in_flight` / `lane_capacity`, however
    /// large the batches; and everything is still handled once, in order.
    #[test]
    fn batch_submit_respects_max_in_flight_and_lane_capacity(
        specs in specs(0),
        lanes in 1..=8usize,
        scheduler in scheduler(),
        lane_capacity in 1..6usize,
        max_in_flight in 1..40usize,
        batch in 1..400usize,
    ) {
        let world = World::new(specs);
        let tracker = Arc::new(OffsetTracker::new());
        let cfg = PoolConfig { lane_capacity, max_in_flight, ..config(scheduler, lanes, Ordering::Key, FailurePolicy::Stop, 0) };
        let pool = Arc::new(new_pool(scheduler, cfg, Arc::clone(&tracker), world.handler(&tracker)).unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = {
            let (pool, stop) = (Arc::clone(&pool), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut bad = Vec::new();
                // The budget is one counter, taken before a message is
                // dispatched in the tracker and given back after it is
                // finished there, so it bounds the tracker too. The
                // tracker's own total is no snapshot (a sum over partitions
                // read one after another: a message finishing in one while
                // the next is dispatched in another can be counted twice),
                // so it is checked once everything is finished, below.
                while !stop.load(AO::SeqCst) {
                    let used = pool.capacity_used();
                    let depth = pool.stats().lane_depth;
                    if used > max_in_flight {
                        bad.push(format!("in flight: budget {used} > {max_in_flight}"));
                    }
                    if depth.iter().any(|d| *d > lane_capacity) {
                        bad.push(format!("lane depth {depth:?} > {lane_capacity}"));
                    }
                    std::thread::yield_now();
                }
                bad
            })
        };
        submit_all(&pool, &world.msgs, batch).unwrap();
        let report = pool.drain(DRAIN);
        stop.store(true, AO::SeqCst);
        let bad = sampler.join().unwrap();
        prop_assert!(bad.is_empty(), "{:?}", &bad[..bad.len().min(5)]);
        assert_drained(&report)?;
        prop_assert_eq!(report.unfinished, 0);
        prop_assert_eq!(pool.capacity_used(), 0);
        prop_assert_eq!(tracker.total_in_flight(), 0);
        for s in &world.successes {
            prop_assert_eq!(s.load(AO::SeqCst), 1);
        }
        if let Err(e) = world.check_order(&world.log.lock(), Ordering::Key) { prop_assert!(false, "{}", e); }
        for (p, end) in world.ends() {
            prop_assert_eq!(tracker.committable(TOPIC, p), Some(end));
        }
    }

    /// A batch holding an offset the tracker refuses (not increasing): the
    /// messages before it are queued and handled once, it and the ones after
    /// it are never dispatched or handled, the error names it, and the
    /// committable offsets cover exactly the queued prefix.
    #[test]
    fn batch_submit_refuses_a_bad_offset_after_queueing_the_prefix(
        specs in specs(0).prop_filter("needs a message", |v| !v.is_empty()),
        lanes in 1..=16usize,
        scheduler in scheduler(),
        cut in any::<proptest::sample::Index>(),
    ) {
        let world = World::new(specs);
        let tracker = Arc::new(OffsetTracker::new());
        let pool = new_pool(scheduler, config(scheduler, lanes, Ordering::Key, FailurePolicy::Stop, 0), Arc::clone(&tracker), world.handler(&tracker)).unwrap();
        let cut = cut.index(world.msgs.len());
        // Re-submitting message `cut` after those up to it is a
        // non-increasing offset for its partition.
        let mut batch: Vec<Message> = world.msgs[..=cut].to_vec();
        let bad = world.msgs[cut].clone();
        batch.push(bad.clone());
        batch.extend(world.msgs[cut + 1..].iter().cloned());
        match pool.submit_batch(batch) {
            Err(SubmitError::Offset(mykafkams::offsets::OffsetError::NotIncreasing { offset, tp, .. })) => {
                prop_assert_eq!(offset, bad.offset);
                prop_assert_eq!(tp.partition, bad.partition);
            }
            other => prop_assert!(false, "expected NotIncreasing, got {:?}", other),
        }
        let report = pool.drain(DRAIN);
        assert_drained(&report)?;
        prop_assert_eq!(report.unfinished, 0);
        prop_assert_eq!(report.stats.submitted, cut as u64 + 1);
        prop_assert_eq!(pool.capacity_used(), 0);
        for (i, s) in world.successes.iter().enumerate() {
            prop_assert_eq!(s.load(AO::SeqCst), u32::from(i <= cut), "message {}", i);
        }
        let mut ends = BTreeMap::new();
        for m in &world.msgs[..=cut] {
            ends.insert(m.partition, m.offset + 1);
        }
        for (p, end) in ends {
            prop_assert_eq!(tracker.committable(TOPIC, p), Some(end));
        }
    }

    /// Cancel safety of `submit_batch_async`: the future is dropped at an
    /// arbitrary point while the pool is held full. Then: every offset below
    /// a committable offset was handled (safe commits), the budget and lane
    /// room of unqueued messages were returned, per-key order held, and a
    /// restart from the committable offsets (as after a crash) handles
    /// everything that was not handled: nothing is lost.
    #[test]
    fn batch_submit_async_is_cancel_safe(
        specs in specs(0),
        lanes in 1..=8usize,
        scheduler in scheduler(),
        lane_capacity in 1..4usize,
        max_in_flight in 1..16usize,
        allowed in 0..40u32,
        polls in 1..30usize,
    ) {
        let world = World::new(specs);
        let topic: Arc<str> = Arc::from(TOPIC);
        let tracker = Arc::new(OffsetTracker::new());
        for p in 0..4 {
            tracker.set_next_fetch(&topic, p, 0);
        }
        let gate = Gate::new(allowed);
        let handler = {
            let inner = world.handler(&tracker);
            let gate = Arc::clone(&gate);
            move |m: &Message| {
                gate.pass();
                inner(m)
            }
        };
        let cfg = PoolConfig { lane_capacity, max_in_flight, ..config(scheduler, lanes, Ordering::Key, FailurePolicy::Stop, 0) };
        let pool = new_pool(scheduler, cfg, Arc::clone(&tracker), handler).unwrap();
        {
            let fut = pool.submit_batch_async(world.msgs.clone());
            let mut fut = std::pin::pin!(fut);
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            for _ in 0..polls {
                if fut.as_mut().poll(&mut cx).is_ready() {
                    break;
                }
                std::thread::sleep(Duration::from_micros(50));
            }
            // Dropped here: cancelled unless it already finished.
        }
        let resume: BTreeMap<i32, i64> = (0..4).map(|p| (p, tracker.committable(TOPIC, p).unwrap())).collect();
        for (i, m) in world.msgs.iter().enumerate() {
            if m.offset < resume[&m.partition] {
                prop_assert_eq!(world.successes[i].load(AO::SeqCst), 1, "message {} below committable not handled", i);
            }
        }
        gate.open.store(true, AO::SeqCst);
        let report = pool.drain(DRAIN);
        assert_drained(&report)?;
        // Budget of unqueued messages returned; lanes emptied.
        prop_assert_eq!(pool.capacity_used(), 0);
        prop_assert!(report.stats.lane_depth.iter().all(|d| *d == 0));
        if let Err(e) = world.check_order(&world.log.lock(), Ordering::Key) { prop_assert!(false, "{}", e); }
        let resume: BTreeMap<i32, i64> = (0..4).map(|p| (p, tracker.committable(TOPIC, p).unwrap())).collect();
        for (i, m) in world.msgs.iter().enumerate() {
            let handled = world.successes[i].load(AO::SeqCst);
            prop_assert!(handled <= 1);
            if m.offset < resume[&m.partition] {
                prop_assert_eq!(handled, 1, "message {} below committable not handled", i);
            }
        }

        // Restart from the committed offsets: nothing is lost.
        let tracker2 = Arc::new(OffsetTracker::new());
        for (p, c) in &resume {
            tracker2.set_next_fetch(&topic, *p, *c);
        }
        let pool2 = new_pool(scheduler, config(scheduler, lanes, Ordering::Key, FailurePolicy::Stop, 0), Arc::clone(&tracker2), world.handler(&tracker2)).unwrap();
        let replay: Vec<Message> = world.msgs.iter().filter(|m| m.offset >= resume[&m.partition]).cloned().collect();
        pool2.submit_batch(replay).unwrap();
        let report2 = pool2.drain(DRAIN);
        assert_drained(&report2)?;
        for (i, s) in world.successes.iter().enumerate() {
            prop_assert!(s.load(AO::SeqCst) >= 1, "message {} lost", i);
        }
    }
}

fn dummy(topic: &Arc<str>) -> Message {
    Message {
        topic: Arc::clone(topic),
        partition: 0,
        offset: 1_000_000,
        key: None,
        value: None,
        timestamp_ms: 0,
        headers: Headers::new(),
    }
}

/// 1,000 keys that all live in one Kafka partition.
fn keys_in_one_partition(partitions: i32, target: i32, prefix: u32) -> Vec<Vec<u8>> {
    let mut keys = Vec::with_capacity(1000);
    let mut i = 0u64;
    while keys.len() < 1000 {
        let k = format!("acct-{prefix}-{i}").into_bytes();
        if partition_for_key(&k, partitions) == target {
            keys.push(k);
        }
        i += 1;
    }
    keys
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// No skew (rule 2): 1,000 keys of one Kafka partition spread over 2..=16
    /// lanes with no lane above twice its fair share.
    #[test]
    fn lanes_are_balanced_for_keys_of_one_partition(
        partitions in 1..=64i32,
        target_seed in any::<u32>(),
        prefix in any::<u32>(),
        lanes in 2..=16usize,
    ) {
        let target = (target_seed % partitions as u32) as i32;
        let keys = keys_in_one_partition(partitions, target, prefix);
        let mut counts = vec![0usize; lanes];
        for k in &keys {
            counts[lane_for_key(k, lanes)] += 1;
        }
        let limit = 2 * keys.len() / lanes;
        let max = *counts.iter().max().unwrap();
        prop_assert!(max <= limit, "lanes {} counts {:?} (limit {})", lanes, counts, limit);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// The same balance measured through a real pool's per-lane counters.
    #[test]
    fn pool_lanes_are_balanced(partitions in 2..=12i32, lanes in 2..=16usize, prefix in any::<u32>()) {
        let keys = keys_in_one_partition(partitions, 1, prefix);
        let topic: Arc<str> = Arc::from(TOPIC);
        let tracker = Arc::new(OffsetTracker::new());
        let cfg = PoolConfig { lanes, scheduler: Scheduler::Lanes, ..PoolConfig::default() };
        let pool = Pool::new(cfg, tracker, |_: &Message| Ok(())).unwrap();
        for (offset, k) in keys.iter().enumerate() {
            pool.submit(Message {
                topic: Arc::clone(&topic),
                partition: 1,
                offset: offset as i64,
                key: Some(Bytes::from(k.clone())),
                value: None,
                timestamp_ms: 0,
                headers: Headers::new(),
            }).unwrap();
        }
        let report = pool.drain(DRAIN);
        assert_drained(&report)?;
        let per_lane = &report.stats.lane_processed;
        prop_assert_eq!(per_lane.iter().sum::<u64>(), 1000);
        let limit = 2 * 1000 / lanes as u64;
        prop_assert!(per_lane.iter().all(|n| *n <= limit), "{:?} limit {}", per_lane, limit);
    }
}

// The commit window's property lives in its own file, with these helpers.
#[path = "prop_pool/window.rs"]
mod window;
