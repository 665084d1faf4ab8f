//! KubeEdge's DeviceTwin JSON shapes on MQTT (`dttype` in KubeEdge): the twin
//! of one property (`MsgTwin`), the update a device publishes, the result,
//! delta, document and membership messages the edge answers with, and the
//! Device object (devices.kubeedge.io/v1beta1) as it comes from the cloud.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A value with the time it was set (milliseconds since the Unix epoch).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TwinValue {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<ValueMetadata>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValueMetadata {
    #[serde(default)]
    pub timestamp: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypeMetadata {
    #[serde(rename = "type", default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
}

/// How often each side changed a value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TwinVersion {
    pub cloud: i64,
    pub edge: i64,
}

/// The twin of one property: desired (`expected`) and reported (`actual`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MsgTwin {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<TwinValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actual: Option<TwinValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<TypeMetadata>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_version: Option<TwinVersion>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actual_version: Option<TwinVersion>,
}

impl MsgTwin {
    pub(crate) fn expected_value(&self) -> Option<&str> {
        self.expected.as_ref()?.value.as_deref()
    }

    pub(crate) fn actual_value(&self) -> Option<&str> {
        self.actual.as_ref()?.value.as_deref()
    }
}

/// `$hw/events/device/{id}/twin/update` from a device or mapper. A `null`
/// twin deletes that property's twin.
#[derive(Debug, Deserialize)]
pub(crate) struct TwinUpdate {
    #[serde(default)]
    pub(crate) event_id: String,
    pub(crate) twin: BTreeMap<String, Option<MsgTwin>>,
}

/// `…/twin/get` and `$hw/events/node/{node}/membership/get`.
#[derive(Debug, Deserialize)]
pub(crate) struct GetRequest {
    #[serde(default)]
    pub(crate) event_id: String,
}

/// `…/state/update`.
#[derive(Debug, Deserialize)]
pub(crate) struct StateUpdate {
    #[serde(default)]
    pub(crate) event_id: String,
    pub(crate) state: String,
}

/// Answer on `…/twin/update/result` and `…/twin/get/result`; `code` and
/// `reason` only on errors (KubeEdge's `Result`).
#[derive(Debug, Serialize)]
pub(crate) struct TwinResult<'a> {
    pub(crate) event_id: &'a str,
    pub(crate) timestamp: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) twin: Option<&'a BTreeMap<String, MsgTwin>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) code: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) reason: Option<&'a str>,
}

/// `…/twin/update/delta`: every twin, and the desired values not reported yet.
#[derive(Debug, Serialize)]
pub(crate) struct TwinDelta<'a> {
    pub(crate) event_id: &'a str,
    pub(crate) timestamp: i64,
    pub(crate) twin: &'a BTreeMap<String, MsgTwin>,
    pub(crate) delta: BTreeMap<&'a str, &'a str>,
}

/// One property in `…/twin/update/document`.
#[derive(Debug, Serialize)]
pub(crate) struct TwinDoc<'a> {
    pub(crate) last: Option<&'a MsgTwin>,
    pub(crate) current: Option<&'a MsgTwin>,
}

#[derive(Debug, Serialize)]
pub(crate) struct TwinDocument<'a> {
    pub(crate) event_id: &'a str,
    pub(crate) timestamp: i64,
    pub(crate) twin: BTreeMap<&'a str, TwinDoc<'a>>,
}

/// A device as membership messages list it (KubeEdge's `dttype.Device`).
#[derive(Debug, Serialize)]
pub(crate) struct MemberDevice<'a> {
    pub(crate) id: &'a str,
    pub(crate) name: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub(crate) state: &'a str,
    pub(crate) twin: &'a BTreeMap<String, MsgTwin>,
}

/// `$hw/events/node/{node}/membership/get/result`.
#[derive(Debug, Serialize)]
pub(crate) struct MembershipDetail<'a> {
    pub(crate) event_id: &'a str,
    pub(crate) timestamp: i64,
    pub(crate) devices: Vec<MemberDevice<'a>>,
}

/// `$hw/events/node/{node}/membership/updated`.
#[derive(Debug, Serialize)]
pub(crate) struct MembershipUpdate<'a> {
    pub(crate) event_id: &'a str,
    pub(crate) timestamp: i64,
    pub(crate) added_devices: Vec<MemberDevice<'a>>,
    pub(crate) removed_devices: Vec<MemberDevice<'a>>,
}

/// The part of a Device object (devices.kubeedge.io/v1beta1) the edge uses.
#[derive(Debug, Deserialize)]
pub(crate) struct DeviceObject {
    pub(crate) metadata: ObjectMeta,
    #[serde(default)]
    pub(crate) spec: DeviceSpec,
    #[serde(default)]
    pub(crate) status: DeviceStatus,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ObjectMeta {
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) namespace: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct DeviceSpec {
    #[serde(default)]
    pub(crate) properties: Vec<DeviceProperty>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct DeviceProperty {
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) desired: Option<JsonValue>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct DeviceStatus {
    #[serde(default)]
    pub(crate) twins: Vec<StatusTwin>,
}

/// `status.twins[]`: the older place of the desired value.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct StatusTwin {
    pub(crate) property_name: String,
    #[serde(default)]
    pub(crate) desired: Option<JsonValue>,
}

/// `{ "value": … }`, the value given as a string or any JSON scalar.
#[derive(Debug, Deserialize)]
pub(crate) struct JsonValue {
    #[serde(default)]
    pub(crate) value: Option<serde_json::Value>,
}

impl JsonValue {
    pub(crate) fn as_string(&self) -> Option<String> {
        match self.value.as_ref()? {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Null => None,
            v => Some(v.to_string()),
        }
    }
}

/// KubeEdge's rule for twin names: letters, digits and `-_.,:/@#`, 1–128 bytes.
pub(crate) fn valid_key(key: &str) -> bool {
    (1..=128).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.,:/@#".contains(&b))
}

/// Values: at most 512 bytes, no control characters.
pub(crate) fn valid_value(v: &str) -> bool {
    v.len() <= 512 && !v.chars().any(char::is_control)
}
