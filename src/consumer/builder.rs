//! The consumer as a Rust service embeds it: [`Consumer::builder`] takes
//! the options of the `consumer` command line (typed setters, or Kafka
//! property names through [`ConsumerBuilder::property`]), and
//! [`Consumer::run`] / [`Consumer::run_async`] consume until the end of the
//! log, a [`ShutdownHandle`] request, or a failure.
//!
//! The `consumer` binary is its argument parsing plus this builder: what
//! the command line can do, a service can.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;

use super::{ConsumeSummary, ConsumerConfig, Partitions, StartAt};
use crate::cluster::{self, ClusterConfig};
use crate::config::settings::{Settings, builder_methods};
use crate::dlq::DeadLetterQueue;
use crate::error::{Error, Result};
use crate::fetcher::Reset;
use crate::group::GroupProtocol;
use crate::group::assignor::Assignor;
use crate::metrics::ConsumerMetrics;
use crate::pool::{AsyncHandler, FailurePolicy, Handler, Ordering, Scheduler};
use crate::protocol::Security;

/// What happens to a message that still fails after its retries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum OnFailure {
    /// Stop the consumer: commit up to the failed message (it is
    /// redelivered next time) and return [`StopReason::Failed`](super::StopReason::Failed).
    #[default]
    Stop,
    /// Log it, count it as skipped, and go on.
    Skip,
    /// Produce it to this topic (with headers saying where it came from and
    /// why it failed), then go on. The topic must exist.
    DeadLetter(String),
}

impl std::str::FromStr for OnFailure {
    type Err = Error;

    /// `stop`, `skip` or `dlq:TOPIC` (the `--on-failure` values).
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "stop" => Ok(OnFailure::Stop),
            "skip" => Ok(OnFailure::Skip),
            dlq if dlq.starts_with("dlq:") && dlq.len() > 4 => {
                Ok(OnFailure::DeadLetter(dlq[4..].to_string()))
            }
            other => Err(Error::Usage(format!(
                "--on-failure '{other}': use stop, skip or dlq:<topic>"
            ))),
        }
    }
}

/// Asks a running [`Consumer`] to stop. Cheap to clone and `Send`: hand
/// it to a signal handler, an HTTP endpoint, or a test.
#[derive(Clone, Debug)]
pub struct ShutdownHandle(watch::Sender<u32>);

impl ShutdownHandle {
    /// A graceful stop (DESIGN rule 6): fetching stops, what was fetched
    /// finishes (within the drain timeout), finished offsets are committed,
    /// and a group member leaves its group. Calling it again does nothing
    /// more; a stop asked for before the run starts applies at once.
    pub fn shutdown(&self) {
        self.0.send_if_modified(|n| {
            let was = *n;
            *n = was.max(1);
            was < 1
        });
    }

    /// Cuts a stop short: what is still running is abandoned (and
    /// redelivered to whoever reads the partition next); what finished is
    /// committed. The run then ends with [`StopReason::Aborted`](super::StopReason::Aborted).
    pub fn abort(&self) {
        self.0.send_if_modified(|n| {
            let was = *n;
            *n = was.max(2);
            was < 2
        });
    }
}

/// A handler [`Consumer::run`] takes: any [`Handler`] (it runs on worker
/// threads, `How` = [`OnThreads`]) or [`AsyncHandler`] (tokio tasks, `How`
/// = [`AsTasks`]). `How` is inferred from the handler's type; nothing else
/// implements this trait.
pub trait RunHandler<How>: sealed::Sealed<How> + Send + Sync + 'static {
    /// Runs the whole pipeline with this handler.
    #[doc(hidden)]
    fn run_pipeline(
        self,
        config: ConsumerConfig,
        policy: FailurePolicy,
        stop: super::ShutdownSignal,
    ) -> impl Future<Output = Result<ConsumeSummary>> + Send;
}

/// [`RunHandler`]'s marker for a sync [`Handler`]: worker threads.
#[derive(Debug)]
pub enum OnThreads {}

/// [`RunHandler`]'s marker for an [`AsyncHandler`]: tokio tasks.
#[derive(Debug)]
pub enum AsTasks {}

mod sealed {
    /// Keeps [`RunHandler`](super::RunHandler) to the two handler traits.
    pub trait Sealed<How> {}
    impl<H: crate::pool::Handler> Sealed<super::OnThreads> for H {}
    impl<H: crate::pool::AsyncHandler> Sealed<super::AsTasks> for H {}
}

impl<H: Handler> RunHandler<OnThreads> for H {
    fn run_pipeline(
        self,
        config: ConsumerConfig,
        policy: FailurePolicy,
        stop: super::ShutdownSignal,
    ) -> impl Future<Output = Result<ConsumeSummary>> + Send {
        super::run(config, self, policy, stop)
    }
}

impl<H: AsyncHandler> RunHandler<AsTasks> for H {
    fn run_pipeline(
        self,
        config: ConsumerConfig,
        policy: FailurePolicy,
        stop: super::ShutdownSignal,
    ) -> impl Future<Output = Result<ConsumeSummary>> + Send {
        super::run_async(config, self, policy, stop)
    }
}

/// The configuration as the builder assembles it.
struct Draft {
    config: ConsumerConfig,
    brokers: String,
    topics: String,
    client_id: Option<String>,
    on_failure: OnFailure,
}

/// Builds a [`Consumer`]; start with [`Consumer::builder`]. Every option of
/// the `consumer` command line has a setter of the same name (see the
/// README's flag list for what each means and its default).
///
/// Kafka properties given with [`property`](Self::property) apply first
/// and the typed setters after them, in the order called: a setter wins
/// over a property, as a flag wins over `-X` on the command line.
#[must_use = "a builder does nothing until build() is called"]
#[derive(Debug)]
pub struct ConsumerBuilder {
    settings: Settings<Draft>,
}

impl ConsumerBuilder {
    builder_methods! {
        Draft;
        /// Bootstrap brokers, `host:port`, comma separated.
        bootstrap_servers: impl Into<String> + Send + 'static => |d, v| d.brokers = v.into();
        /// The topic to read; several, comma separated, make one subscription.
        topics: impl Into<String> + Send + 'static => |d, v| d.topics = v.into();
        /// The consumer group: its offsets are read and committed, and
        /// without [`partitions`](Self::partitions) the consumer joins it.
        group: impl Into<String> + Send + 'static => |d, v| d.config.group = v.into();
        /// A manual assignment ([`Partitions::All`] or a list) instead of
        /// the group's (the default, [`Partitions::Group`]).
        partitions: Partitions => |d, v| d.config.partitions = v;
        /// TLS and SASL settings built in code (properties build them from
        /// `security.protocol`, `sasl.*` and `ssl.*`).
        security: Security => |d, v| d.config.cluster.security = v;
        /// Client id shown by `kafka-consumer-groups` (default
        /// `mykafkams-consumer-PID`).
        client_id: impl Into<String> + Send + 'static => |d, v| d.client_id = Some(v.into());
        /// How long to wait for the brokers before giving up.
        connect_timeout: Duration => |d, v| d.config.cluster.connect_timeout = v;
        /// Group protocol: KIP-848, classic, or auto (the default: KIP-848
        /// where the broker has it).
        group_protocol: GroupProtocol => |d, v| d.config.membership.protocol = v;
        /// Classic assignors in order of preference.
        assignors: Vec<Assignor> => |d, v| d.config.membership.assignors = v;
        /// KIP-848 server-side assignor (`uniform`, `range`).
        group_remote_assignor: impl Into<String> + Send + 'static => |d, v| d.config.membership.remote_assignor = Some(v.into());
        /// Static membership id (KIP-345).
        group_instance_id: impl Into<String> + Send + 'static => |d, v| d.config.membership.instance_id = Some(v.into());
        /// Classic session timeout.
        session_timeout: Duration => |d, v| d.config.membership.session_timeout = v;
        /// Classic heartbeat interval.
        heartbeat_interval: Duration => |d, v| d.config.membership.heartbeat_interval = v;
        /// Rebalance timeout (`max.poll.interval.ms`): how long a
        /// revocation may wait for running handlers.
        max_poll_interval: Duration => |d, v| d.config.membership.rebalance_timeout = v;
        /// How often a classic member looks for partitions added to its topics.
        metadata_max_age: Duration => |d, v| d.config.membership.metadata_refresh = v;
        /// Start position (a manual assignment may start elsewhere than the
        /// committed offset).
        start_at: StartAt => |d, v| d.config.start = v;
        /// Where to start without a committed offset, or when it is out of range.
        reset: Reset => |d, v| { d.config.reset = v; d.config.fetch.reset = v };
        /// Worker threads of a sync handler ([`Consumer::run`]).
        workers: usize => |d, v| d.config.workers = v;
        /// Messages in flight at once across keys, for an async handler
        /// ([`Consumer::run_async`]).
        max_concurrency: usize => |d, v| d.config.max_concurrency = v;
        /// How messages reach the worker threads.
        scheduler: Scheduler => |d, v| d.config.scheduler = v;
        /// The order kept: per key (the default), per partition, or none.
        ordering: Ordering => |d, v| d.config.ordering = v;
        /// Most messages fetched and not yet finished (bounds memory).
        max_in_flight: usize => |d, v| d.config.max_in_flight = v;
        /// Retries of a failing message before [`on_failure`](Self::on_failure) applies.
        retries: u32 => |d, v| d.config.retries = v;
        /// First retry backoff; it doubles per retry, up to 30 s.
        retry_backoff: Duration => |d, v| d.config.retry_backoff = v;
        /// What happens to a message that fails after its retries.
        on_failure: OnFailure => |d, v| d.on_failure = v;
        /// An async handler's attempt that runs longer fails (and is
        /// dropped). Sync handlers are not interrupted.
        handler_timeout: Duration => |d, v| d.config.handler_timeout = Some(v);
        /// Stop once every partition is caught up and its messages are handled.
        exit_at_end: bool => |d, v| d.config.exit_at_end = v;
        /// How often finished offsets are committed.
        commit_interval: Duration => |d, v| d.config.commit_interval = v;
        /// Bounds what a crash repeats (see `ConsumerConfig::commit_every`;
        /// default 50,000); 0: only every `commit_interval`.
        commit_every: u64 => |d, v| d.config.commit_every = v;
        /// Longest offset map a commit carries (at most the broker's
        /// `offset.metadata.max.bytes`); 0 commits no maps.
        offset_map_max_bytes: usize => |d, v| d.config.offset_map_bytes = Some(v);
        /// How often a progress line is logged (zero: never).
        stats_interval: Duration => |d, v| d.config.stats_interval = v;
        /// Longest a graceful stop waits for messages in flight.
        drain_timeout: Duration => |d, v| d.config.drain_timeout = v;
        /// Longest a fetch waits on the broker for new data.
        fetch_max_wait: Duration => |d, v| d.config.fetch.max_wait = v;
        /// Most bytes of one Fetch response (`fetch.max.bytes`).
        fetch_max_bytes: i32 => |d, v| d.config.fetch.max_bytes = v;
        /// Most bytes of one partition in one response (`max.partition.fetch.bytes`).
        max_partition_fetch_bytes: i32 => |d, v| d.config.fetch.partition_max_bytes = v;
        /// Least bytes before the broker answers early (`fetch.min.bytes`).
        fetch_min_bytes: i32 => |d, v| d.config.fetch.min_bytes = v;
        /// Most fetched bytes held in memory over all partitions.
        fetch_buffer_bytes: usize => |d, v| d.config.fetch.buffer_bytes = v;
        /// Metrics to feed: register [`ConsumerMetrics::registry`] with your
        /// own endpoint, or serve it with [`crate::metrics::serve`].
        metrics: ConsumerMetrics => |d, v| d.config.metrics = Some(v);
    }

    /// Checks the options and returns the consumer. Nothing connects yet:
    /// the brokers are first contacted by [`Consumer::run`].
    pub fn build(self) -> Result<Consumer> {
        let mut draft = Draft {
            config: ConsumerConfig::new(ClusterConfig::new(Vec::new()), "", Partitions::Group, ""),
            brokers: String::new(),
            topics: String::new(),
            client_id: None,
            on_failure: OnFailure::Stop,
        };
        self.settings.apply(&mut draft, |properties| {
            Ok(crate::cli::consumer::property_settings(properties)?.settings)
        })?;
        let Draft {
            mut config,
            brokers,
            topics,
            client_id,
            on_failure,
        } = draft;
        if brokers.trim().is_empty() {
            return Err(Error::Usage(
                "no bootstrap servers given: name at least one broker as host:port (bootstrap.servers)".into(),
            ));
        }
        config.cluster.brokers = cluster::parse_brokers(&brokers)?;
        config.cluster.client_id =
            client_id.unwrap_or_else(|| format!("mykafkams-consumer-{}", std::process::id()));
        config.topics = topics
            .split(',')
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .collect();
        if config.topics.is_empty() {
            return Err(Error::Usage(
                "no topic given: name at least one topic".into(),
            ));
        }
        if config.group.trim().is_empty() {
            return Err(Error::Usage(
                "the group id is empty: give a group name (group.id)".into(),
            ));
        }
        if config.workers == 0 || config.max_in_flight == 0 || config.max_concurrency == 0 {
            return Err(Error::Usage(
                "workers, max in flight and max concurrency must be at least 1".into(),
            ));
        }
        for (what, v) in [
            ("fetch_max_bytes", config.fetch.max_bytes),
            (
                "max_partition_fetch_bytes",
                config.fetch.partition_max_bytes,
            ),
            ("fetch_min_bytes", config.fetch.min_bytes),
        ] {
            if v < 1 {
                return Err(Error::Usage(format!(
                    "{what} must be at least 1 byte, not {v}"
                )));
            }
        }
        config.membership.group = config.group.clone();
        config.membership.topics = config.topics.clone();
        let (stop, stop_requests) = watch::channel(0);
        Ok(Consumer {
            config,
            on_failure,
            stop: ShutdownHandle(stop),
            stop_requests,
        })
    }
}

/// A key-ordered, parallel consumer: what [`ConsumerBuilder::build`] made.
///
/// One key's messages are handled one at a time, in offset order; different
/// keys at once. Delivery is at least once: a partition's committed offset
/// never passes a message that has not finished, so after a crash only
/// messages that had not been committed are handled again.
#[derive(Debug)]
pub struct Consumer {
    config: ConsumerConfig,
    on_failure: OnFailure,
    stop: ShutdownHandle,
    stop_requests: super::ShutdownSignal,
}

impl Consumer {
    /// A builder with the command line's defaults.
    pub fn builder() -> ConsumerBuilder {
        ConsumerBuilder {
            settings: Settings::default(),
        }
    }

    /// A handle that stops this consumer's run, gracefully or not.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.stop.clone()
    }

    /// The configuration the run will use.
    pub fn config(&self) -> &ConsumerConfig {
        &self.config
    }

    /// Consumes until the end of the log (with
    /// [`exit_at_end`](ConsumerBuilder::exit_at_end)), a stop through a
    /// [`ShutdownHandle`], or a message that fails under
    /// [`OnFailure::Stop`]. Commits what finished and leaves the group
    /// before it returns. Needs a tokio runtime with the timer and I/O
    /// drivers (`#[tokio::main]`).
    ///
    /// `handler` is a sync [`Handler`] (run on
    /// [`workers`](ConsumerBuilder::workers) threads) or an
    /// [`AsyncHandler`] (each message a task, up to
    /// [`max_concurrency`](ConsumerBuilder::max_concurrency) at once);
    /// which one is inferred from its type. The guarantees are the same:
    /// one message per key at a time, in offset order; commits of the
    /// finished prefix only.
    ///
    /// The summary says why the run ended; [`ConsumeSummary::into_result`]
    /// turns a failed or aborted run into an error.
    pub async fn run<How, H: RunHandler<How>>(self, handler: H) -> Result<ConsumeSummary> {
        let policy = self.policy().await?;
        handler
            .run_pipeline(self.config, policy, self.stop_requests)
            .await
    }

    /// [`run`](Self::run) with an [`AsyncHandler`], for a handler type
    /// that is also a [`Handler`] (where `run` cannot tell which to use).
    pub async fn run_async<H: AsyncHandler>(self, handler: H) -> Result<ConsumeSummary> {
        self.run::<AsTasks, H>(handler).await
    }

    /// [`run`](Self::run) for a program without a tokio runtime: starts one,
    /// runs, and shuts it down.
    pub fn run_blocking<How, H: RunHandler<How>>(self, handler: H) -> Result<ConsumeSummary> {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::io("starting the async runtime", e))?
            .block_on(self.run(handler))
    }

    /// The pool's failure policy; a dead-letter topic is looked up now.
    async fn policy(&self) -> Result<FailurePolicy> {
        Ok(match &self.on_failure {
            OnFailure::Stop => FailurePolicy::Stop,
            OnFailure::Skip => FailurePolicy::Skip,
            OnFailure::DeadLetter(topic) => {
                let cluster = &self.config.cluster;
                let client = cluster::connect(cluster).await?;
                std::sync::Arc::new(DeadLetterQueue::open(&client, cluster, topic).await?).policy()
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> ConsumerBuilder {
        Consumer::builder()
            .bootstrap_servers("h:9092")
            .topics("t")
            .group("g")
    }

    #[test]
    fn setters_win_over_properties_whatever_the_order() {
        let c = base()
            .retries(7)
            .property("fetch.max.bytes", "1000")
            .property("group.id", "from-property")
            .fetch_max_bytes(2000)
            .build()
            .unwrap();
        assert_eq!(c.config.retries, 7);
        assert_eq!(c.config.fetch.max_bytes, 2000);
        assert_eq!(c.config.group, "g", "the setter wins");
        assert_eq!(c.config.membership.group, "g");
    }

    #[test]
    fn properties_set_what_no_setter_does() {
        let c = Consumer::builder()
            .topics("a, b")
            .property("bootstrap.servers", "h:1,h:2")
            .property("group.id", "billing")
            .property("max.partition.fetch.bytes", "4096")
            .property("session.timeout.ms", "10000")
            .property("auto.offset.reset", "latest")
            .build()
            .unwrap();
        assert_eq!(c.config.cluster.brokers, ["h:1", "h:2"]);
        assert_eq!(c.config.topics, ["a", "b"]);
        assert_eq!(c.config.group, "billing");
        assert_eq!(c.config.fetch.partition_max_bytes, 4096);
        assert_eq!(c.config.membership.session_timeout, Duration::from_secs(10));
        assert_eq!(c.config.reset, Reset::Latest);
        assert_eq!(c.config.fetch.reset, Reset::Latest);
    }

    #[test]
    fn an_unknown_property_is_a_usage_error_that_names_the_closest() {
        let e = base().property("fetch.max.byte", "1").build().unwrap_err();
        assert_eq!(e.exit_code(), crate::error::EXIT_USAGE);
        assert!(e.to_string().contains("fetch.max.bytes"), "{e}");
    }

    #[test]
    fn a_secret_property_never_reaches_an_error_or_debug() {
        let b = base()
            .property("security.protocol", "SASL_PLAINTEXT")
            .property("sasl.mechanism", "NOPE")
            .property("sasl.password", "hunter2");
        assert!(!format!("{b:?}").contains("hunter2"));
        let e = b.build().unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let c = base()
            .property("security.protocol", "SASL_PLAINTEXT")
            .property("sasl.mechanism", "PLAIN")
            .property("sasl.username", "u")
            .property("sasl.password", "hunter2")
            .build()
            .unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn the_environment_does_not_leak_into_a_library_consumer() {
        // SAFETY: set_var while other test threads may read the
        // environment; no other test reads or asserts this variable.
        unsafe { std::env::set_var("KAFKA_MAX_IN_FLIGHT", "99") };
        let c = base().property("fetch.min.bytes", "2").build().unwrap();
        assert_eq!(
            c.config.max_in_flight, 10_000,
            "the variable is the binary's"
        );
        assert_eq!(c.config.fetch.min_bytes, 2);
    }

    #[test]
    fn missing_or_bad_options_are_usage_errors() {
        let no_brokers = Consumer::builder().topics("t").group("g").build();
        let no_topic = Consumer::builder()
            .bootstrap_servers("h:1")
            .group("g")
            .build();
        let no_group = Consumer::builder()
            .bootstrap_servers("h:1")
            .topics("t")
            .build();
        let zero = base().workers(0).build();
        let bad_broker = base().bootstrap_servers("nohost").build();
        for r in [no_brokers, no_topic, no_group, zero, bad_broker] {
            let e = r.unwrap_err();
            assert_eq!(e.exit_code(), crate::error::EXIT_USAGE, "{e}");
        }
    }

    #[test]
    fn on_failure_parses_the_command_line_values() {
        assert_eq!("stop".parse::<OnFailure>().unwrap(), OnFailure::Stop);
        assert_eq!("skip".parse::<OnFailure>().unwrap(), OnFailure::Skip);
        assert_eq!(
            "dlq:dead".parse::<OnFailure>().unwrap(),
            OnFailure::DeadLetter("dead".into())
        );
        assert!("dlq:".parse::<OnFailure>().is_err());
    }

    #[test]
    fn shutdown_then_abort_count_as_two_requests() {
        let c = base().build().unwrap();
        let h = c.shutdown_handle();
        h.shutdown();
        h.shutdown();
        assert_eq!(*c.stop_requests.borrow(), 1);
        h.abort();
        assert_eq!(*c.stop_requests.borrow(), 2);
    }
}
