//! What the end-to-end tests share: the workspace's binaries, child
//! processes with their output, HTTP and MQTT as a user's tools speak them,
//! and waiting on a condition with a deadline.
// Shared by several test files, each using a part of it.
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const PATIENCE: Duration = Duration::from_secs(60);

/// A binary of the workspace, built beside this test's `fleetbench`.
pub fn binary(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_fleetbench"))
        .parent()
        .unwrap()
        .to_owned();
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace (cargo test --workspace builds it)",
        path.display()
    );
    path
}

/// A child process killed (SIGKILL) when dropped; its stderr goes to a file
/// that is printed if the test fails.
pub struct Process {
    name: String,
    child: Child,
    log: PathBuf,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Process {
    pub fn start(name: &str, command: &mut Command, dir: &Path) -> Self {
        let log = dir.join(format!("{name}.log"));
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
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
    pub fn wait_for(&self, key: &str) -> String {
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
    pub fn lines_until(&self, last: &str) -> Vec<String> {
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

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// How the process ended, waiting for it at most `PATIENCE`.
    pub fn exit_status(&mut self) -> std::process::ExitStatus {
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

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- {} ---\n{}", self.name, self.log_text());
        }
    }
}

/// `GET path` on a MetaServer: status code and body.
pub fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
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
pub fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !check() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Publishes a reported temperature for `device` on the edge's broker, as a
/// device driver does, and returns the delta the edge answers with (the
/// example Device desires 20).
pub fn twin_update(mqtt: SocketAddr, device: &str, value: &str) -> serde_json::Value {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut options = rumqttc::MqttOptions::new(
            format!("driver-{value}"),
            mqtt.ip().to_string(),
            mqtt.port(),
        );
        options.set_keep_alive(Duration::from_secs(30));
        let (client, mut events) = rumqttc::AsyncClient::new(options, 10);
        let delta_topic = format!("$hw/events/device/{device}/twin/update/delta");
        client
            .subscribe(&delta_topic, rumqttc::QoS::AtLeastOnce)
            .await
            .unwrap();
        let payload = format!(
            r#"{{"event_id":"e-{value}","timestamp":0,"twin":{{"temperature":{{"actual":{{"value":"{value}"}},"metadata":{{"type":"Updated"}}}}}}}}"#
        );
        let mut published = false;
        tokio::time::timeout(PATIENCE, async {
            loop {
                match events.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) if !published => {
                        published = true;
                        client
                            .publish(
                                format!("$hw/events/device/{device}/twin/update"),
                                rumqttc::QoS::AtLeastOnce,
                                false,
                                payload.clone(),
                            )
                            .await
                            .unwrap();
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)))
                        if p.topic == delta_topic =>
                    {
                        return serde_json::from_slice(&p.payload).expect("a JSON delta");
                    }
                    Ok(_) => {}
                    Err(e) => panic!("MQTT connection to the edge: {e}"),
                }
            }
        })
        .await
        .expect("a delta from the edge")
    })
}
