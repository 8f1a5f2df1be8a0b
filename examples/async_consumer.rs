//! A group member with an async handler that stops gracefully on Ctrl-C.
//!
//! ```sh
//! cargo run --example async_consumer -- 127.0.0.1:9092 orders billing --concurrency 1000
//! ```
//!
//! Each message "calls a service" (waits `--work-ms` on the tokio timer),
//! then prints `partition offset value`. Up to `--concurrency` messages are
//! in flight, never two of one key, each key in offset order. The first
//! Ctrl-C (or SIGTERM) finishes what was fetched, commits and leaves the
//! group; a second one stops at once (what did not finish is redelivered).

use std::io::Write;
use std::time::Duration;

use clap::Parser;
use mykafkams::Message;
use mykafkams::cluster::{ClusterConfig, parse_brokers};
use mykafkams::consumer::{self, ConsumerConfig, Partitions};
use mykafkams::pool::{FailurePolicy, HandlerError};

#[derive(Parser)]
struct Args {
    /// Bootstrap brokers, comma separated.
    brokers: String,
    /// The topic to read.
    topic: String,
    /// The consumer group.
    group: String,
    /// Messages in flight at once, across keys.
    #[arg(long, default_value_t = 1000)]
    concurrency: usize,
    /// Simulated I/O per message, in milliseconds.
    #[arg(long, default_value_t = 1)]
    work_ms: u64,
    /// Read every partition directly (committing as the group) instead of joining it.
    #[arg(long)]
    all_partitions: bool,
    /// Stop once every partition is caught up.
    #[arg(long)]
    exit_at_end: bool,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let cluster = ClusterConfig::new(parse_brokers(&args.brokers)?);
    let partitions = if args.all_partitions {
        Partitions::All
    } else {
        Partitions::Group
    };
    let mut config = ConsumerConfig::new(cluster, args.topic, partitions, args.group);
    config.max_concurrency = args.concurrency;
    config.max_in_flight = config.max_in_flight.max(args.concurrency);
    config.exit_at_end = args.exit_at_end;
    config.commit_interval = Duration::from_millis(200);
    config.stats_interval = Duration::ZERO;

    let work = Duration::from_millis(args.work_ms);
    let handler = move |msg: Message| async move {
        tokio::time::sleep(work).await; // the call to a service
        let value = String::from_utf8_lossy(msg.value.as_deref().unwrap_or_default());
        // One line per message, written before the handler returns: what a
        // crash test reads back.
        writeln!(
            std::io::stdout().lock(),
            "{} {} {value}",
            msg.partition,
            msg.offset
        )
        .map_err(|e| HandlerError::new(format!("writing stdout: {e}")))
    };

    // Stop requests: the first drains, the second aborts.
    let (stop, signals) = tokio::sync::watch::channel(0u32);
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            stop.send_modify(|n| *n += 1);
        }
    });

    let summary = consumer::run_async(config, handler, FailurePolicy::Stop, signals).await?;
    eprintln!(
        "stopped: {:?}, {} handled",
        summary.reason, summary.stats.finished
    );
    summary.into_result()?;
    Ok(())
}
