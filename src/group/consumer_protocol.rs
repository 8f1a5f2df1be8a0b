//! The ConsumerProtocol encoding of the classic group protocol: what a
//! member puts in its JoinGroup metadata (ConsumerProtocolSubscription) and
//! what the leader hands each member in SyncGroup
//! (ConsumerProtocolAssignment). An i16 version followed by the struct at
//! that version, encoded by the `kafka-protocol` crate, as Java and
//! librdkafka lay it out; newer versions decode as the newest we know.
//! Malformed bytes are an error, never a panic.

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{AssertUnwindSafe, catch_unwind};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, ConsumerProtocolSubscription, TopicName,
    consumer_protocol_assignment, consumer_protocol_subscription,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::assignor::{Assignor, MemberSubscription};

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
    use crate::group::assignor::tests::tps;

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
