//! What a user checks at the end: each edge's MetaServer lists exactly its
//! node's objects at their latest versions, and `cloudcontrol get devices`
//! shows the last value each thermometer reported.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use super::model::{Holding, Key, NAMESPACE, VERSION_LABEL};
use super::support::get;

/// The MetaServer's lists, cluster-wide, by kind.
const LISTS: &[(&str, &str)] = &[
    ("node", "/api/v1/nodes"),
    ("pod", "/api/v1/pods"),
    ("configmap", "/api/v1/configmaps"),
    ("secret", "/api/v1/secrets"),
    ("device", "/apis/devices.kubeedge.io/v1beta1/devices"),
    (
        "devicemodel",
        "/apis/devices.kubeedge.io/v1beta1/devicemodels",
    ),
];

/// What the MetaServer at `meta` holds, or why it could not be read.
pub(crate) fn held(meta: SocketAddr) -> Result<Holding, String> {
    let mut h = Holding::new();
    for &(kind, path) in LISTS {
        let body = match get(meta, path) {
            Some((200, body)) => body,
            Some((code, body)) => return Err(format!("GET {path}: {code} {body}")),
            None => return Err(format!("GET {path}: no answer")),
        };
        let list: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| format!("GET {path}: {e}: {body}"))?;
        for item in list["items"].as_array().into_iter().flatten() {
            let meta = &item["metadata"];
            let text = |v: &serde_json::Value| v.as_str().map(str::to_owned);
            let key: Key = (
                kind,
                text(&meta["namespace"]).unwrap_or_else(|| NAMESPACE.to_owned()),
                text(&meta["name"]).unwrap_or_default(),
            );
            h.insert(key, text(&meta["labels"][VERSION_LABEL]));
        }
    }
    Ok(h)
}

fn show((kind, ns, name): &Key) -> String {
    format!("{kind} {ns}/{name}")
}

fn version(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("-")
}

/// The differences between what `node` should hold and what it holds;
/// `owners` says which nodes should hold each object.
pub(crate) fn compare(
    node: &str,
    want: &Holding,
    have: &Holding,
    owners: &BTreeMap<Key, Vec<String>>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (key, v) in want {
        match have.get(key) {
            None => out.push(format!(
                "{node}: missing {} (version {})",
                show(key),
                version(v)
            )),
            Some(h) if h != v => out.push(format!(
                "{node}: stale {}: version {}, latest {}",
                show(key),
                version(h),
                version(v)
            )),
            Some(_) => {}
        }
    }
    for (key, v) in have.iter().filter(|(k, _)| !want.contains_key(*k)) {
        let whose = match owners.get(key) {
            Some(nodes) => format!("another node's object, desired on {}", nodes.join(",")),
            None => "deleted or never desired".to_owned(),
        };
        out.push(format!(
            "{node}: extra {} (version {}): {whose}",
            show(key),
            version(v)
        ));
    }
    out
}

/// The reported temperature per device in `cloudcontrol get devices`
/// output (`None` for a device listed without one).
pub(crate) fn reported(table: &str) -> BTreeMap<String, Option<String>> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let name = (*cols.get(1)?).to_owned();
            let value = cols.get(3).and_then(|r| {
                r.split(',')
                    .find_map(|t| t.strip_prefix("temperature="))
                    .map(str::to_owned)
            });
            Some((name, value))
        })
        .collect()
}

/// The nodes `cloudcontrol get nodes` does not show Ready, with what it
/// shows instead.
pub(crate) fn not_ready(table: &str, nodes: &[String]) -> Vec<String> {
    let status: BTreeMap<&str, &str> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut cols = line.split_whitespace();
            Some((cols.next()?, cols.next()?))
        })
        .collect();
    nodes
        .iter()
        .filter_map(|n| match status.get(n.as_str()) {
            Some(&"Ready") => None,
            Some(s) => Some(format!("{n}: `cloudcontrol get nodes` says {s}, not Ready")),
            None => Some(format!("{n}: not in `cloudcontrol get nodes`")),
        })
        .collect()
}

/// What the test knows of one thermometer's reports.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Reports {
    /// The last value DeviceTwin accepted (PUBACK and a result without an
    /// error).
    pub(crate) accepted: Option<u64>,
    /// The last value published at all (accepted or not: a publish whose
    /// answer was lost may still have been taken).
    pub(crate) attempted: Option<u64>,
    /// The edge's store was wiped after `accepted`: it may be lost.
    pub(crate) wiped_since: bool,
}

impl Reports {
    /// Whether the value the cloud shows is a possible latest state, or
    /// why not; `checked` is false when the wipe leaves nothing to demand.
    pub(crate) fn judge(&self, device: &str, cloud: Option<&str>) -> (bool, Option<String>) {
        let value = cloud.and_then(|c| c.parse::<u64>().ok());
        let shown = cloud.unwrap_or("nothing");
        if let (Some(v), Some(last)) = (value, self.attempted)
            && v > last
        {
            return (
                true,
                Some(format!("{device}: the cloud shows {v}, never published")),
            );
        }
        match self.accepted {
            Some(a) if !self.wiped_since => {
                let fresh = value.is_some_and(|v| v >= a);
                let problem = (!fresh).then(|| {
                    format!(
                        "{device}: report {a} accepted by the edge, the cloud shows {shown}{}",
                        if cloud.is_some() && value.is_none() {
                            " (not a published value)"
                        } else {
                            ""
                        }
                    )
                });
                (true, problem)
            }
            _ => (false, None),
        }
    }
}
