//! The custom resources cloudcontrol reads and writes in Kubernetes mode:
//! KubeEdge's Device and DeviceModel (`devices.kubeedge.io/v1beta1`,
//! defined with kube-derive) and Apiary's NodeSync (a node's delivery
//! checkpoint). `cloudcontrol crds` prints their CRDs, checked in under
//! `control/crds/`.
//!
//! Types only: it depends on nothing else in the crate.

use std::collections::BTreeMap;

use ::kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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

/// The CRDs of Device, DeviceModel and NodeSync as YAML documents.
pub fn crds_yaml() -> String {
    let mut out = String::new();
    for crd in [Device::crd(), DeviceModel::crd(), NodeSync::crd()] {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(&crd).unwrap_or_default());
    }
    out
}
