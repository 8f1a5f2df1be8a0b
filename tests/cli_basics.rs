//! The two binaries end to end against a real broker: a round trip that lands
//! where Java's partitioner puts the key, and the errors users meet first.

mod common;

use std::time::{Duration, Instant};

use common::*;
use mykafkams::partitioner::partition_for_key;

#[test]
fn lines_round_trip_in_order_on_the_partition_java_picks() {
    let addr = require_broker();
    let topic = unique("roundtrip");
    produce_lines(&topic, 3, "k1", "a\nb\nc\n");

    let p = partition_for_key(b"k1", 3);
    let out = consume_ok(&[
        &addr,
        &topic,
        &p.to_string(),
        "g1",
        "--from",
        "earliest",
        "--exit-at-end",
    ]);
    assert_eq!(out, "a\nb\nc\n");
    // Nothing went anywhere else.
    let ends = end_offsets(&topic);
    let expected: Vec<(i32, i64)> = (0..3).map(|q| (q, if q == p { 3 } else { 0 })).collect();
    assert_eq!(ends, expected);
}

#[test]
fn java_producer_puts_a_key_where_ours_does() {
    let addr = require_broker();
    let topic = unique("javapart");
    produce_lines(&topic, 5, "seed", "x\n");
    let keys = ["k1", "order-42", "acct-7", ""];
    let input: String = keys.iter().map(|k| format!("{k}:v\n")).collect();
    // Kafka's own console producer, with its default (murmur2) partitioner.
    let script = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docker/kafka-local.sh");
    let mut cmd = std::process::Command::new("bash");
    cmd.arg(script).args([
        "tool",
        "console-producer",
        "--bootstrap-server",
        &addr,
        "--topic",
        &topic,
        "--property",
        "parse.key=true",
        "--property",
        "key.separator=:",
    ]);
    let out = run_with_input(cmd, input.as_bytes());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut expected = vec![0i64; 5];
    expected[partition_for_key(b"seed", 5) as usize] += 1;
    for k in keys {
        expected[partition_for_key(k.as_bytes(), 5) as usize] += 1;
    }
    let got: Vec<i64> = end_offsets(&topic).into_iter().map(|(_, o)| o).collect();
    assert_eq!(
        got, expected,
        "per-partition counts, Java vs our partitioner"
    );
}

/// Asserts a failed run: the exit code, a single stderr line naming `needle`, and quick.
fn assert_fails(out: std::process::Output, started: Instant, code: i32, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "want one line, got: {stderr}"
    );
    assert!(stderr.contains(needle), "{needle:?} missing from: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn unreachable_broker_is_one_line_and_exit_3_within_15s() {
    let addr = format!("127.0.0.1:{}", closed_port());
    let t = Instant::now();
    let out = run_with_input(
        {
            let mut c = producer();
            c.args([&addr, "t", "k"]);
            c
        },
        b"",
    );
    assert_fails(out, t, 3, &addr);

    let t = Instant::now();
    let out = consumer().args([&addr, "t", "0", "g"]).output().unwrap();
    assert_fails(out, t, 3, &addr);
}

#[test]
fn unknown_topic_is_exit_4() {
    let addr = require_broker();
    let topic = unique("missing");
    let t = Instant::now();
    let out = run_with_input(
        {
            let mut c = producer();
            c.args([&addr, &topic, "k"]);
            c
        },
        b"x\n",
    );
    assert_fails(out, t, 4, &topic);

    let t = Instant::now();
    let out = consumer()
        .args([&addr, &topic, "0", "g", "--exit-at-end"])
        .output()
        .unwrap();
    assert_fails(out, t, 4, &topic);
}

/// A topic created a moment after the consumer starts (the race of a
/// deployment that starts consumers with the topic) is found, not reported
/// missing: the start-up lookup asks again for a few seconds.
#[test]
fn a_topic_created_just_after_start_is_found() {
    let addr = require_broker();
    let topic = unique("late");
    let consumer = consumer()
        .args([
            &addr,
            &topic,
            "0",
            "g",
            "--from",
            "earliest",
            "--exit-at-end",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    produce_lines(&topic, 1, "k", "x\n");
    let out = consumer.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "consumer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn missing_partition_is_exit_4() {
    let addr = require_broker();
    let topic = unique("parts");
    produce_lines(&topic, 2, "k", "x\n");
    let t = Instant::now();
    let out = consumer()
        .args([&addr, &topic, "7", "g", "--exit-at-end"])
        .output()
        .unwrap();
    assert_fails(out, t, 4, "partition 7");

    let t = Instant::now();
    let out = run_with_input(
        {
            let mut c = producer();
            c.args([&addr, &topic, "k", "--partition", "7"]);
            c
        },
        b"x\n",
    );
    assert_fails(out, t, 4, "partition 7");
}

#[test]
fn bad_flags_are_one_line_and_exit_2() {
    let t = Instant::now();
    let out = consumer()
        .args(["127.0.0.1:9092", "t", "0", "g", "--workers", "x"])
        .output()
        .unwrap();
    assert_fails(out, t, 2, "--workers");

    let t = Instant::now();
    let out = consumer()
        .args([
            "127.0.0.1:9092",
            "t",
            "0",
            "g",
            "--on-failure",
            "retry-forever",
        ])
        .output()
        .unwrap();
    assert_fails(out, t, 2, "--on-failure");

    let t = Instant::now();
    let out = run_with_input(
        {
            let mut c = producer();
            c.args(["127.0.0.1:9092", "t", "k", "--compression", "brotli"]);
            c
        },
        b"",
    );
    assert_fails(out, t, 2, "brotli");

    let t = Instant::now();
    let out = consumer().output().unwrap();
    assert_fails(out, t, 2, "usage");
}
