//! Every program in `examples/` runs against the local broker and does
//! what its doc comment says: the producer's acknowledgements name the
//! partition Kafka's Java client would choose, at increasing offsets per
//! key; the sync, HTTP and async consumers handle every record once, each
//! key in offset order; the group member stops gracefully on SIGINT.
//!
//! Needs the examples built (`cargo test` builds them).

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{bootstrap, example, output_within, require_broker, signal, unique};
use mykafkams::partitioner::partition_for_key;

const RECORDS: usize = 300;
const KEYS: usize = 10;

/// Runs the producer example on a new topic; returns the topic and its
/// `key partition offset` lines.
fn produce_with_example() -> (String, Vec<(String, i32, i64)>) {
    require_broker();
    let topic = unique("ex");
    let mut cmd = Command::new(example("producer"));
    cmd.args([&bootstrap(), topic.as_str()]).args([
        "--count",
        &RECORDS.to_string(),
        "--keys",
        &KEYS.to_string(),
    ]);
    let out = output_within(cmd, 60);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "producer example failed: {stderr}");
    let acks: Vec<(String, i32, i64)> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (
                f[0].to_string(),
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
            )
        })
        .collect();
    (topic, acks)
}

/// `partition offset ...` lines: every record of the topic exactly once,
/// and each key's records (known from the producer's acknowledgements) in
/// offset order.
fn check_consumed(stdout: &str, acks: &[(String, i32, i64)]) {
    let seen: Vec<(i32, i64)> = stdout
        .lines()
        .map(|line| {
            let f: Vec<&str> = line.split(' ').collect();
            (f[0].parse().unwrap(), f[1].parse().unwrap())
        })
        .collect();
    let mut expected: Vec<(i32, i64)> = acks.iter().map(|(_, p, o)| (*p, *o)).collect();
    expected.sort();
    let mut got = seen.clone();
    got.sort();
    got.dedup();
    assert_eq!(got.len(), seen.len(), "a record was handled twice");
    // The example's last record ("done", key-0) is not in `acks`.
    assert_eq!(got.len(), expected.len() + 1, "records lost or extra");
    assert!(expected.iter().all(|e| got.binary_search(e).is_ok()));
    // Per key: the acks say which offsets a key has; their lines must come
    // in offset order.
    for k in 0..KEYS {
        let key = format!("key-{k}");
        let offsets: Vec<(i32, i64)> = acks
            .iter()
            .filter(|(kk, _, _)| *kk == key)
            .map(|(_, p, o)| (*p, *o))
            .collect();
        let order: Vec<&(i32, i64)> = seen.iter().filter(|po| offsets.contains(po)).collect();
        assert!(
            order.windows(2).all(|w| w[0].1 < w[1].1),
            "{key} handled out of order: {order:?}"
        );
    }
}

#[test]
fn the_producer_example_reports_each_records_partition_and_offset() {
    let (_, acks) = produce_with_example();
    assert_eq!(acks.len(), RECORDS);
    let mut last: BTreeMap<&str, (i32, i64)> = BTreeMap::new();
    for (key, p, o) in &acks {
        assert_eq!(
            *p,
            partition_for_key(key.as_bytes(), 3),
            "{key}: Java's partition"
        );
        if let Some((lp, lo)) = last.insert(key, (*p, *o)) {
            assert_eq!(lp, *p);
            assert!(*o > lo, "{key}: offsets must increase in send order");
        }
    }
    assert_eq!(last.len(), KEYS);
}

#[test]
fn the_sync_example_handles_every_record_once_in_key_order() {
    let (topic, acks) = produce_with_example();
    let mut cmd = Command::new(example("sync_consumer"));
    cmd.args([
        &bootstrap(),
        topic.as_str(),
        &unique("g-exsync"),
        "--exit-at-end",
    ]);
    let out = output_within(cmd, 60);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    check_consumed(&String::from_utf8(out.stdout).unwrap(), &acks);
}

#[test]
fn the_http_example_calls_its_service_once_per_record_in_key_order() {
    let (topic, acks) = produce_with_example();
    let mut cmd = Command::new(example("http_handler"));
    cmd.args([
        &bootstrap(),
        topic.as_str(),
        &unique("g-exhttp"),
        "--exit-at-end",
    ]);
    let out = output_within(cmd, 60);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.lines().all(|l| l.ends_with(" 204")), "{stdout}");
    check_consumed(&stdout, &acks);
    let n = RECORDS + 1;
    assert!(
        stderr.contains(&format!("{n} handled, {n} requests served")),
        "{stderr}"
    );
}

#[test]
fn the_async_group_member_example_stops_gracefully_on_sigint() {
    let (topic, acks) = produce_with_example();
    let group = unique("g-exgroup");
    let mut child = Command::new(example("async_consumer"))
        .args([&bootstrap(), topic.as_str(), group.as_str()])
        .args(["--concurrency", "16"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until it has joined and handled everything, then SIGINT.
    let mut lines = Vec::new();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(60);
    while lines.len() < RECORDS + 1 {
        assert!(
            Instant::now() < deadline,
            "only {} lines in 60 s",
            lines.len()
        );
        let mut line = String::new();
        if stdout.read_line(&mut line).unwrap() == 0 {
            break;
        }
        lines.push(line.trim_end().to_string());
    }
    signal(&child, libc::SIGINT);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("stopped: Signal"), "{stderr}");
    assert!(rest.is_empty(), "nothing after the stop: {rest}");
    check_consumed(&lines.join("\n"), &acks);
    // The graceful stop committed everything: the group's lag is zero.
    let rows = common::describe_group(&group, &topic);
    assert_eq!(rows.len(), 3, "{rows:?}");
    for (p, _, lag) in rows {
        assert_eq!(lag, 0, "partition {p} left uncommitted");
    }
}
