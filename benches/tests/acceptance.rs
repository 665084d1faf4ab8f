//! The whole system end to end, as an operator runs it: `cloudcontrol` on
//! the example manifests, `cloudhub` with the certificates cloudcontrol
//! made, and two `edgecore` processes joined with tokens. A manifest change
//! reaches both edges' MetaServers; a twin update published by an MQTT
//! client on an edge is answered with a delta and comes back as Device
//! status in `cloudcontrol get devices`; `cloudhub` killed with SIGKILL and started again loses
//! nothing.
//!
//! Every wait polls what a user would look at (an HTTP answer, a command's
//! output) until it shows the expected state or a deadline passes.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PATIENCE: Duration = Duration::from_secs(60);
const RING_BYTES: usize = 1 << 20;

/// A binary of the workspace, built beside this test's `fleetbench`.
fn binary(name: &str) -> PathBuf {
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
struct Process {
    name: String,
    child: Child,
    log: PathBuf,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Process {
    fn start(name: &str, command: &mut Command, dir: &Path) -> Self {
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
    fn wait_for(&self, key: &str) -> String {
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

    fn log_text(&self) -> String {
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
fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
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
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !check() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn configmap_says(edge: SocketAddr, text: &str) -> bool {
    matches!(
        get(edge, "/api/v1/namespaces/default/configmaps/web-config"),
        Some((200, body)) if body.contains(text)
    )
}

fn start_hub(dir: &Path, data: &Path, rings: &Path, port: u16) -> (Process, u16) {
    let config = dir.join("cloudhub.toml");
    std::fs::write(
        &config,
        format!(
            "port = {port}\nhandshakeTimeout = 5\n\
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

/// Publishes a reported temperature for `device` on the edge's broker, as a
/// device driver does, and returns the delta the edge answers with (the
/// example Device desires 20).
fn twin_update(mqtt: SocketAddr, device: &str, value: &str) -> serde_json::Value {
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

fn devices_table(data: &Path) -> String {
    let out = Command::new(binary("cloudcontrol"))
        .args(["get", "devices", "--data-dir"])
        .arg(data)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn manifests_reach_edges_twins_reach_the_cloud_and_a_hub_restart_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let manifests = dir.join("manifests");
    let data = dir.join("control");
    let rings = dir.join("rings");
    std::fs::create_dir_all(&manifests).unwrap();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/manifests");
    for entry in std::fs::read_dir(&examples).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, manifests.join(path.file_name().unwrap())).unwrap();
    }

    let control = Process::start(
        "cloudcontrol",
        Command::new(binary("cloudcontrol"))
            .arg("--manifests")
            .arg(&manifests)
            .arg("--data-dir")
            .arg(&data)
            .arg("--ring-dir")
            .arg(&rings)
            .args(["--shards", "2", "--ring-bytes", &RING_BYTES.to_string()])
            .args(["--cert-address", "127.0.0.1:0", "--poll-interval-ms", "100"]),
        dir,
    );
    let certs = control.wait_for("certs=");
    let (hub, hub_port) = start_hub(dir, &data, &rings, 0);
    let token = Command::new(binary("cloudcontrol"))
        .args(["token", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(token.status.success(), "{token:?}");
    let token = String::from_utf8(token.stdout).unwrap().trim().to_owned();

    // Two edges join with the token and run.
    let mut edges = Vec::new();
    for node in ["edge-1", "edge-2"] {
        let home = dir.join(node);
        let joined = Command::new(binary("edgecore"))
            .args(["join", "--token", &token, "--cloud"])
            .arg(format!("127.0.0.1:{hub_port}"))
            .args(["--cert-server", &certs, "--node", node, "--data-dir"])
            .arg(&home)
            .output()
            .unwrap();
        assert!(joined.status.success(), "{node} join: {joined:?}");
        let config = home.join("edgecore.toml");
        let text = std::fs::read_to_string(&config).unwrap();
        let text = text.replace("127.0.0.1:10550", "127.0.0.1:0")
            + "\n[modules.eventBus.broker]\nlisten = \"127.0.0.1:0\"\n";
        std::fs::write(&config, text).unwrap();
        let edge = Process::start(
            node,
            Command::new(binary("edgecore"))
                .arg("run")
                .arg("--config")
                .arg(&config),
            dir,
        );
        let meta: SocketAddr = edge.wait_for("metaserver=").parse().unwrap();
        let mqtt: SocketAddr = edge.wait_for("mqtt=").parse().unwrap();
        edges.push((edge, meta, mqtt));
    }

    // The example manifests reach both MetaServers.
    for (_, meta, _) in &edges {
        eventually("the example config map on an edge", || {
            configmap_says(*meta, "hello from the cloud")
        });
    }
    // A manifest change reaches both.
    let config_yaml = manifests.join("config.yaml");
    let original = std::fs::read_to_string(&config_yaml).unwrap();
    std::fs::write(
        &config_yaml,
        original.replace("hello from the cloud", "hello again"),
    )
    .unwrap();
    for (_, meta, _) in &edges {
        eventually("the changed config map on an edge", || {
            configmap_says(*meta, "hello again")
        });
    }

    // A device reports a twin value over MQTT on edge-1 once the edge has
    // its Device: the edge answers with a delta and the cloud shows it.
    eventually("the Device on edge-1", || {
        matches!(
            get(
                edges[0].1,
                "/apis/devices.kubeedge.io/v1beta1/namespaces/default/devices/thermometer-1"
            ),
            Some((200, _))
        )
    });
    let delta = twin_update(edges[0].2, "thermometer-1", "21.5");
    assert_eq!(delta["delta"]["temperature"], "20", "{delta}");
    eventually(
        "the reported temperature in `cloudcontrol get devices`",
        || devices_table(&data).contains("temperature=21.5"),
    );

    // cloudhub dies hard and comes back on the same port: what changes
    // meanwhile and after reaches the edges, and reports still flow.
    drop(hub);
    std::fs::write(
        &config_yaml,
        original.replace("hello from the cloud", "after the restart"),
    )
    .unwrap();
    let (_hub, _) = start_hub(dir, &data, &rings, hub_port);
    for (_, meta, _) in &edges {
        eventually("the change made while cloudhub was down", || {
            configmap_says(*meta, "after the restart")
        });
    }
    let delta = twin_update(edges[0].2, "thermometer-1", "22.5");
    assert_eq!(delta["delta"]["temperature"], "20", "{delta}");
    eventually("a report after the restart", || {
        devices_table(&data).contains("temperature=22.5")
    });
    drop(control);
}
