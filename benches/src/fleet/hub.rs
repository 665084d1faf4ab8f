//! The `cloudhub` process under test: found or built, started with the
//! fleet's certificates and a ring directory of the run's own, watched
//! through `/proc` (CPU time, resident memory), and stopped.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::pki::Pki;

/// A running hub, killed when dropped.
#[derive(Debug)]
pub struct Hub {
    child: Child,
    pub tls: SocketAddr,
    /// The benchmark-only plaintext listener, when asked for.
    pub plain: Option<SocketAddr>,
    pub metrics: SocketAddr,
    pub ring_dir: PathBuf,
    pub ring_bytes: usize,
    pub shards: usize,
}

/// Settings of the hub a scenario starts.
#[derive(Debug, Clone)]
pub struct HubOptions {
    pub binary: Option<PathBuf>,
    pub shards: usize,
    pub nodes: usize,
    pub ring_bytes: usize,
    /// Also listen without TLS (`plaintext = true`).
    pub plaintext: bool,
    /// Downstream messages in flight per node (`[links] window`); `None`
    /// keeps the hub's default.
    pub window: Option<u32>,
}

/// The `cloudhub` binary: `--hub-bin`, else [`workspace_binary`].
pub fn binary(explicit: Option<&Path>) -> Result<PathBuf, String> {
    match explicit {
        Some(path) => Ok(path.to_owned()),
        None => workspace_binary("cloudhub", "shards"),
    }
}

/// A binary of the workspace: the one built beside this program, else built
/// now with cargo in the same profile.
pub fn workspace_binary(name: &str, package: &str) -> Result<PathBuf, String> {
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = me.parent().ok_or("no directory of fleetbench")?;
    let beside = dir.join(name);
    if beside.exists() {
        return Ok(beside);
    }
    eprintln!("fleetbench: building {name} (cargo build -p {package} --bin {name})");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cargo
        .current_dir(root)
        .args(["build", "-p", package, "--bin", name]);
    if dir.ends_with("release") {
        cargo.arg("--release");
    }
    let status = cargo.status().map_err(|e| format!("running cargo: {e}"))?;
    if !status.success() || !beside.exists() {
        return Err(format!("{name} was not built at {}", beside.display()));
    }
    Ok(beside)
}

impl Hub {
    /// Starts `cloudhub` in `dir` and waits for its ready line.
    pub fn start(dir: &Path, pki: &Pki, options: &HubOptions) -> Result<Self, String> {
        let binary = binary(options.binary.as_deref())?;
        let ring_dir = dir.join("rings");
        let config = dir.join("cloudhub.toml");
        // Room for every node plus a reconnect overlap; a full resync of a
        // run's objects fits a node's queue.
        let text = format!(
            "port = 0\nnodeLimit = {}\nhandshakeTimeout = 30\n\
             tlsCAFile = '{}'\ntlsCertFile = '{}'\ntlsPrivateKeyFile = '{}'\n\
             [shards]\ncount = {}\n[rings]\ndir = '{}'\nringBytes = {}\nbacklogBytes = {}\n\
             [metrics]\naddress = '127.0.0.1:0'\n{}",
            options.nodes + options.nodes / 10 + 16,
            pki.ca_file.display(),
            pki.cert_file.display(),
            pki.key_file.display(),
            options.shards,
            ring_dir.display(),
            options.ring_bytes,
            options.ring_bytes,
            options
                .window
                .map_or(String::new(), |w| format!("[links]\nwindow = {w}\n")),
        );
        // Top-level keys go before the first table.
        let text = if options.plaintext {
            format!("plaintext = true\nplaintextPort = 0\n{text}")
        } else {
            text
        };
        std::fs::write(&config, text).map_err(|e| format!("writing the hub config: {e}"))?;
        let log = std::fs::File::create(dir.join("cloudhub.log")).map_err(|e| e.to_string())?;
        let mut child = Command::new(&binary)
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", binary.display()))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("cloudhub ready") {
                    let _ = tx.send(line);
                }
            }
        });
        let line = rx.recv_timeout(Duration::from_secs(30)).map_err(|_| {
            format!(
                "cloudhub did not start; see {}",
                dir.join("cloudhub.log").display()
            )
        })?;
        let field = |key: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .and_then(|v| v.parse::<SocketAddr>().ok())
                .ok_or_else(|| format!("no {key} in {line:?}"))
        };
        let local = |mut addr: SocketAddr| {
            if addr.ip().is_unspecified() {
                addr.set_ip([127, 0, 0, 1].into());
            }
            addr
        };
        let tls = local(field("tls=")?);
        let plain = options
            .plaintext
            .then(|| field("plaintext=").map(local))
            .transpose()?;
        Ok(Self {
            tls,
            plain,
            metrics: field("metrics=")?,
            ring_dir,
            ring_bytes: options.ring_bytes,
            shards: options.shards,
            child,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The control side of every shard's ring file.
    pub fn rings(&self) -> Result<Vec<shm::RingFile>, String> {
        (0..self.shards)
            .map(|s| {
                shm::RingFile::open(
                    &shm::ring_path(&self.ring_dir, s),
                    shm::RingSize::Configured(self.ring_bytes),
                    shm::Role::Control,
                )
                .map_err(|e| e.to_string())
            })
            .collect()
    }

    /// CPU seconds the hub has used so far.
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(&format!("/proc/{}/stat", self.pid()))
    }

    /// The hub's `/metrics`, summed over its shards.
    pub fn scrape(&self) -> Result<super::metrics::Snapshot, String> {
        super::metrics::scrape(self.metrics)
    }

    /// The hub's open-files limit (it raises its soft limit to the hard
    /// one at start), from `/proc/<pid>/limits`.
    pub fn open_files_limit(&self) -> Option<u64> {
        let limits = std::fs::read_to_string(format!("/proc/{}/limits", self.pid())).ok()?;
        let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
        line.split_whitespace().nth(3)?.parse().ok()
    }

    /// The hub's resident memory, bytes.
    pub fn resident_bytes(&self) -> u64 {
        resident_bytes(&format!("/proc/{}/status", self.pid()))
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// User plus system CPU seconds from a `/proc/<pid>/stat` file.
pub fn cpu_seconds(stat_path: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(stat_path) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) start at
    // state; utime and stime are fields 14 and 15 of the whole line.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // Linux reports in USER_HZ, 100 on every architecture it supports.
    (ticks(11) + ticks(12)) as f64 / 100.0
}

/// VmRSS from a `/proc/<pid>/status` file, bytes.
pub fn resident_bytes(status_path: &str) -> u64 {
    std::fs::read_to_string(status_path)
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}
