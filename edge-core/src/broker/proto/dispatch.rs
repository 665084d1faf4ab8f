//! What the broker does with each packet from a connected client, and with
//! CONNECT and SUBSCRIBE in particular.

use mqtt_proto::TopicFilter;

use super::codec::FrameError;
use super::core::{Broker, mark_ready};
use super::packet::{ConnackCode, ConnectReq, Inbound, Msg, Outbound, Version};
use super::session::Session;
use super::topic::matches;
use super::{ConnId, LocalMessage};

use std::sync::Arc;

impl Broker {
    /// Stores (or, with an empty payload, clears) the retained message of a
    /// topic, within the count and byte limits.
    pub(super) fn retain(&mut self, msg: &Msg) {
        let key: &str = &msg.topic;
        let size = |m: &Msg| m.topic.len() + m.payload.len();
        if let Some(old) = self.retained.remove(key) {
            self.retained_bytes -= size(&old);
        }
        if msg.payload.is_empty() {
            return;
        }
        if self.retained.len() >= self.cfg.max_retained
            || self.retained_bytes + size(msg) > self.cfg.max_retained_bytes
        {
            self.stats.dropped_messages += 1;
            return;
        }
        let mut m = msg.clone();
        m.retain = true;
        self.retained_bytes += size(&m);
        self.retained.insert(Arc::from(key), m);
    }

    /// Hands `msg` to every matching session (and the edge, if `to_local`).
    pub(super) fn route(&mut self, msg: Msg, to_local: bool) {
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
            if s.enqueue(m, (self.cfg.max_queued_messages, self.cfg.max_queued_bytes))
                && let Some(cid) = s.conn
            {
                mark_ready(&mut self.conns, &mut self.ready, cid);
            }
            self.stats.dropped_messages += s.dropped - before;
        }
    }

    pub(super) fn on_packet(&mut self, conn: ConnId, pkt: Inbound, now_ms: u64) {
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
        let max_queued = (self.cfg.max_queued_messages, self.cfg.max_queued_bytes);
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
