//! One simulated edge node: the hub-core `Link` over a tokio TLS stream (or
//! plain TCP to the hub's benchmark-only plaintext port),
//! committing every downstream message at once (a perfect store), sending
//! timestamped upstream telemetry at a rate, and dropping its connection
//! when the scenario says so.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hub_core::backoff::BackoffConfig;
use hub_core::link::{Link, LinkConfig, LinkEvent};
use rustls::pki_types::ServerName;
use schema::{Header, Message, Route};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use super::stats::{Stats, now_ns, stamp, stamped_at};

/// What the scenario tells every edge.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Command {
    /// Bumped to make every edge drop its connection and reconnect.
    pub drop_generation: u64,
    /// Upstream messages per second per edge (0: none).
    pub upstream_rate: f64,
    /// Leave.
    pub stop: bool,
}

/// One edge's settings.
#[derive(Debug, Clone)]
pub struct EdgeSpec {
    pub node: String,
    pub index: usize,
    pub client: Arc<rustls::ClientConfig>,
    pub hub: SocketAddr,
    pub source: IpAddr,
    pub backoff_ms: u64,
    pub payload: usize,
    /// `hub` is the plaintext port: no TLS, the `Hello` names the node.
    pub plaintext: bool,
}

/// The transport of a link: TLS or plain TCP.
trait Transport: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Transport for T {}

/// The source address of edge `index`: spread over 127.0.0.0/8, 250 edges
/// per address, so that no address runs out of ephemeral ports.
pub fn source_address(index: usize) -> IpAddr {
    let n = index / 250;
    IpAddr::from([
        127,
        1 + (n / 250) as u8,
        (n % 250) as u8,
        (index % 250 + 1) as u8,
    ])
}

enum Wake {
    Read(std::io::Result<usize>),
    Timer,
    Command,
    Telemetry,
}

/// Runs one edge until the scenario stops.
pub async fn run(spec: EdgeSpec, stats: Arc<Stats>, mut commands: watch::Receiver<Command>) {
    let mut config = LinkConfig::new(spec.node.clone());
    config.qps = 0;
    config.backoff = BackoffConfig {
        initial_ms: spec.backoff_ms.max(1),
        max_ms: 30_000,
    };
    config.handshake_timeout_ms = 30_000;
    let start = tokio::time::Instant::now();
    let now = move || start.elapsed().as_millis() as u64;
    let mut link = Link::new(config, 0, spec.index as u64 + 1, now());
    let connector = tokio_rustls::TlsConnector::from(spec.client.clone());
    let name = ServerName::try_from("localhost").expect("a valid name");
    let mut seq = 0u64;
    let mut buf = vec![0u8; 32 << 10];
    let mut seen_generation = commands.borrow().drop_generation;
    // Telemetry ticks at the commanded rate, phased by the edge's index.
    let mut next_telemetry: Option<tokio::time::Instant> = None;
    loop {
        if commands.borrow().stop {
            return;
        }
        if !link.poll_connect(now()) {
            let at = link.poll_timeout().unwrap_or(now() + 10);
            let wait = Duration::from_millis(at.saturating_sub(now()).max(1));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                r = commands.changed() => if r.is_err() { return },
            }
            continue;
        }
        let stream = match connect(&spec, &connector, name.clone()).await {
            Ok(s) => s,
            Err(_) => {
                stats.connect_errors.fetch_add(1, Ordering::Relaxed);
                link.handle_connect_failed(now());
                continue;
            }
        };
        stats.connects.fetch_add(1, Ordering::Relaxed);
        link.handle_connected(now());
        let (mut rd, mut wr) = tokio::io::split(stream);
        let mut up = false;
        'conn: loop {
            // Events first: they may queue acks to transmit.
            while let Some(event) = link.poll_event() {
                match event {
                    LinkEvent::Connected { .. } => {
                        up = true;
                        stats.up.fetch_add(1, Ordering::Relaxed);
                    }
                    LinkEvent::Downstream(m) => {
                        let at = now_ns();
                        match stats.receipts.get() {
                            Some(r) => r.record(spec.index, &m, at, &stats),
                            None => {
                                stats.record_downstream(at.saturating_sub(stamped_at(&m.content)))
                            }
                        }
                        if !m.header.best_effort {
                            link.handle_committed(m.header.seq);
                        }
                    }
                    LinkEvent::UpstreamAcked { seq } => {
                        stats.upstream_acked_max(spec.index, seq);
                    }
                    LinkEvent::Disconnected { .. } => {}
                }
            }
            while let Some(t) = link.poll_transmit(now()) {
                if !t.bytes.is_empty() && wr.write_all(&t.bytes).await.is_err() {
                    link.handle_disconnected(now());
                    break 'conn;
                }
                if t.close {
                    let _ = wr.shutdown().await;
                    break 'conn;
                }
            }
            let rate = commands.borrow().upstream_rate;
            if rate > 0.0 && up && next_telemetry.is_none() {
                let period = Duration::from_secs_f64(1.0 / rate);
                let phase = period.mul_f64((spec.index % 1000) as f64 / 1000.0);
                next_telemetry = Some(tokio::time::Instant::now() + phase);
            }
            let timer_at = link.poll_timeout().map_or(Duration::from_secs(3600), |at| {
                Duration::from_millis(at.saturating_sub(now()))
            });
            let telemetry_at = next_telemetry;
            let wake = tokio::select! {
                r = rd.read(&mut buf) => Wake::Read(r),
                _ = tokio::time::sleep(timer_at) => Wake::Timer,
                r = commands.changed() => { if r.is_err() { return } Wake::Command }
                _ = sleep_until(telemetry_at) => Wake::Telemetry,
            };
            match wake {
                Wake::Read(Ok(0)) | Wake::Read(Err(_)) => {
                    link.handle_disconnected(now());
                    break 'conn;
                }
                Wake::Read(Ok(n)) => link.handle_bytes(&buf[..n], now()),
                Wake::Timer => link.handle_timeout(now()),
                Wake::Command => {
                    let c = *commands.borrow();
                    if c.stop {
                        return;
                    }
                    if c.upstream_rate <= 0.0 {
                        next_telemetry = None;
                    }
                    if c.drop_generation != seen_generation {
                        seen_generation = c.drop_generation;
                        link.handle_disconnected(now());
                        break 'conn;
                    }
                }
                Wake::Telemetry => {
                    seq += 1;
                    link.handle_outbox(seq, telemetry(&spec, seq));
                    stats.upstream_sent.fetch_add(1, Ordering::Relaxed);
                    let rate = commands.borrow().upstream_rate;
                    next_telemetry = (rate > 0.0)
                        .then(|| tokio::time::Instant::now() + Duration::from_secs_f64(1.0 / rate));
                }
            }
        }
        if up {
            stats.up.fetch_sub(1, Ordering::Relaxed);
        }
        next_telemetry = None;
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn connect(
    spec: &EdgeSpec,
    connector: &tokio_rustls::TlsConnector,
    name: ServerName<'static>,
) -> std::io::Result<Box<dyn Transport>> {
    let socket = match spec.source {
        IpAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        IpAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.bind(SocketAddr::new(spec.source, 0))?;
    let tcp = socket.connect(spec.hub).await?;
    tcp.set_nodelay(true)?;
    if spec.plaintext {
        return Ok(Box::new(tcp));
    }
    Ok(Box::new(connector.connect(name, tcp).await?))
}

fn telemetry(spec: &EdgeSpec, seq: u64) -> Message {
    Message {
        header: Header {
            id: format!("{}/{seq}", spec.node),
            ..Header::default()
        },
        route: Route {
            source: "edged".into(),
            group: "resource".into(),
            operation: "update".into(),
            resource: format!("default/nodestatus/{}", spec.node),
            ..Route::default()
        },
        content: stamp(spec.payload),
    }
}
