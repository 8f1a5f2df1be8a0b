//! The demo behind `just up`: keyed events with per-key sequence numbers go
//! through the producer and the ordered consumer, and a [`SequenceChecker`]
//! proves what happened: nothing lost, no key out of order, and how much
//! faster 32 workers are than one.
//!
//! `just bench` drives it too: without the single-worker sample
//! ([`DemoConfig::sample`] 0, the script measures one worker itself), and
//! with a slow key ([`DemoConfig::slow_key`]) for the head-of-line figure.
//! [`DemoConfig::panic_every`] makes the handler panic now and then, to show
//! (and let a test check, on any build) that a panicking handler is caught,
//! retried and loses nothing.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rskafka::client::Client;

use crate::cluster::{self, ClusterConfig};
use crate::consumer::{self, ConsumerConfig, Partitions, StartAt};
use crate::error::{Error, Result};
use crate::message::Message;
use crate::pool::{FailurePolicy, HandlerError, Scheduler};
use crate::producer::{ProducerConfig, TopicProducer};

/// Counts, per key, which sequence numbers arrived and whether they arrived in order.
///
/// Values are `<key>:<seq>`; sequences start at 0 and are contiguous per key.
#[derive(Default)]
pub struct SequenceChecker {
    keys: Mutex<HashMap<String, KeyState>>,
    first_at: Mutex<Option<Instant>>,
    last_at: Mutex<Option<Instant>>,
    /// A key left out of [`others_rate`](Self::others_rate) (the slow key).
    excluded: Option<String>,
    /// First and last message of the other keys, and how many there were.
    others: Mutex<(Option<Instant>, Option<Instant>, u64)>,
}

#[derive(Default)]
struct KeyState {
    /// How often each sequence number was seen.
    seen: Vec<u32>,
    /// The last sequence number seen, if any.
    last: Option<u64>,
    violations: u64,
}

/// What a [`SequenceChecker`] concluded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Messages seen (duplicates included).
    pub handled: u64,
    /// Times a key's sequence number did not follow the one before it
    /// (a redelivered duplicate after a restart is not counted here).
    pub order_violations: u64,
    /// Expected `(key, seq)` pairs never seen.
    pub lost: u64,
    /// Extra sightings of a pair already seen.
    pub duplicates: u64,
}

impl SequenceChecker {
    /// A checker that also times every key but `key` on their own
    /// ([`others_rate`](Self::others_rate), [`others_handled`](Self::others_handled)).
    pub fn excluding(key: impl Into<String>) -> Self {
        Self {
            excluded: Some(key.into()),
            ..Self::default()
        }
    }

    /// Records one message value `<key>:<seq>`; returns an error for any other shape.
    pub fn record(&self, value: &[u8]) -> std::result::Result<(), HandlerError> {
        let text =
            std::str::from_utf8(value).map_err(|_| HandlerError::new("value is not UTF-8"))?;
        let (key, seq) = text
            .rsplit_once(':')
            .and_then(|(k, s)| Some((k, s.parse::<u64>().ok()?)))
            .ok_or_else(|| HandlerError::new(format!("value {text:?} is not <key>:<seq>")))?;
        let now = Instant::now();
        self.first_at.lock().get_or_insert(now);
        *self.last_at.lock() = Some(now);
        if self.excluded.as_deref().is_some_and(|x| x != key) {
            let mut o = self.others.lock();
            o.0.get_or_insert(now);
            o.1 = Some(now);
            o.2 += 1;
        }
        let mut keys = self.keys.lock();
        let st = keys.entry(key.to_string()).or_default();
        if st.seen.len() <= seq as usize {
            st.seen.resize(seq as usize + 1, 0);
        }
        st.seen[seq as usize] += 1;
        // In order means: the next number, or a repeat of one already seen (a
        // redelivery replays from the commit, which is not a reordering).
        let in_order = match st.last {
            None => true,
            Some(last) => seq == last + 1 || st.seen[seq as usize] > 1,
        };
        if !in_order {
            st.violations += 1;
        }
        st.last = Some(seq);
        Ok(())
    }

    /// The verdict against `keys` keys of `per_key` sequence numbers each.
    pub fn verdict(&self, expected_keys: &[String], per_key: u64) -> Verdict {
        self.verdict_of(expected_keys.iter().map(|k| (k, per_key)))
    }

    /// The verdict against keys each with its own count of sequence numbers.
    pub fn verdict_of<'a>(&self, expected: impl IntoIterator<Item = (&'a String, u64)>) -> Verdict {
        let keys = self.keys.lock();
        let mut v = Verdict {
            handled: 0,
            order_violations: 0,
            lost: 0,
            duplicates: 0,
        };
        for (k, per_key) in expected {
            let Some(st) = keys.get(k) else {
                v.lost += per_key;
                continue;
            };
            v.order_violations += st.violations;
            for seq in 0..per_key as usize {
                match st.seen.get(seq).copied().unwrap_or(0) {
                    0 => v.lost += 1,
                    n => v.duplicates += u64::from(n - 1),
                }
            }
        }
        v.handled = keys
            .values()
            .flat_map(|s| s.seen.iter())
            .map(|&n| u64::from(n))
            .sum();
        v
    }

    /// Messages per second between the first and the last recorded message.
    pub fn rate(&self) -> f64 {
        let (Some(a), Some(b)) = (*self.first_at.lock(), *self.last_at.lock()) else {
            return 0.0;
        };
        let n: u64 = self
            .keys
            .lock()
            .values()
            .flat_map(|s| s.seen.iter())
            .map(|&n| u64::from(n))
            .sum();
        n.saturating_sub(1) as f64 / (b - a).as_secs_f64().max(1e-9)
    }

    /// Messages of keys other than the excluded one seen so far.
    pub fn others_handled(&self) -> u64 {
        self.others.lock().2
    }

    /// Messages per second of the keys other than the excluded one, between
    /// the first and the last of theirs (`None` without an excluded key).
    pub fn others_rate(&self) -> Option<f64> {
        self.excluded.as_ref()?;
        let (a, b, n) = *self.others.lock();
        let (Some(a), Some(b)) = (a, b) else {
            return Some(0.0);
        };
        Some(n.saturating_sub(1) as f64 / (b - a).as_secs_f64().max(1e-9))
    }
}

/// Settings of the demo.
#[derive(Clone, Debug)]
pub struct DemoConfig {
    /// Brokers.
    pub cluster: ClusterConfig,
    /// Account keys.
    pub keys: usize,
    /// Events in total (spread evenly over the keys).
    pub events: usize,
    /// Partitions of the demo topic.
    pub partitions: i32,
    /// Workers of the main run.
    pub workers: usize,
    /// How messages reach the workers.
    pub scheduler: Scheduler,
    /// Run the main run's handler as an async one (`tokio::time::sleep` for
    /// the simulated I/O), with `workers` as the concurrency, instead of on
    /// worker threads. The single-worker sample stays one thread: the
    /// speed-up is then over one synchronous worker. No slow key or panics.
    pub asynchronous: bool,
    /// Simulated I/O per message.
    pub work: Duration,
    /// Events of the single-worker sample (0: no sample).
    pub sample: usize,
    /// Handler time of the first key's messages instead of `work`: a slow
    /// key, for measuring head-of-line blocking. Once every other key is
    /// done the slow key runs at `work` speed, so the run still ends and
    /// checks every message, but not after `events / keys` times this.
    pub slow_key: Option<Duration>,
    /// Panic in the handler at the first attempt of every message whose
    /// offset is a multiple of this; the pool catches the panic and retries
    /// the message (`None`: never panic).
    pub panic_every: Option<u64>,
}

impl DemoConfig {
    /// The demo of the README: 100,000 events over 1,000 keys, 6 partitions,
    /// 32 workers, 1 ms per message, a 3,000-event single-worker sample.
    pub fn new(cluster: ClusterConfig) -> Self {
        Self {
            cluster,
            keys: 1000,
            events: 100_000,
            partitions: 6,
            workers: 32,
            scheduler: Scheduler::default(),
            asynchronous: false,
            work: Duration::from_millis(1),
            sample: 3000,
            slow_key: None,
            panic_every: None,
        }
    }
}

/// What the demo measured.
#[derive(Clone, Debug)]
pub struct DemoReport {
    /// Events produced to the main topic.
    pub produced: usize,
    /// The checker's verdict on the main run.
    pub verdict: Verdict,
    /// Messages per second with `workers` workers.
    pub rate: f64,
    /// Messages per second of the single-worker sample (`None`: no sample).
    pub single_rate: Option<f64>,
    /// With a slow key: the slow key, and messages per second of the other
    /// keys (first to last of theirs).
    pub slow_key: Option<(String, f64)>,
    /// Handler panics injected by [`DemoConfig::panic_every`] (each one
    /// caught and the message retried).
    pub panics: u64,
    /// Peak resident memory (KiB) of the process while it consumed the main
    /// run: the kernel's high-water mark, reset when consuming starts, so
    /// producing the events does not count, though heap the producer left
    /// behind does. `None` where Linux's `/proc/self/clear_refs` is not
    /// available.
    pub consume_peak_rss_kib: Option<u64>,
}

/// Resets this process's peak-RSS mark to its current RSS (Linux); the
/// current RSS in KiB if that worked.
fn reset_peak_rss() -> Option<u64> {
    std::fs::write("/proc/self/clear_refs", "5").ok()?;
    status_kib("VmRSS:")
}

/// This process's peak RSS in KiB since start or the last reset (Linux).
fn peak_rss_kib() -> Option<u64> {
    status_kib("VmHWM:")
}

/// A `... kB` field of /proc/self/status.
fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

impl DemoReport {
    /// `rate / single_rate`, if there was a sample.
    pub fn speedup(&self) -> Option<f64> {
        Some(self.rate / self.single_rate?.max(1e-9))
    }

    /// The report as one JSON object (for scripts: `mykafkams-demo --json`).
    pub fn json(&self, cfg: &DemoConfig) -> serde_json::Value {
        let v = &self.verdict;
        serde_json::json!({
            "events": self.produced,
            "keys": cfg.keys,
            "workers": cfg.workers,
            "scheduler": if cfg.asynchronous { "async".to_string() } else { cfg.scheduler.to_string() },
            "work_ms": cfg.work.as_secs_f64() * 1e3,
            "handled": v.handled,
            "order_violations": v.order_violations,
            "lost": v.lost,
            "duplicates": v.duplicates,
            "rate": self.rate,
            "single_rate": self.single_rate,
            "speedup": self.speedup(),
            "slow_key": self.slow_key.as_ref().map(|(k, _)| k),
            "slow_key_ms": cfg.slow_key.map(|d| d.as_secs_f64() * 1e3),
            "others_rate": self.slow_key.as_ref().map(|(_, r)| r),
            "panics": self.panics,
            "consume_peak_rss_kib": self.consume_peak_rss_kib,
            "passed": self.passed(),
        })
    }

    /// True when nothing was lost and no key ran out of order.
    pub fn passed(&self) -> bool {
        self.verdict.order_violations == 0 && self.verdict.lost == 0
    }
}

fn key_names(n: usize) -> Vec<String> {
    (0..n).map(|k| format!("acct-{k:04}")).collect()
}

/// Produces `events` events over `keys` keys, sequence numbers per key in order.
async fn produce(
    client: &Client,
    cluster: &ClusterConfig,
    topic: &str,
    partitions: i32,
    keys: &[String],
    events: usize,
) -> Result<()> {
    cluster::create_topic_if_missing(client, cluster, topic, partitions, 1).await?;
    let producer = TopicProducer::new(cluster, ProducerConfig::new(topic)).await?;
    let mut value = String::new();
    for i in 0..events {
        let key = &keys[i % keys.len()];
        let seq = i / keys.len();
        value.clear();
        use std::fmt::Write as _;
        let _ = write!(value, "{key}:{seq}");
        producer
            .send(Some(key.as_bytes()), value.as_bytes())
            .await?;
    }
    let s = producer.close().await;
    if s.failed > 0 {
        return Err(Error::FailedMessages(format!(
            "demo producer: {} not acknowledged",
            s.failed
        )));
    }
    Ok(())
}

/// A consumer of every partition of `topic` from the start to its end.
fn reader(cfg: &DemoConfig, topic: &str, group: String, stats: Duration) -> ConsumerConfig {
    let mut c = ConsumerConfig::new(cfg.cluster.clone(), topic, Partitions::All, group);
    c.exit_at_end = true;
    c.start = StartAt::Earliest;
    c.stats_interval = stats;
    c
}

/// Consumes `topic` to its end with `workers` workers and the checking, sleeping handler.
async fn consume(
    cfg: &DemoConfig,
    topic: &str,
    workers: usize,
    checker: Arc<SequenceChecker>,
    stats: Duration,
    panics: Arc<AtomicU64>,
) -> Result<()> {
    let mut c = reader(cfg, topic, format!("{topic}-w{workers}"), stats);
    c.workers = workers;
    c.scheduler = cfg.scheduler;
    // With a slow key, the lanes scheduler still holds the keys queued
    // behind it when the log's end is reached: give them time to finish
    // (that wait is what the head-of-line benchmark measures).
    if let Some(slow) = cfg.slow_key {
        c.drain_timeout = c
            .drain_timeout
            .max(slow * (cfg.events.div_ceil(cfg.keys.max(1)) as u32 + 30));
    }
    let work = cfg.work;
    // The slow key (the first), while any other key has work left.
    let slow = cfg.slow_key.map(|d| (key_names(1).remove(0), d));
    let others = cfg.events - cfg.events.div_ceil(cfg.keys.max(1)).min(cfg.events);
    let others_done = AtomicBool::new(false);
    let panic_every = cfg.panic_every.filter(|&n| n > 0);
    let panicked: Mutex<HashSet<(i32, i64)>> = Mutex::new(HashSet::new());
    let handler = move |m: &Message| -> std::result::Result<(), HandlerError> {
        if let Some(n) = panic_every
            && m.offset % n as i64 == 0
            && panicked.lock().insert((m.partition, m.offset))
        {
            panics.fetch_add(1, Ordering::Relaxed);
            // Unwinds like a panic, without the panic hook's message.
            std::panic::resume_unwind(Box::new("injected panic (--panic-every)"));
        }
        match &slow {
            Some((key, d)) if m.key.as_deref() == Some(key.as_bytes()) => {
                // Slices, so that the slow key speeds up as soon as the others are done.
                let until = Instant::now() + *d;
                while !others_done.load(Ordering::Relaxed) && Instant::now() < until {
                    if checker.others_handled() >= others as u64 {
                        others_done.store(true, Ordering::Relaxed);
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(10).min(*d));
                }
                std::thread::sleep(work);
            }
            _ => std::thread::sleep(work), // the simulated I/O
        }
        checker.record(m.value.as_deref().unwrap_or_default())
    };
    let (_keep, signals) = tokio::sync::watch::channel(0u32);
    consumer::run(c, handler, FailurePolicy::Stop, signals)
        .await?
        .into_result()
}

/// [`consume`] with an async handler: `concurrency` messages in flight,
/// each sleeping `work` on the tokio timer.
async fn consume_async(
    cfg: &DemoConfig,
    topic: &str,
    concurrency: usize,
    checker: Arc<SequenceChecker>,
    stats: Duration,
) -> Result<()> {
    let mut c = reader(cfg, topic, format!("{topic}-a{concurrency}"), stats);
    c.max_concurrency = concurrency;
    // The default in-flight budget (10,000), or one per task if more.
    c.max_in_flight = c.max_in_flight.max(concurrency);
    let work = cfg.work;
    let handler = move |m: Message| {
        let checker = Arc::clone(&checker);
        async move {
            tokio::time::sleep(work).await; // the simulated I/O
            checker.record(m.value.as_deref().unwrap_or_default())
        }
    };
    let (_keep, signals) = tokio::sync::watch::channel(0u32);
    consumer::run_async(c, handler, FailurePolicy::Stop, signals)
        .await?
        .into_result()
}

/// Runs the demo, printing progress to stderr as it goes.
pub async fn run(cfg: DemoConfig) -> Result<DemoReport> {
    let client = cluster::connect(&cfg.cluster).await?;
    let stamp = chrono::Utc::now().timestamp_millis();
    let topic = format!("mykafkams-demo-{stamp}");
    let sample_topic = format!("{topic}-sample");
    let keys = key_names(cfg.keys);
    // Event i goes to key i % keys: the first events % keys keys get one more.
    let per_key =
        |k: usize| (cfg.events / cfg.keys + usize::from(k < cfg.events % cfg.keys)) as u64;

    eprintln!(
        "demo: producing {} events over {} keys to '{topic}' ({} partitions)",
        cfg.events, cfg.keys, cfg.partitions
    );
    let t = Instant::now();
    produce(
        &client,
        &cfg.cluster,
        &topic,
        cfg.partitions,
        &keys,
        cfg.events,
    )
    .await?;
    eprintln!("demo: produced in {:.2} s", t.elapsed().as_secs_f64());

    if cfg.asynchronous {
        eprintln!(
            "demo: consuming with an async handler, concurrency {}, {:?} of simulated async I/O per message (progress every second)",
            cfg.workers, cfg.work
        );
    } else {
        eprintln!(
            "demo: consuming with {} workers ({} scheduler), {:?} of simulated I/O per message (progress every second)",
            cfg.workers, cfg.scheduler, cfg.work
        );
    }
    if let Some(d) = cfg.slow_key {
        eprintln!(
            "demo: key {} is slow: {d:?} per message until every other key is done",
            keys[0]
        );
    }
    let checker = Arc::new(match cfg.slow_key {
        Some(_) => SequenceChecker::excluding(keys[0].clone()),
        None => SequenceChecker::default(),
    });
    if let Some(n) = cfg.panic_every {
        eprintln!(
            "demo: the handler panics at the first attempt of every message whose offset is a multiple of {n}"
        );
    }
    let panics = Arc::new(AtomicU64::new(0));
    let rss_before = reset_peak_rss();
    if let Some(kib) = rss_before {
        eprintln!("demo: RSS before consuming: {} MiB", kib.div_ceil(1024));
    }
    if cfg.asynchronous {
        let every_second = Duration::from_secs(1);
        consume_async(
            &cfg,
            &topic,
            cfg.workers,
            Arc::clone(&checker),
            every_second,
        )
        .await?;
    } else {
        consume(
            &cfg,
            &topic,
            cfg.workers,
            Arc::clone(&checker),
            Duration::from_secs(1),
            Arc::clone(&panics),
        )
        .await?;
    }
    let consume_rss = rss_before.and(peak_rss_kib());
    let panics = panics.load(Ordering::Relaxed);
    let verdict = checker.verdict_of(keys.iter().enumerate().map(|(i, k)| (k, per_key(i))));
    let rate = checker.rate();
    let slow_key = checker.others_rate().map(|r| (keys[0].clone(), r));
    if cfg.sample == 0 {
        return Ok(DemoReport {
            produced: cfg.events,
            verdict,
            rate,
            single_rate: None,
            slow_key,
            panics,
            consume_peak_rss_kib: consume_rss,
        });
    }

    let sample_keys = &keys[..cfg.keys.min(cfg.sample).max(1)];
    eprintln!(
        "demo: measuring one worker on a {}-event sample",
        cfg.sample
    );
    produce(
        &client,
        &cfg.cluster,
        &sample_topic,
        cfg.partitions,
        sample_keys,
        cfg.sample,
    )
    .await?;
    let single = Arc::new(SequenceChecker::default());
    let sample_cfg = DemoConfig {
        events: cfg.sample,
        keys: sample_keys.len(),
        slow_key: None,
        panic_every: None,
        asynchronous: false,
        ..cfg.clone()
    };
    consume(
        &sample_cfg,
        &sample_topic,
        1,
        Arc::clone(&single),
        Duration::ZERO,
        Arc::new(AtomicU64::new(0)),
    )
    .await?;

    Ok(DemoReport {
        produced: cfg.events,
        verdict,
        rate,
        single_rate: Some(single.rate()),
        slow_key,
        panics,
        consume_peak_rss_kib: consume_rss,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Vec<String> {
        vec!["a".into(), "b".into()]
    }

    #[test]
    fn a_clean_run_has_no_violations_losses_or_duplicates() {
        let c = SequenceChecker::default();
        for seq in 0..3 {
            c.record(format!("a:{seq}").as_bytes()).unwrap();
            c.record(format!("b:{seq}").as_bytes()).unwrap();
        }
        assert_eq!(
            c.verdict(&keys(), 3),
            Verdict {
                handled: 6,
                order_violations: 0,
                lost: 0,
                duplicates: 0
            }
        );
    }

    #[test]
    fn reordering_losing_and_duplicating_are_each_counted() {
        let c = SequenceChecker::default();
        for v in ["a:0", "a:2", "a:1", "b:0", "b:0"] {
            c.record(v.as_bytes()).unwrap();
        }
        let v = c.verdict(&keys(), 3);
        assert_eq!(v.order_violations, 2, "a:2 after a:0, then a:1 after a:2");
        assert_eq!(v.lost, 2, "b:1 and b:2");
        assert_eq!(v.duplicates, 1, "b:0 twice");
        assert!(c.record(b"garbage").is_err());
    }

    #[test]
    fn an_excluded_key_is_left_out_of_the_others_count() {
        let c = SequenceChecker::excluding("a");
        for v in ["a:0", "b:0", "a:1", "b:1", "b:2"] {
            c.record(v.as_bytes()).unwrap();
        }
        assert_eq!(c.others_handled(), 3);
        assert!(c.others_rate().is_some());
        assert_eq!(SequenceChecker::default().others_rate(), None);
        assert_eq!(c.verdict(&keys(), 2).lost, 0);
    }
}
