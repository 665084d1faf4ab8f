//! The store on real LMDB files in temporary directories.

use schema::records::ObjectKey;
use schema::{Header, Message, Route};

use super::{ChangeType, DEFAULT_MAP_SIZE, Store};

fn msg(op: &str, resource: &str, rv: u64, seq: u64, body: &str) -> Message {
    Message {
        header: Header {
            id: format!("m-{seq}"),
            resource_version: rv,
            seq,
            ..Header::default()
        },
        route: Route {
            source: "edgecontroller".into(),
            group: "resource".into(),
            operation: op.into(),
            resource: resource.into(),
            ..Route::default()
        },
        content: body.as_bytes().to_vec(),
    }
}

fn pod(name: &str, rv: u64) -> String {
    format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}","namespace":"default","uid":"uid-{name}","resourceVersion":"{rv}"}}}}"#
    )
}

fn key(kind: &str, ns: &str, name: &str) -> ObjectKey {
    ObjectKey {
        kind: kind.into(),
        namespace: ns.into(),
        name: name.into(),
    }
}

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), DEFAULT_MAP_SIZE).unwrap();
    (dir, store)
}

#[test]
fn applies_only_newer_versions() {
    let (_dir, store) = open();
    let m1 = msg("insert", "default/pod/a", 5, 1, &pod("a", 5));
    let c = store.commit([&m1], 1, None).unwrap();
    assert_eq!(c.changes.len(), 1);
    assert_eq!(c.changes[0].change, ChangeType::Added);
    let stored = store.get(&key("pod", "default", "a")).unwrap().unwrap();
    assert_eq!(stored.uid, "uid-a");
    assert_eq!(stored.resource_version, 5);

    let older = msg("update", "default/pod/a", 4, 2, &pod("a", 4));
    let same = msg("update", "default/pod/a", 5, 3, "{}");
    let c = store.commit([&older, &same], 3, None).unwrap();
    assert_eq!((c.changes.len(), c.stale), (0, 2));
    assert_eq!(
        store
            .get(&key("pod", "default", "a"))
            .unwrap()
            .unwrap()
            .data,
        pod("a", 5).as_bytes()
    );

    let newer = msg("update", "default/pod/a", 9, 4, &pod("a", 9));
    let c = store.commit([&newer], 4, None).unwrap();
    assert_eq!(c.changes[0].change, ChangeType::Modified);
    assert_eq!(
        store
            .get(&key("pod", "default", "a"))
            .unwrap()
            .unwrap()
            .resource_version,
        9
    );
    assert_eq!(store.committed_seq().unwrap(), 4);
    assert_eq!(store.max_resource_version().unwrap(), 9);
}

#[test]
fn delete_leaves_a_tombstone_that_stops_stale_updates() {
    let (_dir, store) = open();
    let m = msg("insert", "default/configmap/c", 10, 1, "{}");
    store.commit([&m], 1, None).unwrap();
    let d = msg("delete", "default/configmap/c", 11, 2, "");
    let c = store.commit([&d], 2, None).unwrap();
    assert_eq!(c.changes[0].change, ChangeType::Deleted);
    assert_eq!(store.get(&key("configmap", "default", "c")).unwrap(), None);
    assert!(store.list("configmap", None).unwrap().is_empty());

    // A replayed older update must not bring it back.
    let stale = msg("update", "default/configmap/c", 10, 3, "{}");
    assert_eq!(store.commit([&stale], 3, None).unwrap().stale, 1);
    assert_eq!(store.get(&key("configmap", "default", "c")).unwrap(), None);

    // A newer one does (re-created), and replaces the tombstone.
    let again = msg("insert", "default/configmap/c", 12, 4, "{}");
    store.commit([&again], 4, None).unwrap();
    assert!(
        store
            .get(&key("configmap", "default", "c"))
            .unwrap()
            .is_some()
    );
    let since = store.changes_since("configmap", None, 0).unwrap();
    assert_eq!(since.len(), 1);
    assert_eq!(since[0].change, ChangeType::Modified);
}

#[test]
fn lists_by_kind_and_namespace_and_replays_changes_in_order() {
    let (_dir, store) = open();
    let ms = [
        msg("insert", "ns1/pod/a", 3, 1, "{}"),
        msg("insert", "ns2/pod/b", 1, 2, "{}"),
        msg("insert", "ns1/pod/c", 2, 3, "{}"),
        msg("insert", "ns1/podx/d", 4, 4, "{}"),
        msg("insert", "ns1/configmap/e", 5, 5, "{}"),
    ];
    store.commit(&ms, 5, None).unwrap();
    let names = |v: Vec<schema::records::StoredObject>| -> Vec<String> {
        v.into_iter().map(|o| o.key.name).collect()
    };
    assert_eq!(names(store.list("pod", None).unwrap()), ["a", "c", "b"]);
    assert_eq!(names(store.list("pod", Some("ns1")).unwrap()), ["a", "c"]);
    let d = msg("delete", "ns1/pod/a", 7, 6, "");
    store.commit([&d], 6, None).unwrap();
    let since: Vec<_> = store
        .changes_since("pod", None, 1)
        .unwrap()
        .into_iter()
        .map(|c| (c.change, c.object.key.name, c.object.resource_version))
        .collect();
    assert_eq!(
        since,
        [
            (ChangeType::Modified, "c".to_owned(), 2),
            (ChangeType::Deleted, "a".to_owned(), 7)
        ]
    );
}

#[test]
fn garbage_routes_are_counted_not_applied() {
    let (_dir, store) = open();
    let ms = [
        msg("insert", "no-slashes", 1, 1, "{}"),
        msg("insert", "a//b", 1, 2, "{}"),
        msg("frobnicate", "default/pod/a", 1, 3, "{}"),
        msg("insert", "default/pod/ok", 1, 4, "not json"),
    ];
    let c = store.commit(&ms, 4, None).unwrap();
    assert_eq!((c.invalid, c.changes.len()), (3, 1));
    assert_eq!(
        store
            .get(&key("pod", "default", "ok"))
            .unwrap()
            .unwrap()
            .uid,
        ""
    );
}

#[test]
fn group_commit_is_all_or_nothing_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), DEFAULT_MAP_SIZE).unwrap();
        let batch: Vec<_> = (1..=500)
            .map(|i| msg("insert", &format!("default/pod/p{i}"), i, i, "{}"))
            .collect();
        store.commit(&batch, 500, None).unwrap();
        // A transaction dropped without commit leaves nothing behind.
        let mut wtxn = store.env.write_txn().unwrap();
        store.meta.put(&mut wtxn, "downstream_seq", &9999).unwrap();
        drop(wtxn);
    }
    let store = Store::open(dir.path(), DEFAULT_MAP_SIZE).unwrap();
    assert_eq!(store.list("pod", None).unwrap().len(), 500);
    assert_eq!(store.committed_seq().unwrap(), 500);
}

#[test]
fn outbox_numbers_durably_and_forgets_what_was_acked() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), DEFAULT_MAP_SIZE).unwrap();
        let ms = (0..5).map(|i| msg("update", &format!("default/nodestatus/n{i}"), 0, 0, "{}"));
        let written = store.outbox_append(ms.collect(), 1000).unwrap();
        let seqs: Vec<u64> = written.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, [1, 2, 3, 4, 5]);
        assert_eq!(written[2].1.header.seq, 3);
        store.outbox_ack(2).unwrap();
        // An ack inside a group commit removes too.
        store.commit([], 0, Some(3)).unwrap();
    }
    let store = Store::open(dir.path(), DEFAULT_MAP_SIZE).unwrap();
    let pending: Vec<u64> = store
        .outbox_pending()
        .unwrap()
        .iter()
        .map(|(s, _)| *s)
        .collect();
    assert_eq!(pending, [4, 5]);
    store.outbox_ack(5).unwrap();
    assert_eq!(store.outbox_len().unwrap(), 0);
    // Numbers are never reused once the outbox is empty.
    let next = store.outbox_append(
        vec![msg("update", "default/nodestatus/n", 0, 0, "{}")],
        2000,
    );
    assert_eq!(next.unwrap()[0].0, 6);
    assert_eq!(store.upstream_seq().unwrap(), 6);
}

#[test]
fn a_store_keeps_its_identity_and_a_wiped_one_gets_another() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let first = Store::open(&path, DEFAULT_MAP_SIZE)
        .unwrap()
        .store_id()
        .unwrap();
    assert_ne!(first, 0);
    // Reopened (the environment is opened once per process: the first
    // handle went out of scope above).
    let again = Store::open(&path, DEFAULT_MAP_SIZE)
        .unwrap()
        .store_id()
        .unwrap();
    assert_eq!(again, first, "a restart resumes the same store");
    std::fs::remove_dir_all(&path).unwrap();
    let wiped = Store::open(&path, DEFAULT_MAP_SIZE)
        .unwrap()
        .store_id()
        .unwrap();
    assert!(wiped != 0 && wiped != first, "{wiped:x} after {first:x}");
}

#[test]
fn an_object_dropped_at_its_version_comes_back_at_that_version() {
    let (_dir, store) = open();
    let add = msg("insert", "default/configmap/c", 7, 1, "{}");
    store.commit([&add], 1, None).unwrap();
    // The node's last pod using it went away: dropped at its version.
    let drop = msg("delete", "default/configmap/c", 7, 2, "");
    assert_eq!(store.commit([&drop], 2, None).unwrap().changes.len(), 1);
    // A new pod needs it again, unchanged.
    let again = msg("insert", "default/configmap/c", 7, 3, "{}");
    let c = store.commit([&again], 3, None).unwrap();
    assert_eq!(c.changes[0].change, ChangeType::Added);
    assert!(
        store
            .get(&key("configmap", "default", "c"))
            .unwrap()
            .is_some()
    );
    // While it is there, the same version is stale.
    let same = msg("update", "default/configmap/c", 7, 4, "{}");
    assert_eq!(store.commit([&same], 4, None).unwrap().stale, 1);
}

#[test]
fn visits_a_kind_page_by_page_in_key_order() {
    let (_dir, store) = open();
    let msgs: Vec<Message> = [("b", "x"), ("a", "y"), ("a", "x"), ("c", "z")]
        .iter()
        .enumerate()
        .map(|(i, (ns, name))| {
            let i = i as u64 + 1;
            msg("insert", &format!("{ns}/pod/{name}"), i, i, "{}")
        })
        .chain([msg("insert", "a/configmap/x", 9, 9, "{}")])
        .collect();
    store.commit(&msgs, 9, None).unwrap();
    let names = |ns: Option<&str>, after: Option<(&str, &str)>, limit: usize| {
        let mut out = Vec::new();
        store
            .visit("pod", ns, after, |o| {
                out.push(format!("{}/{}", o.key.namespace, o.key.name));
                out.len() < limit
            })
            .unwrap();
        out
    };
    assert_eq!(names(None, None, 9), ["a/x", "a/y", "b/x", "c/z"]);
    assert_eq!(names(None, None, 2), ["a/x", "a/y"]);
    assert_eq!(names(None, Some(("a", "y")), 2), ["b/x", "c/z"]);
    assert_eq!(names(None, Some(("c", "z")), 2), Vec::<String>::new());
    assert_eq!(names(Some("a"), Some(("a", "x")), 9), ["a/y"]);
    // A start that is not stored itself still starts after its place.
    assert_eq!(names(None, Some(("a", "xx")), 9), ["a/y", "b/x", "c/z"]);
}

#[test]
fn old_tombstones_are_dropped_and_a_replay_from_before_them_is_refused() {
    let (dir, store) = open();
    let store = store.with_tombstones_kept(2);
    let mut seq = 0;
    let mut send = |op: &str, name: &str, rv: u64| {
        seq += 1;
        let m = msg(op, &format!("default/pod/{name}"), rv, seq, &pod(name, rv));
        store.commit([&m], seq, None).unwrap()
    };
    for (i, name) in ["a", "b", "c", "d"].iter().enumerate() {
        send("insert", name, 10 + i as u64);
    }
    send("delete", "a", 20);
    send("delete", "b", 21);
    assert_eq!(store.compacted_resource_version().unwrap(), 0);
    assert_eq!(store.check_replayable(5).unwrap(), Ok(()));
    // A third deletion drops a's tombstone, the oldest.
    send("delete", "c", 22);
    assert_eq!(store.compacted_resource_version().unwrap(), 20);
    let deleted: Vec<String> = store
        .changes_since("pod", None, 0)
        .unwrap()
        .into_iter()
        .filter(|c| c.change == ChangeType::Deleted)
        .map(|c| c.object.key.name)
        .collect();
    assert_eq!(deleted, ["b", "c"]);
    let too_old = store.check_replayable(19).unwrap().unwrap_err();
    assert_eq!(too_old.to_string(), "too old resource version: 19 (20)");
    assert_eq!(store.check_replayable(20).unwrap(), Ok(()));
    // A stale update of a, whose tombstone is gone, still cannot bring it back.
    assert_eq!(send("update", "a", 15).stale, 1);
    // b comes back and is deleted again: its first log entry is dropped
    // alone, without taking the newer tombstone.
    send("insert", "b", 30);
    send("delete", "b", 31);
    send("delete", "d", 32);
    let names: Vec<String> = store
        .changes_since("pod", None, 0)
        .unwrap()
        .into_iter()
        .map(|c| c.object.key.name)
        .collect();
    assert_eq!(names, ["b", "d"]);
    assert_eq!(store.compacted_resource_version().unwrap(), 22);
    // Survives a reopen.
    drop(store);
    let reopened = Store::open(dir.path(), DEFAULT_MAP_SIZE).unwrap();
    assert_eq!(reopened.compacted_resource_version().unwrap(), 22);
}
