//! Classic consumer-group assignors and the ConsumerProtocol encoding
//! (DESIGN rule 7).
//!
//! In the classic group protocol the broker only relays bytes: every member
//! puts a *subscription* (ConsumerProtocolSubscription) in its JoinGroup
//! metadata, the elected leader computes the assignment client-side and
//! hands each member its share (ConsumerProtocolAssignment) in SyncGroup.
//! To share a group with Java's and librdkafka's consumers we speak the
//! same protocol names (`range`, `roundrobin`, `cooperative-sticky`), the
//! same wire layout (encoded in [`super::consumer_protocol`]) and, when we
//! are the leader, hand out assignments with the same guarantees as Java's assignors:
//!
//! * [`Assignor::Range`]: per topic, contiguous ranges over the subscribed
//!   members in Java's member order; the first `n % m` get one more.
//! * [`Assignor::RoundRobin`]: every subscribed (topic, partition), sorted,
//!   dealt over the members in Java's member order, skipping members that do
//!   not subscribe the topic.
//! * [`Assignor::CooperativeSticky`] (KIP-429): balanced and sticky, and
//!   *cooperative*: a partition that must move is first left out of the
//!   assignment so its owner revokes it, and is handed to its new member in
//!   the next rebalance; no member is ever given a partition another member
//!   still owns.
//!
//! Java's member order sorts static members (with a group instance id)
//! first, by instance id, then dynamic members by member id.
//!
//! Nothing here does I/O; the group client feeds it JoinGroup members and
//! metadata and sends what it returns.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};

/// One member's subscription as the leader sees it (from JoinGroup members).
///
/// Built by [`decode_subscription`](super::consumer_protocol::decode_subscription) from a member's JoinGroup metadata and
/// fed to [`Assignor::assign`]. `owned` and `generation` only matter to
/// [`Assignor::CooperativeSticky`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberSubscription {
    /// The member id the coordinator gave this member.
    pub member_id: String,
    /// Its static membership id (`group.instance.id`), if any; it decides
    /// the member's place in the assignors' member order, as in Java.
    pub group_instance_id: Option<String>,
    /// The topic names it subscribes to.
    pub topics: Vec<String>,
    /// The partitions it says it owns (cooperative protocol), per topic,
    /// sorted.
    pub owned: BTreeMap<String, Vec<i32>>,
    /// The generation in which it got `owned`; -1 if unknown.
    pub generation: i32,
}

/// A classic (client-side) partition assignor, by the protocol name Java
/// and librdkafka use for it in JoinGroup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Assignor {
    /// `range`: per topic, contiguous partition ranges per member.
    Range,
    /// `roundrobin`: all subscribed partitions dealt over the members.
    RoundRobin,
    /// `cooperative-sticky`: balanced, sticky, incremental (KIP-429).
    CooperativeSticky,
}

/// Every assignor, in the order the error messages list them.
const ALL_ASSIGNORS: [Assignor; 3] = [
    Assignor::Range,
    Assignor::RoundRobin,
    Assignor::CooperativeSticky,
];

/// A member's assignment: topic -> sorted partitions.
type TopicPartitions = BTreeMap<String, Vec<i32>>;

impl Assignor {
    /// The protocol name sent in JoinGroup and chosen by the coordinator;
    /// identical to Java's and librdkafka's names so mixed groups agree.
    pub fn name(self) -> &'static str {
        match self {
            Assignor::Range => "range",
            Assignor::RoundRobin => "roundrobin",
            Assignor::CooperativeSticky => "cooperative-sticky",
        }
    }

    /// The assignor with protocol name `s` (exact match, as the coordinator
    /// reports it), or `None` for a name we do not implement.
    pub fn from_name(s: &str) -> Option<Self> {
        ALL_ASSIGNORS.into_iter().find(|a| a.name() == s)
    }

    /// Whether this assignor follows the cooperative (incremental) rebalance
    /// protocol: members keep their partitions across a rebalance and only
    /// revoke the ones the assignment takes away. Only `cooperative-sticky`.
    pub fn is_cooperative(self) -> bool {
        matches!(self, Assignor::CooperativeSticky)
    }

    /// Parses a preference list like "cooperative-sticky,range" (names are
    /// trimmed and matched case-insensitively; repeats are dropped, the first
    /// one counts). An unknown or empty name is an `Err` with a one-line
    /// message naming it and listing the valid ones.
    pub fn parse_list(s: &str) -> Result<Vec<Assignor>, String> {
        let valid = ALL_ASSIGNORS.map(Assignor::name).join(", ");
        let mut out = Vec::new();
        for raw in s.split(',') {
            let name = raw.trim();
            if name.is_empty() {
                return Err(format!(
                    "empty partition assignor name in {s:?}; valid names: {valid}"
                ));
            }
            let Some(assignor) = Self::from_name(&name.to_ascii_lowercase()) else {
                let shown: String = name.chars().filter(|c| !c.is_control()).collect();
                return Err(format!(
                    "unknown partition assignor {shown:?}; valid names: {valid}"
                ));
            };
            if !out.contains(&assignor) {
                out.push(assignor);
            }
        }
        Ok(out)
    }

    /// Computes the assignment: member id -> topic -> sorted partitions.
    /// `partitions` maps each topic to its partition count (topics nobody
    /// subscribes are ignored; subscribed topics missing from `partitions`
    /// get nothing).
    ///
    /// Guarantees: every member appears in the result (with an empty map if
    /// it gets nothing), a partition only goes to a member subscribed to its
    /// topic and to at most one member, and the result depends only on the
    /// set of members, not on their order in `members`. Range and RoundRobin
    /// assign every partition of a subscribed topic; CooperativeSticky leaves
    /// out, for this round, each partition that moves away from a member that
    /// still owns it (see the module documentation).
    pub fn assign(
        self,
        members: &[MemberSubscription],
        partitions: &BTreeMap<String, i32>,
    ) -> BTreeMap<String, BTreeMap<String, Vec<i32>>> {
        let members = java_member_order(members);
        let mut out: BTreeMap<String, TopicPartitions> = members
            .iter()
            .map(|m| (m.member_id.clone(), BTreeMap::new()))
            .collect();
        let subscribed: Vec<BTreeSet<&str>> = members
            .iter()
            .map(|m| m.topics.iter().map(String::as_str).collect())
            .collect();
        // Topics someone subscribes that have partitions, sorted by name.
        let topics: Vec<(&str, i32)> = partitions
            .iter()
            .filter(|(t, n)| **n > 0 && subscribed.iter().any(|s| s.contains(t.as_str())))
            .map(|(t, n)| (t.as_str(), *n))
            .collect();
        match self {
            Assignor::Range => range(&members, &subscribed, &topics, &mut out),
            Assignor::RoundRobin => round_robin(&members, &subscribed, &topics, &mut out),
            Assignor::CooperativeSticky => sticky(&members, &subscribed, &topics, &mut out),
        }
        out
    }
}

/// The members sorted as Java's `MemberInfo` sorts them (static members
/// first by group instance id, then dynamic ones by member id), with the
/// remaining fields as tie-breakers so the order never depends on the
/// input order. A repeated member id keeps only its first entry.
fn java_member_order(members: &[MemberSubscription]) -> Vec<&MemberSubscription> {
    let mut sorted: Vec<&MemberSubscription> = members.iter().collect();
    sorted.sort_by(|a, b| {
        let key = |m: &MemberSubscription| {
            (
                m.group_instance_id.is_none(),
                m.group_instance_id
                    .as_deref()
                    .unwrap_or(&m.member_id)
                    .to_owned(),
            )
        };
        key(a)
            .cmp(&key(b))
            .then_with(|| a.member_id.cmp(&b.member_id))
            .then_with(|| a.topics.cmp(&b.topics))
            .then_with(|| a.owned.cmp(&b.owned))
            .then_with(|| a.generation.cmp(&b.generation))
    });
    let mut seen = HashSet::new();
    sorted.retain(|m| seen.insert(m.member_id.as_str()));
    sorted
}

/// Range: per topic, the subscribed members (in member order) get
/// contiguous ranges; the first `n % m` of them one partition more.
fn range(
    members: &[&MemberSubscription],
    subscribed: &[BTreeSet<&str>],
    topics: &[(&str, i32)],
    out: &mut BTreeMap<String, TopicPartitions>,
) {
    for &(topic, count) in topics {
        let takers: Vec<usize> = (0..members.len())
            .filter(|&m| subscribed[m].contains(topic))
            .collect();
        let n = takers.len() as i32;
        let (each, extra) = (count / n, count % n);
        let mut next = 0;
        for (i, &m) in takers.iter().enumerate() {
            let len = each + i32::from((i as i32) < extra);
            if len > 0 {
                let slot = out
                    .get_mut(&members[m].member_id)
                    .expect("member in output");
                slot.insert(topic.to_owned(), (next..next + len).collect());
            }
            next += len;
        }
    }
}

/// RoundRobin: every (topic, partition), sorted, goes to the next member in
/// a circular walk over the member order that skips members not subscribed
/// to its topic.
fn round_robin(
    members: &[&MemberSubscription],
    subscribed: &[BTreeSet<&str>],
    topics: &[(&str, i32)],
    out: &mut BTreeMap<String, TopicPartitions>,
) {
    let mut next = 0;
    for &(topic, count) in topics {
        for p in 0..count {
            // Someone subscribes `topic` (see `assign`), so this ends.
            while !subscribed[next].contains(topic) {
                next = (next + 1) % members.len();
            }
            let slot = out
                .get_mut(&members[next].member_id)
                .expect("member in output");
            slot.entry(topic.to_owned()).or_default().push(p);
            next = (next + 1) % members.len();
        }
    }
}

/// Per-member holdings during the sticky computation, per topic index:
/// partitions held by their valid owner (`kept`) and the others (`free`,
/// which can move without disturbing anyone).
#[derive(Default)]
struct Holdings {
    kept: BTreeMap<usize, BTreeSet<i32>>,
    free: BTreeMap<usize, BTreeSet<i32>>,
    load: usize,
}

/// Working state of the cooperative-sticky assignor.
struct Sticky {
    /// Members subscribed to each topic, in member order.
    eligible: Vec<Vec<usize>>,
    /// Valid current owner of each (topic, partition), after resolving
    /// claims by generation.
    valid_owner: Vec<Vec<Option<usize>>>,
    /// Partitions claimed by several members with the same highest
    /// generation: nobody keeps them and nobody gets them this round.
    contested: Vec<Vec<bool>>,
    /// Current holder of each (topic, partition) in the target assignment.
    holder: Vec<Vec<Option<usize>>>,
    held: Vec<Holdings>,
}

impl Sticky {
    fn place(&mut self, t: usize, p: i32, m: usize) {
        self.holder[t][p as usize] = Some(m);
        let h = &mut self.held[m];
        let set = if self.valid_owner[t][p as usize] == Some(m) {
            h.kept.entry(t).or_default()
        } else {
            h.free.entry(t).or_default()
        };
        set.insert(p);
        h.load += 1;
    }

    /// Takes `m`'s highest partition of topic `t`, preferring a free one;
    /// with `free_only`, only a free one.
    fn take(&mut self, m: usize, t: usize, free_only: bool) -> Option<i32> {
        let h = &mut self.held[m];
        let from = |sets: &mut BTreeMap<usize, BTreeSet<i32>>| {
            let set = sets.get_mut(&t)?;
            let p = set.pop_last()?;
            if set.is_empty() {
                sets.remove(&t);
            }
            Some(p)
        };
        let p = match from(&mut h.free) {
            Some(p) => p,
            None if free_only => return None,
            None => from(&mut h.kept)?,
        };
        h.load -= 1;
        self.holder[t][p as usize] = None;
        Some(p)
    }

    /// Topics in which `m` holds a movable partition, highest first (so the
    /// highest partitions move first).
    fn movable_topics(&self, m: usize, free_only: bool) -> Vec<usize> {
        let h = &self.held[m];
        let mut topics: BTreeSet<usize> = h.free.keys().copied().collect();
        if !free_only {
            topics.extend(h.kept.keys().copied());
        }
        topics.into_iter().rev().collect()
    }

    /// Breadth-first search from `src` for a chain of moves ending at a
    /// member with at least two partitions fewer: each hop is "u gives one
    /// partition of topic t to c", c subscribed to t. Returns the hops
    /// (giver, topic, receiver) from `src` to the least-loaded such member.
    fn improving_path(
        &self,
        src: usize,
        free_only: bool,
        min_load: usize,
    ) -> Option<Vec<(usize, usize, usize)>> {
        let n = self.held.len();
        let limit = self.held[src].load.checked_sub(2)?;
        let mut parent: Vec<Option<(usize, usize)>> = vec![None; n];
        let mut seen = vec![false; n];
        seen[src] = true;
        let mut queue = VecDeque::from([src]);
        let mut best: Option<usize> = None;
        'search: while let Some(u) = queue.pop_front() {
            for t in self.movable_topics(u, free_only) {
                for &c in &self.eligible[t] {
                    if seen[c] {
                        continue;
                    }
                    seen[c] = true;
                    parent[c] = Some((u, t));
                    queue.push_back(c);
                    let load = self.held[c].load;
                    if load <= limit && best.is_none_or(|b| load < self.held[b].load) {
                        best = Some(c);
                        if load == min_load {
                            break 'search;
                        }
                    }
                }
            }
        }
        let mut hops = Vec::new();
        let mut at = best?;
        while let Some((u, t)) = parent[at] {
            hops.push((u, t, at));
            at = u;
        }
        hops.reverse();
        Some(hops)
    }

    /// Applies improving chains of moves until none is left: afterwards no
    /// member could pass a partition (directly or along a chain) to one with
    /// two fewer, which makes the load vector optimally balanced for the
    /// movable partitions. With `free_only`, owned partitions stay put.
    fn balance(&mut self, free_only: bool) {
        let n = self.held.len();
        loop {
            let Some(min_load) = self.held.iter().map(|h| h.load).min() else {
                return;
            };
            let mut order: Vec<usize> = (0..n).collect();
            order.sort_by_key(|&m| (Reverse(self.held[m].load), m));
            let mut moved = false;
            for src in order {
                if self.held[src].load < min_load + 2 {
                    break;
                }
                if let Some(hops) = self.improving_path(src, free_only, min_load) {
                    // Last hop first, so each giver gives one it held before.
                    for &(giver, t, receiver) in hops.iter().rev() {
                        let p = self
                            .take(giver, t, free_only)
                            .expect("movable partition on path");
                        self.place(t, p, receiver);
                    }
                    moved = true;
                    break;
                }
            }
            if !moved {
                return;
            }
        }
    }
}

/// CooperativeSticky (KIP-429).
///
/// 1. Claims: a member's owned partition is a valid claim if it still
///    subscribes the topic and the partition exists. Of several claims the
///    one with the highest generation wins; a tie at the highest generation
///    means nobody keeps it and, as in Java, nobody gets it this round.
/// 2. Target: members keep their valid claims; unowned partitions go, in
///    (topic, partition) order, to the least-loaded subscribed member (ties
///    by member order); then chains of moves that pass a partition from a
///    member to one with at least two fewer are applied, first moving only
///    unowned partitions, then owned ones (highest first) if still needed.
///    The result is as balanced as the subscriptions allow: with equal
///    subscriptions everyone has floor(P/M) or ceil(P/M).
/// 3. Cooperative rule: a partition whose valid owner differs from its
///    target member is left out; the owner revokes it and the next round
///    gives it to the target (the owners' remaining partitions then fit the
///    target's loads, so the second round moves nothing owned).
fn sticky(
    members: &[&MemberSubscription],
    subscribed: &[BTreeSet<&str>],
    topics: &[(&str, i32)],
    out: &mut BTreeMap<String, TopicPartitions>,
) {
    let index: BTreeMap<&str, usize> = topics
        .iter()
        .enumerate()
        .map(|(i, (t, _))| (*t, i))
        .collect();
    let mut state = Sticky {
        eligible: topics
            .iter()
            .map(|(t, _)| {
                (0..members.len())
                    .filter(|&m| subscribed[m].contains(t))
                    .collect()
            })
            .collect(),
        valid_owner: topics
            .iter()
            .map(|&(_, n)| vec![None; n as usize])
            .collect(),
        contested: topics
            .iter()
            .map(|&(_, n)| vec![false; n as usize])
            .collect(),
        holder: topics
            .iter()
            .map(|&(_, n)| vec![None; n as usize])
            .collect(),
        held: members.iter().map(|_| Holdings::default()).collect(),
    };

    // 1. Resolve claims: (topic, partition) -> (generation, member) claims.
    let mut claims: BTreeMap<(usize, i32), Vec<(i32, usize)>> = BTreeMap::new();
    for (m, member) in members.iter().enumerate() {
        for (topic, parts) in &member.owned {
            let Some(&t) = index.get(topic.as_str()) else {
                continue;
            };
            if !subscribed[m].contains(topic.as_str()) {
                continue;
            }
            let parts: BTreeSet<i32> = parts
                .iter()
                .copied()
                .filter(|&p| p >= 0 && p < topics[t].1)
                .collect();
            for p in parts {
                claims
                    .entry((t, p))
                    .or_default()
                    .push((member.generation, m));
            }
        }
    }
    for ((t, p), mut list) in claims {
        list.sort_unstable_by_key(|&(g, m)| (Reverse(g), m));
        if list.len() > 1 && list[0].0 == list[1].0 {
            state.contested[t][p as usize] = true;
        } else {
            state.valid_owner[t][p as usize] = Some(list[0].1);
        }
    }

    // 2. Target assignment: keep, fill, balance.
    for (t, &(_, count)) in topics.iter().enumerate() {
        for p in 0..count {
            if let Some(m) = state.valid_owner[t][p as usize] {
                state.place(t, p, m);
            }
        }
    }
    for (t, &(_, count)) in topics.iter().enumerate() {
        for p in 0..count {
            if state.holder[t][p as usize].is_none() {
                let m = *state.eligible[t]
                    .iter()
                    .min_by_key(|&&m| (state.held[m].load, m))
                    .expect("a subscribed topic has a subscriber");
                state.place(t, p, m);
            }
        }
    }
    state.balance(true);
    state.balance(false);

    // 3. Emit, leaving out what moves away from a valid owner.
    for (t, &(topic, count)) in topics.iter().enumerate() {
        for p in 0..count {
            let i = p as usize;
            let Some(m) = state.holder[t][i] else {
                continue;
            };
            if state.contested[t][i] || state.valid_owner[t][i].is_some_and(|o| o != m) {
                continue;
            }
            let slot = out
                .get_mut(&members[m].member_id)
                .expect("member in output");
            slot.entry(topic.to_owned()).or_default().push(p);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn member(id: &str, topics: &[&str]) -> MemberSubscription {
        MemberSubscription {
            member_id: id.to_owned(),
            group_instance_id: None,
            topics: topics.iter().map(|t| (*t).to_owned()).collect(),
            owned: BTreeMap::new(),
            generation: -1,
        }
    }

    fn counts(list: &[(&str, i32)]) -> BTreeMap<String, i32> {
        list.iter().map(|(t, n)| ((*t).to_owned(), *n)).collect()
    }

    /// topic -> partitions from a literal list.
    pub(crate) fn tps(list: &[(&str, &[i32])]) -> TopicPartitions {
        list.iter()
            .map(|(t, p)| ((*t).to_owned(), p.to_vec()))
            .collect()
    }

    #[test]
    fn names_round_trip() {
        for a in ALL_ASSIGNORS {
            assert_eq!(Assignor::from_name(a.name()), Some(a));
        }
        assert_eq!(Assignor::from_name("sticky"), None);
        assert!(Assignor::CooperativeSticky.is_cooperative());
        assert!(!Assignor::Range.is_cooperative());
        assert!(!Assignor::RoundRobin.is_cooperative());
    }

    #[test]
    fn parse_list_accepts_and_rejects_in_one_line() {
        assert_eq!(
            Assignor::parse_list("cooperative-sticky,range"),
            Ok(vec![Assignor::CooperativeSticky, Assignor::Range])
        );
        assert_eq!(
            Assignor::parse_list(" RoundRobin , range,roundrobin"),
            Ok(vec![Assignor::RoundRobin, Assignor::Range])
        );
        for bad in [
            "",
            "range,",
            "range,,roundrobin",
            "sticky",
            "range,foo\nbar",
        ] {
            let e = Assignor::parse_list(bad).unwrap_err();
            assert!(!e.contains('\n'), "{e:?}");
            assert!(e.contains("range, roundrobin, cooperative-sticky"), "{e}");
        }
        assert!(
            Assignor::parse_list("range,bogus")
                .unwrap_err()
                .contains("\"bogus\"")
        );
    }

    #[test]
    fn range_and_roundrobin_match_java() {
        let members = [member("C1", &["t0", "t1"]), member("C0", &["t0", "t1"])];
        let parts = counts(&[("t0", 3), ("t1", 3)]);
        let range = Assignor::Range.assign(&members, &parts);
        assert_eq!(range["C0"], tps(&[("t0", &[0, 1]), ("t1", &[0, 1])]));
        assert_eq!(range["C1"], tps(&[("t0", &[2]), ("t1", &[2])]));
        let rr = Assignor::RoundRobin.assign(&members, &parts);
        assert_eq!(rr["C0"], tps(&[("t0", &[0, 2]), ("t1", &[1])]));
        assert_eq!(rr["C1"], tps(&[("t0", &[1]), ("t1", &[0, 2])]));
    }

    #[test]
    fn roundrobin_unequal_subscriptions_match_java() {
        // Java RoundRobinAssignorTest.testTwoConsumersOneTopicOnePartition-
        // style case with C0: t0; C1: t0, t1; C2: t0, t1, t2 (1, 2, 3 partitions).
        let members = [
            member("C0", &["t0"]),
            member("C1", &["t0", "t1"]),
            member("C2", &["t0", "t1", "t2"]),
        ];
        let parts = counts(&[("t0", 1), ("t1", 2), ("t2", 3)]);
        let rr = Assignor::RoundRobin.assign(&members, &parts);
        assert_eq!(rr["C0"], tps(&[("t0", &[0])]));
        assert_eq!(rr["C1"], tps(&[("t1", &[0])]));
        assert_eq!(rr["C2"], tps(&[("t1", &[1]), ("t2", &[0, 1, 2])]));
    }

    #[test]
    fn static_members_sort_first_by_instance_id() {
        let mut a = member("a", &["t"]);
        let mut b = member("b", &["t"]);
        let c = member("0-dynamic", &["t"]);
        a.group_instance_id = Some("z".into());
        b.group_instance_id = Some("y".into());
        let got = Assignor::Range.assign(&[a, b, c], &counts(&[("t", 5)]));
        assert_eq!(got["b"], tps(&[("t", &[0, 1])]));
        assert_eq!(got["a"], tps(&[("t", &[2, 3])]));
        assert_eq!(got["0-dynamic"], tps(&[("t", &[4])]));
    }

    #[test]
    fn every_member_is_in_the_output() {
        let members = [
            member("a", &["t"]),
            member("b", &["t"]),
            member("c", &["gone"]),
        ];
        for a in ALL_ASSIGNORS {
            let got = a.assign(&members, &counts(&[("t", 1), ("unsubscribed", 4)]));
            assert_eq!(got.len(), 3);
            assert!(got["c"].is_empty());
            assert_eq!(got.values().map(|m| m.len()).sum::<usize>(), 1, "{a:?}");
        }
    }

    #[test]
    fn sticky_keeps_owned_and_leaves_out_moves() {
        // a owned all 4 partitions; b joins: two partitions must move to b,
        // but a still owns them, so this round nobody gets them.
        let mut a = member("a", &["t"]);
        a.owned = tps(&[("t", &[0, 1, 2, 3])]);
        a.generation = 5;
        let b = member("b", &["t"]);
        let parts = counts(&[("t", 4)]);
        let r1 = Assignor::CooperativeSticky.assign(&[a.clone(), b.clone()], &parts);
        assert_eq!(r1["a"], tps(&[("t", &[0, 1])]));
        assert!(r1["b"].is_empty());
        // a revoked 2 and 3 and rejoins; b gets them now.
        a.owned = r1["a"].clone();
        a.generation = 6;
        let r2 = Assignor::CooperativeSticky.assign(&[a, b], &parts);
        assert_eq!(r2["a"], tps(&[("t", &[0, 1])]));
        assert_eq!(r2["b"], tps(&[("t", &[2, 3])]));
    }

    #[test]
    fn sticky_claims_resolve_by_generation() {
        let mut a = member("a", &["t"]);
        let mut b = member("b", &["t"]);
        let mut c = member("c", &["t"]);
        a.owned = tps(&[("t", &[0, 1])]);
        a.generation = 3;
        b.owned = tps(&[("t", &[0])]);
        b.generation = 4;
        c.owned = tps(&[("t", &[1, 2])]);
        c.generation = 3;
        let got = Assignor::CooperativeSticky.assign(&[a, b, c], &counts(&[("t", 3)]));
        // t-0: b wins (gen 4). t-1: a and c tie at gen 3, so nobody gets it.
        // t-2: only c claims it.
        assert_eq!(got["b"], tps(&[("t", &[0])]));
        assert_eq!(got["c"], tps(&[("t", &[2])]));
        assert!(got["a"].is_empty());
    }

    #[test]
    fn sticky_gives_up_highest_partitions_first() {
        let mut a = member("a", &["t"]);
        a.owned = tps(&[("t", &[0, 1, 2, 3, 4, 5])]);
        a.generation = 1;
        let b = member("b", &["t"]);
        let c = member("c", &["t"]);
        let got = Assignor::CooperativeSticky.assign(&[a, b, c], &counts(&[("t", 6)]));
        assert_eq!(got["a"], tps(&[("t", &[0, 1])]));
    }
}
