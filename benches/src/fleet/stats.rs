//! What a run counts, shared by the edges, the control side and the
//! reporter: counters, HDR latency histograms (microseconds) and a sample
//! per second for the plots.
//!
//! Latency is measured from timestamps carried in the payload: the first 8
//! bytes of every content are the sender's `CLOCK_MONOTONIC` in
//! nanoseconds, a clock every process of the machine shares.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use hdrhistogram::Histogram;

/// `CLOCK_MONOTONIC`, nanoseconds.
pub fn now_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// A content of `len` bytes (at least 8) stamped with the current time.
pub fn stamp(len: usize) -> Vec<u8> {
    let mut content = vec![0x61; len.max(8)];
    content[..8].copy_from_slice(&now_ns().to_le_bytes());
    content
}

/// The time stamped into `content`, or 0 if it is too short.
pub fn stamped_at(content: &[u8]) -> u64 {
    content
        .get(..8)
        .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 100 s at 3 significant digits.
    Histogram::new_with_bounds(1, 100_000_000, 3).expect("valid bounds")
}

/// One second of a run, for the plots.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Sample {
    pub t: f64,
    pub downstream_per_s: f64,
    pub upstream_per_s: f64,
    pub down_p99_us: u64,
    pub up_p99_us: u64,
    pub links_up: u64,
}

/// Counters of a run.
#[derive(Debug)]
pub struct Stats {
    /// Links up now.
    pub up: AtomicU64,
    /// Transports opened, and attempts that failed.
    pub connects: AtomicU64,
    pub connect_errors: AtomicU64,
    /// Downstream messages received by the edges.
    pub downstream: AtomicU64,
    /// Upstream messages written to the edges' outboxes, and the highest
    /// seq each edge had acknowledged.
    pub upstream_sent: AtomicU64,
    pub acked: Vec<AtomicU64>,
    /// Upstream messages the control side took (first time each).
    pub upstream_received: AtomicU64,
    /// Set by the fan-out scenario: the edges report what they receive.
    pub receipts: std::sync::OnceLock<super::fanout::Receipts>,
    down_all: Mutex<Histogram<u64>>,
    up_all: Mutex<Histogram<u64>>,
    down_window: Mutex<Histogram<u64>>,
    up_window: Mutex<Histogram<u64>>,
}

impl Stats {
    pub fn new(nodes: usize) -> Self {
        Self {
            up: AtomicU64::new(0),
            connects: AtomicU64::new(0),
            connect_errors: AtomicU64::new(0),
            downstream: AtomicU64::new(0),
            upstream_sent: AtomicU64::new(0),
            acked: (0..nodes).map(|_| AtomicU64::new(0)).collect(),
            upstream_received: AtomicU64::new(0),
            receipts: std::sync::OnceLock::new(),
            down_all: Mutex::new(histogram()),
            up_all: Mutex::new(histogram()),
            down_window: Mutex::new(histogram()),
            up_window: Mutex::new(histogram()),
        }
    }

    pub fn record_downstream(&self, latency_ns: u64) {
        // Latency first: whoever reads the count, then the histogram, finds
        // every counted message's latency (see `workers`).
        record(&self.down_all, &self.down_window, latency_ns);
        self.downstream.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_upstream(&self, latency_ns: u64) {
        self.upstream_received.fetch_add(1, Ordering::Relaxed);
        record(&self.up_all, &self.up_window, latency_ns);
    }

    pub fn upstream_acked_max(&self, edge: usize, seq: u64) {
        if let Some(a) = self.acked.get(edge) {
            a.fetch_max(seq, Ordering::Relaxed);
        }
    }

    pub fn upstream_acked(&self) -> u64 {
        self.acked.iter().map(|a| a.load(Ordering::Relaxed)).sum()
    }

    /// p99 of each direction since the last call, microseconds.
    pub fn take_window_p99(&self) -> (u64, u64) {
        let take = |h: &Mutex<Histogram<u64>>| {
            let mut h = h.lock().unwrap_or_else(|e| e.into_inner());
            let p = if h.is_empty() {
                0
            } else {
                h.value_at_quantile(0.99)
            };
            h.reset();
            p
        };
        (take(&self.down_window), take(&self.up_window))
    }

    /// Takes the downstream latencies recorded since the last call, as
    /// (microseconds, count) pairs. Only for a worker process, which runs
    /// no per-second sampler of its own.
    pub fn take_downstream_recorded(&self) -> Vec<(u64, u64)> {
        let mut h = self.down_window.lock().unwrap_or_else(|e| e.into_inner());
        let pairs = h
            .iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect();
        h.reset();
        pairs
    }

    /// Adds downstream latencies another process recorded.
    pub fn merge_downstream(&self, pairs: &[(u64, u64)]) {
        for h in [&self.down_all, &self.down_window] {
            let mut h = h.lock().unwrap_or_else(|e| e.into_inner());
            for &(us, n) in pairs {
                let _ = h.record_n(us.clamp(1, 100_000_000), n);
            }
        }
    }

    /// The whole run's latency percentiles of each direction.
    pub fn latency(&self) -> (Latency, Latency) {
        let of =
            |h: &Mutex<Histogram<u64>>| Latency::of(&h.lock().unwrap_or_else(|e| e.into_inner()));
        (of(&self.down_all), of(&self.up_all))
    }
}

fn record(all: &Mutex<Histogram<u64>>, window: &Mutex<Histogram<u64>>, ns: u64) {
    let us = (ns / 1000).clamp(1, 100_000_000);
    let _ = all.lock().unwrap_or_else(|e| e.into_inner()).record(us);
    let _ = window.lock().unwrap_or_else(|e| e.into_inner()).record(us);
}

/// Latency percentiles, microseconds.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Latency {
    pub count: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl Latency {
    /// The percentiles of `h` (all zero when it is empty).
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            count: h.len(),
            p50_us: h.value_at_quantile(0.5),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        }
    }
}
