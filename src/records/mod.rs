//! Decoding the `records` bytes of one partition in a Fetch response into
//! [`Message`]s, with Kafka's read-committed rules.
//!
//! Kafka returns whole record batches (v2 format): a batch may start before
//! the fetch offset, the last batch may be cut short by the size limit, and
//! control batches (transaction COMMIT/ABORT markers) take offsets but carry
//! no data. [`decode_partition`] handles all three:
//!
//! - records before the fetch offset are skipped;
//! - a truncated last batch is ignored (fetched again next time);
//! - control batches are skipped, but the position moves past every complete
//!   batch seen (`last offset + 1`), so markers and compacted batch tails
//!   never stall a reader;
//! - records of aborted transactions are dropped, using the response's list
//!   of aborted transactions and the ABORT markers, as Kafka's Java consumer
//!   does (`CompletedFetch`).
//!
//! Batch headers are checked (CRC, format) by `kafka-protocol`'s decoder and
//! bodies decompressed by its codecs; records are parsed here so that headers
//! keep their wire order and duplicates.

use std::cmp::Ordering;
use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::compression::{self as codec, Decompressor};
use kafka_protocol::records::{BatchDecodeInfo, Compression, RecordBatchDecoder};

use crate::message::{Headers, Message};

pub mod encode;

/// Bytes before a batch's `length` field ends: base offset (8) + length (4).
const LOG_OVERHEAD: usize = 12;
/// Size of a v2 batch header, from the base offset to the record count.
const BATCH_HEADER: usize = 61;
/// Position of the magic byte in a batch.
const MAGIC_AT: usize = 16;
/// Position of the `lastOffsetDelta` field in a v2 batch.
const LAST_OFFSET_DELTA_AT: usize = 23;
/// Where the v2 batch attributes (i16) sit; bit 3 means LogAppendTime.
const ATTRIBUTES_AT: usize = 21;
/// Where the v2 batch max timestamp (i64) sits.
const MAX_TIMESTAMP_AT: usize = 35;
/// Control record type of an ABORT marker (COMMIT is 1).
const CONTROL_ABORT: i16 = 0;

/// A transaction the broker reports as aborted within the fetched range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AbortedTxn {
    /// Producer that aborted.
    pub producer_id: i64,
    /// Offset of the transaction's first record.
    pub first_offset: i64,
}

/// The outcome of decoding one partition's records.
#[derive(Debug, Default)]
pub struct Decoded {
    /// Data records at or after the fetch offset, in offset order, minus
    /// those of aborted transactions.
    pub messages: Vec<Message>,
    /// The offset after the last complete batch seen, if any batch was
    /// complete: where the next fetch starts.
    pub next_offset: Option<i64>,
    /// Decoding stopped at the message limit of
    /// [`PartitionDecoder::next_window`] with bytes left: ask again.
    pub more: bool,
}

/// Decodes `records` whole (the tests' shorthand for a [`PartitionDecoder`]).
#[cfg(test)]
pub fn decode_partition(
    topic: &Arc<str>,
    partition: i32,
    records: &Bytes,
    from: i64,
    aborted: &[AbortedTxn],
) -> Result<Decoded, String> {
    PartitionDecoder::new(topic, partition, records, from, aborted).next_window(usize::MAX)
}

/// Decodes a partition's record bytes of a Fetch response, fetched from
/// offset `from`, into the messages a read-committed consumer delivers, a
/// window at a time: a decoded [`Message`] is several times the size of a
/// small record on the wire, so a large response is not decoded at once.
/// `aborted` is the response's aborted-transaction list (empty under
/// read-uncommitted). Each batch is read once, whatever the windows.
pub struct PartitionDecoder {
    topic: Arc<str>,
    partition: i32,
    /// The batches not decoded yet.
    rest: Bytes,
    from: i64,
    /// Aborted transactions not reached yet, by descending first offset.
    pending: Vec<AbortedTxn>,
    /// Producers inside an aborted transaction at this point of the log.
    aborted_producers: HashSet<i64>,
    /// The offset after the last complete batch decoded so far.
    next_offset: Option<i64>,
}

impl PartitionDecoder {
    /// A decoder of `records`, fetched from `from`.
    pub fn new(
        topic: &Arc<str>,
        partition: i32,
        records: &Bytes,
        from: i64,
        aborted: &[AbortedTxn],
    ) -> Self {
        let mut pending: Vec<AbortedTxn> = aborted.to_vec();
        // By descending first offset: the smallest is popped first.
        pending.sort_by_key(|t| std::cmp::Reverse(t.first_offset));
        Self {
            topic: Arc::clone(topic),
            partition,
            rest: records.clone(),
            from,
            pending,
            aborted_producers: HashSet::new(),
            next_offset: None,
        }
    }

    /// The messages of the next whole batches: stops after the first batch
    /// that brings them to `max_messages` or more ([`Decoded::more`] then
    /// says whether bytes are left). [`Decoded::next_offset`] covers every
    /// batch decoded so far.
    ///
    /// Fails (with a one-line reason) only on a corrupt complete batch: a
    /// bad CRC, an unsupported format, an undecodable record. A partial
    /// batch at the end is not an error.
    pub fn next_window(&mut self, max_messages: usize) -> Result<Decoded, String> {
        let (from, partition) = (self.from, self.partition);
        let mut out = Decoded::default();
        while let Some(batch) = next_batch(&mut self.rest) {
            let base_offset = i64::from_be_bytes(batch[0..8].try_into().expect("8 bytes"));
            let magic = batch[MAGIC_AT] as i8;
            if magic != 2 {
                return Err(format!(
                    "batch at offset {base_offset} uses message format v{magic}, which is not supported (only v2)"
                ));
            }
            if batch.len() < BATCH_HEADER {
                return Err(format!(
                    "batch at offset {base_offset} is shorter than a batch header"
                ));
            }
            let info = batch_info(&batch)
                .map_err(|e| format!("corrupt batch at offset {base_offset}: {e}"))?;
            let delta = i32::from_be_bytes(
                batch[LAST_OFFSET_DELTA_AT..LAST_OFFSET_DELTA_AT + 4]
                    .try_into()
                    .expect("4 bytes"),
            );
            let last_offset = base_offset.saturating_add(i64::from(delta.max(0)));
            self.next_offset = Some(
                self.next_offset
                    .unwrap_or(self.from)
                    .max(last_offset.saturating_add(1)),
            );
            // On a LogAppendTime topic the broker rewrites only the batch's max
            // timestamp, and every record's timestamp is that (as Java reports it).
            let attributes = i16::from_be_bytes([batch[ATTRIBUTES_AT], batch[ATTRIBUTES_AT + 1]]);
            let log_append_time = (attributes & 0x08 != 0).then(|| {
                i64::from_be_bytes(
                    batch[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8]
                        .try_into()
                        .expect("8 bytes"),
                )
            });

            // Transactions whose first record is at or before this batch's end
            // are now in effect (Java: consumeAbortedTransactionsUpTo).
            if info.producer_id >= 0 {
                while self
                    .pending
                    .last()
                    .is_some_and(|t| t.first_offset <= last_offset)
                {
                    let t = self.pending.pop().expect("checked");
                    self.aborted_producers.insert(t.producer_id);
                }
            }
            if info.control {
                // The type of the first control record (the marker's).
                let mut first: Option<Option<i16>> = None;
                batch_records(&batch, &info, |r| {
                    first.get_or_insert_with(|| control_type(r.key.as_ref()));
                })
                .map_err(|e| format!("corrupt control batch at offset {base_offset}: {e}"))?;
                if first.flatten() == Some(CONTROL_ABORT) {
                    self.aborted_producers.remove(&info.producer_id);
                }
                continue;
            }
            if info.transactional && self.aborted_producers.contains(&info.producer_id) {
                continue;
            }
            if last_offset < self.from {
                continue;
            }
            // Each record takes at least 7 bytes: never trust the count for the allocation.
            let count = usize::try_from(info.record_count).unwrap_or(0);
            out.messages.reserve(count.min(batch.len() / 7 + 1));
            let messages = &mut out.messages;
            batch_records(&batch, &info, |r| {
                if r.offset >= from {
                    messages.push(Message {
                        topic: Arc::clone(&self.topic),
                        partition,
                        offset: r.offset,
                        key: r.key,
                        value: r.value,
                        timestamp_ms: log_append_time.unwrap_or(r.timestamp_ms),
                        headers: r.headers,
                    });
                }
            })
            .map_err(|e| format!("corrupt batch at offset {base_offset}: {e}"))?;
            if out.messages.len() >= max_messages {
                out.more = !self.rest.is_empty();
                break;
            }
        }
        out.next_offset = self.next_offset;
        Ok(out)
    }
}

/// Splits the next complete batch off `rest`; `None` at the end or when
/// only a partial batch is left.
fn next_batch(rest: &mut Bytes) -> Option<Bytes> {
    if rest.len() < LOG_OVERHEAD {
        return None;
    }
    let length = i32::from_be_bytes(rest[8..12].try_into().expect("4 bytes"));
    let total = usize::try_from(length).ok()?.checked_add(LOG_OVERHEAD)?;
    if length < 0 || rest.len() < total || total <= MAGIC_AT {
        return None;
    }
    Some(rest.split_to(total))
}

/// The batch header, checked (CRC included) by `kafka-protocol`.
fn batch_info(batch: &Bytes) -> Result<BatchDecodeInfo, String> {
    let mut buf = batch.clone();
    let mut infos = RecordBatchDecoder::decode_batch_info(&mut buf).map_err(|e| one_line(&e))?;
    infos.pop().ok_or_else(|| "no batch header".to_string())
}

/// One record of a batch, before it becomes a [`Message`].
#[derive(Debug)]
struct RawRecord {
    offset: i64,
    timestamp_ms: i64,
    key: Option<Bytes>,
    value: Option<Bytes>,
    headers: Headers,
}

/// Decompresses the batch body and parses its records, handing each to
/// `each` in order: no list of records per batch. Uncompressed, key, value
/// and header values are slices of `batch` (the fetch response); compressed,
/// of the one buffer the batch decompresses into.
fn batch_records(
    batch: &Bytes,
    info: &BatchDecodeInfo,
    mut each: impl FnMut(RawRecord),
) -> Result<(), String> {
    let mut body = batch.slice(BATCH_HEADER..);
    // The codecs want an `anyhow` result; ours rides inside it.
    let parse = |buf: &mut Bytes| Ok(parse_records(buf, info, &mut each));
    let result = match info.compression {
        Compression::None => codec::None::decompress(&mut body, parse),
        // kafka-protocol's gzip (miniz_oxide) and snappy codecs are pure Rust.
        Compression::Gzip => codec::Gzip::decompress(&mut body, parse),
        Compression::Snappy => codec::Snappy::decompress(&mut body, parse),
        // Its lz4 and zstd codecs link C libraries: ours are pure Rust.
        Compression::Lz4 => return parse_records(&lz4_decode(&body)?, info, &mut each),
        Compression::Zstd => return parse_records(&zstd_decode(&body)?, info, &mut each),
    };
    result.map_err(|e| one_line(&e))?
}

/// Decompresses an lz4 batch body: Kafka writes the lz4 frame format.
fn lz4_decode(body: &[u8]) -> Result<Bytes, String> {
    use std::io::Read;
    let mut out = Vec::with_capacity(body.len() * 4);
    lz4_flex::frame::FrameDecoder::new(body)
        .read_to_end(&mut out)
        .map_err(|e| format!("lz4 batch does not decompress: {e}"))?;
    Ok(Bytes::from(out))
}

/// Decompresses a zstd batch body, one frame after another.
fn zstd_decode(body: &[u8]) -> Result<Bytes, String> {
    use std::io::Read;
    let mut input = body;
    let mut out = Vec::with_capacity(body.len() * 4);
    while !input.is_empty() {
        let mut frame = ruzstd::decoding::StreamingDecoder::new(&mut input)
            .map_err(|e| format!("zstd batch does not decompress: {e}"))?;
        frame
            .read_to_end(&mut out)
            .map_err(|e| format!("zstd batch does not decompress: {e}"))?;
    }
    Ok(Bytes::from(out))
}

/// Parses `info.record_count` v2 records of `body`, handing each to `each`.
fn parse_records(
    body: &Bytes,
    info: &BatchDecodeInfo,
    each: &mut impl FnMut(RawRecord),
) -> Result<(), String> {
    let count = usize::try_from(info.record_count).unwrap_or(0);
    let mut at = 0;
    for i in 0..count {
        let r = parse_record(body, &mut at, info).map_err(|e| format!("record {i}: {e}"))?;
        each(r);
    }
    Ok(())
}

/// A read position in a batch body, limited to `end` (the current record's).
///
/// Parsing works on plain slices and positions; the only [`Bytes`] made are
/// the payload slices a message keeps (one reference count each).
struct Cursor<'a> {
    data: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    /// A zigzag varint of at most `max_bytes` bytes (5 for 32 bits, 10 for 64).
    fn varlong_of(&mut self, max_bytes: usize) -> Result<i64, String> {
        let mut raw: u64 = 0;
        for i in 0..max_bytes {
            let Some(&b) = self.data.get(self.at) else {
                return Err("varint runs past the end of the record".into());
            };
            self.at += 1;
            raw |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok((raw >> 1) as i64 ^ -((raw & 1) as i64));
            }
        }
        Err("varint is too long".into())
    }

    fn varint(&mut self) -> Result<i32, String> {
        let v = self.varlong_of(5)?;
        i32::try_from(v).map_err(|_| format!("varint {v} is out of range"))
    }

    /// The position range of the next `len` bytes, skipped.
    fn take(&mut self, len: usize, what: &str) -> Result<std::ops::Range<usize>, String> {
        if self.data.len() - self.at < len {
            return Err(format!("{what} runs past the end of the record"));
        }
        self.at += len;
        Ok(self.at - len..self.at)
    }

    /// A nullable length-prefixed byte string (-1 = null), as a range.
    fn nullable(&mut self, what: &str) -> Result<Option<std::ops::Range<usize>>, String> {
        let len = self.varint()?;
        match len.cmp(&-1) {
            Ordering::Less => Err(format!("negative {what} length {len}")),
            Ordering::Equal => Ok(None),
            Ordering::Greater => self.take(len as usize, what).map(Some),
        }
    }
}

/// Parses the record at `*at` in `body` and moves `*at` past it.
fn parse_record(body: &Bytes, at: &mut usize, info: &BatchDecodeInfo) -> Result<RawRecord, String> {
    let mut outer = Cursor {
        data: &body[..],
        at: *at,
    };
    let size = outer.varint()?;
    let size = usize::try_from(size).map_err(|_| format!("negative record size {size}"))?;
    let record = outer.take(size, "record")?;
    *at = record.end;
    if record.is_empty() {
        return Err("empty record".into());
    }
    // Fields never read past their record.
    let mut c = Cursor {
        data: &body[..record.end],
        at: record.start + 1, // attributes: unused in v2 records
    };
    let timestamp_delta = c.varlong_of(10)?;
    let offset_delta = c.varint()?;
    let key = c.nullable("key")?.map(|r| body.slice(r));
    let value = c.nullable("value")?.map(|r| body.slice(r));
    let header_count = c.varint()?;
    let header_count = usize::try_from(header_count)
        .map_err(|_| format!("negative header count {header_count}"))?;
    // Each header takes at least 2 bytes: never trust the count for the allocation.
    let mut headers = Vec::with_capacity(header_count.min((record.end - c.at) / 2 + 1));
    for _ in 0..header_count {
        let name_len = c.varint()?;
        let name_len = usize::try_from(name_len)
            .map_err(|_| format!("negative header name length {name_len}"))?;
        let name = c.take(name_len, "header name")?;
        let name = String::from_utf8_lossy(&body[name]).into_owned();
        let value = c
            .nullable("header value")?
            .map_or_else(Bytes::new, |r| body.slice(r));
        headers.push((name, value));
    }
    Ok(RawRecord {
        offset: info.min_offset.saturating_add(i64::from(offset_delta)),
        timestamp_ms: info.min_timestamp.saturating_add(timestamp_delta),
        key,
        value,
        headers: headers.into(),
    })
}

/// The type of a control record from its key (version i16, type i16).
fn control_type(key: Option<&Bytes>) -> Option<i16> {
    let key = key?;
    (key.len() >= 4).then(|| i16::from_be_bytes([key[2], key[3]]))
}

fn one_line(e: &dyn std::fmt::Display) -> String {
    e.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::protocol::StrBytes;
    use kafka_protocol::records::{Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};

    fn topic() -> Arc<str> {
        Arc::from("t")
    }

    struct Batch {
        base: i64,
        count: i64,
        producer_id: i64,
        transactional: bool,
        control: Option<i16>,
        compression: Compression,
    }

    fn data(base: i64, count: i64) -> Batch {
        Batch {
            base,
            count,
            producer_id: -1,
            transactional: false,
            control: None,
            compression: Compression::None,
        }
    }

    fn txn(base: i64, count: i64, pid: i64) -> Batch {
        Batch {
            producer_id: pid,
            transactional: true,
            ..data(base, count)
        }
    }

    fn marker(offset: i64, pid: i64, kind: i16) -> Batch {
        Batch {
            control: Some(kind),
            ..txn(offset, 1, pid)
        }
    }

    fn encode(batches: &[Batch]) -> Bytes {
        let mut buf = BytesMut::new();
        for b in batches {
            let records: Vec<Record> = (0..b.count)
                .map(|i| {
                    let (key, value) = match b.control {
                        Some(kind) => {
                            let mut k = vec![0, 0];
                            k.extend_from_slice(&kind.to_be_bytes());
                            (
                                Some(Bytes::from(k)),
                                Some(Bytes::from_static(&[0, 0, 0, 0, 0, 0])),
                            )
                        }
                        None => (
                            Some(Bytes::from(format!("k{}", b.base + i))),
                            Some(Bytes::from(format!("v{}", b.base + i))),
                        ),
                    };
                    let mut r = Record {
                        transactional: b.transactional,
                        control: b.control.is_some(),
                        delete_horizon: false,
                        partition_leader_epoch: 0,
                        producer_id: b.producer_id,
                        producer_epoch: 0,
                        timestamp_type: TimestampType::Creation,
                        offset: b.base + i,
                        sequence: i as i32,
                        timestamp: 1_000 + b.base + i,
                        key,
                        value,
                        headers: Default::default(),
                    };
                    if b.control.is_none() {
                        r.headers.insert(
                            StrBytes::from_static_str("h"),
                            Some(Bytes::from_static(b"1")),
                        );
                    }
                    r
                })
                .collect();
            let options = RecordEncodeOptions {
                version: 2,
                compression: b.compression,
            };
            RecordBatchEncoder::encode(&mut buf, &records, &options).expect("encode");
        }
        buf.freeze()
    }

    fn offsets(d: &Decoded) -> Vec<i64> {
        d.messages.iter().map(|m| m.offset).collect()
    }

    /// CRC-32C (Castagnoli), bit by bit: enough to re-seal a patched test batch.
    fn crc32c(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0x82f6_3b78
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn log_append_time_batches_give_every_record_the_batch_timestamp() {
        // The encoder writes create-time batches; flip the timestamp-type bit
        // (attributes bit 3) as a LogAppendTime broker would, and re-seal the CRC.
        let mut raw = encode(&[data(0, 3)]).to_vec();
        raw[ATTRIBUTES_AT + 1] |= 0x08;
        let crc = crc32c(&raw[ATTRIBUTES_AT..]);
        raw[17..21].copy_from_slice(&crc.to_be_bytes());
        let d = decode_partition(&topic(), 0, &Bytes::from(raw), 0, &[]).unwrap();
        let stamps: Vec<i64> = d.messages.iter().map(|m| m.timestamp_ms).collect();
        assert_eq!(stamps, vec![1_002, 1_002, 1_002], "the batch max timestamp");
    }

    #[test]
    fn plain_batches_decode_with_keys_values_timestamps_and_headers() {
        let bytes = encode(&[data(0, 3), data(3, 2)]);
        let d = decode_partition(&topic(), 4, &bytes, 0, &[]).unwrap();
        assert_eq!(offsets(&d), vec![0, 1, 2, 3, 4]);
        assert_eq!(d.next_offset, Some(5));
        let m = &d.messages[3];
        assert_eq!(m.partition, 4);
        assert_eq!(m.key.as_deref(), Some(&b"k3"[..]));
        assert_eq!(m.value.as_deref(), Some(&b"v3"[..]));
        assert_eq!(m.timestamp_ms, 1_003);
        assert_eq!(m.headers, vec![("h".to_string(), Bytes::from_static(b"1"))]);
    }

    #[test]
    fn uncompressed_payloads_are_slices_of_the_fetched_bytes() {
        let bytes = encode(&[data(0, 3), data(3, 2)]);
        let d = decode_partition(&topic(), 0, &bytes, 0, &[]).unwrap();
        let within = |b: &Bytes| bytes.as_ptr_range().contains(&b.as_ptr());
        for m in &d.messages {
            assert!(within(m.key.as_ref().unwrap()), "key copied");
            assert!(within(m.value.as_ref().unwrap()), "value copied");
            assert!(within(&m.headers[0].1), "header value copied");
        }
    }

    #[test]
    fn records_before_the_fetch_offset_are_skipped() {
        let bytes = encode(&[data(10, 5)]);
        let d = decode_partition(&topic(), 0, &bytes, 13, &[]).unwrap();
        assert_eq!(offsets(&d), vec![13, 14]);
        assert_eq!(d.next_offset, Some(15));
    }

    #[test]
    fn markers_are_skipped_but_the_position_moves_past_them() {
        let bytes = encode(&[txn(0, 3, 7), marker(3, 7, 1)]);
        let d = decode_partition(&topic(), 0, &bytes, 0, &[]).unwrap();
        assert_eq!(offsets(&d), vec![0, 1, 2]);
        assert_eq!(d.next_offset, Some(4));
        // A response holding only the marker still moves the position.
        let only = encode(&[marker(3, 7, 1)]);
        let d = decode_partition(&topic(), 0, &only, 3, &[]).unwrap();
        assert!(d.messages.is_empty());
        assert_eq!(d.next_offset, Some(4));
    }

    #[test]
    fn aborted_transactions_are_dropped_committed_ones_kept() {
        // Producer 7 aborts 0..=2 (marker 3); producer 8 commits 4..=5
        // (marker 6); producer 7 then commits 7..=8 (marker 9).
        let bytes = encode(&[
            txn(0, 3, 7),
            marker(3, 7, CONTROL_ABORT),
            txn(4, 2, 8),
            marker(6, 8, 1),
            txn(7, 2, 7),
            marker(9, 7, 1),
            data(10, 1),
        ]);
        let aborted = [AbortedTxn {
            producer_id: 7,
            first_offset: 0,
        }];
        let d = decode_partition(&topic(), 0, &bytes, 0, &aborted).unwrap();
        assert_eq!(offsets(&d), vec![4, 5, 7, 8, 10]);
        assert_eq!(d.next_offset, Some(11));
    }

    #[test]
    fn interleaved_aborted_and_committed_transactions() {
        // 7 and 8 interleave; 7 aborts, 8 commits.
        let bytes = encode(&[
            txn(0, 2, 7),
            txn(2, 2, 8),
            txn(4, 1, 7),
            marker(5, 7, CONTROL_ABORT),
            marker(6, 8, 1),
        ]);
        let aborted = [AbortedTxn {
            producer_id: 7,
            first_offset: 0,
        }];
        let d = decode_partition(&topic(), 0, &bytes, 0, &aborted).unwrap();
        assert_eq!(offsets(&d), vec![2, 3]);
        assert_eq!(d.next_offset, Some(7));
    }

    #[test]
    fn decoding_a_window_at_a_time_gives_what_decoding_at_once_gives() {
        // Aborted and committed transactions, and a truncated last batch.
        let whole = encode(&[
            data(0, 3),
            txn(3, 2, 7),
            txn(5, 3, 8),
            marker(8, 7, CONTROL_ABORT),
            marker(9, 8, 1),
            data(10, 4),
            data(14, 2),
        ]);
        let bytes = whole.slice(..whole.len() - 5);
        let aborted = [AbortedTxn {
            producer_id: 7,
            first_offset: 3,
        }];
        let at_once = decode_partition(&topic(), 0, &bytes, 0, &aborted).unwrap();
        assert!(!at_once.more);
        for window in [1, 2, 3, 5, 100] {
            let mut decoder = PartitionDecoder::new(&topic(), 0, &bytes, 0, &aborted);
            let (mut got, mut calls) = (Vec::new(), 0);
            let next = loop {
                let d = decoder.next_window(window).unwrap();
                calls += 1;
                assert!(
                    !d.messages.is_empty() || !d.more,
                    "a call with more decodes some"
                );
                got.extend(d.messages.iter().map(|m| m.offset));
                if !d.more {
                    break d.next_offset;
                }
            };
            assert_eq!(got, offsets(&at_once), "window {window}");
            assert_eq!(next, at_once.next_offset, "window {window}");
            assert!(window < 100 || calls == 1, "one call when it all fits");
        }
    }

    #[test]
    fn a_truncated_last_batch_is_ignored() {
        let full = encode(&[data(0, 2), data(2, 3)]);
        let first_len = encode(&[data(0, 2)]).len();
        for cut in [
            first_len + 1,
            first_len + 11,
            first_len + 30,
            full.len() - 1,
        ] {
            let bytes = full.slice(..cut);
            let d = decode_partition(&topic(), 0, &bytes, 0, &[]).unwrap();
            assert_eq!(offsets(&d), vec![0, 1], "cut at {cut}");
            assert_eq!(d.next_offset, Some(2), "cut at {cut}");
        }
        let d = decode_partition(&topic(), 0, &full.slice(..5), 0, &[]).unwrap();
        assert!(d.messages.is_empty());
        assert_eq!(d.next_offset, None);
    }

    #[test]
    fn corrupt_batches_are_one_line_errors_not_panics() {
        let mut bytes = BytesMut::from(&encode(&[data(0, 2)])[..]);
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        let err = decode_partition(&topic(), 0, &bytes.freeze(), 0, &[]).unwrap_err();
        assert!(err.contains("offset 0"), "{err}");
        assert!(!err.contains('\n'), "{err}");
        // Garbage of every length never panics.
        let good = encode(&[data(0, 3)]);
        for i in 0..good.len() {
            let mut b = BytesMut::from(&good[..]);
            b[i] = b[i].wrapping_add(0x55);
            let _ = decode_partition(&topic(), 0, &b.freeze(), 0, &[]);
        }
    }

    #[test]
    fn duplicate_headers_keep_their_wire_order() {
        // Hand-built record: the encoder's header map cannot hold duplicates.
        let mut rec = vec![
            0u8, // attributes
            0,   // timestamp delta (zigzag 0)
            0,   // offset delta
            1,   // key: null (zigzag -1)
            1,   // value: null
            6,   // 3 headers (zigzag)
        ];
        for (n, v) in [("a", "1"), ("b", "2"), ("a", "3")] {
            rec.push(2); // name length 1
            rec.extend_from_slice(n.as_bytes());
            rec.push(2);
            rec.extend_from_slice(v.as_bytes());
        }
        let mut body = vec![(rec.len() as u8) * 2];
        body.extend_from_slice(&rec);
        let info = BatchDecodeInfo {
            record_count: 1,
            timestamp_type: TimestampType::Creation,
            min_offset: 5,
            min_timestamp: 9,
            base_sequence: 0,
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            compression: Compression::None,
            version: 2,
        };
        let mut recs = Vec::new();
        parse_records(&Bytes::from(body), &info, &mut |r| recs.push(r)).unwrap();
        let names: Vec<_> = recs[0]
            .headers
            .iter()
            .map(|(n, v)| format!("{n}={}", String::from_utf8_lossy(v)))
            .collect();
        assert_eq!(names, ["a=1", "b=2", "a=3"]);
        assert_eq!(recs[0].offset, 5);
        assert_eq!(recs[0].key, None);
    }

    #[test]
    fn compressed_batches_decode() {
        let mut b = data(0, 4);
        b.compression = Compression::Gzip;
        let mut s = data(4, 2);
        s.compression = Compression::Snappy;
        let bytes = encode(&[b, s]);
        let d = decode_partition(&topic(), 0, &bytes, 1, &[]).unwrap();
        assert_eq!(offsets(&d), vec![1, 2, 3, 4, 5]);
    }
}
