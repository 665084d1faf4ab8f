//! The cloud end of the link: one [`Hub`] per shard, holding the connections
//! and the [`NodeState`] of every node that hashes to the shard.
//!
//! Call order, from the glue's loop:
//! 1. [`Hub::handle_connect`] when a connection's TLS handshake is done (with
//!    the identity its client certificate proves);
//! 2. [`Hub::handle_bytes`] with whatever a connection received,
//!    [`Hub::handle_disconnect`] when it was lost;
//! 3. [`Hub::handle_downstream`] for each message the control side sends a
//!    node, [`Hub::handle_upstream_committed`] once the control side took
//!    over upstream messages;
//! 4. [`Hub::handle_timeout`] when the instant from [`Hub::poll_timeout`]
//!    has come;
//! 5. then drain [`Hub::poll_transmit`] (write the bytes; close the
//!    connection when told) and [`Hub::poll_event`]; hand the buffers back
//!    with [`Hub::recycle_transmit`] and [`Hub::recycle_delivered`] once
//!    done with them, so that a hub in steady state allocates nothing per
//!    message.
//!
//! The rules it follows are in [`crate::protocol`].

use std::borrow::Borrow;
use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::Arc;

use rustc_hash::FxHashMap as HashMap;

use schema::codec::{DecodeError, DecoderConfig};
use schema::fb::CloseReason;
use schema::frames::{Close, Welcome};
use schema::records::ObjectKey;
use schema::{FrameDecoder, FrameEncoder, FrameView, Message, MessageRef};

use crate::PROTOCOL_VERSION;
use crate::body::{AsMessage, Bodies};
use crate::node::{Delivered, NodeState, Resume, SendLimits};
use crate::pool::Pool;
use crate::protocol::{CAPABILITIES, Millis, Transmit};
use crate::queue::PushOutcome;

/// Identifies a connection; chosen by the glue, unique while it is open.
pub type ConnId = u64;

/// Settings of a hub, named after KubeEdge's cloudhub options where they mean
/// the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubConfig {
    /// Most nodes connected at once (`nodeLimit`). Default 1,000.
    pub node_limit: usize,
    /// Downstream messages in flight per node. Default 256.
    pub window: u32,
    /// Upstream messages a node may have in flight, sent in `Welcome`.
    /// Default 256.
    pub upstream_window: u32,
    /// Idle time after which a keepalive is sent (`keepaliveInterval`).
    /// Default 15 s.
    pub keepalive_interval_ms: Millis,
    /// Silent keepalive intervals after which a link is closed. Default 3.
    pub missed_keepalives: u32,
    /// Time a connection has to send `Hello`. Default 10 s.
    pub handshake_timeout_ms: Millis,
    /// Time without an ack after which the window is sent again. Default 10 s.
    pub retransmit_timeout_ms: Millis,
    /// Largest frame received or sent. Default 16 MiB.
    pub max_frame_bytes: u32,
    /// Largest `Batch` built when sending. Default 256 KiB.
    pub max_batch_bytes: u32,
    /// Bytes a node's queue may hold before it is released and the node
    /// marked for a full resync. Default 8 MiB.
    pub queue_budget_bytes: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            node_limit: 1_000,
            window: 256,
            upstream_window: 256,
            keepalive_interval_ms: 15_000,
            missed_keepalives: 3,
            handshake_timeout_ms: 10_000,
            retransmit_timeout_ms: 10_000,
            max_frame_bytes: schema::codec::DEFAULT_MAX_FRAME_BYTES,
            max_batch_bytes: 256 << 10,
            queue_budget_bytes: 8 << 20,
        }
    }
}

/// What happened on the hub, for the control side and for metrics.
// Events are drained as they are produced; boxing `Upstream`'s message would
// cost an allocation per upstream message for no saving.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HubEvent {
    /// A node completed its handshake on `conn`; `store_id` is the
    /// identity of its store from `Hello` (0: none).
    Connected {
        node: Arc<str>,
        conn: ConnId,
        store_id: u64,
    },
    /// A connection ended; `reason` is `None` when the transport was lost
    /// without a `Close`. `node` is `None` before the handshake.
    Disconnected {
        node: Option<Arc<str>>,
        conn: ConnId,
        reason: Option<CloseReason>,
    },
    /// A node sent a message upstream (duplicates already removed), from
    /// its store `store_id`.
    Upstream {
        node: Arc<str>,
        store_id: u64,
        message: Message,
    },
    /// A node durably committed these object versions in its store
    /// `store_id`.
    Delivered {
        node: Arc<str>,
        store_id: u64,
        objects: Vec<Delivered>,
    },
    /// A node's queue overflowed its budget, or the node lost data it had
    /// acknowledged: the control side must send it a full snapshot.
    ResyncNeeded { node: Arc<str> },
}

/// Why [`Hub::handle_downstream`] refused a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownstreamError {
    /// The message alone would not fit in a frame.
    TooLarge { bytes: usize, max: u32 },
}

impl std::fmt::Display for DownstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooLarge { bytes, max } => {
                write!(
                    f,
                    "message of {bytes} bytes exceeds the frame limit of {max}"
                )
            }
        }
    }
}

impl std::error::Error for DownstreamError {}

/// Bytes a message may take in a batch besides its strings and content.
const MESSAGE_OVERHEAD: usize = 256;

/// A node whose queue waits for the control side's resync asks for it again
/// this often while it is connected: the request, or the control side's
/// answer, may have been lost with a killed process.
pub const RESYNC_RETRY_MS: Millis = 30_000;

#[derive(Debug)]
enum ConnState {
    Handshaking { deadline: Millis },
    Open { node: Arc<str> },
    Closing,
}

#[derive(Debug)]
struct Conn {
    identity: Option<String>,
    state: ConnState,
    decoder: FrameDecoder,
    out: Vec<u8>,
    close_after: bool,
    dirty: bool,
    last_rx: Millis,
    last_tx: Millis,
    /// Earliest entry this connection has in the timer heap.
    scheduled: Millis,
}

/// The cloud end of the link for the nodes of one shard.
#[derive(Debug)]
pub struct Hub {
    config: HubConfig,
    nodes: HashMap<Arc<str>, NodeState>,
    conns: HashMap<ConnId, Conn>,
    connected: usize,
    dirty: VecDeque<ConnId>,
    /// When to look at a connection's timers again. Entries are checks, not
    /// deadlines: a connection whose deadline moved later is looked at,
    /// found not due, and scheduled again; so the hub never scans all its
    /// connections.
    timers: BinaryHeap<Reverse<(Millis, ConnId)>>,
    events: VecDeque<HubEvent>,
    encoder: FrameEncoder,
    /// The bodies of every message the shard holds.
    bodies: Bodies,
    /// Output buffers handed back by the glue, for the next sends.
    spare_out: Pool<u8>,
    /// Delivery lists handed back by the glue.
    spare_delivered: Pool<Delivered>,
    /// When the slab next gives back what its recent peak did not need.
    next_trim: Millis,
    /// Connections found due by `handle_timeout`, kept for the next call.
    due: Vec<ConnId>,
}

/// Bytes of output buffers kept for reuse at most (the glue hands each
/// back right after writing it: a few circulate).
const SPARE_OUT_BYTES: usize = 4 << 20;
/// Bytes of delivery lists kept for reuse at most: one list of a full
/// window for each of 2,000 nodes acknowledging in one turn, more of
/// shorter ones.
const SPARE_DELIVERED_BYTES: usize = 32 << 20;

impl Hub {
    pub fn new(config: HubConfig) -> Self {
        let largest_out = 2 * config.max_batch_bytes as usize;
        let largest_delivered = 2 * config.window as usize;
        Self {
            encoder: FrameEncoder::new(config.max_frame_bytes),
            config,
            nodes: HashMap::default(),
            conns: HashMap::default(),
            connected: 0,
            dirty: VecDeque::new(),
            timers: BinaryHeap::new(),
            events: VecDeque::new(),
            bodies: Bodies::default(),
            spare_out: Pool::new(SPARE_OUT_BYTES, largest_out),
            spare_delivered: Pool::new(SPARE_DELIVERED_BYTES, largest_delivered),
            next_trim: 0,
            due: Vec::new(),
        }
    }

    pub fn config(&self) -> &HubConfig {
        &self.config
    }

    /// Nodes with an open, handshaken connection.
    pub fn connected(&self) -> usize {
        self.connected
    }

    /// Whether `node` is connected now, and the identity of its store as
    /// last said (0: unknown); `None` for a node the hub never heard of.
    pub fn link_state(&self, node: &str) -> Option<(bool, u64)> {
        self.nodes.get(node).map(|s| (s.conn.is_some(), s.store_id))
    }

    /// Messages queued and in flight for `node`.
    pub fn depth(&self, node: &str) -> Option<(usize, usize)> {
        self.nodes.get(node).map(NodeState::depth)
    }

    /// Messages queued and in flight over all of the shard's nodes. Walks
    /// every node: call it for metrics, not per message.
    pub fn depth_totals(&self) -> (usize, usize) {
        self.nodes
            .values()
            .map(NodeState::depth)
            .fold((0, 0), |(q, f), (dq, df)| (q + dq, f + df))
    }

    /// A connection is ready; `identity` is the node id its client
    /// certificate proves (`None` on the benchmark-only plaintext port, where
    /// `Hello` is trusted).
    pub fn handle_connect(&mut self, conn: ConnId, identity: Option<&str>, now: Millis) {
        let decoder = FrameDecoder::new(DecoderConfig {
            max_frame_bytes: self.config.max_frame_bytes,
            ..DecoderConfig::default()
        });
        let deadline = now + self.config.handshake_timeout_ms;
        let c = Conn {
            identity: identity.map(str::to_owned),
            state: ConnState::Handshaking { deadline },
            decoder,
            out: Vec::new(),
            close_after: false,
            dirty: false,
            last_rx: now,
            last_tx: now,
            scheduled: Millis::MAX,
        };
        if self.conns.insert(conn, c).is_some() {
            // The glue reused a live id: the old connection is gone.
            self.detach(conn, None);
        }
        self.schedule(conn);
    }

    /// Bytes arrived on `conn`.
    pub fn handle_bytes(&mut self, conn: ConnId, bytes: &[u8], now: Millis) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if matches!(c.state, ConnState::Closing) {
            return;
        }
        c.last_rx = now;
        c.decoder.handle_bytes(bytes);
        loop {
            let Some(c) = self.conns.get_mut(&conn) else {
                return;
            };
            let action = match c.decoder.poll_frame() {
                Ok(None) => return,
                Ok(Some(frame)) => Action::from_frame(&frame),
                Err(DecodeError::FrameTooLarge { len, max }) => Action::Close(
                    CloseReason::FrameTooLarge,
                    format!("frame of {len} bytes over the limit of {max}"),
                ),
                Err(e) => Action::Close(CloseReason::ProtocolError, e.to_string()),
            };
            if !self.act(conn, action, now) {
                return;
            }
        }
    }

    /// The transport of `conn` was lost.
    pub fn handle_disconnect(&mut self, conn: ConnId) {
        if self.conns.contains_key(&conn) {
            self.detach(conn, None);
            self.conns.remove(&conn);
        }
    }

    /// Queues `message` for `node`, coalesced by `key`. The hub keeps a
    /// copy of what it queues: the caller may pass borrowed values.
    pub fn handle_downstream(
        &mut self,
        node: &str,
        key: impl Borrow<ObjectKey>,
        message: impl AsMessage,
    ) -> Result<PushOutcome, DownstreamError> {
        let message = message.as_message();
        let bytes = message.payload_len() + MESSAGE_OVERHEAD;
        if bytes > self.config.max_frame_bytes as usize {
            return Err(DownstreamError::TooLarge {
                bytes,
                max: self.config.max_frame_bytes,
            });
        }
        let state = Self::node_mut(&mut self.nodes, self.config.queue_budget_bytes, node);
        let was_resync = state.needs_resync();
        let outcome = state.push(&mut self.bodies, key.borrow(), &message);
        let (conn, id) = (state.conn, state.id.clone());
        if matches!(outcome, PushOutcome::Overflow { .. }) && !was_resync {
            self.events.push_back(HubEvent::ResyncNeeded { node: id });
        }
        if let Some(conn) = conn {
            self.mark_dirty(conn);
        }
        Ok(outcome)
    }

    /// Sends `message` to `node` now if it is connected, at most once.
    /// Returns false if it was dropped.
    pub fn handle_best_effort(&mut self, node: &str, message: impl AsMessage) -> bool {
        let Some(state) = self.nodes.get_mut(node) else {
            return false;
        };
        let Some(conn) = state.conn else {
            return false;
        };
        let queued = state.push_best_effort(&mut self.bodies, &message.as_message());
        self.mark_dirty(conn);
        queued
    }

    /// The control side is about to send `node` a full snapshot.
    pub fn handle_resync_started(&mut self, node: &str) {
        if let Some(state) = self.nodes.get_mut(node) {
            state.resync_started();
        }
    }

    /// The control side took over `node`'s upstream messages up to `seq`
    /// from its store `store_id`. Ignored when the node's store is another
    /// one by now: those numbers belonged to the store it lost.
    pub fn handle_upstream_committed(&mut self, node: &str, store_id: u64, seq: u64) {
        let Some(state) = self.nodes.get_mut(node) else {
            return;
        };
        if store_id != state.store_id {
            return;
        }
        state.upstream_committed = state.upstream_committed.max(seq.min(state.upstream_seq));
        if let Some(conn) = state.conn {
            self.mark_dirty(conn);
        }
    }

    /// Closes `conn` with `reason` on the glue's behalf (e.g. `Overloaded`).
    pub fn handle_close(
        &mut self,
        conn: ConnId,
        reason: CloseReason,
        text: &str,
        retry_after_ms: u32,
    ) {
        if self.conns.contains_key(&conn) {
            self.close(conn, reason, text, retry_after_ms);
        }
    }

    /// Graceful shutdown: every connection is told `ShuttingDown` and to come
    /// back after `retry_after_ms`.
    pub fn handle_shutdown(&mut self, retry_after_ms: u32) {
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            self.close(
                id,
                CloseReason::ShuttingDown,
                "the hub is shutting down",
                retry_after_ms,
            );
        }
    }

    /// Timers: handshake and read deadlines, keepalives, retransmission.
    pub fn handle_timeout(&mut self, now: Millis) {
        if now >= self.next_trim {
            self.bodies.trim();
            self.spare_out.trim();
            self.spare_delivered.trim();
            self.next_trim = now + self.config.keepalive_interval_ms;
        }
        // The list of the last call, reused.
        let mut due = std::mem::take(&mut self.due);
        while let Some(&Reverse((at, id))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            if let Some(c) = self.conns.get_mut(&id)
                && c.scheduled == at
            {
                c.scheduled = Millis::MAX;
            }
            due.push(id);
        }
        due.sort_unstable();
        due.dedup();
        for &id in &due {
            self.check_timers(id, now);
            // Work just found due is done at the next poll_transmit; look
            // again no sooner than the next millisecond.
            self.schedule_after(id, now);
        }
        due.clear();
        self.due = due;
    }

    /// The earliest instant [`handle_timeout`](Self::handle_timeout) may
    /// have work (it may find none).
    pub fn poll_timeout(&self) -> Option<Millis> {
        self.timers.peek().map(|Reverse((at, _))| *at)
    }

    /// Bytes to write to a connection, one connection per call.
    pub fn poll_transmit(&mut self, now: Millis) -> Option<(ConnId, Transmit)> {
        while let Some(id) = self.dirty.pop_front() {
            let Some(c) = self.conns.get_mut(&id) else {
                continue;
            };
            c.dirty = false;
            if c.out.capacity() == 0 {
                c.out = self.spare_out.take();
            }
            if let ConnState::Open { node } = &c.state
                && let Some(state) = self.nodes.get_mut(node)
            {
                if state.upstream_committed > state.upstream_acked {
                    state.upstream_acked = state.upstream_committed;
                    let _ = self.encoder.ack(state.upstream_acked, &mut c.out);
                }
                let limits = SendLimits {
                    window: self.config.window as usize,
                    max_batch: self.config.max_batch_bytes as usize,
                    rto: self.config.retransmit_timeout_ms,
                };
                state.fill(&mut self.bodies, &mut self.encoder, limits, now, &mut c.out);
                if c.out.is_empty() && now >= c.last_tx + self.config.keepalive_interval_ms {
                    let _ = self.encoder.keepalive(now, &mut c.out);
                    // An idle link gives its buffers back.
                    c.decoder.release_idle();
                    state.shrink_idle();
                }
            }
            let retransmit = match &c.state {
                ConnState::Open { node } => self.nodes.get(node).and_then(|s| s.retransmit_at),
                _ => None,
            };
            if retransmit.is_some_and(|at| at < c.scheduled) {
                self.schedule(id);
            }
            let Some(c) = self.conns.get_mut(&id) else {
                continue;
            };
            if c.out.is_empty() && !c.close_after {
                let idle = std::mem::take(&mut c.out);
                self.recycle_transmit(idle);
                continue;
            }
            c.last_tx = now;
            let transmit = Transmit {
                bytes: std::mem::take(&mut c.out),
                close: c.close_after,
            };
            if transmit.close {
                self.conns.remove(&id);
            }
            return Some((id, transmit));
        }
        None
    }

    pub fn poll_event(&mut self) -> Option<HubEvent> {
        self.events.pop_front()
    }

    /// Takes back the bytes of a [`Transmit`] once written, for a later
    /// send to reuse.
    pub fn recycle_transmit(&mut self, bytes: Vec<u8>) {
        self.spare_out.give(bytes);
    }

    /// Takes back the list of a [`HubEvent::Delivered`] once read, for a
    /// later report to reuse.
    pub fn recycle_delivered(&mut self, objects: Vec<Delivered>) {
        self.spare_delivered.give(objects);
    }

    fn node_mut<'a>(
        nodes: &'a mut HashMap<Arc<str>, NodeState>,
        budget: usize,
        node: &str,
    ) -> &'a mut NodeState {
        // Known nodes (the common case) cost no allocation.
        let id = match nodes.get_key_value(node) {
            Some((id, _)) => id.clone(),
            None => Arc::from(node),
        };
        match nodes.entry(id) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                let id = e.key().clone();
                e.insert(NodeState::new(id, budget))
            }
        }
    }

    fn mark_dirty(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(&conn)
            && !c.dirty
        {
            c.dirty = true;
            self.dirty.push_back(conn);
        }
    }

    /// The next instant `conn` has a timer due.
    fn next_deadline(&self, c: &Conn) -> Option<Millis> {
        let cfg = &self.config;
        match &c.state {
            ConnState::Handshaking { deadline } => Some(*deadline),
            ConnState::Open { node } => {
                let read_deadline = cfg.keepalive_interval_ms * Millis::from(cfg.missed_keepalives);
                let keepalive =
                    (c.last_tx + cfg.keepalive_interval_ms).min(c.last_rx + read_deadline);
                let retransmit = self.nodes.get(node).and_then(|s| s.retransmit_at);
                Some(retransmit.map_or(keepalive, |r| r.min(keepalive)))
            }
            ConnState::Closing => None,
        }
    }

    /// Puts `conn`'s next deadline in the timer heap unless an earlier check
    /// is already there.
    fn schedule(&mut self, conn: ConnId) {
        self.schedule_after(conn, 0);
    }

    /// As [`schedule`](Self::schedule), but later than `now`.
    fn schedule_after(&mut self, conn: ConnId, now: Millis) {
        let Some(next) = self.conns.get(&conn).and_then(|c| self.next_deadline(c)) else {
            return;
        };
        let next = next.max(now + 1);
        if let Some(c) = self.conns.get_mut(&conn)
            && next < c.scheduled
        {
            c.scheduled = next;
            self.timers.push(Reverse((next, conn)));
        }
    }

    /// Acts on whatever timer of `conn` is due at `now`.
    fn check_timers(&mut self, id: ConnId, now: Millis) {
        let cfg = &self.config;
        let read_deadline = cfg.keepalive_interval_ms * Millis::from(cfg.missed_keepalives);
        let Some(c) = self.conns.get(&id) else {
            return;
        };
        match &c.state {
            ConnState::Handshaking { deadline } if now >= *deadline => {
                self.close(id, CloseReason::HandshakeTimeout, "no Hello in time", 0);
            }
            ConnState::Open { node } => {
                let node = node.clone();
                if let Some(s) = self.nodes.get_mut(&node)
                    && s.resync_retry_due(now, RESYNC_RETRY_MS)
                {
                    self.events
                        .push_back(HubEvent::ResyncNeeded { node: node.clone() });
                }
                let retransmit = self
                    .nodes
                    .get(&node)
                    .is_some_and(|s| s.retransmit_at.is_some_and(|at| now >= at));
                if now >= c.last_rx + read_deadline {
                    self.close(id, CloseReason::Timeout, "no keepalive from the node", 0);
                } else if retransmit || now >= c.last_tx + cfg.keepalive_interval_ms {
                    self.retransmit_due(id, now);
                    self.mark_dirty(id);
                }
            }
            _ => {}
        }
    }

    fn retransmit_due(&mut self, conn: ConnId, now: Millis) {
        if let Some(ConnState::Open { node }) = self.conns.get(&conn).map(|c| &c.state)
            && let Some(state) = self.nodes.get_mut(node)
            && state.retransmit_at.is_some_and(|at| now >= at)
        {
            state.retransmit();
        }
    }

    /// Carries out what a received frame asks for. Returns false when the
    /// connection is closed and decoding must stop.
    fn act(&mut self, conn: ConnId, action: Action, now: Millis) -> bool {
        let (state, identity) = match self.conns.get(&conn) {
            Some(c) => (&c.state, c.identity.as_deref()),
            None => return false,
        };
        let node = match state {
            ConnState::Open { node } => Some(node.clone()),
            _ => None,
        };
        match (action, node) {
            (
                Action::Hello {
                    node_id,
                    version,
                    resume,
                },
                None,
            ) => {
                if identity.is_some_and(|id| id != node_id) || node_id.is_empty() {
                    let text = format!("certificate is not for node {node_id:?}");
                    return self.close(conn, CloseReason::Unauthorized, &text, 0);
                }
                if version != PROTOCOL_VERSION {
                    let text = format!("protocol version {version} is not {PROTOCOL_VERSION}");
                    return self.close(conn, CloseReason::VersionMismatch, &text, 0);
                }
                self.open(conn, &node_id, resume, now)
            }
            (Action::Batch(messages), Some(node)) => {
                let Some(state) = self.nodes.get_mut(&node) else {
                    return true;
                };
                let store_id = state.store_id;
                for message in messages {
                    let seq = message.header.seq;
                    let fresh = seq == 0 || message.header.best_effort || seq > state.upstream_seq;
                    if seq > state.upstream_seq && !message.header.best_effort {
                        state.upstream_seq = seq;
                    }
                    if fresh {
                        self.events.push_back(HubEvent::Upstream {
                            node: node.clone(),
                            store_id,
                            message,
                        });
                    }
                }
                true
            }
            (Action::Ack(seq), Some(node)) => {
                let Some(state) = self.nodes.get_mut(&node) else {
                    return true;
                };
                let mut delivered = self.spare_delivered.take();
                if !state.ack(&mut self.bodies, seq, &mut delivered) {
                    let text = format!("ack {seq} for a message never sent");
                    return self.close(conn, CloseReason::ProtocolError, &text, 0);
                }
                self.report_delivered(&node, delivered);
                self.mark_dirty(conn);
                true
            }
            (Action::Keepalive, Some(_)) => true,
            (Action::PeerClose(reason), _) => {
                // The peer ends the connection: answer nothing, just close.
                self.detach(conn, Some(reason));
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.state = ConnState::Closing;
                    c.close_after = true;
                }
                self.mark_dirty(conn);
                false
            }
            (Action::Close(reason, text), _) => self.close(conn, reason, &text, 0),
            (other, _) => {
                let text = format!("unexpected {} frame", other.name());
                self.close(conn, CloseReason::ProtocolError, &text, 0)
            }
        }
    }

    /// Completes the handshake of `conn` for `node_id`.
    fn open(&mut self, conn: ConnId, node_id: &str, resume: Resume, now: Millis) -> bool {
        let previous = self.nodes.get(node_id).and_then(|s| s.conn);
        if previous.is_none() && self.connected >= self.config.node_limit {
            let text = format!("node limit of {} reached", self.config.node_limit);
            return self.close(conn, CloseReason::NodeLimit, &text, 30_000);
        }
        if let Some(old) = previous {
            self.close(
                old,
                CloseReason::Replaced,
                "a newer connection replaced this one",
                0,
            );
        }
        let budget = self.config.queue_budget_bytes;
        let state = Self::node_mut(&mut self.nodes, budget, node_id);
        let mut delivered = self.spare_delivered.take();
        let intact = state.resume(&mut self.bodies, resume, &mut delivered);
        state.conn = Some(conn);
        let node = state.id.clone();
        let welcome_resume = state.upstream_committed;
        state.upstream_acked = welcome_resume;
        self.connected += 1;
        if !intact {
            self.events
                .push_back(HubEvent::ResyncNeeded { node: node.clone() });
        }
        self.report_delivered(&node, delivered);
        self.events.push_back(HubEvent::Connected {
            node: node.clone(),
            conn,
            store_id: resume.store_id,
        });
        if let Some(c) = self.conns.get_mut(&conn) {
            c.state = ConnState::Open { node };
            let welcome = Welcome {
                protocol_version: PROTOCOL_VERSION,
                resume_seq: welcome_resume,
                keepalive_interval_ms: u32::try_from(self.config.keepalive_interval_ms)
                    .unwrap_or(u32::MAX),
                max_frame_bytes: self.config.max_frame_bytes,
                window: self.config.upstream_window,
                capabilities: CAPABILITIES,
            };
            let _ = self.encoder.welcome(&welcome, &mut c.out);
            c.last_tx = now;
        }
        self.mark_dirty(conn);
        self.schedule(conn);
        true
    }

    fn report_delivered(&mut self, node: &Arc<str>, objects: Vec<Delivered>) {
        if objects.is_empty() {
            self.recycle_delivered(objects);
        } else {
            let store_id = self.nodes.get(node).map_or(0, |s| s.store_id);
            self.events.push_back(HubEvent::Delivered {
                node: node.clone(),
                store_id,
                objects,
            });
        }
    }

    /// Sends `Close` on `conn` and ends it. Always returns false.
    fn close(
        &mut self,
        conn: ConnId,
        reason: CloseReason,
        text: &str,
        retry_after_ms: u32,
    ) -> bool {
        if !matches!(
            self.conns.get(&conn).map(|c| &c.state),
            Some(ConnState::Handshaking { .. } | ConnState::Open { .. })
        ) {
            return false;
        }
        self.detach(conn, Some(reason));
        if let Some(c) = self.conns.get_mut(&conn) {
            let close = Close {
                reason,
                text,
                retry_after_ms,
            };
            let _ = self.encoder.close(&close, &mut c.out);
            c.state = ConnState::Closing;
            c.close_after = true;
        }
        self.mark_dirty(conn);
        false
    }

    /// Unbinds `conn` from its node and reports the end of the connection.
    fn detach(&mut self, conn: ConnId, reason: Option<CloseReason>) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let node = match std::mem::replace(&mut c.state, ConnState::Closing) {
            ConnState::Open { node } => Some(node),
            ConnState::Handshaking { .. } => None,
            ConnState::Closing => return,
        };
        if let Some(node) = &node
            && let Some(state) = self.nodes.get_mut(node)
            && state.conn == Some(conn)
        {
            state.conn = None;
            self.connected -= 1;
        }
        self.events
            .push_back(HubEvent::Disconnected { node, conn, reason });
    }
}

/// A received frame, reduced to what the hub acts on (owned, so that the
/// decoder's borrow ends before the hub changes state).
#[derive(Debug)]
enum Action {
    Hello {
        node_id: String,
        version: u16,
        resume: Resume,
    },
    Batch(Vec<Message>),
    Ack(u64),
    Keepalive,
    /// The peer closed with this reason.
    PeerClose(CloseReason),
    /// Close the connection with this reason.
    Close(CloseReason, String),
    Unexpected(&'static str),
}

impl Action {
    fn from_frame(frame: &FrameView<'_>) -> Self {
        match frame {
            FrameView::Hello(h) => Self::Hello {
                node_id: h.node_id().unwrap_or_default().to_owned(),
                version: h.protocol_version(),
                resume: Resume {
                    seq: h.resume_seq(),
                    received_seq: h.received_seq(),
                    store_id: h.store_id(),
                },
            },
            FrameView::Batch(_) => Self::Batch(
                frame
                    .messages()
                    .map(|m: MessageRef<'_>| m.to_owned())
                    .collect(),
            ),
            FrameView::Ack(a) => Self::Ack(a.seq()),
            FrameView::Keepalive(_) => Self::Keepalive,
            FrameView::Close(c) => Self::PeerClose(c.reason()),
            FrameView::Welcome(_) => Self::Unexpected("Welcome"),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Self::Hello { .. } => "Hello",
            Self::Batch(_) => "Batch",
            Self::Ack(_) => "Ack",
            Self::Keepalive => "Keepalive",
            Self::PeerClose(_) => "Close",
            Self::Close(..) => "Close",
            Self::Unexpected(name) => name,
        }
    }
}

#[cfg(test)]
mod tests;
