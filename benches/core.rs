//! Throughput of the ordering core, as a plain table (`cargo bench --bench core`).
//!
//! - ceiling: one producer thread -> one consumer thread over a raw bounded
//!   crossbeam channel, moving the same `Message`s the pool moves;
//! - pool: no-op handler, 100-byte values, 1,000 keys, Key ordering, offset
//!   tracking included, for 1/2/4/8 workers and both schedulers (`lanes`,
//!   `keys`; submit from one thread, timed until `drain` returns, i.e. until
//!   every message is finished);
//! - tracker alone: dispatch + complete pairs per second.
//!
//! Each figure is the best of a few runs, to filter scheduler noise on a
//! small machine.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mykafkams::offsets::{Completion, OffsetTracker, finish_batch};
use mykafkams::pool::{Ordering, Pool, PoolConfig, Scheduler};
use mykafkams::{Headers, Message};

const MESSAGES: usize = 2_000_000;
const KEYS: usize = 1_000;
const RUNS: usize = 3;

struct Source {
    topic: Arc<str>,
    keys: Vec<Bytes>,
    value: Bytes,
}

impl Source {
    fn new() -> Self {
        // Static byte slices: cloning a key or value is then free, so the
        // benchmark measures the pipeline, not refcount traffic on payloads.
        let keys = (0..KEYS)
            .map(|i| {
                Bytes::from_static(Box::leak(format!("account-{i:05}").into_boxed_str()).as_bytes())
            })
            .collect();
        let value = Bytes::from_static(Box::leak(vec![b'x'; 100].into_boxed_slice()));
        Self {
            topic: Arc::from("bench"),
            keys,
            value,
        }
    }

    #[inline]
    fn message(&self, i: usize) -> Message {
        Message {
            topic: Arc::clone(&self.topic),
            partition: 0,
            offset: i as i64,
            key: Some(self.keys[i % KEYS].clone()),
            value: Some(self.value.clone()),
            timestamp_ms: 0,
            headers: Headers::new(),
        }
    }
}

fn best(mut f: impl FnMut() -> Duration) -> Duration {
    (0..RUNS).map(|_| f()).min().expect("RUNS > 0")
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn raw_channel(src: &Arc<Source>) -> Duration {
    let (tx, rx) = crossbeam_channel::bounded::<Message>(1024);
    let consumer = std::thread::spawn(move || {
        let mut n = 0usize;
        while let Ok(m) = rx.recv() {
            black_box(&m);
            n += 1;
        }
        n
    });
    let start = Instant::now();
    for i in 0..MESSAGES {
        tx.send(src.message(i)).expect("consumer alive");
    }
    drop(tx);
    let n = consumer.join().expect("consumer");
    let d = start.elapsed();
    assert_eq!(n, MESSAGES);
    d
}

/// How the benchmark hands messages to the pool.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Submit {
    /// `Pool::submit`, one message per call.
    One,
    /// `Pool::submit_batch` with `FETCH_BATCH` messages per call, the way
    /// the consumer's fetch loop hands over a fetch response.
    Batch,
}

/// Messages per batch in `Submit::Batch`: a modest fetch response (a 1 MiB
/// fetch of these messages holds several thousand).
const FETCH_BATCH: usize = 500;

fn pool(src: &Arc<Source>, scheduler: Scheduler, lanes: usize, submit: Submit) -> Duration {
    let tracker = Arc::new(OffsetTracker::new());
    tracker.set_next_fetch(&src.topic, 0, 0);
    let config = PoolConfig {
        lanes,
        scheduler,
        lane_capacity: 1024,
        max_in_flight: 8192,
        ordering: Ordering::Key,
        ..PoolConfig::default()
    };
    let pool = Pool::new(config, Arc::clone(&tracker), |m: &Message| {
        black_box(m);
        Ok(())
    })
    .expect("pool");
    let start = Instant::now();
    match submit {
        Submit::One => {
            for i in 0..MESSAGES {
                pool.submit(src.message(i)).expect("running");
            }
        }
        Submit::Batch => {
            for first in (0..MESSAGES).step_by(FETCH_BATCH) {
                let end = (first + FETCH_BATCH).min(MESSAGES);
                let batch: Vec<Message> = (first..end).map(|i| src.message(i)).collect();
                pool.submit_batch(batch).expect("running");
            }
        }
    }
    let report = pool.drain(Duration::from_secs(60));
    let d = start.elapsed();
    assert_eq!(report.unfinished, 0);
    assert_eq!(tracker.committable("bench", 0), Some(MESSAGES as i64));
    d
}

/// Dispatch a window of `window` offsets, then complete them (in reverse
/// order, the worst case for the front-pop), through a kept partition handle.
fn tracker_handle(window: usize) -> Duration {
    let tracker = OffsetTracker::new();
    let part = tracker.partition(&Arc::from("bench"), 0);
    let mut pending: Vec<Completion> = Vec::with_capacity(window);
    let start = Instant::now();
    let mut offset = 0i64;
    for _ in 0..MESSAGES / window {
        for _ in 0..window {
            pending.push(part.dispatch(offset).expect("increasing"));
            offset += 2; // gaps, as after compaction
        }
        while let Some(c) = pending.pop() {
            c.finish();
        }
    }
    let d = start.elapsed();
    assert_eq!(part.in_flight(), 0);
    d
}

/// Same through the tracker's map (what `Pool::submit` does) and completing
/// in batches (what a lane does).
fn tracker_map_batched(window: usize) -> Duration {
    let tracker = OffsetTracker::new();
    let topic: Arc<str> = Arc::from("bench");
    let mut pending: Vec<Completion> = Vec::with_capacity(window);
    let start = Instant::now();
    let mut offset = 0i64;
    for _ in 0..MESSAGES / window {
        for _ in 0..window {
            pending.push(tracker.dispatch(&topic, 0, offset).expect("increasing"));
            offset += 1;
        }
        finish_batch(&mut pending);
    }
    let d = start.elapsed();
    assert_eq!(tracker.in_flight("bench", 0), 0);
    d
}

fn main() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "ordering core benchmark: {MESSAGES} messages, {KEYS} keys, 100-byte values, {cores} cores, best of {RUNS}"
    );
    let src = Arc::new(Source::new());

    let ceiling = rate(MESSAGES, best(|| raw_channel(&src)));
    println!();
    println!(
        "| {:<44} | {:>12} | {:>10} |",
        "pipeline", "msg/s", "of ceiling"
    );
    println!("|{:-<46}|{:->14}|{:->12}|", "", "", "");
    println!(
        "| {:<44} | {:>12.0} | {:>9.0}% |",
        "raw crossbeam bounded channel, 1 -> 1 thread", ceiling, 100.0
    );
    for (submit, how) in [
        (Submit::Batch, "submit_batch(500)"),
        (Submit::One, "submit"),
    ] {
        for scheduler in [Scheduler::Lanes, Scheduler::Keys] {
            for lanes in [1, 2, 4, 8] {
                let r = rate(MESSAGES, best(|| pool(&src, scheduler, lanes, submit)));
                println!(
                    "| {:<44} | {:>12.0} | {:>9.0}% |",
                    format!("pool {scheduler}, {lanes} worker(s), {how}"),
                    r,
                    100.0 * r / ceiling
                );
            }
        }
    }
    println!("(pool: key order + offset tracking; the consumer uses submit_batch)");

    println!();
    println!("| {:<44} | {:>12} |", "offset tracker alone", "pairs/s");
    println!("|{:-<46}|{:->14}|", "", "");
    for window in [1, 64] {
        let r = rate(MESSAGES, best(|| tracker_handle(window)));
        println!(
            "| {:<44} | {:>12.0} |",
            format!("handle dispatch + finish, window {window}"),
            r
        );
    }
    let r = rate(MESSAGES, best(|| tracker_map_batched(32)));
    println!(
        "| {:<44} | {:>12.0} |",
        "map dispatch + finish_batch(32)", r
    );
    println!("(a pair = one dispatch and one completion of the same offset)");
}
