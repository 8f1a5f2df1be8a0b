//! `--handler pipe` against the local broker: the README's Python (asyncio)
//! and Node handlers handle every message with per-key order, and a process
//! that crashes, writes garbage, names an unknown id, hangs or answers
//! "fail" is dealt with as documented (tests/peers/pipe_faulty.py checks the
//! promises from inside: inflight bound, distinct keys outstanding).

mod common;

use std::path::PathBuf;
use std::process::Output;

use common::sequences::{Tally, keyed_input};
use common::{bootstrap, consumer, producer, require_broker, run_with_input, unique};

const KEYS: usize = 12;

/// A topic of `partitions` partitions holding `lines` keyed lines
/// (`k<i % KEYS>` → `k<i % KEYS>:<i / KEYS>`).
fn topic_with(lines: usize, partitions: u32) -> String {
    let topic = unique("pipe");
    let mut cmd = producer();
    cmd.args([
        &bootstrap(),
        &topic,
        "--key-separator",
        "|",
        "--create-topic",
    ])
    .args(["--partitions", &partitions.to_string()]);
    let out = run_with_input(cmd, keyed_input(0..lines, KEYS).as_bytes());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    topic
}

/// Runs the consumer over the whole topic with `--handler pipe`, `flags`,
/// and `command` after `--`.
fn consume(topic: &str, flags: &[&str], env: &[(&str, String)], command: &[&str]) -> Output {
    let mut cmd = consumer();
    cmd.args([&bootstrap(), topic, &unique("pipe-group")])
        .args(["--partitions", "all", "--from", "earliest", "--exit-at-end"])
        .args(["--stats-interval", "0", "--handler", "pipe"])
        .args(flags)
        .arg("--")
        .args(command)
        .env("RUST_LOG", "warn,mykafkams=info");
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_with_input(cmd, b"")
}

/// What the handler processes wrote on stderr, as our log shows it:
/// `pipe[PID]: TEXT`.
fn pipe_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter_map(|l| {
            let at = l.find("pipe[")?;
            let rest = &l[at..];
            Some(rest[rest.find("]: ")? + 3..].to_string())
        })
        .collect()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn example(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("examples/pipe")
        .join(name)
        .display()
        .to_string()
}

fn faulty() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/peers/pipe_faulty.py")
        .display()
        .to_string()
}

/// Checks the README example's log (`KEY VALUE` per message) covers every
/// line, each key in order.
fn check_example(program: &str, script: &str) {
    require_broker();
    let lines = 600;
    let topic = topic_with(lines, 3);
    let out = consume(
        &topic,
        &["--pipe-processes", "2", "--pipe-inflight", "6"],
        &[],
        &[program, &example(script)],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let handled = pipe_lines(&out);
    let values = handled.iter().filter_map(|l| l.split(' ').nth(1));
    let tally = Tally::of(values, lines, KEYS);
    assert!(tally.is_complete_in_order(), "{tally:?}\n{}", stderr(&out));
}

#[test]
fn the_python_asyncio_example_handles_every_message_in_key_order() {
    check_example("python3", "handler.py");
}

#[test]
fn the_node_example_handles_every_message_in_key_order() {
    check_example("node", "handler.js");
}

/// Runs pipe_faulty.py with `fault` over `lines` lines; returns the run and
/// the values it handled, in order, after checking it saw no broken promise.
fn run_faulty(lines: usize, fault: &str, flags: &[&str]) -> (Output, Vec<(String, u32)>) {
    require_broker();
    let topic = topic_with(lines, 3);
    let mark = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{topic}.mark"));
    let finished = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{topic}.log"));
    let inflight = "4";
    // 2 processes x 4: while one is restarting, 8 messages compete for the
    // other's 4 places, so the handler's own bound is exercised.
    let mut all = vec!["--pipe-processes", "2", "--pipe-inflight", inflight];
    all.extend_from_slice(flags);
    let env = [
        ("PIPE_FAULT", fault.to_string()),
        ("PIPE_MARK", mark.display().to_string()),
        ("PIPE_LOG", finished.display().to_string()),
        ("PIPE_INFLIGHT", inflight.to_string()),
    ];
    let out = consume(&topic, &all, &env, &["python3", &faulty()]);
    let log = pipe_lines(&out);
    let violations: Vec<&String> = log.iter().filter(|l| l.contains("VIOLATION")).collect();
    assert!(violations.is_empty(), "{violations:?}");
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    let handled = std::fs::read_to_string(&finished)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.strip_prefix("handled ")?.split(' ');
            let (_key, value, attempt) = (f.next()?, f.next()?, f.next()?);
            Some((
                value.to_string(),
                attempt.strip_prefix("attempt=")?.parse().ok()?,
            ))
        })
        .collect();
    let _ = std::fs::remove_file(mark);
    let _ = std::fs::remove_file(finished);
    (out, handled)
}

fn assert_complete(lines: usize, handled: &[(String, u32)], out: &Output) {
    let tally = Tally::of(handled.iter().map(|(v, _)| v.as_str()), lines, KEYS);
    assert!(tally.is_complete_in_order(), "{tally:?}\n{}", stderr(out));
}

#[test]
fn a_process_that_exits_is_restarted_and_its_messages_retried() {
    let lines = 400;
    let (out, handled) = run_faulty(lines, "crash:50", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let log = stderr(&out);
    assert!(log.contains("it exited (exit status: 3)"), "{log}");
    assert!(log.contains("starting a new one in"), "{log}");
    assert_complete(lines, &handled, &out);
    assert!(
        handled.iter().any(|(_, a)| *a > 1),
        "no message was retried"
    );
}

#[test]
fn a_line_that_is_not_json_restarts_the_process() {
    let lines = 300;
    let (out, handled) = run_faulty(lines, "garbage:30", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("not JSON"), "{}", stderr(&out));
    assert_complete(lines, &handled, &out);
}

#[test]
fn an_answer_naming_an_unknown_id_restarts_the_process() {
    let lines = 300;
    let (out, handled) = run_faulty(lines, "unknown:30", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("answered id 1000000000000, which it was not given"),
        "{}",
        stderr(&out)
    );
    assert_complete(lines, &handled, &out);
}

#[test]
fn a_message_unanswered_past_the_handler_timeout_fails_and_is_retried() {
    let lines = 240;
    let hung = "k5:7";
    let (out, handled) = run_faulty(lines, &format!("hang:{hung}"), &["--handler-timeout", "1s"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no answer for") && stderr(&out).contains("within 1s"),
        "{}",
        stderr(&out)
    );
    assert_complete(lines, &handled, &out);
    let attempts: Vec<u32> = handled
        .iter()
        .filter(|(v, _)| v == hung)
        .map(|(_, a)| *a)
        .collect();
    assert_eq!(
        attempts,
        [2],
        "the hung message is handled once, on its second attempt"
    );
}

#[test]
fn a_fail_answer_skips_the_retries_and_goes_to_the_failure_policy() {
    let lines = 240;
    let bad = "k3:4";
    let (out, handled) = run_faulty(lines, &format!("fail:{bad}"), &["--on-failure", "skip"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let log = stderr(&out);
    assert!(log.contains("(1 skipped"), "{log}");
    assert!(
        log.contains(" 0 retried"),
        "a fail answer was retried: {log}"
    );
    assert!(log.contains(&format!("{bad} is bad")), "{log}");
    assert!(!handled.iter().any(|(v, _)| v == bad));
    assert_eq!(handled.len(), lines - 1, "{}", stderr(&out));
}

#[test]
fn a_command_that_cannot_start_is_one_usage_line() {
    let addr = require_broker();
    let out = consumer()
        .args([
            &addr,
            "any-topic",
            "g",
            "--handler",
            "pipe",
            "--",
            "/nonexistent/handler",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let text = stderr(&out);
    assert!(
        text.contains("cannot start pipe handler '/nonexistent/handler'"),
        "{text}"
    );
    assert_eq!(
        text.lines().filter(|l| l.starts_with("error:")).count(),
        1,
        "{text}"
    );
}
