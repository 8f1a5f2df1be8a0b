//! The `producer` command line: `producer [BROKER] TOPIC [KEY]` publishes
//! each line of stdin (or `--input`) as one Kafka message. Its flags, how the
//! positional arguments map onto brokers, topic and key ([`builder`]), and
//! the loop that feeds the input to a [`TopicProducer`] ([`publish`]).

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use memchr::memmem::Finder;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::config::{PropertyArgs, SecurityArgs, Tool};
use crate::error::{Error, Result};
use crate::producer::{
    Acks, Compression, MAX_IN_FLIGHT_IDEMPOTENT, Producer, ProducerBuilder, TopicProducer,
};

/// Publish lines as Kafka messages, keyed so that one key's messages stay in order.
#[derive(Parser, Debug)]
#[command(
    name = "producer",
    version = super::VERSION,
    long_version = super::LONG_VERSION,
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
    /// Maximum batch size per partition, in bytes (before compression).
    #[arg(long, default_value_t = 256 * 1024)]
    batch_size: usize,
    /// Compression codec: none, gzip, snappy, lz4, zstd (all pure Rust).
    #[arg(long, default_value = "none", env = "KAFKA_COMPRESSION")]
    compression: Compression,
    /// Replicas that must have a message before it counts as written: all, 1 or 0.
    #[arg(long, default_value = "all", value_name = "all|1|0")]
    acks: Acks,
    /// Idempotent writes (producer id and sequence numbers): a retry never
    /// duplicates. On by default; needs --acks all. Left unset with --acks 1
    /// or 0 it turns itself off, as in Java's producer.
    #[arg(long, value_name = "true|false", action = clap::ArgAction::Set)]
    idempotence: Option<bool>,
    /// Produce requests in flight per broker connection (at most 5 when idempotent;
    /// 1 without idempotence, which keeps order).
    #[arg(long, default_value_t = MAX_IN_FLIGHT_IDEMPOTENT, value_name = "N")]
    max_in_flight_requests: usize,
    /// Bytes of messages buffered before reading the input pauses.
    #[arg(long, default_value_t = 8 * 1024 * 1024, value_name = "BYTES")]
    buffer_memory: usize,
    /// How long the broker may take to answer one produce request, in milliseconds.
    #[arg(long, default_value_t = 30_000, value_name = "MS")]
    request_timeout_ms: u64,
    /// How long a message may take to be acknowledged, retries included, in milliseconds.
    #[arg(long, default_value_t = 120_000, value_name = "MS")]
    delivery_timeout_ms: u64,
    /// Write one line per input line to FILE, fields separated by tabs: LINE,
    /// PARTITION, OFFSET when written; LINE, "error", MESSAGE when not (in
    /// completion order).
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
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
    /// Serve Prometheus metrics on HOST:PORT (GET /metrics); port 0 picks one.
    #[arg(long, value_name = "HOST:PORT", env = "KAFKA_METRICS_ADDR")]
    metrics_addr: Option<String>,
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

/// Sets on `b` every option of `args` that `given` names (by clap id: the
/// field name), except the positional target. The binary gives every
/// option; a library producer only what its properties set.
fn configure(
    args: &ProducerArgs,
    mut b: ProducerBuilder,
    given: &dyn Fn(&str) -> bool,
    warn: &dyn Fn(&str),
) -> Result<ProducerBuilder> {
    let ms = Duration::from_millis;
    if let (true, Some(v)) = (given("brokers"), &args.brokers) {
        b = b.bootstrap_servers(v.clone());
    }
    if let (true, Some(v)) = (given("client_id"), &args.client_id) {
        b = b.client_id(v.clone());
    }
    if let (true, Some(v)) = (given("partition"), args.partition) {
        b = b.partition(v);
    }
    if let (true, Some(v)) = (given("idempotence"), args.idempotence) {
        b = b.idempotence(v);
    }
    if let (true, Some(v)) = (given("report"), &args.report) {
        b = b.report(v.clone());
    }
    if given("linger_ms") {
        b = b.linger(ms(args.linger_ms));
    }
    if given("batch_size") {
        b = b.batch_size(args.batch_size);
    }
    if given("compression") {
        b = b.compression(args.compression);
    }
    if given("acks") {
        b = b.acks(args.acks);
    }
    if given("max_in_flight_requests") {
        b = b.max_in_flight_requests(args.max_in_flight_requests);
    }
    if given("buffer_memory") {
        b = b.buffer_memory(args.buffer_memory);
    }
    if given("request_timeout_ms") {
        b = b.request_timeout(ms(args.request_timeout_ms));
    }
    if given("delivery_timeout_ms") {
        b = b.delivery_timeout(ms(args.delivery_timeout_ms));
    }
    if given("connect_timeout") {
        b = b.connect_timeout(Duration::from_secs(args.connect_timeout));
    }
    if given("headers") {
        for (k, v) in &args.headers {
            b = b.header(k.clone(), v.clone());
        }
    }
    if super::consumer::SECURITY_IDS.iter().any(|id| given(id)) {
        let (security, warnings) = args.security.resolve()?;
        for w in warnings {
            warn(&w);
        }
        b = b.security(security);
    }
    Ok(b)
}

/// A builder carrying what Kafka `properties` set, read exactly as `-X` on
/// the command line but without the environment.
pub(crate) fn property_settings(properties: &[(String, String)]) -> Result<ProducerBuilder> {
    // The positional TOPIC is required by the command line, not here.
    let (args, matches) =
        super::parse_properties::<ProducerArgs>(properties, Tool::Producer, &["-"])?;
    configure(
        &args,
        Producer::builder(),
        &|id| super::set_by(&matches, id),
        &|w| tracing::warn!("{w}"),
    )
}

/// The producer the command line describes, and the topic and default key
/// it writes lines to.
pub fn builder(args: &ProducerArgs) -> Result<(ProducerBuilder, String, Option<String>)> {
    let target = resolve_positionals(args)?;
    let b = configure(args, Producer::builder(), &|_| true, &|w| {
        eprintln!("warning: {w}")
    })?
    .bootstrap_servers(target.brokers);
    Ok((b, target.topic, target.key))
}

/// The opened input and the metrics endpoint, made before anything
/// touches the network: a typo in a path or a port in use should not wait
/// for a broker.
pub struct Input(
    Box<dyn AsyncRead + Unpin + Send>,
    crate::metrics::ProducerMetrics,
    Option<super::MetricsServer>,
);

/// Opens the input (`--input` or stdin) and starts `--metrics-addr`.
pub async fn open_input(args: &ProducerArgs) -> Result<Input> {
    let input: Box<dyn AsyncRead + Unpin + Send> = match &args.input {
        Some(path) => Box::new(
            tokio::fs::File::open(path)
                .await
                .map_err(|e| Error::Usage(format!("cannot open input {}: {e}", path.display())))?,
        ),
        None => Box::new(tokio::io::stdin()),
    };
    let metrics = crate::metrics::ProducerMetrics::new();
    let endpoint = super::metrics_endpoint("producer", args.metrics_addr.as_deref(), || {
        metrics.registry()
    })
    .await?;
    Ok(Input(input, metrics, endpoint))
}

/// Publishes the input the command line names to `topic` with `producer`,
/// until its end, a signal, or a failure; prints the summary line.
pub async fn publish(
    args: &ProducerArgs,
    producer: Producer,
    topic: &str,
    key: Option<&str>,
    input: Input,
    mut signals: super::Signals,
) -> Result<()> {
    let Input(input, metrics, _endpoint) = input;
    if args.create_topic
        && producer
            .create_topic(topic, args.partitions, args.replication_factor)
            .await?
    {
        tracing::info!(
            "created topic '{topic}' with {} partition(s)",
            args.partitions
        );
    }
    let producer = producer.topic(topic).await?;
    metrics.attach(producer.counters());

    let outcome = feed(
        &producer,
        input,
        key,
        args.key_separator.as_deref(),
        signals.recv(),
    )
    .await;
    let summary = producer.close().await;
    let retried = match summary.retried_batches {
        0 => String::new(),
        n => format!(", {n} batch(es) sent again after errors"),
    };
    eprintln!(
        "producer: {} sent, {} acknowledged, {} failed to topic '{topic}' in {:.2} s ({:.0} msg/s){retried}",
        summary.sent,
        summary.acknowledged,
        summary.failed,
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

/// Input is read in blocks of this size (a longer line grows the buffer).
const READ_BLOCK: usize = 1024 * 1024;

/// Reads the input in large blocks, splits it into lines and hands them to
/// the producer, with a progress line every 5 s. When `stop` resolves (a
/// signal), reading ends, but every byte already read (including a partial
/// last line) is still sent: nothing taken from the input is dropped.
async fn feed(
    producer: &TopicProducer,
    mut input: Box<dyn AsyncRead + Unpin + Send>,
    default_key: Option<&str>,
    separator: Option<&str>,
    stop: impl std::future::Future<Output = ()>,
) -> Result<()> {
    // Built once: a searcher per line cost a 256-byte table copy each.
    let finder = separator
        .filter(|s| !s.is_empty())
        .map(|s| Finder::new(s.as_bytes()));
    let separator = finder.as_ref();
    let mut buf = vec![0u8; READ_BLOCK];
    let mut end = 0;
    let mut line_no = 0u64;
    let mut last_progress = tokio::time::Instant::now();
    tokio::pin!(stop);
    loop {
        // Send the complete lines in buf[..end], keep the partial one. They
        // were read together: one clock reading stamps them all.
        let now = crate::producer::now_ms();
        let mut start = 0;
        while let Some(nl) = memchr::memchr(b'\n', &buf[start..end]) {
            line_no += 1;
            let line = &buf[start..start + nl + 1];
            let (key, value) = line_parts(line, line_no, default_key, separator)?;
            // Await (and so build a future) only when the buffer is full.
            if !producer.try_send_at(key, value, now)? {
                producer.send_at(key, value, now).await?;
            }
            start += nl + 1;
        }
        buf.copy_within(start..end, 0);
        end -= start;
        if end == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        let n = tokio::select! {
            biased;
            _ = &mut stop => {
                eprintln!("producer: signal received: sending what was read, then exiting");
                if end > 0 {
                    let now = crate::producer::now_ms();
                    send_line(producer, &buf[..end], line_no + 1, now, default_key, separator).await?;
                }
                return Ok(());
            }
            n = input.read(&mut buf[end..]) => n.map_err(|e| {
                Error::io(format!("reading input (line {} and later were not sent)", line_no + 1), e)
            })?,
        };
        if n == 0 {
            if end > 0 {
                send_line(
                    producer,
                    &buf[..end],
                    line_no + 1,
                    crate::producer::now_ms(),
                    default_key,
                    separator,
                )
                .await?;
            }
            return Ok(());
        }
        end += n;
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
    producer: &TopicProducer,
    line: &[u8],
    line_no: u64,
    timestamp_ms: i64,
    default_key: Option<&str>,
    separator: Option<&Finder<'_>>,
) -> Result<()> {
    let (key, value) = line_parts(line, line_no, default_key, separator)?;
    producer.send_at(key, value, timestamp_ms).await
}

/// The key and value of input line `line_no` (its newline, and a CR before
/// it, removed), or the usage error of a line without key.
fn line_parts<'a>(
    mut line: &'a [u8],
    line_no: u64,
    default_key: Option<&'a str>,
    separator: Option<&Finder<'_>>,
) -> Result<(Option<&'a [u8]>, &'a [u8])> {
    if let Some(l) = line.strip_suffix(b"\n") {
        line = l.strip_suffix(b"\r").unwrap_or(l);
    }
    split_line(line, default_key, separator).ok_or_else(|| {
        Error::Usage(format!(
            "line {line_no} has no key separator and no default KEY was given"
        ))
    })
}

/// Splits a line into key and value per --key-separator (first occurrence).
fn split_line<'a>(
    line: &'a [u8],
    default_key: Option<&'a str>,
    sep: Option<&Finder<'_>>,
) -> Option<(Option<&'a [u8]>, &'a [u8])> {
    if let Some(sep) = sep
        && let Some(i) = sep.find(line)
    {
        return Some((Some(&line[..i]), &line[i + sep.needle().len()..]));
    }
    default_key.map(|k| (Some(k.as_bytes()), line))
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
        let bar = Finder::new("|");
        let bar = Some(&bar);
        assert_eq!(
            split_line(b"acct-1|a|b", None, bar),
            Some((Some(&b"acct-1"[..]), &b"a|b"[..]))
        );
        assert_eq!(
            split_line(b"plain", Some("k"), bar),
            Some((Some(&b"k"[..]), &b"plain"[..]))
        );
        assert_eq!(split_line(b"plain", None, bar), None);
        let arrow = Finder::new("=>");
        assert_eq!(
            split_line(b"k=>v=>w", None, Some(&arrow)),
            Some((Some(&b"k"[..]), &b"v=>w"[..]))
        );
        assert_eq!(
            split_line(b"x|y", Some("k"), None),
            Some((Some(&b"k"[..]), &b"x|y"[..]))
        );
    }
}
