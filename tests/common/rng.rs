//! A small deterministic PRNG, so failures replay from the seed.

/// A small deterministic PRNG (xorshift64*), so failures replay from the seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    /// Seed from `RUN_RECOVERY_SEED` or the clock; printed so a run can be replayed.
    pub fn from_env(what: &str) -> Rng {
        let seed = std::env::var("RUN_RECOVERY_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| run_recovery::now_ms() as u64);
        eprintln!("{what}: RUN_RECOVERY_SEED={seed}");
        Rng::new(seed)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// An integer from the environment, or `default`.
pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}
