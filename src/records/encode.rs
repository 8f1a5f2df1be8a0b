//! Encoding record batches (message format v2) for produce requests, with
//! every codec in pure Rust.
//!
//! Records are written straight into the batch buffer as they arrive
//! ([`BatchBuilder::push`] borrows the key and value), so producing a record
//! allocates nothing of its own. Sealing a batch compresses the records
//! section if asked and fills in the header; the producer id, epoch and base
//! sequence are stamped later, when the batch is first sent, because
//! idempotence assigns sequence numbers in send order ([`stamp`]). The CRC
//! covers those fields, so stamping recomputes it.
//!
//! Codecs, as Kafka's Java client writes them:
//! - gzip: one gzip member (flate2 on miniz_oxide);
//! - snappy: xerial's framing (magic header, then length-prefixed 32 KiB
//!   blocks), which Java's `SnappyInputStream` expects;
//! - lz4: the standard LZ4 frame with independent 64 KiB blocks (lz4_flex);
//! - zstd: one zstd frame (ruzstd, at its fastest level).

use std::io::Write;

use bytes::{BufMut, Bytes, BytesMut};

use super::BATCH_HEADER;
use crate::copy::put_short;
use crate::producer::Compression;

/// Bytes a batch takes besides its records: a topic's `max.message.bytes`
/// counts them.
pub const HEADER_BYTES: usize = BATCH_HEADER;
/// Where the batch length field sits.
const LENGTH_AT: usize = 8;
/// Where the CRC-32C sits; it covers everything from the attributes on.
const CRC_AT: usize = 17;
/// Where the attributes (compression in bits 0-2) start.
const ATTRIBUTES_AT: usize = 21;
/// Where the producer id, epoch and base sequence start.
const PRODUCER_ID_AT: usize = 43;
/// Producer id meaning "not idempotent".
pub const NO_PRODUCER_ID: i64 = -1;

/// Appends records to one batch. The buffer starts with room for the header.
#[derive(Debug)]
pub struct BatchBuilder {
    buf: BytesMut,
    count: i32,
    first_timestamp: i64,
    max_timestamp: i64,
}

impl BatchBuilder {
    /// An empty batch whose buffer can hold `capacity` bytes without growing.
    pub fn with_capacity(capacity: usize) -> Self {
        let mut buf = BytesMut::with_capacity(capacity.max(BATCH_HEADER + 64));
        buf.put_bytes(0, BATCH_HEADER);
        Self {
            buf,
            count: 0,
            first_timestamp: 0,
            max_timestamp: 0,
        }
    }

    /// True before the first record.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes the batch takes uncompressed, header included.
    pub fn size(&self) -> usize {
        self.buf.len()
    }

    /// The bytes one record adds to a batch (an upper bound: the timestamp
    /// delta is counted at its widest).
    pub fn record_size(key: Option<&[u8]>, value: &[u8], headers: &[(String, Vec<u8>)]) -> usize {
        let body = record_body_len(key, value, headers, i64::MAX / 2, i32::MAX);
        varint_len(body as i64) + body
    }

    /// Appends one record with create time `timestamp` (ms since the epoch).
    pub fn push(
        &mut self,
        key: Option<&[u8]>,
        value: &[u8],
        headers: &[(String, Vec<u8>)],
        timestamp: i64,
    ) {
        if self.count == 0 {
            self.first_timestamp = timestamp;
        }
        self.max_timestamp = self.max_timestamp.max(timestamp);
        let ts_delta = timestamp - self.first_timestamp;
        let offset_delta = self.count;
        let body = record_body_len(key, value, headers, ts_delta, offset_delta);
        let buf = &mut self.buf;
        put_varint(buf, body as i64);
        buf.put_u8(0); // record attributes: unused
        put_varint(buf, ts_delta);
        put_varint(buf, offset_delta as i64);
        match key {
            Some(k) => {
                put_varint(buf, k.len() as i64);
                put_short(buf, k);
            }
            None => put_varint(buf, -1),
        }
        put_varint(buf, value.len() as i64);
        put_short(buf, value);
        put_varint(buf, headers.len() as i64);
        for (k, v) in headers {
            put_varint(buf, k.len() as i64);
            buf.put_slice(k.as_bytes());
            put_varint(buf, v.len() as i64);
            buf.put_slice(v);
        }
        self.count += 1;
    }

    /// Finishes the batch: compresses the records with `compression` and
    /// writes the header (producer id -1 until [`stamp`]ed). Fails only when
    /// a codec fails, which for in-memory buffers means a bug.
    pub fn seal(self, compression: Compression) -> Result<Bytes, String> {
        let Self {
            mut buf,
            count,
            first_timestamp,
            max_timestamp,
        } = self;
        if compression != Compression::None {
            let mut out = BytesMut::with_capacity(BATCH_HEADER + buf.len() / 2 + 64);
            out.put_bytes(0, BATCH_HEADER);
            compress(compression, &buf[BATCH_HEADER..], &mut out)?;
            buf = out;
        }
        let len = buf.len();
        let h = &mut buf[..BATCH_HEADER];
        h[0..8].copy_from_slice(&0i64.to_be_bytes()); // base offset: the broker assigns it
        h[LENGTH_AT..12].copy_from_slice(&((len - 12) as i32).to_be_bytes());
        h[12..16].copy_from_slice(&(-1i32).to_be_bytes()); // partition leader epoch
        h[16] = 2; // magic
        // Create time (bit 3 clear), not transactional, not control.
        h[ATTRIBUTES_AT..23].copy_from_slice(&(compression.attribute()).to_be_bytes());
        h[23..27].copy_from_slice(&(count - 1).to_be_bytes()); // last offset delta
        h[27..35].copy_from_slice(&first_timestamp.to_be_bytes());
        h[35..43].copy_from_slice(&max_timestamp.to_be_bytes());
        h[57..61].copy_from_slice(&count.to_be_bytes());
        stamp_header(&mut buf, NO_PRODUCER_ID, -1, -1);
        Ok(buf.freeze())
    }
}

/// The batch with producer id, epoch and base sequence set (and its CRC
/// recomputed). Copies only when the bytes are shared.
pub fn stamp(batch: Bytes, producer_id: i64, epoch: i16, base_sequence: i32) -> Bytes {
    let mut buf = match batch.try_into_mut() {
        Ok(owned) => owned,
        Err(shared) => BytesMut::from(&shared[..]),
    };
    stamp_header(&mut buf, producer_id, epoch, base_sequence);
    buf.freeze()
}

fn stamp_header(buf: &mut [u8], producer_id: i64, epoch: i16, base_sequence: i32) {
    buf[PRODUCER_ID_AT..51].copy_from_slice(&producer_id.to_be_bytes());
    buf[51..53].copy_from_slice(&epoch.to_be_bytes());
    buf[53..57].copy_from_slice(&base_sequence.to_be_bytes());
    let crc = crc32c::crc32c(&buf[ATTRIBUTES_AT..]);
    buf[CRC_AT..ATTRIBUTES_AT].copy_from_slice(&crc.to_be_bytes());
}

/// Number of records in an encoded batch.
pub fn record_count(batch: &[u8]) -> i32 {
    i32::from_be_bytes(batch[57..61].try_into().expect("4 bytes"))
}

fn record_body_len(
    key: Option<&[u8]>,
    value: &[u8],
    headers: &[(String, Vec<u8>)],
    ts_delta: i64,
    offset_delta: i32,
) -> usize {
    let key_len = match key {
        Some(k) => varint_len(k.len() as i64) + k.len(),
        None => 1,
    };
    let mut n = 1
        + varint_len(ts_delta)
        + varint_len(offset_delta as i64)
        + key_len
        + varint_len(value.len() as i64)
        + value.len()
        + varint_len(headers.len() as i64);
    for (k, v) in headers {
        n += varint_len(k.len() as i64) + k.len() + varint_len(v.len() as i64) + v.len();
    }
    n
}

/// Zig-zag varint, as the v2 record format encodes lengths and deltas.
fn put_varint(buf: &mut BytesMut, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        buf.put_u8((z as u8) | 0x80);
        z >>= 7;
    }
    buf.put_u8(z as u8);
}

fn varint_len(v: i64) -> usize {
    let z = ((v << 1) ^ (v >> 63)) as u64;
    let bits = 64 - (z | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// xerial snappy-java's stream header, which Java's consumer looks for.
const XERIAL_MAGIC: &[u8; 16] = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01";
/// xerial's default block size (uncompressed).
const XERIAL_BLOCK: usize = 32 * 1024;

fn compress(codec: Compression, input: &[u8], out: &mut BytesMut) -> Result<(), String> {
    let mut w = out.writer();
    match codec {
        Compression::None => w.write_all(input).map_err(|e| e.to_string())?,
        Compression::Gzip => {
            let mut gz = flate2::write::GzEncoder::new(w, flate2::Compression::default());
            gz.write_all(input).map_err(|e| format!("gzip: {e}"))?;
            gz.finish().map_err(|e| format!("gzip: {e}"))?;
        }
        Compression::Snappy => {
            let out = w.into_inner();
            out.put_slice(XERIAL_MAGIC);
            let mut encoder = snap::raw::Encoder::new();
            for block in input.chunks(XERIAL_BLOCK) {
                let at = out.len();
                out.put_u32(0);
                let start = out.len();
                out.resize(start + snap::raw::max_compress_len(block.len()), 0);
                let n = encoder
                    .compress(block, &mut out[start..])
                    .map_err(|e| format!("snappy: {e}"))?;
                out.truncate(start + n);
                out[at..start].copy_from_slice(&(n as u32).to_be_bytes());
            }
        }
        Compression::Lz4 => {
            let info = lz4_flex::frame::FrameInfo::new()
                .block_size(lz4_flex::frame::BlockSize::Max64KB)
                .block_mode(lz4_flex::frame::BlockMode::Independent);
            let mut enc = lz4_flex::frame::FrameEncoder::with_frame_info(info, w);
            enc.write_all(input).map_err(|e| format!("lz4: {e}"))?;
            enc.finish().map_err(|e| format!("lz4: {e}"))?;
        }
        Compression::Zstd => {
            ruzstd::encoding::compress(input, w, ruzstd::encoding::CompressionLevel::Fastest);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{Decoded, decode_partition};

    fn batch(codec: Compression, n: usize) -> Bytes {
        let headers = vec![("h".to_string(), b"v".to_vec())];
        let mut b = BatchBuilder::with_capacity(1024);
        for i in 0..n {
            let key = format!("key-{}", i % 7);
            let value = format!("value {i} {}", "x".repeat(i % 300));
            b.push(
                Some(key.as_bytes()),
                value.as_bytes(),
                &headers,
                1_700_000_000_000 + i as i64,
            );
        }
        b.push(None, b"", &[], 1_700_000_000_000);
        let sealed = b.seal(codec).unwrap();
        stamp(sealed, 42, 3, 1000)
    }

    fn decode(batch: Bytes) -> Decoded {
        try_decode(batch).unwrap()
    }

    fn try_decode(batch: Bytes) -> Result<Decoded, String> {
        decode_partition(&std::sync::Arc::from("t"), 0, &batch, 0, &[])
    }

    #[test]
    fn every_codec_round_trips_through_the_fetch_decoder() {
        for codec in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let d = decode(batch(codec, 500));
            assert_eq!(d.messages.len(), 501, "{codec}");
            for (i, m) in d.messages.iter().take(500).enumerate() {
                assert_eq!(m.offset, i as i64, "{codec}");
                assert_eq!(m.key.as_deref(), Some(format!("key-{}", i % 7).as_bytes()));
                let value = m.value.as_ref().unwrap();
                assert_eq!(value.len(), format!("value {i} ").len() + i % 300);
                assert_eq!(m.headers, vec![("h".to_string(), Bytes::from_static(b"v"))]);
            }
            let last = &d.messages[500];
            assert_eq!(last.key, None);
            assert_eq!(last.value.as_deref(), Some(&b""[..]));
        }
    }

    #[test]
    fn stamping_sets_the_producer_fields_and_a_valid_crc() {
        let b = batch(Compression::Lz4, 10);
        assert_eq!(i64::from_be_bytes(b[43..51].try_into().unwrap()), 42);
        assert_eq!(i16::from_be_bytes(b[51..53].try_into().unwrap()), 3);
        assert_eq!(i32::from_be_bytes(b[53..57].try_into().unwrap()), 1000);
        assert_eq!(record_count(&b), 11);
        // kafka-protocol's decoder checks the CRC: a restamped batch decodes.
        let again = stamp(b.clone(), 43, 0, 0);
        assert_eq!(decode(again).messages.len(), 11);
        // And a corrupted one does not.
        let mut bad = BytesMut::from(&b[..]);
        bad[70] ^= 0xff;
        assert!(try_decode(bad.freeze()).is_err());
    }

    #[test]
    fn record_size_bounds_what_push_writes() {
        let mut b = BatchBuilder::with_capacity(64);
        let before = b.size();
        let bound = BatchBuilder::record_size(Some(b"k"), b"value", &[]);
        b.push(Some(b"k"), b"value", &[], 5);
        assert!(b.size() - before <= bound);
    }

    #[test]
    fn varints_match_their_length() {
        for v in [
            0i64,
            1,
            -1,
            63,
            64,
            -64,
            -65,
            300,
            i32::MAX as i64,
            i64::MAX,
            i64::MIN,
        ] {
            let mut buf = BytesMut::new();
            put_varint(&mut buf, v);
            assert_eq!(buf.len(), varint_len(v), "{v}");
        }
    }
}
