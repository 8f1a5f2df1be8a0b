//! What the broker stored: the record batches of a topic's log segments as
//! Kafka's own `kafka-dump-log` (DumpLogSegments) prints them, so a test can
//! check the codec of every batch as it lies on disk, not as a client says.
//!
//! The broker's log dir comes from the broker itself (`kafka-log-dirs
//! --describe`). A broker of the local launcher keeps it on this machine,
//! and the dump runs here; the compose broker keeps it in its container,
//! and the dump runs there (`docker exec mykafkams-kafka`).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use super::{bootstrap, kafka_tool};

/// One record batch of a log segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredBatch {
    pub partition: i32,
    pub base_offset: i64,
    /// Records in the batch.
    pub count: i64,
    /// `compresscodec` as Kafka names it: none, gzip, snappy, lz4, zstd.
    pub codec: String,
    /// Bytes the batch takes in the segment (compressed).
    pub size: i64,
    /// Whether its CRC matches.
    pub valid: bool,
    pub control: bool,
}

/// The container of docker/compose.yml's broker.
const CONTAINER: &str = "mykafkams-kafka";

/// The broker's log dir, asked once per test process (`topic` must exist).
fn log_dir(topic: &str) -> &'static str {
    static DIR: OnceLock<String> = OnceLock::new();
    DIR.get_or_init(|| {
        let out = kafka_tool(
            "log-dirs",
            &[
                "--bootstrap-server",
                &bootstrap(),
                "--describe",
                "--topic-list",
                topic,
            ],
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let json = text
            .lines()
            .find(|l| l.starts_with('{'))
            .unwrap_or_else(|| panic!("no JSON in kafka-log-dirs output: {text}"));
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        let dirs: Vec<&str> = v["brokers"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|b| b["logDirs"].as_array().into_iter().flatten())
            .filter_map(|d| d["logDir"].as_str())
            .collect();
        assert_eq!(
            dirs.len(),
            1,
            "expected one broker with one log dir at {}: {json}",
            bootstrap()
        );
        dirs[0].to_string()
    })
}

/// Every batch stored for each of `topics` (name, partitions), per topic in
/// (partition, offset) order, from one run of kafka-dump-log. Fails the
/// test if a segment cannot be found or dumped.
pub fn stored_batches(topics: &[(&str, i32)]) -> BTreeMap<String, Vec<StoredBatch>> {
    let dir = log_dir(topics[0].0);
    let local = Path::new(dir).is_dir();
    // The segment files, each with its topic and partition.
    let mut files: Vec<(String, i32, String)> = Vec::new();
    for &(topic, partitions) in topics {
        for p in 0..partitions {
            let pdir = format!("{dir}/{topic}-{p}");
            if local {
                let mut segs: Vec<String> = std::fs::read_dir(&pdir)
                    .unwrap_or_else(|e| panic!("partition dir {pdir}: {e}"))
                    .filter_map(|e| {
                        let name = e.ok()?.file_name().into_string().ok()?;
                        name.ends_with(".log").then(|| format!("{pdir}/{name}"))
                    })
                    .collect();
                segs.sort();
                files.extend(segs.into_iter().map(|f| (topic.to_string(), p, f)));
            } else {
                // In the container: a fresh topic has its first segment only.
                files.push((topic.to_string(), p, format!("{pdir}/{:020}.log", 0)));
            }
        }
    }
    let list = files
        .iter()
        .map(|(_, _, f)| f.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let text = if local {
        String::from_utf8_lossy(&kafka_tool("dump-log", &["--files", &list]).stdout).into_owned()
    } else {
        dump_in_container(dir, &list)
    };
    parse_dump(&text, &files)
}

fn dump_in_container(dir: &str, list: &str) -> String {
    let out = Command::new("docker")
        .args([
            "exec",
            CONTAINER,
            "/opt/kafka/bin/kafka-dump-log.sh",
            "--files",
            list,
        ])
        .output();
    match out {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).into_owned(),
        other => panic!(
            "the broker's log dir {dir} is not on this machine, and dumping it in the \
             Docker container {CONTAINER} failed: {other:?}"
        ),
    }
}

/// Parses DumpLogSegments' output: `Dumping FILE`, then one
/// `baseOffset: .. count: .. compresscodec: .. isvalid: ..` line per batch.
fn parse_dump(text: &str, files: &[(String, i32, String)]) -> BTreeMap<String, Vec<StoredBatch>> {
    let mut batches: BTreeMap<String, Vec<StoredBatch>> = BTreeMap::new();
    let mut current: Option<&(String, i32, String)> = None;
    for line in text.lines() {
        if let Some(file) = line.strip_prefix("Dumping ") {
            current = Some(
                files
                    .iter()
                    .find(|(_, _, f)| f == file.trim())
                    .unwrap_or_else(|| panic!("dump of a file not asked for: {line}")),
            );
            batches.entry(current.unwrap().0.clone()).or_default();
            continue;
        }
        if !line.starts_with("baseOffset: ") {
            continue;
        }
        let (topic, partition, _) =
            current.unwrap_or_else(|| panic!("batch before a file: {line}"));
        // "key: value" pairs separated by spaces; values never hold ": ".
        let words: Vec<&str> = line.split_whitespace().collect();
        let field = |name: &str| {
            words
                .windows(2)
                .find(|w| w[0] == name)
                .map(|w| w[1])
                .unwrap_or_else(|| panic!("no {name} in {line}"))
        };
        batches.entry(topic.clone()).or_default().push(StoredBatch {
            partition: *partition,
            base_offset: field("baseOffset:").parse().unwrap(),
            count: field("count:").parse().unwrap(),
            codec: field("compresscodec:").to_string(),
            size: field("size:").parse().unwrap(),
            valid: field("isvalid:") == "true",
            control: field("isControl:") == "true",
        });
    }
    for (topic, _, file) in files {
        assert!(
            batches.contains_key(topic),
            "kafka-dump-log printed nothing for {file}: {text}"
        );
    }
    batches
}

/// What is wrong with the batches stored for a topic written with `codec`
/// that should hold `records` data records: a batch of another codec, a bad
/// CRC, a record count that is not `records`. Empty when all is well.
pub fn storage_problems(batches: &[StoredBatch], codec: &str, records: i64) -> Vec<String> {
    let mut problems = Vec::new();
    let data: Vec<&StoredBatch> = batches.iter().filter(|b| !b.control).collect();
    if data.is_empty() {
        problems.push("no data batch stored".to_string());
    }
    // Per codec found instead: batches, records, the first batch.
    let mut wrong: BTreeMap<&str, (usize, i64, &StoredBatch)> = BTreeMap::new();
    for b in &data {
        if b.codec != codec {
            let w = wrong.entry(b.codec.as_str()).or_insert((0, 0, b));
            w.0 += 1;
            w.1 += b.count;
        }
        if !b.valid {
            problems.push(format!(
                "batch at {}/{} has a bad CRC",
                b.partition, b.base_offset
            ));
        }
    }
    for (other, (n, records, first)) in wrong {
        problems.push(format!(
            "{n} of {} batches ({records} records) stored as compresscodec {other}, \
             not {codec}; the first at partition {} offset {}",
            data.len(),
            first.partition,
            first.base_offset
        ));
    }
    let stored: i64 = data.iter().map(|b| b.count).sum();
    if stored != records {
        problems.push(format!("{stored} records stored, not {records}"));
    }
    problems.truncate(8);
    problems
}
