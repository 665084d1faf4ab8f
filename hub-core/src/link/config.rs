//! Settings of the edge end of the link.

use schema::codec::DEFAULT_MAX_FRAME_BYTES;

use crate::backoff::BackoffConfig;
use crate::protocol::Millis;
use crate::ratelimit::{DEFAULT_BURST, DEFAULT_QPS};

/// Upstream window used until a `Welcome` names one (or when it names 0).
pub const DEFAULT_WINDOW: u32 = 256;

/// Settings of the edge end of the link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkConfig {
    /// This node's name, sent in `Hello`; must match its certificate.
    pub node_id: String,
    /// Keepalive interval until `Welcome` names one. Default 15 s.
    pub keepalive_interval_ms: Millis,
    /// Intervals without any received byte before the link closes with
    /// `Timeout`. Default 3; 0 is taken as 1.
    pub missed_keepalives: u32,
    /// Time from transport up to `Welcome` before closing with
    /// `HandshakeTimeout`. Default 10 s.
    pub handshake_timeout_ms: Millis,
    /// Reconnect delays.
    pub backoff: BackoffConfig,
    /// Upstream messages per second, 0 for unlimited. Default 30.
    pub qps: u32,
    /// Upstream messages sent at once from a full bucket. Default 60.
    pub burst: u32,
    /// Largest frame accepted from the cloud, and sent before `Welcome`
    /// names the cloud's limit. Default 16 MiB.
    pub max_frame_bytes: u32,
    /// Identity of the edge's store, sent in `Hello`: a random number the
    /// store chose when it was created, so that the cloud can tell a store
    /// that lost everything from one that resumes. 0 (the default) means
    /// none.
    pub store_id: u64,
}

impl LinkConfig {
    /// The defaults for node `node_id`.
    pub fn new(node_id: impl Into<String>) -> Self {
        Self {
            node_id: node_id.into(),
            keepalive_interval_ms: 15_000,
            missed_keepalives: 3,
            handshake_timeout_ms: 10_000,
            backoff: BackoffConfig::default(),
            qps: DEFAULT_QPS,
            burst: DEFAULT_BURST,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            store_id: 0,
        }
    }
}
