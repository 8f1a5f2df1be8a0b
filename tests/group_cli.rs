//! The `consumer` binary as a group member against the real broker: static
//! membership, handlers slower than the session timeout, partitions added
//! while running, `--exit-at-end`, the protocol fallback against a broker
//! without KIP-848, bad input, and groups shared with Java's and
//! librdkafka's consumers.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::members::*;
use common::*;

/// A consumer (or peer) process whose stdout and stderr go to files.
struct Proc {
    child: Child,
    out: PathBuf,
    err: PathBuf,
}

impl Proc {
    fn spawn(mut cmd: Command, name: &str) -> Self {
        let dir = std::env::temp_dir();
        let out = dir.join(format!("{name}.out"));
        let err = dir.join(format!("{name}.err"));
        let child = cmd
            .stdin(Stdio::null())
            .stdout(File::create(&out).unwrap())
            .stderr(File::create(&err).unwrap())
            .spawn()
            .unwrap();
        Self { child, out, err }
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// SIGTERM, then waits (at most `secs`) for the exit status.
    fn stop(&mut self, secs: u64) -> std::process::ExitStatus {
        signal(&self.child, libc::SIGTERM);
        self.wait(secs)
    }

    fn wait(&mut self, secs: u64) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "process did not exit within {secs} s; stderr: {}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last "rebalance(s)" count the stats line reported.
    fn rebalances(&self) -> Option<u64> {
        self.stderr().lines().rev().find_map(|l| {
            l.split(" rebalance(s)")
                .next()?
                .rsplit(", ")
                .next()?
                .parse()
                .ok()
        })
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Our consumer as a member of `group`, `text` output, stats every second.
fn member(topic: &str, group: &str, id: &str, extra: &[&str]) -> Proc {
    let mut cmd = consumer();
    cmd.args([&bootstrap(), topic, group])
        .args([
            "--format",
            "text",
            "--stats-interval",
            "1s",
            "--client-id",
            id,
        ])
        .args(extra);
    Proc::spawn(cmd, &unique(id))
}

/// Waits until `check` holds, polling; fails with `what` after `secs`.
fn wait_until(secs: u64, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check() {
        assert!(Instant::now() < deadline, "{what} within {secs} s");
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Client id → partitions once the group shows exactly `ids`, splitting
/// `partitions` partitions, every member owning some.
fn split_of(group: &str, ids: &[&str], partitions: i32) -> BTreeMap<String, BTreeSet<i32>> {
    split_of_within(group, ids, partitions, Duration::from_secs(90))
}

/// [`split_of`], failing after `within`.
fn split_of_within(
    group: &str,
    ids: &[&str],
    partitions: i32,
    within: Duration,
) -> BTreeMap<String, BTreeSet<i32>> {
    let ids: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(wait_for_split(group, &ids, partitions, within))
}

/// `partition<TAB>offset...` lines → (partition, offset).
fn handled(text: &str) -> Vec<(i32, i64)> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
        })
        .collect()
}

fn produce(topic: &str, keys: usize, rounds: u64) -> u64 {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(produce_rounds(topic, keys, 0..rounds, Duration::ZERO))
}

/// A static member restarted within the session timeout gets its
/// partitions back, and nobody else's assignment changes.
fn static_member_restart_keeps_the_assignment(proto: Proto) {
    require_broker();
    let topic = unique("static");
    let group = unique("g-static");
    create_topic(&topic, 6);
    let flags = |i: usize| {
        let mut f: Vec<String> = proto.flags().iter().map(|s| s.to_string()).collect();
        f.extend(["--group-instance-id".into(), format!("instance-{i}")]);
        f.extend(["--session-timeout".into(), "30s".into()]);
        f
    };
    let start = |i: usize| {
        let f = flags(i);
        let f: Vec<&str> = f.iter().map(String::as_str).collect();
        member(&topic, &group, &format!("static-{i}"), &f)
    };
    let mut members: Vec<Proc> = (0..3).map(start).collect();
    let before = split_of(&group, &["static-0", "static-1", "static-2"], 6);
    // Let the stats lines (every second) catch up with the settled group.
    std::thread::sleep(Duration::from_millis(2500));
    let rebalances: Vec<Option<u64>> = members.iter().map(Proc::rebalances).collect();

    let status = members[1].stop(30);
    assert!(status.success(), "{}", members[1].stderr());
    members[1] = start(1);
    let after = split_of(&group, &["static-0", "static-1", "static-2"], 6);
    assert_eq!(
        after,
        before,
        "{}: the assignment changed across a static restart",
        proto.label()
    );
    std::thread::sleep(Duration::from_secs(2));
    for i in [0, 2] {
        assert_eq!(
            members[i].rebalances(),
            rebalances[i],
            "{}: member {i} went through a rebalance: {}",
            proto.label(),
            members[i].stderr()
        );
    }
    // The restarted member really reads its partitions again.
    produce(&topic, 60, 10);
    wait_until(60, "all 600 messages handled", || {
        members
            .iter()
            .map(|m| handled(&m.stdout()).len())
            .sum::<usize>()
            >= 600
    });
    for m in &mut members {
        assert!(m.stop(30).success());
    }
}

#[test]
fn static_classic_member_restart_keeps_the_assignment() {
    static_member_restart_keeps_the_assignment(Proto::Range);
}

#[test]
fn static_consumer_protocol_member_restart_keeps_the_assignment() {
    static_member_restart_keeps_the_assignment(Proto::Consumer);
}

/// Handlers slower than the session timeout: heartbeats run on their own,
/// so the member stays and the group does not rebalance.
fn slow_handler_keeps_the_membership(proto: Proto, session: &str, work: &str) {
    require_broker();
    let topic = unique("slow");
    let group = unique("g-slow");
    create_topic(&topic, 2);
    produce(&topic, 2, 1);
    let mut flags: Vec<&str> = proto.flags();
    flags.extend(["--session-timeout", session, "--heartbeat-interval", "1s"]);
    flags.extend(["--handler", "exec", "--", "sh", "-c"]);
    let script = format!(r#"sleep {work}; printf '%s\t%s\n' "$KAFKA_PARTITION" "$KAFKA_OFFSET""#);
    flags.push(&script);
    let mut m = member(&topic, &group, "slow-0", &flags);
    wait_until(60, "both slow messages handled", || {
        handled(&m.stdout()).len() == 2
    });
    assert_eq!(m.rebalances(), Some(1), "{}: {}", proto.label(), m.stderr());
    assert!(m.stop(30).success(), "{}", m.stderr());
    assert!(!m.stderr().contains("lost"), "{}", m.stderr());
}

#[test]
fn a_classic_handler_slower_than_the_session_timeout_does_not_evict_the_member() {
    slow_handler_keeps_the_membership(Proto::Cooperative, "6s", "9");
}

#[test]
fn a_consumer_protocol_handler_slower_than_the_session_timeout_does_not_evict_the_member() {
    // The broker's session timeout (10 s in docker/kafka-local.sh).
    slow_handler_keeps_the_membership(Proto::Consumer, "10s", "12");
}

/// Partitions added to a subscribed topic are picked up while running.
fn added_partitions_are_picked_up(proto: Proto) {
    require_broker();
    let topic = unique("grow");
    let group = unique("g-grow");
    create_topic(&topic, 2);
    let mut flags = proto.flags();
    flags.extend(["--metadata-max-age", "2s"]);
    let mut m = member(&topic, &group, "grow-0", &flags);
    split_of(&group, &["grow-0"], 2);
    kafka_tool(
        "topics",
        &[
            "--bootstrap-server",
            &bootstrap(),
            "--alter",
            "--topic",
            &topic,
            "--partitions",
            "4",
        ],
    );
    split_of(&group, &["grow-0"], 4);
    produce(&topic, 40, 5);
    wait_until(60, "200 messages over 4 partitions handled", || {
        handled(&m.stdout()).len() >= 200
    });
    let parts: BTreeSet<i32> = handled(&m.stdout()).iter().map(|(p, _)| *p).collect();
    assert_eq!(parts, (0..4).collect(), "{}", proto.label());
    assert!(m.stop(30).success());
}

#[test]
fn a_classic_member_picks_up_added_partitions() {
    added_partitions_are_picked_up(Proto::Cooperative);
}

#[test]
fn a_consumer_protocol_member_picks_up_added_partitions() {
    added_partitions_are_picked_up(Proto::Consumer);
}

/// A classic member stopped while its JoinGroup waits on the coordinator
/// (the other member has not rejoined yet) still leaves at once: the
/// rebalance completes without it instead of after its session timeout.
#[test]
fn a_member_stopped_while_joining_leaves_the_group_at_once() {
    require_broker();
    let topic = unique("joining");
    let group = unique("g-joining");
    create_topic(&topic, 4);
    // Slow heartbeats: the first member notices the rebalance late, so the
    // second one's JoinGroup stays pending for seconds.
    let flags = [
        "--group-protocol",
        "classic",
        "--assignor",
        "range",
        "--heartbeat-interval",
        "25s",
        "--session-timeout",
        "60s",
    ];
    let mut first = member(&topic, &group, "first", &flags);
    split_of(&group, &["first"], 4);
    let mut second = member(&topic, &group, "second", &flags);
    wait_until(20, "the second member sending its JoinGroup", || {
        second.stderr().contains("using the classic group protocol")
    });
    std::thread::sleep(Duration::from_secs(1));
    let t = Instant::now();
    assert!(second.stop(30).success(), "{}", second.stderr());
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "stopping took {:?}",
        t.elapsed()
    );
    // The first member rejoins at its next heartbeat; without the
    // LeaveGroup the group would then wait for the gone member's 60 s session.
    split_of_within(&group, &["first"], 4, Duration::from_secs(45));
    assert!(first.stop(30).success());
}

/// `--exit-at-end` in a group, like `kcat -G -e`: stop once every assigned
/// partition is caught up and handled; the commits reach the log ends.
#[test]
fn exit_at_end_in_a_group_reads_everything_and_commits_it() {
    require_broker();
    let topic = unique("g-end");
    let group = unique("g-end");
    create_topic(&topic, 3);
    let n = produce(&topic, 30, 10) as usize;
    let out = output_within(
        {
            let mut c = consumer();
            c.args([
                &bootstrap(),
                &topic,
                &group,
                "--exit-at-end",
                "--stats-interval",
                "0",
            ]);
            c
        },
        60,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), n);
    let ends = end_offsets(&topic);
    let committed: Vec<(i32, i64)> = describe_group(&group, &topic)
        .into_iter()
        .map(|(p, off, _)| (p, off))
        .collect();
    assert_eq!(committed, ends);
}

/// A broker started with `group.coordinator.rebalance.protocols=classic`
/// (from the launcher, on its own port), stopped when the test ends.
struct ClassicOnlyBroker {
    port: u16,
}

impl ClassicOnlyBroker {
    fn start(port: u16) -> Self {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("docker/kafka-local.sh");
        let run = |verb: &str| {
            Command::new("bash")
                .arg(&script)
                .arg(verb)
                .env("KAFKA_PORT", port.to_string())
                .env("KAFKA_GROUP_PROTOCOLS", "classic")
                .output()
                .unwrap()
        };
        let _ = run("down");
        let up = run("up");
        assert!(
            up.status.success(),
            "{}",
            String::from_utf8_lossy(&up.stderr)
        );
        Self { port }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for ClassicOnlyBroker {
    fn drop(&mut self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("docker/kafka-local.sh");
        let _ = Command::new("bash")
            .arg(script)
            .arg("down")
            .env("KAFKA_PORT", self.port.to_string())
            .output();
    }
}

#[test]
fn auto_falls_back_to_classic_and_an_explicit_consumer_protocol_fails_clearly() {
    let broker = ClassicOnlyBroker::start(9192);
    let addr = broker.addr();
    let topic = unique("fallback");
    let mut produce = producer();
    produce.args([&addr, &topic, "k", "--create-topic", "--partitions", "2"]);
    let out = run_with_input(produce, b"a\nb\nc\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = output_within(
        {
            let mut c = consumer();
            c.args([
                &addr,
                &topic,
                &unique("g-auto"),
                "--exit-at-end",
                "--stats-interval",
                "0",
            ]);
            c
        },
        60,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("falling back to classic"), "{err}");
    assert!(err.contains("using the classic group protocol"), "{err}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "a\nb\nc\n");

    let t = Instant::now();
    let out = output_within(
        {
            let mut c = consumer();
            c.args([
                &addr,
                &topic,
                &unique("g-848"),
                "--group-protocol",
                "consumer",
            ]);
            c
        },
        30,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "took {:?}",
        t.elapsed()
    );
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].contains("--group-protocol classic"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn bad_group_input_gets_one_line_and_a_documented_code_quickly() {
    require_broker();
    let topic = unique("badgrp");
    create_topic(&topic, 1);
    let cases: [(&[&str], i32, &str); 4] = [
        (&[&topic, "g", "--assignor", "sticky-ish"], 2, "sticky-ish"),
        (
            &[&topic, "", "--stats-interval", "0"],
            2,
            "group id is empty",
        ),
        (&["no-such-topic-here", "g"], 4, "no-such-topic-here"),
        (&[&topic, "g", "--group-protocol", "newest"], 2, "newest"),
    ];
    for (args, code, needle) in cases {
        let t = Instant::now();
        let out = output_within(
            {
                let mut c = consumer();
                c.arg(bootstrap()).args(args);
                c
            },
            30,
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "{args:?} took {:?}",
            t.elapsed()
        );
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

/// Java's console consumer in `group`, printing partition and offset.
fn java_member(topic: &str, group: &str, extra: &[&str]) -> Proc {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("docker/kafka-local.sh");
    let mut cmd = Command::new("bash");
    cmd.arg(script)
        .args([
            "tool",
            "console-consumer",
            "--bootstrap-server",
            &bootstrap(),
        ])
        .args(["--topic", topic, "--group", group, "--from-beginning"])
        .args([
            "--property",
            "print.partition=true",
            "--property",
            "print.offset=true",
        ])
        .args(["--consumer-property", "client.id=java-member"])
        .args(extra);
    Proc::spawn(cmd, &unique("java-member"))
}

/// librdkafka (confluent-kafka from PyPI) in `group`.
fn rdkafka_member(topic: &str, group: &str, protocol: &str) -> Proc {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/rdkafka_member.py");
    let mut cmd = Command::new("python3");
    cmd.arg(script)
        .args([
            "--bootstrap",
            &bootstrap(),
            "--topic",
            topic,
            "--group",
            group,
        ])
        .args(["--protocol", protocol, "--client-id", "rdkafka-member"])
        .args(["--idle-exit", "600", "--max-seconds", "600"]);
    Proc::spawn(cmd, &unique("rdkafka-member"))
}

/// Java's `Partition:3<TAB>Offset:17<TAB>value` lines → (partition, offset).
fn java_handled(text: &str) -> Vec<(i32, i64)> {
    text.lines()
        .filter_map(|l| {
            let mut p = None;
            let mut o = None;
            for f in l.split('\t') {
                if let Some(v) = f.strip_prefix("Partition:") {
                    p = v.parse().ok();
                } else if let Some(v) = f.strip_prefix("Offset:") {
                    o = v.parse().ok();
                }
            }
            Some((p?, o?))
        })
        .collect()
}

/// Three members — ours, Java's, librdkafka's — share a 6-partition topic;
/// the first to join leads (classic). Each handles only what Kafka
/// assigned it, together everything, and Kafka lists all three.
fn mixed_group(protocol: &str, ours_first: bool) {
    require_broker();
    let topic = unique("mixed");
    let group = unique("g-mixed");
    create_topic(&topic, 6);
    let java_extra: &[&str] = if protocol == "consumer" {
        &["--consumer-property", "group.protocol=consumer"]
    } else {
        &[]
    };
    let ours_flags = ["--group-protocol", protocol];
    let mut procs: Vec<(&str, Proc)> = Vec::new();
    if ours_first {
        procs.push(("ours", member(&topic, &group, "ours", &ours_flags)));
        split_of(&group, &["ours"], 6);
        procs.push(("java", java_member(&topic, &group, java_extra)));
    } else {
        procs.push(("java", java_member(&topic, &group, java_extra)));
        split_of(&group, &["java-member"], 6);
        procs.push(("ours", member(&topic, &group, "ours", &ours_flags)));
    }
    split_of(&group, &["ours", "java-member"], 6);
    procs.push(("rdkafka", rdkafka_member(&topic, &group, protocol)));
    let split = split_of(&group, &["ours", "java-member", "rdkafka-member"], 6);

    let n = produce(&topic, 120, 10) as usize;
    let read = |procs: &[(&str, Proc)]| -> BTreeMap<&'static str, Vec<(i32, i64)>> {
        procs
            .iter()
            .map(|(who, p)| {
                let text = p.stdout();
                let rows = if *who == "java" {
                    java_handled(&text)
                } else {
                    handled(&text)
                };
                let who: &'static str = match *who {
                    "ours" => "ours",
                    "java" => "java-member",
                    _ => "rdkafka-member",
                };
                (who, rows)
            })
            .collect()
    };
    wait_until(90, "every message handled by the mixed group", || {
        read(&procs).values().map(Vec::len).sum::<usize>() >= n
    });
    let seen = read(&procs);
    let mut all = BTreeSet::new();
    for (who, rows) in &seen {
        assert!(!rows.is_empty(), "{who} handled nothing ({split:?})");
        for (p, o) in rows {
            assert!(
                split[*who].contains(p),
                "{who} handled partition {p}, assigned {split:?}"
            );
            assert!(all.insert((*p, *o)), "{p}/{o} handled twice");
        }
    }
    assert_eq!(all.len(), n);
    if protocol == "classic" {
        // The first member to join leads every rebalance of this group.
        let ours = &procs.iter().find(|(who, _)| *who == "ours").unwrap().1;
        assert_eq!(
            ours.stderr().contains("leading the rebalance"),
            ours_first,
            "who led: {}",
            ours.stderr()
        );
    }
    for (_, p) in &mut procs {
        p.stop(60);
    }
}

#[test]
fn a_classic_group_with_java_and_librdkafka_members_led_by_java() {
    mixed_group("classic", false);
}

#[test]
fn a_classic_group_with_java_and_librdkafka_members_led_by_us() {
    mixed_group("classic", true);
}

#[test]
fn a_kip848_group_with_java_and_librdkafka_members() {
    mixed_group("consumer", true);
}
