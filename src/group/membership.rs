//! What the consumer pipeline sees of group membership, whatever the
//! protocol: a stream of [`GroupEvent`]s (partitions assigned, to revoke, or
//! lost), the [`CommitIdentity`] to commit with, and a status for the stats
//! line. The protocol itself runs on a task of its own ([`super::classic`] or
//! [`super::kip848`]), so heartbeats never wait behind message handling.
//!
//! The contract with the pipeline (DESIGN rule 7):
//! - [`GroupEvent::Assigned`]: nobody else owns these partitions now; start
//!   them from the group's committed offsets.
//! - [`GroupEvent::Revoke`]: stop fetching them, drop their queued messages,
//!   wait for the ones inside a handler, commit, then send on `done`. The
//!   member acknowledges the revocation to the group only after that, so
//!   the next owner starts exactly where this one stopped.
//! - [`GroupEvent::Lost`]: the group already gave them away (session
//!   expired, fenced): stop and drop them *without* committing.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kafka_protocol::messages::ApiKey;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::assignor::Assignor;
use super::coordinator::{CommitIdentity, GroupClient, GroupConfig};
use crate::cluster::ClusterConfig;
use crate::error::{Error, Result};
use crate::offsets::TopicPartition;

/// Which group protocol to speak (Java's `group.protocol`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupProtocol {
    /// KIP-848 when the coordinator supports ConsumerGroupHeartbeat, else classic.
    Auto,
    /// JoinGroup/SyncGroup/Heartbeat with client-side assignors.
    Classic,
    /// KIP-848: ConsumerGroupHeartbeat, server-side assignment.
    Consumer,
}

impl GroupProtocol {
    /// Parses `classic`, `consumer` or `auto`.
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "classic" => Ok(Self::Classic),
            "consumer" => Ok(Self::Consumer),
            other => Err(format!(
                "group protocol '{other}' is not classic, consumer or auto"
            )),
        }
    }
}

/// How this member takes part in its group.
#[derive(Clone, Debug)]
pub struct MembershipConfig {
    /// Group id (non-empty).
    pub group: String,
    /// Subscribed topics.
    pub topics: Vec<String>,
    /// Protocol to use.
    pub protocol: GroupProtocol,
    /// Classic assignors in order of preference. The member revokes
    /// everything before each rejoin (eager) unless every one of them is
    /// cooperative, as Java's consumer decides.
    pub assignors: Vec<Assignor>,
    /// KIP-848 server-side assignor (`uniform`, `range`); `None` = the broker's default.
    pub remote_assignor: Option<String>,
    /// Static membership id (KIP-345), if any.
    pub instance_id: Option<String>,
    /// Classic session timeout (KIP-848: set on the broker).
    pub session_timeout: Duration,
    /// Classic heartbeat interval (KIP-848: the broker says).
    pub heartbeat_interval: Duration,
    /// Rebalance timeout (Java's `max.poll.interval.ms`): how long the group
    /// waits for a member to rejoin (classic) or revoke (KIP-848), and so
    /// how long a revocation may wait for running handlers.
    pub rebalance_timeout: Duration,
    /// How often a classic member checks its topics for added partitions
    /// (Java's `metadata.max.age.ms`); KIP-848 brokers do this themselves.
    pub metadata_refresh: Duration,
}

impl MembershipConfig {
    /// Kafka's defaults for `group` subscribing `topics`.
    pub fn new(group: impl Into<String>, topics: Vec<String>) -> Self {
        Self {
            group: group.into(),
            topics,
            protocol: GroupProtocol::Auto,
            assignors: vec![Assignor::CooperativeSticky, Assignor::Range],
            remote_assignor: None,
            instance_id: None,
            session_timeout: Duration::from_secs(45),
            heartbeat_interval: Duration::from_secs(3),
            rebalance_timeout: Duration::from_secs(300),
            metadata_refresh: Duration::from_secs(300),
        }
    }
}

/// A change of this member's assignment, for the pipeline to act on.
#[derive(Debug)]
pub enum GroupEvent {
    /// Start consuming these partitions.
    Assigned(Vec<TopicPartition>),
    /// Stop these partitions, commit what finished, then send on `done`.
    Revoke {
        /// The partitions to give up.
        partitions: Vec<TopicPartition>,
        /// Completes the revocation (send after the commit).
        done: oneshot::Sender<()>,
    },
    /// Drop these partitions without committing: they may already be
    /// another member's.
    Lost(Vec<TopicPartition>),
    /// Membership failed for good; the run must stop with this error.
    Failed(Error),
}

/// What the stats line shows about membership.
#[derive(Clone, Debug, Default)]
pub struct MemberStatus {
    /// e.g. `consumer` or `classic/cooperative-sticky`.
    pub protocol: String,
    /// Member id given by (classic) or announced to (KIP-848) the coordinator.
    pub member_id: String,
    /// Classic generation or KIP-848 member epoch (-1 before joining).
    pub generation: i32,
    /// Completed rebalances this member took part in.
    pub rebalances: u64,
    /// Partitions currently owned.
    pub assigned: BTreeSet<TopicPartition>,
    /// False while a rebalance is in progress for this member.
    pub stable: bool,
    /// Static instance id, if any.
    pub instance_id: Option<String>,
    /// True from the moment the group answers that it no longer knows this
    /// member (or generation) until it joins again: whatever is being
    /// revoked must not be committed, nor waited for.
    pub fenced: bool,
    /// When the coordinator last confirmed this member (a heartbeat, join or
    /// sync answered). Once that is longer ago than the session timeout the
    /// group has given the partitions away, whatever the member believes.
    pub last_contact: Option<std::time::Instant>,
    /// True while a classic JoinGroup is pending: the coordinator holds it
    /// for up to the rebalance timeout and keeps the member meanwhile.
    pub joining: bool,
}

impl MemberStatus {
    /// The identity commits must carry now.
    pub fn identity(&self) -> CommitIdentity {
        CommitIdentity {
            generation_or_epoch: self.generation,
            member_id: self.member_id.clone(),
            instance_id: self.instance_id.clone(),
        }
    }

    /// `group classic/range gen 3, 2 rebalances, assigned t/0,t/3`.
    pub fn line(&self) -> String {
        let mut s = format!(
            "group {} {} {}, {} rebalance(s){}, assigned",
            self.protocol,
            if self.protocol.starts_with("consumer") {
                "epoch"
            } else {
                "generation"
            },
            self.generation,
            self.rebalances,
            if self.stable { "" } else { " (rebalancing)" }
        );
        if self.assigned.is_empty() {
            s.push_str(" nothing");
        }
        for (i, tp) in self.assigned.iter().enumerate() {
            let _ = write!(s, "{}{}", if i == 0 { " " } else { "," }, tp);
        }
        s
    }
}

/// Requests from the pipeline to the protocol task.
#[derive(Debug)]
pub(crate) enum Control {
    /// A commit was fenced: rejoin the group (the partitions were dropped).
    Rejoin(String),
    /// Leave the group (or, for a static member, just stop heartbeating)
    /// and end the task.
    Leave,
}

/// Everything a protocol task works with.
pub(crate) struct Session {
    pub(crate) cfg: MembershipConfig,
    pub(crate) cluster: ClusterConfig,
    /// Membership traffic has its own coordinator connection, so a JoinGroup
    /// held by the broker for a whole rebalance never delays a commit.
    pub(crate) client: GroupClient,
    pub(crate) events: mpsc::Sender<GroupEvent>,
    pub(crate) status: Arc<Mutex<MemberStatus>>,
    pub(crate) control: mpsc::UnboundedReceiver<Control>,
    /// Set once the pipeline is stopping: no more rejoins or new partitions.
    pub(crate) closing: Arc<AtomicBool>,
}

impl Session {
    /// Sends an event; false if the pipeline is gone.
    pub(crate) async fn emit(&self, event: GroupEvent) -> bool {
        self.events.send(event).await.is_ok()
    }

    /// True once the pipeline asked to stop.
    pub(crate) fn closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }

    /// Logs which protocol the member uses (once it is known for sure).
    pub(crate) fn announce(&self, protocol: GroupProtocol) {
        match protocol {
            GroupProtocol::Consumer => tracing::info!(
                group = %self.cfg.group,
                "using the consumer group protocol (KIP-848, server-side assignor {})",
                self.cfg.remote_assignor.as_deref().unwrap_or("default")
            ),
            _ => tracing::info!(
                group = %self.cfg.group,
                "using the classic group protocol (assignors {}; {} rebalancing)",
                self.cfg
                    .assignors
                    .iter()
                    .map(|a| a.name())
                    .collect::<Vec<_>>()
                    .join(","),
                if self.cfg.assignors.iter().all(|a| a.is_cooperative()) {
                    "cooperative"
                } else {
                    "eager"
                }
            ),
        }
    }

    /// Updates the shared status.
    pub(crate) fn update(&self, f: impl FnOnce(&mut MemberStatus)) {
        f(&mut self.status.lock());
    }

    /// The coordinator just confirmed this member.
    pub(crate) fn contact(&self) {
        self.update(|st| st.last_contact = Some(std::time::Instant::now()));
    }
}

/// A running group membership: the handle the consumer pipeline holds.
///
/// Dropping it aborts the protocol task without leaving the group (like a
/// crash: the group notices after the session timeout); call
/// [`leave`](Self::leave) for a graceful exit.
pub struct Membership {
    events: mpsc::Receiver<GroupEvent>,
    session_timeout: Duration,
    /// For a LeaveGroup sent from here when the task is stuck in a JoinGroup.
    cluster: ClusterConfig,
    group: String,
    static_member: bool,
    status: Arc<Mutex<MemberStatus>>,
    control: mpsc::UnboundedSender<Control>,
    closing: Arc<AtomicBool>,
    task: Option<JoinHandle<()>>,
}

impl Drop for Membership {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

impl Membership {
    /// Resolves the protocol (printing which one is used) and starts the
    /// member's protocol task. Fails at once, with one clear line, for an
    /// unreachable cluster or a protocol the coordinator does not offer.
    pub async fn start(cluster: &ClusterConfig, cfg: MembershipConfig) -> Result<Self> {
        if cfg.group.trim().is_empty() {
            return Err(Error::Usage(
                "the group id is empty: give a group name".into(),
            ));
        }
        if cfg.assignors.is_empty() {
            return Err(Error::Usage("no assignor given".into()));
        }
        // Start-up fails fast (an unreachable cluster is exit 3 within the
        // connect timeout)...
        let probe = GroupClient::new(
            cluster.brokers.clone(),
            cfg.group.clone(),
            GroupConfig {
                connection: cluster.connection(),
                ..GroupConfig::default()
            },
        );
        let supports_848 = probe
            .coordinator_supports(ApiKey::ConsumerGroupHeartbeat)
            .await?
            .is_some();
        // ...but a running member outlasts coordinator trouble, as Java's
        // does: it keeps retrying, and the pipeline drops the partitions
        // once the coordinator has been silent for a session timeout.
        let client = GroupClient::new(
            cluster.brokers.clone(),
            cfg.group.clone(),
            GroupConfig {
                connection: cluster.connection(),
                retry_deadline: Duration::from_secs(365 * 24 * 3600),
                ..GroupConfig::default()
            },
        );
        let protocol = match (cfg.protocol, supports_848) {
            (GroupProtocol::Consumer, false) => {
                return Err(Error::Kafka {
                    context: format!("joining group '{}' with --group-protocol consumer", cfg.group),
                    detail: "the group coordinator does not offer the consumer group protocol (KIP-848; broker older than 4.0 or group.coordinator.rebalance.protocols without 'consumer'): use --group-protocol classic or auto".into(),
                });
            }
            (GroupProtocol::Auto, true) | (GroupProtocol::Consumer, true) => {
                GroupProtocol::Consumer
            }
            _ => GroupProtocol::Classic,
        };
        // A broker with the consumer protocol switched off
        // (group.coordinator.rebalance.protocols=classic) still advertises
        // ConsumerGroupHeartbeat and refuses it per request, so `auto` also
        // falls back when the first heartbeat says UNSUPPORTED_VERSION.
        let fallback = cfg.protocol == GroupProtocol::Auto;
        let (events_tx, events) = mpsc::channel(16);
        let (control, control_rx) = mpsc::unbounded_channel();
        let status = Arc::new(Mutex::new(MemberStatus {
            generation: -1,
            instance_id: cfg.instance_id.clone(),
            ..MemberStatus::default()
        }));
        let closing = Arc::new(AtomicBool::new(false));
        let session_timeout = cfg.session_timeout;
        let group = cfg.group.clone();
        let static_member = cfg.instance_id.is_some();
        let session = Session {
            cfg,
            cluster: cluster.clone(),
            client,
            events: events_tx.clone(),
            status: Arc::clone(&status),
            control: control_rx,
            closing: Arc::clone(&closing),
        };
        // Log lines of the member carry its client id.
        let span = tracing::info_span!("member", client = %cluster.client_id);
        let task = tokio::spawn(
            async move {
                let result = match protocol {
                    GroupProtocol::Consumer => super::kip848::run(session, fallback).await,
                    _ => super::classic::run(session).await,
                };
                if let Err(e) = result {
                    let _ = events_tx.send(GroupEvent::Failed(e)).await;
                }
            }
            .instrument(span),
        );
        Ok(Self {
            events,
            session_timeout,
            cluster: cluster.clone(),
            group,
            static_member,
            status,
            control,
            closing,
            task: Some(task),
        })
    }

    /// The next assignment change. Cancel-safe. `None` once the protocol
    /// task ended (after [`leave`](Self::leave)).
    pub async fn next_event(&mut self) -> Option<GroupEvent> {
        self.events.recv().await
    }

    /// The identity to commit with right now.
    pub fn identity(&self) -> CommitIdentity {
        self.status.lock().identity()
    }

    /// A snapshot of the member's status.
    pub fn status(&self) -> MemberStatus {
        self.status.lock().clone()
    }

    /// True once the coordinator has not confirmed this member for longer
    /// than the session timeout: the group has surely given its partitions
    /// to others, so it must stop handling them.
    pub fn session_expired(&self) -> bool {
        let st = self.status.lock();
        !st.joining
            && st
                .last_contact
                .is_some_and(|t| t.elapsed() > self.session_timeout)
    }

    /// After a fenced commit: the pipeline dropped the partitions; rejoin.
    pub fn rejoin(&self, reason: String) {
        let _ = self.control.send(Control::Rejoin(reason));
    }

    /// The pipeline is stopping: from now on the member takes no new
    /// partitions and does not rejoin; revocations still arrive as events.
    pub fn begin_close(&self) {
        self.closing.store(true, Ordering::SeqCst);
    }

    /// Leaves the group (LeaveGroup, or a KIP-848 heartbeat with epoch -1;
    /// a static member only stops heartbeating, so a restart within the
    /// session timeout gets its partitions back) and waits, at most
    /// `timeout`, for the task to end. Call after the final commit.
    pub async fn leave(mut self, timeout: Duration) {
        self.begin_close();
        let _ = self.control.send(Control::Leave);
        // A classic JoinGroup can be held by the coordinator for a whole
        // rebalance: leave from here instead of waiting for it (Java sends
        // LeaveGroup in any state too).
        let joining = self.status.lock().joining;
        let Some(mut task) = self.task.take() else {
            return;
        };
        if joining {
            task.abort();
            self.leave_directly().await;
            return;
        }
        // Keep draining events so the task never blocks on a full channel.
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut task => break,
                ev = self.events.recv() => if let Some(GroupEvent::Revoke { done, .. }) = ev {
                    let _ = done.send(());
                },
                _ = &mut deadline => {
                    tracing::warn!("the group member did not finish leaving within {timeout:?}; leaving directly");
                    task.abort();
                    self.leave_directly().await;
                    break;
                }
            }
        }
    }

    /// Sends the classic LeaveGroup itself (the protocol task was stopped).
    /// KIP-848 leaves are heartbeats, which never wait long, and a static
    /// member does not leave.
    async fn leave_directly(&self) {
        let status = self.status.lock().clone();
        if self.static_member
            || status.member_id.is_empty()
            || !status.protocol.starts_with("classic")
        {
            return;
        }
        let client = GroupClient::new(
            self.cluster.brokers.clone(),
            self.group.clone(),
            GroupConfig {
                connection: self.cluster.connection(),
                retry_deadline: Duration::from_secs(10),
                ..GroupConfig::default()
            },
        );
        super::classic::send_leave(&client, &self.group, &status.member_id).await;
    }
}
