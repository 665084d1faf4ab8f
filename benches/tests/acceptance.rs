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

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use support::{Process, binary, eventually, get, twin_update};

const RING_BYTES: usize = 1 << 20;

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
