//! Per-shard counters and gauges, and their Prometheus text rendering.
//!
//! Each shard writes only its own [`ShardMetrics`] (relaxed atomic stores on
//! its own cache lines); the metrics endpoint reads them all. Nothing here is
//! shared between shards on the data path.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use schema::fb::CloseReason;

use crate::latency::LatencyHistogram;

/// Close reasons as labels, indexed by their wire code; the last entry is a
/// transport lost without a `Close`.
pub const CLOSE_REASONS: [&str; 13] = [
    "normal",
    "unauthorized",
    "timeout",
    "node_limit",
    "frame_too_large",
    "protocol_error",
    "handshake_timeout",
    "replaced",
    "overloaded",
    "shutting_down",
    "version_mismatch",
    "queue_overflow",
    "lost",
];

/// Index into [`CLOSE_REASONS`].
pub fn close_index(reason: Option<CloseReason>) -> usize {
    match reason {
        Some(r) if usize::from(r.0) < CLOSE_REASONS.len() - 1 => usize::from(r.0),
        _ => CLOSE_REASONS.len() - 1,
    }
}

/// One shard's figures. Counters only grow; gauges are set.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct ShardMetrics {
    /// The shard's loop is running (for `/healthz`).
    pub running: AtomicBool,
    pub connected_nodes: AtomicU64,
    pub connections: AtomicU64,
    pub handshakes: AtomicU64,
    pub handshake_failures: AtomicU64,
    pub handoffs_out: AtomicU64,
    pub handoffs_in: AtomicU64,
    pub messages_in: AtomicU64,
    pub messages_out: AtomicU64,
    pub messages_from_ring: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub queued: AtomicU64,
    pub inflight: AtomicU64,
    pub ring_down_used: AtomicU64,
    pub ring_up_used: AtomicU64,
    pub ring_capacity: AtomicU64,
    pub ring_backlog: AtomicU64,
    pub ring_dropped: AtomicU64,
    pub closes: [AtomicU64; CLOSE_REASONS.len()],
    /// Writes to edge sockets, and the link frames they carried.
    pub sends: AtomicU64,
    pub frames_out: AtomicU64,
    /// Routed messages from taken in to sent (see [`crate::latency`]):
    /// from the control ring to a send, and from a socket read to the ring.
    pub route_latency_down: LatencyHistogram,
    pub route_latency_up: LatencyHistogram,
}

impl ShardMetrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn set(gauge: &AtomicU64, v: u64) {
        gauge.store(v, Ordering::Relaxed);
    }
}

type Field = fn(&ShardMetrics) -> &AtomicU64;

const SERIES: &[(&str, &str, &str, Field)] = &[
    (
        "apiary_connected_nodes",
        "gauge",
        "Nodes with a handshaken link.",
        |m| &m.connected_nodes,
    ),
    (
        "apiary_connections",
        "gauge",
        "Open connections, handshaking ones included.",
        |m| &m.connections,
    ),
    (
        "apiary_handshakes_total",
        "counter",
        "TLS or plaintext handshakes completed on this shard.",
        |m| &m.handshakes,
    ),
    (
        "apiary_handshake_failures_total",
        "counter",
        "Connections closed before their handshake completed.",
        |m| &m.handshake_failures,
    ),
    (
        "apiary_handoffs_out_total",
        "counter",
        "Connections handed to the shard that owns their node.",
        |m| &m.handoffs_out,
    ),
    (
        "apiary_handoffs_in_total",
        "counter",
        "Connections received from another shard.",
        |m| &m.handoffs_in,
    ),
    (
        "apiary_messages_in_total",
        "counter",
        "Upstream messages received from edges.",
        |m| &m.messages_in,
    ),
    (
        "apiary_messages_out_total",
        "counter",
        "Downstream messages edges acknowledged.",
        |m| &m.messages_out,
    ),
    (
        "apiary_messages_from_ring_total",
        "counter",
        "Downstream records taken from the control ring.",
        |m| &m.messages_from_ring,
    ),
    (
        "apiary_bytes_in_total",
        "counter",
        "Bytes received from edge sockets.",
        |m| &m.bytes_in,
    ),
    (
        "apiary_bytes_out_total",
        "counter",
        "Bytes written to edge sockets.",
        |m| &m.bytes_out,
    ),
    (
        "apiary_sends_total",
        "counter",
        "Writes to edge sockets (one send each, TLS records included).",
        |m| &m.sends,
    ),
    (
        "apiary_frames_out_total",
        "counter",
        "Link frames written to edges (batches, acks, keepalives, welcomes, closes).",
        |m| &m.frames_out,
    ),
    (
        "apiary_queue_depth",
        "gauge",
        "Downstream messages queued and not yet sent.",
        |m| &m.queued,
    ),
    (
        "apiary_inflight",
        "gauge",
        "Downstream messages sent and not yet acknowledged.",
        |m| &m.inflight,
    ),
    (
        "apiary_ring_down_used_bytes",
        "gauge",
        "Bytes waiting in the control-to-shard ring.",
        |m| &m.ring_down_used,
    ),
    (
        "apiary_ring_up_used_bytes",
        "gauge",
        "Bytes waiting in the shard-to-control ring.",
        |m| &m.ring_up_used,
    ),
    (
        "apiary_ring_capacity_bytes",
        "gauge",
        "Capacity of each ring.",
        |m| &m.ring_capacity,
    ),
    (
        "apiary_ring_backlog_bytes",
        "gauge",
        "Upstream records held in memory while the ring is full.",
        |m| &m.ring_backlog,
    ),
    (
        "apiary_ring_dropped_total",
        "counter",
        "Delivery reports dropped because the ring and the backlog were full.",
        |m| &m.ring_dropped,
    ),
];

/// Renders every shard's figures in the Prometheus text format.
pub fn render(shards: &[&ShardMetrics]) -> String {
    let mut out = String::with_capacity(4096);
    for (name, kind, help, field) in SERIES {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (i, m) in shards.iter().enumerate() {
            let v = field(m).load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}{{shard=\"{i}\"}} {v}");
        }
    }
    let name = "apiary_closes_total";
    let _ = writeln!(
        out,
        "# HELP {name} Links closed, by reason (lost: no Close frame).\n# TYPE {name} counter"
    );
    for (i, m) in shards.iter().enumerate() {
        for (reason, counter) in CLOSE_REASONS.iter().zip(&m.closes) {
            let v = counter.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}{{shard=\"{i}\",reason=\"{reason}\"}} {v}");
        }
    }
    let name = "apiary_route_latency_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Routed messages, from the turn that took them in (ring downstream, \
         socket upstream) to the submission of the send or ring push carrying them.\n\
         # TYPE {name} histogram"
    );
    for (i, m) in shards.iter().enumerate() {
        for (direction, h) in [
            ("downstream", &m.route_latency_down),
            ("upstream", &m.route_latency_up),
        ] {
            let labels = format!("shard=\"{i}\",direction=\"{direction}\"");
            h.render(&mut out, name, &labels);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_is_declared_and_labelled_by_shard() {
        let a = ShardMetrics::default();
        let b = ShardMetrics::default();
        ShardMetrics::set(&a.connected_nodes, 3);
        ShardMetrics::add(&b.closes[close_index(Some(CloseReason::NodeLimit))], 2);
        ShardMetrics::add(&b.closes[close_index(None)], 1);
        let text = render(&[&a, &b]);
        assert!(text.contains("apiary_connected_nodes{shard=\"0\"} 3\n"));
        assert!(text.contains("apiary_closes_total{shard=\"1\",reason=\"node_limit\"} 2\n"));
        assert!(text.contains("apiary_closes_total{shard=\"1\",reason=\"lost\"} 1\n"));
        assert!(text.contains(
            "apiary_route_latency_seconds_count{shard=\"1\",direction=\"upstream\"} 0\n"
        ));
        // Every sample line belongs to a declared family.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let family = line.split('{').next().unwrap();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| family.strip_suffix(s).filter(|f| f.ends_with("_seconds")))
                .unwrap_or(family);
            assert!(text.contains(&format!("# TYPE {family} ")), "{line}");
        }
    }

    #[test]
    fn close_reason_labels_follow_the_wire_codes() {
        assert_eq!(
            CLOSE_REASONS[close_index(Some(CloseReason::QueueOverflow))],
            "queue_overflow"
        );
        assert_eq!(CLOSE_REASONS[close_index(Some(CloseReason(200)))], "lost");
    }
}
