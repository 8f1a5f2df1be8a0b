//! Counts what a fault loop lost, reordered and repeated.
//!
//! The input is `keys` × `per_key` keyed sequences (`acct-<k>:<seq>`, seq
//! 0.. in produce order per key). Each consumer *life* (one process from
//! start to exit or kill, or one group member's run) hands the ledger what
//! it handled, in the order it printed it.
//!
//! * **Lost**: a (key, seq) no life handled by the end.
//! * **Duplicate**: every handling of a (key, seq) after its first.
//! * **Order violation**: within one life, a key's handlings must go
//!   forward: a seq at or below the previous one of that key in that life
//!   is a violation. When lives run one after another (`sequential`), a
//!   life may also skip ahead only over seqs some life handled before
//!   (what the offset map skips); skipping a seq nobody handled yet is a
//!   violation too, even if a later life handles it.
//! * **Rewind**: a member that the group fenced drops its partitions
//!   uncommitted and, given them back, starts again from the committed
//!   offset, as a restarted process would: within one process, a second
//!   life. [`Ledger::life_rejoined`] takes such a process's handlings:
//!   a key going back to a seq handled before counts as a rewind (its
//!   repeats as duplicates), not a violation; skipping a seq nobody handled
//!   is still one. Only a loop whose consumer logged such a fence may use it.

use std::collections::HashMap;

/// What every life so far handled.
pub struct Ledger {
    keys: usize,
    per_key: u64,
    /// key → handle count per seq.
    handled: HashMap<String, Vec<u32>>,
    total: u64,
    violations: u64,
    rewinds: u64,
    /// The first few violations, for the failure message.
    examples: Vec<String>,
    lives: u64,
}

/// The counts a loop reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Messages produced (`keys` × `per_key`).
    pub messages: u64,
    /// Handlings in all (first ones and repeats).
    pub handled: u64,
    /// (key, seq) never handled.
    pub lost: u64,
    /// Handlings after the first of a (key, seq).
    pub duplicates: u64,
    /// Handlings out of per-key order (see the module docs).
    pub order_violations: u64,
    /// Keys that went back to a seq handled before, within a life fed
    /// through [`Ledger::life_rejoined`] (see the module docs).
    pub rewinds: u64,
    /// Lives fed to the ledger.
    pub lives: u64,
}

impl Counts {
    /// Duplicates as a percentage of the messages.
    pub fn duplicate_pct(&self) -> f64 {
        if self.messages == 0 {
            0.0
        } else {
            self.duplicates as f64 * 100.0 / self.messages as f64
        }
    }
}

/// `acct-7:42` → ("acct-7", 42); `None` for anything else (a line cut off
/// by a kill).
pub fn parse_value(value: &str) -> Option<(&str, u64)> {
    let (k, s) = value.rsplit_once(':')?;
    Some((k, s.parse().ok()?))
}

impl Ledger {
    /// A ledger for `keys` keys of `per_key` messages each.
    pub fn new(keys: usize, per_key: u64) -> Self {
        Self {
            keys,
            per_key,
            handled: HashMap::new(),
            total: 0,
            violations: 0,
            rewinds: 0,
            examples: Vec::new(),
            lives: 0,
        }
    }

    fn violation(&mut self, what: String) {
        self.violations += 1;
        if self.examples.len() < 5 {
            self.examples.push(what);
        }
    }

    /// Feeds one life's handlings, in the order that life made them.
    /// `sequential`: no other life ran at the same time, so skipping ahead
    /// over a seq no earlier life handled is a violation.
    pub fn life<'a>(&mut self, values: impl IntoIterator<Item = &'a str>, sequential: bool) {
        self.feed(values, sequential, false);
    }

    /// Feeds the handlings of one process that the group fenced and that
    /// rejoined (its log says so), as a sequential life in which a key may
    /// go back to a seq handled before: a rewind (see the module docs).
    pub fn life_rejoined<'a>(&mut self, values: impl IntoIterator<Item = &'a str>) {
        self.feed(values, true, true);
    }

    fn feed<'a>(
        &mut self,
        values: impl IntoIterator<Item = &'a str>,
        sequential: bool,
        rewinds: bool,
    ) {
        self.lives += 1;
        let life = self.lives;
        let mut last: HashMap<String, u64> = HashMap::new();
        let mut seen: Vec<(String, u64)> = Vec::new();
        for v in values {
            let Some((key, seq)) = parse_value(v) else {
                continue;
            };
            if seq >= self.per_key {
                self.violation(format!("life {life}: {key}:{seq} was never produced"));
                continue;
            }
            let prev = last.get(key).copied();
            let handled_before = |ledger: &Self, seen: &[(String, u64)], s: u64| {
                ledger
                    .handled
                    .get(key)
                    .and_then(|c| c.get(s as usize))
                    .is_some_and(|c| *c > 0)
                    // Without rewinds a key only goes forward, so what it
                    // skips cannot be in this life's own handlings.
                    || (rewinds && seen.iter().any(|(k, q)| k == key && *q == s))
            };
            if let Some(prev) = prev
                && seq <= prev
            {
                if rewinds && handled_before(self, &seen, seq) {
                    self.rewinds += 1;
                } else {
                    self.violation(format!("life {life}: {key}:{seq} after {key}:{prev}"));
                }
            } else if sequential {
                // Every seq skipped over (since this life's previous one of
                // the key, or from 0) must have been handled before: by an
                // earlier life, or by this one before a rewind.
                let from = prev.map_or(0, |p| p + 1);
                if let Some(gap) = (from..seq).find(|s| !handled_before(self, &seen, *s)) {
                    self.violation(format!(
                        "life {life}: {key}:{seq} handled before {key}:{gap}"
                    ));
                }
            }
            last.insert(key.to_string(), seq);
            seen.push((key.to_string(), seq));
        }
        // Counted after the life, so a life's own repeats are judged above
        // against what earlier lives did.
        for (key, seq) in seen {
            let slots = self
                .handled
                .entry(key)
                .or_insert_with(|| vec![0; self.per_key as usize]);
            slots[seq as usize] += 1;
            self.total += 1;
        }
    }

    /// The counts so far.
    pub fn counts(&self) -> Counts {
        let mut distinct = 0u64;
        for slots in self.handled.values() {
            distinct += slots.iter().filter(|c| **c > 0).count() as u64;
        }
        let messages = self.keys as u64 * self.per_key;
        Counts {
            messages,
            handled: self.total,
            lost: messages - distinct.min(messages),
            duplicates: self.total - distinct,
            order_violations: self.violations,
            rewinds: self.rewinds,
            lives: self.lives,
        }
    }

    /// Up to five violations, for a failure message.
    pub fn examples(&self) -> &[String] {
        &self.examples
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_lost_duplicates_and_order() {
        let mut l = Ledger::new(2, 3);
        l.life(["acct-0:0", "acct-1:0", "acct-0:1"], true);
        // A restart redelivers acct-0:1, then goes on.
        l.life(["acct-0:1", "acct-0:2", "acct-1:1"], true);
        let c = l.counts();
        assert_eq!(c.messages, 6);
        assert_eq!(c.lost, 1, "acct-1:2 never handled");
        assert_eq!(c.duplicates, 1);
        assert_eq!(c.order_violations, 0, "{:?}", l.examples());
    }

    #[test]
    fn going_back_or_skipping_an_unhandled_seq_is_a_violation() {
        let mut l = Ledger::new(1, 4);
        l.life(["acct-0:0", "acct-0:2"], true);
        assert_eq!(l.counts().order_violations, 1, "skipped acct-0:1");
        // acct-0:3 skips acct-0:1, which no life handled; then going back.
        l.life(["acct-0:3", "acct-0:1"], true);
        assert_eq!(
            l.counts().order_violations,
            3,
            "skipped ahead, then went back"
        );
    }

    #[test]
    fn skipping_what_an_earlier_life_handled_is_fine() {
        let mut l = Ledger::new(1, 4);
        l.life(["acct-0:0", "acct-0:1", "acct-0:2"], true);
        // The map said 1 and 2 were done: the restart goes 0 → 3.
        l.life(["acct-0:0", "acct-0:3"], true);
        let c = l.counts();
        assert_eq!((c.lost, c.duplicates, c.order_violations), (0, 1, 0));
    }

    #[test]
    fn a_rejoined_member_may_rewind_to_what_it_handled_but_not_skip() {
        let mut l = Ledger::new(1, 6);
        // Fenced after 0..=3 with 0 committed: given the partition back it
        // starts again at 1, then goes on.
        l.life_rejoined([
            "acct-0:0", "acct-0:1", "acct-0:2", "acct-0:3", "acct-0:1", "acct-0:2", "acct-0:3",
            "acct-0:4",
        ]);
        let c = l.counts();
        assert_eq!((c.rewinds, c.duplicates, c.order_violations), (1, 3, 0));
        // Going back to a seq nobody handled, or skipping one, still is a violation.
        let mut l = Ledger::new(1, 6);
        l.life_rejoined(["acct-0:0", "acct-0:2", "acct-0:1"]);
        assert_eq!(l.counts().order_violations, 2, "{:?}", l.examples());
        // A plain life may not rewind at all.
        let mut l = Ledger::new(1, 6);
        l.life(["acct-0:0", "acct-0:1", "acct-0:0"], true);
        assert_eq!((l.counts().order_violations, l.counts().rewinds), (1, 0));
    }
}
