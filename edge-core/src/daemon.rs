//! `edgecore run`: the loop of the one monoio thread.
//!
//! It owns the `Link` state machine and the store. Received bytes go to the
//! link; every downstream message they produce, together with whatever else
//! already arrived (group commit), is applied in one durable LMDB
//! transaction that also records the resume point and removes acknowledged
//! outbox entries; only then is the link told to acknowledge. Upstream
//! messages are written to the outbox before the link may send them. The
//! MetaServer runs as tasks on the same thread and reads the same store.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use clock::unix_ms;
use futures_channel::mpsc;
use futures_lite::StreamExt as _;
use hub_core::link::{Link, LinkConfig, LinkEvent};
use schema::Message;

use crate::config::EdgeConfig;
pub use crate::hooks::{ChangeHook, EdgeHooks, Upstream};
use crate::join::{self, CertFiles};
use crate::link::{Connection, Input};
use crate::metaserver::{self, PodStatuses, Watches};
use crate::store::{Store, StoreError, random_u64};
use crate::workloads::{self, Workloads, node::NodeStatus};

/// Why the daemon stopped.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("MetaServer on {addr}: {source}")]
    MetaServer {
        addr: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    MetaServerAccess(#[from] metaserver::AccessError),
    #[error(transparent)]
    Devices(#[from] crate::devices::DevicesError),
    #[error("cannot start Edged's thread: {0}")]
    Edged(std::io::Error),
}

/// What the daemon's tasks share on its one thread.
#[derive(Debug)]
pub struct Shared {
    pub store: Store,
    /// The MetaServer's open watches, fed with every committed change.
    pub watches: Rc<RefCell<Watches>>,
    /// The pod statuses Edged reported, which the MetaServer serves.
    pub statuses: Rc<RefCell<PodStatuses>>,
    pub hooks: RefCell<EdgeHooks>,
}

/// Runs edgecore until the process ends. Memory: the system allocator; a
/// counting allocator for the memory budget would be installed as
/// `#[global_allocator]` in `main.rs`.
pub fn run(config: EdgeConfig, hooks: EdgeHooks) -> Result<(), DaemonError> {
    block_on(run_async(config, hooks)).map_err(DaemonError::Runtime)?
}

/// Runs `future` on this thread's monoio runtime: io_uring where the kernel
/// has it, epoll otherwise; `EDGECORE_IO_DRIVER=legacy` forces epoll (for
/// tests and odd kernels). Other threads (Edged's) wake the daemon through
/// wakers, which monoio delivers across threads with its `sync` feature.
pub fn block_on<F: std::future::Future>(future: F) -> std::io::Result<F::Output> {
    if std::env::var("EDGECORE_IO_DRIVER").as_deref() == Ok("legacy") {
        tracing::info!("legacy (epoll) driver");
        return Ok(monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()?
            .block_on(future));
    }
    Ok(monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .build()?
        .block_on(future))
}

async fn run_async(config: EdgeConfig, hooks: EdgeHooks) -> Result<(), DaemonError> {
    let store = Store::open(&config.database.data_source, config.database.map_size)?;
    let shared = Rc::new(Shared {
        store,
        watches: Rc::new(RefCell::new(Watches::default())),
        statuses: Rc::new(RefCell::new(PodStatuses::default())),
        hooks: RefCell::new(hooks),
    });
    let ms = &config.modules.meta_manager.meta_server;
    let metaserver = if ms.enable {
        let access = metaserver::Access::load(ms)?;
        let listener = monoio::net::TcpListener::bind(ms.server.as_str()).map_err(|source| {
            DaemonError::MetaServer {
                addr: ms.server.clone(),
                source,
            }
        })?;
        let addr = listener
            .local_addr()
            .map_or_else(|_| ms.server.clone(), |a| a.to_string());
        tracing::info!(%addr, tls = access.tls.is_some(), "MetaServer listening");
        println!("edgecore metaserver={addr}");
        Some((listener, access))
    } else {
        None
    };
    let (tx, rx) = mpsc::unbounded();
    if config.modules.event_bus.enable {
        let node = &config.modules.edged.hostname_override;
        let devices = crate::devices::Devices::start(
            &config.modules.event_bus,
            &shared.store.env,
            node,
            Upstream::new(tx.clone()),
        )?;
        shared
            .hooks
            .borrow_mut()
            .on_change
            .push(Box::new(move |changes| devices.handle_changes(changes)));
    }
    let edged = &config.modules.edged;
    let host_ip = workloads::node::host_ip(&edged.node_ip, &config.modules.edge_hub.server);
    let pods = if edged.enable {
        let w = Workloads::start(
            edged,
            &host_ip,
            shared.store.clone(),
            Upstream::new(tx.clone()),
        )
        .map_err(DaemonError::Edged)?;
        let hook = w.clone();
        shared
            .hooks
            .borrow_mut()
            .on_change
            .push(Box::new(move |changes| hook.handle_changes(changes)));
        Some(w)
    } else {
        tracing::info!("Edged is disabled: pods are stored and served, not run");
        None
    };
    if let Some((listener, access)) = metaserver {
        let source = metaserver::Source {
            access,
            log_root: edged.pod_logs_dir.clone(),
            store: shared.store.clone(),
            watches: shared.watches.clone(),
            statuses: shared.statuses.clone(),
            exec: pods.clone(),
        };
        monoio::spawn(metaserver::serve(listener, source));
    }
    let on_start = shared.hooks.borrow_mut().on_start.take();
    if let Some(on_start) = on_start {
        on_start(Upstream::new(tx.clone()));
    }
    let mut daemon = Daemon::new(config, shared, tx)?;
    daemon.pods = pods;
    daemon.host_ip = host_ip;
    daemon.run(rx).await
}

struct Daemon {
    config: EdgeConfig,
    shared: Rc<Shared>,
    link: Link,
    conn: Option<Connection>,
    generation: u64,
    inputs: mpsc::UnboundedSender<Input>,
    start: Instant,
    next_status: Option<u64>,
    renew_at_unix: Option<u64>,
    /// Edged's thread, when pods run here.
    pods: Option<Workloads>,
    /// The latest status of each pod while the link is down.
    held_statuses: std::collections::BTreeMap<String, Message>,
    node_status: NodeStatus,
    host_ip: String,
}

impl Daemon {
    fn new(
        config: EdgeConfig,
        shared: Rc<Shared>,
        inputs: mpsc::UnboundedSender<Input>,
    ) -> Result<Self, DaemonError> {
        let hub = &config.modules.edge_hub;
        let mut link_config = LinkConfig::new(config.modules.edged.hostname_override.clone());
        link_config.keepalive_interval_ms = hub.heartbeat.max(1) * 1000;
        let store_id = shared.store.store_id()?;
        link_config.store_id = store_id;
        let committed = shared.store.committed_seq()?;
        let mut link = Link::new(link_config, committed, random_u64(), 0);
        let pending = shared.store.outbox_pending()?;
        tracing::info!(
            committed,
            outbox = pending.len(),
            store_id = format_args!("{store_id:016x}"),
            "store opened"
        );
        for (seq, message) in pending {
            link.handle_outbox(seq, message);
        }
        if !config.modules.edge_hub.token.is_empty() {
            tracing::warn!(
                "the configuration holds a join token; it is not used (renewal is \
                 authenticated by the node's certificate) and can be removed"
            );
        }
        let renew_at_unix = next_renewal(&config);
        let node_status = NodeStatus::new(config.modules.edged.max_pods);
        Ok(Self {
            config,
            shared,
            link,
            conn: None,
            generation: 0,
            inputs,
            start: Instant::now(),
            next_status: None,
            renew_at_unix,
            pods: None,
            held_statuses: std::collections::BTreeMap::new(),
            node_status,
            host_ip: String::new(),
        })
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    async fn run(&mut self, mut rx: mpsc::UnboundedReceiver<Input>) -> Result<(), DaemonError> {
        loop {
            // Events of an ended connection are handled before a new one
            // opens, so they can never touch it.
            self.after_input().await?;
            if self.link.poll_connect(self.now()) {
                self.connect().await;
                self.after_input().await?;
            }
            let deadline = [self.link.poll_timeout(), self.next_status]
                .into_iter()
                .flatten()
                .min();
            let wait = deadline.map_or(Duration::from_secs(60), |at| {
                Duration::from_millis(at.saturating_sub(self.now()))
            });
            let input = monoio::select! {
                input = rx.next() => input,
                _ = monoio::time::sleep(wait) => None,
            };
            if let Some(input) = input {
                self.handle_input(input)?;
                // Group commit: take whatever else already arrived.
                while let Ok(input) = rx.try_recv() {
                    self.handle_input(input)?;
                }
            }
            // Timers are checked after every wake-up, so a busy link still
            // gets its keepalives, node status and renewal on time.
            let now = self.now();
            self.link.handle_timeout(now);
            if self.next_status.is_some_and(|at| now >= at) {
                self.queue_node_status()?;
            }
            self.maybe_renew();
        }
    }

    async fn connect(&mut self) {
        self.generation += 1;
        let hub = self.config.modules.edge_hub.clone();
        match Connection::open(&hub, self.generation, self.inputs.clone()).await {
            Ok(conn) => {
                tracing::info!(server = %hub.server, "connected");
                self.conn = Some(conn);
                self.link.handle_connected(self.now());
            }
            Err(e) => {
                tracing::warn!("cannot connect: {e}");
                self.link.handle_connect_failed(self.now());
            }
        }
    }

    fn handle_input(&mut self, input: Input) -> Result<(), DaemonError> {
        let current = self.conn.as_ref().map(|c| c.generation);
        match input {
            Input::Bytes { generation, bytes } if Some(generation) == current => {
                self.link.handle_bytes(&bytes, self.now());
            }
            Input::Lost { generation, detail } if Some(generation) == current => {
                tracing::warn!("link lost: {detail}");
                self.conn = None;
                self.link.handle_disconnected(self.now());
            }
            Input::Bytes { .. } | Input::Lost { .. } => {}
            Input::Upstream(messages) => {
                self.serve_pod_statuses(&messages);
                let messages = self.hold_pod_statuses(messages);
                self.append_outbox(messages)?;
            }
        }
        Ok(())
    }

    /// Applies what the link produced (one group commit), then transmits.
    async fn after_input(&mut self) -> Result<(), DaemonError> {
        let mut downstream = Vec::new();
        let mut acked = None;
        let mut connected = false;
        let mut ended = false;
        while let Some(event) = self.link.poll_event() {
            match event {
                LinkEvent::Downstream(m) => downstream.push(m),
                LinkEvent::UpstreamAcked { seq } => acked = Some(seq),
                LinkEvent::Connected { upstream_resume } => {
                    tracing::info!(upstream_resume, "link up");
                    connected = true;
                }
                LinkEvent::Disconnected { reason, text } => {
                    tracing::warn!(?reason, "link down: {text}");
                    ended = true;
                    self.next_status = None;
                }
            }
        }
        if !downstream.is_empty() || acked.is_some() {
            let seq = downstream
                .iter()
                .filter(|m| !m.header.best_effort)
                .map(|m| m.header.seq)
                .max()
                .unwrap_or(0);
            // A store error ends the process: the link has already counted
            // these messages as seen and would drop their resends, while a
            // restarted edgecore resumes from what is committed.
            let committed = self.shared.store.commit(&downstream, seq, acked)?;
            if seq > 0 {
                self.link.handle_committed(seq);
            }
            if !committed.changes.is_empty() {
                self.shared.watches.borrow_mut().publish(&committed.changes);
                for c in &committed.changes {
                    let key = &c.object.key;
                    if c.change == crate::store::ChangeType::Deleted
                        && key.kind == schema::kinds::POD
                    {
                        self.shared
                            .statuses
                            .borrow_mut()
                            .remove(&key.namespace, &key.name);
                    }
                }
                for hook in &self.shared.hooks.borrow().on_change {
                    hook(&committed.changes);
                }
            }
        }
        if connected {
            self.queue_node_status()?;
            let held = std::mem::take(&mut self.held_statuses);
            self.append_outbox(held.into_values().collect())?;
        }
        // The link's own `Close`, if any, goes out before the socket closes.
        self.transmit().await;
        if ended && let Some(conn) = self.conn.take() {
            conn.close().await;
        }
        Ok(())
    }

    /// Everything the link has to send, gathered into one send (one TLS
    /// record run, one syscall); then the close it asked for, if any.
    async fn transmit(&mut self) {
        loop {
            let mut bytes = Vec::new();
            let mut close = false;
            while let Some(t) = self.link.poll_transmit(self.now()) {
                bytes.extend_from_slice(&t.bytes);
                if t.close {
                    close = true;
                    break;
                }
            }
            let Some(conn) = self.conn.as_mut() else {
                return;
            };
            let sent = if bytes.is_empty() {
                Ok(())
            } else {
                conn.send(bytes).await
            };
            if close || sent.is_err() {
                if let Some(conn) = self.conn.take() {
                    conn.close().await;
                }
                if let Err(e) = sent {
                    tracing::warn!("send failed: {e}");
                    self.link.handle_disconnected(self.now());
                    continue;
                }
            }
            return;
        }
    }

    fn append_outbox(&mut self, messages: Vec<Message>) -> Result<(), DaemonError> {
        for (seq, m) in self.shared.store.outbox_append(messages, unix_ms())? {
            self.link.handle_outbox(seq, m);
        }
        Ok(())
    }

    /// While the link is down, only the latest status of each pod is kept
    /// (in memory: a restarted Edged reports every pod again), so weeks
    /// offline with a crash-looping pod do not fill the outbox; they go
    /// out when the link comes up. Everything else passes.
    fn hold_pod_statuses(&mut self, messages: Vec<Message>) -> Vec<Message> {
        if self.link.is_up() {
            return messages;
        }
        let mut pass = Vec::new();
        for m in messages {
            if m.route.source == "edged" && m.route.resource.contains("/podstatus/") {
                self.held_statuses.insert(m.route.resource.clone(), m);
            } else {
                pass.push(m);
            }
        }
        pass
    }

    /// Pod statuses on their way to the cloud are also what the local
    /// MetaServer serves, and its watches see them change.
    fn serve_pod_statuses(&self, messages: &[Message]) {
        for m in messages {
            let Ok(key) = schema::records::ObjectKey::parse(&m.route.resource) else {
                continue;
            };
            if key.kind != "podstatus" {
                continue;
            }
            let Ok(status) = serde_json::from_slice(&m.content) else {
                continue;
            };
            if !self
                .shared
                .statuses
                .borrow_mut()
                .set(&key.namespace, &key.name, status)
            {
                continue;
            }
            let pod =
                schema::records::ObjectKey::new(schema::kinds::POD, &key.namespace, &key.name);
            if let Ok(Some(object)) = self.shared.store.get(&pod) {
                let change = crate::store::Change {
                    change: crate::store::ChangeType::Modified,
                    object,
                };
                self.shared.watches.borrow_mut().publish_status(change);
            }
        }
    }

    /// Node status (Ready) upstream now, and again after the update frequency.
    fn queue_node_status(&mut self) -> Result<(), DaemonError> {
        let every = self
            .config
            .modules
            .edged
            .node_status_update_frequency
            .max(1)
            * 1000;
        self.next_status = Some(self.now() + every);
        if !self.link.is_up() {
            return Ok(());
        }
        let edged = &self.config.modules.edged;
        let runtime = self.pods.as_ref().map(Workloads::runtime);
        let now = unix_ms();
        let node = edged.hostname_override.clone();
        let content = self.node_status.status(
            &self.host_ip,
            &node,
            &edged.root_directory,
            runtime.as_ref(),
            now,
        );
        self.append_outbox(vec![workloads::node::message(&node, &content, now)])
    }

    /// Certificate rotation: at the scheduled instant, request a new
    /// certificate over mutual TLS with the current one (no token); the
    /// next connection uses it. This blocks the thread for one HTTPS
    /// exchange (10 s at most).
    fn maybe_renew(&mut self) {
        let Some(at) = self.renew_at_unix else {
            return;
        };
        let now = unix_ms() / 1000;
        if now < at {
            return;
        }
        let hub = &self.config.modules.edge_hub;
        let files = CertFiles {
            ca: hub.tls_ca_file.clone(),
            cert: hub.tls_cert_file.clone(),
            key: hub.tls_private_key_file.clone(),
        };
        let node = &self.config.modules.edged.hostname_override;
        match join::renew(&hub.http_server(), node, &files, now) {
            Ok(()) => {
                tracing::info!("certificate renewed");
                self.renew_at_unix = next_renewal(&self.config);
            }
            Err(e @ join::JoinError::CertificateExpired { .. }) => {
                tracing::error!("certificate renewal impossible, retrying in an hour: {e}");
                self.renew_at_unix = Some(now + 3600);
            }
            Err(e) => {
                tracing::warn!("certificate renewal failed, retrying in an hour: {e}");
                self.renew_at_unix = Some(now + 3600);
            }
        }
    }
}

/// When to renew the current certificate, if rotation is on.
fn next_renewal(config: &EdgeConfig) -> Option<u64> {
    let hub = &config.modules.edge_hub;
    if !hub.rotate_certificates {
        return None;
    }
    let (nb, na) = join::validity(&hub.tls_cert_file)?;
    let random = (random_u64() >> 11) as f64 / (1u64 << 53) as f64;
    Some(join::renewal_at(nb, na, random))
}
