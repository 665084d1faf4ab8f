//! Messages shaped like a fleet's traffic.

use schema::{Header, Message, Route};

/// A Pod update for `node`, numbered `i`, whose content is a JSON document of
/// exactly `content_len` bytes (at least 16).
pub fn pod_update(node: &str, i: u64, content_len: usize) -> Message {
    let filler = content_len.saturating_sub(r#"{"data":""}"#.len());
    let content = format!(r#"{{"data":"{}"}}"#, "x".repeat(filler)).into_bytes();
    Message {
        header: Header {
            id: format!("6f1c2a4e-0b7d-4c55-9a3e-{i:012x}"),
            parent_id: String::new(),
            timestamp_ms: 1_700_000_000_000 + i,
            sync: false,
            resource_version: 1_000 + i,
            seq: i + 1,
            best_effort: false,
            message_type: String::new(),
        },
        route: Route {
            source: "edgecontroller".into(),
            destination: node.into(),
            group: "resource".into(),
            operation: "update".into(),
            resource: format!("default/pod/nginx-{i}"),
        },
        content,
    }
}

/// `n` Pod updates for one node.
pub fn pod_updates(node: &str, n: u64, content_len: usize) -> Vec<Message> {
    (0..n).map(|i| pod_update(node, i, content_len)).collect()
}
