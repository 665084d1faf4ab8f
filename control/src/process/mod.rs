//! The process: [`Process::open`] opens its parts (the PKI and bootstrap
//! endpoint, the store, the rings, the source of desired state, the status
//! outputs), then [`run`]'s loop feeds the [`Control`] core from the
//! source, the shards' rings and a timer, and carries out its effects in
//! order. Checkpoint writes run on a blocking thread, so they never stall
//! the bootstrap endpoint or the watch streams; the loop itself waits for
//! them, as a `Committed` record may only follow a durable write.
//!
//! The glue of everything else in the crate; nothing imports it.

pub mod rings;
pub mod waiters;

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use clock::unix_ms;

use crate::checkpoint::nodesync::load_checkpoints;
use crate::checkpoint::{Store, StoreError};
use crate::config::ControlConfig;
use crate::core::checkpoints::{CheckpointWrites, Checkpoints};
use crate::core::{Control, Effect};
use crate::desired::{Source, SourceError};
use crate::observed::Observed;
use crate::observed::status::StatusDir;
use crate::pki::bootstrap::{self, Bootstrap};
use crate::pki::{self, PkiError};

use self::rings::{Rings, RingsError};
use self::waiters::{RingWaiters, Wake};

/// Why the process could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("no source of desired state: give --manifests DIR, or --kube with a kubeconfig")]
    NoSource,
    #[error("Kubernetes client: {0}")]
    Kube(#[from] ::kube::Error),
    #[error("data dir {dir}: {source}")]
    DataDir { dir: String, source: std::io::Error },
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("rings: {0}")]
    Rings(#[from] RingsError),
    #[error("{addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("desired state: {0}")]
    Source(#[from] SourceError),
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("checkpoint writer: {0}")]
    Writer(#[from] tokio::task::JoinError),
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> RunError {
    move |source| RunError::Io { what, source }
}

/// Records read from a ring per batch.
const BATCH: usize = 1024;
/// How often the core's timer runs (batched checkpoint writes).
const TICK: Duration = Duration::from_millis(20);

/// Runs until SIGINT or SIGTERM.
pub async fn run(cfg: ControlConfig) -> Result<(), RunError> {
    let mut p = Process::open(&cfg).await?;
    p.start().await?;
    println!(
        "cloudcontrol ready certs={} shards={}",
        p.cert_addr, cfg.shards
    );
    let _ = std::io::stdout().flush();
    tracing::info!(manifests = ?cfg.manifests, kube = cfg.kube, ring_dir = %cfg.ring_dir.display(), "started");
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(io("signal"))?;
    loop {
        tokio::select! {
            wake = p.waiters.next() => {
                if let Wake::Inbound(shard) = wake {
                    p.read_ring(shard).await?;
                }
            }
            desired = p.source.next_desired() => p.desired(desired?),
            _ = tick.tick() => p.control.handle_tick(unix_ms()),
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        }
        p.carry_out().await?;
    }
    p.control.handle_shutdown();
    p.carry_out().await?;
    p.waiters.close();
    tracing::info!("stopped");
    Ok(())
}

/// The parts of a running cloudcontrol; see the module doc.
#[derive(Debug)]
pub struct Process {
    control: Control,
    source: Source,
    rings: Rings,
    waiters: RingWaiters,
    store: Store,
    observed: Observed,
    boot: Arc<Bootstrap>,
    cert_addr: std::net::SocketAddr,
}

impl Process {
    /// Opens every part and starts the bootstrap endpoint and the source.
    pub async fn open(cfg: &ControlConfig) -> Result<Process, RunError> {
        if cfg.manifests.is_none() && !cfg.kube {
            return Err(RunError::NoSource);
        }
        let kube = match cfg.kube {
            true => Some(::kube::Client::try_default().await?),
            false => None,
        };
        std::fs::create_dir_all(&cfg.data_dir).map_err(|source| RunError::DataDir {
            dir: cfg.data_dir.display().to_string(),
            source,
        })?;
        let (boot, acceptor) = pki::open(
            &cfg.data_dir,
            &cfg.advertise_address,
            cfg.edge_cert_validity_days,
        )?;
        let store = Store::open(&cfg.data_dir.join("store"))?;
        let checkpoints = checkpoints(&store, kube.as_ref()).await?;
        let rings = Rings::open(&cfg.ring_dir, cfg.shards, cfg.ring_size())?;
        let waiters = RingWaiters::start(&rings).map_err(io("ring threads"))?;
        let listener = tokio::net::TcpListener::bind(&cfg.cert_address)
            .await
            .map_err(|source| RunError::Bind {
                addr: cfg.cert_address.clone(),
                source,
            })?;
        let cert_addr = listener.local_addr().map_err(io("bind"))?;
        tokio::spawn(bootstrap::serve(listener, acceptor, boot.clone()));
        let poll = Duration::from_millis(cfg.poll_interval_ms);
        let source = match (&kube, &cfg.manifests) {
            (Some(client), _) => Source::kube(client.clone()),
            (None, Some(dir)) => Source::manifests(dir, store.clone(), poll)?,
            (None, None) => return Err(RunError::NoSource),
        };
        let mut control = Control::new(cfg.shards, checkpoints);
        control.report_checkpoints(kube.is_some());
        let observed = Observed::new(StatusDir::new(&cfg.status_dir()), kube);
        Ok(Process {
            control,
            source,
            rings,
            waiters,
            store,
            observed,
            boot,
            cert_addr,
        })
    }

    /// Takes the first desired state and puts what nodes have not
    /// acknowledged into the rings.
    async fn start(&mut self) -> Result<(), RunError> {
        tracing::info!("waiting for the first desired state");
        let desired = self.source.next_desired().await?;
        self.desired(desired);
        self.carry_out().await
    }

    fn desired(&mut self, desired: crate::core::plan::Desired) {
        self.control.handle_desired(desired, unix_ms());
        *self.boot.nodes.write().unwrap_or_else(|p| p.into_inner()) = self.control.edge_nodes();
    }

    /// Takes what `shard` wrote, batch by batch: each batch is released
    /// once its effects are carried out.
    async fn read_ring(&mut self, shard: usize) -> Result<(), RunError> {
        loop {
            let (records, cursor) = self.rings.read_batch(shard, BATCH)?;
            let Some(cursor) = cursor else { break };
            self.control.handle_records(records, unix_ms());
            self.carry_out().await?;
            self.rings.release(shard, cursor)?;
        }
        self.waiters.rearm(shard);
        Ok(())
    }

    /// Carries out the core's effects, in order.
    async fn carry_out(&mut self) -> Result<(), RunError> {
        while let Some(effect) = self.control.poll_effect() {
            match effect {
                Effect::Send { shard, record } => self.rings.push(shard, &record),
                Effect::Persist(writes) => {
                    // What was pushed goes on while the write is made.
                    self.rings.wake();
                    persist(&self.store, writes).await?
                }
                Effect::Status { node, change } => self.observed.apply(&node, change),
                Effect::NodeAssigned(node) => self.observed.node_assigned(&node),
            }
        }
        self.waiters.push_pending(&mut self.rings);
        self.rings.wake();
        Ok(())
    }
}

/// Writes `writes` durably on a blocking thread.
async fn persist(store: &Store, writes: CheckpointWrites) -> Result<(), RunError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || store.write(&writes)).await??;
    Ok(())
}

/// The local store's checkpoints; in Kubernetes mode merged with the
/// NodeSync copies (for a store that is new or behind), durably.
async fn checkpoints(
    store: &Store,
    kube: Option<&::kube::Client>,
) -> Result<Checkpoints, RunError> {
    let mut checkpoints = store.load()?;
    let Some(client) = kube else {
        return Ok(checkpoints);
    };
    match load_checkpoints(client).await {
        Ok(loaded) => {
            for c in &loaded {
                checkpoints.import(&c.node, &c.checkpoint);
            }
            persist(store, checkpoints.take_writes()).await?;
            tracing::info!(
                nodes = loaded.len(),
                "checkpoints read from NodeSync objects"
            );
        }
        Err(e) => tracing::warn!("NodeSync checkpoints not read ({e}): the local store only"),
    }
    Ok(checkpoints)
}
