//! What a member's graceful exit costs the rest of its group, per protocol:
//! `just bench-rebalance` (needs the local broker).
//!
//! Three in-process members share a 6-partition topic under a steady keyed
//! load (1 ms of work per message). One member gets a stop request (what
//! SIGTERM does): it finishes what it fetched, commits and leaves. From
//! every handled message's member and time the benchmark reports, per
//! protocol:
//! - the survivors' longest pause: the longest stretch in which a surviving
//!   member handled nothing of the partitions it kept, around the leave,
//!   next to the same figure in a quiet stretch before it (the load's own
//!   rhythm);
//! - how long the leaver's partitions went unhandled: from the stop request
//!   to the first message of theirs handled by a new owner.
//!
//! A figure, not a test: it asserts nothing about times.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use common::members::*;
use common::{require_broker, unique};

/// Seconds of load before the leave, and in all.
const BEFORE: u64 = 4;
const ROUNDS: u64 = 100;
const ROUND_PAUSE: Duration = Duration::from_millis(100);
const KEYS: usize = 300;

struct Row {
    proto: Proto,
    quiet_pause_ms: f64,
    leave_pause_ms: f64,
    handover_ms: f64,
}

async fn measure(proto: Proto) -> Row {
    let topic = unique("bench-rebalance");
    let group = unique("g-bench-rebalance");
    create_topic(&topic, 6);
    let log: Log = Arc::default();
    let work = Duration::from_millis(1);
    let mut members: BTreeMap<usize, Member> = (0..3)
        .map(|i| {
            (
                i,
                spawn_member(i, member_config(i, &topic, &group, proto), &log, work),
            )
        })
        .collect();
    let ids: Vec<String> = (0..3).map(client_id).collect();
    let before = wait_for_split(&group, &ids, 6, Duration::from_secs(60)).await;
    eprintln!("  {}: {before:?}", proto.label());

    let load = {
        let topic = topic.clone();
        tokio::spawn(async move { produce_rounds(&topic, KEYS, 0..ROUNDS, ROUND_PAUSE).await })
    };
    tokio::time::sleep(Duration::from_secs(BEFORE)).await;
    let leave_at = now_ns();
    members.remove(&1).unwrap().stop().await;
    let survivors: Vec<String> = [0, 2].iter().map(|&i| client_id(i)).collect();
    let after = wait_for_split(&group, &survivors, 6, Duration::from_secs(60)).await;
    let total = load.await.unwrap() as usize;
    wait_for_records(&log, total, Duration::from_secs(120)).await;
    for (_, m) in members {
        m.stop().await;
    }

    let log = log.lock();
    let window = 4_000_000_000u128; // 4 s each side
    let mut quiet = 0u128;
    let mut leave = 0u128;
    for i in [0usize, 2] {
        let id = client_id(i);
        let kept: BTreeSet<i32> = before[&id].intersection(&after[&id]).copied().collect();
        quiet = quiet.max(longest_pause(
            &log,
            i,
            &kept,
            leave_at - window,
            leave_at - 1_000_000_000,
        ));
        leave = leave.max(longest_pause(
            &log,
            i,
            &kept,
            leave_at - 1_000_000_000,
            leave_at + window,
        ));
    }
    let moved = &before[&client_id(1)];
    let first_moved = log
        .iter()
        .filter(|r| r.member != 1 && moved.contains(&r.partition) && r.start > leave_at)
        .map(|r| r.start)
        .min()
        .unwrap_or(leave_at);
    Row {
        proto,
        quiet_pause_ms: quiet as f64 / 1e6,
        leave_pause_ms: leave as f64 / 1e6,
        handover_ms: (first_moved - leave_at) as f64 / 1e6,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() {
    require_broker();
    println!(
        "rebalance cost of one member leaving (SIGTERM) a 3-member group, 6 partitions, {KEYS} keys, a round every {ROUND_PAUSE:?}, 1 ms per message"
    );
    let mut rows = Vec::new();
    for proto in Proto::ALL {
        rows.push(measure(proto).await);
    }
    println!();
    println!(
        "| protocol | survivors' longest pause, quiet | survivors' longest pause, across the leave | leaver's partitions resume after |"
    );
    println!("|---|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {:.0} ms | {:.0} ms | {:.0} ms |",
            r.proto.label(),
            r.quiet_pause_ms,
            r.leave_pause_ms,
            r.handover_ms
        );
    }
}
