//! The `consumer` command line: its flags, and how they and the positional
//! arguments of the original tool become a [`Consumer`] builder (a manual
//! assignment or a group subscription). The binary calls [`builder`],
//! [`handler`] and [`metrics`], then runs the consumer.

use std::time::Duration;

use clap::Parser;

use crate::config::{CommandLine, PropertyArgs, SecurityArgs, Tool};
use crate::consumer::{Consumer, ConsumerBuilder, Partitions, StartAt};
use crate::error::{Error, Result};
use crate::fetcher::{self as fetch, Reset};
use crate::group::GroupProtocol;
use crate::group::assignor::Assignor;
use crate::handlers::{ExecHandler, Format, PipeConfig, PipeHandler, PrintHandler};
use crate::metrics::{ConsumerMetrics, MetricsServer};
use crate::pool::{Ordering, Scheduler};

/// A preference list of assignors (an alias, so clap takes it as one value).
type Assignors = Vec<Assignor>;

/// Consume Kafka topics in order per key and in parallel across keys.
#[derive(Parser, Debug)]
#[command(
    name = "consumer",
    version = super::VERSION,
    long_version = super::LONG_VERSION,
    override_usage = "consumer [OPTIONS] <BROKER> <TOPIC> <GROUP> [-- CMD ARGS...]              (join GROUP)\n       \
                      consumer [OPTIONS] <BROKER> <TOPIC> <PARTITION> <GROUP> [-- CMD ARGS...]  (read PARTITION)\n       \
                      consumer [OPTIONS] --bootstrap-server <LIST> --topic <TOPIC> --group <GROUP> [--partitions <LIST|all>]"
)]
pub struct ConsumerArgs {
    /// BROKER TOPIC [PARTITION] GROUP as in the original tool. Without a
    /// PARTITION (and without --partitions) the consumer joins GROUP and reads
    /// what the group assigns. BROKER, TOPIC and GROUP may be given as flags.
    #[arg(value_name = "ARGS", num_args = 0..=4)]
    positional: Vec<String>,
    /// Bootstrap brokers, comma separated (host:port,...).
    #[arg(long, visible_alias = "bootstrap-server", env = "KAFKA_BROKERS")]
    brokers: Option<String>,
    /// Topic to read; several, comma separated, make one subscription.
    #[arg(long)]
    topic: Option<String>,
    /// Consumer group.
    #[arg(long)]
    group: Option<String>,
    /// Partitions to read (manual assignment): a list (0,2,5) or `all`.
    /// (No environment variable: one left exported would silently turn a
    /// group member into a reader of every partition.)
    #[arg(long)]
    partitions: Option<String>,
    /// Group protocol: consumer (KIP-848), classic, or auto.
    #[arg(long, default_value = "auto", env = "KAFKA_GROUP_PROTOCOL", value_parser = GroupProtocol::parse)]
    group_protocol: GroupProtocol,
    /// Classic assignors in order of preference: cooperative-sticky, range, roundrobin.
    #[arg(long, default_value = "cooperative-sticky,range", env = "KAFKA_ASSIGNOR", value_parser = Assignor::parse_list)]
    assignor: Assignors,
    /// KIP-848 server-side assignor: uniform or range (default: the broker's).
    #[arg(long, value_parser = ["uniform", "range"])]
    group_remote_assignor: Option<String>,
    /// Static membership id (KIP-345): a restart within the session timeout keeps the partitions.
    #[arg(long, env = "KAFKA_GROUP_INSTANCE_ID")]
    group_instance_id: Option<String>,
    /// Classic session timeout (KIP-848: configured on the broker).
    #[arg(long, default_value = "45s", value_parser = parse_duration)]
    session_timeout: Duration,
    /// Classic heartbeat interval (KIP-848: the broker says).
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    heartbeat_interval: Duration,
    /// Rebalance timeout: how long a revocation may wait for running handlers.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    max_poll_interval: Duration,
    /// How often a classic member looks for partitions added to its topics.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    metadata_max_age: Duration,
    /// Client id shown by kafka-consumer-groups (default mykafkams-consumer-PID).
    #[arg(long, env = "KAFKA_CLIENT_ID")]
    client_id: Option<String>,
    /// Start position: committed, earliest, latest, or an offset (manual assignment).
    #[arg(long, default_value = "committed", env = "KAFKA_FROM", value_parser = parse_start)]
    from: StartAt,
    /// Where to start without a committed offset (or when it is out of range): earliest or latest.
    #[arg(long, default_value = "earliest", env = "KAFKA_RESET", value_parser = parse_reset)]
    reset: Reset,
    /// Worker threads. Default: CPUs x 4 (--handler pipe uses none: its
    /// messages in flight, --pipe-processes x --pipe-inflight, are tasks).
    #[arg(long, env = "KAFKA_WORKERS")]
    workers: Option<usize>,
    /// How messages reach the workers: lanes (a key always on the same
    /// thread) or keys (a queue per key, any free thread runs the next ready key).
    #[arg(long, default_value = "keys", env = "KAFKA_SCHEDULER")]
    scheduler: Scheduler,
    /// Order kept: key (per key), partition (per partition), unordered.
    #[arg(long, default_value = "key", env = "KAFKA_ORDERING", value_parser = parse_ordering)]
    ordering: Ordering,
    /// Most messages fetched but not finished (bounds memory).
    #[arg(long, default_value_t = 10_000, env = "KAFKA_MAX_IN_FLIGHT")]
    max_in_flight: usize,
    /// Retries of a failing message (backoff doubles from --retry-backoff).
    #[arg(long, default_value_t = 3, env = "KAFKA_RETRIES")]
    retries: u32,
    /// First retry backoff, e.g. 200ms or 1s.
    #[arg(long, default_value = "200ms", value_parser = parse_duration)]
    retry_backoff: Duration,
    /// After the last retry: stop (commit up to it, exit 6), skip, or dlq:TOPIC.
    #[arg(long, default_value = "stop", env = "KAFKA_ON_FAILURE")]
    on_failure: String,
    /// Stop once every (assigned) partition is caught up and its messages are handled.
    #[arg(long)]
    exit_at_end: bool,
    /// How often finished offsets are committed, e.g. 1s.
    #[arg(long, default_value = "1s", env = "KAFKA_COMMIT_INTERVAL", value_parser = parse_duration)]
    commit_interval: Duration,
    /// Bound what a crash repeats: commit each N/2 finished, and start no
    /// more work while N finished or started are uncommitted (at most about
    /// N per commit round trip; 0: only every --commit-interval, no bound).
    #[arg(long, default_value_t = crate::consumer::DEFAULT_COMMIT_EVERY, env = "KAFKA_COMMIT_EVERY")]
    commit_every: u64,
    /// Longest offset map (finished offsets above the committed one, in the
    /// commit's metadata): default the broker's offset.metadata.max.bytes;
    /// 0 commits no maps.
    #[arg(long, env = "KAFKA_OFFSET_MAP_MAX_BYTES")]
    offset_map_max_bytes: Option<usize>,
    /// How often a progress line goes to stderr (0 turns it off).
    #[arg(long, default_value = "5s", env = "KAFKA_STATS_INTERVAL", value_parser = parse_duration)]
    stats_interval: Duration,
    /// Longest a graceful stop waits for in-flight messages.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    drain_timeout: Duration,
    /// What to do with each message: print; exec (runs the command after
    /// `--` per message: exit 0 is done, 75 is retried, any other status
    /// fails without retries); pipe (long-lived processes of the command
    /// after `--`, one JSON line per message each way: see the README).
    #[arg(long, default_value = "print", value_parser = ["print", "exec", "pipe"])]
    handler: String,
    /// --handler pipe: processes to keep running.
    #[arg(long, default_value_t = 1, env = "KAFKA_PIPE_PROCESSES")]
    pipe_processes: usize,
    /// --handler pipe: messages outstanding per process at most (always of
    /// distinct keys).
    #[arg(long, default_value_t = 16, env = "KAFKA_PIPE_INFLIGHT")]
    pipe_inflight: usize,
    /// A message not handled this long fails (retried, then --on-failure).
    /// exec: the command and its process group are killed; pipe: the
    /// process is replaced.
    #[arg(long, default_value = "30s", env = "KAFKA_HANDLER_TIMEOUT", value_parser = parse_duration)]
    handler_timeout: Duration,
    /// Output of --handler print: value, text (partition, offset, key, value), json.
    #[arg(long, default_value = "value", env = "KAFKA_FORMAT")]
    format: Format,
    /// Longest a fetch waits on the broker for new data.
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    fetch_max_wait: Duration,
    /// Most bytes one Fetch response holds over all its partitions (fetch.max.bytes).
    #[arg(long, default_value_t = i64::from(fetch::DEFAULT_FETCH_MAX_BYTES))]
    fetch_max_bytes: i64,
    /// Most bytes of one partition in one Fetch response (max.partition.fetch.bytes).
    #[arg(long, default_value_t = i64::from(fetch::DEFAULT_PARTITION_FETCH_MAX_BYTES))]
    max_partition_fetch_bytes: i64,
    /// Least bytes the broker gathers before answering a fetch early (fetch.min.bytes).
    #[arg(long, default_value_t = 1)]
    fetch_min_bytes: i64,
    /// Most fetched record bytes held in memory over all partitions (waiting
    /// for the pool or referenced by messages in flight).
    #[arg(long, default_value_t = fetch::DEFAULT_FETCH_BUFFER_BYTES as i64)]
    fetch_buffer_bytes: i64,
    /// Seconds to wait for the broker before giving up.
    #[arg(long, default_value_t = 10, env = "KAFKA_CONNECT_TIMEOUT")]
    connect_timeout: u64,
    /// Serve Prometheus metrics on HOST:PORT (GET /metrics); port 0 picks one.
    #[arg(long, value_name = "HOST:PORT", env = "KAFKA_METRICS_ADDR")]
    metrics_addr: Option<String>,
    #[command(flatten)]
    security: SecurityArgs,
    #[command(flatten)]
    properties: PropertyArgs,
    /// The command for --handler exec or pipe.
    #[arg(last = true, value_name = "CMD")]
    command: Vec<String>,
}

fn parse_start(s: &str) -> std::result::Result<StartAt, String> {
    match s {
        "committed" => Ok(StartAt::Committed),
        "earliest" => Ok(StartAt::Earliest),
        "latest" => Ok(StartAt::Latest),
        n => n
            .parse::<i64>()
            .ok()
            .filter(|o| *o >= 0)
            .map(StartAt::Offset)
            .ok_or_else(|| format!("'{n}' is not committed, earliest, latest or an offset >= 0")),
    }
}

fn parse_reset(s: &str) -> std::result::Result<Reset, String> {
    match s {
        "earliest" => Ok(Reset::Earliest),
        "latest" => Ok(Reset::Latest),
        other => Err(format!("'{other}' is not earliest or latest")),
    }
}

fn parse_ordering(s: &str) -> std::result::Result<Ordering, String> {
    match s {
        "key" => Ok(Ordering::Key),
        "partition" => Ok(Ordering::Partition),
        "unordered" => Ok(Ordering::Unordered),
        other => Err(format!("'{other}' is not key, partition or unordered")),
    }
}

/// `500ms`, `2s`, `1.5s`, `1m`, or a plain number of seconds.
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let bad = || format!("'{s}' is not a duration (e.g. 500ms, 2s, 1m)");
    let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: f64 = num.trim().parse().map_err(|_| bad())?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(bad()),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_partitions(s: &str) -> Result<Partitions> {
    if s == "all" {
        return Ok(Partitions::All);
    }
    let list: std::result::Result<Vec<i32>, _> =
        s.split(',').map(|p| p.trim().parse::<i32>()).collect();
    match list {
        Ok(l) if !l.is_empty() && l.iter().all(|p| *p >= 0) => Ok(Partitions::List(l)),
        _ => Err(Error::Usage(format!(
            "partitions '{s}': give a partition number, a list like 0,2,5, or all"
        ))),
    }
}

/// What the command line names: brokers, topics, partitions (or the group's), group.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    brokers: String,
    topic: String,
    partitions: Partitions,
    group: String,
}

/// Maps the positionals onto BROKER TOPIC [PARTITION] GROUP, leaving out
/// the slots the user filled with a flag (`typed`). One positional more than
/// the open slots is the PARTITION (manual assignment); --partitions wins
/// over it. Without either, the consumer joins the group.
///
/// A BROKER or GROUP that came from `-X`, a config file or the environment
/// (`bootstrap.servers`, `group.id`, KAFKA_BROKERS) is a fallback: the
/// positionals may give it or leave it out. The reading that fits is chosen
/// by shape (a broker list has a `:`, a topic name never does, a partition
/// is a number or list), trying "positionals give every open slot" first.
fn resolve_target(args: &ConsumerArgs, typed: &dyn Fn(&str) -> bool) -> Result<Target> {
    let usage = || {
        Error::Usage(
            "wrong number of arguments; usage: consumer <BROKER> <TOPIC> [<PARTITION>] <GROUP> (BROKER, TOPIC and GROUP may be given as --brokers, --topic, --group, or bootstrap.servers and group.id in --config/-X)"
                .into(),
        )
    };
    let open_brokers = !(typed("brokers") || typed("bootstrap-server"));
    let open_topic = !typed("topic");
    let open_group = !typed("group");
    let p = &args.positional;
    // The first reading with the right count, in case none fits by shape:
    // taking it lets the later checks say what is wrong (a broker without
    // a port, say) instead of "wrong number of arguments".
    let mut counted: Option<Target> = None;
    // Which fallback slots the positionals leave out: none first.
    let drops: [(bool, bool); 4] = [(false, false), (true, false), (false, true), (true, true)];
    for (drop_brokers, drop_group) in drops {
        if (drop_brokers && !(open_brokers && args.brokers.is_some()))
            || (drop_group && !(open_group && args.group.is_some()))
        {
            continue;
        }
        let from_positional = [
            open_brokers && !drop_brokers,
            open_topic,
            open_group && !drop_group,
        ];
        let slots = from_positional.iter().filter(|b| **b).count();
        let with_partition = match p.len() {
            n if n == slots => false,
            n if n == slots + 1 => true,
            _ => continue,
        };
        let mut it = p.iter().cloned();
        let take = |it: &mut dyn Iterator<Item = String>, given: bool, flag: &Option<String>| {
            if given { it.next() } else { flag.clone() }
        };
        let brokers = take(&mut it, from_positional[0], &args.brokers);
        let topic = take(&mut it, from_positional[1], &args.topic);
        let partition = if with_partition { it.next() } else { None };
        let group = take(&mut it, from_positional[2], &args.group);
        let (Some(brokers), Some(topic), Some(group)) = (brokers, topic, group) else {
            continue;
        };
        // A numeric GROUP while group.id is configured reads better as a
        // partition: `consumer --config f orders 0` means partition 0.
        let group_fallback = open_group && args.group.is_some();
        let broker_misfit = from_positional[0] && !brokers.contains(':');
        let topic_misfit = from_positional[1] && topic.contains(':');
        let group_misfit = from_positional[2] && group_fallback && group.parse::<i32>().is_ok();
        let fits = !broker_misfit
            && !topic_misfit
            && !group_misfit
            && partition
                .as_deref()
                .is_none_or(|s| parse_partitions(s).is_ok());
        let partitions = match (&args.partitions, &partition) {
            (Some(flag), _) => parse_partitions(flag)?,
            (None, Some(pos)) if fits => parse_partitions(pos)?,
            (None, Some(pos)) => parse_partitions(pos).unwrap_or(Partitions::Group),
            (None, None) => Partitions::Group,
        };
        let target = Target {
            brokers,
            topic,
            partitions,
            group,
        };
        if fits {
            return Ok(target);
        }
        counted.get_or_insert(target);
    }
    counted.ok_or_else(usage)
}

/// Sets on `b` every option of `args` that `given` names (by clap id:
/// the field name), except the positional target, which the binary
/// resolves. The binary gives every option (its defaults included); a
/// library consumer gives only what its properties set.
fn configure(
    args: &ConsumerArgs,
    mut b: ConsumerBuilder,
    given: &dyn Fn(&str) -> bool,
    warn: &dyn Fn(&str),
) -> Result<ConsumerBuilder> {
    macro_rules! copy {
        ($($field:ident => $setter:ident),* $(,)?) => {
            $( if given(stringify!($field)) { b = b.$setter(args.$field.clone()); } )*
        };
    }
    macro_rules! copy_some {
        ($($field:ident => $setter:ident),* $(,)?) => {
            $( if let (true, Some(v)) = (given(stringify!($field)), &args.$field) {
                b = b.$setter(v.clone());
            } )*
        };
    }
    copy_some! {
        brokers => bootstrap_servers, topic => topics, group => group,
        group_remote_assignor => group_remote_assignor,
        group_instance_id => group_instance_id, client_id => client_id,
        workers => workers, offset_map_max_bytes => offset_map_max_bytes,
    }
    copy! {
        group_protocol => group_protocol, assignor => assignors,
        session_timeout => session_timeout, heartbeat_interval => heartbeat_interval,
        max_poll_interval => max_poll_interval, metadata_max_age => metadata_max_age,
        from => start_at, reset => reset, scheduler => scheduler, ordering => ordering,
        max_in_flight => max_in_flight, retries => retries, retry_backoff => retry_backoff,
        exit_at_end => exit_at_end, commit_interval => commit_interval,
        commit_every => commit_every,
        stats_interval => stats_interval, drain_timeout => drain_timeout,
        fetch_max_wait => fetch_max_wait,
    }
    if given("partitions")
        && let Some(p) = &args.partitions
    {
        b = b.partitions(parse_partitions(p)?);
    }
    if given("on_failure") {
        b = b.on_failure(args.on_failure.parse()?);
    }
    if given("connect_timeout") {
        b = b.connect_timeout(Duration::from_secs(args.connect_timeout));
    }
    if given("fetch_max_bytes") {
        b = b.fetch_max_bytes(fetch_bytes("--fetch-max-bytes", args.fetch_max_bytes)?);
    }
    if given("max_partition_fetch_bytes") {
        b = b.max_partition_fetch_bytes(fetch_bytes(
            "--max-partition-fetch-bytes",
            args.max_partition_fetch_bytes,
        )?);
    }
    if given("fetch_min_bytes") {
        b = b.fetch_min_bytes(fetch_bytes("--fetch-min-bytes", args.fetch_min_bytes)?);
    }
    if given("fetch_buffer_bytes") {
        b = b.fetch_buffer_bytes(
            fetch_bytes("--fetch-buffer-bytes", args.fetch_buffer_bytes)? as usize,
        );
    }
    if SECURITY_IDS.iter().any(|id| given(id)) {
        let (security, warnings) = args.security.resolve()?;
        for w in warnings {
            warn(&w);
        }
        b = b.security(security);
    }
    Ok(b)
}

/// The clap ids of the security flags (one given means: build the settings).
pub(crate) const SECURITY_IDS: &[&str] = &[
    "security_protocol",
    "sasl_mechanism",
    "sasl_username",
    "sasl_password",
    "sasl_jaas_config",
    "sasl_oauthbearer_token",
    "ssl_ca_location",
    "ssl_certificate_location",
    "ssl_key_location",
    "ssl_key_password",
    "ssl_endpoint_identification_algorithm",
];

/// A builder carrying what Kafka `properties` set, read exactly as `-X` on
/// the command line (same names, checks and messages) but without the
/// environment: a library consumer is configured by its code alone.
pub(crate) fn property_settings(properties: &[(String, String)]) -> Result<ConsumerBuilder> {
    let (args, matches) = super::parse_properties::<ConsumerArgs>(properties, Tool::Consumer, &[])?;
    configure(
        &args,
        Consumer::builder(),
        &|id| super::set_by(&matches, id),
        &|w| tracing::warn!("{w}"),
    )
}

/// The consumer the command line describes (its handler aside).
pub fn builder(args: &ConsumerArgs, command_line: &CommandLine) -> Result<ConsumerBuilder> {
    let t = resolve_target(args, &|flag| command_line.typed(flag))?;
    if args.workers == Some(0) || args.max_in_flight == 0 {
        return Err(Error::Usage(
            "--workers and --max-in-flight must be at least 1".into(),
        ));
    }
    let b = configure(args, Consumer::builder(), &|_| true, &|w| {
        eprintln!("warning: {w}")
    })?
    .bootstrap_servers(t.brokers)
    .topics(t.topic)
    .group(t.group)
    .partitions(t.partitions);
    let b = match &args.client_id {
        Some(_) => b,
        None => b.client_id(format!("mykafkams-consumer-{}", std::process::id())),
    };
    // A pipe message awaiting its answer is a task, not a thread.
    Ok(match args.handler.as_str() {
        "pipe" => b.max_concurrency(args.pipe_processes.max(1) * args.pipe_inflight.max(1)),
        _ => b,
    })
}

/// A fetch size flag's value: a positive number of bytes that fits Kafka's
/// 32-bit fields.
fn fetch_bytes(flag: &str, v: i64) -> Result<i32> {
    match i32::try_from(v) {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(Error::Usage(format!(
            "{flag} must be a number of bytes from 1 to {}, not {v}",
            i32::MAX
        ))),
    }
}

/// The handler `--handler` picks, ready to pass to [`Consumer::run`]
/// (print and exec are sync handlers, run on threads; pipe is async).
pub enum Chosen {
    /// `--handler print`.
    Print(PrintHandler<std::io::Stdout>),
    /// `--handler exec -- CMD`.
    Exec(ExecHandler),
    /// `--handler pipe -- CMD`.
    Pipe(PipeHandler),
}

/// Starts the handler the command line asks for.
pub fn handler(args: &ConsumerArgs) -> Result<Chosen> {
    Ok(match (args.handler.as_str(), args.command.is_empty()) {
        ("exec" | "pipe", true) => {
            return Err(Error::Usage(format!(
                "--handler {} needs a command after `--`, e.g. -- python3 handler.py",
                args.handler
            )));
        }
        ("exec", false) => Chosen::Exec(
            ExecHandler::new(&args.command)
                .expect("non-empty")
                .with_timeout(args.handler_timeout),
        ),
        ("pipe", false) => Chosen::Pipe(
            PipeHandler::start(PipeConfig {
                command: args.command.clone(),
                processes: args.pipe_processes,
                inflight: args.pipe_inflight,
                timeout: args.handler_timeout,
            })
            .map_err(Error::Usage)?,
        ),
        (_, false) => {
            return Err(Error::Usage(
                "a command after `--` needs --handler exec or --handler pipe".into(),
            ));
        }
        _ => Chosen::Print(PrintHandler::stdout(args.format)),
    })
}

/// `--metrics-addr`: starts the endpoint (keep it for the run) and the
/// metrics it serves, or neither.
pub async fn metrics(args: &ConsumerArgs) -> Result<Option<(MetricsServer, ConsumerMetrics)>> {
    let metrics = ConsumerMetrics::new();
    let endpoint = super::metrics_endpoint("consumer", args.metrics_addr.as_deref(), || {
        metrics.registry()
    })
    .await?;
    Ok(endpoint.map(|e| (e, metrics)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster;
    use clap::{CommandFactory, FromArgMatches};

    #[test]
    fn the_command_line_definition_is_consistent() {
        ConsumerArgs::command().debug_assert();
        let args = ConsumerArgs::try_parse_from(["consumer", "h:1", "t", "g"]).unwrap();
        assert_eq!(
            args.assignor,
            vec![Assignor::CooperativeSticky, Assignor::Range]
        );
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("3h").is_err());
    }

    #[test]
    fn partitions_parse_as_list_or_all() {
        assert_eq!(parse_partitions("all").unwrap(), Partitions::All);
        assert_eq!(
            parse_partitions("0,2, 5").unwrap(),
            Partitions::List(vec![0, 2, 5])
        );
        assert!(parse_partitions("x").is_err());
        assert!(parse_partitions("-1").is_err());
        assert!(parse_partitions("").is_err());
    }

    fn parse(v: &[&str]) -> Result<Target> {
        resolve_after(&[], v)
    }

    /// As `parse`, with BROKER and GROUP also set the way a config file does
    /// (flags placed before the user's, not typed by the user).
    fn parse_with_file(v: &[&str]) -> Result<Target> {
        resolve_after(&["--brokers=file:9092", "--group=file-group"], v)
    }

    /// Resolves the user's arguments `v` placed after `folded` (flags from
    /// -X or a file), as `parse_command_line` does.
    fn resolve_after(folded: &[&str], v: &[&str]) -> Result<Target> {
        let mut argv = vec!["consumer"];
        argv.extend_from_slice(folded);
        argv.extend_from_slice(v);
        let typed: Vec<String> = v
            .iter()
            .filter_map(|a| a.strip_prefix("--"))
            .map(str::to_string)
            .collect();
        let args = ConsumerArgs::command()
            .args_override_self(true)
            .try_get_matches_from(argv)
            .unwrap();
        let args = ConsumerArgs::from_arg_matches(&args).unwrap();
        resolve_target(&args, &|flag| typed.iter().any(|t| t == flag))
    }

    #[test]
    fn brokers_and_group_from_a_config_file_fill_the_slots_positionals_leave_out() {
        let g = Partitions::Group;
        assert_eq!(
            parse_with_file(&["t"]).unwrap(),
            target("file:9092", "t", g.clone(), "file-group")
        );
        assert_eq!(
            parse_with_file(&["t", "g"]).unwrap(),
            target("file:9092", "t", g.clone(), "g")
        );
        assert_eq!(
            parse_with_file(&["t", "0", "g"]).unwrap(),
            target("file:9092", "t", Partitions::List(vec![0]), "g")
        );
        assert_eq!(
            parse_with_file(&["h:1", "t"]).unwrap(),
            target("h:1", "t", g.clone(), "file-group")
        );
        assert_eq!(
            parse_with_file(&["h:1", "t", "g"]).unwrap(),
            target("h:1", "t", g, "g")
        );
        assert_eq!(
            parse_with_file(&["--brokers", "flag:1", "t", "g"]).unwrap(),
            target("flag:1", "t", Partitions::Group, "g")
        );
        assert_eq!(
            parse_with_file(&["t", "0"]).unwrap(),
            target("file:9092", "t", Partitions::List(vec![0]), "file-group"),
            "a number after the topic is a partition when group.id is configured"
        );
    }

    #[test]
    fn a_broker_without_a_port_is_reported_as_such() {
        let t = parse(&["kafka", "t", "g"]).unwrap();
        assert_eq!(t.brokers, "kafka", "left for parse_brokers to explain");
        assert!(
            cluster::parse_brokers(&t.brokers)
                .unwrap_err()
                .to_string()
                .contains("host:port")
        );
    }

    fn target(b: &str, t: &str, p: Partitions, g: &str) -> Target {
        Target {
            brokers: b.into(),
            topic: t.into(),
            partitions: p,
            group: g.into(),
        }
    }

    #[test]
    fn a_partition_means_manual_assignment() {
        let two = Partitions::List(vec![2]);
        assert_eq!(
            parse(&["h:1", "t", "2", "g"]).unwrap(),
            target("h:1", "t", two.clone(), "g")
        );
        assert_eq!(
            parse(&["--brokers", "h:1", "t", "2", "g"]).unwrap(),
            target("h:1", "t", two, "g")
        );
        assert_eq!(
            parse(&["--partitions", "all", "h:1", "t", "g"]).unwrap(),
            target("h:1", "t", Partitions::All, "g")
        );
        assert_eq!(
            parse(&["--brokers", "h:1", "--partitions", "0,1", "t", "g"]).unwrap(),
            target("h:1", "t", Partitions::List(vec![0, 1]), "g")
        );
    }

    #[test]
    fn without_a_partition_the_consumer_joins_the_group() {
        assert_eq!(
            parse(&["h:1", "t", "g"]).unwrap(),
            target("h:1", "t", Partitions::Group, "g")
        );
        assert_eq!(
            parse(&["--brokers", "h:1", "t1,t2", "g"]).unwrap(),
            target("h:1", "t1,t2", Partitions::Group, "g")
        );
        assert_eq!(
            parse(&["--bootstrap-server", "h:1", "--topic", "t", "--group", "g"]).unwrap(),
            target("h:1", "t", Partitions::Group, "g")
        );
        assert_eq!(
            parse(&["--topic", "t", "--group", "g", "h:1", "3"]).unwrap(),
            target("h:1", "t", Partitions::List(vec![3]), "g")
        );
    }

    #[test]
    fn too_few_or_too_many_positionals_are_usage_errors() {
        for bad in [&["t", "g"][..], &["h:1", "t"], &["--group", "g", "h:1"]] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.exit_code(), crate::error::EXIT_USAGE, "{bad:?}");
            assert!(!e.to_string().contains('\n'));
        }
        // More than four is clap's own error (exit 2 through `parse_args`).
        assert!(ConsumerArgs::try_parse_from(["consumer", "h:1", "t", "1", "g", "x"]).is_err());
    }
}
