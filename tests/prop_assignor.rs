//! Classic group assignors (DESIGN rule 7) against their invariants, on
//! random groups: validity, determinism, balance, and for cooperative-sticky
//! the cooperative rule, stickiness and two-round convergence.

use std::collections::{BTreeMap, BTreeSet};

use mykafkams::group::assignor::{Assignor, MemberSubscription};
use mykafkams::group::consumer_protocol::{
    decode_assignment, decode_subscription, encode_assignment, encode_subscription,
};
use proptest::prelude::*;

/// member id -> topic -> partitions.
type Assignment = BTreeMap<String, BTreeMap<String, Vec<i32>>>;

const ALL: [Assignor; 3] = [
    Assignor::Range,
    Assignor::RoundRobin,
    Assignor::CooperativeSticky,
];

#[derive(Clone, Debug)]
struct Group {
    members: Vec<MemberSubscription>,
    partitions: BTreeMap<String, i32>,
}

fn topic(i: usize) -> String {
    format!("t{i}")
}

/// Random group: 1..8 members, 1..4 topics with 1..32 partitions, random
/// subscriptions (a topic may have no subscriber, a member may subscribe to a
/// topic with no metadata), random owned claims with random generations,
/// some static members. With `equal`, everyone subscribes to every topic.
fn group(equal: bool) -> impl Strategy<Value = Group> {
    (1..8usize, prop::collection::vec(1..32i32, 1..4))
        .prop_flat_map(move |(n_members, counts)| {
            let n_topics = counts.len();
            let member = (
                prop::collection::vec(any::<bool>(), n_topics + 1),
                prop::collection::vec(prop::collection::vec(0..34i32, 0..6), n_topics + 1),
                -1..4i32,
                prop::option::weighted(0.3, 0..100u32),
            );
            (Just(counts), prop::collection::vec(member, n_members))
        })
        .prop_map(move |(counts, raw)| {
            let n_topics = counts.len();
            let partitions = counts
                .iter()
                .enumerate()
                .map(|(i, &n)| (topic(i), n))
                .collect();
            let members = raw
                .into_iter()
                .enumerate()
                .map(|(i, (subs, owned, generation, instance))| {
                    // Topic index n_topics has no metadata ("missing" topic).
                    let topics: Vec<String> = (0..=n_topics)
                        .filter(|&t| if equal { t < n_topics } else { subs[t] })
                        .map(topic)
                        .collect();
                    let owned = owned
                        .into_iter()
                        .enumerate()
                        .filter(|(_, parts)| !parts.is_empty())
                        .map(|(t, parts)| {
                            let set: BTreeSet<i32> = parts.into_iter().collect();
                            (topic(t), set.into_iter().collect())
                        })
                        .collect();
                    MemberSubscription {
                        member_id: format!("member-{i}-{}", 7 * i % 5),
                        group_instance_id: instance.map(|x| format!("static-{x}-{i}")),
                        topics,
                        owned,
                        generation,
                    }
                })
                .collect();
            Group {
                members,
                partitions,
            }
        })
}

fn subscribes(m: &MemberSubscription, t: &str) -> bool {
    m.topics.iter().any(|x| x == t)
}

/// Every (topic, partition) that some member subscribes and that exists.
fn subscribed_partitions(g: &Group) -> BTreeSet<(String, i32)> {
    g.partitions
        .iter()
        .filter(|(t, _)| g.members.iter().any(|m| subscribes(m, t)))
        .flat_map(|(t, &n)| (0..n).map(move |p| (t.clone(), p)))
        .collect()
}

fn load(a: &BTreeMap<String, Vec<i32>>) -> usize {
    a.values().map(Vec::len).sum()
}

/// Checks validity; returns partition -> member.
fn check_valid(
    g: &Group,
    got: &Assignment,
    complete: bool,
) -> Result<BTreeMap<(String, i32), String>, TestCaseError> {
    let ids: BTreeSet<&String> = g.members.iter().map(|m| &m.member_id).collect();
    prop_assert_eq!(
        got.keys().collect::<BTreeSet<_>>(),
        ids,
        "every member in output"
    );
    let mut owner = BTreeMap::new();
    for (id, topics) in got {
        let m = g.members.iter().find(|m| &m.member_id == id).unwrap();
        for (t, parts) in topics {
            prop_assert!(subscribes(m, t), "{} got {} it does not subscribe", id, t);
            prop_assert!(parts.windows(2).all(|w| w[0] < w[1]), "sorted, no repeats");
            let n = g.partitions.get(t).copied();
            prop_assert!(n.is_some(), "topic {} has no metadata", t);
            for &p in parts {
                prop_assert!((0..n.unwrap()).contains(&p), "{}-{} does not exist", t, p);
                let prev = owner.insert((t.clone(), p), id.clone());
                prop_assert!(prev.is_none(), "{}-{} assigned twice", t, p);
            }
        }
    }
    if complete {
        let all = subscribed_partitions(g);
        prop_assert_eq!(
            owner.keys().cloned().collect::<BTreeSet<_>>(),
            all,
            "every partition assigned"
        );
    }
    Ok(owner)
}

/// The claims cooperative-sticky must honour: (topic, partition) -> member,
/// for claims on subscribed, existing partitions whose generation is the
/// unique highest among such claims.
fn valid_owners(g: &Group) -> BTreeMap<(String, i32), String> {
    let mut claims: BTreeMap<(String, i32), Vec<(i32, String)>> = BTreeMap::new();
    for m in &g.members {
        for (t, parts) in &m.owned {
            let Some(&n) = g.partitions.get(t) else {
                continue;
            };
            if !subscribes(m, t) {
                continue;
            }
            for &p in parts.iter().filter(|&&p| p < n) {
                claims
                    .entry((t.clone(), p))
                    .or_default()
                    .push((m.generation, m.member_id.clone()));
            }
        }
    }
    claims
        .into_iter()
        .filter_map(|(tp, mut list)| {
            list.sort_by_key(|c| std::cmp::Reverse(c.0));
            (list.len() == 1 || list[0].0 != list[1].0).then(|| (tp, list.swap_remove(0).1))
        })
        .collect()
}

fn spread(loads: impl Iterator<Item = usize>) -> usize {
    let loads: Vec<usize> = loads.collect();
    loads.iter().max().unwrap() - loads.iter().min().unwrap()
}

/// One more round: every member now owns exactly what it was given.
fn next_round(g: &Group, got: &Assignment, generation: i32) -> Group {
    let mut next = g.clone();
    for m in &mut next.members {
        m.owned = got[&m.member_id].clone();
        m.generation = generation;
    }
    next
}

fn shuffled(g: &Group, seed: usize) -> Group {
    let mut s = g.clone();
    let n = s.members.len();
    s.members.rotate_left(seed % n);
    if seed % 2 == 1 {
        s.members.reverse();
    }
    s
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn valid_complete_and_deterministic(g in group(false), seed in any::<usize>()) {
        for a in ALL {
            let got = a.assign(&g.members, &g.partitions);
            check_valid(&g, &got, a != Assignor::CooperativeSticky)?;
            prop_assert_eq!(&a.assign(&shuffled(&g, seed).members, &g.partitions), &got, "{:?} order-independent", a);
        }
    }

    #[test]
    fn equal_subscriptions_are_balanced(g in group(true)) {
        let range = Assignor::Range.assign(&g.members, &g.partitions);
        for t in g.partitions.keys() {
            let per_topic = range.values().map(|m| m.get(t).map_or(0, Vec::len));
            prop_assert!(spread(per_topic) <= 1, "range {} unbalanced: {:?}", t, range);
        }
        let rr = Assignor::RoundRobin.assign(&g.members, &g.partitions);
        prop_assert!(spread(rr.values().map(load)) <= 1, "roundrobin unbalanced: {:?}", rr);

        // Sticky from scratch is complete and balanced.
        let mut fresh = g.clone();
        fresh.members.iter_mut().for_each(|m| { m.owned.clear(); m.generation = -1; });
        let st = Assignor::CooperativeSticky.assign(&fresh.members, &fresh.partitions);
        check_valid(&fresh, &st, true)?;
        prop_assert!(spread(st.values().map(load)) <= 1, "sticky unbalanced: {:?}", st);

        // Sticky with claims: balanced once the moves have happened.
        let r1 = Assignor::CooperativeSticky.assign(&g.members, &g.partitions);
        let g2 = next_round(&g, &r1, 10);
        let r2 = Assignor::CooperativeSticky.assign(&g2.members, &g2.partitions);
        check_valid(&g2, &r2, true)?;
        let total = subscribed_partitions(&g).len();
        let n = g.members.len();
        prop_assert!(spread(r2.values().map(load)) <= 1, "sticky round 2 unbalanced: {:?}", r2);
        let at_ceil = r2.values().filter(|m| load(m) > total / n).count();
        prop_assert!(at_ceil <= total % n);
        // And it kept every valid claim it could: each member kept at least
        // min(claims, floor) of its own valid claims.
        let owners = valid_owners(&g);
        for (id, mine) in &r1 {
            let claims = owners.values().filter(|o| *o == id).count();
            prop_assert!(load(mine) >= claims.min(total / n), "{} lost kept claims: {:?}", id, r1);
        }
    }

    #[test]
    fn cooperative_rule_stickiness_and_convergence(g in group(false), equal in group(true), pick in any::<bool>()) {
        let g = if pick { g } else { equal };
        let sticky = Assignor::CooperativeSticky;
        let owners = valid_owners(&g);
        let r1 = sticky.assign(&g.members, &g.partitions);
        let given = check_valid(&g, &r1, false)?;
        for (tp, member) in &given {
            if let Some(owner) = owners.get(tp) {
                prop_assert_eq!(owner, member, "{:?} given away while its owner holds it", tp);
            }
        }

        // Round 2: owners drop what they lost; everything is assigned.
        let g2 = next_round(&g, &r1, 20);
        let r2 = sticky.assign(&g2.members, &g2.partitions);
        check_valid(&g2, &r2, true)?;
        for (id, mine) in &r1 {
            for (t, parts) in mine {
                let now = r2[id].get(t).cloned().unwrap_or_default();
                prop_assert!(parts.iter().all(|p| now.contains(p)), "round 2 moved an owned partition");
            }
        }

        // Stickiness: a complete, settled assignment stays as it is.
        let g3 = next_round(&g, &r2, 30);
        prop_assert_eq!(&sticky.assign(&g3.members, &g3.partitions), &r2);
    }

    #[test]
    fn sticky_keeps_a_balanced_claimed_assignment(g in group(true), seed in any::<usize>()) {
        // Owned claims = a balanced, valid assignment (round-robin's, which is
        // floor/ceil with equal subscriptions): sticky returns it unchanged.
        let rr = Assignor::RoundRobin.assign(&g.members, &g.partitions);
        let g = next_round(&shuffled(&g, seed), &rr, 3);
        prop_assert_eq!(Assignor::CooperativeSticky.assign(&g.members, &g.partitions), rr);
    }

    #[test]
    fn wire_round_trip(g in group(false)) {
        for a in ALL {
            for m in &g.members {
                let bytes = encode_subscription(a, &m.topics, &m.owned, m.generation);
                let back = decode_subscription(&m.member_id, m.group_instance_id.as_deref(), a, &bytes).unwrap();
                let mut topics = m.topics.clone();
                topics.sort();
                prop_assert_eq!(&back.topics, &topics);
                prop_assert_eq!(&back.owned, &m.owned);
                let generation = if a.is_cooperative() { m.generation } else { -1 };
                prop_assert_eq!(back.generation, generation);
            }
            for mine in a.assign(&g.members, &g.partitions).values() {
                prop_assert_eq!(&decode_assignment(&encode_assignment(mine)).unwrap(), mine);
            }
        }
    }

    #[test]
    fn decoders_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64), version in 0..6i16) {
        let mut framed = version.to_be_bytes().to_vec();
        framed.extend_from_slice(&bytes);
        for input in [&bytes, &framed] {
            let _ = decode_assignment(input);
            for a in ALL {
                let _ = decode_subscription("m", None, a, input);
            }
        }
    }
}
