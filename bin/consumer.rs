//! `consumer <BROKER> <TOPIC> <PARTITION> <GROUP>`: reads a partition and prints
//! each message. See README.md for every flag and the exit codes.

use std::time::Duration;

use clap::Parser;
use mykafkams::cli;
use mykafkams::cluster::{self, ClusterConfig};
use mykafkams::error::{Error, Result};
use mykafkams::fetcher::{FetchConfig, PartitionFetcher, Reset};
use tokio::io::AsyncWriteExt;

/// Consume a Kafka partition.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Bootstrap broker(s), host:port[,host:port...].
    broker: String,
    /// Topic to read.
    topic: String,
    /// Partition to read.
    partition: i32,
    /// Consumer group.
    group: String,
    /// Where to start: earliest or latest.
    #[arg(long, default_value = "earliest")]
    from: String,
    /// Stop once caught up with the end of the partition.
    #[arg(long)]
    exit_at_end: bool,
    /// Seconds to wait for the broker before giving up.
    #[arg(long, default_value_t = 10, env = "KAFKA_CONNECT_TIMEOUT")]
    connect_timeout: u64,
}

async fn run(args: Args) -> Result<()> {
    let start = match args.from.as_str() {
        "earliest" => Reset::Earliest,
        "latest" => Reset::Latest,
        other => {
            return Err(Error::Usage(format!(
                "--from '{other}': use earliest or latest"
            )));
        }
    };
    let cfg = ClusterConfig {
        connect_timeout: Duration::from_secs(args.connect_timeout),
        ..ClusterConfig::new(cluster::parse_brokers(&args.broker)?)
    };
    let client = cluster::connect(&cfg).await?;
    cluster::check_partitions(&client, &args.topic, &[args.partition]).await?;
    let mut fetcher =
        PartitionFetcher::open(&client, &args.topic, args.partition, FetchConfig::default())
            .await?;
    let offset = fetcher.resolve(start).await?;
    fetcher.seek(offset);
    fetcher.resolve(Reset::Latest).await?;
    let mut out = tokio::io::stdout();
    loop {
        if args.exit_at_end && fetcher.caught_up() {
            return Ok(());
        }
        let batch = tokio::select! {
            b = fetcher.next_batch() => b?,
            _ = cli::stop_signal() => return Ok(()),
        };
        let mut buf = Vec::new();
        for m in batch {
            buf.extend_from_slice(m.value.as_deref().unwrap_or_default());
            buf.push(b'\n');
        }
        out.write_all(&buf)
            .await
            .map_err(|e| Error::io("writing to stdout", e))?;
        out.flush()
            .await
            .map_err(|e| Error::io("writing to stdout", e))?;
    }
}

fn main() {
    let args = Args::parse();
    cli::run(|| run(args))
}
