//! The three-node cluster of the failover tests and the broker fault loop
//! (the launcher's `KAFKA_NODES=3`, replication factor 3,
//! min.insync.replicas 2, on 9392, 9402, 9412): started by the first test
//! of a test binary that takes a turn on it, stopped when that binary
//! exits; tests take turns on it, since each crashes its nodes (and the
//! machine has two cores).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock};

use super::broker::launcher;

/// Node 1's port; nodes 2 and 3 are 10 and 20 above.
pub const BASE_PORT: u16 = 9392;
/// The node numbers.
pub const NODES: [u16; 3] = [1, 2, 3];

/// The client port of `node` (1-based).
pub fn node_port(node: u16) -> u16 {
    BASE_PORT + 10 * (node - 1)
}

/// Every node's address, as a bootstrap list.
pub fn bootstrap() -> String {
    NODES
        .map(|n| format!("127.0.0.1:{}", node_port(n)))
        .join(",")
}

/// The launcher's environment for the whole cluster.
pub fn cluster_env() -> [(&'static str, String); 2] {
    [
        ("KAFKA_NODES", "3".to_string()),
        ("KAFKA_PORT", BASE_PORT.to_string()),
    ]
}

/// The launcher's environment for one node.
pub fn node_env(node: u16) -> [(&'static str, String); 1] {
    [("KAFKA_PORT", node_port(node).to_string())]
}

/// The three-node cluster the tests share (see the module docs).
pub struct Cluster;

static CLUSTER: OnceLock<Cluster> = OnceLock::new();
static TURN: Mutex<()> = Mutex::new(());

/// Waits for this test's turn on the cluster, starting the cluster the
/// first time, and restarting any node an earlier (failed) test left down.
pub fn take_turn() -> (MutexGuard<'static, ()>, &'static Cluster) {
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

/// One partition as `kafka-topics --describe` shows it.
#[derive(Debug)]
pub struct PartitionState {
    /// The partition.
    pub partition: i32,
    /// Its leader; `None` while no replica can lead.
    pub leader: Option<u16>,
    /// Its replicas.
    pub replicas: Vec<u16>,
    /// Its in-sync replicas.
    pub isr: Vec<u16>,
}

impl PartitionState {
    /// Parses `\tTopic: t\tPartition: 0\tLeader: 2\tReplicas: 2,3,1\tIsr: 2,3,1...`.
    pub fn parse(line: &str) -> Option<PartitionState> {
        let fields: BTreeMap<&str, &str> = line
            .split('\t')
            .filter_map(|f| f.trim_start().split_once(": "))
            .collect();
        let nodes = |list: &str| -> Vec<u16> {
            list.split(',')
                .filter_map(|n| n.trim().parse().ok())
                .collect()
        };
        Some(PartitionState {
            partition: fields.get("Partition")?.trim().parse().ok()?,
            // "none" while no replica can lead.
            leader: fields.get("Leader")?.trim().parse().ok(),
            replicas: nodes(fields.get("Replicas")?),
            isr: nodes(fields.get("Isr")?),
        })
    }
}

impl Cluster {
    /// Starts the cluster (after stopping one a crashed run left).
    pub fn start() -> Self {
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
    pub fn heal(&self) {
        for node in NODES {
            if !launcher("status", &node_env(node)).status.success() {
                eprintln!("failover: node {node} was down: restarting it");
                self.restart(node);
            }
        }
    }

    /// SIGKILLs `node`, keeping its data.
    pub fn kill(&self, node: u16) {
        let out = launcher("kill", &node_env(node));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts a killed node again; returns once it serves metadata.
    pub fn restart(&self, node: u16) {
        let out = launcher("restart", &node_env(node));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs one of Kafka's tools against node `via`.
    pub fn tool(&self, name: &str, via: u16, args: &[&str]) -> String {
        let addr = format!("127.0.0.1:{}", node_port(via));
        let mut all = vec!["--bootstrap-server", addr.as_str()];
        all.extend_from_slice(args);
        String::from_utf8_lossy(&super::kafka_tool(name, &all).stdout).into_owned()
    }

    /// Creates `topic` with `partitions` partitions, each on all three
    /// nodes with `min.insync.replicas=2` (an acknowledged write survives
    /// one node's crash), through node 1.
    pub fn create_topic(&self, topic: &str, partitions: u32) {
        let args = super::create_topic_args(topic, partitions, 3, &["min.insync.replicas=2"]);
        self.tool(
            "topics",
            1,
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
        );
    }

    /// `kafka-topics --describe` of `topic`, through node `via`: the text,
    /// and its partitions in order.
    pub fn describe(&self, topic: &str, via: u16) -> (String, Vec<PartitionState>) {
        let text = self.tool("topics", via, &["--describe", "--topic", topic]);
        let mut partitions: Vec<PartitionState> =
            text.lines().filter_map(PartitionState::parse).collect();
        partitions.sort_by_key(|p| p.partition);
        (text, partitions)
    }

    /// The node leading `partition` of `topic`, as Kafka's tool describes it.
    pub fn leader(&self, topic: &str, partition: i32, via: u16) -> u16 {
        let (text, partitions) = self.describe(topic, via);
        partitions
            .iter()
            .find(|p| p.partition == partition)
            .and_then(|p| p.leader)
            .unwrap_or_else(|| panic!("no leader of partition {partition} in: {text}"))
    }

    /// The node coordinating `group`.
    pub fn coordinator(&self, group: &str, via: u16) -> u16 {
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
