//! What the integration tests share: the real broker's address, unique names,
//! the two binaries, and Kafka's own admin tools.
//!
//! Without a broker the tests FAIL with a message saying how to start one: a
//! silently skipped integration test proves nothing.
#![allow(dead_code)] // each test crate uses a different subset

pub mod broker;
pub mod cluster;
pub mod members;
pub mod processes;
pub mod proxy;
pub mod secure;
pub mod segments;
pub mod sequences;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The broker under test: `KAFKA_BOOTSTRAP`, default `127.0.0.1:9092`.
pub fn bootstrap() -> String {
    std::env::var("KAFKA_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:9092".to_string())
}

/// Returns the bootstrap address, failing the test unless a broker accepts
/// connections there.
pub fn require_broker() -> String {
    let addr = bootstrap();
    let reachable = std::net::ToSocketAddrs::to_socket_addrs(addr.as_str())
        .ok()
        .into_iter()
        .flatten()
        .any(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok());
    assert!(
        reachable,
        "no Kafka broker at {addr}: start one with `just kafka-up` \
         (or set KAFKA_BOOTSTRAP to a running broker)"
    );
    addr
}

/// A name no other run or test uses.
pub fn unique(prefix: &str) -> String {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{prefix}-{}-{nanos}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// A localhost port nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// The `producer` binary of this build.
pub fn producer() -> Command {
    Command::new(env!("CARGO_BIN_EXE_producer"))
}

/// An example of this build (`cargo test` builds them next to the test
/// binaries, in `target/<profile>/examples/`; `cargo test --test NAME`
/// alone does not, so run `cargo build --examples` first after a change).
pub fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    let path = dir.join("examples").join(name);
    assert!(
        path.exists(),
        "{} not found: `cargo test` builds the examples (or run `cargo build --examples`)",
        path.display()
    );
    path
}

/// The `consumer` binary of this build.
pub fn consumer() -> Command {
    Command::new(env!("CARGO_BIN_EXE_consumer"))
}

/// Runs `cmd` with `stdin` as its input and returns its output.
pub fn run_with_input(mut cmd: Command, stdin: &[u8]) -> Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning binary");
    let mut input = child.stdin.take().unwrap();
    match input.write_all(stdin) {
        // A run that fails before reading (a usage error) may exit first.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => other.unwrap(),
    }
    drop(input);
    child.wait_with_output().unwrap()
}

/// Produces `lines` under `key` through our producer binary, creating the topic.
pub fn produce_lines(topic: &str, partitions: i32, key: &str, lines: &str) {
    let mut cmd = producer();
    cmd.args([&bootstrap(), topic, key, "--create-topic", "--partitions"])
        .arg(partitions.to_string());
    let out = run_with_input(cmd, lines.as_bytes());
    assert!(
        out.status.success(),
        "producer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Creates `topic` with one partition and these `--config` settings
/// (`max.message.bytes=20000`, ...) with Kafka's own admin tool.
pub fn create_topic_with(topic: &str, config: &[&str]) {
    let addr = bootstrap();
    let mut args = vec![
        "--bootstrap-server",
        addr.as_str(),
        "--create",
        "--topic",
        topic,
        "--partitions",
        "1",
        "--replication-factor",
        "1",
    ];
    for c in config {
        args.extend(["--config", c]);
    }
    kafka_tool("topics", &args);
}

/// Runs one of Kafka's own admin tools through the launcher
/// (`docker/kafka-local.sh tool`), whatever its exit status.
pub fn try_kafka_tool(name: &str, args: &[&str]) -> Output {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docker/kafka-local.sh");
    Command::new("bash")
        .arg(script)
        .arg("tool")
        .arg(name)
        .args(args)
        .output()
        .expect("running docker/kafka-local.sh")
}

/// Runs one of Kafka's own admin tools, failing the test if it fails.
/// `kafka-topics` arguments creating `topic` with `partitions` partitions of
/// `replicas` replicas each, plus `config` (`key=value`) settings.
pub fn create_topic_args(
    topic: &str,
    partitions: u32,
    replicas: u32,
    config: &[&str],
) -> Vec<String> {
    let mut args: Vec<String> = ["--create", "--topic", topic, "--partitions"]
        .map(String::from)
        .into();
    args.push(partitions.to_string());
    args.push("--replication-factor".into());
    args.push(replicas.to_string());
    for c in config {
        args.push("--config".into());
        args.push(c.to_string());
    }
    args
}

pub fn kafka_tool(name: &str, args: &[&str]) -> Output {
    let out = try_kafka_tool(name, args);
    assert!(
        out.status.success(),
        "kafka tool {name} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// End offsets per partition as Kafka's GetOffsetShell reports them.
pub fn end_offsets(topic: &str) -> Vec<(i32, i64)> {
    let out = kafka_tool(
        "get-offsets",
        &["--bootstrap-server", &bootstrap(), "--topic", topic],
    );
    let mut v: Vec<(i32, i64)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut it = l.rsplitn(3, ':');
            let off = it.next()?.parse().ok()?;
            let p = it.next()?.parse().ok()?;
            Some((p, off))
        })
        .collect();
    v.sort();
    v
}

/// Produces `keys` × `per_key` messages through our producer binary: key
/// `acct-<k>`, value `acct-<k>:<seq>`, sequences 0.. per key in order.
/// Creates the topic with `partitions` partitions. Returns the message count.
pub fn produce_sequences(topic: &str, partitions: i32, keys: usize, per_key: usize) -> usize {
    let mut input = String::with_capacity(keys * per_key * 16);
    for seq in 0..per_key {
        for k in 0..keys {
            input.push_str(&format!("acct-{k}|acct-{k}:{seq}\n"));
        }
    }
    let mut cmd = producer();
    cmd.args([
        &bootstrap(),
        topic,
        "--key-separator",
        "|",
        "--create-topic",
        "--partitions",
        &partitions.to_string(),
    ]);
    let out = run_with_input(cmd, input.as_bytes());
    assert!(
        out.status.success(),
        "producer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    keys * per_key
}

/// Every record of `topic`'s `partition` from offset 0, read with rskafka
/// (what a dead-letter topic holds, headers included).
pub fn read_partition(topic: &str, partition: i32) -> Vec<rskafka::record::Record> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = rskafka::client::ClientBuilder::new(vec![bootstrap()])
            .build()
            .await
            .unwrap();
        let pc = client
            .partition_client(
                topic.to_string(),
                partition,
                rskafka::client::partition::UnknownTopicHandling::Retry,
            )
            .await
            .unwrap();
        pc.fetch_records(0, 1..1_000_000, 1_000)
            .await
            .unwrap()
            .0
            .into_iter()
            .map(|r| r.record)
            .collect()
    })
}

/// Sends `signal` to a child process.
pub fn signal(child: &std::process::Child, signal: i32) {
    // SAFETY: kill(2) on a pid we own; no memory is involved.
    let rc = unsafe { libc::kill(child.id() as i32, signal) };
    assert_eq!(rc, 0, "kill({}, {signal})", child.id());
}

/// Parses `committed p0=12 p1=40` from a consumer's summary line.
pub fn committed_from_summary(stderr: &str) -> std::collections::BTreeMap<i32, i64> {
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.contains("; committed "))
        .unwrap_or_else(|| panic!("no summary line in: {stderr}"));
    line.split("; committed ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .filter_map(|kv| {
            let (p, o) = kv.strip_prefix('p')?.split_once('=')?;
            Some((p.parse().ok()?, o.parse().ok()?))
        })
        .collect()
}

/// `kafka-consumer-groups --describe` rows for `group` as (partition, current offset, lag).
pub fn describe_group(group: &str, topic: &str) -> Vec<(i32, i64, i64)> {
    let out = kafka_tool(
        "consumer-groups",
        &[
            "--bootstrap-server",
            &bootstrap(),
            "--describe",
            "--group",
            group,
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = loop {
        let l = lines
            .next()
            .unwrap_or_else(|| panic!("no header in: {text}"));
        if l.starts_with("GROUP") {
            break l.split_whitespace().collect();
        }
    };
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (t, p, cur, lag) = (
        col("TOPIC"),
        col("PARTITION"),
        col("CURRENT-OFFSET"),
        col("LAG"),
    );
    let mut rows: Vec<(i32, i64, i64)> = lines
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() > lag && f[t] == topic)
        .map(|f| {
            (
                f[p].parse().unwrap(),
                f[cur].parse().unwrap_or(-1),
                f[lag].parse().unwrap_or(-1),
            )
        })
        .collect();
    rows.sort();
    rows
}

/// Runs `cmd` to completion like `output()`, but kills it and fails the test
/// if it has not exited within `secs` seconds (a hang must not hang CI).
pub fn output_within(mut cmd: Command, secs: u64) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning binary");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            // SAFETY: kill(2) on the pid of our own child.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("{cmd:?} did not finish within {secs} s");
        }
    }
}

/// Runs the consumer with `args`, asserts it succeeded, and returns its stdout.
pub fn consume_ok(args: &[&str]) -> String {
    let out = consumer().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "consumer {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}
