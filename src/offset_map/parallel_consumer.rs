//! Reading the offset maps Confluent's parallel-consumer commits, so a
//! group that ran it can move to MyKafkaMS without handling again what it
//! finished out of order (issue 15).
//!
//! The format, learnt from its source (`offsets/OffsetMapCodecManager`,
//! `OffsetEncoding`, `BitSetEncoder`, `RunLengthEncoder`,
//! `OffsetSimpleSerialisation`; version 0.5.3.3) and checked against maps
//! it wrote (`tests/fixtures/parallel-consumer/`, whose `FORMAT.md` cites
//! each point):
//!
//! * The metadata is base64 of one magic byte and a payload; integers are
//!   big-endian and signed. The map covers the offsets from the committed
//!   offset `C` up to its end; offsets past the end are not done.
//! * **BitSet** (`l` v1: `i16` length; `o` v2: `i32` length): `len` then
//!   `java.util.BitSet` bytes, bit `k % 8` of byte `k / 8` set when `C + k`
//!   completed. Bits and bytes past `len` are ignored (it pads one byte).
//! * **RunLength** (`n` v1: `i16` runs; `e` v2: `i32` runs): run lengths
//!   filling the payload, alternating incomplete, complete, incomplete...
//!   from `C` (the first may be 0).
//! * **Compressed** (`a` BitSet v1, `s` BitSet v2, `J` RunLength v1, `p`
//!   RunLength v2): the same payload as one zstd frame.
//! * `L`/`î` (ByteArray) it never writes nor reads; `0x01`/`0x02` are Kafka
//!   Streams' metadata. Neither is a map we read.
//!
//! parallel-consumer counts offsets it never saw inside the map (a
//! compacted record, a transaction marker) as complete; so do we, since
//! there is no record there to handle. The committed offset itself is never
//! taken as done, whatever the map says.

use std::io::Read;

use super::{OffsetMap, Unreadable};

/// Largest payload a compressed map may inflate to: far above anything a
/// 4 KiB map describes, and a bound against a hostile frame.
const MAX_INFLATED: u64 = 16 << 20;

/// How the integers of an encoding are laid out.
#[derive(Clone, Copy)]
enum Width {
    I16,
    I32,
}

/// One of parallel-consumer's encodings.
#[derive(Clone, Copy)]
enum Kind {
    BitSet(Width),
    RunLength(Width),
}

/// Decodes parallel-consumer's map in `bytes` (base64 already removed) for
/// `committed`; `None` when the first byte is none of its magic bytes.
pub(super) fn decode(
    committed: i64,
    bytes: &[u8],
) -> Option<Result<(OffsetMap, &'static str), Unreadable>> {
    let (&magic, payload) = bytes.split_first()?;
    let (name, kind, compressed) = match magic {
        b'l' => ("BitSet", Kind::BitSet(Width::I16), false),
        b'o' => ("BitSetV2", Kind::BitSet(Width::I32), false),
        b'n' => ("RunLength", Kind::RunLength(Width::I16), false),
        b'e' => ("RunLengthV2", Kind::RunLength(Width::I32), false),
        b'a' => ("BitSetCompressed", Kind::BitSet(Width::I16), true),
        b's' => ("BitSetV2Compressed", Kind::BitSet(Width::I32), true),
        b'J' => ("RunLengthCompressed", Kind::RunLength(Width::I16), true),
        b'p' => ("RunLengthV2Compressed", Kind::RunLength(Width::I32), true),
        // ByteArray: never written by parallel-consumer, nor read back.
        b'L' | 0xEE => return Some(Err(Unreadable::UnknownEncoding(magic))),
        0x01 | 0x02 => return Some(Err(Unreadable::Corrupt("Kafka Streams metadata"))),
        _ => return None,
    };
    let inflated;
    let payload = if compressed {
        inflated = match inflate(payload) {
            Ok(v) => v,
            Err(e) => return Some(Err(e)),
        };
        &inflated[..]
    } else {
        payload
    };
    let ranges = match kind {
        Kind::BitSet(w) => bitset(committed, payload, w),
        Kind::RunLength(w) => runs(committed, payload, w),
    };
    Some(ranges.map(|r| (OffsetMap::from_ranges(committed, r), name)))
}

/// Inflates one zstd frame (parallel-consumer's writer leaves the content
/// size out, so it is read as a stream), at most [`MAX_INFLATED`] bytes.
fn inflate(frame: &[u8]) -> Result<Vec<u8>, Unreadable> {
    let mut input = frame;
    let decoder = ruzstd::decoding::StreamingDecoder::new(&mut input)
        .map_err(|_| Unreadable::Corrupt("not a zstd frame"))?;
    let mut out = Vec::new();
    decoder
        .take(MAX_INFLATED + 1)
        .read_to_end(&mut out)
        .map_err(|_| Unreadable::Corrupt("the zstd frame does not inflate"))?;
    if out.len() as u64 > MAX_INFLATED {
        return Err(Unreadable::Corrupt("the zstd frame inflates too far"));
    }
    Ok(out)
}

/// Reads one signed big-endian integer at `at`; negative is corrupt.
fn int(payload: &[u8], at: usize, width: Width) -> Result<u64, Unreadable> {
    let v = match width {
        Width::I16 => payload
            .get(at..at + 2)
            .map(|b| i64::from(i16::from_be_bytes([b[0], b[1]]))),
        Width::I32 => payload
            .get(at..at + 4)
            .map(|b| i64::from(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))),
    }
    .ok_or(Unreadable::Corrupt("ends early"))?;
    u64::try_from(v).map_err(|_| Unreadable::Corrupt("a negative length"))
}

fn width_len(width: Width) -> usize {
    match width {
        Width::I16 => 2,
        Width::I32 => 4,
    }
}

/// The complete ranges of a bitset payload.
fn bitset(base: i64, payload: &[u8], width: Width) -> Result<Vec<(i64, i64)>, Unreadable> {
    let len = int(payload, 0, width)?;
    let bits = &payload[width_len(width)..];
    // Bits the writer's BitSet did not store (trimmed high zeros) are clear.
    let bit = |k: u64| {
        bits.get((k / 8) as usize)
            .is_some_and(|b| b & (1 << (k % 8)) != 0)
    };
    if len.div_ceil(8) > bits.len() as u64 + 1 {
        return Err(Unreadable::Corrupt("a bitset shorter than its length"));
    }
    let mut out = Vec::new();
    let mut run: Option<u64> = None;
    for k in 0..len {
        match (bit(k), run) {
            (true, None) => run = Some(k),
            (false, Some(s)) => {
                out.push((offset(base, s)?, offset(base, k)?));
                run = None;
            }
            _ => {}
        }
    }
    if let Some(s) = run {
        out.push((offset(base, s)?, offset(base, len)?));
    }
    Ok(out)
}

/// The complete ranges of a run-length payload.
fn runs(base: i64, payload: &[u8], width: Width) -> Result<Vec<(i64, i64)>, Unreadable> {
    let step = width_len(width);
    if payload.len() % step != 0 {
        return Err(Unreadable::Corrupt("a run cut short"));
    }
    let mut out = Vec::new();
    let mut at = 0u64;
    for (i, at_byte) in (0..payload.len()).step_by(step).enumerate() {
        let n = int(payload, at_byte, width)?;
        let end = at
            .checked_add(n)
            .ok_or(Unreadable::Corrupt("an offset out of range"))?;
        // Runs alternate, starting with an incomplete one.
        if i % 2 == 1 && n > 0 {
            out.push((offset(base, at)?, offset(base, end)?));
        }
        at = end;
    }
    Ok(out)
}

/// `base + k`, refusing overflow.
fn offset(base: i64, k: u64) -> Result<i64, Unreadable> {
    super::add(base, k)
}

#[cfg(test)]
mod tests {
    use super::super::{Source, read_metadata};
    use super::*;

    fn read(committed: i64, metadata: &str) -> OffsetMap {
        match read_metadata(committed, metadata) {
            Ok(Some((m, Source::ParallelConsumer(_)))) => m,
            other => panic!("{metadata}: {other:?}"),
        }
    }

    #[test]
    fn run_length_v1_as_documented() {
        // FORMAT.md §5.2: C = 17, runs 1 inc, 482 done, 3 inc, 731 done,
        // 1 inc, 515 done, 1 inc, 246 done.
        let m = read(17, "bgABAeIAAwLbAAECAwABAPY=");
        assert_eq!(
            m.ranges(),
            &[(18, 500), (503, 1234), (1235, 1750), (1751, 1997)]
        );
    }

    #[test]
    fn a_single_empty_run_marks_nothing_done() {
        assert!(read(495, "bgAA").is_empty());
    }

    #[test]
    fn compressed_run_length_inflates_to_the_plain_payload() {
        // FORMAT.md §5.3: C = 5, runs 1 inc, 36 done, 1 inc, 36 done, ...
        let m = read(5, "Sii1L/0AWGUAACgAAQAkIwEAqKuOCA==");
        assert_eq!(m.ranges()[0], (6, 42));
        assert_eq!(m.ranges()[1], (43, 79));
    }

    #[test]
    fn bitset_v1_and_v2_read_java_bit_order_and_ignore_the_padding() {
        use base64::Engine as _;
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        // len 10: offsets C+1, C+3 and C+8, C+9 done (0b0000_1010, 0b11), one pad byte.
        let v1 = [b'l', 0, 10, 0b0000_1010, 0b0000_0011, 0];
        assert_eq!(
            read(100, &b64(&v1)).ranges(),
            &[(101, 102), (103, 104), (108, 110)]
        );
        let v2 = [b'o', 0, 0, 0, 10, 0b0000_1010, 0b0000_0011, 0];
        assert_eq!(
            read(100, &b64(&v2)).ranges(),
            &[(101, 102), (103, 104), (108, 110)]
        );
        // Bits past the length are not offsets of the map.
        let over = [b'l', 0, 2, 0b1111_1110, 0];
        assert_eq!(read(0, &b64(&over)).ranges(), &[(1, 2)]);
    }

    #[test]
    fn what_parallel_consumer_itself_cannot_read_is_unreadable() {
        use base64::Engine as _;
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        assert_eq!(
            read_metadata(0, &b64(&[b'L', 1, 1])),
            Err(Unreadable::UnknownEncoding(b'L'))
        );
        assert!(read_metadata(0, &b64(&[0x01, 0, 0])).is_err());
        assert_eq!(
            read_metadata(0, &b64(&[b'n', 0, 1, 0])),
            Err(Unreadable::Corrupt("a run cut short"))
        );
        assert_eq!(
            read_metadata(0, &b64(&[b'e', 0xff, 0xff, 0xff, 0xff])),
            Err(Unreadable::Corrupt("a negative length"))
        );
        assert_eq!(
            read_metadata(0, &b64(&[b'J', 1, 2, 3])),
            Err(Unreadable::Corrupt("not a zstd frame"))
        );
    }
}
