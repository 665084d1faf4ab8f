//! Reconnect backoff: exponential growth with jitter, deterministic.
//!
//! Attempt `n` (counting from 0 since the last [`Backoff::reset`]) waits a
//! delay drawn uniformly from `[initial/2, min(max, initial * 2^n)]`: "full
//! jitter" spreads a fleet that lost its hub at the same instant over the
//! whole window, and the floor of half the initial delay keeps a node that
//! fails at once from reconnecting in a tight loop.
//!
//! The randomness comes from a small PRNG (splitmix64) seeded by the caller,
//! so that a simulation replays the same delays from the same seed. Nothing
//! here reads a clock or the operating system's entropy.

use crate::protocol::Millis;

/// Limits of the reconnect delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffConfig {
    /// Upper bound of the first delay, and twice its lower bound. Default 500 ms.
    pub initial_ms: Millis,
    /// Cap of every delay. Default 30 s.
    pub max_ms: Millis,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            initial_ms: 500,
            max_ms: 30_000,
        }
    }
}

/// Exponential backoff with full jitter and a floor; see the module docs.
///
/// Call order: [`next_delay`](Self::next_delay) each time an attempt failed,
/// [`reset`](Self::reset) once an attempt succeeded.
#[derive(Debug, Clone)]
pub struct Backoff {
    config: BackoffConfig,
    /// Attempts since the last reset.
    attempt: u32,
    rng: SplitMix64,
}

impl Backoff {
    /// A backoff at attempt 0 whose jitter is drawn from a PRNG seeded with
    /// `seed`: the same seed gives the same sequence of delays.
    pub fn new(config: BackoffConfig, seed: u64) -> Self {
        Self {
            config,
            attempt: 0,
            rng: SplitMix64::new(seed),
        }
    }

    /// The delay before the next attempt; advances the attempt count.
    ///
    /// Always within `[min(initial/2, max), max]`.
    pub fn next_delay(&mut self) -> Millis {
        let cap = self.cap();
        let floor = (self.config.initial_ms / 2).min(cap);
        self.attempt = self.attempt.saturating_add(1);
        floor + self.rng.below_inclusive(cap - floor)
    }

    /// Upper bound of the delay the next [`next_delay`](Self::next_delay)
    /// call returns: `min(max, initial * 2^attempt)`.
    pub fn cap(&self) -> Millis {
        let factor = 1u64.checked_shl(self.attempt).unwrap_or(u64::MAX);
        self.config
            .initial_ms
            .saturating_mul(factor)
            .min(self.config.max_ms)
    }

    /// Attempts counted since the last reset.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Starts again from the first attempt; the PRNG is not rewound.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// splitmix64 (Steele, Lea, Flood 2014): one add, three xor-shift-multiply
/// rounds; good enough statistics for jitter, and tiny.
#[derive(Debug, Clone)]
struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, bound]` by multiply-high (Lemire); the bias is below
    /// 2^-64 relative, far under anything a delay could show.
    fn below_inclusive(&mut self, bound: u64) -> u64 {
        let Some(range) = bound.checked_add(1) else {
            return self.next_u64();
        };
        ((u128::from(self.next_u64()) * u128::from(range)) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backoff(seed: u64) -> Backoff {
        Backoff::new(BackoffConfig::default(), seed)
    }

    #[test]
    fn delays_stay_between_floor_and_cap() {
        let config = BackoffConfig::default();
        for seed in 0..50 {
            let mut b = backoff(seed);
            for attempt in 0..40u32 {
                let cap = (config.initial_ms << attempt.min(20)).min(config.max_ms);
                assert_eq!(b.cap(), cap);
                let d = b.next_delay();
                assert!(d <= cap, "attempt {attempt}: {d} > cap {cap}");
                assert!(
                    d >= config.initial_ms / 2,
                    "attempt {attempt}: {d} too short"
                );
                assert!(d <= config.max_ms);
            }
        }
    }

    #[test]
    fn mean_delay_grows_with_attempts_until_the_cap() {
        let mut means = Vec::new();
        for attempt in 0..10 {
            let mut total = 0u64;
            let draws = 2000u64;
            for seed in 0..draws {
                let mut b = backoff(seed);
                for _ in 0..attempt {
                    b.next_delay();
                }
                total += b.next_delay();
            }
            means.push(total / draws);
        }
        // Attempts 0..=5 have caps 500, 1000, ..., 16000: the mean roughly
        // doubles; from attempt 6 on the cap is 30 s and the mean stays put.
        for w in means[..7].windows(2) {
            assert!(w[1] > w[0] * 3 / 2, "means {means:?}");
        }
        let capped_mean = (250 + 30_000) / 2;
        for &m in &means[7..] {
            assert!(m.abs_diff(capped_mean) < 1000, "means {means:?}");
        }
    }

    #[test]
    fn delays_are_jittered() {
        let mut b = backoff(7);
        for _ in 0..6 {
            b.next_delay();
        }
        let draws: Vec<_> = (0..20).map(|_| b.next_delay()).collect();
        let mut distinct = draws.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert!(distinct.len() > 15, "{draws:?}");
    }

    #[test]
    fn reset_returns_to_the_first_window() {
        let mut b = backoff(1);
        for _ in 0..10 {
            b.next_delay();
        }
        assert_eq!(b.cap(), 30_000);
        b.reset();
        assert_eq!(b.attempt(), 0);
        assert_eq!(b.cap(), 500);
        let d = b.next_delay();
        assert!((250..=500).contains(&d), "{d}");
        assert_eq!(b.cap(), 1000);
    }

    #[test]
    fn same_seed_gives_the_same_sequence() {
        let seq = |seed| {
            let mut b = backoff(seed);
            (0..30).map(|_| b.next_delay()).collect::<Vec<_>>()
        };
        assert_eq!(seq(42), seq(42));
        assert_ne!(seq(42), seq(43));
    }

    #[test]
    fn odd_configs_do_not_panic_or_exceed_the_cap() {
        for config in [
            BackoffConfig {
                initial_ms: 0,
                max_ms: 0,
            },
            BackoffConfig {
                initial_ms: 1000,
                max_ms: 100,
            },
            BackoffConfig {
                initial_ms: u64::MAX,
                max_ms: u64::MAX,
            },
        ] {
            let mut b = Backoff::new(config, 3);
            for _ in 0..100 {
                assert!(b.next_delay() <= config.max_ms);
            }
        }
    }
}
