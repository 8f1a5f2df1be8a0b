//! `--on-failure dlq:<topic>`: a message that still fails after its retries is
//! produced to a dead-letter topic, with the error, the attempts made and its
//! origin in headers, and only then marked finished, so it is parked, never
//! lost. The error's [details](HandlerError::with_detail) become headers too:
//! `--handler exec` attaches [`HEADER_EXIT_CODE`] and [`HEADER_STDERR`].

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::Utc;
use rskafka::client::Client;
use rskafka::client::partition::{Compression, PartitionClient, UnknownTopicHandling};
use rskafka::record::Record;

use crate::cluster::{self, ClusterConfig, short};
use crate::error::{Error, Result};
use crate::message::Message;
use crate::partitioner::partition_for_key;
use crate::pool::{FailurePolicy, HandlerError};

/// Header carrying the last handler error.
pub const HEADER_ERROR: &str = "mykafkams.error";
/// Header carrying the topic the message came from.
pub const HEADER_TOPIC: &str = "mykafkams.topic";
/// Header carrying the partition the message came from.
pub const HEADER_PARTITION: &str = "mykafkams.partition";
/// Header carrying the offset the message had.
pub const HEADER_OFFSET: &str = "mykafkams.offset";
/// Header carrying how many times the handler ran the message (the first
/// attempt and its retries), in decimal.
pub const HEADER_ATTEMPTS: &str = "mykafkams.attempts";
/// Header carrying the exit code of the last run of a `--handler exec`
/// command, in decimal; absent when it had none (killed at its timeout, by a
/// signal, or never started).
pub const HEADER_EXIT_CODE: &str = "mykafkams.exit-code";
/// Header carrying the last 4 KiB of the last run's stderr of a `--handler
/// exec` command, as raw bytes.
pub const HEADER_STDERR: &str = "mykafkams.stderr";

/// Longest a dead-letter write may take before it counts as failed.
const DLQ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// A producer for the dead-letter topic, usable from lane threads.
pub struct DeadLetterQueue {
    topic: String,
    partitions: Vec<PartitionClient>,
    runtime: tokio::runtime::Handle,
}

impl DeadLetterQueue {
    /// Opens the dead-letter topic, which must exist (a typo in its name should
    /// not silently create a topic).
    pub async fn open(client: &Client, cluster: &ClusterConfig, topic: &str) -> Result<Self> {
        let n = cluster::topic_partitions(cluster, topic).await?.len() as i32;
        let mut partitions = Vec::with_capacity(n as usize);
        for p in 0..n {
            partitions.push(
                client
                    .partition_client(topic.to_string(), p, UnknownTopicHandling::Retry)
                    .await
                    .map_err(|e| {
                        Error::kafka(
                            format!("connecting to dead-letter topic {topic}/{p}"),
                            short(&e),
                        )
                    })?,
            );
        }
        Ok(Self {
            topic: topic.to_string(),
            partitions,
            runtime: tokio::runtime::Handle::current(),
        })
    }

    /// Produces `msg` with `err` (its reason, attempts and details) to the
    /// dead-letter topic and waits for the acknowledgement. Keyed messages
    /// keep their key (and so their order within the dead-letter topic).
    /// Must not be called from an async task.
    pub fn send_blocking(
        &self,
        msg: &Message,
        err: &HandlerError,
    ) -> std::result::Result<(), String> {
        let headers = dead_letter_headers(msg, err);
        let n = self.partitions.len() as i32;
        let p = match &msg.key {
            Some(k) => partition_for_key(k, n),
            None => msg.partition.rem_euclid(n),
        };
        let record = Record {
            key: msg.key.as_ref().map(|k| k.to_vec()),
            value: msg.value.as_ref().map(|v| v.to_vec()),
            headers,
            timestamp: Utc::now(),
        };
        let client = &self.partitions[p as usize];
        let produce = client.produce(vec![record], Compression::NoCompression);
        self.runtime
            // The timer must be created inside the runtime: lane threads have none.
            .block_on(async { tokio::time::timeout(DLQ_TIMEOUT, produce).await })
            .map_err(|_| format!("no acknowledgement within {DLQ_TIMEOUT:?}"))
            .and_then(|r| r.map_err(|e| short(&e)))
            .map(|_| {
                tracing::warn!(
                    "dead-lettered {}/{}@{} to {}/{p}: {err}",
                    msg.topic,
                    msg.partition,
                    msg.offset,
                    self.topic
                );
            })
            .map_err(|e| format!("producing to dead-letter topic {}/{p}: {e}", self.topic))
    }

    /// The pool failure policy that sends to this queue.
    pub fn policy(self: Arc<Self>) -> FailurePolicy {
        FailurePolicy::DeadLetter(Arc::new(move |msg, err| self.send_blocking(msg, err)))
    }
}

/// The headers of a dead-letter copy: the message's own, then the error's
/// details, then ours (which win over either on a clash of names).
fn dead_letter_headers(msg: &Message, err: &HandlerError) -> BTreeMap<String, Vec<u8>> {
    // Our own headers on the message (a dead-letter copy replayed and
    // failed again) are replaced, not kept: an old exit code must not pass
    // for this failure's.
    let mut headers: BTreeMap<String, Vec<u8>> = msg
        .headers
        .iter()
        .filter(|(k, _)| !k.starts_with("mykafkams."))
        .map(|(k, v)| (k.clone(), v.to_vec()))
        .collect();
    for (name, value) in err.details() {
        headers.insert(name.into(), value.to_vec());
    }
    headers.insert(HEADER_ERROR.into(), err.message().as_bytes().to_vec());
    headers.insert(
        HEADER_ATTEMPTS.into(),
        err.attempts().to_string().into_bytes(),
    );
    headers.insert(HEADER_TOPIC.into(), msg.topic.as_bytes().to_vec());
    headers.insert(
        HEADER_PARTITION.into(),
        msg.partition.to_string().into_bytes(),
    );
    headers.insert(HEADER_OFFSET.into(), msg.offset.to_string().into_bytes());
    headers
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Headers;
    use bytes::Bytes;

    /// A message of `topic`/`partition`@`offset` with these headers.
    fn message(
        topic: &str,
        partition: i32,
        offset: i64,
        headers: &[(&str, &'static [u8])],
    ) -> Message {
        let mut h = Headers::new();
        for (k, v) in headers {
            h.push(*k, Bytes::from_static(v));
        }
        Message {
            topic: Arc::from(topic),
            partition,
            offset,
            key: None,
            value: None,
            timestamp_ms: 0,
            headers: h,
        }
    }

    #[test]
    fn details_and_attempts_become_headers_and_ours_win_a_clash() {
        let msg = message(
            "orders",
            2,
            7,
            &[("trace", b"t-1"), (HEADER_ATTEMPTS, b"forged")],
        );
        let mut err = HandlerError::permanent("boom")
            .with_detail(HEADER_EXIT_CODE, "3")
            .with_detail(HEADER_STDERR, &b"\xffraw"[..])
            .with_detail(HEADER_OFFSET, "forged");
        err.set_attempts(4);
        let h = dead_letter_headers(&msg, &err);
        let get = |k: &str| h.get(k).map(|v| v.as_slice());
        assert_eq!(get("trace"), Some(&b"t-1"[..]));
        assert_eq!(get(HEADER_ERROR), Some(&b"boom"[..]));
        assert_eq!(get(HEADER_ATTEMPTS), Some(&b"4"[..]));
        assert_eq!(get(HEADER_EXIT_CODE), Some(&b"3"[..]));
        assert_eq!(get(HEADER_STDERR), Some(&b"\xffraw"[..]));
        assert_eq!(get(HEADER_OFFSET), Some(&b"7"[..]));
        assert_eq!(get(HEADER_TOPIC), Some(&b"orders"[..]));
        assert_eq!(get(HEADER_PARTITION), Some(&b"2"[..]));
    }

    #[test]
    fn a_replayed_copys_old_details_do_not_pass_for_the_new_failure() {
        let msg = message(
            "orders-dlq",
            0,
            1,
            &[
                ("trace", b"t-1"),
                (HEADER_EXIT_CODE, b"3"),
                (HEADER_STDERR, b"old"),
            ],
        );
        // This time it timed out: no exit code, no stderr.
        let h = dead_letter_headers(&msg, &HandlerError::new("timed out"));
        assert_eq!(h.get("trace").map(|v| v.as_slice()), Some(&b"t-1"[..]));
        assert!(!h.contains_key(HEADER_EXIT_CODE), "{h:?}");
        assert!(!h.contains_key(HEADER_STDERR), "{h:?}");
    }
}
