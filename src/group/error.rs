//! Why a group operation failed ([`GroupError`]), as one line that names
//! the group, the operation, the broker, topic or partition involved and
//! what to do; and which Kafka errors *fence* a member.

use std::fmt;
use std::time::Duration;

use kafka_protocol::ResponseError;

use crate::protocol::ProtocolError;

/// Kafka errors that say a commit (or heartbeat) came from a member the
/// group no longer knows in that role: its partitions may already belong to
/// someone else, so they must be dropped, never retried blindly.
pub fn is_fencing_error(e: &ResponseError) -> bool {
    matches!(
        e,
        ResponseError::IllegalGeneration
            | ResponseError::UnknownMemberId
            | ResponseError::StaleMemberEpoch
            | ResponseError::FencedInstanceId
            | ResponseError::FencedMemberEpoch
    )
}

/// What a failed offset commit means for the member that sent it (see
/// [`commit_failure`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitFailure {
    /// STALE_MEMBER_EPOCH (KIP-848): the member's epoch moved on while the
    /// commit was in flight. The member still belongs to the group and a
    /// partition it lost arrives as a revocation, so the same offsets may
    /// be committed again under the new epoch (as Java's consumer does).
    Stale,
    /// The group no longer knows the member in that role (see
    /// [`is_fencing_error`], less STALE_MEMBER_EPOCH): its partitions may be
    /// someone else's already and must be dropped, not retried.
    Fenced,
    /// Anything else (coordinator moved, timeout, …): nothing is known to
    /// be committed; commit again later.
    Retry,
}

/// Classifies the Kafka error of a failed offset commit (`None`: no Kafka
/// error, e.g. a connection failure).
pub fn commit_failure(e: Option<ResponseError>) -> CommitFailure {
    match e {
        Some(ResponseError::StaleMemberEpoch) => CommitFailure::Stale,
        Some(k) if is_fencing_error(&k) => CommitFailure::Fenced,
        _ => CommitFailure::Retry,
    }
}

/// Why a group operation failed. `Display` is one line naming the group, the
/// operation, the broker/topic/partition involved, and what to do.
#[derive(Debug)]
pub enum GroupError {
    /// No bootstrap broker could be reached before the retry deadline.
    Unreachable {
        /// Group id.
        group: String,
        /// The bootstrap list, comma-separated.
        brokers: String,
        /// The last connection error.
        detail: String,
    },
    /// The coordinator stayed unavailable (or kept moving) until the retry
    /// deadline passed.
    CoordinatorUnavailable {
        /// Group id.
        group: String,
        /// The operation, e.g. "committing offsets".
        op: &'static str,
        /// How long we retried.
        after: Duration,
        /// The last reason we retried.
        detail: String,
    },
    /// A protocol-level failure that retrying cannot fix (version mismatch,
    /// undecodable response).
    Protocol {
        /// Group id.
        group: String,
        /// The operation.
        op: &'static str,
        /// The underlying error (names the broker).
        source: ProtocolError,
    },
    /// The broker rejected the operation for the whole group.
    Group {
        /// Group id.
        group: String,
        /// The operation.
        op: &'static str,
        /// Broker that answered.
        broker: String,
        /// Kafka's error.
        error: ResponseError,
        /// The principal we most likely are, to name a missing ACL.
        principal: String,
    },
    /// The broker rejected one partition (the first one found, if several).
    Partition {
        /// Group id.
        group: String,
        /// The operation.
        op: &'static str,
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// Kafka's error.
        error: ResponseError,
        /// The principal we most likely are, to name a missing ACL.
        principal: String,
    },
    /// The broker's answer is incomplete (e.g. a committed partition missing).
    InvalidResponse {
        /// Group id.
        group: String,
        /// The operation.
        op: &'static str,
        /// Broker that answered.
        broker: String,
        /// What is wrong.
        detail: String,
    },
}

/// What to do about a Kafka error code, as one short clause.
fn hint(error: &ResponseError) -> &'static str {
    use ResponseError as E;
    match error {
        E::UnknownTopicOrPartition => "check the topic name and its partition count",
        E::IllegalGeneration
        | E::UnknownMemberId
        | E::RebalanceInProgress
        | E::FencedInstanceId
        | E::StaleMemberEpoch => {
            "the group has active members or rebalanced; rejoin the group or use a group id nobody else uses"
        }
        E::InvalidGroupId => "use a non-empty group id",
        E::OffsetMetadataTooLarge => "commit shorter metadata",
        E::GroupIdNotFound => "the group does not exist",
        _ => "see the broker log",
    }
}

impl fmt::Display for GroupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unreachable {
                group,
                brokers,
                detail,
            } => write!(
                f,
                "group '{group}': no Kafka broker reachable at {brokers} ({detail}); check the address and that the broker runs (just kafka-up)"
            ),
            Self::CoordinatorUnavailable {
                group,
                op,
                after,
                detail,
            } => write!(
                f,
                "{op} for group '{group}': coordinator still unavailable after {after:?} ({detail}); check broker health and retry"
            ),
            Self::Protocol { group, op, source } => {
                write!(f, "{op} for group '{group}': {source}")
            }
            Self::Group {
                group,
                error: ResponseError::GroupAuthorizationFailed,
                principal,
                op,
                ..
            } => write!(
                f,
                "{op} for group '{group}': not authorized (GROUP_AUTHORIZATION_FAILED): the ACL allowing {principal} READ on Group:{group} is missing (kafka-acls --add --allow-principal {principal} --operation Read --group {group})"
            ),
            Self::Group {
                group,
                op,
                broker,
                error,
                ..
            } => write!(
                f,
                "{op} for group '{group}' rejected by broker {broker}: {error} ({})",
                hint(error)
            ),
            Self::Partition {
                group,
                op,
                topic,
                error: ResponseError::TopicAuthorizationFailed,
                principal,
                ..
            } => write!(
                f,
                "{op} for group '{group}': not authorized for topic '{topic}' (TOPIC_AUTHORIZATION_FAILED): the ACL allowing {principal} READ on Topic:{topic} is missing (kafka-acls --add --allow-principal {principal} --operation Read --topic {topic})"
            ),
            Self::Partition {
                group,
                op,
                topic,
                partition,
                error,
                ..
            } => write!(
                f,
                "{op} for group '{group}' failed for topic '{topic}' partition {partition}: {error} ({})",
                hint(error)
            ),
            Self::InvalidResponse {
                group,
                op,
                broker,
                detail,
            } => write!(
                f,
                "{op} for group '{group}': invalid answer from broker {broker}: {detail}"
            ),
        }
    }
}

impl std::error::Error for GroupError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Protocol { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl GroupError {
    /// The Kafka error code behind this error, if the broker sent one.
    pub fn kafka_error(&self) -> Option<ResponseError> {
        match self {
            Self::Group { error, .. } | Self::Partition { error, .. } => Some(*error),
            _ => None,
        }
    }

    /// Whether the broker refused us: TLS or SASL failed, or an ACL is missing.
    pub fn is_security(&self) -> bool {
        matches!(
            self.kafka_error(),
            Some(
                ResponseError::GroupAuthorizationFailed
                    | ResponseError::TopicAuthorizationFailed
                    | ResponseError::ClusterAuthorizationFailed
                    | ResponseError::SaslAuthenticationFailed
            )
        ) || matches!(
            self,
            Self::Protocol {
                source: ProtocolError::Security { .. },
                ..
            }
        )
    }
}

impl From<GroupError> for crate::error::Error {
    /// Maps to the crate error so the binaries print one line and exit with
    /// the documented code: unreachable brokers → `Unreachable`, anything
    /// else → `Kafka` (an UNKNOWN_TOPIC_OR_PARTITION cannot tell a missing
    /// topic from a missing partition, so it stays a `Kafka` error too).
    fn from(e: GroupError) -> Self {
        match e {
            GroupError::Unreachable {
                brokers, detail, ..
            } => crate::error::Error::Unreachable { brokers, detail },
            other if other.is_security() => crate::error::Error::Security(other.to_string()),
            other => crate::error::Error::Kafka {
                context: "consumer group".to_string(),
                detail: other.to_string(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_one_line_and_name_the_partition() {
        let e = GroupError::Partition {
            group: "g1".into(),
            op: "committing offsets",
            topic: "orders".into(),
            partition: 7,
            error: ResponseError::UnknownTopicOrPartition,
            principal: "User:alice".into(),
        };
        let s = e.to_string();
        assert!(!s.contains('\n'), "{s}");
        for needle in [
            "g1",
            "orders",
            "partition 7",
            "UnknownTopicOrPartition",
            "check the topic",
        ] {
            assert!(s.contains(needle), "{needle} missing in: {s}");
        }
        assert_eq!(
            e.kafka_error(),
            Some(ResponseError::UnknownTopicOrPartition)
        );
    }

    #[test]
    fn a_stale_epoch_is_retried_not_fenced() {
        use CommitFailure::*;
        assert_eq!(commit_failure(Some(ResponseError::StaleMemberEpoch)), Stale);
        for fenced in [
            ResponseError::IllegalGeneration,
            ResponseError::UnknownMemberId,
            ResponseError::FencedInstanceId,
            ResponseError::FencedMemberEpoch,
        ] {
            assert_eq!(commit_failure(Some(fenced)), Fenced, "{fenced:?}");
        }
        assert_eq!(commit_failure(Some(ResponseError::NotCoordinator)), Retry);
        assert_eq!(commit_failure(None), Retry);
    }
}
