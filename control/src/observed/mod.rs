//! Where what the edges report goes: status files under the status dir
//! ([`status`]), always, and in Kubernetes mode status patches to the API
//! server ([`apiserver`]), retried by their own task ([`patches`]).
//! [`Observed`] takes the core's status effects and does both.
//!
//! It may depend on the core's [`StatusChange`] and the custom resources
//! ([`crate::crd`]); never on the process glue or the desired state.

pub mod apiserver;
pub mod patches;
pub mod status;

use tokio::sync::mpsc;

use crate::core::StatusChange;

use self::status::{StatusDir, StatusError};

/// The status files, and the patch task in Kubernetes mode.
#[derive(Debug)]
pub struct Observed {
    files: StatusDir,
    patches: Option<mpsc::UnboundedSender<StatusChange>>,
}

impl Observed {
    /// Writes into `files`; with a client, also patches the API server.
    pub fn new(files: StatusDir, kube: Option<::kube::Client>) -> Observed {
        let patches = kube.map(|client| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(patches::write_patches(client, rx));
            tx
        });
        Observed { files, patches }
    }

    /// `node` is an edge node: its status file exists from now on.
    pub fn node_assigned(&self, node: &str) {
        log(self.files.ensure_node(node));
    }

    /// Applies `change`, reported by (or about the link of) `node`.
    pub fn apply(&self, node: &str, change: StatusChange) {
        log(self.write_file(node, &change));
        if let Some(tx) = &self.patches {
            let _ = tx.send(change);
        }
    }

    fn write_file(&self, node: &str, change: &StatusChange) -> Result<(), StatusError> {
        let files = &self.files;
        match change {
            StatusChange::NodeLink {
                ready,
                reason,
                at_ms,
                ..
            } => files.node_link(node, *ready, reason, *at_ms),
            StatusChange::Node { status, .. } => files.node_status(node, status),
            StatusChange::Pod {
                namespace,
                name,
                status,
            } => files.pod_status(namespace, name, node, status),
            StatusChange::Device {
                namespace,
                name,
                reported,
            } => files.device_status(namespace, name, node, reported),
            StatusChange::Checkpoint { .. } => Ok(()),
        }
    }
}

fn log(r: Result<(), StatusError>) {
    if let Err(e) = r {
        tracing::warn!("status: {e}");
    }
}
