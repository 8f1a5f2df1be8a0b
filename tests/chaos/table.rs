//! One row per fault loop, appended to `target/chaos/rows.tsv` (which
//! `just test-chaos` prints as the table) and printed to stderr.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use crate::ledger::Counts;

/// One loop's result.
pub struct Row<'a> {
    /// The loop, e.g. `sigkill (group)`.
    pub name: &'a str,
    /// Kills, rebalances, faults... whatever the loop repeats.
    pub iterations: u64,
    /// The ledger's counts.
    pub counts: Counts,
    /// The whole loop's wall time.
    pub wall: Duration,
    /// What the loop must meet, e.g. `0 lost, 0 order, dup <= 1%`.
    pub target: &'a str,
    /// Anything else worth a column (e.g. the other keys' throughput).
    pub note: String,
}

/// Where the rows go: `$CARGO_TARGET_DIR` or `target/`, then `chaos/rows.tsv`.
pub fn rows_file() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("chaos").join("rows.tsv")
}

/// Appends `row` (tab-separated) to [`rows_file`] and prints it.
pub fn record(row: &Row<'_>) {
    let c = &row.counts;
    let line = format!(
        "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{} ({:.2}%)\t{:.1} s\t{}\t{}",
        row.name,
        crate::scale().label(),
        row.iterations,
        c.messages,
        c.handled,
        c.lost,
        c.order_violations,
        c.duplicates,
        c.duplicate_pct(),
        row.wall.as_secs_f64(),
        row.target,
        row.note,
    );
    eprintln!("chaos row: {line}");
    let path = rows_file();
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
    {
        let _ = writeln!(f, "{line}");
    }
}
