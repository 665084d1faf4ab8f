//! The kinds of object Apiary serves, in one list: the cloud decides which
//! node needs which of them, and the edge's MetaServer serves them back.
//! Keys and message resources name a kind in lowercase singular
//! ([`POD`], …), as KubeEdge does.

/// Lowercase singular kinds, as in [`crate::records::ObjectKey`]s and
/// message resources.
pub const NODE: &str = "node";
pub const POD: &str = "pod";
pub const CONFIGMAP: &str = "configmap";
pub const SECRET: &str = "secret";
pub const DEVICE: &str = "device";
pub const DEVICEMODEL: &str = "devicemodel";

/// KubeEdge's device API group and version.
pub const DEVICES_API_VERSION: &str = "devices.kubeedge.io/v1beta1";

/// Namespace given to cluster-scoped objects (the Node), as KubeEdge does.
pub const CLUSTER_NAMESPACE: &str = "default";

/// One served kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    /// Lowercase singular, e.g. `pod`.
    pub kind: &'static str,
    /// Kubernetes kind, e.g. `Pod`.
    pub type_name: &'static str,
    /// URL plural, e.g. `pods`.
    pub plural: &'static str,
    pub namespaced: bool,
    /// `v1` or [`DEVICES_API_VERSION`].
    pub api_version: &'static str,
}

const fn kind(
    kind: &'static str,
    type_name: &'static str,
    plural: &'static str,
    namespaced: bool,
    api_version: &'static str,
) -> Kind {
    Kind {
        kind,
        type_name,
        plural,
        namespaced,
        api_version,
    }
}

/// Every kind Apiary serves: the core ones first, then KubeEdge's devices.
pub const SERVED: &[Kind] = &[
    kind(POD, "Pod", "pods", true, "v1"),
    kind(CONFIGMAP, "ConfigMap", "configmaps", true, "v1"),
    kind(SECRET, "Secret", "secrets", true, "v1"),
    kind(NODE, "Node", "nodes", false, "v1"),
    kind(DEVICE, "Device", "devices", true, DEVICES_API_VERSION),
    kind(
        DEVICEMODEL,
        "DeviceModel",
        "devicemodels",
        true,
        DEVICES_API_VERSION,
    ),
];

/// The served kind of Kubernetes kind `type_name` (`Pod`).
pub fn by_type_name(type_name: &str) -> Option<&'static Kind> {
    SERVED.iter().find(|k| k.type_name == type_name)
}

/// The served kind named `kind` (`pod`).
pub fn by_kind(kind: &str) -> Option<&'static Kind> {
    SERVED.iter().find(|k| k.kind == kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_found_by_both_names_and_none_twice() {
        for k in SERVED {
            assert_eq!(by_type_name(k.type_name), Some(k));
            assert_eq!(by_kind(k.kind), Some(k));
            assert_eq!(k.kind, k.type_name.to_lowercase());
        }
        assert_eq!(by_type_name("Service"), None);
    }
}
