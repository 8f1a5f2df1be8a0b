//! Offset maps against the real broker (issue 15):
//!
//! * a consumer stopped with messages finished out of order commits them in
//!   a map, and the next run handles exactly what the first did not;
//! * a group parallel-consumer left behind (its commits, kept as fixtures
//!   in `tests/fixtures/parallel-consumer/` with the script that made
//!   them) is picked up: none of the offsets it finished is handled again,
//!   everything else exactly once;
//! * a partition whose map hits the size bound pauses alone: the other
//!   partition is handled to its end meanwhile (its committed offset
//!   advancing throughout), and the paused one resumes once its stuck
//!   messages finish.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use mykafkams::consumer::{ConsumeSummary, Partitions};
use mykafkams::group::{GroupClient, GroupConfig};
use mykafkams::{Consumer, ConsumerBuilder, HandlerError, Message};
use rskafka::client::ClientBuilder;
use rskafka::client::partition::{Compression, UnknownTopicHandling};
use rskafka::record::Record;

use common::{bootstrap, require_broker, unique};

/// Every (partition, offset) a run handled, in handling order.
type Handled = Arc<Mutex<Vec<(i32, i64)>>>;

/// A consumer reading every partition of `topic` for `group` until the end.
fn consumer(topic: &str, group: &str) -> ConsumerBuilder {
    Consumer::builder()
        .bootstrap_servers(bootstrap())
        .topics(topic.to_string())
        .group(group.to_string())
        .partitions(Partitions::All)
        .workers(8)
        .exit_at_end(true)
        .stats_interval(Duration::ZERO)
}

/// Creates `topic` and writes `records[p]` to partition `p`, in order (so
/// record `i` of a partition lands at offset `i`), `batch` records a batch
/// (a fetch returns whole batches, so small ones keep fetches small).
fn produce_exact(topic: &str, records: &[Vec<(String, String)>], batch: usize) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = ClientBuilder::new(vec![bootstrap()]).build().await.unwrap();
        client
            .controller_client()
            .unwrap()
            .create_topic(topic, records.len() as i32, 1, 5_000)
            .await
            .unwrap();
        for (p, recs) in records.iter().enumerate() {
            let pc = client
                .partition_client(topic, p as i32, UnknownTopicHandling::Retry)
                .await
                .unwrap();
            for chunk in recs.chunks(batch) {
                let batch = chunk
                    .iter()
                    .map(|(k, v)| Record {
                        key: Some(k.clone().into_bytes()),
                        value: Some(v.clone().into_bytes()),
                        headers: Default::default(),
                        timestamp: Utc::now(),
                    })
                    .collect();
                pc.produce(batch, Compression::NoCompression).await.unwrap();
            }
        }
    });
}

async fn group_client(group: &str) -> GroupClient {
    GroupClient::connect([bootstrap()], group.to_string(), GroupConfig::default())
        .await
        .unwrap()
}

/// Runs `builder` with a handler that records each message and fails the
/// ones `fail` picks; returns what it handled and the summary.
fn run(
    builder: ConsumerBuilder,
    fail: impl Fn(&Message) -> bool + Send + Sync + 'static,
) -> (Vec<(i32, i64)>, ConsumeSummary) {
    let handled: Handled = Arc::default();
    let log = Arc::clone(&handled);
    let summary = builder
        .build()
        .unwrap()
        .run_blocking(move |m: &Message| {
            if fail(m) {
                return Err(HandlerError::new("failing on purpose"));
            }
            log.lock().unwrap().push((m.partition, m.offset));
            Ok(())
        })
        .unwrap();
    let handled = handled.lock().unwrap().clone();
    (handled, summary)
}

/// Stops the first run on a failure mid-stream (everything finished out of
/// order beyond it is in the map), then checks that a second run handles
/// exactly the rest. The same with maps turned off repeats messages: the
/// scenario does finish messages out of order.
#[test]
fn a_restart_handles_exactly_what_the_stopped_run_had_not_finished() {
    require_broker();
    let topic = unique("omap-restart");
    let keys = 20;
    let per_key = 50;
    let total = common::produce_sequences(&topic, 1, keys, per_key);
    let fail_at = "acct-0:10";
    let mut repeats = BTreeMap::new();
    for (maps, label) in [(true, "with maps"), (false, "without maps")] {
        let group = unique("g-omap-restart");
        let first = consumer(&topic, &group)
            .retries(0)
            .offset_map_max_bytes(if maps { 4096 } else { 0 });
        let (run1, s1) = run(first, move |m| {
            m.value.as_deref() == Some(fail_at.as_bytes())
        });
        assert!(s1.failure.is_some(), "{label}: run 1 stopped on {fail_at}");
        assert!(run1.len() < total, "{label}: run 1 stopped early");
        let second = consumer(&topic, &group).offset_map_max_bytes(if maps { 4096 } else { 0 });
        let (run2, s2) = run(second, |_| false);
        let one: BTreeSet<i64> = run1.iter().map(|h| h.1).collect();
        let two: BTreeSet<i64> = run2.iter().map(|h| h.1).collect();
        assert_eq!(
            two.len(),
            run2.len(),
            "{label}: run 2 handled nothing twice"
        );
        let all: BTreeSet<i64> = one.union(&two).copied().collect();
        assert_eq!(all, (0..total as i64).collect(), "{label}: nothing lost");
        let repeated = one.intersection(&two).count();
        repeats.insert(label, repeated);
        if maps {
            assert_eq!(
                repeated, 0,
                "with maps: run 2 repeated {repeated} of run 1's messages"
            );
            let committed = s1.committed[0].1;
            let above = one.iter().filter(|o| **o >= committed).count() as u64;
            assert!(
                above > 0,
                "run 1 finished messages above its committed offset {committed}"
            );
            assert_eq!(
                s2.stats.already_done, above,
                "run 2 skipped what run 1 finished above {committed}"
            );
        }
    }
    assert!(
        repeats["without maps"] > 0,
        "without maps the restart repeats what finished out of order: {repeats:?}"
    );
    eprintln!("offset map restart: repeated {repeats:?} of {total}");
}

/// One parallel-consumer fixture: how to make its records and what its
/// commits said.
struct Fixture {
    name: String,
    partitions: usize,
    records: usize,
    /// Per partition: committed offset, metadata, offsets it completed.
    commits: Vec<(i64, String, BTreeSet<i64>)>,
}

fn fixtures() -> Vec<Fixture> {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/parallel-consumer");
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    for path in files {
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let commits = v["by_partition"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                let completed = p["completed"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .flat_map(|r| r[0].as_i64().unwrap()..=r[1].as_i64().unwrap())
                    .collect();
                (
                    p["committed_offset"].as_i64().unwrap(),
                    p["metadata"].as_str().unwrap().to_string(),
                    completed,
                )
            })
            .collect();
        out.push(Fixture {
            name: v["scenario"].as_str().unwrap().to_string(),
            partitions: v["partitions"].as_u64().unwrap() as usize,
            records: v["records_per_partition"].as_u64().unwrap() as usize,
            commits,
        });
    }
    assert!(out.len() >= 6, "the parallel-consumer fixtures are there");
    out
}

/// For each fixture: the records parallel-consumer read, at the same
/// offsets, and its commits (offset and metadata, verbatim) in a fresh
/// group; our consumer then handles every offset at or above the commit
/// that parallel-consumer did not complete, once, and none it did.
#[test]
fn a_group_parallel_consumer_left_is_picked_up_without_repeating_its_finished_offsets() {
    require_broker();
    let rt = tokio::runtime::Runtime::new().unwrap();
    for f in fixtures() {
        let topic = unique(&format!("omap-pc-{}", f.name));
        let group = unique("g-omap-pc");
        // Record i goes to partition i % P with key k<i % 100>, value v<i>.
        let mut records = vec![Vec::new(); f.partitions];
        for i in 0..f.partitions * f.records {
            records[i % f.partitions].push((format!("k{}", i % 100), format!("v{i}")));
        }
        produce_exact(&topic, &records, 2_000);
        rt.block_on(async {
            let commits: Vec<(&str, i32, i64, &str)> = f
                .commits
                .iter()
                .enumerate()
                .map(|(p, (o, m, _))| (topic.as_str(), p as i32, *o, m.as_str()))
                .collect();
            group_client(&group)
                .await
                .commit_with_metadata(&commits, &mykafkams::group::CommitIdentity::standalone())
                .await
                .unwrap();
        });
        let (handled, summary) = run(consumer(&topic, &group), |_| false);
        let mut skipped = 0;
        for (p, (committed, _, completed)) in f.commits.iter().enumerate() {
            let ours: Vec<i64> = handled
                .iter()
                .filter(|h| h.0 == p as i32)
                .map(|h| h.1)
                .collect();
            let unique_ours: BTreeSet<i64> = ours.iter().copied().collect();
            assert_eq!(
                unique_ours.len(),
                ours.len(),
                "{}: p{p} handled an offset twice",
                f.name
            );
            let expected: BTreeSet<i64> = (*committed..f.records as i64)
                .filter(|o| !completed.contains(o))
                .collect();
            assert_eq!(
                unique_ours, expected,
                "{}: p{p} handled exactly what parallel-consumer had not completed",
                f.name
            );
            skipped += completed.iter().filter(|o| **o >= *committed).count() as u64;
        }
        assert_eq!(
            summary.stats.already_done, skipped,
            "{}: skipped count",
            f.name
        );
        eprintln!(
            "parallel-consumer {}: handled {}, skipped {skipped} it had finished",
            f.name,
            handled.len()
        );
    }
}

/// p0 has stuck keys among flowing ones, so its map (bounded to 48 bytes)
/// fills and p0 pauses; p1 (1 ms a message) flows to its end meanwhile,
/// its commits advancing; once the stuck keys are released p0 resumes and everything
/// is handled exactly once.
#[test]
fn a_partition_whose_map_hits_the_bound_pauses_alone_and_resumes() {
    require_broker();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let topic = unique("omap-bound");
    let group = unique("g-omap-bound");
    let (p0_len, p1_len) = (4_000usize, 6_000usize);
    let p0: Vec<(String, String)> = (0..p0_len)
        .map(|i| {
            let k = if i % 5 == 0 {
                format!("stuck-{}", i % 4)
            } else {
                format!("flow-{}", i % 17)
            };
            (k, format!("p0:{i}"))
        })
        .collect();
    let p1: Vec<(String, String)> = (0..p1_len)
        .map(|i| (format!("k{}", i % 31), format!("p1:{i}")))
        .collect();
    produce_exact(&topic, &[p0, p1], 50);

    let handled: Handled = Arc::default();
    let release = Arc::new(AtomicBool::new(false));
    let builder = consumer(&topic, &group)
        .offset_map_max_bytes(48)
        .max_partition_fetch_bytes(8 * 1024)
        .commit_interval(Duration::from_millis(100));
    let (log, gate) = (Arc::clone(&handled), Arc::clone(&release));
    let run = std::thread::spawn(move || {
        builder
            .build()
            .unwrap()
            .run_blocking(move |m: &Message| {
                let stuck = m.key.as_deref().is_some_and(|k| k.starts_with(b"stuck-"));
                while stuck && !gate.load(Ordering::Acquire) {
                    std::thread::sleep(Duration::from_millis(5));
                }
                // p1 takes a few seconds, so its commits can be watched.
                if m.partition == 1 {
                    std::thread::sleep(Duration::from_millis(1));
                }
                log.lock().unwrap().push((m.partition, m.offset));
                Ok::<(), HandlerError>(())
            })
            .unwrap()
    });
    let count = |p: i32| handled.lock().unwrap().iter().filter(|h| h.0 == p).count();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = rt.block_on(group_client(&group));
    let committed = |p: i32| {
        rt.block_on(client.fetch_committed_with_metadata(&[(topic.as_str(), [p])]))
            .unwrap()
            .into_values()
            .next()
            .flatten()
    };
    // p1 is handled to its end while p0's stuck keys hold; its committed
    // offset advances throughout.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut p1_commits = BTreeSet::new();
    while count(1) < p1_len {
        assert!(
            Instant::now() < deadline,
            "p1 stalled at {} of {p1_len}",
            count(1)
        );
        if let Some(c) = committed(1) {
            p1_commits.insert(c.offset);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        p1_commits.len() >= 3,
        "p1's committed offset advanced during the pause: {p1_commits:?}"
    );
    // p0 paused: far from its end (its flowing keys alone are 80 % of it),
    // committed at its first stuck message with a map within the bound.
    let p0_done = count(0);
    assert!(
        p0_done < p0_len * 8 / 10,
        "p0 handled {p0_done} of {p0_len} while its map was full: not paused"
    );
    let c0 = committed(0).expect("p0 committed");
    assert_eq!(c0.offset, 0, "p0 committed up to its first stuck message");
    assert!(
        !c0.metadata.is_empty() && c0.metadata.len() <= 48,
        "p0's map within 48 bytes: {:?}",
        c0.metadata
    );

    release.store(true, Ordering::Release);
    let summary = run.join().unwrap();
    let all = handled.lock().unwrap().clone();
    let unique_all: BTreeSet<(i32, i64)> = all.iter().copied().collect();
    assert_eq!(unique_all.len(), all.len(), "nothing handled twice");
    assert_eq!(
        all.len(),
        p0_len + p1_len,
        "everything handled after the resume"
    );
    eprintln!(
        "offset map bound: p0 paused at {p0_done} of {p0_len} while p1 did {p1_len} ({} commits seen); {}",
        p1_commits.len(),
        summary.line()
    );
}
