//! Edged's performance budgets, measured on real processes: cloudcontrol
//! on a manifest directory, cloudhub, and one joined edgecore running
//! sleeping busybox pods on a private containerd (`support::containerd`,
//! images built from a static busybox, `imagePullPolicy: Never`).
//!
//! ```text
//! cargo build --release --bin cloudcontrol --bin cloudhub --bin edgecore
//! cargo build --profile edge -p edge-core --bin edgecore
//! cargo bench -p e2e --bench pods -- [--pods 50] [--max 500] [--edge-bin target/edge/edgecore]
//!     [--idle-seconds 30] [--each] [--hold S]
//! ```
//!
//! A relative `--edge-bin` is taken from the workspace's root; the other
//! daemons are the release build's. `--each` prints every pod's times,
//! `--hold S` keeps everything running for S seconds at the end (with the
//! pids printed) for a profiler.
//!
//! In order:
//! 1. idle resident memory and CPU of a fresh edgecore with Edged
//!    disabled, another with Edged enabled and no runtime at its endpoint;
//!    then the one that runs the pods, with the runtime up and no pods;
//! 2. `--pods` pods written in one manifest file (a burst): from their
//!    arrival at the edge to their container started;
//! 3. edgecore idle with them running (all Running at the cloud): resident
//!    memory and CPU over `--idle-seconds`, containerd's CPU beside it;
//! 4. `--pods` more, one at a time, each written once the one before is
//!    Running at the cloud: the same latency without a queue in front of
//!    it, and how long a pod's Running takes to reach the cloud;
//! 5. a few more, each written as soon as the one before started (its
//!    status then on its way up): the delivery in that case;
//! 6. batches of 50 more, a manifest file each, up to `--max` pods (0:
//!    skip), resident memory and CPU after each, stopping at the first
//!    failure (no pod of the batch started for 90 s, or edgecore exited).
//!
//! The pods of 2 to 5 are on the pod network (the CNI bridge of the test
//! containerd); those of 6 on the host network, because that bridge's /24
//! holds 253 pod addresses.
//!
//! What the figures mean:
//! - a pod *arrives at the edge* when edgecore commits it to its store. The
//!   daemon hands each commit's changes to the MetaServer's watches and to
//!   Edged's thread in the same loop turn, so the arrival is the moment a
//!   watch on the edge's MetaServer (`/api/v1/pods?watch=true`, opened
//!   before any pod is written) reads the pod's first event. The watch's
//!   task writes it after the daemon's turn ends, so it reads a commit up
//!   to a few ms after Edged's thread heard of it ("arrived → RunPodSandbox
//!   called" may be slightly negative). The time from the manifest write
//!   to it (cloudcontrol's 100 ms poll, the hub, the link, the group
//!   commit) is reported separately as the delivery;
//! - a container *started* when containerd logs `StartContainer for "ID"
//!   returns successfully`; containerd's log stamps each CRI call's start
//!   and end in nanoseconds, so *the runtime's own time* is the sum of the
//!   pod's RunPodSandbox, CreateContainer and StartContainer calls, and
//!   the rest of arrival → started is Edged's (queueing behind other pods,
//!   its observe calls, the gaps between calls);
//! - CPU is utime + stime from `/proc/PID/stat` over a window; memory is
//!   `VmRSS` (with `RssAnon` and `RssFile`) from `/proc/PID/status`, the
//!   highest seen in the window.
//!
//! Run as a test (`cargo test`, which passes no `--bench`), it does 1–4
//! with 2 pods in the burst, 1 one at a time, 1 s windows and a node status
//! every second, and checks that every figure was measured, in a few
//! seconds.

#[path = "../tests/support/mod.rs"]
mod support;

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::containerd::{BUSYBOX, Containerd, PAUSE};
use support::{Process, binary, eventually, join, start_control, start_hub, table, token};

const NODE: &str = "edge-1";
/// How long pods may make no progress before a phase counts as failed.
const STALL: Duration = Duration::from_secs(90);
/// The pods added per manifest file in the scale phase.
const BATCH: usize = 50;
/// The pods written as soon as the one before started, whose statuses
/// are then on their way up.
const HURRIED: usize = 3;

#[derive(Debug)]
struct Options {
    pods: usize,
    max: usize,
    edge_bin: PathBuf,
    idle: Duration,
    /// Idle windows of the memory-only runs and of the scale checkpoints.
    short: Duration,
    quick: bool,
    /// Print every pod's times too.
    each: bool,
    /// Seconds to keep everything running at the end, for a profiler.
    hold: u64,
}

impl Options {
    fn parse() -> Self {
        let args: Vec<String> = std::env::args().skip(1).collect();
        // `cargo bench` passes `--bench`; `cargo test` does not.
        let quick = !args.iter().any(|a| a == "--bench");
        let mut o = Options {
            pods: 50,
            max: 500,
            edge_bin: binary("edgecore"),
            idle: Duration::from_secs(30),
            short: Duration::from_secs(10),
            quick,
            each: false,
            hold: 0,
        };
        if quick {
            // The test harness's own flags (--nocapture, filters) mean nothing here.
            (o.pods, o.max, o.idle, o.short) = (2, 0, Duration::from_secs(1), Duration::ZERO);
            return o;
        }
        let mut it = args.into_iter().filter(|a| a != "--bench");
        while let Some(flag) = it.next() {
            let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
            match flag.as_str() {
                "--pods" => o.pods = value().parse().expect("--pods N"),
                "--max" => o.max = value().parse().expect("--max N"),
                "--edge-bin" => o.edge_bin = from_workspace(&value()),
                "--each" => o.each = true,
                "--hold" => o.hold = value().parse().expect("--hold S"),
                "--idle-seconds" => {
                    o.idle = Duration::from_secs(value().parse().expect("--idle-seconds S"))
                }
                other => panic!(
                    "unknown flag {other}: --pods N --max N --edge-bin PATH --idle-seconds S --each --hold S"
                ),
            }
        }
        assert!(
            o.edge_bin.is_file(),
            "--edge-bin {}: no such file",
            o.edge_bin.display()
        );
        o
    }
}

/// A relative path as given from the workspace's root, where the cargo
/// commands run; cargo runs a bench in its package's directory.
fn from_workspace(path: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let path = root.join(path);
    path.canonicalize().unwrap_or(path)
}

fn main() {
    progress("start");
    let o = Options::parse();
    let stack = Stack::start();
    progress("cloud, hub, containerd with images, node joined");
    let report = run(&o, &stack);
    report.print(&o);
    if o.quick {
        report.check();
    }
    progress("measured; tearing down");
}

/// Where the run is, on stderr, with the seconds since it started.
fn progress(what: &str) {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = START.get_or_init(Instant::now);
    eprintln!("[{:6.1} s] {what}", start.elapsed().as_secs_f64());
}

/// Every phase in order; see the module's comment.
fn run(o: &Options, stack: &Stack) -> Report {
    let mut report = Report::default();
    if !o.quick {
        report.disabled = Some(stack.idle_run(o, Variant::Disabled));
        report.absent = Some(stack.idle_run(o, Variant::Absent));
    }
    let mut edge = stack.edge(o, Variant::Runtime, "edgecore-pods");
    edge.process.wait_log("container runtime up");
    report.empty = Some(edge.idle(o.short.max(o.idle / 3)));
    progress("idle without pods");
    report.burst = Some(burst(o, stack, &mut edge));
    report.loaded = Some((o.pods, edge.idle(o.idle)));
    progress("idle with pods");
    let count = if o.quick { 1 } else { o.pods };
    report.sequential = Some(one_at_a_time(stack, &mut edge, "s", count, true));
    if !o.quick {
        report.hurried = Some(one_at_a_time(stack, &mut edge, "r", HURRIED, false));
    }
    progress("one at a time");
    stack.wait_running(&edge.started_names());
    report.scale = scale(o, stack, &mut edge);
    hold(o, stack, &edge);
    report.host_network_only = stack.runtime.bridge().is_none();
    report
}

/// `o.pods` pods in one manifest file, until they all started (and, but in
/// the quick run, show Running at the cloud, so that the idle window after
/// it sees a settled edge).
fn burst(o: &Options, stack: &Stack, edge: &mut Edge) -> Latency {
    let pods = names("b", 0, o.pods);
    stack.write_pods("burst.yaml", &pods, stack.runtime.bridge().is_none());
    let latency = edge
        .wait_started(&pods, stack)
        .expect("the burst's pods start");
    progress("burst started");
    if !o.quick {
        // The quick run's one-at-a-time pod checks this path.
        stack.wait_running(&pods);
        progress("burst Running at the cloud");
    }
    latency
}

/// `--hold`: everything left running for a profiler.
fn hold(o: &Options, stack: &Stack, edge: &Edge) {
    if o.hold == 0 {
        return;
    }
    let (edge, runtime) = (edge.process.pid(), stack.runtime.pid());
    progress(&format!(
        "holding {} s: edgecore pid={edge} containerd pid={runtime}",
        o.hold
    ));
    // Nothing to wait for: the time a profiler was asked for.
    std::thread::sleep(Duration::from_secs(o.hold));
}

/// `n` pods named `prefix-i`, each written once the one before started
/// and, if `settle`, is Running at the cloud (its status went up); then
/// how long that took is measured too.
fn one_at_a_time(stack: &Stack, edge: &mut Edge, prefix: &str, n: usize, settle: bool) -> Latency {
    let host_network = stack.runtime.bridge().is_none();
    let mut each = Vec::new();
    for name in names(prefix, 0, n) {
        let pod = std::slice::from_ref(&name);
        stack.write_pods(&format!("{name}.yaml"), pod, host_network);
        let mut latency = edge.wait_started(pod, stack).expect("a pod starts");
        if settle {
            stack.wait_running(pod);
            let started = edge.timeline.started(&name).expect("it started");
            latency.samples[0].reported = ms(started, unix_ns(SystemTime::now()));
        }
        each.push(latency);
    }
    Latency::merge(each)
}

/// Batches of host-network pods until `o.max` pods run or one fails to.
fn scale(o: &Options, stack: &Stack, edge: &mut Edge) -> Scale {
    let mut scale = Scale::default();
    let mut total = edge.started_names().len();
    let mut batch = 0;
    while total < o.max {
        let n = BATCH.min(o.max - total);
        let pods = names("h", batch * BATCH, n);
        stack.write_pods(&format!("hosts-{batch}.yaml"), &pods, true);
        match edge.wait_started(&pods, stack) {
            Ok(latency) => {
                total += n;
                stack.wait_running(&pods);
                let idle = edge.idle(o.short);
                eprintln!("{total} pods: {}", idle.summary());
                scale.steps.push((total, latency, idle));
            }
            Err(failure) => {
                scale.failure = Some(failure);
                break;
            }
        }
        batch += 1;
    }
    scale
}

fn names(prefix: &str, first: usize, n: usize) -> Vec<String> {
    (first..first + n)
        .map(|i| format!("{prefix}-{i}"))
        .collect()
}

// ---------------------------------------------------------------------------
// The processes.

/// cloudcontrol, cloudhub, the runtime, and the joined node's configuration.
/// Fields drop in order: the cloud first, the runtime (which kills every
/// container) next, the directory last.
struct Stack {
    _control: Process,
    _hub: Process,
    runtime: Containerd,
    dir: PathBuf,
    manifests: PathBuf,
    data: PathBuf,
    config: String,
    /// When each pod's manifest was written, unix ns.
    writes: RefCell<HashMap<String, u64>>,
    _tmp: tempfile::TempDir,
}

/// Which Edged an edgecore runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    /// `[modules.edged] enable = false`.
    Disabled,
    /// Enabled, nothing listening at its endpoint: a device-only gateway.
    Absent,
    /// Enabled on the test's containerd.
    Runtime,
}

impl Stack {
    fn start() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_owned();
        std::fs::create_dir_all(dir.join("cri")).unwrap();
        let runtime = Containerd::start_with_images(&dir.join("cri"));
        let (manifests, data, rings) = (
            dir.join("manifests"),
            dir.join("control"),
            dir.join("rings"),
        );
        std::fs::create_dir_all(&manifests).unwrap();
        let node = format!(
            "apiVersion: v1\nkind: Node\nmetadata:\n  name: {NODE}\n  \
             labels: {{node-role.kubernetes.io/edge: \"\"}}\n"
        );
        std::fs::write(manifests.join("node.yaml"), node).unwrap();
        let (control, certs) = start_control(&dir, &manifests, &data, &rings, "127.0.0.1:0");
        let (hub, port) = start_hub(&dir, &data, &rings, 0, "");
        let cloud = format!("127.0.0.1:{port}");
        let path = join(&token(&data), &cloud, &certs, NODE, &dir.join(NODE));
        let config = std::fs::read_to_string(path).unwrap();
        Stack {
            _control: control,
            _hub: hub,
            runtime,
            dir,
            manifests,
            data,
            config,
            writes: RefCell::default(),
            _tmp: tmp,
        }
    }

    /// The joined configuration with Edged set up as `variant` says.
    fn config_for(&self, o: &Options, variant: Variant) -> PathBuf {
        let dir = self.dir.display();
        // edgecore's upstream waits for its next timer (see RESULTS.md):
        // a quick run ticks every second so that it is not held for 10 s.
        let status = if o.quick { 1 } else { 10 };
        let endpoint = match variant {
            Variant::Runtime => self.runtime.endpoint(),
            _ => format!("unix://{dir}/no-runtime.sock"),
        };
        let mut text = self.config.clone();
        for (key, value) in [
            ("enable", (variant != Variant::Disabled).to_string()),
            ("remoteRuntimeEndpoint", format!("{endpoint:?}")),
            ("podSandboxImage", format!("{PAUSE:?}")),
            ("rootDirectory", format!("\"{dir}/edged\"")),
            ("podLogsDir", format!("\"{dir}/pod-logs\"")),
            ("nodeStatusUpdateFrequency", status.to_string()),
        ] {
            text = set_in_section(&text, "modules.edged", key, &value);
        }
        let path = self.dir.join(format!("edgecore-{variant:?}.toml"));
        std::fs::write(&path, text).unwrap();
        path
    }

    /// `edgecore run` of `o.edge_bin` as `variant`, once its MetaServer and
    /// broker listen, with a watch on its pods.
    fn edge(&self, o: &Options, variant: Variant, name: &str) -> Edge {
        let config = self.config_for(o, variant);
        let mut command = Command::new(&o.edge_bin);
        command.arg("run").arg("--config").arg(&config);
        let process = Process::start(name, &mut command, &self.dir);
        let meta: SocketAddr = process.wait_for("metaserver=").parse().unwrap();
        process.wait_for("mqtt=");
        Edge::new(process, meta, self.runtime.pid())
    }

    /// A fresh edgecore as `variant`, idle for the short window once its
    /// link is up (and the runtime answered or was found absent).
    fn idle_run(&self, o: &Options, variant: Variant) -> Idle {
        let edge = self.edge(o, variant, &format!("edgecore-{variant:?}"));
        edge.process.wait_log("link up");
        match variant {
            Variant::Absent => edge.process.wait_log("no container runtime at"),
            Variant::Disabled => edge.process.wait_log("Edged is disabled"),
            Variant::Runtime => edge.process.wait_log("container runtime up"),
        }
        let idle = edge.idle(o.short);
        eprintln!("{variant:?}: {}", idle.summary());
        idle
    }

    /// One manifest file of sleeping busybox pods; the write's time is the
    /// start of their delivery.
    fn write_pods(&self, file: &str, names: &[String], host_network: bool) {
        let text: Vec<String> = names.iter().map(|n| pod_yaml(n, host_network)).collect();
        let tmp = self.dir.join(format!(".{file}"));
        std::fs::write(&tmp, text.join("---\n")).unwrap();
        // Renamed in, so cloudcontrol never parses half a file.
        let written = unix_ns(SystemTime::now());
        std::fs::rename(&tmp, self.manifests.join(file)).unwrap();
        let mut writes = self.writes.borrow_mut();
        names.iter().for_each(|n| {
            writes.insert(n.clone(), written);
        });
    }

    /// Until the cloud shows every one of `names` `1/1 Running`.
    fn wait_running(&self, names: &[String]) {
        eventually("the pods Running at the cloud", || {
            let states = cloud_states(&self.data);
            names
                .iter()
                .all(|n| states.get(n).is_some_and(|s| s == "1/1 Running"))
        });
    }
}

/// `READY STATUS` of each pod, as `cloudcontrol get pods` prints them.
fn cloud_states(data: &Path) -> HashMap<String, String> {
    table(data, "pods")
        .lines()
        .skip(1)
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            Some((
                cols.get(1)?.to_string(),
                format!("{} {}", cols.get(2)?, cols.get(3)?),
            ))
        })
        .collect()
}

fn pod_yaml(name: &str, host_network: bool) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: default}}\n\
         spec:\n  nodeName: {NODE}\n  hostNetwork: {host_network}\n  terminationGracePeriodSeconds: 1\n  \
         containers: [{{name: app, image: \"{BUSYBOX}\", imagePullPolicy: Never, command: [sleep, \"3600\"]}}]\n"
    )
}

/// `key = value` (a TOML literal) in `[section]`, where `edgecore join`
/// wrote every key with its default.
fn set_in_section(text: &str, section: &str, key: &str, value: &str) -> String {
    let header = format!("[{section}]");
    let mut current = String::new();
    let mut found = false;
    let lines: Vec<String> = text
        .lines()
        .map(|line| {
            if line.starts_with('[') {
                current = line.trim().to_owned();
            }
            let ours = current == header && line.split('=').next().map(str::trim) == Some(key);
            found |= ours;
            if ours {
                format!("{key} = {value}")
            } else {
                line.to_owned()
            }
        })
        .collect();
    assert!(found, "{key} is not in [{section}] of:\n{text}");
    lines.join("\n") + "\n"
}

// ---------------------------------------------------------------------------
// One edgecore: its pods' arrivals, containerd's record of their starts,
// its memory and CPU.

struct Edge {
    process: Process,
    runtime_pid: u32,
    /// The first watch event of each pod, unix ns.
    arrivals: Arc<Mutex<HashMap<String, u64>>>,
    timeline: Timeline,
}

impl Edge {
    /// Opens the pod watch on the MetaServer at `meta` and returns once it
    /// is subscribed (the MetaServer subscribes before it answers).
    fn new(process: Process, meta: SocketAddr, runtime_pid: u32) -> Self {
        let mut stream = TcpStream::connect(meta).unwrap();
        let request =
            "GET /api/v1/pods?watch=true&timeoutSeconds=86400 HTTP/1.1\r\nhost: localhost\r\n\r\n";
        stream.write_all(request.as_bytes()).unwrap();
        let mut reader = BufReader::new(stream);
        let mut head = String::new();
        reader.read_line(&mut head).unwrap();
        assert!(head.contains(" 200"), "the pod watch: {head}");
        let arrivals = Arc::new(Mutex::new(HashMap::new()));
        let seen = arrivals.clone();
        std::thread::spawn(move || read_watch(reader, &seen));
        Edge {
            process,
            runtime_pid,
            arrivals,
            timeline: Timeline::default(),
        }
    }

    /// Memory and CPU of edgecore and containerd over `window`.
    fn idle(&self, window: Duration) -> Idle {
        let (pid, hz) = (self.process.pid(), clock_ticks());
        let (edge0, runtime0, t0) = (cpu_ticks(pid), cpu_ticks(self.runtime_pid), Instant::now());
        let mut mem = memory(pid);
        while t0.elapsed() < window {
            // Sampling within a measured window, not a wait for anything.
            std::thread::sleep(Duration::from_millis(100));
            let now = memory(pid);
            if now.rss_kib > mem.rss_kib {
                mem = now;
            }
        }
        let seconds = t0.elapsed().as_secs_f64().max(1e-3);
        Idle {
            seconds,
            // Saturating: a process that ended reads as 0 ticks.
            edge_cpu: cpu_ticks(pid).saturating_sub(edge0) as f64 / hz / seconds,
            runtime_cpu: cpu_ticks(self.runtime_pid).saturating_sub(runtime0) as f64 / hz / seconds,
            mem,
        }
    }

    /// Until each of `names` arrived and its container started, with at
    /// most [`STALL`] between two pods' starts; their latencies.
    fn wait_started(&mut self, names: &[String], stack: &Stack) -> Result<Latency, String> {
        let log = stack.runtime.dir().join("containerd.log");
        let (mut done, mut stall) = (0, Instant::now() + STALL);
        loop {
            self.timeline.update(&log);
            let arrived = self.arrivals.lock().unwrap().clone();
            let now = names
                .iter()
                .filter(|n| arrived.contains_key(*n) && self.timeline.started(n).is_some())
                .count();
            if now == names.len() {
                return Ok(self.latency(names, &arrived, &stack.writes.borrow()));
            }
            if now > done {
                (done, stall) = (now, Instant::now() + STALL);
            }
            if let Some(status) = self.process.exited() {
                return Err(self.failure(names, stack, &format!("edgecore exited ({status})")));
            }
            if Instant::now() > stall {
                let why = format!("no pod started for {} s", STALL.as_secs());
                return Err(self.failure(names, stack, &why));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn latency(
        &self,
        names: &[String],
        arrived: &HashMap<String, u64>,
        writes: &HashMap<String, u64>,
    ) -> Latency {
        let samples: Vec<Sample> = names
            .iter()
            .map(|n| {
                let calls = &self.timeline.pods[n];
                Sample::new(n, writes[n], arrived[n], calls)
            })
            .collect();
        let first = names.iter().map(|n| arrived[n]).min().unwrap_or(0);
        let last = names
            .iter()
            .filter_map(|n| self.timeline.started(n))
            .max()
            .unwrap_or(0);
        Latency {
            samples,
            span_ms: Some(ms(first, last)),
        }
    }

    /// What a user would look at when pods do not start: their status at
    /// the cloud, edgecore's last warnings, containerd's last errors.
    fn failure(&self, names: &[String], stack: &Stack, why: &str) -> String {
        let states = cloud_states(&stack.data);
        let waiting: Vec<String> = names
            .iter()
            .filter(|n| self.timeline.started(n).is_none())
            .map(|n| {
                format!(
                    "{n} {}",
                    states.get(n).map_or("(not at the cloud)", String::as_str)
                )
            })
            .collect();
        let edge = last_lines(&self.process.log_text(), &["WARN", "ERROR"], 5);
        let runtime_log =
            std::fs::read_to_string(stack.runtime.dir().join("containerd.log")).unwrap_or_default();
        let runtime = last_lines(&runtime_log, &["level=error"], 5);
        format!(
            "{why}: {} of {} started; waiting: {} …\nedgecore's last warnings:\n{edge}\ncontainerd's last errors:\n{runtime}",
            names.len() - waiting.len(),
            names.len(),
            waiting[..waiting.len().min(5)].join(", "),
        )
    }

    /// Every pod whose container this edge's runtime started.
    fn started_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .timeline
            .pods
            .keys()
            .filter(|n| self.timeline.started(n).is_some())
            .cloned()
            .collect();
        names.sort();
        names
    }
}

fn read_watch(reader: BufReader<TcpStream>, seen: &Mutex<HashMap<String, u64>>) {
    // Chunked: size lines, then one event per line.
    for line in reader.lines().map_while(Result::ok) {
        let now = unix_ns(SystemTime::now());
        let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if let Some(name) = event["object"]["metadata"]["name"].as_str() {
            seen.lock().unwrap().entry(name.to_owned()).or_insert(now);
        }
    }
}

fn last_lines(text: &str, any_of: &[&str], n: usize) -> String {
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| any_of.iter().any(|w| l.contains(w)))
        .collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

// ---------------------------------------------------------------------------
// /proc.

#[derive(Debug, Clone, Copy, Default)]
struct Memory {
    rss_kib: u64,
    anon_kib: u64,
    file_kib: u64,
    threads: u64,
}

fn memory(pid: u32) -> Memory {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    Memory {
        rss_kib: field("VmRSS:"),
        anon_kib: field("RssAnon:"),
        file_kib: field("RssFile:"),
        threads: field("Threads:"),
    }
}

/// utime + stime of all the process's threads, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After the command name, which may hold spaces: state is field 3,
    // utime 14 and stime 15.
    let rest = stat.rfind(')').map_or("", |i| &stat[i + 1..]);
    let fields: Vec<u64> = rest
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0)
}

fn clock_ticks() -> f64 {
    let out = Command::new("getconf").arg("CLK_TCK").output();
    out.ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

fn unix_ns(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
}

/// Milliseconds from `a` to `b` (unix ns), negative if `b` is earlier.
fn ms(a: u64, b: u64) -> f64 {
    (b as f64 - a as f64) / 1e6
}

// ---------------------------------------------------------------------------
// containerd's log: when each CRI call of each pod began and ended.

/// A CRI call's first attempt, unix ns.
#[derive(Debug, Clone, Copy, Default)]
struct Call {
    begin: Option<u64>,
    end: Option<u64>,
}

impl Call {
    fn ms(&self) -> f64 {
        match (self.begin, self.end) {
            (Some(b), Some(e)) => ms(b, e),
            _ => f64::NAN,
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Calls {
    sandbox: Call,
    create: Call,
    start: Call,
}

/// What containerd's log says so far, read on from where it was last read.
#[derive(Debug, Default)]
struct Timeline {
    offset: u64,
    /// Sandbox id → pod name; container id → pod name.
    sandboxes: HashMap<String, String>,
    containers: HashMap<String, String>,
    pods: HashMap<String, Calls>,
}

impl Timeline {
    fn update(&mut self, log: &Path) {
        let Ok(mut file) = std::fs::File::open(log) else {
            return;
        };
        let mut text = String::new();
        let _ = file.seek(SeekFrom::Start(self.offset));
        let _ = file.read_to_string(&mut text);
        // Only whole lines; a line being written is read next time.
        let whole = text.rfind('\n').map_or(0, |i| i + 1);
        text[..whole].lines().for_each(|l| self.line(l));
        self.offset += whole as u64;
    }

    /// When the pod's app container started, unix ns.
    fn started(&self, pod: &str) -> Option<u64> {
        self.pods.get(pod)?.start.end
    }

    fn line(&mut self, line: &str) {
        let (Some(time), Some(msg)) = (quoted(line, "time"), quoted(line, "msg")) else {
            return;
        };
        let Some(t) = parse_rfc3339(&time) else {
            return;
        };
        if let Some(rest) = msg.strip_prefix("RunPodSandbox for &PodSandboxMetadata{Name:") {
            let pod = rest.split(',').next().unwrap_or_default().to_owned();
            let call = &mut self.pods.entry(pod.clone()).or_default().sandbox;
            if let Some((_, id)) = rest.split_once("} returns sandbox id ") {
                call.end.get_or_insert(t);
                self.sandboxes.insert(id.trim_matches('"').to_owned(), pod);
            } else if rest.ends_with('}') {
                call.begin.get_or_insert(t);
            }
        } else if let Some(rest) = msg.strip_prefix("CreateContainer within sandbox ") {
            let sandbox = rest.split('"').nth(1).unwrap_or_default();
            let Some(pod) = self.sandboxes.get(sandbox).cloned() else {
                return;
            };
            let call = &mut self.pods.entry(pod.clone()).or_default().create;
            if let Some((_, id)) = rest.split_once(" returns container id ") {
                call.end.get_or_insert(t);
                self.containers.insert(id.trim_matches('"').to_owned(), pod);
            } else if rest.contains(" for container ") {
                call.begin.get_or_insert(t);
            }
        } else if let Some(rest) = msg.strip_prefix("StartContainer for ") {
            let id = rest.split('"').nth(1).unwrap_or_default();
            let Some(pod) = self.containers.get(id) else {
                return;
            };
            let call = &mut self.pods.get_mut(pod).expect("created above").start;
            if rest.ends_with(" returns successfully") {
                call.end.get_or_insert(t);
            } else if rest.len() == id.len() + 2 {
                call.begin.get_or_insert(t);
            }
        }
    }
}

/// The value of `key="..."` in a logrus text line, unescaped.
fn quoted(line: &str, key: &str) -> Option<String> {
    let start = line.find(&format!("{key}=\""))? + key.len() + 2;
    let mut out = String::new();
    let mut chars = line[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            '"' => return Some(out),
            c => out.push(c),
        }
    }
    None
}

/// `2026-12-04T02:02:14.123456789Z` (or with `±hh:mm`) as unix ns.
fn parse_rfc3339(t: &str) -> Option<u64> {
    let (date, clock) = t.split_once('T')?;
    let mut ymd = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, d) = (ymd.next()??, ymd.next()??, ymd.next()??);
    let (clock, offset_s) = match clock.strip_suffix('Z') {
        Some(c) => (c, 0),
        None => {
            let at = clock.rfind(['+', '-'])?;
            let (h, mi) = clock[at + 1..].split_once(':')?;
            let sign = if clock[at..].starts_with('-') { -1 } else { 1 };
            (
                &clock[..at],
                sign * (h.parse::<i64>().ok()? * 3600 + mi.parse::<i64>().ok()? * 60),
            )
        }
    };
    let (whole, frac) = clock.split_once('.').unwrap_or((clock, ""));
    let mut hms = whole.split(':').map(|p| p.parse::<i64>().ok());
    let (h, mi, s) = (hms.next()??, hms.next()??, hms.next()??);
    let nanos: i64 = format!("{frac:0<9}").get(..9)?.parse().ok()?;
    let secs = days_from_civil(y, m, d) * 86_400 + h * 3600 + mi * 60 + s - offset_s;
    u64::try_from(secs * 1_000_000_000 + nanos).ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (eras of 400
/// years, each year counted from March so that leap days come last).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let day_of_year = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

// ---------------------------------------------------------------------------
// Figures.

/// One pod's times, ms.
#[derive(Debug, Clone)]
struct Sample {
    pod: String,
    /// Manifest written → arrived at the edge.
    delivery: f64,
    /// Arrived → its container started.
    to_started: f64,
    /// Arrived → RunPodSandbox called: Edged's reaction.
    to_sandbox: f64,
    sandbox: f64,
    create: f64,
    start: f64,
    /// Started → `1/1 Running` in `cloudcontrol get pods` (polled).
    reported: f64,
}

impl Sample {
    fn new(pod: &str, written: u64, arrived: u64, calls: &Calls) -> Self {
        Sample {
            pod: pod.to_owned(),
            delivery: ms(written, arrived),
            to_started: calls.start.end.map_or(f64::NAN, |t| ms(arrived, t)),
            to_sandbox: calls.sandbox.begin.map_or(f64::NAN, |t| ms(arrived, t)),
            sandbox: calls.sandbox.ms(),
            create: calls.create.ms(),
            start: calls.start.ms(),
            reported: f64::NAN,
        }
    }

    fn runtime(&self) -> f64 {
        self.sandbox + self.create + self.start
    }
}

/// One of a sample's times.
type Figure = fn(&Sample) -> f64;

#[derive(Debug, Clone, Default)]
struct Latency {
    samples: Vec<Sample>,
    /// First arrival → last start, for pods that arrived together.
    span_ms: Option<f64>,
}

impl Latency {
    fn merge(parts: Vec<Latency>) -> Latency {
        let samples = parts.into_iter().flat_map(|l| l.samples).collect();
        Latency {
            samples,
            span_ms: None,
        }
    }

    /// p50 / p99 / max of one figure; p99 by nearest rank, so over 50 pods
    /// it is the largest.
    fn quantiles(&self, figure: impl Fn(&Sample) -> f64) -> String {
        let mut v: Vec<f64> = self
            .samples
            .iter()
            .map(figure)
            .filter(|f| !f.is_nan())
            .collect();
        v.sort_by(f64::total_cmp);
        let rank = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        if v.is_empty() {
            return "—".into();
        }
        format!(
            "{:.0} / {:.0} / {:.0} ms",
            rank(0.5),
            rank(0.99),
            v[v.len() - 1]
        )
    }

    fn print(&self, what: &str, each: bool) {
        let span = self.span_ms.map_or(String::new(), |s| {
            format!(", all started {:.2} s after the first arrived", s / 1e3)
        });
        println!(
            "{what} ({} pods){span}; p50 / p99 / max",
            self.samples.len()
        );
        let rows: [(&str, Figure); 8] = [
            ("arrived at the edge → container started", |s| {
                s.to_started
            }),
            ("runtime's own (sandbox + create + start)", Sample::runtime),
            ("  RunPodSandbox", |s| s.sandbox),
            ("  CreateContainer", |s| s.create),
            ("  StartContainer", |s| s.start),
            ("arrived → RunPodSandbox called", |s| s.to_sandbox),
            ("manifest written → arrived (delivery)", |s| s.delivery),
            ("started → Running at the cloud", |s| s.reported),
        ];
        for (label, figure) in rows {
            println!("  {label:<42} {}", self.quantiles(figure));
        }
        if each {
            for s in &self.samples {
                println!(
                    "    {}: delivery {:.1}, to started {:.1}, to RunPodSandbox {:.1}, \
                     sandbox {:.1}, create {:.1}, start {:.1} ms",
                    s.pod, s.delivery, s.to_started, s.to_sandbox, s.sandbox, s.create, s.start
                );
            }
        }
    }
}

/// Memory (the highest in the window) and CPU (fractions of a core).
#[derive(Debug, Clone, Copy)]
struct Idle {
    seconds: f64,
    edge_cpu: f64,
    runtime_cpu: f64,
    mem: Memory,
}

impl Idle {
    fn summary(&self) -> String {
        let mib = |k: u64| k as f64 / 1024.0;
        format!(
            "edgecore RSS {:.1} MiB (anon {:.1}, file {:.1}), {} threads; CPU over {:.0} s: edgecore {:.2}%, containerd {:.2}%",
            mib(self.mem.rss_kib),
            mib(self.mem.anon_kib),
            mib(self.mem.file_kib),
            self.mem.threads,
            self.seconds,
            self.edge_cpu * 100.0,
            self.runtime_cpu * 100.0
        )
    }
}

#[derive(Debug, Default)]
struct Scale {
    /// Pods running, the batch's latency, then idle.
    steps: Vec<(usize, Latency, Idle)>,
    failure: Option<String>,
}

#[derive(Debug, Default)]
struct Report {
    disabled: Option<Idle>,
    absent: Option<Idle>,
    empty: Option<Idle>,
    burst: Option<Latency>,
    loaded: Option<(usize, Idle)>,
    sequential: Option<Latency>,
    /// Each pod written as soon as the one before started.
    hurried: Option<Latency>,
    scale: Scale,
    host_network_only: bool,
}

impl Report {
    fn print(&self, o: &Options) {
        println!("\nedgecore: {}", o.edge_bin.display());
        let network = if self.host_network_only {
            "host network (no CNI here)"
        } else {
            "pod network"
        };
        for (what, idle) in [
            ("Edged disabled", &self.disabled),
            ("Edged enabled, no runtime", &self.absent),
            ("runtime up, no pods", &self.empty),
        ] {
            if let Some(idle) = idle {
                println!("idle, {what}: {}", idle.summary());
            }
        }
        if let Some(l) = &self.burst {
            l.print(&format!("burst, one manifest file, {network}"), o.each);
        }
        if let Some((n, idle)) = &self.loaded {
            println!("idle with {n} pods: {}", idle.summary());
        }
        if let Some(l) = &self.sequential {
            l.print(&format!("one at a time, {network}"), o.each);
        }
        if let Some(l) = &self.hurried {
            l.print(
                "one at a time, each written as the one before started",
                true,
            );
        }
        self.print_scale();
    }

    fn print_scale(&self) {
        let (Some(empty), false) = (self.empty, self.scale.steps.is_empty()) else {
            return;
        };
        println!("scale, batches of {BATCH} host-network pods; per pod from the no-pods figures");
        println!(
            "pods | RSS MiB | anon | file | KiB per pod | edgecore CPU % | % per pod | containerd CPU % | batch started in"
        );
        for (n, latency, idle) in &self.scale.steps {
            let per_pod = (idle.mem.rss_kib as f64 - empty.mem.rss_kib as f64) / *n as f64;
            let mib = |k: u64| k as f64 / 1024.0;
            println!(
                "{n} | {:.1} | {:.1} | {:.1} | {per_pod:.1} | {:.2} | {:.4} | {:.2} | {:.1} s",
                mib(idle.mem.rss_kib),
                mib(idle.mem.anon_kib),
                mib(idle.mem.file_kib),
                idle.edge_cpu * 100.0,
                (idle.edge_cpu - empty.edge_cpu) * 100.0 / *n as f64,
                idle.runtime_cpu * 100.0,
                latency.span_ms.unwrap_or(f64::NAN) / 1e3,
            );
        }
        if let Some(failure) = &self.scale.failure {
            println!("stopped: {failure}");
        }
    }

    /// The quick run's checks: every figure was measured and is plausible.
    fn check(&self) {
        let burst = self.burst.as_ref().expect("the burst was measured");
        let sequential = self
            .sequential
            .as_ref()
            .expect("one at a time was measured");
        for s in burst.samples.iter().chain(&sequential.samples) {
            let all = [s.delivery, s.to_started, s.sandbox, s.create, s.start];
            assert!(all.iter().all(|f| f.is_finite() && *f > 0.0), "{s:?}");
            // The watch reads a commit a little after Edged hears of it,
            // so this one may be slightly negative.
            assert!(s.to_sandbox.is_finite(), "{s:?}");
            // The log's stamps and this process's clock agree (the date
            // parsing is right) to well within a minute.
            assert!(s.delivery < 60_000.0 && s.to_started < 60_000.0, "{s:?}");
        }
        let (_, loaded) = self.loaded.expect("idle with pods was measured");
        assert!(
            loaded.mem.rss_kib > 1024 && loaded.mem.anon_kib > 0,
            "{loaded:?}"
        );
        assert!(
            loaded.edge_cpu >= 0.0 && loaded.runtime_cpu >= 0.0,
            "{loaded:?}"
        );
    }
}
