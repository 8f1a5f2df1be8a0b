//! The loops' one source of randomness: a small seeded generator, and the
//! seed each loop prints so a failing run can be repeated
//! (`MYKAFKAMS_CHAOS_SEED`).

use std::time::Duration;

/// A small seeded generator (SplitMix64): the same seed draws the same
/// kill points, storm events and faults.
pub struct Rng(u64);

impl Rng {
    /// A generator started at `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The generator of loop `name`, from [`seed`].
    pub fn for_loop(name: &str, default: Option<u64>) -> Self {
        Rng::new(seed(name, default))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `lo..=hi` (`lo` when `hi <= lo`).
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.below(hi - lo + 1)
    }

    /// Uniform in `lo..=hi` milliseconds.
    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(self.between(lo, hi))
    }
}

/// The seed of loop `name`: `MYKAFKAMS_CHAOS_SEED` if set, else `default`,
/// else one from the clock. Printed, so a failing run can be repeated.
pub fn seed(name: &str, default: Option<u64>) -> u64 {
    let seed = std::env::var("MYKAFKAMS_CHAOS_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .or(default)
        .unwrap_or_else(|| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            (nanos as u64) ^ u64::from(std::process::id())
        });
    eprintln!("chaos {name}: seed {seed} (repeat with MYKAFKAMS_CHAOS_SEED={seed})");
    seed
}
