//! One error type for everything a user can meet, each with a documented exit code.
//!
//! The binaries print an [`Error`] as one line (`error: ...`) and exit with
//! [`Error::exit_code`]; the README lists the codes. Messages name the thing
//! that failed (broker address, topic, partition) and say what to do.

use std::fmt;

/// Exit code for success.
pub const EXIT_OK: i32 = 0;
/// Exit code for an unexpected internal failure.
pub const EXIT_INTERNAL: i32 = 1;
/// Exit code for a bad command line or configuration (also clap's code).
pub const EXIT_USAGE: i32 = 2;
/// Exit code when no broker could be reached.
pub const EXIT_UNREACHABLE: i32 = 3;
/// Exit code when the topic or partition does not exist.
pub const EXIT_NOT_FOUND: i32 = 4;
/// Exit code when the broker rejected a request or the connection failed mid-stream.
pub const EXIT_KAFKA: i32 = 5;
/// Exit code when messages could not be processed (consumer, `--on-failure stop`)
/// or were not acknowledged (producer).
pub const EXIT_FAILED_MESSAGES: i32 = 6;
/// Exit code when the cluster refused us: the TLS handshake failed (untrusted
/// certificate, host name mismatch, TLS/plaintext mismatch), SASL
/// authentication failed, or an ACL is missing.
pub const EXIT_SECURITY: i32 = 7;
/// Exit code when a second SIGINT/SIGTERM aborted a graceful stop.
pub const EXIT_ABORTED: i32 = 130;

/// Everything that can stop a MyKafkaMS run, with the context to explain it.
#[derive(Debug)]
pub enum Error {
    /// Bad argument or configuration value.
    Usage(String),
    /// None of the bootstrap brokers answered in time.
    Unreachable {
        /// The bootstrap list as the user gave it.
        brokers: String,
        /// What the connection attempt reported.
        detail: String,
    },
    /// The topic does not exist on the cluster.
    UnknownTopic {
        /// Topic name.
        topic: String,
    },
    /// The partition does not exist in the topic.
    UnknownPartition {
        /// Topic name.
        topic: String,
        /// Requested partition.
        partition: i32,
        /// Partitions the topic actually has.
        count: usize,
    },
    /// A Kafka request failed (rejected by the broker, or the connection was lost
    /// and retries ran out).
    Kafka {
        /// What we were doing, e.g. `fetching t1/0 at offset 42`.
        context: String,
        /// The underlying error.
        detail: String,
    },
    /// The cluster refused us: TLS, SASL or an ACL. The text says which
    /// setting or ACL to fix, and never contains a secret.
    Security(String),
    /// Messages were not processed or not acknowledged.
    FailedMessages(String),
    /// A local I/O error (stdin, input file, stdout).
    Io {
        /// What we were doing.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A second signal cut the graceful stop short.
    Aborted(String),
    /// A bug or an unexpected runtime failure (a task panicked, a thread could not start).
    Internal(String),
}

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The process exit code this error maps to (see the README's table).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) => EXIT_USAGE,
            Error::Unreachable { .. } => EXIT_UNREACHABLE,
            Error::UnknownTopic { .. } | Error::UnknownPartition { .. } => EXIT_NOT_FOUND,
            Error::Kafka { .. } => EXIT_KAFKA,
            Error::Security(_) => EXIT_SECURITY,
            Error::FailedMessages(_) => EXIT_FAILED_MESSAGES,
            Error::Io { .. } | Error::Internal(_) => EXIT_INTERNAL,
            Error::Aborted(_) => EXIT_ABORTED,
        }
    }

    /// Wraps an rskafka error with what we were doing when it happened.
    pub fn kafka(context: impl Into<String>, err: impl fmt::Display) -> Self {
        Error::Kafka {
            context: context.into(),
            detail: one_line(&err.to_string()),
        }
    }

    /// Wraps an error of our own connection: a TLS or SASL failure becomes
    /// [`Error::Security`], anything else [`Error::Kafka`].
    pub fn protocol(context: impl Into<String>, err: crate::protocol::ProtocolError) -> Self {
        match err {
            e @ crate::protocol::ProtocolError::Security { .. } => {
                Error::Security(one_line(&e.to_string()))
            }
            other => Error::kafka(context, other),
        }
    }

    /// A broker's authorization refusal, as the ACL that is missing:
    /// `principal` may do `operation` on `resource` (e.g. `Topic:orders`).
    pub fn denied(code: &str, principal: &str, operation: &str, resource: &str) -> Self {
        let (kind, name) = resource.split_once(':').unwrap_or(("Topic", resource));
        let flag = kind.to_ascii_lowercase();
        let target = if kind == "Cluster" {
            "--cluster".to_string()
        } else {
            format!("--{flag} {name}")
        };
        Error::Security(format!(
            "not authorized ({code}): the ACL allowing {principal} {} on {resource} is missing; ask the cluster's admin for kafka-acls --add --allow-principal {principal} --operation {operation} {target}",
            operation.to_ascii_uppercase()
        ))
    }

    /// Wraps an I/O error with what we were doing when it happened.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// Squeezes a multi-line error chain into one line and caps its length, so
/// every error stays the promised single line.
fn one_line(s: &str) -> String {
    let joined = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if joined.chars().count() > 600 {
        let cut: String = joined.chars().take(600).collect();
        format!("{cut}...")
    } else {
        joined
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(msg) => write!(f, "{msg}"),
            Error::Unreachable { brokers, detail } => write!(
                f,
                "cannot reach Kafka broker at {brokers} ({detail}): check the address and that the broker runs (just kafka-up)"
            ),
            Error::UnknownTopic { topic } => write!(
                f,
                "topic '{topic}' does not exist: create it (producer --create-topic --partitions N) or check the name"
            ),
            Error::UnknownPartition {
                topic,
                partition,
                count,
            } => write!(
                f,
                "partition {partition} does not exist in topic '{topic}', which has {count} partition(s) (0..={})",
                count.saturating_sub(1)
            ),
            Error::Kafka { context, detail } => write!(f, "{context} failed: {detail}"),
            Error::Security(msg) => write!(f, "{msg}"),
            Error::FailedMessages(msg) => write!(f, "{msg}"),
            Error::Io { context, source } => write!(f, "{context}: {source}"),
            Error::Aborted(msg) => write!(f, "{msg}"),
            Error::Internal(msg) => write!(f, "internal error: {msg} (please report it)"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_maps_to_its_documented_exit_code() {
        let cases = [
            (Error::Usage("x".into()), 2),
            (
                Error::Unreachable {
                    brokers: "h:1".into(),
                    detail: "refused".into(),
                },
                3,
            ),
            (Error::UnknownTopic { topic: "t".into() }, 4),
            (
                Error::UnknownPartition {
                    topic: "t".into(),
                    partition: 9,
                    count: 3,
                },
                4,
            ),
            (Error::kafka("fetching", "boom"), 5),
            (Error::FailedMessages("1 failed".into()), 6),
            (Error::Security("authentication failed".into()), 7),
            (Error::Aborted("second signal".into()), 130),
            (Error::Internal("task panicked".into()), 1),
        ];
        for (err, code) in cases {
            assert_eq!(err.exit_code(), code, "{err}");
        }
    }

    #[test]
    fn messages_are_one_line_and_name_the_thing() {
        let e = Error::kafka("producing to t/0", "line one\nline two\n\tthree");
        let s = e.to_string();
        assert!(!s.contains('\n'), "{s}");
        assert!(s.contains("t/0"), "{s}");
        let e = Error::UnknownPartition {
            topic: "orders".into(),
            partition: 7,
            count: 3,
        };
        assert!(e.to_string().contains("partition 7") && e.to_string().contains("orders"));
    }
}
