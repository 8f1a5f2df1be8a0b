//! Interoperability with Kafka's own Java clients on the real broker.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::Command;

use common::segments::{StoredBatch, storage_problems, stored_batches};
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

/// Keyed input for the topic of `codec`: line `i` is `k<i % keys>|<codec>/k<i % keys>:<i / keys>`,
/// so each key's values count 0, 1, 2, ... and name the topic they were written to
/// (Java's console consumer reads several topics at once but does not print the topic).
fn tagged_input(codec: &str, lines: usize, keys: usize) -> String {
    (0..lines)
        .map(|i| format!("k{}|{codec}/{}\n", i % keys, value_of(i, keys)))
        .collect()
}

/// The value of line `i` of a big-value run: `<codec>/k<n>:<seq>:`, then
/// for most lines about 50 KB, text that compresses well and pseudo-random
/// printable characters that lz4 and snappy cannot shrink; every fourth line
/// is 140 KB of those characters alone, so some 64 KiB lz4 blocks are stored
/// raw (the frame's uncompressed-block flag). A batch of a few such values
/// spans several lz4 blocks (64 KiB) and xerial snappy blocks (32 KiB).
fn big_value(codec: &str, i: usize, keys: usize) -> String {
    let mut v = format!("{codec}/{}:", value_of(i, keys));
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

/// Splits `<codec>/<rest>` into the codec and the rest.
fn untag(value: &str) -> Option<(&str, &str)> {
    value.split_once('/')
}

/// Runs our producer on `input` (`KEY|VALUE` lines) into a new topic of
/// `partitions` partitions, compressing with `codec`.
fn our_produce(topic: &str, codec: &str, partitions: i32, input: &str) {
    let mut cmd = producer();
    cmd.args([&bootstrap(), topic, "--key-separator", "|"])
        .args(["--compression", codec, "--create-topic", "--partitions"])
        .arg(partitions.to_string());
    let out = run_with_input(cmd, input.as_bytes());
    assert!(
        out.status.success(),
        "producer --compression {codec} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A record as Java's console consumer prints it with print.partition and print.key.
struct JavaRecord {
    partition: i32,
    key: String,
    value: String,
}

/// Reads `expected` records from the beginning of the topics matching the
/// regex `include` with Kafka's console consumer (read-committed); returns
/// them in the order it printed them, and its stderr. It stops after
/// `expected` records, or after 30 s without one (then the test sees fewer);
/// a consumer that hangs fails the test after 90 s.
fn java_consume(addr: &str, include: &str, expected: usize) -> (Vec<JavaRecord>, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("docker/kafka-local.sh");
    let mut cmd = Command::new("bash");
    cmd.arg(script)
        .args(["tool", "console-consumer", "--bootstrap-server", addr])
        .args(["--include", include, "--from-beginning"])
        .args([
            "--property",
            "print.key=true",
            "--property",
            "print.partition=true",
        ])
        .args(["--consumer-property", "isolation.level=read_committed"])
        .args([
            "--max-messages",
            &expected.to_string(),
            "--timeout-ms",
            "30000",
        ]);
    let out = output_within(cmd, 90);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let records = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let parse = || {
                let (p, rest) = l.strip_prefix("Partition:")?.split_once('\t')?;
                let (key, value) = rest.split_once('\t')?;
                Some(JavaRecord {
                    partition: p.parse().ok()?,
                    key: key.to_string(),
                    value: value.to_string(),
                })
            };
            parse().unwrap_or_else(|| {
                let shown: String = l.chars().take(200).collect();
                panic!("not a console consumer record: {shown:?}\n{stderr}")
            })
        })
        .collect();
    (records, stderr)
}

/// Writes `input` (`KEY|VALUE` lines) to `topic` with Kafka's console
/// producer, compressing with `codec`; `props` are more producer properties.
///
/// The codec goes in `--compression-codec`: the console producer sets
/// compression.type from that flag (default none) after reading
/// `--producer-property`, so `--producer-property compression.type=lz4` would
/// silently write uncompressed batches.
fn java_produce(addr: &str, topic: &str, codec: &str, input: &str, props: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("docker/kafka-local.sh");
    let mut cmd = Command::new("bash");
    cmd.arg(script)
        .args(["tool", "console-producer", "--bootstrap-server", addr])
        .args(["--topic", topic, "--compression-codec", codec])
        .args([
            "--property",
            "parse.key=true",
            "--property",
            "key.separator=|",
        ]);
    for p in props {
        cmd.args(["--producer-property", p]);
    }
    let out = run_with_input(cmd, input.as_bytes());
    assert!(
        out.status.success(),
        "console producer ({codec}) failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Reads every partition of `topic` from the start to its end with our
/// consumer (no group membership); returns the records in the order it
/// delivered them, and its stderr. Fails the test after 60 s.
fn our_consume(addr: &str, topic: &str) -> (Vec<Record>, String) {
    let mut cmd = consumer();
    cmd.args([addr, topic, &unique("g")])
        .args(["--partitions", "all", "--from", "earliest", "--exit-at-end"])
        .args(["--format", "text", "--stats-interval", "0"]);
    let out = output_within(cmd, 60);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "consumer of {topic}: {stderr}");
    let records = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| Record::parse(l).unwrap_or_else(|| panic!("not a text record: {l:?}")))
        .collect();
    (records, stderr)
}

/// What is wrong with `records` (partition, key, value in delivery order),
/// read from the topic of `codec` that holds `lines` lines of `keys` keys as
/// [`tagged_input`] or [`big_value`] (`big`) makes them: a line missing,
/// repeated or out of its key's order, a value under the wrong key, a key in
/// two partitions, a big value not as written.
fn delivery_problems<'a>(
    records: impl IntoIterator<Item = (i32, &'a str, &'a str)>,
    codec: &str,
    lines: usize,
    keys: usize,
    big: bool,
) -> Vec<String> {
    let mut problems = Vec::new();
    let mut partition_of: HashMap<&str, i32> = HashMap::new();
    let mut values = Vec::new();
    for (partition, key, value) in records {
        let Some((tag, rest)) = untag(value) else {
            let shown: String = value.chars().take(60).collect();
            problems.push(format!("untagged value {shown:?}"));
            continue;
        };
        if tag != codec {
            problems.push(format!("a record of the {tag} topic"));
            continue;
        }
        // `k<n>:<seq>`, then for big values `:` and the payload.
        let seq_part = if big {
            rest.splitn(3, ':').take(2).collect::<Vec<_>>().join(":")
        } else {
            rest.to_string()
        };
        if !seq_part.starts_with(&format!("{key}:")) {
            problems.push(format!("{seq_part} under key {key:?}"));
        }
        if *partition_of.entry(key).or_insert(partition) != partition {
            problems.push(format!(
                "key {key} in partitions {} and {partition}",
                partition_of[key]
            ));
        }
        if big {
            let i = seq_part.split_once(':').and_then(|(k, s)| {
                Some(s.parse::<usize>().ok()? * keys + k.strip_prefix('k')?.parse::<usize>().ok()?)
            });
            if i.is_none_or(|i| value != big_value(codec, i, keys)) {
                problems.push(format!(
                    "{seq_part}: the value is not the one written ({} bytes)",
                    value.len()
                ));
            }
        }
        values.push(seq_part);
    }
    let tally = Tally::of(values.iter().map(String::as_str), lines, keys);
    problems.truncate(8);
    if !tally.exactly_once_in_order() {
        problems.insert(0, format!("{tally:?}"));
    }
    problems
}

/// Checks the stored batches of each codec's topic, and returns them.
fn assert_stored(
    topic_of: &BTreeMap<&str, String>,
    partitions: i32,
    records: i64,
) -> BTreeMap<String, Vec<StoredBatch>> {
    let topics: Vec<&str> = topic_of.values().map(String::as_str).collect();
    let stored = stored_batches(&topics, partitions);
    let problems: Vec<String> = topic_of
        .iter()
        .flat_map(|(codec, topic)| {
            storage_problems(&stored[topic], codec, records)
                .into_iter()
                .map(move |p| format!("{codec}: {p}"))
        })
        .collect();
    assert!(
        problems.is_empty(),
        "what the broker stored (kafka-dump-log):\n{}",
        problems.join("\n")
    );
    stored
}

#[test]
fn every_codec_we_write_is_read_by_javas_consumer_in_order() {
    let addr = require_broker();
    let (lines, keys, partitions) = (3000, 30, 3);
    let run = unique("ours");
    let topic_of: BTreeMap<&str, String> =
        CODECS.iter().map(|c| (*c, format!("{run}-{c}"))).collect();
    for (codec, topic) in &topic_of {
        our_produce(topic, codec, partitions, &tagged_input(codec, lines, keys));
    }
    // The broker keeps each batch as the producer compressed it: a batch
    // sent uncompressed (or under another codec) fails here, whatever the
    // consumers make of it.
    assert_stored(&topic_of, partitions, lines as i64);

    // One console consumer reads the five topics (one JVM, not five).
    let (records, stderr) = java_consume(&addr, &format!("{run}-.*"), CODECS.len() * lines);
    let mut problems = Vec::new();
    for codec in CODECS {
        let of_codec = records
            .iter()
            .filter(|r| untag(&r.value).is_none_or(|(c, _)| c == codec))
            .map(|r| (r.partition, r.key.as_str(), r.value.as_str()));
        for p in delivery_problems(of_codec, codec, lines, keys, false) {
            problems.push(format!("{codec}: {p}"));
        }
    }
    assert!(
        problems.is_empty(),
        "Java's console consumer read {} records of {}:\n{}\n--- its stderr:\n{stderr}",
        records.len(),
        CODECS.len() * lines,
        problems.join("\n")
    );
}

#[test]
fn every_codec_java_writes_is_read_by_ours() {
    // Fetch decodes every codec in pure Rust (no C codec in any build);
    // Java's producer writes the batches: gzip and zstd at its levels, lz4
    // frames of 64 KiB blocks, snappy in xerial framing.
    let addr = require_broker();
    let (lines, keys, partitions) = (2000, 20, 3);
    let run = unique("java");
    let topic_of: BTreeMap<&str, String> =
        CODECS.iter().map(|c| (*c, format!("{run}-{c}"))).collect();
    std::thread::scope(|s| {
        for (codec, topic) in &topic_of {
            let addr = &addr;
            s.spawn(move || {
                produce_lines(topic, partitions, "k", "");
                java_produce(
                    addr,
                    topic,
                    codec,
                    &tagged_input(codec, lines, keys),
                    &["linger.ms=50"],
                );
            });
        }
    });
    assert_stored(&topic_of, partitions, lines as i64);
    for (codec, topic) in &topic_of {
        let (records, stderr) = our_consume(&addr, topic);
        let got = records
            .iter()
            .map(|r| (r.partition, r.key.as_str(), r.value.as_str()));
        let problems = delivery_problems(got, codec, lines, keys, false);
        assert!(
            problems.is_empty(),
            "{codec}: our consumer read {} records of {lines}:\n{}\n--- its stderr:\n{stderr}",
            records.len(),
            problems.join("\n")
        );
    }
}

/// The codecs whose frames are made of blocks: lz4 (64 KiB) and snappy (xerial, 32 KiB).
const BLOCK_CODECS: [&str; 2] = ["lz4", "snappy"];

/// Asserts that some stored batch of each topic holds more than 64 KiB of
/// values, so its lz4 frame or xerial stream has several blocks.
fn assert_multi_block(stored: &BTreeMap<String, Vec<StoredBatch>>, value_len: i64) {
    for (topic, batches) in stored {
        let most = batches.iter().map(|b| b.count).max().unwrap_or(0);
        assert!(
            most * value_len > 64 * 1024,
            "{topic}: no batch over 64 KiB (at most {most} values of {value_len} bytes): {batches:?}"
        );
    }
}

#[test]
fn big_values_cross_in_multi_block_lz4_and_snappy_frames_both_ways() {
    let addr = require_broker();
    let (lines, keys) = (40, 4);
    let input = |codec: &str| -> String {
        (0..lines)
            .map(|i| format!("k{}|{}\n", i % keys, big_value(codec, i, keys)))
            .collect()
    };
    // Ours to Java: batches of up to --batch-size (256 KiB), about five values each.
    let ours = unique("big-ours");
    let topic_of: BTreeMap<&str, String> = BLOCK_CODECS
        .iter()
        .map(|c| (*c, format!("{ours}-{c}")))
        .collect();
    for (codec, topic) in &topic_of {
        our_produce(topic, codec, 1, &input(codec));
    }
    assert_multi_block(&assert_stored(&topic_of, 1, lines as i64), 50_000);
    let (records, stderr) = java_consume(&addr, &format!("{ours}-.*"), BLOCK_CODECS.len() * lines);
    for codec in BLOCK_CODECS {
        let of_codec = records
            .iter()
            .filter(|r| untag(&r.value).is_none_or(|(c, _)| c == codec))
            .map(|r| (r.partition, r.key.as_str(), r.value.as_str()));
        let problems = delivery_problems(of_codec, codec, lines, keys, true);
        assert!(
            problems.is_empty(),
            "{codec}: Java's console consumer read {} records:\n{}\n--- its stderr:\n{stderr}",
            records.len(),
            problems.join("\n")
        );
    }

    // Java to ours: Java's producer batches up to batch.size, so 256 KiB too.
    let java = unique("big-java");
    let topic_of: BTreeMap<&str, String> = BLOCK_CODECS
        .iter()
        .map(|c| (*c, format!("{java}-{c}")))
        .collect();
    std::thread::scope(|s| {
        for (codec, topic) in &topic_of {
            let (addr, input) = (&addr, input(codec));
            s.spawn(move || {
                produce_lines(topic, 1, "k", "");
                java_produce(
                    addr,
                    topic,
                    codec,
                    &input,
                    &["batch.size=262144", "linger.ms=200"],
                );
            });
        }
    });
    assert_multi_block(&assert_stored(&topic_of, 1, lines as i64), 50_000);
    for (codec, topic) in &topic_of {
        let (records, stderr) = our_consume(&addr, topic);
        let got = records
            .iter()
            .map(|r| (r.partition, r.key.as_str(), r.value.as_str()));
        let problems = delivery_problems(got, codec, lines, keys, true);
        assert!(
            problems.is_empty(),
            "{codec}: our consumer read {} records:\n{}\n--- its stderr:\n{stderr}",
            records.len(),
            problems.join("\n")
        );
    }
}
