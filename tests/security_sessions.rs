//! Long-lived connections on the secure node's SASL_PLAINTEXT listener,
//! whose sessions last 5 s (KIP-368): members and the producer must
//! re-authenticate (and re-read an OAUTHBEARER token file) before each
//! session expires, without losing or repeating a message. Secrets are
//! checked in every output, as in `security.rs`.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::secure::*;
use common::{consumer, producer, unique};

fn sasl_plaintext_scram() -> Vec<(&'static str, String)> {
    vec![
        ("bootstrap.servers", sasl_plaintext()),
        ("security.protocol", "SASL_PLAINTEXT".into()),
        ("sasl.mechanism", "SCRAM-SHA-256".into()),
        ("sasl.username", "scram256".into()),
        ("sasl.password", "scram256-secret".into()),
    ]
}

/// Runs a group member on the SASL_PLAINTEXT listener (5 s sessions) with
/// `member_props`: it reads 20 messages, then stays connected, heartbeating
/// and long-polling, through more than three session lifetimes (`during`
/// runs at their start), then reads 4 more. Returns its debug log, after
/// checking it read everything in order and exited cleanly.
fn member_through_sessions(member_props: &[(&str, &str)], during: impl FnOnce()) -> String {
    let producer_props = sasl_plaintext_scram();
    let producer_props: Vec<(&str, &str)> = producer_props
        .iter()
        .map(|(k, v)| (*k, v.as_str()))
        .collect();
    let topic = unique("sec-reauth");
    produce_keyed(&producer_props, &topic, 4, 5, &[]);

    let mut cmd = consumer();
    cmd.args(x(member_props))
        .args([
            &topic,
            &unique("sec-reauth-g"),
            "--format",
            "json",
            "--stats-interval",
            "0",
        ])
        .env("RUST_LOG", "mykafkams=debug")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    // Reader threads keep both pipes drained while the member runs.
    let stdout = child.stdout.take().unwrap();
    let stderr_pipe = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let out_reader = std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let err_reader = std::thread::spawn(move || {
        use std::io::Read;
        let mut s = String::new();
        let _ = std::io::BufReader::new(stderr_pipe).read_to_string(&mut s);
        s
    });
    let mut lines = Vec::new();
    let wait_for = |n: usize, lines: &mut Vec<String>| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while lines.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) => lines.push(l),
                Err(_) => panic!("only {} of {n} messages arrived", lines.len()),
            }
        }
    };
    wait_for(20, &mut lines);
    during();
    // More than three 5 s session lifetimes: each connection must
    // re-authenticate several times or be closed by the broker.
    std::thread::sleep(Duration::from_secs(16));
    let mut more = producer();
    more.args(x(&producer_props))
        .args([&topic, "--key-separator", "\t"]);
    let out = run(more, b"k0\tk0:5\nk1\tk1:5\nk2\tk2:5\nk3\tk3:5\n", &[]);
    assert!(out.status.success(), "{:?}", error_lines(&out));
    wait_for(24, &mut lines);
    sigterm(child.id());
    let status = child.wait().unwrap();
    out_reader.join().unwrap();
    let log = err_reader.join().unwrap();
    assert!(status.success(), "{log}");
    for secret in SECRETS {
        assert!(!log.contains(secret), "a secret was printed");
    }
    assert_in_order(lines.join("\n").as_bytes(), 4, 6);
    let reauths = log.matches("re-authenticated (KIP-368)").count();
    assert!(
        reauths >= 3,
        "{reauths} re-authentications in 16 s of 5 s sessions"
    );
    for line in log.lines() {
        assert!(
            !line.contains("WARN") && !line.contains("ERROR"),
            "no connection was lost or retried: {line}"
        );
    }
    log
}

#[test]
fn our_connections_reauthenticate_before_the_session_expires() {
    let props = sasl_plaintext_scram();
    let props: Vec<(&str, &str)> = props.iter().map(|(k, v)| (*k, v.as_str())).collect();
    member_through_sessions(&props, || {});
}

#[test]
fn an_oauthbearer_token_file_is_read_again_when_the_token_expires() {
    // The first token expires 10 s in; the broker's session then ends with
    // it. Re-authentication must read the file again and find the new one
    // (written meanwhile): reusing the old token would be refused.
    let file = std::env::temp_dir().join(unique("rotating-token"));
    let first = unsecured_jwt("oauth-user", 10);
    std::fs::write(&file, &first).unwrap();
    let reference = format!("${{file:{}}}", file.display());
    let props = [
        ("bootstrap.servers", sasl_plaintext()),
        ("security.protocol", "SASL_PLAINTEXT".into()),
        ("sasl.mechanism", "OAUTHBEARER".into()),
        ("sasl.oauthbearer.token", reference),
    ];
    let props: Vec<(&str, &str)> = props.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let second = unsecured_jwt("oauth-user", 3600);
    let log = member_through_sessions(&props, || {
        // Atomically, as a token refresher would (a reader never sees half a file).
        let tmp = file.with_extension("new");
        std::fs::write(&tmp, &second).unwrap();
        std::fs::rename(&tmp, &file).unwrap();
    });
    assert!(
        !log.contains(&first) && !log.contains(&second),
        "a token was printed"
    );
}

#[test]
fn the_producer_outlives_its_sessions_and_writes_each_line_once() {
    // The producer's pipelined connections are retired at 85 % of a 5 s
    // session and replaced by a freshly authenticated one; a connection the
    // broker closes anyway is replaced too. Seven lines over 14 s cross
    // several session lifetimes.
    let props = sasl_plaintext_scram();
    let props: Vec<(&str, &str)> = props.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let topic = unique("sec-slow");
    let mut cmd = producer();
    cmd.args(x(&props))
        .args([&topic, "k", "--create-topic", "--linger-ms", "0"])
        .env("RUST_LOG", "info")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        // Seven lines over 14 s: more than two session lifetimes.
        for i in 0..7 {
            writeln!(stdin, "line{i}").unwrap();
            stdin.flush().unwrap();
            std::thread::sleep(Duration::from_secs(2));
        }
    }
    let out = child.wait_with_output().unwrap();
    let log = stderr(&out);
    assert!(out.status.success(), "{:?}", error_lines(&out));
    assert!(!log.contains("scram256-secret"), "the password was printed");
    assert!(
        log.contains("7 sent, 7 acknowledged, 0 failed"),
        "{}",
        log.lines().last().unwrap_or_default()
    );

    let mut read = consumer();
    read.args(x(&props)).args([
        "--topic",
        &topic,
        "--group",
        &unique("sec-slow-g"),
        "--partitions",
        "all",
        "--exit-at-end",
    ]);
    let out = run(read, b"", &[]);
    assert!(out.status.success(), "{:?}", error_lines(&out));
    let expected: String = (0..7).map(|i| format!("line{i}\n")).collect();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        expected,
        "each line once, in order"
    );
}

fn sigterm(pid: u32) {
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}
