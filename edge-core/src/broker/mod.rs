//! EventBus: the edge's MQTT broker, embedded or external.
//!
//! [`Broker`] is a sans-IO MQTT 3.1.1 / 5 broker (QoS 0 and 1, retained
//! messages, wills, keepalive, clean and persistent sessions, user/password
//! authentication, bounded everything) that routes `$`-prefixed topics such as
//! KubeEdge's `$hw/events/...` like any other. [`serve`] runs it on monoio;
//! [`external`] is the alternative: a small client of an external broker
//! (mosquitto) subscribing to the same topics. Messages on the topics the edge
//! subscribes to ([`KUBEEDGE_TOPICS`]) come out of [`Broker::poll_local`] /
//! [`external::Client::poll_local`]; DeviceTwin publishes with
//! [`Broker::publish_local`] / [`external::Client::publish`]. [`EventBus`]
//! puts either mode behind one face for the daemon.
//!
//! Two rooms: `proto`, the sans-IO state machines (broker, external client,
//! codec), which never touch a runtime, a socket or a clock; and `glue`, the
//! monoio tasks that drive them, which hold no protocol logic. `proto` never
//! depends on `glue`. This module only gathers their public items.

mod glue;
mod proto;

pub use self::glue::{BrokerHandle, EventBus, EventBusConfig, MqttMode, serve};
pub use self::proto::{
    Broker, BrokerConfig, BrokerStats, ConnId, FrameError, KUBEEDGE_TOPICS, LocalMessage,
    PublishError, Transmit, User, fuzz_bytes, matches,
};

pub mod external {
    //! The external-broker mode: the sans-IO [`Client`] and its settings, and
    //! [`ClientHandle`] / [`run`], which drive it on monoio with reconnects.

    pub use super::glue::{ClientHandle, run};
    pub use super::proto::{Client, ClientError, ExternalConfig};
}
