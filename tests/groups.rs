//! Consumer-group membership against the real broker, under KIP-848 and the
//! classic protocol (cooperative-sticky and range): members split a topic,
//! hand partitions over without loss, overlap or reordering when members
//! join, leave (SIGTERM) and crash (SIGKILL), keep their other partitions
//! flowing during incremental rebalances, and survive slow handlers.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::members::*;
use common::*;
use mykafkams::group::{GroupClient, GroupConfig};
use mykafkams::offset_map::{OffsetMap, read_metadata};

/// Three members on a 6-partition topic get disjoint partition sets that
/// cover the topic; 60,000 keyed messages over 600 keys are each handled
/// once, in per-key order, by the member Kafka says owns the partition.
async fn three_members_split_the_topic(proto: Proto) {
    require_broker();
    let topic = unique(&format!("split-{}", proto.label().replace('/', "-")));
    let group = unique("g-split");
    create_topic(&topic, 6);
    let log: Log = Arc::default();
    let members: Vec<Member> = (0..3)
        .map(|i| {
            spawn_member(
                i,
                member_config(i, &topic, &group, proto),
                &log,
                Duration::ZERO,
            )
        })
        .collect();
    let ids: Vec<String> = (0..3).map(client_id).collect();
    let split = wait_for_split(&group, &ids, 6, Duration::from_secs(60)).await;
    for (id, parts) in &split {
        assert_eq!(
            parts.len(),
            2,
            "{id} owns {parts:?} of 6 partitions in a 3-member group"
        );
    }

    let total = produce_rounds(&topic, 600, 0..100, Duration::ZERO).await;
    assert_eq!(total, 60_000);
    wait_for_records(&log, 60_000, Duration::from_secs(120)).await;
    for m in members {
        let summary = m.stop().await;
        assert_eq!(summary.stats.failed, 0);
    }
    let log = log.lock();
    assert_eq!(log.len(), 60_000, "each message handled once");
    check_keys(&log, 600, 100, false);
    for r in log.iter() {
        assert!(
            split[&client_id(r.member)].contains(&r.partition),
            "partition {} handled by member {}, which Kafka did not list as its owner ({split:?})",
            r.partition,
            r.member
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_consumer_protocol_members_split_a_topic() {
    three_members_split_the_topic(Proto::Consumer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_cooperative_sticky_members_split_a_topic() {
    three_members_split_the_topic(Proto::Cooperative).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_range_members_split_a_topic() {
    three_members_split_the_topic(Proto::Range).await;
}

/// Under a steady load: a fourth member joins, one member gets SIGTERM
/// (drains, commits, leaves), another crashes. Nothing is lost, per-key
/// order holds, no partition is handled by two members at once, and the
/// only repeats are the crashed member's uncommitted work. Under
/// incremental protocols the members that keep partitions keep handling
/// through each rebalance.
async fn churn_under_load(proto: Proto) {
    require_broker();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let topic = unique(&format!("churn-{}", proto.label().replace('/', "-")));
    let group = unique("g-churn");
    create_topic(&topic, 6);
    let log: Log = Arc::default();
    let work = Duration::from_millis(1);
    // Rare periodic commits: what a hand-over does not commit itself shows
    // up as repeats.
    let spawn = |i: usize| {
        let mut cfg = member_config(i, &topic, &group, proto);
        cfg.commit_interval = Duration::from_secs(5);
        spawn_member(i, cfg, &log, work)
    };
    let ids = |v: &[usize]| v.iter().map(|&i| client_id(i)).collect::<Vec<_>>();
    // Members start one at a time, so every assignment member 0 goes
    // through is known (its revocations are counted below).
    let mut members: BTreeMap<usize, Member> = BTreeMap::new();
    let mut settled = Vec::new();
    for i in 0..3 {
        members.insert(i, spawn(i));
        let present: Vec<usize> = (0..=i).collect();
        settled.push(wait_for_split(&group, &ids(&present), 6, Duration::from_secs(60)).await);
    }
    let before_join = settled.last().unwrap().clone();

    // 300 keys × 80 rounds, a round every 200 ms: 24,000 messages over ~16 s.
    let (keys, rounds) = (300usize, 80u64);
    let load = {
        let topic = topic.clone();
        tokio::spawn(async move {
            produce_rounds(&topic, keys, 0..rounds, Duration::from_millis(200)).await
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;

    // A fourth member joins.
    let join_at = now_ns();
    members.insert(3, spawn(3));
    let after_join = wait_for_split(&group, &ids(&[0, 1, 2, 3]), 6, Duration::from_secs(60)).await;
    let join_done = now_ns();

    // Member 1 gets SIGTERM: drains, commits, leaves.
    let term_at = now_ns();
    let summary = members.remove(&1).unwrap().stop().await;
    assert_eq!(summary.stats.failed, 0);
    let after_term = wait_for_split(&group, &ids(&[0, 2, 3]), 6, Duration::from_secs(60)).await;
    let term_done = now_ns();

    // Member 2 crashes; read what it had committed before anyone else can.
    let victim = 2usize;
    let victim_parts = after_term[&client_id(victim)].clone();
    members.remove(&victim).unwrap().crash();
    let crashed_at = now_ns();
    let committed_at_crash = committed(&group, &topic).await;
    let after_crash = wait_for_split(&group, &ids(&[0, 3]), 6, Duration::from_secs(60)).await;

    let produced = load.await.unwrap();
    assert_eq!(produced, keys as u64 * rounds);
    let expected = produced as usize;
    wait_for_distinct(&log, expected, Duration::from_secs(120)).await;
    let mut revocations = BTreeMap::new();
    for (i, m) in members {
        revocations.insert(i, m.stop().await.revocations);
    }

    let log = log.lock();
    // Join, leave and crash each move a partition at most once.
    check_no_overlap(&log, 3);
    let redelivered = check_keys(&log, keys, rounds, true);
    // Repeats only from the crash, only of the victim's uncommitted work.
    let first: HashMap<(i32, i64), &Rec> = {
        let mut m = HashMap::new();
        for r in log.iter() {
            m.entry((r.partition, r.offset))
                .and_modify(|f: &mut &Rec| {
                    if r.start < f.start {
                        *f = r;
                    }
                })
                .or_insert(r);
        }
        m
    };
    for r in &redelivered {
        let f = first[&(r.partition, r.offset)];
        assert_eq!(
            f.member, victim,
            "{}/{} handled twice, first by member {} (not the crashed one): first {f:?}, again {r:?}; join {join_at}..{join_done}, term {term_at}..{term_done}, crash {crashed_at}",
            r.partition, r.offset, f.member
        );
        assert!(
            victim_parts.contains(&r.partition)
                && !committed_at_crash.covers(r.partition, r.offset)
                && f.end <= crashed_at + 50_000_000,
            "{}/{} redelivered (first {f:?}, again {r:?}) but it was committed ({:?}) before the crash; join {join_at}..{join_done}, term {term_at}..{term_done}, crash {crashed_at}",
            r.partition,
            r.offset,
            committed_at_crash.0.get(&r.partition)
        );
    }

    if proto.incremental() {
        // The survivors revoked exactly what they lost in the three
        // rebalances, nothing they kept (an eager member revokes all).
        let lost =
            |i: usize, a: &BTreeMap<String, BTreeSet<i32>>, b: &BTreeMap<String, BTreeSet<i32>>| {
                let id = client_id(i);
                let empty = BTreeSet::new();
                a.get(&id)
                    .unwrap_or(&empty)
                    .difference(b.get(&id).unwrap_or(&empty))
                    .count() as u64
            };
        for i in [0usize, 3] {
            let expected = settled
                .windows(2)
                .map(|w| lost(i, &w[0], &w[1]))
                .sum::<u64>()
                + lost(i, &before_join, &after_join)
                + lost(i, &after_join, &after_term)
                + lost(i, &after_term, &after_crash);
            assert_eq!(
                revocations[&i],
                expected,
                "{}: member {i} revoked {} partitions but lost only {expected} ({before_join:?} -> {after_join:?} -> {after_term:?} -> {after_crash:?})",
                proto.label(),
                revocations[&i]
            );
        }
        // The members that keep partitions keep handling them through each
        // rebalance: no pause longer than a few rounds of the load (a
        // round every 200 ms), and nobody else touches them meanwhile.
        for (event, from, to, before, after) in [
            ("join", join_at, join_done, &before_join, &after_join),
            ("leave", term_at, term_done, &after_join, &after_term),
        ] {
            for (id, kept) in before.iter().filter_map(|(id, b)| {
                let a = after.get(id)?;
                Some((id, b.intersection(a).copied().collect::<BTreeSet<i32>>()))
            }) {
                if kept.is_empty() {
                    continue;
                }
                let idx: usize = id.trim_start_matches("member-").parse().unwrap();
                let pause = longest_pause(&log, idx, &kept, from, to);
                assert!(
                    pause < 1_500_000_000,
                    "{}: member {idx} kept {kept:?} through the {event} but handled none of them for {} ms",
                    proto.label(),
                    pause / 1_000_000
                );
                for r in log.iter().filter(|r| r.end >= from && r.end <= to) {
                    assert!(
                        !kept.contains(&r.partition) || r.member == idx,
                        "{}: partition {} kept by member {idx} was handled by member {} during the {event}",
                        proto.label(),
                        r.partition,
                        r.member
                    );
                }
            }
        }
    }
}

/// What a group had committed for a topic: per partition, the committed
/// offset and the offset map committed with it (if readable). A message is
/// *covered* when it is below the offset or marked done in the map: a
/// member that takes the partition over must not handle it again.
#[derive(Debug, Default)]
struct Commits(BTreeMap<i32, (i64, Option<OffsetMap>)>);

impl Commits {
    /// The committed offset of `partition` (0 when none).
    fn offset(&self, partition: i32) -> i64 {
        self.0.get(&partition).map_or(0, |c| c.0)
    }

    /// Whether `offset` of `partition` was committed, in the prefix or in the map.
    fn covers(&self, partition: i32, offset: i64) -> bool {
        self.0
            .get(&partition)
            .is_some_and(|(o, map)| offset < *o || map.as_ref().is_some_and(|m| m.contains(offset)))
    }
}

/// The group's committed offsets of `topic`, with their offset maps.
async fn committed(group: &str, topic: &str) -> Commits {
    let client = GroupClient::new([bootstrap()], group, GroupConfig::default());
    let parts: Vec<i32> = (0..6).collect();
    Commits(
        client
            .fetch_committed_with_metadata(&[(topic, parts)])
            .await
            .unwrap()
            .into_iter()
            .filter_map(|((_, p), c)| {
                let c = c?;
                let map = read_metadata(c.offset, &c.metadata)
                    .unwrap_or_else(|e| panic!("p{p}: our own offset map is unreadable: {e}"))
                    .map(|(m, _)| m);
                Some((p, (c.offset, map)))
            })
            .collect(),
    )
}

/// Waits until `n` distinct messages were handled (redeliveries aside).
async fn wait_for_distinct(log: &Log, n: usize, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let distinct = log
            .lock()
            .iter()
            .map(|r| (r.partition, r.offset))
            .collect::<BTreeSet<_>>()
            .len();
        if distinct >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {distinct} of {n} distinct messages handled within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn consumer_protocol_churn_loses_nothing_and_never_overlaps() {
    churn_under_load(Proto::Consumer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cooperative_sticky_churn_loses_nothing_and_never_overlaps() {
    churn_under_load(Proto::Cooperative).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn range_churn_loses_nothing_and_never_overlaps() {
    churn_under_load(Proto::Range).await;
}

/// A real consumer process in a group is SIGKILLed: a second member takes
/// its partitions after the session timeout, nothing is lost, and what is
/// handled twice is only what the killed process had not committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sigkilled_member_repeats_only_its_uncommitted_window() {
    require_broker();
    let topic = unique("kill");
    let group = unique("g-kill");
    create_topic(&topic, 4);
    let produced = produce_rounds(&topic, 200, 0..50, Duration::ZERO).await as usize;
    let mut child = consumer()
        .args([&bootstrap(), &topic, &group])
        .args(Proto::Consumer.flags())
        .args([
            "--format",
            "text",
            "--workers",
            "2",
            "--stats-interval",
            "0",
            "--commit-interval",
            "300ms",
            "--client-id",
            "victim",
        ])
        // Slow enough to be killed mid-stream.
        .args(["--max-in-flight", "50", "--handler", "exec", "--"])
        .args(["sh", "-c", r#"printf '%s\t%s\t%s\t%s\n' "$KAFKA_PARTITION" "$KAFKA_OFFSET" "$KAFKA_KEY" "$(cat)"; sleep 0.005"#])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Read its lines until it has handled a good part, then kill it.
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut victim_lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while victim_lines.len() < 1500 {
        assert!(
            Instant::now() < deadline,
            "the victim handled only {}",
            victim_lines.len()
        );
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(100)) {
            victim_lines.push(l);
        }
    }
    signal(&child, libc::SIGKILL);
    child.wait().unwrap();
    let committed_at_kill = committed(&group, &topic).await;
    while let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
        victim_lines.push(l);
    }
    assert!(
        victim_lines.len() < produced,
        "the victim finished before the kill"
    );

    let log: Log = Arc::default();
    let survivor = spawn_member(
        9,
        member_config(9, &topic, &group, Proto::Consumer),
        &log,
        Duration::ZERO,
    );
    // partition, offset, key, value (`acct-<k>:<seq>`), in the order handled.
    // A handler process the kill cut off before it got its message prints
    // an empty value: that message was not handled.
    let victim_recs: Vec<(i32, i64, String, u64)> = victim_lines
        .iter()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            if f.len() != 4 || f[3].is_empty() {
                return None;
            }
            let (key, seq) = parse_seq(f[3]);
            assert_eq!(key, f[2], "key and value disagree");
            Some((f[0].parse().unwrap(), f[1].parse().unwrap(), key, seq))
        })
        .collect();
    let victim: Vec<(i32, i64)> = victim_recs.iter().map(|r| (r.0, r.1)).collect();
    let victim_set: BTreeSet<(i32, i64)> = victim.iter().copied().collect();
    assert_eq!(
        victim_set.len(),
        victim.len(),
        "the victim handled a message twice"
    );
    // Everything not handled by the victim, plus what it handled but had
    // not committed (neither in the prefix nor in the offset map).
    let expected_survivor = produced
        - victim_set
            .iter()
            .filter(|(p, o)| committed_at_kill.covers(*p, *o))
            .count();
    wait_for_records(&log, expected_survivor, Duration::from_secs(90)).await;
    survivor.stop().await;

    let log = log.lock();
    let survivor_set: BTreeSet<(i32, i64)> = log.iter().map(|r| (r.partition, r.offset)).collect();
    assert_eq!(
        survivor_set.len(),
        log.len(),
        "the survivor handled a message twice"
    );
    let all: BTreeSet<(i32, i64)> = victim_set.union(&survivor_set).copied().collect();
    assert_eq!(all.len(), produced, "messages lost");
    for (p, o) in victim_set.intersection(&survivor_set) {
        assert!(
            !committed_at_kill.covers(*p, *o),
            "{p}/{o} was committed by the killed member ({:?}) yet handled again",
            committed_at_kill.0.get(p)
        );
    }
    for (p, o) in log.iter().map(|r| (r.partition, r.offset)) {
        assert!(
            !committed_at_kill.covers(p, o),
            "the survivor handled {p}/{o}, which the killed member had committed ({:?})",
            committed_at_kill.0.get(&p)
        );
    }
    for p in committed_at_kill.0.keys() {
        let c = committed_at_kill.offset(*p);
        assert!(
            log.iter().all(|r| r.partition != *p || r.offset >= c),
            "the survivor started partition {p} below its committed offset {c}"
        );
    }
    // Per key: the victim handled 0..=a in order, the survivor b.. in
    // order with no gap (b <= a + 1), and together they cover 0..50.
    let mut victim_seqs: HashMap<&str, Vec<u64>> = HashMap::new();
    for (_, _, key, seq) in &victim_recs {
        victim_seqs.entry(key.as_str()).or_default().push(*seq);
    }
    let mut survivor_seqs: HashMap<&str, Vec<(u128, u64)>> = HashMap::new();
    for r in log.iter() {
        survivor_seqs
            .entry(r.key.as_str())
            .or_default()
            .push((r.start, r.seq));
    }
    for k in 0..200 {
        let key = format!("acct-{k}");
        let v = victim_seqs.get(key.as_str()).cloned().unwrap_or_default();
        assert!(
            v.iter().enumerate().all(|(i, s)| *s == i as u64),
            "{key}: the victim handled {v:?}"
        );
        let mut s = survivor_seqs.get(key.as_str()).cloned().unwrap_or_default();
        s.sort();
        let s: Vec<u64> = s.into_iter().map(|(_, seq)| seq).collect();
        let from = s.first().copied().unwrap_or(50);
        assert!(
            from <= v.len() as u64,
            "{key}: victim reached {}, survivor started at {from}",
            v.len()
        );
        assert_eq!(s, (from..50).collect::<Vec<_>>(), "{key}: survivor order");
    }
}
