//! One broker's fetch task: one connection, and one Fetch request at a time
//! covering every partition of ours that the broker leads and that is ready
//! to be fetched (like Java's `Fetcher` or franz-go's per-broker source).
//!
//! A partition is *handed* to the task (`Dispatch`, by the
//! [`Router`]) with the position to fetch from, and
//! handed back with an `Event` once it has something to say: records
//! (copied into a buffer charged to the [`ByteBudget`]), a leader change, a
//! position out of range, an error, or (with exit-at-end) the end of its log.
//! A partition whose records are out of the task is not fetched again until
//! its reader hands it back, so nothing piles up behind a full pool. A
//! partition whose reader went away (revoked, stopped) is dropped at the next
//! turn; the records of a response that arrive for it are dropped too.
//!
//! Requests are full and sessionless (no KIP-227 session). Partitions that
//! got nothing because the response was full stay at the front of the next
//! request; data goes to the partitions in request order, so this rotates.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::{ApiKey, FetchRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use tokio::sync::mpsc;

use super::budget::ByteBudget;
use super::router::Router;
use super::{
    Attempt, FetchConfig, READ_COMMITTED, aborted_of, classify, end_of, fetch_connection,
    protocol_failure,
};
use crate::protocol::{Connection, ConnectionConfig, VersionRange};
use crate::records::AbortedTxn;

/// Fetch versions we build and read (v13+ name topics by id only).
const FETCH_VERSIONS: VersionRange = VersionRange { min: 4, max: 12 };

/// One partition as the fetch tasks know it: where its events go and where
/// the end of its log is published.
#[derive(Debug)]
pub(crate) struct PartLink {
    /// Its topic.
    pub(crate) topic: Arc<str>,
    /// Its partition.
    pub(crate) partition: i32,
    /// End of the readable log as last seen (-1 unknown); raised only.
    pub(crate) end: Arc<AtomicI64>,
    /// Its reader's inbox; closed once the reader is gone.
    pub(crate) events: mpsc::UnboundedSender<Event>,
}

/// A partition handed to a broker's fetch task.
#[derive(Debug)]
pub(crate) struct Dispatch {
    /// The partition.
    pub(crate) part: Arc<PartLink>,
    /// Where to fetch from.
    pub(crate) next: i64,
}

/// What a fetch task tells a partition's reader (the partition is no longer
/// in the task when it does).
#[derive(Debug)]
pub(crate) enum Event {
    /// Records fetched at the dispatched position (a buffer of their own).
    Records {
        /// The record batches, as the broker sent them.
        records: Bytes,
        /// The aborted transactions the broker listed with them.
        aborted: Vec<AbortedTxn>,
    },
    /// The position reached the end of the log (sent only with exit-at-end).
    CaughtUp,
    /// Find the leader again and hand the partition to it.
    Moved {
        /// Why, for logs and the final error.
        reason: String,
        /// Pause before finding the leader (false: the task merely closed).
        backoff: bool,
        /// Whether a fetch of it succeeded since it was handed over (a
        /// partition that was served well starts a fresh retry budget).
        served: bool,
    },
    /// The position is outside the log: reset it.
    OutOfRange,
    /// A permanent failure.
    Failed(Attempt),
}

/// What every broker task of one consumer shares.
#[derive(Debug)]
pub(crate) struct Settings {
    /// Base connection settings (client id, TLS, SASL).
    pub(crate) connection: ConnectionConfig,
    /// Fetch tuning.
    pub(crate) fetch: FetchConfig,
    /// Report partitions at the end of their log ([`Event::CaughtUp`]).
    pub(crate) exit_at_end: bool,
    /// The bytes held over all partitions.
    pub(crate) budget: Arc<ByteBudget>,
}

/// A partition in the task, waiting for its turn in a request.
struct Slot {
    part: Arc<PartLink>,
    next: i64,
    served: bool,
}

impl Slot {
    /// Whether the partition is known to have readable records to fetch.
    fn lagging(&self) -> bool {
        let end = self.part.end.load(Ordering::Relaxed);
        end < 0 || self.next < end
    }
}

/// The task's state between requests.
struct Task {
    addr: String,
    settings: Arc<Settings>,
    /// Partitions to fetch, in request order.
    slots: Vec<Slot>,
    /// Partitions whose records are out with their readers (they come back).
    out: Vec<Arc<PartLink>>,
}

impl Task {
    fn add(&mut self, d: Dispatch) {
        self.out.retain(|p| !Arc::ptr_eq(p, &d.part));
        self.slots.push(Slot {
            part: d.part,
            next: d.next,
            served: false,
        });
    }

    /// Forgets partitions whose readers are gone.
    fn prune(&mut self) {
        self.slots.retain(|s| !s.part.events.is_closed());
        self.out.retain(|p| !p.events.is_closed());
    }

    /// Tells every waiting partition to find its leader again.
    fn scatter(&mut self, reason: &str) {
        for s in self.slots.drain(..) {
            let _ = s.part.events.send(Event::Moved {
                reason: reason.to_string(),
                backoff: true,
                served: s.served,
            });
        }
    }

    /// Tells every waiting partition the same permanent failure.
    fn fail_all(&mut self, reason: &str, refused: bool) {
        for s in self.slots.drain(..) {
            let attempt = if refused {
                Attempt::Refused(reason.to_string())
            } else {
                Attempt::Fail(reason.to_string())
            };
            let _ = s.part.events.send(Event::Failed(attempt));
        }
    }

    /// The request for every waiting partition, grouped by topic in slot
    /// order.
    fn request(&self, max_wait: Duration, max_bytes: i32) -> FetchRequest {
        let cfg = &self.settings.fetch;
        let mut topics: Vec<FetchTopic> = Vec::new();
        for s in &self.slots {
            let partition = FetchPartition::default()
                .with_partition(s.part.partition)
                .with_current_leader_epoch(-1)
                .with_fetch_offset(s.next)
                .with_log_start_offset(-1)
                .with_partition_max_bytes(cfg.partition_max_bytes.max(1));
            match topics.last_mut() {
                Some(t) if *t.topic.0 == *s.part.topic => t.partitions.push(partition),
                _ => topics.push(
                    FetchTopic::default()
                        .with_topic(TopicName(StrBytes::from_string(s.part.topic.to_string())))
                        .with_partitions(vec![partition]),
                ),
            }
        }
        FetchRequest::default()
            .with_replica_id((-1).into())
            .with_max_wait_ms(max_wait.as_millis().min(i32::MAX as u128) as i32)
            .with_min_bytes(cfg.min_bytes.max(1))
            .with_max_bytes(max_bytes)
            .with_isolation_level(READ_COMMITTED)
            .with_session_id(0)
            .with_session_epoch(-1)
            .with_topics(topics)
    }

    /// Hands each partition's answer to its reader (or keeps the partition
    /// for the next request).
    fn deliver(&mut self, mut answers: HashMap<(Arc<str>, i32), PartitionData>) {
        let slots = std::mem::take(&mut self.slots);
        let mut kept = Vec::with_capacity(slots.len());
        // Partitions cut short by the response's limit go first next time.
        let mut starved = Vec::new();
        let mut first = true;
        for mut s in slots {
            let was_first = std::mem::replace(&mut first, false);
            let key = (Arc::clone(&s.part.topic), s.part.partition);
            let Some(part) = answers.remove(&key) else {
                kept.push(s);
                continue;
            };
            if let Some(e) = ResponseError::try_from_code(part.error_code) {
                let event = match classify(e) {
                    Attempt::Retry(reason) => Event::Moved {
                        reason,
                        backoff: true,
                        served: s.served,
                    },
                    Attempt::OutOfRange(_) => Event::OutOfRange,
                    other => Event::Failed(other),
                };
                let _ = s.part.events.send(event);
                continue;
            }
            s.served = true;
            let end = end_of(&part);
            s.part.end.fetch_max(end, Ordering::Relaxed);
            let records = part.records.as_ref().filter(|r| !r.is_empty());
            match records {
                // Only the first partition of a response is sure to get a
                // whole batch; the others may get a piece of one when it is
                // larger than their limit or the room left. Fetch again, first.
                Some(r) if !was_first && !first_batch_complete(r) => starved.push(s),
                Some(r) => {
                    if s.part.events.is_closed() {
                        continue;
                    }
                    let records = self.settings.budget.hold(r);
                    let event = Event::Records {
                        records,
                        aborted: aborted_of(&part),
                    };
                    if s.part.events.send(event).is_ok() {
                        self.out.push(s.part);
                    }
                }
                None if self.settings.exit_at_end && end >= 0 && s.next >= end => {
                    let _ = s.part.events.send(Event::CaughtUp);
                }
                None => kept.push(s),
            }
        }
        starved.extend(kept);
        self.slots = starved;
    }
}

/// Whether `records` starts with a whole record batch (base offset, length,
/// then `length` bytes).
fn first_batch_complete(records: &Bytes) -> bool {
    if records.len() < 12 {
        return false;
    }
    let len = i32::from_be_bytes(records[8..12].try_into().expect("4 bytes"));
    len >= 0 && records.len() - 12 >= len as usize
}

/// Runs one broker's fetch task until it has no partition left, its
/// connection fails (its partitions then find their leaders again), or the
/// router is dropped.
pub(crate) async fn run(
    addr: String,
    id: u64,
    mut inbox: mpsc::UnboundedReceiver<Dispatch>,
    router: Arc<Router>,
) {
    let settings = router.settings();
    let mut task = Task {
        addr,
        settings: Arc::clone(&settings),
        slots: Vec::new(),
        out: Vec::new(),
    };
    let cfg = &settings.fetch;
    let mut conn: Option<Connection> = None;
    let reason = loop {
        while let Ok(d) = inbox.try_recv() {
            task.add(d);
        }
        task.prune();
        if task.slots.is_empty() {
            if task.out.is_empty() {
                break "no partition left".to_string();
            }
            match inbox.recv().await {
                Some(d) => task.add(d),
                None => return,
            }
            continue;
        }
        // Long-poll only when no partition is out with its reader: one that
        // comes back must not wait behind a poll of idle ones.
        let max_wait = if task.out.is_empty() {
            cfg.max_wait
        } else if task.slots.iter().any(Slot::lagging) {
            Duration::ZERO
        } else {
            tokio::select! {
                d = inbox.recv() => match d {
                    Some(d) => { task.add(d); continue; }
                    None => return,
                },
                _ = tokio::time::sleep(cfg.max_wait) => Duration::ZERO,
            }
        };
        let max_bytes = tokio::select! {
            n = settings.budget.room(cfg.max_bytes, cfg.partition_max_bytes) => n,
            d = inbox.recv() => match d {
                Some(d) => { task.add(d); continue; }
                None => return,
            },
        };
        if conn.is_none() {
            match Connection::connect(&task.addr, fetch_connection(&settings.connection, cfg)).await
            {
                Ok(c) => conn = Some(c),
                Err(e) => match protocol_failure(e) {
                    Attempt::Retry(reason) => {
                        task.scatter(&reason);
                        break reason;
                    }
                    Attempt::Refused(reason) => {
                        task.fail_all(&reason, true);
                        break reason;
                    }
                    other => {
                        let reason = format!("{other:?}");
                        task.fail_all(&reason, false);
                        break reason;
                    }
                },
            }
        }
        let c = conn.as_ref().expect("just connected");
        let sent = async {
            let version = c.negotiate(ApiKey::Fetch, FETCH_VERSIONS)?;
            c.send(&task.request(max_wait, max_bytes), version).await
        }
        .await;
        let response = match sent {
            Ok(r) => r,
            Err(e) => match protocol_failure(e) {
                Attempt::Retry(reason) => {
                    task.scatter(&format!("fetching from {}: {reason}", task.addr));
                    break reason;
                }
                Attempt::Refused(reason) => {
                    task.fail_all(&reason, true);
                    break reason;
                }
                other => {
                    let reason = match other {
                        Attempt::Fail(r) => r,
                        other => format!("{other:?}"),
                    };
                    task.fail_all(&reason, false);
                    break reason;
                }
            },
        };
        if let Some(e) = ResponseError::try_from_code(response.error_code) {
            match classify(e) {
                Attempt::Retry(reason) => {
                    task.scatter(&reason);
                    break reason;
                }
                Attempt::Fail(reason) => {
                    task.fail_all(&reason, false);
                    break reason;
                }
                other => {
                    for s in task.slots.drain(..) {
                        let again = match &other {
                            Attempt::Unauthorized => Attempt::Unauthorized,
                            Attempt::Refused(r) => Attempt::Refused(r.clone()),
                            o => Attempt::Fail(format!("{o:?}")),
                        };
                        let _ = s.part.events.send(Event::Failed(again));
                    }
                    break format!("{other:?}");
                }
            }
        }
        let mut answers = HashMap::new();
        for topic in response.responses {
            let name: Arc<str> = Arc::from(&*topic.topic.0);
            for p in topic.partitions {
                answers.insert((Arc::clone(&name), p.partition_index), p);
            }
        }
        task.deliver(answers);
    };
    tracing::debug!(broker = %task.addr, %reason, "fetch task ends");
    // Nothing new reaches this task once it is out of the router; whatever
    // was handed over meanwhile finds its way again.
    router.retire(&task.addr, id);
    inbox.close();
    while let Ok(d) = inbox.try_recv() {
        let _ = d.part.events.send(Event::Moved {
            reason: reason.clone(),
            backoff: false,
            served: true,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_complete_when_its_length_is_all_there() {
        let mut b = vec![0u8; 8];
        b.extend_from_slice(&20i32.to_be_bytes());
        b.extend_from_slice(&[0u8; 19]);
        assert!(!first_batch_complete(&Bytes::from(b.clone())));
        b.push(0);
        assert!(first_batch_complete(&Bytes::from(b.clone())));
        b.extend_from_slice(&[1, 2, 3]);
        assert!(
            first_batch_complete(&Bytes::from(b)),
            "a partial second batch is fine"
        );
        assert!(!first_batch_complete(&Bytes::from_static(&[0u8; 11])));
    }
}
