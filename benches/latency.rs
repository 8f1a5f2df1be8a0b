//! End-to-end latency at a steady rate (`cargo bench --bench latency`; needs
//! the broker; `just bench` runs it as row 5 of its table).
//!
//! One process, the library on both sides: a [`Producer`] sends keyed
//! 100-byte records (1,000 keys) into a fresh 6-partition topic at a steady
//! rate, each value starting with its send time in microseconds; a consumer
//! ([`consumer::run`], key ordering, a no-op handler) reads the topic from the
//! start and records, per message, handler start time minus send time. Both
//! sides use their defaults (producer: 5 ms linger, acks=all, idempotent;
//! consumer: CPUs x 4 workers, 500 ms fetch max wait, returned as soon as
//! data is there). Before the timed stream a probe record must come through,
//! so the consumer is fetching when the clock starts; the first
//! BENCH_LATENCY_WARMUP_SECS of sends are left out of the figures.
//!
//! Settings (environment): KAFKA_BOOTSTRAP (127.0.0.1:9092),
//! BENCH_LATENCY_RATE (10000 msg/s), BENCH_LATENCY_SECS (10),
//! BENCH_LATENCY_WARMUP_SECS (1), BENCH_LATENCY_JSON (write the result there),
//! BENCH_LATENCY_TOPIC (default bench-latency-<time>; the topic is left in place).
//!
//! How to read it: p50 / p99 / p99.9 / max in milliseconds over the measured
//! messages; "sent at" is the rate the producer really achieved (if it is
//! below the target, the machine could not keep up and the figures are not
//! at the stated load). Sends are paced on tokio's 1 ms timer, so records
//! leave in bursts of rate/1000 each millisecond.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mykafkams::Message;
use mykafkams::cluster::{self, ClusterConfig};
use mykafkams::consumer::{self, ConsumerConfig, Partitions, StartAt};
use mykafkams::pool::{FailurePolicy, HandlerError};
use mykafkams::producer::{ProducerConfig, TopicProducer};
use parking_lot::Mutex;

const KEYS: usize = 1000;
const VALUE_BYTES: usize = 100;
const PARTITIONS: i32 = 6;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a valid number")),
        Err(_) => default,
    }
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// What the consumer side saw: (send time, latency) in microseconds.
#[derive(Default)]
struct Seen {
    samples: Mutex<Vec<(u64, u64)>>,
    handled: AtomicU64,
    probe: AtomicBool,
}

impl Seen {
    fn record(&self, m: &Message) -> Result<(), HandlerError> {
        let now = now_us();
        let value = m.value.as_deref().unwrap_or_default();
        if value == b"probe" {
            self.probe.store(true, Ordering::Relaxed);
            return Ok(());
        }
        let sent: u64 = std::str::from_utf8(value.get(..20).unwrap_or_default())
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| HandlerError::new("value does not start with a send time"))?;
        self.samples.lock().push((sent, now.saturating_sub(sent)));
        self.handled.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// The `q` quantile (0..1) of sorted `xs`, nearest rank.
fn quantile(xs: &[u64], q: f64) -> u64 {
    if xs.is_empty() {
        return 0;
    }
    let rank = (q * xs.len() as f64).ceil() as usize;
    xs[rank.clamp(1, xs.len()) - 1]
}

async fn wait_for(what: &str, timeout: Duration, done: impl Fn() -> bool) {
    let until = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::main]
async fn main() {
    let brokers = std::env::var("KAFKA_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let rate: u64 = env_or("BENCH_LATENCY_RATE", 10_000);
    let secs: f64 = env_or("BENCH_LATENCY_SECS", 10.0);
    let warmup: f64 = env_or("BENCH_LATENCY_WARMUP_SECS", 1.0);
    let total = (rate as f64 * (secs + warmup)).round() as u64;
    let cluster = ClusterConfig::new(cluster::parse_brokers(&brokers).expect("KAFKA_BOOTSTRAP"));
    let topic = std::env::var("BENCH_LATENCY_TOPIC")
        .unwrap_or_else(|_| format!("bench-latency-{}", now_us()));
    let client = cluster::connect(&cluster)
        .await
        .unwrap_or_else(|e| panic!("no broker at {brokers} ({e}): start one with `just kafka`"));
    cluster::create_topic_if_missing(&client, &cluster, &topic, PARTITIONS, 1)
        .await
        .expect("creating the topic");
    eprintln!(
        "latency: {rate} msg/s for {warmup} s warm-up + {secs} s into '{topic}' ({PARTITIONS} partitions, {KEYS} keys, {VALUE_BYTES}-byte values)"
    );

    let seen = Arc::new(Seen::default());
    let mut ccfg = ConsumerConfig::new(cluster.clone(), &topic, Partitions::All, &topic);
    ccfg.start = StartAt::Earliest;
    ccfg.stats_interval = Duration::ZERO;
    let workers = ccfg.workers;
    let (stop, signals) = tokio::sync::watch::channel(0u32);
    let handler = {
        let seen = Arc::clone(&seen);
        move |m: &Message| seen.record(m)
    };
    let consumer = tokio::spawn(consumer::run(ccfg, handler, FailurePolicy::Stop, signals));

    let producer = TopicProducer::new(&cluster, ProducerConfig::new(&topic))
        .await
        .expect("starting the producer");
    let keys: Vec<String> = (0..KEYS).map(|k| format!("key-{k}")).collect();
    producer.send(None, b"probe").await.expect("probe");
    wait_for("the probe record", Duration::from_secs(60), || {
        seen.probe.load(Ordering::Relaxed)
    })
    .await;

    let period = Duration::from_secs_f64(1.0 / rate as f64);
    let start_us = now_us();
    let t0 = tokio::time::Instant::now();
    let mut value = String::with_capacity(VALUE_BYTES);
    for i in 0..total {
        let due = t0 + period * i as u32;
        if tokio::time::Instant::now() < due {
            tokio::time::sleep_until(due).await;
        }
        value.clear();
        use std::fmt::Write as _;
        let _ = write!(value, "{:020}", now_us());
        while value.len() < VALUE_BYTES {
            value.push('x');
        }
        producer
            .send(Some(keys[i as usize % KEYS].as_bytes()), value.as_bytes())
            .await
            .expect("send");
    }
    let send_secs = t0.elapsed().as_secs_f64();
    let summary = producer.close().await;
    assert_eq!(summary.failed, 0, "producer: {summary:?}");
    wait_for(
        "every record to be handled",
        Duration::from_secs(120),
        || seen.handled.load(Ordering::Relaxed) >= total,
    )
    .await;
    let _ = stop.send(1);
    consumer
        .await
        .expect("consumer task")
        .and_then(|s| s.into_result())
        .expect("consumer run");

    let cut = start_us + (warmup * 1e6) as u64;
    let mut lat: Vec<u64> = seen
        .samples
        .lock()
        .iter()
        .filter(|(sent, _)| *sent >= cut)
        .map(|(_, l)| *l)
        .collect();
    lat.sort_unstable();
    let ms = |us: u64| us as f64 / 1e3;
    let (p50, p99, p999, max) = (
        ms(quantile(&lat, 0.5)),
        ms(quantile(&lat, 0.99)),
        ms(quantile(&lat, 0.999)),
        ms(lat.last().copied().unwrap_or(0)),
    );
    let sent_rate = total as f64 / send_secs;
    println!(
        "latency at {rate} msg/s (sent at {sent_rate:.0} msg/s), {} messages measured, {workers} workers: \
         p50 {p50:.2} ms, p99 {p99:.2} ms, p99.9 {p999:.2} ms, max {max:.2} ms",
        lat.len()
    );
    if let Ok(path) = std::env::var("BENCH_LATENCY_JSON") {
        let json = serde_json::json!({
            "target_rate": rate, "sent_rate": sent_rate, "seconds": secs, "warmup_seconds": warmup,
            "messages": total, "measured": lat.len(), "workers": workers,
            "keys": KEYS, "partitions": PARTITIONS, "value_bytes": VALUE_BYTES,
            "p50_ms": p50, "p99_ms": p99, "p999_ms": p999, "max_ms": max,
        });
        std::fs::write(&path, format!("{json}\n")).expect("writing BENCH_LATENCY_JSON");
    }
    eprintln!(
        "latency: topic '{topic}' left in place (delete it with `just kafka-tool topics --bootstrap-server {brokers} --delete --topic {topic}`)"
    );
}
