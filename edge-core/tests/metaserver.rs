//! The MetaServer through kube-rs, a real Kubernetes client: list, get,
//! 404 as a Status, watch of a live change, watch resumed from a
//! resourceVersion; and serving offline from what the store holds.

mod support;

use std::time::Duration;

use edge_core::store::{DEFAULT_MAP_SIZE, Store};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{ListParams, WatchEvent, WatchParams};
use kube::runtime::watcher;
use kube::{Api, Client};
use support::{Edge, TestHub, downstream, edge_config, http_get, key, pki, pod_json, wait_for};

fn client(edge: &Edge) -> Client {
    let url = format!("http://{}", edge.metaserver).parse().unwrap();
    Client::try_from(kube::Config::new(url)).unwrap()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn send_pod(hub: &TestHub, ns: &str, name: &str, rv: u64) {
    let k = key("pod", ns, name);
    hub.send(
        k.clone(),
        downstream("update", &k, rv, pod_json(ns, name, rv)),
    );
}

#[test]
fn kube_client_lists_gets_and_watches() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(&dir.path().join("pki"));
    let hub = TestHub::start(&pki, "127.0.0.1:0");
    let edge = Edge::start(&edge_config(dir.path(), &pki, &hub.addr.to_string()));
    send_pod(&hub, "default", "a", 10);
    send_pod(&hub, "default", "b", 11);
    send_pod(&hub, "other", "c", 12);
    wait_for(30, "3 pods committed", || hub.delivered_count() == 3);

    let rt = rt();
    rt.block_on(async {
        let client = client(&edge);
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        let list = pods.list(&ListParams::default()).await.unwrap();
        let names: Vec<_> = list
            .items
            .iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(list.metadata.resource_version.as_deref(), Some("12"));
        let all: Api<Pod> = Api::all(client.clone());
        assert_eq!(
            all.list(&ListParams::default()).await.unwrap().items.len(),
            3
        );

        let a = pods.get("a").await.unwrap();
        assert_eq!(a.metadata.uid.as_deref(), Some("uid-a"));
        assert_eq!(a.metadata.resource_version.as_deref(), Some("10"));
        match pods.get("missing").await {
            Err(kube::Error::Api(s)) => {
                assert_eq!(s.code, 404);
                assert_eq!(s.reason, "NotFound");
            }
            other => panic!("expected a 404 Status, got {other:?}"),
        }
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
        assert!(
            cms.list(&ListParams::default())
                .await
                .unwrap()
                .items
                .is_empty()
        );

        // A watcher sees a change made after it started.
        let mut events = watcher(pods.clone(), watcher::Config::default()).boxed();
        let initial = tokio::time::timeout(Duration::from_secs(20), async {
            let mut pods = Vec::new();
            while let Some(ev) = events.try_next().await.unwrap() {
                match ev {
                    watcher::Event::InitApply(p) => pods.push(p.metadata.name.unwrap()),
                    watcher::Event::InitDone => return pods,
                    _ => {}
                }
            }
            panic!("watch ended before its initial list");
        })
        .await
        .expect("the watcher's initial list");
        assert_eq!(initial, ["a", "b"]);
        send_pod(&hub, "default", "a", 20);
        let changed = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(ev) = events.try_next().await.unwrap() {
                if let watcher::Event::Apply(p) = ev
                    && p.metadata.resource_version.as_deref() == Some("20")
                {
                    return p;
                }
            }
            panic!("watch ended");
        })
        .await
        .expect("the watcher receives the change");
        assert_eq!(changed.metadata.name.as_deref(), Some("a"));

        // A watch resumed from resourceVersion 11 replays what changed
        // after 11 (a@20 and a deletion) and nothing older.
        let kb = key("pod", "default", "b");
        hub.send(kb.clone(), downstream("delete", &kb, 21, String::new()));
        wait_for(30, "the delete committed", || {
            hub.delivered(&kb) == Some(21)
        });
        let wp = WatchParams::default().timeout(2);
        let stream = pods.watch(&wp, "11").await.unwrap();
        let got: Vec<(String, String)> = stream
            .map(|e| match e.unwrap() {
                WatchEvent::Added(p) => ("ADDED".to_owned(), p.metadata.name.unwrap()),
                WatchEvent::Modified(p) => ("MODIFIED".to_owned(), p.metadata.name.unwrap()),
                WatchEvent::Deleted(p) => ("DELETED".to_owned(), p.metadata.name.unwrap()),
                WatchEvent::Bookmark(b) => ("BOOKMARK".to_owned(), b.metadata.resource_version),
                other => panic!("unexpected {other:?}"),
            })
            .collect()
            .await;
        // kube-rs asks for bookmarks: one ends the watch, at the store's
        // version, so a watch resumed from it misses nothing and replays
        // nothing.
        assert_eq!(
            got,
            [
                ("MODIFIED".to_owned(), "a".to_owned()),
                ("DELETED".to_owned(), "b".to_owned()),
                ("BOOKMARK".to_owned(), "21".to_owned())
            ]
        );
        let unasked = WatchParams::default().timeout(1).disable_bookmarks();
        let stream = pods.watch(&unasked, "21").await.unwrap();
        assert_eq!(
            stream.count().await,
            0,
            "no bookmark unless asked, nothing after 21"
        );
    });

    // Discovery and garbage.
    let (status, body) = http_get(edge.metaserver, "/api/v1");
    assert_eq!(status, 200);
    assert!(body.contains("\"pods\""), "{body}");
    let (status, body) = http_get(edge.metaserver, "/apis");
    assert!(
        status == 200 && body.contains("devices.kubeedge.io"),
        "{body}"
    );
    let (status, body) = http_get(edge.metaserver, "/nothing/here");
    assert!(
        status == 404 && body.contains("\"kind\":\"Status\""),
        "{body}"
    );
    let (status, _) = http_get(
        edge.metaserver,
        "/apis/devices.kubeedge.io/v1beta1/namespaces/default/devices",
    );
    assert_eq!(status, 200);
    let mut s = std::net::TcpStream::connect(edge.metaserver).unwrap();
    use std::io::{Read, Write};
    s.write_all(b"\x00\x01\x02 garbage\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
}

#[test]
fn offline_start_serves_the_store_and_resumes_when_the_cloud_returns() {
    offline_start("fusion");
}

/// The same on the epoll driver, used where io_uring is unavailable.
#[test]
fn offline_start_and_resume_on_the_legacy_driver() {
    offline_start("legacy");
}

fn offline_start(driver: &str) {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(&dir.path().join("pki"));
    // A port nobody listens on yet; the cloud comes up there later.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cloud = format!("127.0.0.1:{port}");
    {
        let store = Store::open(&dir.path().join("data"), DEFAULT_MAP_SIZE).unwrap();
        let k = key("pod", "default", "kept");
        let mut m = downstream("insert", &k, 7, pod_json("default", "kept", 7));
        m.header.seq = 1;
        store.commit([&m], 1, None).unwrap();
    }
    let edge = Edge::start_with_driver(&edge_config(dir.path(), &pki, &cloud), driver);
    let rt = rt();
    rt.block_on(async {
        let pods: Api<Pod> = Api::namespaced(client(&edge), "default");
        let list = pods.list(&ListParams::default()).await.unwrap();
        assert_eq!(list.items.len(), 1);
        assert_eq!(
            pods.get("kept")
                .await
                .unwrap()
                .metadata
                .resource_version
                .as_deref(),
            Some("7")
        );
    });

    let hub = TestHub::start(&pki, &cloud);
    send_pod(&hub, "default", "new", 8);
    wait_for(60, "the edge to reconnect and commit", || {
        hub.delivered(&key("pod", "default", "new")) == Some(8)
    });
    // Node status (Ready) went upstream on connect.
    wait_for(30, "node status upstream", || {
        hub.seen
            .lock()
            .unwrap()
            .upstream
            .iter()
            .any(|m| m.route.resource == "default/nodestatus/edge-1")
    });
    rt.block_on(async {
        let pods: Api<Pod> = Api::namespaced(client(&edge), "default");
        assert_eq!(
            pods.list(&ListParams::default()).await.unwrap().items.len(),
            2
        );
    });
}
