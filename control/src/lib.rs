//! `cloudcontrol`: the cloud control process.
//!
//! It turns desired state — a directory of Kubernetes manifests watched by
//! polling ([`manifest`]), or a Kubernetes API server through kube-rs
//! watch streams ([`watch`], custom resources in [`kube`]) — into per-node
//! messages ([`plan`] decides which node needs which object), writes them
//! into the shards' shared-memory rings ([`rings`]), applies what the edges
//! report (node readiness, pod status, device twins: [`status`] files, and
//! status patches in Kubernetes mode, retried by [`patches`]), checkpoints
//! what every node acknowledged so that a restart resends only the rest
//! ([`checkpoint`], LMDB; copied to a `NodeSync` object per node in
//! Kubernetes mode), and issues and renews the edges' certificates over
//! HTTPS ([`certs`], [`bootstrap`], [`client_auth`], [`token`]). [`control`]
//! ties these together as a state machine fed by [`run`]'s thin tokio loop.
//!
//! It must never depend on glommio or monoio, and decides which node needs
//! which object in plain, tested functions rather than inside reconcilers.

pub mod bootstrap;
pub mod certs;
pub mod checkpoint;
pub mod client_auth;
pub mod config;
pub mod control;
pub mod kube;
pub mod manifest;
pub mod patches;
pub mod plan;
pub mod rings;
pub mod run;
pub mod status;
pub mod token;
pub mod util;
pub mod watch;
