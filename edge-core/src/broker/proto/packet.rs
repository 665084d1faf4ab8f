//! The broker's own version-neutral view of MQTT packets: what a client
//! sends ([`Inbound`], decoded by `codec`), what the broker sends back
//! ([`Outbound`], encoded by `encode`) and the message they carry ([`Msg`]).

use std::sync::Arc;

use bytes::Bytes;
use mqtt_proto::{TopicFilter, TopicName};

/// Protocol spoken on one connection, fixed by its CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Version {
    /// MQTT 3.1 or 3.1.1.
    V3,
    /// MQTT 5.
    V5,
}

/// A message as the broker routes and stores it.
#[derive(Debug, Clone)]
pub(crate) struct Msg {
    pub(crate) topic: TopicName,
    pub(crate) payload: Bytes,
    /// 0 or 1 once accepted (an incoming QoS 2 publish is routed at QoS 1).
    pub(crate) qos: u8,
    pub(crate) retain: bool,
}

/// What a CONNECT asks for.
#[derive(Debug)]
pub(crate) struct ConnectReq {
    pub(crate) version: Version,
    pub(crate) clean: bool,
    pub(crate) keep_alive: u16,
    pub(crate) client_id: Arc<str>,
    pub(crate) will: Option<Msg>,
    pub(crate) username: Option<Arc<str>>,
    pub(crate) password: Option<Bytes>,
    /// v5 session expiry interval in seconds; v3: 0 for a clean session,
    /// `u32::MAX` otherwise.
    pub(crate) session_expiry: u32,
}

/// A packet from a client.
#[derive(Debug)]
pub(crate) enum Inbound {
    Connect(Box<ConnectReq>),
    Publish {
        msg: Msg,
        pid: Option<u16>,
    },
    Puback(u16),
    Pubrel(u16),
    Subscribe {
        pid: u16,
        filters: Vec<(TopicFilter, u8)>,
    },
    Unsubscribe {
        pid: u16,
        filters: Vec<TopicFilter>,
    },
    Pingreq,
    /// `with_will`: v5 reason 0x04, publish the will anyway.
    Disconnect {
        with_will: bool,
    },
    /// A packet a server never receives (CONNACK, SUBACK…): protocol error.
    Unexpected,
    /// Acknowledgements of QoS 2 flows the broker does not start.
    Ignored,
}

/// Answer to a CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnackCode {
    Accepted,
    BadClientId,
    Unavailable,
    BadAuth,
}

/// A packet to a client.
#[derive(Debug)]
pub(crate) enum Outbound<'a> {
    Connack {
        session_present: bool,
        code: ConnackCode,
        assigned_id: Option<Arc<str>>,
    },
    Publish {
        msg: &'a Msg,
        pid: Option<u16>,
        dup: bool,
    },
    Puback(u16),
    Pubrec(u16),
    Pubcomp(u16),
    Suback {
        pid: u16,
        granted: Vec<Option<u8>>,
    },
    Unsuback {
        pid: u16,
        count: usize,
    },
    Pingresp,
    /// v5 only (v3 has no server DISCONNECT): the reason code.
    Disconnect(u8),
}
