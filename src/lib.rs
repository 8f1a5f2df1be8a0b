//! MyKafkaMS: key-ordered, parallel message processing on Apache Kafka.

pub mod message;

pub use message::Message;

pub mod protocol;
pub mod group;

pub use group::{GroupClient, GroupConfig, GroupError};
