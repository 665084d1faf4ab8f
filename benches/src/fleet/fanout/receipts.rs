//! What the edges received in the fan-out scenario, recorded by the edges
//! themselves as messages arrive: which of its three objects each node
//! holds, the highest ConfigMap update each received (the number the
//! ConfigMap's data carries, see [`super::manifests`]), and when.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use hdrhistogram::Histogram;
use schema::Message;

use super::super::stats::{Latency, Stats};
use super::manifests;

const NODE: u8 = 1;
const POD: u8 = 2;
const CONFIG: u8 = 4;

/// What the edges received, kept by the edges themselves (see the edge's
/// downstream handling): which of its three objects each node holds, the
/// highest ConfigMap update each received, and latency histograms.
#[derive(Debug)]
pub struct Receipts {
    held: Vec<AtomicU8>,
    update: Vec<AtomicU64>,
    /// Nodes holding all three objects.
    complete: AtomicU64,
    /// Per update: when it was written (`CLOCK_MONOTONIC` ns), and how
    /// many nodes received it.
    written: Vec<AtomicU64>,
    received: Vec<AtomicU64>,
    /// When `cloudcontrol` was started.
    start_ns: AtomicU64,
    /// First receipt of each object since the start of `cloudcontrol`,
    /// microseconds.
    initial: Mutex<Histogram<u64>>,
    /// Each first receipt of an update: its number and when.
    arrivals: Mutex<Vec<(u64, u64)>>,
}

impl Receipts {
    pub fn new(nodes: usize, updates: u64) -> Self {
        let per_update = || (0..=updates).map(|_| AtomicU64::new(0)).collect();
        Self {
            held: (0..nodes).map(|_| AtomicU8::new(0)).collect(),
            update: (0..nodes).map(|_| AtomicU64::new(0)).collect(),
            complete: AtomicU64::new(0),
            written: per_update(),
            received: per_update(),
            start_ns: AtomicU64::new(0),
            initial: Mutex::new(histogram()),
            arrivals: Mutex::new(Vec::new()),
        }
    }

    /// Edge `index` received `m` at `at` (ns); counted in `stats` too.
    pub fn record(&self, index: usize, m: &Message, at: u64, stats: &Stats) {
        let (Some(held), Some(update)) = (self.held.get(index), self.update.get(index)) else {
            return;
        };
        let bit = match m.route.resource.split('/').nth(1) {
            Some("node") => NODE,
            Some("pod") => POD,
            Some("configmap") => CONFIG,
            _ => 0,
        };
        let before = held.fetch_or(bit, Ordering::Relaxed);
        if before & bit == 0 && bit != 0 {
            let since = at.saturating_sub(self.start_ns.load(Ordering::Relaxed));
            record(&self.initial, since);
            if before | bit == NODE | POD | CONFIG {
                self.complete.fetch_add(1, Ordering::Relaxed);
            }
        }
        let k = match bit {
            CONFIG => manifests::update_of(&m.content).unwrap_or(0),
            _ => 0,
        };
        if k > 0 && update.fetch_max(k, Ordering::Relaxed) < k {
            if let Some(r) = self.received.get(k as usize) {
                r.fetch_add(1, Ordering::Relaxed);
            }
            let written = self
                .written
                .get(k as usize)
                .map_or(0, |w| w.load(Ordering::Relaxed));
            self.arrivals
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((k, at));
            stats.record_downstream(at.saturating_sub(written));
        } else {
            stats.downstream.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// `cloudcontrol` starts now (`at`, ns).
    pub fn started(&self, at: u64) {
        self.start_ns.store(at, Ordering::Relaxed);
    }

    /// Update `k` is written now (`at`, ns).
    pub fn written(&self, k: u64, at: u64) {
        if let Some(w) = self.written.get(k as usize) {
            w.store(at, Ordering::Relaxed);
        }
    }

    /// Nodes holding their Node, their Pod and the ConfigMap.
    pub fn complete(&self) -> u64 {
        self.complete.load(Ordering::Relaxed)
    }

    /// Latency of the first receipts of every object from the start.
    pub fn initial_latency(&self) -> Latency {
        latency(&self.initial)
    }

    /// Latency of the updates' receipts from their writes, and from the
    /// first receipt of the same update; the sum over the updates of the
    /// time from their first receipt to their last, seconds; and per
    /// update, milliseconds from its write to its first receipt.
    pub fn update_latency(&self) -> (Latency, Latency, f64, Vec<f64>) {
        let arrivals = self.arrivals.lock().unwrap_or_else(|e| e.into_inner());
        let mut first = vec![u64::MAX; self.written.len()];
        let mut last = vec![0; self.written.len()];
        for &(k, at) in arrivals.iter() {
            first[k as usize] = first[k as usize].min(at);
            last[k as usize] = last[k as usize].max(at);
        }
        let spans = first
            .iter()
            .zip(&last)
            .map(|(f, l)| l.saturating_sub(*f))
            .sum::<u64>();
        let (from_write, from_first) = (Mutex::new(histogram()), Mutex::new(histogram()));
        for &(k, at) in arrivals.iter() {
            let written = self.written[k as usize].load(Ordering::Relaxed);
            record(&from_write, at.saturating_sub(written));
            record(&from_first, at - first[k as usize]);
        }
        let pickup = (1..self.written.len())
            .map(|k| {
                let written = self.written[k].load(Ordering::Relaxed);
                first[k].saturating_sub(written) as f64 / 1e6
            })
            .collect();
        (
            latency(&from_write),
            latency(&from_first),
            spans as f64 / 1e9,
            pickup,
        )
    }

    /// Nodes that received update `update`.
    pub fn received(&self, update: u64) -> u64 {
        self.received
            .get(update as usize)
            .map_or(0, |r| r.load(Ordering::Relaxed))
    }
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 100 s at 3 significant digits.
    Histogram::new_with_bounds(1, 100_000_000, 3).expect("valid bounds")
}

fn record(h: &Mutex<Histogram<u64>>, ns: u64) {
    let us = (ns / 1000).clamp(1, 100_000_000);
    let _ = h.lock().unwrap_or_else(|e| e.into_inner()).record(us);
}

fn latency(h: &Mutex<Histogram<u64>>) -> Latency {
    Latency::of(&h.lock().unwrap_or_else(|e| e.into_inner()))
}
