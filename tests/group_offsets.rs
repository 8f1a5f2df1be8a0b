//! Consumer-group offsets against a real Apache Kafka broker.
//!
//! The broker address comes from `KAFKA_BOOTSTRAP` (default 127.0.0.1:9092).
//! Without a broker these tests fail, saying how to start one: a silently
//! skipped integration test proves nothing.
//!
//! Each test uses its own topic and group (named after the process id and
//! the clock), so runs never see each other's offsets.

use std::collections::HashMap;
mod common;

use std::process::Command;
use std::time::Duration;

use chrono::Utc;
use common::{require_broker, unique};
use kafka_protocol::messages::ApiKey;
use mykafkams::group::{GroupClient, GroupConfig, GroupError};
use rskafka::client::ClientBuilder;
use rskafka::client::partition::{Compression, UnknownTopicHandling};
use rskafka::record::Record;

/// Creates `topic` with `partitions` partitions and produces `records` records
/// to each partition. Returns after the broker acknowledged them all.
async fn topic_with_records(addr: &str, topic: &str, partitions: i32, records: usize) {
    let client = ClientBuilder::new(vec![addr.to_string()])
        .build()
        .await
        .unwrap_or_else(|e| panic!("rskafka cannot connect to {addr}: {e}"));
    client
        .controller_client()
        .unwrap()
        .create_topic(topic, partitions, 1, 5_000)
        .await
        .unwrap_or_else(|e| panic!("creating topic {topic}: {e}"));
    for p in 0..partitions {
        let pc = client
            .partition_client(topic, p, UnknownTopicHandling::Retry)
            .await
            .unwrap();
        let batch = (0..records)
            .map(|i| Record {
                key: Some(format!("k{i}").into_bytes()),
                value: Some(format!("v{i}").into_bytes()),
                headers: Default::default(),
                timestamp: Utc::now(),
            })
            .collect();
        pc.produce(batch, Compression::NoCompression)
            .await
            .unwrap_or_else(|e| panic!("producing to {topic}/{p}: {e}"));
    }
}

fn config() -> GroupConfig {
    GroupConfig {
        retry_deadline: Duration::from_secs(20),
        ..GroupConfig::default()
    }
}

/// A config that caps the group APIs at the given versions.
fn capped(find_coordinator: i16, offset_fetch: i16, offset_commit: i16) -> GroupConfig {
    GroupConfig {
        max_versions: HashMap::from([
            (ApiKey::FindCoordinator, find_coordinator),
            (ApiKey::OffsetFetch, offset_fetch),
            (ApiKey::OffsetCommit, offset_commit),
        ]),
        ..config()
    }
}

#[tokio::test]
async fn commit_then_fetch_round_trips() {
    round_trip(config()).await;
}

/// The request shapes older brokers need: single-key FindCoordinator (v3,
/// flexible), single-group OffsetFetch (v7, flexible), non-flexible
/// OffsetCommit (v7).
#[tokio::test]
async fn commit_then_fetch_round_trips_with_single_group_versions() {
    round_trip(capped(3, 7, 7)).await;
}

/// Non-flexible versions everywhere (FindCoordinator v2, OffsetFetch v5,
/// OffsetCommit v5).
#[tokio::test]
async fn commit_then_fetch_round_trips_with_non_flexible_versions() {
    round_trip(capped(2, 5, 5)).await;
}

async fn round_trip(config: GroupConfig) {
    let addr = require_broker();
    let topic = unique("grp-roundtrip");
    topic_with_records(&addr, &topic, 2, 5).await;
    let group = GroupClient::connect([addr.clone()], unique("g-roundtrip"), config.clone())
        .await
        .unwrap();

    group
        .commit_standalone(&[(topic.as_str(), 0, 3), (topic.as_str(), 1, 5)])
        .await
        .unwrap();
    let got = group
        .fetch_committed(&[(topic.as_str(), [0, 1])])
        .await
        .unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got[&(topic.clone(), 0)], Some(3));
    assert_eq!(got[&(topic.clone(), 1)], Some(5));

    // A later commit replaces the earlier one (it may also move backwards).
    group
        .commit_standalone(&[(topic.as_str(), 0, 1)])
        .await
        .unwrap();
    let got = group
        .fetch_committed(&[(topic.as_str(), vec![0])])
        .await
        .unwrap();
    assert_eq!(got[&(topic.clone(), 0)], Some(1));

    // A fresh client (fresh coordinator discovery) sees the same offsets.
    let again = GroupClient::new([addr], group.group_id(), config);
    let got = again
        .fetch_committed(&[(topic.as_str(), [0, 1])])
        .await
        .unwrap();
    assert_eq!(got[&(topic.clone(), 0)], Some(1));
    assert_eq!(got[&(topic, 1)], Some(5));
}

#[tokio::test]
async fn group_without_commits_fetches_none() {
    let addr = require_broker();
    let topic = unique("grp-none");
    topic_with_records(&addr, &topic, 3, 1).await;
    let group = GroupClient::new([addr], unique("g-none"), config());
    let got = group
        .fetch_committed(&[(topic.as_str(), [0, 1, 2])])
        .await
        .unwrap();
    assert_eq!(got.len(), 3);
    assert!(got.values().all(Option::is_none), "{got:?}");
}

#[tokio::test]
async fn commit_to_unknown_topic_or_partition_names_it() {
    let addr = require_broker();
    let topic = unique("grp-known");
    topic_with_records(&addr, &topic, 1, 1).await;
    let group = GroupClient::new([addr], unique("g-unknown"), config());

    let missing = unique("grp-missing");
    let err = group
        .commit_standalone(&[(missing.as_str(), 0, 1)])
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(&err, GroupError::Partition { topic, partition: 0, .. } if *topic == missing),
        "{err:?}"
    );
    assert!(
        msg.contains(&missing) && msg.contains("partition 0"),
        "{msg}"
    );
    assert!(!msg.contains('\n'), "{msg}");

    // The topic exists but partition 7 does not.
    let err = group
        .commit_standalone(&[(topic.as_str(), 7, 1)])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, GroupError::Partition { partition: 7, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("partition 7"), "{err}");
}

/// The offsets we commit are the group's real offsets: Kafka's own
/// `kafka-consumer-groups --describe` reports them, with the lag computed
/// against the log end.
#[tokio::test]
async fn commit_is_visible_to_kafka_consumer_groups_tool() {
    let addr = require_broker();
    let topic = unique("grp-tool");
    topic_with_records(&addr, &topic, 2, 5).await;
    let group_id = unique("g-tool");
    let group = GroupClient::connect([addr.clone()], group_id.clone(), config())
        .await
        .unwrap();
    group
        .commit_standalone(&[(topic.as_str(), 0, 3), (topic.as_str(), 1, 5)])
        .await
        .unwrap();

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/docker/kafka-local.sh");
    let out = Command::new(script)
        .args(["tool", "consumer-groups", "--bootstrap-server", &addr])
        .args(["--describe", "--group", &group_id])
        .output()
        .unwrap_or_else(|e| panic!("running {script}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "kafka-consumer-groups failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{stdout}");

    let rows = parse_describe(&stdout);
    let row = |p: &str| {
        rows.iter()
            .find(|r| r["TOPIC"] == topic && r["PARTITION"] == p)
            .unwrap_or_else(|| panic!("no row for {topic}/{p} in:\n{stdout}"))
    };
    // 5 records per partition: committed 3 leaves lag 2, committed 5 leaves none.
    assert_eq!(row("0")["CURRENT-OFFSET"], "3", "{stdout}");
    assert_eq!(row("0")["LOG-END-OFFSET"], "5", "{stdout}");
    assert_eq!(row("0")["LAG"], "2", "{stdout}");
    assert_eq!(row("1")["CURRENT-OFFSET"], "5", "{stdout}");
    assert_eq!(row("1")["LAG"], "0", "{stdout}");
    assert!(rows.iter().all(|r| r["GROUP"] == group_id), "{stdout}");
}

/// Parses the table `kafka-consumer-groups --describe` prints: a header line
/// starting with GROUP, then whitespace-separated rows (empty cells are "-").
fn parse_describe(out: &str) -> Vec<std::collections::HashMap<String, String>> {
    let mut lines = out
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("GROUP"));
    let Some(header) = lines.next() else {
        return Vec::new();
    };
    let columns: Vec<&str> = header.split_whitespace().collect();
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            columns
                .iter()
                .zip(l.split_whitespace())
                .map(|(c, v)| (c.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}
