//! A sync handler on worker threads, in a program without async code.
//!
//! ```sh
//! cargo run --example sync_consumer -- 127.0.0.1:9092 orders billing --exit-at-end
//! ```
//!
//! Reads every partition of the topic (committing as the group), and prints
//! `partition offset key value` for each message, one key's messages in
//! offset order, different keys on different threads. Without
//! `--exit-at-end` it runs until Ctrl-C (a graceful stop).

use std::io::Write;

use clap::Parser;
use mykafkams::consumer::Partitions;
use mykafkams::{Consumer, HandlerError, Message};

#[derive(Parser)]
struct Args {
    /// Bootstrap brokers, comma separated.
    brokers: String,
    /// The topic to read.
    topic: String,
    /// The consumer group whose offsets are used.
    group: String,
    /// Worker threads.
    #[arg(long, default_value_t = 8)]
    workers: usize,
    /// Stop once every partition is caught up and handled.
    #[arg(long)]
    exit_at_end: bool,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let consumer = Consumer::builder()
        .bootstrap_servers(args.brokers)
        .topics(args.topic)
        .group(args.group)
        .partitions(Partitions::All)
        .workers(args.workers)
        .exit_at_end(args.exit_at_end)
        .build()?;

    // A sync handler: any `Fn(&Message) -> Result<(), HandlerError>` that
    // is Send + Sync. It may block; only this key waits.
    let handler = |msg: &Message| -> Result<(), HandlerError> {
        let text = |b: &Option<bytes::Bytes>| {
            String::from_utf8_lossy(b.as_deref().unwrap_or_default()).into_owned()
        };
        writeln!(
            std::io::stdout().lock(),
            "{} {} {} {}",
            msg.partition,
            msg.offset,
            text(&msg.key),
            text(&msg.value)
        )
        .map_err(|e| HandlerError::new(format!("writing stdout: {e}")))
    };

    // `run_blocking` starts its own runtime; a program that has one awaits
    // `consumer.run(handler)` instead.
    let summary = consumer.run_blocking(handler)?;
    eprintln!("{}", summary.line());
    summary.into_result()?;
    Ok(())
}
