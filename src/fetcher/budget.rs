//! The byte budget of fetching: how many record bytes may be held in memory
//! at once, over all partitions and brokers.
//!
//! A partition's records are copied out of the Fetch response into a buffer
//! of their own, charged to the budget; the messages decoded from it share
//! that buffer ([`Bytes`] slices), and the charge is returned when the last
//! of them is dropped (handled, or dropped on revocation). So the budget
//! counts what is really alive: fetched and waiting to be submitted, plus
//! submitted and still in flight. The response itself is freed as soon as it
//! has been split, and one partition's slow messages never keep the other
//! partitions' records alive.
//!
//! A fetch is sent only when the room left is worth a request
//! ([`request_size`]) and asks for no more than that room, so the budget is
//! exceeded only by the broker's "first batch whole" rule (by at most one
//! record batch per request in flight).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use tokio::sync::Notify;

/// The size limit (`max_bytes`) of the next Fetch request, or `None` when
/// it should wait for room.
///
/// `limit` is the budget, `used` what is held now, `fetch_max` the request
/// limit (`fetch.max.bytes`) and `partition_max` one partition's
/// (`max.partition.fetch.bytes`). A request goes out when nothing is held (so
/// a single batch larger than the whole budget still gets through), or when
/// the room left holds a whole partition's worth (so a nearly full budget
/// does not turn into a stream of tiny requests). It asks for the room left,
/// at most `fetch_max`, at least 1.
pub fn request_size(limit: usize, used: usize, fetch_max: i32, partition_max: i32) -> Option<i32> {
    let room = limit.saturating_sub(used);
    let worth = (partition_max.max(1) as usize).min(limit);
    if used > 0 && (room == 0 || room < worth) {
        return None;
    }
    let size = room.min(fetch_max.max(1) as usize).max(1);
    Some(i32::try_from(size).unwrap_or(i32::MAX))
}

/// Record bytes held in memory, shared by every fetch task of a consumer.
#[derive(Debug)]
pub struct ByteBudget {
    limit: usize,
    used: AtomicUsize,
    freed: Notify,
}

impl ByteBudget {
    /// A budget of `limit` bytes (at least 1).
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit: limit.max(1),
            used: AtomicUsize::new(0),
            freed: Notify::new(),
        })
    }

    /// The budget.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    /// Waits until a request is worth sending and returns its size limit
    /// (see [`request_size`]). Cancel-safe.
    pub async fn room(&self, fetch_max: i32, partition_max: i32) -> i32 {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            // Registered before looking, so a release in between wakes us.
            freed.as_mut().enable();
            if let Some(n) = request_size(self.limit, self.used(), fetch_max, partition_max) {
                return n;
            }
            freed.await;
        }
    }

    /// Copies `data` into a buffer of its own, charged to the budget until
    /// the last [`Bytes`] sliced from it is dropped.
    pub fn hold(self: &Arc<Self>, data: &[u8]) -> Bytes {
        self.used.fetch_add(data.len(), Ordering::AcqRel);
        Bytes::from_owner(Held {
            data: data.to_vec(),
            budget: Arc::clone(self),
        })
    }

    fn release(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
        self.freed.notify_waiters();
    }
}

/// A buffer charged to a budget; the charge returns when it drops.
struct Held {
    data: Vec<u8>,
    budget: Arc<ByteBudget>,
}

impl AsRef<[u8]> for Held {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.budget.release(self.data.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MIB: usize = 1024 * 1024;

    #[test]
    fn an_empty_budget_always_fetches_even_a_tiny_one() {
        assert_eq!(
            request_size(16 * MIB, 0, 52_428_800, 1_048_576),
            Some(16 * MIB as i32)
        );
        assert_eq!(request_size(100, 0, 52_428_800, 1_048_576), Some(100));
        assert_eq!(request_size(16 * MIB, 0, 4096, 1_048_576), Some(4096));
    }

    #[test]
    fn a_nearly_full_budget_waits_for_a_partitions_worth() {
        assert_eq!(
            request_size(16 * MIB, 15 * MIB + 1, 52_428_800, 1_048_576),
            None
        );
        assert_eq!(
            request_size(16 * MIB, 15 * MIB, 52_428_800, 1_048_576),
            Some(MIB as i32)
        );
        assert_eq!(
            request_size(16 * MIB, 20 * MIB, 52_428_800, 1_048_576),
            None,
            "overdrawn"
        );
    }

    #[test]
    fn held_bytes_are_charged_until_the_last_slice_drops() {
        let budget = ByteBudget::new(1000);
        let b = budget.hold(&[7u8; 300]);
        assert_eq!(budget.used(), 300);
        let slice = b.slice(10..20);
        drop(b);
        assert_eq!(budget.used(), 300, "a slice keeps the buffer");
        assert_eq!(&slice[..], &[7u8; 10]);
        drop(slice);
        assert_eq!(budget.used(), 0);
    }

    #[tokio::test]
    async fn room_waits_for_a_release() {
        let budget = ByteBudget::new(1000);
        let held = budget.hold(&[0u8; 1000]);
        let waiter = {
            let budget = Arc::clone(&budget);
            tokio::spawn(async move { budget.room(5000, 500).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "no room while the budget is full");
        drop(held);
        assert_eq!(waiter.await.unwrap(), 1000);
    }

    proptest! {
        #[test]
        fn request_size_stays_within_the_limits(
            limit in 1usize..100_000_000,
            used in 0usize..200_000_000,
            fetch_max in -5i32..i32::MAX,
            partition_max in -5i32..i32::MAX,
        ) {
            match request_size(limit, used, fetch_max, partition_max) {
                Some(n) => {
                    prop_assert!(n >= 1);
                    prop_assert!(n <= fetch_max.max(1));
                    // Never more than the room left, except the minimum of 1.
                    prop_assert!(n as usize <= limit.saturating_sub(used).max(1));
                    // Worth a request: an empty budget, or a partition's worth of room.
                    prop_assert!(used == 0 || limit - used >= (partition_max.max(1) as usize).min(limit));
                }
                None => prop_assert!(used > 0, "an empty budget always fetches"),
            }
        }

        #[test]
        fn held_and_released_in_any_order_returns_to_zero(sizes in proptest::collection::vec(0usize..5000, 0..20)) {
            let budget = ByteBudget::new(10_000);
            let held: Vec<Bytes> = sizes.iter().map(|&n| budget.hold(&vec![1u8; n])).collect();
            prop_assert_eq!(budget.used(), sizes.iter().sum::<usize>());
            drop(held);
            prop_assert_eq!(budget.used(), 0);
        }
    }
}
