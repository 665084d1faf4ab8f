//! Label and field selectors on the MetaServer, through kube-rs and kubectl
//! as an edge application and an operator use them: lists and watches
//! return only what is selected, an object whose labels change enters and
//! leaves a selector's watch, and bad selectors get the API server's 400.

mod support;

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::runtime::watcher;
use kube::{Api, Client};
use support::{Edge, TestHub, downstream, edge_config, http_get, key, pki, wait_for};

fn labelled_pod(hub: &TestHub, name: &str, app: &str, rv: u64) {
    let k = key("pod", "default", name);
    let json = format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}","namespace":"default","uid":"uid-{name}","labels":{{"app":"{app}","tier":"edge"}}}},"spec":{{"nodeName":"edge-1","containers":[{{"name":"c","image":"busybox"}}]}}}}"#
    );
    hub.send(k.clone(), downstream("update", &k, rv, json));
}

type Events = futures::stream::BoxStream<'static, Result<watcher::Event<Pod>, watcher::Error>>;

/// The watcher's next event, failing the test if none comes in time.
async fn next(events: &mut Events) -> watcher::Event<Pod> {
    tokio::time::timeout(Duration::from_secs(20), events.try_next())
        .await
        .expect("a watch event in time")
        .unwrap()
        .expect("the watch goes on")
}

fn names(pods: &[Pod]) -> Vec<String> {
    pods.iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect()
}

fn kubectl(edge: &Edge, args: &[&str]) -> (bool, String) {
    let server = format!("http://{}", edge.metaserver);
    let out = std::process::Command::new("kubectl")
        .args(["--server", &server, "get", "pods", "-o", "name"])
        .args(args)
        .output()
        .expect("kubectl (bash .ci/test installs it)");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn lists_and_watches_return_only_what_the_selectors_select() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(&dir.path().join("pki"));
    let hub = TestHub::start(&pki, "127.0.0.1:0");
    let edge = Edge::start(&edge_config(dir.path(), &pki, &hub.addr.to_string()));
    labelled_pod(&hub, "web-1", "web", 10);
    labelled_pod(&hub, "web-2", "web", 11);
    labelled_pod(&hub, "db-1", "db", 12);
    wait_for(30, "3 pods committed", || hub.delivered_count() == 3);

    // kubectl, as an operator on the node types it.
    // (`-o name` prints nothing at all for an empty list.)
    let (ok, out) = kubectl(&edge, &["-l", "app=nothing-has-this"]);
    assert_eq!((ok, out.as_str()), (true, ""));
    let (ok, out) = kubectl(&edge, &["--field-selector", "metadata.name=nothing"]);
    assert_eq!((ok, out.as_str()), (true, ""));
    let (ok, out) = kubectl(&edge, &["-l", "app=web"]);
    assert_eq!((ok, out.as_str()), (true, "pod/web-1\npod/web-2\n"));
    let (ok, out) = kubectl(&edge, &["-l", "app in (db,cache),tier"]);
    assert_eq!((ok, out.as_str()), (true, "pod/db-1\n"));
    let (ok, out) = kubectl(
        &edge,
        &[
            "--field-selector",
            "metadata.name!=web-1,status.phase=Pending",
        ],
    );
    assert_eq!((ok, out.as_str()), (true, "pod/db-1\npod/web-2\n"));
    let (ok, out) = kubectl(&edge, &["--field-selector", "spec.nothing=x"]);
    assert!(
        !ok && out.contains("field label not supported: spec.nothing"),
        "{out}"
    );

    // Garbage selectors: a 400 Status, and the server serves on.
    for query in [
        "labelSelector=app%20in%20(web",
        "labelSelector=%3D%3D%3D",
        "labelSelector=app%3D-bad-",
        "fieldSelector=metadata.name",
        "fieldSelector=type%3DOpaque",
    ] {
        let (status, body) = http_get(edge.metaserver, &format!("/api/v1/pods?{query}"));
        assert_eq!(status, 400, "{query}: {body}");
        assert!(
            body.contains("\"reason\":\"BadRequest\""),
            "{query}: {body}"
        );
    }
    let (status, _) = http_get(edge.metaserver, "/api/v1/pods?labelSelector=app%3Dweb");
    assert_eq!(status, 200);

    // kube-rs: a list by selector, and a watcher over one.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let url = format!("http://{}", edge.metaserver).parse().unwrap();
        let client = Client::try_from(kube::Config::new(url)).unwrap();
        let pods: Api<Pod> = Api::namespaced(client, "default");
        let web = pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .unwrap();
        assert_eq!(names(&web.items), ["web-1", "web-2"]);
        let one = ListParams::default().fields("metadata.name=db-1");
        assert_eq!(names(&pods.list(&one).await.unwrap().items), ["db-1"]);

        let config = watcher::Config::default().labels("app=web");
        let mut events = watcher(pods.clone(), config).boxed();
        let mut initial = Vec::new();
        loop {
            match next(&mut events).await {
                watcher::Event::InitApply(p) => initial.extend(p.metadata.name),
                watcher::Event::InitDone => break,
                _ => {}
            }
        }
        assert_eq!(initial, ["web-1", "web-2"]);
        // db-1 relabelled web enters the selection; web-1 relabelled db leaves it.
        labelled_pod(&hub, "db-1", "web", 20);
        match next(&mut events).await {
            watcher::Event::Apply(p) => assert_eq!(p.metadata.name.as_deref(), Some("db-1")),
            other => panic!("expected db-1 to enter, got {other:?}"),
        }
        labelled_pod(&hub, "web-1", "db", 21);
        match next(&mut events).await {
            watcher::Event::Delete(p) => assert_eq!(p.metadata.name.as_deref(), Some("web-1")),
            other => panic!("expected web-1 to leave, got {other:?}"),
        }
        // A change to a pod outside the selection is not seen; the next
        // change inside it is.
        labelled_pod(&hub, "web-1", "db", 22);
        labelled_pod(&hub, "web-2", "web", 23);
        match next(&mut events).await {
            watcher::Event::Apply(p) => {
                assert_eq!(p.metadata.name.as_deref(), Some("web-2"));
                assert_eq!(p.metadata.resource_version.as_deref(), Some("23"));
            }
            other => panic!("expected web-2's change, got {other:?}"),
        }
    });
}
