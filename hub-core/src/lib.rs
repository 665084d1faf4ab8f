//! Apiary's link protocol and session engine.
//!
//! Both ends of the cloud–edge link as deterministic state machines: inputs
//! are `handle_*` calls (bytes received, a timer fired, a message to send),
//! outputs are `poll_*` calls (bytes to transmit, the next deadline, events).
//! Time is always passed in. This is where the correctness of delivery lives,
//! so it is where the simulation tests live.
//!
//! It must never depend on an async runtime (glommio, monoio, tokio), open a
//! socket or file, or read a clock; CI checks the runtime rule. The only
//! `unsafe` is in [`ring`], which works on shared memory the glue maps.

pub mod backoff;
pub mod body;
pub mod hub;
pub mod link;
pub mod node;
pub mod placement;
mod pool;
pub mod protocol;
pub mod queue;
pub mod ratelimit;
pub mod ring;

pub use body::AsMessage;
pub use hub::{ConnId, Hub, HubConfig, HubEvent};
pub use placement::shard_of;

/// Version of the link protocol spoken in `Hello` and `Welcome`.
pub const PROTOCOL_VERSION: u16 = 1;
