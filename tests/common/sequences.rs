//! Keyed input lines that carry per-key sequence numbers, and the checks on
//! what came back: the topic's log (every line exactly once, each key in
//! order), a consumer's output (every line at least once, each key in
//! order), and the producer's `--report` (each line acknowledged once, at an
//! offset that holds it).

use std::collections::{HashMap, HashSet};
use std::path::Path;

use super::{consumer, output_within, unique};

/// Line `i` (0-based) of the input: key `k<i % keys>`, value
/// `k<i % keys>:<i / keys>`, so each key's values count 0, 1, 2, ...
pub fn keyed_line(i: usize, keys: usize) -> String {
    format!("k{}|{}", i % keys, value_of(i, keys))
}

/// The value line `i` carries.
pub fn value_of(i: usize, keys: usize) -> String {
    format!("k{}:{}", i % keys, i / keys)
}

/// Lines `range` of the input, each ending in a newline, for `--key-separator '|'`.
pub fn keyed_input(range: std::ops::Range<usize>, keys: usize) -> String {
    range.map(|i| keyed_line(i, keys) + "\n").collect()
}

/// A record as the consumer's `--format text` prints it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: String,
    pub value: String,
}

impl Record {
    /// Parses `partition<TAB>offset<TAB>key<TAB>value`.
    pub fn parse(line: &str) -> Option<Record> {
        let mut f = line.splitn(4, '\t');
        Some(Record {
            partition: f.next()?.parse().ok()?,
            offset: f.next()?.parse().ok()?,
            key: f.next()?.to_string(),
            value: f.next()?.to_string(),
        })
    }
}

/// Everything `topic` holds, read from the start with our consumer (every
/// partition, no group membership, `--exit-at-end`), in (partition, offset)
/// order: the log as the broker keeps it.
pub fn read_log(bootstrap: &str, topic: &str) -> Vec<Record> {
    let mut cmd = consumer();
    cmd.args([bootstrap, topic, &unique("read-log")])
        .args(["--partitions", "all", "--from", "earliest", "--exit-at-end"])
        .args(["--format", "text", "--stats-interval", "0"]);
    let out = output_within(cmd, 60);
    assert!(
        out.status.success(),
        "reading {topic} back failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut log: Vec<Record> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| Record::parse(l).unwrap_or_else(|| panic!("not a text record: {l:?}")))
        .collect();
    log.sort_by_key(|r| (r.partition, r.offset));
    log
}

/// How a stream of values compares with the first `lines` lines of the
/// input of `keys` keys.
#[derive(Debug, Default)]
pub struct Tally {
    /// Values in the stream.
    pub received: usize,
    /// Values received again (received − distinct).
    pub duplicates: usize,
    /// Input lines never received.
    pub missing: usize,
    /// Values that arrived before an earlier one of their key had arrived
    /// (the first copy of each counts; repeats never do).
    pub out_of_order: usize,
    /// Values that are no line of the input.
    pub foreign: usize,
    /// The first few problems, for the failure message.
    pub examples: Vec<String>,
}

impl Tally {
    pub fn of<'a>(values: impl IntoIterator<Item = &'a str>, lines: usize, keys: usize) -> Tally {
        let mut t = Tally::default();
        // Per key, the highest sequence number received so far.
        let mut highest: HashMap<usize, i64> = HashMap::new();
        let mut seen: HashSet<(usize, usize)> = HashSet::new();
        for v in values {
            t.received += 1;
            let parsed = v.split_once(':').and_then(|(k, seq)| {
                let k: usize = k.strip_prefix('k')?.parse().ok()?;
                let seq: usize = seq.parse().ok()?;
                (k < keys && seq * keys + k < lines).then_some((k, seq))
            });
            let Some((k, seq)) = parsed else {
                t.foreign += 1;
                t.note(format!("foreign value {v:?}"));
                continue;
            };
            if !seen.insert((k, seq)) {
                t.duplicates += 1;
                t.note(format!("{v} again"));
                continue;
            }
            let high = highest.entry(k).or_insert(-1);
            if seq as i64 != *high + 1 {
                t.out_of_order += 1;
                t.note(format!("{v} after k{k}:{high}"));
            }
            *high = (*high).max(seq as i64);
        }
        t.missing = lines - seen.len();
        if t.missing > 0 {
            let first = (0..lines).find(|i| !seen.contains(&(i % keys, i / keys)));
            t.note(format!(
                "{} lines missing, the first {:?}",
                t.missing,
                first.map(|i| value_of(i, keys))
            ));
        }
        t
    }

    fn note(&mut self, problem: String) {
        if self.examples.len() < 8 {
            self.examples.push(problem);
        }
    }

    /// Every line once, each key's lines in input order.
    pub fn exactly_once_in_order(&self) -> bool {
        self.duplicates == 0 && self.is_complete_in_order()
    }

    /// Every line at least once; each key's lines first arrive in input order.
    pub fn is_complete_in_order(&self) -> bool {
        self.missing == 0 && self.out_of_order == 0 && self.foreign == 0
    }
}

/// What `--report` says of one input line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ack {
    /// Acknowledged at this partition and offset (-1 with acks=0).
    At(i32, i64),
    /// Not acknowledged, with the producer's reason.
    Failed(String),
}

/// Reads a `--report` file: `<line>\t<partition>\t<offset>` or
/// `<line>\terror\t<message>`, line numbers counted from 1.
pub fn read_report(path: &Path) -> Vec<(usize, Ack)> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("no report at {}: {e}", path.display()));
    text.lines()
        .map(|l| {
            let parse = || {
                let mut f = l.splitn(3, '\t');
                let line: usize = f.next()?.parse().ok()?;
                let (a, b) = (f.next()?, f.next()?);
                if a == "error" {
                    return Some((line, Ack::Failed(b.to_string())));
                }
                Some((line, Ack::At(a.parse().ok()?, b.parse().ok()?)))
            };
            parse().unwrap_or_else(|| panic!("malformed report line {l:?}"))
        })
        .collect()
}

/// What is wrong with the report of a run of `lines` input lines, against
/// the `log` the topic holds: a line reported other than once, reported as
/// failed, or acknowledged at an offset that does not hold it. At most a few
/// examples, plus a count.
pub fn report_problems(
    report: &[(usize, Ack)],
    lines: usize,
    keys: usize,
    log: &[Record],
) -> Vec<String> {
    let at: HashMap<(i32, i64), &str> = log
        .iter()
        .map(|r| ((r.partition, r.offset), r.value.as_str()))
        .collect();
    let mut times = vec![0usize; lines + 1];
    let mut problems = Vec::new();
    for (line, ack) in report {
        if *line == 0 || *line > lines {
            problems.push(format!("line {line} is no input line (1..={lines})"));
            continue;
        }
        times[*line] += 1;
        let want = value_of(line - 1, keys);
        match ack {
            Ack::Failed(why) => problems.push(format!("line {line} failed: {why}")),
            Ack::At(p, o) => match at.get(&(*p, *o)) {
                Some(v) if *v == want => {}
                held => problems.push(format!(
                    "line {line} ({want}) acknowledged at {p}/{o}, which holds {held:?}"
                )),
            },
        }
    }
    for (line, n) in times.iter().enumerate().skip(1) {
        if *n != 1 {
            problems.push(format!("line {line} reported {n} times"));
        }
    }
    let total = problems.len();
    problems.truncate(8);
    if total > problems.len() {
        problems.push(format!("... {total} problems in all"));
    }
    problems
}
