//! The fan-out scenario: downstream objects fanned out by a real
//! `cloudcontrol` to every node, rather than pushed into the rings by
//! `fleetbench`.
//!
//! Order of a run: certificates and a manifest directory (an edge Node per
//! fleet node, a Pod bound to each that references the ConfigMap
//! `fleet-config`, and that ConfigMap) → `cloudhub` → the edges connect →
//! `cloudcontrol` starts on the manifests and the hub's rings: the initial
//! sync phase lasts until every edge holds its Node, its Pod and the
//! ConfigMap → the fan-out phase rewrites the ConfigMap `--updates` times,
//! each time waiting until every edge has received that update before
//! writing the next, so every write fans out to all nodes → figures.
//!
//! The edges are up before `cloudcontrol` starts, so the initial sync
//! measures the cloud side (start, planning, rings, hub, links) and not the
//! TLS handshakes, which the connect time reports.
//!
//! Latency of an update is from the moment `fleetbench` writes the manifest
//! to each edge's receipt; it includes the wait for `cloudcontrol`'s next
//! poll of the directory (every [`POLL_MS`]), which is most of it: an
//! update is written just after the previous one reached every node, so
//! just after a poll. The spread figures start at the first node's receipt
//! of the same update instead and leave the poll out. The ConfigMap's data
//! value carries the update's number, which is how an edge's receipt is
//! matched to the write ([`Receipts`]).

pub mod cloudcontrol;
pub mod figures;
pub mod manifests;
pub mod receipts;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::report::{self, Report};
use super::stats::{Stats, now_ns};
use super::{Options as FleetOptions, Sampler, bar, hub, pki, spawn_edges, wait_up, workers};
use cloudcontrol::Cloudcontrol;
pub use figures::FanoutFigures;
use figures::Phase;
pub use receipts::Receipts;

/// How often `cloudcontrol` polls the manifest directory, milliseconds.
pub const POLL_MS: u64 = 100;

/// Flags of the fan-out scenario: the fleet's, plus its own.
#[derive(Debug, Clone)]
pub struct Options {
    pub fleet: FleetOptions,
    /// Rewrites of the ConfigMap after the initial sync.
    pub updates: u64,
    pub control_bin: Option<PathBuf>,
}

impl Options {
    /// Parses `--updates N` and `--control-bin PATH`, and the fleet's flags.
    pub fn parse(args: &[String]) -> Result<Self, String> {
        let (mut updates, mut control_bin, mut rest) = (5, None, Vec::new());
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            match flag.as_str() {
                "--updates" | "--control-bin" => {
                    let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
                    if flag == "--updates" {
                        updates = value
                            .parse()
                            .map_err(|_| format!("--updates takes a number, not {value:?}"))?;
                    } else {
                        control_bin = Some(value.into());
                    }
                }
                _ => rest.push(flag.clone()),
            }
        }
        if !(1..=100_000).contains(&updates) {
            return Err("--updates must be between 1 and 100000".into());
        }
        Ok(Self {
            fleet: FleetOptions::parse(&rest)?,
            updates,
            control_bin,
        })
    }
}

/// Runs the scenario in a temporary directory, removed afterwards.
pub fn run(o: &Options) -> Result<Report, String> {
    let control_bin = cloudcontrol::binary(o.control_bin.as_deref())?;
    if !workers::slices(&o.fleet)?.is_empty() {
        return Err(format!(
            "fanout runs its {} edges in this one process, over its open-files limit: use fewer nodes",
            o.fleet.nodes
        ));
    }
    let dir = std::env::temp_dir().join(format!("fleetbench-fanout-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let result = run_in(o, &control_bin, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run_in(o: &Options, control_bin: &Path, dir: &Path) -> Result<Report, String> {
    let f = &o.fleet;
    let pki = pki::Pki::new(dir).map_err(|e| e.to_string())?;
    let names: Vec<String> = (0..f.nodes).map(|i| format!("node-{i:06}")).collect();
    let manifest_dir = dir.join("manifests");
    manifests::write_fleet(&manifest_dir, &names, f.payload)
        .map_err(|e| format!("writing manifests: {e}"))?;
    let certs = bar(f.nodes as u64, "certificates");
    let mut clients = Vec::with_capacity(f.nodes);
    for n in &names {
        clients.push(pki.client(n).map_err(|e| e.to_string())?);
        certs.inc(1);
    }
    certs.finish_and_clear();
    let hub_options = hub::HubOptions {
        binary: f.hub_bin.clone(),
        shards: f.shards,
        nodes: f.nodes,
        ring_bytes: f.ring_bytes,
        plaintext: f.plaintext,
        window: f.one_per_send.then_some(1),
    };
    let hub = hub::Hub::start(dir, &pki, &hub_options)?;
    let rss_idle = hub.resident_bytes();
    let stats = Arc::new(Stats::new(f.nodes));
    let _ = stats.receipts.set(Receipts::new(f.nodes, o.updates));
    let target = match hub.plain {
        Some(plain) if f.plaintext => plain,
        _ => hub.tls,
    };
    let (runtime, commands, _rx) = spawn_edges(f, &names, clients, target, &stats)?;
    let began = Instant::now();
    let sampler = Sampler::new(stats.clone(), began);
    wait_up(&stats, f.nodes, "connecting", Duration::from_secs(300))?;
    let connect_seconds = began.elapsed().as_secs_f64();
    let result = phases(o, control_bin, dir, &manifest_dir, &hub, &stats, &sampler);
    commands.send_modify(|c| c.stop = true);
    runtime.shutdown_timeout(Duration::from_secs(5));
    let figures = result?;
    let hub_rss = hub.resident_bytes();
    Ok(Report {
        scenario: "fanout".into(),
        machine: report::machine(),
        client_processes: 1,
        transport: if f.plaintext { "plaintext" } else { "TLS 1.3" }.into(),
        delivery: "a real cloudcontrol from a manifest directory (window 256)".into(),
        nodes: f.nodes,
        shards: f.shards,
        payload_bytes: f.payload,
        connect_seconds,
        hub_rss_idle_bytes: rss_idle,
        hub_rss_bytes: hub_rss,
        hub_bytes_per_node: hub_rss.saturating_sub(rss_idle) as f64 / f.nodes as f64,
        hub_cpu_seconds: hub.cpu_seconds(),
        fleetbench_cpu_seconds: hub::cpu_seconds("/proc/self/stat"),
        connect_errors: stats.connect_errors.load(Ordering::Relaxed),
        samples: sampler.samples(),
        fanout: Some(figures),
        ..Report::default()
    })
}

/// Polls `done` (ticking the sampler) until it holds; fails if
/// `cloudcontrol` exits or `patience` runs out.
fn wait(
    sampler: &Sampler,
    control: &mut Cloudcontrol,
    what: &str,
    patience: Duration,
    mut done: impl FnMut(&mut Cloudcontrol) -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + patience;
    while !done(control) {
        if let Some(why) = control.exited() {
            return Err(format!("{what}: {why}"));
        }
        if Instant::now() >= deadline {
            return Err(format!("{what} not finished after {patience:?}"));
        }
        sampler.tick();
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// The two phases, with `cloudcontrol` running from the start of the first
/// to the end of the second.
fn phases(
    o: &Options,
    control_bin: &Path,
    dir: &Path,
    manifest_dir: &Path,
    hub: &hub::Hub,
    stats: &Stats,
    sampler: &Sampler,
) -> Result<FanoutFigures, String> {
    let receipts = stats.receipts.get().ok_or("no receipts")?;
    let nodes = o.fleet.nodes as u64;
    let mut figures = FanoutFigures {
        poll_interval_ms: POLL_MS,
        updates: o.updates,
        ..FanoutFigures::default()
    };

    // Initial sync.
    let hub_cpu = hub.cpu_seconds();
    let messages = stats.downstream.load(Ordering::Relaxed);
    let start = Instant::now();
    receipts.started(now_ns());
    let mut control = Cloudcontrol::start(control_bin, dir, manifest_dir, hub, POLL_MS)?;
    let progress = bar(nodes, "initial sync");
    let mut ready = None;
    wait(
        sampler,
        &mut control,
        "initial sync",
        Duration::from_secs(600),
        |c| {
            if ready.is_none() && c.is_ready() {
                ready = Some(start.elapsed().as_secs_f64());
            }
            let complete = receipts.complete();
            progress.set_position(complete);
            ready.is_some() && complete >= nodes
        },
    )
    .map_err(|e| {
        let complete = receipts.complete();
        format!("{e} ({complete} of {nodes} nodes hold their 3 objects)")
    })?;
    progress.finish_and_clear();
    figures.control_ready_seconds = ready.unwrap_or_default();
    let expected = 3 * nodes;
    figures.initial = Phase::of(
        expected,
        expected,
        stats.downstream.load(Ordering::Relaxed) - messages,
        start.elapsed().as_secs_f64(),
        hub.cpu_seconds() - hub_cpu,
        control.cpu_seconds(),
        receipts.initial_latency(),
    );

    // Fan-out: one update at a time, each to every node.
    let hub_cpu = hub.cpu_seconds();
    let control_cpu = control.cpu_seconds();
    let messages = stats.downstream.load(Ordering::Relaxed);
    let start = Instant::now();
    let progress = bar(nodes * o.updates, "fan-out");
    let mut failure = None;
    for k in 1..=o.updates {
        receipts.written(k, now_ns());
        manifests::write_config(manifest_dir, k, o.fleet.payload)
            .map_err(|e| format!("writing the ConfigMap: {e}"))?;
        let what = format!("update {k}");
        let waited = wait(
            sampler,
            &mut control,
            &what,
            Duration::from_secs(300),
            |_| {
                progress.set_position((k - 1) * nodes + receipts.received(k));
                receipts.received(k) >= nodes
            },
        );
        if let Err(e) = waited {
            // Reported as lost below.
            eprintln!("fleetbench: {e}");
            failure = Some(e);
            break;
        }
    }
    progress.finish_and_clear();
    let seconds = start.elapsed().as_secs_f64();
    let delivered = (1..=o.updates).map(|k| receipts.received(k)).sum();
    let (from_write, spread, spans, first_receipt_ms) = receipts.update_latency();
    figures.first_receipt_ms = first_receipt_ms;
    figures.spread_latency = spread;
    figures.spread_per_second = delivered as f64 / spans.max(1e-6);
    figures.fanout = Phase::of(
        delivered,
        nodes * o.updates,
        stats.downstream.load(Ordering::Relaxed) - messages,
        seconds,
        hub.cpu_seconds() - hub_cpu,
        control.cpu_seconds() - control_cpu,
        from_write,
    );
    figures.control_rss_bytes = control.resident_bytes();
    if let Some(why) = control.exited() {
        return Err(failure.unwrap_or(why));
    }
    Ok(figures)
}
