//! The fault loops of issue 15: every guarantee MyKafkaMS states, exercised
//! against a real broker while something goes wrong on purpose, and
//! measured as one table row per loop (lost, order violations, duplicates).
//!
//! `cargo test` (and so `just test`) runs the short version of each loop;
//! `just test-chaos` runs the full one (`MYKAFKAMS_CHAOS=full`) and prints
//! the table of every row written to `target/chaos/rows.tsv`.
//!
//! Every loop produces keyed sequences (`acct-<k>` → `acct-<k>:<seq>`), runs
//! consumers that print what they handle, and feeds each consumer life's
//! output to the [`ledger::Ledger`], which counts what was lost, handled
//! out of order, or handled twice.

#[path = "../common/mod.rs"]
mod common;

mod ledger;
mod rng;
mod table;

mod brokers;
mod connection;
mod sigkill;
mod storms;
mod stuck;

/// Takes the loops' turn: a loop that measures throughput or timing, or
/// starts brokers of its own, holds it so the others (run in parallel by
/// `cargo test`) do not starve it of the machine's two cores.
pub fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}

/// How long the loops run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scale {
    /// Part of `just test`: a few iterations, seconds per loop.
    Short,
    /// `just test-chaos`: the sizes (300,000 messages, 8 kills, ...).
    Full,
}

/// `MYKAFKAMS_CHAOS=full` selects the full loops; anything else the short ones.
pub fn scale() -> Scale {
    match std::env::var("MYKAFKAMS_CHAOS").as_deref() {
        Ok("full") => Scale::Full,
        _ => Scale::Short,
    }
}

impl Scale {
    /// `short` or `full`, for the table.
    pub fn label(self) -> &'static str {
        match self {
            Scale::Short => "short",
            Scale::Full => "full",
        }
    }

    /// `short` when short, else `full`: picks a size per scale.
    pub fn pick<T>(self, short: T, full: T) -> T {
        match self {
            Scale::Short => short,
            Scale::Full => full,
        }
    }
}
