//! `--handler exec -- CMD ARGS...`: runs a command per message, so any shell
//! tool gets per-key ordered, parallel processing. The value goes to the
//! command's stdin; `KAFKA_TOPIC`, `KAFKA_PARTITION`, `KAFKA_OFFSET` and
//! `KAFKA_KEY` are in its environment. Exit status 0 finishes the message; any
//! other status (or a failure to start) is a handler error, retried and then
//! given to the `--on-failure` policy.

use std::io::{Read, Write};
use std::process::{Command, Stdio};

use crate::message::Message;
use crate::pool::{Handler, HandlerError};

/// Longest piece of a failing command's stderr kept in the error.
const STDERR_TAIL: usize = 512;

/// Runs `program args...` once per message, on the lane thread.
#[derive(Clone, Debug)]
pub struct ExecHandler {
    program: String,
    args: Vec<String>,
}

impl ExecHandler {
    /// A handler running `command[0]` with `command[1..]` as arguments.
    /// Returns `None` for an empty command.
    pub fn new(command: &[String]) -> Option<Self> {
        let (program, args) = command.split_first()?;
        Some(Self {
            program: program.clone(),
            args: args.to_vec(),
        })
    }
}

impl Handler for ExecHandler {
    fn handle(&self, msg: &Message) -> Result<(), HandlerError> {
        let mut child = Command::new(&self.program)
            .args(&self.args)
            .env("KAFKA_TOPIC", &*msg.topic)
            .env("KAFKA_PARTITION", msg.partition.to_string())
            .env("KAFKA_OFFSET", msg.offset.to_string())
            .env("KAFKA_KEY", key_env(msg.key.as_deref()))
            .stdin(Stdio::piped())
            .stdout(Stdio::inherit())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| HandlerError::new(format!("cannot start '{}': {e}", self.program)))?;
        // Feed stdin from this thread and read stderr from another, so a command
        // that writes a lot of stderr before reading stdin cannot deadlock us.
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = stderr.read_to_end(&mut buf);
            buf
        });
        if let Some(mut stdin) = child.stdin.take() {
            // A command that exits without reading its input is not an error
            // by itself (EPIPE); its exit status decides.
            let _ = stdin.write_all(msg.value.as_deref().unwrap_or_default());
        }
        let status = child
            .wait()
            .map_err(|e| HandlerError::new(format!("waiting for '{}': {e}", self.program)))?;
        let err = reader.join().unwrap_or_default();
        if status.success() {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&err);
        let text = text.trim();
        let tail: String = if text.len() > STDERR_TAIL {
            let cut = text
                .char_indices()
                .rev()
                .nth(STDERR_TAIL)
                .map_or(0, |(i, _)| i);
            format!("...{}", &text[cut..])
        } else {
            text.to_string()
        };
        let tail = tail.split_whitespace().collect::<Vec<_>>().join(" ");
        Err(HandlerError::new(if tail.is_empty() {
            format!("'{}' exited with {status}", self.program)
        } else {
            format!("'{}' exited with {status}: {tail}", self.program)
        }))
    }
}

/// The key as an environment value: lossy UTF-8, with NUL bytes (which no
/// environment can hold; Java's serialized numbers and UUIDs have them) shown
/// as U+FFFD, so such a key never makes the command fail to start.
fn key_env(key: Option<&[u8]>) -> String {
    String::from_utf8_lossy(key.unwrap_or_default()).replace('\0', "\u{fffd}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Headers;
    use bytes::Bytes;
    use std::sync::Arc;

    fn msg() -> Message {
        Message {
            topic: Arc::from("orders"),
            partition: 3,
            offset: 42,
            key: Some(Bytes::from_static(b"acct-1")),
            value: Some(Bytes::from_static(b"payload")),
            timestamp_ms: 0,
            headers: Headers::new(),
        }
    }

    fn sh(script: &str) -> ExecHandler {
        ExecHandler::new(&["sh".into(), "-c".into(), script.into()]).unwrap()
    }

    #[test]
    fn command_sees_value_on_stdin_and_metadata_in_env() {
        let h = sh(
            r#"v=$(cat); [ "$v" = payload ] && [ "$KAFKA_TOPIC" = orders ] && [ "$KAFKA_PARTITION" = 3 ] && [ "$KAFKA_OFFSET" = 42 ] && [ "$KAFKA_KEY" = acct-1 ]"#,
        );
        h.handle(&msg()).unwrap();
    }

    #[test]
    fn a_key_with_nul_bytes_still_runs_the_command() {
        let mut m = msg();
        m.key = Some(Bytes::from_static(&[0, 0, 0, 42]));
        sh(r#"[ -n "$KAFKA_KEY" ]"#).handle(&m).unwrap();
    }

    #[test]
    fn non_zero_exit_is_an_error_carrying_stderr() {
        let err = sh("echo 'bad input' >&2; exit 3")
            .handle(&msg())
            .unwrap_err();
        assert!(err.message().contains("bad input"), "{err}");
        assert!(err.message().contains('3'), "{err}");
    }

    #[test]
    fn missing_program_is_an_error_not_a_panic() {
        let h = ExecHandler::new(&["/nonexistent/tool".into()]).unwrap();
        assert!(
            h.handle(&msg())
                .unwrap_err()
                .message()
                .contains("cannot start")
        );
        assert!(ExecHandler::new(&[]).is_none());
    }
}
