//! Idempotence: the producer id and epoch, and what each produce error
//! means for a batch, following Java's `Sender` and `TransactionManager`
//! (KIP-98 sequence numbers, KIP-360 epoch bumps).
//!
//! The broker remembers, per producer id and partition, the sequence
//! numbers of the last five batches it appended. A batch sent again with the
//! same id, epoch and sequence is recognised and answered with its original
//! offset instead of being written twice: retries are safe as long as a
//! batch keeps its sequence and batches are retried in order.

use std::time::Duration;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{ApiKey, InitProducerIdRequest};

use crate::cluster::ClusterConfig;
use crate::error::{Error, Result};
use crate::protocol::{Connection, VersionRange};

/// InitProducerId versions we build; v3+ can bump an existing producer's
/// epoch (KIP-360), older brokers hand out a new id instead.
const INIT_PRODUCER_ID_VERSIONS: VersionRange = VersionRange { min: 0, max: 5 };

/// A producer id and its epoch.
pub type ProducerId = (i64, i16);

/// Obtains a producer id from any broker (an idempotent producer without a
/// transactional id needs no coordinator), or, with `current`, bumps its
/// epoch (KIP-360). Retries retriable errors for up to the connect timeout.
/// A refusal names the smallest ACL that allows it: Write on `topic`
/// (KIP-679; IdempotentWrite on the cluster works too).
pub async fn init_producer_id(
    cluster: &ClusterConfig,
    topic: &str,
    current: Option<ProducerId>,
) -> Result<ProducerId> {
    let deadline =
        tokio::time::Instant::now() + cluster.connect_timeout.max(Duration::from_secs(5));
    let mut backoff = Duration::from_millis(100);
    loop {
        let failure = match attempt(cluster, topic, current).await {
            Ok(id) => return Ok(id),
            Err(Attempt::Final(e)) => return Err(e),
            Err(Attempt::Retry(e)) => e,
        };
        if tokio::time::Instant::now() + backoff > deadline {
            return Err(failure);
        }
        tracing::debug!("InitProducerId: {failure}; retrying in {backoff:?}");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

enum Attempt {
    Retry(Error),
    Final(Error),
}

async fn attempt(
    cluster: &ClusterConfig,
    topic: &str,
    current: Option<ProducerId>,
) -> std::result::Result<ProducerId, Attempt> {
    let context = "obtaining a producer id (InitProducerId)";
    let mut last = None;
    for addr in &cluster.brokers {
        let conn = match Connection::connect(addr, cluster.connection()).await {
            Ok(c) => c,
            Err(e) if e.is_transport() => {
                last = Some(Error::protocol(context, e));
                continue;
            }
            Err(e) => return Err(Attempt::Final(Error::protocol(context, e))),
        };
        let version = conn
            .negotiate(ApiKey::InitProducerId, INIT_PRODUCER_ID_VERSIONS)
            .map_err(|e| Attempt::Final(Error::protocol(context, e)))?;
        let (id, epoch) = match current {
            Some((id, epoch)) if version >= 3 => (id, epoch),
            _ => (-1, -1),
        };
        let request = InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(i32::MAX)
            .with_producer_id(kafka_protocol::messages::ProducerId(id))
            .with_producer_epoch(epoch);
        let response = match conn.send(&request, version).await {
            Ok(r) => r,
            Err(e) if e.is_transport() => {
                last = Some(Error::protocol(context, e));
                continue;
            }
            Err(e) => return Err(Attempt::Final(Error::protocol(context, e))),
        };
        return match ResponseError::try_from_code(response.error_code) {
            None => Ok((response.producer_id.0, response.producer_epoch)),
            Some(ResponseError::ClusterAuthorizationFailed) => Err(Attempt::Final(Error::denied(
                "CLUSTER_AUTHORIZATION_FAILED",
                &cluster.security.principal_hint(),
                "Write",
                &format!("Topic:{topic}"),
            ))),
            Some(e) if e.is_retriable() => {
                Err(Attempt::Retry(Error::kafka(context, format!("{e:?}: {e}"))))
            }
            Some(e) => Err(Attempt::Final(Error::kafka(
                context,
                format!("{e:?}: {e} (or set --idempotence false)"),
            ))),
        };
    }
    Err(Attempt::Retry(last.unwrap_or_else(|| {
        Error::Usage("no bootstrap broker given".into())
    })))
}

/// What a produce error means for the batch it answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Written (or a duplicate the broker recognised): acknowledge it.
    Written,
    /// Send it again, in order; `refresh` asks for new metadata first (the
    /// leader moved).
    Retry { refresh: bool },
    /// The broker lost this producer's state because the log's start moved
    /// past everything we had acknowledged (retention, DeleteRecords):
    /// nothing of ours can be duplicated, so bump the epoch, restart the
    /// sequences and retry (KIP-360).
    BumpEpoch,
    /// The batch fails; the partition stops so nothing later overtakes it.
    Fatal(String),
    /// The producer cannot go on at all (fenced).
    FatalProducer(String),
}

/// Facts about the batch an error answers.
#[derive(Clone, Copy, Debug)]
pub struct Context {
    /// The producer is idempotent.
    pub idempotent: bool,
    /// The batch is the oldest unacknowledged one of its partition: nothing
    /// sent before it can be missing.
    pub oldest_unacked: bool,
    /// The log start offset the response reported (-1 if none).
    pub log_start_offset: i64,
    /// The last offset acknowledged for the partition by this producer (-1 if none).
    pub last_acked_offset: i64,
    /// This batch was sent at least once before.
    pub retried: bool,
}

/// Decides what `error_code` in a partition's produce response means.
pub fn classify(error_code: i16, ctx: Context) -> Verdict {
    use ResponseError as E;
    let Some(error) = ResponseError::try_from_code(error_code) else {
        return Verdict::Written;
    };
    let described = || format!("{error:?}: {error}");
    match error {
        // Duplicates of a batch the broker already has (older brokers answer
        // so instead of returning the original offset).
        E::DuplicateSequenceNumber if ctx.idempotent => Verdict::Written,
        E::NotLeaderOrFollower
        | E::LeaderNotAvailable
        | E::UnknownTopicOrPartition
        | E::FencedLeaderEpoch
        | E::UnknownLeaderEpoch
        | E::KafkaStorageError => Verdict::Retry { refresh: true },
        E::OutOfOrderSequenceNumber | E::UnknownProducerId if ctx.idempotent => {
            if !ctx.oldest_unacked {
                // An earlier batch is missing (it failed, or is being
                // retried): this one follows it in order.
                Verdict::Retry { refresh: false }
            } else if ctx.log_start_offset > ctx.last_acked_offset {
                Verdict::BumpEpoch
            } else if error == E::OutOfOrderSequenceNumber && ctx.retried {
                // A retry of the oldest batch that the broker says is out of
                // sequence: an earlier attempt may or may not be in the log.
                // Java fails the batch here rather than risk a duplicate.
                Verdict::Fatal(format!(
                    "{} (the broker lost track of this producer's sequence; the batch may or may not be written)",
                    described()
                ))
            } else {
                Verdict::Fatal(format!(
                    "{} (the broker lost records this producer had written: unclean leader election or data loss)",
                    described()
                ))
            }
        }
        E::InvalidProducerEpoch | E::ProducerFenced => Verdict::FatalProducer(format!(
            "{} (another producer took over this producer id)",
            described()
        )),
        e if e.is_retriable() => Verdict::Retry { refresh: false },
        _ => Verdict::Fatal(described()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Context {
        Context {
            idempotent: true,
            oldest_unacked: true,
            log_start_offset: 0,
            last_acked_offset: 10,
            retried: false,
        }
    }

    const NOT_LEADER: i16 = 6;
    const OUT_OF_ORDER: i16 = 45;
    const DUPLICATE: i16 = 46;
    const INVALID_EPOCH: i16 = 47;
    const UNKNOWN_PRODUCER: i16 = 59;
    const MESSAGE_TOO_LARGE: i16 = 10;
    const NOT_ENOUGH_REPLICAS: i16 = 19;

    #[test]
    fn leader_moves_and_replica_shortages_retry() {
        assert_eq!(
            classify(NOT_LEADER, ctx()),
            Verdict::Retry { refresh: true }
        );
        assert_eq!(
            classify(NOT_ENOUGH_REPLICAS, ctx()),
            Verdict::Retry { refresh: false }
        );
    }

    #[test]
    fn sequence_errors_behind_a_missing_batch_retry_in_order() {
        let behind = Context {
            oldest_unacked: false,
            ..ctx()
        };
        assert_eq!(
            classify(OUT_OF_ORDER, behind),
            Verdict::Retry { refresh: false }
        );
        assert_eq!(
            classify(UNKNOWN_PRODUCER, behind),
            Verdict::Retry { refresh: false }
        );
    }

    #[test]
    fn lost_producer_state_after_retention_bumps_the_epoch() {
        let trimmed = Context {
            log_start_offset: 11,
            ..ctx()
        };
        assert_eq!(classify(UNKNOWN_PRODUCER, trimmed), Verdict::BumpEpoch);
        assert_eq!(classify(OUT_OF_ORDER, trimmed), Verdict::BumpEpoch);
    }

    #[test]
    fn a_sequence_gap_at_the_oldest_batch_fails_it_rather_than_risk_a_duplicate() {
        assert!(matches!(classify(OUT_OF_ORDER, ctx()), Verdict::Fatal(_)));
        assert!(matches!(
            classify(UNKNOWN_PRODUCER, ctx()),
            Verdict::Fatal(_)
        ));
    }

    #[test]
    fn duplicates_count_as_written_and_fencing_stops_everything() {
        assert_eq!(classify(DUPLICATE, ctx()), Verdict::Written);
        assert!(matches!(
            classify(INVALID_EPOCH, ctx()),
            Verdict::FatalProducer(_)
        ));
        assert!(matches!(
            classify(MESSAGE_TOO_LARGE, ctx()),
            Verdict::Fatal(_)
        ));
        assert_eq!(classify(0, ctx()), Verdict::Written);
    }
}
