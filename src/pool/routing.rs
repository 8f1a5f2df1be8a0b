//! Which lane a message goes to (DESIGN rules 1 and 2).
//!
//! Key mode must send every message of a key to one lane (that is the whole
//! ordering guarantee), and must spread keys evenly even when all of them
//! live in one Kafka partition. Those keys all satisfy
//! `murmur2(key) % partitions == p`; reusing murmur2 (or any hash correlated
//! with it) modulo the lane count would pile them onto a few lanes whenever
//! the two counts share factors. So lanes use their own salted 64-bit hash,
//! unrelated to murmur2, reduced with a multiply-shift (which uses the high
//! bits and needs no division).

use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};

use crate::Message;

/// How the pool picks a lane, i.e. what order it preserves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Ordering {
    /// Messages with the same key run in submission order, one at a time;
    /// different keys run in parallel. A message without a key is routed by
    /// its partition, so unkeyed data keeps partition order.
    #[default]
    Key,
    /// Messages of the same partition run in submission order (classic Kafka
    /// consumer order); partitions run in parallel.
    Partition,
    /// No order: messages go round-robin over the lanes (most parallel).
    Unordered,
}

/// Salt mixed into every key hash so lane choice is independent of any
/// unsalted hash of the key (in particular Kafka's murmur2 partitioner).
const SALT: u64 = 0x6a09_e667_f3bc_c909; // fractional bits of sqrt(2)

/// The 64-bit finaliser of MurmurHash3 (`fmix64`): full avalanche, so every
/// input bit affects the high bits the lane reduction uses.
#[inline]
fn fmix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^= x >> 33;
    x
}

/// Salted 64-bit hash of a key used for lane choice. Stable across runs and
/// platforms (no random seed), so routing is reproducible in tests.
#[inline]
pub fn lane_hash(key: &[u8]) -> u64 {
    let mut h = SALT ^ (key.len() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut chunks = key.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes(c.try_into().expect("8-byte chunk"));
        h = fmix64(h ^ w).rotate_left(31);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        h = fmix64(h ^ tail_word(rest)).rotate_left(31);
    }
    fmix64(h)
}

/// The 1..=7 trailing bytes of a key as a little-endian word, zero-padded:
/// the value of `u64::from_le_bytes` over the bytes followed by zeros.
///
/// Built from two overlapping loads instead of copying into a zeroed buffer:
/// a variable-length copy is a `memcpy` call followed by a store-forwarding
/// stall, which made this the hottest instruction of batch submission.
#[inline]
fn tail_word(rest: &[u8]) -> u64 {
    let n = rest.len();
    debug_assert!((1..8).contains(&n));
    if n >= 4 {
        let lo = u64::from(u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")));
        let hi = u64::from(u32::from_le_bytes(
            rest[n - 4..].try_into().expect("4 bytes"),
        ));
        // `hi` holds bytes n-4..n; keep the top n-4 of them (bytes 4..n).
        lo | ((hi >> (8 * (8 - n))) << 32)
    } else if n >= 2 {
        let lo = u64::from(u16::from_le_bytes(rest[..2].try_into().expect("2 bytes")));
        let hi = u64::from(u16::from_le_bytes(
            rest[n - 2..].try_into().expect("2 bytes"),
        ));
        lo | ((hi >> (8 * (4 - n))) << 16)
    } else {
        u64::from(rest[0])
    }
}

/// Maps a 64-bit hash onto `0..lanes` by multiply-shift (Lemire's reduction).
#[inline]
fn reduce(hash: u64, lanes: usize) -> usize {
    ((u128::from(hash) * lanes as u128) >> 64) as usize
}

/// The lane a key is routed to in [`Ordering::Key`] mode.
///
/// Guarantee: depends only on the key bytes and `lanes`; result in `0..lanes`.
#[inline]
pub fn lane_for_key(key: &[u8], lanes: usize) -> usize {
    reduce(lane_hash(key), lanes)
}

/// The lane a partition is routed to in [`Ordering::Partition`] mode and for
/// unkeyed messages in [`Ordering::Key`] mode: `partition mod lanes`, which
/// spreads consecutive partition numbers perfectly.
#[inline]
pub fn lane_for_partition(partition: i32, lanes: usize) -> usize {
    (i64::from(partition).rem_euclid(lanes as i64)) as usize
}

/// Lane selection for one pool.
pub(crate) struct Router {
    mode: Ordering,
    lanes: usize,
    next: AtomicUsize,
}

impl Router {
    pub(crate) fn new(mode: Ordering, lanes: usize) -> Self {
        Self {
            mode,
            lanes,
            next: AtomicUsize::new(0),
        }
    }

    #[inline]
    pub(crate) fn lane(&self, msg: &Message) -> usize {
        match self.mode {
            Ordering::Key => match &msg.key {
                Some(key) => lane_for_key(key, self.lanes),
                None => lane_for_partition(msg.partition, self.lanes),
            },
            Ordering::Partition => lane_for_partition(msg.partition, self.lanes),
            Ordering::Unordered => self.next.fetch_add(1, AtomicOrdering::Relaxed) % self.lanes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::tail_word;

    /// The overlapping-load tail equals the zero-padded little-endian word
    /// for every length and byte pattern position, so lane choice is the
    /// same as with the straightforward padded copy.
    #[test]
    fn tail_word_is_the_zero_padded_word() {
        for n in 1..8usize {
            for seed in 0..64u8 {
                let bytes: Vec<u8> = (0..n as u8)
                    .map(|i| seed.wrapping_mul(31).wrapping_add(i.wrapping_mul(97)) | 1)
                    .collect();
                let mut buf = [0u8; 8];
                buf[..n].copy_from_slice(&bytes);
                assert_eq!(tail_word(&bytes), u64::from_le_bytes(buf), "len {n}");
            }
        }
    }
}
