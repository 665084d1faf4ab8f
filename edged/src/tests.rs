//! Edged driven against a simulated runtime that carries out its
//! operations the way the CRI does, with time passed in: what a user of
//! the kubelet would check (phases, reasons, restart counts, back-off).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::observed::{ContainerObs, ContainerState, Observed, SandboxObs};
use crate::pod::{Objects, Pod};
use crate::{Edged, EdgedConfig, Failure, Op, PodKey, PullPolicy, labels};

struct NoObjects;
impl Objects for NoObjects {
    fn config_map(&self, _: &str, _: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        None
    }
    fn secret(&self, _: &str, _: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        None
    }
}

/// A runtime: sandboxes and containers, started containers running until
/// the test makes them exit; images it has.
#[derive(Default)]
struct Runtime {
    observed: Observed,
    images: Vec<String>,
    next_id: u32,
    ops: Vec<Op>,
}

impl Runtime {
    fn id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}{}", self.next_id)
    }

    fn apply(&mut self, op: &Op, now_ms: u64) -> Result<(), Failure> {
        let ns = (now_ms * 1_000_000) as i64;
        self.ops.push(op.clone());
        match op {
            Op::WriteVolumes(_) => {}
            Op::RunSandbox(s) => {
                let id = self.id("sb");
                self.observed.sandboxes.push(SandboxObs {
                    id,
                    uid: s.uid.clone(),
                    attempt: s.attempt,
                    ready: true,
                    created_ns: ns,
                    ip: "10.88.0.7".into(),
                });
            }
            Op::StartContainer {
                sandbox_id, spec, ..
            } => {
                if !self.images.contains(&spec.image) {
                    return Err(match spec.pull {
                        PullPolicy::Never => Failure {
                            container: Some(spec.name.clone()),
                            reason: "ErrImageNeverPull".into(),
                            message: "not present".into(),
                        },
                        _ => Failure {
                            container: Some(spec.name.clone()),
                            reason: "ErrImagePull".into(),
                            message: "no registry".into(),
                        },
                    });
                }
                let hash = spec
                    .annotations
                    .iter()
                    .find(|(k, _)| k == labels::CONTAINER_HASH)
                    .map(|(_, v)| u64::from_str_radix(v, 16).unwrap())
                    .unwrap();
                let id = self.id("c");
                self.observed.containers.push(ContainerObs {
                    id,
                    sandbox_id: sandbox_id.clone(),
                    name: spec.name.clone(),
                    attempt: spec.attempt,
                    state: ContainerState::Running,
                    created_ns: ns,
                    started_ns: ns,
                    image_ref: format!("sha256:{}", spec.image.len()),
                    hash,
                    ..ContainerObs::default()
                });
            }
            Op::StopContainer { id, .. } => {
                let c = self
                    .observed
                    .containers
                    .iter_mut()
                    .find(|c| &c.id == id)
                    .unwrap();
                if c.state == ContainerState::Running {
                    c.state = ContainerState::Exited;
                    c.exit_code = 137;
                    c.finished_ns = ns;
                }
            }
            Op::RemoveContainer { id } => self.observed.containers.retain(|c| &c.id != id),
            Op::StopSandbox { id } => {
                for c in self
                    .observed
                    .containers
                    .iter_mut()
                    .filter(|c| &c.sandbox_id == id)
                {
                    if c.state == ContainerState::Running {
                        c.state = ContainerState::Exited;
                        c.exit_code = 137;
                        c.finished_ns = ns;
                    }
                }
                if let Some(s) = self.observed.sandboxes.iter_mut().find(|s| &s.id == id) {
                    s.ready = false;
                }
            }
            Op::RemoveSandbox { id } => self.observed.sandboxes.retain(|s| &s.id != id),
        }
        Ok(())
    }

    /// The running container `name` exits with `code` at `now_ms`.
    fn exit(&mut self, name: &str, code: i32, now_ms: u64) {
        let c = self
            .observed
            .containers
            .iter_mut()
            .find(|c| c.name == name && c.state == ContainerState::Running)
            .unwrap_or_else(|| panic!("{name} is not running"));
        c.state = ContainerState::Exited;
        c.exit_code = code;
        c.finished_ns = (now_ms * 1_000_000) as i64;
    }

    fn running(&self, name: &str) -> usize {
        self.observed
            .containers
            .iter()
            .filter(|c| c.name == name && c.state == ContainerState::Running)
            .count()
    }
}

fn config() -> EdgedConfig {
    EdgedConfig {
        host_ip: "192.168.1.2".into(),
        runtime_name: "containerd".into(),
        log_root: "/var/log/pods".into(),
        root_directory: "/var/lib/edged".into(),
        resync_ms: 10_000,
    }
}

fn pod(spec: Value) -> Pod {
    Pod::from_value(
        json!({"metadata": {"name": "web", "namespace": "default", "uid": "u1"}, "spec": spec}),
    )
    .unwrap()
}

fn key() -> PodKey {
    PodKey::new("default", "web")
}

/// Syncs every due pod until none has work at `now`: what the glue does.
fn settle(edged: &mut Edged, rt: &mut Runtime, now: u64) {
    for _ in 0..50 {
        let Some(k) = edged.poll_sync(now) else {
            return;
        };
        let ops = edged.handle_observed(&k, &rt.observed.clone(), &NoObjects, now);
        if ops.is_empty() {
            continue;
        }
        for op in &ops {
            if let Err(f) = rt.apply(op, now) {
                edged.handle_failed(&k, f, now);
                break;
            }
        }
        edged.handle_done(&k, now);
    }
    panic!("Edged did not settle");
}

fn status(edged: &Edged) -> Value {
    edged.status(&key()).cloned().expect("a status")
}

fn cond(s: &Value, kind: &str) -> String {
    s["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == kind)
        .map(|c| c["status"].as_str().unwrap().to_owned())
        .unwrap()
}

fn busybox() -> Runtime {
    Runtime {
        images: vec!["busybox:1".into()],
        ..Runtime::default()
    }
}

#[test]
fn a_pod_gets_a_sandbox_and_its_containers_and_is_running_and_ready() {
    let (mut e, mut rt) = (Edged::new(config()), busybox());
    e.handle_pod(pod(json!({"containers": [{"name": "a", "image": "busybox:1"}, {"name": "b", "image": "busybox:1"}]})), 1_000);
    settle(&mut e, &mut rt, 1_000);
    assert_eq!((rt.running("a"), rt.running("b")), (1, 1));
    let s = status(&e);
    assert_eq!(s["phase"], "Running");
    assert_eq!(cond(&s, "Ready"), "True");
    assert_eq!(cond(&s, "PodScheduled"), "True");
    assert_eq!(s["podIP"], "10.88.0.7");
    assert_eq!(s["hostIP"], "192.168.1.2");
    let a = &s["containerStatuses"][0];
    assert_eq!(a["restartCount"], 0);
    assert!(
        a["containerID"]
            .as_str()
            .unwrap()
            .starts_with("containerd://")
    );
    assert!(a["state"]["running"]["startedAt"].is_string());
    // Reported once; nothing new until something changes.
    assert!(e.poll_status().is_some());
    settle(&mut e, &mut rt, 20_000);
    assert_eq!(
        e.poll_status(),
        None,
        "an unchanged pod is not reported again"
    );
}

#[test]
fn a_crashing_container_restarts_with_the_kubelets_growing_back_off() {
    let (mut e, mut rt) = (Edged::new(config()), busybox());
    e.handle_pod(
        pod(json!({"containers": [{"name": "a", "image": "busybox:1"}]})),
        0,
    );
    settle(&mut e, &mut rt, 0);
    let mut now = 1_000;
    let mut waits = Vec::new();
    for _ in 0..4 {
        rt.exit("a", 1, now);
        e.handle_changed(&key(), now);
        settle(&mut e, &mut rt, now);
        let crashed = now;
        if rt.running("a") == 0 {
            let s = status(&e);
            assert_eq!(
                s["containerStatuses"][0]["state"]["waiting"]["reason"],
                "CrashLoopBackOff"
            );
            assert_eq!(
                s["containerStatuses"][0]["lastState"]["terminated"]["exitCode"],
                1
            );
            assert_eq!(
                s["phase"], "Running",
                "a restarting pod is Running, as the kubelet says"
            );
        }
        // Edged wakes for its resyncs and the back-off's end, and restarts
        // the container only at the end.
        while rt.running("a") == 0 {
            now = e.poll_timeout().unwrap();
            settle(&mut e, &mut rt, now);
        }
        waits.push(now - crashed);
        now += 1_000;
    }
    assert_eq!(waits, [0, 10_000, 20_000, 40_000]);
    assert_eq!(status(&e)["containerStatuses"][0]["restartCount"], 4);
    let kept = rt
        .observed
        .containers
        .iter()
        .filter(|c| c.name == "a")
        .count();
    assert_eq!(
        kept, 2,
        "the running attempt and the last dead one are kept"
    );
}

#[test]
fn restart_policies_decide_what_runs_again_and_the_phase() {
    for (policy, code, running, phase) in [
        ("Never", 0, 0, "Succeeded"),
        ("Never", 3, 0, "Failed"),
        ("OnFailure", 0, 0, "Succeeded"),
        ("OnFailure", 3, 1, "Running"),
        ("Always", 0, 1, "Running"),
    ] {
        let (mut e, mut rt) = (Edged::new(config()), busybox());
        e.handle_pod(pod(json!({"restartPolicy": policy, "containers": [{"name": "a", "image": "busybox:1"}]})), 0);
        settle(&mut e, &mut rt, 0);
        rt.exit("a", code, 1_000);
        e.handle_changed(&key(), 1_000);
        settle(&mut e, &mut rt, 1_000);
        assert_eq!(rt.running("a"), running, "{policy} exit {code}");
        assert_eq!(status(&e)["phase"], phase, "{policy} exit {code}");
        if phase == "Succeeded" {
            assert!(
                rt.observed.sandboxes.iter().all(|s| !s.ready),
                "a finished pod's sandbox is stopped"
            );
            assert_eq!(
                status(&e)["containerStatuses"][0]["state"]["terminated"]["reason"],
                "Completed"
            );
        }
    }
}

#[test]
fn a_missing_image_with_never_is_err_image_never_pull_and_pull_errors_back_off() {
    let (mut e, mut rt) = (Edged::new(config()), Runtime::default());
    e.handle_pod(
        pod(json!({"containers": [{"name": "a", "image": "gone:1", "imagePullPolicy": "Never"}]})),
        0,
    );
    settle(&mut e, &mut rt, 0);
    let s = status(&e);
    assert_eq!(s["phase"], "Pending");
    assert_eq!(
        s["containerStatuses"][0]["state"]["waiting"]["reason"],
        "ErrImageNeverPull"
    );
    assert_eq!(cond(&s, "Ready"), "False");

    let (mut e, mut rt) = (Edged::new(config()), Runtime::default());
    e.handle_pod(
        pod(json!({"containers": [{"name": "a", "image": "gone:1"}]})),
        0,
    );
    settle(&mut e, &mut rt, 0);
    assert_eq!(
        status(&e)["containerStatuses"][0]["state"]["waiting"]["reason"],
        "ErrImagePull"
    );
    // Tried again when the back-off ends, failing again; the resync in
    // the longer back-off that follows shows it.
    let at = e.poll_timeout().unwrap();
    settle(&mut e, &mut rt, at);
    let pulls = rt
        .ops
        .iter()
        .filter(|op| matches!(op, Op::StartContainer { .. }))
        .count();
    assert_eq!(pulls, 2);
    let at = e.poll_timeout().unwrap();
    settle(&mut e, &mut rt, at);
    assert_eq!(
        status(&e)["containerStatuses"][0]["state"]["waiting"]["reason"],
        "ImagePullBackOff"
    );
    rt.images.push("gone:1".into());
    while rt.running("a") == 0 {
        let at = e.poll_timeout().unwrap();
        settle(&mut e, &mut rt, at);
    }
    assert_eq!(rt.running("a"), 1);
    assert_eq!(status(&e)["phase"], "Running");
}

#[test]
fn init_containers_run_one_at_a_time_in_order_before_the_app() {
    let (mut e, mut rt) = (Edged::new(config()), busybox());
    e.handle_pod(
        pod(json!({"initContainers": [{"name": "i1", "image": "busybox:1"}, {"name": "i2", "image": "busybox:1"}],
                   "containers": [{"name": "a", "image": "busybox:1"}]})),
        0,
    );
    settle(&mut e, &mut rt, 0);
    assert_eq!(
        (rt.running("i1"), rt.running("i2"), rt.running("a")),
        (1, 0, 0)
    );
    let s = status(&e);
    assert_eq!(s["phase"], "Pending");
    assert_eq!(cond(&s, "Initialized"), "False");
    assert_eq!(
        s["containerStatuses"][0]["state"]["waiting"]["reason"],
        "PodInitializing"
    );
    rt.exit("i1", 0, 100);
    e.handle_changed(&key(), 100);
    settle(&mut e, &mut rt, 100);
    assert_eq!((rt.running("i2"), rt.running("a")), (1, 0));
    rt.exit("i2", 0, 200);
    e.handle_changed(&key(), 200);
    settle(&mut e, &mut rt, 200);
    assert_eq!(rt.running("a"), 1);
    let s = status(&e);
    assert_eq!(cond(&s, "Initialized"), "True");
    assert_eq!(s["phase"], "Running");
    assert_eq!(
        s["initContainerStatuses"][1]["state"]["terminated"]["reason"],
        "Completed"
    );
}

#[test]
fn a_failed_init_container_with_never_fails_the_pod() {
    let (mut e, mut rt) = (Edged::new(config()), busybox());
    e.handle_pod(
        pod(json!({"restartPolicy": "Never", "initContainers": [{"name": "i1", "image": "busybox:1"}],
                   "containers": [{"name": "a", "image": "busybox:1"}]})),
        0,
    );
    settle(&mut e, &mut rt, 0);
    rt.exit("i1", 2, 100);
    e.handle_changed(&key(), 100);
    settle(&mut e, &mut rt, 100);
    assert_eq!(rt.running("a"), 0);
    assert_eq!(status(&e)["phase"], "Failed");
}

#[test]
fn a_changed_container_is_replaced_and_its_restart_count_grows() {
    let (mut e, mut rt) = (Edged::new(config()), busybox());
    e.handle_pod(
        pod(json!({"restartPolicy": "Never", "containers": [{"name": "a", "image": "busybox:1"}]})),
        0,
    );
    settle(&mut e, &mut rt, 0);
    let first = rt.observed.containers[0].id.clone();
    e.handle_pod(
        pod(json!({"restartPolicy": "Never", "containers": [{"name": "a", "image": "busybox:1", "args": ["v2"]}]})),
        1_000,
    );
    settle(&mut e, &mut rt, 1_000);
    assert_eq!(rt.running("a"), 1);
    let now_running = rt
        .observed
        .containers
        .iter()
        .find(|c| c.state == ContainerState::Running)
        .unwrap();
    assert_ne!(now_running.id, first);
    assert!(
        rt.ops
            .iter()
            .any(|op| matches!(op, Op::StopContainer { id, grace_seconds: 30 } if *id == first))
    );
    assert_eq!(status(&e)["containerStatuses"][0]["restartCount"], 1);
}

#[test]
fn a_deleted_pod_is_stopped_and_removed_and_forgotten() {
    let (mut e, mut rt) = (Edged::new(config()), busybox());
    e.handle_pod(pod(json!({"terminationGracePeriodSeconds": 5, "containers": [{"name": "a", "image": "busybox:1"}]})), 0);
    settle(&mut e, &mut rt, 0);
    let _ = e.poll_status();
    e.handle_pod_deleted(&key(), 1_000);
    settle(&mut e, &mut rt, 1_000);
    assert!(rt.observed.is_empty(), "{:?}", rt.observed);
    assert!(rt.ops.iter().any(|op| matches!(
        op,
        Op::StopContainer {
            grace_seconds: 5,
            ..
        }
    )));
    assert_eq!(e.keys().count(), 0);
    assert_eq!(e.poll_status(), None, "a deleted pod reports nothing");
}

#[test]
fn a_restarted_edged_adopts_what_runs_without_restarting_it() {
    let (mut e, mut rt) = (Edged::new(config()), busybox());
    let spec = json!({"containers": [{"name": "a", "image": "busybox:1"}]});
    e.handle_pod(pod(spec.clone()), 0);
    settle(&mut e, &mut rt, 0);
    rt.exit("a", 1, 500);
    e.handle_changed(&key(), 500);
    settle(&mut e, &mut rt, 500);
    let before = rt.ops.len();
    let mut again = Edged::new(config());
    again.handle_pod(pod(spec), 60_000);
    again.handle_found(&key(), 60_000);
    settle(&mut again, &mut rt, 60_000);
    assert_eq!(
        rt.ops.len(),
        before,
        "nothing restarted: {:?}",
        &rt.ops[before..]
    );
    let s = again.status(&key()).unwrap();
    assert_eq!(s["containerStatuses"][0]["restartCount"], 1);
    assert_eq!(s["phase"], "Running");
}

#[test]
fn a_pod_the_runtime_holds_but_nobody_wants_is_torn_down() {
    let (mut e, mut rt) = (Edged::new(config()), busybox());
    e.handle_pod(
        pod(json!({"containers": [{"name": "a", "image": "busybox:1"}]})),
        0,
    );
    settle(&mut e, &mut rt, 0);
    let mut fresh = Edged::new(config());
    fresh.handle_found(&key(), 1_000);
    settle(&mut fresh, &mut rt, 1_000);
    assert!(rt.observed.is_empty());
}

#[test]
fn a_missing_config_map_is_a_config_error_and_a_down_runtime_says_so() {
    let (mut e, mut rt) = (Edged::new(config()), busybox());
    e.handle_pod(
        pod(json!({"containers": [{"name": "a", "image": "busybox:1",
            "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "k"}}}]}]})),
        0,
    );
    settle(&mut e, &mut rt, 0);
    let s = status(&e);
    assert_eq!(
        s["containerStatuses"][0]["state"]["waiting"]["reason"],
        "CreateContainerConfigError"
    );
    assert_eq!(
        s["containerStatuses"][0]["state"]["waiting"]["message"],
        "configmap \"cfg\" not found"
    );
    e.handle_runtime_down(
        "no runtime at unix:///run/containerd/containerd.sock",
        1_000,
    );
    let s = status(&e);
    assert_eq!(s["phase"], "Pending");
    assert_eq!(
        s["containerStatuses"][0]["state"]["waiting"]["reason"],
        "ContainerRuntimeUnavailable"
    );
}

/// Runs every probe due at `now` with `outcome`, then syncs.
fn probe_round(
    e: &mut Edged,
    rt: &mut Runtime,
    now: u64,
    outcome: impl Fn(&crate::ProbeRequest) -> bool,
) -> Vec<crate::ProbeKind> {
    let mut ran = Vec::new();
    while let Some(req) = e.poll_probe(now) {
        ran.push(req.kind);
        e.handle_probe_result(&req, outcome(&req), now);
    }
    settle(e, rt, now);
    ran
}

#[test]
fn a_failing_liveness_probe_restarts_the_container() {
    let (mut e, mut rt) = (Edged::new(config()), busybox());
    e.handle_pod(
        pod(json!({"containers": [{"name": "a", "image": "busybox:1",
            "livenessProbe": {"exec": {"command": ["cat", "/tmp/healthy"]}, "periodSeconds": 1, "failureThreshold": 2}}]})),
        1_000,
    );
    settle(&mut e, &mut rt, 1_000);
    let first = rt.observed.containers[0].id.clone();
    assert_eq!(
        probe_round(&mut e, &mut rt, 1_000, |_| false),
        [crate::ProbeKind::Liveness]
    );
    assert_eq!(rt.running("a"), 1, "one failure is below the threshold");
    assert!(
        probe_round(&mut e, &mut rt, 1_500, |_| false).is_empty(),
        "not before its period"
    );
    probe_round(&mut e, &mut rt, 2_000, |_| false);
    assert!(
        rt.ops
            .iter()
            .any(|op| matches!(op, Op::StopContainer { id, .. } if *id == first))
    );
    assert_eq!(
        rt.running("a"),
        1,
        "restarted at once: the first restart has no back-off"
    );
    assert_eq!(status(&e)["containerStatuses"][0]["restartCount"], 1);
    // The new container's probes start afresh.
    assert_eq!(
        probe_round(&mut e, &mut rt, 2_000, |_| true),
        [crate::ProbeKind::Liveness]
    );
    assert_eq!(rt.running("a"), 1);
}

#[test]
fn readiness_decides_ready_and_a_startup_probe_holds_the_others_back() {
    let (mut e, mut rt) = (Edged::new(config()), busybox());
    e.handle_pod(
        pod(json!({"containers": [{"name": "a", "image": "busybox:1", "ports": [{"name": "http", "containerPort": 8080}],
            "startupProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 1},
            "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080}},
            "readinessProbe": {"httpGet": {"port": "http"}, "initialDelaySeconds": 5}}]})),
        1_000,
    );
    settle(&mut e, &mut rt, 1_000);
    let s = status(&e);
    assert_eq!(s["phase"], "Running");
    assert_eq!(s["containerStatuses"][0]["started"], false);
    assert_eq!(
        cond(&s, "Ready"),
        "False",
        "not ready before its readiness probe succeeds"
    );
    let req = e.poll_probe(1_000).unwrap();
    assert_eq!(
        req.action,
        crate::ProbeAction::Tcp {
            host: "10.88.0.7".into(),
            port: 8080
        }
    );
    assert_eq!(
        e.poll_probe(1_000),
        None,
        "liveness and readiness wait for the startup probe"
    );
    e.handle_probe_result(&req, true, 1_000);
    settle(&mut e, &mut rt, 1_000);
    assert_eq!(status(&e)["containerStatuses"][0]["started"], true);
    let ran = probe_round(&mut e, &mut rt, 1_000, |_| true);
    assert_eq!(
        ran,
        [crate::ProbeKind::Liveness],
        "readiness waits for its initial delay"
    );
    assert_eq!(cond(&status(&e), "Ready"), "False");
    let ran = probe_round(&mut e, &mut rt, 6_000, |r| {
        r.kind == crate::ProbeKind::Readiness
    });
    assert!(ran.contains(&crate::ProbeKind::Readiness));
    assert_eq!(cond(&status(&e), "Ready"), "True");
    assert_eq!(status(&e)["containerStatuses"][0]["ready"], true);
    // A failing readiness probe makes it unready, not restarted.
    for t in [16_000, 26_000, 36_000] {
        probe_round(&mut e, &mut rt, t, |r| {
            r.kind != crate::ProbeKind::Readiness
        });
    }
    assert_eq!(cond(&status(&e), "Ready"), "False");
    assert_eq!(status(&e)["containerStatuses"][0]["restartCount"], 0);
}

#[test]
fn a_pod_marked_for_deletion_is_stopped_gracefully_and_kept_until_removed() {
    let (mut e, mut rt) = (Edged::new(config()), busybox());
    let spec = json!({"terminationGracePeriodSeconds": 7, "containers": [{"name": "a", "image": "busybox:1"}]});
    e.handle_pod(pod(spec.clone()), 1_000);
    settle(&mut e, &mut rt, 1_000);
    let mut deleting = pod(spec);
    deleting.deleting = true;
    e.handle_pod(deleting, 2_000);
    settle(&mut e, &mut rt, 2_000);
    assert_eq!(rt.running("a"), 0);
    assert!(rt.ops.iter().any(|op| matches!(
        op,
        Op::StopContainer {
            grace_seconds: 7,
            ..
        }
    )));
    assert!(
        rt.observed.sandboxes.iter().all(|s| !s.ready),
        "its sandbox is stopped"
    );
    assert!(
        !rt.observed.containers.is_empty(),
        "kept for its logs until the pod is removed"
    );
    let s = status(&e);
    assert_eq!(
        s["containerStatuses"][0]["state"]["terminated"]["exitCode"],
        137
    );
    e.handle_pod_deleted(&key(), 3_000);
    settle(&mut e, &mut rt, 3_000);
    assert!(rt.observed.is_empty());
}

/// Garbage as a stored Pod: refused or planned, never a panic (the fuzz
/// target `edge-core/fuzz/fuzz_targets/pod_json.rs` runs the same path).
fn plan_bytes(bytes: &[u8]) {
    let Ok(p) = Pod::from_json(bytes) else { return };
    let key = PodKey::new(&p.namespace, &p.name);
    let (mut e, mut rt) = (Edged::new(config()), busybox());
    e.handle_pod(p, 1_000);
    if e.poll_sync(1_000).is_some() {
        for op in e.handle_observed(&key, &rt.observed.clone(), &NoObjects, 1_000) {
            let _ = rt.apply(&op, 1_000);
        }
    }
    let _ = e.poll_status();
    let _ = e.poll_probe(1_000);
}

proptest::proptest! {
    #[test]
    fn garbage_pods_are_refused_or_planned_never_a_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
        plan_bytes(&bytes);
    }

    #[test]
    fn odd_field_values_are_refused_or_planned(
        policy in "(Always|OnFailure|Never|[a-z]{0,4})", image in ".{0,20}", port in proptest::num::i64::ANY,
        grace in proptest::num::i64::ANY, limit in ".{0,12}", path in ".{0,12}",
    ) {
        let doc = json!({"metadata": {"name": "p", "uid": "u"}, "spec": {
            "restartPolicy": policy, "terminationGracePeriodSeconds": grace,
            "volumes": [{"name": "v", "configMap": {"name": "c", "items": [{"key": "k", "path": path}]}}],
            "containers": [{"name": "a", "image": image, "resources": {"limits": {"memory": limit, "cpu": limit}},
                "volumeMounts": [{"name": "v", "mountPath": "/m", "subPath": path}],
                "livenessProbe": {"httpGet": {"port": port}}, "readinessProbe": {"tcpSocket": {"port": path}}}]}});
        plan_bytes(doc.to_string().as_bytes());
    }
}

#[test]
fn a_sandbox_that_fails_is_retried_after_a_back_off_and_says_why() {
    let (mut e, mut rt) = (Edged::new(config()), busybox());
    e.handle_pod(
        pod(json!({"containers": [{"name": "a", "image": "busybox:1"}]})),
        1_000,
    );
    let k = e.poll_sync(1_000).unwrap();
    let ops = e.handle_observed(&k, &rt.observed.clone(), &NoObjects, 1_000);
    assert!(matches!(ops.as_slice(), [Op::RunSandbox(_)]), "{ops:?}");
    let failure = Failure {
        container: None,
        reason: "FailedCreatePodSandBox".into(),
        message: "no pause image".into(),
    };
    e.handle_failed(&k, failure, 1_000);
    e.handle_done(&k, 1_000);
    settle(&mut e, &mut rt, 1_000);
    assert!(rt.ops.is_empty(), "not retried at once: {:?}", rt.ops);
    let w = &status(&e)["containerStatuses"][0]["state"]["waiting"];
    assert_eq!(w["reason"], "ContainerCreating");
    assert_eq!(w["message"], "FailedCreatePodSandBox: no pause image");
    let at = e.poll_timeout().unwrap();
    assert_eq!(at, 11_000, "retried after the back-off");
    settle(&mut e, &mut rt, at);
    assert_eq!(rt.running("a"), 1);
}
