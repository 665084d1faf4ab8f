//! EventBus: the edge's MQTT broker, embedded or external.
//!
//! [`Broker`] is a sans-IO MQTT 3.1.1 / 5 broker (QoS 0 and 1, retained
//! messages, wills, keepalive, clean and persistent sessions, user/password
//! authentication, bounded everything) that routes `$`-prefixed topics such as
//! KubeEdge's `$hw/events/...` like any other. [`serve`] runs it on monoio;
//! [`external`] is the alternative: a small client of an external broker
//! (mosquitto) subscribing to the same topics. Messages on the topics the edge
//! subscribes to ([`KUBEEDGE_TOPICS`]) come out of [`Broker::poll_local`] /
//! [`external::Client::poll_local`]; DeviceTwin publishes with
//! [`Broker::publish_local`] / [`external::Client::publish`]. [`EventBus`]
//! puts either mode behind one face for the daemon.

mod codec;
mod core;
mod dispatch;
mod encode;
mod eventbus;
pub mod external;
mod external_glue;
mod serve;
mod session;
#[cfg(test)]
mod tests;
mod topic;

use bytes::Bytes;
use serde::Deserialize;

pub use self::codec::FrameError;
pub use self::core::Broker;
pub use self::eventbus::{EventBus, EventBusConfig, MqttMode};
pub use self::serve::{BrokerHandle, serve};
pub use self::topic::{KUBEEDGE_TOPICS, matches};

/// A connection, numbered by the caller (the glue).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// Bytes to write to a connection; close it after when `close` is set.
#[derive(Debug)]
pub struct Transmit {
    pub conn: ConnId,
    pub bytes: Vec<u8>,
    pub close: bool,
}

/// A message published on a topic the edge subscribes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalMessage {
    pub topic: String,
    pub payload: Bytes,
}

/// Why [`Broker::publish_local`] refused a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    #[error("invalid topic name {0:?}")]
    Topic(String),
    #[error("QoS {0} not supported (0 or 1)")]
    Qos(u8),
}

/// A user allowed to connect.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct User {
    pub username: String,
    pub password: String,
}

/// Broker settings (`eventBus.broker` in edgecore's config).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct BrokerConfig {
    /// Address of the embedded broker. Default `127.0.0.1:1883` (KubeEdge's
    /// internal MQTT server listens there too).
    pub listen: String,
    /// Connected clients at most; more get CONNACK "server unavailable".
    /// Default 256.
    pub max_clients: usize,
    /// Largest packet accepted, fixed header included; a larger one closes
    /// its connection. Default 256 KiB.
    pub max_packet_size: usize,
    /// Messages queued per client (online or offline); beyond it the oldest
    /// QoS 0 message is dropped, or the new one refused. Default 1000.
    pub max_queued_messages: usize,
    /// Bytes of queued payloads and topics per client, same policy.
    /// Default 1 MiB.
    pub max_queued_bytes: usize,
    /// QoS 1 messages in flight per client. Default 32.
    pub max_inflight: usize,
    /// Subscriptions per client. Default 100.
    pub max_subscriptions: usize,
    /// Persistent sessions kept while their client is offline. Default 256.
    pub max_sessions: usize,
    /// Retained topics. Default 10,000.
    pub max_retained: usize,
    /// Bytes of retained payloads and topics in all. Default 4 MiB.
    pub max_retained_bytes: usize,
    /// Messages for the edge waiting to be taken. Default 10,000.
    pub max_local_queue: usize,
    /// Time a socket has to send CONNECT. Default 10 s.
    pub connect_timeout_ms: u64,
    /// Users and passwords; empty (the default) allows anonymous clients.
    pub users: Vec<User>,
    /// Filters the edge itself subscribes to. Default [`KUBEEDGE_TOPICS`].
    pub local_filters: Vec<String>,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            listen: "127.0.0.1:1883".to_owned(),
            max_clients: 256,
            max_packet_size: 256 * 1024,
            max_queued_messages: 1000,
            max_queued_bytes: 1024 * 1024,
            max_inflight: 32,
            max_subscriptions: 100,
            max_sessions: 256,
            max_retained: 10_000,
            max_retained_bytes: 4 * 1024 * 1024,
            max_local_queue: 10_000,
            connect_timeout_ms: 10_000,
            users: Vec::new(),
            local_filters: KUBEEDGE_TOPICS.iter().map(|s| (*s).to_owned()).collect(),
        }
    }
}

/// Counters and gauges of a broker.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BrokerStats {
    pub clients_online: usize,
    pub sessions: usize,
    pub retained: usize,
    /// Messages a full queue refused or dropped.
    pub dropped_messages: u64,
    /// Messages for the edge dropped because it did not take them.
    pub local_dropped: u64,
    pub closed_malformed: u64,
    pub closed_oversize: u64,
    pub keepalive_timeouts: u64,
    pub wills: u64,
    /// CONNECTs or sockets refused (auth, limits).
    pub refused: u64,
    pub sessions_evicted: u64,
}

/// Feeds arbitrary bytes to a fresh broker core, as a fuzz target does.
///
/// The first byte chooses a prefix: nothing, or a valid MQTT 3.1.1 or 5
/// CONNECT (so later bytes reach the connected states); the rest is cut into
/// reads of the size the second byte gives. Must never panic.
pub fn fuzz_bytes(data: &[u8]) {
    const V3: &[u8] = &[0x10, 12, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 30, 0, 0];
    const V5: &[u8] = &[0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 5, 2, 0, 30, 0, 0, 0];
    let mut cfg = BrokerConfig {
        max_packet_size: 4096,
        ..BrokerConfig::default()
    };
    cfg.max_queued_messages = 64;
    let mut b = Broker::new(cfg);
    let conn = ConnId(1);
    let sub = ConnId(2);
    b.handle_connect(conn, 0);
    b.handle_connect(sub, 0);
    // A second client subscribed to everything receives what the first routes.
    b.handle_bytes(
        sub,
        &[0x10, 12, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 30, 0, 0],
        0,
    );
    b.handle_bytes(sub, &[0x82, 6, 0, 1, 0, 1, b'#', 1], 0);
    let (first, rest) = data.split_first().unwrap_or((&0, &[]));
    match first % 3 {
        1 => b.handle_bytes(conn, V3, 1),
        2 => b.handle_bytes(conn, V5, 1),
        _ => {}
    }
    let (step, body) = match rest.split_first() {
        Some((s, body)) => (usize::from(*s).max(1), body),
        None => (7, rest),
    };
    for (i, chunk) in body.chunks(step).enumerate() {
        let now = 2 + i as u64 * 1000;
        b.handle_bytes(conn, chunk, now);
        while let Some(t) = b.poll_transmit() {
            b.handle_sent(t.conn);
        }
        while b.poll_local().is_some() {}
        b.handle_timeout(now);
    }
    b.handle_disconnect(conn, u64::MAX / 4);
    b.handle_timeout(u64::MAX / 2);
    while let Some(t) = b.poll_transmit() {
        b.handle_sent(t.conn);
    }
}
