//! Issue 9, bad input to the producer: each case gives one clear line, a
//! documented exit code, and no line acknowledged twice or silently dropped
//! (checked against the `--report` file and the log itself).

mod common;

use std::path::PathBuf;
use std::process::Output;

use common::sequences::{Ack, Tally, keyed_input, read_log, read_report};
use common::{producer, require_broker, run_with_input, unique};

fn scratch(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The one `error:` line of a failed run.
fn error_line(out: &Output) -> String {
    let text = stderr(out);
    assert!(!text.contains("panicked"), "{text}");
    let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "want one error line, got: {text}");
    errors[0].to_string()
}

#[test]
fn acks_0_or_1_with_idempotence_is_a_usage_error_before_any_connection() {
    // A closed port: the conflict must be reported before the network.
    let addr = format!("127.0.0.1:{}", common::closed_port());
    for acks in ["0", "1"] {
        for how in [
            vec!["--acks", acks, "--idempotence", "true"],
            vec!["-X", "enable.idempotence=true", "-X"],
        ] {
            let mut args = how.clone();
            if args[0] == "-X" {
                args.push(if acks == "0" { "acks=0" } else { "acks=1" });
            }
            let mut cmd = producer();
            cmd.args(&args).args([&addr, "t", "k"]);
            let out = run_with_input(cmd, b"x\n");
            assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
            let line = error_line(&out);
            assert!(
                line.contains(&format!("acks={acks}")) && line.contains("idempotence"),
                "{line}"
            );
        }
    }
}

#[test]
fn acks_0_writes_without_offsets_and_turns_idempotence_off_by_itself() {
    let addr = require_broker();
    let topic = unique("acks0");
    common::create_topic_with(&topic, &[]);
    let report = scratch(&format!("{topic}.report"));
    let mut cmd = producer();
    cmd.args(["--acks", "0", "--report"])
        .arg(&report)
        .args([&addr, &topic, "k"]);
    let out = run_with_input(cmd, b"one\ntwo\nthree\n");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let acks = read_report(&report);
    assert_eq!(
        acks.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert!(acks.iter().all(|(_, a)| *a == Ack::At(0, -1)), "{acks:?}");
    let log: Vec<String> = read_log(&addr, &topic)
        .into_iter()
        .map(|r| r.value)
        .collect();
    assert_eq!(log, ["one", "two", "three"]);
    let _ = std::fs::remove_file(report);
}

#[test]
fn a_record_over_max_message_bytes_names_the_limit_and_nothing_after_it_is_sent() {
    let addr = require_broker();
    for compression in ["none", "gzip"] {
        let topic = unique("too-large");
        common::create_topic_with(&topic, &["max.message.bytes=20000"]);
        let report = scratch(&format!("{topic}.report"));
        // Incompressible, so gzip cannot bring it under the limit: the
        // broker's own check refuses it then.
        let big: String = (0..30_000u64)
            .map(|i| {
                // splitmix64: 6 random bits per character.
                let mut z = i.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                char::from(b'0' + ((z ^ (z >> 31)) >> 58) as u8)
            })
            .collect();
        let input = format!("first\n{big}\nthird\n");
        let mut cmd = producer();
        cmd.args(["--compression", compression, "--report"])
            .arg(&report)
            .args([&addr, &topic, "k"]);
        let out = run_with_input(cmd, input.as_bytes());
        assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
        let line = error_line(&out);
        assert!(
            line.contains("max.message.bytes") && line.contains("20000"),
            "{compression}: {line}"
        );
        let acks = read_report(&report);
        assert!(
            acks.contains(&(1, Ack::At(0, 0))),
            "{compression}: {acks:?}"
        );
        assert!(
            acks.iter()
                .any(|(n, a)| *n == 2
                    && matches!(a, Ack::Failed(m) if m.contains("max.message.bytes"))),
            "{compression}: {acks:?}"
        );
        // Line 3 is never acknowledged: the producer stops at the line it
        // cannot send rather than write the key's later lines without it.
        assert!(
            !acks
                .iter()
                .any(|(n, a)| *n == 3 && matches!(a, Ack::At(..))),
            "{compression}: {acks:?}"
        );
        let log: Vec<String> = read_log(&addr, &topic)
            .into_iter()
            .map(|r| r.value)
            .collect();
        assert_eq!(log, ["first"], "{compression}");
        let _ = std::fs::remove_file(report);
    }
}

#[test]
fn a_read_error_on_input_is_exit_1_naming_the_line() {
    let addr = require_broker();
    let topic = unique("read-error");
    common::create_topic_with(&topic, &[]);
    // A directory opens, then fails on the first read (EISDIR).
    let out = producer()
        .args(["--input", env!("CARGO_TARGET_TMPDIR"), &addr, &topic, "k"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let line = error_line(&out);
    assert!(
        line.contains("reading input") && line.contains("line 1"),
        "{line}"
    );
}

#[test]
fn input_cut_off_mid_line_sends_the_partial_line_once() {
    let addr = require_broker();
    let topic = unique("cut-off");
    common::create_topic_with(&topic, &[]);
    let report = scratch(&format!("{topic}.report"));
    // The writer dies after a partial line: stdin ends without a newline.
    let mut cmd = producer();
    cmd.args(["--report"])
        .arg(&report)
        .args([&addr, &topic, "k"]);
    let out = run_with_input(cmd, b"a\nb\npartial");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let acks = read_report(&report);
    let mut numbers: Vec<usize> = acks.iter().map(|(n, _)| *n).collect();
    numbers.sort();
    assert_eq!(numbers, [1, 2, 3], "{acks:?}");
    let log: Vec<String> = read_log(&addr, &topic)
        .into_iter()
        .map(|r| r.value)
        .collect();
    assert_eq!(log, ["a", "b", "partial"]);
    let _ = std::fs::remove_file(report);
}

#[test]
fn a_full_buffer_makes_input_wait_and_loses_or_renumbers_nothing() {
    // A 4 KiB buffer holds about 100 of these records: the input loop's
    // no-wait path fails over and over and the waiting path takes over. Each
    // record must still be sent once, numbered once, and keep its key's order.
    let addr = require_broker();
    let topic = unique("full-buffer");
    common::create_topic_with(&topic, &[]);
    let report = scratch(&format!("{topic}.report"));
    let (lines, keys) = (20_000, 16);
    let mut cmd = producer();
    cmd.args([
        "--buffer-memory",
        "4096",
        "--key-separator",
        "|",
        "--report",
    ])
    .arg(&report)
    .args([&addr, &topic]);
    let out = run_with_input(cmd, keyed_input(0..lines, keys).as_bytes());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mut numbers: Vec<usize> = read_report(&report).iter().map(|(n, _)| *n).collect();
    numbers.sort();
    assert_eq!(numbers, (1..=lines).collect::<Vec<_>>(), "report numbers");
    let log = read_log(&addr, &topic);
    let tally = Tally::of(log.iter().map(|r| r.value.as_str()), lines, keys);
    assert!(tally.exactly_once_in_order(), "{tally:?}");
    let _ = std::fs::remove_file(report);
}
