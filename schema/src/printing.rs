//! How kubectl shows a pod in `get pods`: READY (ready containers of all),
//! STATUS (the reason a container waits or ended with, init containers as
//! `Init:…`, else the phase) and RESTARTS, from the pod's `status`. Both
//! `cloudcontrol get pods` and the MetaServer's Table answer print these.

use serde_json::Value;

/// A pod's READY, STATUS and RESTARTS columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodColumns {
    pub ready: String,
    pub status: String,
    pub restarts: i64,
}

/// The columns of a pod with `status` (the pod's `.status`), as kubectl
/// prints them.
pub fn pod_columns(status: &Value) -> PodColumns {
    let statuses = status["containerStatuses"].as_array();
    let all = statuses.map_or(0, Vec::len);
    let ready = statuses
        .into_iter()
        .flatten()
        .filter(|c| c["ready"] == true)
        .count();
    let restarts = statuses
        .into_iter()
        .flatten()
        .filter_map(|c| c["restartCount"].as_i64())
        .sum();
    PodColumns {
        ready: format!("{ready}/{all}"),
        status: display_status(status),
        restarts,
    }
}

fn display_status(status: &Value) -> String {
    let list = |field: &str| status[field].as_array().cloned().unwrap_or_default();
    let init = list("initContainerStatuses");
    for (i, c) in init.iter().enumerate() {
        let t = &c["state"]["terminated"];
        match (
            t["exitCode"].as_i64(),
            c["state"]["waiting"]["reason"].as_str(),
        ) {
            (Some(0), _) => continue,
            (Some(code), _) => {
                return t["reason"]
                    .as_str()
                    .map_or(format!("Init:ExitCode:{code}"), |r| format!("Init:{r}"));
            }
            (None, Some(r)) if r != "PodInitializing" => return format!("Init:{r}"),
            _ => return format!("Init:{i}/{}", init.len()),
        }
    }
    let mut shown = status["phase"].as_str().unwrap_or("Unknown").to_owned();
    for c in list("containerStatuses").iter().rev() {
        if let Some(r) = c["state"]["waiting"]["reason"].as_str() {
            shown = r.to_owned();
        } else if let Some(r) = c["state"]["terminated"]["reason"].as_str() {
            shown = r.to_owned();
        }
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn columns_read_as_kubectl_prints_them() {
        let running = json!({"phase": "Running", "containerStatuses": [
            {"ready": true, "restartCount": 2, "state": {"running": {}}},
            {"ready": false, "restartCount": 1, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]});
        assert_eq!(
            pod_columns(&running),
            PodColumns {
                ready: "1/2".into(),
                status: "CrashLoopBackOff".into(),
                restarts: 3
            }
        );
        let init = json!({"phase": "Pending", "initContainerStatuses": [
            {"state": {"terminated": {"exitCode": 0}}}, {"state": {"running": {}}}]});
        assert_eq!(pod_columns(&init).status, "Init:1/2");
        let failed = json!({"phase": "Pending", "initContainerStatuses": [
            {"state": {"terminated": {"exitCode": 2, "reason": "Error"}}}]});
        assert_eq!(pod_columns(&failed).status, "Init:Error");
        let done = json!({"phase": "Succeeded", "containerStatuses": [
            {"ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]});
        assert_eq!(pod_columns(&done).status, "Completed");
        assert_eq!(
            pod_columns(&json!({})),
            PodColumns {
                ready: "0/0".into(),
                status: "Unknown".into(),
                restarts: 0
            }
        );
    }
}
