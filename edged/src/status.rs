//! A pod's status as the kubelet writes it: phase (its `getPhase` rules),
//! the four conditions with their transition times, a status per init and
//! app container (state, last state, restart count, image, ids, ready),
//! IPs and start time.

use serde_json::{Value, json};

use clock::rfc3339;

use crate::observed::{ContainerObs, ContainerState, Observed};
use crate::plan::{Waiting, attempts, latest_sandbox};
use crate::pod::{Container, Pod, RestartPolicy};

/// What a status is made from besides the pod and the runtime's report.
pub(crate) struct Context<'a> {
    pub(crate) waiting: &'a Waiting,
    pub(crate) previous: Option<&'a Value>,
    pub(crate) host_ip: &'a str,
    pub(crate) runtime: &'a str,
    pub(crate) start_ms: u64,
    pub(crate) now: u64,
    /// `(started, ready)` of a running container, from its probes.
    pub(crate) health: &'a dyn Fn(&str) -> (bool, bool),
}

fn time_ns(ns: i64) -> Value {
    if ns <= 0 {
        Value::Null
    } else {
        Value::String(rfc3339((ns / 1_000_000) as u64))
    }
}

fn terminated(c: &ContainerObs, runtime: &str) -> Value {
    let reason = match c.reason.as_str() {
        "" if c.exit_code == 0 => "Completed",
        "" => "Error",
        r => r,
    };
    let mut t = json!({
        "exitCode": c.exit_code, "reason": reason,
        "startedAt": time_ns(c.started_ns), "finishedAt": time_ns(c.finished_ns),
        "containerID": format!("{runtime}://{}", c.id),
    });
    if !c.message.is_empty() {
        t["message"] = json!(c.message);
    }
    json!({ "terminated": t })
}

fn waiting_state(reason: Option<&(String, String)>) -> Value {
    let (reason, message) = reason
        .cloned()
        .unwrap_or(("ContainerCreating".into(), String::new()));
    let mut w = json!({ "reason": reason });
    if !message.is_empty() {
        w["message"] = json!(message);
    }
    json!({ "waiting": w })
}

/// One container's status from its attempts, newest first.
fn container_status(c: &Container, all: &[&ContainerObs], ctx: &Context<'_>) -> Value {
    let waiting = ctx.waiting.get(&c.name);
    let latest = all.first();
    let previous = all
        .iter()
        .skip(1)
        .find(|a| a.state == ContainerState::Exited);
    let (state, last) = match latest {
        Some(l) if l.state == ContainerState::Running => (
            json!({"running": {"startedAt": time_ns(l.started_ns)}}),
            previous.map(|p| terminated(p, ctx.runtime)),
        ),
        Some(l) if l.state == ContainerState::Exited && waiting.is_some() => {
            (waiting_state(waiting), Some(terminated(l, ctx.runtime)))
        }
        Some(l) if l.state == ContainerState::Exited => (
            terminated(l, ctx.runtime),
            previous.map(|p| terminated(p, ctx.runtime)),
        ),
        _ => (
            waiting_state(waiting),
            previous.map(|p| terminated(p, ctx.runtime)),
        ),
    };
    let running = latest.is_some_and(|l| l.state == ContainerState::Running);
    let (started, ready) = if running {
        (ctx.health)(&c.name)
    } else {
        (false, false)
    };
    let mut s = json!({
        "name": c.name, "state": state, "lastState": last.unwrap_or_else(|| json!({})),
        "ready": ready, "started": started,
        "restartCount": latest.map_or(0, |l| l.attempt),
        "image": c.image, "imageID": latest.map_or("", |l| l.image_ref.as_str()),
    });
    if let Some(l) = latest {
        s["containerID"] = json!(format!("{}://{}", ctx.runtime, l.id));
    }
    s
}

/// The kubelet's phase rules over the container statuses.
fn phase(pod: &Pod, init: &[Value], app: &[Value]) -> &'static str {
    let is = |s: &Value, state: &str| s["state"][state].is_object();
    let init_done = init
        .iter()
        .all(|s| is(s, "terminated") && s["state"]["terminated"]["exitCode"] == 0);
    let app_started = app
        .iter()
        .any(|s| !is(s, "waiting") || s["lastState"]["terminated"].is_object());
    if !init_done && !app_started {
        let failed = init
            .iter()
            .any(|s| is(s, "terminated") && s["state"]["terminated"]["exitCode"] != 0);
        return if failed && pod.spec.restart_policy == RestartPolicy::Never {
            "Failed"
        } else {
            "Pending"
        };
    }
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for s in app {
        if is(s, "running") {
            running += 1;
        } else if is(s, "terminated") {
            stopped += 1;
            if s["state"]["terminated"]["exitCode"] == 0 {
                succeeded += 1;
            }
        } else if s["lastState"]["terminated"].is_object() {
            stopped += 1;
        } else {
            waiting += 1;
        }
    }
    match pod.spec.restart_policy {
        _ if waiting > 0 => "Pending",
        _ if running > 0 => "Running",
        RestartPolicy::Always if stopped > 0 => "Running",
        _ if stopped > 0 && stopped == succeeded => "Succeeded",
        RestartPolicy::Never if stopped > 0 => "Failed",
        _ if stopped > 0 => "Running",
        _ => "Pending",
    }
}

/// A condition, keeping its transition time while its status holds.
fn condition(ctx: &Context<'_>, kind: &str, ok: bool, reason: &str, message: String) -> Value {
    let status = if ok { "True" } else { "False" };
    let since = ctx
        .previous
        .and_then(|p| p["conditions"].as_array())
        .and_then(|cs| {
            cs.iter()
                .find(|c| c["type"] == kind && c["status"] == status)
        })
        .map_or_else(
            || json!(rfc3339(ctx.now)),
            |c| c["lastTransitionTime"].clone(),
        );
    let mut c =
        json!({"type": kind, "status": status, "lastProbeTime": null, "lastTransitionTime": since});
    if !ok {
        c["reason"] = json!(reason);
        c["message"] = json!(message);
    }
    c
}

/// The pod's status from the runtime's report.
pub(crate) fn pod_status(pod: &Pod, observed: &Observed, ctx: &Context<'_>) -> Value {
    let sandbox = latest_sandbox(observed, &pod.uid);
    let sandbox_id = sandbox.map_or("", |s| s.id.as_str());
    let statuses = |list: &[Container]| -> Vec<Value> {
        list.iter()
            .map(|c| container_status(c, &attempts(observed, sandbox_id, &c.name), ctx))
            .collect()
    };
    let init = statuses(&pod.spec.init_containers);
    let app = statuses(&pod.spec.containers);
    let phase = phase(pod, &init, &app);
    let not = |list: &[Value], test: &dyn Fn(&Value) -> bool| -> Vec<String> {
        list.iter()
            .filter(|s| !test(s))
            .map(|s| s["name"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    let uninit = not(&init, &|s| s["state"]["terminated"]["exitCode"] == 0);
    let unready = not(&app, &|s| s["ready"] == true);
    let initialized = uninit.is_empty() || app.iter().any(|s| s["state"]["running"].is_object());
    let ready = unready.is_empty();
    let (reason, message) = if phase == "Succeeded" {
        ("PodCompleted", String::new())
    } else {
        (
            "ContainersNotReady",
            format!("containers with unready status: [{}]", unready.join(" ")),
        )
    };
    let pod_ip = match sandbox.map(|s| s.ip.as_str()) {
        Some(ip) if !ip.is_empty() => ip.to_owned(),
        _ if pod.spec.host_network => ctx.host_ip.to_owned(),
        _ => String::new(),
    };
    let mut status = json!({
        "phase": phase,
        "conditions": [
            condition(ctx, "Initialized", initialized, "ContainersNotInitialized",
                format!("containers with incomplete status: [{}]", uninit.join(" "))),
            condition(ctx, "Ready", ready, reason, message.clone()),
            condition(ctx, "ContainersReady", ready, reason, message),
            condition(ctx, "PodScheduled", true, "", String::new()),
        ],
        "hostIP": ctx.host_ip, "hostIPs": [{"ip": ctx.host_ip}],
        "startTime": rfc3339(ctx.start_ms),
        "qosClass": crate::quantity::qos_class(pod),
        "containerStatuses": app,
    });
    if !init.is_empty() {
        status["initContainerStatuses"] = json!(init);
    }
    if !pod_ip.is_empty() {
        status["podIP"] = json!(pod_ip);
        status["podIPs"] = json!([{"ip": pod_ip}]);
    }
    status
}
