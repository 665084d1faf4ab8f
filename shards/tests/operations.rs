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
