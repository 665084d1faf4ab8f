//! The whole system under a seeded random schedule of faults, checked at
//! quiescence. Real processes, as an operator runs them: `cloudcontrol` on
//! a manifest directory the test writes, `cloudhub` with 2 shards, and
//! [`NODES`] joined `edgecore`s, each reaching the hub through a
//! fault-injecting TCP proxy of the test's (`chaos/proxy.rs`); MQTT clients
//! report twin values on the first [`REPORTING`] edges.
//!
//! For `CHAOS_SECONDS` (default 60) the schedule, a function of the seed
//! alone, mixes manifest changes (creates, updates, rebinds and deletes of
//! Pods, ConfigMaps, Secrets and Devices), twin reports, and faults: kill -9
//! and restart of `cloudhub`, of `cloudcontrol` and of any edge; an edge's
//! store wiped (kill -9, its data directory deleted, certificates and
//! configuration kept, restarted); and each edge's link dropped, reset,
//! stalled or cut for a while. Then every process runs and every link is
//! open, and the test polls, for up to [`QUIET_PATIENCE`], until:
//!
//! - every edge's MetaServer lists exactly its node's objects, each at the
//!   latest change (the label `chaos-version`), nothing missing, stale or
//!   extra, and no other node's objects;
//! - `cloudcontrol get devices` shows, for every thermometer, the last value
//!   its edge accepted (PUBACK and a DeviceTwin answer without an error),
//!   unless that edge's store was wiped after it and nothing was accepted
//!   since (a report not yet sent may go with the disk);
//! - `cloudcontrol get nodes` shows every node Ready;
//! - no process has exited by itself.
//!
//! The seed is printed at the start; `CHAOS_SEED=n` replays the same
//! schedule (the same actions in the same order; their timing is the
//! machine's). A summary (duration, faults of each kind, changes, reports,
//! objects checked, divergences) is printed at the end.

mod support;

#[path = "chaos/check.rs"]
mod check;
#[path = "chaos/model.rs"]
mod model;
#[path = "chaos/proxy.rs"]
mod proxy;
#[path = "chaos/twin.rs"]
mod twin;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use check::Reports;
use model::{Change, Key, Model, Rng};
use proxy::{Mode, Proxy};
use support::{Process, start_control, start_edge, start_hub};

const NODES: usize = 8;
const REPORTING: usize = 4;
/// Edges down at once, at most.
const MAX_EDGES_DOWN: usize = 3;
/// How long the system has to converge once the faults stop.
const QUIET_PATIENCE: Duration = Duration::from_secs(90);
/// Keepalives every 2 s, a link silent for 3 of them is closed: a stalled
/// link is noticed within seconds.
const HUB_SETTINGS: &str = "keepaliveInterval = 2\nmissedKeepalives = 3\n";

fn env_number(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, not {v:?}")),
    )
}

/// A port free now, for a process that must keep its address across
/// restarts.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

struct Edge {
    node: String,
    home: PathBuf,
    config: PathBuf,
    proxy: Proxy,
    running: Option<(Process, SocketAddr, SocketAddr)>,
    /// Where the MetaServer was last seen (after the end, where it is).
    meta: SocketAddr,
}

/// Something undone later in the schedule.
#[derive(Debug, Clone, Copy)]
enum Restore {
    Edge(usize),
    Hub,
    Control,
    Proxy(usize),
}

/// The running system and what the test knows of it.
struct System {
    dir: PathBuf,
    manifests: PathBuf,
    data: PathBuf,
    rings: PathBuf,
    cert_address: String,
    hub_port: u16,
    control: Option<Process>,
    hub: Option<Process>,
    edges: Vec<Edge>,
    /// Processes found exited without the test killing them.
    crashes: Vec<String>,
}

impl System {
    fn start_control(&mut self) {
        let (p, _) = start_control(
            &self.dir,
            &self.manifests,
            &self.data,
            &self.rings,
            &self.cert_address,
        );
        self.control = Some(p);
    }

    fn start_hub(&mut self) {
        let (p, port) = start_hub(
            &self.dir,
            &self.data,
            &self.rings,
            self.hub_port,
            HUB_SETTINGS,
        );
        self.hub_port = port;
        self.hub = Some(p);
    }

    fn start_edge(&mut self, i: usize) {
        let e = &mut self.edges[i];
        let (p, meta, mqtt) = start_edge(&e.node, &e.config, &self.dir);
        e.meta = meta;
        e.running = Some((p, meta, mqtt));
    }

    fn restore(&mut self, r: Restore) {
        match r {
            Restore::Edge(i) => self.start_edge(i),
            Restore::Hub => self.start_hub(),
            Restore::Control => self.start_control(),
            Restore::Proxy(i) => self.edges[i].proxy.set(Mode::Open),
        }
    }

    /// Records and restarts any process that exited by itself.
    fn find_crashes(&mut self) {
        let mut found = Vec::new();
        if let Some(status) = self.control.as_mut().and_then(Process::exited) {
            found.push((
                Restore::Control,
                format!("cloudcontrol exited by itself: {status}"),
            ));
        }
        if let Some(status) = self.hub.as_mut().and_then(Process::exited) {
            found.push((Restore::Hub, format!("cloudhub exited by itself: {status}")));
        }
        for (i, e) in self.edges.iter_mut().enumerate() {
            if let Some(status) = e.running.as_mut().and_then(|(p, ..)| p.exited()) {
                found.push((
                    Restore::Edge(i),
                    format!("{} exited by itself: {status}", e.node),
                ));
            }
        }
        for (r, why) in found {
            let log = match r {
                Restore::Control => self.control.take(),
                Restore::Hub => self.hub.take(),
                Restore::Edge(i) => self.edges[i].running.take().map(|(p, ..)| p),
                Restore::Proxy(_) => None,
            }
            .map(|p| tail(&p.log_text(), 20))
            .unwrap_or_default();
            eprintln!("chaos: {why}\n{log}");
            self.crashes.push(why);
            self.restore(r);
        }
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Counts by kind, for the summary.
#[derive(Default)]
struct Tally(BTreeMap<String, u64>);

impl Tally {
    fn add(&mut self, what: impl Into<String>) {
        *self.0.entry(what.into()).or_default() += 1;
    }

    fn total(&self) -> u64 {
        self.0.values().sum()
    }

    fn show(&self) -> String {
        let parts: Vec<String> = self.0.iter().map(|(k, n)| format!("{k} {n}")).collect();
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(", ")
        }
    }
}

/// Every divergence from the desired state now, and how many objects and
/// reports were checked.
fn divergences(
    system: &System,
    model: &Model,
    reports: &[Reports],
    unchecked: &mut u64,
) -> (Vec<String>, u64) {
    let mut out = system.crashes.clone();
    let wants: Vec<_> = (0..NODES).map(|n| model.holding(n)).collect();
    let mut owners: BTreeMap<Key, Vec<String>> = BTreeMap::new();
    for (n, want) in wants.iter().enumerate() {
        for key in want.keys() {
            owners
                .entry(key.clone())
                .or_default()
                .push(model.nodes[n].clone());
        }
    }
    let mut checked = 0;
    for (n, e) in system.edges.iter().enumerate() {
        checked += wants[n].len() as u64;
        match check::held(e.meta) {
            Ok(have) => out.extend(check::compare(&e.node, &wants[n], &have, &owners)),
            Err(why) => out.push(format!("{}: MetaServer: {why}", e.node)),
        }
    }
    out.extend(check::not_ready(
        &support::table(&system.data, "nodes"),
        &model.nodes,
    ));
    checked += NODES as u64;
    let table = support::devices_table(&system.data);
    let shown = check::reported(&table);
    *unchecked = 0;
    for (i, r) in reports.iter().enumerate() {
        let device = model.thermometer(i);
        let cloud = shown.get(&device).cloned().flatten();
        let (was_checked, problem) = r.judge(&device, cloud.as_deref());
        checked += u64::from(was_checked);
        *unchecked += u64::from(!was_checked);
        out.extend(problem);
    }
    (out, checked)
}

#[test]
fn the_system_converges_after_a_seeded_schedule_of_faults() {
    let seed = env_number("CHAOS_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            % 1_000_000_000
    });
    let seconds = env_number("CHAOS_SECONDS").unwrap_or(60);
    println!("chaos: seed {seed} ({seconds} s of faults; CHAOS_SEED={seed} replays the schedule)");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_owned();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut rng = Rng::new(seed);
    let nodes: Vec<String> = (0..NODES).map(|i| format!("edge-{i}")).collect();
    let manifests = dir.join("manifests");
    let mut model = Model::new(&manifests, nodes.clone(), REPORTING, &mut rng);

    let mut system = System {
        manifests,
        data: dir.join("control"),
        rings: dir.join("rings"),
        cert_address: format!("127.0.0.1:{}", free_port()),
        hub_port: 0,
        control: None,
        hub: None,
        edges: Vec::new(),
        crashes: Vec::new(),
        dir: dir.clone(),
    };
    system.start_control();
    system.start_hub();
    let token = support::token(&system.data);
    let hub_addr: SocketAddr = format!("127.0.0.1:{}", system.hub_port).parse().unwrap();
    for node in &nodes {
        let proxy = Proxy::start(&runtime, hub_addr);
        let home = dir.join(node);
        let config = support::join(
            &token,
            &proxy.addr.to_string(),
            &system.cert_address,
            node,
            &home,
        );
        system.edges.push(Edge {
            node: node.clone(),
            home,
            config,
            proxy,
            running: None,
            meta: hub_addr,
        });
    }
    for i in 0..NODES {
        system.start_edge(i);
    }
    let mut reports = vec![Reports::default(); REPORTING];
    let mut unchecked = 0;

    // Before any fault: the first desired state everywhere.
    let began = Instant::now();
    loop {
        let (d, _) = divergences(&system, &model, &reports, &mut unchecked);
        if d.is_empty() {
            break;
        }
        assert!(
            began.elapsed() < support::PATIENCE,
            "seed {seed}: the first desired state never arrived, before any fault:\n{}",
            d.join("\n")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "chaos: initial state everywhere after {:.1?}",
        began.elapsed()
    );

    // The faults.
    let (mut faults, mut changes, mut outcomes) =
        (Tally::default(), Tally::default(), Tally::default());
    let max_faults = seconds * 2;
    let mut pending: Vec<(u64, Restore)> = Vec::new();
    let mut next_value = 0u64;
    let started = Instant::now();
    let mut step = 0u64;
    while started.elapsed() < Duration::from_secs(seconds) {
        step += 1;
        let (due, later): (Vec<_>, Vec<_>) = pending.into_iter().partition(|(s, _)| *s <= step);
        pending = later;
        for (_, r) in due {
            system.restore(r);
        }
        system.find_crashes();
        let roll = rng.below(100);
        if roll < 45 {
            changes.add(match model.change(&mut rng) {
                Change::Create(k) => format!("create {k}"),
                Change::Update(k) => format!("update {k}"),
                Change::Delete(k) => format!("delete {k}"),
            });
        } else if roll < 70 {
            let i = rng.below(REPORTING);
            next_value += 1;
            if let Some((_, _, mqtt)) = &system.edges[i].running {
                let device = model.thermometer(i);
                let client = format!("driver-{step}");
                let outcome = twin::report(&runtime, *mqtt, &client, &device, next_value);
                let r = &mut reports[i];
                r.attempted = Some(next_value);
                match &outcome {
                    twin::Outcome::Accepted => {
                        r.accepted = Some(next_value);
                        r.wiped_since = false;
                        outcomes.add("accepted");
                    }
                    twin::Outcome::Refused(why) => outcomes.add(format!("refused ({why})")),
                    twin::Outcome::Failed(why) => {
                        eprintln!(
                            "chaos: report {next_value} on {}: {why}",
                            system.edges[i].node
                        );
                        outcomes.add("failed");
                    }
                }
            }
        } else if faults.total() < max_faults {
            let kind = rng.below(8);
            let i = rng.below(NODES);
            let later = rng.between(0, 15);
            let down = system.edges.iter().filter(|e| e.running.is_none()).count();
            let edge_up = system.edges[i].running.is_some();
            let open = system.edges[i].proxy.mode() == Mode::Open;
            match kind {
                0 | 1 if edge_up && down < MAX_EDGES_DOWN => {
                    drop(system.edges[i].running.take());
                    if kind == 1 {
                        let e = &system.edges[i];
                        std::fs::remove_dir_all(e.home.join("data")).unwrap();
                        if i < REPORTING {
                            reports[i].wiped_since = true;
                        }
                        faults.add("edge store wiped");
                    } else {
                        faults.add("edge killed");
                    }
                    pending.push((step + later, Restore::Edge(i)));
                }
                2 if system.hub.is_some() => {
                    drop(system.hub.take());
                    faults.add("cloudhub killed");
                    pending.push((step + later, Restore::Hub));
                }
                3 if system.control.is_some() => {
                    drop(system.control.take());
                    faults.add("cloudcontrol killed");
                    pending.push((step + later, Restore::Control));
                }
                4 => {
                    system.edges[i].proxy.drop_all();
                    faults.add("link dropped");
                }
                5 => {
                    system.edges[i].proxy.reset_all();
                    faults.add("link reset");
                }
                6 if open => {
                    system.edges[i].proxy.set(Mode::Stalled);
                    faults.add("link stalled");
                    pending.push((step + 5 + later * 2, Restore::Proxy(i)));
                }
                7 if open => {
                    system.edges[i].proxy.set(Mode::Cut);
                    faults.add("link cut");
                    pending.push((step + 5 + later * 2, Restore::Proxy(i)));
                }
                _ => {}
            }
        }
        // The schedule's pace: part of the fault schedule, not a wait.
        std::thread::sleep(Duration::from_millis(rng.between(50, 300)));
    }
    let fault_seconds = started.elapsed();

    // Quiet: everything runs again, every link is open.
    for (_, r) in std::mem::take(&mut pending) {
        system.restore(r);
    }
    for e in &system.edges {
        e.proxy.set(Mode::Open);
    }
    system.find_crashes();
    let quiet = Instant::now();
    let (mut found, mut checked);
    loop {
        (found, checked) = divergences(&system, &model, &reports, &mut unchecked);
        if found.is_empty() || quiet.elapsed() >= QUIET_PATIENCE {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
        system.find_crashes();
    }
    let quiet_seconds = quiet.elapsed();

    let mut summary = String::new();
    let _ = writeln!(summary, "chaos summary, seed {seed}:");
    let _ = writeln!(
        summary,
        "  faults for {:.1} s, {step} steps; {} faults: {}",
        fault_seconds.as_secs_f64(),
        faults.total(),
        faults.show()
    );
    let _ = writeln!(
        summary,
        "  {} manifest changes: {}",
        changes.total(),
        changes.show()
    );
    let _ = writeln!(summary, "  twin reports: {}", outcomes.show());
    let _ = writeln!(
        summary,
        "  {} objects and reports checked ({} reports left unchecked after a wipe); {} divergences after {:.1} s of quiet{}",
        checked,
        unchecked,
        found.len(),
        quiet_seconds.as_secs_f64(),
        if found.is_empty() { "" } else { " (gave up)" }
    );
    println!("{summary}");
    if !found.is_empty() {
        let kept = tmp.keep();
        panic!(
            "seed {seed}: the system did not converge within {QUIET_PATIENCE:?} of quiet \
             (replay with CHAOS_SEED={seed}; logs and stores kept in {}):\n{}\n{summary}",
            kept.display(),
            found.join("\n")
        );
    }
}
