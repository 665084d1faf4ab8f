//! What the `cloudhub` integration tests share: a test PKI made with rcgen,
//! the `cloudhub` binary run as a child process, edges that drive the
//! hub-core `Link` over a blocking rustls client connection, and helpers to
//! read the rings and the metrics.
//!
//! Every wait here polls a socket, a ring's futex or the metrics endpoint
//! until a condition holds or a deadline passes; none sleeps to synchronise.

// Each test binary uses a different part of this module, and its items are
// `pub` only to be shared by the test files.
#![allow(dead_code, unreachable_pub)]

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hub_core::link::{Link, LinkConfig, LinkEvent};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use schema::fb::CloseReason;
use schema::records::{self, DownRecord, ObjectKey, UpRecord};
use schema::{Header, Message, Route};

/// Data bytes of each ring in the tests' hubs.
pub const RING_BYTES: usize = 1 << 20;
/// How long any single wait of a test may take.
const PATIENCE: Duration = Duration::from_secs(30);

pub type OsArg = OsString;

/// A CA, a server certificate for `localhost`, and client certificates
/// whose CN is the node id, as PEM files in `dir`.
pub struct Pki {
    pub dir: PathBuf,
    pub ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
    roots: Arc<rustls::RootCertStore>,
}

fn ed25519() -> KeyPair {
    KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap()
}

impl Pki {
    pub fn new(dir: &Path) -> Self {
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.distinguished_name
            .push(DnType::CommonName, "Apiary test CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = ed25519();
        let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
        let issuer = Issuer::new(ca, ca_key);

        let server_key = ed25519();
        let mut server = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        server
            .distinguished_name
            .push(DnType::CommonName, "cloudhub");
        let server_pem = server.signed_by(&server_key, &issuer).unwrap().pem();

        std::fs::write(dir.join("ca.crt"), &ca_pem).unwrap();
        std::fs::write(dir.join("server.crt"), server_pem).unwrap();
        std::fs::write(dir.join("server.key"), server_key.serialize_pem()).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
            .unwrap();
        Self {
            dir: dir.to_owned(),
            ca_pem,
            issuer,
            roots: Arc::new(roots),
        }
    }

    /// A client certificate for node `cn` and a TLS 1.3 client using it.
    pub fn client(&self, cn: &str) -> Arc<rustls::ClientConfig> {
        let key = ed25519();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let key = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap();
        let config = self
            .client_builder()
            .with_client_auth_cert(vec![cert.der().clone()], key)
            .unwrap();
        Arc::new(config)
    }

    /// A client that trusts the CA and presents no certificate.
    pub fn anonymous(&self) -> Arc<rustls::ClientConfig> {
        Arc::new(self.client_builder().with_no_client_auth())
    }

    fn client_builder(
        &self,
    ) -> rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(self.roots.clone())
    }
}

/// A running `cloudhub` child process, killed when dropped.
pub struct HubProcess {
    child: Child,
    pub tls: Option<SocketAddr>,
    pub plain: Option<SocketAddr>,
    pub metrics: SocketAddr,
    pub ring_dir: PathBuf,
    pub shards: usize,
    log: PathBuf,
}

impl HubProcess {
    /// Starts a hub with `shards` shards on free ports, TLS from `pki` (or
    /// plaintext only), the test ring size, a 2 s handshake deadline, and
    /// `extra` appended to its configuration file (top-level keys first,
    /// then tables other than `[rings]`).
    pub fn start(dir: &Path, pki: Option<&Pki>, shards: usize, extra: &str) -> Self {
        Self::start_with_rings(dir, pki, shards, (RING_BYTES, RING_BYTES), extra)
    }

    /// As [`start`](Self::start), with rings of `rings.0` bytes and a
    /// backlog of `rings.1` bytes.
    pub fn start_with_rings(
        dir: &Path,
        pki: Option<&Pki>,
        shards: usize,
        rings: (usize, usize),
        extra: &str,
    ) -> Self {
        let ring_dir = dir.join("rings");
        let (ring_bytes, backlog_bytes) = rings;
        let mut toml = format!(
            "port = 0\nhandshakeTimeout = 2\nshutdownGrace = 2\n\
             rings = {{ ringBytes = {ring_bytes}, backlogBytes = {backlog_bytes} }}\n"
        );
        match pki {
            Some(pki) => toml.push_str(&format!(
                "tlsCAFile = '{}'\ntlsCertFile = '{}'\ntlsPrivateKeyFile = '{}'\n",
                pki.dir.join("ca.crt").display(),
                pki.dir.join("server.crt").display(),
                pki.dir.join("server.key").display(),
            )),
            None => toml.push_str("plaintext = true\nplaintextPort = 0\n"),
        }
        toml.push_str(extra);
        let path = dir.join("cloudhub.toml");
        std::fs::write(&path, toml).unwrap();
        let args: Vec<OsArg> = vec![
            "--config".into(),
            path.into(),
            "--shards".into(),
            shards.to_string().into(),
            "--metrics-address".into(),
            "127.0.0.1:0".into(),
            "--ring-dir".into(),
            ring_dir.clone().into(),
        ];
        Self::spawn(&args, ring_dir, shards)
    }

    /// Runs `cloudhub` with `args` and waits for its `cloudhub ready` line.
    pub fn spawn(args: &[OsArg], ring_dir: PathBuf, shards: usize) -> Self {
        Self::spawn_command(
            Command::new(env!("CARGO_BIN_EXE_cloudhub")),
            args,
            ring_dir,
            shards,
        )
    }

    /// As [`spawn`](Self::spawn), with soft and hard open-files limits of
    /// `open_files` (set by a shell before it runs the hub).
    pub fn spawn_with_open_files(
        args: &[OsArg],
        ring_dir: PathBuf,
        shards: usize,
        open_files: u64,
    ) -> Self {
        let mut shell = Command::new("sh");
        shell
            .arg("-c")
            .arg(format!("ulimit -n {open_files} && exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_cloudhub"));
        Self::spawn_command(shell, args, ring_dir, shards)
    }

    fn spawn_command(
        mut command: Command,
        args: &[OsArg],
        ring_dir: PathBuf,
        shards: usize,
    ) -> Self {
        let log = ring_dir.with_extension("log");
        let mut child = command
            .args(args)
            .env("RUST_LOG", "debug")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("cloudhub ready") {
                    let _ = tx.send(line);
                }
            }
        });
        let mut hub = Self {
            child,
            tls: None,
            plain: None,
            metrics: SocketAddr::from(([127, 0, 0, 1], 0)),
            ring_dir,
            shards,
            log,
        };
        let Ok(line) = rx.recv_timeout(PATIENCE) else {
            panic!("cloudhub did not start:\n{}", hub.log_text());
        };
        for word in line.split_whitespace() {
            let Some((key, value)) = word.split_once('=') else {
                continue;
            };
            let addr = value.parse().ok();
            match key {
                "tls" => hub.tls = addr,
                "plaintext" => hub.plain = addr,
                "metrics" => hub.metrics = addr.unwrap(),
                _ => {}
            }
        }
        hub
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The shard that owns `node`.
    pub fn owner(&self, node: &str) -> usize {
        usize::from(hub_core::shard_of(node, self.shards as u16))
    }

    /// The control side of shard `shard`'s ring file, of the size the hub
    /// made it.
    pub fn control(&self, shard: usize) -> shm::RingFile {
        shm::RingFile::open(
            &shm::ring_path(&self.ring_dir, shard),
            shm::RingSize::Default(RING_BYTES),
            shm::Role::Control,
        )
        .unwrap()
    }

    /// `GET path` on the metrics endpoint: the status line and the body.
    pub fn get(&self, path: &str) -> (String, String) {
        let mut stream = TcpStream::connect(self.metrics).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        write!(stream, "GET {path} HTTP/1.1\r\nhost: localhost\r\n\r\n").unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        (head.lines().next().unwrap().to_owned(), body.to_owned())
    }

    /// The value of series `name` (summed over shards unless one is named).
    pub fn metric(&self, name: &str, shard: Option<usize>) -> u64 {
        metric_value(&self.get("/metrics").1, name, shard)
    }

    /// Scrapes `/metrics` until `done` holds for its body.
    pub fn wait_metrics(&self, what: &str, done: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let (_, body) = self.get("/metrics");
            if done(&body) {
                return;
            }
            assert!(Instant::now() < deadline, "waiting for {what}:\n{body}");
            std::thread::yield_now();
        }
    }

    /// Sends SIGTERM and waits for the process to end.
    pub fn terminate(&mut self, patience: Duration) -> ExitStatus {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        let deadline = Instant::now() + patience;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "cloudhub still running {patience:?} after SIGTERM:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- cloudhub log ---\n{}", self.log_text());
        }
    }
}

/// The sum of the samples of series `name`, over every shard or only
/// `shard`'s.
pub fn metric_value(body: &str, name: &str, shard: Option<usize>) -> u64 {
    let label = shard.map(|s| format!("shard=\"{s}\""));
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (family, labels) = series.split_once('{').unwrap_or((series, ""));
            if family != name {
                return None;
            }
            if let Some(label) = &label
                && !labels.contains(label.as_str())
            {
                return None;
            }
            value.parse::<u64>().ok()
        })
        .sum()
}

/// A downstream record for a config map `name` of `node`, as the control
/// side writes it.
pub fn downstream(node: &str, name: &str, resource_version: u64, content: &[u8]) -> Vec<u8> {
    let key = ObjectKey {
        kind: "configmap".into(),
        namespace: "default".into(),
        name: name.into(),
    };
    let message = Message {
        header: Header {
            id: format!("{node}/{name}/{resource_version}"),
            resource_version,
            ..Header::default()
        },
        route: Route {
            source: "cloudcontrol".into(),
            group: "resource".into(),
            operation: "update".into(),
            resource: format!("default/configmap/{name}"),
            ..Route::default()
        },
        content: content.to_vec(),
    };
    records::to_bytes(&DownRecord::Downstream {
        node_id: node.into(),
        key,
        message,
    })
    .to_vec()
}

/// Every record waiting in `ring`'s inbound side.
pub fn drain(ring: &shm::RingFile) -> Vec<UpRecord> {
    let mut out = Vec::new();
    let mut buf = Vec::new();
    while ring.pop_and_wake(&mut buf).unwrap() {
        out.push(records::from_bytes::<UpRecord>(&buf).unwrap());
    }
    out
}

/// Drains `rings` into `seen` until `done` holds, sleeping on the rings'
/// futexes in between.
pub fn collect_until(
    rings: &[shm::RingFile],
    seen: &mut Vec<UpRecord>,
    what: &str,
    done: impl Fn(&[UpRecord]) -> bool,
) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        for ring in rings {
            seen.extend(drain(ring));
        }
        if done(seen) {
            return;
        }
        assert!(Instant::now() < deadline, "waiting for {what}: {seen:#?}");
        rings[0].wait_inbound(Duration::from_millis(20));
    }
}

/// Pumps every edge until `done` holds for all of them.
pub fn pump_all(edges: &mut [Edge], what: &str, done: impl Fn(&Edge) -> bool) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        for e in edges.iter_mut() {
            e.pump();
        }
        if edges.iter().all(&done) {
            return;
        }
        if Instant::now() >= deadline {
            let missing: Vec<&str> = edges
                .iter()
                .filter(|e| !done(e))
                .map(|e| e.node.as_str())
                .collect();
            panic!("waiting for {what}: not yet on {missing:?}");
        }
    }
}

/// One connection of an edge: the hub-core `Link` over a blocking socket
/// with a short read timeout. Every downstream message is committed at once.
/// The edge does not reconnect: a test makes a new `Edge` for that.
pub struct Edge {
    pub node: String,
    pub link: Link,
    tls: rustls::ClientConnection,
    socket: TcpStream,
    start: Instant,
    /// Downstream messages, in the order received.
    pub received: Vec<Message>,
    /// Every event of the link.
    pub events: Vec<LinkEvent>,
    /// The socket is closed (either end).
    pub closed: bool,
}

impl Edge {
    /// Connects over TLS as node `node` (the `Hello` says `node`, whatever
    /// the certificate in `client` says), having committed up to
    /// `committed`.
    pub fn tls(
        addr: SocketAddr,
        client: Arc<rustls::ClientConfig>,
        node: &str,
        committed: u64,
    ) -> Self {
        let socket = TcpStream::connect(addr).unwrap();
        socket.set_nodelay(true).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(2)))
            .unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let tls = rustls::ClientConnection::new(client, name).unwrap();
        let mut link = Link::new(LinkConfig::new(node), committed, 1, 0);
        assert!(link.poll_connect(0));
        link.handle_connected(0);
        let mut edge = Self {
            node: node.to_owned(),
            link,
            tls,
            socket,
            start: Instant::now(),
            received: Vec::new(),
            events: Vec::new(),
            closed: false,
        };
        edge.pump();
        edge
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    pub fn is_up(&self) -> bool {
        !self.closed && self.link.is_up()
    }

    /// `None` while the link has not ended; then the close reason it ended
    /// with (`Some(None)`: the transport was lost without a `Close`).
    pub fn close_reason(&self) -> Option<Option<CloseReason>> {
        self.events.iter().find_map(|e| match e {
            LinkEvent::Disconnected { reason, .. } => Some(*reason),
            _ => None,
        })
    }

    /// The names of the objects received, in order.
    pub fn object_names(&self) -> Vec<String> {
        self.received
            .iter()
            .map(|m| m.route.resource.rsplit('/').next().unwrap().to_owned())
            .collect()
    }

    /// Writes upstream message `seq` to the (in-memory) outbox.
    pub fn send_upstream(&mut self, seq: u64, content: &[u8]) {
        let message = Message {
            header: Header {
                id: format!("{}/up/{seq}", self.node),
                ..Header::default()
            },
            route: Route {
                source: "edged".into(),
                group: "resource".into(),
                operation: "update".into(),
                resource: format!("default/podstatus/{}", self.node),
                ..Route::default()
            },
            content: content.to_vec(),
        };
        self.link.handle_outbox(seq, message);
        self.pump();
    }

    /// Pumps until `done` holds.
    pub fn pump_until(&mut self, what: &str, done: impl Fn(&Edge) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !done(self) {
            assert!(
                Instant::now() < deadline,
                "{}: waiting for {what}; events {:?}",
                self.node,
                self.events
            );
            self.pump();
        }
    }

    /// One turn: timers, writes, one read (waiting at most 2 ms), events.
    pub fn pump(&mut self) {
        if self.closed {
            std::thread::yield_now();
            return;
        }
        let now = self.now();
        if self.link.poll_timeout().is_some_and(|at| at <= now) {
            self.link.handle_timeout(now);
        }
        self.transmit();
        self.receive();
        self.transmit();
    }

    fn transmit(&mut self) {
        let now = self.now();
        while let Some(t) = self.link.poll_transmit(now) {
            if !t.bytes.is_empty() && self.tls.writer().write_all(&t.bytes).is_err() {
                self.lose();
                return;
            }
            if t.close {
                self.tls.send_close_notify();
                self.flush();
                let _ = self.socket.shutdown(std::net::Shutdown::Both);
                self.closed = true;
                return;
            }
        }
        self.flush();
    }

    fn flush(&mut self) {
        while self.tls.wants_write() {
            if self.tls.write_tls(&mut self.socket).is_err() {
                self.lose();
                return;
            }
        }
    }

    fn receive(&mut self) {
        match self.tls.read_tls(&mut self.socket) {
            Ok(0) => return self.lose(),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return;
            }
            Err(_) => return self.lose(),
        }
        if self.tls.process_new_packets().is_err() {
            // An alert from the hub (refused certificate) or a broken record.
            self.flush();
            return self.lose();
        }
        let mut plain = Vec::new();
        match self.tls.reader().read_to_end(&mut plain) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => {}
        }
        let now = self.now();
        if !plain.is_empty() {
            self.link.handle_bytes(&plain, now);
        }
        while let Some(event) = self.link.poll_event() {
            if let LinkEvent::Downstream(m) = &event {
                self.received.push(m.clone());
                if !m.header.best_effort {
                    self.link.handle_committed(m.header.seq);
                }
            }
            self.events.push(event);
        }
    }

    /// The transport is gone.
    fn lose(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        let now = self.now();
        self.link.handle_disconnected(now);
        while let Some(event) = self.link.poll_event() {
            self.events.push(event);
        }
    }
}
