//! What the security tests share: the secure node's listeners and TLS
//! files, Kafka-style properties as `-X` flags, and running a binary at
//! `RUST_LOG=trace` while checking that no secret reaches its output.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use super::{producer, unique};

/// Every password, key password and token the security tests use; any of
/// them in a binary's output fails the test.
pub const SECRETS: &[&str] = &[
    "alice-secret",
    "scram256-secret",
    "scram512-secret",
    "carol-secret",
    "mallory-secret",
    "client-key-secret",
    "wrong-password-77",
];

/// The secure node's base port (PLAINTEXT; SASL_SSL is +2, SSL +3, SASL_PLAINTEXT +4).
pub fn base_port() -> u16 {
    std::env::var("KAFKA_SECURE_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(9292)
}

pub fn sasl_ssl() -> String {
    format!("localhost:{}", base_port() + 2)
}

pub fn ssl() -> String {
    format!("localhost:{}", base_port() + 3)
}

pub fn sasl_plaintext() -> String {
    format!("localhost:{}", base_port() + 4)
}

pub fn plaintext() -> String {
    format!("127.0.0.1:{}", base_port())
}

/// The launcher's TLS files; fails the test (with how to fix it) when the
/// secure node is not running.
pub fn tls_dir() -> PathBuf {
    let reachable = std::net::TcpStream::connect_timeout(
        &format!("127.0.0.1:{}", base_port() + 2).parse().unwrap(),
        Duration::from_secs(2),
    )
    .is_ok();
    assert!(
        reachable,
        "no secure Kafka node on 127.0.0.1:{}: start it with `just kafka-up-secure`",
        base_port() + 2
    );
    let state = std::env::var("KAFKA_STATE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/kafka-local"));
    state.join(base_port().to_string()).join("tls")
}

pub fn tls(file: &str) -> String {
    tls_dir().join(file).to_string_lossy().into_owned()
}

/// Properties as `-X key=value` arguments.
pub fn x(props: &[(&str, &str)]) -> Vec<String> {
    props
        .iter()
        .flat_map(|(k, v)| ["-X".to_string(), format!("{k}={v}")])
        .collect()
}

/// SASL_SSL with the test CA and one user.
pub fn sasl_ssl_props(mechanism: &str, user: &str, password: &str) -> Vec<(String, String)> {
    vec![
        ("bootstrap.servers".into(), sasl_ssl()),
        ("security.protocol".into(), "SASL_SSL".into()),
        ("sasl.mechanism".into(), mechanism.into()),
        ("sasl.username".into(), user.into()),
        ("sasl.password".into(), password.into()),
        ("ssl.ca.location".into(), tls("ca.pem")),
    ]
}

pub fn as_refs(props: &[(String, String)]) -> Vec<(&str, &str)> {
    props
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

/// Writes a properties file and returns its path.
pub fn properties_file(text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("{}.properties", unique("mykafkams-sec")));
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs `cmd` at RUST_LOG=trace with `input` on stdin, and fails the test if
/// any known secret (or `extra`) shows in its output.
pub fn run(mut cmd: Command, input: &[u8], extra: &[&str]) -> Output {
    use std::io::Write;
    cmd.env("RUST_LOG", "trace")
        .env_remove("KAFKA_BROKERS")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawning binary");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for secret in SECRETS.iter().chain(extra) {
        assert!(
            !all.contains(secret),
            "a secret ({} chars) was printed at RUST_LOG=trace",
            secret.len()
        );
    }
    out
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The `error: ...` lines of a run's stderr (trace logging around them).
pub fn error_lines(out: &Output) -> Vec<String> {
    stderr(out)
        .lines()
        .filter(|l| l.starts_with("error: "))
        .map(str::to_string)
        .collect()
}

/// Produces `rounds` messages for each of `keys` keys (`k<i>` → `k<i>:<seq>`)
/// into a new topic of 3 partitions, through `props`.
pub fn produce_keyed(
    props: &[(&str, &str)],
    topic: &str,
    keys: usize,
    rounds: usize,
    extra: &[&str],
) {
    let mut lines = String::new();
    for seq in 0..rounds {
        for k in 0..keys {
            lines.push_str(&format!("k{k}\tk{k}:{seq}\n"));
        }
    }
    let mut cmd = producer();
    cmd.args(x(props)).args([
        topic,
        "--key-separator",
        "\t",
        "--create-topic",
        "--partitions",
        "3",
    ]);
    let out = run(cmd, lines.as_bytes(), extra);
    assert!(
        out.status.success(),
        "producer failed: {:?}",
        error_lines(&out)
    );
}

/// Checks JSON lines from the consumer: every key's values arrive in order
/// and complete (`rounds` each).
pub fn assert_in_order(stdout: &[u8], keys: usize, rounds: usize) {
    let mut seen: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for line in String::from_utf8_lossy(stdout).lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        let value = v["value"].as_str().unwrap();
        let (key, seq) = value.split_once(':').unwrap();
        assert_eq!(v["key"].as_str().unwrap(), key);
        seen.entry(key.to_string())
            .or_default()
            .push(seq.parse().unwrap());
    }
    assert_eq!(seen.len(), keys, "every key arrives");
    for (key, seqs) in seen {
        assert_eq!(
            seqs,
            (0..rounds).collect::<Vec<_>>(),
            "key {key} in order, once each"
        );
    }
}

/// An unsigned JWT (`"alg":"none"`) for `sub`, as the broker's unsecured
/// validator accepts it, expiring in `secs`.
pub fn unsecured_jwt(sub: &str, secs: u64) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = format!(
        r#"{{"sub":"{sub}","iat":{now},"exp":{},"jti":"{}"}}"#,
        now + secs,
        unique("t")
    );
    format!(
        "{}.{}.",
        b64.encode(r#"{"alg":"none"}"#),
        b64.encode(claims)
    )
}
