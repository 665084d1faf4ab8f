//! `edgecore`: the edge daemon.
//!
//! One monoio thread for the link to `cloudhub`, the LMDB store (MetaManager
//! and outbox), the local MetaServer API, DeviceTwin and the embedded MQTT
//! broker. It must never depend on tokio or glommio, start extra threads for
//! its own work, or acknowledge anything to the cloud before it is durable.

pub mod broker;
pub mod twin;
