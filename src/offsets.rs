//! Which offset is safe to commit, per topic-partition (DESIGN rule 3).
//!
//! The consumer processes messages of one partition on many lanes at once, so
//! they finish out of order. The only offset that may be committed is the
//! lowest one that was dispatched and has not finished yet; when nothing is in
//! flight it is the next offset the fetcher will ask for. Committing anything
//! higher could skip an unfinished message on a crash; committing `offset + 1`
//! of the last finished message is wrong because Kafka offsets have gaps
//! (compaction, transaction markers).
//!
//! # Structure
//!
//! Each partition keeps a queue of *slots*, one per dispatched message, in
//! dispatch order (which is offset order). A slot is addressed by a dispatch
//! sequence number, so completing one is an index computation, not a search.
//! Finished slots are popped from the front, so memory is proportional to the
//! messages in flight and every operation is amortised O(1). The front slot,
//! if any, is always unfinished and is the committable offset.
//!
//! Each partition has its own lock: different partitions never contend, and a
//! worker completing a message holds the [`Completion`] token, which points
//! straight at its partition (no map lookup on the worker thread).
//! [`finish_batch`] lets a worker publish many completions under one lock.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, MutexGuard, RwLock};

use crate::offset_map::OffsetMap;

mod window;
use window::CommitWindow;

/// A topic name and partition number: the key of [`OffsetTracker::snapshot`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    /// Topic name.
    pub topic: Arc<str>,
    /// Partition number within the topic.
    pub partition: i32,
}

impl TopicPartition {
    /// Builds a topic-partition from anything convertible into a shared name.
    pub fn new(topic: impl Into<Arc<str>>, partition: i32) -> Self {
        Self {
            topic: topic.into(),
            partition,
        }
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

/// Why an offset could not be dispatched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OffsetError {
    /// The offset is below the partition's next expected offset (the last
    /// dispatched offset + 1, or the position given to
    /// [`PartitionOffsets::set_next_fetch`]). Accepting it would let the
    /// committable offset move backwards or skip a message, so it is refused.
    /// Usually the fetcher forgot to drop records before its fetch position
    /// (Kafka returns whole batches).
    NotIncreasing {
        /// Where the offending offset was dispatched.
        tp: TopicPartition,
        /// The refused offset.
        offset: i64,
        /// The lowest offset that would have been accepted.
        expected_at_least: i64,
    },
    /// Kafka partitions are numbered from 0; a negative one is a caller bug.
    NegativePartition {
        /// Topic of the refused partition.
        topic: Arc<str>,
        /// The refused partition number.
        partition: i32,
    },
}

impl fmt::Display for OffsetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OffsetError::NotIncreasing {
                tp,
                offset,
                expected_at_least,
            } => write!(
                f,
                "offset {offset} dispatched on {tp} but offsets there must be >= {expected_at_least}"
            ),
            OffsetError::NegativePartition { topic, partition } => {
                write!(f, "negative partition {partition} for topic {topic}")
            }
        }
    }
}

impl std::error::Error for OffsetError {}

/// One dispatched message.
#[derive(Clone, Copy)]
struct Slot {
    offset: i64,
    done: bool,
}

struct State {
    /// Dispatch sequence number of `slots[0]`.
    base_seq: u64,
    /// Dispatched messages not yet popped; the front one is never finished.
    slots: VecDeque<Slot>,
    /// Slots with `done == false`.
    unfinished: usize,
    /// The next offset the fetcher will ask for; `None` until known.
    next_fetch: Option<i64>,
    /// Threads blocked in [`PartitionOffsets::wait_idle`].
    idle_waiters: usize,
    /// Bumped by every dispatch, finish and fetch-position move: while it
    /// stays the same, so does the commit point (the committer skips the
    /// partition without walking its slots).
    version: u64,
}

/// The offset state of one topic-partition.
///
/// Obtained from [`OffsetTracker::partition`]; a fetcher may keep the `Arc`
/// and dispatch through it directly to skip the tracker's map lookup.
pub struct PartitionOffsets {
    tp: TopicPartition,
    state: Mutex<State>,
    idle: Condvar,
    /// Shared with the tracker: how many threads wait for some partition to go
    /// idle. Lanes that batch completions flush early while it is non-zero.
    waiting: Arc<AtomicUsize>,
    /// Shared with the tracker: finished messages, which wake the committer.
    finished: Arc<CommitWindow>,
    /// Set when the partition is revoked (group rebalance): its queued
    /// messages are dropped instead of handled. One object per assignment
    /// of a partition, so completions of an earlier assignment can never
    /// touch the state of a later one (the assignment epoch is the object).
    revoked: AtomicBool,
    /// Set by the committer while the partition's offset map does not fit
    /// the broker's metadata limit: its reader fetches nothing more until
    /// the committed offset advances (see [`crate::offset_map`]).
    map_full: AtomicBool,
}

impl fmt::Debug for PartitionOffsets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.state.lock();
        f.debug_struct("PartitionOffsets")
            .field("tp", &self.tp)
            .field("in_flight", &s.unfinished)
            .field("next_fetch", &s.next_fetch)
            .finish()
    }
}

impl PartitionOffsets {
    fn new(tp: TopicPartition, waiting: Arc<AtomicUsize>, finished: Arc<CommitWindow>) -> Self {
        Self {
            tp,
            state: Mutex::new(State {
                base_seq: 0,
                slots: VecDeque::new(),
                unfinished: 0,
                next_fetch: None,
                idle_waiters: 0,
                version: first_version(),
            }),
            idle: Condvar::new(),
            waiting,
            finished,
            revoked: AtomicBool::new(false),
            map_full: AtomicBool::new(false),
        }
    }

    /// Marks the partition revoked: from now on no handler starts on one of
    /// its messages (the pool drops them unhandled and unfinished). Messages
    /// already inside a handler run on; their completions only touch this
    /// state, which the consumer forgets on revocation.
    pub fn revoke(&self) {
        self.revoked.store(true, Ordering::Release);
    }

    /// The topic-partition this state belongs to.
    pub fn topic_partition(&self) -> &TopicPartition {
        &self.tp
    }

    /// Records that `offset` was handed to processing and returns the token
    /// that marks it finished.
    ///
    /// Offsets must be dispatched in increasing order (gaps allowed) and not
    /// below the position set by [`set_next_fetch`](Self::set_next_fetch);
    /// otherwise [`OffsetError::NotIncreasing`] is returned and nothing
    /// changes. After a dispatch the next fetch position defaults to
    /// `offset + 1`.
    pub fn dispatch(self: &Arc<Self>, offset: i64) -> Result<Completion, OffsetError> {
        let mut s = self.state.lock();
        self.dispatch_locked(&mut s, offset)
    }

    /// Locks the partition for a run of dispatches, so a batch of offsets
    /// (e.g. one fetch response) pays for the lock once instead of once per
    /// offset. [`Dispatcher::dispatch`] has exactly the contract of
    /// [`dispatch`](Self::dispatch).
    ///
    /// The partition stays locked until the `Dispatcher` is dropped: workers
    /// finishing messages of this partition, and [`committable`](Self::committable),
    /// wait meanwhile. Drop it before doing anything that can block.
    pub fn dispatcher(self: &Arc<Self>) -> Dispatcher<'_> {
        Dispatcher {
            part: self,
            state: self.state.lock(),
        }
    }

    /// Body of [`dispatch`](Self::dispatch). Caller holds the lock.
    #[inline]
    fn dispatch_locked(
        self: &Arc<Self>,
        s: &mut State,
        offset: i64,
    ) -> Result<Completion, OffsetError> {
        if let Some(next) = s.next_fetch
            && offset < next
        {
            return Err(OffsetError::NotIncreasing {
                tp: self.tp.clone(),
                offset,
                expected_at_least: next,
            });
        }
        let seq = s.base_seq + s.slots.len() as u64;
        s.slots.push_back(Slot {
            offset,
            done: false,
        });
        s.unfinished += 1;
        s.next_fetch = Some(offset.saturating_add(1));
        s.version = s.version.wrapping_add(1);
        Ok(Completion {
            part: Arc::clone(self),
            seq,
        })
    }

    /// Tells the tracker the fetcher's next position. Only moves forward:
    /// lower values than the current position are ignored.
    ///
    /// Call it only after every message below `offset` that will be
    /// processed has been dispatched; it is what [`committable`](Self::committable)
    /// returns when nothing is in flight (e.g. after a fetch that skipped a
    /// compacted range or ended on a transaction marker).
    pub fn set_next_fetch(&self, offset: i64) {
        let mut s = self.state.lock();
        if s.next_fetch.is_none_or(|cur| offset > cur) {
            s.next_fetch = Some(offset);
            s.version = s.version.wrapping_add(1);
        }
    }

    /// The offset safe to commit: the lowest dispatched-but-unfinished offset,
    /// or the next fetch position when nothing is in flight; `None` if neither
    /// a dispatch nor a fetch position was ever recorded.
    ///
    /// Guarantee: every dispatched offset below the returned value has been
    /// finished.
    pub fn committable(&self) -> Option<i64> {
        let s = self.state.lock();
        match s.slots.front() {
            Some(slot) => Some(slot.offset),
            None => s.next_fetch,
        }
    }

    /// The committable offset (see [`committable`](Self::committable)) and
    /// the offsets finished above it, as an [`OffsetMap`]: what a commit
    /// carries. `None` like `committable`.
    ///
    /// Guarantee: every offset the map marks done was dispatched and
    /// finished here, or lies between two such offsets with nothing
    /// dispatched in between (a gap in the log: no record to handle).
    /// Takes the lock for one pass over the messages in flight.
    pub fn commit_point(&self) -> Option<(i64, OffsetMap)> {
        commit_point_locked(&self.state.lock())
    }

    /// Like [`commit_point`](Self::commit_point), but only when the
    /// partition changed since the version `seen` (a dispatch, a finish or
    /// a move of the fetch position): `None` when it did not, else the
    /// current version with the commit point. Lets a committer skip an
    /// idle partition without walking its messages in flight.
    pub fn commit_point_since(&self, seen: Option<u64>) -> Option<(u64, Option<(i64, OffsetMap)>)> {
        let s = self.state.lock();
        if seen == Some(s.version) {
            return None;
        }
        Some((s.version, commit_point_locked(&s)))
    }

    /// Pauses (`true`) or resumes the partition's fetching because its
    /// offset map is over the metadata limit; returns the previous value.
    pub fn set_map_full(&self, full: bool) -> bool {
        self.map_full.swap(full, Ordering::AcqRel)
    }

    /// True while the partition's offset map is over the metadata limit:
    /// its reader fetches nothing more.
    pub fn map_full(&self) -> bool {
        self.map_full.load(Ordering::Acquire)
    }

    /// Number of dispatched messages not yet finished.
    pub fn in_flight(&self) -> usize {
        self.state.lock().unfinished
    }

    /// Blocks until nothing is in flight or `timeout` elapses; returns `true`
    /// if the partition is idle. Used on group revocation: stop fetching,
    /// wait for idle, commit, then acknowledge.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut s = self.state.lock();
        if s.unfinished == 0 {
            return true;
        }
        s.idle_waiters += 1;
        self.waiting.fetch_add(1, Ordering::SeqCst);
        while s.unfinished > 0 {
            if self.idle.wait_until(&mut s, deadline).timed_out() {
                break;
            }
        }
        s.idle_waiters -= 1;
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        s.unfinished == 0
    }

    /// The offset of the unfinished slot `seq` (its slot stays until it is
    /// finished). Caller holds the lock.
    fn offset_locked(&self, s: &State, seq: u64) -> i64 {
        s.slots[(seq - s.base_seq) as usize].offset
    }

    /// Marks one slot finished. Caller holds the lock.
    fn finish_locked(&self, s: &mut State, seq: u64) {
        let idx = (seq - s.base_seq) as usize;
        let slot = &mut s.slots[idx];
        debug_assert!(!slot.done, "completion finished twice");
        slot.done = true;
        s.unfinished -= 1;
        s.version = s.version.wrapping_add(1);
        if idx == 0 {
            // Only the front can unblock the committable offset; popping here
            // keeps memory bounded by the in-flight count.
            while s.slots.front().is_some_and(|f| f.done) {
                s.slots.pop_front();
                s.base_seq += 1;
            }
        }
        if s.unfinished == 0 && s.idle_waiters > 0 {
            self.idle.notify_all();
        }
    }
}

/// Where a new [`PartitionOffsets`]' version starts: 2^40 apart per object,
/// so a version seen of one assignment of a partition never matches a later
/// assignment's (a committer that missed a revocation still re-reads it).
fn first_version() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1 << 40, Ordering::Relaxed)
}

/// Body of [`PartitionOffsets::commit_point`]. Caller holds the lock.
fn commit_point_locked(s: &State) -> Option<(i64, OffsetMap)> {
    let Some(front) = s.slots.front() else {
        return s.next_fetch.map(|o| (o, OffsetMap::new(o)));
    };
    let base = front.offset;
    let mut ranges: Vec<(i64, i64)> = Vec::new();
    let mut open: Option<(i64, i64)> = None;
    for slot in s.slots.iter().skip(1) {
        match (&mut open, slot.done) {
            (Some(r), true) => r.1 = slot.offset + 1,
            (None, true) => open = Some((slot.offset, slot.offset + 1)),
            (Some(_), false) => ranges.extend(open.take()),
            (None, false) => {}
        }
    }
    ranges.extend(open);
    Some((base, OffsetMap::from_ranges(base, ranges)))
}

/// Dispatches several offsets of one partition under a single lock; obtained
/// from [`PartitionOffsets::dispatcher`]. Holds the partition's lock until
/// dropped.
pub struct Dispatcher<'a> {
    part: &'a Arc<PartitionOffsets>,
    state: MutexGuard<'a, State>,
}

impl fmt::Debug for Dispatcher<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dispatcher")
            .field("tp", &self.part.tp)
            .field("in_flight", &self.state.unfinished)
            .finish()
    }
}

impl Dispatcher<'_> {
    /// Records a dispatched offset; same contract as
    /// [`PartitionOffsets::dispatch`] (increasing offsets, gaps allowed; a
    /// refused offset changes nothing and later ones may still be dispatched).
    #[inline]
    pub fn dispatch(&mut self, offset: i64) -> Result<Completion, OffsetError> {
        self.part.dispatch_locked(&mut self.state, offset)
    }

    /// The partition being dispatched to.
    pub fn topic_partition(&self) -> &TopicPartition {
        &self.part.tp
    }
}

/// Proof that one dispatched offset is being processed; consuming it with
/// [`finish`](Completion::finish) marks the offset finished.
///
/// Dropping a `Completion` without finishing it leaves the offset in flight
/// forever, which is deliberate: a message that was not processed must hold
/// back the committable offset so it is redelivered after a restart.
#[must_use = "an unfinished completion holds the partition's committable offset back"]
pub struct Completion {
    part: Arc<PartitionOffsets>,
    // The offset is not kept here: it is in the partition's slot, and two
    // words (not three) keep a pool job within an inline move.
    seq: u64,
}

impl fmt::Debug for Completion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Completion");
        d.field("tp", &self.part.tp);
        // Never block (or deadlock) a debug print on the partition's lock.
        match self.part.state.try_lock() {
            Some(s) => d.field("offset", &self.part.offset_locked(&s, self.seq)),
            None => d.field("seq", &self.seq),
        };
        d.finish()
    }
}

impl Completion {
    /// The offset this token stands for. Takes the partition's lock.
    pub fn offset(&self) -> i64 {
        let s = self.part.state.lock();
        self.part.offset_locked(&s, self.seq)
    }

    /// The partition this token belongs to.
    pub fn topic_partition(&self) -> &TopicPartition {
        &self.part.tp
    }

    /// Marks the offset finished. O(1) amortised, one partition lock.
    pub fn finish(self) {
        let mut s = self.part.state.lock();
        self.part.finish_locked(&mut s, self.seq);
        drop(s);
        self.part.finished.add(1);
    }

    /// True once the partition this token belongs to was revoked: the
    /// message must not be handled (it belongs to another member now).
    #[inline]
    pub fn is_revoked(&self) -> bool {
        self.part.revoked.load(Ordering::Acquire)
    }
}

/// Marks every completion in `batch` finished, taking each partition's lock
/// once per partition of the batch, and empties the vector (keeping its
/// allocation for reuse).
///
/// Lanes use this to publish completions in batches: the committable offset
/// still only ever covers finished messages; it just advances a little later.
pub fn finish_batch(batch: &mut Vec<Completion>) {
    // Group by partition first: a block from a worker of the `keys`
    // scheduler interleaves partitions, and finishing needs no order within
    // a partition (slots are addressed by sequence number).
    if batch.len() > 1 {
        batch.sort_unstable_by_key(|c| Arc::as_ptr(&c.part) as usize);
    }
    let mut iter = batch.drain(..);
    let Some(first) = iter.next() else { return };
    let mut part = Arc::clone(&first.part);
    let mut guard = part.state.lock();
    part.finish_locked(&mut guard, first.seq);
    let mut n = 1;
    for c in iter {
        if !Arc::ptr_eq(&c.part, &part) {
            drop(guard);
            part.finished.add(n);
            n = 0;
            part = Arc::clone(&c.part);
            guard = part.state.lock();
        }
        part.finish_locked(&mut guard, c.seq);
        n += 1;
    }
    drop(guard);
    part.finished.add(n);
}

/// Tracks committable offsets for every topic-partition a consumer handles.
///
/// Shared as `Arc<OffsetTracker>` between the fetchers (dispatch, next fetch
/// position), the worker pool (completion) and the committer (snapshot).
#[derive(Default)]
pub struct OffsetTracker {
    /// topic -> partition number -> state. A `Vec` indexed by partition keeps
    /// the per-message lookup to one string hash and one index.
    topics: RwLock<TopicMap>,
    waiting: Arc<AtomicUsize>,
    finished: Arc<CommitWindow>,
}

impl fmt::Debug for OffsetTracker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OffsetTracker")
            .field("committable", &self.snapshot())
            .finish()
    }
}

impl OffsetTracker {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    fn lookup(&self, topic: &str, partition: i32) -> Option<Arc<PartitionOffsets>> {
        let idx = usize::try_from(partition).ok()?;
        let topics = self.topics.read();
        topics.get(topic)?.get(idx)?.clone()
    }

    /// The state of one partition, created (with no known position) on first
    /// use. Keep the returned `Arc` to dispatch without map lookups.
    ///
    /// # Panics
    ///
    /// Panics if `partition` is negative.
    pub fn partition(&self, topic: &Arc<str>, partition: i32) -> Arc<PartitionOffsets> {
        self.try_partition(topic, partition)
            .expect("Kafka partitions are non-negative")
    }

    /// Like [`partition`](Self::partition), but refuses a negative partition
    /// instead of panicking.
    pub(crate) fn try_partition(
        &self,
        topic: &Arc<str>,
        partition: i32,
    ) -> Result<Arc<PartitionOffsets>, OffsetError> {
        if let Some(p) = self.lookup(topic, partition) {
            return Ok(p);
        }
        let idx = usize::try_from(partition).map_err(|_| OffsetError::NegativePartition {
            topic: Arc::clone(topic),
            partition,
        })?;
        let mut topics = self.topics.write();
        let parts = topics.entry(Arc::clone(topic)).or_default();
        if parts.len() <= idx {
            parts.resize(idx + 1, None);
        }
        let p = parts[idx].get_or_insert_with(|| {
            Arc::new(PartitionOffsets::new(
                TopicPartition::new(Arc::clone(topic), partition),
                Arc::clone(&self.waiting),
                Arc::clone(&self.finished),
            ))
        });
        Ok(Arc::clone(p))
    }

    /// Records a dispatched offset; see [`PartitionOffsets::dispatch`].
    pub fn dispatch(
        &self,
        topic: &Arc<str>,
        partition: i32,
        offset: i64,
    ) -> Result<Completion, OffsetError> {
        // Hot path (once per message): dispatch under the read lock so the
        // partition's Arc is cloned once (into the Completion), not three times.
        if let Ok(idx) = usize::try_from(partition) {
            let topics = self.topics.read();
            if let Some(p) = topics
                .get(&**topic)
                .and_then(|v| v.get(idx))
                .and_then(Option::as_ref)
            {
                return p.dispatch(offset);
            }
        }
        self.try_partition(topic, partition)?.dispatch(offset)
    }

    /// Sets a partition's next fetch position; see
    /// [`PartitionOffsets::set_next_fetch`]. Also the way to register a
    /// partition's start position (e.g. the committed offset on assignment).
    ///
    /// # Panics
    ///
    /// Panics if `partition` is negative.
    pub fn set_next_fetch(&self, topic: &Arc<str>, partition: i32, offset: i64) {
        self.partition(topic, partition).set_next_fetch(offset);
    }

    /// A partition's committable offset; `None` if the partition is unknown
    /// or has no known position. See [`PartitionOffsets::committable`].
    pub fn committable(&self, topic: &str, partition: i32) -> Option<i64> {
        self.lookup(topic, partition)?.committable()
    }

    /// Messages of a partition dispatched and not finished (0 if unknown).
    pub fn in_flight(&self, topic: &str, partition: i32) -> usize {
        self.lookup(topic, partition).map_or(0, |p| p.in_flight())
    }

    /// Blocks until the partition has nothing in flight or `timeout` elapses;
    /// `true` if idle (an unknown partition is idle).
    pub fn wait_idle(&self, topic: &str, partition: i32, timeout: Duration) -> bool {
        self.lookup(topic, partition)
            .is_none_or(|p| p.wait_idle(timeout))
    }

    /// Forgets a partition (after revocation). Outstanding [`Completion`]s
    /// stay valid but no longer affect this tracker's answers. Returns the
    /// removed state, if any.
    pub fn remove(&self, topic: &str, partition: i32) -> Option<Arc<PartitionOffsets>> {
        let idx = usize::try_from(partition).ok()?;
        let mut topics = self.topics.write();
        topics.get_mut(topic)?.get_mut(idx)?.take()
    }

    /// Forgets a partition only if its current state is `part` (a later
    /// assignment may have replaced it); true if it was removed.
    pub fn remove_if_same(&self, part: &Arc<PartitionOffsets>) -> bool {
        let Ok(idx) = usize::try_from(part.tp.partition) else {
            return false;
        };
        let mut topics = self.topics.write();
        let Some(slot) = topics.get_mut(&*part.tp.topic).and_then(|v| v.get_mut(idx)) else {
            return false;
        };
        if slot.as_ref().is_some_and(|cur| Arc::ptr_eq(cur, part)) {
            *slot = None;
            true
        } else {
            false
        }
    }

    /// Every known partition's state.
    pub fn partitions(&self) -> Vec<Arc<PartitionOffsets>> {
        let topics = self.topics.read();
        topics
            .values()
            .flat_map(|parts| parts.iter().flatten().cloned())
            .collect()
    }

    /// The committable offset of every partition that has one: what the
    /// committer sends in an OffsetCommit (Kafka's committed offset is the
    /// next offset to consume, which is exactly this value).
    pub fn snapshot(&self) -> HashMap<TopicPartition, i64> {
        self.partitions()
            .into_iter()
            .filter_map(|p| Some((p.tp.clone(), p.committable()?)))
            .collect()
    }

    /// True while somebody waits in `wait_idle` on one of the tracker's
    /// partitions (cheap relaxed read): batching workers then publish their
    /// completions after every message.
    #[inline]
    pub fn has_waiters(&self) -> bool {
        self.waiting.load(Ordering::Relaxed) > 0
    }

    /// Bounds what a crash can repeat to about `n` messages: asks for a
    /// commit ([`commit_wanted`](Self::commit_wanted)) each time another
    /// `n / 2` messages finished, and lets workers
    /// [`claim`](Self::claim_blocking) work only while the messages finished
    /// beyond the last acknowledged commit plus those claimed stay under
    /// `n`. 0 turns both off (the default). Meant to be set before the pool
    /// starts: changed while blocks are claimed, the bound is loose until
    /// they end (never shut for good).
    pub fn set_commit_every(&self, n: u64) {
        self.finished.set_limit(n);
    }

    /// How many messages a worker claims at once (one publishing block)
    /// when `workers` work at once: `max`, or less under `commit_every` so
    /// that every worker's block fits in half the window.
    pub fn claim_block(&self, max: usize, workers: usize) -> usize {
        self.finished.block(max, workers)
    }

    /// Claims `n` messages before a worker starts them, blocking the thread
    /// while the commit window is full, unless `give_up()` says nobody will
    /// commit by count meanwhile (the pool drains, a revocation waits for
    /// work): then it claims at once. Returns the claim, to hand back with
    /// [`release_claim`](Self::release_claim) once the block is published.
    ///
    /// Guarantee: while nobody gives up, the messages handled beyond the
    /// last acknowledged commit stay under `commit_every` plus one block
    /// (records an offset map skipped are counted as finished besides).
    pub fn claim_blocking(&self, n: usize, give_up: &dyn Fn() -> bool) -> u64 {
        self.finished.claim_blocking(n, give_up)
    }

    /// Claims `n` messages if the commit window has room for them now.
    pub fn try_claim(&self, n: usize) -> Option<u64> {
        self.finished.try_claim(n as u64).then_some(n as u64)
    }

    /// [`claim_blocking`](Self::claim_blocking) for async workers.
    pub async fn claim(&self, n: usize, give_up: &(dyn Fn() -> bool + Sync)) -> u64 {
        self.finished.claim(n, give_up).await
    }

    /// Hands back a claim once its block's messages are published (or
    /// dropped).
    pub fn release_claim(&self, claim: u64) {
        self.finished.release(claim);
    }

    /// How many messages finished so far (counted while `commit_every` is
    /// set): take it just before reading the commit points of every
    /// partition, and hand it to [`committed`](Self::committed) once that
    /// commit is acknowledged.
    pub fn commit_snapshot(&self) -> u64 {
        self.finished.count()
    }

    /// Records that a commit of every partition, whose state was read
    /// after `snapshot` was taken, was acknowledged: workers waiting to
    /// claim may go on.
    pub fn committed(&self, snapshot: u64) {
        self.finished.covered(snapshot);
    }

    /// Resolves once another `commit_every / 2` messages finished since the
    /// last time it resolved (at once if that happened meanwhile). Never
    /// resolves while `commit_every` is 0.
    pub async fn commit_wanted(&self) {
        self.finished.commit_wanted().await;
    }

    /// Total messages in flight over all partitions.
    pub fn total_in_flight(&self) -> usize {
        self.partitions().iter().map(|p| p.in_flight()).sum()
    }
}

/// FxHash (rustc's hasher): the map is keyed by short topic names looked up
/// once per message, where SipHash's DoS resistance buys nothing (topic names
/// come from our own configuration and the broker).
#[derive(Default, Clone, Copy)]
struct FxHasher {
    hash: u64,
}

type FxBuild = BuildHasherDefault<FxHasher>;

/// topic -> partitions of that topic, indexed by partition number.
type TopicMap = HashMap<Arc<str>, Vec<Option<Arc<PartitionOffsets>>>, FxBuild>;

impl FxHasher {
    const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;

    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(Self::K);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().expect("8-byte chunk")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut buf = [0u8; 8];
            buf[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(buf));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }
}
