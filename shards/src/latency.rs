//! The hub-internal routing latency: a fixed-bucket histogram of how long
//! routed messages stay inside a shard, from the turn that took them in
//! (read from the control ring downstream, from the socket upstream) to the
//! submission of the send (or the ring push) that carries them out.
//!
//! Buckets are fixed and log-scale, ten per decade from 1 µs to 1 s (1, 1.2,
//! 1.5, 2, 2.5, 3, 4, 5, 6, 8 × 10^k µs), so every bound is a round number
//! and a budget such as 50 µs is a bucket edge. Recording is a binary search
//! over 61 bounds and three relaxed atomic adds on the shard's own cache
//! lines; the endpoint renders it in the Prometheus histogram form.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Mantissas of the bucket bounds within one decade, in tenths.
const DECADE: [u64; 10] = [10, 12, 15, 20, 25, 30, 40, 50, 60, 80];

/// Upper bounds of the finite buckets, nanoseconds: 1 µs … 1 s.
pub const BOUNDS_NS: [u64; 61] = bounds();

const fn bounds() -> [u64; 61] {
    let mut out = [0u64; 61];
    let mut decade = 0;
    let mut scale = 100; // tenths of a µs → ns
    while decade < 6 {
        let mut j = 0;
        while j < 10 {
            out[decade * 10 + j] = DECADE[j] * scale;
            j += 1;
        }
        scale *= 10;
        decade += 1;
    }
    out[60] = 1_000_000_000;
    out
}

/// One shard's histogram: a count per bucket (the last one unbounded), the
/// sum of the recorded values and their number.
#[derive(Debug)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; BOUNDS_NS.len() + 1],
    sum_ns: AtomicU64,
    count: AtomicU64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_ns: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }
}

/// The bucket of a value: the first whose bound is at least `ns`.
pub fn bucket_of(ns: u64) -> usize {
    BOUNDS_NS.partition_point(|&bound| bound < ns)
}

impl LatencyHistogram {
    /// Records `n` values of `latency` each.
    pub fn record(&self, latency: Duration, n: u64) {
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.buckets[bucket_of(ns)].fetch_add(n, Ordering::Relaxed);
        self.sum_ns
            .fetch_add(ns.saturating_mul(n), Ordering::Relaxed);
        self.count.fetch_add(n, Ordering::Relaxed);
    }

    /// The count of each bucket (not cumulative), the last one unbounded.
    pub fn counts(&self) -> Vec<u64> {
        self.buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect()
    }

    /// Appends the Prometheus samples of `name` with `labels` (such as
    /// `shard="0"`): cumulative `_bucket{le}` lines, `_sum` in seconds and
    /// `_count`.
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (i, count) in self.counts().into_iter().enumerate() {
            cumulative += count;
            let le = match BOUNDS_NS.get(i) {
                Some(&ns) => seconds(ns),
                None => "+Inf".to_owned(),
            };
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
        }
        let sum = seconds(self.sum_ns.load(Ordering::Relaxed));
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
    }
}

/// Nanoseconds as decimal seconds, exactly and without trailing zeros.
fn seconds(ns: u64) -> String {
    let text = format!("{}.{:09}", ns / 1_000_000_000, ns % 1_000_000_000);
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// Estimates quantile `q` (0..=1) of bucket `counts` (not cumulative, as
/// from [`LatencyHistogram::counts`]), interpolating linearly inside the
/// bucket that holds it; values past the last bound read as that bound.
/// `None` when nothing was recorded.
pub fn quantile(counts: &[u64], q: f64) -> Option<Duration> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = (q.clamp(0.0, 1.0) * total as f64).max(1.0);
    let mut below = 0u64;
    for (i, &count) in counts.iter().enumerate() {
        if count > 0 && (below + count) as f64 >= rank {
            let Some(&upper) = BOUNDS_NS.get(i) else {
                return Some(Duration::from_nanos(BOUNDS_NS[BOUNDS_NS.len() - 1]));
            };
            let lower = if i == 0 { 0 } else { BOUNDS_NS[i - 1] };
            let within = (rank - below as f64) / count as f64;
            let ns = lower as f64 + within * (upper - lower) as f64;
            return Some(Duration::from_nanos(ns as u64));
        }
        below += count;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_round_and_increasing_from_one_microsecond_to_one_second() {
        assert_eq!(BOUNDS_NS[0], 1_000);
        assert_eq!(BOUNDS_NS[1], 1_200);
        assert_eq!(BOUNDS_NS[9], 8_000);
        assert_eq!(BOUNDS_NS[10], 10_000);
        assert_eq!(BOUNDS_NS[60], 1_000_000_000);
        assert!(BOUNDS_NS.contains(&50_000), "the 50 µs budget is an edge");
        assert!(BOUNDS_NS.windows(2).all(|w| w[0] < w[1]));
        // At most a third between neighbours: the resolution of a quantile.
        assert!(BOUNDS_NS.windows(2).all(|w| w[1] * 3 <= w[0] * 4));
    }

    #[test]
    fn a_value_falls_in_the_first_bucket_whose_bound_holds_it() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(1_000), 0);
        assert_eq!(bucket_of(1_001), 1);
        assert_eq!(
            bucket_of(50_000),
            BOUNDS_NS.iter().position(|&b| b == 50_000).unwrap()
        );
        assert_eq!(bucket_of(1_000_000_000), 60);
        assert_eq!(bucket_of(1_000_000_001), 61, "past 1 s: the +Inf bucket");
        assert_eq!(bucket_of(u64::MAX), 61);
    }

    #[test]
    fn quantiles_are_estimated_within_their_bucket() {
        let h = LatencyHistogram::default();
        // 90 values of 10 µs, 9 of 40 µs, 1 of 2 s.
        h.record(Duration::from_micros(10), 90);
        h.record(Duration::from_micros(40), 9);
        h.record(Duration::from_secs(2), 1);
        let counts = h.counts();
        assert_eq!(counts.iter().sum::<u64>(), 100);
        // The median lies in the bucket (8, 10] µs.
        let p50 = quantile(&counts, 0.5).unwrap();
        assert!(p50 > Duration::from_micros(8) && p50 <= Duration::from_micros(10));
        // p99 is the 99th value: the last of the 40 µs ones, bucket (30, 40].
        let p99 = quantile(&counts, 0.99).unwrap();
        assert_eq!(p99, Duration::from_micros(40));
        // The unbounded bucket reads as the last bound.
        assert_eq!(quantile(&counts, 1.0).unwrap(), Duration::from_secs(1));
        assert_eq!(quantile(&[0; 62], 0.5), None);
    }

    #[test]
    fn renders_cumulative_buckets_sum_and_count() {
        let h = LatencyHistogram::default();
        h.record(Duration::from_micros(3), 2);
        h.record(Duration::from_micros(45), 1);
        let mut text = String::new();
        h.render(&mut text, "x", "shard=\"1\"");
        assert!(
            text.contains("x_bucket{shard=\"1\",le=\"0.000002\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("x_bucket{shard=\"1\",le=\"0.000003\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("x_bucket{shard=\"1\",le=\"0.00004\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("x_bucket{shard=\"1\",le=\"0.00005\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("x_bucket{shard=\"1\",le=\"+Inf\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("x_count{shard=\"1\"} 3\n"), "{text}");
        assert!(text.contains("x_sum{shard=\"1\"} 0.000051\n"), "{text}");
    }
}
