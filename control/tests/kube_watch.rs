//! The Kubernetes source through kube-rs watch streams, against a mocked
//! API service (`tower-test`, as kube's own tests do; no API server can run
//! here): the first list of every kind, then watch events (added, modified,
//! deleted), and a watch that fell behind (HTTP 410 Gone) followed by a
//! re-list that no longer holds some objects.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use control::core::plan::{self, Action, Desired};
use control::desired::latest::Latest;
use http::{Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use schema::records::ObjectKey;
use serde_json::{Value, json};
use tokio::sync::Notify;

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;
type Reply = tower_test::mock::SendResponse<Response<Body>>;

const NODES: &str = "/api/v1/nodes";
const PODS: &str = "/api/v1/pods";
const CONFIGMAPS: &str = "/api/v1/configmaps";
const SECRETS: &str = "/api/v1/secrets";
const DEVICES: &str = "/apis/devices.kubeedge.io/v1beta1/devices";
const MODELS: &str = "/apis/devices.kubeedge.io/v1beta1/devicemodels";

/// What the mocked API server answers: per path, the lists in turn (the
/// last one again when they run out) and the watch responses in turn
/// (each a complete body of events; none left: the watch is held open).
/// Watches are answered only after `release` is notified.
#[derive(Default)]
struct Script {
    lists: HashMap<&'static str, VecDeque<Value>>,
    watches: HashMap<&'static str, VecDeque<Vec<Value>>>,
}

fn respond(reply: Reply, status: u16, body: Vec<u8>) {
    reply.send_response(
        Response::builder()
            .status(StatusCode::from_u16(status).unwrap())
            .body(Body::from(body))
            .unwrap(),
    );
}

fn list_body(path: &str, items: &Value) -> Vec<u8> {
    let kind = match path {
        NODES => "NodeList",
        PODS => "PodList",
        CONFIGMAPS => "ConfigMapList",
        SECRETS => "SecretList",
        DEVICES => "DeviceList",
        _ => "DeviceModelList",
    };
    serde_json::to_vec(
        &json!({"kind": kind, "metadata": {"resourceVersion": "100"}, "items": items}),
    )
    .unwrap()
}

/// Serves `script` until the test ends; every request's path and query is
/// logged into `seen`.
async fn serve(
    mut h: Handle,
    mut script: Script,
    release: Arc<Notify>,
    seen: Arc<Mutex<Vec<String>>>,
) {
    let mut held: Vec<(&'static str, Reply)> = Vec::new();
    let mut released = false;
    let paths = [NODES, PODS, CONFIGMAPS, SECRETS, DEVICES, MODELS];
    loop {
        let next = tokio::select! {
            r = h.next_request() => r,
            _ = release.notified(), if !released => {
                released = true;
                for (path, reply) in std::mem::take(&mut held) {
                    answer_watch(&mut script, &mut held, path, reply);
                }
                continue;
            }
        };
        let Some((req, reply)) = next else { return };
        let uri = req.uri().clone();
        let query = uri.query().unwrap_or("").to_owned();
        seen.lock().unwrap().push(format!("{}?{query}", uri.path()));
        let Some(path) = paths.into_iter().find(|p| *p == uri.path()) else {
            respond(reply, 404, b"{}".to_vec());
            continue;
        };
        if query.contains("watch=true") {
            if released {
                answer_watch(&mut script, &mut held, path, reply);
            } else {
                held.push((path, reply));
            }
        } else {
            let lists = script.lists.entry(path).or_default();
            let items = if lists.len() > 1 {
                lists.pop_front().unwrap()
            } else {
                lists.front().cloned().unwrap_or(json!([]))
            };
            respond(reply, 200, list_body(path, &items));
        }
    }
}

fn answer_watch(
    script: &mut Script,
    held: &mut Vec<(&'static str, Reply)>,
    path: &'static str,
    reply: Reply,
) {
    match script.watches.get_mut(path).and_then(VecDeque::pop_front) {
        Some(events) => {
            let mut body = Vec::new();
            for e in events {
                body.extend(serde_json::to_vec(&e).unwrap());
                body.push(b'\n');
            }
            respond(reply, 200, body);
        }
        None => held.push((path, reply)),
    }
}

fn pod(name: &str, rv: u32, node: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "resourceVersion": rv.to_string()},
        "spec": {"nodeName": node, "containers": [{"name": "c", "envFrom": [{"configMapRef": {"name": "cfg"}}]}]}})
}

fn configmap(name: &str, rv: u32) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "default", "resourceVersion": rv.to_string()},
        "data": {"k": rv.to_string()}})
}

fn event(kind: &str, object: Value) -> Value {
    json!({"type": kind, "object": object})
}

fn gone() -> Value {
    event(
        "ERROR",
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
            "message": "too old resource version", "reason": "Expired", "code": 410}),
    )
}

/// Waits (up to 20 s) for a published desired state that satisfies `ok`.
async fn wait_for(latest: &Latest, ok: impl Fn(&Desired) -> bool) -> Desired {
    let found = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let d = latest.next().await;
            if ok(&d) {
                return d;
            }
        }
    })
    .await;
    found.expect("the desired state never got there")
}

fn objects(d: &Desired) -> Vec<(String, u64)> {
    d.objects
        .iter()
        .map(|(k, o)| (format!("{}/{}", k.kind, k.name), o.rv))
        .collect()
}

#[tokio::test]
async fn watch_events_and_a_relist_after_gone_keep_the_desired_state_exact() {
    let mut script = Script::default();
    script.lists.insert(
        NODES,
        [json!([
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "edge-1", "resourceVersion": "11",
            "labels": {"node-role.kubernetes.io/edge": ""}}}])]
        .into(),
    );
    script.lists.insert(
        PODS,
        [
            json!([pod("web-1", 12, "edge-1"), pod("elsewhere", 13, "cloud-1")]),
            // The re-list after 410: web-2 changed meanwhile, web-3 is new.
            json!([
                pod("web-2", 24, "edge-1"),
                pod("web-3", 25, "edge-1"),
                pod("elsewhere", 13, "cloud-1")
            ]),
        ]
        .into(),
    );
    script.lists.insert(
        CONFIGMAPS,
        [
            json!([configmap("cfg", 14), configmap("old", 15)]),
            // The re-list after 410: "old" was deleted while the watch was away.
            json!([configmap("cfg", 23)]),
        ]
        .into(),
    );
    script.lists.insert(
        DEVICES,
        [json!([
        {"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device",
         "metadata": {"name": "t1", "namespace": "default", "resourceVersion": "16"},
         "spec": {"nodeName": "edge-1", "deviceModelRef": {"name": "thermo"}}}])]
        .into(),
    );
    script.lists.insert(MODELS, [json!([
        {"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "DeviceModel",
         "metadata": {"name": "thermo", "namespace": "default", "resourceVersion": "17"}, "spec": {}}])].into());
    script.watches.insert(
        PODS,
        [vec![
            event("ADDED", pod("web-2", 21, "edge-1")),
            event("DELETED", pod("web-1", 22, "edge-1")),
            gone(),
        ]]
        .into(),
    );
    script.watches.insert(
        CONFIGMAPS,
        [vec![event("MODIFIED", configmap("cfg", 23)), gone()]].into(),
    );

    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let release = Arc::new(Notify::new());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let server = tokio::spawn(serve(handle, script, release.clone(), seen.clone()));
    let (tx, rx) = control::desired::latest::latest();
    let watcher = tokio::spawn(control::desired::watch::watch_desired(client, tx));

    // Every kind listed: one snapshot, planned as the manifest source's.
    let first = wait_for(&rx, |_| true).await;
    let a1 = plan::assign(&first);
    let got: Vec<(String, u64)> = a1.nodes["edge-1"]
        .iter()
        .map(|(k, rv)| (format!("{}/{}", k.kind, k.name), *rv))
        .collect();
    assert_eq!(
        got,
        [
            ("configmap/cfg".to_owned(), 14),
            ("device/t1".to_owned(), 16),
            ("devicemodel/thermo".to_owned(), 17),
            ("node/edge-1".to_owned(), 11),
            ("pod/web-1".to_owned(), 12),
        ]
    );
    assert_eq!(a1.problems.len(), 1, "the pod on cloud-1 is reported");
    let web1 = &first.objects[&ObjectKey::new("pod", "default", "web-1")];
    assert_eq!(
        (
            web1.value["kind"].as_str(),
            web1.value["apiVersion"].as_str()
        ),
        (Some("Pod"), Some("v1"))
    );
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .any(|r| r.starts_with(NODES)
                && r.contains("labelSelector=node-role.kubernetes.io%2Fedge")),
        "edge nodes are selected by label: {:?}",
        seen.lock().unwrap()
    );

    // Watch events, a 410, and the re-list.
    release.notify_one();
    let last = wait_for(&rx, |d| {
        d.objects
            .contains_key(&ObjectKey::new("pod", "default", "web-3"))
            && d.tombstones
                .contains_key(&ObjectKey::new("configmap", "default", "old"))
    })
    .await;
    assert_eq!(
        objects(&last),
        [
            ("configmap/cfg".to_owned(), 23),
            ("device/t1".to_owned(), 16),
            ("devicemodel/thermo".to_owned(), 17),
            ("node/edge-1".to_owned(), 11),
            ("pod/elsewhere".to_owned(), 13),
            ("pod/web-2".to_owned(), 24),
            ("pod/web-3".to_owned(), 25),
        ]
    );
    let tombstones: Vec<(String, u64)> = last
        .tombstones
        .iter()
        .map(|(k, rv)| (format!("{}/{}", k.kind, k.name), *rv))
        .collect();
    assert_eq!(
        tombstones,
        [
            ("configmap/old".to_owned(), 15),
            ("pod/web-1".to_owned(), 22)
        ],
        "deleted by event at its deletion version; gone from a re-list at its last version"
    );
    // What edge-1 is sent for the change.
    let changes = plan::changes(&last, &a1, &plan::assign(&last));
    let k = |kind: &str, name: &str| ObjectKey::new(kind, "default", name);
    let mut want = vec![
        (
            "edge-1".to_owned(),
            Action::Upsert {
                key: k("configmap", "cfg"),
                rv: 23,
                insert: false,
            },
        ),
        (
            "edge-1".to_owned(),
            Action::Delete {
                key: k("pod", "web-1"),
                rv: 22,
            },
        ),
        (
            "edge-1".to_owned(),
            Action::Upsert {
                key: k("pod", "web-2"),
                rv: 24,
                insert: true,
            },
        ),
        (
            "edge-1".to_owned(),
            Action::Upsert {
                key: k("pod", "web-3"),
                rv: 25,
                insert: true,
            },
        ),
    ];
    let mut changes = changes;
    changes.sort_by_key(|(n, a)| format!("{n}{a:?}"));
    want.sort_by_key(|(n, a)| format!("{n}{a:?}"));
    assert_eq!(changes, want);
    let lists_of_pods = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.starts_with(PODS) && !r.contains("watch=true"))
        .count();
    assert_eq!(lists_of_pods, 2, "pods listed again after 410 Gone");

    watcher.abort();
    server.abort();
}
