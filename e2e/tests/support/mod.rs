//! What the end-to-end tests share: the workspace's binaries, child
//! processes killed when dropped (their stderr kept in a log), the
//! MetaServer's HTTP API, `cloudhub` started on the certificates that
//! `cloudcontrol` made, join tokens and `cloudcontrol get`.
//!
//! Every wait polls what a user would look at (an HTTP answer, a command's
//! output, a line a process prints) until it shows the expected state or a
//! deadline passes.

// Each test file uses its own part of this module.
#![allow(dead_code)]

pub(crate) mod containerd;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub(crate) const PATIENCE: Duration = Duration::from_secs(60);
pub(crate) const RING_BYTES: usize = 1 << 20;
/// Lines of a process's log printed when a test fails.
const LOG_TAIL: usize = 60;

/// A binary of the workspace, from the build this test is part of: tests
/// run from `target/<profile>/deps/`, binaries sit in `target/<profile>/`.
pub(crate) fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace (cargo test --workspace builds it)",
        path.display()
    );
    path
}

/// A child process killed (SIGKILL) when dropped; its stderr goes to a file
/// (appended to across restarts) that is printed if the test fails.
pub(crate) struct Process {
    pub(crate) name: String,
    child: Child,
    log: PathBuf,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Process {
    pub(crate) fn start(name: &str, command: &mut Command, dir: &Path) -> Self {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Self {
            name: name.to_owned(),
            child,
            log,
            lines,
        }
    }

    /// The value of `key=` on the first stdout line that has it.
    pub(crate) fn wait_for(&self, key: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).unwrap_or_else(|_| {
                panic!("{} never printed {key}:\n{}", self.name, self.log_text())
            });
            if let Some(v) = line.split_whitespace().find_map(|w| w.strip_prefix(key)) {
                return v.to_owned();
            }
        }
    }

    /// Every stdout line up to and including the first that contains `last`.
    pub(crate) fn lines_until(&self, last: &str) -> Vec<String> {
        let deadline = Instant::now() + PATIENCE;
        let mut lines = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).unwrap_or_else(|_| {
                panic!(
                    "{} never printed {last:?}; it printed:\n{}\n{}",
                    self.name,
                    lines.join("\n"),
                    self.log_text()
                )
            });
            let done = line.contains(last);
            lines.push(line);
            if done {
                return lines;
            }
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// How the process ended, waiting for it at most `PATIENCE`.
    pub(crate) fn exit_status(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} still runs:\n{}",
                self.name,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// How it ended, if it is no longer running.
    pub(crate) fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits until the log file holds `text`.
    pub(crate) fn wait_log(&self, text: &str) {
        let deadline = Instant::now() + PATIENCE;
        while !self.log_text().contains(text) {
            assert!(
                Instant::now() < deadline,
                "{} never logged {text:?}; its log:\n{}",
                self.name,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn log_bytes(&self) -> Vec<u8> {
        std::fs::read(&self.log).unwrap_or_default()
    }

    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let text = self.log_text();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(LOG_TAIL)..];
            eprintln!(
                "--- {} (last {} lines of {}) ---\n{}",
                self.name,
                tail.len(),
                self.log.display(),
                tail.join("\n")
            );
        }
    }
}

/// `GET path` on a MetaServer: status code and body.
pub(crate) fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    Some((code, body))
}

/// Polls `check` until it holds.
pub(crate) fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !check() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts `cloudhub` (2 shards) on `port` (0: any) with the certificates
/// under cloudcontrol's data directory `data` and the rings in `rings`;
/// `top` holds extra top-level settings of its TOML. Returns the process
/// and its TLS port once it is ready.
pub(crate) fn start_hub(
    dir: &Path,
    data: &Path,
    rings: &Path,
    port: u16,
    top: &str,
) -> (Process, u16) {
    let config = dir.join("cloudhub.toml");
    std::fs::write(
        &config,
        format!(
            "port = {port}\nhandshakeTimeout = 5\n{top}\
             tlsCAFile = '{}'\ntlsCertFile = '{}'\ntlsPrivateKeyFile = '{}'\n\
             [shards]\ncount = 2\n[rings]\ndir = '{}'\nringBytes = {RING_BYTES}\nbacklogBytes = {RING_BYTES}\n\
             [metrics]\naddress = '127.0.0.1:0'\n",
            data.join("ca/rootCA.crt").display(),
            data.join("certs/server.crt").display(),
            data.join("certs/server.key").display(),
            rings.display(),
        ),
    )
    .unwrap();
    let hub = Process::start(
        "cloudhub",
        Command::new(binary("cloudhub"))
            .arg("--config")
            .arg(&config),
        dir,
    );
    let tls: SocketAddr = hub.wait_for("tls=").parse().unwrap();
    (hub, tls.port())
}

/// `cloudcontrol` on the manifest directory `manifests`, its data in
/// `data`, the rings (2 shards) in `rings`, the certificate bootstrap on
/// `cert_address`. Returns the process and the bootstrap address once it is
/// ready.
pub(crate) fn start_control(
    dir: &Path,
    manifests: &Path,
    data: &Path,
    rings: &Path,
    cert_address: &str,
) -> (Process, String) {
    let control = Process::start(
        "cloudcontrol",
        Command::new(binary("cloudcontrol"))
            .arg("--manifests")
            .arg(manifests)
            .arg("--data-dir")
            .arg(data)
            .arg("--ring-dir")
            .arg(rings)
            .args(["--shards", "2", "--ring-bytes", &RING_BYTES.to_string()])
            .args(["--cert-address", cert_address, "--poll-interval-ms", "100"]),
        dir,
    );
    let certs = control.wait_for("certs=");
    (control, certs)
}

/// A join token from `cloudcontrol token`.
pub(crate) fn token(data: &Path) -> String {
    let token = Command::new(binary("cloudcontrol"))
        .args(["token", "--data-dir"])
        .arg(data)
        .output()
        .unwrap();
    assert!(token.status.success(), "{token:?}");
    String::from_utf8(token.stdout).unwrap().trim().to_owned()
}

/// `edgecore join` of `node` into `home` against the hub at `cloud` and
/// the bootstrap at `certs`; then its configuration is changed to serve
/// the MetaServer and the MQTT broker on ports of the system's choosing.
/// Returns the configuration file.
pub(crate) fn join(token: &str, cloud: &str, certs: &str, node: &str, home: &Path) -> PathBuf {
    let joined = Command::new(binary("edgecore"))
        .args(["join", "--token", token, "--cloud", cloud])
        .args(["--cert-server", certs, "--node", node, "--data-dir"])
        .arg(home)
        .output()
        .unwrap();
    assert!(joined.status.success(), "{node} join: {joined:?}");
    let config = home.join("edgecore.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text.replace("127.0.0.1:10550", "127.0.0.1:0")
        + "\n[modules.eventBus.broker]\nlisten = \"127.0.0.1:0\"\n";
    std::fs::write(&config, text).unwrap();
    config
}

/// `edgecore run` on `config`: the process, its MetaServer and its MQTT
/// broker once both listen.
pub(crate) fn start_edge(
    node: &str,
    config: &Path,
    dir: &Path,
) -> (Process, SocketAddr, SocketAddr) {
    let edge = Process::start(
        node,
        Command::new(binary("edgecore"))
            .arg("run")
            .arg("--config")
            .arg(config),
        dir,
    );
    let meta: SocketAddr = edge.wait_for("metaserver=").parse().unwrap();
    let mqtt: SocketAddr = edge.wait_for("mqtt=").parse().unwrap();
    (edge, meta, mqtt)
}

/// What `cloudcontrol get devices` prints.
pub(crate) fn devices_table(data: &Path) -> String {
    table(data, "devices")
}

/// What `cloudcontrol get {what}` prints (nodes, pods or devices).
pub(crate) fn table(data: &Path, what: &str) -> String {
    let out = Command::new(binary("cloudcontrol"))
        .args(["get", what, "--data-dir"])
        .arg(data)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}
