//! The hub's own figures, read from its `/metrics` endpoint before and after
//! the measured phase: sends and frames written to edges, and the
//! hub-internal routing latency histograms (`apiary_route_latency_seconds`,
//! from the turn that took a message in to the submission of the send or
//! ring push carrying it; downstream: control ring → send, upstream: socket
//! read → ring), summed over the shards and differenced.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

const LATENCY: &str = "apiary_route_latency_seconds";

/// One scrape, summed over the shards.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub sends: u64,
    pub frames: u64,
    /// Cumulative count per upper bound in seconds (`+Inf` as infinity),
    /// in increasing order of the bound, of each direction.
    pub down: Vec<(f64, u64)>,
    pub up: Vec<(f64, u64)>,
}

/// What the hub did between two snapshots.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct HubFigures {
    /// Writes to edge sockets, and the link frames they carried.
    pub sends: u64,
    pub frames: u64,
    /// Downstream: timed sends carrying what a ring turn took in.
    pub down: RouteLatency,
    /// Upstream: timed ring pushes of messages read from a socket.
    pub up: RouteLatency,
}

/// One direction's hub-internal latency.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct RouteLatency {
    pub count: u64,
    pub p50_us: f64,
    pub p99_us: f64,
}

impl RouteLatency {
    fn between(after: &[(f64, u64)], before: &[(f64, u64)]) -> Self {
        let counts: Vec<(f64, u64)> = after
            .iter()
            .map(|&(bound, n)| {
                let was = before
                    .iter()
                    .find(|(b, _)| *b == bound)
                    .map_or(0, |&(_, n)| n);
                (bound, n.saturating_sub(was))
            })
            .collect();
        let us = |q| quantile(&counts, q).map_or(0.0, |s| s * 1e6);
        Self {
            count: counts.last().map_or(0, |&(_, n)| n),
            p50_us: us(0.5),
            p99_us: us(0.99),
        }
    }
}

/// `GET /metrics` from the hub at `addr`.
pub fn scrape(addr: SocketAddr) -> Result<Snapshot, String> {
    let fail = |e: std::io::Error| format!("scraping {addr}/metrics: {e}");
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(fail)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(fail)?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: hub\r\nconnection: close\r\n\r\n")
        .map_err(fail)?;
    let mut text = String::new();
    stream.read_to_string(&mut text).map_err(fail)?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .ok_or_else(|| format!("no HTTP body from {addr}/metrics"))?;
    Ok(Snapshot::parse(body))
}

impl Snapshot {
    /// Reads the Prometheus text of the hub's endpoint.
    pub fn parse(body: &str) -> Self {
        let mut s = Self::default();
        let mut buckets: [BTreeMap<u64, (f64, u64)>; 2] = Default::default();
        for line in body.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<u64>() else {
                continue;
            };
            let (family, labels) = series.split_once('{').unwrap_or((series, ""));
            match family {
                "apiary_sends_total" => s.sends += value,
                "apiary_frames_out_total" => s.frames += value,
                f if f == format!("{LATENCY}_bucket") => {
                    let label = |name: &str| {
                        labels
                            .split(',')
                            .find_map(|l| l.strip_prefix(name))
                            .map(|v| v.trim_end_matches(['"', '}']))
                    };
                    let le = label("le=\"");
                    let side = usize::from(label("direction=\"") == Some("upstream"));
                    let bound = match le {
                        Some("+Inf") => f64::INFINITY,
                        Some(v) => match v.parse::<f64>() {
                            Ok(b) => b,
                            Err(_) => continue,
                        },
                        None => continue,
                    };
                    // Ordered by the bound's bits: positive floats sort so.
                    buckets[side].entry(bound.to_bits()).or_insert((bound, 0)).1 += value;
                }
                _ => {}
            }
        }
        let [down, up] = buckets;
        s.down = down.into_values().collect();
        s.up = up.into_values().collect();
        s
    }

    /// The figures from `before` to `self`.
    pub fn since(&self, before: &Snapshot) -> HubFigures {
        HubFigures {
            sends: self.sends.saturating_sub(before.sends),
            frames: self.frames.saturating_sub(before.frames),
            down: RouteLatency::between(&self.down, &before.down),
            up: RouteLatency::between(&self.up, &before.up),
        }
    }
}

/// Quantile `q` of cumulative bucket counts, seconds, interpolated linearly
/// inside its bucket; the unbounded bucket reads as the last finite bound.
pub fn quantile(cumulative: &[(f64, u64)], q: f64) -> Option<f64> {
    let total = cumulative.last()?.1;
    if total == 0 {
        return None;
    }
    let rank = (q * total as f64).max(1.0);
    let (mut lower, mut below) = (0.0, 0u64);
    for &(bound, n) in cumulative {
        if n as f64 >= rank {
            if bound.is_infinite() {
                return Some(lower);
            }
            let within = (rank - below as f64) / (n - below).max(1) as f64;
            return Some(lower + within * (bound - lower));
        }
        (lower, below) = (bound, n);
    }
    Some(lower)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str = "\
# TYPE apiary_sends_total counter
apiary_sends_total{shard=\"0\"} 10
apiary_sends_total{shard=\"1\"} 5
apiary_frames_out_total{shard=\"0\"} 20
apiary_route_latency_seconds_bucket{shard=\"0\",direction=\"downstream\",le=\"0.00001\"} 90
apiary_route_latency_seconds_bucket{shard=\"0\",direction=\"downstream\",le=\"0.00004\"} 99
apiary_route_latency_seconds_bucket{shard=\"0\",direction=\"downstream\",le=\"+Inf\"} 100
apiary_route_latency_seconds_bucket{shard=\"1\",direction=\"downstream\",le=\"0.00001\"} 0
apiary_route_latency_seconds_bucket{shard=\"1\",direction=\"downstream\",le=\"0.00004\"} 0
apiary_route_latency_seconds_bucket{shard=\"1\",direction=\"downstream\",le=\"+Inf\"} 0
apiary_route_latency_seconds_bucket{shard=\"1\",direction=\"upstream\",le=\"0.00001\"} 3
apiary_route_latency_seconds_bucket{shard=\"1\",direction=\"upstream\",le=\"0.00004\"} 4
apiary_route_latency_seconds_bucket{shard=\"1\",direction=\"upstream\",le=\"+Inf\"} 4
apiary_route_latency_seconds_count{shard=\"0\",direction=\"downstream\"} 100
";

    #[test]
    fn a_scrape_is_summed_over_shards_and_differenced() {
        let after = Snapshot::parse(BODY);
        assert_eq!((after.sends, after.frames), (15, 20));
        assert_eq!((after.down.len(), after.up.len()), (3, 3));
        let figures = after.since(&Snapshot::default());
        assert_eq!((figures.down.count, figures.up.count), (100, 4));
        assert!(figures.down.p50_us > 0.0 && figures.down.p50_us <= 10.0);
        assert!((figures.down.p99_us - 40.0).abs() < 1e-6, "{figures:?}");
        assert!(figures.up.p99_us > 10.0 && figures.up.p99_us <= 40.0);
        let same = after.since(&after);
        assert_eq!((same.sends, same.down.count, same.up.count), (0, 0, 0));
        assert_eq!(same.down.p99_us, 0.0);
    }
}
