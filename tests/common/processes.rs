//! Child processes of the fault tests: a producer or consumer killed if the
//! test fails first, its stderr collected in a thread, a group member whose
//! printed values arrive on a channel, and a feeder that writes keyed input
//! lines to a producer's stdin from a thread, a range at a time.

use std::io::{BufRead, BufReader, Read, Write};
use std::ops::Range;
use std::process::{Child, ChildStdin, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::sequences::{Record, keyed_input};
use super::{consumer, unique};

/// A child process killed if the test fails before it exits.
pub struct Running(pub Child);

impl Running {
    /// Waits for the exit, failing the test after `secs` seconds.
    pub fn wait_within(&mut self, secs: u64) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "no exit within {secs} s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Fails the test with why the producer stopped reading its input.
pub fn stopped_reading(producer: Running, log: JoinHandle<String>) -> ! {
    fail_with_log(producer, log, "the producer stopped reading its input")
}

/// Kills `child` (if it still runs) and fails the test with `why`, how the
/// child ended and its stderr.
pub fn fail_with_log(mut child: Running, log: JoinHandle<String>, why: &str) -> ! {
    let _ = child.0.kill();
    let status = child.0.wait().unwrap();
    panic!("{why} ({status}): {}", log.join().unwrap());
}

/// Collects a child's stderr in a thread.
pub fn collect(stream: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = BufReader::new(stream).read_to_string(&mut s);
        s
    })
}

/// A group member (our consumer binary) reading `topic`: the process, the
/// values it prints, as they come, and its stderr once it exits.
pub fn spawn_member(
    addr: &str,
    topic: &str,
) -> (Running, mpsc::Receiver<String>, JoinHandle<String>) {
    spawn_member_with(addr, topic, &unique("member"), &[])
}

/// Like [`spawn_member`], in `group` and with `extra` flags added.
pub fn spawn_member_with(
    addr: &str,
    topic: &str,
    group: &str,
    extra: &[&str],
) -> (Running, mpsc::Receiver<String>, JoinHandle<String>) {
    let mut cmd = consumer();
    cmd.args([addr, topic, group])
        .args(["--format", "text", "--stats-interval", "0"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut member = Running(cmd.spawn().unwrap());
    let stderr = collect(member.0.stderr.take().unwrap());
    let stdout = member.0.stdout.take().unwrap();
    let (tx, values) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let record =
                Record::parse(&line).unwrap_or_else(|| panic!("not a text record: {line:?}"));
            let _ = tx.send(record.value);
        }
    });
    (member, values, stderr)
}

/// Writes ranges of the keyed input to a producer's stdin from a thread, so
/// the test can crash the broker while the producer is blocked or busy.
pub struct Feeder {
    ranges: mpsc::Sender<Range<usize>>,
    written: mpsc::Receiver<()>,
    thread: JoinHandle<std::io::Result<()>>,
}

impl Feeder {
    pub fn start(mut stdin: ChildStdin, keys: usize) -> Feeder {
        let (ranges, todo) = mpsc::channel::<Range<usize>>();
        let (done, written) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            for range in todo {
                stdin.write_all(keyed_input(range, keys).as_bytes())?;
                let _ = done.send(());
            }
            Ok(()) // dropping stdin ends the producer's input
        });
        Feeder {
            ranges,
            written,
            thread,
        }
    }

    /// Queues input lines `range`.
    pub fn feed(&self, range: Range<usize>) {
        let _ = self.ranges.send(range);
    }

    /// Waits until the oldest range not yet waited for is in the pipe;
    /// false if the producer stopped reading (or exited) first.
    pub fn written(&self, secs: u64) -> bool {
        self.written.recv_timeout(Duration::from_secs(secs)).is_ok()
    }

    /// Closes the input once everything queued is written.
    pub fn close(self) -> std::io::Result<()> {
        drop(self.ranges);
        self.thread.join().unwrap()
    }

    /// Feeds lines `0..lines` at `rate` a second, `step` at a time, from a
    /// thread that closes the input at the end: a steady load to break
    /// things under.
    pub fn pace(self, lines: usize, rate: usize, step: usize) -> JoinHandle<std::io::Result<()>> {
        std::thread::spawn(move || {
            let started = Instant::now();
            let mut fed = 0;
            while fed < lines {
                let end = (fed + step).min(lines);
                self.feed(fed..end);
                fed = end;
                let due = started + Duration::from_secs_f64(fed as f64 / rate as f64);
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
            }
            self.close()
        })
    }
}
