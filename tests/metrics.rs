//! `--metrics-addr` against the real broker: the `consumer` and `producer`
//! binaries serve Prometheus text over HTTP, and the values they report are
//! the ones we know (messages produced, Kafka's own end offsets).

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{ChildStderr, Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::processes::{Running, fail_with_log};
use common::{
    bootstrap, consumer, end_offsets, produce_sequences, producer, require_broker, unique,
};

/// Reads a child's stderr in a thread: sends the metrics address from the
/// `<tool>: metrics on http://ADDR/metrics` line, returns all of it at the end.
fn watch_stderr(stderr: ChildStderr, tool: &str) -> (mpsc::Receiver<String>, JoinHandle<String>) {
    let (tx, rx) = mpsc::channel();
    let prefix = format!("{tool}: metrics on http://");
    let log = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.strip_prefix(&prefix) {
                let _ = tx.send(rest.trim_end_matches("/metrics").to_string());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    (rx, log)
}

/// Starts `cmd` (stdout discarded, stderr watched) and waits for its metrics
/// address; fails with its log if none comes within 20 s. Returns the
/// running child (stdin as `cmd` set it), the address and the stderr log.
fn start_with_metrics(mut cmd: Command, tool: &str) -> (Running, String, JoinHandle<String>) {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (addr, log) = watch_stderr(child.stderr.take().unwrap(), tool);
    let child = Running(child);
    match addr.recv_timeout(Duration::from_secs(20)) {
        Ok(addr) => (child, addr, log),
        Err(_) => fail_with_log(child, log, "no metrics line on stderr"),
    }
}

/// One HTTP/1.1 request over a plain TcpStream: (status line, body).
fn http_get(addr: &str, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).expect("connecting to the metrics endpoint");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    (head.lines().next().unwrap().to_string(), body.to_string())
}

/// The samples of a scrape: `name{labels}` -> value.
fn scrape(addr: &str) -> BTreeMap<String, f64> {
    let (status, body) = http_get(addr, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (name, v) = l.rsplit_once(' ')?;
            Some((name.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn get(m: &BTreeMap<String, f64>, name: &str) -> f64 {
    *m.get(name)
        .unwrap_or_else(|| panic!("no sample {name} in {m:#?}"))
}

/// Scrapes until `done` holds, or fails the test after `secs` with the last scrape.
fn scrape_until(
    addr: &str,
    secs: u64,
    done: impl Fn(&BTreeMap<String, f64>) -> bool,
) -> BTreeMap<String, f64> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let m = scrape(addr);
        if done(&m) {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "the metrics did not get there within {secs} s: {m:#?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn consumer_metrics_count_what_was_produced_and_commit_to_the_end() {
    require_broker();
    let topic = unique("metrics-consumer");
    let group = unique("metrics-group");
    let n = produce_sequences(&topic, 3, 20, 15);
    let ends = end_offsets(&topic);
    assert_eq!(ends.len(), 3);
    assert_eq!(ends.iter().map(|(_, o)| *o as usize).sum::<usize>(), n);

    let mut cmd = consumer();
    cmd.args([&bootstrap(), &topic, &group])
        .args([
            "--metrics-addr",
            "127.0.0.1:0",
            "--commit-interval",
            "200ms",
        ])
        .args(["--stats-interval", "0"])
        .stdin(Stdio::null());
    let (mut child, addr, log) = start_with_metrics(cmd, "consumer");

    let committed = |p: i32| {
        format!(
            "mykafkams_consumer_partition_committed_offset{{topic=\"{topic}\",partition=\"{p}\"}}"
        )
    };
    let lag =
        |p: i32| format!("mykafkams_consumer_partition_lag{{topic=\"{topic}\",partition=\"{p}\"}}");
    let m = scrape_until(&addr, 60, |m| {
        ends.iter()
            .all(|(p, end)| m.get(&committed(*p)) == Some(&(*end as f64)))
    });
    assert_eq!(
        get(&m, "mykafkams_consumer_messages_handled_total"),
        n as f64
    );
    assert_eq!(
        get(&m, "mykafkams_consumer_messages_dispatched_total"),
        n as f64
    );
    assert_eq!(
        get(&m, "mykafkams_consumer_handler_duration_seconds_count"),
        n as f64,
        "one timing per handled message"
    );
    assert_eq!(
        get(
            &m,
            "mykafkams_consumer_handler_duration_seconds_bucket{le=\"+Inf\"}"
        ),
        n as f64
    );
    for (p, _) in &ends {
        assert_eq!(get(&m, &lag(*p)), 0.0, "partition {p}");
    }
    assert_eq!(get(&m, "mykafkams_consumer_messages_failed_total"), 0.0);
    assert_eq!(get(&m, "mykafkams_consumer_messages_in_flight"), 0.0);
    assert_eq!(get(&m, "mykafkams_consumer_assigned_partitions"), 3.0);
    assert!(
        get(&m, "mykafkams_consumer_rebalances_total") >= 1.0,
        "{m:#?}"
    );
    assert!(get(&m, "mykafkams_consumer_commit_duration_seconds_count") >= 1.0);
    // Everything is finished: nothing waits in any scheduler queue.
    assert_eq!(get(&m, "mykafkams_consumer_queued_messages"), 0.0);
    assert_eq!(get(&m, "mykafkams_consumer_ready_keys"), 0.0);
    for (k, v) in m
        .iter()
        .filter(|(k, _)| k.starts_with("mykafkams_consumer_queue_depth{"))
    {
        assert_eq!(*v, 0.0, "{k}");
    }
    let (status, _) = http_get(&addr, "/");
    assert_eq!(status, "HTTP/1.1 404 Not Found");

    common::signal(&child.0, libc::SIGTERM);
    let status = child.wait_within(30);
    let log = log.join().unwrap();
    assert!(status.success(), "{status}: {log}");
}

#[test]
fn producer_metrics_count_every_line_sent_and_acknowledged() {
    require_broker();
    let topic = unique("metrics-producer");
    let lines = 500;
    let mut cmd = producer();
    cmd.args([
        &bootstrap(),
        &topic,
        "k",
        "--create-topic",
        "--partitions",
        "2",
    ])
    .args(["--metrics-addr", "127.0.0.1:0"])
    .stdin(Stdio::piped());
    let (mut child, addr, log) = start_with_metrics(cmd, "producer");
    let mut stdin = child.0.stdin.take().unwrap();
    let input: String = (0..lines).map(|i| format!("line {i}\n")).collect();
    stdin.write_all(input.as_bytes()).unwrap();
    stdin.flush().unwrap();
    // The input stays open: the producer is still running when we look.
    let m = scrape_until(&addr, 60, |m| {
        m.get("mykafkams_producer_records_acknowledged_total") == Some(&(lines as f64))
    });
    assert_eq!(
        get(&m, "mykafkams_producer_records_sent_total"),
        lines as f64
    );
    assert_eq!(get(&m, "mykafkams_producer_records_failed_total"), 0.0);
    assert!(get(&m, "mykafkams_producer_request_duration_seconds_count") >= 1.0);
    assert!(get(&m, "mykafkams_producer_request_duration_seconds_sum") > 0.0);
    drop(stdin);
    let status = child.wait_within(30);
    let log = log.join().unwrap();
    assert!(status.success(), "{status}: {log}");
    assert!(log.contains(&format!("{lines} acknowledged")), "{log}");
}

#[test]
fn a_metrics_port_in_use_is_one_line_and_exit_2() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    for (mut cmd, args) in [
        (consumer(), vec!["127.0.0.1:9092", "t", "g"]),
        (producer(), vec!["127.0.0.1:9092", "t", "k"]),
    ] {
        let out = cmd
            .args(&args)
            .args(["--metrics-addr", &addr])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains(&addr) && stderr.contains("cannot listen"),
            "{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let out = consumer()
        .args(["127.0.0.1:9092", "t", "g", "--metrics-addr", "no-port"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
