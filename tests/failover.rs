//! Broker crashes in a three-node cluster (the launcher's `KAFKA_NODES=3`,
//! replication factor 3, min.insync.replicas 2): a group member keeps
//! reading, in per-key order and without repeats, while the leader of a
//! partition and then the group's coordinator are killed and restarted.
//!
//! The tests share one cluster, started by the first of them and stopped
//! when the test binary exits; they take turns on it, since each crashes its
//! nodes (and the machine has two cores).

mod common;

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use common::broker::launcher;
use common::{consumer, producer, run_with_input, unique};

/// Node 1's port; nodes 2 and 3 are 10 and 20 above.
const BASE_PORT: u16 = 9392;
const NODES: [u16; 3] = [1, 2, 3];

fn node_port(node: u16) -> u16 {
    BASE_PORT + 10 * (node - 1)
}

fn bootstrap() -> String {
    NODES
        .map(|n| format!("127.0.0.1:{}", node_port(n)))
        .join(",")
}

/// The launcher's environment for the whole cluster.
fn cluster_env() -> [(&'static str, String); 2] {
    [
        ("KAFKA_NODES", "3".to_string()),
        ("KAFKA_PORT", BASE_PORT.to_string()),
    ]
}

/// The launcher's environment for one node.
fn node_env(node: u16) -> [(&'static str, String); 1] {
    [("KAFKA_PORT", node_port(node).to_string())]
}

/// The three-node cluster the tests share (see the module docs).
struct Cluster;

static CLUSTER: OnceLock<Cluster> = OnceLock::new();
static TURN: Mutex<()> = Mutex::new(());

/// Waits for this test's turn on the cluster, starting the cluster the
/// first time, and restarting any node an earlier (failed) test left down.
fn take_turn() -> (MutexGuard<'static, ()>, &'static Cluster) {
    let turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let cluster = CLUSTER.get_or_init(Cluster::start);
    cluster.heal();
    (turn, cluster)
}

/// Stops the cluster when the test binary exits (statics are never
/// dropped). It must not panic: that would abort the process.
extern "C" fn stop_cluster_at_exit() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("docker/kafka-local.sh");
    let _ = Command::new("bash")
        .arg(script)
        .arg("down")
        .envs(cluster_env())
        .output();
}

impl Cluster {
    fn start() -> Self {
        let _ = launcher("down", &cluster_env());
        let up = launcher("up", &cluster_env());
        assert!(
            up.status.success(),
            "{}",
            String::from_utf8_lossy(&up.stderr)
        );
        // SAFETY: atexit(3) with a function that takes nothing and never unwinds.
        let rc = unsafe { libc::atexit(stop_cluster_at_exit) };
        assert_eq!(rc, 0, "atexit");
        Cluster
    }

    /// Restarts the nodes that are not running.
    fn heal(&self) {
        for node in NODES {
            if !launcher("status", &node_env(node)).status.success() {
                eprintln!("failover: node {node} was down: restarting it");
                self.restart(node);
            }
        }
    }

    fn kill(&self, node: u16) {
        let out = launcher("kill", &node_env(node));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts a killed node again; returns once it serves metadata.
    fn restart(&self, node: u16) {
        let out = launcher("restart", &node_env(node));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs one of Kafka's tools against node `via`.
    fn tool(&self, name: &str, via: u16, args: &[&str]) -> String {
        let addr = format!("127.0.0.1:{}", node_port(via));
        let mut all = vec!["--bootstrap-server", addr.as_str()];
        all.extend_from_slice(args);
        String::from_utf8_lossy(&common::kafka_tool(name, &all).stdout).into_owned()
    }

    /// The node leading `partition` of `topic`, as Kafka's tool describes it.
    fn leader(&self, topic: &str, partition: i32, via: u16) -> u16 {
        let described = self.tool("topics", via, &["--describe", "--topic", topic]);
        described
            .lines()
            .find(|l| l.contains(&format!("Partition: {partition}\t")))
            .and_then(|l| l.split("Leader: ").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|id| id.parse().ok())
            .unwrap_or_else(|| panic!("no leader in: {described}"))
    }

    /// The node coordinating `group`.
    fn coordinator(&self, group: &str, via: u16) -> u16 {
        let described = self.tool(
            "consumer-groups",
            via,
            &["--describe", "--group", group, "--state"],
        );
        described
            .lines()
            .find(|l| l.starts_with(group))
            .and_then(|l| l.split('(').nth(1))
            .and_then(|rest| rest.split(')').next())
            .and_then(|id| id.trim().parse().ok())
            .unwrap_or_else(|| panic!("no coordinator in: {described}"))
    }
}

/// Produces `rounds` for each of 30 keys (`k<i>` → `k<i>:<seq>`).
fn produce(topic: &str, rounds: std::ops::Range<usize>, create: bool) {
    let mut lines = String::new();
    for seq in rounds {
        for k in 0..30 {
            lines.push_str(&format!("k{k}\tk{k}:{seq}\n"));
        }
    }
    let mut cmd = producer();
    cmd.args([&bootstrap(), topic, "--key-separator", "\t"]);
    if create {
        cmd.args([
            "--create-topic",
            "--partitions",
            "3",
            "--replication-factor",
            "3",
        ]);
    }
    let out = run_with_input(cmd, lines.as_bytes());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_group_member_reads_on_through_leader_and_coordinator_crashes() {
    let started = Instant::now();
    let phase = |what: &str| {
        eprintln!(
            "failover: {what} at {:.1} s",
            started.elapsed().as_secs_f64()
        )
    };
    let (_turn, cluster) = take_turn();
    phase("cluster up");
    let topic = unique("failover");
    let group = unique("failover-g");
    produce(&topic, 0..20, true);

    let mut member = consumer()
        .args([
            &bootstrap(),
            &topic,
            &group,
            "--format",
            "json",
            "--stats-interval",
            "0",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = member.stdout.take().unwrap();
    let stderr = member.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let log = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut std::io::BufReader::new(stderr), &mut s);
        s
    });
    let mut lines = Vec::new();
    let wait_for = |n: usize, lines: &mut Vec<String>| {
        let deadline = Instant::now() + Duration::from_secs(90);
        while lines.len() < n {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(l) => lines.push(l),
                Err(_) => panic!("only {} of {n} messages arrived", lines.len()),
            }
        }
    };
    wait_for(600, &mut lines);
    phase("first 600 read");

    // The leader of partition 0 crashes; more data goes to the survivors.
    let leader = cluster.leader(&topic, 0, 1);
    let survivor = if leader == 1 { 2 } else { 1 };
    cluster.kill(leader);
    phase(&format!("node {leader} (leader of partition 0) killed"));
    produce(&topic, 20..40, false);
    wait_for(1200, &mut lines);
    phase("1200 read");
    cluster.restart(leader);
    phase("restarted");

    // Then the group's coordinator crashes.
    let coordinator = cluster.coordinator(&group, survivor);
    let survivor = if coordinator == 1 { 2 } else { 1 };
    cluster.kill(coordinator);
    phase(&format!(
        "node {coordinator} (the group's coordinator) killed"
    ));
    produce(&topic, 40..60, false);
    wait_for(1800, &mut lines);
    phase("1800 read");
    cluster.restart(coordinator);
    phase("restarted");

    let _ = Command::new("kill")
        .args(["-TERM", &member.id().to_string()])
        .status();
    let status = member.wait().unwrap();
    reader.join().unwrap();
    let log = log.join().unwrap();
    assert!(status.success(), "{log}");
    // Nothing more than the 1,800 arrived (no repeats), and each key's
    // values came in order.
    lines.extend(rx.try_iter());
    assert_eq!(lines.len(), 1800, "each message once");
    let mut seen: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let (key, seq) = v["value"].as_str().unwrap().split_once(':').unwrap();
        seen.entry(key.to_string())
            .or_default()
            .push(seq.parse().unwrap());
    }
    assert_eq!(seen.len(), 30);
    for (key, seqs) in seen {
        assert_eq!(seqs, (0..60).collect::<Vec<_>>(), "key {key}");
    }
    // The graceful stop committed everything.
    let described = cluster.tool(
        "consumer-groups",
        survivor,
        &["--describe", "--group", &group],
    );
    let committed: i64 = described
        .lines()
        .filter(|l| l.contains(&topic))
        .filter_map(|l| l.split_whitespace().nth(3)?.parse::<i64>().ok())
        .sum();
    assert_eq!(committed, 1800, "{described}");
}
