//! `cloudcontrol`: the cloud control process.
//!
//! It turns desired state into per-node messages in the shards' rings, and
//! what the edges report into status. Its rooms:
//! - [`core`]: the sans-IO core. [`core::Control`] takes desired state,
//!   ring records and the time and returns effects; [`core::plan`] decides
//!   which node needs which object; [`core::checkpoints`] keeps what every
//!   node acknowledged.
//! - [`desired`]: where desired state comes from: a manifest directory,
//!   polled, or a Kubernetes API server through kube-rs watch streams.
//! - [`observed`]: where reports go: status files, and status patches to
//!   the API server in Kubernetes mode, retried.
//! - [`checkpoint`]: the durable checkpoints (LMDB), and their NodeSync
//!   copies in Kubernetes mode.
//! - [`pki`]: the CA, join tokens, and the HTTPS endpoint that signs and
//!   renews edge certificates.
//! - [`process`]: the tokio glue that opens the parts and runs the loop.
//!
//! [`crd`] holds the custom resources' types, [`config`] the flags and
//! file. Imports go one way: `process` → everything; `desired`,
//! `observed`, `checkpoint` → `core` and `crd`; `core` and `pki` → nothing
//! of the crate (`pki` uses [`util`]).
//!
//! It must never depend on glommio or monoio, and decides which node needs
//! which object in plain, tested functions rather than inside reconcilers.

pub mod checkpoint;
pub mod config;
pub mod core;
pub mod crd;
pub mod desired;
pub mod observed;
pub mod pki;
pub mod process;
pub mod util;
