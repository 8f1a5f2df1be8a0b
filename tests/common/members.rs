//! Group members for the membership tests and the rebalance benchmark:
//! in-process consumers (the library's `consumer::run`) whose handler
//! records who handled which message when, Kafka's own view of the group
//! (`kafka-consumer-groups --describe --members --verbose`), a steady
//! keyed load, and the checks every hand-over must pass.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mykafkams::Message;
use mykafkams::cluster::ClusterConfig;
use mykafkams::consumer::{self, ConsumeSummary, ConsumerConfig, Partitions};
use mykafkams::group::GroupProtocol;
use mykafkams::group::assignor::Assignor;
use mykafkams::pool::{FailurePolicy, HandlerError};
use mykafkams::producer::{ProducerConfig, TopicProducer};
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::bootstrap;

/// The protocol (and assignor) a group runs under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    /// KIP-848, the broker's default assignor.
    Consumer,
    /// Classic with cooperative-sticky (incremental).
    Cooperative,
    /// Classic with range (eager).
    Range,
}

impl Proto {
    /// Every protocol the tests cover.
    pub const ALL: [Proto; 3] = [Proto::Consumer, Proto::Cooperative, Proto::Range];

    /// Sets the protocol and test-friendly timings (6 s sessions).
    pub fn configure(self, cfg: &mut ConsumerConfig) {
        let m = &mut cfg.membership;
        m.session_timeout = Duration::from_secs(6);
        m.heartbeat_interval = Duration::from_millis(500);
        m.rebalance_timeout = Duration::from_secs(30);
        match self {
            Proto::Consumer => m.protocol = GroupProtocol::Consumer,
            Proto::Cooperative => {
                m.protocol = GroupProtocol::Classic;
                m.assignors = vec![Assignor::CooperativeSticky];
            }
            Proto::Range => {
                m.protocol = GroupProtocol::Classic;
                m.assignors = vec![Assignor::Range];
            }
        }
    }

    /// The same as command-line flags.
    pub fn flags(self) -> Vec<&'static str> {
        match self {
            Proto::Consumer => vec!["--group-protocol", "consumer"],
            Proto::Cooperative => vec![
                "--group-protocol",
                "classic",
                "--assignor",
                "cooperative-sticky",
            ],
            Proto::Range => vec!["--group-protocol", "classic", "--assignor", "range"],
        }
    }

    /// Whether members keep their other partitions flowing in a rebalance.
    pub fn incremental(self) -> bool {
        self != Proto::Range
    }

    /// A short name for tables and topic names.
    pub fn label(self) -> &'static str {
        match self {
            Proto::Consumer => "consumer",
            Proto::Cooperative => "classic/cooperative-sticky",
            Proto::Range => "classic/range",
        }
    }
}

/// One handled message: by which member, and when (ns since the epoch, so
/// records of other processes compare).
#[derive(Clone, Debug)]
pub struct Rec {
    pub member: usize,
    pub partition: i32,
    pub offset: i64,
    pub key: String,
    pub seq: u64,
    pub start: u128,
    pub end: u128,
}

/// Wall-clock nanoseconds.
pub fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// `acct-7:42` → ("acct-7", 42).
pub fn parse_seq(value: &str) -> (String, u64) {
    let (k, s) = value
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("bad value {value:?}"));
    (k.to_string(), s.parse().unwrap())
}

/// Shared record of every handling.
pub type Log = Arc<Mutex<Vec<Rec>>>;

/// An in-process group member.
pub struct Member {
    pub idx: usize,
    stop: watch::Sender<u32>,
    task: JoinHandle<mykafkams::Result<ConsumeSummary>>,
}

/// The client id member `idx` shows in `kafka-consumer-groups`.
pub fn client_id(idx: usize) -> String {
    format!("member-{idx}")
}

/// The configuration of member `idx`.
pub fn member_config(idx: usize, topic: &str, group: &str, proto: Proto) -> ConsumerConfig {
    let cluster = ClusterConfig {
        client_id: client_id(idx),
        ..ClusterConfig::new(vec![bootstrap()])
    };
    let mut cfg = ConsumerConfig::new(cluster, topic, Partitions::Group, group);
    proto.configure(&mut cfg);
    cfg.workers = 4;
    cfg.stats_interval = Duration::ZERO;
    cfg.commit_interval = Duration::from_millis(200);
    cfg.fetch.max_wait = Duration::from_millis(200);
    cfg
}

/// Starts member `idx`; its handler takes `work` per message and records it.
pub fn spawn_member(idx: usize, cfg: ConsumerConfig, log: &Log, work: Duration) -> Member {
    let log = Arc::clone(log);
    let handler = move |m: &Message| -> Result<(), HandlerError> {
        let start = now_ns();
        if !work.is_zero() {
            std::thread::sleep(work);
        }
        let value = std::str::from_utf8(m.value.as_deref().unwrap()).unwrap();
        let (key, seq) = parse_seq(value);
        log.lock().push(Rec {
            member: idx,
            partition: m.partition,
            offset: m.offset,
            key,
            seq,
            start,
            end: now_ns(),
        });
        Ok(())
    };
    let (stop, rx) = watch::channel(0u32);
    let task = tokio::spawn(consumer::run(cfg, handler, FailurePolicy::Stop, rx));
    Member { idx, stop, task }
}

impl Member {
    /// SIGTERM: drain, commit, leave; returns the summary.
    pub async fn stop(self) -> ConsumeSummary {
        let _ = self.stop.send(1);
        self.task
            .await
            .expect("member task")
            .unwrap_or_else(|e| panic!("member {} failed: {e}", self.idx))
    }

    /// A crash: the member vanishes mid-work, committing nothing more and
    /// never leaving (the group notices after the session timeout).
    pub fn crash(self) {
        self.task.abort();
    }

    /// True once its run ended (an error would show in `stop`).
    pub fn finished(&self) -> bool {
        self.task.is_finished()
    }
}

/// Creates `topic` with `partitions` partitions.
pub fn create_topic(topic: &str, partitions: i32) {
    super::kafka_tool(
        "topics",
        &[
            "--bootstrap-server",
            &bootstrap(),
            "--create",
            "--topic",
            topic,
            "--partitions",
            &partitions.to_string(),
        ],
    );
}

/// Produces `keys` messages per round (`acct-<k>` → `acct-<k>:<seq>`) for
/// each seq of `rounds`, pausing `pause` between rounds; returns the count.
pub async fn produce_rounds(
    topic: &str,
    keys: usize,
    rounds: std::ops::Range<u64>,
    pause: Duration,
) -> u64 {
    let cluster_cfg = ClusterConfig::new(vec![bootstrap()]);
    let producer = TopicProducer::new(&cluster_cfg, ProducerConfig::new(topic))
        .await
        .unwrap();
    for seq in rounds {
        for k in 0..keys {
            let key = format!("acct-{k}");
            let value = format!("acct-{k}:{seq}");
            producer
                .send(Some(key.as_bytes()), value.as_bytes())
                .await
                .unwrap();
        }
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
    let summary = producer.close().await;
    assert_eq!(summary.failed, 0, "{:?}", summary.first_error);
    summary.acknowledged
}

/// One member row of `kafka-consumer-groups --describe --members --verbose`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Described {
    pub client_id: String,
    pub partitions: BTreeSet<i32>,
    /// KIP-848: the target assignment equals the current one.
    pub settled: bool,
}

/// `topic:0,1,2` (several topics separated by `;`) → partitions; `-` → none.
fn parse_assignment(s: &str) -> BTreeSet<i32> {
    s.split(';')
        .filter_map(|t| t.split_once(':'))
        .flat_map(|(_, ps)| ps.split(',').filter_map(|p| p.trim().parse().ok()))
        .collect()
}

/// The group's members as Kafka's own tool describes them; `None` if the
/// tool failed (e.g. the group does not exist yet).
pub fn describe_members(group: &str) -> Option<Vec<Described>> {
    let out = super::try_kafka_tool(
        "consumer-groups",
        &[
            "--bootstrap-server",
            &bootstrap(),
            "--describe",
            "--group",
            group,
            "--members",
            "--verbose",
        ],
    );
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines
        .find(|l| l.starts_with("GROUP"))?
        .split_whitespace()
        .collect();
    let col = |name: &str| header.iter().position(|h| *h == name);
    let client = col("CLIENT-ID")?;
    let current = col("CURRENT-ASSIGNMENT").or_else(|| col("ASSIGNMENT"))?;
    let target = col("TARGET-ASSIGNMENT");
    Some(
        lines
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .filter(|f| f.len() > current)
            .map(|f| {
                let partitions = parse_assignment(f[current]);
                let settled = match target.and_then(|t| f.get(t)) {
                    Some(&"-") | None => true,
                    Some(t) => parse_assignment(t) == partitions,
                };
                Described {
                    client_id: f[client].to_string(),
                    partitions,
                    settled,
                }
            })
            .collect(),
    )
}

/// Waits until Kafka describes `members` members (by client id) that split
/// all `partitions` partitions between them, each owning some, and returns
/// client id → partitions.
pub async fn wait_for_split(
    group: &str,
    members: &[String],
    partitions: i32,
    within: Duration,
) -> BTreeMap<String, BTreeSet<i32>> {
    let deadline = Instant::now() + within;
    let wanted: BTreeSet<String> = members.iter().cloned().collect();
    loop {
        let g = group.to_string();
        let described = tokio::task::spawn_blocking(move || describe_members(&g))
            .await
            .unwrap();
        if let Some(rows) = &described {
            let ids: BTreeSet<String> = rows.iter().map(|r| r.client_id.clone()).collect();
            let total: usize = rows.iter().map(|r| r.partitions.len()).sum();
            let union: BTreeSet<i32> = rows.iter().flat_map(|r| r.partitions.clone()).collect();
            if ids == wanted
                && rows.iter().all(|r| r.settled && !r.partitions.is_empty())
                && total == partitions as usize
                && union == (0..partitions).collect()
            {
                return rows
                    .iter()
                    .map(|r| (r.client_id.clone(), r.partitions.clone()))
                    .collect();
            }
        }
        assert!(
            Instant::now() < deadline,
            "group {group} did not settle on {members:?} sharing {partitions} partitions within {within:?}; last seen {described:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Waits until `log` holds at least `n` records and then nothing new for a
/// moment; fails after `within`.
pub async fn wait_for_records(log: &Log, n: usize, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let have = log.lock().len();
        if have >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {have} of {n} messages handled within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Checks that every `(key, seq)` of `keys` × `per_key` was handled, and
/// that within each key handlings never overlap in time and never skip
/// ahead: the next one is the next sequence number, or (only for a
/// redelivery, when `redelivery_ok`) an earlier one. Returns the
/// redelivered records (second and later handlings).
pub fn check_keys(log: &[Rec], keys: usize, per_key: u64, redelivery_ok: bool) -> Vec<Rec> {
    let mut by_key: HashMap<&str, Vec<&Rec>> = HashMap::new();
    for r in log {
        by_key.entry(r.key.as_str()).or_default().push(r);
    }
    assert_eq!(by_key.len(), keys, "keys handled");
    let mut redelivered = Vec::new();
    for (key, recs) in by_key.iter_mut() {
        recs.sort_by_key(|r| r.start);
        let mut seen = BTreeSet::new();
        let mut high: Option<u64> = None;
        for (i, r) in recs.iter().enumerate() {
            if i > 0 {
                let prev = recs[i - 1];
                assert!(
                    r.start >= prev.end,
                    "key {key}: seq {} (member {}) started before seq {} (member {}) ended",
                    r.seq,
                    r.member,
                    prev.seq,
                    prev.member
                );
            }
            let next = high.map_or(0, |h| h + 1);
            assert!(
                r.seq <= next,
                "key {key}: seq {} handled before seq {next} (lost or out of order)",
                r.seq
            );
            if !seen.insert(r.seq) {
                assert!(
                    redelivery_ok,
                    "key {key}: seq {} handled twice (member {})",
                    r.seq, r.member
                );
                redelivered.push((*r).clone());
            } else if r.seq < next {
                panic!(
                    "key {key}: seq {} first handled after seq {}",
                    r.seq,
                    next - 1
                );
            }
            high = Some(high.map_or(r.seq, |h| h.max(r.seq)));
        }
        assert_eq!(
            seen,
            (0..per_key).collect::<BTreeSet<_>>(),
            "key {key}: handled sequence numbers"
        );
    }
    redelivered
}

/// Checks that no partition was handled by two members at once: in each
/// partition's handlings (by start time) a new member starts only after
/// the previous one's last handling ended, and the owner changes at most
/// `max_owner_changes` times (two members taking turns on one partition,
/// however briefly, would change it far more often).
pub fn check_no_overlap(log: &[Rec], max_owner_changes: usize) {
    let mut by_partition: BTreeMap<i32, Vec<&Rec>> = BTreeMap::new();
    for r in log {
        by_partition.entry(r.partition).or_default().push(r);
    }
    for (p, recs) in by_partition.iter_mut() {
        recs.sort_by_key(|r| r.start);
        let mut last_end: BTreeMap<usize, (u128, i64)> = BTreeMap::new();
        let mut changes = 0;
        for (i, r) in recs.iter().enumerate() {
            if i > 0 && recs[i - 1].member != r.member {
                changes += 1;
            }
            for (&m, &(end, offset)) in &last_end {
                assert!(
                    m == r.member || end <= r.start,
                    "partition {p}: member {} started offset {} at {} while member {m} was still handling offset {offset} (until {end})",
                    r.member,
                    r.offset,
                    r.start
                );
            }
            let e = last_end.entry(r.member).or_insert((0, 0));
            if r.end > e.0 {
                *e = (r.end, r.offset);
            }
        }
        assert!(
            changes <= max_owner_changes,
            "partition {p} changed hands {changes} times (at most {max_owner_changes} expected): members took turns on it"
        );
    }
}

/// The longest stretch (ns) within `[from, to]` in which `member` handled
/// none of `partitions`.
pub fn longest_pause(
    log: &[Rec],
    member: usize,
    partitions: &BTreeSet<i32>,
    from: u128,
    to: u128,
) -> u128 {
    let mut ends: Vec<u128> = log
        .iter()
        .filter(|r| r.member == member && partitions.contains(&r.partition))
        .map(|r| r.end)
        .filter(|e| *e >= from && *e <= to)
        .collect();
    ends.sort_unstable();
    let mut longest = 0;
    let mut last = from;
    for e in ends {
        longest = longest.max(e - last);
        last = e;
    }
    longest.max(to - last)
}

/// Records handled by each member within `[from, to]` (ns).
pub fn handled_between(log: &[Rec], from: u128, to: u128) -> BTreeMap<usize, usize> {
    let mut out = BTreeMap::new();
    for r in log.iter().filter(|r| r.end >= from && r.end <= to) {
        *out.entry(r.member).or_default() += 1;
    }
    out
}
