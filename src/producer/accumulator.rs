//! The caller's side of the producer: one open batch per partition that
//! records are encoded into, the queue of sealed batches the sender takes
//! from, and the memory budget.
//!
//! Batches are sealed under the accumulator's lock, by whichever side seals
//! them (the caller when a batch is full, the sender when it lingered long
//! enough), and queued in that order, so a partition's batches reach the
//! sender in the order their records were sent.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Notify;

use super::{Compression, Shared};
use crate::records::encode::BatchBuilder;

/// A sealed batch, ready to send.
pub struct Sealed {
    /// The encoded batch (producer fields not yet stamped).
    pub data: Bytes,
    /// Record numbers, in batch order (for the report and the counters).
    pub numbers: Vec<u64>,
    /// Budget bytes the batch holds until it is done.
    pub budget: usize,
    /// When its first record was added (the delivery timeout runs from here).
    pub created: Instant,
}

struct Open {
    builder: BatchBuilder,
    numbers: Vec<u64>,
    budget: usize,
    created: Instant,
}

/// What [`Accumulator::append`] did.
pub enum Appended {
    /// Queued; `wake` asks to wake the sender (a batch was sealed or opened).
    Queued { wake: bool },
    /// The partition stopped after a failed batch; the record was not queued.
    Stopped(String),
    /// The producer is closed; the record was not queued.
    Closed,
}

#[derive(Default)]
struct Partition {
    open: Option<Open>,
    ready: VecDeque<Sealed>,
    stopped: Option<String>,
}

/// Per-partition open batches and sealed queues; see the module docs.
pub struct Accumulator {
    partitions: Vec<Partition>,
    batch_cap: usize,
    compression: Compression,
    closed: bool,
    /// Encoding or codec failures (a bug): the batch's record numbers, its
    /// budget bytes and the error; the sender fails the records.
    pub seal_errors: Vec<(Vec<u64>, usize, String)>,
}

impl Accumulator {
    /// Empty, for `n` partitions, sealing batches at `batch_cap` bytes.
    pub fn new(n: usize, batch_cap: usize, compression: Compression) -> Self {
        Self {
            partitions: (0..n).map(|_| Partition::default()).collect(),
            batch_cap,
            compression,
            closed: false,
            seal_errors: Vec::new(),
        }
    }

    /// Encodes one record into partition `p`'s open batch, sealing it first
    /// if the record would overflow it, and after if it is full.
    #[allow(clippy::too_many_arguments)]
    pub fn append(
        &mut self,
        p: usize,
        number: u64,
        key: Option<&[u8]>,
        value: &[u8],
        headers: &[(String, Vec<u8>)],
        timestamp: i64,
        size: usize,
    ) -> Appended {
        if let Some(reason) = &self.partitions[p].stopped {
            return Appended::Stopped(reason.clone());
        }
        if self.closed {
            // The sender stops once what was queued is done: nothing would
            // ever send this record.
            return Appended::Closed;
        }
        let cap = self.batch_cap;
        let mut wake = false;
        let full = self.partitions[p]
            .open
            .as_ref()
            .is_some_and(|o| !o.builder.is_empty() && o.builder.size() + size > cap);
        if full {
            self.seal(p);
            wake = true;
        }
        let part = &mut self.partitions[p];
        let open = part.open.get_or_insert_with(|| {
            wake = true;
            Open {
                // Sized for a whole batch, so it never grows by copying; the
                // pages of a large allocation are only touched as records
                // arrive, and the budget bounds what arrives.
                builder: BatchBuilder::with_capacity(cap.max(size + 128)),
                numbers: Vec::new(),
                budget: 0,
                created: Instant::now(),
            }
        });
        open.builder.push(key, value, headers, timestamp);
        open.numbers.push(number);
        open.budget += size;
        if open.builder.size() >= cap {
            self.seal(p);
            wake = true;
        }
        Appended::Queued { wake }
    }

    fn seal(&mut self, p: usize) {
        let Some(open) = self.partitions[p].open.take() else {
            return;
        };
        match open.builder.seal(self.compression) {
            Ok(data) => self.partitions[p].ready.push_back(Sealed {
                data,
                numbers: open.numbers,
                budget: open.budget,
                created: open.created,
            }),
            Err(e) => self.seal_errors.push((
                open.numbers,
                open.budget,
                format!("encoding a batch for partition {p}: {e}"),
            )),
        }
    }

    /// Seals open batches older than `linger` (all of them once closed).
    /// Returns when the next open batch is due, if any.
    pub fn seal_due(&mut self, linger: Duration, now: Instant) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        for p in 0..self.partitions.len() {
            let Some(created) = self.partitions[p].open.as_ref().map(|o| o.created) else {
                continue;
            };
            if self.closed || now >= created + linger {
                self.seal(p);
            } else {
                let due = created + linger;
                next = Some(next.map_or(due, |n| n.min(due)));
            }
        }
        next
    }

    /// Seals every open batch (the budget ran out: waiting for the linger
    /// would only stall).
    pub fn seal_all(&mut self) {
        for p in 0..self.partitions.len() {
            self.seal(p);
        }
    }

    /// Takes partition `p`'s sealed batches, oldest first.
    pub fn take_ready(&mut self, p: usize) -> impl Iterator<Item = Sealed> + '_ {
        self.partitions[p].ready.drain(..)
    }

    /// Stops partition `p`: later appends fail with `reason`. Returns what
    /// was still open or queued, for the caller to fail.
    pub fn stop(&mut self, p: usize, reason: &str) -> Vec<Sealed> {
        self.seal(p);
        let part = &mut self.partitions[p];
        part.stopped.get_or_insert_with(|| reason.to_string());
        part.ready.drain(..).collect()
    }

    /// No more appends are coming: seal everything at once from now on.
    pub fn close(&mut self) {
        self.closed = true;
        self.seal_all();
    }

    /// Closed, and nothing open or queued.
    pub fn drained(&self) -> bool {
        self.closed
            && self
                .partitions
                .iter()
                .all(|p| p.open.is_none() && p.ready.is_empty())
    }
}

/// The memory budget (`buffer.memory`): bytes of records between `send`
/// and their acknowledgement. `send` waits while it is spent.
pub struct Budget {
    used: AtomicUsize,
    limit: usize,
    freed: Notify,
}

impl Budget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            used: AtomicUsize::new(0),
            limit,
            freed: Notify::new(),
        }
    }

    /// Takes `n` bytes, waiting until they fit. A record larger than the
    /// whole budget still goes through when nothing else is buffered.
    pub async fn acquire(&self, n: usize, shared: &Shared) {
        loop {
            if self.try_acquire(n) {
                return;
            }
            let used = self.used.load(Ordering::Acquire);
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if self.used.load(Ordering::Acquire) != used {
                continue;
            }
            // Open batches hold budget too: seal them now rather than wait
            // for their linger.
            shared.accumulator.lock().seal_all();
            shared.wake.notify_one();
            freed.await;
        }
    }

    /// Takes `n` bytes if they fit now (the rule of [`acquire`](Self::acquire)).
    pub fn try_acquire(&self, n: usize) -> bool {
        let used = self.used.load(Ordering::Acquire);
        let fits = used == 0 || used + n <= self.limit;
        if fits {
            self.used.fetch_add(n, Ordering::AcqRel);
        }
        fits
    }

    /// Gives back `n` bytes.
    pub fn release(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
        self.freed.notify_waiters();
    }
}
