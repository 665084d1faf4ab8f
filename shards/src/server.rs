//! Starting and stopping the process: limits, TLS, listeners, ring files,
//! one executor per shard, the hand-off channels between them, and the
//! metrics endpoint.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use glommio::channels::shared_channel;
use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement};

use crate::config::Config;
use crate::limits::{self, Limits};
use crate::metrics::ShardMetrics;
use crate::tasks::{self, ShardSetup};
use crate::tls;

/// Why the hub could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Limits(#[from] limits::LimitsError),
    #[error(transparent)]
    Tls(#[from] tls::TlsConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("ring file: {0}")]
    Ring(#[from] shm::OpenError),
    #[error("cannot create the ring directory {dir}: {source}")]
    RingDir {
        dir: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("shard {index} did not start: {detail}")]
    Shard { index: usize, detail: String },
}

/// A running hub.
#[derive(Debug)]
pub struct Running {
    /// Where the TLS and plaintext listeners and the metrics endpoint are.
    pub tls_addr: Option<SocketAddr>,
    pub plain_addr: Option<SocketAddr>,
    pub metrics_addr: SocketAddr,
    /// Set to begin a graceful shutdown.
    pub stop: Arc<AtomicBool>,
    executors: Vec<ExecutorJoinHandle<()>>,
    http: std::thread::JoinHandle<()>,
}

impl Running {
    /// Waits for every shard to finish its shutdown.
    pub fn wait(self) {
        for (i, handle) in self.executors.into_iter().enumerate() {
            if let Err(e) = handle.join() {
                tracing::error!(shard = i, "executor failed: {e}");
            }
        }
        self.stop.store(true, Ordering::Relaxed);
        self.http.thread().unpark();
        let _ = self.http.join();
    }
}

/// A socket bound to a port with SO_REUSEPORT and not listening: it turns
/// port 0 into a concrete port for all shards and takes no connections.
fn reserve(addr: SocketAddr) -> Result<(socket2::Socket, SocketAddr), StartError> {
    let listen = |source| StartError::Listen { addr, source };
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )
    .map_err(listen)?;
    socket.set_reuse_port(true).map_err(listen)?;
    socket.bind(&addr.into()).map_err(listen)?;
    let bound = socket
        .local_addr()
        .map_err(listen)?
        .as_socket()
        .unwrap_or(addr);
    Ok((socket, bound))
}

/// Starts the hub; `stop` ends it gracefully.
pub fn start(config: Config, stop: Arc<AtomicBool>) -> Result<Running, StartError> {
    let count = config.shard_count();
    let host = Limits::read();
    let plan = limits::plan(&host, count, config.shards.io_memory, config.node_limit)?;
    if let Some(to) = plan.raise_nofile_to
        && let Err(e) = host.raise_nofile(to)
    {
        tracing::warn!("could not raise the open-files limit to {to}: {e}");
    }
    for warning in &plan.warnings {
        tracing::warn!("{warning}");
    }
    let tls = match (
        &config.tls_ca_file,
        &config.tls_cert_file,
        &config.tls_private_key_file,
    ) {
        (Some(ca), Some(cert), Some(key)) => Some(tls::server_config(ca, cert, key)?),
        _ => None,
    };
    let tls_reserved = match tls {
        Some(_) => Some(reserve(SocketAddr::new(config.address, config.port))?),
        None => None,
    };
    let plain_reserved = match config.plaintext {
        true => Some(reserve(SocketAddr::new(
            config.address,
            config.plaintext_port,
        ))?),
        false => None,
    };
    let tls_addr = tls_reserved.as_ref().map(|r| r.1);
    let plain_addr = plain_reserved.as_ref().map(|r| r.1);

    std::fs::create_dir_all(&config.rings.dir).map_err(|source| StartError::RingDir {
        dir: config.rings.dir.clone(),
        source,
    })?;
    let metrics: Arc<[ShardMetrics]> = (0..count).map(|_| ShardMetrics::default()).collect();
    // Hand-off channels: one per ordered pair of shards.
    let mut to_peers: Vec<Vec<Option<_>>> = (0..count).map(|_| Vec::new()).collect();
    let mut from_peers: Vec<Vec<_>> = (0..count).map(|_| Vec::new()).collect();
    for (from, senders) in to_peers.iter_mut().enumerate() {
        for (to, receivers) in from_peers.iter_mut().enumerate() {
            if from == to {
                senders.push(None);
            } else {
                let (tx, rx) = shared_channel::new_bounded(config.shards.handoff_depth);
                senders.push(Some(tx));
                receivers.push(rx);
            }
        }
    }
    let config = Arc::new(config);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let mut executors = Vec::new();
    for (index, (to_peers, from_peers)) in to_peers.into_iter().zip(from_peers).enumerate() {
        let path = shm::ring_path(&config.rings.dir, index);
        let rings = shm::RingFile::open(&path, config.ring_size(), shm::Role::Shard)?;
        rings.log_opened();
        let setup = ShardSetup {
            index,
            count,
            config: config.clone(),
            tls: tls.clone(),
            tls_addr,
            plain_addr,
            to_peers,
            from_peers,
            rings,
            metrics: metrics.clone(),
            stop: stop.clone(),
            ready: ready_tx.clone(),
        };
        let placement = match config.shards.cpus.get(index) {
            Some(&cpu) => Placement::Fixed(cpu),
            None => Placement::Unbound,
        };
        let handle = LocalExecutorBuilder::new(placement)
            .name(&format!("shard-{index}"))
            .io_memory(plan.io_memory)
            .ring_depth(config.shards.ring_depth)
            .spawn(move || tasks::run(setup))
            .map_err(|e| StartError::Shard {
                index,
                detail: e.to_string(),
            })?;
        executors.push(handle);
    }
    drop(ready_tx);
    for index in 0..count {
        let failed = |detail: String| {
            stop.store(true, Ordering::Relaxed);
            StartError::Shard { index, detail }
        };
        match ready_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(())) => {}
            Ok(Err(detail)) => return Err(failed(detail)),
            Err(_) => return Err(failed("no answer within 30 s".into())),
        }
    }
    // Every shard listens now; the reservations can go.
    drop((tls_reserved, plain_reserved));

    let address = config.metrics.address;
    let listener = std::net::TcpListener::bind(address).map_err(|source| StartError::Listen {
        addr: address,
        source,
    })?;
    let metrics_addr = listener.local_addr().unwrap_or(address);
    let http_stop = stop.clone();
    let http = std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || crate::http::serve(listener, metrics, http_stop))
        .map_err(|source| StartError::Listen {
            addr: address,
            source,
        })?;
    Ok(Running {
        tls_addr,
        plain_addr,
        metrics_addr,
        stop,
        executors,
        http,
    })
}
