//! Key-ordered, parallel message processing on Apache Kafka, in pure Rust.
//!
//! A [`Consumer`] reads topics (as a group member, or partitions you name)
//! and hands each message to your handler: **one key's messages one at a
//! time, in offset order; different keys at once**, on worker threads or,
//! with an async handler, as tokio tasks. Delivery is at least once: the
//! offset committed for a partition never passes a message that has not
//! finished, so a crash repeats only unfinished work and never skips any;
//! a graceful stop or group hand-over repeats nothing.
//!
//! A [`Producer`] writes records idempotently (a retry never duplicates
//! or reorders), choosing partitions as Kafka's Java client does, and
//! tells each caller where its record was written.
//!
//! No C: the Kafka protocol, TLS (rustls), SASL and every compression
//! codec are Rust.
//!
//! # Quick start
//!
//! A group member with an async handler that stops gracefully on Ctrl-C:
//!
//! ```no_run
//! use mykafkams::{Consumer, HandlerError, Message};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), mykafkams::Error> {
//!     let consumer = Consumer::builder()
//!         .bootstrap_servers("127.0.0.1:9092")
//!         .topics("orders")
//!         .group("billing")
//!         .max_concurrency(1000) // messages in flight, never two of one key
//!         .build()?;
//!
//!     let stop = consumer.shutdown_handle();
//!     tokio::spawn(async move {
//!         let _ = tokio::signal::ctrl_c().await;
//!         stop.shutdown(); // finish what was fetched, commit, leave the group
//!     });
//!
//!     let summary = consumer
//!         .run(|msg: Message| async move {
//!             // Call a service here; an error is retried with backoff.
//!             println!("{}@{}: {:?}", msg.partition, msg.offset, msg.value);
//!             Ok::<(), HandlerError>(())
//!         })
//!         .await?;
//!     summary.into_result()
//! }
//! ```
//!
//! [`Consumer::run`] takes a sync handler too, and runs it on worker
//! threads ([`Consumer::run_blocking`] does without a runtime):
//!
//! ```no_run
//! # fn main() -> Result<(), mykafkams::Error> {
//! use mykafkams::{Consumer, HandlerError, Message};
//!
//! let consumer = Consumer::builder()
//!     .bootstrap_servers("127.0.0.1:9092")
//!     .topics("orders")
//!     .group("billing")
//!     .workers(16)
//!     .property("security.protocol", "SASL_SSL") // Kafka property names work too
//!     .property("sasl.mechanism", "SCRAM-SHA-512")
//!     .property("sasl.username", "billing")
//!     .property("sasl.password", "${env:KAFKA_PASSWORD}") // never in a log or error
//!     .build()?;
//! consumer
//!     .run_blocking(|msg: &Message| -> Result<(), HandlerError> { Ok(()) })?
//!     .into_result()
//! # }
//! ```
//!
//! Producing, and waiting for the acknowledgement:
//!
//! ```no_run
//! # async fn f() -> Result<(), mykafkams::Error> {
//! let producer = mykafkams::Producer::builder()
//!     .bootstrap_servers("127.0.0.1:9092")
//!     .build()
//!     .await?;
//! let at = producer
//!     .send("orders", Some(b"acct-7"), b"paid", &[("source", b"web")])
//!     .await?;
//! println!("written to partition {} at offset {:?}", at.partition, at.offset);
//! producer.flush().await?;
//! # Ok(()) }
//! ```
//!
//! The `examples/` directory has each of these as a program to run against
//! a local broker, and one whose handler calls an HTTP service.
//!
//! # Modules
//!
//! - [`consumer`]: [`Consumer`] and its builder, [`ShutdownHandle`], the
//!   run's [`ConsumeSummary`](consumer::ConsumeSummary).
//! - [`producer`]: [`Producer`], its builder, [`Delivery`](producer::Delivery).
//! - [`pool`]: the ordered worker pool under the consumer, usable on its own
//!   for any key-ordered work; the [`Handler`] and [`AsyncHandler`] traits.
//! - [`handlers`]: the binary's handlers (print, exec, pipe), reusable.
//! - [`offsets`]: which offsets are safe to commit; [`offset_map`]: the
//!   finished offsets beyond them, carried in the commit's metadata (and
//!   parallel-consumer's maps read); [`partitioner`]: Kafka's
//!   murmur2 key partitioner; [`metrics`]: Prometheus metrics; [`dlq`]: the
//!   headers of a dead-lettered record; [`error`]: [`Error`] and its exit codes.
//! - [`cli`] and [`config`]: the command lines of the two binaries, and
//!   Kafka-style properties.
#![warn(missing_docs)]

pub mod message;

pub use message::{Headers, Message};

pub mod offset_map;
pub mod offsets;
pub mod partitioner;
pub mod pool;

/// The global allocator of static musl builds: dlmalloc (pure Rust), not
/// musl's malloc, which maps and unmaps every large block and so costs a
/// page fault per page of every fetch buffer and message batch. Only with
/// the `musl-dlmalloc` feature (default) on a musl target.
#[cfg(all(target_env = "musl", feature = "musl-dlmalloc"))]
#[global_allocator]
static ALLOCATOR: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

pub mod cli;
pub mod config;
pub mod consumer;
mod copy;
pub mod dlq;
pub mod error;
pub mod handlers;
pub mod metrics;
pub mod producer;
pub(crate) mod protocol;
pub(crate) mod records;

pub use consumer::{Consumer, ConsumerBuilder, OnFailure, ShutdownHandle};
pub use error::{Error, Result};
pub use pool::{AsyncHandler, Handler, HandlerError};
pub use producer::{Producer, ProducerBuilder};

// Internals, not part of the API (no documentation, no semver promise).
// They are `pub` only because the crate's own tests, benches and demo
// drive them directly against a real broker: the group client
// (tests/groups.rs, tests/group_offsets.rs, the assignor property tests),
// the fetcher (tests/fetch.rs), the cluster helpers, and the demo.
#[doc(hidden)]
pub mod cluster;
#[doc(hidden)]
pub mod demo;
#[doc(hidden)]
pub mod fetcher;
#[doc(hidden)]
pub mod group;
