//! Offset maps: which offsets beyond the committed one are already finished,
//! carried in the OffsetCommit `metadata` string (issue 15).
//!
//! Kafka's committed offset says "everything below this is done". A
//! key-ordered consumer finishes messages out of offset order, so at any
//! moment many messages above that prefix are finished too; after a crash or
//! a hand-over they would be handled again. The map records them, so the next
//! owner of the partition skips them.
//!
//! # Format (version 1)
//!
//! The metadata string is standard base64 (with padding) of:
//!
//! | bytes | meaning |
//! |---|---|
//! | 1 | magic [`MAGIC_V1`] (`0xB7`): this format, version 1 |
//! | 1 | encoding: [`RUNS`] (1) or [`BITSET`] (2) |
//! | varint | the base: the committed offset the map belongs to |
//! | ... | the encoding's payload |
//!
//! Varints are unsigned LEB128 (7 bits a byte, low group first). Offsets are
//! relative to the base; the base itself is never done (it is the first
//! unfinished offset).
//!
//! * **Runs**: a varint count `n`, then `n` pairs of varints `(gap, len)`:
//!   skip `gap` offsets (not done; at least 1), then `len` offsets are done
//!   (at least 1). The first gap starts at the base.
//! * **Bitset**: a varint `span`, then `ceil(span / 8)` bytes; bit `i`
//!   (least significant bit first within each byte) set means `base + i` is
//!   done. Bit 0 is never set.
//!
//! Offsets at or beyond the map's end are not done. The encoder picks the
//! shorter encoding per commit; the magic byte lets the format evolve.
//!
//! # What a reader may conclude
//!
//! A map is only ever read together with the committed offset it was
//! committed with: a map whose base differs (offsets reset by an admin tool,
//! metadata left by someone else) is ignored. Metadata that is not a map we
//! can read — foreign text, corrupt bytes, a future version — means nothing
//! is done beyond the committed offset ([`read_metadata`] says why, so the
//! caller logs one line and goes on). Maps written by Confluent's
//! parallel-consumer are read too ([`parallel_consumer`]).
//!
//! # Size
//!
//! The broker refuses metadata longer than its `offset.metadata.max.bytes`
//! (4096 by default). [`OffsetMap::encode_within`] keeps the longest prefix
//! of the map that fits and says when it had to cut: the consumer then
//! pauses fetching that partition until its committed offset advances
//! (what it cut is safe to lose: those offsets are merely handled again).

pub mod parallel_consumer;

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

/// First byte of a version-1 map. Chosen outside the printable ASCII range
/// so it cannot be mistaken for one of parallel-consumer's magic characters.
pub const MAGIC_V1: u8 = 0xB7;
/// Encoding byte: runs of (not done, done) lengths.
pub const RUNS: u8 = 1;
/// Encoding byte: one bit per offset.
pub const BITSET: u8 = 2;

/// Offsets finished beyond a committed offset (the *base*).
///
/// Guarantee: the base itself is never marked done, and every range lies
/// above it. Built from the tracker ([`crate::offsets::PartitionOffsets::commit_point`]),
/// which only ever puts finished offsets in it, or decoded from metadata.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OffsetMap {
    base: i64,
    /// Sorted, disjoint, non-adjacent half-open ranges `[start, end)`, all
    /// above `base`.
    done: Vec<(i64, i64)>,
}

/// Why metadata could not be read as an offset map. Reading goes on as if
/// nothing beyond the committed offset were done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unreadable {
    /// Not base64, or empty after decoding.
    NotBase64,
    /// A first byte that is neither ours nor parallel-consumer's.
    UnknownMagic(u8),
    /// A version or encoding of ours this build does not know.
    UnknownEncoding(u8),
    /// The bytes end early, have bytes left over, or break a rule of the
    /// format (a zero gap, a range past the span...).
    Corrupt(&'static str),
    /// The map belongs to another committed offset (offsets were reset, or
    /// the metadata is stale).
    OtherBase {
        /// The base the map names.
        map: i64,
        /// The committed offset it came with.
        committed: i64,
    },
}

impl fmt::Display for Unreadable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unreadable::NotBase64 => write!(f, "it is not base64"),
            Unreadable::UnknownMagic(m) => write!(f, "unknown first byte 0x{m:02x}"),
            Unreadable::UnknownEncoding(e) => write!(f, "unknown encoding {e}"),
            Unreadable::Corrupt(why) => write!(f, "corrupt ({why})"),
            Unreadable::OtherBase { map, committed } => write!(
                f,
                "it was written for offset {map}, not the committed {committed}"
            ),
        }
    }
}

/// Which writer's map a piece of metadata held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Ours ([`MAGIC_V1`]).
    MyKafkaMs,
    /// Confluent's parallel-consumer, with its encoding's name.
    ParallelConsumer(&'static str),
}

/// Reads the metadata committed with `committed`: `Ok(None)` when there is
/// none (empty: nothing done beyond the committed offset, nothing to say),
/// `Ok(Some(..))` for a map of ours or parallel-consumer's, `Err` when the
/// metadata is there but unreadable (treat as nothing done; log why).
pub fn read_metadata(
    committed: i64,
    metadata: &str,
) -> Result<Option<(OffsetMap, Source)>, Unreadable> {
    if metadata.is_empty() {
        return Ok(None);
    }
    let bytes = BASE64
        .decode(metadata.trim())
        .map_err(|_| Unreadable::NotBase64)?;
    let Some(&magic) = bytes.first() else {
        return Err(Unreadable::NotBase64);
    };
    if magic == MAGIC_V1 {
        return OffsetMap::decode_v1(committed, &bytes).map(|m| Some((m, Source::MyKafkaMs)));
    }
    match parallel_consumer::decode(committed, &bytes) {
        Some(result) => result.map(|(m, name)| Some((m, Source::ParallelConsumer(name)))),
        None => Err(Unreadable::UnknownMagic(magic)),
    }
}

/// An encoded map and whether it had to be cut to fit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded {
    /// The metadata string (empty when nothing beyond the base is done).
    pub metadata: String,
    /// True when finished offsets were left out to stay within the bound.
    pub truncated: bool,
}

impl OffsetMap {
    /// An empty map for `base`: nothing beyond it done.
    pub fn new(base: i64) -> Self {
        Self {
            base,
            done: Vec::new(),
        }
    }

    /// Builds a map from done ranges `[start, end)` in increasing order.
    /// Ranges at or below the base are cut to start above it; empty ones
    /// are dropped; touching or overlapping ones are merged.
    pub fn from_ranges(base: i64, ranges: impl IntoIterator<Item = (i64, i64)>) -> Self {
        let mut done: Vec<(i64, i64)> = Vec::new();
        for (start, end) in ranges {
            let start = start.max(base.saturating_add(1));
            if end <= start {
                continue;
            }
            match done.last_mut() {
                Some(last) if start <= last.1 => last.1 = last.1.max(end),
                _ => done.push((start, end)),
            }
        }
        Self { base, done }
    }

    /// The committed offset this map belongs to.
    pub fn base(&self) -> i64 {
        self.base
    }

    /// The done ranges `[start, end)`, sorted and disjoint.
    pub fn ranges(&self) -> &[(i64, i64)] {
        &self.done
    }

    /// True when nothing beyond the base is done.
    pub fn is_empty(&self) -> bool {
        self.done.is_empty()
    }

    /// One past the highest done offset (the base when none is).
    pub fn end(&self) -> i64 {
        self.done.last().map_or(self.base, |r| r.1)
    }

    /// How many offsets the map marks done.
    pub fn done_count(&self) -> u64 {
        self.done.iter().map(|(s, e)| (e - s) as u64).sum()
    }

    /// Whether `offset` is marked done.
    pub fn contains(&self, offset: i64) -> bool {
        let i = self.done.partition_point(|r| r.1 <= offset);
        self.done.get(i).is_some_and(|r| r.0 <= offset)
    }

    /// Encodes the whole map, whatever its size.
    pub fn encode(&self) -> String {
        self.encode_prefix(self.done.len())
    }

    /// Encodes the longest prefix of the map (whole ranges) whose metadata
    /// string is at most `max_bytes` long; `truncated` says whether ranges
    /// were left out. With `max_bytes` too small for any range the metadata
    /// is empty (and `truncated` true if the map was not).
    pub fn encode_within(&self, max_bytes: usize) -> Encoded {
        let full = self.encoded_len(self.done.len());
        if base64_len(full) <= max_bytes {
            return Encoded {
                metadata: self.encode(),
                truncated: false,
            };
        }
        // Sizes grow with the number of ranges kept: the largest that fits.
        let (mut lo, mut hi) = (0usize, self.done.len());
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            if base64_len(self.encoded_len(mid)) <= max_bytes {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        Encoded {
            metadata: self.encode_prefix(lo),
            truncated: true,
        }
    }

    /// Encoded length in bytes (before base64) of the first `n` ranges in
    /// the shorter encoding; 0 when `n` is 0 (no metadata at all).
    fn encoded_len(&self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        let header = 2 + varint_len(self.base as u64);
        header + self.runs_len(n).min(self.bitset_len(n))
    }

    fn runs_len(&self, n: usize) -> usize {
        let mut len = varint_len(n as u64);
        let mut at = self.base;
        for &(s, e) in &self.done[..n] {
            len += varint_len((s - at) as u64) + varint_len((e - s) as u64);
            at = e;
        }
        len
    }

    fn bitset_len(&self, n: usize) -> usize {
        let span = (self.done[n - 1].1 - self.base) as u64;
        varint_len(span) + span.div_ceil(8) as usize
    }

    fn encode_prefix(&self, n: usize) -> String {
        if n == 0 {
            return String::new();
        }
        let mut out = vec![MAGIC_V1];
        let runs = self.runs_len(n) <= self.bitset_len(n);
        out.push(if runs { RUNS } else { BITSET });
        put_varint(&mut out, self.base as u64);
        let ranges = &self.done[..n];
        if runs {
            put_varint(&mut out, n as u64);
            let mut at = self.base;
            for &(s, e) in ranges {
                put_varint(&mut out, (s - at) as u64);
                put_varint(&mut out, (e - s) as u64);
                at = e;
            }
        } else {
            let span = (ranges[n - 1].1 - self.base) as u64;
            put_varint(&mut out, span);
            let start = out.len();
            out.resize(start + span.div_ceil(8) as usize, 0);
            for &(s, e) in ranges {
                for o in s..e {
                    let i = (o - self.base) as usize;
                    out[start + i / 8] |= 1 << (i % 8);
                }
            }
        }
        BASE64.encode(out)
    }

    /// Decodes a version-1 map (`bytes[0] == MAGIC_V1`) for `committed`.
    fn decode_v1(committed: i64, bytes: &[u8]) -> Result<Self, Unreadable> {
        let mut r = Reader { bytes, at: 1 };
        let encoding = r.byte()?;
        let base = r.offset()?;
        if base != committed {
            return Err(Unreadable::OtherBase {
                map: base,
                committed,
            });
        }
        let mut done = Vec::new();
        match encoding {
            RUNS => {
                let n = r.varint()?;
                let mut at = base;
                for _ in 0..n {
                    let gap = r.varint()?;
                    let len = r.varint()?;
                    if gap == 0 || len == 0 {
                        return Err(Unreadable::Corrupt("an empty run"));
                    }
                    let start = add(at, gap)?;
                    let end = add(start, len)?;
                    done.push((start, end));
                    at = end;
                }
            }
            BITSET => {
                let span = r.varint()?;
                let bytes = r.take(span.div_ceil(8))?;
                if bytes.first().is_some_and(|b| b & 1 != 0) {
                    return Err(Unreadable::Corrupt("the base marked done"));
                }
                let mut run: Option<i64> = None;
                for i in 0..span {
                    let set = bytes[(i / 8) as usize] & (1 << (i % 8)) != 0;
                    let o = add(base, i)?;
                    match (set, run) {
                        (true, None) => run = Some(o),
                        (false, Some(s)) => {
                            done.push((s, o));
                            run = None;
                        }
                        _ => {}
                    }
                }
                if let Some(s) = run {
                    done.push((s, add(base, span)?));
                }
                // Bits past the span in the last byte must be clear.
                if span % 8 != 0 && bytes.last().is_some_and(|b| b >> (span % 8) != 0) {
                    return Err(Unreadable::Corrupt("bits past the span"));
                }
            }
            other => return Err(Unreadable::UnknownEncoding(other)),
        }
        if r.at != bytes.len() {
            return Err(Unreadable::Corrupt("bytes left over"));
        }
        Ok(Self { base, done })
    }
}

/// `base + n` as an offset, refusing overflow.
fn add(base: i64, n: u64) -> Result<i64, Unreadable> {
    i64::try_from(n)
        .ok()
        .and_then(|n| base.checked_add(n))
        .ok_or(Unreadable::Corrupt("an offset out of range"))
}

/// Length of the base64 (padded) text of `n` bytes.
fn base64_len(n: usize) -> usize {
    n.div_ceil(3) * 4
}

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A cursor over a decoded metadata buffer.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8, Unreadable> {
        let b = *self
            .bytes
            .get(self.at)
            .ok_or(Unreadable::Corrupt("ends early"))?;
        self.at += 1;
        Ok(b)
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], Unreadable> {
        let n = usize::try_from(n).map_err(|_| Unreadable::Corrupt("ends early"))?;
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.bytes.len())
            .ok_or(Unreadable::Corrupt("ends early"))?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn varint(&mut self) -> Result<u64, Unreadable> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(Unreadable::Corrupt("a varint too long"))
    }

    fn offset(&mut self) -> Result<i64, Unreadable> {
        i64::try_from(self.varint()?).map_err(|_| Unreadable::Corrupt("an offset out of range"))
    }
}

/// Skips the records an inherited map marks done, in offset order: the
/// reader of a partition asks about each record it is about to hand over.
#[derive(Debug)]
pub struct Skipper {
    map: OffsetMap,
    /// Index of the first range not yet passed.
    next: usize,
}

impl Skipper {
    /// A skipper over `map`, or `None` when it marks nothing done.
    pub fn new(map: OffsetMap) -> Option<Self> {
        (!map.is_empty()).then_some(Self { map, next: 0 })
    }

    /// Whether `offset` is marked done. Offsets must be asked in
    /// increasing order (amortised O(1)).
    pub fn is_done(&mut self, offset: i64) -> bool {
        while let Some(&(_, end)) = self.map.done.get(self.next) {
            if offset < end {
                return offset >= self.map.done[self.next].0;
            }
            self.next += 1;
        }
        false
    }

    /// True once every done range lies below `position`: nothing left to skip.
    pub fn passed(&self, position: i64) -> bool {
        position >= self.map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(base: i64, ranges: &[(i64, i64)]) -> OffsetMap {
        OffsetMap::from_ranges(base, ranges.iter().copied())
    }

    #[test]
    fn few_long_runs_encode_as_runs_and_scattered_ones_as_a_bitset() {
        let runs = map(100, &[(101, 5000)]);
        let bytes = BASE64.decode(runs.encode()).unwrap();
        assert_eq!((bytes[0], bytes[1]), (MAGIC_V1, RUNS));
        let alternate = OffsetMap::from_ranges(100, (0..200).map(|i| (101 + 2 * i, 102 + 2 * i)));
        let bytes = BASE64.decode(alternate.encode()).unwrap();
        assert_eq!((bytes[0], bytes[1]), (MAGIC_V1, BITSET));
        for m in [runs, alternate] {
            let (back, src) = read_metadata(100, &m.encode()).unwrap().unwrap();
            assert_eq!((back, src), (m, Source::MyKafkaMs));
        }
    }

    #[test]
    fn an_empty_map_is_no_metadata_and_no_metadata_is_no_map() {
        assert_eq!(OffsetMap::new(7).encode(), "");
        assert_eq!(read_metadata(7, ""), Ok(None));
    }

    #[test]
    fn unreadable_metadata_says_why() {
        assert_eq!(read_metadata(0, "not base64!"), Err(Unreadable::NotBase64));
        assert_eq!(
            read_metadata(0, &BASE64.encode([0x7f, 2, 3])),
            Err(Unreadable::UnknownMagic(0x7f))
        );
        assert_eq!(
            read_metadata(0, &BASE64.encode([MAGIC_V1, 9, 0])),
            Err(Unreadable::UnknownEncoding(9))
        );
        let m = map(5, &[(6, 8)]).encode();
        assert_eq!(
            read_metadata(4, &m),
            Err(Unreadable::OtherBase {
                map: 5,
                committed: 4
            })
        );
        let mut bytes = BASE64.decode(&m).unwrap();
        bytes.push(0);
        assert_eq!(
            read_metadata(5, &BASE64.encode(&bytes)),
            Err(Unreadable::Corrupt("bytes left over"))
        );
        bytes.truncate(3);
        assert_eq!(
            read_metadata(5, &BASE64.encode(&bytes)),
            Err(Unreadable::Corrupt("ends early"))
        );
    }

    #[test]
    fn a_map_too_big_keeps_the_longest_prefix_that_fits() {
        let m = OffsetMap::from_ranges(0, (0..3000).map(|i| (1 + 3 * i, 2 + 3 * i)));
        let full = m.encode();
        assert!(full.len() > 100);
        let cut = m.encode_within(100);
        assert!(cut.truncated);
        assert!(cut.metadata.len() <= 100, "{}", cut.metadata.len());
        let (back, _) = read_metadata(0, &cut.metadata).unwrap().unwrap();
        assert!(!back.is_empty());
        assert_eq!(back.ranges(), &m.ranges()[..back.ranges().len()]);
        // One more range would not have fitted.
        let n = back.ranges().len();
        assert!(base64_len(m.encoded_len(n + 1)) > 100);
        assert_eq!(m.encode_within(full.len()).metadata, full);
        assert!(!m.encode_within(full.len()).truncated);
        assert_eq!(m.encode_within(4).metadata, "");
    }

    #[test]
    fn the_skipper_answers_in_offset_order() {
        let mut s = Skipper::new(map(10, &[(12, 14), (20, 21)])).unwrap();
        let done: Vec<i64> = (10..25).filter(|o| s.is_done(*o)).collect();
        assert_eq!(done, vec![12, 13, 20]);
        assert!(s.passed(21));
        assert!(!s.passed(20));
        assert!(Skipper::new(OffsetMap::new(3)).is_none());
    }
}
