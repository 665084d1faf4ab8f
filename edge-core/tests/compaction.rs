//! A watch resumed from before the store's compaction gets the API
//! server's 410 Gone (as a watch ERROR event, which client-go and kube-rs
//! answer by listing again); one from after it is replayed. The MetaServer
//! runs in process over a real LMDB store that keeps two tombstones.

use std::cell::RefCell;
use std::rc::Rc;

use edge_core::metaserver::{Access, PodStatuses, Source, Watches, serve};
use edge_core::store::{DEFAULT_MAP_SIZE, Store};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{WatchEvent, WatchParams};
use kube::{Api, Client};
use schema::{Header, Message, Route};

fn msg(op: &str, name: &str, rv: u64) -> Message {
    let content = format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}","namespace":"default"}},"spec":{{"containers":[]}}}}"#
    );
    Message {
        header: Header {
            id: format!("m-{rv}"),
            resource_version: rv,
            seq: rv,
            ..Header::default()
        },
        route: Route {
            operation: op.into(),
            resource: format!("default/pod/{name}"),
            ..Route::default()
        },
        content: content.into_bytes(),
    }
}

/// A MetaServer on its own thread over `store`.
fn start(store: Store) -> std::net::SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        edge_core::daemon::block_on(async move {
            let listener = monoio::net::TcpListener::bind("127.0.0.1:0").unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            let source = Source {
                access: Access::default(),
                log_root: String::new(),
                store,
                watches: Rc::new(RefCell::new(Watches::default())),
                statuses: Rc::new(RefCell::new(PodStatuses::default())),
                exec: None,
            };
            serve(listener, source).await;
        })
        .unwrap();
    });
    rx.recv().unwrap()
}

#[test]
fn a_watch_from_before_the_compaction_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), DEFAULT_MAP_SIZE)
        .unwrap()
        .with_tombstones_kept(2);
    let mut rv = 10;
    for name in ["a", "b", "c", "d"] {
        rv += 1;
        store.commit([&msg("insert", name, rv)], rv, None).unwrap();
    }
    // Three deletions (rv 15, 16, 17): a's tombstone (15) is dropped.
    for name in ["a", "b", "c"] {
        rv += 1;
        store.commit([&msg("delete", name, rv)], rv, None).unwrap();
    }
    assert_eq!(store.compacted_resource_version().unwrap(), 15);
    let addr = start(store);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let url = format!("http://{addr}").parse().unwrap();
        let pods: Api<Pod> =
            Api::namespaced(Client::try_from(kube::Config::new(url)).unwrap(), "default");
        let wp = WatchParams::default().timeout(1);
        let events: Vec<_> = pods.watch(&wp, "14").await.unwrap().collect().await;
        match &events[..] {
            [Ok(WatchEvent::Error(e))] => {
                assert_eq!((e.code, e.reason.as_str()), (410, "Expired"));
                assert_eq!(e.message, "too old resource version: 14 (15)");
            }
            other => panic!("expected one 410, got {other:?}"),
        }
        // From the compacted version on, the deletions it keeps are replayed.
        let events: Vec<String> = pods
            .watch(&wp, "15")
            .await
            .unwrap()
            .map(|e| match e.unwrap() {
                WatchEvent::Deleted(p) => p.metadata.name.unwrap(),
                WatchEvent::Bookmark(b) => format!("bookmark {}", b.metadata.resource_version),
                other => panic!("unexpected {other:?}"),
            })
            .collect()
            .await;
        assert_eq!(events, ["b", "c", "bookmark 17"]);
    });
}
