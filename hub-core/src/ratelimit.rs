//! A token bucket in integer arithmetic, on caller-supplied time.
//!
//! The bucket holds up to `burst` tokens and gains `qps` tokens per second.
//! Tokens are counted in thousandths, so that `qps` per second is exactly
//! `qps` thousandths per millisecond: refilling is one multiplication, and
//! no rounding accumulates however the calls are spaced.
//!
//! The defaults are KubeEdge's (`qps: 30`, `burst: 60` for the edge's
//! upstream messages).

use crate::protocol::Millis;

/// Default sustained rate, messages per second (KubeEdge's `qps`).
pub const DEFAULT_QPS: u32 = 30;
/// Default bucket size, messages (KubeEdge's `burst`).
pub const DEFAULT_BURST: u32 = 60;

/// Thousandths of a token per token.
const MILLI: u64 = 1000;

/// A token bucket: one token per message, refilled at `qps` per second up to
/// `burst`, full when created.
///
/// `qps == 0` means unlimited: every [`try_take`](Self::try_take) succeeds.
/// A `burst` of 0 is taken as 1, so that a limited bucket still lets
/// messages through.
///
/// Time must not go backwards; an earlier `now` than already seen is treated
/// as the latest time seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBucket {
    qps: u32,
    /// Capacity in thousandths of a token.
    capacity: u64,
    /// Current level in thousandths of a token, as of `last`.
    level: u64,
    /// Time of the last refill.
    last: Millis,
}

impl TokenBucket {
    /// A full bucket of `burst` tokens refilled at `qps` per second
    /// (`qps == 0`: unlimited).
    pub fn new(qps: u32, burst: u32, now: Millis) -> Self {
        let capacity = u64::from(burst.max(1)) * MILLI;
        Self {
            qps,
            capacity,
            level: capacity,
            last: now,
        }
    }

    /// Whether the bucket limits anything (`qps > 0`).
    pub fn is_limited(&self) -> bool {
        self.qps > 0
    }

    /// Takes one token if there is one at `now`.
    pub fn try_take(&mut self, now: Millis) -> bool {
        if !self.is_limited() {
            return true;
        }
        self.level = self.level_at(now);
        self.last = self.last.max(now);
        if self.level >= MILLI {
            self.level -= MILLI;
            true
        } else {
            false
        }
    }

    /// Whole tokens available at `now`; `u32::MAX` when unlimited.
    pub fn available(&self, now: Millis) -> u32 {
        if !self.is_limited() {
            return u32::MAX;
        }
        u32::try_from(self.level_at(now) / MILLI).unwrap_or(u32::MAX)
    }

    /// The earliest instant, not before `now`, at which a token is there:
    /// `now` itself when one is available (or the bucket is unlimited).
    pub fn next_available(&self, now: Millis) -> Millis {
        let level = self.level_at(now);
        if !self.is_limited() || level >= MILLI {
            return now;
        }
        let missing = MILLI - level;
        let wait = missing.div_ceil(u64::from(self.qps));
        self.last.max(now).saturating_add(wait)
    }

    /// Level in thousandths at `now`, without changing the bucket.
    fn level_at(&self, now: Millis) -> u64 {
        let elapsed = now.saturating_sub(self.last);
        let gained = elapsed.saturating_mul(u64::from(self.qps));
        self.level.saturating_add(gained).min(self.capacity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_steady_rate() {
        let mut b = TokenBucket::new(DEFAULT_QPS, DEFAULT_BURST, 0);
        let at_once = (0..1000).filter(|_| b.try_take(0)).count();
        assert_eq!(at_once, 60, "a full bucket gives exactly its burst");
        let mut taken = at_once;
        for now in 1..=10_000 {
            while b.try_take(now) {
                taken += 1;
            }
        }
        assert_eq!(taken, 60 + 10 * 30, "burst plus 10 s at 30/s");
    }

    #[test]
    fn steady_polling_never_exceeds_burst_plus_rate() {
        // Whatever the spacing of the calls, 10 s never yield more.
        for step in [1, 7, 33, 250, 1000, 3001] {
            let mut b = TokenBucket::new(30, 60, 0);
            let mut taken = 0;
            let mut now = 0;
            while now <= 10_000 {
                while b.try_take(now) {
                    taken += 1;
                }
                now += step;
            }
            assert!(taken <= 60 + 300, "step {step}: {taken}");
            // Gaps longer than burst/qps (2 s) lose what overflows the
            // bucket; shorter ones lose at most the last gap.
            if step <= 2000 {
                let lower = 60 + 300 * (10_000 - step) / 10_000;
                assert!(taken >= lower, "step {step}: {taken}");
            }
        }
    }

    #[test]
    fn refill_is_capped_at_burst() {
        let mut b = TokenBucket::new(30, 60, 0);
        while b.try_take(0) {}
        assert_eq!(b.available(0), 0);
        let hour = 3_600_000;
        assert_eq!(b.available(hour), 60);
        let taken = (0..1000).filter(|_| b.try_take(hour)).count();
        assert_eq!(taken, 60);
    }

    #[test]
    fn next_available_is_exact() {
        for (qps, burst) in [(30, 60), (1, 1), (7, 3), (1000, 10), (3000, 5)] {
            let mut b = TokenBucket::new(qps, burst, 100);
            while b.try_take(100) {}
            let at = b.next_available(100);
            assert!(at > 100);
            assert!(
                !b.clone().try_take(at - 1),
                "qps {qps}: early at {}",
                at - 1
            );
            assert_eq!(b.available(at - 1), 0);
            assert!(b.try_take(at), "qps {qps}: token at {at}");
            let wait = 1000u64.div_ceil(u64::from(qps));
            assert_eq!(at, 100 + wait, "qps {qps}");
        }
        // Partly refilled: 30/s gives 0.03 tokens per ms; after 10 ms the
        // bucket holds 0.3 and needs 24 more ms (0.72 → ceil).
        let mut b = TokenBucket::new(30, 1, 0);
        assert!(b.try_take(0));
        assert_eq!(b.next_available(10), 34);
        assert!(!b.try_take(33));
        assert!(b.try_take(34));
    }

    #[test]
    fn next_available_is_now_when_a_token_is_there() {
        let b = TokenBucket::new(30, 60, 5);
        assert_eq!(b.next_available(5), 5);
        assert_eq!(b.next_available(500), 500);
    }

    #[test]
    fn zero_qps_is_unlimited() {
        let mut b = TokenBucket::new(0, 0, 0);
        assert!((0..100_000).all(|_| b.try_take(0)));
        assert_eq!(b.next_available(9), 9);
        assert_eq!(b.available(0), u32::MAX);
    }

    #[test]
    fn zero_burst_is_one() {
        let mut b = TokenBucket::new(10, 0, 0);
        assert!(b.try_take(0));
        assert!(!b.try_take(0));
        assert_eq!(b.next_available(0), 100);
    }

    #[test]
    fn time_going_backwards_gives_nothing_extra() {
        let mut b = TokenBucket::new(10, 1, 1000);
        assert!(b.try_take(1000));
        assert!(!b.try_take(500));
        assert_eq!(b.next_available(500), 1100);
        assert!(b.try_take(1100));
    }
}
