//! The consumer group protocol of KIP-848 (GA in Apache Kafka 4.0): one
//! ConsumerGroupHeartbeat request carries the member's subscription and
//! the partitions it owns; the coordinator computes the assignment
//! (server-side assignors `uniform`, `range`) and answers with the member's
//! target. There is no global barrier: the member revokes what is no longer
//! its own (after the pipeline committed it), reports the smaller set in the
//! next heartbeat, and only then does the coordinator give those partitions
//! to their next owner. Partitions not involved keep flowing throughout.
//!
//! The member id is a UUID the client generates (ConsumerGroupHeartbeat
//! v1). Leaving is a heartbeat with epoch -1, or -2 for a static member
//! (KIP-345's "temporary leave": its assignment waits for it for the
//! session timeout).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::ResponseError;
use kafka_protocol::messages::consumer_group_heartbeat_request::TopicPartitions;
use kafka_protocol::messages::consumer_group_heartbeat_response::Assignment;
use kafka_protocol::messages::{
    ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse, GroupId, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::membership::{Control, GroupEvent, Session};
use crate::cluster;
use crate::error::{Error, Result};
use crate::offsets::TopicPartition;
use crate::protocol::VersionRange;

/// ConsumerGroupHeartbeat versions we build and read.
const VERSIONS: VersionRange = VersionRange { min: 0, max: 1 };
/// Epoch of a member leaving for good.
const LEAVE_EPOCH: i32 = -1;
/// Epoch of a static member leaving for now (KIP-848 / KIP-345).
const STATIC_LEAVE_EPOCH: i32 = -2;
/// How long a restarting static member retries while its previous
/// incarnation still holds the instance id.
const UNRELEASED_PATIENCE: Duration = Duration::from_secs(60);

/// The member's side of the protocol.
struct Member {
    member_id: String,
    epoch: i32,
    owned: BTreeSet<TopicPartition>,
    /// The coordinator's latest target assignment.
    target: Option<BTreeSet<TopicPartition>>,
    interval: Duration,
    /// Send the subscription (first heartbeat, and after being fenced).
    full: bool,
    names: HashMap<Uuid, Arc<str>>,
    leave_requested: bool,
}

/// Runs the member until it leaves or fails. With `fallback` (protocol
/// `auto`), a coordinator that refuses the first heartbeat as
/// UNSUPPORTED_VERSION (the consumer protocol switched off) hands the
/// member over to the classic protocol.
pub(crate) async fn run(mut s: Session, fallback: bool) -> Result<()> {
    let mut m = Member {
        member_id: Uuid::new_v4().to_string(),
        epoch: 0,
        owned: BTreeSet::new(),
        target: None,
        interval: Duration::from_secs(1),
        full: true,
        names: HashMap::new(),
        leave_requested: false,
    };
    let remote = s
        .cfg
        .remote_assignor
        .clone()
        .unwrap_or_else(|| "default".into());
    s.update(|st| {
        st.protocol = format!("consumer/{remote}");
        st.member_id = m.member_id.clone();
    });
    let mut unreleased_since: Option<Instant> = None;
    let mut announced = false;
    // The epoch the rebalance count last counted.
    let mut counted_epoch = 0;
    loop {
        if m.leave_requested {
            return leave(&s, &m).await;
        }
        let response = heartbeat(&s, &m, m.epoch).await?;
        match ResponseError::try_from_code(response.error_code) {
            None => {
                s.contact();
                if !announced {
                    s.announce(super::GroupProtocol::Consumer);
                    announced = true;
                }
                unreleased_since = None;
            }
            Some(ResponseError::UnsupportedVersion) if fallback && m.epoch == 0 => {
                tracing::info!(
                    group = %s.cfg.group,
                    "the coordinator refuses the consumer group protocol; falling back to classic"
                );
                return super::classic::run(s).await;
            }
            Some(e @ (ResponseError::FencedMemberEpoch | ResponseError::UnknownMemberId)) => {
                lose_all(&mut s, &mut m, e).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Some(ResponseError::UnreleasedInstanceId)
                if unreleased_since.is_none_or(|t| t.elapsed() < UNRELEASED_PATIENCE) =>
            {
                // The previous incarnation of this static member has not
                // left yet (its heartbeat with epoch -2 is on the way).
                unreleased_since.get_or_insert_with(Instant::now);
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Some(e) => return Err(fatal(&s, e, response.error_message.as_deref())),
        }
        m.full = false;
        m.epoch = response.member_epoch;
        // Commits from here on (revocations included) carry this epoch.
        s.update(|st| {
            st.generation = m.epoch;
            st.fenced = false;
        });
        if response.heartbeat_interval_ms > 0 {
            m.interval = Duration::from_millis(response.heartbeat_interval_ms as u64);
        }
        if let Some(a) = &response.assignment {
            let (target, complete) = resolve(&s, &mut m, a).await;
            m.target = Some(target);
            // The coordinator sends an assignment only when it changes (or
            // on a full request): ask again until every topic id resolves.
            m.full = !complete;
        }
        if reconcile(&mut s, &mut m).await? {
            // Changed what we own: tell the coordinator at once.
            continue;
        }
        let stable = m.target.as_ref().is_none_or(|t| *t == m.owned);
        s.update(|st| {
            if m.epoch != counted_epoch {
                st.rebalances += 1;
            }
            st.assigned = m.owned.clone();
            st.stable = stable;
        });
        counted_epoch = m.epoch;
        tokio::select! {
            _ = tokio::time::sleep(m.interval) => {}
            ctl = s.control.recv() => match ctl {
                Some(Control::Rejoin(reason)) => {
                    tracing::info!(group = %s.cfg.group, "dropped every partition: {reason}");
                    m.owned.clear();
                }
                Some(Control::Leave) | None => m.leave_requested = true,
            },
        }
    }
}

/// Moves the owned set toward the target: revoke first (waiting for the
/// pipeline's commit), then take new partitions. True if anything changed.
async fn reconcile(s: &mut Session, m: &mut Member) -> Result<bool> {
    let Some(target) = m.target.clone() else {
        return Ok(false);
    };
    let revoked: Vec<TopicPartition> = m.owned.difference(&target).cloned().collect();
    if !revoked.is_empty() {
        tracing::info!(group = %s.cfg.group, epoch = m.epoch, "revoking {}", list(&revoked));
        let (done, mut acked) = oneshot::channel();
        if !s
            .emit(GroupEvent::Revoke {
                partitions: revoked.clone(),
                done,
            })
            .await
        {
            return Ok(false);
        }
        // Keep the session alive while the pipeline finishes and commits.
        loop {
            tokio::select! {
                _ = &mut acked => break,
                _ = tokio::time::sleep(m.interval) => {
                    // Bounded, so coordinator trouble never holds up the acknowledgement.
                    let Ok(r) = tokio::time::timeout(m.interval, heartbeat(s, m, m.epoch)).await else {
                        continue;
                    };
                    let r = r?;
                    match ResponseError::try_from_code(r.error_code) {
                        None => {
                            s.contact();
                            m.epoch = r.member_epoch;
                            s.update(|st| st.generation = m.epoch);
                        }
                        // What is being revoked is not ours to commit; the
                        // heartbeat after the acknowledgement rejoins.
                        Some(ResponseError::FencedMemberEpoch | ResponseError::UnknownMemberId) => {
                            s.update(|st| st.fenced = true);
                        }
                        Some(e) => return Err(fatal(s, e, r.error_message.as_deref())),
                    }
                }
                ctl = s.control.recv() => match ctl {
                    Some(Control::Rejoin(_)) => {}
                    Some(Control::Leave) | None => m.leave_requested = true,
                },
            }
        }
        for tp in &revoked {
            m.owned.remove(tp);
        }
        s.update(|st| st.assigned = m.owned.clone());
        return Ok(true);
    }
    if s.closing() {
        return Ok(false);
    }
    let added: Vec<TopicPartition> = target.difference(&m.owned).cloned().collect();
    if added.is_empty() {
        return Ok(false);
    }
    tracing::info!(group = %s.cfg.group, epoch = m.epoch, "assigned {}", list(&added));
    m.owned.extend(added.iter().cloned());
    s.update(|st| st.assigned = m.owned.clone());
    s.emit(GroupEvent::Assigned(added)).await;
    Ok(true)
}

/// The group fenced us: what we own may be someone else's already; drop it
/// without committing and rejoin with epoch 0.
async fn lose_all(s: &mut Session, m: &mut Member, why: ResponseError) {
    tracing::warn!(
        group = %s.cfg.group,
        "fenced by the coordinator ({why:?}); dropping {} without committing and rejoining",
        if m.owned.is_empty() { "nothing".to_string() } else { list(&m.owned.iter().cloned().collect::<Vec<_>>()) }
    );
    m.epoch = 0;
    m.full = true;
    m.target = None;
    if !m.owned.is_empty() {
        let lost = std::mem::take(&mut m.owned).into_iter().collect();
        s.emit(GroupEvent::Lost(lost)).await;
    }
    s.update(|st| {
        st.assigned.clear();
        st.generation = 0;
        st.stable = false;
        st.fenced = true;
    });
}

/// Names the partitions of an assignment (the coordinator uses topic ids),
/// refreshing the id → name map from metadata when an id is new. Returns
/// the named partitions and whether every id resolved.
async fn resolve(s: &Session, m: &mut Member, a: &Assignment) -> (BTreeSet<TopicPartition>, bool) {
    if a.topic_partitions
        .iter()
        .any(|t| !m.names.contains_key(&t.topic_id))
    {
        match cluster::describe_topics(&s.cluster, Some(&s.cfg.topics)).await {
            Ok(topics) => {
                for t in topics {
                    m.names.insert(t.id, Arc::from(t.name.as_str()));
                }
            }
            Err(e) => tracing::warn!(group = %s.cfg.group, "reading topic ids (retrying): {e}"),
        }
    }
    let mut out = BTreeSet::new();
    let mut complete = true;
    for t in &a.topic_partitions {
        match m.names.get(&t.topic_id) {
            Some(name) => out.extend(
                t.partitions
                    .iter()
                    .map(|&p| TopicPartition::new(Arc::clone(name), p)),
            ),
            None => {
                complete = false;
                tracing::debug!(topic_id = %t.topic_id, "assigned a topic id metadata does not know yet");
            }
        }
    }
    (out, complete)
}

/// One ConsumerGroupHeartbeat at `epoch`.
async fn heartbeat(s: &Session, m: &Member, epoch: i32) -> Result<ConsumerGroupHeartbeatResponse> {
    let ids: HashMap<&str, Uuid> = m.names.iter().map(|(id, n)| (&**n, *id)).collect();
    let mut owned: HashMap<Uuid, Vec<i32>> = HashMap::new();
    for tp in &m.owned {
        if let Some(id) = ids.get(&*tp.topic) {
            owned.entry(*id).or_default().push(tp.partition);
        }
    }
    let owned: Vec<TopicPartitions> = owned
        .into_iter()
        .map(|(id, ps)| {
            TopicPartitions::default()
                .with_topic_id(id)
                .with_partitions(ps)
        })
        .collect();
    let joining = m.full || epoch == 0;
    let (response, _) = s
        .client
        .call(
            "sending a consumer group heartbeat",
            VERSIONS,
            Duration::from_secs(30),
            |_| {
                let mut r = ConsumerGroupHeartbeatRequest::default()
                    .with_group_id(GroupId(StrBytes::from_string(s.cfg.group.clone())))
                    .with_member_id(StrBytes::from_string(m.member_id.clone()))
                    .with_member_epoch(epoch)
                    .with_instance_id(s.cfg.instance_id.clone().map(StrBytes::from_string))
                    .with_topic_partitions((epoch >= 0).then(|| owned.clone()));
                if joining {
                    r = r
                        .with_rebalance_timeout_ms(
                            s.cfg.rebalance_timeout.as_millis().min(i32::MAX as u128) as i32,
                        )
                        .with_subscribed_topic_names(Some(
                            s.cfg
                                .topics
                                .iter()
                                .map(|t| TopicName(StrBytes::from_string(t.clone())))
                                .collect(),
                        ))
                        .with_server_assignor(
                            s.cfg.remote_assignor.clone().map(StrBytes::from_string),
                        );
                }
                r
            },
            |r| r.error_code,
        )
        .await?;
    Ok(response)
}

/// Leaves: epoch -1, or -2 for a static member so its assignment waits for
/// its restart.
async fn leave(s: &Session, m: &Member) -> Result<()> {
    let epoch = if s.cfg.instance_id.is_some() {
        STATIC_LEAVE_EPOCH
    } else {
        LEAVE_EPOCH
    };
    let outcome = heartbeat(s, m, epoch).await;
    match outcome {
        Ok(r) => match ResponseError::try_from_code(r.error_code) {
            None => tracing::info!(group = %s.cfg.group, "left the group (epoch {epoch})"),
            Some(e) => tracing::warn!(group = %s.cfg.group, "leaving the group: {e:?}"),
        },
        Err(e) => tracing::warn!(group = %s.cfg.group, "leaving the group: {e}"),
    }
    Ok(())
}

fn list(tps: &[TopicPartition]) -> String {
    tps.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// A heartbeat error no retry fixes, as one line with what to do.
fn fatal(s: &Session, e: ResponseError, message: Option<&str>) -> Error {
    let hint = match e {
        ResponseError::UnsupportedVersion | ResponseError::UnsupportedAssignor => {
            "the broker does not offer this (check --group-remote-assignor; or use --group-protocol classic)"
        }
        ResponseError::GroupIdNotFound | ResponseError::InconsistentGroupProtocol => {
            "the group is in use by classic members: use --group-protocol classic, or another group"
        }
        ResponseError::UnreleasedInstanceId | ResponseError::FencedInstanceId => {
            "another running member uses the same --group-instance-id; give each member its own"
        }
        ResponseError::GroupMaxSizeReached => "the group is full (group.consumer.max.size)",
        ResponseError::GroupAuthorizationFailed => {
            "grant this client's principal access to the group"
        }
        ResponseError::InvalidRequest => "see the broker log",
        _ => "see the broker log",
    };
    Error::Kafka {
        context: format!("consumer group heartbeat for group '{}'", s.cfg.group),
        detail: format!(
            "{e:?}{} ({hint})",
            message.map(|m| format!(": {m}")).unwrap_or_default()
        ),
    }
}
