//! Loop 5, broker faults, with a group of three of our consumers (the
//! binary) reading while our producer writes a steady keyed stream:
//!
//! * (a) **single-broker restart**: a broker of the loop's own is
//!   SIGKILLed and started again on its data, a few times;
//! * (b) **leader SIGKILL** on the three-node cluster (`common::cluster`,
//!   replication factor 3): the leader of one partition after another is
//!   killed, the others take over, and the killed node is restarted once
//!   the group has read on for a while.
//!
//! Target: nothing lost, no key out of order, duplicates ≤ 1 % of the
//! messages. The producer (idempotent) must also have written every line
//! once, where its report says.
//!
//! The short loop (`just test`) runs (a) with one restart only: the cluster
//! of (b) costs three JVMs and half a minute to start on this two-core
//! machine, so (b) runs in the full loop (`just test-chaos`).

use std::collections::HashSet;
use std::process::Stdio;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::common::broker::LocalBroker;
use crate::common::cluster::{self, take_turn};
use crate::common::processes::{Feeder, Running, collect, spawn_member_with};
use crate::common::sequences::{Tally, read_log, read_report, report_problems};
use crate::common::{producer, signal, unique};
use crate::ledger::Ledger;
use crate::scale;
use crate::table::{self, Row};

/// The broker of part (a) (its controller one above).
const BROKER_PORT: u16 = 9692;
const KEYS: usize = 30;
const PARTITIONS: u32 = 6;
const MEMBERS: usize = 3;
/// Lines fed per second, [`STEP`] at a time.
const RATE: usize = 1_000;
const STEP: usize = 100;
/// Part (b): how many messages the group must read while a node is down
/// before it is restarted.
const READ_WHILE_DOWN: usize = 2_000;

/// One group member: the process, its printed values, its stderr, and the
/// values received so far.
struct Member {
    process: Running,
    values: mpsc::Receiver<String>,
    log: JoinHandle<String>,
    seen: Vec<String>,
}

/// The members and the values they printed, drained as the loop goes.
struct Group(Vec<Member>);

impl Group {
    /// Moves every value printed so far into the members' `seen`; returns
    /// how many values all members have printed.
    fn drain(&mut self) -> usize {
        for m in &mut self.0 {
            m.seen.extend(m.values.try_iter());
        }
        self.0.iter().map(|m| m.seen.len()).sum()
    }

    /// Waits until the members have printed `n` values in all.
    fn wait_for(&mut self, n: usize, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while self.drain() < n {
            assert!(
                Instant::now() < deadline,
                "the group printed only {} of {n} values within {secs} s",
                self.drain()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Distinct values printed so far.
    fn distinct(&mut self) -> usize {
        self.drain();
        let all: HashSet<&String> = self.0.iter().flat_map(|m| &m.seen).collect();
        all.len()
    }
}

/// What a loop does to its brokers: `kill(i)` the i-th time, then
/// `restart(i)` once the group has read on (`read_while_down`) or at once.
struct Faults<'a> {
    kill: Box<dyn FnMut(usize) + 'a>,
    restart: Box<dyn FnMut(usize) + 'a>,
    read_while_down: usize,
}

/// Runs [`MEMBERS`] members and the producer on `topic` (which exists)
/// through `bootstrap`, injects `n` faults spread over the stream, checks
/// the topic and the group, and records a row named `name`.
fn run(name: &str, bootstrap: &str, topic: &str, per_key: usize, n: usize, mut faults: Faults<'_>) {
    let started = Instant::now();
    let lines = KEYS * per_key;
    let group_id = unique("chaos-brokers-g");
    let mut group = Group(
        (0..MEMBERS)
            .map(|_| {
                let (process, values, log) = spawn_member_with(bootstrap, topic, &group_id, &[]);
                Member {
                    process,
                    values,
                    log,
                    seen: Vec::new(),
                }
            })
            .collect(),
    );
    let report =
        std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{topic}.report"));
    let mut cmd = producer();
    cmd.args([bootstrap, topic, "--key-separator", "|", "--report"])
        .arg(&report)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut writer = Running(cmd.spawn().unwrap());
    let writer_log = collect(writer.0.stderr.take().unwrap());
    let pacer = Feeder::start(writer.0.stdin.take().unwrap(), KEYS).pace(lines, RATE, STEP);

    for i in 0..n {
        // The i-th fault once the group has read (i+1)/(n+1) of the stream.
        group.wait_for(lines * (i + 1) / (n + 1), 180);
        let before = group.drain();
        (faults.kill)(i);
        eprintln!("{name}: fault {} of {n} after {before} values", i + 1);
        if faults.read_while_down > 0 {
            group.wait_for(before + faults.read_while_down, 120);
        }
        (faults.restart)(i);
        eprintln!("{name}: healed after {} values", group.drain());
    }

    let fed = pacer.join().unwrap();
    assert!(fed.is_ok(), "feeding the producer: {fed:?}");
    let status = writer.wait_within(180);
    let writer_log = writer_log.join().unwrap();
    assert!(status.success(), "producer: {status}; {writer_log}");
    let log = read_log(bootstrap, topic);
    let in_topic = Tally::of(log.iter().map(|r| r.value.as_str()), lines, KEYS);
    assert!(in_topic.exactly_once_in_order(), "the topic: {in_topic:#?}");
    let problems = report_problems(&read_report(&report), lines, KEYS, &log);
    assert!(problems.is_empty(), "the producer's report: {problems:#?}");
    let _ = std::fs::remove_file(&report);

    // The group catches up; then every member stops cleanly.
    let deadline = Instant::now() + Duration::from_secs(120);
    while group.distinct() < lines && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut ledger = Ledger::new(KEYS, per_key as u64);
    let mut logs = Vec::new();
    for mut m in group.0 {
        let running = m.process.0.try_wait().unwrap().is_none();
        if running {
            signal(&m.process.0, libc::SIGTERM);
        }
        let status = m.process.wait_within(60);
        let log = m.log.join().unwrap();
        m.seen.extend(m.values.try_iter());
        ledger.life(m.seen.iter().map(String::as_str), false);
        logs.push((running && status.success(), status, log));
    }
    let counts = ledger.counts();
    table::record(&Row {
        name,
        iterations: n as u64,
        counts,
        wall: started.elapsed(),
        target: "0 lost, 0 order, dup <= 1%",
        note: format!("{MEMBERS} members, {PARTITIONS} partitions, {KEYS} keys, {RATE} msg/s"),
    });
    for (ok, status, log) in &logs {
        assert!(
            ok,
            "a member did not run to the end and stop cleanly ({status}): {log}"
        );
    }
    assert_eq!(counts.lost, 0, "lost: {counts:?}");
    assert_eq!(counts.order_violations, 0, "order: {:?}", ledger.examples());
    assert!(
        counts.duplicate_pct() <= 1.0,
        "{} duplicates ({:.2} % of {} messages)",
        counts.duplicates,
        counts.duplicate_pct(),
        counts.messages
    );
}

#[test]
fn a_group_reads_through_broker_restarts() {
    let _turn = crate::one_at_a_time();
    let scale = scale();
    let broker = LocalBroker::start(BROKER_PORT);
    let topic = unique("chaos-restart");
    broker.create_topic(&topic, PARTITIONS);
    let n = scale.pick(1, 4);
    let faults = Faults {
        kill: Box::new(|_| broker.kill()),
        restart: Box::new(|_| broker.restart()),
        read_while_down: 0,
    };
    run(
        "broker restart",
        &broker.addr(),
        &topic,
        scale.pick(800, 6_000),
        n,
        faults,
    );
}

/// The full loop only (`just test-chaos` includes ignored tests): three
/// more JVMs are too much for `just test` on two cores.
#[test]
#[ignore = "full loop only: just test-chaos"]
fn a_group_reads_through_leader_kills_on_the_cluster() {
    let _turn = crate::one_at_a_time();
    let (_turn, nodes) = take_turn();
    let topic = unique("chaos-leader");
    nodes.create_topic(&topic, PARTITIONS);
    let killed = std::cell::Cell::new(0u16);
    let faults = Faults {
        kill: Box::new(|i| {
            let partition = (i as u32 % PARTITIONS) as i32;
            // Every node is up between faults: ask node 1.
            let leader = nodes.leader(&topic, partition, 1);
            nodes.kill(leader);
            killed.set(leader);
        }),
        restart: Box::new(|_| nodes.restart(killed.get())),
        read_while_down: READ_WHILE_DOWN,
    };
    run(
        "leader kill (3 nodes)",
        &cluster::bootstrap(),
        &topic,
        6_000,
        4,
        faults,
    );
}
