//! Producer and consumer flags end to end: compression and headers survive the
//! round trip, explicit start offsets, and the producer's flush on SIGINT.

mod common;

use std::io::Write;
use std::process::Stdio;

use common::*;

#[test]
fn compressed_messages_with_headers_come_back_as_json() {
    let addr = require_broker();
    for codec in ["gzip", "snappy"] {
        let topic = unique(codec);
        let mut cmd = producer();
        cmd.args([
            &addr,
            &topic,
            "--key-separator",
            "=",
            "--create-topic",
            "--compression",
            codec,
        ])
        .args(["--header", "source=test", "--header", "codec=x"]);
        let out = run_with_input(cmd, "k1=hello \"world\"\nk2=second\n".as_bytes());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );

        let out = consume_ok(&[
            &addr,
            &topic,
            "0",
            "g",
            "--from",
            "earliest",
            "--exit-at-end",
            "--format",
            "json",
        ]);
        let mut rows: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(rows.len(), 2, "{codec}: {rows:?}");
        // k1 and k2 are different keys: they may be handled in either order.
        rows.sort_by_key(|r| r["offset"].as_i64());
        assert_eq!(rows[0]["key"], "k1");
        assert_eq!(rows[0]["value"], "hello \"world\"");
        assert_eq!(rows[0]["offset"], 0);
        assert_eq!(rows[0]["topic"], topic.as_str());
        assert_eq!(rows[0]["headers"]["source"], "test");
        assert_eq!(rows[1]["value"], "second");
        assert!(rows[1]["timestamp"].as_i64().unwrap() > 1_600_000_000_000);
    }
}

#[test]
fn from_offset_and_latest_start_where_asked() {
    let addr = require_broker();
    let topic = unique("from");
    produce_lines(&topic, 1, "k", "m0\nm1\nm2\nm3\n");
    let read = |from: &str| {
        consume_ok(&[
            &addr,
            &topic,
            "0",
            &unique("g"),
            "--from",
            from,
            "--exit-at-end",
        ])
    };
    assert_eq!(read("2"), "m2\nm3\n");
    assert_eq!(read("latest"), "");
    assert_eq!(read("earliest"), "m0\nm1\nm2\nm3\n");
    // An offset outside the log is not trusted (nor committed back): the
    // consumer starts at the --reset position (earliest) with a warning.
    let group = unique("g");
    let out = consumer()
        .args([
            &addr,
            &topic,
            "0",
            &group,
            "--from",
            "1000000",
            "--exit-at-end",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("outside the log"), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "m0\nm1\nm2\nm3\n");
    assert_eq!(describe_group(&group, &topic), vec![(0, 4, 0)]);
    // The default, committed, falls back to --reset for a new group.
    let out = consumer()
        .args([
            &addr,
            &topic,
            "0",
            &unique("g"),
            "--reset",
            "latest",
            "--exit-at-end",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
}

/// Bytes written to a pipe and not yet read by the other end (FIONREAD).
fn unread_in_pipe(stdin: &std::process::ChildStdin) -> i32 {
    use std::os::fd::AsRawFd;
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer we pass.
    let rc = unsafe { libc::ioctl(stdin.as_raw_fd(), libc::FIONREAD, &mut n) };
    assert_eq!(rc, 0, "ioctl(FIONREAD)");
    n
}

#[test]
fn producer_flushes_what_it_read_on_sigint() {
    let addr = require_broker();
    let topic = unique("sigint");
    produce_lines(&topic, 1, "k", "");
    // A one-minute linger: nothing is sent unless the signal flushes it.
    let mut child = producer()
        .args([&addr, &topic, "k", "--linger-ms", "60000"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let input: String = (0..100).map(|i| format!("line {i}\n")).collect();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).unwrap();
    stdin.flush().unwrap();
    // Wait until the producer has taken every byte out of the pipe (stdin
    // stays open, so there is no EOF): from then on the lines are "read".
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while unread_in_pipe(&stdin) > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "producer never read its input"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    signal(&child, libc::SIGINT);
    // stdin stays open: the producer must exit on the signal alone, not on EOF.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("producer did not exit within 20 s of SIGINT with stdin open");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("100 acknowledged"), "{stderr}");
    assert_eq!(end_offsets(&topic), vec![(0, 100)]);
    drop(stdin);
}
