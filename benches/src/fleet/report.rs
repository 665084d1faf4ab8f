//! A run's figures: a Markdown table on stdout, JSON and an SVG plot of
//! throughput and latency over time in the output directory.

use std::path::{Path, PathBuf};

use plotters::prelude::*;

use super::metrics::HubFigures;
use super::stats::{Latency, Sample};

/// One direction's figures.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Direction {
    pub messages: u64,
    pub seconds: f64,
    pub per_second: f64,
    /// Messages per CPU-second of the hub: per core used.
    pub per_hub_cpu_second: f64,
    pub latency: Latency,
    /// Sent and never received (must be 0).
    pub lost: u64,
}

impl Direction {
    /// `got` of `expected` messages in `seconds`, the hub using `cpu`
    /// CPU-seconds meanwhile.
    pub fn of(got: u64, expected: u64, seconds: f64, cpu: f64, latency: Latency) -> Self {
        Self {
            messages: got,
            seconds,
            per_second: got as f64 / seconds,
            per_hub_cpu_second: got as f64 / cpu,
            latency,
            lost: expected.saturating_sub(got),
        }
    }
}

/// The reconnect storm's figures.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Storm {
    pub nodes: usize,
    /// From the drop until every link was up again.
    pub seconds: f64,
    pub reconnects_per_second: f64,
    pub per_hub_cpu_second: f64,
}

/// Everything a run measured.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Report {
    pub scenario: String,
    pub machine: String,
    pub nodes: usize,
    pub shards: usize,
    pub payload_bytes: usize,
    /// Processes running the edges (1: this one).
    pub client_processes: usize,
    /// "TLS 1.3" or "plaintext".
    pub transport: String,
    /// How the hub packs downstream messages into sends.
    pub delivery: String,
    pub connect_seconds: f64,
    pub hub_rss_idle_bytes: u64,
    pub hub_rss_bytes: u64,
    pub hub_bytes_per_node: f64,
    pub hub_cpu_seconds: f64,
    pub fleetbench_cpu_seconds: f64,
    pub connect_errors: u64,
    pub downstream: Option<Direction>,
    pub upstream: Option<Direction>,
    pub storm: Option<Storm>,
    pub edge: Option<EdgeFigures>,
    /// The hub's own counters over the measured phase.
    pub hub: Option<HubFigures>,
    pub fanout: Option<super::fanout::FanoutFigures>,
    pub samples: Vec<Sample>,
}

/// One `edgecore` process under load.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct EdgeFigures {
    /// Resident memory with the link up and nothing flowing.
    pub rss_idle_bytes: u64,
    /// Highest resident memory while messages arrived at `rate`.
    pub rss_loaded_bytes: u64,
    pub rate: f64,
    /// Messages applied, committed durably and acknowledged per second,
    /// flat out.
    pub apply_per_second: f64,
    pub apply_messages: u64,
}

/// A one-line description of this machine.
pub fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb >> 20);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cores} cores, {mem} GiB, Linux {}", kernel.trim())
}

impl Report {
    /// The Markdown table of the run.
    pub fn markdown(&self) -> String {
        let mut rows: Vec<(String, String)> = vec![
            ("scenario".into(), self.scenario.clone()),
            ("machine".into(), self.machine.clone()),
            (
                "nodes / shards / payload".into(),
                format!(
                    "{} / {} / {} B",
                    self.nodes, self.shards, self.payload_bytes
                ),
            ),
            ("edge processes".into(), self.client_processes.to_string()),
            (
                "transport / delivery".into(),
                format!("{} / {}", self.transport, self.delivery),
            ),
            (
                "time to connect the fleet".into(),
                format!("{:.2} s", self.connect_seconds),
            ),
            (
                "hub resident, no nodes → now".into(),
                format!(
                    "{:.1} MiB → {:.1} MiB",
                    mib(self.hub_rss_idle_bytes),
                    mib(self.hub_rss_bytes)
                ),
            ),
            (
                "hub memory per connected node".into(),
                format!("{:.0} B", self.hub_bytes_per_node),
            ),
            (
                "hub CPU / fleetbench CPU".into(),
                format!(
                    "{:.2} s / {:.2} s",
                    self.hub_cpu_seconds, self.fleetbench_cpu_seconds
                ),
            ),
            ("connect errors".into(), self.connect_errors.to_string()),
        ];
        for (name, d) in [
            ("downstream", &self.downstream),
            ("upstream", &self.upstream),
        ] {
            if let Some(d) = d {
                rows.push((
                    format!("{name} messages"),
                    format!("{} in {:.2} s", d.messages, d.seconds),
                ));
                rows.push((
                    format!("{name} msg/s"),
                    format!(
                        "{:.0} ({:.0} per hub CPU-second)",
                        d.per_second, d.per_hub_cpu_second
                    ),
                ));
                let l = d.latency;
                rows.push((
                    format!("{name} latency p50 / p99 / p99.9 / max"),
                    format!(
                        "{} / {} / {} / {} µs",
                        l.p50_us, l.p99_us, l.p999_us, l.max_us
                    ),
                ));
                rows.push((format!("{name} lost"), d.lost.to_string()));
            }
        }
        if let Some(h) = &self.hub {
            let per = |a: u64, b: u64| a as f64 / b.max(1) as f64;
            let down = self.downstream.as_ref().map_or(0, |d| d.messages);
            rows.push((
                "hub sends / frames (frames per send)".into(),
                format!("{} / {} ({:.3})", h.sends, h.frames, per(h.frames, h.sends)),
            ));
            if down > 0 {
                rows.push((
                    "downstream messages per send / per frame".into(),
                    format!("{:.3} / {:.3}", per(down, h.sends), per(down, h.frames)),
                ));
            }
            for (name, r, what) in [
                ("ring → send", &h.down, "sends"),
                ("socket → ring", &h.up, "ring pushes"),
            ] {
                if r.count > 0 {
                    rows.push((
                        format!("hub-internal latency {name} p50 / p99"),
                        format!(
                            "{:.1} / {:.1} µs ({} timed {what})",
                            r.p50_us, r.p99_us, r.count
                        ),
                    ));
                }
            }
        }
        if let Some(e) = &self.edge {
            rows.push((
                "edgecore resident, idle".into(),
                format!("{:.1} MiB", mib(e.rss_idle_bytes)),
            ));
            rows.push((
                format!("edgecore resident, {:.0} msg/s", e.rate),
                format!("{:.1} MiB", mib(e.rss_loaded_bytes)),
            ));
            rows.push((
                "edgecore durable apply, flat out".into(),
                format!(
                    "{:.0} msg/s ({} messages)",
                    e.apply_per_second, e.apply_messages
                ),
            ));
        }
        if let Some(s) = &self.storm {
            rows.push((
                "storm: fleet back after".into(),
                format!("{:.2} s", s.seconds),
            ));
            rows.push((
                "storm: reconnects/s".into(),
                format!(
                    "{:.0} ({:.0} per hub CPU-second)",
                    s.reconnects_per_second, s.per_hub_cpu_second
                ),
            ));
        }
        if let Some(f) = &self.fanout {
            rows.extend(f.rows());
        }
        let mut out = String::from("| figure | value |\n|---|---|\n");
        for (k, v) in rows {
            out.push_str(&format!("| {k} | {v} |\n"));
        }
        out
    }

    /// Writes `fleetbench-<scenario>.json` and `.svg` to `dir`.
    pub fn write(&self, dir: &Path) -> Result<(PathBuf, PathBuf), String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let json = dir.join(format!("fleetbench-{}.json", self.scenario));
        let text = serde_json::to_string_pretty(self).map_err(|e| e.to_string())?;
        std::fs::write(&json, text).map_err(|e| format!("{}: {e}", json.display()))?;
        let svg = dir.join(format!("fleetbench-{}.svg", self.scenario));
        self.plot(&svg)
            .map_err(|e| format!("{}: {e}", svg.display()))?;
        Ok((json, svg))
    }

    fn plot(&self, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::new(path, (900, 600)).into_drawing_area();
        root.fill(&WHITE)?;
        let (top, bottom) = root.split_vertically(300);
        let t_max = self.samples.last().map_or(1.0, |s| s.t).max(1.0);
        let rate_max = self
            .samples
            .iter()
            .map(|s| s.downstream_per_s.max(s.upstream_per_s))
            .fold(1.0, f64::max);
        let mut chart = ChartBuilder::on(&top)
            .caption(format!("{}: messages/s", self.scenario), ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..t_max, 0.0..rate_max * 1.1)?;
        chart.configure_mesh().x_desc("s").draw()?;
        chart
            .draw_series(LineSeries::new(
                self.samples.iter().map(|s| (s.t, s.downstream_per_s)),
                &BLUE,
            ))?
            .label("downstream")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
        chart
            .draw_series(LineSeries::new(
                self.samples.iter().map(|s| (s.t, s.upstream_per_s)),
                &RED,
            ))?
            .label("upstream")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
        chart.configure_series_labels().border_style(BLACK).draw()?;
        let lat_max = self
            .samples
            .iter()
            .map(|s| s.down_p99_us.max(s.up_p99_us) as f64)
            .fold(1.0, f64::max);
        let mut chart = ChartBuilder::on(&bottom)
            .caption("p99 latency per second (µs)", ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..t_max, 0.0..lat_max * 1.1)?;
        chart.configure_mesh().x_desc("s").draw()?;
        chart.draw_series(LineSeries::new(
            self.samples.iter().map(|s| (s.t, s.down_p99_us as f64)),
            &BLUE,
        ))?;
        chart.draw_series(LineSeries::new(
            self.samples.iter().map(|s| (s.t, s.up_p99_us as f64)),
            &RED,
        ))?;
        root.present()?;
        Ok(())
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}
