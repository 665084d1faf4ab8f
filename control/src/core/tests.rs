//! The core driven with plain values: records and times in, effects out.

use std::collections::BTreeMap;
use std::sync::Arc;

use schema::records::{DeliveredObject, DownRecord, ObjectKey, UpRecord};
use schema::{Header, Message, Route};
use serde_json::{Value, json};

use super::checkpoints::{Checkpoints, NodeCheckpoint};
use super::plan::{Desired, DesiredObject, EDGE_LABEL, kind};
use super::{Control, Effect, StatusChange};

fn key(kind: &str, ns: &str, name: &str) -> ObjectKey {
    ObjectKey::new(kind, ns, name)
}

fn delivered(node: &str, name: &str, rv: u64) -> UpRecord {
    UpRecord::Delivered {
        node_id: node.into(),
        store_id: 0,
        objects: vec![DeliveredObject {
            key: key("pod", "default", name),
            resource_version: rv,
            deleted: false,
        }],
    }
}

fn effects(c: &mut Control) -> Vec<Effect> {
    std::iter::from_fn(|| c.poll_effect()).collect()
}

fn checkpoints(effects: &[Effect]) -> Vec<StatusChange> {
    (effects.iter())
        .filter_map(|e| match e {
            Effect::Status {
                change: s @ StatusChange::Checkpoint { .. },
                ..
            } => Some(s.clone()),
            _ => None,
        })
        .collect()
}

fn sent(effects: &[Effect]) -> Vec<(String, &'static str)> {
    (effects.iter())
        .filter_map(|e| match e {
            Effect::Send {
                record: DownRecord::Downstream { key, message, .. },
                ..
            } => Some((key.to_string(), op(&message.route.operation))),
            Effect::Send {
                record: DownRecord::ResyncStarted { .. },
                ..
            } => Some((String::new(), "resync")),
            Effect::Send {
                record: DownRecord::Committed { .. },
                ..
            } => Some((String::new(), "committed")),
            Effect::Persist(_) => Some((String::new(), "persist")),
            _ => None,
        })
        .collect()
}

fn op(operation: &str) -> &'static str {
    match operation {
        "insert" => "insert",
        "update" => "update",
        "delete" => "delete",
        _ => "other",
    }
}

/// One edge node `edge-1` with one Pod `web` at version 3.
fn desired() -> Desired {
    let mut d = Desired::default();
    let mut add = |k: ObjectKey, rv: u64, value: Value| {
        let content: Arc<[u8]> = serde_json::to_vec(&value).unwrap().into();
        d.objects
            .insert(k, Arc::new(DesiredObject { rv, value, content }));
    };
    add(
        key(kind::NODE, "default", "edge-1"),
        1,
        json!({"kind": "Node", "metadata": {"name": "edge-1", "labels": {EDGE_LABEL: ""}}}),
    );
    add(
        key(kind::POD, "default", "web"),
        3,
        json!({"kind": "Pod", "metadata": {"name": "web"}, "spec": {"nodeName": "edge-1"}}),
    );
    d
}

fn upstream(node: &str, seq: u64) -> UpRecord {
    UpRecord::Upstream {
        node_id: node.into(),
        store_id: 0,
        message: Message {
            header: Header {
                seq,
                ..Header::default()
            },
            route: Route {
                resource: "default/podstatus/web".into(),
                operation: "update".into(),
                ..Route::default()
            },
            content: br#"{"phase":"Running"}"#.to_vec(),
        },
    }
}

#[test]
fn each_flush_reports_the_whole_checkpoint_of_every_node_it_changed() {
    let mut c = Control::new(2, Checkpoints::default());
    c.report_checkpoints(true);
    c.handle_records(
        vec![delivered("edge-1", "a", 5), delivered("edge-2", "a", 6)],
        10,
    );
    assert!(
        checkpoints(&effects(&mut c)).is_empty(),
        "nothing before the flush"
    );
    c.handle_tick(1_000);
    let one = |node: &str, objects: &[(&str, u64)]| StatusChange::Checkpoint {
        node: node.into(),
        objects: objects.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        upstream_seq: 0,
        store_id: 0,
    };
    assert_eq!(
        checkpoints(&effects(&mut c)),
        [
            one("edge-1", &[("default/pod/a", 5)]),
            one("edge-2", &[("default/pod/a", 6)])
        ]
    );
    c.handle_records(vec![delivered("edge-1", "b", 7)], 1_010);
    c.handle_shutdown();
    assert_eq!(
        checkpoints(&effects(&mut c)),
        [one("edge-1", &[("default/pod/a", 5), ("default/pod/b", 7)])],
        "only the changed node, with all it holds"
    );
}

#[test]
fn the_first_desired_state_sends_what_checkpoints_lack_and_deletes_what_went_away() {
    let gone = key(kind::CONFIGMAP, "default", "old");
    let cp = NodeCheckpoint {
        acked: [(key(kind::NODE, "default", "edge-1"), 1), (gone, 2)].into(),
        ..NodeCheckpoint::default()
    };
    let mut c = Control::new(1, Checkpoints::from_nodes([("edge-1".to_owned(), cp)]));
    c.handle_desired(desired(), 1_000);
    let e = effects(&mut c);
    assert_eq!(e[0], Effect::NodeAssigned("edge-1".into()));
    assert_eq!(
        sent(&e),
        [
            (String::new(), "persist"),
            ("default/pod/web".to_owned(), "insert"),
            ("default/configmap/old".to_owned(), "delete")
        ],
        "the Node is acknowledged already"
    );
    let Effect::Send {
        record: DownRecord::Downstream { message, .. },
        ..
    } = &e[2]
    else {
        panic!("{:?}", e[2]);
    };
    assert_eq!(message.header.timestamp_ms, 1_000, "the time passed in");
    assert_eq!(message.header.resource_version, 3);
}

#[test]
fn upstream_seqs_are_persisted_before_they_are_committed_and_applied_once() {
    let mut c = Control::new(1, Checkpoints::default());
    c.handle_desired(desired(), 0);
    effects(&mut c);
    c.handle_records(vec![upstream("edge-1", 1), upstream("edge-1", 2)], 5);
    let e = effects(&mut c);
    let statuses = e
        .iter()
        .filter(|e| {
            matches!(
                e,
                Effect::Status {
                    change: StatusChange::Pod { .. },
                    ..
                }
            )
        })
        .count();
    assert_eq!(statuses, 2);
    assert_eq!(
        sent(&e),
        [(String::new(), "persist"), (String::new(), "committed")]
    );
    let Some(Effect::Persist(w)) = e.iter().find(|e| matches!(e, Effect::Persist(_))) else {
        unreachable!()
    };
    assert_eq!(w.upstream["edge-1"], 2);
    assert!(e.contains(&Effect::Send {
        shard: 0,
        record: DownRecord::Committed {
            node_id: "edge-1".into(),
            store_id: 0,
            seq: 2
        }
    }));
    // Sent again (the hub restarted): confirmed again, applied nothing.
    c.handle_records(vec![upstream("edge-1", 2)], 6);
    let e = effects(&mut c);
    assert!(!e.iter().any(|e| matches!(e, Effect::Status { .. })));
    assert_eq!(sent(&e), [(String::new(), "committed")]);
}

#[test]
fn a_node_may_not_report_on_what_is_not_bound_to_it() {
    let mut c = Control::new(1, Checkpoints::default());
    c.handle_desired(desired(), 0);
    effects(&mut c);
    c.handle_records(vec![upstream("edge-2", 1)], 5);
    let e = effects(&mut c);
    assert!(
        !e.iter().any(|e| matches!(e, Effect::Status { .. })),
        "{e:?}"
    );
    assert_eq!(
        sent(&e),
        [(String::new(), "persist"), (String::new(), "committed")],
        "refused, and still taken"
    );
}

#[test]
fn a_new_store_is_reset_durably_before_its_full_snapshot() {
    let cp = NodeCheckpoint {
        acked: [(key(kind::POD, "default", "web"), 3)].into(),
        upstream_seq: 9,
        store_id: 5,
    };
    let mut c = Control::new(1, Checkpoints::from_nodes([("edge-1".to_owned(), cp)]));
    c.handle_desired(desired(), 0);
    effects(&mut c);
    c.handle_records(
        vec![UpRecord::Connected {
            node_id: "edge-1".into(),
            at_ms: 7,
            store_id: 6,
        }],
        8,
    );
    let e = effects(&mut c);
    assert_eq!(
        sent(&e),
        [
            (String::new(), "persist"),
            (String::new(), "resync"),
            ("default/node/edge-1".to_owned(), "insert"),
            ("default/pod/web".to_owned(), "insert"),
        ]
    );
    let Some(Effect::Persist(w)) = e.iter().find(|e| matches!(e, Effect::Persist(_))) else {
        unreachable!()
    };
    assert!(w.resets.contains("edge-1"));
    assert_eq!((w.upstream["edge-1"], w.stores["edge-1"]), (0, 6));
    assert_eq!(c.checkpoints().upstream_seq("edge-1"), 0);
}

#[test]
fn checkpoints_are_written_after_the_interval_or_when_many() {
    let mut c = Control::new(1, Checkpoints::default());
    c.handle_tick(0);
    c.handle_records(vec![delivered("edge-1", "a", 5)], 10);
    c.handle_tick(50);
    assert!(effects(&mut c).is_empty(), "not due yet");
    c.handle_tick(100);
    assert_eq!(sent(&effects(&mut c)), [(String::new(), "persist")]);
    assert_eq!(c.dirty(), 0);
    let many: Vec<UpRecord> = (0..super::FLUSH_ENTRIES)
        .map(|i| delivered("edge-1", &format!("p{i}"), 1))
        .collect();
    c.handle_records(many, 110);
    c.handle_tick(111);
    assert_eq!(sent(&effects(&mut c)), [(String::new(), "persist")]);
}

/// What a checkpoint store holds after the `Persist` effects in `effects`.
fn persisted(disk: &mut BTreeMap<String, NodeCheckpoint>, effects: &[Effect]) {
    for e in effects {
        let Effect::Persist(w) = e else { continue };
        for node in &w.resets {
            disk.insert(node.clone(), NodeCheckpoint::default());
        }
        for (node, acks) in &w.acks {
            let acked = &mut disk.entry(node.clone()).or_default().acked;
            for (k, rv) in acks {
                match rv {
                    Some(rv) => acked.insert(k.clone(), *rv),
                    None => acked.remove(k),
                };
            }
        }
    }
}

#[test]
fn an_object_sent_before_a_kill_is_deleted_after_it_though_never_acknowledged() {
    let mut disk = BTreeMap::new();
    let mut c = Control::new(1, Checkpoints::default());
    c.report_checkpoints(true);
    c.handle_desired(desired(), 0);
    let e = effects(&mut c);
    assert_eq!(
        checkpoints(&e),
        [StatusChange::Checkpoint {
            node: "edge-1".into(),
            objects: BTreeMap::new(),
            upstream_seq: 0,
            store_id: 0,
        }],
        "objects sent and not acknowledged are not reported as acknowledged"
    );
    assert_eq!(
        sent(&e),
        [
            (String::new(), "persist"),
            ("default/node/edge-1".to_owned(), "insert"),
            ("default/pod/web".to_owned(), "insert"),
        ],
        "what the node may hold is durable before it is sent"
    );
    persisted(&mut disk, &e);
    // Killed before the edge's acknowledgement reached the process; the
    // Pod is deleted meanwhile.
    drop(c);
    let mut c = Control::new(1, Checkpoints::from_nodes(disk.clone()));
    let mut d = desired();
    let web = key(kind::POD, "default", "web");
    d.objects.remove(&web);
    d.tombstones.insert(web, 4);
    c.handle_desired(d, 10);
    let e = effects(&mut c);
    assert!(
        sent(&e).contains(&("default/pod/web".to_owned(), "delete")),
        "{:?}",
        sent(&e)
    );
}

/// `desired()` plus a ConfigMap `cfg` at version 7, which `web` mounts when
/// `mounted`.
fn desired_with_configmap(mounted: bool) -> Desired {
    let mut d = desired();
    let volumes = match mounted {
        true => json!([{"name": "c", "configMap": {"name": "cfg"}}]),
        false => json!([]),
    };
    let web = json!({"kind": "Pod", "metadata": {"name": "web"},
        "spec": {"nodeName": "edge-1", "volumes": volumes}});
    let cfg = json!({"kind": "ConfigMap", "metadata": {"name": "cfg"}});
    for (k, rv, value) in [
        (
            key(kind::POD, "default", "web"),
            if mounted { 3 } else { 4 },
            web,
        ),
        (key(kind::CONFIGMAP, "default", "cfg"), 7, cfg),
    ] {
        let content: Arc<[u8]> = serde_json::to_vec(&value).unwrap().into();
        d.objects
            .insert(k, Arc::new(DesiredObject { rv, value, content }));
    }
    d
}

#[test]
fn an_insert_acknowledged_after_a_delete_at_its_version_was_sent_is_still_held() {
    let cfg = key(kind::CONFIGMAP, "default", "cfg");
    let mut disk = BTreeMap::new();
    let mut c = Control::new(1, Checkpoints::default());
    c.handle_desired(desired_with_configmap(true), 0);
    let e = effects(&mut c);
    assert_sent(&e, &cfg, "insert", "sent");
    // The Pod stops mounting it: the ConfigMap, unchanged at 7, is dropped
    // from the node at 7 while its insert is still on the way.
    c.handle_desired(desired_with_configmap(false), 10);
    let e = effects(&mut c);
    assert_sent(&e, &cfg, "delete", "sent");
    // The node commits the insert; then the hub dies before the delete
    // reaches the node, and the node connects to a fresh hub.
    c.handle_records(vec![delivered_cfg(7, false)], 20);
    c.handle_tick(1000);
    persisted(&mut disk, &effects(&mut c));
    let connected = UpRecord::Connected {
        node_id: "edge-1".into(),
        at_ms: 30,
        store_id: 0,
    };
    c.handle_records(vec![connected], 30);
    let e = effects(&mut c);
    assert_sent(
        &e,
        &cfg,
        "delete",
        "the node holds cfg and must be told to delete it",
    );
    // So must a cloudcontrol restarted from what it wrote.
    let mut c = Control::new(1, Checkpoints::from_nodes(disk));
    c.handle_desired(desired_with_configmap(false), 40);
    let e = effects(&mut c);
    assert_sent(&e, &cfg, "delete", "after a restart too");
}

#[test]
fn a_delete_acknowledged_after_the_object_was_sent_again_leaves_it_held() {
    let cfg = key(kind::CONFIGMAP, "default", "cfg");
    let mut disk = BTreeMap::new();
    let mut c = Control::new(1, Checkpoints::default());
    c.handle_desired(desired_with_configmap(true), 0);
    c.handle_records(vec![delivered_cfg(7, false)], 5);
    c.handle_desired(desired_with_configmap(false), 10);
    c.handle_desired(desired_with_configmap(true), 20);
    let e = effects(&mut c);
    assert_sent(&e, &cfg, "delete", "sent");
    assert_sent(&e, &cfg, "insert", "sent");
    // The delete is committed; the insert after it is not yet.
    c.handle_records(vec![delivered_cfg(7, true)], 30);
    c.handle_tick(1000);
    persisted(&mut disk, &effects(&mut c));
    // Restarted; the Pod no longer mounts it.
    let mut c = Control::new(1, Checkpoints::from_nodes(disk));
    c.handle_desired(desired_with_configmap(false), 40);
    let e = effects(&mut c);
    assert_sent(&e, &cfg, "delete", "the insert may have reached the node");
}

fn delivered_cfg(rv: u64, deleted: bool) -> UpRecord {
    UpRecord::Delivered {
        node_id: "edge-1".into(),
        store_id: 0,
        objects: vec![DeliveredObject {
            key: key(kind::CONFIGMAP, "default", "cfg"),
            resource_version: rv,
            deleted,
        }],
    }
}

fn assert_sent(effects: &[Effect], key: &ObjectKey, op: &'static str, why: &str) {
    let sent = sent(effects);
    assert!(sent.contains(&(key.to_string(), op)), "{why}: {sent:?}");
}
