//! Tables (`Accept: application/json;as=Table;g=meta.k8s.io;v=v1`), the
//! form kubectl asks for in `get`: for pods the columns it shows (NAME
//! READY STATUS RESTARTS AGE, with IP and NODE for `-o wide`), computed as
//! the API server computes them. Other kinds are answered as plain lists,
//! which kubectl prints itself.

use serde_json::{Value, json};

use clock::{age, parse_rfc3339};

/// Whether the request asks for a Table.
pub(super) fn wanted(accept: &str) -> bool {
    accept.split(',').any(|t| t.contains("as=Table"))
}

fn column(name: &str, priority: u8, description: &str) -> Value {
    let format = if name == "Name" { "name" } else { "" };
    json!({"name": name, "type": "string", "format": format, "description": description, "priority": priority})
}

/// The Table of `pods` (served JSON, with their status), as of `rv`.
pub(super) fn pods(pods: &[Value], rv: u64, now_ms: u64) -> Value {
    let rows: Vec<Value> = pods.iter().map(|p| pod_row(p, now_ms)).collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": rv.to_string()},
        "columnDefinitions": [
            column("Name", 0, "Name must be unique within a namespace."),
            column("Ready", 0, "The aggregate readiness state of this pod for accepting traffic."),
            column("Status", 0, "The aggregate status of the containers in this pod."),
            column("Restarts", 0, "The number of times the containers in this pod have been restarted."),
            column("Age", 0, "The time since the pod was created."),
            column("IP", 1, "The IP address assigned to this pod."),
            column("Node", 1, "The node the pod is bound to."),
        ],
        "rows": rows,
    })
}

fn pod_row(p: &Value, now_ms: u64) -> Value {
    let columns = schema::printing::pod_columns(&p["status"]);
    let since = p["metadata"]["creationTimestamp"]
        .as_str()
        .or(p["status"]["startTime"].as_str())
        .and_then(parse_rfc3339)
        .map_or_else(|| "<unknown>".to_owned(), |t| age(now_ms, t));
    let text = |v: &Value| v.as_str().unwrap_or("<none>").to_owned();
    json!({
        "cells": [
            text(&p["metadata"]["name"]), columns.ready, columns.status,
            columns.restarts.to_string(), since,
            text(&p["status"]["podIP"]), text(&p["spec"]["nodeName"]),
        ],
        "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": p["metadata"]},
    })
}
