//! The `cloudcontrol` process of the fan-out scenario: found or built like
//! `cloudhub`, started on the run's manifest directory with the hub's ring
//! files, watched through `/proc`, and killed when dropped.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use super::super::hub::{self, Hub};

/// A running `cloudcontrol`, killed when dropped.
#[derive(Debug)]
pub struct Cloudcontrol {
    child: Child,
    log: PathBuf,
    lines: mpsc::Receiver<String>,
    ready: bool,
}

/// The `cloudcontrol` binary: `--control-bin`, else the workspace's.
pub fn binary(explicit: Option<&Path>) -> Result<PathBuf, String> {
    match explicit {
        Some(path) => Ok(path.to_owned()),
        None => hub::workspace_binary("cloudcontrol", "control"),
    }
}

impl Cloudcontrol {
    /// Starts `binary` on `manifests`, its data in `dir/cloudcontrol`, on
    /// the rings of `hub`; manifests are polled every `poll_ms`.
    pub fn start(
        binary: &Path,
        dir: &Path,
        manifests: &Path,
        hub: &Hub,
        poll_ms: u64,
    ) -> Result<Self, String> {
        let log = dir.join("cloudcontrol.log");
        let stderr = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let mut child = Command::new(binary)
            .arg("--manifests")
            .arg(manifests)
            .arg("--data-dir")
            .arg(dir.join("cloudcontrol"))
            .arg("--ring-dir")
            .arg(&hub.ring_dir)
            .args(["--shards", &hub.shards.to_string()])
            .args(["--ring-bytes", &hub.ring_bytes.to_string()])
            .args(["--cert-address", "127.0.0.1:0"])
            .args(["--poll-interval-ms", &poll_ms.to_string()])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", binary.display()))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Ok(Self {
            child,
            log,
            lines,
            ready: false,
        })
    }

    /// Whether it has printed its `cloudcontrol ready` line (never blocks).
    pub fn is_ready(&mut self) -> bool {
        while let Ok(line) = self.lines.try_recv() {
            self.ready |= line.starts_with("cloudcontrol ready");
        }
        self.ready
    }

    /// Why it is no longer running, with the end of its log, or `None`
    /// while it runs.
    pub fn exited(&mut self) -> Option<String> {
        let status = self.child.try_wait().ok()??;
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        Some(format!(
            "cloudcontrol exited ({status}); {}:\n{}",
            self.log.display(),
            tail.join("\n")
        ))
    }

    /// CPU seconds it has used so far.
    pub fn cpu_seconds(&self) -> f64 {
        hub::cpu_seconds(&format!("/proc/{}/stat", self.child.id()))
    }

    /// Its resident memory, bytes.
    pub fn resident_bytes(&self) -> u64 {
        hub::resident_bytes(&format!("/proc/{}/status", self.child.id()))
    }
}

impl Drop for Cloudcontrol {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
