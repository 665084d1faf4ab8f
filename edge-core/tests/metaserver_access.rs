//! The MetaServer off loopback: edgecore refuses to serve it without TLS
//! and authentication; with them, kubectl gets in with the bearer token or
//! with a client certificate, and is refused (401, or at the handshake)
//! without.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use edge_core::tls::pem_encode;
use support::{Edge, Pki, TestHub, downstream, edge_config, key, pki, pod_json, wait_for};

const META: &str = "[modules.metaManager.metaServer]\nserver = \"127.0.0.1:0\"\n";

/// `edge_config` with the MetaServer section replaced by `section`.
fn config_with(dir: &Path, pki: &Pki, hub: &TestHub, section: &str) -> PathBuf {
    let path = edge_config(dir, pki, &hub.addr.to_string());
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(META));
    std::fs::write(&path, text.replace(META, section)).unwrap();
    path
}

/// The hub's certificate (valid for 127.0.0.1) as the MetaServer's.
fn server_pem(dir: &Path, pki: &Pki) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("meta.crt"), dir.join("meta.key"));
    std::fs::write(&cert, pem_encode("CERTIFICATE", &pki.server_cert)).unwrap();
    std::fs::write(&key, pem_encode("PRIVATE KEY", &pki.server_key)).unwrap();
    (cert, key)
}

/// `kubectl get pods -o name` against `edge` over HTTPS with `args`.
fn kubectl(edge: &Edge, pki: &Pki, args: &[&str]) -> (bool, String) {
    let server = format!("https://127.0.0.1:{}", edge.metaserver.port());
    let out = Command::new("kubectl")
        .args(["--server", &server, "--certificate-authority"])
        .arg(&pki.ca)
        .args(args)
        .args(["get", "pods", "-o", "name"])
        .output()
        .expect("kubectl (bash .ci/test installs it)");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn seed(hub: &TestHub) {
    let k = key("pod", "default", "web-1");
    hub.send(
        k.clone(),
        downstream("update", &k, 10, pod_json("default", "web-1", 10)),
    );
    wait_for(30, "the pod committed", || hub.delivered_count() == 1);
}

#[test]
fn off_loopback_without_tls_and_authentication_edgecore_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(&dir.path().join("pki"));
    let hub = TestHub::start(&pki, "127.0.0.1:0");
    let section = "[modules.metaManager.metaServer]\nserver = \"0.0.0.0:0\"\n";
    let config = config_with(dir.path(), &pki, &hub, section);
    let out = Command::new(env!("CARGO_BIN_EXE_edgecore"))
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("not a loopback address") && err.contains("tokenFile"),
        "{err}"
    );
}

#[test]
fn a_bearer_token_over_https() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(&dir.path().join("pki"));
    let hub = TestHub::start(&pki, "127.0.0.1:0");
    let (cert, key) = server_pem(dir.path(), &pki);
    let token = dir.path().join("token");
    std::fs::write(&token, "edge-app-token\n").unwrap();
    let section = format!(
        "[modules.metaManager.metaServer]\nserver = \"0.0.0.0:0\"\n\
         tlsCertFile = {cert:?}\ntlsPrivateKeyFile = {key:?}\ntokenFile = {token:?}\n"
    );
    let edge = Edge::start(&config_with(dir.path(), &pki, &hub, &section));
    seed(&hub);

    let (ok, out) = kubectl(&edge, &pki, &["--token", "edge-app-token"]);
    assert_eq!((ok, out.as_str()), (true, "pod/web-1\n"));
    let (ok, out) = kubectl(&edge, &pki, &["--token", "edge-app-toke"]);
    assert!(!ok && out.contains("Unauthorized"), "{out}");
    // With no credentials at all kubectl answers the 401 by asking for a
    // user name, which its closed stdin cannot give.
    let (ok, out) = kubectl(&edge, &pki, &[]);
    assert!(!ok && !out.contains("web-1"), "{out}");
    // Plain HTTP to the TLS port gets nothing.
    let plain = format!("http://127.0.0.1:{}", edge.metaserver.port());
    let out = Command::new("kubectl")
        .args([
            "--server",
            &plain,
            "--token",
            "edge-app-token",
            "get",
            "pods",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn client_certificates_signed_by_the_configured_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(&dir.path().join("pki"));
    let hub = TestHub::start(&pki, "127.0.0.1:0");
    let (cert, key) = server_pem(dir.path(), &pki);
    let section = format!(
        "[modules.metaManager.metaServer]\nserver = \"0.0.0.0:0\"\n\
         tlsCertFile = {cert:?}\ntlsPrivateKeyFile = {key:?}\ntlsCaFile = {ca:?}\n",
        ca = pki.ca
    );
    let edge = Edge::start(&config_with(dir.path(), &pki, &hub, &section));
    seed(&hub);

    let client = [
        "--client-certificate",
        pki.edge_cert.to_str().unwrap(),
        "--client-key",
        pki.edge_key.to_str().unwrap(),
    ];
    let (ok, out) = kubectl(&edge, &pki, &client);
    assert_eq!((ok, out.as_str()), (true, "pod/web-1\n"));
    let (ok, out) = kubectl(&edge, &pki, &[]);
    assert!(!ok, "no client certificate: {out}");
}
