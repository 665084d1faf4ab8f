//! The fleet scenarios of `fleetbench`: a real `cloudhub` process, N edges
//! driven by the hub-core `Link` over real TLS (a client certificate each,
//! source addresses spread over 127.0.0.0/8) on a tokio runtime, and the
//! control side of the rings played here.
//!
//! Order of a run: limits → certificates → hub → edges connect → the
//! scenario's phase → figures (table, JSON, SVG).

pub mod compare;
pub mod control;
pub mod edge;
pub mod edgecore;
pub mod fanout;
pub mod hub;
pub mod metrics;
pub mod pki;
pub mod report;
pub mod stats;
pub mod workers;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::watch;

use control::{ControlCounters, Work};
use edge::{Command, EdgeSpec};
use report::{Direction, Report, Storm};
use stats::{Sample, Stats};

/// The scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    Idle,
    Storm,
    Downstream,
    Upstream,
    Mixed,
    /// One real `edgecore` process (see [`edgecore`]).
    Edge,
}

impl Scenario {
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "idle" => Self::Idle,
            "storm" => Self::Storm,
            "downstream" => Self::Downstream,
            "upstream" => Self::Upstream,
            "mixed" => Self::Mixed,
            "edge" => Self::Edge,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Storm => "storm",
            Self::Downstream => "downstream",
            Self::Upstream => "upstream",
            Self::Mixed => "mixed",
            Self::Edge => "edge",
        }
    }
}

/// Flags of the fleet scenarios.
#[derive(Debug, Clone)]
pub struct Options {
    pub nodes: usize,
    pub shards: usize,
    pub payload: usize,
    /// Downstream objects per node.
    pub objects: u64,
    /// Downstream messages/s over the whole fleet (0: flat out).
    pub rate: f64,
    /// Upstream messages/s per node.
    pub upstream_rate: f64,
    /// Seconds of upstream traffic.
    pub duration: f64,
    pub client_threads: usize,
    pub backoff_ms: u64,
    pub ring_bytes: usize,
    pub hub_bin: Option<PathBuf>,
    /// The `edgecore` of the `edge` scenario (default: beside fleetbench).
    pub edge_bin: Option<PathBuf>,
    pub out: PathBuf,
    /// Edges connect to the hub's benchmark-only plaintext port, no TLS.
    pub plaintext: bool,
    /// The hub sends one message per frame and one frame per send: a window
    /// of one message in flight per node, so each send answers one ack.
    pub one_per_send: bool,
    /// The control side sends every upstream message back to its node, so
    /// the edges time the whole path edge → hub → control → hub → edge.
    pub echo: bool,
    /// Edges per process; past it (or past the open-files limit) the edges
    /// run in worker processes. `None`: as many as the limit allows.
    pub max_nodes_per_process: Option<usize>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            nodes: 1000,
            shards: 2,
            payload: 256,
            objects: 20,
            rate: 0.0,
            upstream_rate: 1.0,
            duration: 10.0,
            client_threads: 2,
            backoff_ms: 50,
            ring_bytes: 64 << 20,
            hub_bin: None,
            edge_bin: None,
            out: PathBuf::from("target/fleetbench"),
            plaintext: false,
            one_per_send: false,
            echo: false,
            max_nodes_per_process: None,
        }
    }
}

impl Options {
    /// Parses `--flag value` pairs over the defaults.
    pub fn parse(args: &[String]) -> Result<Self, String> {
        let mut o = Self::default();
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            match flag.as_str() {
                "--plaintext" => o.plaintext = true,
                "--one-per-send" => o.one_per_send = true,
                "--echo" => o.echo = true,
                _ => {}
            }
            if matches!(flag.as_str(), "--plaintext" | "--one-per-send" | "--echo") {
                continue;
            }
            let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
            let num = |v: &str| {
                v.replace('_', "")
                    .parse::<f64>()
                    .map_err(|_| format!("{flag} takes a number, not {v:?}"))
            };
            match flag.as_str() {
                "--nodes" => o.nodes = num(value)? as usize,
                "--shards" => o.shards = num(value)? as usize,
                "--payload" => o.payload = num(value)? as usize,
                "--objects" => o.objects = num(value)? as u64,
                "--rate" => o.rate = num(value)?,
                "--upstream-rate" => o.upstream_rate = num(value)?,
                "--duration" => o.duration = num(value)?,
                "--client-threads" => o.client_threads = num(value)? as usize,
                "--backoff-ms" => o.backoff_ms = num(value)? as u64,
                "--ring-bytes" => o.ring_bytes = num(value)? as usize,
                "--hub-bin" => o.hub_bin = Some(value.into()),
                "--edge-bin" => o.edge_bin = Some(value.into()),
                "--max-nodes-per-process" => o.max_nodes_per_process = Some(num(value)? as usize),
                "--out" => o.out = value.into(),
                _ => return Err(format!("unknown flag {flag}")),
            }
        }
        if o.nodes == 0 || o.shards == 0 || o.client_threads == 0 {
            return Err("--nodes, --shards and --client-threads must be positive".into());
        }
        Ok(o)
    }
}

/// The name of node `index` of a fleet.
pub fn node_name(index: usize) -> String {
    format!("node-{index:06}")
}

/// Runs one scenario and prints its figures.
pub fn run(scenario: Scenario, o: &Options) -> Result<Report, String> {
    if scenario == Scenario::Edge {
        let dir = std::env::temp_dir().join(format!("fleetbench-edge-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let result = edgecore::run(o, &dir);
        let _ = std::fs::remove_dir_all(&dir);
        return result;
    }
    let slices = workers::slices(o)?;
    let dir = std::env::temp_dir().join(format!("fleetbench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let result = run_in(scenario, o, &dir, &slices);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    if let Ok(style) =
        ProgressStyle::with_template("{msg:>14} [{bar:40}] {pos}/{len} {per_sec} {elapsed}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_owned());
    bar
}

fn run_in(
    scenario: Scenario,
    o: &Options,
    dir: &std::path::Path,
    slices: &[(usize, usize)],
) -> Result<Report, String> {
    let pki = pki::Pki::new(dir).map_err(|e| e.to_string())?;
    let names: Vec<String> = (0..o.nodes).map(node_name).collect();
    // Edges in this process need their certificates now; workers make
    // their own.
    let local = if slices.is_empty() { o.nodes } else { 0 };
    let certs = bar(local as u64, "certificates");
    let mut clients = Vec::with_capacity(local);
    for n in &names[..local] {
        clients.push(pki.client(n).map_err(|e| e.to_string())?);
        certs.inc(1);
    }
    certs.finish_and_clear();
    let hub = hub::Hub::start(
        dir,
        &pki,
        &hub::HubOptions {
            binary: o.hub_bin.clone(),
            shards: o.shards,
            nodes: o.nodes,
            ring_bytes: o.ring_bytes,
            plaintext: o.plaintext,
            window: o.one_per_send.then_some(1),
        },
    )?;
    if let Some(limit) = hub.open_files_limit()
        && o.nodes as u64 + workers::MARGIN > limit
    {
        eprintln!(
            "fleetbench: the hub's open-files limit is {limit}: it cannot hold {} links \
             (it stops accepting at the limit; the rest wait in its listen queue)",
            o.nodes
        );
    }
    let target = match hub.plain {
        Some(plain) if o.plaintext => plain,
        _ => hub.tls,
    };
    let rss_idle = hub.resident_bytes();
    let stats = Arc::new(Stats::new(o.nodes));
    let counters = Arc::new(ControlCounters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let (runtime, commands, rx) = spawn_edges(o, &names, clients, target, &stats)?;
    let (forwarder, worker_pids) = match slices {
        [] => (None, Vec::new()),
        _ => {
            let workers = workers::Workers::start(slices, o, dir, target, stats.clone())?;
            let pids = workers.pids();
            (Some(std::thread::spawn(move || workers.forward(rx))), pids)
        }
    };
    let mut report = Report {
        client_processes: slices.len().max(1),
        scenario: scenario.name().into(),
        machine: report::machine(),
        nodes: o.nodes,
        shards: o.shards,
        payload_bytes: o.payload,
        transport: if o.plaintext { "plaintext" } else { "TLS 1.3" }.into(),
        delivery: if o.one_per_send {
            "one message per frame, one frame per send (window 1)"
        } else if o.echo {
            "batched (window 256); every upstream message echoed back to its node"
        } else {
            "batched (window 256)"
        }
        .into(),
        hub_rss_idle_bytes: rss_idle,
        ..Report::default()
    };
    let began = Instant::now();
    let sampler = Sampler::new(stats.clone(), began);
    wait_up(&stats, o.nodes, "connecting", Duration::from_secs(300))?;
    report.connect_seconds = began.elapsed().as_secs_f64();

    // The control side: one thread per shard's ring, with its share of
    // the downstream work.
    let downstream = matches!(scenario, Scenario::Downstream | Scenario::Mixed);
    let upstream = matches!(scenario, Scenario::Upstream | Scenario::Mixed);
    let mut per_shard: Vec<Vec<String>> = vec![Vec::new(); o.shards];
    for n in &names {
        per_shard[usize::from(hub_core::shard_of(n, o.shards as u16))].push(n.clone());
    }
    let scraped = hub.scrape()?;
    let rings = hub.rings()?;
    let mut threads = Vec::new();
    for (ring, nodes) in rings.into_iter().zip(per_shard) {
        let share = nodes.len() as f64 / o.nodes as f64;
        let work = Work {
            objects: if downstream && !nodes.is_empty() {
                o.objects
            } else {
                0
            },
            rate: o.rate * share,
            payload: o.payload,
            first_object: 0,
            echo: upstream && o.echo,
            nodes,
        };
        threads.push(control::spawn(
            ring,
            work,
            stats.clone(),
            counters.clone(),
            stop.clone(),
        ));
    }

    let cpu0 = hub.cpu_seconds();
    let phase = Instant::now();
    match scenario {
        Scenario::Idle => {
            // Let the hub settle after the connect burst before reading its
            // memory (one keepalive check; no traffic flows).
            sampler.run_for(Duration::from_secs(2));
        }
        Scenario::Storm => {
            let before = stats.connects.load(Ordering::Relaxed);
            commands.send_modify(|c| c.drop_generation += 1);
            wait_until(&sampler, "reconnecting", Duration::from_secs(300), || {
                stats.connects.load(Ordering::Relaxed) >= before + o.nodes as u64
                    && stats.up.load(Ordering::Relaxed) == o.nodes as u64
            })?;
            let seconds = phase.elapsed().as_secs_f64();
            let cpu = hub.cpu_seconds() - cpu0;
            report.storm = Some(Storm {
                nodes: o.nodes,
                seconds,
                reconnects_per_second: o.nodes as f64 / seconds,
                per_hub_cpu_second: o.nodes as f64 / cpu.max(0.01),
            });
        }
        Scenario::Edge => unreachable!("run by edgecore::run"),
        Scenario::Downstream | Scenario::Upstream | Scenario::Mixed => {
            if upstream {
                commands.send_modify(|c| c.upstream_rate = o.upstream_rate);
                sampler.run_for(Duration::from_secs_f64(o.duration));
                commands.send_modify(|c| c.upstream_rate = 0.0);
            }
            let echo = upstream && o.echo;
            let total = if downstream {
                o.objects * o.nodes as u64
            } else {
                0
            };
            // Everything sent arrives (echoes included), or the run says
            // what was lost.
            let expected = || {
                total
                    + if echo {
                        stats.upstream_sent.load(Ordering::Relaxed)
                    } else {
                        0
                    }
            };
            let progress = bar(expected(), "downstream");
            let _ = wait_until(&sampler, "delivery", Duration::from_secs(600), || {
                progress.set_position(stats.downstream.load(Ordering::Relaxed));
                stats.downstream.load(Ordering::Relaxed) >= expected()
                    && stats.upstream_received.load(Ordering::Relaxed)
                        >= stats.upstream_sent.load(Ordering::Relaxed)
            });
            progress.finish_and_clear();
            let seconds = phase.elapsed().as_secs_f64();
            let cpu = (hub.cpu_seconds() - cpu0).max(0.01);
            let (down_latency, up_latency) = stats.latency();
            if downstream || echo {
                let got = stats.downstream.load(Ordering::Relaxed);
                report.downstream =
                    Some(Direction::of(got, expected(), seconds, cpu, down_latency));
            }
            if upstream {
                let got = stats.upstream_received.load(Ordering::Relaxed);
                let sent = stats.upstream_sent.load(Ordering::Relaxed);
                report.upstream = Some(Direction::of(got, sent, seconds, cpu, up_latency));
            }
        }
    }
    report.hub = Some(hub.scrape()?.since(&scraped));
    report.hub_rss_bytes = hub.resident_bytes();
    report.hub_bytes_per_node =
        report.hub_rss_bytes.saturating_sub(rss_idle) as f64 / o.nodes as f64;
    report.hub_cpu_seconds = hub.cpu_seconds();
    report.fleetbench_cpu_seconds = hub::cpu_seconds("/proc/self/stat")
        + worker_pids
            .iter()
            .map(|pid| hub::cpu_seconds(&format!("/proc/{pid}/stat")))
            .sum::<f64>();
    report.connect_errors = stats.connect_errors.load(Ordering::Relaxed);
    report.samples = sampler.samples();

    commands.send_modify(|c| c.stop = true);
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    runtime.shutdown_timeout(Duration::from_secs(5));
    if let Some(forwarder) = forwarder {
        let _ = forwarder.join();
    }
    drop(hub);
    Ok(report)
}

/// How long connecting may go without one more link up.
const STALL: Duration = Duration::from_secs(60);

/// A runtime of `o.client_threads` threads running one edge task per
/// client (node `names[i]` with `clients[i]`), connecting to `target`, and
/// the channel that commands them.
fn spawn_edges(
    o: &Options,
    names: &[String],
    clients: Vec<Arc<rustls::ClientConfig>>,
    target: std::net::SocketAddr,
    stats: &Arc<Stats>,
) -> Result<
    (
        tokio::runtime::Runtime,
        watch::Sender<Command>,
        watch::Receiver<Command>,
    ),
    String,
> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(o.client_threads)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let (commands, rx) = watch::channel(Command::default());
    for (index, (node, client)) in names.iter().zip(clients).enumerate() {
        let spec = EdgeSpec {
            node: node.clone(),
            index,
            client,
            hub: target,
            source: edge::source_address(index),
            backoff_ms: o.backoff_ms,
            payload: o.payload,
            plaintext: o.plaintext,
        };
        runtime.spawn(edge::run(spec, stats.clone(), rx.clone()));
    }
    Ok((runtime, commands, rx))
}

fn wait_up(stats: &Stats, nodes: usize, what: &str, patience: Duration) -> Result<(), String> {
    let progress = bar(nodes as u64, what);
    let started = Instant::now();
    let deadline = started + patience;
    let (mut most, mut gained_at) = (0, started);
    loop {
        let up = stats.up.load(Ordering::Relaxed);
        progress.set_position(up);
        if up >= nodes as u64 {
            progress.finish_and_clear();
            return Ok(());
        }
        if up > most {
            (most, gained_at) = (up, Instant::now());
        }
        let stalled = gained_at.elapsed() >= STALL;
        if Instant::now() >= deadline || stalled {
            return Err(format!(
                "{what}: only {up} of {nodes} links up after {} s{}",
                started.elapsed().as_secs(),
                if stalled {
                    ", none more for a minute"
                } else {
                    ""
                }
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_until(
    sampler: &Sampler,
    what: &str,
    patience: Duration,
    mut done: impl FnMut() -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + patience;
    while !done() {
        if Instant::now() >= deadline {
            return Err(format!("{what} not finished after {patience:?}"));
        }
        sampler.tick();
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// Takes a [`Sample`] each second while the run waits.
struct Sampler {
    stats: Arc<Stats>,
    began: Instant,
    state: std::cell::RefCell<(Instant, u64, u64, Vec<Sample>)>,
}

impl Sampler {
    fn new(stats: Arc<Stats>, began: Instant) -> Self {
        Self {
            stats,
            began,
            state: std::cell::RefCell::new((began, 0, 0, Vec::new())),
        }
    }

    fn tick(&self) {
        let mut s = self.state.borrow_mut();
        let elapsed = s.0.elapsed().as_secs_f64();
        if elapsed < 1.0 {
            return;
        }
        let down = self.stats.downstream.load(Ordering::Relaxed);
        let up = self.stats.upstream_received.load(Ordering::Relaxed);
        let (down_p99_us, up_p99_us) = self.stats.take_window_p99();
        let sample = Sample {
            t: self.began.elapsed().as_secs_f64(),
            downstream_per_s: (down - s.1) as f64 / elapsed,
            upstream_per_s: (up - s.2) as f64 / elapsed,
            down_p99_us,
            up_p99_us,
            links_up: self.stats.up.load(Ordering::Relaxed),
        };
        *s = (Instant::now(), down, up, std::mem::take(&mut s.3));
        s.3.push(sample);
    }

    fn run_for(&self, d: Duration) {
        let until = Instant::now() + d;
        while Instant::now() < until {
            self.tick();
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn samples(&self) -> Vec<Sample> {
        self.state.borrow().3.clone()
    }
}
