//! The `producer` command line: `producer [BROKER] TOPIC [KEY]` publishes
//! each line of stdin (or `--input`) as one Kafka message. Its flags, how the
//! positional arguments map onto brokers, topic and key, and the run itself.
//! The binary only calls [`main`].

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

use crate::cluster::{self, ClusterConfig};
use crate::config::{PropertyArgs, SecurityArgs};
use crate::error::{Error, Result};
use crate::producer::{Compression, Producer, ProducerConfig};

/// Publish lines as Kafka messages, keyed so that one key's messages stay in order.
#[derive(Parser, Debug)]
#[command(
    name = "producer",
    version,
    override_usage = "producer [OPTIONS] <BROKER> <TOPIC> <KEY>\n       producer [OPTIONS] --brokers <LIST> <TOPIC> [KEY]"
)]
pub struct ProducerArgs {
    /// BROKER TOPIC KEY as in the original tool; BROKER may be left out when
    /// --brokers (or KAFKA_BROKERS) is set, and KEY when --key-separator is set.
    #[arg(value_name = "ARGS", num_args = 1..=3, required = true)]
    positional: Vec<String>,
    /// Bootstrap brokers, comma separated (host:port,...).
    #[arg(long, env = "KAFKA_BROKERS")]
    brokers: Option<String>,
    /// Each line is KEY then SEP then VALUE; lines without SEP use the KEY argument.
    #[arg(long, value_name = "SEP")]
    key_separator: Option<String>,
    /// Send every message to this partition instead of choosing by key.
    #[arg(long)]
    partition: Option<i32>,
    /// How long a batch may wait for more messages, in milliseconds.
    #[arg(long, default_value_t = 5, env = "KAFKA_LINGER_MS")]
    linger_ms: u64,
    /// Maximum batch size per partition, in bytes.
    #[arg(long, default_value_t = 512 * 1024)]
    batch_size: usize,
    /// Compression codec: none, gzip, snappy (lz4, zstd with the cargo features).
    #[arg(long, default_value = "none", env = "KAFKA_COMPRESSION")]
    compression: Compression,
    /// Create the topic first if it does not exist.
    #[arg(long)]
    create_topic: bool,
    /// Partitions for --create-topic.
    #[arg(long, default_value_t = 1, requires = "create_topic")]
    partitions: i32,
    /// Replication factor for --create-topic.
    #[arg(long, default_value_t = 1, requires = "create_topic")]
    replication_factor: i16,
    /// Read lines from FILE instead of stdin.
    #[arg(long, value_name = "FILE")]
    input: Option<PathBuf>,
    /// Header added to every message (repeatable).
    #[arg(long = "header", value_name = "K=V", value_parser = super::parse_key_value)]
    headers: Vec<(String, Vec<u8>)>,
    /// Seconds to wait for the broker before giving up.
    #[arg(long, default_value_t = 10, env = "KAFKA_CONNECT_TIMEOUT")]
    connect_timeout: u64,
    /// Client id shown in broker logs and quotas (default mykafkams-producer-PID).
    #[arg(long, env = "KAFKA_CLIENT_ID")]
    client_id: Option<String>,
    #[command(flatten)]
    security: SecurityArgs,
    #[command(flatten)]
    properties: PropertyArgs,
}

/// The positional arguments, resolved against --brokers.
struct Target {
    brokers: String,
    topic: String,
    key: Option<String>,
}

fn resolve_positionals(args: &ProducerArgs) -> Result<Target> {
    let p = &args.positional;
    let (brokers, topic, key) = match (p.len(), &args.brokers) {
        (3, _) => (p[0].clone(), p[1].clone(), Some(p[2].clone())),
        // A topic name never has a ':'; a broker list always does.
        (2, Some(_)) if p[0].contains(':') => (p[0].clone(), p[1].clone(), None),
        (2, Some(b)) => (b.clone(), p[0].clone(), Some(p[1].clone())),
        (2, None) => (p[0].clone(), p[1].clone(), None),
        (1, Some(b)) => (b.clone(), p[0].clone(), None),
        _ => {
            return Err(Error::Usage(
                "expected <BROKER> <TOPIC> <KEY> (or --brokers LIST <TOPIC> [KEY])".into(),
            ));
        }
    };
    if key.is_none() && args.key_separator.is_none() {
        return Err(Error::Usage(
            "missing <KEY>: give a key, or --key-separator to read KEY<SEP>VALUE lines".into(),
        ));
    }
    Ok(Target {
        brokers,
        topic,
        key,
    })
}

/// Publishes the input the command line names, until its end, a signal, or a
/// failure; prints the summary line.
pub async fn main(args: ProducerArgs) -> Result<()> {
    let mut signals = super::Signals::install()?;
    let target = resolve_positionals(&args)?;
    let cluster_cfg = ClusterConfig {
        connect_timeout: Duration::from_secs(args.connect_timeout),
        client_id: args
            .client_id
            .clone()
            .unwrap_or_else(|| format!("mykafkams-producer-{}", std::process::id())),
        security: super::security(&args.security)?,
        ..ClusterConfig::new(cluster::parse_brokers(&target.brokers)?)
    };
    // Open the input before touching the network: a typo in a path should not
    // wait for a broker.
    let input: Box<dyn AsyncRead + Unpin + Send> = match &args.input {
        Some(path) => Box::new(
            tokio::fs::File::open(path)
                .await
                .map_err(|e| Error::Usage(format!("cannot open input {}: {e}", path.display())))?,
        ),
        None => Box::new(tokio::io::stdin()),
    };
    let client = cluster::connect(&cluster_cfg).await?;
    if args.create_topic
        && cluster::create_topic_if_missing(
            &client,
            &cluster_cfg,
            &target.topic,
            args.partitions,
            args.replication_factor,
        )
        .await?
    {
        tracing::info!(
            "created topic '{}' with {} partition(s)",
            target.topic,
            args.partitions
        );
    }
    let cfg = ProducerConfig {
        partition: args.partition,
        linger: Duration::from_millis(args.linger_ms),
        batch_bytes: args.batch_size,
        compression: args.compression,
        headers: args.headers.clone(),
        ..ProducerConfig::new(target.topic.clone())
    };
    let producer = Producer::new(&client, &cluster_cfg, cfg).await?;

    let outcome = feed(
        &producer,
        input,
        target.key.as_deref(),
        args.key_separator.as_deref(),
        signals.recv(),
    )
    .await;
    let summary = producer.close().await;
    eprintln!(
        "producer: {} sent, {} acknowledged, {} failed to topic '{}' in {:.2} s ({:.0} msg/s)",
        summary.sent,
        summary.acknowledged,
        summary.failed,
        target.topic,
        summary.elapsed.as_secs_f64(),
        summary.rate()
    );
    if let Some(denied) = summary.denied {
        return Err(Error::Security(denied));
    }
    outcome?;
    if summary.failed > 0 || summary.acknowledged < summary.sent {
        return Err(Error::FailedMessages(format!(
            "{} message(s) were not acknowledged: {}",
            summary.sent - summary.acknowledged,
            summary
                .first_error
                .unwrap_or_else(|| "unknown error".into())
        )));
    }
    Ok(())
}

/// Reads lines and hands them to the producer, with a progress line every 5 s.
/// When `stop` resolves (a signal), reading ends, but every byte already read
/// (a partial line, and what sits in the read buffer) is still sent: what was
/// read is flushed, nothing taken from the input is dropped.
async fn feed(
    producer: &Producer,
    input: Box<dyn AsyncRead + Unpin + Send>,
    default_key: Option<&str>,
    separator: Option<&str>,
    stop: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let mut reader = BufReader::with_capacity(256 * 1024, input);
    let mut line = Vec::new();
    let mut line_no = 0u64;
    let mut last_progress = tokio::time::Instant::now();
    tokio::pin!(stop);
    loop {
        // read_until keeps partially read bytes in `line` when cancelled.
        let n = tokio::select! {
            biased;
            _ = &mut stop => {
                eprintln!("producer: signal received: sending what was read, then exiting");
                let mut rest = std::mem::take(&mut line);
                rest.extend_from_slice(reader.buffer());
                for piece in rest.split_inclusive(|b| *b == b'\n') {
                    line_no += 1;
                    send_line(producer, piece, line_no, default_key, separator).await?;
                }
                return Ok(());
            }
            n = reader.read_until(b'\n', &mut line) => n.map_err(|e| Error::io("reading input", e))?,
        };
        if n == 0 {
            if !line.is_empty() {
                line_no += 1;
                send_line(producer, &line, line_no, default_key, separator).await?;
            }
            return Ok(());
        }
        line_no += 1;
        send_line(producer, &line, line_no, default_key, separator).await?;
        line.clear();
        if last_progress.elapsed() >= Duration::from_secs(5) {
            last_progress = tokio::time::Instant::now();
            eprintln!(
                "producer: {line_no} lines read, {} acknowledged",
                producer.acknowledged()
            );
        }
    }
}

/// Sends one input line (its newline, and a CR before it, removed).
async fn send_line(
    producer: &Producer,
    mut line: &[u8],
    line_no: u64,
    default_key: Option<&str>,
    separator: Option<&str>,
) -> Result<()> {
    if let Some(l) = line.strip_suffix(b"\n") {
        line = l.strip_suffix(b"\r").unwrap_or(l);
    }
    let (key, value) = split_line(line, default_key, separator).ok_or_else(|| {
        Error::Usage(format!(
            "line {line_no} has no key separator and no default KEY was given"
        ))
    })?;
    producer.send(key, value).await
}

/// Splits a line into key and value per --key-separator (first occurrence).
fn split_line(
    line: &[u8],
    default_key: Option<&str>,
    sep: Option<&str>,
) -> Option<(Option<Vec<u8>>, Vec<u8>)> {
    if let Some(sep) = sep.filter(|s| !s.is_empty()) {
        let sep = sep.as_bytes();
        if let Some(i) = line.windows(sep.len()).position(|w| w == sep) {
            return Some((Some(line[..i].to_vec()), line[i + sep.len()..].to_vec()));
        }
    }
    default_key.map(|k| (Some(k.as_bytes().to_vec()), line.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory;
        ProducerArgs::command().debug_assert();
        let args = ProducerArgs::try_parse_from(["producer", "h:1", "t", "k"]).unwrap();
        let target = resolve_positionals(&args).unwrap();
        assert_eq!(
            (target.brokers.as_str(), target.topic.as_str()),
            ("h:1", "t")
        );
        assert_eq!(target.key.as_deref(), Some("k"));
    }

    #[test]
    fn lines_split_on_the_first_separator_or_use_the_default_key() {
        assert_eq!(
            split_line(b"acct-1|a|b", None, Some("|")),
            Some((Some(b"acct-1".to_vec()), b"a|b".to_vec()))
        );
        assert_eq!(
            split_line(b"plain", Some("k"), Some("|")),
            Some((Some(b"k".to_vec()), b"plain".to_vec()))
        );
        assert_eq!(split_line(b"plain", None, Some("|")), None);
        assert_eq!(
            split_line(b"x|y", Some("k"), None),
            Some((Some(b"k".to_vec()), b"x|y".to_vec()))
        );
    }
}
