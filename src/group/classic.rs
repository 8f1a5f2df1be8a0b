//! The classic group protocol: JoinGroup / SyncGroup / Heartbeat /
//! LeaveGroup with protocol type `consumer` and the standard
//! ConsumerProtocol encoding ([`super::assignor`]), so Java and librdkafka
//! members can lead or follow in the same group.
//!
//! Rebalancing is *eager* — revoke everything before rejoining, the only
//! safe way when the group may pick an assignor that ignores who owns what —
//! unless every configured assignor is cooperative (KIP-429): then the
//! member rejoins holding its partitions, announces them in its
//! subscription, revokes only what the new assignment takes away, and
//! rejoins once more so the group can hand those on. This is Java's rule.
//!
//! Static membership (KIP-345): with an instance id the member does not
//! send LeaveGroup on shutdown, so a restart within the session timeout gets
//! its partitions back without a rebalance.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    GroupId, HeartbeatRequest, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    SyncGroupRequest,
};
use kafka_protocol::protocol::StrBytes;
use tokio::sync::oneshot;

use super::assignor::{Assignor, MemberSubscription};
use super::consumer_protocol;
use super::coordinator::GroupClient;
use super::membership::{Control, GroupEvent, Session};
use crate::cluster;
use crate::error::{Error, Result};
use crate::offsets::TopicPartition;
use crate::protocol::VersionRange;

/// JoinGroup versions we build and read (Kafka 4 dropped v0-1; v4+ hands
/// out member ids with MEMBER_ID_REQUIRED; v9 adds skip_assignment).
const JOIN_VERSIONS: VersionRange = VersionRange { min: 2, max: 9 };
/// SyncGroup versions (v5 adds protocol type and name).
const SYNC_VERSIONS: VersionRange = VersionRange { min: 1, max: 5 };
/// Heartbeat versions.
const HEARTBEAT_VERSIONS: VersionRange = VersionRange { min: 1, max: 4 };
/// LeaveGroup versions (v3+ leave by member identity).
const LEAVE_VERSIONS: VersionRange = VersionRange { min: 1, max: 5 };
/// The protocol type of Kafka consumers.
const PROTOCOL_TYPE: &str = "consumer";

/// What the member owns and who it is in the group.
struct Member {
    member_id: String,
    generation: i32,
    owned: BTreeSet<TopicPartition>,
    /// Partition counts of the subscribed topics at the last assignment.
    snapshot: BTreeMap<String, i32>,
    cooperative: bool,
    leave_requested: bool,
}

/// Why the stable phase ended.
enum Next {
    Rejoin(String),
    Leave,
}

/// Runs the member until it leaves or fails.
pub(crate) async fn run(mut s: Session) -> Result<()> {
    s.announce(super::GroupProtocol::Classic);
    s.update(|st| st.protocol = "classic".into());
    let mut m = Member {
        member_id: String::new(),
        generation: -1,
        owned: BTreeSet::new(),
        snapshot: BTreeMap::new(),
        cooperative: s.cfg.assignors.iter().all(|a| a.is_cooperative()),
        leave_requested: false,
    };
    let mut backoff = Duration::from_millis(100);
    loop {
        if s.closing() || m.leave_requested {
            revoke(&mut s, &mut m, None).await?;
            wait_for_leave(&mut s, &mut m).await;
            return leave(&s, &m).await;
        }
        if !m.cooperative {
            // Eager: give everything up before the group reassigns it.
            revoke(&mut s, &mut m, None).await?;
        }
        s.update(|st| st.stable = false);
        let assigned = match join_and_sync(&mut s, &mut m).await? {
            Some(a) => {
                backoff = Duration::from_millis(100);
                a
            }
            None => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        let taken: BTreeSet<TopicPartition> = m.owned.difference(&assigned).cloned().collect();
        let added: Vec<TopicPartition> = assigned.difference(&m.owned).cloned().collect();
        if !taken.is_empty() {
            revoke(&mut s, &mut m, Some(taken.clone())).await?;
        }
        if !added.is_empty() && !s.closing() {
            m.owned.extend(added.iter().cloned());
            if !s.emit(GroupEvent::Assigned(added)).await {
                return Ok(());
            }
        }
        let rejoin_now = m.cooperative && !taken.is_empty();
        s.update(|st| {
            st.generation = m.generation;
            st.member_id = m.member_id.clone();
            st.assigned = m.owned.clone();
            st.rebalances += 1;
            st.stable = !rejoin_now;
        });
        tracing::info!(
            group = %s.cfg.group, generation = m.generation,
            "assigned {} partition(s): {}", m.owned.len(), list(&m.owned)
        );
        if rejoin_now {
            // KIP-429: the partitions we gave up go to their new owner in a
            // follow-up rebalance.
            continue;
        }
        match stable(&mut s, &mut m).await? {
            Next::Rejoin(reason) => {
                tracing::info!(group = %s.cfg.group, "rejoining the group: {reason}");
            }
            Next::Leave => m.leave_requested = true,
        }
    }
}

/// `t/0,t/1`.
fn list(tps: &BTreeSet<TopicPartition>) -> String {
    tps.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Asks the pipeline to revoke `which` (everything owned if `None`) and
/// waits for it, heartbeating meanwhile so the session stays alive.
async fn revoke(
    s: &mut Session,
    m: &mut Member,
    which: Option<BTreeSet<TopicPartition>>,
) -> Result<()> {
    let which = which.unwrap_or_else(|| m.owned.clone());
    if which.is_empty() {
        return Ok(());
    }
    tracing::info!(group = %s.cfg.group, "revoking {}", list(&which));
    let (done, mut acked) = oneshot::channel();
    if !s
        .emit(GroupEvent::Revoke {
            partitions: which.iter().cloned().collect(),
            done,
        })
        .await
    {
        return Ok(());
    }
    let mut tick = tokio::time::interval(s.cfg.heartbeat_interval);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = &mut acked => break,
            // Bounded, so coordinator trouble never holds up the acknowledgement.
            _ = tick.tick() => match tokio::time::timeout(s.cfg.heartbeat_interval, heartbeat(s, m))
                .await
                .unwrap_or(Ok(Some(ResponseError::RequestTimedOut)))?
            {
                // A rebalance in progress is expected here.
                None | Some(ResponseError::RebalanceInProgress) => s.contact(),
                // The group moved on: what is being revoked is not ours to
                // commit; the rejoin finds out the rest.
                Some(ResponseError::IllegalGeneration | ResponseError::UnknownMemberId) => {
                    s.update(|st| st.fenced = true);
                }
                Some(e @ ResponseError::FencedInstanceId) => {
                    return Err(fatal(s, "sending a heartbeat", e));
                }
                Some(_) => {}
            },
            ctl = s.control.recv() => match ctl {
                Some(Control::Rejoin(_)) => {}
                Some(Control::Leave) | None => m.leave_requested = true,
            },
        }
    }
    for tp in &which {
        m.owned.remove(tp);
    }
    s.update(|st| st.assigned = m.owned.clone());
    Ok(())
}

/// After the pipeline began closing: wait for its Leave (sent after the
/// final commit) before leaving the group.
async fn wait_for_leave(s: &mut Session, m: &mut Member) {
    while !m.leave_requested {
        match s.control.recv().await {
            Some(Control::Leave) | None => m.leave_requested = true,
            Some(Control::Rejoin(_)) => {}
        }
    }
}

/// The stable phase: heartbeat until the group rebalances, our topics
/// change, or the pipeline asks to rejoin or leave.
async fn stable(s: &mut Session, m: &mut Member) -> Result<Next> {
    let mut hb = tokio::time::interval(s.cfg.heartbeat_interval);
    hb.tick().await;
    let mut meta = tokio::time::interval(s.cfg.metadata_refresh);
    meta.tick().await;
    loop {
        tokio::select! {
            _ = hb.tick() => match heartbeat(s, m).await? {
                None => s.contact(),
                Some(ResponseError::RebalanceInProgress) => {
                    s.contact();
                    return Ok(Next::Rejoin("the group is rebalancing".into()));
                }
                Some(e @ (ResponseError::IllegalGeneration | ResponseError::UnknownMemberId)) => {
                    lose_all(s, m, e).await;
                    return Ok(Next::Rejoin(format!("the coordinator answered {e:?}")));
                }
                Some(e) => return Err(fatal(s, "sending a heartbeat", e)),
            },
            _ = meta.tick() => match partition_counts(s, &s.cfg.topics).await {
                Ok(now) if now != m.snapshot => {
                    return Ok(Next::Rejoin(format!(
                        "the subscribed topics changed ({:?} -> {:?} partitions)", m.snapshot, now
                    )));
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(group = %s.cfg.group, "checking the subscribed topics (retrying later): {e}"),
            },
            ctl = s.control.recv() => match ctl {
                Some(Control::Rejoin(reason)) => {
                    // The pipeline already dropped everything (a fenced commit).
                    m.owned.clear();
                    s.update(|st| st.assigned.clear());
                    return Ok(Next::Rejoin(reason));
                }
                Some(Control::Leave) | None => return Ok(Next::Leave),
            },
        }
    }
}

/// The group moved on without us: everything we own may be someone
/// else's already. Drop it without committing.
async fn lose_all(s: &mut Session, m: &mut Member, why: ResponseError) {
    if why == ResponseError::UnknownMemberId {
        m.member_id.clear();
    }
    m.generation = -1;
    s.update(|st| st.fenced = true);
    if !m.owned.is_empty() {
        tracing::warn!(
            group = %s.cfg.group,
            "lost {} ({why:?}): dropped without committing",
            list(&m.owned)
        );
        let lost = std::mem::take(&mut m.owned).into_iter().collect();
        s.emit(GroupEvent::Lost(lost)).await;
    }
    s.update(|st| {
        st.assigned.clear();
        st.generation = -1;
    });
}

/// One JoinGroup + SyncGroup round. `Some(assignment)` on success, `None`
/// to retry after a backoff; fatal errors are `Err`.
async fn join_and_sync(
    s: &mut Session,
    m: &mut Member,
) -> Result<Option<BTreeSet<TopicPartition>>> {
    let joined = loop {
        s.update(|st| st.joining = true);
        let response = join(s, m).await;
        s.update(|st| st.joining = false);
        let response = response?;
        s.contact();
        match ResponseError::try_from_code(response.error_code) {
            None => break response,
            Some(ResponseError::MemberIdRequired) => {
                // KIP-394: the coordinator names our id; join again with it.
                m.member_id = response.member_id.to_string();
                s.update(|st| st.member_id = m.member_id.clone());
            }
            Some(e @ (ResponseError::UnknownMemberId | ResponseError::IllegalGeneration)) => {
                lose_all(s, m, e).await;
                return Ok(None);
            }
            Some(ResponseError::RebalanceInProgress) => return Ok(None),
            Some(e) => return Err(fatal(s, "joining the group", e)),
        }
    };
    m.member_id = joined.member_id.to_string();
    let generation = joined.generation_id;
    let protocol_name = joined
        .protocol_name
        .as_ref()
        .map(|n| n.to_string())
        .unwrap_or_default();
    let Some(assignor) = Assignor::from_name(&protocol_name) else {
        return Err(Error::Kafka {
            context: format!("joining group '{}'", s.cfg.group),
            detail: format!(
                "the group chose assignor '{protocol_name}', which this member did not offer"
            ),
        });
    };
    let leader = joined.leader == joined.member_id;
    let assignments = if leader && !joined.skip_assignment {
        match assign(s, assignor, &joined).await {
            Ok(a) => a,
            Err(e) => {
                // Without the partition counts the leader cannot assign;
                // rejoining starts the round again.
                tracing::warn!(group = %s.cfg.group, "leading the rebalance (rejoining): {e}");
                return Ok(None);
            }
        }
    } else {
        Vec::new()
    };
    tracing::debug!(
        group = %s.cfg.group, generation, leader, assignor = assignor.name(),
        "joined; syncing"
    );
    let request_timeout = s.cfg.rebalance_timeout + Duration::from_secs(5);
    let member_id = m.member_id.clone();
    let instance = s.cfg.instance_id.clone();
    let group = s.cfg.group.clone();
    let (synced, _) = s
        .client
        .call(
            "syncing the group",
            SYNC_VERSIONS,
            request_timeout,
            |v| {
                let mut r = SyncGroupRequest::default()
                    .with_group_id(GroupId(StrBytes::from_string(group.clone())))
                    .with_generation_id(generation)
                    .with_member_id(StrBytes::from_string(member_id.clone()))
                    .with_assignments(assignments.clone());
                if v >= 3 {
                    r = r.with_group_instance_id(instance.clone().map(StrBytes::from_string));
                }
                if v >= 5 {
                    r = r
                        .with_protocol_type(Some(StrBytes::from_static_str(PROTOCOL_TYPE)))
                        .with_protocol_name(Some(StrBytes::from_string(protocol_name.clone())));
                }
                r
            },
            |r| r.error_code,
        )
        .await?;
    match ResponseError::try_from_code(synced.error_code) {
        None => {}
        Some(ResponseError::RebalanceInProgress) => return Ok(None),
        Some(e @ (ResponseError::UnknownMemberId | ResponseError::IllegalGeneration)) => {
            lose_all(s, m, e).await;
            return Ok(None);
        }
        Some(e) => return Err(fatal(s, "syncing the group", e)),
    }
    let assigned =
        consumer_protocol::decode_assignment(&synced.assignment).map_err(|e| Error::Kafka {
            context: format!("reading the assignment of group '{}'", s.cfg.group),
            detail: e,
        })?;
    m.generation = generation;
    match partition_counts(s, &s.cfg.topics).await {
        Ok(counts) => m.snapshot = counts,
        Err(e) => {
            tracing::warn!(group = %s.cfg.group, "reading the subscribed topics (checked again later): {e}")
        }
    }
    s.contact();
    // Commits from here on (the revocations of a cooperative rebalance
    // included) must carry the new generation.
    s.update(|st| {
        st.protocol = format!("classic/{}", assignor.name());
        st.generation = m.generation;
        st.member_id = m.member_id.clone();
        st.fenced = false;
    });
    Ok(Some(
        assigned
            .into_iter()
            .flat_map(|(t, ps)| {
                let topic: Arc<str> = Arc::from(t.as_str());
                ps.into_iter()
                    .map(move |p| TopicPartition::new(Arc::clone(&topic), p))
            })
            .collect(),
    ))
}

/// One JoinGroup request carrying our subscription under every assignor.
async fn join(s: &Session, m: &Member) -> Result<JoinGroupResponse> {
    let owned = owned_by_topic(&m.owned);
    let protocols: Vec<JoinGroupRequestProtocol> = s
        .cfg
        .assignors
        .iter()
        .map(|&a| {
            let (owned, generation) = if m.cooperative {
                (owned.clone(), m.generation)
            } else {
                (BTreeMap::new(), -1)
            };
            JoinGroupRequestProtocol::default()
                .with_name(StrBytes::from_static_str(a.name()))
                .with_metadata(consumer_protocol::encode_subscription(
                    a,
                    &s.cfg.topics,
                    &owned,
                    generation,
                ))
        })
        .collect();
    let session_ms = millis(s.cfg.session_timeout);
    let rebalance_ms = millis(s.cfg.rebalance_timeout);
    let request_timeout = s.cfg.rebalance_timeout + Duration::from_secs(5);
    let (response, _) = s
        .client
        .call(
            "joining the group",
            JOIN_VERSIONS,
            request_timeout,
            |v| {
                let mut r = JoinGroupRequest::default()
                    .with_group_id(GroupId(StrBytes::from_string(s.cfg.group.clone())))
                    .with_session_timeout_ms(session_ms)
                    .with_rebalance_timeout_ms(rebalance_ms)
                    .with_member_id(StrBytes::from_string(m.member_id.clone()))
                    .with_protocol_type(StrBytes::from_static_str(PROTOCOL_TYPE))
                    .with_protocols(protocols.clone());
                if v >= 5 {
                    r = r.with_group_instance_id(
                        s.cfg.instance_id.clone().map(StrBytes::from_string),
                    );
                }
                if v >= 8 {
                    r = r.with_reason(Some(StrBytes::from_static_str(
                        "mykafkams consumer joining",
                    )));
                }
                r
            },
            |r| r.error_code,
        )
        .await?;
    Ok(response)
}

/// The leader's job: decode every member's subscription, read the
/// partition counts of every subscribed topic, run the chosen assignor.
async fn assign(
    s: &Session,
    assignor: Assignor,
    joined: &JoinGroupResponse,
) -> Result<Vec<SyncGroupRequestAssignment>> {
    let mut members = Vec::with_capacity(joined.members.len());
    for member in &joined.members {
        let sub = consumer_protocol::decode_subscription(
            member.member_id.as_str(),
            member.group_instance_id.as_ref().map(|i| i.as_str()),
            assignor,
            &member.metadata,
        )
        .map_err(|e| Error::Kafka {
            context: format!(
                "reading the subscription of member {} of group '{}'",
                member.member_id.as_str(),
                s.cfg.group
            ),
            detail: e,
        })?;
        members.push(sub);
    }
    let topics: BTreeSet<String> = members
        .iter()
        .flat_map(|m: &MemberSubscription| m.topics.iter().cloned())
        .collect();
    let topics: Vec<String> = topics.into_iter().collect();
    let counts = partition_counts(s, &topics).await?;
    let plan = assignor.assign(&members, &counts);
    tracing::info!(
        group = %s.cfg.group, assignor = assignor.name(), members = members.len(),
        "leading the rebalance: {plan:?}"
    );
    Ok(plan
        .iter()
        .map(|(member, assigned)| {
            SyncGroupRequestAssignment::default()
                .with_member_id(StrBytes::from_string(member.clone()))
                .with_assignment(consumer_protocol::encode_assignment(assigned))
        })
        .collect())
}

/// Partition count of each existing topic of `topics`.
async fn partition_counts(s: &Session, topics: &[String]) -> Result<BTreeMap<String, i32>> {
    Ok(cluster::describe_topics(&s.cluster, Some(topics))
        .await?
        .into_iter()
        .map(|t| (t.name, t.partitions))
        .collect())
}

/// One heartbeat; `Some(error)` for any error code the caller must act on.
async fn heartbeat(s: &Session, m: &Member) -> Result<Option<ResponseError>> {
    let timeout = s.cfg.session_timeout.min(Duration::from_secs(30));
    let (response, _) = s
        .client
        .call(
            "sending a heartbeat",
            HEARTBEAT_VERSIONS,
            timeout,
            |v| {
                let mut r = HeartbeatRequest::default()
                    .with_group_id(GroupId(StrBytes::from_string(s.cfg.group.clone())))
                    .with_generation_id(m.generation)
                    .with_member_id(StrBytes::from_string(m.member_id.clone()));
                if v >= 3 {
                    r = r.with_group_instance_id(
                        s.cfg.instance_id.clone().map(StrBytes::from_string),
                    );
                }
                r
            },
            |r| r.error_code,
        )
        .await?;
    Ok(ResponseError::try_from_code(response.error_code))
}

/// Leaves the group: LeaveGroup for a dynamic member; a static member
/// (KIP-345) just stops, keeping its partitions reserved for the session
/// timeout so a restart gets them back without a rebalance.
async fn leave(s: &Session, m: &Member) -> Result<()> {
    if m.member_id.is_empty() {
        return Ok(());
    }
    if s.cfg.instance_id.is_some() {
        tracing::info!(
            group = %s.cfg.group,
            "static member: not leaving the group; a restart within the session timeout keeps the assignment"
        );
        return Ok(());
    }
    send_leave(&s.client, &s.cfg.group, &m.member_id).await;
    Ok(())
}

/// One LeaveGroup for `member_id` (a dynamic member), logged, never failing:
/// at worst the group notices after the session timeout.
pub(crate) async fn send_leave(client: &GroupClient, group: &str, member_id: &str) {
    let result = client
        .call(
            "leaving the group",
            LEAVE_VERSIONS,
            Duration::from_secs(10),
            |v| {
                let r = LeaveGroupRequest::default()
                    .with_group_id(GroupId(StrBytes::from_string(group.to_string())));
                if v >= 3 {
                    r.with_members(vec![
                        MemberIdentity::default()
                            .with_member_id(StrBytes::from_string(member_id.to_string()))
                            .with_reason(
                                (v >= 5)
                                    .then(|| StrBytes::from_static_str("consumer shutting down")),
                            ),
                    ])
                } else {
                    r.with_member_id(StrBytes::from_string(member_id.to_string()))
                }
            },
            |r| r.error_code,
        )
        .await;
    match result {
        Ok((r, _)) => match ResponseError::try_from_code(r.error_code) {
            None => tracing::info!(%group, "left the group"),
            Some(e) => tracing::warn!(%group, "leaving the group: {e:?}"),
        },
        Err(e) => tracing::warn!(%group, "leaving the group: {e}"),
    }
}

/// Owned partitions grouped by topic, for the subscription.
fn owned_by_topic(owned: &BTreeSet<TopicPartition>) -> BTreeMap<String, Vec<i32>> {
    let mut out: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for tp in owned {
        out.entry(tp.topic.to_string())
            .or_default()
            .push(tp.partition);
    }
    out
}

fn millis(d: Duration) -> i32 {
    d.as_millis().min(i32::MAX as u128) as i32
}

/// A group error no retry fixes, as one line with what to do.
fn fatal(s: &Session, op: &str, e: ResponseError) -> Error {
    let hint = match e {
        ResponseError::InconsistentGroupProtocol => {
            "the group's other members offer none of our assignors (or are not consumers): list a common one with --assignor, e.g. range"
        }
        ResponseError::FencedInstanceId => {
            "another running member uses the same --group-instance-id; give each member its own"
        }
        ResponseError::InvalidSessionTimeout => {
            "the broker limits session timeouts to group.min.session.timeout.ms..group.max.session.timeout.ms"
        }
        ResponseError::GroupMaxSizeReached => "the group is full (group.max.size)",
        ResponseError::GroupAuthorizationFailed => {
            "grant this client's principal access to the group"
        }
        ResponseError::InvalidGroupId => "use a non-empty group id",
        _ => "see the broker log",
    };
    Error::Kafka {
        context: format!("{op} for group '{}'", s.cfg.group),
        detail: format!("{e:?}: {e} ({hint})"),
    }
}
