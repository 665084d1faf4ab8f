//! What the container runtime reports for one pod: its sandboxes and
//! containers, as the glue reads them from the CRI (found by the kubelet's
//! labels, so they are found again after edgecore restarts).

/// One pod's sandboxes and containers, in any order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    pub sandboxes: Vec<SandboxObs>,
    pub containers: Vec<ContainerObs>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct SandboxObs {
    pub id: String,
    /// The pod uid in its labels: another uid is an older pod of that name.
    pub uid: String,
    pub attempt: u32,
    pub ready: bool,
    pub created_ns: i64,
    /// The pod IP, empty when the runtime gave none (host network).
    pub ip: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ContainerState {
    Created,
    Running,
    Exited,
    #[default]
    Unknown,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerObs {
    pub id: String,
    pub sandbox_id: String,
    pub name: String,
    /// The CRI attempt: the container's restart count.
    pub attempt: u32,
    pub state: ContainerState,
    pub exit_code: i32,
    pub reason: String,
    pub message: String,
    pub created_ns: i64,
    pub started_ns: i64,
    pub finished_ns: i64,
    pub image_ref: String,
    /// The spec hash in its annotations (0 when absent).
    pub hash: u64,
}

impl ContainerObs {
    pub(crate) fn finished_ms(&self) -> u64 {
        (self.finished_ns.max(0) / 1_000_000) as u64
    }
}

impl Observed {
    /// Nothing of the pod is left in the runtime.
    pub fn is_empty(&self) -> bool {
        self.sandboxes.is_empty() && self.containers.is_empty()
    }
}
