//! The copies of the nodes' checkpoints kept in Kubernetes (one NodeSync
//! object per node), read back at start to fill a local store that is new
//! or behind.

use ::kube::Client;
use ::kube::api::Api;
use schema::records::ObjectKey;

use crate::core::checkpoints::NodeCheckpoint;
use crate::crd::NodeSync;

/// A node's checkpoint read back from its [`NodeSync`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedCheckpoint {
    pub node: String,
    pub checkpoint: NodeCheckpoint,
}

/// Every node's checkpoint from the API server (keys that do not read as
/// `namespace/kind/name` are skipped).
pub async fn load_checkpoints(client: &Client) -> Result<Vec<LoadedCheckpoint>, ::kube::Error> {
    let api: Api<NodeSync> = Api::all(client.clone());
    let list = api.list(&Default::default()).await?;
    Ok(list
        .items
        .into_iter()
        .filter_map(|s| {
            let node = s.metadata.name?;
            let acked = (s.spec.objects.into_iter())
                .filter_map(|(k, rv)| Some((ObjectKey::parse(&k).ok()?, rv)))
                .collect();
            let checkpoint = NodeCheckpoint {
                acked,
                upstream_seq: s.spec.upstream_seq,
                store_id: s.spec.store_id,
            };
            Some(LoadedCheckpoint { node, checkpoint })
        })
        .collect())
}
