//! The node's status as the kubelet reports it: capacity and allocatable
//! from the host, addresses, `nodeInfo` (kernel, OS image, architecture,
//! container runtime version from the CRI), and the Ready, MemoryPressure,
//! DiskPressure and PIDPressure conditions with RFC 3339 heartbeat and
//! transition times. Ready is False, with the reason, while the runtime
//! does not answer.

use std::collections::BTreeMap;

use clock::rfc3339;
use schema::{Header, Message, Route};
use serde_json::{Value, json};

use super::Runtime;

/// The port this node reports for the kubelet API in
/// `status.daemonEndpoints.kubeletEndpoint`: 10350, as KubeEdge's edge
/// nodes report it (its edge stream server's), where the API server's
/// calls for this node's logs and exec are routed.
pub(crate) const KUBELET_ENDPOINT_PORT: u16 = 10350;

/// What the node reports, and when each condition last changed.
#[derive(Debug, Default)]
pub(crate) struct NodeStatus {
    transitions: BTreeMap<&'static str, (bool, u64)>,
    /// The `pods` capacity (the kubelet's `maxPods`).
    max_pods: u32,
}

/// The host's address towards `server` (`host:port`): the InternalIP.
pub(crate) fn host_ip(configured: &str, server: &str) -> String {
    if !configured.is_empty() {
        return configured.to_owned();
    }
    std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect(server).and_then(|()| s.local_addr()))
        .map_or_else(|_| "127.0.0.1".to_owned(), |a| a.ip().to_string())
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// `MemTotal` and `MemAvailable` of /proc/meminfo, in KiB.
fn memory_kib() -> (u64, u64) {
    let text = read("/proc/meminfo");
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("MemTotal:"), field("MemAvailable:"))
}

/// Total and available bytes of the file system holding `dir`.
fn disk_bytes(dir: &str) -> (u64, u64) {
    let probe = std::path::Path::new(dir)
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(std::path::Path::new("/"))
        .to_owned();
    match rustix::fs::statvfs(&probe) {
        Ok(s) => (s.f_blocks * s.f_frsize, s.f_bavail * s.f_frsize),
        Err(_) => (0, 0),
    }
}

fn os_image() -> String {
    read("/etc/os-release")
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map_or_else(|| "Linux".to_owned(), |v| v.trim_matches('"').to_owned())
}

/// Go's name of this architecture, as Kubernetes reports it.
fn architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "riscv64" => "riscv64",
        other => other,
    }
}

impl NodeStatus {
    pub(crate) fn new(max_pods: u32) -> NodeStatus {
        NodeStatus {
            transitions: BTreeMap::new(),
            max_pods,
        }
    }

    fn condition(
        &mut self,
        kind: &'static str,
        ok: bool,
        yes: (&str, &str),
        no: (&str, &str),
        now: u64,
    ) -> Value {
        let since = match self.transitions.get(kind) {
            Some(&(was, at)) if was == ok => at,
            _ => now,
        };
        self.transitions.insert(kind, (ok, since));
        let (reason, message) = if ok { yes } else { no };
        json!({"type": kind, "status": if ok { "True" } else { "False" }, "reason": reason, "message": message,
            "lastHeartbeatTime": rfc3339(now), "lastTransitionTime": rfc3339(since)})
    }

    /// The status content: Ready reflects `runtime` when pods run here
    /// (None: Edged is disabled).
    pub(crate) fn status(
        &mut self,
        host_ip: &str,
        node: &str,
        root_dir: &str,
        runtime: Option<&Runtime>,
        now: u64,
    ) -> Value {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let (mem_total, mem_avail) = memory_kib();
        let (disk_total, disk_avail) = disk_bytes(root_dir);
        let runtime_down = match runtime {
            Some(Runtime::Down(why)) => Some(why.clone()),
            _ => None,
        };
        let ready = self.condition(
            "Ready",
            runtime_down.is_none(),
            ("KubeletReady", "edgecore is posting ready status"),
            ("KubeletNotReady", runtime_down.as_deref().unwrap_or("")),
            now,
        );
        // Pressure conditions are True when under pressure: the kubelet's
        // default hard eviction thresholds (100Mi memory, 10% disk).
        let memory = self.condition(
            "MemoryPressure",
            mem_avail < 100 * 1024 && mem_total > 0,
            (
                "KubeletHasInsufficientMemory",
                "the node has less than 100Mi of memory available",
            ),
            (
                "KubeletHasSufficientMemory",
                "the node has sufficient memory available",
            ),
            now,
        );
        let disk = self.condition(
            "DiskPressure",
            disk_total > 0 && disk_avail * 10 < disk_total,
            (
                "KubeletHasDiskPressure",
                "the node has less than 10% of its disk available",
            ),
            ("KubeletHasNoDiskPressure", "the node has no disk pressure"),
            now,
        );
        let pid = self.condition(
            "PIDPressure",
            false,
            ("KubeletHasInsufficientPID", ""),
            (
                "KubeletHasSufficientPID",
                "the node has sufficient PID available",
            ),
            now,
        );
        let resources = json!({"cpu": cpus.to_string(), "memory": format!("{mem_total}Ki"),
            "pods": self.max_pods.to_string(), "ephemeral-storage": format!("{}Ki", disk_total / 1024)});
        let runtime_version = match runtime {
            Some(Runtime::Up { name, version }) => format!("{name}://{version}"),
            _ => String::new(),
        };
        json!({
            "capacity": resources, "allocatable": resources,
            "conditions": [ready, memory, disk, pid],
            "addresses": [{"type": "InternalIP", "address": host_ip}, {"type": "Hostname", "address": node}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": KUBELET_ENDPOINT_PORT}},
            "nodeInfo": {
                "machineID": read("/etc/machine-id"), "systemUUID": read("/sys/class/dmi/id/product_uuid"),
                "bootID": read("/proc/sys/kernel/random/boot_id"), "kernelVersion": read("/proc/sys/kernel/osrelease"),
                "osImage": os_image(), "containerRuntimeVersion": runtime_version,
                "kubeletVersion": concat!("v", env!("CARGO_PKG_VERSION"), "-apiary"), "kubeProxyVersion": "",
                "operatingSystem": "linux", "architecture": architecture(),
            },
        })
    }
}

/// The upstream node status message.
pub(crate) fn message(node: &str, content: &Value, now_ms: u64) -> Message {
    Message {
        header: Header {
            id: format!("nodestatus-{node}-{now_ms}"),
            timestamp_ms: now_ms,
            ..Header::default()
        },
        route: Route {
            source: "edged".to_owned(),
            destination: String::new(),
            group: "resource".to_owned(),
            operation: "update".to_owned(),
            resource: format!("default/nodestatus/{node}"),
        },
        content: content.to_string().into_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_follows_the_runtime_and_keeps_its_transition_time() {
        let mut n = NodeStatus::new(110);
        let up = Runtime::Up {
            name: "containerd".into(),
            version: "1.6.20".into(),
        };
        let s = n.status("10.0.0.2", "edge-1", "/", Some(&up), 1_000_000);
        assert_eq!(s["conditions"][0]["status"], "True");
        assert_eq!(
            s["nodeInfo"]["containerRuntimeVersion"],
            "containerd://1.6.20"
        );
        assert_eq!(s["addresses"][0]["address"], "10.0.0.2");
        assert!(s["capacity"]["memory"].as_str().unwrap().ends_with("Ki"));
        assert_eq!(s["capacity"]["pods"], "110");
        assert_eq!(s["daemonEndpoints"]["kubeletEndpoint"]["Port"], 10350);
        let later = n.status("10.0.0.2", "edge-1", "/", Some(&up), 2_000_000);
        assert_eq!(
            later["conditions"][0]["lastTransitionTime"],
            rfc3339(1_000_000)
        );
        assert_eq!(
            later["conditions"][0]["lastHeartbeatTime"],
            rfc3339(2_000_000)
        );
        let down = Runtime::Down("no socket".into());
        let s = n.status("10.0.0.2", "edge-1", "/", Some(&down), 3_000_000);
        assert_eq!(s["conditions"][0]["status"], "False");
        assert_eq!(s["conditions"][0]["message"], "no socket");
        assert_eq!(s["conditions"][0]["lastTransitionTime"], rfc3339(3_000_000));
        let no_edged = n.status("10.0.0.2", "edge-1", "/", None, 4_000_000);
        assert_eq!(no_edged["conditions"][0]["status"], "True");
    }
}
