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
        let mut buf = [0u8; 8];
        buf[..rest.len()].copy_from_slice(rest);
        h = fmix64(h ^ u64::from_le_bytes(buf)).rotate_left(31);
    }
    fmix64(h)
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
