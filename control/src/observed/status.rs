//! Observed state as YAML files under the status dir (default
//! `DATA/status`): `nodes/{name}.yaml`, `pods/{namespace}/{name}.yaml`,
//! `devices/{namespace}/{name}.yaml`, each a Kubernetes-shaped object with
//! its `status`; and the tables `cloudcontrol get nodes|pods|devices`
//! prints from them, like kubectl. Files are replaced atomically.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use clock::{age, parse_rfc3339, rfc3339, unix_ms};

use crate::util::write_atomic;

/// Why a status file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {detail}", path.display())]
    Yaml { path: PathBuf, detail: String },
}

/// The status directory.
#[derive(Debug, Clone)]
pub struct StatusDir {
    root: PathBuf,
}

impl StatusDir {
    pub fn new(root: &Path) -> StatusDir {
        StatusDir {
            root: root.to_owned(),
        }
    }

    fn node_path(&self, node: &str) -> PathBuf {
        self.root.join("nodes").join(format!("{}.yaml", safe(node)))
    }

    fn ns_path(&self, dir: &str, namespace: &str, name: &str) -> PathBuf {
        self.root
            .join(dir)
            .join(safe(namespace))
            .join(format!("{}.yaml", safe(name)))
    }

    fn read(path: &Path) -> Result<Option<Value>, StatusError> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_saphyr::from_str(&text)
                .map(Some)
                .map_err(|e| StatusError::Yaml {
                    path: path.to_owned(),
                    detail: e.to_string(),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StatusError::Io {
                path: path.to_owned(),
                source,
            }),
        }
    }

    fn write(path: &Path, value: &Value) -> Result<(), StatusError> {
        let text = serde_saphyr::to_string(value).map_err(|e| StatusError::Yaml {
            path: path.to_owned(),
            detail: e.to_string(),
        })?;
        write_atomic(path, text.as_bytes()).map_err(|source| StatusError::Io {
            path: path.to_owned(),
            source,
        })
    }

    /// Makes sure an edge node has a file (readiness `Unknown` until it
    /// connects).
    pub fn ensure_node(&self, node: &str) -> Result<(), StatusError> {
        let path = self.node_path(node);
        if path.exists() {
            return Ok(());
        }
        let now = rfc3339(unix_ms());
        let v = node_object(
            node,
            json!([{"type": "Ready", "status": "Unknown",
            "reason": "NodeStatusNeverUpdated", "message": "the node has not connected yet",
            "lastHeartbeatTime": now, "lastTransitionTime": now}]),
        );
        Self::write(&path, &v)
    }

    /// Sets a node's Ready condition from its link (connect/disconnect).
    pub fn node_link(
        &self,
        node: &str,
        ready: bool,
        reason: &str,
        at_ms: u64,
    ) -> Result<(), StatusError> {
        let path = self.node_path(node);
        let mut v = Self::read(&path)?.unwrap_or_else(|| node_object(node, json!([])));
        let status = if ready { "True" } else { "False" };
        let message = if ready {
            "edge node connected"
        } else {
            "edge node disconnected"
        };
        set_condition(
            &mut v,
            json!({"type": "Ready", "status": status, "reason": reason,
            "message": message, "lastHeartbeatTime": rfc3339(at_ms)}),
            at_ms,
        );
        Self::write(&path, &v)
    }

    /// Merges conditions (and other fields) an edge reported for its node.
    pub fn node_status(&self, node: &str, reported: &Value) -> Result<(), StatusError> {
        let path = self.node_path(node);
        let mut v = Self::read(&path)?.unwrap_or_else(|| node_object(node, json!([])));
        let now = unix_ms();
        if let Some(obj) = reported.as_object() {
            for (field, value) in obj {
                if field == "conditions" {
                    for c in value.as_array().into_iter().flatten() {
                        set_condition(&mut v, c.clone(), now);
                    }
                } else {
                    v["status"][field] = value.clone();
                }
            }
        }
        Self::write(&path, &v)
    }

    /// Replaces a pod's status with what its node reported.
    pub fn pod_status(
        &self,
        namespace: &str,
        name: &str,
        node: &str,
        status: &Value,
    ) -> Result<(), StatusError> {
        let v = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"nodeName": node}, "status": status});
        Self::write(&self.ns_path("pods", namespace, name), &v)
    }

    /// Merges reported twin values into a device's `status.twins`, by
    /// `propertyName`.
    pub fn device_status(
        &self,
        namespace: &str,
        name: &str,
        node: &str,
        reported: &Value,
    ) -> Result<(), StatusError> {
        let path = self.ns_path("devices", namespace, name);
        let mut v = Self::read(&path)?.unwrap_or_else(|| {
            json!({"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"nodeName": node}, "status": {"twins": []}})
        });
        if !v["status"]["twins"].is_array() {
            v["status"]["twins"] = json!([]);
        }
        for twin in reported["twins"].as_array().into_iter().flatten() {
            let Some(prop) = twin["propertyName"].as_str() else {
                continue;
            };
            let twins = v["status"]["twins"]
                .as_array_mut()
                .expect("made an array above");
            match twins.iter_mut().find(|t| t["propertyName"] == prop) {
                Some(t) => {
                    if let (Some(t), Some(new)) = (t.as_object_mut(), twin.as_object()) {
                        t.extend(new.iter().map(|(k, v)| (k.clone(), v.clone())));
                    }
                }
                None => twins.push(twin.clone()),
            }
        }
        Self::write(&path, &v)
    }

    fn list(&self, dir: &str, namespaced: bool) -> Vec<Value> {
        let mut files = Vec::new();
        let base = self.root.join(dir);
        let dirs: Vec<PathBuf> = if namespaced {
            std::fs::read_dir(&base)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .collect()
        } else {
            vec![base]
        };
        for d in dirs {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "yaml") {
                    files.push(p);
                }
            }
        }
        files.sort();
        files
            .iter()
            .filter_map(|p| Self::read(p).ok().flatten())
            .collect()
    }

    /// The table `cloudcontrol get {what}` prints; `what` is nodes, pods or
    /// devices (singular and short forms accepted, as kubectl does).
    pub fn table(&self, what: &str) -> Option<String> {
        let now = unix_ms();
        let s = |v: &Value| v.as_str().unwrap_or("<none>").to_owned();
        let (header, rows): (&[&str], Vec<Vec<String>>) = match what {
            "nodes" | "node" | "no" => (
                &["NAME", "STATUS", "ROLES", "AGE"],
                self.list("nodes", false)
                    .iter()
                    .map(|n| {
                        let ready = condition(n, "Ready");
                        let status = match ready.map(|c| c["status"].as_str().unwrap_or("")) {
                            Some("True") => "Ready",
                            Some("False") => "NotReady",
                            _ => "Unknown",
                        };
                        let since = ready
                            .and_then(|c| c["lastTransitionTime"].as_str())
                            .and_then(parse_rfc3339)
                            .map_or("<unknown>".into(), |t| age(now, t));
                        vec![
                            s(&n["metadata"]["name"]),
                            status.into(),
                            "agent,edge".into(),
                            since,
                        ]
                    })
                    .collect(),
            ),
            "pods" | "pod" | "po" => (
                &[
                    "NAMESPACE",
                    "NAME",
                    "READY",
                    "STATUS",
                    "RESTARTS",
                    "AGE",
                    "NODE",
                ],
                self.list("pods", true)
                    .iter()
                    .map(|p| pod_row(p, now))
                    .collect(),
            ),
            "devices" | "device" | "dev" => (
                &["NAMESPACE", "NAME", "NODE", "REPORTED"],
                self.list("devices", true)
                    .iter()
                    .map(|d| {
                        let twins: Vec<String> = d["status"]["twins"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|t| {
                                format!("{}={}", s(&t["propertyName"]), s(&t["reported"]["value"]))
                            })
                            .collect();
                        vec![
                            s(&d["metadata"]["namespace"]),
                            s(&d["metadata"]["name"]),
                            s(&d["spec"]["nodeName"]),
                            if twins.is_empty() {
                                "<none>".into()
                            } else {
                                twins.join(",")
                            },
                        ]
                    })
                    .collect(),
            ),
            _ => return None,
        };
        Some(render(header, &rows))
    }
}

/// A pod's row in `cloudcontrol get pods`, as kubectl shows it.
fn pod_row(p: &Value, now: u64) -> Vec<String> {
    let s = |v: &Value| v.as_str().unwrap_or("<none>").to_owned();
    let columns = schema::printing::pod_columns(&p["status"]);
    let since = p["status"]["startTime"]
        .as_str()
        .and_then(parse_rfc3339)
        .map_or("<unknown>".into(), |t| age(now, t));
    vec![
        s(&p["metadata"]["namespace"]),
        s(&p["metadata"]["name"]),
        columns.ready,
        columns.status,
        columns.restarts.to_string(),
        since,
        s(&p["spec"]["nodeName"]),
    ]
}

fn node_object(node: &str, conditions: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": node, "labels": {crate::core::plan::EDGE_LABEL: ""}},
        "status": {"conditions": conditions}})
}

fn condition<'a>(obj: &'a Value, ty: &str) -> Option<&'a Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == ty)
}

/// Sets condition `c` (by `type`), keeping `lastTransitionTime` unless the
/// status changed.
fn set_condition(obj: &mut Value, mut c: Value, now_ms: u64) {
    if !obj["status"]["conditions"].is_array() {
        obj["status"]["conditions"] = json!([]);
    }
    let list = obj["status"]["conditions"]
        .as_array_mut()
        .expect("made an array above");
    let old = list.iter().position(|x| x["type"] == c["type"]);
    let transition = match old.map(|i| &list[i]) {
        Some(o) if o["status"] == c["status"] => o["lastTransitionTime"].clone(),
        _ => Value::String(rfc3339(now_ms)),
    };
    if c.get("lastTransitionTime").is_none() || old.is_some() {
        c["lastTransitionTime"] = transition;
    }
    match old {
        Some(i) => list[i] = c,
        None => list.push(c),
    }
}

/// A column-aligned table, as kubectl prints.
fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                l.push_str(c);
            } else {
                l.push_str(&format!("{c:<w$}   ", w = widths[i]));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
    out
}

/// A name usable as one path component.
fn safe(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.starts_with('.') {
        format!("_{s}")
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_show_what_was_reported() {
        let dir = tempfile::tempdir().unwrap();
        let st = StatusDir::new(dir.path());
        st.ensure_node("edge-2").unwrap();
        st.node_link("edge-1", true, "EdgeConnected", unix_ms())
            .unwrap();
        st.pod_status(
            "default",
            "web",
            "edge-1",
            &json!({"phase": "Running", "startTime": rfc3339(unix_ms() - 300_000),
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [{"ready": true, "restartCount": 1, "state": {"running": {}}}]}),
        )
        .unwrap();
        st.device_status(
            "default",
            "t1",
            "edge-1",
            &json!({"twins": [{"propertyName": "temperature",
            "reported": {"value": "21"}}]}),
        )
        .unwrap();
        st.device_status("default", "t1", "edge-1", &json!({"twins": [{"propertyName": "temperature",
            "reported": {"value": "22"}}, {"propertyName": "humidity", "reported": {"value": "40"}}]})).unwrap();
        let nodes = st.table("nodes").unwrap();
        let rows = |t: String| -> Vec<Vec<String>> {
            t.lines()
                .map(|l| l.split_whitespace().map(str::to_owned).collect())
                .collect()
        };
        let n = rows(nodes.clone());
        assert_eq!(n[0], ["NAME", "STATUS", "ROLES", "AGE"], "{nodes}");
        assert_eq!(n[1][..3], ["edge-1", "Ready", "agent,edge"], "{nodes}");
        assert_eq!(n[2][..2], ["edge-2", "Unknown"], "{nodes}");
        assert!(
            nodes.lines().all(|l| l.find("ROLES").or(l.find("agent"))
                == nodes.lines().next().unwrap().find("ROLES")),
            "aligned: {nodes}"
        );
        assert_eq!(
            rows(st.table("pods").unwrap())[1],
            ["default", "web", "1/1", "Running", "1", "5m", "edge-1"]
        );
        assert_eq!(
            rows(st.table("devices").unwrap())[1],
            ["default", "t1", "edge-1", "temperature=22,humidity=40"]
        );
        st.node_link("edge-1", false, "EdgeDisconnected", unix_ms())
            .unwrap();
        assert_eq!(rows(st.table("no").unwrap())[1][1], "NotReady");
        assert!(st.table("services").is_none());
    }

    #[test]
    fn names_cannot_escape_the_directory() {
        assert_eq!(safe("../x"), "_.._x");
        assert_eq!(safe(""), "_");
        assert_eq!(safe("a/b"), "a_b");
    }
}
