//! MyKafkaMS: key-ordered, parallel message processing on Apache Kafka.

pub mod message;

pub use message::Message;

pub mod offsets;
pub mod partitioner;
pub mod pool;

pub mod cli;
pub mod cluster;
pub mod config;
pub mod consumer;
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
