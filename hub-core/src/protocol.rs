//! The rules of the cloud–edge link, shared by [`crate::hub`] (cloud side)
//! and [`crate::link`] (edge side).
//!
//! Time is a number of milliseconds since an arbitrary start ([`Millis`]),
//! passed in by the caller; nothing here reads a clock.
//!
//! # Handshake
//!
//! 1. The edge opens a connection (TLS with its client certificate) and sends
//!    `Hello { node_id, protocol_version, resume_seq, received_seq }`, where
//!    `resume_seq` is the highest downstream sequence number it has durably
//!    committed (0 on a fresh node) and `received_seq` the highest it has
//!    received, committed or not.
//! 2. The cloud closes with `Unauthorized` if `node_id` is not the identity
//!    of the certificate, `VersionMismatch` if it does not speak the version,
//!    `NodeLimit` if it already holds `node_limit` nodes, `HandshakeTimeout`
//!    if no `Hello` came within the handshake deadline. Otherwise it answers
//!    `Welcome { resume_seq, keepalive_interval_ms, max_frame_bytes, window }`
//!    where `resume_seq` is the highest upstream sequence number it has taken
//!    over from this node (0 if it does not know) and `window` is how many
//!    unacknowledged upstream messages the edge may have in flight.
//! 3. A second connection for a node replaces the first, which is closed with
//!    `Replaced`.
//!
//! # Downstream (cloud → edge)
//!
//! - The cloud numbers messages per node as they enter the send window:
//!   1, 2, 3, … across connections. At most `window` numbered messages are
//!   unacknowledged. Everything ready for a node leaves as one `Batch`.
//! - The edge hands each message with a sequence number above the highest it
//!   has seen to the application, which commits durably and reports the
//!   highest committed number; the edge then sends a cumulative `Ack { seq }`.
//! - On reconnect the cloud releases what `Hello.resume_seq` covers and sends
//!   the rest again, in order, before anything new. A cloud that has no
//!   numbered messages in flight for the node continues numbering above the
//!   edge's `received_seq`: a restarted hub must not reuse a number the edge
//!   still holds, or the edge would drop the new message as a duplicate and
//!   its commit of the old one would acknowledge the new one. An edge whose
//!   `resume_seq` is below what it once acknowledged has lost data: the cloud
//!   reports that the node needs a full resync.
//! - The cloud sends the unacknowledged window again if no ack arrives within
//!   the retransmission timeout; the edge ignores numbers it has already seen.
//! - Best-effort messages carry `seq` 0 and the `best_effort` flag: they are
//!   delivered at most once and never retransmitted.
//!
//! # Upstream (edge → cloud)
//!
//! - The application writes each upstream message to the durable outbox with
//!   a sequence number (strictly increasing for the node's lifetime) and then
//!   hands it to the edge link, which sends it when the window and the rate
//!   limit allow. On `Welcome` the edge forgets entries up to
//!   `Welcome.resume_seq` and sends the others again, in order.
//! - The cloud hands each message with a number above the highest it has
//!   taken to the application, ignores the others (duplicates), and sends a
//!   cumulative `Ack { seq }` once the application reports it has taken them
//!   over. The edge then deletes outbox entries up to `seq`.
//!
//! # Liveness
//!
//! Each side sends `Keepalive` when it has sent nothing for a keepalive
//! interval, and closes with `Timeout` when it has received nothing for
//! `missed_keepalives` intervals (3 by default). `Close` is the last frame a
//! side sends before closing the connection; `retry_after_ms`, when set, tells
//! the edge not to reconnect sooner.

/// Milliseconds since an arbitrary start, passed in by the caller.
pub type Millis = u64;

/// Capabilities both ends announce in `Hello` and `Welcome`.
pub const CAPABILITIES: &[&str] = &["batch", "resume"];

/// Bytes for one connection, produced by a `poll_transmit`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Transmit {
    /// Whole frames, to be written in order in one send.
    pub bytes: Vec<u8>,
    /// Close the connection once `bytes` are written.
    pub close: bool,
}
