//! What the runtime is asked to create for a pod: the sandbox and each
//! container, with the kubelet's CRI labels and annotations, mounts, log
//! paths and resource limits; and the spec hash that tells a changed
//! container from an unchanged one.

use crate::env::{self, Addresses};
use crate::pod::{Container, Objects, Pod, PullPolicy};
use crate::quantity;

/// The labels and annotations the kubelet puts on CRI objects; Edged uses
/// the same, so tools that read them (and a restarted edgecore) find pods.
pub mod labels {
    pub const POD_NAME: &str = "io.kubernetes.pod.name";
    pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
    pub const POD_UID: &str = "io.kubernetes.pod.uid";
    pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";
    /// Annotation: the container's spec hash, in hex.
    pub const CONTAINER_HASH: &str = "io.kubernetes.container.hash";
    /// Annotation: the container's restart count.
    pub const RESTART_COUNT: &str = "io.kubernetes.container.restartCount";
    /// Annotation: the pod's termination grace period, in seconds.
    pub const GRACE_PERIOD: &str = "io.kubernetes.pod.terminationGracePeriod";
}

/// A pod sandbox to run.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxSpec {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub attempt: u32,
    pub hostname: String,
    pub host_network: bool,
    /// Where the runtime writes the containers' logs.
    pub log_directory: String,
    pub labels: Vec<(String, String)>,
    pub annotations: Vec<(String, String)>,
}

/// A container to pull (as `pull` says), create and start.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    pub pull: PullPolicy,
    pub attempt: u32,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: String,
    pub mounts: Vec<Mount>,
    /// Relative to the sandbox's log directory: `<name>/<attempt>.log`.
    pub log_path: String,
    pub tty: bool,
    pub stdin: bool,
    pub cpu_limit_millis: Option<u64>,
    pub cpu_request_millis: Option<u64>,
    pub memory_limit_bytes: Option<u64>,
    pub labels: Vec<(String, String)>,
    pub annotations: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub container_path: String,
    pub host_path: String,
    pub read_only: bool,
}

fn pod_labels(pod: &Pod) -> Vec<(String, String)> {
    vec![
        (labels::POD_NAME.into(), pod.name.clone()),
        (labels::POD_NAMESPACE.into(), pod.namespace.clone()),
        (labels::POD_UID.into(), pod.uid.clone()),
    ]
}

pub(crate) fn sandbox(pod: &Pod, attempt: u32, log_root: &str) -> SandboxSpec {
    let mut labels: Vec<(String, String)> = pod
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.retain(|(k, _)| !k.starts_with("io.kubernetes."));
    labels.extend(pod_labels(pod));
    let hostname = if pod.spec.hostname.is_empty() {
        pod.name.clone()
    } else {
        pod.spec.hostname.clone()
    };
    SandboxSpec {
        name: pod.name.clone(),
        namespace: pod.namespace.clone(),
        uid: pod.uid.clone(),
        attempt,
        hostname,
        host_network: pod.spec.host_network,
        log_directory: pod.log_directory(log_root),
        labels,
        annotations: pod
            .annotations
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

/// Where a pod's volumes live on the host, under Edged's root directory
/// (the kubelet's layout).
pub(crate) fn volume_dir(root: &str, uid: &str, plugin: &str, name: &str) -> String {
    format!("{root}/pods/{uid}/volumes/kubernetes.io~{plugin}/{name}")
}

/// Everything the runtime needs to start `c`, or the kubelet's
/// `CreateContainerConfigError` message.
pub(crate) fn container(
    pod: &Pod,
    c: &Container,
    attempt: u32,
    objects: &dyn Objects,
    at: Addresses<'_>,
    root: &str,
) -> Result<ContainerSpec, String> {
    let env = env::resolve(pod, c, objects, at)?;
    let mut mounts = Vec::new();
    for m in &c.volume_mounts {
        let v = pod
            .spec
            .volumes
            .iter()
            .find(|v| v.name == m.name)
            .ok_or_else(|| format!("volume {:?} is not defined in the pod", m.name))?;
        let base = if let Some(h) = &v.host_path {
            h.path.clone()
        } else if v.config_map.is_some() {
            volume_dir(root, &pod.uid, "configmap", &v.name)
        } else if v.secret.is_some() {
            volume_dir(root, &pod.uid, "secret", &v.name)
        } else {
            volume_dir(root, &pod.uid, "empty-dir", &v.name)
        };
        if m.sub_path.split('/').any(|part| part == "..") || m.sub_path.starts_with('/') {
            return Err(format!(
                "subPath {:?} must be a relative path inside the volume",
                m.sub_path
            ));
        }
        let host_path = if m.sub_path.is_empty() {
            base
        } else {
            format!("{base}/{}", m.sub_path)
        };
        mounts.push(Mount {
            container_path: m.mount_path.clone(),
            host_path,
            read_only: m.read_only || v.config_map.is_some() || v.secret.is_some(),
        });
    }
    let limit = |k: &str| c.resources.limits.get(k);
    let request = |k: &str| c.resources.requests.get(k);
    let mut labels = pod_labels(pod);
    labels.push((labels::CONTAINER_NAME.into(), c.name.clone()));
    let annotations = vec![
        (labels::CONTAINER_HASH.into(), format!("{:x}", hash(c))),
        (labels::RESTART_COUNT.into(), attempt.to_string()),
        (labels::GRACE_PERIOD.into(), pod.grace_seconds().to_string()),
    ];
    Ok(ContainerSpec {
        name: c.name.clone(),
        image: c.image.clone(),
        pull: c.pull_policy(),
        attempt,
        command: c.command.iter().map(|s| env::expand(s, &env)).collect(),
        args: c.args.iter().map(|s| env::expand(s, &env)).collect(),
        env,
        working_dir: c.working_dir.clone(),
        mounts,
        log_path: format!("{}/{attempt}.log", c.name),
        tty: c.tty,
        stdin: c.stdin,
        cpu_limit_millis: limit("cpu").and_then(quantity::cpu_millis),
        cpu_request_millis: request("cpu").and_then(quantity::cpu_millis),
        memory_limit_bytes: limit("memory").and_then(quantity::bytes),
        labels,
        annotations,
    })
}

/// The container's spec hash: FNV-1a of its JSON as stored (serde_json's
/// maps are ordered, so equal specs hash equally on every build).
pub(crate) fn hash(c: &Container) -> u64 {
    let text = serde_json::to_string(&c.raw).unwrap_or_default();
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    struct NoObjects;
    impl Objects for NoObjects {
        fn config_map(&self, _: &str, _: &str) -> Option<BTreeMap<String, Vec<u8>>> {
            None
        }
        fn secret(&self, _: &str, _: &str) -> Option<BTreeMap<String, Vec<u8>>> {
            None
        }
    }

    const AT: Addresses<'static> = Addresses {
        pod_ip: "",
        host_ip: "",
    };

    fn pod() -> Pod {
        Pod::from_value(json!({
            "metadata": {"name": "web", "namespace": "shop", "uid": "u1", "labels": {"app": "web"}},
            "spec": {
                "volumes": [{"name": "data", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "c"}},
                            {"name": "host", "hostPath": {"path": "/srv"}}],
                "containers": [{"name": "app", "image": "busybox:1", "command": ["sh", "-c", "echo $(WHO)"],
                "env": [{"name": "WHO", "value": "me"}],
                "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}},
                "volumeMounts": [{"name": "data", "mountPath": "/data"}, {"name": "cfg", "mountPath": "/etc/cfg"},
                                 {"name": "host", "mountPath": "/srv/logs", "subPath": "logs"}]}]}
        }))
        .unwrap()
    }

    #[test]
    fn a_container_gets_the_kubelets_labels_mounts_limits_and_log_path() {
        let p = pod();
        let s = container(
            &p,
            &p.spec.containers[0],
            2,
            &NoObjects,
            AT,
            "/var/lib/edged",
        )
        .unwrap();
        assert_eq!(s.command, ["sh", "-c", "echo me"]);
        assert_eq!(s.log_path, "app/2.log");
        assert_eq!(s.cpu_limit_millis, Some(500));
        assert_eq!(s.memory_limit_bytes, Some(64 << 20));
        assert!(s.labels.contains(&(labels::POD_UID.into(), "u1".into())));
        assert!(
            s.labels
                .contains(&(labels::CONTAINER_NAME.into(), "app".into()))
        );
        assert!(
            s.annotations
                .contains(&(labels::RESTART_COUNT.into(), "2".into()))
        );
        assert_eq!(
            s.mounts,
            [
                Mount {
                    container_path: "/data".into(),
                    host_path: "/var/lib/edged/pods/u1/volumes/kubernetes.io~empty-dir/data".into(),
                    read_only: false
                },
                Mount {
                    container_path: "/etc/cfg".into(),
                    host_path: "/var/lib/edged/pods/u1/volumes/kubernetes.io~configmap/cfg".into(),
                    read_only: true
                },
                Mount {
                    container_path: "/srv/logs".into(),
                    host_path: "/srv/logs".into(),
                    read_only: false
                },
            ]
        );
        let sb = sandbox(&p, 0, "/var/log/pods");
        assert_eq!(sb.log_directory, "/var/log/pods/shop_web_u1");
        assert!(sb.labels.contains(&("app".into(), "web".into())));
    }

    #[test]
    fn a_sub_path_cannot_leave_its_volume() {
        let mut p = pod();
        p.spec.containers[0].volume_mounts[2].sub_path = "../etc".into();
        let e = container(&p, &p.spec.containers[0], 0, &NoObjects, AT, "/r").unwrap_err();
        assert!(e.contains("subPath"), "{e}");
    }

    #[test]
    fn the_hash_changes_with_the_spec_and_only_with_it() {
        let a = pod();
        let b = pod();
        assert_eq!(hash(&a.spec.containers[0]), hash(&b.spec.containers[0]));
        let mut c = pod();
        c.spec.containers[0].raw["image"] = json!("busybox:2");
        assert_ne!(hash(&a.spec.containers[0]), hash(&c.spec.containers[0]));
    }
}
