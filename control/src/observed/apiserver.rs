//! The writes of what edges report to the API server: the Node Ready
//! condition (creating the Node when it does not exist), NodeStatus, Pod
//! status, Device status twins, as status patches, and each node's
//! NodeSync checkpoint copy (server-side apply). Tested against a mocked
//! API service.

use std::collections::BTreeMap;

use ::kube::api::{Api, Patch, PatchParams, PostParams};
use ::kube::{Client, Resource};
use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::{Value, json};

use crate::core::StatusChange;
use crate::core::plan::EDGE_LABEL;
use crate::crd::{Device, FIELD_MANAGER, NodeSync};

/// Writes a node's whole checkpoint (server-side apply: creates the
/// NodeSync, and drops the keys no longer listed).
pub async fn apply_checkpoint(
    client: &Client,
    node: &str,
    objects: &BTreeMap<String, u64>,
    upstream_seq: u64,
    store_id: u64,
) -> Result<(), ::kube::Error> {
    let api: Api<NodeSync> = Api::all(client.clone());
    let obj = json!({
        "apiVersion": NodeSync::api_version(&()), "kind": NodeSync::kind(&()),
        "metadata": {"name": node},
        "spec": {"objects": objects, "upstreamSeq": upstream_seq, "storeId": store_id}});
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(node, &pp, &Patch::Apply(&obj)).await.map(drop)
}

/// Sets an edge node's Ready condition from its link; creates the Node
/// (labelled as an edge node) when the API server has none.
pub async fn set_node_ready(
    client: &Client,
    node: &str,
    ready: bool,
    reason: &str,
    now: &str,
) -> Result<(), ::kube::Error> {
    let api: Api<Node> = Api::all(client.clone());
    let patch = json!({"status": {"conditions": [{
        "type": "Ready", "status": if ready { "True" } else { "False" }, "reason": reason,
        "lastHeartbeatTime": now, "lastTransitionTime": now}]}});
    let pp = PatchParams::default();
    match api.patch_status(node, &pp, &Patch::Strategic(&patch)).await {
        Err(::kube::Error::Api(e)) if e.code == 404 => {
            let mut n = Node::default();
            n.metadata.name = Some(node.to_owned());
            n.metadata.labels = Some([(EDGE_LABEL.to_owned(), String::new())].into());
            api.create(&PostParams::default(), &n).await?;
            api.patch_status(node, &pp, &Patch::Strategic(&patch))
                .await
                .map(drop)
        }
        r => r.map(drop),
    }
}

/// Replaces a Pod's status with what its node reported.
pub async fn patch_pod_status(
    client: &Client,
    namespace: &str,
    name: &str,
    status: &Value,
) -> Result<(), ::kube::Error> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let patch = json!({"status": status});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(drop)
}

/// Writes the twins a node reported into a Device's status.
pub async fn patch_device_status(
    client: &Client,
    namespace: &str,
    name: &str,
    reported: &Value,
) -> Result<(), ::kube::Error> {
    let api: Api<Device> = Api::namespaced(client.clone(), namespace);
    let patch = json!({"status": {"twins": reported["twins"]}});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(drop)
}

/// Merges what a node reported about itself (conditions and other
/// NodeStatus fields) into its status.
pub async fn patch_node_status(
    client: &Client,
    node: &str,
    status: &Value,
) -> Result<(), ::kube::Error> {
    let api: Api<Node> = Api::all(client.clone());
    let patch = json!({"status": status});
    api.patch_status(node, &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .map(drop)
}

/// Applies one [`StatusChange`] to the API server.
pub async fn apply_change(client: &Client, change: &StatusChange) -> Result<(), ::kube::Error> {
    use StatusChange as C;
    match change {
        C::NodeLink {
            node,
            ready,
            reason,
            at_ms,
        } => set_node_ready(client, node, *ready, reason, &clock::rfc3339(*at_ms)).await,
        C::Node { node, status } => patch_node_status(client, node, status).await,
        C::Pod {
            namespace,
            name,
            status,
        } => patch_pod_status(client, namespace, name, status).await,
        C::Device {
            namespace,
            name,
            reported,
        } => patch_device_status(client, namespace, name, reported).await,
        C::Checkpoint {
            node,
            objects,
            upstream_seq,
            store_id,
        } => apply_checkpoint(client, node, objects, *upstream_seq, *store_id).await,
    }
}
