//! A producer that waits for its acknowledgements.
//!
//! ```sh
//! cargo run --example producer -- 127.0.0.1:9092 orders --count 1000 --keys 10
//! ```
//!
//! Queues `--count` records over `--keys` keys (keeping them all in flight,
//! batched), then awaits each acknowledgement and prints
//! `key partition offset` for it. Records of one key go to one partition,
//! at increasing offsets, in the order they were queued.

use clap::Parser;
use mykafkams::Producer;

#[derive(Parser)]
struct Args {
    /// Bootstrap brokers, comma separated.
    brokers: String,
    /// The topic to write to (created with 3 partitions if missing).
    topic: String,
    /// Records to send.
    #[arg(long, default_value_t = 100)]
    count: u32,
    /// Distinct keys (key-0 .. key-N).
    #[arg(long, default_value_t = 10)]
    keys: u32,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let producer = Producer::builder()
        .bootstrap_servers(args.brokers)
        .property("linger.ms", "10") // Kafka property names work too
        .build()
        .await?;
    producer.create_topic(&args.topic, 3, 1).await?;

    // Queue everything first: records share batches and requests.
    let mut pending = Vec::new();
    for i in 0..args.count {
        let key = format!("key-{}", i % args.keys.max(1));
        let value = format!("{key} #{i}");
        let delivery = producer
            .enqueue(
                &args.topic,
                Some(key.as_bytes()),
                value.as_bytes(),
                &[("seq", i.to_string().as_bytes())],
            )
            .await?;
        pending.push((key, delivery));
    }
    // Then wait for each acknowledgement.
    for (key, delivery) in pending {
        let at = delivery.await?;
        println!("{key} {} {}", at.partition, at.offset.unwrap_or(-1));
    }
    // One record awaited on its own: `send` resolves at its acknowledgement.
    let last = producer
        .send(&args.topic, Some(b"key-0"), b"done", &[])
        .await?;
    eprintln!("last record at {}@{:?}", last.partition, last.offset);
    producer.flush().await?;
    producer.close().await;
    Ok(())
}
