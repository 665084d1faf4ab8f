//! `fleetbench` and the criterion benches.
//!
//! Workloads shared by the criterion benches in `benches/benches/` and, later,
//! the fleet-scale load generator. Only measurement code lives here; nothing
//! in the product crates may depend on this crate.

pub mod alloc;
pub mod codec;
pub mod engine;
pub mod workload;
