//! The record type that flows from the fetcher through the pool to a handler.

use std::sync::Arc;

use bytes::Bytes;

/// One Kafka record as the consumer pipeline sees it.
///
/// Cheap to clone: the topic name is shared and the key, value and header
/// payloads are reference-counted [`Bytes`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Topic the record was fetched from.
    pub topic: Arc<str>,
    /// Partition the record was fetched from.
    pub partition: i32,
    /// Offset of the record within its partition.
    pub offset: i64,
    /// Record key; `None` for a record produced without a key.
    pub key: Option<Bytes>,
    /// Record value; `None` for a tombstone.
    pub value: Option<Bytes>,
    /// Record timestamp in milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// Record headers in wire order.
    pub headers: Vec<(String, Bytes)>,
}
