//! Offset maps (issue 15) against their invariants:
//!
//! * encode/decode round-trips, whole and cut to a size bound (a cut map is
//!   a prefix of the whole one, and fits);
//! * a map made from the tracker and read back never marks an unfinished
//!   offset done, whatever the bound;
//! * skipping what a map marks done, as the next owner of the partition
//!   does, never skips a message that was not finished.

use std::collections::BTreeSet;
use std::sync::Arc;

use mykafkams::offset_map::{OffsetMap, Skipper, Source, read_metadata};
use mykafkams::offsets::{Completion, OffsetTracker};
use proptest::prelude::*;

/// Sorted, disjoint, non-adjacent ranges above `base`, from (gap, len) pairs.
fn ranges(base: i64, pairs: &[(u16, u16)]) -> Vec<(i64, i64)> {
    let mut at = base + 1;
    pairs
        .iter()
        .map(|&(gap, len)| {
            let start = at + i64::from(gap);
            let end = start + 1 + i64::from(len);
            at = end + 1;
            (start, end)
        })
        .collect()
}

/// What one run of a partition did: offsets dispatched (increasing, with
/// gaps), and which of them finished.
#[derive(Debug)]
struct Run {
    base: i64,
    dispatched: Vec<i64>,
    finished: BTreeSet<i64>,
}

fn run() -> impl Strategy<Value = Run> {
    (
        0..1_000_000i64,
        proptest::collection::vec(
            (prop_oneof![4 => Just(0i64), 1 => 1..20i64], any::<bool>()),
            1..400,
        ),
    )
        .prop_map(|(start, steps)| {
            let mut dispatched = Vec::new();
            let mut finished = BTreeSet::new();
            let mut at = start;
            for (gap, done) in steps {
                at += gap;
                dispatched.push(at);
                if done {
                    finished.insert(at);
                }
                at += 1;
            }
            Run {
                base: start,
                dispatched,
                finished,
            }
        })
}

/// Plays `run` on a fresh tracker and returns its commit point.
fn play(run: &Run) -> (i64, OffsetMap) {
    let tracker = OffsetTracker::new();
    let topic: Arc<str> = Arc::from("t");
    tracker.set_next_fetch(&topic, 0, run.base);
    let part = tracker.partition(&topic, 0);
    let tokens: Vec<(i64, Completion)> = run
        .dispatched
        .iter()
        .map(|&o| (o, part.dispatch(o).unwrap()))
        .collect();
    let mut held = Vec::new();
    for (o, c) in tokens {
        if run.finished.contains(&o) {
            c.finish();
        } else {
            held.push(c);
        }
    }
    let point = part.commit_point().unwrap();
    drop(held);
    point
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn encode_then_decode_gives_the_map_back(
        base in 0..(1i64 << 50),
        pairs in proptest::collection::vec((0..300u16, 0..300u16), 0..200),
        bound in 0..6000usize,
    ) {
        let map = OffsetMap::from_ranges(base, ranges(base, &pairs));
        let whole = map.encode();
        match read_metadata(base, &whole).unwrap() {
            None => prop_assert!(map.is_empty()),
            Some((back, source)) => {
                prop_assert_eq!(source, Source::MyKafkaMs);
                prop_assert_eq!(back, map.clone());
            }
        }
        let cut = map.encode_within(bound);
        prop_assert!(cut.metadata.len() <= bound);
        let back = read_metadata(base, &cut.metadata).unwrap().map(|(m, _)| m).unwrap_or_else(|| OffsetMap::new(base));
        prop_assert_eq!(back.ranges(), &map.ranges()[..back.ranges().len()]);
        prop_assert_eq!(cut.truncated, back.ranges().len() < map.ranges().len());
    }

    #[test]
    fn a_map_from_the_tracker_never_marks_an_unfinished_offset_done(
        run in run(),
        bound in prop_oneof![Just(4096usize), 0..300usize],
    ) {
        let (committed, map) = play(&run);
        let metadata = map.encode_within(bound).metadata;
        let back = read_metadata(committed, &metadata).unwrap().map(|(m, _)| m).unwrap_or_else(|| OffsetMap::new(committed));
        let last = *run.dispatched.last().unwrap();
        for &o in &run.dispatched {
            if !run.finished.contains(&o) {
                prop_assert!(!back.contains(o), "unfinished {} marked done", o);
                prop_assert!(o >= committed || run.finished.contains(&o));
            }
        }
        // Nothing beyond what was dispatched is claimed.
        prop_assert!(back.end() <= last + 1);
        // Everything below the committed offset finished.
        for &o in run.dispatched.iter().filter(|o| **o < committed) {
            prop_assert!(run.finished.contains(&o));
        }
    }

    #[test]
    fn skipping_by_the_map_never_skips_an_unfinished_message(
        run in run(),
        bound in prop_oneof![Just(4096usize), 0..300usize],
    ) {
        let (committed, map) = play(&run);
        let encoded = map.encode_within(bound);
        let metadata = encoded.metadata;
        // The next owner reads from the committed offset, skipping by the map.
        let skipper = read_metadata(committed, &metadata).unwrap().and_then(|(m, _)| Skipper::new(m));
        let mut handed = BTreeSet::new();
        if let Some(mut s) = skipper {
            for &o in run.dispatched.iter().filter(|o| **o >= committed) {
                if !s.is_done(o) {
                    handed.insert(o);
                }
            }
        } else {
            handed.extend(run.dispatched.iter().filter(|o| **o >= committed));
        }
        for &o in &run.dispatched {
            if !run.finished.contains(&o) {
                prop_assert!(handed.contains(&o), "unfinished {} skipped", o);
            }
        }
        // A whole map skips everything finished above the committed offset.
        if !encoded.truncated {
            for o in handed {
                prop_assert!(!run.finished.contains(&o), "finished {} handed again", o);
            }
        }
    }

    /// The committer skips a partition whose version did not move: that
    /// is only sound if every change of the commit point moves it.
    #[test]
    fn an_unchanged_version_means_an_unchanged_commit_point(
        run in run(),
        order in proptest::collection::vec(any::<prop::sample::Index>(), 0..400),
        moves in proptest::collection::vec(0..30i64, 0..20),
    ) {
        let tracker = OffsetTracker::new();
        let topic: Arc<str> = Arc::from("t");
        tracker.set_next_fetch(&topic, 0, run.base);
        let part = tracker.partition(&topic, 0);
        let mut seen: Option<u64> = None;
        let mut last = None;
        let mut check = |seen: &mut Option<u64>| -> Result<(), TestCaseError> {
            let now = part.commit_point();
            match part.commit_point_since(*seen) {
                None => prop_assert_eq!(&now, &last, "a change that kept its version"),
                Some((v, point)) => {
                    prop_assert_eq!(&point, &now);
                    *seen = Some(v);
                    last = now;
                }
            }
            Ok(())
        };
        let mut open: Vec<Completion> = Vec::new();
        for &o in &run.dispatched {
            open.push(part.dispatch(o).unwrap());
            check(&mut seen)?;
            check(&mut seen)?;
        }
        // Finish in a random order, moving the fetch position now and then.
        let mut moves = moves.into_iter();
        for i in order {
            if open.is_empty() {
                break;
            }
            open.swap_remove(i.index(open.len())).finish();
            check(&mut seen)?;
            if let Some(m) = moves.next() {
                part.set_next_fetch(run.dispatched.last().unwrap() + 1 + m);
                check(&mut seen)?;
            }
        }
        drop(open);
    }
}
