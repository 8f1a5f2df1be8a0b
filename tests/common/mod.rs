//! What the integration tests share: the real broker's address, unique names,
//! the two binaries, and Kafka's own admin tools.
//!
//! Without a broker the tests FAIL with a message saying how to start one: a
//! silently skipped integration test proves nothing.
#![allow(dead_code)] // each test crate uses a different subset

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
    input.write_all(stdin).unwrap();
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

/// Runs one of Kafka's own admin tools through the launcher (`docker/kafka-local.sh tool`).
pub fn kafka_tool(name: &str, args: &[&str]) -> Output {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docker/kafka-local.sh");
    let out = Command::new("bash")
        .arg(script)
        .arg("tool")
        .arg(name)
        .args(args)
        .output()
        .expect("running docker/kafka-local.sh");
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
