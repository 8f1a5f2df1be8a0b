//! Loop 4, connection faults: a group member (our consumer binary) and our
//! producer talk to a broker of the loop's own only through the relay of
//! `common::proxy` (the broker advertises the relay's port, so bootstrap,
//! metadata, fetch, produce, the coordinator's group and offset requests all
//! pass through it). About once a second the loop arms one fault for the
//! next request of one kind, chosen in turn (fetch, produce, commit,
//! heartbeat or any), and once it has fired a second one for the requests
//! of the recovery (metadata, find-coordinator, offset fetch, ...). A fault
//! (seeded, so a run can be repeated with `MYKAFKAMS_CHAOS_SEED`) cuts the
//! connection at the request or at its response, stalls it past the
//! client's timeout then cuts it or lets it resume, or half-closes it toward
//! the client or the broker.
//!
//! Target: nothing lost, no key out of order, and the consumer never exits
//! (no restart is allowed here). The producer's side is checked too: every
//! line it acknowledged is in the topic once, where it said, each key in order.
//!
//! Timeouts: the producer runs with `--request-timeout-ms 1500`, so every
//! stall outlasts it. The consumer's heartbeats wait at most a heartbeat
//! interval (1 s on these brokers), so every stall outlasts that too; its
//! other requests wait 30 s (fetch: 60 s beyond the long poll), which the
//! consumer cannot be told to shorten (`request.timeout.ms` is a producer
//! property), so only the full loop has stalls that long.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::broker::LocalBroker;
use crate::common::processes::{Feeder, Running, collect, fail_with_log, spawn_member_with};
use crate::common::proxy::{Fault, Proxy, Side};
use crate::common::sequences::{Tally, read_log, read_report, report_problems};
use crate::common::{producer, signal, unique};
use crate::ledger::Ledger;
use crate::rng::Rng;
use crate::table::{self, Row};
use crate::{Scale, scale};

/// The loop's broker listens here (its controller one above); the relay
/// listens two above and is what the broker advertises.
const BROKER_PORT: u16 = 9592;
const PROXY_PORT: u16 = BROKER_PORT + 2;

/// Keys and partitions of the stream; lines are fed at [`RATE`] a second.
const KEYS: usize = 40;
const PARTITIONS: u32 = 4;
const RATE: usize = 1_000;
/// Lines per feeding step (every `STEP / RATE` seconds).
const STEP: usize = 100;

/// The request kinds faults are aimed at, in turn, with their api keys:
/// the steady traffic of a running consumer and producer.
const TARGETS: &[(&str, &[i16])] = &[
    ("fetch", &[1]),
    ("produce", &[0]),
    ("commit", &[8]),
    ("heartbeat", &[12, 68]),
    ("any", &[]),
];

/// The requests a client sends while it recovers from a broken connection
/// (metadata, find-coordinator, offset fetch, list-offsets, join and sync,
/// init-producer-id): a second fault is aimed at them right after each
/// fault above. (Not ApiVersions: every new connection starts with it, so
/// it would take nearly every such fault; `any` hits it often enough.)
const RECOVERY: &[i16] = &[3, 10, 9, 2, 11, 14, 22];

/// What the consumer logs when the group fenced it and it dropped its
/// partitions uncommitted (KIP-848 heartbeat, a fenced commit, no word from
/// the coordinator for a session timeout).
const FENCED: &[&str] = &[
    "without committing and rejoining",
    "dropping every partition and rejoining",
    "no word from the group coordinator for a session timeout",
    "dropped without committing",
];

/// How long an armed fault waits for its kind of request before the loop
/// moves on.
const ARM_WAIT: Duration = Duration::from_secs(2);

/// One fault, drawn from `rng`. Stalls last 2-4 s (longer than the
/// producer's request timeout and the heartbeat's); in the full loop every
/// eighth stall lasts 35 s, past the consumer's 30 s request timeout.
fn draw_fault(rng: &mut Rng, scale: Scale, stalls: &mut u32) -> Fault {
    let kind = rng.below(6);
    let pause = if kind == 2 || kind == 3 {
        *stalls += 1;
        if scale == Scale::Full && *stalls % 8 == 0 {
            Duration::from_secs(35)
        } else {
            rng.millis(2_000, 3_999)
        }
    } else {
        Duration::ZERO
    };
    match kind {
        0 => Fault::CutAtRequest,
        1 => Fault::CutAtResponse,
        2 => Fault::Stall { pause, cut: true },
        3 => Fault::Stall { pause, cut: false },
        4 => Fault::HalfClose(Side::Client),
        _ => Fault::HalfClose(Side::Broker),
    }
}

/// The name of an api key the loop aims at (its number otherwise).
fn api_name(key: i16) -> String {
    match key {
        0 => "produce".into(),
        1 => "fetch".into(),
        2 => "list-offsets".into(),
        3 => "metadata".into(),
        8 => "commit".into(),
        9 => "offset-fetch".into(),
        10 => "find-coordinator".into(),
        11 => "join".into(),
        12 | 68 => "heartbeat".into(),
        14 => "sync".into(),
        18 => "api-versions".into(),
        22 => "init-producer-id".into(),
        other => format!("api{other}"),
    }
}

/// `a 3, b 1`: a count per name.
fn counts_of<K: std::fmt::Display>(m: &BTreeMap<K, u32>) -> String {
    m.iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[test]
fn connection_faults_lose_nothing_and_the_consumer_stays_up() {
    let _turn = crate::one_at_a_time();
    let scale = scale();
    let variants: &[(&str, &[&str])] = match scale {
        Scale::Short => &[("consumer", &["--group-protocol", "consumer"])],
        Scale::Full => &[
            ("consumer", &["--group-protocol", "consumer"]),
            (
                "classic",
                &[
                    "--group-protocol",
                    "classic",
                    "--assignor",
                    "cooperative-sticky",
                    "--session-timeout",
                    "6s",
                    "--heartbeat-interval",
                    "500ms",
                ],
            ),
        ],
    };
    let proxy = Proxy::start(PROXY_PORT, BROKER_PORT);
    let broker = LocalBroker::start_advertised(BROKER_PORT, PROXY_PORT);
    let mut rng = Rng::for_loop("connection faults", Some(15_004));
    for (label, flags) in variants {
        run_variant(&proxy, &broker, &mut rng, scale, label, flags);
    }
}

/// One run of the loop with the consumer's group `flags`.
fn run_variant(
    proxy: &Proxy,
    broker: &LocalBroker,
    rng: &mut Rng,
    scale: Scale,
    label: &str,
    flags: &[&str],
) {
    let started = Instant::now();
    let per_key = scale.pick(600, 6_000);
    let lines = KEYS * per_key;
    let topic = unique("chaos-conn");
    broker.create_topic(&topic, PARTITIONS);

    let (mut member, values, member_log) =
        spawn_member_with(&proxy.addr(), &topic, &unique("chaos-conn-g"), flags);
    let report =
        std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{topic}.report"));
    let mut cmd = producer();
    cmd.args([&proxy.addr(), &topic, "--key-separator", "|", "--report"])
        .arg(&report)
        .args(["--request-timeout-ms", "1500"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut writer = Running(cmd.spawn().unwrap());
    let writer_log = collect(writer.0.stderr.take().unwrap());
    let pacer = Feeder::start(writer.0.stdin.take().unwrap(), KEYS).pace(lines, RATE, STEP);

    // Faults while the lines flow: one armed at a time, aimed at the next
    // kind of steady request in turn, then at the requests of the recovery.
    let mut seen: Vec<String> = Vec::new();
    let mut missed: BTreeMap<&str, u32> = BTreeMap::new();
    let mut stalls = 0;
    let mut turn = 0;
    while !pacer.is_finished() {
        let (target, keys) = TARGETS[turn % TARGETS.len()];
        turn += 1;
        for (target, keys) in [(target, keys), ("recovery", RECOVERY)] {
            proxy.arm(keys, draw_fault(rng, scale, &mut stalls));
            let armed_at = Instant::now();
            while proxy.armed() && armed_at.elapsed() < ARM_WAIT {
                std::thread::sleep(Duration::from_millis(5));
            }
            if proxy.armed() {
                proxy.disarm();
                *missed.entry(target).or_default() += 1;
            }
        }
        seen.extend(values.try_iter());
        if member.0.try_wait().unwrap().is_some() {
            fail_with_log(
                member,
                member_log,
                "the consumer exited under connection faults",
            );
        }
        let rest = rng.millis(300, 999);
        std::thread::sleep(rest);
    }
    proxy.disarm();
    let fed = pacer.join().unwrap();
    assert!(fed.is_ok(), "feeding the producer: {fed:?}");
    let status = writer.wait_within(180);
    let writer_log = writer_log.join().unwrap();
    assert!(status.success(), "producer: {status}; {writer_log}");
    let produced_at = Instant::now();

    // The producer's side: every line once in the topic, where the report says.
    let log = read_log(&proxy.addr(), &topic);
    let in_topic = Tally::of(log.iter().map(|r| r.value.as_str()), lines, KEYS);
    assert!(in_topic.exactly_once_in_order(), "the topic: {in_topic:#?}");
    let problems = report_problems(&read_report(&report), lines, KEYS, &log);
    assert!(problems.is_empty(), "the producer's report: {problems:#?}");
    let _ = std::fs::remove_file(&report);

    // The consumer catches up, still running, and stops cleanly.
    let mut distinct: std::collections::HashSet<String> = seen.iter().cloned().collect();
    let deadline = Instant::now() + Duration::from_secs(scale.pick(90, 150));
    while distinct.len() < lines && Instant::now() < deadline {
        if let Ok(v) = values.recv_timeout(Duration::from_millis(200)) {
            distinct.insert(v.clone());
            seen.push(v);
        }
        if member.0.try_wait().unwrap().is_some() {
            fail_with_log(member, member_log, "the consumer exited after the faults");
        }
    }
    let caught_up = produced_at.elapsed();
    signal(&member.0, libc::SIGTERM);
    let member_status = member.wait_within(60);
    let member_log = member_log.join().unwrap();
    seen.extend(values.try_iter());

    let mut ledger = Ledger::new(KEYS, per_key as u64);
    // A stall past the session timeout can get the member fenced: it drops
    // its partitions uncommitted and starts them again from the committed
    // offset, as a restart would (a rewind, not an order violation; its
    // repeats count as duplicates). Only when its log says so.
    let fenced = FENCED.iter().filter(|m| member_log.contains(**m)).count();
    if fenced > 0 {
        ledger.life_rejoined(seen.iter().map(String::as_str));
    } else {
        ledger.life(seen.iter().map(String::as_str), true);
    }
    let counts = ledger.counts();
    let fired = proxy.fired();
    let mut by_api: BTreeMap<String, u32> = BTreeMap::new();
    let mut by_kind: BTreeMap<&str, u32> = BTreeMap::new();
    for f in &fired {
        *by_api.entry(api_name(f.api_key)).or_default() += 1;
        *by_kind.entry(f.fault.label()).or_default() += 1;
    }
    let note = format!(
        "{label}; faults by request: {}; by kind: {}; armed but no such request within {ARM_WAIT:?}: {}; \
         consumer caught up {:.1} s after the producer finished; {}",
        counts_of(&by_api),
        counts_of(&by_kind),
        counts_of(&missed),
        caught_up.as_secs_f64(),
        if fenced > 0 {
            format!("fenced, then {} key rewinds", counts.rewinds)
        } else {
            "never fenced".to_string()
        },
    );
    table::record(&Row {
        name: &format!("connection faults ({label})"),
        iterations: fired.len() as u64,
        counts,
        wall: started.elapsed(),
        target: "0 lost, 0 order, consumer stays up",
        note,
    });
    eprintln!("requests relayed per api key: {:?}", proxy.requests());

    assert!(
        member_status.success(),
        "the consumer's graceful stop: {member_status}; {member_log}"
    );
    assert_eq!(counts.lost, 0, "lost messages: {counts:?}; {member_log}");
    assert_eq!(
        counts.order_violations,
        0,
        "order violations {:?}; the consumer's log: {member_log}",
        ledger.examples()
    );
    // Every kind the issue names was hit at least once.
    for kind in ["fetch", "produce", "commit", "heartbeat", "metadata"] {
        assert!(
            by_api.contains_key(kind),
            "no fault hit a {kind} request: {by_api:?}"
        );
    }
}
