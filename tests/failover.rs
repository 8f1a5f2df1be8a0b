//! Broker crashes in a three-node cluster (the launcher's `KAFKA_NODES=3`,
//! replication factor 3, min.insync.replicas 2), under our two binaries:
//!
//! * a group member keeps reading, in per-key order and without repeats,
//!   while the leader of a partition and then the group's coordinator are
//!   killed and restarted;
//! * the producer (idempotent, pipelined: issue 9) keeps writing 200,000
//!   keyed lines while the leader of a busy partition is SIGKILLed and later
//!   restarted: every line ends up in the log once, in per-key order, at the
//!   offset the producer reported, and the crashed node rejoins the ISR.
//!
//! The tests share one cluster, started by the first of them and stopped
//! when the test binary exits; they take turns on it, since each crashes its
//! nodes (and the machine has two cores).

mod common;

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::cluster::{Cluster, NODES, bootstrap, node_port, take_turn};
use common::processes::{Feeder, Running, collect, fail_with_log, spawn_member, stopped_reading};
use common::sequences::{Ack, Tally, read_log, read_report, report_problems};
use common::{consumer, producer, run_with_input, unique};

/// Produces `rounds` for each of 30 keys (`k<i>` → `k<i>:<seq>`).
fn produce(topic: &str, rounds: std::ops::Range<usize>, create: bool) {
    let mut lines = String::new();
    for seq in rounds {
        for k in 0..30 {
            lines.push_str(&format!("k{k}\tk{k}:{seq}\n"));
        }
    }
    let mut cmd = producer();
    cmd.args([&bootstrap(), topic, "--key-separator", "\t"]);
    if create {
        cmd.args([
            "--create-topic",
            "--partitions",
            "3",
            "--replication-factor",
            "3",
        ]);
    }
    let out = run_with_input(cmd, lines.as_bytes());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_group_member_reads_on_through_leader_and_coordinator_crashes() {
    let started = Instant::now();
    let phase = |what: &str| {
        eprintln!(
            "failover: {what} at {:.1} s",
            started.elapsed().as_secs_f64()
        )
    };
    let (_turn, cluster) = take_turn();
    phase("cluster up");
    let topic = unique("failover");
    let group = unique("failover-g");
    produce(&topic, 0..20, true);

    let mut member = consumer()
        .args([
            &bootstrap(),
            &topic,
            &group,
            "--format",
            "json",
            "--stats-interval",
            "0",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = member.stdout.take().unwrap();
    let stderr = member.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let log = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut std::io::BufReader::new(stderr), &mut s);
        s
    });
    let mut lines = Vec::new();
    let wait_for = |n: usize, lines: &mut Vec<String>| {
        let deadline = Instant::now() + Duration::from_secs(90);
        while lines.len() < n {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(l) => lines.push(l),
                Err(_) => panic!("only {} of {n} messages arrived", lines.len()),
            }
        }
    };
    wait_for(600, &mut lines);
    phase("first 600 read");

    // The leader of partition 0 crashes; more data goes to the survivors.
    let leader = cluster.leader(&topic, 0, 1);
    let survivor = if leader == 1 { 2 } else { 1 };
    cluster.kill(leader);
    phase(&format!("node {leader} (leader of partition 0) killed"));
    produce(&topic, 20..40, false);
    wait_for(1200, &mut lines);
    phase("1200 read");
    cluster.restart(leader);
    phase("restarted");

    // Then the group's coordinator crashes.
    let coordinator = cluster.coordinator(&group, survivor);
    let survivor = if coordinator == 1 { 2 } else { 1 };
    cluster.kill(coordinator);
    phase(&format!(
        "node {coordinator} (the group's coordinator) killed"
    ));
    produce(&topic, 40..60, false);
    wait_for(1800, &mut lines);
    phase("1800 read");
    cluster.restart(coordinator);
    phase("restarted");

    let _ = Command::new("kill")
        .args(["-TERM", &member.id().to_string()])
        .status();
    let status = member.wait().unwrap();
    reader.join().unwrap();
    let log = log.join().unwrap();
    assert!(status.success(), "{log}");
    // Nothing more than the 1,800 arrived (no repeats), and each key's
    // values came in order.
    lines.extend(rx.try_iter());
    assert_eq!(lines.len(), 1800, "each message once");
    let mut seen: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let (key, seq) = v["value"].as_str().unwrap().split_once(':').unwrap();
        seen.entry(key.to_string())
            .or_default()
            .push(seq.parse().unwrap());
    }
    assert_eq!(seen.len(), 30);
    for (key, seqs) in seen {
        assert_eq!(seqs, (0..60).collect::<Vec<_>>(), "key {key}");
    }
    // The graceful stop committed everything.
    let described = cluster.tool(
        "consumer-groups",
        survivor,
        &["--describe", "--group", &group],
    );
    let committed: i64 = described
        .lines()
        .filter(|l| l.contains(&topic))
        .filter_map(|l| l.split_whitespace().nth(3)?.parse::<i64>().ok())
        .sum();
    assert_eq!(committed, 1800, "{described}");
}

/// A file under the test's scratch directory.
fn scratch(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name)
}

/// Lines, keys and partitions of the producer's run.
const LINES: usize = 200_000;
const KEYS: usize = 100;
const PARTITIONS: u32 = 6;
/// The producer is fed this many lines at a time, and at most [`AHEAD`]
/// lines beyond those its report shows acknowledged, so the input is still
/// flowing when a node is killed (the producer would otherwise read all of
/// it, a few MB, within a second). The report is written through a 256 KiB
/// buffer: it shows acknowledgements in steps of some 16,000 lines.
const CHUNK: usize = 5_000;
const AHEAD: usize = 40_000;
/// Lines fed in one go right before the kill, so the producer is busy
/// sending them when the leader dies: their write returns once the
/// producer has read all but a pipe's worth (64 KiB, some 5,000 lines).
/// Without it the producer, faster than the report shows, has often sent
/// everything it was given by then, and the kill lands between batches.
const BURST: usize = 40_000;
/// The longest the test waits for the report to grow: past the producer's
/// delivery timeout (120 s), so a partition that stalls shows up as lines
/// the report says failed, with the producer's reason.
const STALL: Duration = Duration::from_secs(135);

/// The producer's `--report` as it grows: how many lines it shows
/// acknowledged, and in which partitions.
struct ReportTail {
    path: PathBuf,
    file: Option<File>,
    partial: Vec<u8>,
    acked: usize,
    failed: usize,
    per_partition: BTreeMap<i32, usize>,
}

impl ReportTail {
    fn new(path: &Path) -> ReportTail {
        ReportTail {
            path: path.to_path_buf(),
            file: None,
            partial: Vec::new(),
            acked: 0,
            failed: 0,
            per_partition: BTreeMap::new(),
        }
    }

    /// Reads what was appended since the last call; returns the lines
    /// acknowledged so far.
    fn poll(&mut self) -> usize {
        if self.file.is_none() {
            self.file = File::open(&self.path).ok();
        }
        let Some(file) = &mut self.file else {
            return 0;
        };
        file.read_to_end(&mut self.partial).unwrap();
        let Some(end) = self.partial.iter().rposition(|b| *b == b'\n') else {
            return self.acked;
        };
        let complete: Vec<u8> = self.partial.drain(..=end).collect();
        for line in String::from_utf8_lossy(&complete).lines() {
            match line.split('\t').nth(1) {
                Some("error") => self.failed += 1,
                Some(p) => {
                    self.acked += 1;
                    *self.per_partition.entry(p.parse().unwrap()).or_default() += 1;
                }
                None => panic!("malformed report line {line:?}"),
            }
        }
        self.acked
    }

    /// The partition with the most lines acknowledged so far.
    fn busiest(&self) -> i32 {
        let (p, _) = self
            .per_partition
            .iter()
            .max_by_key(|(_, n)| **n)
            .expect("nothing acknowledged yet");
        *p
    }
}

/// What the test knew when it killed a node.
struct Crash {
    node: u16,
    partition: i32,
    /// Input lines written to the producer before the kill.
    fed: usize,
    /// Lines the report showed acknowledged.
    acked: usize,
    at: Instant,
}

#[test]
fn the_producer_writes_through_a_leader_crash_losing_and_repeating_nothing() {
    let started = Instant::now();
    let (_turn, cluster) = take_turn();
    let phase = |what: &str| {
        eprintln!(
            "failover-produce: {what} at {:.1} s",
            started.elapsed().as_secs_f64()
        )
    };
    phase("our turn on the cluster");
    let topic = unique("failover-produce");
    cluster.create_topic(&topic, PARTITIONS);
    // The leaders, described now: Kafka's tool takes seconds, and the
    // feeding must not pause at the kill, or the producer would be idle
    // there, not mid-stream. Leaders move only when a node fails.
    let (described, leaders) = cluster.describe(&topic, 1);
    assert!(
        described.contains("min.insync.replicas=2"),
        "the topic's settings: {described}"
    );
    phase("topic created");

    // A group member reads while the producer writes, through the crash.
    let (mut member, values, member_log) = spawn_member(&bootstrap(), &topic);
    let report = scratch(&format!("{topic}.report"));
    let mut cmd = producer();
    cmd.args([&bootstrap(), &topic, "--key-separator", "|", "--report"])
        .arg(&report)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut writer = Running(cmd.spawn().unwrap());
    let writer_log = collect(writer.0.stderr.take().unwrap());
    let feeder = Feeder::start(writer.0.stdin.take().unwrap(), KEYS);

    // Feed the input paced by the acknowledgements. Once a third of the
    // lines are acknowledged, the leader of the busiest partition is killed
    // right after a burst of input; once two thirds are, it is restarted (in
    // a thread: the feeding must not pause).
    let mut tail = ReportTail::new(&report);
    let mut seen: Vec<String> = Vec::new();
    let mut fed = 0;
    // Ranges handed to the feeder, and those it has reported written.
    let (mut ranges, mut written) = (0, 0);
    let mut crash: Option<Crash> = None;
    let mut restarting: Option<JoinHandle<()>> = None;
    let mut progress = (0, Instant::now());
    while fed < LINES {
        let acked = tail.poll();
        seen.extend(values.try_iter());
        if tail.failed > 0 {
            let why = format!("the report shows {} lines failed", tail.failed);
            fail_with_log(writer, writer_log, &why);
        }
        if acked > progress.0 {
            progress = (acked, Instant::now());
        }
        if crash.is_none() && acked >= LINES / 3 {
            let partition = tail.busiest();
            let node = leaders
                .iter()
                .find(|p| p.partition == partition)
                .and_then(|p| p.leader)
                .unwrap_or_else(|| panic!("no leader of partition {partition}: {leaders:?}"));
            let end = (fed + BURST).min(LINES);
            feeder.feed(fed..end);
            (fed, ranges) = (end, ranges + 1);
            while written < ranges {
                if !feeder.written(30) {
                    stopped_reading(writer, writer_log);
                }
                written += 1;
            }
            let running = writer.0.try_wait().unwrap().is_none();
            assert!(running, "the producer exited before the crash");
            cluster.kill(node);
            crash = Some(Crash {
                node,
                partition,
                fed,
                acked,
                at: Instant::now(),
            });
            phase(&format!(
                "node {node} (leader of partition {partition}) killed; {fed} lines fed, \
                 {acked} acknowledged, the member had read {}",
                seen.len()
            ));
        } else if let Some(c) = crash.as_ref().filter(|_| restarting.is_none())
            && acked >= 2 * LINES / 3
        {
            let node = c.node;
            restarting = Some(std::thread::spawn(move || cluster.restart(node)));
            phase(&format!(
                "restarting node {node}; {fed} lines fed, {acked} acknowledged"
            ));
        }
        if fed < acked + AHEAD {
            let end = (fed + CHUNK).min(LINES);
            feeder.feed(fed..end);
            (fed, ranges) = (end, ranges + 1);
            continue;
        }
        if writer.0.try_wait().unwrap().is_some() {
            stopped_reading(writer, writer_log);
        }
        if progress.1.elapsed() >= STALL {
            let why = format!(
                "the report stayed at {} lines acknowledged for {STALL:?}, {fed} lines fed",
                progress.0
            );
            fail_with_log(writer, writer_log, &why);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let fed_all = feeder.close();
    phase("all lines fed");
    let crash = crash.expect("all lines were fed before the crash");
    let status = writer.wait_within(150);
    let ran_on = crash.at.elapsed();
    let writer_log = writer_log.join().unwrap();
    phase("producer done");
    eprintln!("failover-produce: the producer's stderr:\n{writer_log}");
    let restarted = restarting.map_or(Ok(()), |t| t.join());
    if let Err(panic) = restarted {
        std::panic::resume_unwind(panic);
    }
    phase(&format!("node {} back", crash.node));
    assert!(fed_all.is_ok(), "feeding the producer: {fed_all:?}");
    assert!(status.success(), "producer: {status}; {writer_log}");

    // The kill landed mid-stream: lines fed only after it were acknowledged.
    assert!(crash.fed < LINES, "everything was fed before the crash");
    let acks = read_report(&report);
    let after = acks
        .iter()
        .filter(|(line, ack)| *line > crash.fed && matches!(ack, Ack::At(..)))
        .count();
    eprintln!(
        "failover-produce: node {} (leader of partition {}) killed after {} of {LINES} lines \
         were fed and {} shown acknowledged; {after} lines fed after the kill were \
         acknowledged; the producer exited {:.1} s after the kill",
        crash.node,
        crash.partition,
        crash.fed,
        crash.acked,
        ran_on.as_secs_f64()
    );
    assert!(after > 0, "no line fed after the kill was acknowledged");

    // The crashed node rejoins as a follower: back in the ISR of every
    // partition it replicates.
    let via = NODES.into_iter().find(|n| *n != crash.node).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let described = loop {
        let (text, partitions) = cluster.describe(&topic, via);
        let behind: Vec<i32> = partitions
            .iter()
            .filter(|p| p.replicas.contains(&crash.node) && !p.isr.contains(&crash.node))
            .map(|p| p.partition)
            .collect();
        if behind.is_empty() && !partitions.is_empty() {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "node {} is still out of the ISR of partitions {behind:?} 60 s after the producer \
             finished: {text}",
            crash.node
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    phase(&format!("node {} back in the ISR", crash.node));
    eprintln!("failover-produce: {described}");

    // The log holds every line once, each key in order, where the report says.
    let log = read_log(&bootstrap(), &topic);
    let tally = Tally::of(log.iter().map(|r| r.value.as_str()), LINES, KEYS);
    assert!(tally.exactly_once_in_order(), "the log: {tally:#?}");
    let problems = report_problems(&acks, LINES, KEYS, &log);
    assert!(problems.is_empty(), "the report: {problems:#?}");
    let _ = std::fs::remove_file(&report);
    phase("log checked");

    // The member saw every line, each key in order (repeats allowed:
    // at-least-once), then stops gracefully.
    seen.extend(values.try_iter());
    let mut distinct: HashSet<String> = seen.iter().cloned().collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while distinct.len() < LINES {
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
    let read = Tally::of(seen.iter().map(String::as_str), LINES, KEYS);
    eprintln!(
        "failover-produce: the member read {} messages, {} of them again (at-least-once)",
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

/// Total of `topic`'s end offsets, through node `via`.
fn end_offset_total(cluster: &Cluster, topic: &str, via: u16) -> i64 {
    cluster
        .tool("get-offsets", via, &["--topic", topic])
        .lines()
        .filter_map(|l| l.rsplit(':').next()?.trim().parse::<i64>().ok())
        .sum()
}

#[test]
fn a_leader_that_dies_while_the_producer_is_idle_is_found_again() {
    // Everything sent is acknowledged and the producer waits for input when
    // the leader dies: its connection to the leader closes with no request
    // in flight, so nothing fails. The next batch for that leader's
    // partitions must still find the new leader (a closed idle connection
    // once stayed "ready" and those lines waited out the delivery timeout).
    const IDLE_LINES: usize = 1_200;
    let (_turn, cluster) = take_turn();
    let topic = unique("failover-idle");
    cluster.create_topic(&topic, PARTITIONS);
    let report = scratch(&format!("{topic}.report"));
    let mut cmd = producer();
    cmd.args([&bootstrap(), &topic, "--key-separator", "|", "--report"])
        .arg(&report)
        // Far below the 120 s default, so a stuck partition fails the test
        // quickly; far above a leader election (about 10 s here).
        .args(["--delivery-timeout-ms", "45000"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut writer = Running(cmd.spawn().unwrap());
    let writer_log = collect(writer.0.stderr.take().unwrap());
    let feeder = Feeder::start(writer.0.stdin.take().unwrap(), KEYS);

    feeder.feed(0..IDLE_LINES / 2);
    let deadline = Instant::now() + Duration::from_secs(60);
    while end_offset_total(cluster, &topic, 1) < (IDLE_LINES / 2) as i64 {
        if Instant::now() > deadline {
            fail_with_log(writer, writer_log, "the first half was never written");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let node = cluster.leader(&topic, 0, 1);
    cluster.kill(node);
    feeder.feed(IDLE_LINES / 2..IDLE_LINES);
    feeder.close().unwrap();
    let status = writer.wait_within(90);
    let log_text = writer_log.join().unwrap();
    assert!(status.success(), "producer: {status}; {log_text}");

    let acks = read_report(&report);
    let survivor = NODES.into_iter().find(|n| *n != node).unwrap();
    let log = read_log(&format!("127.0.0.1:{}", node_port(survivor)), &topic);
    let tally = Tally::of(log.iter().map(|r| r.value.as_str()), IDLE_LINES, KEYS);
    assert!(tally.exactly_once_in_order(), "the log: {tally:#?}");
    let problems = report_problems(&acks, IDLE_LINES, KEYS, &log);
    assert!(problems.is_empty(), "the report: {problems:#?}");
    let _ = std::fs::remove_file(&report);
    cluster.restart(node);
}
