//! Fleets larger than one process may hold sockets for: the edges run in
//! child processes of `fleetbench` (the hidden `fleetbench worker`
//! command), each driving a slice of the nodes, while the parent keeps the
//! hub, the rings and the report.
//!
//! A worker reads the scenario's [`Command`]s as JSON lines on its stdin
//! (end of input: stop) and writes a [`Progress`] JSON line on its stdout
//! every 100 ms: its counters and the downstream latencies recorded since
//! the previous line (HDR histogram values and counts, microseconds). The
//! parent adds each line's increments to the run's [`Stats`], so every
//! figure of the report covers every process.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command as Process, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::watch;

use super::Options;
use super::edge::{self, Command, EdgeSpec};
use super::pki::Pki;
use super::stats::Stats;

/// Descriptors a process needs beside its edges' sockets.
pub const MARGIN: u64 = 256;

/// One worker's counters, cumulative, and its downstream latencies since
/// its previous line.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Progress {
    pub up: u64,
    pub connects: u64,
    pub connect_errors: u64,
    pub downstream: u64,
    pub upstream_sent: u64,
    pub down_latency: Vec<(u64, u64)>,
}

/// The open-files limit of this process, soft raised to hard. Returns the
/// hard limit.
pub fn raise_open_files() -> Result<u64, String> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let hard = limit.maximum.unwrap_or(u64::MAX);
    if limit.current.unwrap_or(u64::MAX) < hard {
        let mut raised = limit;
        raised.current = Some(hard);
        setrlimit(Resource::Nofile, raised).map_err(|e| format!("raising nofile: {e}"))?;
    }
    Ok(hard)
}

/// The slices `(first node, count)` of a fleet that needs more than one
/// process, or an empty list when this process holds every edge.
pub fn slices(o: &Options) -> Result<Vec<(usize, usize)>, String> {
    let hard = raise_open_files()?;
    let fit = hard.saturating_sub(MARGIN) as usize;
    let per = o.max_nodes_per_process.unwrap_or(fit).min(fit);
    eprintln!(
        "fleetbench: open-files limit {hard}; {} edges, at most {per} per process",
        o.nodes
    );
    if per == 0 {
        return Err(format!(
            "an open-files limit of {hard} leaves no room for edges"
        ));
    }
    if o.nodes <= per {
        return Ok(Vec::new());
    }
    let processes = o.nodes.div_ceil(per);
    let base = o.nodes / processes;
    let extra = o.nodes % processes;
    let mut first = 0;
    Ok((0..processes)
        .map(|i| {
            let count = base + usize::from(i < extra);
            let slice = (first, count);
            first += count;
            slice
        })
        .collect())
}

/// The running workers of a fleet.
#[derive(Debug)]
pub struct Workers {
    children: Vec<Child>,
    stdins: Vec<ChildStdin>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Workers {
    /// Starts one worker per slice, its edges connecting to `hub`.
    pub fn start(
        slices: &[(usize, usize)],
        o: &Options,
        dir: &Path,
        hub: SocketAddr,
        stats: Arc<Stats>,
    ) -> Result<Self, String> {
        let me = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut workers = Self {
            children: Vec::new(),
            stdins: Vec::new(),
            readers: Vec::new(),
        };
        for &(first, count) in slices {
            let mut process = Process::new(&me);
            process
                .arg("worker")
                .args(["--dir".as_ref(), dir.as_os_str()])
                .args(["--first", &first.to_string(), "--count", &count.to_string()])
                .args([
                    "--hub",
                    &hub.to_string(),
                    "--payload",
                    &o.payload.to_string(),
                ])
                .args(["--backoff-ms", &o.backoff_ms.to_string()])
                .args(["--client-threads", &o.client_threads.to_string()]);
            if o.plaintext {
                process.arg("--plaintext");
            }
            let mut child = process
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .map_err(|e| format!("starting a worker: {e}"))?;
            let stdout = child.stdout.take().ok_or("no worker stdout")?;
            workers
                .stdins
                .push(child.stdin.take().ok_or("no worker stdin")?);
            workers.children.push(child);
            let stats = stats.clone();
            workers
                .readers
                .push(std::thread::spawn(move || follow(stdout, &stats)));
        }
        Ok(workers)
    }

    /// The workers' process ids.
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }

    /// Sends `command` to every worker.
    pub fn command(&mut self, command: &Command) {
        let mut line = serde_json::to_string(command).unwrap_or_default();
        line.push('\n');
        for stdin in &mut self.stdins {
            let _ = stdin.write_all(line.as_bytes());
            let _ = stdin.flush();
        }
    }

    /// Passes the scenario's commands on to the worker processes until it
    /// says stop, then stops them.
    pub fn forward(mut self, mut commands: watch::Receiver<Command>) {
        // A run that failed drops the sender: that is a stop too.
        while let Ok(changed) = commands.has_changed() {
            if changed {
                let c = *commands.borrow_and_update();
                if c.stop {
                    break;
                }
                self.command(&c);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.stop();
    }

    /// Tells every worker to stop and waits for their last lines.
    pub fn stop(mut self) {
        self.command(&Command {
            stop: true,
            ..Command::default()
        });
        self.stdins.clear();
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        for child in &mut self.children {
            let _ = child.wait();
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for child in &mut self.children {
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Adds a worker's increments to the run's counters until its stdout ends.
fn follow(stdout: std::process::ChildStdout, stats: &Stats) {
    let mut last = Progress::default();
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        let Ok(now) = serde_json::from_str::<Progress>(&line) else {
            eprintln!("fleetbench: unreadable worker line {line:?}");
            continue;
        };
        // Latencies before counts: whoever sees a message counted finds
        // its latency recorded.
        stats.merge_downstream(&now.down_latency);
        let add = |counter: &std::sync::atomic::AtomicU64, now: u64, was: u64| {
            if now >= was {
                counter.fetch_add(now - was, Ordering::Relaxed);
            } else {
                counter.fetch_sub(was - now, Ordering::Relaxed);
            }
        };
        add(&stats.connects, now.connects, last.connects);
        add(
            &stats.connect_errors,
            now.connect_errors,
            last.connect_errors,
        );
        add(&stats.upstream_sent, now.upstream_sent, last.upstream_sent);
        add(&stats.downstream, now.downstream, last.downstream);
        add(&stats.up, now.up, last.up);
        last = now;
    }
    // A worker that ended takes its links with it.
    stats.up.fetch_sub(last.up, Ordering::Relaxed);
}

/// Settings of one worker (`fleetbench worker`).
#[derive(Debug, Clone)]
struct WorkerArgs {
    dir: PathBuf,
    first: usize,
    count: usize,
    hub: SocketAddr,
    plaintext: bool,
    payload: usize,
    backoff_ms: u64,
    client_threads: usize,
}

impl WorkerArgs {
    fn parse(args: &[String]) -> Result<Self, String> {
        let mut w = Self {
            dir: PathBuf::new(),
            first: 0,
            count: 0,
            hub: SocketAddr::from(([127, 0, 0, 1], 0)),
            plaintext: false,
            payload: 256,
            backoff_ms: 50,
            client_threads: 2,
        };
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            if flag == "--plaintext" {
                w.plaintext = true;
                continue;
            }
            let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
            let bad = |_| format!("{flag}: bad value {value:?}");
            match flag.as_str() {
                "--dir" => w.dir = value.into(),
                "--first" => w.first = value.parse().map_err(bad)?,
                "--count" => w.count = value.parse().map_err(bad)?,
                "--hub" => w.hub = value.parse().map_err(|_| format!("--hub {value:?}"))?,
                "--payload" => w.payload = value.parse().map_err(bad)?,
                "--backoff-ms" => w.backoff_ms = value.parse().map_err(bad)?,
                "--client-threads" => w.client_threads = value.parse().map_err(bad)?,
                _ => return Err(format!("unknown flag {flag}")),
            }
        }
        Ok(w)
    }
}

/// The worker process: runs its slice of edges as the parent commands.
pub fn worker_main(args: &[String]) -> Result<(), String> {
    let w = WorkerArgs::parse(args)?;
    raise_open_files()?;
    let pki = Pki::load(&w.dir).map_err(|e| e.to_string())?;
    let stats = Arc::new(Stats::new(w.count));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(w.client_threads.max(1))
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let (commands, rx) = watch::channel(Command::default());
    for index in w.first..w.first + w.count {
        let node = super::node_name(index);
        let spec = EdgeSpec {
            client: pki.client(&node).map_err(|e| e.to_string())?,
            node,
            index,
            hub: w.hub,
            source: edge::source_address(index),
            backoff_ms: w.backoff_ms,
            payload: w.payload,
            plaintext: w.plaintext,
        };
        runtime.spawn(edge::run(spec, stats.clone(), rx.clone()));
    }
    // Commands from the parent; the end of its input means stop.
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if let Ok(c) = serde_json::from_str::<Command>(&line) {
                commands.send_replace(c);
            }
        }
        commands.send_modify(|c| c.stop = true);
    });
    let mut rx = rx;
    loop {
        let stop = rx.borrow_and_update().stop;
        // The count before the histogram: every message counted here has
        // its latency in this line or an earlier one.
        let progress = Progress {
            up: stats.up.load(Ordering::Relaxed),
            connects: stats.connects.load(Ordering::Relaxed),
            connect_errors: stats.connect_errors.load(Ordering::Relaxed),
            downstream: stats.downstream.load(Ordering::Relaxed),
            upstream_sent: stats.upstream_sent.load(Ordering::Relaxed),
            down_latency: stats.take_downstream_recorded(),
        };
        let line = serde_json::to_string(&progress).map_err(|e| e.to_string())?;
        let mut out = std::io::stdout().lock();
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() || stop {
            break;
        }
        drop(out);
        std::thread::sleep(Duration::from_millis(100));
    }
    runtime.shutdown_timeout(Duration::from_secs(5));
    Ok(())
}
