//! A tiny cloud for edgecore's tests: a TLS 1.3 server thread speaking the
//! link protocol with `hub_core::Hub`, certificates made with rcgen, and
//! helpers to run the real `edgecore` binary.
// Shared by several test files, each using a part of it.
#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hub_core::{Hub, HubConfig, HubEvent};
use rcgen::{CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use schema::records::ObjectKey;
use schema::{Header, Message, Route};

pub const NODE: &str = "edge-1";

/// CA, server and edge certificates as PEM files in `dir`.
#[derive(Debug, Clone)]
pub struct Pki {
    pub ca: PathBuf,
    pub ca_der: Vec<u8>,
    pub server_cert: Vec<u8>,
    pub server_key: Vec<u8>,
    pub edge_cert: PathBuf,
    pub edge_key: PathBuf,
}

pub fn pki(dir: &Path) -> Pki {
    pki_with_ca_key(dir).0
}

/// As [`pki`], also returning the CA's parameters and key (PEM) for a
/// signing server.
pub fn pki_with_ca_key(dir: &Path) -> (Pki, CertificateParams, String) {
    let ca_key = KeyPair::generate().unwrap();
    let ca_key_pem = ca_key.serialize_pem();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "apiary test CA");
    ca_params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params.clone(), &ca_key);

    let server_key = KeyPair::generate().unwrap();
    let mut sp = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    sp.subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    let server = sp.signed_by(&server_key, &issuer).unwrap();

    let edge_key = KeyPair::generate().unwrap();
    let mut ep = CertificateParams::new(Vec::<String>::new()).unwrap();
    ep.distinguished_name.push(DnType::CommonName, NODE);
    let edge = ep.signed_by(&edge_key, &issuer).unwrap();

    std::fs::create_dir_all(dir).unwrap();
    let write = |name: &str, text: String| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let pki = Pki {
        ca: write("ca.crt", ca.pem()),
        ca_der: ca.der().to_vec(),
        server_cert: server.der().to_vec(),
        server_key: server_key.serialize_der(),
        edge_cert: write("edge.crt", edge.pem()),
        edge_key: write("edge.key", edge_key.serialize_pem()),
    };
    (pki, ca_params, ca_key_pem)
}

/// What the test cloud saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// Object versions the edge reported durably committed.
    pub delivered: BTreeMap<ObjectKey, u64>,
    pub upstream: Vec<Message>,
    pub connections: usize,
}

pub struct TestHub {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Seen>>,
    commands: mpsc::Sender<(ObjectKey, Message)>,
}

impl TestHub {
    /// A hub on `addr` (port 0 for any) for `pki`.
    pub fn start(pki: &Pki, addr: &str) -> Self {
        let listener = TcpListener::bind(addr).unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let config = server_config(pki);
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (tx, rx) = mpsc::channel();
        let s = seen.clone();
        std::thread::spawn(move || hub_thread(listener, config, rx, s));
        Self {
            addr,
            seen,
            commands: tx,
        }
    }

    /// Queues `message` for the edge.
    pub fn send(&self, key: ObjectKey, message: Message) {
        self.commands.send((key, message)).unwrap();
    }

    pub fn delivered(&self, key: &ObjectKey) -> Option<u64> {
        self.seen.lock().unwrap().delivered.get(key).copied()
    }

    pub fn delivered_count(&self) -> usize {
        self.seen.lock().unwrap().delivered.len()
    }
}

pub fn server_config(pki: &Pki) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(pki.ca_der.clone())).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.server_key.clone()));
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![CertificateDer::from(pki.server_cert.clone())], key)
        .unwrap();
    Arc::new(config)
}

type Tls = rustls::StreamOwned<rustls::ServerConnection, TcpStream>;

fn hub_thread(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    commands: mpsc::Receiver<(ObjectKey, Message)>,
    seen: Arc<Mutex<Seen>>,
) {
    let start = Instant::now();
    let now = || start.elapsed().as_millis() as u64;
    let mut hub = Hub::new(HubConfig::default());
    let mut conn: Option<(u64, Tls)> = None;
    let mut next_id = 0;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        if let Ok((sock, _)) = listener.accept() {
            sock.set_nonblocking(false).unwrap();
            sock.set_read_timeout(Some(Duration::from_millis(5)))
                .unwrap();
            let tls = rustls::ServerConnection::new(config.clone()).unwrap();
            if let Some((old, _)) = conn.take() {
                hub.handle_disconnect(old);
            }
            next_id += 1;
            hub.handle_connect(next_id, Some(NODE), now());
            seen.lock().unwrap().connections += 1;
            conn = Some((next_id, rustls::StreamOwned::new(tls, sock)));
        }
        loop {
            match commands.try_recv() {
                Ok((key, m)) => {
                    let _ = hub.handle_downstream(NODE, key, m).unwrap();
                }
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => return,
            }
        }
        let mut lost = false;
        if let Some((id, tls)) = conn.as_mut() {
            match tls.read(&mut buf) {
                Ok(0) => lost = true,
                Ok(n) => hub.handle_bytes(*id, &buf[..n], now()),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => lost = true,
            }
        } else {
            std::thread::sleep(Duration::from_millis(5));
        }
        if lost && let Some((id, _)) = conn.take() {
            hub.handle_disconnect(id);
        }
        hub.handle_timeout(now());
        while let Some((id, t)) = hub.poll_transmit(now()) {
            if let Some((cid, tls)) = conn.as_mut()
                && *cid == id
            {
                let ok = tls.write_all(&t.bytes).and_then(|_| tls.flush()).is_ok();
                if t.close || !ok {
                    let _ = tls.sock.shutdown(std::net::Shutdown::Both);
                    conn = None;
                }
            }
        }
        while let Some(e) = hub.poll_event() {
            match e {
                HubEvent::Delivered { objects, .. } => {
                    let mut s = seen.lock().unwrap();
                    for o in objects {
                        let rv = s.delivered.entry((*o.key).clone()).or_default();
                        *rv = (*rv).max(o.resource_version);
                    }
                }
                HubEvent::Upstream {
                    node,
                    store_id,
                    message,
                } => {
                    hub.handle_upstream_committed(&node, store_id, message.header.seq);
                    seen.lock().unwrap().upstream.push(message);
                }
                _ => {}
            }
        }
    }
}

pub fn key(kind: &str, ns: &str, name: &str) -> ObjectKey {
    ObjectKey {
        kind: kind.into(),
        namespace: ns.into(),
        name: name.into(),
    }
}

/// A downstream message for `key` at `rv` carrying `content`.
pub fn downstream(op: &str, key: &ObjectKey, rv: u64, content: String) -> Message {
    Message {
        header: Header {
            id: format!("{}-{}-{rv}", key.kind, key.name),
            resource_version: rv,
            ..Header::default()
        },
        route: Route {
            source: "edgecontroller".into(),
            group: "resource".into(),
            operation: op.into(),
            resource: key.to_string(),
            ..Route::default()
        },
        content: content.into_bytes(),
    }
}

pub fn pod_json(ns: &str, name: &str, rv: u64) -> String {
    format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}","namespace":"{ns}","uid":"uid-{name}","resourceVersion":"{rv}"}},"spec":{{"containers":[{{"name":"c","image":"busybox"}}]}}}}"#
    )
}

/// Writes an edgecore config in `dir` for `cloud` and returns its path.
pub fn edge_config(dir: &Path, pki: &Pki, cloud: &str) -> PathBuf {
    let text = format!(
        "[database]\ndataSource = {data:?}\n\n\
         [modules.edgeHub]\nserver = {cloud:?}\ntlsCaFile = {ca:?}\n\
         tlsCertFile = {cert:?}\ntlsPrivateKeyFile = {key:?}\nheartbeat = 2\n\n\
         [modules.edged]\nhostnameOverride = {NODE:?}\nnodeStatusUpdateFrequency = 1\n\n\
         [modules.metaManager.metaServer]\nserver = \"127.0.0.1:0\"\n\n\
         [modules.eventBus.broker]\nlisten = \"127.0.0.1:0\"\n",
        data = dir.join("data"),
        ca = pki.ca,
        cert = pki.edge_cert,
        key = pki.edge_key,
    );
    let path = dir.join("edgecore.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A running `edgecore run`, killed with SIGKILL when dropped.
pub struct Edge {
    pub child: Child,
    pub metaserver: SocketAddr,
}

impl Edge {
    pub fn start(config: &Path) -> Self {
        Self::start_with_driver(config, "fusion")
    }

    /// As [`start`](Self::start) with monoio driver `driver` (`legacy`
    /// forces epoll).
    pub fn start_with_driver(config: &Path, driver: &str) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_edgecore"))
            .args(["run", "--config"])
            .arg(config)
            .env("EDGECORE_LOG", "warn")
            .env("EDGECORE_IO_DRIVER", driver)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = lines.next().expect("edgecore prints its address").unwrap();
        let addr = line
            .strip_prefix("edgecore metaserver=")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .unwrap();
        // Keep draining stdout so the child never blocks on it.
        std::thread::spawn(move || for _ in lines {});
        Self {
            child,
            metaserver: addr,
        }
    }

    /// SIGKILL, as a power cut would.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `cond` until it holds or `secs` pass.
pub fn wait_for(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One plain HTTP/1.1 GET; (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}
