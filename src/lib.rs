//! MyKafkaMS: key-ordered, parallel message processing on Apache Kafka.

pub mod message;

pub use message::{Headers, Message};

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
pub mod cluster;
pub mod config;
pub mod consumer;
mod copy;
pub mod demo;
pub mod dlq;
pub mod error;
pub mod fetcher;
pub mod handlers;
pub mod metrics;
pub mod producer;
pub mod records;

pub use error::{Error, Result};

pub mod group;
pub mod protocol;

pub use group::{GroupClient, GroupConfig, GroupError};
