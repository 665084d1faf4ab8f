//! The part of a Pod (and of the ConfigMaps and Secrets it refers to) that
//! Edged acts on, read from the JSON MetaManager stores. Field names are
//! the API server's; unknown fields are ignored.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

/// Why a Pod could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodError {
    /// Not a Pod object at all.
    Json(String),
    /// A field the kubelet requires is missing.
    Missing(&'static str),
}

impl std::fmt::Display for PodError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PodError::Json(e) => write!(f, "not a Pod: {e}"),
            PodError::Missing(field) => write!(f, "the Pod has no {field}"),
        }
    }
}

impl std::error::Error for PodError {}

/// A Pod as Edged runs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Pod {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub spec: PodSpec,
    /// `metadata.creationTimestamp`, as given.
    pub created: Option<String>,
    /// `metadata.deletionTimestamp` is set: stop it (gracefully).
    pub deleting: bool,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PodSpec {
    pub containers: Vec<Container>,
    pub init_containers: Vec<Container>,
    pub restart_policy: RestartPolicy,
    pub host_network: bool,
    pub termination_grace_period_seconds: Option<i64>,
    pub volumes: Vec<Volume>,
    pub node_name: String,
    pub hostname: String,
    pub service_account_name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum RestartPolicy {
    #[default]
    Always,
    OnFailure,
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

/// One container of the Pod. `raw` is its JSON as stored, for the spec
/// hash that tells a changed container from an unchanged one.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Container {
    pub name: String,
    pub image: String,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub env: Vec<EnvVar>,
    pub env_from: Vec<EnvFromSource>,
    pub working_dir: String,
    pub resources: Resources,
    pub image_pull_policy: Option<PullPolicy>,
    pub volume_mounts: Vec<VolumeMount>,
    pub tty: bool,
    pub stdin: bool,
    pub ports: Vec<ContainerPort>,
    pub liveness_probe: Option<Probe>,
    pub readiness_probe: Option<Probe>,
    pub startup_probe: Option<Probe>,
    #[serde(skip)]
    pub raw: Value,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ContainerPort {
    pub name: String,
    pub container_port: u16,
}

/// A liveness, readiness or startup probe, with the API server's defaults.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Probe {
    pub exec: Option<ExecAction>,
    pub http_get: Option<HttpGetAction>,
    pub tcp_socket: Option<TcpSocketAction>,
    pub initial_delay_seconds: u64,
    pub period_seconds: u64,
    pub timeout_seconds: u64,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

impl Default for Probe {
    fn default() -> Self {
        Probe {
            exec: None,
            http_get: None,
            tcp_socket: None,
            initial_delay_seconds: 0,
            period_seconds: 10,
            timeout_seconds: 1,
            success_threshold: 1,
            failure_threshold: 3,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ExecAction {
    pub command: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpGetAction {
    pub path: String,
    /// A number or the name of a container port.
    pub port: Value,
    pub host: String,
    pub scheme: String,
    pub http_headers: Vec<HttpHeader>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpHeader {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TcpSocketAction {
    pub port: Value,
    pub host: String,
}

impl Container {
    /// The kubelet's default: `Always` for a `:latest` (or untagged)
    /// image, `IfNotPresent` otherwise.
    pub fn pull_policy(&self) -> PullPolicy {
        self.image_pull_policy.unwrap_or_else(|| {
            let last = self.image.rsplit('/').next().unwrap_or("");
            let tag = last.split('@').next().unwrap_or("").split_once(':');
            match tag {
                _ if self.image.contains('@') => PullPolicy::IfNotPresent,
                None | Some((_, "latest")) => PullPolicy::Always,
                Some(_) => PullPolicy::IfNotPresent,
            }
        })
    }
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EnvVar {
    pub name: String,
    pub value: Option<String>,
    pub value_from: Option<EnvVarSource>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EnvVarSource {
    pub config_map_key_ref: Option<KeySelector>,
    pub secret_key_ref: Option<KeySelector>,
    pub field_ref: Option<FieldSelector>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct KeySelector {
    pub name: String,
    pub key: String,
    pub optional: bool,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct FieldSelector {
    pub field_path: String,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EnvFromSource {
    pub prefix: String,
    pub config_map_ref: Option<NameRef>,
    pub secret_ref: Option<NameRef>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct NameRef {
    pub name: String,
    pub optional: bool,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Resources {
    pub limits: BTreeMap<String, Value>,
    pub requests: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct VolumeMount {
    pub name: String,
    pub mount_path: String,
    pub read_only: bool,
    pub sub_path: String,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Volume {
    pub name: String,
    pub empty_dir: Option<Value>,
    pub host_path: Option<HostPathSource>,
    pub config_map: Option<ObjectVolumeSource>,
    pub secret: Option<ObjectVolumeSource>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HostPathSource {
    pub path: String,
}

/// A ConfigMap or Secret volume: `name` for ConfigMaps, `secretName` for
/// Secrets.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ObjectVolumeSource {
    #[serde(alias = "secretName")]
    pub name: String,
    pub items: Vec<KeyToPath>,
    pub optional: bool,
    pub default_mode: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct KeyToPath {
    pub key: String,
    pub path: String,
    pub mode: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Metadata {
    name: String,
    namespace: String,
    uid: String,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    creation_timestamp: Option<String>,
    deletion_timestamp: Option<String>,
}

impl Pod {
    /// Reads a Pod from its stored JSON.
    pub fn from_json(bytes: &[u8]) -> Result<Pod, PodError> {
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| PodError::Json(e.to_string()))?;
        Pod::from_value(value)
    }

    pub fn from_value(mut value: Value) -> Result<Pod, PodError> {
        let meta: Metadata = serde_json::from_value(value["metadata"].take())
            .map_err(|e| PodError::Json(format!("metadata: {e}")))?;
        let raw_spec = value["spec"].take();
        let mut spec: PodSpec = serde_json::from_value(raw_spec.clone())
            .map_err(|e| PodError::Json(format!("spec: {e}")))?;
        for (list, field) in [
            (&mut spec.containers, "containers"),
            (&mut spec.init_containers, "initContainers"),
        ] {
            for (c, raw) in list
                .iter_mut()
                .zip(raw_spec[field].as_array().into_iter().flatten())
            {
                c.raw = raw.clone();
            }
        }
        if meta.name.is_empty() {
            return Err(PodError::Missing("metadata.name"));
        }
        if meta.uid.is_empty() {
            return Err(PodError::Missing("metadata.uid"));
        }
        if spec.containers.is_empty() {
            return Err(PodError::Missing("spec.containers"));
        }
        if spec
            .containers
            .iter()
            .chain(&spec.init_containers)
            .any(|c| c.name.is_empty())
        {
            return Err(PodError::Missing("container name"));
        }
        Ok(Pod {
            name: meta.name,
            namespace: if meta.namespace.is_empty() {
                "default".into()
            } else {
                meta.namespace
            },
            uid: meta.uid,
            labels: meta.labels,
            annotations: meta.annotations,
            spec,
            created: meta.creation_timestamp,
            deleting: meta.deletion_timestamp.is_some(),
        })
    }

    /// `terminationGracePeriodSeconds`, the API server's default 30 s.
    pub fn grace_seconds(&self) -> i64 {
        self.spec
            .termination_grace_period_seconds
            .unwrap_or(30)
            .max(0)
    }

    /// Where the kubelet keeps this pod's container logs, under `root`
    /// (`/var/log/pods`): `<root>/<namespace>_<name>_<uid>`.
    pub fn log_directory(&self, root: &str) -> String {
        format!("{root}/{}_{}_{}", self.namespace, self.name, self.uid)
    }
}

/// The ConfigMaps and Secrets a pod's env and volumes refer to, as
/// MetaManager holds them: `data` already decoded (a Secret's base64
/// values as bytes).
pub trait Objects {
    fn config_map(&self, namespace: &str, name: &str) -> Option<BTreeMap<String, Vec<u8>>>;
    fn secret(&self, namespace: &str, name: &str) -> Option<BTreeMap<String, Vec<u8>>>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn container(image: &str) -> Container {
        Container {
            name: "c".into(),
            image: image.into(),
            ..Container::default()
        }
    }

    #[test]
    fn the_pull_policy_defaults_as_the_api_server_sets_it() {
        assert_eq!(container("busybox").pull_policy(), PullPolicy::Always);
        assert_eq!(
            container("busybox:latest").pull_policy(),
            PullPolicy::Always
        );
        assert_eq!(
            container("reg:5000/busybox").pull_policy(),
            PullPolicy::Always
        );
        assert_eq!(
            container("reg:5000/busybox:1").pull_policy(),
            PullPolicy::IfNotPresent
        );
        assert_eq!(
            container("busybox@sha256:abc").pull_policy(),
            PullPolicy::IfNotPresent
        );
        let mut c = container("busybox");
        c.image_pull_policy = Some(PullPolicy::Never);
        assert_eq!(c.pull_policy(), PullPolicy::Never);
    }

    #[test]
    fn a_pod_is_read_with_its_defaults_and_containers_keep_their_json() {
        let pod = Pod::from_value(json!({
            "metadata": {"name": "web", "uid": "u1"},
            "spec": {"containers": [{"name": "app", "image": "busybox:1", "command": ["sh"]}]}
        }))
        .unwrap();
        assert_eq!(pod.namespace, "default");
        assert_eq!(pod.spec.restart_policy, RestartPolicy::Always);
        assert_eq!(pod.grace_seconds(), 30);
        assert_eq!(pod.spec.containers[0].raw["command"], json!(["sh"]));
        assert_eq!(
            pod.log_directory("/var/log/pods"),
            "/var/log/pods/default_web_u1"
        );
    }

    #[test]
    fn a_pod_without_what_the_kubelet_needs_is_refused_clearly() {
        let no_uid = json!({"metadata": {"name": "web"}, "spec": {"containers": [{"name": "a"}]}});
        assert_eq!(
            Pod::from_value(no_uid),
            Err(PodError::Missing("metadata.uid"))
        );
        let none = json!({"metadata": {"name": "web", "uid": "u"}, "spec": {}});
        assert_eq!(
            Pod::from_value(none),
            Err(PodError::Missing("spec.containers"))
        );
        let bad = json!({"metadata": {"name": "web", "uid": "u"}, "spec": {"containers": 3}});
        assert!(matches!(Pod::from_value(bad), Err(PodError::Json(_))));
        assert!(Pod::from_json(b"\xff garbage").is_err());
    }
}
