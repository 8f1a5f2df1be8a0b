//! `--handler exec -- CMD ARGS...`: runs a command per message, so any shell
//! tool gets per-key ordered, parallel processing. The value goes to the
//! command's stdin; `KAFKA_TOPIC`, `KAFKA_PARTITION`, `KAFKA_OFFSET` and
//! `KAFKA_KEY` are in its environment. Its stdout is the consumer's; its
//! stderr is kept for the error (below).
//!
//! The exit status says what happened:
//!
//! | status | meaning |
//! |---|---|
//! | 0 | done: the message is finished |
//! | 75 ([`EXIT_TEMPFAIL`]) | a temporary failure: retried with backoff, then `--on-failure` |
//! | any other, or death by a signal | a failure retrying cannot mend ([`HandlerError::permanent`]): straight to `--on-failure`, no retries |
//!
//! A command that cannot be started, or that times out (below), is a
//! temporary failure too. The error of a command that ran carries the last
//! [`STDERR_KEEP`] bytes of its stderr as the [`HEADER_STDERR`] detail and its
//! exit code (when it had one) as [`HEADER_EXIT_CODE`]; a dead-letter copy
//! ([`crate::dlq`]) has them as headers, next to the attempts made. The
//! reason text carries a short tail of stderr, whitespace collapsed.
//!
//! The command runs in a process group of its own. One still running at the
//! timeout (`--handler-timeout`, [`ExecHandler::with_timeout`]) is killed
//! with SIGKILL together with everything in its group, and the message fails
//! (retried). A command that exits but leaves a process holding its stderr
//! is waited for up to the same timeout; then the leftovers are killed and
//! the exit status decides.

use std::io::{self, Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::dlq::{HEADER_EXIT_CODE, HEADER_STDERR};
use crate::message::Message;
use crate::pool::{Handler, HandlerError};

/// The exit status that asks for a retry: `EX_TEMPFAIL` of `sysexits.h`.
/// Any other non-zero status fails the message without retries.
pub const EXIT_TEMPFAIL: i32 = 75;

/// How much of a failing command's stderr its error keeps (the last bytes,
/// raw) as the [`HEADER_STDERR`] detail of a dead-letter copy: 4 KiB.
pub const STDERR_KEEP: usize = 4096;

/// Longest piece of a failing command's stderr in the error's reason.
const STDERR_TAIL: usize = 512;

/// The default of [`ExecHandler::with_timeout`] (and of `--handler-timeout`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long, after killing a command's process group, we still wait for its
/// stderr to close. Only a process that left the group (`setsid`) can hold it
/// longer; we stop listening to it then.
const STDERR_GRACE: Duration = Duration::from_secs(1);

/// Runs `program args...` once per message, on the lane thread.
#[derive(Clone, Debug)]
pub struct ExecHandler {
    program: String,
    args: Vec<String>,
    timeout: Duration,
}

impl ExecHandler {
    /// A handler running `command[0]` with `command[1..]` as arguments, with
    /// the [`DEFAULT_TIMEOUT`]. Returns `None` for an empty command.
    pub fn new(command: &[String]) -> Option<Self> {
        let (program, args) = command.split_first()?;
        Some(Self {
            program: program.clone(),
            args: args.to_vec(),
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// Sets the longest one run may take: a command still running then is
    /// killed (SIGKILL) with its whole process group, and the message fails
    /// (retried, then the failure policy).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

impl Handler for ExecHandler {
    fn handle(&self, msg: &Message) -> Result<(), HandlerError> {
        let deadline = Instant::now().checked_add(self.timeout);
        let mut child = Command::new(&self.program)
            .args(&self.args)
            .env("KAFKA_TOPIC", &*msg.topic)
            .env("KAFKA_PARTITION", msg.partition.to_string())
            .env("KAFKA_OFFSET", msg.offset.to_string())
            .env("KAFKA_KEY", key_env(msg.key.as_deref()))
            .stdin(Stdio::piped())
            .stdout(Stdio::inherit())
            .stderr(Stdio::piped())
            // Its own process group: the timeout kills whatever it started.
            .process_group(0)
            .spawn()
            .map_err(|e| HandlerError::new(format!("cannot start '{}': {e}", self.program)))?;
        let group = Group(child.id() as libc::pid_t);
        // Read stderr on one thread; feed stdin and then wait for the exit on
        // another, so a command that writes a lot of stderr before reading
        // stdin, or never reads it, cannot block us past the timeout.
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let (stderr_tx, stderr_rx) = mpsc::channel();
        let stdin = child.stdin.take();
        let value = msg.value.clone().unwrap_or_default();
        let (exit_tx, exit_rx) = mpsc::channel();
        let started = spawn_named("exec-stderr", move || {
            let _ = stderr_tx.send(read_tail(&mut stderr, STDERR_KEEP));
        })
        .and_then(|()| {
            spawn_named("exec-wait", move || {
                if let Some(mut stdin) = stdin {
                    // A command that exits without reading its input is not
                    // an error by itself (EPIPE); its exit status decides.
                    let _ = stdin.write_all(&value);
                }
                let _ = exit_tx.send(group.wait_exited());
            })
        });
        if let Err(e) = started {
            group.kill();
            let _ = child.wait();
            return Err(HandlerError::new(format!(
                "cannot watch '{}': {e}",
                self.program
            )));
        }
        let exited = match exit_rx.recv_timeout(remaining(deadline)) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("waiting for '{}': {e}", self.program)),
            Err(_) => Err(format!(
                "'{}' timed out after {:?}; killed it and its process group",
                self.program, self.timeout
            )),
        };
        // Once the command has exited, what it left running may still hold
        // its stderr: wait for that up to the same deadline. Whatever of the
        // group is still running then (or now, after a timeout) is killed,
        // which closes the pipe.
        let err = match exited {
            Ok(()) => stderr_rx.recv_timeout(remaining(deadline)).ok(),
            Err(_) => None,
        }
        .unwrap_or_else(|| {
            group.kill();
            stderr_rx.recv_timeout(STDERR_GRACE).unwrap_or_default()
        });
        // Reap the leader only now: until then its pid (the group's id)
        // cannot be reused, so `kill` above never hits a stranger.
        let status = child
            .wait()
            .map_err(|e| HandlerError::new(format!("waiting for '{}': {e}", self.program)))?;
        let tail = stderr_tail(&err);
        let reason = match exited {
            Err(reason) => {
                return Err(
                    HandlerError::new(with_tail(reason, &tail)).with_detail(HEADER_STDERR, err)
                );
            }
            Ok(()) => with_tail(format!("'{}' exited with {status}", self.program), &tail),
        };
        let error = match status.code() {
            Some(0) => return Ok(()),
            Some(EXIT_TEMPFAIL) => HandlerError::new(reason),
            // Any other code, or death by a signal: retrying cannot help.
            _ => HandlerError::permanent(reason),
        };
        let error = match status.code() {
            Some(code) => error.with_detail(HEADER_EXIT_CODE, code.to_string()),
            None => error,
        };
        Err(error.with_detail(HEADER_STDERR, err))
    }
}

/// Reads `r` to its end, keeping only the last `keep` bytes.
fn read_tail(r: &mut impl Read, keep: usize) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match r.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                // Trim now and then, not on every read.
                if buf.len() > 2 * keep {
                    buf.drain(..buf.len() - keep);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    if buf.len() > keep {
        buf.drain(..buf.len() - keep);
    }
    buf
}

/// The time left until `deadline` (`None`: there is none).
fn remaining(deadline: Option<Instant>) -> Duration {
    deadline.map_or(Duration::MAX, |d| {
        d.saturating_duration_since(Instant::now())
    })
}

/// Starts a named thread, or says why not.
fn spawn_named(name: &str, f: impl FnOnce() + Send + 'static) -> io::Result<()> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map(drop)
}

/// The process group a command runs in; its id is the command's pid.
#[derive(Clone, Copy)]
struct Group(libc::pid_t);

impl Group {
    /// Sends SIGKILL to every process in the group.
    fn kill(self) {
        // SAFETY: kill(2) takes no pointers. The group's leader is our child
        // and is not reaped yet, so the id still names its group.
        unsafe { libc::kill(-self.0, libc::SIGKILL) };
    }

    /// Waits until the leader has exited, without reaping it (`WNOWAIT`), so
    /// its group id stays ours until `Child::wait`.
    fn wait_exited(self) -> io::Result<()> {
        loop {
            // SAFETY: an all-zero siginfo_t is a valid value of the plain C
            // struct, and `info` outlives the call that writes it.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            let rc = unsafe {
                libc::waitid(
                    libc::P_PID,
                    self.0 as libc::id_t,
                    &mut info,
                    libc::WEXITED | libc::WNOWAIT,
                )
            };
            if rc == 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

/// The end of a command's stderr for an error message: at most
/// [`STDERR_TAIL`] characters, whitespace collapsed.
fn stderr_tail(err: &[u8]) -> String {
    let text = String::from_utf8_lossy(err);
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
    tail.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `reason`, followed by the stderr tail when there is one.
fn with_tail(reason: String, tail: &str) -> String {
    if tail.is_empty() {
        reason
    } else {
        format!("{reason}: {tail}")
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
    use std::time::{Duration, Instant};

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
    fn missing_program_is_a_retried_error_not_a_panic() {
        let h = ExecHandler::new(&["/nonexistent/tool".into()]).unwrap();
        let err = h.handle(&msg()).unwrap_err();
        assert!(err.message().contains("cannot start"), "{err}");
        assert!(!err.is_permanent(), "{err}");
        assert_eq!(err.details().count(), 0, "it never ran");
        assert!(ExecHandler::new(&[]).is_none());
    }

    #[test]
    fn exit_0_is_done() {
        sh("echo noise >&2; exit 0").handle(&msg()).unwrap();
    }

    #[test]
    fn exit_75_is_a_temporary_failure_that_is_retried() {
        let err = sh("echo later >&2; exit 75").handle(&msg()).unwrap_err();
        assert!(!err.is_permanent(), "{err}");
        assert_eq!(err.detail(HEADER_EXIT_CODE).unwrap(), "75");
        assert_eq!(err.detail(HEADER_STDERR).unwrap(), "later\n");
    }

    #[test]
    fn any_other_exit_code_fails_without_retries() {
        for code in [1, 3, 64, 74, 76, 255] {
            let err = sh(&format!("exit {code}")).handle(&msg()).unwrap_err();
            assert!(err.is_permanent(), "exit {code}: {err}");
            assert_eq!(
                err.detail(HEADER_EXIT_CODE).unwrap(),
                code.to_string().as_str()
            );
        }
    }

    #[test]
    fn death_by_a_signal_fails_without_retries_and_has_no_exit_code() {
        let err = sh("kill -9 $$").handle(&msg()).unwrap_err();
        assert!(err.is_permanent(), "{err}");
        assert!(err.message().contains("signal"), "{err}");
        assert_eq!(err.detail(HEADER_EXIT_CODE), None);
    }

    #[test]
    fn the_error_carries_exactly_the_last_4_kib_of_a_larger_stderr() {
        // seq 1 3000 writes 13,893 bytes.
        let err = sh("seq 1 3000 >&2; exit 3").handle(&msg()).unwrap_err();
        let all: String = (1..=3000).map(|i| format!("{i}\n")).collect();
        let want = &all.as_bytes()[all.len() - STDERR_KEEP..];
        assert_eq!(STDERR_KEEP, 4096);
        assert_eq!(&err.detail(HEADER_STDERR).unwrap()[..], want);
        assert_eq!(err.detail(HEADER_EXIT_CODE).unwrap(), "3");
        // The reason keeps a short tail only, on one line.
        assert!(err.message().ends_with("2998 2999 3000"), "{err}");
        assert!(err.message().len() < 700, "{}", err.message().len());
    }

    #[test]
    fn read_tail_keeps_the_last_bytes_whatever_the_read_sizes() {
        let data: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
        for keep in [1, 100, 4096, 60_000] {
            let got = read_tail(&mut &data[..], keep);
            assert_eq!(got, &data[data.len().saturating_sub(keep)..], "keep {keep}");
        }
    }

    /// A fresh temporary file path for a script to write into.
    fn temp_path(name: &str) -> std::path::PathBuf {
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        std::env::temp_dir().join(format!("mykafkams-exec-{}-{n}-{name}", std::process::id()))
    }

    /// Whether `pid` is still a live process (a zombie waiting for its
    /// parent to reap it is dead already).
    fn alive(pid: u32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            // "pid (comm) S ...": the state follows the last ')'.
            Ok(stat) => !stat[stat.rfind(')').unwrap() + 1..]
                .trim_start()
                .starts_with(['Z', 'X']),
            Err(_) => false,
        }
    }

    /// Whether `pid` is dead within a moment (a SIGKILLed process may still
    /// be on its way out when the pipe it held has closed).
    fn dies_soon(pid: u32) -> bool {
        let until = Instant::now() + Duration::from_secs(2);
        while alive(pid) {
            if Instant::now() > until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }

    /// Runs `script` with a short timeout; returns the error and how long
    /// the call took.
    fn run_hung(script: &str) -> (Result<(), HandlerError>, Duration) {
        let h = sh(script).with_timeout(Duration::from_millis(300));
        let t = Instant::now();
        let r = h.handle(&msg());
        (r, t.elapsed())
    }

    /// The pid a script wrote to `path`, waiting for it to appear.
    fn pid_in(path: &std::path::Path) -> u32 {
        let pid = std::fs::read_to_string(path).expect("the script wrote the pid");
        std::fs::remove_file(path).unwrap();
        pid.trim().parse().unwrap()
    }

    #[test]
    fn a_hung_command_is_killed_at_its_timeout_and_fails_retryably() {
        let (r, took) = run_hung("sleep 30");
        let err = r.unwrap_err();
        assert!(took < Duration::from_secs(5), "took {took:?}");
        assert!(took >= Duration::from_millis(300), "took {took:?}");
        assert!(err.message().contains("timed out after 300ms"), "{err}");
        assert!(!err.is_permanent(), "a timeout is retried: {err}");
        assert_eq!(err.detail(HEADER_EXIT_CODE), None, "killed: no exit code");
    }

    #[test]
    fn a_timeout_kills_the_commands_whole_process_group() {
        let pidfile = temp_path("grandchild");
        // The background sleep holds our stderr pipe open as well.
        let (r, took) = run_hung(&format!("sleep 30 & echo $! > {}; wait", pidfile.display()));
        let err = r.unwrap_err();
        assert!(took < Duration::from_secs(5), "took {took:?}");
        assert!(err.message().contains("timed out"), "{err}");
        let pid = pid_in(&pidfile);
        // Killed by the call (else it would sleep on for 30 s).
        assert!(dies_soon(pid), "grandchild {pid} survived the timeout");
    }

    #[test]
    fn what_a_finished_command_left_holding_stderr_is_killed_at_the_timeout() {
        let pidfile = temp_path("leftover");
        let (r, took) = run_hung(&format!(
            "sleep 30 & echo $! > {}; exit 0",
            pidfile.display()
        ));
        // The command itself succeeded: its exit status decides.
        r.unwrap();
        assert!(took < Duration::from_secs(5), "took {took:?}");
        let pid = pid_in(&pidfile);
        assert!(dies_soon(pid), "leftover {pid} still runs");
    }

    #[test]
    fn a_command_that_never_reads_a_large_value_still_times_out() {
        let mut m = msg();
        // Far more than a pipe holds: the write blocks until the kill.
        m.value = Some(Bytes::from(vec![b'x'; 1 << 20]));
        let h = sh("sleep 30").with_timeout(Duration::from_millis(300));
        let t = Instant::now();
        let err = h.handle(&m).unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        assert!(err.message().contains("timed out"), "{err}");
    }
}
