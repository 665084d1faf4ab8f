//! The tasks of one shard's executor: listeners, hand-offs from other
//! shards, the control ring, timers, and the graceful shutdown.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use glommio::channels::shared_channel::{ConnectedSender, SharedReceiver, SharedSender};
use glommio::net::TcpListener;
use glommio::{Task, spawn_local};

use crate::config::Config;
use crate::conn::{self, Accepted, Handoff};
use crate::metrics::ShardMetrics;
use crate::shard::Shard;
use crate::tls::Session;

/// Records taken from the control ring per turn before other tasks run.
/// Everything taken in one turn leaves in one flush, so a larger turn means
/// more messages per node per send: 1,024 gave 40k msg per hub CPU-second
/// in `fleetbench downstream --nodes 5000 --objects 40`, 16,384 gave 118k
/// (a turn of 16k records is about 10 ms of work).
const RING_BATCH: usize = 16384;
/// Longest sleep of the timer loop (and so the latency of a shutdown).
const TICK: Duration = Duration::from_millis(50);

/// Everything one shard's executor starts with; built on the main thread.
#[derive(Debug)]
pub struct ShardSetup {
    pub index: usize,
    pub count: usize,
    pub config: Arc<Config>,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub tls_addr: Option<SocketAddr>,
    pub plain_addr: Option<SocketAddr>,
    /// Senders to every other shard (`None` at this shard's own index).
    pub to_peers: Vec<Option<SharedSender<Handoff>>>,
    pub from_peers: Vec<SharedReceiver<Handoff>>,
    pub rings: shm::RingFile,
    pub metrics: Arc<[ShardMetrics]>,
    pub stop: Arc<AtomicBool>,
    /// Told once the listeners are bound (or why they could not be).
    pub ready: std::sync::mpsc::Sender<Result<(), String>>,
}

type Peers = Rc<Vec<Option<ConnectedSender<Handoff>>>>;

/// The shard's life, from binding its listeners to the end of its shutdown.
pub async fn run(setup: ShardSetup) {
    let config = setup.config.clone();
    let index = setup.index;
    let bind = |addr: Option<SocketAddr>| addr.map(TcpListener::bind).transpose();
    let (tls_listener, plain_listener) = match (bind(setup.tls_addr), bind(setup.plain_addr)) {
        (Ok(t), Ok(p)) => (t, p),
        (Err(e), _) | (_, Err(e)) => {
            let _ = setup
                .ready
                .send(Err(format!("shard {index}: cannot listen: {e}")));
            return;
        }
    };
    let shard = Rc::new(RefCell::new(Shard::new(
        index,
        setup.count,
        config.hub_config(),
        setup.rings,
        config.rings.backlog_bytes,
        config.links.read_buffer_bytes,
        setup.metrics.clone(),
    )));
    shard.borrow_mut().write_timeout = config.write_timeout();

    let mut tasks: Vec<Task<()>> = Vec::new();
    for rx in setup.from_peers {
        tasks.push(spawn_local(receive_handoffs(shard.clone(), rx)));
    }
    let mut peers = Vec::new();
    for tx in setup.to_peers {
        peers.push(match tx {
            Some(tx) => Some(tx.connect().await),
            None => None,
        });
    }
    let peers: Peers = Rc::new(peers);
    if let (Some(listener), Some(tls)) = (tls_listener, setup.tls) {
        tasks.push(spawn_local(accept(
            shard.clone(),
            listener,
            Some(tls),
            peers.clone(),
        )));
    }
    if let Some(listener) = plain_listener {
        tasks.push(spawn_local(accept(shard.clone(), listener, None, peers)));
    }
    let ring_task = spawn_local(consume_ring(shard.clone(), setup.stop.clone()));
    setup.metrics[index].running.store(true, Ordering::Relaxed);
    let _ = setup.ready.send(Ok(()));
    tracing::info!(shard = index, "running");

    let mut gauges_at = Instant::now();
    while !setup.stop.load(Ordering::Relaxed) {
        let wait = {
            let s = shard.borrow();
            let now = s.now();
            s.hub
                .poll_timeout()
                .map_or(TICK, |at| Duration::from_millis(at.saturating_sub(now)))
                .min(TICK)
        };
        glommio::timer::sleep(wait).await;
        let gauges = gauges_at.elapsed() >= Duration::from_secs(1);
        if gauges {
            gauges_at = Instant::now();
        }
        shard.borrow_mut().handle_tick(gauges);
    }

    // Graceful shutdown: stop accepting, tell every edge to come back later,
    // let the connections write that, and hand the ring what is pending.
    setup.metrics[index].running.store(false, Ordering::Relaxed);
    drop(tasks);
    tracing::info!(shard = index, "shutting down");
    let retry_after = u32::try_from(config.shutdown_retry_after * 1000).unwrap_or(u32::MAX);
    {
        let mut s = shard.borrow_mut();
        s.hub.handle_shutdown(retry_after);
        s.flush();
    }
    let deadline = Instant::now() + Duration::from_secs(config.shutdown_grace);
    loop {
        let done = {
            let mut s = shard.borrow_mut();
            let drained = s.push_backlog();
            drained && s.conns.is_empty()
        };
        if done || Instant::now() >= deadline {
            break;
        }
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
    drop(ring_task);
    let s = shard.borrow();
    tracing::info!(shard = index, open = s.conns.len(), "stopped");
}

/// Accepts connections, completes their handshakes here, and routes each
/// to the shard that owns its node. `tls` is `None` on the plaintext port.
async fn accept(
    shard: Rc<RefCell<Shard>>,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    peers: Peers,
) {
    loop {
        let stream = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Out of descriptors and similar: say so and let some close.
                tracing::warn!("accept: {e}");
                glommio::timer::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (shard, tls, peers) = (shard.clone(), tls.clone(), peers.clone());
        spawn_local(async move { handshake(shard, stream, tls, peers).await }).detach();
    }
}

async fn handshake(
    shard: Rc<RefCell<Shard>>,
    mut stream: glommio::net::TcpStream,
    tls: Option<Arc<rustls::ServerConfig>>,
    peers: Peers,
) {
    let (deadline, write_timeout, max_frame) = {
        let s = shard.borrow();
        let c = s.hub.config();
        (
            Duration::from_millis(c.handshake_timeout_ms),
            s.write_timeout,
            c.max_frame_bytes,
        )
    };
    conn::prepare(&stream, write_timeout);
    let accepted = match tls {
        Some(config) => match Session::tls(config) {
            Ok(session) => conn::tls_handshake(&mut stream, session, deadline).await,
            Err(e) => Err(e.into()),
        },
        None => conn::plain_handshake(&mut stream, deadline, max_frame)
            .await
            .map(|(node, early)| Accepted {
                session: Session::Plain,
                // Not a Hello: the hub of this shard refuses it.
                node: node.unwrap_or_default(),
                tls: false,
                early,
            }),
    };
    let accepted = match accepted {
        Ok(a) => a,
        Err(e) => {
            tracing::debug!("handshake failed: {e}");
            ShardMetrics::add(&shard.borrow().m().handshake_failures, 1);
            return;
        }
    };
    let Some((owner, handoff)) = conn::route(&shard, stream, accepted) else {
        return;
    };
    ShardMetrics::add(&shard.borrow().m().handoffs_out, 1);
    if let Some(tx) = &peers[owner]
        && tx.send(handoff).await.is_err()
    {
        tracing::warn!(shard = owner, "hand-off refused: shard stopped");
    }
}

async fn receive_handoffs(shard: Rc<RefCell<Shard>>, rx: SharedReceiver<Handoff>) {
    let rx = rx.connect().await;
    while let Some(handoff) = rx.recv().await {
        ShardMetrics::add(&shard.borrow().m().handoffs_in, 1);
        let stream = crate::fd::attach(handoff.fd);
        let write_timeout = shard.borrow().write_timeout;
        conn::prepare(&stream, write_timeout);
        conn::start(&shard, stream, handoff.accepted);
    }
}

/// Takes downstream records from the control ring; sleeps in a blocking
/// thread on the ring's futex while it is empty.
async fn consume_ring(shard: Rc<RefCell<Shard>>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        let taken = shard.borrow_mut().handle_ring(RING_BATCH);
        match taken {
            Ok(RING_BATCH) => glommio::yield_if_needed().await,
            Ok(_) => {
                let waiter = shard.borrow().rings().waiter();
                glommio::executor()
                    .spawn_blocking(move || waiter.wait_inbound(TICK))
                    .await;
            }
            Err(e) => {
                tracing::error!(shard = shard.borrow().index, "control ring: {e}");
                glommio::timer::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
