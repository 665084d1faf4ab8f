//! `edgecore`: Apiary's edge daemon.
//!
//! One monoio thread keeps an edge node in sync with the cloud and serves it
//! locally: the link to `cloudhub` over TLS 1.3 with the node's client
//! certificate ([`link`], driving `hub_core::link::Link`), MetaManager's
//! LMDB store with newer-only group commits and the durable upstream outbox
//! ([`store`], [`outbox`]), the read-only Kubernetes-style MetaServer
//! ([`metaserver`]), certificate bootstrap and rotation ([`join`]), the
//! TOML configuration ([`config`]) and the loop that ties them together
//! ([`daemon`]). The EventBus (an embedded MQTT broker, or a client of an
//! external one: [`broker`]) and DeviceTwin ([`twin`]) plug in through
//! [`hooks::EdgeHooks`]. Nothing is acknowledged to the cloud before it is
//! durable, and the node keeps serving from its store while offline.
//!
//! Edged ([`workloads`]) runs the node's pods through the container
//! runtime's CRI (containerd), on the one helper thread edgecore has: the
//! CRI is gRPC, and tonic needs tokio, which stays on that thread.
//!
//! It must never depend on glommio, run tokio outside Edged's thread, start
//! other threads for its own work, or acknowledge anything to the cloud
//! before it is durable.

pub mod broker;
pub mod config;
pub mod daemon;
pub mod devices;
pub mod hooks;
pub mod join;
pub mod link;
pub mod metaserver;
pub mod outbox;
pub mod store;
pub mod tls;
pub mod twin;
pub mod workloads;
