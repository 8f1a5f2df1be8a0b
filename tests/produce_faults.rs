//! Issue 9, the idempotent producer: the producer binary under faults. Each
//! test starts a broker of its own from the launcher, on ports no other test
//! uses, and the tests here run one at a time (each broker is a JVM, and this
//! project's machine has two cores).
//!
//! * Lost acknowledgements: the relay of `common::proxy` sits on the port the
//!   broker advertises, so all the producer's traffic passes through it. It
//!   lets the 3rd, 10th and 20th Produce request reach the broker, then hangs
//!   up instead of relaying the response: the producer must resend batches
//!   that are already written. With idempotence (the default) the broker
//!   recognises the resent batches; without it they are written twice, as
//!   the README warns.
//! * A broker crash: the broker is SIGKILLed and restarted on its data in the
//!   middle of 200,000 lines, while a group member reads the topic.
//!
//! The producer flags of issue 9 used here: `--idempotence false`, and
//! `--report FILE` (one line per input line, `<line>\t<partition>\t<offset>`
//! or `<line>\terror\t<message>`, lines counted from 1). The tests rely on
//! the defaults `--idempotence true`, `--acks all` and a delivery timeout
//! (120 s) that outlasts a broker restart.

mod common;

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::broker::LocalBroker;
use common::processes::{Feeder, Running, collect, spawn_member, stopped_reading};
use common::proxy::Proxy;
use common::sequences::{Ack, Record, Tally, keyed_input, read_log, read_report, report_problems};
use common::{output_within, producer, unique};

/// The tests here run one at a time.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A file under the test's scratch directory.
fn scratch(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name)
}

/// Lines and keys of the lost-acknowledgement runs.
const LINES: usize = 20_000;
const KEYS: usize = 50;
/// Produce requests, counted from the start of the run, whose
/// acknowledgement the relay loses. Small batches make the run send well
/// over 20 requests.
const LOST: [u64; 3] = [3, 10, 20];
const BATCH_SIZE: &str = "4096";

/// What a producer run through a relay that loses acknowledgements left.
struct LostAcks {
    /// The topic's records in (partition, offset) order.
    log: Vec<Record>,
    report: Vec<(usize, Ack)>,
    acks_dropped: u64,
}

/// Starts a broker on `port` advertised as `port + 2` (its controller has
/// `port + 1`), with the relay there; produces the keyed lines into a new
/// topic of 3 partitions through the relay, losing the acknowledgements of
/// the [`LOST`] requests; asserts the producer exited 0 and reads the topic
/// back.
fn produce_losing_acks(port: u16, flags: &[&str]) -> LostAcks {
    let proxy = Proxy::start(port + 2, port);
    let _broker = LocalBroker::start_advertised(port, port + 2);
    let topic = unique("lost-acks");
    let input = scratch(&format!("{topic}.in"));
    let report = scratch(&format!("{topic}.report"));
    std::fs::write(&input, keyed_input(0..LINES, KEYS)).unwrap();

    proxy.lose_acks_of(&LOST);
    let mut cmd = producer();
    cmd.args([&proxy.addr(), &topic, "--key-separator", "|"])
        .args(["--create-topic", "--partitions", "3"])
        .args(["--batch-size", BATCH_SIZE])
        .arg("--input")
        .arg(&input)
        .arg("--report")
        .arg(&report)
        .args(flags);
    let out = output_within(cmd, 45);
    proxy.disarm();
    let _ = std::fs::remove_file(&input);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "{} produce requests, {} acknowledgements lost; producer: {stderr}",
        proxy.produce_requests(),
        proxy.acks_dropped()
    );
    assert!(out.status.success(), "producer {flags:?}: {stderr}");
    let run = LostAcks {
        log: read_log(&proxy.addr(), &topic),
        report: read_report(&report),
        acks_dropped: proxy.acks_dropped(),
    };
    let _ = std::fs::remove_file(&report);
    run
}

#[test]
fn lost_acknowledgements_do_not_duplicate_with_idempotence() {
    let _serial = one_at_a_time();
    // No flag: idempotence is the default, as in Java's producer since Kafka 3.0.
    let run = produce_losing_acks(9492, &[]);
    assert!(run.acks_dropped >= 1, "the relay lost no acknowledgement");
    let tally = Tally::of(run.log.iter().map(|r| r.value.as_str()), LINES, KEYS);
    assert!(tally.exactly_once_in_order(), "{tally:#?}");
    let problems = report_problems(&run.report, LINES, KEYS, &run.log);
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn lost_acknowledgements_duplicate_without_idempotence() {
    let _serial = one_at_a_time();
    let run = produce_losing_acks(9502, &["--idempotence", "false"]);
    assert!(run.acks_dropped >= 1, "the relay lost no acknowledgement");
    let tally = Tally::of(run.log.iter().map(|r| r.value.as_str()), LINES, KEYS);
    eprintln!("without idempotence: {tally:?}");
    assert!(
        tally.duplicates >= 1,
        "no batch was written twice: {tally:#?}"
    );
    assert_eq!((tally.missing, tally.foreign), (0, 0), "{tally:#?}");
    let problems = report_problems(&run.report, LINES, KEYS, &run.log);
    assert!(problems.is_empty(), "{problems:#?}");
}

const RESTART_LINES: usize = 200_000;
const RESTART_KEYS: usize = 100;

#[test]
fn broker_restart_mid_stream_loses_nothing_and_duplicates_nothing() {
    let _serial = one_at_a_time();
    let started = Instant::now();
    let phase = |what: &str| {
        eprintln!(
            "restart: {what} at {:.1} s",
            started.elapsed().as_secs_f64()
        )
    };
    let broker = LocalBroker::start(9592);
    let topic = unique("restart");
    broker.create_topic(&topic, 3);
    phase("broker up");
    // A group member reads while the producer writes, through the crash.
    let (mut member, values, member_log) = spawn_member(&broker.addr(), &topic);

    let report = scratch(&format!("{topic}.report"));
    let mut cmd = producer();
    cmd.args([&broker.addr(), &topic, "--key-separator", "|", "--report"])
        .arg(&report)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut writer = Running(cmd.spawn().unwrap());
    let writer_log = collect(writer.0.stderr.take().unwrap());
    let feeder = Feeder::start(writer.0.stdin.take().unwrap(), RESTART_KEYS);
    // A few lines first, until the member is seen reading.
    feeder.feed(0..2_000);
    if !feeder.written(20) {
        stopped_reading(writer, writer_log);
    }
    let mut seen = vec![
        values
            .recv_timeout(Duration::from_secs(30))
            .expect("the member read nothing within 30 s"),
    ];
    phase("member reading");
    // Up to half; then a quarter more while the broker is being killed, so
    // the crash lands mid-stream; the rest once the broker is back.
    let (half, three_quarters) = (RESTART_LINES / 2, RESTART_LINES * 3 / 4);
    feeder.feed(2_000..half);
    if !feeder.written(20) {
        stopped_reading(writer, writer_log);
    }
    feeder.feed(half..three_quarters);
    broker.kill();
    seen.extend(values.try_iter());
    phase(&format!(
        "broker killed, the member had read {}",
        seen.len()
    ));
    broker.restart();
    phase("broker restarted");
    feeder.feed(three_quarters..RESTART_LINES);
    let fed = feeder.close();
    let status = writer.wait_within(60);
    let writer_log = writer_log.join().unwrap();
    phase("producer done");
    assert!(fed.is_ok(), "feeding the producer: {fed:?}; {writer_log}");
    assert!(status.success(), "producer: {status}; {writer_log}");

    // The log holds every line once, each key in order, where the report says.
    let log = read_log(&broker.addr(), &topic);
    let tally = Tally::of(
        log.iter().map(|r| r.value.as_str()),
        RESTART_LINES,
        RESTART_KEYS,
    );
    assert!(tally.exactly_once_in_order(), "the log: {tally:#?}");
    let problems = report_problems(&read_report(&report), RESTART_LINES, RESTART_KEYS, &log);
    assert!(problems.is_empty(), "the report: {problems:#?}");
    let _ = std::fs::remove_file(&report);

    // The member sees every line, each key in order (repeats allowed:
    // at-least-once), then stops gracefully.
    seen.extend(values.try_iter());
    let mut distinct: HashSet<String> = seen.iter().cloned().collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while distinct.len() < RESTART_LINES {
        match values.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(v) => {
                distinct.insert(v.clone());
                seen.push(v);
            }
            Err(_) => break,
        }
    }
    phase("member caught up");
    common::signal(&member.0, libc::SIGTERM);
    let member_status = member.wait_within(30);
    let member_log = member_log.join().unwrap();
    seen.extend(values.try_iter());
    let read = Tally::of(seen.iter().map(String::as_str), RESTART_LINES, RESTART_KEYS);
    eprintln!(
        "restart: the member read {} messages, {} of them again (at-least-once)",
        read.received, read.duplicates
    );
    assert!(
        read.is_complete_in_order(),
        "the member: {read:#?}; {member_log}"
    );
    assert!(
        member_status.success(),
        "member: {member_status}; {member_log}"
    );
}

/// KIP-360's case: the broker forgets a producer once retention (here
/// DeleteRecords) removed everything it had written. The producer, idle in
/// the middle of its input, then sends its next sequence numbers to a broker
/// that has no state for it; whatever the broker answers (Kafka 4 accepts
/// the write, older brokers say UNKNOWN_PRODUCER_ID and the producer bumps
/// its epoch), every later line is written once, in key order.
#[test]
fn a_producer_whose_records_were_all_deleted_carries_on_in_order() {
    const HALF: usize = 3_000;
    let addr = common::require_broker();
    let topic = unique("deleted-state");
    common::kafka_tool(
        "topics",
        &[
            "--bootstrap-server",
            &addr,
            "--create",
            "--topic",
            &topic,
            "--partitions",
            "3",
            "--replication-factor",
            "1",
        ],
    );
    let report = scratch(&format!("{topic}.report"));
    let mut cmd = producer();
    cmd.args([&addr, &topic, "--key-separator", "|", "--report"])
        .arg(&report)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut writer = Running(cmd.spawn().unwrap());
    let writer_log = collect(writer.0.stderr.take().unwrap());
    let feeder = Feeder::start(writer.0.stdin.take().unwrap(), KEYS);
    feeder.feed(0..HALF);
    let deadline = Instant::now() + Duration::from_secs(30);
    let written = |ends: &[(i32, i64)]| ends.iter().map(|(_, o)| o).sum::<i64>();
    let ends = loop {
        let ends = common::end_offsets(&topic);
        if written(&ends) >= HALF as i64 {
            break ends;
        }
        assert!(
            Instant::now() < deadline,
            "the first half was not written: {ends:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    // Delete everything written so far: the log starts at its end.
    let offsets: Vec<String> = ends
        .iter()
        .map(|(p, o)| format!(r#"{{"topic":"{topic}","partition":{p},"offset":{o}}}"#))
        .collect();
    let json = scratch(&format!("{topic}.delete.json"));
    std::fs::write(
        &json,
        format!(r#"{{"version":1,"partitions":[{}]}}"#, offsets.join(",")),
    )
    .unwrap();
    let json_arg = json.display().to_string();
    common::kafka_tool(
        "delete-records",
        &["--bootstrap-server", &addr, "--offset-json-file", &json_arg],
    );
    feeder.feed(HALF..2 * HALF);
    feeder.close().unwrap();
    let status = writer.wait_within(60);
    let log_text = writer_log.join().unwrap();
    assert!(status.success(), "producer: {status}; {log_text}");

    // The log now holds the second half only: once each, in key order,
    // where the report says.
    let log = read_log(&addr, &topic);
    assert_eq!(log.len(), HALF, "records after the deletion");
    let values: Vec<String> = log.iter().map(|r| r.value.clone()).collect();
    let second: HashSet<String> = (HALF..2 * HALF)
        .map(|i| common::sequences::value_of(i, KEYS))
        .collect();
    assert!(
        values.iter().all(|v| second.contains(v)),
        "unexpected records"
    );
    assert_eq!(
        values.iter().collect::<HashSet<_>>().len(),
        HALF,
        "duplicates"
    );
    let mut last: std::collections::HashMap<&str, usize> = Default::default();
    for v in &values {
        let (key, seq) = v.split_once(':').unwrap();
        let seq: usize = seq.parse().unwrap();
        if let Some(prev) = last.insert(key, seq) {
            assert!(prev < seq, "{key}: {seq} after {prev}");
        }
    }
    let acks = read_report(&report);
    assert_eq!(acks.len(), 2 * HALF, "one report line per input line");
    assert!(
        acks.iter().all(|(_, a)| matches!(a, Ack::At(..))),
        "a line failed"
    );
    let _ = std::fs::remove_file(&report);
    let _ = std::fs::remove_file(&json);
}
