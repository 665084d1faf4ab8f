//! EventBus: one face for both MQTT modes, so the daemon wires DeviceTwin
//! the same way whether the broker is embedded or external.

use std::net::SocketAddr;

use bytes::Bytes;
use serde::Deserialize;

use super::external::{self, ClientHandle};
use super::serve::{BrokerHandle, serve};
use crate::broker::proto::{Broker, BrokerConfig, ExternalConfig, LocalMessage, PublishError};

/// Where the devices' MQTT broker is (KubeEdge's `mqttMode`, by name).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MqttMode {
    /// The embedded broker (the default).
    #[default]
    Internal,
    /// An external broker such as mosquitto.
    External,
}

/// `eventBus` in edgecore's config.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct EventBusConfig {
    /// Run the EventBus and DeviceTwin in the daemon. Default true.
    pub enable: bool,
    /// Default `internal`.
    pub mqtt_mode: MqttMode,
    /// Settings of the embedded broker (`internal` mode).
    pub broker: BrokerConfig,
    /// Settings of the external-broker client (`external` mode).
    pub external: ExternalConfig,
}

impl Default for EventBusConfig {
    fn default() -> Self {
        Self {
            enable: true,
            mqtt_mode: MqttMode::default(),
            broker: BrokerConfig::default(),
            external: ExternalConfig::default(),
        }
    }
}

/// The running EventBus, either mode.
#[derive(Debug, Clone)]
pub enum EventBus {
    Embedded {
        handle: BrokerHandle,
        addr: SocketAddr,
    },
    External(ClientHandle),
}

impl EventBus {
    /// Starts the EventBus on the current monoio runtime (timer enabled):
    /// binds and serves the embedded broker, or connects to the external one
    /// (retrying in the background). Fails only if the listener cannot bind.
    pub fn start(cfg: &EventBusConfig) -> std::io::Result<Self> {
        match cfg.mqtt_mode {
            MqttMode::Internal => {
                let listener = monoio::net::TcpListener::bind(cfg.broker.listen.as_str())?;
                let addr = listener.local_addr()?;
                let handle = BrokerHandle::new(Broker::new(cfg.broker.clone()));
                monoio::spawn(serve(listener, handle.clone()));
                Ok(EventBus::Embedded { handle, addr })
            }
            MqttMode::External => {
                let handle = ClientHandle::new(cfg.external.clone());
                monoio::spawn(external::run(handle.clone()));
                Ok(EventBus::External(handle))
            }
        }
    }

    /// The embedded broker's address (`None` in external mode).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            EventBus::Embedded { addr, .. } => Some(*addr),
            EventBus::External(_) => None,
        }
    }

    /// The next message on the edge's topics.
    pub async fn next_local(&self) -> LocalMessage {
        match self {
            EventBus::Embedded { handle, .. } => handle.next_local().await,
            EventBus::External(c) => c.next_local().await,
        }
    }

    /// Publishes to the devices (DeviceTwin's answers), not retained.
    pub fn publish(
        &self,
        topic: &str,
        payload: impl Into<Bytes>,
        qos: u8,
    ) -> Result<(), PublishError> {
        match self {
            EventBus::Embedded { handle, .. } => {
                handle.with(|b| b.publish_local(topic, payload, qos, false))
            }
            EventBus::External(c) => c.publish(topic, payload, qos),
        }
    }
}
