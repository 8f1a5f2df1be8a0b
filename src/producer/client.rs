//! The producer as a Rust service embeds it: [`Producer::builder`] takes
//! the options of the `producer` command line (typed setters, or Kafka
//! property names), and [`Producer::send`] writes a record to any topic and
//! resolves to where it was written once the broker acknowledged it.
//!
//! Each topic gets its own [`TopicProducer`] on first use (its metadata
//! and, when idempotent, its own producer id), kept for the producer's life.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::{
    Acks, Compression, Delivery, DeliveryFuture, MAX_IN_FLIGHT_IDEMPOTENT, ProduceSummary,
    ProducerConfig, TopicProducer,
};
use crate::cluster::{self, ClusterConfig};
use crate::config::settings::{Settings, builder_methods};
use crate::error::{Error, Result};
use crate::protocol::Security;

/// The configuration as the builder assembles it.
struct Draft {
    brokers: String,
    cluster: ClusterConfig,
    config: ProducerConfig,
    /// Left unset, idempotence follows Java: on unless acks or the
    /// pipeline depth rule it out.
    idempotence: Option<bool>,
}

/// Builds a [`Producer`]; start with [`Producer::builder`]. The defaults
/// are Java's where it matters: idempotent, `acks=all`, 5 requests in
/// flight, 5 ms linger.
///
/// Kafka properties given with [`property`](Self::property) apply first
/// and the typed setters after them, in the order called.
#[must_use = "a builder does nothing until build() is called"]
#[derive(Debug)]
pub struct ProducerBuilder {
    settings: Settings<Draft>,
}

impl ProducerBuilder {
    builder_methods! {
        Draft;
        /// Bootstrap brokers, `host:port`, comma separated.
        bootstrap_servers: impl Into<String> + Send + 'static => |d, v| d.brokers = v.into();
        /// Client id shown in broker logs and quotas.
        client_id: impl Into<String> + Send + 'static => |d, v| d.cluster.client_id = v.into();
        /// TLS and SASL settings built in code.
        security: Security => |d, v| d.cluster.security = v;
        /// How long to wait for the brokers before giving up.
        connect_timeout: Duration => |d, v| d.cluster.connect_timeout = v;
        /// How long a batch may wait for more records.
        linger: Duration => |d, v| d.config.linger = v;
        /// Seal a batch at this many bytes (before compression).
        batch_size: usize => |d, v| d.config.batch_bytes = v;
        /// Codec of produce requests (all pure Rust).
        compression: Compression => |d, v| d.config.compression = v;
        /// Replicas that must have a record before it is acknowledged.
        acks: Acks => |d, v| d.config.acks = v;
        /// Producer id and sequence numbers, so a retry never duplicates
        /// (needs `acks=all` and at most 5 requests in flight).
        idempotence: bool => |d, v| d.idempotence = Some(v);
        /// Produce requests in flight per broker connection.
        max_in_flight_requests: usize => |d, v| d.config.max_in_flight = v;
        /// Bytes buffered before `send` waits.
        buffer_memory: usize => |d, v| d.config.buffer_memory = v;
        /// How long the broker may take to answer one produce request.
        request_timeout: Duration => |d, v| d.config.request_timeout = v;
        /// How long a record may take to be acknowledged, retries included.
        delivery_timeout: Duration => |d, v| d.config.delivery_timeout = v;
        /// Send every record to this partition instead of choosing by key.
        partition: i32 => |d, v| d.config.partition = Some(v);
        /// Write one line per record to this file: its number, then the
        /// partition and offset, or the error.
        report: PathBuf => |d, v| d.config.report = Some(v);
    }

    /// A header added to every record (before the record's own).
    pub fn header(self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        let header = (name.into(), value.into());
        self.set(move |d| d.config.headers.push(header))
    }

    /// Checks the options, then checks that the cluster is reachable and
    /// that TLS and SASL work, so a bad setting fails here rather than at
    /// the first send.
    pub async fn build(self) -> Result<Producer> {
        let mut draft = Draft {
            brokers: String::new(),
            cluster: ClusterConfig::new(Vec::new()),
            config: ProducerConfig::new(""),
            idempotence: None,
        };
        draft.cluster.client_id = format!("mykafkams-producer-{}", std::process::id());
        self.settings.apply(&mut draft, |properties| {
            Ok(crate::cli::producer::property_settings(properties)?.settings)
        })?;
        let Draft {
            brokers,
            mut cluster,
            mut config,
            idempotence,
        } = draft;
        if brokers.trim().is_empty() {
            return Err(Error::Usage(
                "no bootstrap servers given: name at least one broker as host:port (bootstrap.servers)".into(),
            ));
        }
        cluster.brokers = cluster::parse_brokers(&brokers)?;
        config.idempotence = idempotence.unwrap_or_else(|| {
            let possible =
                config.acks == Acks::All && config.max_in_flight <= MAX_IN_FLIGHT_IDEMPOTENT;
            if !possible {
                tracing::info!(
                    "idempotence off: acks={} / {} requests in flight rule it out",
                    config.acks,
                    config.max_in_flight
                );
            }
            possible
        });
        config.validate()?;
        cluster::preflight(&cluster).await?;
        Ok(Producer {
            cluster,
            config,
            topics: tokio::sync::Mutex::new(Some(HashMap::new())),
        })
    }
}

/// An idempotent, batching producer to any number of topics.
///
/// Records of one partition are written in the order they were queued
/// ([`enqueue`](Self::enqueue), or the first poll of [`send`](Self::send)),
/// never twice: retries after a lost connection or a leader change
/// never duplicate or reorder them. A record with a key goes to the
/// partition Kafka's Java client would choose (murmur2), so keyed records
/// stay in order for every consumer.
pub struct Producer {
    cluster: ClusterConfig,
    config: ProducerConfig,
    /// The open topics; `None` once closed.
    topics: tokio::sync::Mutex<Option<HashMap<String, Arc<TopicProducer>>>>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("brokers", &self.cluster.brokers)
            .finish_non_exhaustive()
    }
}

impl Producer {
    /// A builder with Java's producer defaults.
    pub fn builder() -> ProducerBuilder {
        ProducerBuilder {
            settings: Settings::default(),
        }
    }

    /// The producer of `topic`, opened on first use (metadata and, when
    /// idempotent, a producer id). Fails if the topic does not exist, or
    /// once the producer is closed.
    pub async fn topic(&self, topic: &str) -> Result<Arc<TopicProducer>> {
        let mut topics = self.topics.lock().await;
        let Some(topics) = topics.as_mut() else {
            return Err(Error::FailedMessages(format!(
                "the producer is closed: nothing more is sent to '{topic}'"
            )));
        };
        if let Some(p) = topics.get(topic) {
            return Ok(Arc::clone(p));
        }
        let config = ProducerConfig {
            topic: topic.to_string(),
            ..self.config.clone()
        };
        let p = Arc::new(TopicProducer::new(&self.cluster, config).await?);
        topics.insert(topic.to_string(), Arc::clone(&p));
        Ok(p)
    }

    /// Writes one record and resolves once the broker acknowledged it: to
    /// its partition and offset. `headers` go after the configured ones.
    /// Awaiting each send in turn writes one record per round trip; to
    /// keep many in flight, run sends concurrently or use
    /// [`enqueue`](Self::enqueue).
    pub async fn send(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: &[u8],
        headers: &[(&str, &[u8])],
    ) -> Result<Delivery> {
        self.enqueue(topic, key, value, headers).await?.await
    }

    /// Queues one record (waiting only while the buffer is full) and returns
    /// a future of its acknowledgement. Records queued one after another
    /// are written in that order within their partition.
    pub async fn enqueue(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: &[u8],
        headers: &[(&str, &[u8])],
    ) -> Result<DeliveryFuture> {
        self.topic(topic).await?.enqueue(key, value, headers).await
    }

    /// Sends every batch now and waits until each record queued so far was
    /// acknowledged or failed; fails if any of them failed.
    pub async fn flush(&self) -> Result<()> {
        let topics: Vec<_> = match self.topics.lock().await.as_ref() {
            Some(open) => open.values().cloned().collect(),
            None => Vec::new(),
        };
        let mut first_error = None;
        for p in topics {
            if let Err(e) = p.flush().await {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Creates `topic` if it does not exist; returns whether it did now.
    pub async fn create_topic(
        &self,
        topic: &str,
        partitions: i32,
        replication_factor: i16,
    ) -> Result<bool> {
        let client = cluster::connect(&self.cluster).await?;
        cluster::create_topic_if_missing(
            &client,
            &self.cluster,
            topic,
            partitions,
            replication_factor,
        )
        .await
    }

    /// Sends what is queued, waits for every acknowledgement and stops
    /// every topic's sender; returns what each did, by topic. Records sent
    /// after this fail at once. A second call returns nothing.
    pub async fn close(&self) -> Vec<(String, ProduceSummary)> {
        let topics = self.topics.lock().await.take().unwrap_or_default();
        let mut out = Vec::new();
        for (t, p) in topics {
            out.push((t, p.close().await));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}
