//! The monoio half of the EventBus: the tasks that move bytes between
//! sockets and the sans-IO state machines of `broker::proto`, and the clock
//! those machines are given.
//!
//! [`serve()`] runs the embedded broker behind a [`BrokerHandle`]; [`run`]
//! keeps the external client's connection behind a [`ClientHandle`],
//! reconnecting after a delay; [`EventBus`] puts either mode behind one face
//! for the daemon. Everything runs on the calling thread, on a monoio
//! runtime with its timer enabled.
//!
//! It depends on monoio and `broker::proto`. It must never hold protocol
//! logic: no mqtt-proto, no framing or codec, no session or routing state —
//! what to send and when is the state machines' answer. It never depends on
//! tokio or glommio, and starts no thread.

mod eventbus;
mod external;
mod serve;

pub use self::eventbus::{EventBus, EventBusConfig, MqttMode};
pub use self::external::{ClientHandle, run};
pub use self::serve::{BrokerHandle, serve};
