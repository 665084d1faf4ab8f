//! Liveness, readiness and startup probes, scheduled as the kubelet's
//! prober does: one worker per running container and kind, first run after
//! `initialDelaySeconds`, then every `periodSeconds`; a result flips after
//! `successThreshold` / `failureThreshold` consecutive outcomes. Until a
//! startup probe succeeds the other two do not run; a failed liveness or
//! startup probe gets the container killed (then restarted as its policy
//! says); readiness decides `ready`. The glue runs what [`Probes::poll`]
//! asks and reports the outcome.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::edged::PodKey;
use crate::observed::{ContainerState, Observed};
use crate::plan::{attempts, latest_sandbox};
use crate::pod::{Container, Pod, Probe};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProbeKind {
    Startup,
    Liveness,
    Readiness,
}

/// What to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeAction {
    /// Run in the container; exit code 0 is success.
    Exec { command: Vec<String> },
    /// A status from 200 to 399 is success.
    Http {
        https: bool,
        host: String,
        port: u16,
        path: String,
        headers: Vec<(String, String)>,
    },
    /// A connection that opens is success.
    Tcp { host: String, port: u16 },
}

/// A probe to run now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeRequest {
    pub pod: PodKey,
    pub container: String,
    pub container_id: String,
    pub kind: ProbeKind,
    pub action: ProbeAction,
    pub timeout_ms: u64,
}

#[derive(Debug)]
struct Worker {
    container_id: String,
    probe: Probe,
    action: Result<ProbeAction, String>,
    next_at: u64,
    successes: u32,
    failures: u32,
    /// None until the first threshold is reached.
    result: Option<bool>,
    busy: bool,
}

type Slot = (PodKey, String, ProbeKind);

/// Every probe worker of the node.
#[derive(Debug, Default)]
pub(crate) struct Probes {
    workers: BTreeMap<Slot, Worker>,
}

/// A port given as a number or as the name of one of `c`'s ports.
fn port(c: &Container, v: &Value) -> Result<u16, String> {
    match v {
        Value::Number(n) => n
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .ok_or(format!("bad port {n}")),
        Value::String(name) => match name.parse::<u16>() {
            Ok(p) => Ok(p),
            Err(_) => c
                .ports
                .iter()
                .find(|p| &p.name == name)
                .map(|p| p.container_port)
                .ok_or_else(|| format!("no container port named {name:?}")),
        },
        _ => Err("a probe needs a port".into()),
    }
}

fn action(c: &Container, p: &Probe, pod_ip: &str) -> Result<ProbeAction, String> {
    let host = |h: &str| {
        if h.is_empty() {
            pod_ip.to_owned()
        } else {
            h.to_owned()
        }
    };
    if let Some(e) = &p.exec {
        return Ok(ProbeAction::Exec {
            command: e.command.clone(),
        });
    }
    if let Some(h) = &p.http_get {
        return Ok(ProbeAction::Http {
            https: h.scheme.eq_ignore_ascii_case("https"),
            host: host(&h.host),
            port: port(c, &h.port)?,
            path: if h.path.is_empty() {
                "/".into()
            } else {
                h.path.clone()
            },
            headers: h
                .http_headers
                .iter()
                .map(|x| (x.name.clone(), x.value.clone()))
                .collect(),
        });
    }
    if let Some(t) = &p.tcp_socket {
        return Ok(ProbeAction::Tcp {
            host: host(&t.host),
            port: port(c, &t.port)?,
        });
    }
    Err("a probe needs exec, httpGet or tcpSocket".into())
}

impl Probes {
    /// Workers for `pod`'s running containers as `observed` shows them; a
    /// new container (a restart) starts its probes afresh.
    pub(crate) fn sync(&mut self, key: &PodKey, pod: &Pod, observed: &Observed, host_ip: &str) {
        let sandbox = latest_sandbox(observed, &pod.uid);
        let sandbox_id = sandbox.map_or("", |s| s.id.as_str());
        let pod_ip = sandbox
            .map(|s| s.ip.as_str())
            .filter(|ip| !ip.is_empty())
            .unwrap_or(host_ip);
        let mut live = Vec::new();
        for c in &pod.spec.containers {
            let Some(l) = attempts(observed, sandbox_id, &c.name)
                .first()
                .copied()
                .filter(|l| l.state == ContainerState::Running)
            else {
                continue;
            };
            let kinds = [
                (ProbeKind::Startup, &c.startup_probe),
                (ProbeKind::Liveness, &c.liveness_probe),
                (ProbeKind::Readiness, &c.readiness_probe),
            ];
            for (kind, probe) in kinds {
                let Some(probe) = probe else { continue };
                let slot = (key.clone(), c.name.clone(), kind);
                live.push(slot.clone());
                if self
                    .workers
                    .get(&slot)
                    .is_some_and(|w| w.container_id == l.id)
                {
                    continue;
                }
                let started_ms = (l.started_ns.max(0) / 1_000_000) as u64;
                self.workers.insert(
                    slot,
                    Worker {
                        container_id: l.id.clone(),
                        probe: probe.clone(),
                        action: action(c, probe, pod_ip),
                        next_at: started_ms + probe.initial_delay_seconds * 1000,
                        successes: 0,
                        failures: 0,
                        result: None,
                        busy: false,
                    },
                );
            }
        }
        self.workers
            .retain(|slot, _| &slot.0 != key || live.contains(slot));
    }

    /// Forgets a pod's workers.
    pub(crate) fn forget(&mut self, key: &PodKey) {
        self.workers.retain(|slot, _| &slot.0 != key);
    }

    fn started(&self, key: &PodKey, container: &str) -> bool {
        let slot = (key.clone(), container.to_owned(), ProbeKind::Startup);
        self.workers
            .get(&slot)
            .is_none_or(|w| w.result == Some(true))
    }

    fn due(&self, slot: &Slot, w: &Worker) -> bool {
        !w.busy
            && match slot.2 {
                // A startup probe that succeeded is done for this container.
                ProbeKind::Startup => w.result != Some(true),
                _ => self.started(&slot.0, &slot.1),
            }
    }

    /// The next probe to run, if one is due; it is busy until its result.
    pub(crate) fn poll(&mut self, now: u64) -> Option<ProbeRequest> {
        let slot = self
            .workers
            .iter()
            .find(|(slot, w)| self.due(slot, w) && w.next_at <= now)
            .map(|(slot, _)| slot.clone())?;
        let w = self.workers.get_mut(&slot)?;
        w.busy = true;
        let action = match &w.action {
            Ok(a) => a.clone(),
            // A probe that cannot run fails, as the kubelet's does.
            Err(_) => ProbeAction::Exec {
                command: Vec::new(),
            },
        };
        Some(ProbeRequest {
            pod: slot.0,
            container: slot.1,
            container_id: w.container_id.clone(),
            kind: slot.2,
            action,
            timeout_ms: w.probe.timeout_seconds.max(1) * 1000,
        })
    }

    /// When the next probe is due.
    pub(crate) fn timeout(&self) -> Option<u64> {
        self.workers
            .iter()
            .filter(|(s, w)| self.due(s, w))
            .map(|(_, w)| w.next_at)
            .min()
    }

    /// A probe's outcome; true when its result changed (the pod must be
    /// synced: a kill, or readiness).
    pub(crate) fn handle_result(&mut self, req: &ProbeRequest, ok: bool, now: u64) -> bool {
        let slot = (req.pod.clone(), req.container.clone(), req.kind);
        let Some(w) = self
            .workers
            .get_mut(&slot)
            .filter(|w| w.container_id == req.container_id)
        else {
            return false;
        };
        w.busy = false;
        w.next_at = now + w.probe.period_seconds.max(1) * 1000;
        let before = w.result;
        if ok {
            w.failures = 0;
            w.successes += 1;
            if w.successes >= w.probe.success_threshold.max(1) {
                w.result = Some(true);
            }
        } else {
            w.successes = 0;
            w.failures += 1;
            if w.failures >= w.probe.failure_threshold.max(1) {
                w.result = Some(false);
            }
        }
        w.result != before
    }

    /// Whether the container must be killed: its liveness or startup probe failed.
    pub(crate) fn unhealthy(&self, key: &PodKey, container: &str, id: &str) -> bool {
        [ProbeKind::Liveness, ProbeKind::Startup]
            .into_iter()
            .any(|kind| {
                let slot = (key.clone(), container.to_owned(), kind);
                self.workers
                    .get(&slot)
                    .is_some_and(|w| w.container_id == id && w.result == Some(false))
            })
    }

    /// `(started, ready)` of a running container, as its probes say.
    pub(crate) fn health(&self, key: &PodKey, container: &str) -> (bool, bool) {
        let started = self.started(key, container);
        let slot = (key.clone(), container.to_owned(), ProbeKind::Readiness);
        let ready = self
            .workers
            .get(&slot)
            .is_none_or(|w| w.result == Some(true));
        (started, started && ready)
    }
}
