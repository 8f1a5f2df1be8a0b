//! `mykafkams-demo`: the demo `just up` runs. Produces keyed events with
//! per-key sequence numbers, consumes them with 32 workers, and prints a
//! verdict (order violations, lost, duplicates, throughput, speed-up).
//! Exits 6 if any message was lost or out of order.

use std::time::Duration;

use clap::Parser;
use mykafkams::cli;
use mykafkams::cluster::{self, ClusterConfig};
use mykafkams::demo::{self, DemoConfig};
use mykafkams::error::{Error, Result};

/// Show per-key ordered, parallel processing on a real broker.
#[derive(Parser, Debug)]
#[command(version = cli::VERSION, long_version = cli::LONG_VERSION)]
struct Args {
    /// Bootstrap brokers, comma separated.
    #[arg(long, env = "KAFKA_BOOTSTRAP", default_value = "127.0.0.1:9092")]
    brokers: String,
    /// Events to produce.
    #[arg(long, default_value_t = 100_000)]
    events: usize,
    /// Account keys.
    #[arg(long, default_value_t = 1000)]
    keys: usize,
    /// Workers of the main run.
    #[arg(long, default_value_t = 32)]
    workers: usize,
    /// How messages reach the workers: lanes, keys, or async (an async
    /// handler; --workers is then its concurrency).
    #[arg(long, default_value = "keys", value_parser = ["lanes", "keys", "async"])]
    scheduler: String,
    /// Simulated I/O per message, in milliseconds.
    #[arg(long, default_value_t = 1)]
    work_ms: u64,
    /// Events of the single-worker sample that gives the speed-up (0: none).
    #[arg(long, default_value_t = 3000)]
    sample: usize,
    /// Make the first key slow: this many milliseconds per message (head-of-line test).
    #[arg(long)]
    slow_key_ms: Option<u64>,
    /// Panic in the handler at the first attempt of every message whose offset is a multiple of N.
    #[arg(long, value_name = "N")]
    panic_every: Option<u64>,
    /// Print the verdict as one JSON object on stdout instead of the text.
    #[arg(long)]
    json: bool,
}

async fn run(args: Args) -> Result<()> {
    if args.keys == 0 || args.events == 0 || args.workers == 0 {
        return Err(Error::Usage(
            "--events, --keys and --workers must be at least 1".into(),
        ));
    }
    let asynchronous = args.scheduler == "async";
    if asynchronous && (args.slow_key_ms.is_some() || args.panic_every.is_some()) {
        return Err(Error::Usage(
            "--slow-key-ms and --panic-every need a thread scheduler (lanes or keys)".into(),
        ));
    }
    let cfg = DemoConfig {
        keys: args.keys,
        events: args.events,
        workers: args.workers,
        scheduler: args.scheduler.parse().unwrap_or_default(),
        asynchronous,
        work: Duration::from_millis(args.work_ms),
        sample: args.sample,
        slow_key: args.slow_key_ms.map(Duration::from_millis),
        panic_every: args.panic_every,
        ..DemoConfig::new(ClusterConfig::new(cluster::parse_brokers(&args.brokers)?))
    };
    let workers = cfg.workers;
    let sample = cfg.sample;
    let r = demo::run(cfg.clone()).await?;
    let v = &r.verdict;
    if args.json {
        println!("{}", r.json(&cfg));
    } else {
        print_verdict(&r, workers, sample);
    }
    if r.passed() {
        Ok(())
    } else {
        Err(Error::FailedMessages(format!(
            "demo failed: {} order violation(s), {} lost",
            v.order_violations, v.lost
        )))
    }
}

fn print_verdict(r: &demo::DemoReport, workers: usize, sample: usize) {
    let v = &r.verdict;
    println!();
    println!("== MyKafkaMS demo verdict");
    println!("messages handled          {} of {}", v.handled, r.produced);
    println!("per-key order violations  {}", v.order_violations);
    println!("lost                      {}", v.lost);
    println!("duplicates                {}", v.duplicates);
    println!("throughput, {workers} workers     {:.0} msg/s", r.rate);
    if let Some((key, others)) = &r.slow_key {
        println!("throughput, keys but {key}  {others:.0} msg/s");
    }
    if r.panics > 0 {
        println!(
            "handler panics caught     {} (each message retried)",
            r.panics
        );
    }
    if let (Some(single), Some(speedup)) = (r.single_rate, r.speedup()) {
        println!("throughput, 1 worker      {single:.0} msg/s ({sample}-message sample)");
        println!("speed-up                  {speedup:.1}x");
    }
    if let Some(kib) = r.consume_peak_rss_kib {
        println!("peak RSS while consuming  {} MiB", kib.div_ceil(1024));
    }
    if r.passed() {
        println!("RESULT: PASS (every message handled, every key in order)");
    }
}

fn main() {
    let args: Args = cli::parse_args();
    cli::run(|| run(args))
}
