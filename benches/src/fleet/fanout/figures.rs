//! The fan-out scenario's figures: a section of the run's report.

use super::super::stats::Latency;

/// One phase's figures.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Phase {
    /// Distinct (node, object version) receipts, and how many were due.
    pub delivered: u64,
    pub expected: u64,
    /// Due and never received (must be 0).
    pub lost: u64,
    /// Every downstream message the edges received, repeats included.
    pub messages: u64,
    pub seconds: f64,
    /// `delivered` per second, per hub CPU-second and per cloudcontrol
    /// CPU-second.
    pub per_second: f64,
    pub per_hub_cpu_second: f64,
    pub per_control_cpu_second: f64,
    pub hub_cpu_seconds: f64,
    pub control_cpu_seconds: f64,
    /// Initial sync: from the start of cloudcontrol to each object's first
    /// receipt; fan-out: from each manifest write to each receipt.
    pub latency: Latency,
}

/// The fan-out scenario's figures.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct FanoutFigures {
    pub poll_interval_ms: u64,
    /// From starting cloudcontrol to its ready line.
    pub control_ready_seconds: f64,
    pub initial: Phase,
    pub updates: u64,
    pub fanout: Phase,
    /// Fan-out: from the first node's receipt of an update to each
    /// receipt of it (the spread over the fleet, without the wait for
    /// cloudcontrol's poll).
    pub spread_latency: Latency,
    /// Fan-out deliveries per second of the spans from each update's first
    /// receipt to its last.
    pub spread_per_second: f64,
    /// Per update, milliseconds from its write to its first receipt by
    /// any node (cloudcontrol's poll and planning, the rings, one link).
    pub first_receipt_ms: Vec<f64>,
    pub control_rss_bytes: u64,
}

impl FanoutFigures {
    /// Rows of the report's Markdown table.
    pub fn rows(&self) -> Vec<(String, String)> {
        let mut rows = vec![(
            "cloudcontrol ready after / resident".into(),
            format!(
                "{:.2} s / {:.1} MiB",
                self.control_ready_seconds,
                self.control_rss_bytes as f64 / (1 << 20) as f64
            ),
        )];
        let updates = format!("fan-out ({} updates)", self.updates);
        for (name, p) in [
            ("initial sync", &self.initial),
            (updates.as_str(), &self.fanout),
        ] {
            rows.push((
                format!("{name}: delivered / expected (lost)"),
                format!(
                    "{} / {} ({}), {} messages with repeats",
                    p.delivered, p.expected, p.lost, p.messages
                ),
            ));
            rows.push((
                format!("{name}: time, msg/s"),
                format!("{:.2} s, {:.0} msg/s", p.seconds, p.per_second),
            ));
            rows.push((
                format!("{name}: msg per hub / cloudcontrol CPU-second"),
                format!(
                    "{:.0} / {:.0} ({:.2} s / {:.2} s CPU)",
                    p.per_hub_cpu_second,
                    p.per_control_cpu_second,
                    p.hub_cpu_seconds,
                    p.control_cpu_seconds
                ),
            ));
            let l = p.latency;
            rows.push((
                format!("{name}: latency p50 / p99 / max"),
                format!("{} / {} / {} µs", l.p50_us, l.p99_us, l.max_us),
            ));
        }
        rows.push((
            "fan-out latency counts from".into(),
            format!(
                "the manifest write (cloudcontrol polls every {} ms)",
                self.poll_interval_ms
            ),
        ));
        let l = self.spread_latency;
        rows.push((
            "fan-out after the first node's receipt: p50 / p99 / max, msg/s".into(),
            format!(
                "{} / {} / {} µs, {:.0} msg/s",
                l.p50_us, l.p99_us, l.max_us, self.spread_per_second
            ),
        ));
        let firsts: Vec<String> = self
            .first_receipt_ms
            .iter()
            .map(|ms| format!("{ms:.0}"))
            .collect();
        rows.push((
            "fan-out: write → first node's receipt, per update".into(),
            format!("{} ms", firsts.join(", ")),
        ));
        rows
    }
}

impl Phase {
    /// `delivered` of `expected` receipts (`messages` with repeats) in
    /// `seconds`, the hub and cloudcontrol using the CPU-seconds given.
    pub fn of(
        delivered: u64,
        expected: u64,
        messages: u64,
        seconds: f64,
        hub_cpu: f64,
        control_cpu: f64,
        latency: Latency,
    ) -> Phase {
        Phase {
            delivered,
            expected,
            lost: expected.saturating_sub(delivered),
            messages,
            seconds,
            per_second: delivered as f64 / seconds.max(1e-9),
            per_hub_cpu_second: delivered as f64 / hub_cpu.max(0.01),
            per_control_cpu_second: delivered as f64 / control_cpu.max(0.01),
            hub_cpu_seconds: hub_cpu,
            control_cpu_seconds: control_cpu,
            latency,
        }
    }
}
