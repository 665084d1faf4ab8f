//! The shared-memory file of one cloudhub shard: a pair of rings between
//! `cloudcontrol` and that shard. The control→shard ("down") ring carries
//! downstream records and control commands; the shard→control ("up") ring
//! carries upstream messages, delivery progress and connect/disconnect
//! events. This crate maps the file ([`RingFile::open`]), builds the two
//! [`Ring`]s of `hub_core::ring` over it, and lets a thread sleep until its
//! ring has data or room ([`Waiter`], futexes on the shared mapping).
//!
//! Mapping and waiting only: no runtime, no threads of its own, no record
//! format. It must never depend on an async runtime (glommio, tokio, monoio):
//! it is used by both the glommio `cloudhub` and the tokio `cloudcontrol`,
//! which call the blocking waits from a thread of their choosing (for
//! glommio, `spawn_blocking`).

mod file;
mod wait;

use std::path::{Path, PathBuf};

pub use file::{OpenError, RingFile};
pub use hub_core::ring::{Cursor, Ring, RingError};
pub use wait::Waiter;

/// Which process opens the file, which decides the ring it produces into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A cloudhub shard: consumes "down" (the first ring), produces into
    /// "up" (the second).
    Shard,
    /// cloudcontrol: produces into "down", consumes "up".
    Control,
}

/// How full both rings of a file are, for metrics. `used` counts bytes
/// published and not yet released, record headers and padding included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Occupancy {
    /// Bytes waiting in the ring this process consumes.
    pub inbound_used: u64,
    /// Data bytes of the ring this process consumes.
    pub inbound_capacity: u64,
    /// Bytes waiting in the ring this process produces into.
    pub outbound_used: u64,
    /// Data bytes of the ring this process produces into.
    pub outbound_capacity: u64,
}

/// The ring file of shard `shard` in `dir`: `shard-{shard}.ring`.
pub fn ring_path(dir: &Path, shard: usize) -> PathBuf {
    dir.join(format!("shard-{shard}.ring"))
}
