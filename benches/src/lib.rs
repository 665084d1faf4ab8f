//! `fleetbench` and the criterion benches.
//!
//! Workloads shared by the criterion benches in `benches/benches/` and the
//! fleet-scale load generator ([`fleet`]: a real `cloudhub`, thousands of
//! TLS edges on tokio, the control side of the rings). Only measurement code
//! lives here; nothing in the product crates may depend on this crate.

pub mod alloc;
pub mod codec;
pub mod engine;
pub mod fleet;
pub mod workload;
