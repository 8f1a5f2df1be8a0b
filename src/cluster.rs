//! Connecting to a Kafka cluster and answering the questions every command asks
//! first: is the broker there, does the topic exist, does the partition exist.
//!
//! rskafka retries connection errors forever by default; a command-line tool
//! must instead give up with a clear message, so every call here has a deadline.

use std::collections::BTreeSet;
use std::time::Duration;

use rskafka::BackoffConfig;
use rskafka::client::error::{Error as KafkaError, ProtocolError};
use rskafka::client::{Client, ClientBuilder};

use kafka_protocol::ResponseError;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{ApiKey, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::error::{Error, Result};
use crate::protocol::{Connection, ProtocolError as WireError, Security, VersionRange};

/// Metadata versions [`describe_topics`] builds and reads (v10+ carry topic ids).
const METADATA_VERSIONS: VersionRange = VersionRange { min: 10, max: 12 };

/// Where the cluster is and how patient to be with it.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// Bootstrap brokers as `host:port`.
    pub brokers: Vec<String>,
    /// Give up connecting after this long (the first metadata request included).
    pub connect_timeout: Duration,
    /// Retries of a failing request (leader moves, lost connection) stop after this long.
    pub request_deadline: Duration,
    /// Client id sent to the broker (shows in broker logs and quotas).
    pub client_id: String,
    /// TLS and SASL, the same for every connection of the run (ours and rskafka's).
    pub security: Security,
}

impl ClusterConfig {
    /// A configuration for `brokers` with the default timeouts (10 s connect, 30 s retry deadline).
    pub fn new(brokers: Vec<String>) -> Self {
        Self {
            brokers,
            connect_timeout: Duration::from_secs(10),
            request_deadline: Duration::from_secs(30),
            client_id: "mykafkams".to_string(),
            security: Security::plaintext(),
        }
    }

    /// The bootstrap list as one string, for messages.
    pub fn brokers_display(&self) -> String {
        self.brokers.join(",")
    }

    /// The settings of every connection we open ourselves (fetch, group
    /// coordinator): this client id, connect timeout and security, default limits.
    pub fn connection(&self) -> crate::protocol::ConnectionConfig {
        crate::protocol::ConnectionConfig {
            client_id: std::sync::Arc::from(self.client_id.as_str()),
            connect_timeout: self.connect_timeout,
            security: self.security.clone(),
            ..crate::protocol::ConnectionConfig::default()
        }
    }
}

/// Splits a `host:port[,host:port...]` list, rejecting empty entries and entries without a port.
pub fn parse_brokers(list: &str) -> Result<Vec<String>> {
    let brokers: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    if brokers.is_empty() {
        return Err(Error::Usage(
            "no broker given: pass host:port, e.g. 127.0.0.1:9092".into(),
        ));
    }
    for b in &brokers {
        let port_ok = b
            .rsplit_once(':')
            .map(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
            .unwrap_or(false);
        if !port_ok {
            return Err(Error::Usage(format!(
                "broker '{b}' is not host:port (e.g. 127.0.0.1:9092)"
            )));
        }
    }
    Ok(brokers)
}

/// Connects to the cluster, failing with [`Error::Unreachable`] within
/// `connect_timeout` when no bootstrap broker answers a metadata request,
/// and with [`Error::Security`] when TLS or SASL fails.
///
/// Our own connection goes first: it explains a TLS or SASL failure in one
/// line (rskafka keeps only an error code), and it proves the settings work
/// before rskafka's client, which gets the same TLS config and credentials,
/// opens its connections.
pub async fn connect(cfg: &ClusterConfig) -> Result<Client> {
    preflight(cfg).await?;
    let backoff = BackoffConfig {
        init_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_secs(2),
        base: 2.0,
        deadline: Some(cfg.request_deadline),
    };
    let mut builder = ClientBuilder::new(cfg.brokers.clone())
        .client_id(cfg.client_id.clone())
        .backoff_config(backoff);
    if let Some(tls) = cfg.security.tls() {
        builder = builder.tls_config(tls.clone());
    }
    if let Some(sasl) = cfg.security.sasl() {
        builder = builder.sasl_config(sasl.to_rskafka().map_err(Error::Security)?);
    }
    let build = builder.build();
    match tokio::time::timeout(cfg.connect_timeout, build).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(e)) => Err(Error::Unreachable {
            brokers: cfg.brokers_display(),
            detail: short(&e),
        }),
        Err(_) => Err(Error::Unreachable {
            brokers: cfg.brokers_display(),
            detail: why_unreachable(&cfg.brokers, cfg.connect_timeout).await,
        }),
    }
}

/// Connects to the first bootstrap broker that answers (TLS, ApiVersions,
/// SASL) and asks it for the cluster's brokers. Security failures are final;
/// an unreachable broker moves on to the next one.
/// The whole check is bounded by `connect_timeout`.
pub async fn preflight(cfg: &ClusterConfig) -> Result<()> {
    match tokio::time::timeout(cfg.connect_timeout, preflight_unbounded(cfg)).await {
        Ok(result) => result,
        Err(_) => Err(Error::Unreachable {
            brokers: cfg.brokers_display(),
            detail: why_unreachable(&cfg.brokers, cfg.connect_timeout).await,
        }),
    }
}

async fn preflight_unbounded(cfg: &ClusterConfig) -> Result<()> {
    bootstrap_metadata(
        cfg,
        MetadataRequest::default().with_topics(Some(Vec::new())),
    )
    .await
    .map(|_| ())
}

/// Sends `request` to the first bootstrap broker that answers (TLS,
/// ApiVersions, SASL, then the Metadata request itself). An unreachable
/// broker moves on to the next one; TLS and SASL failures are final.
/// Hang-ups during set-up are security mismatches only when every broker
/// hangs up (one alone may just be restarting).
async fn bootstrap_metadata(
    cfg: &ClusterConfig,
    request: MetadataRequest,
) -> Result<MetadataResponse> {
    let mut failures: Vec<WireError> = Vec::new();
    for addr in &cfg.brokers {
        let conn = match Connection::connect(addr, cfg.connection()).await {
            Ok(c) => c,
            Err(e) if e.is_transport() => {
                failures.push(e);
                continue;
            }
            Err(e) => return Err(Error::protocol("connecting to the cluster", e)),
        };
        let version = conn
            .negotiate(ApiKey::Metadata, METADATA_VERSIONS)
            .map_err(|e| Error::protocol("reading cluster metadata", e))?;
        match conn.send(&request, version).await {
            Ok(response) => return Ok(response),
            // A SASL listener lets ApiVersions through unauthenticated, then
            // hangs up on the first real request.
            Err(WireError::Io { .. }) if cfg.security.sasl().is_none() => {
                failures.push(WireError::ClosedEarly {
                    broker: addr.clone(),
                    hint: "at the first request after the handshake: the listener probably requires SASL (set security.protocol=SASL_SSL or SASL_PLAINTEXT, and sasl.mechanism)",
                });
            }
            Err(e) if e.is_transport() => failures.push(e),
            Err(e) => return Err(Error::protocol("reading cluster metadata", e)),
        }
    }
    let all_hung_up = failures
        .iter()
        .all(|f| matches!(f, WireError::ClosedEarly { .. }));
    match failures.pop() {
        Some(last) if all_hung_up => Err(Error::Security(last.to_string())),
        Some(last) => Err(Error::Unreachable {
            brokers: cfg.brokers_display(),
            detail: last.to_string(),
        }),
        None => Err(Error::Usage("no bootstrap broker given".into())),
    }
}

/// rskafka keeps only a retry log, so after a timeout ask the first broker
/// directly, to tell "connection refused" from "no route" or "not Kafka".
async fn why_unreachable(brokers: &[String], waited: Duration) -> String {
    let probe = tokio::net::TcpStream::connect(brokers[0].as_str());
    match tokio::time::timeout(Duration::from_secs(2), probe).await {
        Ok(Err(e)) => format!("{e}, retried for {}s", waited.as_secs()),
        Ok(Ok(_)) => format!(
            "TCP connects but no Kafka metadata answer within {}s",
            waited.as_secs()
        ),
        Err(_) => format!("no answer within {}s", waited.as_secs()),
    }
}

/// How long a topic that the metadata does not name is asked for again
/// before it counts as missing. The controller has accepted a new topic
/// before every broker's metadata cache holds it (KRaft propagates it
/// asynchronously), so a consumer or producer started right after
/// `kafka-topics --create` could otherwise fail on a topic that exists.
pub const NEW_TOPIC_GRACE: Duration = Duration::from_secs(5);

/// Runs `lookup` until it answers anything but [`Error::UnknownTopic`], or
/// until [`NEW_TOPIC_GRACE`] has passed, backing off from 50 ms to 500 ms;
/// then returns its last answer. For start-up checks of a topic the user
/// named: a mistyped name still fails with one clear line, a few seconds
/// later.
pub async fn within_new_topic_grace<T, F, Fut>(mut lookup: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let deadline = tokio::time::Instant::now() + NEW_TOPIC_GRACE;
    let mut pause = Duration::from_millis(50);
    loop {
        match lookup().await {
            Err(Error::UnknownTopic { topic }) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(%topic, "topic not in the metadata yet; asking again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(500));
            }
            answer => return answer,
        }
    }
}

/// The partitions of `topic`, or [`Error::UnknownTopic`], or
/// [`Error::Security`] naming the missing ACL when the principal may not
/// describe it (asking for all topics would instead silently leave it out).
pub async fn topic_partitions(cfg: &ClusterConfig, topic: &str) -> Result<BTreeSet<i32>> {
    let described = describe_topics(cfg, Some(&[topic.to_string()])).await?;
    described
        .into_iter()
        .find(|t| t.name == topic)
        .map(|t| (0..t.partitions).collect())
        .ok_or_else(|| Error::UnknownTopic {
            topic: topic.to_string(),
        })
}

/// Where a topic's partitions are led: what the producer routes by.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Leaders {
    /// Leader node id by partition index (`None`: no leader right now).
    pub partitions: Vec<Option<i32>>,
    /// `host:port` of every broker the metadata named, by node id.
    pub brokers: std::collections::HashMap<i32, String>,
}

/// The leaders of `topic`'s partitions, from one Metadata request to the
/// first bootstrap broker that answers. Fails like [`topic_partitions`] for
/// a missing topic or a missing Describe ACL.
pub async fn topic_leaders(cfg: &ClusterConfig, topic: &str) -> Result<Leaders> {
    let request = MetadataRequest::default()
        .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(
            TopicName(StrBytes::from_string(topic.to_string())),
        ))]))
        .with_allow_auto_topic_creation(false);
    let response = bootstrap_metadata(cfg, request).await?;
    let brokers = response
        .brokers
        .iter()
        .map(|b| {
            (
                b.node_id.0,
                crate::protocol::format_addr(b.host.as_str(), b.port),
            )
        })
        .collect();
    let Some(t) = response
        .topics
        .into_iter()
        .find(|t| t.name.as_ref().is_some_and(|n| n.as_str() == topic))
    else {
        return Err(Error::UnknownTopic {
            topic: topic.to_string(),
        });
    };
    match ResponseError::try_from_code(t.error_code) {
        None | Some(ResponseError::LeaderNotAvailable) => {}
        Some(ResponseError::UnknownTopicOrPartition) => {
            return Err(Error::UnknownTopic {
                topic: topic.to_string(),
            });
        }
        Some(ResponseError::TopicAuthorizationFailed) => {
            return Err(Error::denied(
                "TOPIC_AUTHORIZATION_FAILED",
                &cfg.security.principal_hint(),
                "Describe",
                &format!("Topic:{topic}"),
            ));
        }
        Some(e) => {
            return Err(Error::kafka(
                format!("reading metadata of topic '{topic}'"),
                format!("{e:?}: {e}"),
            ));
        }
    }
    let n = t
        .partitions
        .iter()
        .map(|p| p.partition_index + 1)
        .max()
        .unwrap_or(0)
        .max(0) as usize;
    let mut partitions = vec![None; n];
    for p in &t.partitions {
        let leader = p.leader_id.0;
        partitions[p.partition_index as usize] =
            (p.error_code == 0 && leader >= 0).then_some(leader);
    }
    Ok(Leaders {
        partitions,
        brokers,
    })
}

/// One configuration value of `topic` (e.g. `max.message.bytes`), from a
/// DescribeConfigs request to the first bootstrap broker that answers.
/// `Ok(None)` when the broker does not report it.
pub async fn topic_config(cfg: &ClusterConfig, topic: &str, name: &str) -> Result<Option<String>> {
    const TOPIC_RESOURCE: i8 = 2;
    let mut last = None;
    for addr in &cfg.brokers {
        match describe_config(cfg, addr, TOPIC_RESOURCE, topic, name).await {
            Err(DescribeFailed::Connect(e)) => last = Some(e),
            Err(DescribeFailed::Other(e)) => return Err(e),
            Ok(v) => return Ok(v),
        }
    }
    Err(match last {
        Some(e) => Error::protocol("describing the topic's configuration", e),
        None => Error::Usage("no bootstrap broker given".into()),
    })
}

/// One broker configuration value (e.g. `offset.metadata.max.bytes`), as
/// the first broker leading a partition of `topic` reports it about itself
/// (a broker only describes its own static configuration). `Ok(None)` when
/// no broker reports it; an error when none could be asked (e.g. the
/// principal lacks DescribeConfigs on the cluster).
pub async fn broker_config(cfg: &ClusterConfig, topic: &str, name: &str) -> Result<Option<String>> {
    const BROKER_RESOURCE: i8 = 4;
    let leaders = topic_leaders(cfg, topic).await?;
    let mut brokers: Vec<(i32, String)> = leaders.brokers.into_iter().collect();
    brokers.sort();
    let mut last = None;
    for (id, addr) in &brokers {
        match describe_config(cfg, addr, BROKER_RESOURCE, &id.to_string(), name).await {
            Ok(v) => return Ok(v),
            Err(DescribeFailed::Connect(e)) => {
                last = Some(Error::protocol("describing a broker's configuration", e))
            }
            Err(DescribeFailed::Other(e)) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| Error::Usage("the cluster named no broker".into())))
}

/// Why a DescribeConfigs failed: the broker could not be reached (try
/// another), or it answered with an error.
enum DescribeFailed {
    Connect(WireError),
    Other(Error),
}

/// One DescribeConfigs round trip to `addr` for one key of one resource.
async fn describe_config(
    cfg: &ClusterConfig,
    addr: &str,
    resource_type: i8,
    resource: &str,
    name: &str,
) -> std::result::Result<Option<String>, DescribeFailed> {
    use kafka_protocol::messages::DescribeConfigsRequest;
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    const DESCRIBE_CONFIGS_VERSIONS: VersionRange = VersionRange { min: 1, max: 4 };
    const OP: &str = "describing a configuration";
    let conn = Connection::connect(addr, cfg.connection())
        .await
        .map_err(DescribeFailed::Connect)?;
    let version = conn
        .negotiate(ApiKey::DescribeConfigs, DESCRIBE_CONFIGS_VERSIONS)
        .map_err(|e| DescribeFailed::Other(Error::protocol(OP, e)))?;
    let request = DescribeConfigsRequest::default().with_resources(vec![
        DescribeConfigsResource::default()
            .with_resource_type(resource_type)
            .with_resource_name(StrBytes::from_string(resource.to_string()))
            .with_configuration_keys(Some(vec![StrBytes::from_string(name.to_string())])),
    ]);
    let response = conn
        .send(&request, version)
        .await
        .map_err(|e| DescribeFailed::Other(Error::protocol(OP, e)))?;
    for r in response.results {
        if r.error_code != 0 {
            return Err(DescribeFailed::Other(Error::kafka(
                format!("describing the configuration of '{resource}'"),
                format!("error code {}", r.error_code),
            )));
        }
        if let Some(c) = r.configs.iter().find(|c| c.name.as_str() == name) {
            return Ok(c.value.as_ref().map(|v| v.to_string()));
        }
    }
    Ok(None)
}

/// One topic as the cluster's metadata describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicInfo {
    /// Topic name.
    pub name: String,
    /// Topic id (KIP-848 assignments name topics by id).
    pub id: uuid::Uuid,
    /// Number of partitions.
    pub partitions: i32,
}

/// Describes `topics` (all topics when `None`) with one Metadata request
/// over our own connection to the first bootstrap broker that answers:
/// rskafka's metadata carries no topic ids. Topics that do not exist are
/// left out of the answer.
pub async fn describe_topics(
    cfg: &ClusterConfig,
    topics: Option<&[String]>,
) -> Result<Vec<TopicInfo>> {
    let request = MetadataRequest::default()
        .with_topics(topics.map(|ts| {
            ts.iter()
                .map(|t| {
                    MetadataRequestTopic::default()
                        .with_name(Some(TopicName(StrBytes::from_string(t.clone()))))
                })
                .collect()
        }))
        .with_allow_auto_topic_creation(false);
    let response = bootstrap_metadata(cfg, request).await?;
    let mut out = Vec::with_capacity(response.topics.len());
    for t in response.topics {
        let Some(name) = t.name else { continue };
        match ResponseError::try_from_code(t.error_code) {
            None => out.push(TopicInfo {
                name: name.to_string(),
                id: t.topic_id,
                partitions: t.partitions.len() as i32,
            }),
            Some(ResponseError::UnknownTopicOrPartition) => {}
            Some(ResponseError::TopicAuthorizationFailed) => {
                return Err(Error::denied(
                    "TOPIC_AUTHORIZATION_FAILED",
                    &cfg.security.principal_hint(),
                    "Describe",
                    &format!("Topic:{}", name.as_str()),
                ));
            }
            Some(e) => {
                return Err(Error::kafka(
                    format!("reading metadata of topic '{}'", name.as_str()),
                    format!("{e:?}: {e}"),
                ));
            }
        }
    }
    Ok(out)
}

/// Checks that every partition in `wanted` exists in `topic`.
pub async fn check_partitions(
    cfg: &ClusterConfig,
    topic: &str,
    wanted: &[i32],
) -> Result<BTreeSet<i32>> {
    let partitions = topic_partitions(cfg, topic).await?;
    for &p in wanted {
        if !partitions.contains(&p) {
            return Err(Error::UnknownPartition {
                topic: topic.to_string(),
                partition: p,
                count: partitions.len(),
            });
        }
    }
    Ok(partitions)
}

/// Creates `topic` with `partitions` partitions unless it exists; returns whether
/// it was created. Waits until the new topic shows in metadata with all its
/// partitions, so the caller can use it at once.
pub async fn create_topic_if_missing(
    client: &Client,
    cfg: &ClusterConfig,
    topic: &str,
    partitions: i32,
    replication: i16,
) -> Result<bool> {
    if partitions < 1 {
        return Err(Error::Usage(format!(
            "--partitions must be at least 1 (got {partitions})"
        )));
    }
    match topic_partitions(cfg, topic).await {
        Ok(_) => return Ok(false),
        Err(Error::UnknownTopic { .. }) => {}
        Err(e) => return Err(e),
    }
    let controller = client
        .controller_client()
        .map_err(|e| Error::kafka("finding the controller", short(&e)))?;
    match controller
        .create_topic(topic, partitions, replication, 10_000)
        .await
    {
        Ok(()) => {}
        Err(e) if is_protocol(&e, ProtocolError::TopicAlreadyExists) => return Ok(false),
        Err(e)
            if is_protocol(&e, ProtocolError::TopicAuthorizationFailed)
                || is_protocol(&e, ProtocolError::ClusterAuthorizationFailed) =>
        {
            return Err(Error::denied(
                "TOPIC_AUTHORIZATION_FAILED",
                &cfg.security.principal_hint(),
                "Create",
                &format!("Topic:{topic}"),
            ));
        }
        Err(e) => {
            return Err(Error::kafka(
                format!(
                    "creating topic '{topic}' ({partitions} partitions, replication {replication})"
                ),
                short(&e),
            ));
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(p) = topic_partitions(cfg, topic).await
            && p.len() as i32 >= partitions
        {
            return Ok(true);
        }
        if tokio::time::Instant::now() > deadline {
            return Err(Error::kafka(
                format!("waiting for new topic '{topic}' to appear in metadata"),
                "not visible after 15 s",
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether an rskafka error is (or wraps, after retries) the given protocol error.
pub fn is_protocol(err: &KafkaError, wanted: ProtocolError) -> bool {
    match err {
        KafkaError::ServerError { protocol_error, .. } => *protocol_error == wanted,
        // Retries that ran out keep the last error only as text.
        other => other.to_string().contains(&format!("{wanted:?}")),
    }
}

/// An rskafka error as one short line (its Debug-heavy Display can be long).
pub fn short(err: &KafkaError) -> String {
    match err {
        KafkaError::ServerError {
            protocol_error,
            error_message,
            ..
        } => match error_message {
            Some(m) => format!("broker answered {protocol_error:?}: {m}"),
            None => format!("broker answered {protocol_error:?}"),
        },
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_lists_are_split_and_checked() {
        assert_eq!(
            parse_brokers("a:1, b:2,,").unwrap(),
            vec!["a:1".to_string(), "b:2".to_string()]
        );
        assert!(parse_brokers("").is_err());
        assert!(parse_brokers("localhost").is_err());
        assert!(parse_brokers("host:notaport").is_err());
        assert!(parse_brokers(":9092").is_err());
    }
}
