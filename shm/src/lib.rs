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

/// The ring size a file is created with when the process that creates it
/// has none configured: 64 MiB.
pub const DEFAULT_RING_BYTES: usize = 64 << 20;

/// Which process opens the file, which decides the ring it produces into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A cloudhub shard: consumes "down" (the first ring), produces into
    /// "up" (the second).
    Shard,
    /// cloudcontrol: produces into "down", consumes "up".
    Control,
}

impl Role {
    /// The process that opens the file in this role, for messages.
    pub fn process(self) -> &'static str {
        match self {
            Role::Shard => "cloudhub",
            Role::Control => "cloudcontrol",
        }
    }
}

/// The ring size a process opens a ring file with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingSize {
    /// Set explicitly (a flag or the config file): a new file gets this
    /// size, an existing file of another size is refused
    /// ([`OpenError::SizeConflict`]).
    Configured(usize),
    /// A default: a new file gets this size, an existing file's size is
    /// adopted.
    Default(usize),
}

impl RingSize {
    /// `Configured(bytes)` when `configured` holds a size, else
    /// `Default(default)`.
    pub fn from_setting(configured: Option<usize>, default: usize) -> RingSize {
        configured.map_or(RingSize::Default(default), RingSize::Configured)
    }

    /// The size a new file gets.
    pub fn bytes(self) -> usize {
        match self {
            RingSize::Configured(bytes) | RingSize::Default(bytes) => bytes,
        }
    }
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
