//! `cloudhub`: the cloud hub process.
//!
//! Drives the `hub-core` engine on glommio, one executor per core, each shard
//! owning the sessions and per-node queues of the nodes that hash to it:
//! sockets, TLS, connection hand-off between shards, the shard side of the
//! shared-memory rings, metrics. Glue only: protocol decisions belong in
//! `hub-core`. It must never depend on tokio or monoio, nor share mutable
//! state between shards on the data path.
//!
//! Start with [`server::start`]; [`tasks`] holds a shard's loops, [`shard`]
//! its synchronous state, [`conn`] a connection's handshake, hand-off and
//! loop.

pub mod config;
pub mod conn;
pub mod fd;
pub mod http;
pub mod latency;
pub mod limits;
pub mod metrics;
pub mod server;
pub mod shard;
pub mod tasks;
pub mod tls;

pub use config::{Config, Flags};
