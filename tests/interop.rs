//! Interoperability with Kafka's own Java clients on the real broker.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use common::segments::{storage_problems, stored_batches};
use common::sequences::{Record, Tally, value_of};
use common::*;

/// Reads partition 0 of `topic` to its end with a fresh group (failing the
/// test after 60 s: a consumer that never reaches the end must not hang CI);
/// asserts exit 0 and returns stdout and stderr.
fn read_to_end(addr: &str, topic: &str) -> (String, String) {
    let mut cmd = consumer();
    cmd.args([
        addr,
        topic,
        "0",
        &unique("g"),
        "--exit-at-end",
        "--stats-interval",
        "0",
    ]);
    let out = output_within(cmd, 60);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    (String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
}

#[test]
fn a_topic_written_by_a_java_transactional_producer_is_read_to_its_end() {
    let addr = require_broker();
    let topic = unique("txn");
    produce_lines(&topic, 1, "k", "");
    // Kafka's ProducerPerformance in transactional mode: 500 records in
    // transactions, each closed by a commit marker (a control batch), so the
    // log ends in a marker that carries no data record.
    kafka_tool(
        "producer-perf-test",
        &[
            "--topic",
            &topic,
            "--num-records",
            "500",
            "--record-size",
            "20",
            "--throughput",
            "-1",
            "--transactional-id",
            &unique("tx"),
            "--transaction-duration-ms",
            "50",
            "--producer-props",
            &format!("bootstrap.servers={addr}"),
        ],
    );
    let (stdout, stderr) = read_to_end(&addr, &topic);
    assert_eq!(stdout.lines().count(), 500, "{stderr}");
    // Markers take offsets too: the commit is the log end, past the last record.
    let end = end_offsets(&topic)[0].1;
    assert!(end > 500, "markers add offsets: end {end}");
    assert_eq!(committed_from_summary(&stderr).get(&0), Some(&end));
}

#[test]
fn records_of_aborted_transactions_are_never_delivered() {
    let addr = require_broker();
    let input = unique("txn-in");
    let output = unique("txn-out");
    let lines: String = (0..300).map(|i| format!("line-{i}\n")).collect();
    produce_lines(&input, 1, "k", &lines);
    kafka_tool(
        "topics",
        &[
            "--bootstrap-server",
            &addr,
            "--create",
            "--topic",
            &output,
            "--partitions",
            "1",
        ],
    );
    // Kafka's TransactionalMessageCopier copies the input in transactions of
    // 20 and, with random aborts, aborts about a third of them (and copies
    // those records again): the output log holds every record once committed,
    // plus aborted copies that a read-committed reader must skip.
    kafka_tool(
        "transactional-message-copier",
        &[
            "--broker-list",
            &addr,
            "--input-topic",
            &input,
            "--input-partition",
            "0",
            "--output-topic",
            &output,
            "--transactional-id",
            &unique("copier"),
            "--consumer-group",
            &unique("copier-g"),
            "--transaction-size",
            "20",
            "--enable-random-aborts",
        ],
    );
    let (stdout, stderr) = read_to_end(&addr, &output);
    let mut got: Vec<&str> = stdout.lines().collect();
    assert_eq!(got.len(), 300, "each record exactly once: {stderr}");
    got.sort_unstable();
    got.dedup();
    assert_eq!(got.len(), 300, "no record twice");
    // 300 records and 15 commit markers; anything beyond is aborted data.
    let end = end_offsets(&output)[0].1;
    assert_eq!(committed_from_summary(&stderr).get(&0), Some(&end));
    eprintln!(
        "output log end {end}: {} offsets of aborted transactions",
        end - 315
    );
}

/// Every codec of Kafka's record batches, named as Kafka and our producer name them.
const CODECS: [&str; 5] = ["none", "gzip", "snappy", "lz4", "zstd"];

/// The codecs that compress in blocks: lz4 (frames of 64 KiB blocks) and
/// snappy (xerial's stream of 32 KiB blocks).
const BLOCK_CODECS: [&str; 2] = ["lz4", "snappy"];

/// One topic of a codec test: written with `codec`, holding `lines` keyed
/// lines of `keys` keys, line `i` under key `k<i % keys>` with a value that
/// begins `<tag>/k<i % keys>:<i / keys>`, so each key's values count 0, 1,
/// 2, ... and name their topic (Java's console consumer reads several topics
/// at once but does not print the topic).
struct Run {
    tag: String,
    codec: &'static str,
    topic: String,
    partitions: i32,
    lines: usize,
    keys: usize,
    /// Values of 50 to 140 KB ([`big_value`]) rather than the short `<tag>/k<n>:<seq>`.
    big: bool,
}

impl Run {
    /// The topics of one test, named `<prefix>-<tag>`: per codec 3,000 short
    /// lines of 30 keys in 3 partitions; per block codec (`big-lz4`,
    /// `big-snappy`) 40 big values of 4 keys in one partition, batched about
    /// five to a batch, so each batch spans several blocks.
    fn all(prefix: &str) -> Vec<Run> {
        let short = CODECS
            .iter()
            .map(|c| (c.to_string(), *c, 3, 3000, 30, false));
        let big = BLOCK_CODECS
            .iter()
            .map(|c| (format!("big-{c}"), *c, 1, 40, 4, true));
        short
            .chain(big)
            .map(|(tag, codec, partitions, lines, keys, big)| Run {
                topic: format!("{prefix}-{tag}"),
                tag,
                codec,
                partitions,
                lines,
                keys,
                big,
            })
            .collect()
    }

    /// The value of line `i`.
    fn value(&self, i: usize) -> String {
        if self.big {
            big_value(&self.tag, i, self.keys)
        } else {
            format!("{}/{}", self.tag, value_of(i, self.keys))
        }
    }

    /// The input: `KEY|VALUE` lines.
    fn input(&self) -> String {
        (0..self.lines)
            .map(|i| format!("k{}|{}\n", i % self.keys, self.value(i)))
            .collect()
    }
}

/// The value of line `i` of a big run: `<tag>/k<n>:<seq>:`, then for most
/// lines about 50 KB, text that compresses well and pseudo-random printable
/// characters that lz4 and snappy cannot shrink; every fourth line is 140 KB
/// of those characters alone, so some 64 KiB lz4 blocks are stored raw (the
/// frame's uncompressed-block flag).
fn big_value(tag: &str, i: usize, keys: usize) -> String {
    let mut v = format!("{tag}/{}:", value_of(i, keys));
    let (text, len) = if i % 4 == 3 {
        (0, 140_000)
    } else {
        (25_000, 50_000)
    };
    while v.len() < text {
        v.push_str(&format!("line {i} of the big-value run, "));
    }
    let mut x = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        for b in x.to_le_bytes() {
            // '!'..='~' but '|', the key separator.
            let c = 33 + b % 94;
            v.push(if c == b'|' { '!' } else { c as char });
        }
    }
    v
}

/// The smallest big value, in bytes.
const BIG_VALUE_MIN: i64 = 50_000;

/// Runs our producer on the run's input, creating its topic.
fn our_produce(run: &Run) {
    let mut cmd = producer();
    cmd.args([&bootstrap(), &run.topic, "--key-separator", "|"])
        .args(["--compression", run.codec, "--create-topic", "--partitions"])
        .arg(run.partitions.to_string());
    let out = run_with_input(cmd, run.input().as_bytes());
    assert!(
        out.status.success(),
        "producer --compression {} failed: {}",
        run.codec,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes the run's input with Kafka's console producer, after creating its
/// topic (with our producer: no JVM). Batches of up to 256 KiB for big runs,
/// as ours makes them.
///
/// The codec goes in `--compression-codec`: the console producer sets
/// compression.type from that flag (default none) after reading
/// `--producer-property`, so `--producer-property compression.type=lz4` would
/// silently write uncompressed batches (the stored-codec check catches it).
fn java_produce(addr: &str, run: &Run) {
    let mut create = producer();
    create
        .args([addr, &run.topic, "k", "--create-topic", "--partitions"])
        .arg(run.partitions.to_string());
    let out = run_with_input(create, b"");
    assert!(out.status.success(), "creating {}: {out:?}", run.topic);

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("docker/kafka-local.sh");
    let mut cmd = Command::new("bash");
    cmd.arg(script)
        .args(["tool", "console-producer", "--bootstrap-server", addr])
        .args(["--topic", &run.topic, "--compression-codec", run.codec])
        .args(["--property", "parse.key=true"])
        .args(["--property", "key.separator=|"]);
    let props: &[&str] = if run.big {
        &["batch.size=262144", "linger.ms=200"]
    } else {
        &["linger.ms=50"]
    };
    for p in props {
        cmd.args(["--producer-property", p]);
    }
    let out = run_with_input(cmd, run.input().as_bytes());
    assert!(
        out.status.success(),
        "console producer ({}) failed: {}",
        run.codec,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A record as a consumer delivered it: partition, key, value.
type Delivered = (i32, String, String);

/// Reads `expected` records from the beginning of the topics matching the
/// regex `include` with Kafka's console consumer (read-committed, printing
/// partition and key); returns them in the order it printed them, and its
/// stderr. It stops after `expected` records, or after 30 s without one
/// (then the test sees fewer); a consumer that hangs fails the test after 90 s.
fn java_consume(addr: &str, include: &str, expected: usize) -> (Vec<Delivered>, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("docker/kafka-local.sh");
    let mut cmd = Command::new("bash");
    cmd.arg(script)
        .args(["tool", "console-consumer", "--bootstrap-server", addr])
        .args(["--include", include, "--from-beginning"])
        .args(["--property", "print.key=true"])
        .args(["--property", "print.partition=true"])
        .args(["--consumer-property", "isolation.level=read_committed"])
        .args(["--max-messages", &expected.to_string()])
        .args(["--timeout-ms", "30000"]);
    let out = output_within(cmd, 90);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let records = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let parse = || {
                let (p, rest) = l.strip_prefix("Partition:")?.split_once('\t')?;
                let (key, value) = rest.split_once('\t')?;
                Some((p.parse().ok()?, key.to_string(), value.to_string()))
            };
            parse().unwrap_or_else(|| {
                let shown: String = l.chars().take(200).collect();
                panic!("not a console consumer record: {shown:?}\n{stderr}")
            })
        })
        .collect();
    (records, stderr)
}

/// Reads every partition of `topic` from the start to its end with our
/// consumer (no group membership); returns the records in the order it
/// delivered them, and its stderr. Fails the test after 60 s.
fn our_consume(addr: &str, topic: &str) -> (Vec<Delivered>, String) {
    let mut cmd = consumer();
    cmd.args([addr, topic, &unique("g")])
        .args(["--partitions", "all", "--from", "earliest", "--exit-at-end"])
        .args(["--format", "text", "--stats-interval", "0"]);
    let out = output_within(cmd, 60);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "consumer of {topic}: {stderr}");
    let records = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let r = Record::parse(l).unwrap_or_else(|| panic!("not a text record: {l:?}"));
            (r.partition, r.key, r.value)
        })
        .collect();
    (records, stderr)
}

/// What is wrong with the `records` (in delivery order) of `run`: a line
/// missing, repeated or out of its key's order, a value under another key,
/// a key in two partitions, a big value not as written.
fn delivery_problems<'a>(
    run: &Run,
    records: impl IntoIterator<Item = &'a Delivered>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let mut partition_of: HashMap<&str, i32> = HashMap::new();
    // `k<n>:<seq>` of each value, for the tally.
    let mut seqs = Vec::new();
    for (partition, key, value) in records {
        let Some(rest) = value.strip_prefix(&format!("{}/", run.tag)) else {
            continue; // another run's
        };
        let seq: String = rest.splitn(3, ':').take(2).collect::<Vec<_>>().join(":");
        if !seq.starts_with(&format!("{key}:")) {
            problems.push(format!("{seq} under key {key:?}"));
        }
        let first = *partition_of.entry(key.as_str()).or_insert(*partition);
        if first != *partition {
            problems.push(format!("key {key} in partitions {first} and {partition}"));
        }
        let line = seq.split_once(':').and_then(|(k, s)| {
            let k: usize = k.strip_prefix('k')?.parse().ok()?;
            Some(s.parse::<usize>().ok()? * run.keys + k)
        });
        if line.is_none_or(|i| *value != run.value(i)) {
            let shown: String = value.chars().take(60).collect();
            problems.push(format!(
                "{shown:?}... ({} bytes) is not the value written",
                value.len()
            ));
        }
        seqs.push(seq);
    }
    problems.truncate(8);
    let tally = Tally::of(seqs.iter().map(String::as_str), run.lines, run.keys);
    if !tally.exactly_once_in_order() {
        problems.insert(0, format!("{tally:?}"));
    }
    problems
}

/// Asserts that `reader` delivered every run completely, each line once and
/// each key in order.
fn assert_delivered(runs: &[Run], reader: &str, records: &[Delivered], stderr: &str) {
    let expected: usize = runs.iter().map(|r| r.lines).sum();
    let problems: Vec<String> = runs
        .iter()
        .flat_map(|run| {
            delivery_problems(run, records)
                .into_iter()
                .map(move |p| format!("{}: {p}", run.tag))
        })
        .collect();
    assert!(
        problems.is_empty(),
        "{reader} delivered {} records of {expected}:\n{}\n--- its stderr:\n{stderr}",
        records.len(),
        problems.join("\n")
    );
}

/// Asserts, with one kafka-dump-log of every run's segments, that the
/// broker stored each run with its codec, valid CRCs and exactly its lines
/// (none lost, none twice); and that big runs have batches of over 64 KiB of
/// values, so lz4 frames and xerial streams of several blocks.
fn assert_stored(runs: &[Run]) {
    let topics: Vec<(&str, i32)> = runs
        .iter()
        .map(|r| (r.topic.as_str(), r.partitions))
        .collect();
    let stored = stored_batches(&topics);
    let mut problems = Vec::new();
    for run in runs {
        let batches = &stored[&run.topic];
        let mut p = storage_problems(batches, run.codec, run.lines as i64);
        let most = batches.iter().map(|b| b.count).max().unwrap_or(0);
        if run.big && most * BIG_VALUE_MIN <= 64 * 1024 {
            p.push(format!(
                "no batch of over 64 KiB: at most {most} values of 50 KB or more"
            ));
        }
        problems.extend(p.into_iter().map(|p| format!("{}: {p}", run.tag)));
    }
    assert!(
        problems.is_empty(),
        "what the broker stored (kafka-dump-log):\n{}",
        problems.join("\n")
    );
}

#[test]
fn every_codec_we_write_is_read_by_javas_consumer_in_order() {
    let addr = require_broker();
    let prefix = unique("ours");
    let runs = Run::all(&prefix);
    for run in &runs {
        our_produce(run);
    }
    // The broker keeps each batch as the producer compressed it: a batch
    // sent uncompressed (or with another codec) fails here, whatever the
    // consumers make of it.
    assert_stored(&runs);
    // One console consumer reads every topic (one JVM, not seven).
    let expected = runs.iter().map(|r| r.lines).sum();
    let (records, stderr) = java_consume(&addr, &format!("{prefix}-.*"), expected);
    assert_delivered(&runs, "Java's console consumer", &records, &stderr);
}

#[test]
fn every_codec_java_writes_is_read_by_ours() {
    // Fetch decodes every codec in pure Rust (no C codec in any build), as
    // Java's producer writes them: gzip and zstd at its levels, lz4 frames
    // of 64 KiB blocks, snappy in xerial's framing.
    let addr = require_broker();
    let runs = Run::all(&unique("java"));
    std::thread::scope(|s| {
        for run in &runs {
            let addr = &addr;
            s.spawn(move || java_produce(addr, run));
        }
    });
    assert_stored(&runs);
    let (mut records, mut stderr) = (Vec::new(), String::new());
    for run in &runs {
        let (r, e) = our_consume(&addr, &run.topic);
        records.extend(r);
        stderr.push_str(&e);
    }
    assert_delivered(&runs, "our consumer", &records, &stderr);
}
