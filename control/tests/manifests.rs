//! The manifest source end to end: files in a directory → Downstream records
//! in the right shard's ring, deletes, bad input, and a restart (SIGKILL)
//! after which only what was not acknowledged is sent again.

mod support;

use schema::records::{DeliveredObject, DownRecord, UpRecord};
use support::{Cloud, Hub, committed, dirs, downstream, example_manifests, key, upstream};

fn row(node: &str, op: &str, obj: &str, rv: u64) -> (String, String, String, u64) {
    (node.into(), op.into(), obj.into(), rv)
}

fn count(records: &[(u16, DownRecord)], shards: u16, n: usize) -> bool {
    downstream(records, shards).len() >= n
}

#[test]
fn files_reach_the_right_shard_and_bad_input_stops_nothing() {
    let t = tempfile::tempdir().unwrap();
    let (m, data, rings) = dirs(t.path());
    example_manifests(&m);
    let cloud = Cloud::start(&m, &data, &rings, 2);
    // The hub opens the ring files after cloudcontrol made them.
    let hub = Hub::open(&rings, 2);
    let initial = downstream(&hub.take_all(), 2);
    let objs: Vec<(&str, &str, &str)> = initial
        .iter()
        .map(|(n, op, o, _)| (n.as_str(), op.as_str(), o.as_str()))
        .collect();
    assert_eq!(
        objs,
        [
            ("edge-1", "insert", "configmap/web-config"),
            ("edge-1", "insert", "device/thermometer-1"),
            ("edge-1", "insert", "devicemodel/thermometer"),
            ("edge-1", "insert", "node/edge-1"),
            ("edge-1", "insert", "pod/web-1"),
            ("edge-1", "insert", "secret/web-credentials"),
            ("edge-2", "insert", "configmap/web-config"),
            ("edge-2", "insert", "node/edge-2"),
            ("edge-2", "insert", "pod/web-2"),
            ("edge-2", "insert", "secret/web-credentials"),
        ]
    );

    // Bad input first: none of it reaches a ring, and it stops nothing.
    std::fs::write(
        m.join("broken.yaml"),
        "kind: ConfigMap\nmetadata: [unclosed\n",
    )
    .unwrap();
    std::fs::write(
        m.join("odd.yaml"),
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\n---\nkind: Pod\nmetadata:\n  name: stray\nspec:\n  nodeName: cloud-1\n",
    )
    .unwrap();
    let extra = "kind: ConfigMap\nmetadata:\n  name: extra\ndata:\n  k: v\n---\nkind: Pod\nmetadata:\n  name: job\nspec:\n  nodeName: edge-2\n  volumes:\n  - configMap:\n      name: extra\n";
    std::fs::write(m.join("extra.yaml"), extra).unwrap();
    let got = downstream(&hub.take_until(|r| count(r, 2, 2)), 2);
    let max = initial.iter().map(|r| r.3).max().unwrap();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(
        (got[0].0.as_str(), got[0].1.as_str(), got[0].2.as_str()),
        ("edge-2", "insert", "configmap/extra")
    );
    assert_eq!(
        (got[1].0.as_str(), got[1].1.as_str(), got[1].2.as_str()),
        ("edge-2", "insert", "pod/job")
    );
    assert!(
        got.iter().all(|r| r.3 > max),
        "new objects get newer versions"
    );

    // A change is an update at a newer version; only the changed object.
    std::fs::write(m.join("extra.yaml"), extra.replace("k: v", "k: changed")).unwrap();
    let upd = downstream(&hub.take_until(|r| count(r, 2, 1)), 2);
    assert_eq!(upd.len(), 1);
    assert_eq!(
        (upd[0].1.as_str(), upd[0].2.as_str()),
        ("update", "configmap/extra")
    );
    assert!(upd[0].3 > got[1].3);

    // Deleting the file deletes its objects on the node.
    std::fs::remove_file(m.join("extra.yaml")).unwrap();
    let del = downstream(&hub.take_until(|r| count(r, 2, 2)), 2);
    let ops: Vec<(&str, &str)> = del.iter().map(|r| (r.1.as_str(), r.2.as_str())).collect();
    assert_eq!(ops, [("delete", "configmap/extra"), ("delete", "pod/job")]);
    assert!(
        del.iter().all(|r| r.3 > upd[0].3),
        "a delete carries a newer version"
    );

    let log = cloud.log();
    assert!(log.contains("broken.yaml: not valid YAML"), "{log}");
    assert!(
        log.contains("unknown kind \\\"Deployment\\\"")
            || log.contains("unknown kind \"Deployment\""),
        "{log}"
    );
    assert!(
        log.contains("pod default/stray is bound to node \\\"cloud-1\\\"")
            || log.contains("pod default/stray is bound to node \"cloud-1\""),
        "{log}"
    );
}

#[test]
fn restart_resends_only_what_was_not_acknowledged() {
    let t = tempfile::tempdir().unwrap();
    let (m, data, rings) = dirs(t.path());
    example_manifests(&m);
    // One shard: records are handled in the order the test pushes them.
    let hub = Hub::open(&rings, 1);
    let cloud = Cloud::start(&m, &data, &rings, 1);
    let initial = downstream(&hub.take_all(), 1);
    assert_eq!(initial.len(), 10);
    let edge1: Vec<DeliveredObject> = initial
        .iter()
        .filter(|r| r.0 == "edge-1")
        .map(|r| {
            let (kind, name) = r.2.split_once('/').unwrap();
            DeliveredObject {
                key: key(kind, name),
                resource_version: r.3,
                deleted: r.1 == "delete",
            }
        })
        .collect();
    assert_eq!(edge1.len(), 6);
    hub.push(
        0,
        &UpRecord::Delivered {
            node_id: "edge-1".into(),
            store_id: 0,
            objects: edge1,
        },
    );
    // Confirmed upstream messages come after a durable flush, which holds
    // the acknowledgements handled before them.
    hub.push(
        0,
        &upstream(
            "edge-1",
            1,
            "edged",
            "default/nodestatus/edge-1",
            r#"{"conditions":[]}"#,
        ),
    );
    hub.take_until(|r| committed(r, "edge-1", 1));
    cloud.kill();

    // While cloudcontrol is down, the devices go away.
    std::fs::remove_file(m.join("devices.yaml")).unwrap();
    let cloud = Cloud::start(&m, &data, &rings, 1);
    let after = downstream(&hub.take_all(), 1);
    let edge2: Vec<_> = initial
        .iter()
        .filter(|r| r.0 == "edge-2")
        .cloned()
        .collect();
    let (e1, e2): (Vec<_>, Vec<_>) = after.into_iter().partition(|r| r.0 == "edge-1");
    assert_eq!(
        e2, edge2,
        "edge-2 acknowledged nothing: all again, same versions"
    );
    let ops: Vec<(&str, &str)> = e1.iter().map(|r| (r.1.as_str(), r.2.as_str())).collect();
    assert_eq!(
        ops,
        [
            ("delete", "device/thermometer-1"),
            ("delete", "devicemodel/thermometer")
        ]
    );
    let max = initial.iter().map(|r| r.3).max().unwrap();
    assert!(e1.iter().all(|r| r.3 > max));

    // A duplicate upstream message (seq 1 again) is confirmed, not re-applied.
    hub.push(
        0,
        &upstream(
            "edge-1",
            1,
            "edged",
            "default/nodestatus/edge-1",
            r#"{"conditions":[]}"#,
        ),
    );
    hub.take_until(|r| committed(r, "edge-1", 1));

    // Reconnecting: the unacknowledged deletes again, nothing else.
    hub.push(
        0,
        &UpRecord::Connected {
            node_id: "edge-1".into(),
            at_ms: 1,
            store_id: 0,
        },
    );
    let again = downstream(&hub.take_until(|r| count(r, 1, 2)), 1);
    assert_eq!(again, e1);
    let acks = e1
        .iter()
        .map(|r| {
            let (kind, name) = r.2.split_once('/').unwrap();
            DeliveredObject {
                key: key(kind, name),
                resource_version: r.3,
                deleted: r.1 == "delete",
            }
        })
        .collect();
    hub.push(
        0,
        &UpRecord::Delivered {
            node_id: "edge-1".into(),
            store_id: 0,
            objects: acks,
        },
    );
    hub.push(
        0,
        &UpRecord::Connected {
            node_id: "edge-1".into(),
            at_ms: 2,
            store_id: 0,
        },
    );
    // edge-2 connecting is handled after edge-1's: its records mark the end.
    hub.push(
        0,
        &UpRecord::Connected {
            node_id: "edge-2".into(),
            at_ms: 3,
            store_id: 0,
        },
    );
    let last = downstream(&hub.take_until(|r| count(r, 1, 4)), 1);
    assert!(
        last.iter().all(|r| r.0 == "edge-2"),
        "edge-1 has everything: {last:?}"
    );
    drop(cloud);
}

#[test]
fn ring_full_backs_off_and_delivers_everything_once_the_hub_reads() {
    let t = tempfile::tempdir().unwrap();
    let (m, data, rings) = dirs(t.path());
    std::fs::create_dir_all(&m).unwrap();
    // 300 ConfigMaps of 8 KiB on one node: 2.4 MB, more than the 1 MiB ring.
    let mut text = String::from(
        "kind: Node\nmetadata:\n  name: edge-1\n  labels:\n    node-role.kubernetes.io/edge: \"\"\n---\nkind: Pod\nmetadata:\n  name: big\nspec:\n  nodeName: edge-1\n  volumes:\n",
    );
    let mut cms = String::new();
    for i in 0..300 {
        text.push_str(&format!("  - configMap:\n      name: cm-{i}\n"));
        cms.push_str(&format!(
            "---\nkind: ConfigMap\nmetadata:\n  name: cm-{i}\ndata:\n  v: \"{}\"\n",
            "x".repeat(8192)
        ));
    }
    std::fs::write(m.join("big.yaml"), text + &cms).unwrap();
    let _cloud = Cloud::start(&m, &data, &rings, 1);
    let hub = Hub::open(&rings, 1);
    let all = downstream(&hub.take_until(|r| count(r, 1, 302)), 1);
    assert_eq!(all.len(), 302);
    assert!(all.contains(&row(
        "edge-1",
        "insert",
        "configmap/cm-299",
        all.iter().find(|r| r.2 == "configmap/cm-299").unwrap().3
    )));
}

/// `record` (an `Upstream`) as sent from the store `id`.
fn from_store(mut record: UpRecord, id: u64) -> UpRecord {
    if let UpRecord::Upstream { store_id, .. } = &mut record {
        *store_id = id;
    }
    record
}

#[test]
fn a_node_with_a_new_store_gets_everything_again_and_numbers_upstream_anew() {
    let t = tempfile::tempdir().unwrap();
    let (m, data, rings) = dirs(t.path());
    example_manifests(&m);
    let hub = Hub::open(&rings, 1);
    let cloud = Cloud::start(&m, &data, &rings, 1);
    let initial = downstream(&hub.take_all(), 1);
    let edge1: Vec<_> = initial
        .iter()
        .filter(|r| r.0 == "edge-1")
        .cloned()
        .collect();
    assert_eq!(edge1.len(), 6);
    let acks: Vec<DeliveredObject> = edge1
        .iter()
        .map(|r| {
            let (kind, name) = r.2.split_once('/').unwrap();
            DeliveredObject {
                key: key(kind, name),
                resource_version: r.3,
                deleted: r.1 == "delete",
            }
        })
        .collect();
    let status = |seq| {
        let content = format!(r#"{{"conditions":[],"seq":{seq}}}"#);
        upstream(
            "edge-1",
            seq,
            "edged",
            "default/nodestatus/edge-1",
            &content,
        )
    };
    hub.push(
        0,
        &UpRecord::Connected {
            node_id: "edge-1".into(),
            at_ms: 1,
            store_id: 5,
        },
    );
    hub.push(
        0,
        &UpRecord::Delivered {
            node_id: "edge-1".into(),
            store_id: 5,
            objects: acks,
        },
    );
    for seq in 1..=3 {
        hub.push(0, &from_store(status(seq), 5));
    }
    hub.take_until(|r| committed(r, "edge-1", 3));

    // The edge's disk is wiped and the hub restarted meanwhile: only the
    // store identity tells. Everything is sent again, and the new store's
    // upstream seq 1 is news, confirmed for that store.
    hub.push(
        0,
        &UpRecord::Connected {
            node_id: "edge-1".into(),
            at_ms: 2,
            store_id: 6,
        },
    );
    hub.push(0, &from_store(status(1), 6));
    let got = hub.take_until(|r| {
        r.iter().any(|(_, r)| {
            matches!(r, DownRecord::Committed { node_id, store_id: 6, seq: 1 } if node_id == "edge-1")
        })
    });
    assert!(
        got.iter().any(
            |(_, r)| matches!(r, DownRecord::ResyncStarted { node_id } if node_id == "edge-1")
        ),
        "{got:?}"
    );
    let again = downstream(&got, 1);
    let names: Vec<&str> = again.iter().map(|r| r.2.as_str()).collect();
    let want: Vec<&str> = edge1.iter().map(|r| r.2.as_str()).collect();
    assert_eq!(names, want, "the whole snapshot again");
    assert!(cloud.log().contains("new store"), "{}", cloud.log());
}
