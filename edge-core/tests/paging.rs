//! Lists page by page (`limit`, `continue`) through kube-rs and kubectl,
//! with selectors and with changes between pages, and streaming lists
//! (`sendInitialEvents`) through kube-rs' watcher, as informers use them.

mod support;

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, WatchEvent, WatchParams};
use kube::runtime::watcher;
use kube::{Api, Client};
use support::{Edge, TestHub, downstream, edge_config, http_get, key, pki, wait_for};

fn pod(hub: &TestHub, name: &str, app: &str, rv: u64) {
    let k = key("pod", "default", name);
    let json = format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}","namespace":"default","labels":{{"app":"{app}"}}}},"spec":{{"containers":[{{"name":"c","image":"busybox"}}]}}}}"#
    );
    hub.send(k.clone(), downstream("update", &k, rv, json));
}

fn names(pods: &[Pod]) -> Vec<&str> {
    pods.iter()
        .filter_map(|p| p.metadata.name.as_deref())
        .collect()
}

fn start() -> (tempfile::TempDir, TestHub, Edge) {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(&dir.path().join("pki"));
    let hub = TestHub::start(&pki, "127.0.0.1:0");
    let edge = Edge::start(&edge_config(dir.path(), &pki, &hub.addr.to_string()));
    for (i, name) in ["a", "b", "c", "d", "e", "f", "g"].iter().enumerate() {
        let app = if i % 2 == 0 { "web" } else { "db" };
        pod(&hub, name, app, 10 + i as u64);
    }
    wait_for(30, "7 pods committed", || hub.delivered_count() == 7);
    (dir, hub, edge)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn client(edge: &Edge) -> Client {
    let url = format!("http://{}", edge.metaserver).parse().unwrap();
    Client::try_from(kube::Config::new(url)).unwrap()
}

#[test]
fn lists_come_in_pages_that_a_watch_completes() {
    let (_dir, hub, edge) = start();
    rt().block_on(async {
        let pods: Api<Pod> = Api::namespaced(client(&edge), "default");
        let first = pods.list(&ListParams::default().limit(3)).await.unwrap();
        assert_eq!(names(&first.items), ["a", "b", "c"]);
        let rv = first.metadata.resource_version.clone().unwrap();
        assert_eq!(rv, "16");
        let token = first.metadata.continue_.clone().expect("a continue token");

        // Between pages, f changes and b (already listed) is deleted.
        pod(&hub, "f", "web", 20);
        let kb = key("pod", "default", "b");
        hub.send(kb.clone(), downstream("delete", &kb, 21, String::new()));
        wait_for(30, "the changes committed", || {
            hub.delivered(&kb) == Some(21)
        });

        let p = ListParams::default().limit(3).continue_token(&token);
        let second = pods.list(&p).await.unwrap();
        assert_eq!(names(&second.items), ["d", "e", "f"]);
        assert_eq!(second.metadata.resource_version.as_deref(), Some("16"));
        let f = &second.items[2];
        assert_eq!(f.metadata.resource_version.as_deref(), Some("20"));
        let p = ListParams::default()
            .limit(3)
            .continue_token(second.metadata.continue_.as_deref().unwrap());
        let third = pods.list(&p).await.unwrap();
        assert_eq!(names(&third.items), ["g"]);
        assert_eq!(third.metadata.continue_, None, "the last page");

        // A watch from the pages' version tells what they could not: b's
        // deletion (f's change it sends again).
        let wp = WatchParams::default().timeout(1);
        let events: Vec<String> = pods
            .watch(&wp, &rv)
            .await
            .unwrap()
            .map(|e| match e.unwrap() {
                WatchEvent::Modified(p) => format!("MODIFIED {}", p.metadata.name.unwrap()),
                WatchEvent::Deleted(p) => format!("DELETED {}", p.metadata.name.unwrap()),
                WatchEvent::Bookmark(b) => format!("BOOKMARK {}", b.metadata.resource_version),
                other => panic!("unexpected {other:?}"),
            })
            .collect()
            .await;
        assert_eq!(events, ["MODIFIED f", "DELETED b", "BOOKMARK 21"]);

        // Pages of a selection hold only what it selects.
        let web = ListParams::default().labels("app=web").limit(2);
        let page = pods.list(&web).await.unwrap();
        assert_eq!(names(&page.items), ["a", "c"]);
        let next = web.continue_token(page.metadata.continue_.as_deref().unwrap());
        let page = pods.list(&next).await.unwrap();
        assert_eq!(names(&page.items), ["e", "f"]);
    });

    // kubectl pages by itself (500 by default; 2 here) and prints them all.
    let out = std::process::Command::new("kubectl")
        .args(["--server", &format!("http://{}", edge.metaserver)])
        .args(["get", "pods", "--chunk-size", "2", "-o", "name"])
        .output()
        .expect("kubectl");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(printed, "pod/a\npod/c\npod/d\npod/e\npod/f\npod/g\n");

    // A continue token that is not one: 400, and the server serves on.
    let (code, body) = http_get(edge.metaserver, "/api/v1/pods?limit=2&continue=garbage");
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("continue key is not valid"), "{body}");
    assert_eq!(http_get(edge.metaserver, "/api/v1/pods?limit=1").0, 200);
    // A token continues only the list it came from.
    let (_, page) = http_get(edge.metaserver, "/api/v1/namespaces/default/pods?limit=1");
    let page: serde_json::Value = serde_json::from_str(&page).unwrap();
    let token = page["metadata"]["continue"].as_str().unwrap();
    let (code, body) = http_get(
        edge.metaserver,
        &format!("/api/v1/pods?limit=1&continue={token}"),
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("it continues another list"), "{body}");
}

#[test]
fn a_streaming_list_ends_its_initial_events_with_a_bookmark() {
    let (_dir, hub, edge) = start();
    rt().block_on(async {
        let pods: Api<Pod> = Api::namespaced(client(&edge), "default");
        let config = watcher::Config::default().streaming_lists();
        let mut events = watcher(pods, config).boxed();
        let mut next = async || {
            tokio::time::timeout(Duration::from_secs(20), events.try_next())
                .await
                .expect("a watch event in time")
                .unwrap()
                .expect("the watch goes on")
        };
        let mut initial = Vec::new();
        loop {
            match next().await {
                watcher::Event::Init => {}
                watcher::Event::InitApply(p) => initial.extend(p.metadata.name),
                watcher::Event::InitDone => break,
                other => panic!("unexpected {other:?} before the initial events ended"),
            }
        }
        assert_eq!(initial, ["a", "b", "c", "d", "e", "f", "g"]);
        pod(&hub, "h", "web", 30);
        match next().await {
            watcher::Event::Apply(p) => assert_eq!(p.metadata.name.as_deref(), Some("h")),
            other => panic!("expected h, got {other:?}"),
        }
    });
}
