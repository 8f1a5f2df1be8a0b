//! The `--handler exec` contract against a real broker: exit 75 is retried,
//! any other failure goes straight to `--on-failure`, a hung command is
//! killed at `--handler-timeout`, and a dead-letter copy carries the
//! attempts, the exit code and the tail of stderr.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Output;

use common::members::parse_seq;
use common::*;
use mykafkams::dlq::{HEADER_ATTEMPTS, HEADER_ERROR, HEADER_EXIT_CODE, HEADER_STDERR};
use rskafka::record::Record;

/// A fresh directory for a test's marker files.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique(name));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// How many times the script appended to the marker file `name` in `dir`
/// (one line per run of the command).
fn runs(dir: &Path, name: &str) -> usize {
    std::fs::read_to_string(dir.join(name))
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// Runs the consumer over `topic` from the start until its end, with `flags`
/// and then `--handler exec -- sh -c SCRIPT sh DIR` (the script sees DIR as
/// `$1`); fails the test if it takes over two minutes.
fn consume_with_exec(topic: &str, flags: &[&str], script: &str, dir: &Path) -> Output {
    let mut cmd = consumer();
    cmd.args([
        &bootstrap(),
        topic,
        &unique("g-exec"),
        "--partitions",
        "all",
        "--exit-at-end",
        "--stats-interval",
        "0",
        "--retry-backoff",
        "10ms",
    ])
    .args(flags)
    .args(["--handler", "exec", "--", "sh", "-c", script, "sh"])
    .arg(dir);
    output_within(cmd, 120)
}

/// The summary counters the consumer printed, e.g. `2 dead-lettered`.
fn summary(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    stderr
        .lines()
        .rev()
        .find(|l| l.starts_with("consumer: ") && l.contains(" handled ("))
        .unwrap_or_else(|| panic!("no summary in: {stderr}"))
        .to_string()
}

/// A header of a dead-letter record, as text.
fn header(r: &Record, name: &str) -> Option<String> {
    r.headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// The dead-letter records by value.
fn by_value(records: Vec<Record>) -> BTreeMap<String, Record> {
    records
        .into_iter()
        .map(|r| (String::from_utf8(r.value.clone().unwrap()).unwrap(), r))
        .collect()
}

/// Checks stdout holds every `acct-K:SEQ` value of `expected` exactly once,
/// in sequence order per key.
fn assert_each_once_in_key_order(stdout: &[u8], expected: &BTreeSet<String>) {
    let stdout = String::from_utf8_lossy(stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    let seen: BTreeSet<String> = lines.iter().map(|l| l.to_string()).collect();
    assert_eq!(lines.len(), seen.len(), "a message was done twice");
    assert_eq!(&seen, expected, "messages done");
    let mut last: BTreeMap<String, u64> = BTreeMap::new();
    for line in lines {
        let (key, seq) = parse_seq(line);
        if let Some(prev) = last.insert(key.clone(), seq) {
            assert!(prev < seq, "{key}: {seq} after {prev}");
        }
    }
}

#[test]
fn exit_75_is_retried_until_the_command_succeeds_and_each_message_is_done_once() {
    require_broker();
    let topic = unique("exec-retry");
    let dlq = unique("exec-retry-dlq");
    let n = produce_sequences(&topic, 2, 4, 5);
    produce_lines(&dlq, 1, "unused", "");
    let dir = temp_dir("exec-retry");
    // The first run of each message exits 75; the second prints the value.
    let script = r#"v=$(cat); m="$1/$KAFKA_PARTITION-$KAFKA_OFFSET"; echo run >> "$m"
        [ "$(wc -l < "$m")" -ge 2 ] || exit 75; echo "$v""#;
    let out = consume_with_exec(
        &topic,
        &["--retries", "3", "--on-failure", &format!("dlq:{dlq}")],
        script,
        &dir,
    );
    let line = summary(&out);
    assert!(
        line.contains(&format!(
            "{n} handled (0 skipped, 0 dead-lettered), 0 failed, {n} retried"
        )),
        "{line}"
    );
    let expected: BTreeSet<String> = (0..5)
        .flat_map(|seq| (0..4).map(move |k| format!("acct-{k}:{seq}")))
        .collect();
    assert_each_once_in_key_order(&out.stdout, &expected);
    let mut markers = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert_eq!(runs(&dir, &name), 2, "{name}: one retry, then done");
        markers += 1;
    }
    assert_eq!(markers, n);
    assert!(read_partition(&dlq, 0).is_empty(), "nothing dead-lettered");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn only_exit_75_is_retried_and_the_dlq_copy_carries_attempts_exit_code_and_stderr() {
    require_broker();
    let topic = unique("exec-codes");
    let dlq = unique("exec-codes-dlq");
    produce_lines(&topic, 1, "k", "bad\ntemp\nok\n");
    produce_lines(&dlq, 1, "unused", "");
    let dir = temp_dir("exec-codes");
    // bad: exit 3 after ~14 KB of stderr; temp: exit 75 every time; ok: done.
    let script = r#"v=$(cat); echo run >> "$1/$v"
        case "$v" in
          bad) seq 1 3000 >&2; echo "cannot handle $v" >&2; exit 3 ;;
          temp) echo "try $v later" >&2; exit 75 ;;
        esac
        echo "$v""#;
    let out = consume_with_exec(
        &topic,
        &["--retries", "2", "--on-failure", &format!("dlq:{dlq}")],
        script,
        &dir,
    );
    let line = summary(&out);
    // temp: 2 retries; bad: none.
    assert!(
        line.contains("3 handled (0 skipped, 2 dead-lettered), 2 failed, 2 retried"),
        "{line}"
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n");
    assert_eq!(runs(&dir, "bad"), 1, "exit 3 is not retried");
    assert_eq!(runs(&dir, "temp"), 3, "exit 75 is retried: 1 + 2 retries");
    assert_eq!(runs(&dir, "ok"), 1);

    let dead = by_value(read_partition(&dlq, 0));
    assert_eq!(dead.keys().collect::<Vec<_>>(), ["bad", "temp"], "{dead:?}");
    let bad = &dead["bad"];
    assert_eq!(header(bad, HEADER_ATTEMPTS).as_deref(), Some("1"));
    assert_eq!(header(bad, HEADER_EXIT_CODE).as_deref(), Some("3"));
    let mut stderr: Vec<u8> = (1..=3000)
        .flat_map(|i| format!("{i}\n").into_bytes())
        .collect();
    stderr.extend_from_slice(b"cannot handle bad\n");
    assert_eq!(
        bad.headers[HEADER_STDERR].as_slice(),
        &stderr[stderr.len() - 4096..],
        "exactly the last 4096 bytes of stderr"
    );
    let error = header(bad, HEADER_ERROR).unwrap();
    assert!(error.ends_with("2999 3000 cannot handle bad"), "{error}");

    let temp = &dead["temp"];
    assert_eq!(header(temp, HEADER_ATTEMPTS).as_deref(), Some("3"));
    assert_eq!(header(temp, HEADER_EXIT_CODE).as_deref(), Some("75"));
    assert_eq!(
        header(temp, HEADER_STDERR).as_deref(),
        Some("try temp later\n")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_hung_command_is_killed_at_the_timeout_and_dead_lettered_while_other_keys_go_on() {
    require_broker();
    let topic = unique("exec-hang");
    let dlq = unique("exec-hang-dlq");
    let n = produce_sequences(&topic, 2, 4, 3);
    produce_lines(&dlq, 1, "unused", "");
    let dir = temp_dir("exec-hang");
    // acct-0:1 hangs, with a background grandchild in its process group.
    let script = r#"v=$(cat)
        if [ "$v" = acct-0:1 ]; then sleep 30 & echo $! >> "$1/pids"; wait; fi
        echo "$v""#;
    let started = std::time::Instant::now();
    let out = consume_with_exec(
        &topic,
        &[
            "--retries",
            "1",
            "--handler-timeout",
            "1s",
            "--on-failure",
            &format!("dlq:{dlq}"),
        ],
        script,
        &dir,
    );
    let took = started.elapsed();
    let line = summary(&out);
    assert!(
        line.contains(&format!(
            "{n} handled (0 skipped, 1 dead-lettered), 1 failed, 1 retried"
        )),
        "{line}"
    );
    // Two attempts of 1 s each, not 30 s.
    assert!(took.as_secs() < 25, "took {took:?}");

    // Every other message is done, acct-0's later ones after the hung one.
    let expected: BTreeSet<String> = (0..3)
        .flat_map(|seq| (0..4).map(move |k| format!("acct-{k}:{seq}")))
        .filter(|v| v != "acct-0:1")
        .collect();
    assert_each_once_in_key_order(&out.stdout, &expected);

    let dead = by_value(read_partition(&dlq, 0));
    assert_eq!(dead.keys().collect::<Vec<_>>(), ["acct-0:1"], "{dead:?}");
    let r = &dead["acct-0:1"];
    assert_eq!(header(r, HEADER_ATTEMPTS).as_deref(), Some("2"));
    assert_eq!(header(r, HEADER_EXIT_CODE), None, "killed: no exit code");
    let error = header(r, HEADER_ERROR).unwrap();
    assert!(error.contains("timed out after 1s"), "{error}");

    // Both attempts' grandchildren were killed with their process group.
    let pids = std::fs::read_to_string(dir.join("pids")).unwrap();
    let pids: Vec<&str> = pids.lines().collect();
    assert_eq!(pids.len(), 2, "{pids:?}");
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit(')').next().unwrap_or("").trim_start();
        assert!(
            stat.is_empty() || state.starts_with('Z'),
            "grandchild {pid} still runs: {stat}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
