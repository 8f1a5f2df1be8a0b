//! The sender task: takes sealed batches from the accumulator and keeps
//! every partition's leader busy, like Java's `Sender` thread.
//!
//! - One pipelined connection per broker carries up to `max_in_flight`
//!   Produce requests; a request holds the next batch of each partition the
//!   broker leads.
//! - A partition's batches are sent in order. When one fails retriably
//!   (leader moved, connection lost, timeout), nothing new is sent for that
//!   partition until all its requests in flight have come back; then the
//!   unacknowledged batches go again, oldest first, with the same sequence
//!   numbers, so the broker drops any it already has.
//! - A batch that fails for good stops its partition: later batches are
//!   failed too rather than written ahead of it.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::protocol::{Decodable, StrBytes};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::idempotence::{self, Context, ProducerId, Verdict};
use super::partition::{Batch, Part, State, increment_sequence};
use super::{Acks, ProducerConfig, Shared};
use crate::cluster::{self, ClusterConfig, Leaders};
use crate::error::Error;
use crate::protocol::pipeline::{Pipeline, Reply};
use crate::protocol::{Connection, ProtocolError, VersionRange};
use crate::records::encode;

/// Produce versions we build: v3 is the oldest Kafka 4 accepts; v13 names
/// topics by id, which we do not track.
const PRODUCE_VERSIONS: VersionRange = VersionRange { min: 3, max: 12 };
/// First pause before retrying a partition or reconnecting (Java's
/// `retry.backoff.ms`); doubled up to [`MAX_BACKOFF`].
const BACKOFF: Duration = Duration::from_millis(100);
pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Largest produce request we build (Java's `max.request.size`), unless a
/// single batch is larger.
const MAX_REQUEST_BYTES: usize = 1024 * 1024;

enum Link {
    Connecting,
    Ready {
        pipe: Pipeline,
        version: i16,
        in_flight: usize,
        generation: u64,
    },
    Down {
        until: Instant,
    },
}

struct Request {
    node: i32,
    generation: u64,
    version: i16,
    partitions: Vec<i32>,
    /// When it was written (for the request latency metric).
    sent: Instant,
    deadline: Instant,
}

enum Event {
    Connected {
        node: i32,
        result: Result<Box<Connection>, ProtocolError>,
    },
    Metadata(crate::error::Result<Leaders>),
    Bumped(crate::error::Result<ProducerId>),
}

/// See the module docs.
pub struct Sender {
    cluster: ClusterConfig,
    topic: String,
    shared: Arc<Shared>,
    linger: Duration,
    acks: Acks,
    idempotent: bool,
    max_in_flight: usize,
    max_request: usize,
    request_timeout: Duration,
    delivery_timeout: Duration,
    producer: Option<ProducerId>,
    parts: Vec<Part>,
    brokers: HashMap<i32, String>,
    links: HashMap<i32, Link>,
    requests: HashMap<u64, Request>,
    next_token: u64,
    replies_tx: mpsc::UnboundedSender<Reply>,
    replies: mpsc::UnboundedReceiver<Reply>,
    events_tx: mpsc::UnboundedSender<Event>,
    events: mpsc::UnboundedReceiver<Event>,
    metadata_wanted: bool,
    metadata_running: bool,
    metadata_after: Instant,
    metadata_backoff: Duration,
    bump_wanted: bool,
    bump_running: bool,
    fatal: Option<String>,
    principal: String,
    /// The topic's `max.message.bytes`, if it could be read: named when the
    /// broker refuses a batch as too large.
    max_message: Option<u64>,
}

impl Sender {
    /// A sender for `cfg.topic`, whose partitions `leaders` describes.
    pub fn new(
        cluster: ClusterConfig,
        cfg: &ProducerConfig,
        leaders: Leaders,
        producer: Option<ProducerId>,
        max_message: Option<u64>,
        shared: Arc<Shared>,
    ) -> Self {
        let parts = leaders
            .partitions
            .iter()
            .map(|leader| Part {
                leader: *leader,
                last_acked_offset: -1,
                backoff: BACKOFF,
                ..Part::default()
            })
            .collect();
        let (replies_tx, replies) = mpsc::unbounded_channel();
        let (events_tx, events) = mpsc::unbounded_channel();
        let principal = cluster.security.principal_hint();
        Self {
            topic: cfg.topic.clone(),
            shared,
            linger: cfg.linger,
            acks: cfg.acks,
            idempotent: cfg.idempotence,
            // Without sequence numbers a retried batch could land after the
            // one behind it: one request at a time keeps the order.
            max_in_flight: if cfg.idempotence {
                cfg.max_in_flight
            } else {
                1
            },
            max_request: MAX_REQUEST_BYTES.max(cfg.batch_bytes + 1024),
            request_timeout: cfg.request_timeout,
            delivery_timeout: cfg.delivery_timeout,
            producer,
            parts,
            brokers: leaders.brokers,
            links: HashMap::new(),
            requests: HashMap::new(),
            next_token: 0,
            replies_tx,
            replies,
            events_tx,
            events,
            metadata_wanted: false,
            metadata_running: false,
            metadata_after: Instant::now(),
            metadata_backoff: BACKOFF,
            bump_wanted: false,
            bump_running: false,
            fatal: None,
            principal,
            max_message,
            cluster,
        }
    }

    /// Runs until the producer is closed and every batch is acknowledged or
    /// failed.
    pub async fn run(mut self) {
        #[allow(clippy::large_enum_variant)] // short-lived, one at a time
        enum Woke {
            Nudge,
            Reply(Reply),
            Event(Event),
            Timer,
        }
        loop {
            let now = Instant::now();
            let linger_due = self.collect(now);
            self.expire(now);
            self.maintain(now);
            self.dispatch(now);
            if self.finished() {
                return;
            }
            let tick = if self.waiting_on_timers() {
                Duration::from_millis(20)
            } else {
                Duration::from_secs(1)
            };
            let deadline = linger_due.map_or(now + tick, |d| d.min(now + tick));
            let woke = tokio::select! {
                _ = self.shared.wake.notified() => Woke::Nudge,
                Some(r) = self.replies.recv() => Woke::Reply(r),
                Some(e) = self.events.recv() => Woke::Event(e),
                _ = tokio::time::sleep_until(deadline) => Woke::Timer,
            };
            match woke {
                Woke::Reply(r) => {
                    self.on_reply(r);
                    while let Ok(r) = self.replies.try_recv() {
                        self.on_reply(r);
                    }
                }
                Woke::Event(e) => self.on_event(e),
                Woke::Nudge | Woke::Timer => {}
            }
        }
    }

    /// Moves sealed batches (sealing those that lingered long enough) into
    /// the partition queues; returns when the next open batch is due.
    fn collect(&mut self, now: Instant) -> Option<Instant> {
        let mut acc = self.shared.accumulator.lock();
        let due = acc.seal_due(self.linger, now.into_std());
        for (numbers, budget, e) in acc.seal_errors.drain(..) {
            self.shared.failed(&numbers, &e);
            self.shared.budget.release(budget);
        }
        let mut refused = Vec::new();
        for (p, part) in self.parts.iter_mut().enumerate() {
            for s in acc.take_ready(p) {
                let batch = Batch {
                    records: encode::record_count(&s.data),
                    data: s.data,
                    numbers: s.numbers,
                    budget: s.budget,
                    created: Instant::from_std(s.created),
                    state: State::Unsent,
                    sequence: None,
                    sent_before: false,
                };
                if part.stopped {
                    refused.push(batch);
                } else {
                    part.queue.push_back(batch);
                }
            }
        }
        drop(acc);
        let reason = self
            .fatal
            .clone()
            .unwrap_or_else(|| "partition stopped".into());
        for b in refused {
            self.fail_batch(b, &reason);
        }
        due.map(Instant::from_std)
    }

    /// Request and delivery timeouts.
    fn expire(&mut self, now: Instant) {
        let late: Vec<i32> = self
            .requests
            .values()
            .filter(|r| r.deadline <= now)
            .map(|r| r.node)
            .collect();
        for node in late {
            let msg = format!(
                "no response from {} within {:?}",
                self.brokers.get(&node).map_or("the broker", String::as_str),
                self.request_timeout
            );
            self.link_failed(node, &msg, now);
        }
        for p in 0..self.parts.len() {
            let part = &self.parts[p];
            if part.stopped {
                continue;
            }
            let expired = part
                .queue
                .iter()
                .find(|b| !matches!(b.state, State::Written))
                .is_some_and(|b| {
                    matches!(b.state, State::Unsent) && now >= b.created + self.delivery_timeout
                });
            if expired {
                let msg = format!(
                    "not acknowledged within the delivery timeout of {:?}{}",
                    self.delivery_timeout,
                    part.last_error
                        .as_ref()
                        .map(|e| format!(" (last error: {e})"))
                        .unwrap_or_default()
                );
                self.stop_partition(p as i32, &msg);
            }
        }
    }

    /// Starts metadata refreshes, connections and epoch bumps that are due.
    fn maintain(&mut self, now: Instant) {
        if self
            .parts
            .iter()
            .any(|p| p.leader.is_none() && !p.queue.is_empty())
        {
            self.metadata_wanted = true;
        }
        if self.metadata_wanted && !self.metadata_running && now >= self.metadata_after {
            self.metadata_wanted = false;
            self.metadata_running = true;
            let (cluster, topic, tx) = (
                self.cluster.clone(),
                self.topic.clone(),
                self.events_tx.clone(),
            );
            tokio::spawn(async move {
                let _ = tx.send(Event::Metadata(
                    cluster::topic_leaders(&cluster, &topic).await,
                ));
            });
        }
        let wanted: Vec<i32> = self
            .parts
            .iter()
            .filter(|p| !p.queue.is_empty())
            .filter_map(|p| p.leader)
            .collect();
        for node in wanted {
            let connect = match self.links.get(&node) {
                None => true,
                Some(Link::Down { until }) => now >= *until,
                Some(Link::Ready {
                    pipe, in_flight, ..
                }) => {
                    // A SASL session about to end: let the requests on it
                    // finish, then open a new connection.
                    // A connection the broker closed while idle is replaced
                    // too (one with requests in flight fails them first).
                    let retire = pipe
                        .retire_at()
                        .is_some_and(|at| now >= Instant::from_std(at));
                    (retire || pipe.is_broken()) && *in_flight == 0
                }
                Some(Link::Connecting) => false,
            };
            let Some(addr) = self.brokers.get(&node).cloned() else {
                self.metadata_wanted = true;
                continue;
            };
            if connect {
                self.links.insert(node, Link::Connecting);
                let (config, tx) = (self.cluster.connection(), self.events_tx.clone());
                tokio::spawn(async move {
                    let result = Connection::connect(&addr, config).await.map(Box::new);
                    let _ = tx.send(Event::Connected { node, result });
                });
            }
        }
        if self.bump_wanted && !self.bump_running && self.requests.is_empty() {
            self.bump_running = true;
            let (cluster, current, tx) =
                (self.cluster.clone(), self.producer, self.events_tx.clone());
            let topic = self.topic.clone();
            tokio::spawn(async move {
                let _ = tx.send(Event::Bumped(
                    idempotence::init_producer_id(&cluster, &topic, current).await,
                ));
            });
        }
    }

    /// Builds and sends requests while links have room and partitions have
    /// batches.
    fn dispatch(&mut self, now: Instant) {
        if self.fatal.is_some()
            || (self.idempotent && (self.producer.is_none() || self.bump_wanted))
        {
            return;
        }
        for part in &mut self.parts {
            if part.resend && part.in_flight == 0 {
                part.resend = false;
            }
        }
        let nodes: Vec<i32> = self.links.keys().copied().collect();
        for node in nodes {
            while let Some(Link::Ready {
                pipe,
                version,
                in_flight,
                generation,
            }) = self.links.get(&node)
            {
                if *in_flight >= self.max_in_flight
                    || pipe.is_broken()
                    || pipe
                        .retire_at()
                        .is_some_and(|at| now >= Instant::from_std(at))
                {
                    break;
                }
                let (version, generation) = (*version, *generation);
                let Some(request) = self.build_request(node, now) else {
                    break;
                };
                let token = self.next_token;
                self.next_token += 1;
                let partitions: Vec<i32> = request.1;
                let Some(Link::Ready {
                    pipe, in_flight, ..
                }) = self.links.get_mut(&node)
                else {
                    unreachable!("checked above");
                };
                let sent = pipe.send(
                    token,
                    &request.0,
                    version,
                    self.acks != Acks::None,
                    request.2,
                );
                *in_flight += 1;
                for &p in &partitions {
                    let part = &mut self.parts[p as usize];
                    if let Some(b) = part
                        .queue
                        .iter_mut()
                        .find(|b| matches!(b.state, State::Unsent))
                    {
                        b.state = State::InFlight(token);
                    }
                    part.in_flight += 1;
                    part.in_flight_node = Some(node);
                }
                self.requests.insert(
                    token,
                    Request {
                        node,
                        generation,
                        version,
                        partitions,
                        sent: Instant::now(),
                        deadline: now + self.request_timeout,
                    },
                );
                if let Err(e) = sent {
                    self.link_failed(node, &e.to_string(), now);
                    break;
                }
            }
        }
    }

    /// The next request for `node`: the next batch of each partition it
    /// leads that may send now, up to the request size limit.
    fn build_request(
        &mut self,
        node: i32,
        now: Instant,
    ) -> Option<(ProduceRequest, Vec<i32>, usize)> {
        let mut data = Vec::new();
        let mut partitions = Vec::new();
        let mut size = 0;
        for (p, part) in self.parts.iter_mut().enumerate() {
            if part.stopped
                || part.leader != Some(node)
                || part.retry_at.is_some_and(|t| now < t)
                || part.resend
                || part.in_flight >= self.max_in_flight
                || (part.in_flight > 0 && part.in_flight_node != Some(node))
                || (self.idempotent && !part.confirmed && part.in_flight > 0)
            {
                continue;
            }
            let Some(batch) = part
                .queue
                .iter_mut()
                .find(|b| matches!(b.state, State::Unsent))
            else {
                continue;
            };
            if size > 0 && size + batch.data.len() > self.max_request {
                break;
            }
            if let (Some((id, epoch)), None) =
                (self.producer.filter(|_| self.idempotent), batch.sequence)
            {
                let sequence = part.next_sequence;
                part.next_sequence = increment_sequence(sequence, batch.records);
                batch.sequence = Some(sequence);
                batch.data = encode::stamp(std::mem::take(&mut batch.data), id, epoch, sequence);
            }
            if batch.sent_before {
                self.shared
                    .counters
                    .retried_batches
                    .fetch_add(1, Ordering::Relaxed);
            }
            size += batch.data.len();
            data.push(
                PartitionProduceData::default()
                    .with_index(p as i32)
                    .with_records(Some(batch.data.clone())),
            );
            partitions.push(p as i32);
        }
        if data.is_empty() {
            return None;
        }
        let request = ProduceRequest::default()
            .with_transactional_id(None)
            .with_acks(self.acks.wire())
            .with_timeout_ms(self.request_timeout.as_millis().min(i32::MAX as u128) as i32)
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_string(self.topic.clone())))
                    .with_partition_data(data),
            ]);
        // Frame size: the batches plus headers (topic, partition, lengths).
        let frame = size + 256 + self.topic.len() + 16 * partitions.len();
        Some((request, partitions, frame))
    }

    fn on_reply(&mut self, reply: Reply) {
        let Some(request) = self.requests.remove(&reply.token) else {
            return; // its link was already failed and its batches requeued
        };
        if let Some(Link::Ready {
            in_flight,
            generation,
            ..
        }) = self.links.get_mut(&request.node)
            && *generation == request.generation
        {
            *in_flight = in_flight.saturating_sub(1);
        }
        let now = Instant::now();
        let body = match reply.result {
            Ok(body) => {
                let took = now.saturating_duration_since(request.sent);
                self.shared.counters.request_latency.observe(took);
                body
            }
            Err(e) => {
                let msg = e.to_string();
                self.requeue(reply.token, &request, &msg, now);
                self.link_failed(request.node, &msg, now);
                return;
            }
        };
        if self.acks == Acks::None {
            for &p in &request.partitions {
                let part = &mut self.parts[p as usize];
                part.in_flight = part.in_flight.saturating_sub(1);
                self.complete(p, reply.token, None);
            }
            return;
        }
        let response = match ProduceResponse::decode(&mut body.clone(), request.version) {
            Ok(r) => r,
            Err(e) => {
                let msg = format!("undecodable produce response: {e}");
                self.requeue(reply.token, &request, &msg, now);
                self.link_failed(request.node, &msg, now);
                return;
            }
        };
        let mut answered = Vec::new();
        for topic in response.responses {
            for r in topic.partition_responses {
                answered.push(r.index);
                self.on_partition_response(r, reply.token, now);
            }
        }
        // A partition the broker did not answer for is retried.
        let missing = Request {
            partitions: request
                .partitions
                .iter()
                .copied()
                .filter(|p| !answered.contains(p))
                .collect(),
            ..request
        };
        if !missing.partitions.is_empty() {
            self.requeue(reply.token, &missing, "no answer for the partition", now);
        }
    }

    fn on_partition_response(
        &mut self,
        r: kafka_protocol::messages::produce_response::PartitionProduceResponse,
        token: u64,
        now: Instant,
    ) {
        let p = r.index;
        let Some(part) = self.parts.get_mut(p as usize) else {
            return;
        };
        let Some(idx) = part.position_of(token) else {
            return;
        };
        part.in_flight = part.in_flight.saturating_sub(1);
        if r.error_code == 0 {
            self.complete(p, token, Some(r.base_offset));
            return;
        }
        let batch = &part.queue[idx];
        let ctx = Context {
            idempotent: self.idempotent,
            oldest_unacked: idx == 0,
            log_start_offset: r.log_start_offset,
            last_acked_offset: part.last_acked_offset,
            retried: batch.sent_before,
        };
        let error = ResponseError::try_from_code(r.error_code);
        let mut described = error.map_or_else(
            || format!("error code {}", r.error_code),
            |e| format!("{e:?}: {e}"),
        );
        if let Some(m) = r.error_message.as_ref().filter(|m| !m.is_empty()) {
            described = format!("{described} ({m})");
        }
        tracing::debug!(
            partition = p,
            sequence = ?batch.sequence,
            records = batch.records,
            position = idx,
            queued = part.queue.len(),
            in_flight = part.in_flight,
            retried = batch.sent_before,
            log_start = r.log_start_offset,
            last_acked = part.last_acked_offset,
            "produce error: {described}"
        );
        let verdict = match idempotence::classify(r.error_code, ctx) {
            Verdict::Fatal(_)
                if error == Some(ResponseError::MessageTooLarge)
                    || error == Some(ResponseError::RecordListTooLarge) =>
            {
                Verdict::Fatal(format!(
                    "{described}: a batch of {} bytes is over the topic's max.message.bytes{} (raise it, or lower --batch-size)",
                    part.queue[idx].data.len(),
                    self.max_message
                        .map(|m| format!(" ({m})"))
                        .unwrap_or_default()
                ))
            }
            Verdict::Fatal(_) if error == Some(ResponseError::TopicAuthorizationFailed) => {
                let denied = Error::denied(
                    "TOPIC_AUTHORIZATION_FAILED",
                    &self.principal,
                    "Write",
                    &format!("Topic:{}", self.topic),
                );
                self.shared
                    .counters
                    .denied
                    .lock()
                    .get_or_insert(denied.to_string());
                Verdict::Fatal(denied.to_string())
            }
            v => v,
        };
        let part = &mut self.parts[p as usize];
        match verdict {
            Verdict::Written => self.complete(p, token, Some(r.base_offset)),
            Verdict::Retry { .. } | Verdict::BumpEpoch if part.stopped => {
                let reason = part.last_error.clone().unwrap_or(described);
                let batch = part.queue.remove(idx).expect("found above");
                self.fail_batch(batch, &reason);
            }
            Verdict::Retry { refresh } => {
                tracing::debug!(partition = p, "produce retry: {described}");
                part.retry_later(idx, described, now);
                if refresh {
                    part.leader = None;
                    self.metadata_wanted = true;
                }
            }
            Verdict::BumpEpoch => {
                tracing::info!(
                    partition = p,
                    "the broker lost this producer's state ({described}): bumping the epoch"
                );
                part.resend_later(idx, described);
                self.bump_wanted = true;
            }
            Verdict::Fatal(msg) => {
                let batch = part.queue.remove(idx).expect("found above");
                let msg = format!("producing to {}/{p}: {msg}", self.topic);
                tracing::error!("{msg}");
                self.fail_batch(batch, &msg);
                self.stop_partition(p, &msg);
            }
            Verdict::FatalProducer(msg) => {
                let batch = part.queue.remove(idx).expect("found above");
                let msg = format!("producing to {}/{p}: {msg}", self.topic);
                tracing::error!("{msg}");
                self.fail_batch(batch, &msg);
                self.fatal = Some(msg.clone());
                for q in 0..self.parts.len() {
                    self.stop_partition(q as i32, &msg);
                }
            }
        }
    }

    /// Batch `token` of partition `p` is written at `base_offset` (`None`
    /// with acks=0).
    fn complete(&mut self, p: i32, token: u64, base_offset: Option<i64>) {
        let part = &mut self.parts[p as usize];
        let Some(idx) = part.position_of(token) else {
            return;
        };
        let batch = &mut part.queue[idx];
        batch.state = State::Written;
        part.backoff = BACKOFF;
        part.retry_at = None;
        part.confirmed = true;
        if let Some(base) = base_offset.filter(|b| *b >= 0) {
            part.last_acked_offset = part.last_acked_offset.max(base + batch.records as i64 - 1);
        }
        let shared = &self.shared;
        shared.written(&batch.numbers, p, base_offset.filter(|b| *b >= 0));
        shared.budget.release(batch.budget);
        batch.data = Bytes::new();
        batch.numbers = Vec::new();
        while part
            .queue
            .front()
            .is_some_and(|b| matches!(b.state, State::Written))
        {
            part.queue.pop_front();
        }
    }

    /// Every batch of `request` goes back to unsent, to be retried in order.
    fn requeue(&mut self, token: u64, request: &Request, why: &str, now: Instant) {
        for &p in &request.partitions {
            let part = &mut self.parts[p as usize];
            let Some(idx) = part.position_of(token) else {
                continue;
            };
            part.in_flight = part.in_flight.saturating_sub(1);
            if part.stopped {
                // Its outcome is unknown, and a stopped partition retries
                // nothing.
                let batch = part.queue.remove(idx).expect("found above");
                self.fail_batch(batch, why);
            } else {
                part.retry_later(idx, why.to_string(), now);
            }
        }
    }

    /// Drops the connection to `node`: its requests in flight are retried
    /// (their replies will never come), and the leaders are looked up again.
    fn link_failed(&mut self, node: i32, why: &str, now: Instant) {
        tracing::debug!(node, "connection failed: {why}");
        let generation = match self.links.get(&node) {
            Some(Link::Ready { generation, .. }) => Some(*generation),
            _ => None,
        };
        self.links.insert(
            node,
            Link::Down {
                until: now + BACKOFF,
            },
        );
        let lost: Vec<u64> = self
            .requests
            .iter()
            .filter(|(_, r)| r.node == node && Some(r.generation) == generation)
            .map(|(t, _)| *t)
            .collect();
        for token in lost {
            if let Some(r) = self.requests.remove(&token) {
                self.requeue(token, &r, why, now);
            }
        }
        self.metadata_wanted = true;
    }

    fn on_event(&mut self, event: Event) {
        let now = Instant::now();
        match event {
            Event::Connected { node, result } => {
                match result.and_then(|c| (*c).into_pipeline(self.replies_tx.clone())) {
                    Ok(pipe) => match pipe.negotiate(ApiKey::Produce, PRODUCE_VERSIONS) {
                        Ok(version) => {
                            let generation = self.next_token;
                            self.next_token += 1;
                            self.links.insert(
                                node,
                                Link::Ready {
                                    pipe,
                                    version,
                                    in_flight: 0,
                                    generation,
                                },
                            );
                        }
                        Err(e) => self.fail_producer(&format!("{e}")),
                    },
                    Err(e) if e.is_transport() => {
                        tracing::debug!(node, "connecting for produce: {e}");
                        self.links.insert(
                            node,
                            Link::Down {
                                until: now + BACKOFF * 5,
                            },
                        );
                        self.metadata_wanted = true;
                        for part in self.parts.iter_mut().filter(|p| p.leader == Some(node)) {
                            part.last_error = Some(e.to_string());
                        }
                    }
                    Err(e) => {
                        let msg = e.to_string();
                        self.shared
                            .counters
                            .denied
                            .lock()
                            .get_or_insert(msg.clone());
                        self.fail_producer(&msg);
                    }
                }
            }
            Event::Metadata(result) => {
                self.metadata_running = false;
                match result {
                    Ok(leaders) => {
                        self.metadata_backoff = BACKOFF;
                        for (id, addr) in leaders.brokers {
                            if self.brokers.get(&id) != Some(&addr) {
                                self.links.remove(&id);
                            }
                            self.brokers.insert(id, addr);
                        }
                        for (p, leader) in leaders.partitions.into_iter().enumerate() {
                            if let Some(part) = self.parts.get_mut(p) {
                                part.leader = leader;
                            }
                        }
                    }
                    Err(e) => {
                        tracing::debug!("metadata refresh failed: {e}");
                        for part in self.parts.iter_mut().filter(|p| !p.queue.is_empty()) {
                            part.last_error = Some(e.to_string());
                        }
                        self.metadata_wanted = true;
                    }
                }
                self.metadata_after = now + self.metadata_backoff;
                self.metadata_backoff = (self.metadata_backoff * 2).min(MAX_BACKOFF);
            }
            Event::Bumped(result) => {
                self.bump_running = false;
                match result {
                    Ok(id) => {
                        tracing::info!(producer_id = id.0, epoch = id.1, "producer epoch bumped");
                        self.producer = Some(id);
                        self.bump_wanted = false;
                        for part in &mut self.parts {
                            part.next_sequence = 0;
                            part.confirmed = false;
                            for b in part
                                .queue
                                .iter_mut()
                                .filter(|b| !matches!(b.state, State::Written))
                            {
                                b.sequence = None;
                            }
                        }
                    }
                    Err(e) => self.fail_producer(&format!("bumping the producer epoch: {e}")),
                }
            }
        }
    }

    /// Stops partition `p`: its unsent batches (and what the accumulator
    /// holds for it) fail now; batches in flight fail or succeed when their
    /// replies come.
    fn stop_partition(&mut self, p: i32, why: &str) {
        let part = &mut self.parts[p as usize];
        if !part.stopped {
            part.stopped = true;
            part.last_error.get_or_insert_with(|| why.to_string());
        }
        let mut failed: Vec<Batch> = Vec::new();
        let mut kept = VecDeque::new();
        for b in part.queue.drain(..) {
            if matches!(b.state, State::Unsent) {
                failed.push(b);
            } else {
                kept.push_back(b);
            }
        }
        part.queue = kept;
        let rest = self.shared.accumulator.lock().stop(p as usize, why);
        for b in failed {
            self.fail_batch(b, why);
        }
        for s in rest {
            self.shared.failed(&s.numbers, why);
            self.shared.budget.release(s.budget);
        }
    }

    fn fail_producer(&mut self, why: &str) {
        tracing::error!("producer failed: {why}");
        self.fatal.get_or_insert_with(|| why.to_string());
        for p in 0..self.parts.len() {
            self.stop_partition(p as i32, why);
        }
    }

    fn fail_batch(&self, batch: Batch, why: &str) {
        let shared = &self.shared;
        shared.failed(&batch.numbers, why);
        shared.budget.release(batch.budget);
    }

    /// Something waits on a short timer (a retry backoff, a reconnect, a
    /// metadata refresh).
    fn waiting_on_timers(&self) -> bool {
        self.metadata_wanted
            || self.bump_wanted
            || self
                .parts
                .iter()
                .any(|p| p.retry_at.is_some() && !p.queue.is_empty())
            || self.parts.iter().any(|p| {
                !p.queue.is_empty()
                    && p.leader
                        .is_some_and(|n| matches!(self.links.get(&n), Some(Link::Down { .. })))
            })
    }

    fn finished(&self) -> bool {
        self.requests.is_empty()
            && self.parts.iter().all(|p| p.queue.is_empty())
            && self.shared.accumulator.lock().drained()
    }
}
