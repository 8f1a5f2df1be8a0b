//! Kafka's default key partitioner, bit-for-bit compatible with the Java client.
//!
//! DESIGN rule 8: our producer must put a key in the same partition as the
//! Java client (`org.apache.kafka.clients.producer.internals.BuiltInPartitioner`
//! / the legacy `DefaultPartitioner`), which is
//! `Utils.toPositive(Utils.murmur2(keyBytes)) % numPartitions`. Only that exact
//! function makes records from Rust and Java producers of the same key meet in
//! one partition, so this module is a literal port, not "a murmur2".

/// Seed used by Kafka's `Utils.murmur2`.
const SEED: u32 = 0x9747_b28c;
/// Multiplication constant of MurmurHash2.
const M: u32 = 0x5bd1_e995;
/// Shift constant of MurmurHash2.
const R: u32 = 24;

/// MurmurHash2 (32-bit) exactly as Apache Kafka's Java `Utils.murmur2(byte[])`.
///
/// Guarantee: returns the same `int` as the Java method for every input,
/// including its signedness (the result is the Java `int` reinterpreted as
/// [`i32`]). Java's `int` arithmetic wraps and `>>>` is a logical shift, which
/// is exactly `u32` wrapping arithmetic and `>>` on `u32`, so the port computes
/// in `u32` and reinterprets at the end.
pub fn murmur2(data: &[u8]) -> i32 {
    let length = data.len();
    // Java: `int h = seed ^ length;` -- length is an int; byte arrays longer
    // than i32::MAX cannot exist in Java, truncation matches for all real keys.
    let mut h: u32 = SEED ^ (length as u32);

    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        // Java assembles the little-endian word from `data[i] & 0xff` bytes.
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }

    // Java's tail is a `switch (length % 4)` whose cases fall through:
    // case 3 also runs cases 2 and 1, case 2 also runs case 1, and only case 1
    // ends with `h *= m`. Written out explicitly here.
    let tail = chunks.remainder();
    match tail.len() {
        3 => {
            h ^= u32::from(tail[2]) << 16;
            h ^= u32::from(tail[1]) << 8;
            h ^= u32::from(tail[0]);
            h = h.wrapping_mul(M);
        }
        2 => {
            h ^= u32::from(tail[1]) << 8;
            h ^= u32::from(tail[0]);
            h = h.wrapping_mul(M);
        }
        1 => {
            h ^= u32::from(tail[0]);
            h = h.wrapping_mul(M);
        }
        _ => {}
    }

    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// Kafka's `Utils.toPositive(int)`: clears the sign bit (`x & 0x7fffffff`).
///
/// Guarantee: the result is in `0..=i32::MAX`. Note this is *not* `abs`:
/// `to_positive(-1) == i32::MAX`, exactly as in Java.
pub fn to_positive(x: i32) -> i32 {
    x & 0x7fff_ffff
}

/// The partition the Java client's default partitioner picks for a non-null
/// key: `to_positive(murmur2(key)) % partitions`.
///
/// Guarantee: identical to the Java client for every key and returns a value
/// in `0..partitions`.
///
/// # Panics
///
/// Panics if `partitions <= 0` (a topic always has at least one partition;
/// a non-positive count is a caller bug, like division by zero).
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    assert!(
        partitions > 0,
        "partition count must be positive, got {partitions}"
    );
    to_positive(murmur2(key)) % partitions
}
