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
use mykafkams::consumer::Partitions;
use mykafkams::{Consumer, HandlerError, Message, ShutdownHandle};

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
    let mut builder = Consumer::builder()
        .bootstrap_servers(args.brokers)
        .topics(args.topic)
        .group(args.group)
        .max_concurrency(args.concurrency)
        .max_in_flight(args.concurrency.max(10_000))
        .exit_at_end(args.exit_at_end)
        .commit_interval(Duration::from_millis(200))
        .stats_interval(Duration::ZERO);
    if args.all_partitions {
        builder = builder.partitions(Partitions::All);
    }
    let consumer = builder.build()?;

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

    // The first Ctrl-C or SIGTERM drains and stops; the second aborts.
    let stop = consumer.shutdown_handle();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::spawn(async move {
        for request in [ShutdownHandle::shutdown, ShutdownHandle::abort] {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            request(&stop);
        }
    });

    let summary = consumer.run(handler).await?;
    eprintln!(
        "stopped: {:?}, {} handled",
        summary.reason, summary.stats.finished
    );
    summary.into_result()?;
    Ok(())
}
