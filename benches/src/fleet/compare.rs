//! `fleetbench compare`: one point-to-point workload — N nodes, each
//! receiving its own M messages of 256 bytes — through Apiary and through
//! the brokers a user would otherwise pick, each in its best documented
//! configuration for this workload, side by side.
//!
//! - Apiary: the `downstream` scenario (TLS, windowed, acknowledged after
//!   the edge commits).
//! - mosquitto (Debian's package, started here): one topic per node, QoS 1,
//!   unlimited in-flight and a deep queue per client, no persistence, TCP
//!   no-delay — mosquitto.conf's knobs for throughput.
//! - rumqttd, embedded in this process: one topic per node, QoS 1, the
//!   segment sizes of its sample config, no delay between accepted
//!   connections.
//! - nats-server (Debian's package, started here): one subject per node,
//!   core NATS (at most once: no acknowledgement, unlike the others), a
//!   minimal client written here for the text protocol.
//!
//! The MQTT clients are rumqttc, one connection per node; publishers are
//! four connections. Peers run plaintext on loopback; Apiary runs TLS.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

use super::hub::cpu_seconds;
use super::stats::{Latency, now_ns, stamp, stamped_at};
use super::{Options, Scenario};

/// One system's figures.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PeerResult {
    pub system: String,
    pub config: String,
    pub messages: u64,
    pub lost: u64,
    pub seconds: f64,
    pub per_second: f64,
    /// CPU seconds of the broker process, when it is a process of its own.
    pub broker_cpu_seconds: Option<f64>,
    pub latency: Latency,
}

struct Counter {
    received: AtomicU64,
    latency: std::sync::Mutex<Histogram<u64>>,
}

impl Counter {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            received: AtomicU64::new(0),
            latency: std::sync::Mutex::new(
                Histogram::new_with_bounds(1, 100_000_000, 3).expect("valid bounds"),
            ),
        })
    }

    fn record(&self, payload: &[u8]) {
        let us = (now_ns().saturating_sub(stamped_at(payload)) / 1000).clamp(1, 100_000_000);
        let _ = self
            .latency
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(us);
        self.received.fetch_add(1, Ordering::Relaxed);
    }

    fn latency(&self) -> Latency {
        Latency::of(&self.latency.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

/// Runs the workload through every system that is available here.
pub fn run(o: &Options) -> Result<Vec<PeerResult>, String> {
    let mut results = Vec::new();
    let apiary = super::run(Scenario::Downstream, o)?;
    let d = apiary.downstream.unwrap_or_default();
    results.push(PeerResult {
        system: "apiary".into(),
        config: format!("cloudhub, {} shards, TLS 1.3 mTLS, window 256", o.shards),
        messages: d.messages,
        lost: d.lost,
        seconds: d.seconds,
        per_second: d.per_second,
        broker_cpu_seconds: Some(apiary.hub_cpu_seconds),
        latency: d.latency,
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(o.client_threads)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let dir = std::env::temp_dir().join(format!("fleetbench-peers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;

    match which("mosquitto") {
        Some(bin) => {
            let port = free_port()?;
            let conf = dir.join("mosquitto.conf");
            std::fs::write(
                &conf,
                format!(
                    "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
                     max_inflight_messages 0\nmax_queued_messages 0\nset_tcp_nodelay true\n\
                     max_connections -1\n"
                ),
            )
            .map_err(|e| e.to_string())?;
            let child = Command::new(bin)
                .arg("-c")
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("starting mosquitto: {e}"))?;
            let broker = Broker(child);
            wait_port(port)?;
            let cpu0 = broker.cpu();
            let mut r = runtime.block_on(mqtt(port, o))?;
            r.system = "mosquitto".into();
            r.config = "QoS 1, one topic per node, max_inflight_messages 0, max_queued_messages 0, persistence false, set_tcp_nodelay".into();
            r.broker_cpu_seconds = Some(broker.cpu() - cpu0);
            results.push(r);
        }
        None => eprintln!(
            "fleetbench compare: mosquitto not installed (apt-get install mosquitto): skipped"
        ),
    }

    {
        let port = free_port()?;
        let config = rumqttd_config(port, o.nodes);
        let mut broker = rumqttd::Broker::new(config);
        std::thread::spawn(move || {
            if let Err(e) = broker.start() {
                eprintln!("rumqttd: {e}");
            }
        });
        wait_port(port)?;
        let mut r = runtime.block_on(mqtt(port, o))?;
        r.system = "rumqttd (embedded)".into();
        r.config = "QoS 1, one topic per node, max_inflight_count 100, segments 100 MB x 10".into();
        results.push(r);
    }

    match which("nats-server") {
        Some(bin) => {
            let port = free_port()?;
            let child = Command::new(bin)
                .args(["-a", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("starting nats-server: {e}"))?;
            let broker = Broker(child);
            wait_port(port)?;
            let cpu0 = broker.cpu();
            let mut r = runtime.block_on(nats(port, o))?;
            r.broker_cpu_seconds = Some(broker.cpu() - cpu0);
            results.push(r);
        }
        None => eprintln!(
            "fleetbench compare: nats-server not installed (apt-get install nats-server): skipped"
        ),
    }
    let _ = std::fs::remove_dir_all(&dir);
    runtime.shutdown_timeout(Duration::from_secs(2));
    Ok(results)
}

/// The table of results with ratios to Apiary.
pub fn markdown(results: &[PeerResult]) -> String {
    let base = results.first().map_or(1.0, |r| r.per_second.max(1e-9));
    let mut out = String::from(
        "| system | msg/s | vs apiary | p50 µs | p99 µs | max µs | lost | broker CPU s | configuration |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in results {
        out.push_str(&format!(
            "| {} | {:.0} | {:.2}× | {} | {} | {} | {} | {} | {} |\n",
            r.system,
            r.per_second,
            r.per_second / base,
            r.latency.p50_us,
            r.latency.p99_us,
            r.latency.max_us,
            r.lost,
            r.broker_cpu_seconds
                .map_or("in process".into(), |c| format!("{c:.2}")),
            r.config
        ));
    }
    out
}

struct Broker(Child);

impl Broker {
    fn cpu(&self) -> f64 {
        cpu_seconds(&format!("/proc/{}/stat", self.0.id()))
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(name))
        .find(|p| p.exists())
}

fn wait_port(port: u16) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() >= deadline {
            return Err(format!("nothing listens on port {port}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn rumqttd_config(port: u16, nodes: usize) -> rumqttd::Config {
    let connections = rumqttd::ConnectionSettings {
        connection_timeout_ms: 60_000,
        max_payload_size: 20_480,
        max_inflight_count: 100,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    let server = rumqttd::ServerSettings {
        name: "v4".into(),
        listen: SocketAddr::from(([127, 0, 0, 1], port)),
        tls: None,
        next_connection_delay_ms: 0,
        connections,
    };
    rumqttd::Config {
        id: 0,
        router: rumqttd::RouterConfig {
            max_connections: nodes + 100,
            max_outgoing_packet_count: 200,
            max_segment_size: 100 << 20,
            max_segment_count: 10,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        },
        v4: Some([("1".to_owned(), server)].into_iter().collect()),
        v5: None,
        ws: None,
        cluster: None,
        console: None,
        bridge: None,
        prometheus: None,
        metrics: None,
    }
}

/// N subscribers, one topic each, and four publishers, QoS 1.
async fn mqtt(port: u16, o: &Options) -> Result<PeerResult, String> {
    let counter = Counter::new();
    let (subscribed_tx, mut subscribed_rx) = tokio::sync::mpsc::channel::<()>(o.nodes);
    let mut tasks = Vec::new();
    for i in 0..o.nodes {
        let mut options = MqttOptions::new(format!("node-{i:06}"), "127.0.0.1", port);
        options
            .set_keep_alive(Duration::from_secs(60))
            .set_inflight(100);
        let (client, mut events) = AsyncClient::new(options, 16);
        let counter = counter.clone();
        let subscribed = subscribed_tx.clone();
        tasks.push(tokio::spawn(async move {
            let _ = client
                .subscribe(format!("nodes/{i}"), QoS::AtLeastOnce)
                .await;
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = subscribed.send(()).await;
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => counter.record(&p.payload),
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        }));
    }
    for _ in 0..o.nodes {
        tokio::time::timeout(Duration::from_secs(120), subscribed_rx.recv())
            .await
            .map_err(|_| "MQTT subscribers did not all subscribe within 120 s".to_owned())?;
    }
    let total = o.objects * o.nodes as u64;
    let started = Instant::now();
    let publishers = 4.min(o.nodes);
    for p in 0..publishers {
        let mut options = MqttOptions::new(format!("publisher-{p}"), "127.0.0.1", port);
        options
            .set_keep_alive(Duration::from_secs(60))
            .set_inflight(100);
        let (client, mut events) = AsyncClient::new(options, 1024);
        tasks.push(tokio::spawn(async move {
            loop {
                if events.poll().await.is_err() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }));
        let (nodes, objects, payload) = (o.nodes, o.objects, o.payload);
        tasks.push(tokio::spawn(async move {
            for _ in 0..objects {
                for i in (p..nodes).step_by(publishers) {
                    let _ = client
                        .publish(
                            format!("nodes/{i}"),
                            QoS::AtLeastOnce,
                            false,
                            stamp(payload),
                        )
                        .await;
                }
            }
        }));
    }
    let seconds = wait_received(&counter, total, started).await;
    for t in tasks {
        t.abort();
    }
    Ok(result(&counter, total, seconds))
}

/// Waits until `total` arrived, or 10 s pass with no progress.
async fn wait_received(counter: &Counter, total: u64, started: Instant) -> f64 {
    let mut last = (0, Instant::now());
    loop {
        let got = counter.received.load(Ordering::Relaxed);
        if got >= total {
            return started.elapsed().as_secs_f64();
        }
        if got != last.0 {
            last = (got, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(10) {
            return last.1.duration_since(started).as_secs_f64();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn result(counter: &Counter, total: u64, seconds: f64) -> PeerResult {
    let got = counter.received.load(Ordering::Relaxed);
    PeerResult {
        system: String::new(),
        config: String::new(),
        messages: got,
        lost: total.saturating_sub(got),
        seconds,
        per_second: got as f64 / seconds.max(1e-9),
        broker_cpu_seconds: None,
        latency: counter.latency(),
    }
}

/// N subscriber connections, one subject each, and four publishers, core
/// NATS over its text protocol.
async fn nats(port: u16, o: &Options) -> Result<PeerResult, String> {
    let counter = Counter::new();
    let mut tasks = Vec::new();
    let connect = || async move {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| e.to_string())?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let mut stream = tokio::io::BufReader::new(stream);
        let mut info = String::new();
        stream
            .read_line(&mut info)
            .await
            .map_err(|e| e.to_string())?;
        stream
            .get_mut()
            .write_all(b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\n")
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(stream)
    };
    for i in 0..o.nodes {
        let mut stream = connect().await?;
        stream
            .get_mut()
            .write_all(format!("SUB nodes.{i} 1\r\nPING\r\n").as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        // PONG: the subscription is registered.
        let mut line = String::new();
        loop {
            line.clear();
            stream
                .read_line(&mut line)
                .await
                .map_err(|e| e.to_string())?;
            if line.starts_with("PONG") || line.is_empty() {
                break;
            }
        }
        let counter = counter.clone();
        tasks.push(tokio::spawn(async move {
            let mut line = String::new();
            let mut payload = Vec::new();
            loop {
                line.clear();
                match stream.read_line(&mut line).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                if line.starts_with("PING") {
                    let _ = stream.get_mut().write_all(b"PONG\r\n").await;
                    continue;
                }
                let Some(size) = line
                    .strip_prefix("MSG ")
                    .and_then(|l| l.split_whitespace().last())
                    .and_then(|s| s.parse::<usize>().ok())
                else {
                    continue;
                };
                payload.resize(size + 2, 0);
                if stream.read_exact(&mut payload).await.is_err() {
                    return;
                }
                counter.record(&payload[..size]);
            }
        }));
    }
    let total = o.objects * o.nodes as u64;
    let started = Instant::now();
    let publishers = 4.min(o.nodes);
    for p in 0..publishers {
        let mut stream = connect().await?;
        let (nodes, objects, payload) = (o.nodes, o.objects, o.payload);
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::with_capacity(64 << 10);
            for _ in 0..objects {
                for i in (p..nodes).step_by(publishers) {
                    let body = stamp(payload);
                    out.extend_from_slice(format!("PUB nodes.{i} {}\r\n", body.len()).as_bytes());
                    out.extend_from_slice(&body);
                    out.extend_from_slice(b"\r\n");
                    if out.len() >= 32 << 10 {
                        if stream.get_mut().write_all(&out).await.is_err() {
                            return;
                        }
                        out.clear();
                    }
                }
            }
            let _ = stream.get_mut().write_all(&out).await;
            // Keep the connection open until the run ends.
            let mut sink = String::new();
            while matches!(stream.read_line(&mut sink).await, Ok(n) if n > 0) {
                if sink.starts_with("PING") {
                    let _ = stream.get_mut().write_all(b"PONG\r\n").await;
                }
                sink.clear();
            }
        }));
    }
    let seconds = wait_received(&counter, total, started).await;
    for t in tasks {
        t.abort();
    }
    let mut r = result(&counter, total, seconds);
    r.system = "nats-server".into();
    r.config = "core NATS (at most once), one subject per node, default server settings".into();
    Ok(r)
}
