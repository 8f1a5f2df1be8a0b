//! The consumer pipeline against a real broker: per-key order under parallel
//! lanes, graceful stop and restart, crash and restart, dead-lettering, and
//! bounded memory under a large backlog.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::members::parse_seq;
use common::*;
use mykafkams::Message;
use mykafkams::cluster::ClusterConfig;
use mykafkams::consumer::{self, ConsumerConfig, Partitions, StartAt, StopReason};
use mykafkams::group::{GroupClient, GroupConfig};
use mykafkams::pool::{FailurePolicy, HandlerError};
use parking_lot::Mutex;

/// A cheap, deterministic pseudo-random number per message (SplitMix64).
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_messages_over_16_workers_are_all_handled_in_per_key_order() {
    let addr = require_broker();
    let topic = unique("order");
    let t = topic.clone();
    let total = tokio::task::spawn_blocking(move || produce_sequences(&t, 4, 200, 100))
        .await
        .unwrap();
    assert_eq!(total, 20_000);

    let seen: Arc<Mutex<HashMap<String, Vec<u64>>>> = Arc::default();
    let record = Arc::clone(&seen);
    let handler = move |m: &Message| -> Result<(), HandlerError> {
        let value = std::str::from_utf8(m.value.as_deref().unwrap()).unwrap();
        let (key, seq) = parse_seq(value);
        assert_eq!(
            m.key.as_deref(),
            Some(key.as_bytes()),
            "key and value disagree"
        );
        // 0-2 ms of simulated work, different for every message.
        let micros = mix(((m.partition as u64) << 40) ^ m.offset as u64) % 2001;
        std::thread::sleep(Duration::from_micros(micros));
        record.lock().entry(key).or_default().push(seq);
        Ok(())
    };
    let mut cfg = ConsumerConfig::new(
        ClusterConfig::new(vec![addr]),
        topic.clone(),
        Partitions::All,
        unique("g-order"),
    );
    cfg.workers = 16;
    cfg.exit_at_end = true;
    cfg.start = StartAt::Earliest;
    cfg.stats_interval = Duration::ZERO;
    let (_signals, rx) = tokio::sync::watch::channel(0u32);
    let summary = consumer::run(cfg, handler, FailurePolicy::Stop, rx)
        .await
        .unwrap();

    assert_eq!(summary.reason, StopReason::EndOfLog);
    assert_eq!(summary.stats.finished, 20_000);
    assert_eq!(summary.stats.failed, 0);
    let seen = seen.lock();
    assert_eq!(seen.len(), 200, "keys handled");
    let expected: Vec<u64> = (0..100).collect();
    for (key, seqs) in seen.iter() {
        assert_eq!(
            seqs, &expected,
            "key {key}: handled out of order, lost or twice"
        );
    }
    let ends: Vec<(i32, i64)> = end_offsets(&topic);
    assert_eq!(
        summary.committed_of(&topic),
        ends,
        "committed offsets are the log ends"
    );
}

/// `--exit-at-end` stops fetching at the end of the log and drains what it
/// fetched: with a large in-flight window that is a whole backlog. Commits
/// go on during the drain, so a crash in it repeats about one interval's
/// worth, not the backlog; an outside reader sees the committed offset
/// climb while the consumer is still handling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_drain_keeps_committing() {
    let addr = require_broker();
    let topic = unique("drain-commits");
    let group = unique("g-drain-commits");
    let t = topic.clone();
    let total = tokio::task::spawn_blocking(move || produce_sequences(&t, 1, 1, 150))
        .await
        .unwrap();
    // One key, so one message at a time: some 3 s of handling, all of it
    // after the fetch reached the end.
    let handler = |_: &Message| -> Result<(), HandlerError> {
        std::thread::sleep(Duration::from_millis(20));
        Ok(())
    };
    let mut cfg = ConsumerConfig::new(
        ClusterConfig::new(vec![addr]),
        topic.clone(),
        Partitions::All,
        group.clone(),
    );
    cfg.exit_at_end = true;
    cfg.start = StartAt::Earliest;
    cfg.stats_interval = Duration::ZERO;
    cfg.commit_interval = Duration::from_millis(100);
    cfg.max_in_flight = 1_000;
    let (_signals, rx) = tokio::sync::watch::channel(0u32);
    let run = tokio::spawn(consumer::run(cfg, handler, FailurePolicy::Stop, rx));

    let client = GroupClient::new([bootstrap()], &group, GroupConfig::default());
    let mut seen = BTreeSet::new();
    while !run.is_finished() {
        if let Ok(got) = client.fetch_committed(&[(&topic, [0])]).await {
            seen.extend(got.into_values().flatten());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let summary = run.await.unwrap().unwrap();
    assert_eq!(summary.reason, StopReason::EndOfLog);
    assert_eq!(summary.stats.finished, total as u64);
    assert_eq!(summary.committed_of(&topic), vec![(0, total as i64)]);
    // Before the drain committed, the only commits before the end were the
    // main loop's, in the moment before the fetch reached the end (one
    // 100 ms tick at most); a drain committing every 100 ms for some 3 s
    // shows many more.
    let during: Vec<i64> = seen
        .iter()
        .copied()
        .filter(|o| *o > 0 && *o < total as i64)
        .collect();
    assert!(
        during.len() >= 10,
        "committed offsets seen while the consumer drained: {during:?} (all seen: {seen:?})"
    );
}

/// One line of the exec handler used below: `partition offset value`.
const EXEC: [&str; 3] = [
    "sh",
    "-c",
    r#"printf '%s %s %s\n' "$KAFKA_PARTITION" "$KAFKA_OFFSET" "$(cat)""#,
];

/// A consumer over every partition of `topic` that prints `partition offset value` per message.
fn exec_consumer(topic: &str, group: &str, extra: &[&str]) -> Child {
    consumer()
        .args([
            &bootstrap(),
            topic,
            group,
            "--partitions",
            "all",
            "--workers",
            "4",
            "--max-in-flight",
            "64",
        ])
        .args([
            "--stats-interval",
            "0",
            "--commit-interval",
            "200ms",
            "--handler",
            "exec",
        ])
        .args(extra)
        .arg("--")
        .args(EXEC)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

type Line = (i32, i64, String);

/// Reads the child's stdout; after `stop_after` lines sends `sig` once. Returns
/// every line (until EOF), the exit code and stderr.
fn collect(mut child: Child, stop_after: Option<(usize, i32)>) -> (Vec<Line>, Option<i32>, String) {
    let mut stderr = child.stderr.take().unwrap();
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        stderr.read_to_string(&mut s).unwrap();
        s
    });
    let out = BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    let mut signalled = false;
    for line in out.lines() {
        let line = line.unwrap();
        let mut f = line.splitn(3, ' ');
        let p = f.next().unwrap().parse().unwrap();
        let o = f.next().unwrap().parse().unwrap();
        lines.push((p, o, f.next().unwrap_or_default().to_string()));
        if let Some((n, sig)) = stop_after
            && !signalled
            && lines.len() >= n
        {
            signal(&child, sig);
            signalled = true;
        }
    }
    let status = child.wait().unwrap();
    (lines, status.code(), err_reader.join().unwrap())
}

/// Each key's sequence numbers appear in increasing order within one run.
fn assert_key_order(lines: &[Line]) {
    let mut last: HashMap<String, u64> = HashMap::new();
    for (p, o, v) in lines {
        let (key, seq) = parse_seq(v);
        if let Some(prev) = last.insert(key.clone(), seq) {
            assert!(seq > prev, "{key}: seq {seq} (p{p}@{o}) after {prev}");
        }
    }
}

fn offsets_by_partition(lines: &[Line]) -> BTreeMap<i32, Vec<i64>> {
    let mut m: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for (p, o, _) in lines {
        m.entry(*p).or_default().push(*o);
    }
    for v in m.values_mut() {
        v.sort();
    }
    m
}

#[test]
fn sigterm_drains_and_commits_and_a_restart_continues_without_loss() {
    require_broker();
    let topic = unique("term");
    let group = unique("g-term");
    let total = produce_sequences(&topic, 3, 30, 100);
    let ends: BTreeMap<i32, i64> = end_offsets(&topic).into_iter().collect();

    let (run1, code, stderr) = collect(
        exec_consumer(&topic, &group, &[]),
        Some((total / 3, libc::SIGTERM)),
    );
    assert_eq!(code, Some(0), "graceful stop exits 0; stderr: {stderr}");
    assert!(
        run1.len() < total,
        "the stop came mid-run ({} of {total})",
        run1.len()
    );
    assert_key_order(&run1);
    let committed = committed_from_summary(&stderr);

    // Kafka's own tool sees exactly what the consumer committed, with the right lag.
    let described = describe_group(&group, &topic);
    assert_eq!(described.len(), 3, "{described:?}");
    for (p, cur, lag) in &described {
        assert_eq!(Some(cur), committed.get(p), "p{p}: describe vs summary");
        assert_eq!(*lag, ends[p] - cur, "p{p}: lag");
    }
    // A graceful stop finishes everything it fetched: handled == committed.
    let by_p = offsets_by_partition(&run1);
    for (p, c) in &committed {
        let expected: Vec<i64> = (0..*c).collect();
        assert_eq!(
            by_p.get(p).cloned().unwrap_or_default(),
            expected,
            "p{p} run 1"
        );
    }

    let (run2, code, stderr) = collect(exec_consumer(&topic, &group, &["--exit-at-end"]), None);
    assert_eq!(code, Some(0), "{stderr}");
    assert_key_order(&run2);
    let by_p2 = offsets_by_partition(&run2);
    for (p, end) in &ends {
        let expected: Vec<i64> = (committed[p]..*end).collect();
        assert_eq!(
            by_p2.get(p).cloned().unwrap_or_default(),
            expected,
            "p{p} run 2: resumes at the commit, no duplicates"
        );
    }
    assert_eq!(run1.len() + run2.len(), total);
    for (p, cur, lag) in describe_group(&group, &topic) {
        assert_eq!((cur, lag), (ends[&p], 0), "p{p} after the restart");
    }
}

#[test]
fn sigkill_loses_nothing_and_redelivers_only_the_uncommitted_window() {
    require_broker();
    let topic = unique("kill");
    let group = unique("g-kill");
    let total = produce_sequences(&topic, 3, 30, 100);
    sigkill_then_restart(&topic, &group, total, &|extra| {
        exec_consumer(&topic, &group, extra)
    });
}

/// Issue 14's acceptance for async handlers: 10,000 keys, concurrency
/// 1,000, a SIGKILL mid-run, then a restart (the `async_consumer` example,
/// which uses only the public API).
#[test]
fn an_async_handler_killed_mid_run_loses_nothing_and_keeps_each_keys_order() {
    require_broker();
    let topic = unique("akill");
    let group = unique("g-akill");
    let total = produce_sequences(&topic, 6, 10_000, 5);
    let run1 = sigkill_then_restart(&topic, &group, total, &|extra| {
        Command::new(example("async_consumer"))
            .args([
                &bootstrap(),
                topic.as_str(),
                group.as_str(),
                "--all-partitions",
            ])
            .args(["--concurrency", "1000", "--work-ms", "2"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    });
    // The example writes each line itself, whole, before its handler
    // returns, so the killed run's lines must keep each key's order too.
    assert_key_order(&run1);
}

/// Runs `start(&[])` until a third of `total` is handled, SIGKILLs it, and
/// checks: what was committed was handled; a restart (`start` with
/// `--exit-at-end`) begins at the commit and handles the rest once, each key
/// in order, skipping what the offset map says run 1 finished; together
/// nothing is lost, and duplicates come only from the uncommitted window. Returns the killed run's lines (an exec
/// command cut off by the kill can leave a partial line there, so their
/// order is the caller's to check).
fn sigkill_then_restart(
    topic: &str,
    group: &str,
    total: usize,
    start: &dyn Fn(&[&str]) -> Child,
) -> Vec<Line> {
    let ends: BTreeMap<i32, i64> = end_offsets(topic).into_iter().collect();
    let (run1, code, _) = collect(start(&[]), Some((total / 3, libc::SIGKILL)));
    assert_eq!(code, None, "killed by a signal");
    assert!(run1.len() < total, "the kill came mid-run");
    let committed: BTreeMap<i32, i64> = describe_group(group, topic)
        .into_iter()
        .map(|(p, cur, _)| (p, cur.max(0)))
        .collect();
    assert!(
        committed.values().sum::<i64>() > 0,
        "something was committed before the kill: {committed:?}"
    );

    // Committed means handled: every offset below the commit is in run 1.
    let by_p1 = offsets_by_partition(&run1);
    for (p, c) in &committed {
        let handled: BTreeSet<i64> = by_p1
            .get(p)
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .collect();
        for o in 0..*c {
            assert!(handled.contains(&o), "p{p}@{o} committed but never handled");
        }
    }

    let (run2, code, stderr) = collect(start(&["--exit-at-end"]), None);
    assert_eq!(code, Some(0), "{stderr}");
    assert_key_order(&run2);
    let by_p2 = offsets_by_partition(&run2);
    let mut duplicates = 0;
    for (p, end) in &ends {
        let c = committed.get(p).copied().unwrap_or(0);
        // The restart starts at the commit and handles each message once:
        // everything there run 1 did not handle, and of what it did, only
        // what finished after its last commit (the offset map skips the rest).
        let two = by_p2.get(p).cloned().unwrap_or_default();
        let unique: BTreeSet<i64> = two.iter().copied().collect();
        assert_eq!(
            unique.len(),
            two.len(),
            "p{p} run 2 handled an offset twice"
        );
        assert!(
            unique.iter().all(|o| (c..*end).contains(o)),
            "p{p} run 2 began at the commit {c}"
        );
        let one: BTreeSet<i64> = by_p1.get(p).into_iter().flatten().copied().collect();
        for o in c..*end {
            assert!(
                one.contains(&o) || unique.contains(&o),
                "p{p}@{o} handled by neither run"
            );
        }
        // Nothing lost: together the runs cover the whole log.
        let union: BTreeSet<i64> = by_p1
            .get(p)
            .into_iter()
            .flatten()
            .chain(by_p2.get(p).into_iter().flatten())
            .copied()
            .collect();
        assert_eq!(union, (0..*end).collect::<BTreeSet<_>>(), "p{p} union");
        // Duplicates come only from the uncommitted window (offsets >= commit).
        duplicates += one.intersection(&unique).count();
    }
    eprintln!(
        "sigkill: run 1 handled {} of {total}, committed {committed:?}, redelivered {duplicates}",
        run1.len()
    );
    run1
}

#[test]
fn a_failing_exec_command_goes_to_the_dead_letter_topic_and_the_key_moves_on() {
    let addr = require_broker();
    let topic = unique("dlq-src");
    let dlq = unique("dlq");
    produce_lines(&topic, 1, "k", "ok1\nbad\nok2\n");
    produce_lines(&dlq, 1, "unused", "");

    let script =
        r#"v=$(cat); if [ "$v" = bad ]; then echo "cannot handle $v" >&2; exit 3; fi; echo "$v""#;
    let out = consumer()
        .args([
            &addr,
            &topic,
            "0",
            &unique("g-dlq"),
            "--exit-at-end",
            "--stats-interval",
            "0",
        ])
        .args([
            "--retries",
            "2",
            "--retry-backoff",
            "10ms",
            "--on-failure",
            &format!("dlq:{dlq}"),
        ])
        .args(["--handler", "exec", "--", "sh", "-c", script])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok1\nok2\n");
    assert!(stderr.contains("1 dead-lettered"), "{stderr}");
    // Exit 3 is not EX_TEMPFAIL (75): no retries.
    assert!(stderr.contains(" 0 retried"), "{stderr}");

    let records = read_partition(&dlq, 0);
    assert_eq!(records.len(), 1, "{records:?}");
    let r = &records[0];
    assert_eq!(r.key.as_deref(), Some(&b"k"[..]));
    assert_eq!(r.value.as_deref(), Some(&b"bad"[..]));
    let header = |k: &str| String::from_utf8_lossy(&r.headers[k]).to_string();
    assert!(
        header(mykafkams::dlq::HEADER_ERROR).contains("cannot handle bad"),
        "{:?}",
        r.headers
    );
    assert!(
        header(mykafkams::dlq::HEADER_ERROR).contains("exit"),
        "{:?}",
        r.headers
    );
    assert_eq!(header(mykafkams::dlq::HEADER_TOPIC), topic);
    assert_eq!(header(mykafkams::dlq::HEADER_PARTITION), "0");
    assert_eq!(header(mykafkams::dlq::HEADER_OFFSET), "1");
    assert_eq!(header(mykafkams::dlq::HEADER_ATTEMPTS), "1");
    assert_eq!(header(mykafkams::dlq::HEADER_EXIT_CODE), "3");
}

/// Peak resident memory (VmHWM) of a process, in KiB.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[test]
fn a_million_message_backlog_with_a_slow_handler_keeps_memory_bounded() {
    let addr = require_broker();
    let topic = unique("backlog");
    // 1,000,000 messages of ~100 bytes: about 100 MB of payload on the broker.
    let path = std::env::temp_dir().join(format!("{topic}.txt"));
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        for i in 0..1_000_000u64 {
            writeln!(f, "acct-{}|{i:0>96}", i % 1000).unwrap();
        }
    }
    let out = producer()
        .args([
            &addr,
            &topic,
            "--key-separator",
            "|",
            "--create-topic",
            "--partitions",
            "2",
            "--input",
        ])
        .arg(&path)
        .output()
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The handler is slow because stdout is: this test reads it slowly, so
    // the print handler blocks and the pipeline must stop fetching.
    let mut child = consumer()
        .args([
            &addr,
            &topic,
            &unique("g-mem"),
            "--partitions",
            "all",
            "--workers",
            "8",
        ])
        .args([
            "--max-in-flight",
            "2000",
            "--stats-interval",
            "0",
            "--from",
            "earliest",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let mut peak = 0;
    let started = Instant::now();
    let mut read = 0u64;
    while read < 30_000 {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "consumer ended early"
        );
        read += 1;
        if read % 1000 == 0 {
            peak = peak.max(peak_rss_kib(pid).unwrap_or(0));
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    peak = peak.max(peak_rss_kib(pid).unwrap_or(0));
    signal(&child, libc::SIGKILL);
    child.wait().unwrap();
    eprintln!(
        "backlog: read {read} lines in {:.1} s; consumer peak RSS {} MiB",
        started.elapsed().as_secs_f64(),
        peak / 1024
    );
    // Unbounded fetching would pull the ~100 MB backlog (and more in Message
    // overhead) into memory within seconds; bounded, the consumer holds at most
    // --max-in-flight messages plus one fetch response per partition.
    assert!(peak > 0, "could not read the consumer's RSS");
    assert!(
        peak < 64 * 1024,
        "consumer peak RSS {} MiB is not bounded",
        peak / 1024
    );
}

#[test]
fn on_failure_stop_commits_up_to_the_failed_message_and_exits_6() {
    let addr = require_broker();
    let topic = unique("stop");
    let group = unique("g-stop");
    produce_lines(&topic, 1, "k", "ok1\nbad\nok2\n");
    let script = r#"v=$(cat); [ "$v" != bad ] || exit 1; echo "$v""#;
    let run = |script: &str| {
        consumer()
            .args([
                &addr,
                &topic,
                "0",
                &group,
                "--exit-at-end",
                "--stats-interval",
                "0",
            ])
            .args([
                "--retries",
                "1",
                "--retry-backoff",
                "10ms",
                "--on-failure",
                "stop",
            ])
            .args(["--handler", "exec", "--", "sh", "-c", script])
            .output()
            .unwrap()
    };
    let out = run(script);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "ok1\n",
        "nothing after the failed message of the key"
    );
    assert!(stderr.contains("@1 failed"), "names the message: {stderr}");
    assert_eq!(
        describe_group(&group, &topic),
        vec![(0, 1, 2)],
        "committed up to the failed message"
    );

    // Once the handler is fixed, the restart picks up exactly at the failed message.
    let out = run(r#"cat; echo"#);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "bad\nok2\n");
}

#[test]
fn a_second_signal_aborts_the_drain_and_exits_130() {
    let addr = require_broker();
    let topic = unique("abort");
    let group = unique("g-abort");
    let lines: String = (0..20).map(|i| format!("m{i}\n")).collect();
    produce_lines(&topic, 1, "k", &lines);
    // One key, so one lane: 20 messages of 1 s each queue up behind each other.
    let mut child = consumer()
        .args([
            &addr,
            &topic,
            "0",
            &group,
            "--stats-interval",
            "0",
            "--drain-timeout",
            "60s",
        ])
        .args(["--handler", "exec", "--", "sh", "-c", "cat; echo; sleep 1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    assert_eq!(first, "m0\n");
    let started = Instant::now();
    signal(&child, libc::SIGTERM);
    // Wait for the consumer to acknowledge the first signal, then send the second.
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("stop requested") {
        line.clear();
        assert!(
            err.read_line(&mut line).unwrap() > 0,
            "consumer exited before acknowledging the stop"
        );
    }
    signal(&child, libc::SIGTERM);
    let status = child.wait().unwrap();
    let mut rest = String::new();
    err.read_to_string(&mut rest).unwrap();
    assert_eq!(status.code(), Some(130), "{rest}");
    // A full drain would take ~19 s more; the abort only waits for the running message.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "abort took {:?}",
        started.elapsed()
    );
    let committed = describe_group(&group, &topic)[0].1;
    assert!(
        (1..20).contains(&committed),
        "committed what finished, not the abandoned rest: {committed}"
    );
}
