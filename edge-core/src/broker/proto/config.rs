//! The embedded broker's settings (`eventBus.broker` in edgecore's config).

use serde::Deserialize;

use super::KUBEEDGE_TOPICS;

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
