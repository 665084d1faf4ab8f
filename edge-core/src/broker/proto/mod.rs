//! The sans-IO half of the EventBus: the embedded MQTT broker ([`Broker`])
//! and the client of an external broker ([`Client`]) as state machines, with
//! the MQTT framing and v3.1.1 / v5 codec they share.
//!
//! Inputs are `handle_*` calls (a socket accepted or closed, bytes read,
//! bytes written, a deadline reached, a publish from the edge), each given
//! the time as milliseconds from any monotonic origin; outputs are `poll_*`
//! calls (bytes to write and whether to close, messages for the edge, the
//! next deadline). The monoio glue (`broker::glue`) does the I/O and owns
//! the clock.
//!
//! It must never depend on monoio or any other runtime, on the glue or the
//! rest of edgecore; it opens no socket, reads no clock, starts no task and
//! logs nothing. Its dependencies are mqtt-proto and bytes for packets,
//! serde for its settings and thiserror for its errors.

mod codec;
mod config;
mod core;
mod dispatch;
mod encode;
mod external;
mod fuzz;
mod packet;
mod session;
#[cfg(test)]
mod tests;
mod topic;

use bytes::Bytes;

pub use self::codec::FrameError;
pub use self::config::{BrokerConfig, User};
pub use self::core::Broker;
pub use self::external::{Client, ClientError, ExternalConfig};
pub use self::fuzz::fuzz_bytes;
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
