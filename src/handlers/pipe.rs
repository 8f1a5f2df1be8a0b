//! `--handler pipe -- CMD [ARGS]`: handlers in any language, started once.
//!
//! `processes` long-lived copies of the command each read one JSON object
//! per line on stdin (one message: its id, topic, partition, offset, key,
//! value, headers, timestamp and attempt; the README has the format) and
//! answer one line per message on stdout, in any order:
//! `{"id": 17, "status": "ok"}`, `"retry"` or `"fail"`, with an optional
//! `"reason"`. `ok` finishes the message, `retry` is a handler error (retried
//! with backoff, then the failure policy), `fail` goes to the failure policy
//! at once.
//!
//! Each process has at most `inflight` messages outstanding, always of
//! distinct keys: the pool never runs two messages of one key at once, and a
//! process that misses a deadline is killed before its message can be
//! retried elsewhere. So an asyncio or Node handler gets concurrency without
//! threads, and per-key order holds.
//!
//! A process that exits, or writes a line that does not parse or names an
//! id it was not given, is logged in one line, killed, and started again
//! with backoff; its outstanding messages fail (and are retried). Its stderr
//! goes to our log, line by line, prefixed with its pid.
//!
//! It is an [`AsyncHandler`]: a message waiting for its answer is a future,
//! not a blocked worker thread, so `processes × inflight` messages in flight
//! cost no threads beyond each process's writer, reader and stderr threads.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;
use tokio::sync::{Notify, oneshot};

use super::json::write_pipe_request;
use crate::message::Message;
use crate::pool::{AsyncHandler, HandlerError};

/// First wait before a failed process is started again; doubles per
/// consecutive failure up to [`MAX_RESTART_BACKOFF`].
const RESTART_BACKOFF: Duration = Duration::from_millis(100);

/// Longest wait before a failed process is started again.
const MAX_RESTART_BACKOFF: Duration = Duration::from_secs(10);

/// How long closing waits for a process to exit after its stdin closed.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// How `--handler pipe` runs its processes.
#[derive(Clone, Debug)]
pub struct PipeConfig {
    /// The program and its arguments.
    pub command: Vec<String>,
    /// Processes to keep running (at least 1).
    pub processes: usize,
    /// Messages outstanding per process at most (at least 1).
    pub inflight: usize,
    /// A message without an answer after this long fails, and its process is
    /// replaced.
    pub timeout: Duration,
}

/// The handler: hands each message to a process with room and awaits its
/// answer. Run it with an async pool of `processes × inflight` concurrency
/// to fill every process.
pub struct PipeHandler {
    shared: Arc<Shared>,
}

struct Shared {
    cfg: PipeConfig,
    state: Mutex<State>,
    /// A process got room, or may be started again.
    room: Notify,
    next_id: AtomicU64,
}

#[derive(Default)]
struct State {
    procs: Vec<Proc>,
    closing: bool,
}

/// One of the `processes` places; the process in it is replaced when it
/// fails.
#[derive(Default)]
struct Proc {
    live: Option<Live>,
    /// Waiting messages by id: of the live process only.
    outstanding: HashMap<u64, oneshot::Sender<Answer>>,
    /// Bumped per process started here: a late event of a replaced process
    /// is recognised and ignored.
    generation: u64,
    /// Consecutive failures, for the restart backoff.
    failures: u32,
    /// Not started again before this.
    restart_at: Option<Instant>,
}

struct Live {
    pid: u32,
    /// Lines for the writer thread (dropping it closes the process's stdin).
    lines: Sender<Vec<u8>>,
    child: Arc<Mutex<Child>>,
}

/// What a waiting worker is told.
enum Answer {
    Ok,
    Retry(String),
    Fail(String),
    /// The process failed before answering.
    Lost(String),
}

impl PipeHandler {
    /// Starts the processes. Fails (one line) when the command is empty or
    /// cannot be started.
    pub fn start(mut cfg: PipeConfig) -> Result<Self, String> {
        if cfg.command.is_empty() {
            return Err(
                "--handler pipe needs a command after `--`, e.g. -- python3 handler.py".into(),
            );
        }
        cfg.processes = cfg.processes.max(1);
        cfg.inflight = cfg.inflight.max(1);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                procs: (0..cfg.processes).map(|_| Proc::default()).collect(),
                closing: false,
            }),
            cfg,
            room: Notify::new(),
            next_id: AtomicU64::new(1),
        });
        {
            let mut st = shared.state.lock();
            for i in 0..shared.cfg.processes {
                spawn(&shared, &mut st, i)?;
            }
        }
        Ok(Self { shared })
    }

    /// Sends `msg` to a process with room and awaits the answer.
    async fn call(&self, msg: &Message, attempt: u32) -> Result<(), HandlerError> {
        let sh = &self.shared;
        let id = sh.next_id.fetch_add(1, Ordering::Relaxed);
        let mut line = Vec::new();
        write_pipe_request(msg, id, attempt, &mut line);
        let (index, generation, mut answer) = self.submit(id, line).await?;
        // Dropped with this future (the pool's own timeout, a shutdown)
        // while the process may still work on the message: the process is
        // replaced, so a retry never runs beside it (per-key order) and
        // its place is not held forever.
        let mut cancelled = Cancelled {
            sh,
            index,
            generation,
            id,
            armed: true,
        };
        let outcome = match tokio::time::timeout(sh.cfg.timeout, &mut answer).await {
            Ok(Ok(a)) => a,
            Ok(Err(_)) => Answer::Lost("the pipe handler closed".into()),
            Err(_) => {
                let mut st = sh.state.lock();
                cancelled.armed = false;
                // Answered just now, or its process already failed?
                match answer.try_recv() {
                    Ok(a) => a,
                    Err(_) => {
                        let what = format!(
                            "no answer for {}/{}@{} within {:?}",
                            msg.topic, msg.partition, msg.offset, sh.cfg.timeout
                        );
                        fail_process(sh, &mut st, index, generation, &what);
                        Answer::Lost(what)
                    }
                }
            }
        };
        cancelled.armed = false;
        match outcome {
            Answer::Ok => Ok(()),
            Answer::Retry(reason) => {
                Err(HandlerError::new(format!("pipe handler: retry: {reason}")))
            }
            Answer::Fail(reason) => Err(HandlerError::permanent(format!(
                "pipe handler: fail: {reason}"
            ))),
            Answer::Lost(reason) => Err(HandlerError::new(format!("pipe handler: {reason}"))),
        }
    }

    /// Registers message `id` with the least busy live process that has
    /// room (starting a failed one again when its backoff is over, waiting
    /// when none has room) and queues its line.
    async fn submit(
        &self,
        id: u64,
        line: Vec<u8>,
    ) -> Result<(usize, u64, oneshot::Receiver<Answer>), HandlerError> {
        let sh = &self.shared;
        let mut line = Some(line);
        loop {
            // Registered before the check, so room made in between wakes us.
            let mut room = std::pin::pin!(sh.room.notified());
            room.as_mut().enable();
            let wake = {
                let mut st = sh.state.lock();
                if st.closing {
                    return Err(HandlerError::new("pipe handler: closing"));
                }
                let now = Instant::now();
                let best = st
                    .procs
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| p.live.is_some() && p.outstanding.len() < sh.cfg.inflight)
                    .min_by_key(|(_, p)| p.outstanding.len())
                    .map(|(i, _)| i);
                if let Some(i) = best {
                    let (tx, rx) = oneshot::channel();
                    let p = &mut st.procs[i];
                    p.outstanding.insert(id, tx);
                    let live = p.live.as_ref().expect("filtered on live");
                    // A send fails only once the writer is gone, i.e. the
                    // process failed: its reader then fails what is outstanding.
                    let _ = live.lines.send(line.take().expect("sent once"));
                    return Ok((i, p.generation, rx));
                }
                let due = st
                    .procs
                    .iter()
                    .position(|p| p.live.is_none() && p.restart_at.is_none_or(|t| t <= now));
                if let Some(i) = due {
                    if let Err(e) = spawn(sh, &mut st, i) {
                        return Err(HandlerError::new(e));
                    }
                    continue;
                }
                st.procs
                    .iter()
                    .filter_map(|p| p.restart_at.filter(|_| p.live.is_none()))
                    .min()
                    .unwrap_or(now + Duration::from_secs(1))
            };
            tokio::select! {
                _ = room => {}
                _ = tokio::time::sleep_until(wake.into()) => {}
            }
        }
    }
}

/// Replaces the process of a message whose wait was dropped before its
/// answer came (see [`PipeHandler::call`]).
struct Cancelled<'a> {
    sh: &'a Shared,
    index: usize,
    generation: u64,
    id: u64,
    armed: bool,
}

impl Drop for Cancelled<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut st = self.sh.state.lock();
        let p = &st.procs[self.index];
        if st.closing || p.generation != self.generation || !p.outstanding.contains_key(&self.id) {
            return; // Answered, or its process already failed.
        }
        let what = format!("the wait for message {} was cancelled", self.id);
        fail_process(self.sh, &mut st, self.index, self.generation, &what);
    }
}

impl AsyncHandler for PipeHandler {
    async fn handle(&self, msg: &Message) -> Result<(), HandlerError> {
        self.call(msg, 1).await
    }

    async fn handle_attempt(&self, msg: &Message, attempt: u32) -> Result<(), HandlerError> {
        self.call(msg, attempt).await
    }
}

impl Drop for PipeHandler {
    /// Closes every process's stdin, waits a little for them to exit, then
    /// kills what is left.
    fn drop(&mut self) {
        let lives: Vec<Live> = {
            let mut st = self.shared.state.lock();
            st.closing = true;
            st.procs.iter_mut().filter_map(|p| p.live.take()).collect()
        };
        self.shared.room.notify_waiters();
        let deadline = Instant::now() + CLOSE_GRACE;
        for live in lives {
            drop(live.lines);
            let mut child = live.child.lock();
            while Instant::now() < deadline {
                match child.try_wait() {
                    Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                    _ => break,
                }
            }
            if !matches!(child.try_wait(), Ok(Some(_))) {
                tracing::warn!(
                    pid = live.pid,
                    "pipe process did not exit within {CLOSE_GRACE:?} of its input closing: killing it"
                );
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Starts the process of place `i` with its writer, reader and stderr
/// threads. Caller holds the lock.
fn spawn(sh: &Arc<Shared>, st: &mut State, i: usize) -> Result<(), String> {
    let (program, args) = sh.cfg.command.split_first().expect("checked non-empty");
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            let p = &mut st.procs[i];
            p.failures += 1;
            p.restart_at = Some(Instant::now() + backoff(p.failures));
            format!("cannot start pipe handler '{program}': {e}")
        })?;
    let pid = child.id();
    let stdin = child.stdin.take().expect("piped");
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let child = Arc::new(Mutex::new(child));
    let (lines, queued) = crossbeam_channel::unbounded();
    let p = &mut st.procs[i];
    p.generation += 1;
    p.restart_at = None;
    p.live = Some(Live {
        pid,
        lines,
        child: Arc::clone(&child),
    });
    let generation = p.generation;
    tracing::debug!(pid, place = i, "pipe process started");
    std::thread::Builder::new()
        .name(format!("pipe-in-{pid}"))
        .spawn(move || write_lines(stdin, queued))
        .map_err(|e| format!("cannot start a pipe writer thread: {e}"))?;
    std::thread::Builder::new()
        .name(format!("pipe-err-{pid}"))
        .spawn(move || log_stderr(pid, stderr))
        .map_err(|e| format!("cannot start a pipe stderr thread: {e}"))?;
    let reader = Arc::clone(sh);
    std::thread::Builder::new()
        .name(format!("pipe-out-{pid}"))
        .spawn(move || read_answers(&reader, i, generation, stdout, &child))
        .map_err(|e| format!("cannot start a pipe reader thread: {e}"))?;
    Ok(())
}

/// The writer thread: writes queued lines, as many as are waiting in one
/// write, until the queue closes or the process stops reading.
fn write_lines(mut stdin: ChildStdin, queued: Receiver<Vec<u8>>) {
    let mut block = Vec::new();
    while let Ok(first) = queued.recv() {
        block.clear();
        block.extend_from_slice(&first);
        while let Ok(more) = queued.try_recv() {
            block.extend_from_slice(&more);
        }
        if stdin
            .write_all(&block)
            .and_then(|()| stdin.flush())
            .is_err()
        {
            // The process is gone; its reader reports it.
            return;
        }
    }
}

/// The stderr thread: each line to our log, prefixed with the pid.
fn log_stderr(pid: u32, stderr: impl Read) {
    for line in BufReader::new(stderr).lines() {
        match line {
            Ok(line) => tracing::info!("pipe[{pid}]: {line}"),
            Err(_) => return,
        }
    }
}

/// The reader thread: hands each answer to its waiting worker. On a line
/// that breaks the protocol, or the end of the output, the process is
/// killed and its place set to start again.
fn read_answers(
    sh: &Arc<Shared>,
    i: usize,
    generation: u64,
    stdout: impl Read,
    child: &Mutex<Child>,
) {
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    let trouble = loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => break None,
            Ok(_) => {}
            Err(e) => break Some(format!("reading its output failed: {e}")),
        }
        let (id, answer) = match parse_answer(line.trim_end()) {
            Ok(a) => a,
            Err(e) => break Some(e),
        };
        let mut st = sh.state.lock();
        let p = &mut st.procs[i];
        if p.generation != generation {
            return; // Replaced: whoever replaced it failed what it had.
        }
        let Some(waiter) = p.outstanding.remove(&id) else {
            break Some(format!(
                "it answered id {id}, which it was not given (or already answered)"
            ));
        };
        p.failures = 0;
        let _ = waiter.send(answer);
        drop(st);
        sh.room.notify_one();
    };
    // Kill first: a process that closed its stdout but runs on must not
    // keep its place (or block the wait below).
    let status = {
        let mut c = child.lock();
        let _ = c.kill();
        c.wait()
    };
    let mut st = sh.state.lock();
    if st.closing {
        return;
    }
    let what = match (trouble, status) {
        (Some(t), _) => t,
        (None, Ok(s)) => format!("it exited ({s})"),
        (None, Err(e)) => format!("it exited (status unknown: {e})"),
    };
    fail_process(sh, &mut st, i, generation, &what);
}

/// Takes place `i`'s process (of `generation`) out of service: kills it,
/// fails its outstanding messages (they are retried), and sets when it
/// starts again. Logs one line. Caller holds the lock.
fn fail_process(sh: &Shared, st: &mut State, i: usize, generation: u64, what: &str) {
    let p = &mut st.procs[i];
    if p.generation != generation {
        return;
    }
    let Some(live) = p.live.take() else { return };
    let _ = live.child.lock().kill();
    p.failures += 1;
    let wait = backoff(p.failures);
    p.restart_at = Some(Instant::now() + wait);
    let lost = p.outstanding.len();
    for (_, waiter) in p.outstanding.drain() {
        let _ = waiter.send(Answer::Lost(format!("process {} failed: {what}", live.pid)));
    }
    tracing::warn!(
        "pipe process {} failed: {what}; starting a new one in {wait:?} ({lost} outstanding message(s) will be retried)",
        live.pid
    );
    sh.room.notify_waiters();
}

/// The restart wait after `failures` consecutive failures.
fn backoff(failures: u32) -> Duration {
    RESTART_BACKOFF
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(MAX_RESTART_BACKOFF)
}

/// One answer line: its id and what it says.
fn parse_answer(line: &str) -> Result<(u64, Answer), String> {
    let v: serde_json::Value = serde_json::from_str(line)
        .map_err(|e| format!("it wrote a line that is not JSON ({e}): {}", clip(line)))?;
    let id = v
        .get("id")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| {
            format!(
                "it wrote an answer without a numeric \"id\": {}",
                clip(line)
            )
        })?;
    let reason = v
        .get("reason")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("no reason given")
        .to_string();
    let answer = match v.get("status").and_then(serde_json::Value::as_str) {
        Some("ok") => Answer::Ok,
        Some("retry") => Answer::Retry(reason),
        Some("fail") => Answer::Fail(reason),
        _ => {
            return Err(format!(
                "it wrote an answer whose \"status\" is not \"ok\", \"retry\" or \"fail\": {}",
                clip(line)
            ));
        }
    };
    Ok((id, answer))
}

/// At most 200 characters of `line`, for a log line.
fn clip(line: &str) -> String {
    match line.char_indices().nth(200) {
        Some((at, _)) => format!("{}...", &line[..at]),
        None => line.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse_and_bad_ones_say_why() {
        assert!(matches!(
            parse_answer(r#"{"id":3,"status":"ok"}"#),
            Ok((3, Answer::Ok))
        ));
        assert!(matches!(
            parse_answer(r#"{"id":4,"status":"retry","reason":"db down"}"#),
            Ok((4, Answer::Retry(r))) if r == "db down"
        ));
        assert!(matches!(
            parse_answer(r#"{"id":5,"status":"fail"}"#),
            Ok((5, Answer::Fail(_)))
        ));
        let err = |l: &str| parse_answer(l).err().unwrap();
        assert!(err("hello").contains("not JSON"), "{}", err("hello"));
        assert!(err(r#"{"status":"ok"}"#).contains("without a numeric \"id\""));
        assert!(err(r#"{"id":1,"status":"done"}"#).contains("\"status\" is not"));
    }

    #[test]
    fn restart_backoff_doubles_and_is_capped() {
        assert_eq!(backoff(1), RESTART_BACKOFF);
        assert_eq!(backoff(2), RESTART_BACKOFF * 2);
        assert_eq!(backoff(40), MAX_RESTART_BACKOFF);
    }
}
