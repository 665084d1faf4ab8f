//! One client's session: its subscriptions, the messages queued for it and
//! the QoS 1 messages sent to it and not acknowledged yet.
//!
//! The queue is bounded in messages and bytes: when it is full, the oldest
//! QoS 0 message makes room;
//! with no QoS 0 message to drop, the new message is refused and counted.

use std::collections::{BTreeMap, VecDeque};

use mqtt_proto::TopicFilter;

use super::ConnId;
use super::encode::encode;
use super::packet::{Msg, Outbound, Version};
use super::topic::matches;

#[derive(Debug)]
pub(crate) struct Session {
    /// The connection the session is attached to, if online.
    pub(crate) conn: Option<ConnId>,
    pub(crate) version: Version,
    subs: Vec<(TopicFilter, u8)>,
    /// Messages waiting to be sent; `Msg::qos` is the delivery QoS.
    queue: VecDeque<Msg>,
    queued_bytes: usize,
    inflight: BTreeMap<u16, Msg>,
    next_pid: u16,
    /// Send every in-flight message again (with DUP) before anything new.
    resend: bool,
    /// Seconds the session outlives its connection (`u32::MAX`: forever).
    pub(crate) expiry_s: u32,
    pub(crate) offline_since_ms: u64,
    pub(crate) dropped: u64,
}

impl Session {
    pub(crate) fn new(conn: ConnId, version: Version, expiry_s: u32) -> Self {
        Session {
            conn: Some(conn),
            version,
            subs: Vec::new(),
            queue: VecDeque::new(),
            queued_bytes: 0,
            inflight: BTreeMap::new(),
            next_pid: 1,
            resend: false,
            expiry_s,
            offline_since_ms: 0,
            dropped: 0,
        }
    }

    pub(crate) fn persistent(&self) -> bool {
        self.expiry_s > 0
    }

    /// Adds or replaces a subscription; `false` when `max` are held already.
    pub(crate) fn subscribe(&mut self, filter: TopicFilter, qos: u8, max: usize) -> bool {
        if let Some(s) = self.subs.iter_mut().find(|(f, _)| *f == filter) {
            s.1 = qos;
            return true;
        }
        if self.subs.len() >= max {
            return false;
        }
        self.subs.push((filter, qos));
        true
    }

    pub(crate) fn unsubscribe(&mut self, filter: &TopicFilter) {
        self.subs.retain(|(f, _)| f != filter);
    }

    /// The highest QoS granted by a subscription matching `topic`.
    pub(crate) fn granted_for(&self, topic: &str) -> Option<u8> {
        self.subs
            .iter()
            .filter(|(f, _)| matches(f, topic))
            .map(|(_, q)| *q)
            .max()
    }

    /// Queues `msg` (its QoS already reduced to the granted one).
    pub(crate) fn enqueue(&mut self, msg: Msg, limits: (usize, usize)) -> bool {
        let (max_queued, max_bytes) = limits;
        if self.conn.is_none() && msg.qos == 0 {
            return false;
        }
        let size = msg_size(&msg);
        while self.queue.len() >= max_queued
            || (!self.queue.is_empty() && self.queued_bytes + size > max_bytes)
        {
            let Some(i) = self.queue.iter().position(|m| m.qos == 0) else {
                self.dropped += 1;
                return false;
            };
            if let Some(m) = self.queue.remove(i) {
                self.queued_bytes -= msg_size(&m);
            }
            self.dropped += 1;
        }
        self.queued_bytes += size;
        self.queue.push_back(msg);
        true
    }

    /// Whether [`Session::fill`] would write something.
    pub(crate) fn has_output(&self, max_inflight: usize) -> bool {
        (self.resend && !self.inflight.is_empty())
            || self
                .queue
                .front()
                .is_some_and(|m| m.qos == 0 || self.inflight.len() < max_inflight)
    }

    /// Encodes what may be sent now into `buf`, up to about `max_bytes`.
    pub(crate) fn fill(&mut self, buf: &mut Vec<u8>, max_inflight: usize, max_bytes: usize) {
        if self.resend {
            self.resend = false;
            for (pid, msg) in &self.inflight {
                let out = Outbound::Publish {
                    msg,
                    pid: Some(*pid),
                    dup: true,
                };
                encode(self.version, out, buf);
            }
        }
        while buf.len() < max_bytes {
            let Some(front) = self.queue.front() else {
                break;
            };
            if front.qos > 0 && self.inflight.len() >= max_inflight {
                break;
            }
            let Some(msg) = self.queue.pop_front() else {
                break;
            };
            self.queued_bytes -= msg_size(&msg);
            if msg.qos == 0 {
                encode(
                    self.version,
                    Outbound::Publish {
                        msg: &msg,
                        pid: None,
                        dup: false,
                    },
                    buf,
                );
                continue;
            }
            let pid = self.alloc_pid();
            encode(
                self.version,
                Outbound::Publish {
                    msg: &msg,
                    pid: Some(pid),
                    dup: false,
                },
                buf,
            );
            self.inflight.insert(pid, msg);
        }
    }

    fn alloc_pid(&mut self) -> u16 {
        loop {
            let pid = self.next_pid;
            self.next_pid = self.next_pid.checked_add(1).unwrap_or(1);
            if !self.inflight.contains_key(&pid) {
                return pid;
            }
        }
    }

    /// A PUBACK from the client.
    pub(crate) fn acked(&mut self, pid: u16) {
        self.inflight.remove(&pid);
    }

    /// The connection went away; QoS 0 messages go with it.
    pub(crate) fn detach(&mut self, now_ms: u64) {
        self.conn = None;
        self.offline_since_ms = now_ms;
        self.queue.retain(|m| m.qos > 0);
        self.queued_bytes = self.queue.iter().map(msg_size).sum();
    }

    /// A new connection took the session over: resend what was in flight.
    pub(crate) fn attach(&mut self, conn: ConnId, version: Version, expiry_s: u32) {
        self.conn = Some(conn);
        self.version = version;
        self.expiry_s = expiry_s;
        self.resend = true;
    }
}

/// Bytes a queued message holds (payload and topic).
fn msg_size(m: &Msg) -> usize {
    m.payload.len() + m.topic.len()
}
