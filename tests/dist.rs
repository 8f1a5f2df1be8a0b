//! The static musl binaries of `just dist` (target/dist/, or
//! `MYKAFKAMS_DIST_DIR`) against the real broker: they are static, they
//! resolve a host name and round-trip keyed lines in order, a panicking
//! handler is caught and retried (panic = "unwind" in the dist profile), and
//! `--version` names the commit and the musl target.
//!
//! They need the dist build, so they are `#[ignore]`d in `just test`;
//! `just test-dist` builds it and runs them (as `.ci/run` does).

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use common::{require_broker, run_with_input, unique};

fn dist(bin: &str) -> PathBuf {
    let dir = std::env::var_os("MYKAFKAMS_DIST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/dist"));
    let path = dir.join(bin);
    assert!(
        path.is_file(),
        "{} is missing: run `just dist` first (or `just test-dist`)",
        path.display()
    );
    path
}

/// The broker by host name (`localhost`, from /etc/hosts), not by address:
/// a static musl binary must still resolve names.
fn broker_by_name() -> String {
    let addr = require_broker();
    let port = addr.rsplit(':').next().unwrap().to_string();
    format!("localhost:{port}")
}

#[test]
#[ignore = "needs `just dist`; run by `just test-dist`"]
fn the_dist_binaries_are_static() {
    for bin in ["producer", "consumer", "mykafkams-demo"] {
        let out = Command::new("ldd").arg(dist(bin)).output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains("not a dynamic executable") || text.contains("statically linked"),
            "{bin}: ldd says {text}"
        );
    }
}

#[test]
#[ignore = "needs `just dist`; run by `just test-dist`"]
fn the_dist_binaries_round_trip_keyed_lines_in_order_by_host_name() {
    let broker = broker_by_name();
    let topic = unique("dist");
    let mut lines = String::new();
    for seq in 0..200 {
        for k in 0..10 {
            lines.push_str(&format!("k{k}|k{k}:{seq}\n"));
        }
    }
    let mut produce = Command::new(dist("producer"));
    produce.args([&broker, &topic, "--key-separator", "|", "--create-topic"]);
    produce.args(["--partitions", "3"]);
    let out = run_with_input(produce, lines.as_bytes());
    assert!(
        out.status.success(),
        "producer: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = Command::new(dist("consumer"))
        .args([
            &broker,
            &topic,
            "g",
            "--partitions",
            "all",
            "--from",
            "earliest",
        ])
        .args(["--exit-at-end", "--workers", "8", "--stats-interval", "0"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "consumer: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut per_key: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let (key, seq) = line.split_once(':').expect("key:seq");
        per_key
            .entry(key.to_string())
            .or_default()
            .push(seq.parse().unwrap());
    }
    assert_eq!(per_key.len(), 10, "every key arrives");
    for (key, seqs) in per_key {
        assert_eq!(seqs, (0..200).collect::<Vec<_>>(), "{key}: in order, once");
    }
}

#[test]
#[ignore = "needs `just dist`; run by `just test-dist`"]
fn a_panicking_handler_is_caught_and_retried_in_the_dist_build() {
    let out = Command::new(dist("mykafkams-demo"))
        .args([
            "--brokers",
            &broker_by_name(),
            "--events",
            "3000",
            "--keys",
            "30",
        ])
        .args(["--work-ms", "0", "--sample", "0", "--panic-every", "100"])
        .arg("--json")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed: {stderr}");
    assert!(!stderr.contains("panicked at"), "a panic trace: {stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json report");
    // 6 partitions of 500 events: offsets 0, 100, ..., 400 of each panic once.
    assert_eq!(report["panics"], 30, "{report}");
    assert_eq!(report["handled"], 3000, "{report}");
    assert_eq!(report["lost"], 0, "{report}");
    assert_eq!(report["order_violations"], 0, "{report}");
}

#[test]
#[ignore = "needs `just dist`; run by `just test-dist`"]
fn version_names_the_commit_and_the_musl_target() {
    for bin in ["producer", "consumer"] {
        let out = Command::new(dist(bin)).arg("--version").output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            text.starts_with(&format!("{bin} {}", env!("CARGO_PKG_VERSION"))),
            "{text}"
        );
        assert!(text.contains("x86_64-unknown-linux-musl"), "{text}");
        assert!(text.contains("zstd"), "{text}");
        assert!(text.contains("allocator: dlmalloc"), "{text}");
        let commit = text
            .lines()
            .find_map(|l| l.strip_prefix("commit:"))
            .map(str::trim)
            .unwrap_or_default();
        assert!(
            commit.len() >= 7 && commit.chars().all(|c| c.is_ascii_hexdigit()),
            "{text}"
        );
    }
}
