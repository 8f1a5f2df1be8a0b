//! Interoperability with Kafka's own Java clients on the real broker.

mod common;

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

/// Writes `lines` with Kafka's console producer using `codec`.
fn java_produce(addr: &str, topic: &str, codec: &str, lines: &str) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docker/kafka-local.sh");
    let mut cmd = std::process::Command::new("bash");
    cmd.arg(script).args([
        "tool",
        "console-producer",
        "--bootstrap-server",
        addr,
        "--topic",
        topic,
        "--compression-codec",
        codec,
        "--producer-property",
        "linger.ms=50",
    ]);
    let out = run_with_input(cmd, lines.as_bytes());
    assert!(
        out.status.success(),
        "console producer ({codec}) failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn lz4_and_zstd_batches_from_java_are_read_without_c_codecs() {
    // The default build has no C codec; fetch decodes lz4 (frame format)
    // and zstd in pure Rust.
    let addr = require_broker();
    let lines: String = (0..2000)
        .map(|i| format!("value-{i}-{}\n", "x".repeat(i % 50)))
        .collect();
    for codec in ["lz4", "zstd"] {
        let topic = unique(codec);
        produce_lines(&topic, 1, "k", "");
        java_produce(&addr, &topic, codec, &lines);
        let (stdout, stderr) = read_to_end(&addr, &topic);
        assert_eq!(stdout, lines, "{codec}: {stderr}");
    }
}
