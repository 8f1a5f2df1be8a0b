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
use crate::error::{Error, Result};
use crate::protocol::Security;

/// A setting applied to the draft configuration, in the order given.
type Setting = Box<dyn FnOnce(&mut Draft) + Send>;

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
pub struct ProducerBuilder {
    properties: Vec<(String, String)>,
    settings: Vec<Setting>,
}

impl std::fmt::Debug for ProducerBuilder {
    /// Property names only, never a value (a property may be a password).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProducerBuilder")
            .field(
                "properties",
                &self.properties.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("settings", &self.settings.len())
            .finish()
    }
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty => |$d:ident, $v:ident| $apply:expr;)*) => {
        $(
            $(#[$doc])*
            pub fn $name(self, value: $ty) -> Self {
                self.set(move |$d: &mut Draft| {
                    let $v = value;
                    $apply;
                })
            }
        )*
    };
}

impl ProducerBuilder {
    fn set(mut self, f: impl FnOnce(&mut Draft) + Send + 'static) -> Self {
        self.settings.push(Box::new(f));
        self
    }

    /// One Kafka client property by its Java/librdkafka name
    /// (`bootstrap.servers`, `security.protocol`, `linger.ms`, `acks`, ...),
    /// read as `-X` on the command line. Checked in [`build`](Self::build).
    pub fn property(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.push((name.into(), value.into()));
        self
    }

    /// [`property`](Self::property) for each pair.
    pub fn properties<K: Into<String>, V: Into<String>>(
        mut self,
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.properties
            .extend(pairs.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    setters! {
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
        let mut settings = match self.properties.is_empty() {
            true => Vec::new(),
            false => crate::cli::producer::property_settings(&self.properties)?.settings,
        };
        settings.extend(self.settings);
        for setting in settings {
            setting(&mut draft);
        }
        let Draft {
            brokers,
            mut cluster,
            mut config,
            idempotence,
        } = draft;
        if brokers.trim().is_empty() {
            return Err(Error::Usage(
                "no bootstrap servers: give bootstrap_servers(\"host:port\") or the bootstrap.servers property".into(),
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
            topics: tokio::sync::Mutex::new(HashMap::new()),
        })
    }
}

/// An idempotent, batching producer to any number of topics.
///
/// Records of one partition are written in the order they were queued
/// ([`enqueue`](Self::enqueue), or the first poll of [`send`](Self::send)),
/// each exactly once: retries after a lost connection or a leader change
/// never duplicate or reorder them. A record with a key goes to the
/// partition Kafka's Java client would choose (murmur2), so keyed records
/// stay in order for every consumer.
pub struct Producer {
    cluster: ClusterConfig,
    config: ProducerConfig,
    topics: tokio::sync::Mutex<HashMap<String, Arc<TopicProducer>>>,
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
            properties: Vec::new(),
            settings: Vec::new(),
        }
    }

    /// The producer of `topic`, opened on first use (metadata and, when
    /// idempotent, a producer id). Fails if the topic does not exist.
    pub async fn topic(&self, topic: &str) -> Result<Arc<TopicProducer>> {
        let mut topics = self.topics.lock().await;
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
        let topics: Vec<_> = self.topics.lock().await.values().cloned().collect();
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

    /// Flushes and stops every topic's sender; returns what each did, by
    /// topic. Records sent after this fail.
    pub async fn close(&self) -> Vec<(String, ProduceSummary)> {
        let topics: Vec<_> = self
            .topics
            .lock()
            .await
            .iter()
            .map(|(t, p)| (t.clone(), Arc::clone(p)))
            .collect();
        let mut out = Vec::new();
        for (t, p) in topics {
            out.push((t, p.close().await));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}
