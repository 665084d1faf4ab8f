//! Tables (`Accept: application/json;as=Table;g=meta.k8s.io;v=v1`), the
//! form kubectl asks for in `get`, with the columns the API server gives
//! each kind: pods NAME READY STATUS RESTARTS AGE (IP and NODE for `-o
//! wide`), configmaps NAME DATA AGE, secrets NAME TYPE DATA AGE, nodes NAME
//! STATUS ROLES AGE VERSION (addresses, OS, kernel and runtime for `-o
//! wide`), and NAME AGE for custom resources (devices, device models), as
//! for a CRD without printer columns. Watches asked for a Table send each
//! object as a one-row Table.

use serde_json::{Map, Value, json};

use clock::{age, parse_rfc3339};
use schema::kinds;

/// Whether the request asks for a Table.
pub(super) fn wanted(accept: &str) -> bool {
    accept.split(',').any(|t| t.contains("as=Table"))
}

/// One column: name, `-o wide` only (priority 1), description.
type Column = (&'static str, u8, &'static str);

const NAME: Column = ("Name", 0, "Name must be unique within a namespace.");
const AGE: Column = (
    "Age",
    0,
    "CreationTimestamp is a timestamp representing the server time when this object was created.",
);

const POD: &[Column] = &[
    NAME,
    (
        "Ready",
        0,
        "The aggregate readiness state of this pod for accepting traffic.",
    ),
    (
        "Status",
        0,
        "The aggregate status of the containers in this pod.",
    ),
    (
        "Restarts",
        0,
        "The number of times the containers in this pod have been restarted.",
    ),
    AGE,
    ("IP", 1, "The IP address assigned to this pod."),
    ("Node", 1, "The node the pod is bound to."),
];
const CONFIGMAP: &[Column] = &[
    NAME,
    ("Data", 0, "Data contains the configuration data."),
    AGE,
];
const SECRET: &[Column] = &[
    NAME,
    (
        "Type",
        0,
        "Used to facilitate programmatic handling of secret data.",
    ),
    ("Data", 0, "Data contains the secret data."),
    AGE,
];
const NODE: &[Column] = &[
    NAME,
    ("Status", 0, "The status of the node"),
    ("Roles", 0, "The roles of the node"),
    AGE,
    ("Version", 0, "Kubelet Version reported by the node."),
    ("Internal-IP", 1, "List of internal IPs."),
    ("External-IP", 1, "List of external IPs."),
    ("OS-Image", 1, "OS image reported by the node."),
    ("Kernel-Version", 1, "Kernel version reported by the node."),
    (
        "Container-Runtime",
        1,
        "Container runtime version reported by the node.",
    ),
];
const CUSTOM: &[Column] = &[NAME, AGE];

fn columns(kind: &str) -> &'static [Column] {
    match kind {
        kinds::POD => POD,
        kinds::CONFIGMAP => CONFIGMAP,
        kinds::SECRET => SECRET,
        kinds::NODE => NODE,
        _ => CUSTOM,
    }
}

/// The Table of `objects` of `kind` (served JSON), as of `rv`.
pub(super) fn of(kind: &str, objects: &[Value], rv: u64, now_ms: u64) -> Value {
    let definitions: Vec<Value> = columns(kind)
        .iter()
        .map(|&(name, priority, description)| {
            let format = if name == "Name" { "name" } else { "" };
            json!({"name": name, "type": "string", "format": format,
                   "description": description, "priority": priority})
        })
        .collect();
    let rows: Vec<Value> = objects.iter().map(|o| row(kind, o, now_ms)).collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": rv.to_string()},
        "columnDefinitions": definitions,
        "rows": rows,
    })
}

/// One object's row: its cells and its metadata (kubectl reads the
/// namespace from it for `-A`).
fn row(kind: &str, o: &Value, now_ms: u64) -> Value {
    let meta = &o["metadata"];
    let name = text(&meta["name"]);
    let created = meta["creationTimestamp"]
        .as_str()
        .or(o["status"]["startTime"].as_str())
        .and_then(parse_rfc3339)
        .map_or_else(|| "<unknown>".to_owned(), |t| age(now_ms, t));
    let cells: Vec<String> = match kind {
        kinds::POD => {
            let c = schema::printing::pod_columns(&o["status"]);
            let (ip, node) = (text(&o["status"]["podIP"]), text(&o["spec"]["nodeName"]));
            vec![
                name,
                c.ready,
                c.status,
                c.restarts.to_string(),
                created,
                ip,
                node,
            ]
        }
        kinds::CONFIGMAP => {
            let data = entries(&o["data"]) + entries(&o["binaryData"]);
            vec![name, data.to_string(), created]
        }
        kinds::SECRET => {
            let data = entries(&o["data"]) + entries(&o["stringData"]);
            vec![name, text(&o["type"]), data.to_string(), created]
        }
        kinds::NODE => node_cells(o, name, created),
        _ => vec![name, created],
    };
    json!({
        "cells": cells,
        "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta},
    })
}

fn node_cells(o: &Value, name: String, created: String) -> Vec<String> {
    let status = &o["status"];
    let ready = status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready");
    let mut state = match ready.map(|c| &c["status"]) {
        Some(s) if s == "True" => "Ready".to_owned(),
        Some(s) if s == "False" => "NotReady".to_owned(),
        _ => "Unknown".to_owned(),
    };
    if o["spec"]["unschedulable"] == true {
        state.push_str(",SchedulingDisabled");
    }
    let roles: Vec<&str> = o["metadata"]["labels"]
        .as_object()
        .into_iter()
        .flat_map(Map::keys)
        .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
        .filter(|r| !r.is_empty())
        .collect();
    let roles = if roles.is_empty() {
        "<none>".to_owned()
    } else {
        roles.join(",")
    };
    let address = |kind: &str| {
        status["addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["type"] == kind)
            .map_or_else(|| "<none>".to_owned(), |a| text(&a["address"]))
    };
    let info = &status["nodeInfo"];
    vec![
        name,
        state,
        roles,
        created,
        text(&info["kubeletVersion"]),
        address("InternalIP"),
        address("ExternalIP"),
        text(&info["osImage"]),
        text(&info["kernelVersion"]),
        text(&info["containerRuntimeVersion"]),
    ]
}

fn text(v: &Value) -> String {
    v.as_str()
        .filter(|s| !s.is_empty())
        .unwrap_or("<none>")
        .to_owned()
}

fn entries(v: &Value) -> usize {
    v.as_object().map_or(0, Map::len)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_796_083_200_000; // 2026-12-01T00:00:00Z

    fn cells(kind: &str, o: Value) -> Vec<String> {
        let t = of(kind, &[o], 7, NOW);
        assert_eq!(t["metadata"]["resourceVersion"], "7");
        let n = t["columnDefinitions"].as_array().unwrap().len();
        let cells: Vec<String> = serde_json::from_value(t["rows"][0]["cells"].clone()).unwrap();
        assert_eq!(cells.len(), n, "a cell per column");
        cells
    }

    #[test]
    fn configmaps_and_secrets_count_their_data() {
        let cm = json!({"metadata": {"name": "cfg", "creationTimestamp": "2026-11-30T23:00:00Z"},
                        "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}});
        assert_eq!(cells(kinds::CONFIGMAP, cm), ["cfg", "3", "60m"]);
        let s = json!({"metadata": {"name": "tls"}, "type": "kubernetes.io/tls",
                       "data": {"tls.crt": "", "tls.key": ""}});
        assert_eq!(
            cells(kinds::SECRET, s),
            ["tls", "kubernetes.io/tls", "2", "<unknown>"]
        );
    }

    #[test]
    fn nodes_show_readiness_roles_and_what_they_run() {
        let node = json!({
            "metadata": {"name": "edge-1", "creationTimestamp": "2026-11-29T00:00:00Z",
                         "labels": {"node-role.kubernetes.io/edge": "", "node-role.kubernetes.io/agent": ""}},
            "spec": {"unschedulable": true},
            "status": {
                "conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}],
                "addresses": [{"type": "InternalIP", "address": "10.0.0.5"}, {"type": "Hostname", "address": "edge-1"}],
                "nodeInfo": {"kubeletVersion": "v1.30.0-apiary", "osImage": "Debian GNU/Linux 12",
                             "kernelVersion": "6.1.0", "containerRuntimeVersion": "containerd://1.6.20"}
            }
        });
        assert_eq!(
            cells(kinds::NODE, node),
            [
                "edge-1",
                "Ready,SchedulingDisabled",
                "agent,edge",
                "2d",
                "v1.30.0-apiary",
                "10.0.0.5",
                "<none>",
                "Debian GNU/Linux 12",
                "6.1.0",
                "containerd://1.6.20"
            ]
        );
        let unknown = json!({"metadata": {"name": "n"}});
        assert_eq!(cells(kinds::NODE, unknown)[1..3], ["Unknown", "<none>"]);
        let down = json!({"metadata": {"name": "n"}, "status": {"conditions": [{"type": "Ready", "status": "False"}]}});
        assert_eq!(cells(kinds::NODE, down)[1], "NotReady");
    }

    #[test]
    fn pods_and_custom_resources() {
        let pod = json!({"metadata": {"name": "web-1", "creationTimestamp": "2026-11-30T23:59:30Z"},
                         "spec": {"nodeName": "edge-1"},
                         "status": {"phase": "Running", "podIP": "10.88.0.4",
                                    "containerStatuses": [{"ready": true, "restartCount": 2, "state": {"running": {}}}]}});
        assert_eq!(
            cells(kinds::POD, pod),
            ["web-1", "1/1", "Running", "2", "30s", "10.88.0.4", "edge-1"]
        );
        let device =
            json!({"metadata": {"name": "thermo", "creationTimestamp": "2026-11-30T00:00:00Z"}});
        assert_eq!(cells(kinds::DEVICE, device), ["thermo", "24h"]);
    }
}
