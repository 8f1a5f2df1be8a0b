//! Metrics for operators: what `--metrics-addr` serves, in the Prometheus
//! text format (see README "Metrics").
//!
//! Nothing here adds work per message unless metrics are on, and even then
//! only the handler's latency is taken per message (two clock readings and
//! three relaxed atomic adds, see [`Timed`]). Everything else is read at
//! scrape time, by a [`Collector`], from counters the pipeline keeps anyway:
//! the pool's [`PoolStats`](crate::pool::PoolStats), the producer's
//! counters, and a per-partition snapshot the consumer publishes with each
//! periodic commit.
//!
//! [`http`] is the small HTTP/1.1 responder that serves `GET /metrics`.

pub mod http;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

use crate::Message;
use crate::offsets::TopicPartition;
use crate::pool::{AsyncHandler, Handler, HandlerError, Pool};

pub use http::{MetricsServer, serve};

/// Upper bounds (seconds) of the latency histograms' buckets: 50 µs to
/// 30 s, so a fast in-process handler and a slow commit both land in
/// buckets of their own.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 5.0, 30.0,
];

/// A latency histogram that records without a lock: one relaxed atomic add
/// per bucket, count and sum (in nanoseconds), so many worker threads can
/// observe at once. Encoded in seconds with [`LATENCY_BUCKETS`].
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    /// Observations above the last bound (the `+Inf` bucket's own share).
    over: AtomicU64,
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            over: AtomicU64::new(0),
            count: AtomicU64::new(0),
            sum_nanos: AtomicU64::new(0),
        }
    }
}

impl fmt::Debug for Histogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Histogram")
            .field("count", &self.count())
            .finish_non_exhaustive()
    }
}

impl Histogram {
    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        match LATENCY_BUCKETS.iter().position(|b| secs <= *b) {
            Some(i) => self.buckets[i].fetch_add(1, Ordering::Relaxed),
            None => self.over.fetch_add(1, Ordering::Relaxed),
        };
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Records the time since `started`.
    pub fn observe_since(&self, started: Instant) {
        self.observe(started.elapsed());
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Sum of the observations, in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9
    }
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), fmt::Error> {
        // Per-bucket (not cumulative) counts; the encoder adds them up. The
        // count is taken as the sum of the buckets, so `_count` always
        // equals the `+Inf` bucket even while observations race the scrape.
        let buckets: Vec<(f64, u64)> = LATENCY_BUCKETS
            .iter()
            .zip(&self.buckets)
            .map(|(b, c)| (*b, c.load(Ordering::Relaxed)))
            .collect();
        let count = buckets.iter().map(|(_, c)| c).sum::<u64>() + self.over.load(Ordering::Relaxed);
        encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            self.sum_seconds(),
            count,
            &buckets,
            None,
        )
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// Wraps the user's handler to time each attempt into a histogram: a
/// [`Handler`]'s call (`flush` is forwarded untimed), or an
/// [`AsyncHandler`]'s future from creation to completion (one dropped at
/// its timeout is not observed). Installed by
/// [`consumer::run`](crate::consumer::run) and
/// [`consumer::run_async`](crate::consumer::run_async) only when metrics
/// are on.
pub struct Timed<H> {
    inner: H,
    latency: Arc<Histogram>,
}

impl<H> Timed<H> {
    /// Times `inner` into `latency`.
    pub fn new(inner: H, latency: Arc<Histogram>) -> Self {
        Self { inner, latency }
    }
}

impl<H: Handler> Handler for Timed<H> {
    fn handle(&self, msg: &Message) -> Result<(), HandlerError> {
        self.handle_attempt(msg, 1)
    }

    fn handle_attempt(&self, msg: &Message, attempt: u32) -> Result<(), HandlerError> {
        let started = Instant::now();
        let result = self.inner.handle_attempt(msg, attempt);
        self.latency.observe_since(started);
        result
    }

    fn flush(&self) -> Result<(), HandlerError> {
        self.inner.flush()
    }

    fn buffers_output(&self) -> bool {
        self.inner.buffers_output()
    }
}

impl<H: AsyncHandler> AsyncHandler for Timed<H> {
    fn handle(&self, msg: &Message) -> impl Future<Output = Result<(), HandlerError>> + Send {
        self.handle_attempt(msg, 1)
    }

    fn handle_attempt(
        &self,
        msg: &Message,
        attempt: u32,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        let started = Instant::now();
        let attempt = self.inner.handle_attempt(msg, attempt);
        async move {
            let result = attempt.await;
            self.latency.observe_since(started);
            result
        }
    }
}

/// One partition as the consumer last published it.
#[derive(Clone, Debug)]
struct PartitionView {
    tp: TopicPartition,
    lag: i64,
    committed: Option<i64>,
}

/// What the consumer publishes periodically (not per message).
#[derive(Debug, Default)]
struct ConsumerSnapshot {
    partitions: Vec<PartitionView>,
    revoked: u64,
    rebalances: u64,
}

#[derive(Default)]
struct ConsumerShared {
    pool: OnceLock<Arc<Pool>>,
    snapshot: Mutex<ConsumerSnapshot>,
    handler_latency: Arc<Histogram>,
    commit_latency: Arc<Histogram>,
    commits_failed: AtomicU64,
}

/// The consumer's metrics: a cheap handle (clone it freely) that the
/// pipeline feeds and a [`Registry`] reads at scrape time. Set it as
/// [`ConsumerConfig::metrics`](crate::consumer::ConsumerConfig::metrics).
#[derive(Clone, Default)]
pub struct ConsumerMetrics {
    shared: Arc<ConsumerShared>,
}

impl fmt::Debug for ConsumerMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsumerMetrics").finish_non_exhaustive()
    }
}

impl ConsumerMetrics {
    /// Empty metrics, nothing attached yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry holding these metrics, ready for [`serve`].
    pub fn registry(&self) -> Registry {
        let mut r = Registry::default();
        r.register_collector(Box::new(self.clone()));
        r
    }

    /// The pool whose counters are read at scrape time (the first one wins).
    pub fn attach_pool(&self, pool: Arc<Pool>) {
        let _ = self.shared.pool.set(pool);
    }

    /// The histogram [`Timed`] records handler latency into.
    pub fn handler_latency(&self) -> Arc<Histogram> {
        Arc::clone(&self.shared.handler_latency)
    }

    /// Records one OffsetCommit request's duration, and whether it failed.
    pub fn observe_commit(&self, took: Duration, ok: bool) {
        self.shared.commit_latency.observe(took);
        if !ok {
            self.shared.commits_failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Publishes the partitions held now: `lag` per partition (end of the
    /// log minus what is handled), the offsets committed, partitions
    /// revoked so far and the member's completed rebalances.
    pub fn publish(
        &self,
        lag: Vec<(TopicPartition, i64)>,
        committed: &HashMap<TopicPartition, i64>,
        revoked: u64,
        rebalances: u64,
    ) {
        let partitions = lag
            .into_iter()
            .map(|(tp, lag)| PartitionView {
                committed: committed.get(&tp).copied(),
                tp,
                lag,
            })
            .collect();
        *self.shared.snapshot.lock() = ConsumerSnapshot {
            partitions,
            revoked,
            rebalances,
        };
    }
}

/// Writes one metric without labels.
fn single(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    metric: &impl EncodeMetric,
) -> Result<(), fmt::Error> {
    let m = encoder.encode_descriptor(name, help, unit, metric.metric_type())?;
    metric.encode(m)
}

/// Writes one gauge per partition, labelled `topic` and `partition`.
fn per_partition(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: impl Iterator<Item = (TopicPartition, i64)>,
) -> Result<(), fmt::Error> {
    let mut m = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (tp, v) in values {
        let labels = [
            ("topic", tp.topic.to_string()),
            ("partition", tp.partition.to_string()),
        ];
        ConstGauge::new(v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for ConsumerMetrics {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), fmt::Error> {
        let sh = &self.shared;
        let stats = sh.pool.get().map(|p| p.stats()).unwrap_or_default();
        let counters: [(&str, &str, u64); 7] = [
            (
                "mykafkams_consumer_messages_dispatched",
                "Messages fetched and handed to the worker pool.",
                stats.submitted,
            ),
            (
                "mykafkams_consumer_messages_handled",
                "Messages finished: handled successfully, skipped or dead-lettered.",
                stats.finished,
            ),
            (
                "mykafkams_consumer_messages_failed",
                "Messages whose last attempt failed (then the failure policy applied).",
                stats.failed,
            ),
            (
                "mykafkams_consumer_messages_retried",
                "Retry attempts (a message retried twice counts 2).",
                stats.retried,
            ),
            (
                "mykafkams_consumer_messages_skipped",
                "Failed messages skipped (--on-failure skip).",
                stats.skipped,
            ),
            (
                "mykafkams_consumer_messages_dead_lettered",
                "Failed messages produced to the dead-letter topic.",
                stats.dead_lettered,
            ),
            (
                "mykafkams_consumer_commits_failed",
                "OffsetCommit requests that failed (retried at the next interval).",
                sh.commits_failed.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, v) in counters {
            single(&mut e, name, help, None, &ConstCounter::new(v))?;
        }
        single(
            &mut e,
            "mykafkams_consumer_messages_in_flight",
            "Messages fetched and not yet finished.",
            None,
            &ConstGauge::new(stats.in_flight as i64),
        )?;
        single(
            &mut e,
            "mykafkams_consumer_queued_messages",
            "Messages waiting in the scheduler's queues for a worker.",
            None,
            &ConstGauge::new(stats.queued as i64),
        )?;
        single(
            &mut e,
            "mykafkams_consumer_ready_keys",
            "Keys with messages waiting for a free worker (keys scheduler).",
            None,
            &ConstGauge::new(stats.ready_keys as i64),
        )?;
        let mut m = e.encode_descriptor(
            "mykafkams_consumer_queue_depth",
            "Messages waiting in each lane's queue (lanes scheduler; none with keys).",
            None,
            MetricType::Gauge,
        )?;
        for (i, depth) in stats.lane_depth.iter().enumerate() {
            let labels = [("queue", i.to_string())];
            ConstGauge::new(*depth as i64).encode(m.encode_family(&labels)?)?;
        }
        let snap = sh.snapshot.lock();
        single(
            &mut e,
            "mykafkams_consumer_assigned_partitions",
            "Partitions this consumer reads now.",
            None,
            &ConstGauge::new(snap.partitions.len() as i64),
        )?;
        single(
            &mut e,
            "mykafkams_consumer_rebalances",
            "Group rebalances this member completed.",
            None,
            &ConstCounter::new(snap.rebalances),
        )?;
        single(
            &mut e,
            "mykafkams_consumer_partitions_revoked",
            "Partitions this member gave up in rebalances.",
            None,
            &ConstCounter::new(snap.revoked),
        )?;
        per_partition(
            &mut e,
            "mykafkams_consumer_partition_lag",
            "Messages between the end of the partition's log and the first unfinished one.",
            snap.partitions.iter().map(|p| (p.tp.clone(), p.lag)),
        )?;
        per_partition(
            &mut e,
            "mykafkams_consumer_partition_committed_offset",
            "Offset last committed to the group for the partition.",
            snap.partitions
                .iter()
                .filter_map(|p| Some((p.tp.clone(), p.committed?))),
        )?;
        drop(snap);
        single(
            &mut e,
            "mykafkams_consumer_handler_duration",
            "Time the handler took per message (one attempt).",
            Some(&Unit::Seconds),
            sh.handler_latency.as_ref(),
        )?;
        single(
            &mut e,
            "mykafkams_consumer_commit_duration",
            "Time an OffsetCommit request took.",
            Some(&Unit::Seconds),
            sh.commit_latency.as_ref(),
        )
    }
}

impl fmt::Debug for ConsumerShared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsumerShared").finish_non_exhaustive()
    }
}

/// The producer's counters as metrics, read at scrape time from a
/// [`ProducerCounters`](crate::producer::ProducerCounters) handle (zeros
/// until one is attached, so the endpoint can listen before the producer
/// connects).
#[derive(Clone, Debug, Default)]
pub struct ProducerMetrics {
    counters: Arc<OnceLock<crate::producer::ProducerCounters>>,
}

impl ProducerMetrics {
    /// Metrics with no producer attached yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The producer whose counters are read at scrape time (the first one wins).
    pub fn attach(&self, counters: crate::producer::ProducerCounters) {
        let _ = self.counters.set(counters);
    }

    /// A registry holding these metrics, ready for [`serve`].
    pub fn registry(&self) -> Registry {
        let mut r = Registry::default();
        r.register_collector(Box::new(self.clone()));
        r
    }
}

impl Collector for ProducerMetrics {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), fmt::Error> {
        let attached = self.counters.get();
        let s = attached.map(|c| c.snapshot()).unwrap_or_default();
        let none = Histogram::default();
        let counters: [(&str, &str, u64); 4] = [
            (
                "mykafkams_producer_records_sent",
                "Records handed to the producer.",
                s.sent,
            ),
            (
                "mykafkams_producer_records_acknowledged",
                "Records the broker acknowledged (acks=0: written to the socket).",
                s.acknowledged,
            ),
            (
                "mykafkams_producer_records_failed",
                "Records not acknowledged (their batch failed or their partition stopped).",
                s.failed,
            ),
            (
                "mykafkams_producer_batches_retried",
                "Batches sent again after an error or a lost connection.",
                s.retried_batches,
            ),
        ];
        for (name, help, v) in counters {
            single(&mut e, name, help, None, &ConstCounter::new(v))?;
        }
        single(
            &mut e,
            "mykafkams_producer_request_duration",
            "Time from sending a Produce request to its response.",
            Some(&Unit::Seconds),
            attached.map_or(&none, |c| c.request_latency()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> Message {
        Message {
            topic: Arc::from("t"),
            partition: 0,
            offset: 0,
            key: None,
            value: None,
            timestamp_ms: 0,
            headers: crate::Headers::new(),
        }
    }

    #[test]
    fn an_async_handler_is_timed_from_creation_to_completion() {
        let latency = Arc::new(Histogram::default());
        let timed = Timed::new(
            |_: Message| async {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok(())
            },
            Arc::clone(&latency),
        );
        let msg = message();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let attempt = AsyncHandler::handle(&timed, &msg);
        assert_eq!(latency.count(), 0, "not observed before it runs");
        rt.block_on(attempt).unwrap();
        assert_eq!(latency.count(), 1);
        assert!(latency.sum_seconds() >= 0.020, "{}", latency.sum_seconds());
    }

    fn text(r: &Registry) -> String {
        let mut s = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut s, r).unwrap();
        s
    }

    #[test]
    fn the_histogram_counts_in_seconds_and_its_count_matches_inf() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(30));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(60));
        assert_eq!(h.count(), 3);
        assert!((h.sum_seconds() - 60.00303).abs() < 1e-9);
        let mut r = Registry::default();
        r.register_with_unit("x_duration", "x", Unit::Seconds, h);
        let t = text(&r);
        assert!(
            t.contains("x_duration_seconds_bucket{le=\"5e-05\"} 1\n"),
            "{t}"
        );
        assert!(
            t.contains("x_duration_seconds_bucket{le=\"0.005\"} 2\n"),
            "{t}"
        );
        assert!(
            t.contains("x_duration_seconds_bucket{le=\"30\"} 2\n"),
            "{t}"
        );
        assert!(
            t.contains("x_duration_seconds_bucket{le=\"+Inf\"} 3\n"),
            "{t}"
        );
        assert!(t.contains("x_duration_seconds_count 3\n"), "{t}");
    }

    #[test]
    fn consumer_metrics_show_published_partitions_and_zeros_before_a_pool() {
        let m = ConsumerMetrics::new();
        let tp = TopicPartition::new(Arc::from("orders"), 2);
        let committed = HashMap::from([(tp.clone(), 42)]);
        m.publish(vec![(tp, 7)], &committed, 1, 3);
        m.observe_commit(Duration::from_millis(2), false);
        let t = text(&m.registry());
        for line in [
            "mykafkams_consumer_messages_handled_total 0",
            "mykafkams_consumer_partition_lag{topic=\"orders\",partition=\"2\"} 7",
            "mykafkams_consumer_partition_committed_offset{topic=\"orders\",partition=\"2\"} 42",
            "mykafkams_consumer_assigned_partitions 1",
            "mykafkams_consumer_rebalances_total 3",
            "mykafkams_consumer_partitions_revoked_total 1",
            "mykafkams_consumer_commits_failed_total 1",
            "mykafkams_consumer_commit_duration_seconds_count 1",
            "mykafkams_consumer_handler_duration_seconds_count 0",
            "# TYPE mykafkams_consumer_handler_duration_seconds histogram",
        ] {
            assert!(t.lines().any(|l| l == line), "missing {line:?} in\n{t}");
        }
    }

    #[test]
    fn timed_records_each_handle_and_forwards_flush() {
        let h = Arc::new(Histogram::default());
        let timed = Timed::new(
            |m: &Message| {
                if m.offset == 1 {
                    Err(HandlerError::new("no"))
                } else {
                    Ok(())
                }
            },
            Arc::clone(&h),
        );
        let mut msg = message();
        assert!(timed.handle(&msg).is_ok());
        msg.offset = 1;
        assert!(timed.handle(&msg).is_err());
        assert!(timed.flush().is_ok());
        assert_eq!(h.count(), 2);
    }
}
