//! Classic consumer-group assignors and the ConsumerProtocol encoding
//! (DESIGN rule 7).
//!
//! In the classic group protocol the broker only relays bytes: every member
//! puts a *subscription* (ConsumerProtocolSubscription) in its JoinGroup
//! metadata, the elected leader computes the assignment client-side and
//! hands each member its share (ConsumerProtocolAssignment) in SyncGroup.
//! To share a group with Java's and librdkafka's consumers we speak the
//! same protocol names (`range`, `roundrobin`, `cooperative-sticky`), the
//! same wire layout (an i16 version followed by the struct at that version,
//! encoded by the `kafka-protocol` crate) and, when we are the leader, hand
//! out assignments with the same guarantees as Java's assignors:
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
use std::panic::{AssertUnwindSafe, catch_unwind};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, ConsumerProtocolSubscription, TopicName,
    consumer_protocol_assignment, consumer_protocol_subscription,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

/// Highest ConsumerProtocolSubscription / ConsumerProtocolAssignment version
/// the `kafka-protocol` crate knows; newer versions are decoded as this one
/// (they only append fields), as Java does.
const MAX_CONSUMER_PROTOCOL_VERSION: i16 = 3;

/// Version of the subscription we send: topics, user data, owned partitions.
const SUBSCRIPTION_VERSION: i16 = 1;

/// Version of the assignment we send (read by every client).
const ASSIGNMENT_VERSION: i16 = 0;

/// Generation of a member whose owned partitions carry no generation.
const DEFAULT_GENERATION: i32 = -1;

/// Longest string the protocol can carry (i16 length prefix). Real topic
/// names are at most 249 characters, so longer ones are never encoded.
const MAX_STRING_LEN: usize = i16::MAX as usize;

/// One member's subscription as the leader sees it (from JoinGroup members).
///
/// Built by [`decode_subscription`] from a member's JoinGroup metadata and
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

/// Encodes `msg` at `version`, prefixed with the version (the consumer
/// protocol's framing).
fn version_prefixed<T: Encodable>(msg: &T, version: i16) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_i16(version);
    // Cannot fail: the version is supported and every string was checked
    // against the protocol's length limit by the caller.
    msg.encode(&mut buf, version)
        .expect("consumer protocol message encodes");
    buf.freeze()
}

/// Whether `s` can be sent as a protocol string.
fn encodable(s: &str) -> bool {
    s.len() <= MAX_STRING_LEN
}

/// Our subscription bytes for JoinGroup: ConsumerProtocolSubscription
/// version 1 (topics, user_data, owned_partitions), with user_data = the
/// 4-byte big-endian generation for CooperativeSticky (what Java's
/// CooperativeStickyAssignor writes) and None otherwise.
///
/// Topics are sent sorted and without repeats, owned partitions sorted per
/// topic (as Java sends them); names longer than the protocol allows (no
/// Kafka topic is) are left out.
pub fn encode_subscription(
    assignor: Assignor,
    topics: &[String],
    owned: &BTreeMap<String, Vec<i32>>,
    generation: i32,
) -> Bytes {
    let topics: BTreeSet<&String> = topics.iter().filter(|t| encodable(t)).collect();
    let owned_partitions = owned
        .iter()
        .filter(|(t, parts)| encodable(t) && !parts.is_empty())
        .map(|(t, parts)| {
            let parts: BTreeSet<i32> = parts.iter().copied().collect();
            consumer_protocol_subscription::TopicPartition::default()
                .with_topic(TopicName(StrBytes::from_string(t.clone())))
                .with_partitions(parts.into_iter().collect())
        })
        .collect();
    let user_data = assignor
        .is_cooperative()
        .then(|| Bytes::copy_from_slice(&generation.to_be_bytes()));
    let msg = ConsumerProtocolSubscription::default()
        .with_topics(
            topics
                .into_iter()
                .map(|t| StrBytes::from_string(t.clone()))
                .collect(),
        )
        .with_user_data(user_data)
        .with_owned_partitions(owned_partitions)
        .with_generation_id(generation);
    version_prefixed(&msg, SUBSCRIPTION_VERSION)
}

/// Decodes a member's metadata from JoinGroup; for CooperativeSticky reads
/// the generation from the v2+ generation_id field, else from 4-byte
/// user_data, else -1.
///
/// Accepts versions 0..=3 and decodes newer ones as 3 (they only append
/// fields), as Java does. Malformed input (truncated, negative version,
/// lengths past the end, bad UTF-8) is an `Err`, never a panic. For the
/// other assignors `generation` is the v2+ field if present, else -1.
pub fn decode_subscription(
    member_id: &str,
    group_instance_id: Option<&str>,
    assignor: Assignor,
    metadata: &[u8],
) -> Result<MemberSubscription, String> {
    let msg: ConsumerProtocolSubscription =
        decode_prefixed(metadata, "subscription", check_subscription)
            .map_err(|e| format!("member {member_id}: {e}"))?;
    let field_generation = (msg.generation_id >= 0).then_some(msg.generation_id);
    let generation = match (field_generation, assignor) {
        (Some(g), _) => g,
        (None, Assignor::CooperativeSticky) => msg
            .user_data
            .as_ref()
            .and_then(|d| d.get(..4))
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .unwrap_or(DEFAULT_GENERATION),
        (None, _) => DEFAULT_GENERATION,
    };
    let mut owned: BTreeMap<String, BTreeSet<i32>> = BTreeMap::new();
    for tp in msg.owned_partitions {
        owned
            .entry(tp.topic.0.to_string())
            .or_default()
            .extend(tp.partitions);
    }
    Ok(MemberSubscription {
        member_id: member_id.to_owned(),
        group_instance_id: group_instance_id.map(str::to_owned),
        topics: msg.topics.iter().map(|t| t.to_string()).collect(),
        owned: owned
            .into_iter()
            .map(|(t, p)| (t, p.into_iter().collect()))
            .collect(),
        generation,
    })
}

/// Our SyncGroup assignment bytes for one member: ConsumerProtocolAssignment
/// version 0, topics and partitions sorted, no user data. Topics with no
/// partitions are left out; an empty map encodes an empty assignment.
pub fn encode_assignment(assigned: &BTreeMap<String, Vec<i32>>) -> Bytes {
    let assigned_partitions = assigned
        .iter()
        .filter(|(t, parts)| encodable(t) && !parts.is_empty())
        .map(|(t, parts)| {
            let parts: BTreeSet<i32> = parts.iter().copied().collect();
            consumer_protocol_assignment::TopicPartition::default()
                .with_topic(TopicName(StrBytes::from_string(t.clone())))
                .with_partitions(parts.into_iter().collect())
        })
        .collect();
    let msg = ConsumerProtocolAssignment::default()
        .with_assigned_partitions(assigned_partitions)
        .with_user_data(None);
    version_prefixed(&msg, ASSIGNMENT_VERSION)
}

/// Decodes our SyncGroup assignment into topic -> sorted partitions (a topic
/// listed twice is merged). Empty bytes are an empty assignment (a member
/// the leader gave nothing: Java sends empty bytes). Any version 0..=3 is
/// read, newer ones as 3; malformed input, including a negative partition
/// id, is an `Err`, never a panic.
pub fn decode_assignment(bytes: &[u8]) -> Result<BTreeMap<String, Vec<i32>>, String> {
    if bytes.is_empty() {
        return Ok(BTreeMap::new());
    }
    let msg: ConsumerProtocolAssignment = decode_prefixed(bytes, "assignment", check_assignment)?;
    let mut out: BTreeMap<String, BTreeSet<i32>> = BTreeMap::new();
    for tp in msg.assigned_partitions {
        if let Some(p) = tp.partitions.iter().find(|&&p| p < 0) {
            return Err(format!(
                "malformed consumer protocol assignment: negative partition {p} for topic {:?}",
                &*tp.topic.0
            ));
        }
        out.entry(tp.topic.0.to_string())
            .or_default()
            .extend(tp.partitions);
    }
    Ok(out
        .into_iter()
        .map(|(t, p)| (t, p.into_iter().collect()))
        .collect())
}

/// Reads the i16 version, clamps a newer one to the highest we know, checks
/// that every length fits in the input (`check`, so a hostile count cannot
/// make the decoder reserve gigabytes, which would abort rather than
/// panic), then decodes with the `kafka-protocol` decoder, any panic caught.
fn decode_prefixed<T: Decodable>(
    bytes: &[u8],
    what: &str,
    check: fn(&mut Cursor<'_>, i16) -> Option<()>,
) -> Result<T, String> {
    let malformed = |detail: &str| format!("malformed consumer protocol {what}: {detail}");
    if bytes.len() < 2 {
        return Err(malformed("shorter than its 2-byte version"));
    }
    let mut body = Bytes::copy_from_slice(bytes);
    let version = body.get_i16();
    if version < 0 {
        return Err(malformed(&format!("negative version {version}")));
    }
    let version = version.min(MAX_CONSUMER_PROTOCOL_VERSION);
    if check(&mut Cursor(&body), version).is_none() {
        return Err(malformed(&format!(
            "truncated or bad length (version {version})"
        )));
    }
    match catch_unwind(AssertUnwindSafe(|| T::decode(&mut body, version))) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(malformed(e.to_string().trim())),
        Err(_) => Err(malformed("decoder panicked")),
    }
}

/// A read position for the length checks below; every method returns
/// `None` when the input ends too early.
struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn skip(&mut self, n: usize) -> Option<()> {
        self.0 = self.0.get(n..)?;
        Some(())
    }
    fn i16(&mut self) -> Option<i16> {
        let v = i16::from_be_bytes(self.0.get(..2)?.try_into().ok()?);
        self.skip(2).map(|_| v)
    }
    fn i32(&mut self) -> Option<i32> {
        let v = i32::from_be_bytes(self.0.get(..4)?.try_into().ok()?);
        self.skip(4).map(|_| v)
    }
    /// A (nullable) string: i16 length, -1 for null.
    fn string(&mut self) -> Option<()> {
        match self.i16()? {
            -1 => Some(()),
            n => self.skip(usize::try_from(n).ok()?),
        }
    }
    /// Nullable bytes: i32 length, -1 for null.
    fn bytes(&mut self) -> Option<()> {
        match self.i32()? {
            -1 => Some(()),
            n => self.skip(usize::try_from(n).ok()?),
        }
    }
    /// An array whose elements take at least `min` bytes each: the count
    /// must fit in what is left before any element is read.
    fn array(&mut self, min: usize, mut each: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        let n = match self.i32()? {
            -1 => 0,
            n => usize::try_from(n).ok()?,
        };
        if n.checked_mul(min)? > self.0.len() {
            return None;
        }
        (0..n).try_for_each(|_| each(self))
    }
    /// topic string + array of i32 partitions.
    fn topic_partitions(&mut self) -> Option<()> {
        self.string()?;
        self.array(4, |c| c.i32().map(|_| ()))
    }
}

/// Length check of a ConsumerProtocolSubscription body at `version`.
fn check_subscription(c: &mut Cursor<'_>, version: i16) -> Option<()> {
    c.array(2, Cursor::string)?;
    c.bytes()?;
    if version >= 1 {
        c.array(6, Cursor::topic_partitions)?;
    }
    if version >= 2 {
        c.i32()?;
    }
    if version >= 3 {
        c.string()?;
    }
    Some(())
}

/// Length check of a ConsumerProtocolAssignment body at `version`.
fn check_assignment(c: &mut Cursor<'_>, _version: i16) -> Option<()> {
    c.array(6, Cursor::topic_partitions)?;
    c.bytes()
}

#[cfg(test)]
mod tests {
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

    fn tps(list: &[(&str, &[i32])]) -> TopicPartitions {
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

    #[test]
    fn subscription_round_trips_at_every_version() {
        let topics = vec!["b".to_owned(), "a".to_owned()];
        let owned = tps(&[("a", &[2, 0]), ("b", &[1])]);
        let bytes = encode_subscription(Assignor::CooperativeSticky, &topics, &owned, 7);
        assert_eq!(&bytes[..2], &[0, 1]);
        let got = decode_subscription("m", Some("i"), Assignor::CooperativeSticky, &bytes).unwrap();
        assert_eq!(got.member_id, "m");
        assert_eq!(got.group_instance_id.as_deref(), Some("i"));
        assert_eq!(got.topics, ["a", "b"]);
        assert_eq!(got.owned, tps(&[("a", &[0, 2]), ("b", &[1])]));
        assert_eq!(got.generation, 7);

        // Every version the crate encodes, with the generation in the v2+
        // field only (user data says 1, the field 9: the field wins).
        for version in 0..=3i16 {
            let msg = ConsumerProtocolSubscription::default()
                .with_topics(vec![StrBytes::from_static_str("t")])
                .with_user_data(Some(Bytes::from_static(&[0, 0, 0, 1])))
                .with_owned_partitions(if version >= 1 {
                    vec![
                        consumer_protocol_subscription::TopicPartition::default()
                            .with_topic(TopicName(StrBytes::from_static_str("t")))
                            .with_partitions(vec![3, 4]),
                    ]
                } else {
                    vec![]
                })
                .with_generation_id(9)
                .with_rack_id(Some(StrBytes::from_static_str("rack")));
            let bytes = version_prefixed(&msg, version);
            let got = decode_subscription("m", None, Assignor::CooperativeSticky, &bytes).unwrap();
            assert_eq!(got.topics, ["t"], "v{version}");
            let want_owned = if version >= 1 {
                tps(&[("t", &[3, 4])])
            } else {
                tps(&[])
            };
            assert_eq!(got.owned, want_owned, "v{version}");
            assert_eq!(
                got.generation,
                if version >= 2 { 9 } else { 1 },
                "v{version}"
            );
            let eager = decode_subscription("m", None, Assignor::Range, &bytes).unwrap();
            assert_eq!(
                eager.generation,
                if version >= 2 { 9 } else { -1 },
                "v{version}"
            );
        }
    }

    #[test]
    fn newer_versions_decode_as_v3() {
        let msg = ConsumerProtocolSubscription::default()
            .with_topics(vec![StrBytes::from_static_str("t")])
            .with_generation_id(4);
        let mut bytes = BytesMut::from(&version_prefixed(&msg, 3)[..]);
        bytes[..2].copy_from_slice(&7i16.to_be_bytes());
        bytes.extend_from_slice(b"future fields");
        let got = decode_subscription("m", None, Assignor::CooperativeSticky, &bytes).unwrap();
        assert_eq!((got.topics, got.generation), (vec!["t".to_owned()], 4));
    }

    #[test]
    fn decodes_java_v0_layout_built_by_hand() {
        let mut b = BytesMut::new();
        b.put_i16(0); // version
        b.put_i32(2); // topics
        for t in ["orders", "payments"] {
            b.put_i16(t.len() as i16);
            b.put_slice(t.as_bytes());
        }
        b.put_i32(4); // user data: CooperativeStickyAssignor generation
        b.put_i32(12);
        let got = decode_subscription("m", None, Assignor::CooperativeSticky, &b).unwrap();
        assert_eq!(got.topics, ["orders", "payments"]);
        assert!(got.owned.is_empty());
        assert_eq!(got.generation, 12);

        // v1 with null user data and owned partitions.
        let mut b = BytesMut::new();
        b.put_i16(1);
        b.put_i32(1);
        b.put_i16(1);
        b.put_slice(b"t");
        b.put_i32(-1); // null user data
        b.put_i32(1); // owned: one topic
        b.put_i16(1);
        b.put_slice(b"t");
        b.put_i32(2);
        b.put_i32(0);
        b.put_i32(5);
        let got = decode_subscription("m", None, Assignor::CooperativeSticky, &b).unwrap();
        assert_eq!(got.owned, tps(&[("t", &[0, 5])]));
        assert_eq!(got.generation, -1);
    }

    #[test]
    fn assignment_round_trip_and_java_layout() {
        let assigned = tps(&[("a", &[3, 1]), ("b", &[0]), ("empty", &[])]);
        let bytes = encode_assignment(&assigned);
        let mut hand = BytesMut::new();
        hand.put_i16(0);
        hand.put_i32(2);
        for (t, parts) in [("a", &[1, 3][..]), ("b", &[0][..])] {
            hand.put_i16(1);
            hand.put_slice(t.as_bytes());
            hand.put_i32(parts.len() as i32);
            parts.iter().for_each(|&p| hand.put_i32(p));
        }
        hand.put_i32(-1); // null user data
        assert_eq!(&bytes[..], &hand[..]);
        assert_eq!(
            decode_assignment(&bytes).unwrap(),
            tps(&[("a", &[1, 3]), ("b", &[0])])
        );
        assert_eq!(decode_assignment(&[]).unwrap(), tps(&[]));
        assert_eq!(
            decode_assignment(&encode_assignment(&tps(&[]))).unwrap(),
            tps(&[])
        );
        // Java's highest version (3) with user data, and a future version.
        for version in [1i16, 3, 9] {
            let msg = ConsumerProtocolAssignment::default()
                .with_assigned_partitions(vec![
                    consumer_protocol_assignment::TopicPartition::default()
                        .with_topic(TopicName(StrBytes::from_static_str("x")))
                        .with_partitions(vec![2]),
                ])
                .with_user_data(Some(Bytes::from_static(b"ud")));
            let mut b = BytesMut::from(&version_prefixed(&msg, version.min(3))[..]);
            b[..2].copy_from_slice(&version.to_be_bytes());
            assert_eq!(
                decode_assignment(&b).unwrap(),
                tps(&[("x", &[2])]),
                "v{version}"
            );
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut cases: Vec<Vec<u8>> = vec![
            vec![0],
            vec![0xff, 0xff],
            vec![0, 0],
            vec![0, 0, 0x7f, 0xff, 0xff, 0xff], // 2^31-1 topics
            vec![0, 1, 0, 0, 0, 1, 0x7f, 0xff, b'a'], // string past the end
            vec![0, 0, 0, 0, 0, 1, 0, 2, 0xc3, 0x28, 0, 0, 0, 0], // bad UTF-8
            vec![
                0, 1, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff,
            ],
        ];
        // Deterministic pseudo-random junk.
        let mut x: u32 = 0x1234_5678;
        for len in 0..200 {
            let mut v = Vec::with_capacity(len);
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                v.push(x as u8);
            }
            if len >= 2 {
                v[0] = 0;
                v[1] = (x % 5) as u8;
            }
            cases.push(v);
        }
        for bytes in &cases {
            let _ = decode_subscription("m", None, Assignor::CooperativeSticky, bytes);
            let _ = decode_assignment(bytes);
        }
        for bytes in &cases[..7] {
            assert!(
                decode_subscription("m", None, Assignor::Range, bytes).is_err(),
                "{bytes:?}"
            );
        }
        assert!(decode_assignment(&[0]).is_err());
        assert!(decode_assignment(&[0, 0, 0x7f, 0xff, 0xff, 0xff]).is_err());
        let neg = encode_assignment(&tps(&[("t", &[-1])]));
        assert!(
            decode_assignment(&neg)
                .unwrap_err()
                .contains("negative partition")
        );
        // Truncating a valid message anywhere is an error.
        let full = encode_subscription(
            Assignor::CooperativeSticky,
            &["t".into()],
            &tps(&[("t", &[1])]),
            3,
        );
        for cut in 0..full.len() {
            assert!(
                decode_subscription("m", None, Assignor::CooperativeSticky, &full[..cut]).is_err()
            );
        }
    }
}
