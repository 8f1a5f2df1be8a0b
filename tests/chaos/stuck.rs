//! Loop 6, a stuck key: one message's handler hangs past
//! `--handler-timeout`, while the other keys must flow on.
//!
//! Two consumers (our binary, `--handler exec`) read the same topic at the
//! same time, each for a group of its own, with the same settings: every
//! message costs its command [`WORK`] of sleep, then the command prints the
//! value. In the *stuck* run the command of one message ([`STUCK_KEY`] at
//! [`STUCK_SEQ`]) prints a marker and sleeps far longer than the timeout;
//! it is killed at the timeout, retried once, killed again, and then goes to
//! the dead-letter topic (`--on-failure dlq:TOPIC`). The *baseline* run has
//! no stuck message.
//!
//! Checked:
//! * the other keys' throughput over a window inside the hang, against the
//!   baseline's over the same window (both run at once, so both see the
//!   same machine): within 10 %. A hung command holds one worker; there
//!   are more workers ([`WORKERS`]) than keys, so no other key ever waits
//!   for one, and the expected ratio is 1. (With fewer workers than keys the
//!   ratio tends to `(W-1)/W` for `W` workers while the handler, not the
//!   CPU, is the bottleneck.)
//! * the committed offset of every other partition advances during the hang
//!   (read with OffsetFetch), while the stuck partition's stays at or
//!   below the hung message;
//! * the hung message is in the dead-letter topic with the error headers
//!   (2 attempts, where it came from), and nothing else is lost or repeated.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mykafkams::group::{GroupClient, GroupConfig};

use crate::common::members::create_topic;
use crate::common::processes::{Running, collect};
use crate::common::{
    bootstrap, consumer, produce_sequences, read_partition, require_broker, unique,
};
use crate::ledger::{Ledger, parse_value};
use crate::table::{self, Row};

const KEYS: usize = 24;
const PER_KEY: usize = 100;
const PARTITIONS: i32 = 8;
/// Worker threads of each consumer.
const WORKERS: &str = "32";
/// Messages fetched and unfinished, per consumer: more than the topic
/// holds, so that every key runs at once, as the expected ratio of 1
/// assumes. The stuck key's queued messages count against this in-flight
/// budget; with a budget smaller than the backlog (256 was tried) they take
/// room the baseline gives to other keys, fewer keys run, and the ratio
/// measured 0.80-1.00 from run to run, the machine 70 % idle: the budget,
/// not the hang, held the others back. Every other partition's committed
/// offset still moves, with its slowest key, which runs: the log's end is
/// fetched at once, and the drain that follows commits every interval.
const MAX_IN_FLIGHT: &str = "4096";
/// Each message's command sleeps this long (`sleep` takes seconds).
const WORK: &str = "0.2";
/// The message whose handler hangs.
const STUCK_KEY: &str = "acct-5";
const STUCK_SEQ: u64 = 8;
/// The hang: two attempts of `--handler-timeout` each, a backoff between.
const HANDLER_TIMEOUT: &str = "6s";
/// The window the throughputs are compared over: from this long after the
/// hang begins, this long (inside the ~12.2 s the two attempts take). Ten
/// seconds hold some 50 messages a key, so a key's message more or less at
/// either edge moves the ratio by 2 % at most.
const WINDOW_DELAY: Duration = Duration::from_millis(500);
const WINDOW: Duration = Duration::from_millis(10_000);

/// One consumer run: the process and its stdout lines with arrival times.
struct Run {
    child: Running,
    lines: mpsc::Receiver<(Instant, String)>,
    log: std::thread::JoinHandle<String>,
}

/// Starts a consumer of `topic` for `group` whose exec handler hangs on
/// `stuck` (a value; `None` for the baseline), dead-lettering to `dlq`.
fn start(topic: &str, group: &str, stuck: Option<&str>, dlq: &str) -> Run {
    let hang = match stuck {
        Some(v) => format!(
            r#"if [ "$v" = "{v}" ]; then echo "HANG $KAFKA_PARTITION $KAFKA_OFFSET"; exec sleep 600; fi; "#
        ),
        None => String::new(),
    };
    let script = format!(r#"read -r v; {hang}sleep {WORK}; printf '%s\n' "$v""#);
    let mut cmd = consumer();
    cmd.args([
        &bootstrap(),
        topic,
        group,
        "--partitions",
        "all",
        "--exit-at-end",
    ])
    .args(["--workers", WORKERS, "--max-in-flight", MAX_IN_FLIGHT])
    .args(["--handler-timeout", HANDLER_TIMEOUT])
    // `--exit-at-end` drains from the moment the last record is fetched, and
    // with the whole topic in flight that is at once: the stuck key's rest
    // still takes its hang plus ~90 messages of work after it.
    .args(["--drain-timeout", "120s"])
    .args(["--retries", "1", "--retry-backoff", "200ms"])
    .args([
        "--on-failure",
        &format!("dlq:{dlq}"),
        "--stats-interval",
        "0",
    ])
    .args(["--handler", "exec", "--", "sh", "-c", &script])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = Running(cmd.spawn().unwrap());
    let log = collect(child.0.stderr.take().unwrap());
    let stdout = child.0.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send((Instant::now(), line));
        }
    });
    Run { child, lines, log }
}

/// Lines of keys other than the stuck one that arrived within `[from, to)`.
fn others_within(lines: &[(Instant, String)], from: Instant, to: Instant) -> usize {
    lines
        .iter()
        .filter(|(t, _)| *t >= from && *t < to)
        .filter(|(_, v)| parse_value(v).is_some_and(|(k, _)| k != STUCK_KEY))
        .count()
}

/// The group's committed offsets of every partition of `topic` (-1: none).
fn committed(rt: &tokio::runtime::Runtime, group: &str, topic: &str) -> BTreeMap<i32, i64> {
    let client = GroupClient::new([bootstrap()], group, GroupConfig::default());
    let partitions: Vec<i32> = (0..PARTITIONS).collect();
    let got = rt
        .block_on(client.fetch_committed(&[(topic, partitions)]))
        .expect("OffsetFetch");
    got.into_iter()
        .map(|((_, p), o)| (p, o.unwrap_or(-1)))
        .collect()
}

#[test]
fn a_stuck_key_holds_only_itself() {
    require_broker();
    let _turn = crate::one_at_a_time();
    let started = Instant::now();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let topic = unique("chaos-stuck");
    let dlq = unique("chaos-stuck-dlq");
    create_topic(&dlq, 1);
    let messages = produce_sequences(&topic, PARTITIONS, KEYS, PER_KEY);
    let stuck_value = format!("{STUCK_KEY}:{STUCK_SEQ}");
    let group = unique("chaos-stuck-g");
    let mut base = start(&topic, &unique("chaos-base-g"), None, &dlq);
    let mut stuck = start(&topic, &group, Some(&stuck_value), &dlq);

    // Wait for the hang to begin.
    let mut stuck_lines: Vec<(Instant, String)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let (hang_at, hang_partition, hang_offset) = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (t, line) = stuck
            .lines
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("the stuck message was never handled"));
        if let Some(rest) = line.strip_prefix("HANG ") {
            let (p, o) = rest.split_once(' ').unwrap();
            break (t, p.parse::<i32>().unwrap(), o.parse::<i64>().unwrap());
        }
        stuck_lines.push((t, line));
    };
    // Committed offsets at the start and the end of the window.
    let (from, to) = (hang_at + WINDOW_DELAY, hang_at + WINDOW_DELAY + WINDOW);
    std::thread::sleep(from.saturating_duration_since(Instant::now()));
    let before = committed(&rt, &group, &topic);
    std::thread::sleep(to.saturating_duration_since(Instant::now()));
    let after = committed(&rt, &group, &topic);
    let window_ended = Instant::now();

    // Both runs end at the end of the log.
    let stuck_status = stuck.child.wait_within(120);
    let base_status = base.child.wait_within(120);
    let stuck_log = stuck.log.join().unwrap();
    let base_log = base.log.join().unwrap();
    assert!(
        stuck_status.success(),
        "stuck run: {stuck_status}; {stuck_log}"
    );
    assert!(
        base_status.success(),
        "baseline run: {base_status}; {base_log}"
    );
    stuck_lines.extend(stuck.lines.try_iter());
    let base_lines: Vec<(Instant, String)> = base.lines.try_iter().collect();

    // The window was inside the hang, and both runs still had work then.
    let resumed = stuck_lines
        .iter()
        .find(|(_, v)| *v == format!("{STUCK_KEY}:{}", STUCK_SEQ + 1))
        .map(|(t, _)| *t)
        .expect("the stuck key never went on");
    let last = |l: &[(Instant, String)]| l.iter().map(|(t, _)| *t).max().unwrap();
    assert!(window_ended <= resumed, "the hang ended inside the window");
    assert!(
        last(&stuck_lines) > to && last(&base_lines) > to,
        "a run ran dry in the window"
    );
    let (n_stuck, n_base) = (
        others_within(&stuck_lines, from, to),
        others_within(&base_lines, from, to),
    );
    let ratio = n_stuck as f64 / n_base.max(1) as f64;

    // Everything handled once, in order per key; the hung message dead-lettered.
    let dead = read_partition(&dlq, 0);
    let dead_values: Vec<String> = dead
        .iter()
        .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned())
        .collect();
    let mut ledger = Ledger::new(KEYS, PER_KEY as u64);
    ledger.life(stuck_lines.iter().map(|(_, v)| v.as_str()), false);
    ledger.life(dead_values.iter().map(String::as_str), false);
    let counts = ledger.counts();
    let mut baseline = Ledger::new(KEYS, PER_KEY as u64);
    baseline.life(base_lines.iter().map(|(_, v)| v.as_str()), true);
    let base_counts = baseline.counts();

    let advanced: Vec<i32> = (0..PARTITIONS)
        .filter(|p| *p != hang_partition && after[p] > before[p])
        .collect();
    let rate = |n: usize| n as f64 / WINDOW.as_secs_f64();
    table::record(&Row {
        name: "stuck key",
        iterations: 1,
        counts,
        wall: started.elapsed(),
        target: if crate::scale() == crate::Scale::Full {
            "others' throughput >= 90%, others commit, hung message to DLQ"
        } else {
            "others' throughput >= 75% (short), others commit, hung message to DLQ"
        },
        note: format!(
            "others' throughput {ratio:.3} of the baseline ({:.0} vs {:.0} msg/s over {:.1} s of the \
             {:.1} s hang; {KEYS} keys, {WORKERS} workers, {WORK} s per message); \
             {} of {} other partitions committed during the hang",
            rate(n_stuck),
            rate(n_base),
            WINDOW.as_secs_f64(),
            (resumed - hang_at).as_secs_f64(),
            advanced.len(),
            PARTITIONS - 1,
        ),
    });

    assert_eq!(messages as u64, counts.messages);
    // Two exec consumers forking on two cores, in a debug build in CI: the
    // short loop checks that the others kept flowing at all (a stuck key
    // that held them would leave them near 0); the full loop holds the
    // issue's 10 % (measured 0.996-1.005 in runs of one build).
    let floor = crate::scale().pick(0.75, 0.9);
    assert!(
        ratio >= floor,
        "the other keys ran at {ratio:.3} of the baseline during the hang ({n_stuck} vs {n_base} messages)"
    );
    assert_eq!(
        advanced.len(),
        PARTITIONS as usize - 1,
        "commits during the hang: before {before:?}, after {after:?} (stuck partition {hang_partition})"
    );
    assert!(
        after[&hang_partition] <= hang_offset,
        "partition {hang_partition} committed past the hung offset {hang_offset}: {after:?}"
    );
    // The failure policy: one dead letter, the hung message, with its story.
    assert_eq!(
        dead_values,
        std::slice::from_ref(&stuck_value),
        "the dead-letter topic"
    );
    let headers = &dead[0].headers;
    let header = |name: &str| {
        headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_else(|| panic!("no {name} header: {headers:?}"))
    };
    assert_eq!(header("mykafkams.attempts"), "2");
    assert_eq!(header("mykafkams.partition"), hang_partition.to_string());
    assert_eq!(header("mykafkams.offset"), hang_offset.to_string());
    assert!(!header("mykafkams.error").is_empty());
    assert!(
        !headers.contains_key("mykafkams.exit-code"),
        "killed at the timeout, the command has no exit code: {headers:?}"
    );
    let problems = (counts.lost, counts.duplicates, counts.order_violations);
    assert_eq!(problems, (0, 0, 0), "stuck run {:?}", ledger.examples());
    let base_problems = (
        base_counts.lost,
        base_counts.duplicates,
        base_counts.order_violations,
    );
    assert_eq!(
        base_problems,
        (0, 0, 0),
        "baseline {:?}",
        baseline.examples()
    );
}
