//! Fetching against a real broker: one fetch connection per broker however
//! many partitions are read, and the byte limits (per partition, per
//! request, in memory) honoured while a record batch larger than all of them
//! still gets through.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::processes::Running;
use common::*;
use mykafkams::cluster::ClusterConfig;
use mykafkams::fetcher::{FetchConfig, PartitionFetcher, Reset};

/// `count` lines `key-<i % keys>|<i>:<padding to width>`.
fn input(count: usize, keys: usize, width: usize) -> String {
    (0..count)
        .map(|i| format!("key-{}|{:0>width$}\n", i % keys, i))
        .collect()
}

/// Produces `lines` (key|value) to a new topic of `partitions` partitions.
fn produce_keyed(topic: &str, partitions: i32, lines: &str) {
    let mut cmd = producer();
    cmd.args([
        &bootstrap(),
        topic,
        "--key-separator",
        "|",
        "--create-topic",
    ])
    .args(["--partitions", &partitions.to_string()]);
    let out = run_with_input(cmd, lines.as_bytes());
    assert!(
        out.status.success(),
        "producer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The TCP connections `pid` holds to `port`, established.
fn connections_to(pid: u32, port: u16) -> usize {
    let mut inodes = HashSet::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
    {
        if let Ok(target) = std::fs::read_link(fd.path()) {
            let t = target.to_string_lossy().to_string();
            if let Some(inode) = t.strip_prefix("socket:[").and_then(|s| s.strip_suffix(']')) {
                inodes.insert(inode.to_string());
            }
        }
    }
    let mut n = 0;
    for table in ["tcp", "tcp6"] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() < 10 {
                continue;
            }
            let remote_port = cols[2]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            // State 01 is ESTABLISHED.
            if remote_port == Some(port) && cols[3] == "01" && inodes.contains(cols[9]) {
                n += 1;
            }
        }
    }
    n
}

#[test]
fn one_consumer_reading_24_partitions_fetches_over_one_connection_per_broker() {
    let addr = require_broker();
    let port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();
    let topic = unique("fetch-conns");
    let partitions = 24;
    let count = 4800;
    produce_keyed(&topic, partitions, &input(count, 480, 20));

    let mut child = Running(
        consumer()
            .args([
                "--partitions",
                "all",
                "--from",
                "earliest",
                "--stats-interval",
                "0",
                "--format",
                "value",
                &addr,
                &topic,
                "--group",
                &unique("g-fetch-conns"),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = 0;
    while seen < count {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(_) => seen += 1,
            Err(_) => panic!("only {seen} of {count} messages within 60 s"),
        }
    }
    // Every partition has been fetched (and is long-polled now): count the
    // consumer's connections to the broker. Per-partition fetching held one
    // per partition (24+); now one fetch connection serves them all, next to
    // the group coordinator's and the like.
    let held = connections_to(child.0.id(), port);
    assert!(held >= 1, "the consumer holds no connection to {addr}?");
    assert!(
        held <= 6,
        "{held} connections to the broker for {partitions} partitions: fetching is not per broker"
    );
}

#[test]
fn limits_smaller_than_a_batch_still_deliver_everything_in_order() {
    let addr = require_broker();
    let topic = unique("fetch-limits");
    let count = 3000;
    // 300-byte values in batches of many records: every batch is far larger
    // than the limits below.
    produce_keyed(&topic, 4, &input(count, 40, 300));
    let out = output_within(
        {
            let mut cmd = consumer();
            cmd.args([
                "--partitions",
                "all",
                "--from",
                "earliest",
                "--exit-at-end",
                "--stats-interval",
                "0",
                "--format",
                "text",
                "--max-partition-fetch-bytes",
                "1000",
                "--fetch-max-bytes",
                "2000",
                "--fetch-buffer-bytes",
                "1500",
                &addr,
                &topic,
                "--group",
                &unique("g-fetch-limits"),
            ]);
            cmd
        },
        120,
    );
    assert!(
        out.status.success(),
        "consumer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Text lines: partition, offset, key, value (tab-separated).
    let text = String::from_utf8(out.stdout).unwrap();
    let mut per_partition: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut values = HashSet::new();
    for line in text.lines() {
        let cols: Vec<&str> = line.split('\t').collect();
        assert!(cols.len() >= 4, "unexpected line {line:?}");
        per_partition
            .entry(cols[0].to_string())
            .or_default()
            .push(cols[1].parse().unwrap());
        values.insert(cols[3].to_string());
    }
    assert_eq!(values.len(), count, "every message, once");
    for (p, offsets) in &per_partition {
        let mut sorted = offsets.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(
            sorted.len(),
            offsets.len(),
            "partition {p} delivered an offset twice"
        );
    }
}

#[tokio::test]
async fn the_partition_limit_returns_one_batch_when_a_batch_is_larger() {
    let addr = require_broker();
    let topic = unique("fetch-one-batch");
    let count = 2000;
    let t = topic.clone();
    tokio::task::spawn_blocking(move || produce_keyed(&t, 1, &input(count, 10, 300)))
        .await
        .unwrap();
    let cluster = ClusterConfig::new(vec![addr]);
    let read = |limit: i32| {
        let cluster = cluster.clone();
        let topic = topic.clone();
        async move {
            let cfg = FetchConfig {
                partition_max_bytes: limit,
                max_wait: Duration::from_millis(100),
                ..FetchConfig::default()
            };
            let mut f = PartitionFetcher::new(&cluster, &topic, 0, cfg);
            let start = f.resolve(Reset::Earliest).await.unwrap();
            f.seek(start);
            let mut fetches = Vec::new();
            while f.position() < count as i64 {
                let got = f.next_batch().await.unwrap();
                fetches.push(got.len());
                assert!(fetches.len() < 10_000, "no progress");
            }
            fetches
        }
    };
    // The producer packs the records into a few large batches: a 1000-byte
    // limit gets exactly one of them per fetch.
    let small = read(1000).await;
    let large = read(1024 * 1024).await;
    assert_eq!(small.iter().sum::<usize>(), count);
    assert_eq!(large.iter().sum::<usize>(), count);
    assert!(
        small.iter().all(|&n| n > 0),
        "a batch larger than the limit still comes whole: {small:?}"
    );
    assert!(
        small.len() > large.len(),
        "a 1000-byte limit returns one batch per fetch ({} fetches) where 1 MiB returns many ({} fetches)",
        small.len(),
        large.len()
    );
}
