//! The broker's state machine: connections, sessions, routing, retained
//! messages, wills and keepalive. No I/O, no clock: time comes in as
//! milliseconds from any monotonic origin.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use mqtt_proto::{TopicFilter, TopicName};

use super::codec::{
    self, ConnackCode, ConnectReq, FrameError, Framer, Inbound, Msg, Outbound, Version,
};
use super::session::Session;
use super::topic::matches;
use super::{BrokerConfig, BrokerStats, ConnId, LocalMessage, PublishError, Transmit};

/// Bytes of publishes one transmit carries at most.
const MAX_BATCH: usize = 64 * 1024;
/// Unsent control packets (acks) a client may pile up by not reading.
const MAX_CONTROL: usize = 1024 * 1024;
/// Sockets beyond `max_clients` that may wait for their CONNECT.
const PENDING_SOCKETS: usize = 64;

#[derive(Debug)]
struct Conn {
    framer: Framer,
    version: Option<Version>,
    client: Option<Arc<str>>,
    will: Option<Msg>,
    keep_alive_ms: u64,
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
    conns: HashMap<ConnId, Conn>,
    sessions: HashMap<Arc<str>, Session>,
    retained: BTreeMap<Arc<str>, Msg>,
    ready: VecDeque<ConnId>,
    local: VecDeque<LocalMessage>,
    local_filters: Vec<TopicFilter>,
    online: usize,
    pub(super) stats: BrokerStats,
}

fn mark_ready(conns: &mut HashMap<ConnId, Conn>, ready: &mut VecDeque<ConnId>, id: ConnId) {
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

    fn fail(&mut self, conn: ConnId, e: FrameError, now_ms: u64) {
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

    fn control(&mut self, conn: ConnId, out: Outbound<'_>, now_ms: u64) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let Some(v) = c.version else { return };
        codec::encode(v, out, &mut c.control);
        if c.control.len() > MAX_CONTROL {
            return self.close(conn, now_ms, true, None);
        }
        mark_ready(&mut self.conns, &mut self.ready, conn);
    }

    /// Starts closing `conn`: its session is detached, its will published
    /// when `will` is set, a v5 client told `reason`.
    fn close(&mut self, conn: ConnId, now_ms: u64, will: bool, reason: Option<u8>) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.closing {
            return;
        }
        c.closing = true;
        if let (Some(code), Some(Version::V5), Some(_)) = (reason, c.version, &c.client) {
            codec::encode(Version::V5, Outbound::Disconnect(code), &mut c.control);
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

    fn retain(&mut self, msg: &Msg) {
        let key: &str = &msg.topic;
        if msg.payload.is_empty() {
            self.retained.remove(key);
        } else if self.retained.contains_key(key) || self.retained.len() < self.cfg.max_retained {
            let mut m = msg.clone();
            m.retain = true;
            self.retained.insert(Arc::from(key), m);
        } else {
            self.stats.dropped_messages += 1;
        }
    }

    /// Hands `msg` to every matching session (and the edge, if `to_local`).
    fn route(&mut self, msg: Msg, to_local: bool) {
        if to_local && self.local_filters.iter().any(|f| matches(f, &msg.topic)) {
            if self.local.len() >= self.cfg.max_local_queue {
                self.local.pop_front();
                self.stats.local_dropped += 1;
            }
            self.local.push_back(LocalMessage {
                topic: msg.topic.to_string(),
                payload: msg.payload.clone(),
            });
        }
        for s in self.sessions.values_mut() {
            let Some(granted) = s.granted_for(&msg.topic) else {
                continue;
            };
            let mut m = msg.clone();
            m.qos = m.qos.min(granted);
            m.retain = false;
            let before = s.dropped;
            if s.enqueue(m, self.cfg.max_queued_messages)
                && let Some(cid) = s.conn
            {
                mark_ready(&mut self.conns, &mut self.ready, cid);
            }
            self.stats.dropped_messages += s.dropped - before;
        }
    }

    fn on_packet(&mut self, conn: ConnId, pkt: Inbound, now_ms: u64) {
        let connected = self.conns.get(&conn).is_some_and(|c| c.client.is_some());
        match pkt {
            Inbound::Connect(req) if !connected => self.on_connect(conn, *req, now_ms),
            _ if !connected => self.fail(conn, FrameError::Malformed, now_ms),
            Inbound::Publish { mut msg, pid } => {
                if msg.topic.is_empty() {
                    return self.fail(conn, FrameError::Malformed, now_ms);
                }
                match (msg.qos, pid) {
                    (1, Some(p)) => self.control(conn, Outbound::Puback(p), now_ms),
                    (2, Some(p)) => self.control(conn, Outbound::Pubrec(p), now_ms),
                    _ => {}
                }
                msg.qos = msg.qos.min(1);
                if msg.retain {
                    self.retain(&msg);
                }
                self.route(msg, true);
            }
            Inbound::Puback(pid) => {
                if let Some(s) = self.session_of(conn) {
                    s.acked(pid);
                    mark_ready(&mut self.conns, &mut self.ready, conn);
                }
            }
            Inbound::Pubrel(pid) => self.control(conn, Outbound::Pubcomp(pid), now_ms),
            Inbound::Subscribe { pid, filters } => self.on_subscribe(conn, pid, filters, now_ms),
            Inbound::Unsubscribe { pid, filters } => {
                let count = filters.len();
                if let Some(s) = self.session_of(conn) {
                    filters.iter().for_each(|f| s.unsubscribe(f));
                }
                self.control(conn, Outbound::Unsuback { pid, count }, now_ms);
            }
            Inbound::Pingreq => self.control(conn, Outbound::Pingresp, now_ms),
            Inbound::Disconnect { with_will } => self.close(conn, now_ms, with_will, None),
            Inbound::Connect(_) | Inbound::Unexpected => {
                self.fail(conn, FrameError::Malformed, now_ms)
            }
            Inbound::Ignored => {}
        }
    }

    fn session_of(&mut self, conn: ConnId) -> Option<&mut Session> {
        let id = self.conns.get(&conn)?.client.as_ref()?;
        self.sessions.get_mut(id)
    }
}

impl Broker {
    fn refuse(&mut self, conn: ConnId, code: ConnackCode, now_ms: u64) {
        self.stats.refused += 1;
        self.control(
            conn,
            Outbound::Connack {
                session_present: false,
                code,
                assigned_id: None,
            },
            now_ms,
        );
        self.close(conn, now_ms, false, None);
    }

    fn on_connect(&mut self, conn: ConnId, req: ConnectReq, now_ms: u64) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.version = Some(req.version);
        if !self.cfg.users.is_empty() {
            let ok = self.cfg.users.iter().any(|u| {
                req.username.as_deref() == Some(u.username.as_str())
                    && req.password.as_deref() == Some(u.password.as_bytes())
            });
            if !ok {
                return self.refuse(conn, ConnackCode::BadAuth, now_ms);
            }
        }
        let (id, assigned) = if req.client_id.is_empty() {
            if !req.clean && req.version == Version::V3 {
                return self.refuse(conn, ConnackCode::BadClientId, now_ms);
            }
            let id: Arc<str> = Arc::from(format!("apiary-{}", conn.0));
            (id.clone(), Some(id))
        } else {
            (req.client_id, None)
        };
        let old = self.sessions.get(&id).and_then(|s| s.conn);
        if self.online >= self.cfg.max_clients && old.is_none() {
            return self.refuse(conn, ConnackCode::Unavailable, now_ms);
        }
        if let Some(old) = old {
            self.close(old, now_ms, true, Some(0x8e));
        }
        if req.clean {
            self.sessions.remove(&id);
        }
        let session_present = match self.sessions.get_mut(&id) {
            Some(s) => {
                s.attach(conn, req.version, req.session_expiry);
                true
            }
            None => {
                self.sessions.insert(
                    id.clone(),
                    Session::new(conn, req.version, req.session_expiry),
                );
                false
            }
        };
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.client = Some(id);
        c.will = req.will.map(|mut w| {
            w.qos = w.qos.min(1);
            w
        });
        c.keep_alive_ms = u64::from(req.keep_alive) * 1000;
        self.online += 1;
        let out = Outbound::Connack {
            session_present,
            code: ConnackCode::Accepted,
            assigned_id: assigned,
        };
        self.control(conn, out, now_ms);
    }

    fn on_subscribe(
        &mut self,
        conn: ConnId,
        pid: u16,
        filters: Vec<(TopicFilter, u8)>,
        now_ms: u64,
    ) {
        let max_subs = self.cfg.max_subscriptions;
        let Some(s) = self.session_of(conn) else {
            return;
        };
        let mut granted = Vec::with_capacity(filters.len());
        let mut new = Vec::new();
        for (f, q) in filters {
            let q = q.min(1);
            if !f.is_shared() && s.subscribe(f.clone(), q, max_subs) {
                granted.push(Some(q));
                new.push((f, q));
            } else {
                granted.push(None);
            }
        }
        self.control(conn, Outbound::Suback { pid, granted }, now_ms);
        let max_queued = self.cfg.max_queued_messages;
        let retained: Vec<Msg> = self
            .retained
            .values()
            .filter_map(|m| {
                let q = new
                    .iter()
                    .filter(|(f, _)| matches(f, &m.topic))
                    .map(|(_, q)| *q)
                    .max()?;
                let mut m = m.clone();
                m.qos = m.qos.min(q);
                Some(m)
            })
            .collect();
        if let Some(s) = self.session_of(conn) {
            for m in retained {
                s.enqueue(m, max_queued);
            }
            mark_ready(&mut self.conns, &mut self.ready, conn);
        }
    }
}
