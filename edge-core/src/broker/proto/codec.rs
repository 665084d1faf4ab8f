//! MQTT packets into the broker: framing under a size limit, and the
//! translation of mqtt-proto's v3.1.1 / v5 packets into the broker's own
//! version-neutral view of them ([`Inbound`]).
//!
//! The framer reads the fixed header itself, refuses a packet whose declared
//! size is over the limit before buffering any of it, and hands mqtt-proto
//! only complete packets, so a declared length never becomes an allocation.

use bytes::Bytes;
use mqtt_proto::{Pid, QoS, TopicName, v3, v5};

use super::packet::{ConnectReq, Inbound, Msg, Version};

/// Why a connection's bytes are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("packet of {size} bytes over the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("malformed packet")]
    Malformed,
}

/// Splits a byte stream into complete MQTT packets.
#[derive(Debug)]
pub(crate) struct Framer {
    buf: Vec<u8>,
    pos: usize,
    max_packet: usize,
}

impl Framer {
    pub(crate) fn new(max_packet: usize) -> Self {
        Framer {
            buf: Vec::new(),
            pos: 0,
            max_packet,
        }
    }

    pub(crate) fn push(&mut self, bytes: &[u8]) {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        // A large packet's buffer is not kept for the connection's lifetime.
        if self.buf.capacity() > 64 * 1024 && self.buf.len() + bytes.len() <= 16 * 1024 {
            self.buf.shrink_to(16 * 1024);
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete packet, header included. Before CONNECT
    /// (`expect_connect`) anything but a CONNECT is refused at its first byte.
    pub(crate) fn next_packet(
        &mut self,
        expect_connect: bool,
    ) -> Result<Option<&[u8]>, FrameError> {
        let rest = &self.buf[self.pos..];
        match rest.first() {
            Some(&b) if (expect_connect && b != 0x10) || b >> 4 == 0 || b >> 4 == 15 => {
                return Err(FrameError::Malformed);
            }
            _ => {}
        }
        let mut remaining: usize = 0;
        let mut i = 1;
        loop {
            let Some(&b) = rest.get(i) else {
                return Ok(None);
            };
            remaining |= usize::from(b & 0x7f) << (7 * (i - 1));
            if b & 0x80 == 0 {
                break;
            }
            if i == 4 {
                return Err(FrameError::Malformed);
            }
            i += 1;
        }
        let total = 1 + i + remaining;
        if total > self.max_packet {
            return Err(FrameError::TooLarge {
                size: total,
                limit: self.max_packet,
            });
        }
        if rest.len() < total {
            return Ok(None);
        }
        let start = self.pos;
        self.pos += total;
        Ok(Some(&self.buf[start..self.pos]))
    }
}

/// Protocol level named by a CONNECT packet (header included), if readable.
fn connect_level(pkt: &[u8]) -> Option<u8> {
    let mut i = 1;
    while pkt.get(i)? & 0x80 != 0 {
        i += 1;
    }
    let body = pkt.get(i + 1..)?;
    let n = usize::from(u16::from_be_bytes([*body.first()?, *body.get(1)?]));
    body.get(2 + n).copied()
}

fn qos_u8(q: QoS) -> u8 {
    q as u8
}

fn msg(topic: TopicName, payload: Bytes, qos: QoS, retain: bool) -> Msg {
    Msg {
        topic,
        payload,
        qos: qos_u8(qos),
        retain,
    }
}

/// Decodes one complete packet. `version` is `None` until CONNECT.
pub(crate) fn decode(version: Option<Version>, pkt: &[u8]) -> Result<Inbound, FrameError> {
    let version = match version {
        Some(v) => v,
        None if pkt.first() == Some(&0x10) => match connect_level(pkt) {
            Some(5) => Version::V5,
            Some(_) => Version::V3,
            None => return Err(FrameError::Malformed),
        },
        None => return Err(FrameError::Malformed),
    };
    match version {
        Version::V3 => match v3::Packet::decode(pkt) {
            Ok(Some(p)) => Ok(from_v3(p)),
            _ => Err(FrameError::Malformed),
        },
        Version::V5 => match v5::Packet::decode(pkt) {
            Ok(Some(p)) => from_v5(p),
            _ => Err(FrameError::Malformed),
        },
    }
}

fn from_v3(p: v3::Packet) -> Inbound {
    match p {
        v3::Packet::Connect(c) => Inbound::Connect(Box::new(ConnectReq {
            version: Version::V3,
            clean: c.clean_session,
            keep_alive: c.keep_alive,
            client_id: c.client_id,
            will: c
                .last_will
                .map(|w| msg(w.topic_name, w.message, w.qos, w.retain)),
            username: c.username,
            password: c.password,
            session_expiry: if c.clean_session { 0 } else { u32::MAX },
        })),
        v3::Packet::Publish(p) => Inbound::Publish {
            pid: p.qos_pid.pid().map(Pid::value),
            msg: msg(p.topic_name, p.payload, p.qos_pid.qos(), p.retain),
        },
        v3::Packet::Puback(pid) => Inbound::Puback(pid.value()),
        v3::Packet::Pubrel(pid) => Inbound::Pubrel(pid.value()),
        v3::Packet::Pubrec(_) | v3::Packet::Pubcomp(_) => Inbound::Ignored,
        v3::Packet::Subscribe(s) => Inbound::Subscribe {
            pid: s.pid.value(),
            filters: s.topics.into_iter().map(|(f, q)| (f, qos_u8(q))).collect(),
        },
        v3::Packet::Unsubscribe(u) => Inbound::Unsubscribe {
            pid: u.pid.value(),
            filters: u.topics,
        },
        v3::Packet::Pingreq => Inbound::Pingreq,
        v3::Packet::Disconnect => Inbound::Disconnect { with_will: false },
        _ => Inbound::Unexpected,
    }
}

fn from_v5(p: v5::Packet) -> Result<Inbound, FrameError> {
    Ok(match p {
        v5::Packet::Connect(c) => Inbound::Connect(Box::new(ConnectReq {
            version: Version::V5,
            clean: c.clean_start,
            keep_alive: c.keep_alive,
            client_id: c.client_id,
            will: c
                .last_will
                .map(|w| msg(w.topic_name, w.payload, w.qos, w.retain)),
            username: c.username,
            password: c.password,
            session_expiry: c.properties.session_expiry_interval.unwrap_or(0),
        })),
        v5::Packet::Publish(p) => {
            // No topic alias is granted (CONNACK leaves topic_alias_max at 0).
            if p.properties.topic_alias.is_some() {
                return Err(FrameError::Malformed);
            }
            Inbound::Publish {
                pid: p.qos_pid.pid().map(Pid::value),
                msg: msg(p.topic_name, p.payload, p.qos_pid.qos(), p.retain),
            }
        }
        v5::Packet::Puback(a) => Inbound::Puback(a.pid.value()),
        v5::Packet::Pubrel(r) => Inbound::Pubrel(r.pid.value()),
        v5::Packet::Pubrec(_) | v5::Packet::Pubcomp(_) | v5::Packet::Auth(_) => Inbound::Ignored,
        v5::Packet::Subscribe(s) => Inbound::Subscribe {
            pid: s.pid.value(),
            filters: s
                .topics
                .into_iter()
                .map(|(f, o)| (f, qos_u8(o.max_qos)))
                .collect(),
        },
        v5::Packet::Unsubscribe(u) => Inbound::Unsubscribe {
            pid: u.pid.value(),
            filters: u.topics,
        },
        v5::Packet::Pingreq => Inbound::Pingreq,
        v5::Packet::Disconnect(d) => Inbound::Disconnect {
            with_will: d.reason_code == v5::DisconnectReasonCode::DisconnectWithWillMessage,
        },
        _ => Inbound::Unexpected,
    })
}
