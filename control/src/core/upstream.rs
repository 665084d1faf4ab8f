//! What an upstream message from an edge means: a status change for the
//! node itself or for a pod or device bound to it. A node may only report
//! on itself and on what is bound to it.

use schema::Message;
use schema::records::ObjectKey;
use serde_json::Value;

use super::StatusChange;
use super::plan::{Assignment, kind};

/// The change `node` reports with `m`, or why it is refused.
pub(super) fn status_change(
    node: &str,
    assignment: &Assignment,
    m: &Message,
) -> Result<StatusChange, String> {
    let key = ObjectKey::parse(&m.route.resource)
        .map_err(|e| format!("resource {:?}: {e}", m.route.resource))?;
    let content: Value =
        serde_json::from_slice(&m.content).map_err(|e| format!("content is not JSON: {e}"))?;
    let owns = |k: &str| {
        assignment
            .nodes
            .get(node)
            .is_some_and(|set| set.contains_key(&ObjectKey::new(k, &key.namespace, &key.name)))
    };
    let ObjectKey {
        kind: what,
        namespace,
        name,
    } = key.clone();
    Ok(match what.as_str() {
        "nodestatus" if name == node => StatusChange::Node {
            node: node.to_owned(),
            status: content,
        },
        "nodestatus" => return Err(format!("node {node} reported the status of node {name}")),
        "podstatus" if owns(kind::POD) => StatusChange::Pod {
            namespace,
            name,
            status: content,
        },
        "devicestatus" if owns(kind::DEVICE) => StatusChange::Device {
            namespace,
            name,
            reported: content,
        },
        "podstatus" | "devicestatus" => {
            return Err(format!("{namespace}/{name} is not bound to node {node}"));
        }
        other => return Err(format!("unknown status kind {other:?}")),
    })
}
