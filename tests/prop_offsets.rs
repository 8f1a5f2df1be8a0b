//! Offset tracker against a model (DESIGN rule 3), after every single
//! operation, plus a concurrent safety check.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mykafkams::offsets::{Completion, OffsetError, OffsetTracker, TopicPartition, finish_batch};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    /// Dispatch the next offset of partition `p`, `gap` after the expected one.
    Dispatch { p: usize, gap: i64 },
    /// Finish the outstanding completion at (index mod outstanding).
    Finish { pick: usize },
    /// Finish up to `n` outstanding completions (picked from `pick`) as a batch.
    FinishBatch { pick: usize, n: usize },
    /// The fetcher skipped ahead by `jump` (compaction / markers).
    SetNextFetch { p: usize, jump: i64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..3usize, prop_oneof![3 => Just(0i64), 1 => 1..50i64]).prop_map(|(p, gap)| Op::Dispatch { p, gap }),
        3 => any::<usize>().prop_map(|pick| Op::Finish { pick }),
        1 => (any::<usize>(), 1..6usize).prop_map(|(pick, n)| Op::FinishBatch { pick, n }),
        1 => (0..3usize, 0..20i64).prop_map(|(p, jump)| Op::SetNextFetch { p, jump }),
    ]
}

#[derive(Default, Clone)]
struct Model {
    unfinished: BTreeSet<i64>,
    next_fetch: Option<i64>,
}

impl Model {
    fn committable(&self) -> Option<i64> {
        self.unfinished.first().copied().or(self.next_fetch)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn committable_matches_model_after_every_op(
        starts in proptest::collection::vec(prop_oneof![Just(None), (0..1000i64).prop_map(Some)], 3),
        ops in proptest::collection::vec(op(), 0..300),
    ) {
        let topic: Arc<str> = Arc::from("t");
        let tracker = OffsetTracker::new();
        let mut models = vec![Model::default(); 3];
        for (p, s) in starts.iter().enumerate() {
            if let Some(s) = s {
                tracker.set_next_fetch(&topic, p as i32, *s);
                models[p].next_fetch = Some(*s);
            }
        }
        let mut outstanding: Vec<(usize, Completion)> = Vec::new();
        for op in ops {
            match op {
                Op::Dispatch { p, gap } => {
                    let offset = models[p].next_fetch.unwrap_or(0) + gap;
                    let c = tracker.dispatch(&topic, p as i32, offset).unwrap();
                    prop_assert_eq!(c.offset(), offset);
                    models[p].unfinished.insert(offset);
                    models[p].next_fetch = Some(offset + 1);
                    outstanding.push((p, c));
                }
                Op::Finish { pick } => {
                    if !outstanding.is_empty() {
                        let (p, c) = outstanding.swap_remove(pick % outstanding.len());
                        models[p].unfinished.remove(&c.offset());
                        c.finish();
                    }
                }
                Op::FinishBatch { pick, n } => {
                    let mut batch = Vec::new();
                    for i in 0..n {
                        if outstanding.is_empty() { break; }
                        let (p, c) = outstanding.swap_remove(pick.wrapping_add(i) % outstanding.len());
                        models[p].unfinished.remove(&c.offset());
                        batch.push(c);
                    }
                    finish_batch(&mut batch);
                    prop_assert!(batch.is_empty());
                }
                Op::SetNextFetch { p, jump } => {
                    let target = models[p].next_fetch.unwrap_or(0) + jump;
                    tracker.set_next_fetch(&topic, p as i32, target);
                    if models[p].next_fetch.is_none_or(|n| target > n) {
                        models[p].next_fetch = Some(target);
                    }
                }
            }
            for (p, m) in models.iter().enumerate() {
                prop_assert_eq!(tracker.committable("t", p as i32), m.committable(), "partition {}", p);
                prop_assert_eq!(tracker.in_flight("t", p as i32), m.unfinished.len());
            }
        }
        // The snapshot agrees with the per-partition answers.
        let snap = tracker.snapshot();
        for (p, m) in models.iter().enumerate() {
            prop_assert_eq!(snap.get(&TopicPartition::new("t", p as i32)).copied(), m.committable());
        }
        // Nothing in flight once everything is finished.
        let mut rest: Vec<Completion> = outstanding.into_iter().map(|(_, c)| c).collect();
        finish_batch(&mut rest);
        prop_assert_eq!(tracker.total_in_flight(), 0);
        for (p, m) in models.iter().enumerate() {
            prop_assert_eq!(tracker.committable("t", p as i32), m.next_fetch);
        }
    }
}

#[test]
fn refuses_offsets_below_the_fetch_position() {
    let topic: Arc<str> = Arc::from("t");
    let tracker = OffsetTracker::new();
    tracker.set_next_fetch(&topic, 0, 10);
    assert!(matches!(
        tracker.dispatch(&topic, 0, 9),
        Err(OffsetError::NotIncreasing {
            expected_at_least: 10,
            ..
        })
    ));
    let c = tracker.dispatch(&topic, 0, 12).unwrap();
    assert!(tracker.dispatch(&topic, 0, 12).is_err());
    assert!(matches!(
        tracker.dispatch(&topic, -1, 0),
        Err(OffsetError::NegativePartition { .. })
    ));
    assert_eq!(tracker.committable("t", 0), Some(12));
    c.finish();
    assert_eq!(tracker.committable("t", 0), Some(13));
    assert_eq!(tracker.committable("t", 1), None);
    assert_eq!(tracker.committable("unknown", 0), None);
}

#[test]
fn wait_idle_returns_when_last_completion_finishes() {
    let topic: Arc<str> = Arc::from("t");
    let tracker = Arc::new(OffsetTracker::new());
    let cs: Vec<Completion> = (0..100)
        .map(|o| tracker.dispatch(&topic, 3, o * 2).unwrap())
        .collect();
    assert!(!tracker.wait_idle("t", 3, Duration::from_millis(1)));
    let t = std::thread::spawn(move || {
        for c in cs.into_iter().rev() {
            c.finish();
        }
    });
    assert!(tracker.wait_idle("t", 3, Duration::from_secs(30)));
    t.join().unwrap();
    assert_eq!(tracker.committable("t", 3), Some(199));
    assert!(
        tracker.wait_idle("t", 99, Duration::ZERO),
        "unknown partition is idle"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Several threads finish one partition's offsets in arbitrary order while
    /// an observer samples `committable`: every offset below a sample must
    /// already be finished (the flag is set before `finish`).
    #[test]
    fn committable_never_passes_an_unfinished_offset_under_concurrency(
        gaps in proptest::collection::vec(0..4i64, 1..400),
        threads in 1..4usize,
        seed in any::<u64>(),
    ) {
        let topic: Arc<str> = Arc::from("t");
        let tracker = Arc::new(OffsetTracker::new());
        let part = tracker.partition(&topic, 0);
        let mut offsets = Vec::new();
        let mut next = 0i64;
        for g in &gaps {
            next += g;
            offsets.push(next);
            next += 1;
        }
        let done: Arc<HashMap<i64, AtomicBool>> =
            Arc::new(offsets.iter().map(|o| (*o, AtomicBool::new(false))).collect());
        let mut per_thread: Vec<Vec<Completion>> = (0..threads).map(|_| Vec::new()).collect();
        let mut x = seed | 1;
        for o in &offsets {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            per_thread[(x % threads as u64) as usize].push(part.dispatch(*o).unwrap());
        }
        // Shuffle each thread's order.
        for v in &mut per_thread {
            for i in (1..v.len()).rev() {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                v.swap(i, (x % (i as u64 + 1)) as usize);
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let observer = {
            let part = Arc::clone(&part);
            let done = Arc::clone(&done);
            let stop = Arc::clone(&stop);
            let offsets = offsets.clone();
            std::thread::spawn(move || -> Result<(), String> {
                while !stop.load(Ordering::SeqCst) {
                    let c = part.committable().unwrap();
                    for o in offsets.iter().take_while(|o| **o < c) {
                        if !done[o].load(Ordering::SeqCst) {
                            return Err(format!("committable {c} but {o} unfinished"));
                        }
                    }
                }
                Ok(())
            })
        };
        let workers: Vec<_> = per_thread.into_iter().map(|v| {
            let done = Arc::clone(&done);
            std::thread::spawn(move || {
                for c in v {
                    done[&c.offset()].store(true, Ordering::SeqCst);
                    c.finish();
                }
            })
        }).collect();
        for w in workers { w.join().unwrap(); }
        stop.store(true, Ordering::SeqCst);
        let r = observer.join().unwrap();
        prop_assert!(r.is_ok(), "{:?}", r);
        prop_assert_eq!(part.committable(), Some(next));
        prop_assert_eq!(part.in_flight(), 0);
    }
}
