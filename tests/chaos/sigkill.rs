//! Loop 1 of issue 15, the SIGKILL loop: a keyed stream pre-produced to a
//! topic of 6 partitions (1,000 keys; 300,000 messages at full scale,
//! 20,000 short) is read by the consumer binary (`--workers 16 --format
//! json`), which is killed with SIGKILL at random points and restarted each
//! time (8 kills at full scale, 2 or 3 short), until a last life with
//! `--exit-at-end` reads to the end. Two variants: manual assignment
//! (`--partitions all`, the group only keeps the commits) and a group
//! member (KIP-848), whose next life waits out the killed one's session.
//!
//! A kill lands after a random number of the current life's output lines
//! (drawn from a seeded generator: the seed is printed, and
//! `MYKAFKAMS_CHAOS_SEED` repeats it), so it always hits while messages
//! flow. Each life's printed values go to the [`Ledger`] as a sequential
//! life. Targets: 0 lost and 0 order violations (asserted), duplicates
//! ≤ 1 % of the messages (asserted too; it needs commits that keep up with
//! the rate and the offset map, issue 15).
//!
//! Also what the storms share: [`life_args`], [`extra_args`] and
//! [`Life`], one consumer process and the JSON lines it printed.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::common::processes::{Running, collect};
use crate::common::{consumer, produce_sequences, require_broker, signal, unique};
use crate::ledger::Ledger;
use crate::rng::Rng;
use crate::table::{self, Row};

/// The arguments of one consumer life: the broker, `topic`, `group`,
/// `flags` (assignment, group protocol and timing), `workers` workers
/// printing JSON lines and no progress lines, then [`extra_args`].
pub fn life_args(topic: &str, group: &str, workers: usize, flags: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec![require_broker(), topic.into(), group.into()];
    args.extend(flags.iter().map(|s| s.to_string()));
    let workers = workers.to_string();
    for a in [
        "--workers",
        &workers,
        "--format",
        "json",
        "--stats-interval",
        "0",
    ] {
        args.push(a.to_string());
    }
    args.extend(extra_args());
    args
}

/// Consumer flags every life of these loops gets besides its own:
/// `--commit-every 100` (a commit each 50 finished messages, and fewer than
/// 100 plus one worker's block finished and uncommitted: what a kill can
/// repeat), then the whitespace-separated words of `MYKAFKAMS_CHAOS_ARGS`
/// (e.g. `--commit-every 0 --offset-map-max-bytes 0`, to see what the loops
/// catch).
pub fn extra_args() -> Vec<String> {
    let mut args: Vec<String> = vec!["--commit-every".to_string(), "100".to_string()];
    if let Ok(more) = std::env::var("MYKAFKAMS_CHAOS_ARGS") {
        args.extend(more.split_whitespace().map(str::to_string));
    }
    args
}

/// One message a life printed: its partition and value.
#[derive(Clone, Debug)]
pub struct Handled {
    /// The partition it came from.
    pub partition: i32,
    /// Its value, `acct-<k>:<seq>` or `k<k>:<seq>`.
    pub value: String,
}

/// What the stdout reader of a life gathers.
#[derive(Default)]
struct Printed {
    /// Every parsed line, in printed order.
    handled: Vec<Handled>,
    /// A line that did not parse and was followed by another one: the
    /// output is corrupt (only the very last line may be cut by a kill).
    corrupt: Vec<String>,
    /// The last line, when it did not parse (cut off by a kill).
    cut_tail: Option<String>,
}

/// `{"partition":..,"value":"..",...}` → [`Handled`].
fn parse_json(line: &str) -> Option<Handled> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    Some(Handled {
        partition: i32::try_from(v.get("partition")?.as_i64()?).ok()?,
        value: v.get("value")?.as_str()?.to_string(),
    })
}

/// One consumer process from its start to its exit or kill, with its
/// printed JSON lines gathered by a thread as they come.
pub struct Life {
    /// The process (killed if the test fails first).
    proc: Running,
    /// What it printed so far.
    printed: Arc<Mutex<Printed>>,
    /// Lines printed so far (read without the lock).
    lines: Arc<AtomicUsize>,
    /// The stdout reader.
    stdout: JoinHandle<()>,
    /// Its stderr, once it exits.
    stderr: JoinHandle<String>,
}

/// A life that ended: how, what it handled, what it logged.
pub struct Ended {
    /// Its exit status.
    pub status: ExitStatus,
    /// What it printed, in order.
    pub handled: Vec<Handled>,
    /// Its stderr.
    pub stderr: String,
}

impl Ended {
    /// The printed values, in order, for the ledger.
    pub fn values(&self) -> impl Iterator<Item = &str> {
        self.handled.iter().map(|h| h.value.as_str())
    }
}

impl Life {
    /// Starts the consumer binary with `args` (`--format json` among them).
    /// Each printed value is also added to `seen`, when given.
    pub fn spawn(args: &[String], seen: Option<Arc<Mutex<HashSet<String>>>>) -> Life {
        let mut cmd = consumer();
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut proc = Running(cmd.spawn().expect("spawning the consumer"));
        let stderr = collect(proc.0.stderr.take().unwrap());
        let out = proc.0.stdout.take().unwrap();
        let printed = Arc::new(Mutex::new(Printed::default()));
        let lines = Arc::new(AtomicUsize::new(0));
        let (p, n) = (Arc::clone(&printed), Arc::clone(&lines));
        let stdout = std::thread::spawn(move || {
            for line in BufReader::new(out).split(b'\n').map_while(Result::ok) {
                let line = String::from_utf8_lossy(&line).into_owned();
                let mut p = p.lock().unwrap();
                if let Some(bad) = p.cut_tail.take() {
                    p.corrupt.push(bad);
                }
                match parse_json(&line) {
                    Some(h) => {
                        if let Some(seen) = &seen {
                            seen.lock().unwrap().insert(h.value.clone());
                        }
                        p.handled.push(h);
                    }
                    None => p.cut_tail = Some(line),
                }
                n.fetch_add(1, Ordering::Relaxed);
            }
        });
        Life {
            proc,
            printed,
            lines,
            stdout,
            stderr,
        }
    }

    /// Lines printed so far.
    pub fn lines(&self) -> usize {
        self.lines.load(Ordering::Relaxed)
    }

    /// Sends `sig` (SIGKILL, SIGTERM).
    pub fn signal(&self, sig: i32) {
        signal(&self.proc.0, sig);
    }

    /// Its exit status, if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.proc.0.try_wait().unwrap()
    }

    /// Waits until the life has printed `n` lines; fails the test if it
    /// exits first or prints nothing new for `stall`.
    pub fn wait_lines(&mut self, n: usize, stall: Duration) {
        let (mut last, mut since) = (self.lines(), Instant::now());
        while self.lines() < n {
            if let Some(status) = self.exited() {
                let stderr = self.stderr_now();
                panic!(
                    "consumer exited ({status}) after {} of {n} lines: {stderr}",
                    self.lines()
                );
            }
            if self.lines() != last {
                (last, since) = (self.lines(), Instant::now());
            }
            if since.elapsed() > stall {
                let stderr = self.stderr_now();
                panic!("consumer printed nothing for {stall:?} at {last} of {n} lines: {stderr}");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Kills the process (if it still runs) and returns its stderr, for a
    /// failure message.
    fn stderr_now(&mut self) -> String {
        let _ = self.proc.0.kill();
        let _ = self.proc.0.wait();
        let stderr = std::mem::replace(&mut self.stderr, std::thread::spawn(String::new));
        stderr.join().unwrap_or_default()
    }

    /// Waits for the exit (failing the test after `secs` seconds) and
    /// returns what the life printed. Only a killed life may end in a cut
    /// line; any other unparsable line fails the test.
    pub fn finish(mut self, secs: u64) -> Ended {
        let status = self.proc.wait_within(secs);
        self.stdout.join().expect("stdout reader");
        let stderr = self.stderr.join().unwrap_or_default();
        let printed = std::mem::take(&mut *self.printed.lock().unwrap());
        assert!(
            printed.corrupt.is_empty(),
            "unparsable output lines {:?}: {stderr}",
            printed.corrupt
        );
        if let Some(tail) = &printed.cut_tail {
            use std::os::unix::process::ExitStatusExt as _;
            assert_eq!(
                status.signal(),
                Some(libc::SIGKILL),
                "a cut last line {tail:?} from a consumer that was not killed ({status}): {stderr}"
            );
        }
        Ended {
            status,
            handled: printed.handled,
            stderr,
        }
    }
}

/// How the loop's consumer gets its partitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// `--partitions all`: manual assignment, the group only keeps commits.
    Manual,
    /// No PARTITION: a member of the group (KIP-848).
    Group,
}

/// Runs the SIGKILL loop in `mode`, records its row and asserts its targets.
fn sigkill_loop(mode: Mode) {
    // Duplicates depend on how fast commits come back: not beside another loop.
    let _turn = crate::one_at_a_time();
    let scale = crate::scale();
    // Short: a group member's lives after a kill each wait out a session
    // (10 s on the local broker), so that variant kills twice, not thrice.
    let short_kills = if mode == Mode::Group { 2 } else { 3 };
    let (keys, per_key, kills) = scale.pick((1000, 120, short_kills), (1000, 300, 8));
    let name = match mode {
        Mode::Manual => "sigkill (manual)",
        Mode::Group => "sigkill (group)",
    };
    let mut rng = Rng::for_loop(name, None);
    let started = Instant::now();
    let topic = unique("chaos-kill");
    let group = unique("chaos-kill-g");
    let messages = produce_sequences(&topic, 6, keys, per_key);
    let mode_args: &[&str] = match mode {
        Mode::Manual => &["--partitions", "all"],
        Mode::Group => &["--group-protocol", "consumer"],
    };
    let args = life_args(&topic, &group, 16, mode_args);

    let mut ledger = Ledger::new(keys, per_key as u64);
    // A group member's next life waits out the killed one's session (10 s
    // on the local broker) before it gets every partition.
    let stall = Duration::from_secs(60);
    let mut kill_points = Vec::new();
    for kill in 0..kills {
        // Spread the kills over what no life has handled yet.
        let left = ledger.counts().lost;
        let share = (left / (kills - kill + 1) as u64).max(2);
        let at = rng.between(share / 2, share * 3 / 2) as usize;
        let mut life = Life::spawn(&args, None);
        life.wait_lines(at, stall);
        life.signal(libc::SIGKILL);
        let ended = life.finish(30);
        kill_points.push(ended.handled.len());
        ledger.life(ended.values(), true);
    }
    let mut last_args = args.clone();
    last_args.push("--exit-at-end".to_string());
    let last = Life::spawn(&last_args, None).finish(scale.pick(180, 600));
    assert!(
        last.status.success(),
        "the last life ({}) failed: {}",
        last.status,
        last.stderr
    );
    ledger.life(last.values(), true);

    let counts = ledger.counts();
    assert_eq!(counts.messages, messages as u64);
    table::record(&Row {
        name,
        iterations: kills as u64,
        counts,
        wall: started.elapsed(),
        target: "0 lost, 0 order, dup <= 1%",
        note: format!(
            "lives printed {kill_points:?} then {}; extra flags {:?}",
            last.handled.len(),
            extra_args()
        ),
    });
    assert_eq!(counts.lost, 0, "{name}: lost messages");
    assert_eq!(
        counts.order_violations,
        0,
        "{name}: order violations, e.g. {:?}",
        ledger.examples()
    );
    // Workers claim work only while finished-and-uncommitted plus claimed
    // stay under `--commit-every 100`, so a kill repeats fewer than 100
    // plus a block of 3 (16 workers): at most 0.26 % of the short loop's
    // 120,000 over 3 kills, 0.28 % of the full one's 300,000 over 8. Both
    // hold the 1 %.
    let bound = 1.0;
    assert!(
        counts.duplicate_pct() <= bound,
        "{name}: {} duplicates ({:.2} % of {messages}; bound {bound} %)",
        counts.duplicates,
        counts.duplicate_pct()
    );
}

/// The SIGKILL loop with manual assignment (`--partitions all`).
#[test]
fn manual_assignment() {
    sigkill_loop(Mode::Manual);
}

/// The SIGKILL loop as a group member (KIP-848).
#[test]
fn group_member() {
    sigkill_loop(Mode::Group);
}
