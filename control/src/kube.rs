//! The Kubernetes side of cloudcontrol: KubeEdge's Device and DeviceModel
//! custom resources (`devices.kubeedge.io/v1beta1`, defined with
//! kube-derive; `cloudcontrol crds` prints their CRDs, checked in under
//! `control/crds/`), and the upstream writes: the Node Ready condition
//! (creating the Node when it does not exist), Pod status, and Device
//! status twins, as status patches.
//!
//! [`crate::run`] uses it with `--kube` (or when no manifest directory is
//! given and a kubeconfig exists): [`crate::watch`] keeps the desired
//! state from watch streams, and [`crate::patches`] sends status changes,
//! retried, after the status files are written. These paths are tested
//! against a mocked API service.

use std::collections::BTreeMap;

use ::kube::api::{Api, Patch, PatchParams, PostParams};
use ::kube::{Client, CustomResource, CustomResourceExt, Resource};
use k8s_openapi::api::core::v1::{Node, Pod};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::plan::EDGE_LABEL;
use schema::records::ObjectKey;

/// A reference to a DeviceModel.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct ModelRef {
    pub name: String,
}

/// A twin value with its metadata (`timestamp`, `type`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct TwinProperty {
    pub value: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
}

/// A device property: its desired value and how often it is read.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DeviceProperty {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired: Option<TwinProperty>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_cycle: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collect_cycle: Option<i64>,
}

/// The protocol a device speaks.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProtocolConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_data: Option<BTreeMap<String, String>>,
}

/// KubeEdge's Device (`devices.kubeedge.io/v1beta1`).
#[derive(CustomResource, Debug, Clone, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
#[kube(
    group = "devices.kubeedge.io",
    version = "v1beta1",
    kind = "Device",
    namespaced,
    status = "DeviceStatus"
)]
#[serde(rename_all = "camelCase")]
pub struct DeviceSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_model_ref: Option<ModelRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub properties: Vec<DeviceProperty>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<ProtocolConfig>,
}

/// A reported twin.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Twin {
    pub property_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported: Option<TwinProperty>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_desired: Option<TwinProperty>,
}

/// A Device's status: the twins its node reported.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct DeviceStatus {
    #[serde(default)]
    pub twins: Vec<Twin>,
}

/// A property of a device model.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ModelProperty {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maximum: Option<String>,
}

/// KubeEdge's DeviceModel (`devices.kubeedge.io/v1beta1`).
#[derive(CustomResource, Debug, Clone, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
#[kube(
    group = "devices.kubeedge.io",
    version = "v1beta1",
    kind = "DeviceModel",
    namespaced
)]
#[serde(rename_all = "camelCase")]
pub struct DeviceModelSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub properties: Vec<ModelProperty>,
}

/// A node's delivery checkpoint in Kubernetes mode (KubeEdge's ObjectSync,
/// one object per node instead of one per node and object): the
/// resourceVersion the node acknowledged for each object it holds, keyed
/// `namespace/kind/name` as in message resources, and the last upstream seq
/// taken from it. A copy of the local store written after each batched
/// flush, so it may lag but is never ahead: a cloudcontrol started without
/// its local store resends a little, and loses nothing.
#[derive(CustomResource, Debug, Clone, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
#[kube(
    group = "reliablesyncs.apiary.dev",
    version = "v1alpha1",
    kind = "NodeSync"
)]
#[serde(rename_all = "camelCase")]
pub struct NodeSyncSpec {
    #[serde(default)]
    pub objects: BTreeMap<String, u64>,
    #[serde(default)]
    pub upstream_seq: u64,
    /// Identity of the node's store these entries belong to (0: unknown).
    #[serde(default)]
    pub store_id: u64,
}

/// The field manager of cloudcontrol's server-side applies.
pub const FIELD_MANAGER: &str = "cloudcontrol";

/// A checkpoint key as written in a [`NodeSync`].
pub fn sync_key(key: &ObjectKey) -> String {
    format!("{}/{}/{}", key.namespace, key.kind, key.name)
}

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

/// A node's checkpoint read back from its [`NodeSync`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedCheckpoint {
    pub node: String,
    pub objects: BTreeMap<ObjectKey, u64>,
    pub upstream_seq: u64,
    pub store_id: u64,
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
            let objects = s
                .spec
                .objects
                .into_iter()
                .filter_map(|(k, rv)| {
                    let mut parts = k.splitn(3, '/');
                    let (ns, kind, name) = (parts.next()?, parts.next()?, parts.next()?);
                    Some((crate::plan::key(kind, ns, name), rv))
                })
                .collect();
            Some(LoadedCheckpoint {
                node,
                objects,
                upstream_seq: s.spec.upstream_seq,
                store_id: s.spec.store_id,
            })
        })
        .collect())
}

/// The CRDs of Device, DeviceModel and NodeSync as YAML documents.
pub fn crds_yaml() -> String {
    let mut out = String::new();
    for crd in [Device::crd(), DeviceModel::crd(), NodeSync::crd()] {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(&crd).unwrap_or_default());
    }
    out
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
pub async fn apply_change(
    client: &Client,
    change: &crate::control::StatusChange,
) -> Result<(), ::kube::Error> {
    use crate::control::StatusChange as C;
    match change {
        C::NodeLink {
            node,
            ready,
            reason,
            at_ms,
        } => set_node_ready(client, node, *ready, reason, &crate::util::rfc3339(*at_ms)).await,
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
