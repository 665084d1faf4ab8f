//! Operating `cloudhub`: the tuning profiles start, serve `/metrics` and
//! `/healthz`, and a SIGTERM shuts the hub down gracefully, telling edges to
//! come back later.

mod support;

use std::path::Path;
use std::time::Duration;

use schema::fb::CloseReason;
use support::{Edge, HubProcess, OsArg, Pki, metric_value};

fn start_profile(profile: &str, dir: &Path, pki: &Pki) -> HubProcess {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let ring_dir = dir.join("rings");
    let args: Vec<OsArg> = vec![
        "--config".into(),
        root.join("tuning").join(profile).into(),
        "--port".into(),
        "0".into(),
        "--shards".into(),
        "2".into(),
        "--metrics-address".into(),
        "127.0.0.1:0".into(),
        "--ring-dir".into(),
        ring_dir.clone().into(),
        "--tls-ca-file".into(),
        pki.dir.join("ca.crt").into(),
        "--tls-cert-file".into(),
        pki.dir.join("server.crt").into(),
        "--tls-private-key-file".into(),
        pki.dir.join("server.key").into(),
    ];
    HubProcess::spawn(&args, ring_dir, 2)
}

#[test]
fn every_profile_starts_serves_metrics_and_stops_on_sigterm() {
    for profile in ["small-fleet.toml", "large-fleet.toml"] {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new(dir.path());
        let mut hub = start_profile(profile, dir.path(), &pki);
        assert_eq!(hub.get("/healthz").0, "HTTP/1.1 200 OK", "{profile}");
        let (status, body) = hub.get("/metrics");
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(
            body.contains("# TYPE apiary_connected_nodes gauge"),
            "{body}"
        );
        assert_eq!(hub.get("/nothing").0, "HTTP/1.1 404 Not Found");

        // A connected edge is told to come back later, with the profile's
        // delay.
        let node = "edge-sigterm";
        let mut edge = Edge::tls(hub.tls.unwrap(), pki.client(node), node, 0);
        edge.pump_until("link up", Edge::is_up);
        assert_eq!(
            metric_value(&hub.get("/metrics").1, "apiary_connected_nodes", None),
            1
        );
        let status = hub.terminate(Duration::from_secs(20));
        assert!(status.success(), "{profile}: {status:?}");
        edge.pump_until("the close", |e| e.close_reason().is_some());
        assert_eq!(
            edge.close_reason(),
            Some(Some(CloseReason::ShuttingDown)),
            "{profile}"
        );
        edge.pump_until("the socket to close", |e| e.closed);
    }
}

#[test]
fn a_bad_configuration_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "nodeLimit = 'many'\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cloudhub"))
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("nodeLimit"), "{stderr}");
    // TLS paths that do not exist are named.
    std::fs::write(
        &path,
        "tlsCAFile = '/nonexistent/ca.crt'\ntlsCertFile = 'a'\ntlsPrivateKeyFile = 'b'\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cloudhub"))
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/ca.crt"), "{stderr}");
}

/// Lines of the hub's log that contain `what`.
fn log_lines(hub: &HubProcess, what: &str) -> usize {
    hub.log_text().lines().filter(|l| l.contains(what)).count()
}

#[test]
fn at_its_open_files_limit_the_hub_retries_calmly() {
    let dir = tempfile::tempdir().unwrap();
    let ring_dir = dir.path().join("rings");
    let config = dir.path().join("cloudhub.toml");
    std::fs::write(
        &config,
        format!(
            "plaintext = true\nplaintextPort = 0\nhandshakeTimeout = 30\n\
             rings = {{ ringBytes = {}, backlogBytes = {} }}\n",
            support::RING_BYTES,
            support::RING_BYTES
        ),
    )
    .unwrap();
    let args: Vec<OsArg> = vec![
        "--config".into(),
        config.into(),
        "--shards".into(),
        "1".into(),
        "--metrics-address".into(),
        "127.0.0.1:0".into(),
        "--ring-dir".into(),
        ring_dir.clone().into(),
    ];
    let hub = HubProcess::spawn_with_open_files(&args, ring_dir, 1, 128);
    let plain = hub.plain.unwrap();
    // Connections that never send a Hello hold a descriptor each until the
    // handshake deadline; more of them than the limit allows.
    let held: Vec<std::net::TcpStream> = (0..200)
        .map(|_| std::net::TcpStream::connect(plain).unwrap())
        .collect();
    let shard_retries = |hub: &HubProcess| log_lines(hub, "shards::tasks: accept");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    // The shard says it is out of descriptors and retries every 100 ms.
    while shard_retries(&hub) < 5 {
        assert!(
            std::time::Instant::now() < deadline,
            "the hub never reached its limit:\n{}",
            hub.log_text()
        );
        std::thread::yield_now();
    }
    // Meanwhile the metrics endpoint said so once, instead of spinning on
    // accept (which fails at the limit even with nobody connecting).
    let metrics_warnings = log_lines(&hub, "metrics endpoint accept");
    assert!(
        (1..=2).contains(&metrics_warnings),
        "{metrics_warnings} metrics accept warnings while the shard retried {} times",
        shard_retries(&hub)
    );
    drop(held);
}
