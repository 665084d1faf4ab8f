//! [`Edged`]: the pods of this node, when each must be synced, and the
//! statuses to report. See the crate documentation for the call order.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::observed::Observed;
use crate::plan::{self, Failure, Input, Memory, Op};
use crate::pod::{Objects, Pod};
use crate::probes::{ProbeRequest, Probes};
use crate::status::{self, Context};

/// A pod's namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PodKey {
    pub namespace: String,
    pub name: String,
}

impl PodKey {
    pub fn new(namespace: &str, name: &str) -> PodKey {
        PodKey {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }
}

impl std::fmt::Display for PodKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Edged's settings (edgecore's `[modules.edged]`).
#[derive(Debug, Clone)]
pub struct EdgedConfig {
    /// The node's InternalIP: `status.hostIP`, and `podIP` of host-network pods.
    pub host_ip: String,
    /// The runtime's name in container ids (`containerd://…`).
    pub runtime_name: String,
    /// Where container logs go (the kubelet's `/var/log/pods`).
    pub log_root: String,
    /// Edged's own directory for pod volumes (the kubelet's `/var/lib/kubelet`).
    pub root_directory: String,
    /// How often a pod is synced when nothing happens to it.
    pub resync_ms: u64,
}

#[derive(Debug)]
struct Entry {
    /// None once deleted: torn down, then forgotten.
    pod: Option<Pod>,
    /// The grace period of the pod last desired, for its teardown.
    grace_seconds: i64,
    memory: Memory,
    sync_at: Option<u64>,
    busy: bool,
    start_ms: u64,
    /// The status last computed; reported when the key is in `unreported`.
    status: Option<Value>,
}

/// The pods bound to this node and what to do about each.
#[derive(Debug)]
pub struct Edged {
    config: EdgedConfig,
    pods: BTreeMap<PodKey, Entry>,
    probes: Probes,
    /// Pods whose status changed since it was last reported: marked where
    /// a status is computed, so reporting costs nothing for quiet pods.
    unreported: BTreeSet<PodKey>,
}

impl Edged {
    pub fn new(config: EdgedConfig) -> Edged {
        Edged {
            config,
            pods: BTreeMap::new(),
            probes: Probes::default(),
            unreported: BTreeSet::new(),
        }
    }

    fn entry(&mut self, key: &PodKey, now: u64) -> &mut Entry {
        self.pods.entry(key.clone()).or_insert_with(|| Entry {
            pod: None,
            grace_seconds: 30,
            memory: Memory::default(),
            sync_at: Some(now),
            busy: false,
            start_ms: now,
            status: None,
        })
    }

    /// A pod bound to this node was added or changed.
    pub fn handle_pod(&mut self, pod: Pod, now: u64) {
        let key = PodKey::new(&pod.namespace, &pod.name);
        let e = self.entry(&key, now);
        if e.pod.as_ref().is_some_and(|p| p.uid != pod.uid) {
            // Another pod of the same name: its own life, its own memory.
            e.memory = Memory::default();
            e.start_ms = now;
            e.status = None;
        }
        e.grace_seconds = pod.grace_seconds();
        e.pod = Some(pod);
        e.sync_at = Some(now);
    }

    /// A pod was deleted (or the runtime holds one no longer desired).
    pub fn handle_pod_deleted(&mut self, key: &PodKey, now: u64) {
        let e = self.entry(key, now);
        e.pod = None;
        e.sync_at = Some(now);
    }

    /// The runtime holds sandboxes of `key` (found at start or by a relist):
    /// a pod not desired is torn down.
    pub fn handle_found(&mut self, key: &PodKey, now: u64) {
        self.entry(key, now).sync_at = Some(now);
    }

    /// Something a pod reads changed (a ConfigMap or Secret in
    /// `namespace`, or its containers in the runtime): sync it soon.
    pub fn handle_changed(&mut self, key: &PodKey, now: u64) {
        if let Some(e) = self.pods.get_mut(key) {
            e.sync_at = Some(now);
        }
    }

    /// Every pod of `namespace` is synced soon (a ConfigMap or Secret there changed).
    pub fn handle_namespace_changed(&mut self, namespace: &str, now: u64) {
        for (_, e) in self
            .pods
            .iter_mut()
            .filter(|(k, _)| k.namespace == namespace)
        {
            e.sync_at = Some(now);
        }
    }

    /// The next pod to observe, now due; it stays busy until `handle_done`
    /// or an empty plan.
    pub fn poll_sync(&mut self, now: u64) -> Option<PodKey> {
        let (key, e) = self
            .pods
            .iter_mut()
            .find(|(_, e)| !e.busy && e.sync_at.is_some_and(|at| at <= now))?;
        e.busy = true;
        e.sync_at = None;
        Some(key.clone())
    }

    /// When `poll_sync` or `poll_probe` will next have something.
    pub fn poll_timeout(&self) -> Option<u64> {
        let sync = self
            .pods
            .values()
            .filter(|e| !e.busy)
            .filter_map(|e| e.sync_at)
            .min();
        [sync, self.probes.timeout()].into_iter().flatten().min()
    }

    /// The next probe to run, now due; report it with `handle_probe_result`.
    pub fn poll_probe(&mut self, now: u64) -> Option<ProbeRequest> {
        self.probes.poll(now)
    }

    /// A probe's outcome (a timeout or an error is a failure).
    pub fn handle_probe_result(&mut self, req: &ProbeRequest, ok: bool, now: u64) {
        if self.probes.handle_result(req, ok, now)
            && let Some(e) = self.pods.get_mut(&req.pod)
        {
            e.sync_at = Some(now);
        }
    }

    /// What the runtime holds of `key`: the operations to run, in order.
    /// An empty list ends the sync.
    pub fn handle_observed(
        &mut self,
        key: &PodKey,
        observed: &Observed,
        objects: &dyn Objects,
        now: u64,
    ) -> Vec<Op> {
        let config = self.config.clone();
        let Some(e) = self.pods.get_mut(key) else {
            return Vec::new();
        };
        let Some(pod) = &e.pod else {
            self.probes.forget(key);
            let ops = plan::teardown(observed, e.grace_seconds);
            if ops.is_empty() {
                self.pods.remove(key);
            }
            return ops;
        };
        let probes = &mut self.probes;
        let input = Input {
            pod,
            observed,
            objects,
            host_ip: &config.host_ip,
            log_root: &config.log_root,
            root: &config.root_directory,
            now,
            unhealthy: &|name, id| probes.unhealthy(key, name, id),
        };
        let plan = plan::plan(&input, &mut e.memory);
        probes.sync(key, pod, observed, &config.host_ip);
        let ctx = Context {
            waiting: &plan.waiting,
            previous: e.status.as_ref(),
            host_ip: &config.host_ip,
            runtime: &config.runtime_name,
            start_ms: e.start_ms,
            now,
            health: &|name| probes.health(key, name),
        };
        let status = status::pod_status(pod, observed, &ctx);
        set_status(&mut self.unreported, key, e, status);
        if plan.ops.is_empty() {
            e.busy = false;
            let resync = now + config.resync_ms;
            e.sync_at = Some(plan.wake_at.map_or(resync, |w| w.min(resync)));
        }
        plan.ops
    }

    /// An operation of `key`'s batch failed; the rest of it is not run.
    pub fn handle_failed(&mut self, key: &PodKey, failure: Failure, now: u64) {
        let Some(e) = self.pods.get_mut(key) else {
            return;
        };
        let slot = failure.container.clone().unwrap_or_default();
        // Every failure is retried after a back-off, never in a hot loop.
        e.memory.backoff.next(&format!("fail/{slot}"), now);
        // Volumes are rewritten on the next sync, whatever failed.
        e.memory.volumes = None;
        e.memory.failures.insert(slot, (failure, now, false));
    }

    /// `key`'s batch ran (or stopped at a failure): observe it again now.
    pub fn handle_done(&mut self, key: &PodKey, now: u64) {
        if let Some(e) = self.pods.get_mut(key) {
            e.busy = false;
            e.sync_at = Some(now);
        }
    }

    /// The runtime cannot be reached: every pod waits with `message`.
    pub fn handle_runtime_down(&mut self, message: &str, now: u64) {
        for (key, e) in &mut self.pods {
            e.busy = false;
            e.sync_at = Some(now + self.config.resync_ms);
            let Some(pod) = &e.pod else { continue };
            let mut waiting = BTreeMap::new();
            for c in pod.spec.init_containers.iter().chain(&pod.spec.containers) {
                waiting.insert(
                    c.name.clone(),
                    ("ContainerRuntimeUnavailable".to_owned(), message.to_owned()),
                );
            }
            let ctx = Context {
                waiting: &waiting,
                previous: e.status.as_ref(),
                host_ip: &self.config.host_ip,
                runtime: &self.config.runtime_name,
                start_ms: e.start_ms,
                now,
                health: &|_| (false, false),
            };
            let status = status::pod_status(pod, &Observed::default(), &ctx);
            set_status(&mut self.unreported, key, e, status);
        }
    }

    /// A pod whose status changed since it was last reported.
    pub fn poll_status(&mut self) -> Option<(PodKey, Value)> {
        while let Some(key) = self.unreported.pop_first() {
            let Some(e) = self.pods.get(&key) else {
                continue;
            };
            if let (Some(_), Some(status)) = (&e.pod, &e.status) {
                return Some((key, status.clone()));
            }
        }
        None
    }

    /// The last status of `key`, as reported.
    pub fn status(&self, key: &PodKey) -> Option<&Value> {
        self.pods.get(key)?.status.as_ref()
    }

    /// The pods Edged knows, desired or being torn down.
    pub fn keys(&self) -> impl Iterator<Item = &PodKey> {
        self.pods.keys()
    }
}

/// Keeps `status` as `e`'s and marks it unreported when it changed.
fn set_status(unreported: &mut BTreeSet<PodKey>, key: &PodKey, e: &mut Entry, status: Value) {
    if e.status.as_ref() != Some(&status) {
        e.status = Some(status);
        unreported.insert(key.clone());
    }
}
