//! One partition's reader: hands the partition to its leader's fetch task
//! (see [`crate::fetcher::broker`]), decodes the records that come back,
//! submits them to the pool in offset order (awaiting room without blocking
//! the runtime), advances the tracker's fetch position, and hands the
//! partition back. Leader changes, resets and errors of the partition are
//! dealt with here, so one partition's trouble never holds up the others
//! sharing its broker's requests.
//!
//! Stopping the reader (revocation, shutdown) is immediate: once it has
//! returned nothing more of the partition is submitted, and the broker task
//! drops the partition at its next turn.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::fetcher::broker::{Dispatch, Event, PartLink};
use crate::fetcher::router::Router;
use crate::fetcher::{Attempt, INITIAL_BACKOFF, MAX_BACKOFF, PartitionFetcher};
use crate::message::Message;
use crate::offset_map::Skipper;
use crate::offsets::PartitionOffsets;
use crate::pool::{Pool, SubmitError};

/// Messages decoded from a response at a time (whole batches, so at least
/// this many when there are). A [`Message`](crate::Message) is 112 bytes
/// plus its slice of the records, often 4-6 times a small record's size on
/// the wire: decoding each partition's whole 1 MiB answer at once held
/// 39 MiB of messages waiting for the pool (heaptrack, 6 partitions, 10,000
/// keys), more than the fetch budget that was meant to bound it.
const DECODE_WINDOW: usize = 2048;

/// How a partition's reader ended.
#[derive(Debug)]
pub(crate) enum Ended {
    /// Reached the end of the log (`exit_at_end`).
    CaughtUp,
    /// Told to stop, or the pool stopped taking messages.
    Stopped,
}

/// What a partition's reader works with.
pub(crate) struct Reader {
    /// The partition's position, lookups and errors.
    pub(crate) fetcher: PartitionFetcher,
    /// Where its records go.
    pub(crate) pool: Arc<Pool>,
    /// Its offset state in the tracker.
    pub(crate) part: Arc<PartitionOffsets>,
    /// End of its readable log as last seen, shared with the broker tasks.
    pub(crate) end: Arc<AtomicI64>,
    /// The broker fetch tasks.
    pub(crate) router: Arc<Router>,
    /// Stop once caught up.
    pub(crate) exit_at_end: bool,
    /// Records the committed offset map marks done: skipped (finished in
    /// the tracker at once, never handled). `None` once passed.
    pub(crate) done: Option<Skipper>,
}

/// How often a partition paused by a full offset map looks again.
const MAP_FULL_RECHECK: std::time::Duration = std::time::Duration::from_millis(100);

/// Transient trouble of one partition: when it started and the next pause.
struct Trouble {
    since: Instant,
    backoff: std::time::Duration,
    reason: String,
}

impl Reader {
    /// Reads until told to stop, caught up (with `exit_at_end`), or failed.
    pub(crate) async fn run(mut self, mut stop: watch::Receiver<bool>) -> Result<Ended> {
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let link = Arc::new(PartLink {
            topic: Arc::clone(self.fetcher.topic()),
            partition: self.fetcher.partition(),
            end: Arc::clone(&self.end),
            events: events_tx,
        });
        // Where the start-up lookups found it; looked up again when it moves.
        let mut leader: Option<String> = self.fetcher.known_leader().map(str::to_string);
        let mut trouble: Option<Trouble> = None;
        loop {
            if *stop.borrow() {
                return Ok(Ended::Stopped);
            }
            if self.exit_at_end && self.caught_up() {
                return Ok(Ended::CaughtUp);
            }
            // Its offset map is over the metadata limit: fetch nothing more
            // until the committer sees the map fit again (the committed
            // offset advanced). The other partitions keep flowing.
            if self.part.map_full() {
                tokio::select! {
                    _ = tokio::time::sleep(MAP_FULL_RECHECK) => continue,
                    _ = stop.changed() => return Ok(Ended::Stopped),
                }
            }
            let addr = match &leader {
                Some(a) => a.clone(),
                None => {
                    let found = tokio::select! {
                        f = self.fetcher.locate() => f,
                        _ = stop.changed() => return Ok(Ended::Stopped),
                    };
                    match found {
                        Ok(a) => {
                            leader = Some(a.clone());
                            a
                        }
                        Err(Attempt::Retry(reason)) => {
                            if !self.pause(&mut trouble, reason, &mut stop).await? {
                                return Ok(Ended::Stopped);
                            }
                            continue;
                        }
                        Err(other) => return Err(self.fetcher.failure(other)),
                    }
                }
            };
            self.router.dispatch(
                &addr,
                Dispatch {
                    part: Arc::clone(&link),
                    next: self.fetcher.position(),
                },
            );
            let event = tokio::select! {
                e = events.recv() => e.expect("the link holds a sender"),
                _ = stop.changed() => return Ok(Ended::Stopped),
            };
            match event {
                Event::Records { records, aborted } => {
                    trouble = None;
                    // A window of decoded messages at a time: decoding a
                    // whole response at once held several times its size.
                    let mut decoder = self.fetcher.decoder(&records, &aborted);
                    loop {
                        let (batch, more) =
                            self.fetcher
                                .accept_window(&mut decoder, &records, DECODE_WINDOW)?;
                        if !self.submit(batch, &mut stop).await? {
                            return Ok(Ended::Stopped);
                        }
                        self.part.set_next_fetch(self.fetcher.position());
                        if !more {
                            break;
                        }
                    }
                }
                Event::CaughtUp => trouble = None,
                Event::Moved {
                    reason,
                    backoff,
                    served,
                } => {
                    leader = None;
                    if served {
                        trouble = None;
                    }
                    if backoff {
                        tracing::debug!(topic = %link.topic, partition = link.partition, %reason, "finding the leader again");
                        if !self.pause(&mut trouble, reason, &mut stop).await? {
                            return Ok(Ended::Stopped);
                        }
                    }
                }
                Event::OutOfRange => {
                    tokio::select! {
                        r = self.fetcher.reset_out_of_range() => r?,
                        _ = stop.changed() => return Ok(Ended::Stopped),
                    }
                    self.part.set_next_fetch(self.fetcher.position());
                }
                Event::Failed(attempt) => return Err(self.fetcher.failure(attempt)),
            }
        }
    }

    /// Whether the position reached the end of the readable log as last seen.
    fn caught_up(&self) -> bool {
        let end = self.end.load(Ordering::Relaxed);
        end >= 0 && self.fetcher.position() >= end
    }

    /// One batch submission per fetch: in offset order, awaiting room
    /// without blocking the runtime. `false` when told to stop meanwhile
    /// (leaving mid-submit is safe: what was queued is processed or dropped
    /// on revocation, the rest stays unfinished) or the pool stopped.
    async fn submit(
        &mut self,
        batch: Vec<Message>,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<bool> {
        let Some(done) = &mut self.done else {
            return self.submit_all(batch, stop).await;
        };
        let flags: Vec<bool> = batch.iter().map(|m| done.is_done(m.offset)).collect();
        if batch.last().is_some_and(|m| done.passed(m.offset + 1)) {
            self.done = None;
        }
        if !flags.contains(&true) {
            return self.submit_all(batch, stop).await;
        }
        // Records to hand over go to the pool; those the map marks done are
        // finished in the tracker in their place, in offset order, so the
        // committed offset moves past them and the next map keeps them.
        let mut handle: Vec<Message> = Vec::new();
        let mut skipped = 0u64;
        for (msg, is_done) in batch.into_iter().zip(flags) {
            if !is_done {
                handle.push(msg);
                continue;
            }
            if !handle.is_empty() && !self.submit_all(std::mem::take(&mut handle), stop).await? {
                self.pool.note_already_done(skipped);
                return Ok(false);
            }
            self.part
                .dispatch(msg.offset)
                .map_err(|e| Error::kafka(format!("skipping {}", self.part.topic_partition()), e))?
                .finish();
            skipped += 1;
        }
        self.pool.note_already_done(skipped);
        self.submit_all(handle, stop).await
    }

    /// Submits every record of `batch` to the pool.
    async fn submit_all(
        &self,
        batch: Vec<Message>,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<bool> {
        if batch.is_empty() {
            return Ok(true);
        }
        tokio::select! {
            r = self.pool.submit_batch_async(batch) => match r {
                Ok(()) => Ok(true),
                Err(SubmitError::Stopped | SubmitError::ShuttingDown) => Ok(false),
                Err(e) => Err(Error::kafka(
                    format!("dispatching {}", self.part.topic_partition()),
                    e,
                )),
            },
            _ = stop.changed() => Ok(false),
        }
    }

    /// Waits before trying again after transient trouble; fails once the
    /// trouble has lasted the retry budget. `false` when told to stop.
    async fn pause(
        &self,
        trouble: &mut Option<Trouble>,
        reason: String,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<bool> {
        let budget = self.fetcher.retry_budget();
        let t = trouble.get_or_insert_with(|| Trouble {
            since: Instant::now(),
            backoff: INITIAL_BACKOFF,
            reason: String::new(),
        });
        t.reason = reason;
        let deadline = t.since + budget;
        let now = Instant::now();
        if now >= deadline {
            return Err(self.fetcher.gave_up(&t.reason, budget));
        }
        let pause = t.backoff.min(deadline - now);
        t.backoff = (t.backoff * 2).min(MAX_BACKOFF);
        tokio::select! {
            _ = tokio::time::sleep(pause) => Ok(true),
            _ = stop.changed() => Ok(false),
        }
    }
}
