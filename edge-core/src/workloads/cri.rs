//! The CRI client: Edged's operations and observations as CRI v1 calls to
//! the runtime's unix socket (containerd's), with the kubelet's labels.

use std::collections::HashMap;
use std::time::Duration;

use edged::{
    ContainerObs, ContainerSpec, ContainerState, Failure, Observed, Op, PodKey, PullPolicy,
    SandboxObs, SandboxSpec, labels,
};
use hyper_util::rt::TokioIo;
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint, Uri};

/// Why a runtime call failed.
#[derive(Debug, thiserror::Error)]
pub enum CriError {
    #[error("endpoint {0:?} is not unix:///path")]
    Endpoint(String),
    #[error("{call}: {status}")]
    Call { call: &'static str, status: String },
}

fn call(call: &'static str) -> impl FnOnce(tonic::Status) -> CriError {
    move |s| CriError::Call {
        call,
        status: format!("{} ({:?})", s.message(), s.code()),
    }
}

/// A command to run in a pod's container, streamed (`kubectl exec`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRequest {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub command: Vec<String>,
    pub tty: bool,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

/// The runtime and image services, over one or two unix sockets.
#[derive(Debug, Clone)]
pub struct Cri {
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
    cgroup_parent: String,
}

/// A lazy channel to a `unix://` endpoint: connected on first use and
/// again after the runtime restarts.
fn channel(endpoint: &str, timeout: Duration) -> Result<Channel, CriError> {
    let path = endpoint
        .strip_prefix("unix://")
        .filter(|p| p.starts_with('/'))
        .ok_or_else(|| CriError::Endpoint(endpoint.to_owned()))?
        .to_owned();
    // The URI is required by tonic and ignored by the connector.
    let ep = Endpoint::from_static("http://cri.local")
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(5));
    Ok(
        ep.connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        })),
    )
}

fn map(pairs: &[(String, String)]) -> HashMap<String, String> {
    pairs.iter().cloned().collect()
}

impl Cri {
    /// Clients for the endpoints (nothing is connected yet). The calls
    /// must be made inside a tokio runtime.
    pub fn new(
        runtime: &str,
        image: &str,
        timeout: Duration,
        cgroup_parent: &str,
    ) -> Result<Cri, CriError> {
        let rt = channel(runtime, timeout)?;
        let img = if image.is_empty() || image == runtime {
            rt.clone()
        } else {
            channel(image, timeout)?
        };
        Ok(Cri {
            runtime: RuntimeServiceClient::new(rt),
            images: ImageServiceClient::new(img),
            cgroup_parent: cgroup_parent.to_owned(),
        })
    }

    /// The runtime's name and version (`containerd`, `1.6.20`).
    pub async fn version(&mut self) -> Result<(String, String), CriError> {
        let v = self
            .runtime
            .version(cri::VersionRequest {
                version: "v1".into(),
            })
            .await
            .map_err(call("Version"))?
            .into_inner();
        Ok((v.runtime_name, v.runtime_version))
    }

    /// Runs `command` in the container; its exit code.
    pub async fn exec_sync(
        &mut self,
        id: &str,
        command: &[String],
        timeout_secs: u64,
    ) -> Result<i32, CriError> {
        let r = cri::ExecSyncRequest {
            container_id: id.to_owned(),
            cmd: command.to_vec(),
            timeout: timeout_secs as i64,
        };
        Ok(self
            .runtime
            .exec_sync(r)
            .await
            .map_err(call("ExecSync"))?
            .into_inner()
            .exit_code)
    }

    /// The runtime's streaming URL for `req` in the running container it
    /// names (CRI `Exec`); `Ok(None)` when no such container runs.
    pub async fn exec_url(&mut self, req: &ExecRequest) -> Result<Option<String>, CriError> {
        let selector = HashMap::from([
            (labels::POD_NAMESPACE.to_owned(), req.namespace.clone()),
            (labels::POD_NAME.to_owned(), req.pod.clone()),
            (labels::CONTAINER_NAME.to_owned(), req.container.clone()),
        ]);
        let filter = cri::ContainerFilter {
            state: Some(cri::ContainerStateValue {
                state: cri::ContainerState::ContainerRunning as i32,
            }),
            label_selector: selector,
            ..Default::default()
        };
        let running = self
            .runtime
            .list_containers(cri::ListContainersRequest {
                filter: Some(filter),
            })
            .await
            .map_err(call("ListContainers"))?
            .into_inner()
            .containers;
        let Some(container) = running.into_iter().next() else {
            return Ok(None);
        };
        let r = cri::ExecRequest {
            container_id: container.id,
            cmd: req.command.clone(),
            tty: req.tty,
            stdin: req.stdin,
            stdout: req.stdout,
            stderr: req.stderr && !req.tty,
        };
        let url = self.runtime.exec(r).await.map_err(call("Exec"))?;
        Ok(Some(url.into_inner().url))
    }

    /// Whether the image is present.
    pub async fn has_image(&mut self, image: &str) -> Result<bool, CriError> {
        let r = self
            .images
            .image_status(cri::ImageStatusRequest {
                image: Some(image_spec(image)),
                verbose: false,
            })
            .await
            .map_err(call("ImageStatus"))?;
        Ok(r.into_inner().image.is_some())
    }

    /// The pods the runtime holds sandboxes of (by the kubelet's labels).
    pub async fn pods(&mut self) -> Result<Vec<PodKey>, CriError> {
        let list = self
            .runtime
            .list_pod_sandbox(cri::ListPodSandboxRequest { filter: None })
            .await
            .map_err(call("ListPodSandbox"))?
            .into_inner()
            .items;
        let mut keys: Vec<PodKey> = list.iter().filter_map(|s| key_of(&s.labels)).collect();
        keys.sort();
        keys.dedup();
        Ok(keys)
    }

    /// Every container's id and state: the relist that notices exits.
    pub async fn container_states(&mut self) -> Result<Vec<(PodKey, String, i32)>, CriError> {
        let list = self
            .runtime
            .list_containers(cri::ListContainersRequest { filter: None })
            .await
            .map_err(call("ListContainers"))?
            .into_inner()
            .containers;
        Ok(list
            .into_iter()
            .filter_map(|c| Some((key_of(&c.labels)?, c.id, c.state)))
            .collect())
    }

    /// What the runtime holds of one pod.
    pub async fn observe(&mut self, key: &PodKey) -> Result<Observed, CriError> {
        let selector = HashMap::from([
            (labels::POD_NAMESPACE.to_owned(), key.namespace.clone()),
            (labels::POD_NAME.to_owned(), key.name.clone()),
        ]);
        let sandboxes = self
            .runtime
            .list_pod_sandbox(cri::ListPodSandboxRequest {
                filter: Some(cri::PodSandboxFilter {
                    label_selector: selector.clone(),
                    ..Default::default()
                }),
            })
            .await
            .map_err(call("ListPodSandbox"))?
            .into_inner()
            .items;
        let mut observed = Observed::default();
        for s in sandboxes {
            let ready = s.state == cri::PodSandboxState::SandboxReady as i32;
            let ip = if ready {
                self.sandbox_ip(&s.id).await?
            } else {
                String::new()
            };
            observed.sandboxes.push(SandboxObs {
                uid: s.labels.get(labels::POD_UID).cloned().unwrap_or_default(),
                attempt: s.metadata.map_or(0, |m| m.attempt),
                id: s.id,
                ready,
                created_ns: s.created_at,
                ip,
            });
        }
        let containers = self
            .runtime
            .list_containers(cri::ListContainersRequest {
                filter: Some(cri::ContainerFilter {
                    label_selector: selector,
                    ..Default::default()
                }),
            })
            .await
            .map_err(call("ListContainers"))?
            .into_inner()
            .containers;
        for c in containers {
            let status = self
                .runtime
                .container_status(cri::ContainerStatusRequest {
                    container_id: c.id.clone(),
                    verbose: false,
                })
                .await
                .map_err(call("ContainerStatus"))?
                .into_inner()
                .status
                .unwrap_or_default();
            observed.containers.push(container_obs(c, status));
        }
        Ok(observed)
    }

    async fn sandbox_ip(&mut self, id: &str) -> Result<String, CriError> {
        let s = self
            .runtime
            .pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: id.to_owned(),
                verbose: false,
            })
            .await
            .map_err(call("PodSandboxStatus"))?
            .into_inner();
        Ok(s.status
            .and_then(|s| s.network)
            .map(|n| n.ip)
            .unwrap_or_default())
    }

    /// Runs one operation (volumes are the caller's); a failure carries the
    /// kubelet's reason.
    pub async fn run(&mut self, op: &Op) -> Result<(), Failure> {
        let fail = |container: Option<&str>, reason: &str| {
            let container = container.map(str::to_owned);
            let reason = reason.to_owned();
            move |e: CriError| Failure {
                container,
                reason,
                message: e.to_string(),
            }
        };
        match op {
            Op::WriteVolumes(_) => Ok(()),
            Op::RunSandbox(spec) => {
                let config = self.sandbox_config(spec);
                self.runtime
                    .run_pod_sandbox(cri::RunPodSandboxRequest {
                        config: Some(config),
                        runtime_handler: String::new(),
                    })
                    .await
                    .map_err(call("RunPodSandbox"))
                    .map_err(fail(None, "FailedCreatePodSandBox"))?;
                Ok(())
            }
            Op::StartContainer {
                sandbox_id,
                sandbox,
                spec,
            } => self.start(sandbox_id, sandbox, spec).await,
            Op::StopContainer { id, grace_seconds } => {
                let r = cri::StopContainerRequest {
                    container_id: id.clone(),
                    timeout: *grace_seconds,
                };
                self.runtime
                    .stop_container(r)
                    .await
                    .map_err(call("StopContainer"))
                    .map_err(fail(None, "KillContainerError"))?;
                Ok(())
            }
            Op::RemoveContainer { id } => {
                let r = cri::RemoveContainerRequest {
                    container_id: id.clone(),
                };
                self.runtime
                    .remove_container(r)
                    .await
                    .map_err(call("RemoveContainer"))
                    .map_err(fail(None, "RemoveContainerError"))?;
                Ok(())
            }
            Op::StopSandbox { id } => {
                let r = cri::StopPodSandboxRequest {
                    pod_sandbox_id: id.clone(),
                };
                self.runtime
                    .stop_pod_sandbox(r)
                    .await
                    .map_err(call("StopPodSandbox"))
                    .map_err(fail(None, "KillPodSandboxError"))?;
                Ok(())
            }
            Op::RemoveSandbox { id } => {
                let r = cri::RemovePodSandboxRequest {
                    pod_sandbox_id: id.clone(),
                };
                self.runtime
                    .remove_pod_sandbox(r)
                    .await
                    .map_err(call("RemovePodSandbox"))
                    .map_err(fail(None, "KillPodSandboxError"))?;
                Ok(())
            }
        }
    }

    /// Pull as the policy says, create, start.
    async fn start(
        &mut self,
        sandbox_id: &str,
        sandbox: &SandboxSpec,
        spec: &ContainerSpec,
    ) -> Result<(), Failure> {
        let name = Some(spec.name.as_str());
        let failure = |reason: &str, message: String| Failure {
            container: name.map(str::to_owned),
            reason: reason.to_owned(),
            message,
        };
        let present = match spec.pull {
            PullPolicy::Always => false,
            _ => self
                .has_image(&spec.image)
                .await
                .map_err(|e| failure("ErrImagePull", e.to_string()))?,
        };
        if !present {
            if spec.pull == PullPolicy::Never {
                return Err(failure(
                    "ErrImageNeverPull",
                    format!(
                        "Container image {:?} is not present with pull policy of Never",
                        spec.image
                    ),
                ));
            }
            let r = cri::PullImageRequest {
                image: Some(image_spec(&spec.image)),
                auth: None,
                sandbox_config: Some(self.sandbox_config(sandbox)),
            };
            if let Err(e) = self.images.pull_image(r).await {
                return Err(failure(
                    "ErrImagePull",
                    format!("failed to pull image {:?}: {}", spec.image, e.message()),
                ));
            }
        }
        let create = cri::CreateContainerRequest {
            pod_sandbox_id: sandbox_id.to_owned(),
            config: Some(container_config(spec)),
            sandbox_config: Some(self.sandbox_config(sandbox)),
        };
        let id = match self.runtime.create_container(create).await {
            Ok(r) => r.into_inner().container_id,
            Err(e) => return Err(failure("CreateContainerError", e.message().to_owned())),
        };
        if let Err(e) = self
            .runtime
            .start_container(cri::StartContainerRequest { container_id: id })
            .await
        {
            return Err(failure("RunContainerError", e.message().to_owned()));
        }
        Ok(())
    }

    fn sandbox_config(&self, spec: &SandboxSpec) -> cri::PodSandboxConfig {
        let network = if spec.host_network {
            cri::NamespaceMode::Node
        } else {
            cri::NamespaceMode::Pod
        };
        cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: spec.name.clone(),
                uid: spec.uid.clone(),
                namespace: spec.namespace.clone(),
                attempt: spec.attempt,
            }),
            hostname: if spec.host_network {
                String::new()
            } else {
                spec.hostname.clone()
            },
            log_directory: spec.log_directory.clone(),
            labels: map(&spec.labels),
            annotations: map(&spec.annotations),
            linux: Some(cri::LinuxPodSandboxConfig {
                cgroup_parent: self.cgroup_parent.clone(),
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: Some(cri::NamespaceOption {
                        network: network as i32,
                        pid: cri::NamespaceMode::Container as i32,
                        ipc: cri::NamespaceMode::Pod as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

fn image_spec(image: &str) -> cri::ImageSpec {
    cri::ImageSpec {
        image: image.to_owned(),
        ..Default::default()
    }
}

fn container_config(spec: &ContainerSpec) -> cri::ContainerConfig {
    // The kubelet's conversions: a CFS quota per 100 ms period, shares from
    // the request (2 at least), memory as a hard limit.
    let period = 100_000;
    let resources = cri::LinuxContainerResources {
        cpu_period: if spec.cpu_limit_millis.is_some() {
            period
        } else {
            0
        },
        cpu_quota: spec
            .cpu_limit_millis
            .map_or(0, |m| (m as i64 * period / 1000).max(1000)),
        cpu_shares: spec
            .cpu_request_millis
            .or(spec.cpu_limit_millis)
            .map_or(2, |m| (m as i64 * 1024 / 1000).max(2)),
        memory_limit_in_bytes: spec.memory_limit_bytes.map_or(0, |b| b as i64),
        ..Default::default()
    };
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: spec.name.clone(),
            attempt: spec.attempt,
        }),
        image: Some(image_spec(&spec.image)),
        command: spec.command.clone(),
        args: spec.args.clone(),
        working_dir: spec.working_dir.clone(),
        envs: spec
            .env
            .iter()
            .map(|(key, value)| cri::KeyValue {
                key: key.clone(),
                value: value.clone(),
            })
            .collect(),
        mounts: spec
            .mounts
            .iter()
            .map(|m| cri::Mount {
                container_path: m.container_path.clone(),
                host_path: m.host_path.clone(),
                readonly: m.read_only,
                ..Default::default()
            })
            .collect(),
        labels: map(&spec.labels),
        annotations: map(&spec.annotations),
        log_path: spec.log_path.clone(),
        stdin: spec.stdin,
        tty: spec.tty,
        linux: Some(cri::LinuxContainerConfig {
            resources: Some(resources),
            security_context: None,
        }),
        ..Default::default()
    }
}

fn key_of(labels: &HashMap<String, String>) -> Option<PodKey> {
    Some(PodKey::new(
        labels.get(labels::POD_NAMESPACE)?,
        labels.get(labels::POD_NAME)?,
    ))
}

fn container_obs(c: cri::Container, s: cri::ContainerStatus) -> ContainerObs {
    let state = match cri::ContainerState::try_from(s.state) {
        Ok(cri::ContainerState::ContainerCreated) => ContainerState::Created,
        Ok(cri::ContainerState::ContainerRunning) => ContainerState::Running,
        Ok(cri::ContainerState::ContainerExited) => ContainerState::Exited,
        _ => ContainerState::Unknown,
    };
    let hash = c
        .annotations
        .get(labels::CONTAINER_HASH)
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .unwrap_or(0);
    ContainerObs {
        name: c
            .labels
            .get(labels::CONTAINER_NAME)
            .cloned()
            .unwrap_or_default(),
        attempt: c.metadata.map_or(0, |m| m.attempt),
        id: c.id,
        sandbox_id: c.pod_sandbox_id,
        state,
        exit_code: s.exit_code,
        reason: s.reason,
        message: s.message,
        created_ns: s.created_at,
        started_ns: s.started_at,
        finished_ns: s.finished_at,
        image_ref: s.image_ref,
        hash,
    }
}
