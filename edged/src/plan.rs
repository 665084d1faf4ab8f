//! One pod's next runtime operations, decided as the kubelet's `SyncPod`
//! decides them from the pod's spec and what the runtime reports: a
//! sandbox when there is none ready; init containers one at a time, in
//! order, each to success; then every app container, restarted as the
//! restart policy says with the crash-loop back-off; a container whose
//! spec changed replaced; leftovers (older sandboxes, older attempts,
//! containers no longer in the spec, an older pod of the same name)
//! stopped and removed.

use std::collections::BTreeMap;

use crate::backoff::Backoff;
use crate::env::Addresses;
use crate::observed::{ContainerObs, ContainerState, Observed, SandboxObs};
use crate::pod::{Container, Objects, Pod, RestartPolicy};
use crate::spec::{self, ContainerSpec, SandboxSpec};

/// A runtime operation for the glue to run; a batch runs in order and
/// stops at the first failure.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Make the pod's volume directories and write its ConfigMap and
    /// Secret volumes' files (atomically: a reader never sees half).
    WriteVolumes(Vec<Volume>),
    RunSandbox(SandboxSpec),
    /// Pull the image as `spec.pull` says, create the container, start it.
    StartContainer {
        sandbox_id: String,
        /// The sandbox's config, which the runtime reads again (log directory).
        sandbox: Box<SandboxSpec>,
        spec: Box<ContainerSpec>,
    },
    /// SIGTERM, then SIGKILL after the grace period.
    StopContainer {
        id: String,
        grace_seconds: i64,
    },
    RemoveContainer {
        id: String,
    },
    StopSandbox {
        id: String,
    },
    RemoveSandbox {
        id: String,
    },
}

/// A volume directory and, for ConfigMap and Secret volumes, its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub dir: String,
    /// `(relative path, contents, mode)`; None for emptyDir.
    pub files: Option<Vec<(String, Vec<u8>, u32)>>,
}

/// Why an operation failed, with the kubelet's reason (`ErrImagePull`,
/// `ErrImageNeverPull`, `CreateContainerError`, `RunContainerError`,
/// `FailedCreatePodSandBox`, …) and the runtime's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The container it was for; None for the sandbox.
    pub container: Option<String>,
    pub reason: String,
    pub message: String,
}

/// What Edged remembers of one pod between syncs.
#[derive(Debug, Clone)]
pub(crate) struct Memory {
    pub(crate) backoff: Backoff,
    /// The last failure per container ("" for the sandbox), when, and
    /// whether a sync has shown it yet (after that, the wait is shown as
    /// the back-off: `ImagePullBackOff`).
    pub(crate) failures: BTreeMap<String, (Failure, u64, bool)>,
    /// The volume contents last written.
    pub(crate) volumes: Option<Vec<Volume>>,
}

impl Default for Memory {
    fn default() -> Self {
        Memory {
            backoff: Backoff::kubelet(),
            failures: BTreeMap::new(),
            volumes: None,
        }
    }
}

/// A container's waiting reason and message, for its status.
pub(crate) type Waiting = BTreeMap<String, (String, String)>;

/// The outcome of planning one pod.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub(crate) ops: Vec<Op>,
    /// When the pod must be looked at again (a back-off ends).
    pub(crate) wake_at: Option<u64>,
    /// Why each container that is not running waits.
    pub(crate) waiting: Waiting,
}

impl Plan {
    fn wake(&mut self, at: u64) {
        self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
    }
}

/// What a plan reads.
pub(crate) struct Input<'a> {
    pub(crate) pod: &'a Pod,
    pub(crate) observed: &'a Observed,
    pub(crate) objects: &'a dyn Objects,
    pub(crate) host_ip: &'a str,
    pub(crate) log_root: &'a str,
    pub(crate) root: &'a str,
    pub(crate) now: u64,
    /// Whether a running container (name, id) failed its liveness or
    /// startup probe.
    pub(crate) unhealthy: &'a dyn Fn(&str, &str) -> bool,
}

/// Everything of `observed` stopped (gracefully) and removed: a deleted pod.
pub(crate) fn teardown(observed: &Observed, grace_seconds: i64) -> Vec<Op> {
    let mut ops: Vec<Op> = Vec::new();
    for c in &observed.containers {
        if c.state == ContainerState::Running {
            ops.push(Op::StopContainer {
                id: c.id.clone(),
                grace_seconds,
            });
        }
    }
    ops.extend(
        observed
            .containers
            .iter()
            .map(|c| Op::RemoveContainer { id: c.id.clone() }),
    );
    for s in &observed.sandboxes {
        ops.push(Op::StopSandbox { id: s.id.clone() });
        ops.push(Op::RemoveSandbox { id: s.id.clone() });
    }
    ops
}

/// The containers of `observed` that belong to sandboxes `keep` accepts.
fn split(observed: &Observed, keep: impl Fn(&SandboxObs) -> bool) -> (Observed, Observed) {
    let (mut yes, mut no) = (Observed::default(), Observed::default());
    for s in &observed.sandboxes {
        if keep(s) { &mut yes } else { &mut no }
            .sandboxes
            .push(s.clone());
    }
    for c in &observed.containers {
        let in_yes = yes.sandboxes.iter().any(|s| s.id == c.sandbox_id);
        if in_yes { &mut yes } else { &mut no }
            .containers
            .push(c.clone());
    }
    (yes, no)
}

/// The latest sandbox of the pod (highest attempt, then newest).
pub(crate) fn latest_sandbox<'o>(observed: &'o Observed, uid: &str) -> Option<&'o SandboxObs> {
    observed
        .sandboxes
        .iter()
        .filter(|s| s.uid == uid)
        .max_by_key(|s| (s.attempt, s.created_ns))
}

/// A container's attempts in `sandbox`, newest first.
pub(crate) fn attempts<'o>(
    observed: &'o Observed,
    sandbox: &str,
    name: &str,
) -> Vec<&'o ContainerObs> {
    let mut v: Vec<&ContainerObs> = observed
        .containers
        .iter()
        .filter(|c| c.sandbox_id == sandbox && c.name == name)
        .collect();
    v.sort_by_key(|c| std::cmp::Reverse((c.attempt, c.created_ns)));
    v
}

/// Whether a pod's containers are all done for good: nothing will run again.
pub(crate) fn finished(pod: &Pod, observed: &Observed, sandbox: &str) -> bool {
    let policy = pod.spec.restart_policy;
    let init_failed = pod.spec.init_containers.iter().any(|c| {
        attempts(observed, sandbox, &c.name)
            .first()
            .is_some_and(|l| l.state == ContainerState::Exited && l.exit_code != 0)
    });
    if init_failed && policy == RestartPolicy::Never {
        return true;
    }
    policy != RestartPolicy::Always
        && pod.spec.containers.iter().all(|c| {
            attempts(observed, sandbox, &c.name)
                .first()
                .is_some_and(|l| {
                    l.state == ContainerState::Exited
                        && l.hash == spec::hash(c)
                        && (policy == RestartPolicy::Never || l.exit_code == 0)
                })
        })
}

/// The pod's next operations.
pub(crate) fn plan(input: &Input<'_>, memory: &mut Memory) -> Plan {
    let pod = input.pod;
    let mut plan = Plan::default();
    let (mine, stale) = split(input.observed, |s| s.uid == pod.uid);
    plan.ops.extend(teardown(&stale, pod.grace_seconds()));
    if pod.deleting {
        let mut stop = teardown(&mine, pod.grace_seconds());
        stop.retain(|op| matches!(op, Op::StopContainer { .. } | Op::StopSandbox { .. }));
        stop.retain(|op| !matches!(op, Op::StopSandbox { id } if !mine.sandboxes.iter().any(|s| &s.id == id && s.ready)));
        plan.ops.extend(stop);
        return plan;
    }
    let latest = latest_sandbox(&mine, &pod.uid).cloned();
    // Older sandboxes of this pod, and their containers, go.
    let (current, older) = split(&mine, |s| Some(&s.id) == latest.as_ref().map(|l| &l.id));
    plan.ops.extend(teardown(&older, pod.grace_seconds()));
    match latest {
        Some(s) if s.ready => {
            memory.failures.remove("");
            if finished(pod, &current, &s.id) {
                plan.ops.push(Op::StopSandbox { id: s.id.clone() });
                return plan;
            }
            volumes(input, memory, &mut plan);
            containers(input, memory, &current, &s, &mut plan);
        }
        Some(s) if finished(pod, &current, &s.id) => {}
        stopped => {
            if stopped.is_some() {
                let mut stop = teardown(&current, pod.grace_seconds());
                stop.retain(|op| matches!(op, Op::StopContainer { .. } | Op::StopSandbox { .. }));
                plan.ops.extend(stop);
            }
            // The sandbox's last failure, if any, says why they wait.
            let why = memory.failures.get("").map_or(String::new(), |(f, _, _)| {
                format!("{}: {}", f.reason, f.message)
            });
            for c in pod.spec.init_containers.iter().chain(&pod.spec.containers) {
                plan.waiting
                    .insert(c.name.clone(), ("ContainerCreating".into(), why.clone()));
            }
            if let Some((_, at, _)) = memory.failures.get("")
                && let Some(until) = memory.backoff.wait_until("fail/", *at, input.now)
            {
                plan.wake(until);
                return plan;
            }
            let attempt = stopped.map_or(0, |s| s.attempt + 1);
            volumes(input, memory, &mut plan);
            plan.ops
                .push(Op::RunSandbox(spec::sandbox(pod, attempt, input.log_root)));
        }
    }
    plan
}

/// Whether `c`, whose latest attempt is `latest`, is to start now: never
/// started, its spec changed, or its restart policy wants it and its
/// crash-loop back-off is over (else it waits in `CrashLoopBackOff`).
fn restart_due(
    input: &Input<'_>,
    memory: &mut Memory,
    c: &Container,
    latest: Option<&ContainerObs>,
    plan: &mut Plan,
) -> bool {
    let pod = input.pod;
    let Some(l) = latest.filter(|l| l.hash == 0 || l.hash == spec::hash(c)) else {
        return true;
    };
    let failed = l.state != ContainerState::Exited || l.exit_code != 0;
    let restart = match pod.spec.restart_policy {
        RestartPolicy::Always => true,
        RestartPolicy::OnFailure => failed,
        RestartPolicy::Never => false,
    };
    if !restart {
        return false;
    }
    let event = if l.state == ContainerState::Exited {
        l.finished_ms()
    } else {
        input.now
    };
    if let Some(until) = memory.backoff.wait_until(&c.name, event, input.now) {
        let delay = memory.backoff.delay(&c.name) / 1000;
        let message = format!(
            "back-off {delay}s restarting failed container={} pod={}_{}({})",
            c.name, pod.name, pod.namespace, pod.uid
        );
        plan.waiting
            .insert(c.name.clone(), ("CrashLoopBackOff".into(), message));
        plan.wake(until);
        return false;
    }
    memory.backoff.next(&c.name, event);
    true
}

/// Whether `c`'s last failure (an image pull, a create) still holds it in
/// its back-off; the failure is shown as its waiting reason either way.
fn failure_waits(input: &Input<'_>, memory: &mut Memory, c: &Container, plan: &mut Plan) -> bool {
    let Some((f, at, shown)) = memory.failures.get_mut(&c.name) else {
        return false;
    };
    let waiting = if f.reason == "ErrImagePull" && *shown {
        (
            "ImagePullBackOff".into(),
            format!("Back-off pulling image {:?}", c.image),
        )
    } else {
        (f.reason.clone(), f.message.clone())
    };
    *shown = true;
    plan.waiting.insert(c.name.clone(), waiting);
    let key = format!("fail/{}", c.name);
    match memory.backoff.wait_until(&key, *at, input.now) {
        Some(until) => {
            plan.wake(until);
            true
        }
        None => false,
    }
}

/// The volume contents, written when they differ from what was written.
fn volumes(input: &Input<'_>, memory: &mut Memory, plan: &mut Plan) {
    let pod = input.pod;
    let mut out = Vec::new();
    for v in &pod.spec.volumes {
        let (plugin, source, data) = if let Some(src) = &v.config_map {
            (
                "configmap",
                src,
                input.objects.config_map(&pod.namespace, &src.name),
            )
        } else if let Some(src) = &v.secret {
            (
                "secret",
                src,
                input.objects.secret(&pod.namespace, &src.name),
            )
        } else if v.empty_dir.is_some() || v.host_path.is_none() {
            out.push(Volume {
                dir: spec::volume_dir(input.root, &pod.uid, "empty-dir", &v.name),
                files: None,
            });
            continue;
        } else {
            continue;
        };
        let mode = source.default_mode.unwrap_or(0o644);
        let data = data.unwrap_or_default();
        let files = if source.items.is_empty() {
            data.into_iter()
                .map(|(k, bytes)| (k, bytes, mode))
                .collect()
        } else {
            source
                .items
                .iter()
                .filter_map(|i| {
                    Some((
                        i.path.clone(),
                        data.get(&i.key)?.clone(),
                        i.mode.unwrap_or(mode),
                    ))
                })
                .collect()
        };
        out.push(Volume {
            dir: spec::volume_dir(input.root, &pod.uid, plugin, &v.name),
            files: Some(files),
        });
    }
    if out.is_empty() && memory.volumes.is_none() {
        memory.volumes = Some(out);
        return;
    }
    if memory.volumes.as_ref() != Some(&out) {
        memory.volumes = Some(out.clone());
        plan.ops.push(Op::WriteVolumes(out));
    }
}

/// Init containers in order, then the app containers, in sandbox `s`.
fn containers(
    input: &Input<'_>,
    memory: &mut Memory,
    current: &Observed,
    s: &SandboxObs,
    plan: &mut Plan,
) {
    let pod = input.pod;
    // Containers no longer in the spec, and older attempts beyond the most
    // recent finished one (kept for its logs and lastState), go.
    for c in &current.containers {
        let known = pod
            .spec
            .containers
            .iter()
            .chain(&pod.spec.init_containers)
            .any(|k| k.name == c.name);
        let all = attempts(current, &s.id, &c.name);
        let newest_exited = all
            .iter()
            .find(|a| a.state != ContainerState::Running && a.id != all[0].id);
        let keep = known && (c.id == all[0].id || newest_exited.is_some_and(|n| n.id == c.id));
        if !keep {
            if c.state == ContainerState::Running {
                plan.ops.push(Op::StopContainer {
                    id: c.id.clone(),
                    grace_seconds: pod.grace_seconds(),
                });
            }
            plan.ops.push(Op::RemoveContainer { id: c.id.clone() });
        }
    }
    for c in &current.containers {
        if c.state == ContainerState::Running {
            memory.failures.remove(&c.name);
        }
    }
    let app_started = pod
        .spec
        .containers
        .iter()
        .any(|c| !attempts(current, &s.id, &c.name).is_empty());
    if !app_started {
        for c in &pod.spec.init_containers {
            let latest = attempts(current, &s.id, &c.name).first().copied();
            if latest.is_some_and(|l| l.state == ContainerState::Exited && l.exit_code == 0) {
                continue;
            }
            if latest.is_none_or(|l| l.state != ContainerState::Running) {
                step(input, memory, s, c, latest, plan);
            }
            for app in &pod.spec.containers {
                plan.waiting
                    .insert(app.name.clone(), ("PodInitializing".into(), String::new()));
            }
            return;
        }
    }
    for c in &pod.spec.containers {
        let latest = attempts(current, &s.id, &c.name).first().copied();
        match latest {
            Some(l) if l.state == ContainerState::Running => {
                let changed = l.hash != 0 && l.hash != spec::hash(c);
                if changed || (input.unhealthy)(&c.name, &l.id) {
                    plan.ops.push(Op::StopContainer {
                        id: l.id.clone(),
                        grace_seconds: pod.grace_seconds(),
                    });
                }
            }
            _ => step(input, memory, s, c, latest, plan),
        }
    }
}

/// Starts (or restarts, after its back-off) one container that is not
/// running, if its restart policy wants it.
fn step(
    input: &Input<'_>,
    memory: &mut Memory,
    s: &SandboxObs,
    c: &Container,
    latest: Option<&ContainerObs>,
    plan: &mut Plan,
) {
    let pod = input.pod;
    if !restart_due(input, memory, c, latest, plan) || failure_waits(input, memory, c, plan) {
        return;
    }
    let attempt = latest.map_or(0, |l| l.attempt + 1);
    let at = Addresses {
        pod_ip: if s.ip.is_empty() {
            input.host_ip
        } else {
            &s.ip
        },
        host_ip: input.host_ip,
    };
    match spec::container(pod, c, attempt, input.objects, at, input.root) {
        Ok(spec) => {
            plan.waiting
                .entry(c.name.clone())
                .or_insert_with(|| ("ContainerCreating".into(), String::new()));
            plan.ops.push(Op::StartContainer {
                sandbox_id: s.id.clone(),
                sandbox: Box::new(spec::sandbox(pod, s.attempt, input.log_root)),
                spec: Box::new(spec),
            });
        }
        Err(message) => {
            plan.waiting.insert(
                c.name.clone(),
                ("CreateContainerConfigError".into(), message),
            );
        }
    }
}
