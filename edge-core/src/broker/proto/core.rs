//! The broker's state machine: connections, sessions, routing, retained
//! messages, wills and keepalive. No I/O, no clock: time comes in as
//! milliseconds from any monotonic origin.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use mqtt_proto::{TopicFilter, TopicName};

use super::codec::{self, FrameError, Framer};
use super::encode::encode;
use super::packet::{Msg, Outbound, Version};
use super::session::Session;
use super::{BrokerConfig, BrokerStats, ConnId, LocalMessage, PublishError, Transmit};

/// Bytes of publishes one transmit carries at most.
const MAX_BATCH: usize = 64 * 1024;
/// Unsent control packets (acks) a client may pile up by not reading.
const MAX_CONTROL: usize = 1024 * 1024;
/// Sockets beyond `max_clients` that may wait for their CONNECT.
const PENDING_SOCKETS: usize = 64;

#[derive(Debug)]
pub(super) struct Conn {
    framer: Framer,
    pub(super) version: Option<Version>,
    pub(super) client: Option<Arc<str>>,
    pub(super) will: Option<Msg>,
    pub(super) keep_alive_ms: u64,
    last_rx_ms: u64,
    opened_ms: u64,
    control: Vec<u8>,
    busy: bool,
    in_ready: bool,
    closing: bool,
    close_sent: bool,
}

/// The embedded MQTT broker (EventBus), sans-IO.
///
/// Call order: [`Broker::handle_connect`] for each accepted socket, then
/// [`Broker::handle_bytes`] with what it reads; after any input, drain
/// [`Broker::poll_transmit`] (write the bytes, call [`Broker::handle_sent`]
/// once written; close the socket when `close` is set) and
/// [`Broker::poll_local`]; call [`Broker::handle_timeout`] when
/// [`Broker::poll_timeout`]'s instant is reached and
/// [`Broker::handle_disconnect`] once a socket is closed, whoever closed it.
#[derive(Debug)]
pub struct Broker {
    pub(super) cfg: BrokerConfig,
    pub(super) conns: HashMap<ConnId, Conn>,
    pub(super) sessions: HashMap<Arc<str>, Session>,
    pub(super) retained: BTreeMap<Arc<str>, Msg>,
    pub(super) retained_bytes: usize,
    pub(super) ready: VecDeque<ConnId>,
    pub(super) local: VecDeque<LocalMessage>,
    pub(super) local_filters: Vec<TopicFilter>,
    pub(super) online: usize,
    pub(super) stats: BrokerStats,
}

pub(super) fn mark_ready(
    conns: &mut HashMap<ConnId, Conn>,
    ready: &mut VecDeque<ConnId>,
    id: ConnId,
) {
    if let Some(c) = conns.get_mut(&id)
        && !c.in_ready
    {
        c.in_ready = true;
        ready.push_back(id);
    }
}

impl Broker {
    /// A broker with `cfg`; local filters that are not valid are ignored.
    pub fn new(cfg: BrokerConfig) -> Self {
        let local_filters = cfg
            .local_filters
            .iter()
            .filter_map(|f| TopicFilter::try_from(f.as_str()).ok())
            .collect();
        Broker {
            cfg,
            conns: HashMap::new(),
            sessions: HashMap::new(),
            retained: BTreeMap::new(),
            retained_bytes: 0,
            ready: VecDeque::new(),
            local: VecDeque::new(),
            local_filters,
            online: 0,
            stats: BrokerStats::default(),
        }
    }

    /// A socket was accepted. `false`: too many sockets, close it now.
    pub fn handle_connect(&mut self, conn: ConnId, now_ms: u64) -> bool {
        if self.conns.len() >= self.cfg.max_clients + PENDING_SOCKETS
            || self.conns.contains_key(&conn)
        {
            self.stats.refused += 1;
            return false;
        }
        let c = Conn {
            framer: Framer::new(self.cfg.max_packet_size),
            version: None,
            client: None,
            will: None,
            keep_alive_ms: 0,
            last_rx_ms: now_ms,
            opened_ms: now_ms,
            control: Vec::new(),
            busy: false,
            in_ready: false,
            closing: false,
            close_sent: false,
        };
        self.conns.insert(conn, c);
        true
    }

    /// Bytes read from a socket.
    pub fn handle_bytes(&mut self, conn: ConnId, bytes: &[u8], now_ms: u64) {
        match self.conns.get_mut(&conn) {
            Some(c) if !c.closing => {
                c.last_rx_ms = now_ms;
                c.framer.push(bytes);
            }
            _ => return,
        }
        loop {
            let Some(c) = self.conns.get_mut(&conn) else {
                return;
            };
            if c.closing {
                return;
            }
            let res = match c.framer.next_packet(c.version.is_none()) {
                Ok(Some(p)) => codec::decode(c.version, p).map(Some),
                Ok(None) => Ok(None),
                Err(e) => Err(e),
            };
            match res {
                Ok(Some(pkt)) => self.on_packet(conn, pkt, now_ms),
                Ok(None) => return,
                Err(e) => return self.fail(conn, e, now_ms),
            }
        }
    }

    /// The bytes of the last transmit to `conn` are written.
    pub fn handle_sent(&mut self, conn: ConnId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.busy = false;
        let more = !c.control.is_empty()
            || c.closing
            || c.client
                .as_ref()
                .and_then(|id| self.sessions.get(id))
                .is_some_and(|s| s.has_output(self.cfg.max_inflight));
        if more {
            mark_ready(&mut self.conns, &mut self.ready, conn);
        }
    }

    /// The socket of `conn` is closed. Without a DISCONNECT first, the will
    /// is published.
    pub fn handle_disconnect(&mut self, conn: ConnId, now_ms: u64) {
        self.close(conn, now_ms, true, None);
        self.conns.remove(&conn);
    }

    /// Closes connections silent for 1.5× their keepalive (or without a
    /// CONNECT in time) and ends expired sessions.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        let connect_timeout = self.cfg.connect_timeout_ms;
        let expired: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                !c.closing && Self::deadline(c, connect_timeout).is_some_and(|d| now_ms >= d)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.stats.keepalive_timeouts += 1;
            self.close(id, now_ms, true, Some(0x8d));
        }
        self.sessions
            .retain(|_, s| Self::expiry(s).is_none_or(|e| now_ms < e));
    }

    /// The next instant [`Broker::handle_timeout`] has work, if any.
    pub fn poll_timeout(&self) -> Option<u64> {
        let conns = self
            .conns
            .values()
            .filter(|c| !c.closing)
            .filter_map(|c| Self::deadline(c, self.cfg.connect_timeout_ms));
        let sessions = self.sessions.values().filter_map(Self::expiry);
        conns.chain(sessions).min()
    }

    fn deadline(c: &Conn, connect_timeout: u64) -> Option<u64> {
        match c.client {
            None => Some(c.opened_ms + connect_timeout),
            Some(_) if c.keep_alive_ms > 0 => Some(c.last_rx_ms + c.keep_alive_ms * 3 / 2),
            Some(_) => None,
        }
    }

    fn expiry(s: &Session) -> Option<u64> {
        (s.conn.is_none() && s.expiry_s != u32::MAX)
            .then(|| s.offline_since_ms + u64::from(s.expiry_s) * 1000)
    }

    /// Bytes to write to one connection, and whether to close it after.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        while let Some(id) = self.ready.pop_front() {
            let Some(c) = self.conns.get_mut(&id) else {
                continue;
            };
            c.in_ready = false;
            if c.busy || c.close_sent {
                continue;
            }
            let mut bytes = std::mem::take(&mut c.control);
            if c.closing {
                c.close_sent = true;
                c.busy = true;
                return Some(Transmit {
                    conn: id,
                    bytes,
                    close: true,
                });
            }
            if let Some(s) = c.client.as_ref().and_then(|cl| self.sessions.get_mut(cl)) {
                s.fill(&mut bytes, self.cfg.max_inflight, MAX_BATCH);
            }
            if bytes.is_empty() {
                continue;
            }
            c.busy = true;
            return Some(Transmit {
                conn: id,
                bytes,
                close: false,
            });
        }
        None
    }

    /// A message on a topic the edge itself subscribes to.
    pub fn poll_local(&mut self) -> Option<LocalMessage> {
        self.local.pop_front()
    }

    /// Publishes from the edge (DeviceTwin) to the clients.
    pub fn publish_local(
        &mut self,
        topic: &str,
        payload: impl Into<Bytes>,
        qos: u8,
        retain: bool,
    ) -> Result<(), PublishError> {
        if qos > 1 {
            return Err(PublishError::Qos(qos));
        }
        let topic = match TopicName::try_from(topic) {
            Ok(t) if !t.is_empty() => t,
            _ => return Err(PublishError::Topic(topic.to_owned())),
        };
        let msg = Msg {
            topic,
            payload: payload.into(),
            qos,
            retain,
        };
        if retain {
            self.retain(&msg);
        }
        self.route(msg, false);
        Ok(())
    }

    /// Counters and gauges.
    pub fn stats(&self) -> BrokerStats {
        BrokerStats {
            clients_online: self.online,
            sessions: self.sessions.len(),
            retained: self.retained.len(),
            ..self.stats.clone()
        }
    }

    pub(super) fn fail(&mut self, conn: ConnId, e: FrameError, now_ms: u64) {
        let code = match e {
            FrameError::TooLarge { .. } => {
                self.stats.closed_oversize += 1;
                0x95
            }
            FrameError::Malformed => {
                self.stats.closed_malformed += 1;
                0x81
            }
        };
        self.close(conn, now_ms, true, Some(code));
    }

    pub(super) fn control(&mut self, conn: ConnId, out: Outbound<'_>, now_ms: u64) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let Some(v) = c.version else { return };
        encode(v, out, &mut c.control);
        if c.control.len() > MAX_CONTROL {
            return self.close(conn, now_ms, true, None);
        }
        mark_ready(&mut self.conns, &mut self.ready, conn);
    }

    /// Starts closing `conn`: its session is detached, its will published
    /// when `will` is set, a v5 client told `reason`.
    pub(super) fn close(&mut self, conn: ConnId, now_ms: u64, will: bool, reason: Option<u8>) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.closing {
            return;
        }
        c.closing = true;
        if let (Some(code), Some(Version::V5), Some(_)) = (reason, c.version, &c.client) {
            encode(Version::V5, Outbound::Disconnect(code), &mut c.control);
        }
        let w = c.will.take();
        let client = c.client.take();
        mark_ready(&mut self.conns, &mut self.ready, conn);
        if let Some(id) = client {
            self.online -= 1;
            self.detach(&id, conn, now_ms);
        }
        if let (true, Some(w)) = (will, w) {
            self.stats.wills += 1;
            if w.retain {
                self.retain(&w);
            }
            self.route(w, true);
        }
    }

    fn detach(&mut self, id: &Arc<str>, conn: ConnId, now_ms: u64) {
        let Some(s) = self.sessions.get_mut(id) else {
            return;
        };
        if s.conn != Some(conn) {
            return;
        }
        if !s.persistent() {
            self.sessions.remove(id);
            return;
        }
        s.detach(now_ms);
        let offline = self.sessions.values().filter(|s| s.conn.is_none()).count();
        if offline > self.cfg.max_sessions {
            let oldest = self
                .sessions
                .iter()
                .filter(|(_, s)| s.conn.is_none())
                .min_by_key(|(_, s)| s.offline_since_ms)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.sessions.remove(&k);
                self.stats.sessions_evicted += 1;
            }
        }
    }
}
