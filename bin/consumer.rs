//! `consumer <BROKER> <TOPIC> <PARTITION> <GROUP>`: key-ordered, parallel
//! processing of a topic's messages. See README.md for every flag and the
//! exit codes; the work is done by `mykafkams::consumer`.

use std::time::Duration;

use clap::Parser;
use mykafkams::cli;
use mykafkams::cluster::{self, ClusterConfig};
use mykafkams::consumer::{self, ConsumerConfig, Partitions, StartAt};
use mykafkams::dlq::DeadLetterQueue;
use mykafkams::error::{Error, Result};
use mykafkams::fetcher::{FetchConfig, Reset};
use mykafkams::handlers::{ExecHandler, Format, PrintHandler};
use mykafkams::pool::{FailurePolicy, Ordering};

/// Consume a Kafka topic in order per key and in parallel across keys.
#[derive(Parser, Debug)]
#[command(
    version,
    override_usage = "consumer [OPTIONS] <BROKER> <TOPIC> <PARTITION> <GROUP> [-- CMD ARGS...]\n       \
                      consumer [OPTIONS] --brokers <LIST> --partitions <LIST|all> <TOPIC> <GROUP>"
)]
struct Args {
    /// BROKER TOPIC PARTITION GROUP as in the original tool. BROKER may be left
    /// out with --brokers (or KAFKA_BROKERS), PARTITION with --partitions.
    #[arg(value_name = "ARGS", num_args = 2..=4, required = true)]
    positional: Vec<String>,
    /// Bootstrap brokers, comma separated (host:port,...).
    #[arg(long, env = "KAFKA_BROKERS")]
    brokers: Option<String>,
    /// Partitions to read: a comma-separated list (0,2,5) or `all`.
    #[arg(long, env = "KAFKA_PARTITIONS")]
    partitions: Option<String>,
    /// Start position: committed, earliest, latest, or an offset.
    #[arg(long, default_value = "committed", env = "KAFKA_FROM", value_parser = parse_start)]
    from: StartAt,
    /// Where to start without a committed offset (or when it is out of range): earliest or latest.
    #[arg(long, default_value = "earliest", env = "KAFKA_RESET", value_parser = parse_reset)]
    reset: Reset,
    /// Worker lanes (threads). Default: CPUs x 4.
    #[arg(long, env = "KAFKA_WORKERS")]
    workers: Option<usize>,
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
    /// Stop once every partition is caught up and its messages are handled.
    #[arg(long)]
    exit_at_end: bool,
    /// How often finished offsets are committed, e.g. 1s.
    #[arg(long, default_value = "1s", env = "KAFKA_COMMIT_INTERVAL", value_parser = parse_duration)]
    commit_interval: Duration,
    /// How often a progress line goes to stderr (0 turns it off).
    #[arg(long, default_value = "5s", env = "KAFKA_STATS_INTERVAL", value_parser = parse_duration)]
    stats_interval: Duration,
    /// Longest a graceful stop waits for in-flight messages.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    drain_timeout: Duration,
    /// What to do with each message: print, or exec (runs the command after `--`).
    #[arg(long, default_value = "print", value_parser = ["print", "exec"])]
    handler: String,
    /// Output of --handler print: value, text (partition, offset, key, value), json.
    #[arg(long, default_value = "value", env = "KAFKA_FORMAT")]
    format: Format,
    /// Longest a fetch waits on the broker for new data.
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    fetch_max_wait: Duration,
    /// Most bytes one fetch returns per partition.
    #[arg(long, default_value_t = 1024 * 1024)]
    fetch_max_bytes: i32,
    /// Seconds to wait for the broker before giving up.
    #[arg(long, default_value_t = 10, env = "KAFKA_CONNECT_TIMEOUT")]
    connect_timeout: u64,
    /// The command for --handler exec.
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
fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
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

/// The positional arguments, resolved against --brokers and --partitions.
fn resolve_positionals(args: &Args) -> Result<(String, String, Partitions, String)> {
    let p = &args.positional;
    let usage = || {
        Error::Usage(
            "expected <BROKER> <TOPIC> <PARTITION> <GROUP>; leave out BROKER only with --brokers and PARTITION only with --partitions"
                .into(),
        )
    };
    let flag_parts = args
        .partitions
        .as_deref()
        .map(parse_partitions)
        .transpose()?;
    match (p.len(), &args.brokers, flag_parts) {
        (4, _, parts) => Ok((
            p[0].clone(),
            p[1].clone(),
            // An explicit --partitions wins over the positional one only if given.
            match parts {
                Some(parts) => parts,
                None => parse_partitions(&p[2])?,
            },
            p[3].clone(),
        )),
        (3, Some(b), None) => Ok((
            b.clone(),
            p[0].clone(),
            parse_partitions(&p[1])?,
            p[2].clone(),
        )),
        (3, _, Some(parts)) => Ok((p[0].clone(), p[1].clone(), parts, p[2].clone())),
        (2, Some(b), Some(parts)) => Ok((b.clone(), p[0].clone(), parts, p[1].clone())),
        _ => Err(usage()),
    }
}

async fn run(args: Args) -> Result<()> {
    let mut os_signals = cli::Signals::install()?;
    let (brokers, topic, partitions, group) = resolve_positionals(&args)?;
    let cluster_cfg = ClusterConfig {
        connect_timeout: Duration::from_secs(args.connect_timeout),
        ..ClusterConfig::new(cluster::parse_brokers(&brokers)?)
    };
    if args.workers == Some(0) || args.max_in_flight == 0 {
        return Err(Error::Usage(
            "--workers and --max-in-flight must be at least 1".into(),
        ));
    }
    let exec = match (args.handler.as_str(), args.command.is_empty()) {
        ("exec", true) => {
            return Err(Error::Usage(
                "--handler exec needs a command after `--`, e.g. -- sh -c 'cat'".into(),
            ));
        }
        ("exec", false) => ExecHandler::new(&args.command),
        (_, false) => {
            return Err(Error::Usage(
                "a command after `--` needs --handler exec".into(),
            ));
        }
        _ => None,
    };
    let mut cfg = ConsumerConfig::new(cluster_cfg, topic, partitions, group);
    cfg.start = args.from;
    cfg.reset = args.reset;
    if let Some(w) = args.workers {
        cfg.workers = w;
    }
    cfg.ordering = args.ordering;
    cfg.max_in_flight = args.max_in_flight;
    cfg.retries = args.retries;
    cfg.retry_backoff = args.retry_backoff;
    cfg.exit_at_end = args.exit_at_end;
    cfg.commit_interval = args.commit_interval;
    cfg.stats_interval = args.stats_interval;
    cfg.drain_timeout = args.drain_timeout;
    cfg.fetch = FetchConfig {
        max_wait: args.fetch_max_wait,
        max_bytes: args.fetch_max_bytes,
        reset: args.reset,
        ..FetchConfig::default()
    };

    let on_failure = match args.on_failure.as_str() {
        "stop" => FailurePolicy::Stop,
        "skip" => FailurePolicy::Skip,
        dlq if dlq.starts_with("dlq:") && dlq.len() > 4 => {
            let client = cluster::connect(&cfg.cluster).await?;
            std::sync::Arc::new(DeadLetterQueue::open(&client, &dlq[4..]).await?).policy()
        }
        other => {
            return Err(Error::Usage(format!(
                "--on-failure '{other}': use stop, skip or dlq:<topic>"
            )));
        }
    };

    // Each SIGINT/SIGTERM bumps the counter: 1 = drain and stop, 2 = abort.
    let (signal_tx, signals) = tokio::sync::watch::channel(0u32);
    tokio::spawn(async move {
        loop {
            os_signals.recv().await;
            signal_tx.send_modify(|n| *n += 1);
        }
    });

    let summary = match exec {
        Some(h) => consumer::run(cfg, h, on_failure, signals).await?,
        None => consumer::run(cfg, PrintHandler::stdout(args.format), on_failure, signals).await?,
    };
    eprintln!("{}", summary.line());
    summary.into_result()
}

fn main() {
    let args: Args = cli::parse_args();
    cli::run(|| run(args))
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn positionals_follow_the_flags() {
        let parse = |v: &[&str]| {
            let mut argv = vec!["consumer"];
            argv.extend_from_slice(v);
            let args = Args::try_parse_from(argv).unwrap();
            resolve_positionals(&args)
        };
        assert_eq!(
            parse(&["h:1", "t", "2", "g"]).unwrap(),
            (
                "h:1".into(),
                "t".into(),
                Partitions::List(vec![2]),
                "g".into()
            )
        );
        assert_eq!(
            parse(&["--brokers", "h:1", "t", "2", "g"]).unwrap(),
            (
                "h:1".into(),
                "t".into(),
                Partitions::List(vec![2]),
                "g".into()
            )
        );
        assert_eq!(
            parse(&["--partitions", "all", "h:1", "t", "g"]).unwrap(),
            ("h:1".into(), "t".into(), Partitions::All, "g".into())
        );
        assert_eq!(
            parse(&["--brokers", "h:1", "--partitions", "0,1", "t", "g"]).unwrap(),
            (
                "h:1".into(),
                "t".into(),
                Partitions::List(vec![0, 1]),
                "g".into()
            )
        );
        assert!(parse(&["t", "g"]).is_err());
        assert!(parse(&["h:1", "t", "g"]).is_err());
    }
}
