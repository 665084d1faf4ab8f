//! One shard's state, owned by its executor thread: the hub-core [`Hub`], the
//! byte-level state of its connections, and its pair of rings. Everything
//! here is synchronous; the tasks in [`crate::tasks`] and [`crate::conn`]
//! call it between awaits and never hold a borrow across one.

use std::cell::Cell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::task::Waker;
use std::time::Instant;

use clock::unix_ms;
use hub_core::protocol::Millis;
use hub_core::ring::RingError;
use hub_core::{ConnId, Hub, HubConfig, HubEvent, shard_of};
use rustc_hash::{FxHashMap, FxHashSet};
use schema::records::{self, DeliveredObject, DownRecord, UpRecord};
use shm::RingFile;

use crate::metrics::{ShardMetrics, close_index};
use crate::tls::Session;

/// Wakes a connection's task when it has bytes to write or must close.
#[derive(Default)]
pub struct Notify {
    set: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

impl std::fmt::Debug for Notify {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notify")
            .field("set", &self.set.get())
            .finish()
    }
}

impl Notify {
    pub fn notify(&self) {
        self.set.set(true);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Resolves once [`notify`](Self::notify) was called since the last
    /// time it resolved.
    pub async fn notified(&self) {
        std::future::poll_fn(|cx| {
            if self.set.replace(false) {
                std::task::Poll::Ready(())
            } else {
                self.waker.set(Some(cx.waker().clone()));
                std::task::Poll::Pending
            }
        })
        .await
    }
}

/// The glue's side of one connection.
#[derive(Debug)]
pub struct Conn {
    pub session: Session,
    /// Bytes for the socket, written by the connection's task in one send.
    pub out: Vec<u8>,
    /// Close once `out` is written.
    pub close: bool,
    /// When the oldest routed input behind `out` was taken in (the start
    /// of the ring turn that queued it); taken by the send that writes it.
    pub taken: Option<Instant>,
    pub notify: Rc<Notify>,
}

/// One shard.
#[derive(Debug)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
    pub hub: Hub,
    pub conns: FxHashMap<ConnId, Conn>,
    next_conn: u64,
    rings: RingFile,
    /// Encoded upstream records waiting for room in the ring, with when
    /// the upstream messages among them were read from their socket.
    backlog: VecDeque<(Vec<u8>, Option<Instant>)>,
    backlog_bytes: usize,
    backlog_limit: usize,
    /// Nodes whose link came up or went down while the backlog was over its
    /// limit, oldest first, each once: their state as it is then is
    /// reported once there is room. Bounded by the shard's nodes, so a
    /// reconnect storm against a full ring loses no connection state.
    links_due: VecDeque<Arc<str>>,
    links_due_set: FxHashSet<Arc<str>>,
    pub metrics: Arc<[ShardMetrics]>,
    /// Longest a write to an edge may take (`writeTimeout`).
    pub write_timeout: std::time::Duration,
    start: Instant,
    /// Scratch: plaintext of the bytes being handled; a shared read buffer.
    plain: Vec<u8>,
    pub read_buf: Vec<u8>,
    record: Vec<u8>,
    /// Start of the ring turn being handled, and of the socket read being
    /// handled: the one clock read per turn that routing latency is
    /// measured from.
    ring_turn: Option<Instant>,
    read_at: Option<Instant>,
}

impl Shard {
    pub fn new(
        index: usize,
        count: usize,
        hub: HubConfig,
        rings: RingFile,
        backlog_limit: usize,
        read_buffer: usize,
        metrics: Arc<[ShardMetrics]>,
    ) -> Self {
        ShardMetrics::set(&metrics[index].ring_capacity, rings.inbound().capacity());
        Self {
            index,
            count,
            hub: Hub::new(hub),
            conns: FxHashMap::default(),
            next_conn: 0,
            rings,
            backlog: VecDeque::new(),
            backlog_bytes: 0,
            backlog_limit,
            links_due: VecDeque::new(),
            links_due_set: FxHashSet::default(),
            metrics,
            write_timeout: std::time::Duration::from_secs(30),
            start: Instant::now(),
            plain: Vec::new(),
            read_buf: vec![0; read_buffer],
            record: Vec::new(),
            ring_turn: None,
            read_at: None,
        }
    }

    pub fn m(&self) -> &ShardMetrics {
        &self.metrics[self.index]
    }

    pub fn now(&self) -> Millis {
        self.start.elapsed().as_millis() as Millis
    }

    /// The shard that owns `node`.
    pub fn owner(&self, node: &str) -> usize {
        usize::from(shard_of(node, self.count as u16))
    }

    pub fn rings(&self) -> &RingFile {
        &self.rings
    }

    /// Takes over a connection whose handshake is done; `early` is plaintext
    /// already received. Returns its id and the notifier of its task.
    pub fn adopt(
        &mut self,
        mut session: Session,
        identity: Option<&str>,
        early: &[u8],
    ) -> (ConnId, Rc<Notify>) {
        let id = ((self.index as u64) << 48) | self.next_conn;
        self.next_conn += 1;
        let now = self.now();
        let notify = Rc::new(Notify::default());
        let mut plain = std::mem::take(&mut self.plain);
        plain.clear();
        plain.extend_from_slice(early);
        // Plaintext the TLS session decrypted before the hand-off.
        let ok = session.handle_received(&[], &mut plain).is_ok();
        self.conns.insert(
            id,
            Conn {
                session,
                out: Vec::new(),
                close: !ok,
                taken: None,
                notify: notify.clone(),
            },
        );
        ShardMetrics::set(&self.m().connections, self.conns.len() as u64);
        self.hub.handle_connect(id, identity, now);
        if !plain.is_empty() {
            self.hub.handle_bytes(id, &plain, now);
        }
        self.plain = plain;
        self.flush();
        (id, notify)
    }

    /// Bytes arrived on `id`'s socket.
    pub fn handle_received(&mut self, id: ConnId, bytes: &[u8]) {
        ShardMetrics::add(&self.metrics[self.index].bytes_in, bytes.len() as u64);
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        self.read_at = Some(Instant::now());
        self.plain.clear();
        let result = c.session.handle_received(bytes, &mut self.plain);
        // TLS may answer on its own (alerts, key updates).
        let _ = c.session.poll_transmit(&mut c.out);
        if let Err(e) = result {
            tracing::debug!(conn = id, "closing: {e}");
            c.close = true;
            c.notify.notify();
            self.hub.handle_disconnect(id);
            self.flush();
            self.read_at = None;
            return;
        }
        if !c.out.is_empty() {
            c.notify.notify();
        }
        let now = self.now();
        self.hub.handle_bytes(id, &self.plain, now);
        self.flush();
        self.read_at = None;
    }

    /// The socket of `id` is gone (closed, failed, or its task ended).
    pub fn handle_lost(&mut self, id: ConnId) {
        if self.conns.remove(&id).is_some() {
            ShardMetrics::set(
                &self.metrics[self.index].connections,
                self.conns.len() as u64,
            );
        }
        self.hub.handle_disconnect(id);
        self.flush();
    }

    /// Timers of the hub; also refreshes the gauges.
    pub fn handle_tick(&mut self, gauges: bool) {
        let now = self.now();
        self.hub.handle_timeout(now);
        self.flush();
        if gauges {
            let (queued, inflight) = self.hub.depth_totals();
            let m = &self.metrics[self.index];
            ShardMetrics::set(&m.queued, queued as u64);
            ShardMetrics::set(&m.inflight, inflight as u64);
        }
    }

    /// Takes up to `max` records from the control ring. Returns how many.
    pub fn handle_ring(&mut self, max: usize) -> Result<usize, RingError> {
        let mut n = 0;
        let mut record = std::mem::take(&mut self.record);
        let popped = loop {
            if n == max {
                break Ok(());
            }
            match self.rings.pop_and_wake(&mut record) {
                Ok(true) => {}
                Ok(false) => break Ok(()),
                Err(e) => break Err(e),
            }
            if n == 0 {
                self.ring_turn = Some(Instant::now());
            }
            n += 1;
            self.handle_record(&record);
        };
        self.record = record;
        // What was taken leaves even if the ring then failed.
        if n > 0 {
            ShardMetrics::add(&self.m().messages_from_ring, n as u64);
            self.flush();
            self.ring_turn = None;
        }
        popped.map(|()| n)
    }

    fn handle_record(&mut self, bytes: &[u8]) {
        let record = match records::from_bytes::<DownRecord>(bytes) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(shard = self.index, "unreadable ring record: {e}");
                return;
            }
        };
        let node = match &record {
            DownRecord::Downstream { node_id, .. }
            | DownRecord::Committed { node_id, .. }
            | DownRecord::ResyncStarted { node_id } => node_id,
        };
        if self.owner(node) != self.index {
            tracing::error!(
                shard = self.index,
                node,
                "record for a node of shard {}: dropped",
                self.owner(node)
            );
            return;
        }
        match record {
            DownRecord::Downstream {
                node_id,
                key,
                message,
            } => {
                if message.header.best_effort {
                    self.hub.handle_best_effort(&node_id, message);
                } else if let Err(e) = self.hub.handle_downstream(&node_id, key, message) {
                    tracing::warn!(node = node_id, "downstream message refused: {e}");
                }
            }
            DownRecord::Committed {
                node_id,
                store_id,
                seq,
            } => self.hub.handle_upstream_committed(&node_id, store_id, seq),
            DownRecord::ResyncStarted { node_id } => self.hub.handle_resync_started(&node_id),
        }
    }

    /// Moves what the hub produced to the connections and the ring.
    pub fn flush(&mut self) {
        let now = self.now();
        while let Some((id, transmit)) = self.hub.poll_transmit(now) {
            let Some(c) = self.conns.get_mut(&id) else {
                continue;
            };
            let m = &self.metrics[self.index];
            ShardMetrics::add(&m.frames_out, frames_in(&transmit.bytes));
            if c.taken.is_none() {
                c.taken = self.ring_turn;
            }
            if c.session.write(&transmit.bytes, &mut c.out).is_err() {
                c.close = true;
            }
            if transmit.close {
                c.session.close(&mut c.out);
                c.close = true;
            }
            c.notify.notify();
            self.hub.recycle_transmit(transmit.bytes);
        }
        while let Some(event) = self.hub.poll_event() {
            self.report(event);
        }
        self.push_backlog();
    }

    fn report(&mut self, event: HubEvent) {
        let metrics = self.metrics.clone();
        let m = &metrics[self.index];
        let at_ms = unix_ms();
        let mut read_at = None;
        let (record, essential) = match event {
            HubEvent::Connected { node, store_id, .. } => {
                ShardMetrics::add(&m.handshakes, 1);
                if self.link_due(&node) {
                    return;
                }
                let record = UpRecord::Connected {
                    node_id: node.to_string(),
                    at_ms,
                    store_id,
                };
                (record, true)
            }
            HubEvent::Disconnected { node, reason, .. } => {
                ShardMetrics::add(&m.closes[close_index(reason)], 1);
                let Some(node) = node else {
                    ShardMetrics::add(&m.handshake_failures, 1);
                    return;
                };
                if self.link_due(&node) {
                    return;
                }
                let record = UpRecord::Disconnected {
                    node_id: node.to_string(),
                    at_ms,
                    reason: reason.map_or(u8::MAX, |r| r.0),
                };
                (record, true)
            }
            HubEvent::Upstream {
                node,
                store_id,
                message,
            } => {
                ShardMetrics::add(&m.messages_in, 1);
                read_at = self.read_at;
                let record = UpRecord::Upstream {
                    node_id: node.to_string(),
                    store_id,
                    message,
                };
                (record, true)
            }
            HubEvent::Delivered {
                node,
                store_id,
                objects,
            } => {
                ShardMetrics::add(&m.messages_out, objects.len() as u64);
                let delivered = objects
                    .iter()
                    .map(|d| DeliveredObject {
                        key: (*d.key).clone(),
                        resource_version: d.resource_version,
                        deleted: d.deleted,
                    })
                    .collect();
                self.hub.recycle_delivered(objects);
                let objects = delivered;
                let record = UpRecord::Delivered {
                    node_id: node.to_string(),
                    store_id,
                    objects,
                };
                (record, false)
            }
            HubEvent::ResyncNeeded { node } => {
                let record = UpRecord::ResyncNeeded {
                    node_id: node.to_string(),
                };
                (record, true)
            }
        };
        ShardMetrics::set(&m.connected_nodes, self.hub.connected() as u64);
        let bytes = records::to_bytes(&record).to_vec();
        if !essential && self.backlog_bytes + bytes.len() > self.backlog_limit {
            ShardMetrics::add(&m.ring_dropped, 1);
            return;
        }
        self.backlog_bytes += bytes.len();
        self.backlog.push_back((bytes, read_at));
    }

    /// Whether `node`'s link change is left for later: true when the
    /// backlog is over its limit or an earlier change of `node` already
    /// waits (its state is then reported as it is when there is room).
    fn link_due(&mut self, node: &Arc<str>) -> bool {
        if self.links_due_set.contains(node) {
            return true;
        }
        if self.backlog_bytes < self.backlog_limit {
            return false;
        }
        self.links_due_set.insert(node.clone());
        self.links_due.push_back(node.clone());
        true
    }

    /// Moves the link state of nodes whose change was left for later into
    /// the backlog while it has room: connected with its store, or not.
    fn report_links_due(&mut self) {
        while self.backlog_bytes < self.backlog_limit
            && let Some(node) = self.links_due.pop_front()
        {
            self.links_due_set.remove(&node);
            let at_ms = unix_ms();
            let record = match self.hub.link_state(&node) {
                Some((true, store_id)) => UpRecord::Connected {
                    node_id: node.to_string(),
                    at_ms,
                    store_id,
                },
                _ => UpRecord::Disconnected {
                    node_id: node.to_string(),
                    at_ms,
                    reason: u8::MAX,
                },
            };
            let bytes = records::to_bytes(&record).to_vec();
            self.backlog_bytes += bytes.len();
            self.backlog.push_back((bytes, None));
        }
    }

    /// Moves backlog records into the ring while it has room. Returns true
    /// when the backlog is empty.
    pub fn push_backlog(&mut self) -> bool {
        self.push_ring();
        if !self.links_due.is_empty() {
            self.report_links_due();
            self.push_ring();
        }
        self.backlog.is_empty() && self.links_due.is_empty()
    }

    fn push_ring(&mut self) {
        let mut now = None;
        while let Some((front, read_at)) = self.backlog.front() {
            match self.rings.push_and_wake(front) {
                Ok(()) => {
                    if let Some(at) = read_at {
                        let now = *now.get_or_insert_with(Instant::now);
                        let m = &self.metrics[self.index];
                        m.route_latency_up
                            .record(now.saturating_duration_since(*at), 1);
                    }
                }
                Err(RingError::Full) => break,
                Err(e) => {
                    tracing::error!(shard = self.index, "ring to control: {e}; record dropped");
                    ShardMetrics::add(&self.metrics[self.index].ring_dropped, 1);
                }
            }
            let len = front.len();
            self.backlog.pop_front();
            self.backlog_bytes -= len;
        }
        let m = &self.metrics[self.index];
        ShardMetrics::set(&m.ring_backlog, self.backlog_bytes as u64);
        set_used(&m.ring_up_used, self.rings.outbound().used());
        set_used(&m.ring_down_used, self.rings.inbound().used());
    }
}

/// The number of link frames in `bytes`, a whole number of encoded frames
/// (each an 8-byte prefix whose last four bytes are the body's length).
fn frames_in(bytes: &[u8]) -> u64 {
    let (mut at, mut frames) = (0usize, 0u64);
    while let Some(prefix) = bytes.get(at..at + schema::codec::PREFIX_LEN) {
        let len = u32::from_le_bytes([prefix[4], prefix[5], prefix[6], prefix[7]]);
        at += schema::codec::PREFIX_LEN + len as usize;
        frames += 1;
    }
    frames
}

fn set_used(gauge: &AtomicU64, used: u64) {
    ShardMetrics::set(gauge, used);
}
