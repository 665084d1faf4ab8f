//! edgecore killed with SIGKILL in the middle of a stream of batches, then
//! restarted: nothing it acknowledged is missing, no partial batch is
//! visible, and after the restart it resumes and gets everything.

mod support;

use edge_core::store::{DEFAULT_MAP_SIZE, Store};
use support::{Edge, TestHub, downstream, edge_config, key, pki, pod_json, wait_for};

const OBJECTS: u64 = 6000;

/// Object `i` is created with resourceVersion `i`, in order: a store that
/// holds exactly objects 1..=k for some k has no hole, so no commit was
/// partial or out of order.
fn check_prefix(store: &Store) -> u64 {
    let mut rvs: Vec<u64> = store
        .list("pod", Some("crash"))
        .unwrap()
        .iter()
        .map(|o| o.resource_version)
        .collect();
    rvs.sort_unstable();
    for (i, rv) in rvs.iter().enumerate() {
        assert_eq!(
            *rv,
            i as u64 + 1,
            "hole in the committed objects before {rv}"
        );
    }
    rvs.len() as u64
}

#[test]
fn sigkill_mid_stream_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(&dir.path().join("pki"));
    let hub = TestHub::start(&pki, "127.0.0.1:0");
    let config = edge_config(dir.path(), &pki, &hub.addr.to_string());
    for i in 1..=OBJECTS {
        let k = key("pod", "crash", &format!("p{i:05}"));
        let m = downstream("insert", &k, i, pod_json("crash", &k.name, i));
        hub.send(k, m);
    }
    // Three power cuts at different points of the stream.
    for threshold in [500, 2000, 3500] {
        let edge = Edge::start(&config);
        wait_for(60, "part of the stream to be acknowledged", || {
            hub.delivered_count() >= threshold
        });
        edge.kill();
        let acked = hub.seen.lock().unwrap().delivered.clone();
        assert!(
            (acked.len() as u64) < OBJECTS,
            "killed too late to test anything"
        );

        let store = Store::open(&dir.path().join("data"), DEFAULT_MAP_SIZE).unwrap();
        let held = check_prefix(&store);
        for (k, rv) in &acked {
            let o = store
                .get(k)
                .unwrap()
                .unwrap_or_else(|| panic!("acknowledged {k:?} lost"));
            assert_eq!(o.resource_version, *rv);
        }
        assert!(held >= acked.len() as u64);
        assert!(store.committed_seq().unwrap() >= held);
        eprintln!("killed with {} acknowledged, {held} committed", acked.len());
    }

    // Restart: the edge resumes from its committed seq and gets the rest.
    let edge = Edge::start(&config);
    wait_for(60, "the whole stream after the restart", || {
        hub.delivered_count() as u64 == OBJECTS
    });
    edge.kill();
    let store = Store::open(&dir.path().join("data"), DEFAULT_MAP_SIZE).unwrap();
    assert_eq!(check_prefix(&store), OBJECTS);
    let seen = hub.seen.lock().unwrap();
    assert!(seen.connections >= 4);
    // Upstream (a node status per connection at least) survived the kills:
    // the cloud took seqs 1, 2, 3, … with no gap, each once.
    let seqs: Vec<u64> = seen.upstream.iter().map(|m| m.header.seq).collect();
    assert!(seqs.len() >= 3, "{seqs:?}");
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
}
