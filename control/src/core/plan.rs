//! Which node needs which object, and what to send when something changes:
//! plain functions over the desired state, with no I/O.
//!
//! An edge node (a Node labelled [`EDGE_LABEL`]) needs its own Node object,
//! the Pods bound to it (`spec.nodeName`), the ConfigMaps and Secrets those
//! Pods reference (volumes, projected volumes, `env`, `envFrom`,
//! `imagePullSecrets`), the Devices bound to it (`spec.nodeName`) and their
//! DeviceModels. [`assign`] computes that for every node; [`diff`] turns
//! "what a node should have" and "what it has (or was last sent)" into
//! [`Action`]s.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use schema::records::ObjectKey;
use serde_json::Value;

/// The label that makes a Node an edge node.
pub const EDGE_LABEL: &str = "node-role.kubernetes.io/edge";

pub use schema::kinds::{self as kind, CLUSTER_NAMESPACE};

/// One object of the desired state, with its resourceVersion.
#[derive(Debug, Clone)]
pub struct DesiredObject {
    pub rv: u64,
    /// The object as Kubernetes JSON.
    pub value: Value,
    /// `value` serialized: the content of the messages that carry it.
    pub content: Arc<[u8]>,
}

/// The whole desired state: live objects, and the version at which deleted
/// ones went away (used as the resourceVersion of delete messages).
///
/// Objects are shared: a new state that keeps an object points at the same
/// [`DesiredObject`] as the state before it, so a change of one object
/// neither copies nor frees the others.
#[derive(Debug, Clone, Default)]
pub struct Desired {
    pub objects: BTreeMap<ObjectKey, Arc<DesiredObject>>,
    pub tombstones: BTreeMap<ObjectKey, u64>,
}

/// What one node should hold: key → resourceVersion.
pub type NodeObjects = BTreeMap<ObjectKey, u64>;

/// Every node's objects, and what could not be placed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assignment {
    pub nodes: BTreeMap<String, NodeObjects>,
    pub problems: Vec<Problem>,
}

/// Something in the desired state that cannot be delivered as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// A Pod or Device is bound to a node that is not an edge node.
    NotAnEdgeNode { object: ObjectKey, node: String },
    /// An object references one that does not exist (yet).
    MissingReference { from: ObjectKey, missing: ObjectKey },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::NotAnEdgeNode { object, node } => write!(
                f,
                "{} is bound to node {node:?}, which is not an edge node (no Node object labelled {EDGE_LABEL}): not sent anywhere",
                show(object)
            ),
            Problem::MissingReference { from, missing } => write!(
                f,
                "{} references {}, which does not exist",
                show(from),
                show(missing)
            ),
        }
    }
}

/// `kind namespace/name`, for logs.
pub fn show(key: &ObjectKey) -> String {
    format!("{} {}/{}", key.kind, key.namespace, key.name)
}

/// What to send one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send the object at `rv`; `insert` when the node is not known to have
    /// any version of it.
    Upsert {
        key: ObjectKey,
        rv: u64,
        insert: bool,
    },
    /// Remove the object from the node.
    Delete { key: ObjectKey, rv: u64 },
}

/// Whether a Node object is an edge node.
pub fn is_edge_node(node: &Value) -> bool {
    node.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .is_some_and(|labels| labels.contains_key(EDGE_LABEL))
}

/// Decides which objects every edge node needs.
pub fn assign(desired: &Desired) -> Assignment {
    let mut out = Assignment::default();
    for (key, obj) in &desired.objects {
        if key.kind == kind::NODE && is_edge_node(&obj.value) {
            out.nodes
                .entry(key.name.clone())
                .or_default()
                .insert(key.clone(), obj.rv);
        }
    }
    for (key, obj) in &desired.objects {
        let refs = match key.kind.as_str() {
            kind::POD => pod_references(&key.namespace, &obj.value),
            kind::DEVICE => device_references(&key.namespace, &obj.value),
            _ => continue,
        };
        let Some(node) = obj.value.pointer("/spec/nodeName").and_then(Value::as_str) else {
            // Not scheduled yet: no node needs it.
            continue;
        };
        let Some(set) = out.nodes.get_mut(node) else {
            out.problems.push(Problem::NotAnEdgeNode {
                object: key.clone(),
                node: node.to_owned(),
            });
            continue;
        };
        set.insert(key.clone(), obj.rv);
        for r in refs {
            match desired.objects.get(&r) {
                Some(o) => {
                    set.insert(r, o.rv);
                }
                None => out.problems.push(Problem::MissingReference {
                    from: key.clone(),
                    missing: r,
                }),
            }
        }
    }
    out
}

/// The ConfigMaps and Secrets a Pod references.
pub fn pod_references(namespace: &str, pod: &Value) -> BTreeSet<ObjectKey> {
    let mut refs = BTreeSet::new();
    let mut add = |kind: &str, name: Option<&Value>| {
        if let Some(name) = name.and_then(Value::as_str) {
            refs.insert(ObjectKey::new(kind, namespace, name));
        }
    };
    let spec = &pod["spec"];
    for v in spec["volumes"].as_array().into_iter().flatten() {
        add(kind::CONFIGMAP, v.pointer("/configMap/name"));
        add(kind::SECRET, v.pointer("/secret/secretName"));
        for s in v
            .pointer("/projected/sources")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            add(kind::CONFIGMAP, s.pointer("/configMap/name"));
            add(kind::SECRET, s.pointer("/secret/name"));
        }
    }
    for s in spec["imagePullSecrets"].as_array().into_iter().flatten() {
        add(kind::SECRET, s.get("name"));
    }
    let containers = ["containers", "initContainers", "ephemeralContainers"];
    for c in containers
        .iter()
        .flat_map(|f| spec[*f].as_array().into_iter().flatten())
    {
        for e in c["env"].as_array().into_iter().flatten() {
            add(
                kind::CONFIGMAP,
                e.pointer("/valueFrom/configMapKeyRef/name"),
            );
            add(kind::SECRET, e.pointer("/valueFrom/secretKeyRef/name"));
        }
        for e in c["envFrom"].as_array().into_iter().flatten() {
            add(kind::CONFIGMAP, e.pointer("/configMapRef/name"));
            add(kind::SECRET, e.pointer("/secretRef/name"));
        }
    }
    refs
}

/// The DeviceModel a Device references (`spec.deviceModelRef.name`).
pub fn device_references(namespace: &str, device: &Value) -> BTreeSet<ObjectKey> {
    device
        .pointer("/spec/deviceModelRef/name")
        .and_then(Value::as_str)
        .map(|name| ObjectKey::new(kind::DEVICEMODEL, namespace, name))
        .into_iter()
        .collect()
}

/// What to send a node that should hold `want` and holds (or was sent)
/// `have`: objects it lacks or holds at an older version, and deletes for
/// objects it should no longer hold. `delete_rv` gives the version of a
/// delete message for a key (see [`delete_version`]).
pub fn diff(
    want: &NodeObjects,
    have: &NodeObjects,
    delete_rv: impl Fn(&ObjectKey, u64) -> u64,
) -> Vec<Action> {
    let mut actions = Vec::new();
    for (key, &rv) in want {
        match have.get(key) {
            Some(&h) if h >= rv => {}
            h => actions.push(Action::Upsert {
                key: key.clone(),
                rv,
                // 0: sent before, never acknowledged.
                insert: h.is_none_or(|h| *h == 0),
            }),
        }
    }
    for (key, &h) in have {
        if !want.contains_key(key) {
            actions.push(Action::Delete {
                key: key.clone(),
                rv: delete_rv(key, h),
            });
        }
    }
    actions
}

/// The resourceVersion of a delete message for `key` on a node that holds
/// version `have`: never older than what the node holds, the version at
/// which the object was deleted, or its current version (when it still
/// exists but the node no longer needs it).
pub fn delete_version(desired: &Desired, key: &ObjectKey, have: u64) -> u64 {
    let current = desired.objects.get(key).map_or(0, |o| o.rv);
    let gone = desired.tombstones.get(key).copied().unwrap_or(0);
    have.max(current).max(gone)
}

/// What to send a node whose holdings are in doubt (a resync after its
/// queue overflowed or it lost data): every object of `want`, as inserts,
/// and deletes of what its checkpoint `have` lists beyond them.
pub fn snapshot(
    want: &NodeObjects,
    have: &NodeObjects,
    delete_rv: impl Fn(&ObjectKey, u64) -> u64,
) -> Vec<Action> {
    let mut actions = diff(want, &NodeObjects::new(), &delete_rv);
    actions.extend(
        (have.iter())
            .filter(|(k, _)| !want.contains_key(*k))
            .map(|(k, &h)| Action::Delete {
                key: k.clone(),
                rv: delete_rv(k, h),
            }),
    );
    actions
}

/// Every node named in either assignment, with what changed for it from
/// `old` to `new`.
pub fn changes(desired: &Desired, old: &Assignment, new: &Assignment) -> Vec<(String, Action)> {
    let empty = NodeObjects::new();
    let nodes: BTreeSet<&String> = old.nodes.keys().chain(new.nodes.keys()).collect();
    let mut out = Vec::new();
    for node in nodes {
        let want = new.nodes.get(node).unwrap_or(&empty);
        let had = old.nodes.get(node).unwrap_or(&empty);
        for a in diff(want, had, |k, h| delete_version(desired, k, h)) {
            out.push((node.clone(), a));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(d: &mut Desired, kind: &str, ns: &str, rv: u64, value: Value) -> ObjectKey {
        let name = value["metadata"]["name"].as_str().unwrap().to_owned();
        let k = ObjectKey::new(kind, ns, &name);
        let content: Arc<[u8]> = serde_json::to_vec(&value).unwrap().into();
        d.objects
            .insert(k.clone(), Arc::new(DesiredObject { rv, value, content }));
        k
    }

    fn edge(d: &mut Desired, name: &str, rv: u64) -> ObjectKey {
        let v = json!({"kind":"Node","metadata":{"name":name,"labels":{EDGE_LABEL:""}}});
        obj(d, kind::NODE, CLUSTER_NAMESPACE, rv, v)
    }

    fn sample() -> Desired {
        let mut d = Desired::default();
        edge(&mut d, "edge-1", 1);
        edge(&mut d, "edge-2", 2);
        obj(
            &mut d,
            kind::NODE,
            CLUSTER_NAMESPACE,
            3,
            json!({"metadata":{"name":"cloud-1"}}),
        );
        obj(
            &mut d,
            kind::CONFIGMAP,
            "default",
            4,
            json!({"metadata":{"name":"cfg"}}),
        );
        obj(
            &mut d,
            kind::SECRET,
            "default",
            5,
            json!({"metadata":{"name":"creds"}}),
        );
        obj(
            &mut d,
            kind::SECRET,
            "default",
            6,
            json!({"metadata":{"name":"unused"}}),
        );
        obj(
            &mut d,
            kind::POD,
            "default",
            7,
            json!({"metadata":{"name":"web"},"spec":{
            "nodeName":"edge-1",
            "volumes":[{"name":"c","configMap":{"name":"cfg"}}],
            "containers":[{"name":"a","env":[{"name":"X","valueFrom":{"secretKeyRef":{"name":"creds","key":"k"}}}]}]}}),
        );
        obj(
            &mut d,
            kind::DEVICEMODEL,
            "default",
            8,
            json!({"metadata":{"name":"thermo"}}),
        );
        obj(
            &mut d,
            kind::DEVICE,
            "default",
            9,
            json!({"metadata":{"name":"t1"},
            "spec":{"nodeName":"edge-1","deviceModelRef":{"name":"thermo"}}}),
        );
        d
    }

    fn names(set: &NodeObjects) -> Vec<String> {
        set.keys()
            .map(|k| format!("{}/{}", k.kind, k.name))
            .collect()
    }

    #[test]
    fn pods_bring_their_configmaps_and_secrets_devices_their_models() {
        let a = assign(&sample());
        assert_eq!(a.problems, vec![]);
        assert_eq!(
            names(&a.nodes["edge-1"]),
            [
                "configmap/cfg",
                "device/t1",
                "devicemodel/thermo",
                "node/edge-1",
                "pod/web",
                "secret/creds"
            ]
        );
        assert_eq!(names(&a.nodes["edge-2"]), ["node/edge-2"]);
        assert!(
            !a.nodes.contains_key("cloud-1"),
            "a node without the edge label gets nothing"
        );
    }

    #[test]
    fn every_reference_form_is_found() {
        let pod = json!({"spec":{
            "volumes":[{"secret":{"secretName":"s1"}},{"projected":{"sources":[{"configMap":{"name":"c2"}},{"secret":{"name":"s2"}}]}}],
            "imagePullSecrets":[{"name":"s3"}],
            "initContainers":[{"envFrom":[{"configMapRef":{"name":"c3"}},{"secretRef":{"name":"s4"}}]}],
            "containers":[{"env":[{"name":"a","valueFrom":{"configMapKeyRef":{"name":"c4"}}},{"name":"b","value":"x"}]}]}});
        let refs: Vec<String> = pod_references("ns", &pod)
            .iter()
            .map(|k| format!("{}/{}/{}", k.kind, k.namespace, k.name))
            .collect();
        assert_eq!(
            refs,
            [
                "configmap/ns/c2",
                "configmap/ns/c3",
                "configmap/ns/c4",
                "secret/ns/s1",
                "secret/ns/s2",
                "secret/ns/s3",
                "secret/ns/s4"
            ]
        );
    }

    #[test]
    fn pod_on_a_non_edge_node_is_a_problem_and_goes_nowhere() {
        let mut d = sample();
        let p = obj(
            &mut d,
            kind::POD,
            "default",
            10,
            json!({"metadata":{"name":"x"},"spec":{"nodeName":"cloud-1"}}),
        );
        let a = assign(&d);
        assert_eq!(
            a.problems,
            vec![Problem::NotAnEdgeNode {
                object: p.clone(),
                node: "cloud-1".into()
            }]
        );
        assert!(a.nodes.values().all(|s| !s.contains_key(&p)));
        assert!(a.problems[0].to_string().contains("not an edge node"));
    }

    #[test]
    fn missing_reference_is_reported_and_the_pod_still_goes() {
        let mut d = sample();
        let p = obj(
            &mut d,
            kind::POD,
            "default",
            10,
            json!({"metadata":{"name":"x"},"spec":{"nodeName":"edge-2","volumes":[{"configMap":{"name":"nope"}}]}}),
        );
        let a = assign(&d);
        assert!(a.nodes["edge-2"].contains_key(&p));
        assert!(
            matches!(&a.problems[..], [Problem::MissingReference { missing, .. }] if missing.name == "nope")
        );
    }

    #[test]
    fn diff_sends_missing_and_newer_and_deletes_the_rest() {
        let k = |n: &str| ObjectKey::new(kind::POD, "default", n);
        let want = NodeObjects::from([(k("a"), 5), (k("b"), 7), (k("c"), 2)]);
        let have = NodeObjects::from([(k("b"), 6), (k("c"), 2), (k("gone"), 3)]);
        let actions = diff(&want, &have, |_, h| h + 100);
        assert_eq!(
            actions,
            vec![
                Action::Upsert {
                    key: k("a"),
                    rv: 5,
                    insert: true
                },
                Action::Upsert {
                    key: k("b"),
                    rv: 7,
                    insert: false
                },
                Action::Delete {
                    key: k("gone"),
                    rv: 103
                },
            ]
        );
        assert!(diff(&want, &want, |_, h| h).is_empty());
    }

    #[test]
    fn moving_a_pod_deletes_it_and_its_configmap_on_the_old_node() {
        let old_d = sample();
        let old = assign(&old_d);
        let mut d = old_d.clone();
        let web = ObjectKey::new(kind::POD, "default", "web");
        let o = Arc::make_mut(d.objects.get_mut(&web).unwrap());
        o.value["spec"]["nodeName"] = json!("edge-2");
        o.rv = 20;
        let new = assign(&d);
        let ch = changes(&d, &old, &new);
        let show: Vec<String> = ch
            .iter()
            .map(|(n, a)| match a {
                Action::Upsert { key, rv, .. } => {
                    format!("{n} send {}/{} {rv}", key.kind, key.name)
                }
                Action::Delete { key, rv } => format!("{n} delete {}/{} {rv}", key.kind, key.name),
            })
            .collect();
        assert_eq!(
            show,
            [
                "edge-1 delete configmap/cfg 4",
                "edge-1 delete pod/web 20",
                "edge-1 delete secret/creds 5",
                "edge-2 send configmap/cfg 4",
                "edge-2 send pod/web 20",
                "edge-2 send secret/creds 5",
            ]
        );
    }

    #[test]
    fn deleted_object_uses_its_tombstone_version() {
        let old_d = sample();
        let old = assign(&old_d);
        let mut d = old_d.clone();
        let cfg = ObjectKey::new(kind::CONFIGMAP, "default", "cfg");
        d.objects.remove(&cfg);
        d.tombstones.insert(cfg.clone(), 30);
        let ch = changes(&d, &old, &assign(&d));
        assert_eq!(
            ch,
            vec![("edge-1".to_owned(), Action::Delete { key: cfg, rv: 30 })]
        );
    }

    #[test]
    fn removing_the_edge_label_empties_the_node() {
        let old_d = sample();
        let old = assign(&old_d);
        let mut d = old_d.clone();
        let n = ObjectKey::new(kind::NODE, CLUSTER_NAMESPACE, "edge-2");
        Arc::make_mut(d.objects.get_mut(&n).unwrap()).value["metadata"]["labels"] = json!({});
        let new = assign(&d);
        assert_eq!(
            changes(&d, &old, &new),
            vec![("edge-2".to_owned(), Action::Delete { key: n, rv: 2 })]
        );
    }

    #[test]
    fn unchanged_state_sends_nothing() {
        let d = sample();
        let a = assign(&d);
        assert!(changes(&d, &a, &a).is_empty());
    }

    #[test]
    fn a_snapshot_sends_everything_and_deletes_what_the_checkpoint_lists_beyond() {
        let k = |n: &str| ObjectKey::new(kind::POD, "default", n);
        let want: NodeObjects = [(k("a"), 5), (k("b"), 2)].into();
        let have: NodeObjects = [(k("a"), 5), (k("gone"), 7)].into();
        assert_eq!(
            snapshot(&want, &have, |_, h| h + 1),
            [
                Action::Upsert {
                    key: k("a"),
                    rv: 5,
                    insert: true
                },
                Action::Upsert {
                    key: k("b"),
                    rv: 2,
                    insert: true
                },
                Action::Delete {
                    key: k("gone"),
                    rv: 8
                },
            ],
            "what the node holds at the same version is sent again"
        );
    }
}
