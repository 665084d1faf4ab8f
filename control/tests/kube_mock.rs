//! The Kubernetes status writes against a mocked API service
//! (`tower-test`, as kube's own tests do; no API server can run here): the
//! Node Ready condition (creating the Node on 404), Pod and Device status
//! patches, their retries, and the checked-in CRDs. The watch streams are
//! tested in `kube_watch.rs`.

use http::{Method, Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use schema::records::ObjectKey;
use serde_json::{Value, json};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

fn mock() -> (Client, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, "default"), handle)
}

/// Takes the next request, checks its method and path, answers `reply`
/// with `status`; returns the request's JSON body (Null when empty).
async fn expect(
    h: &mut Handle,
    method: Method,
    path: &str,
    status: u16,
    reply: Value,
) -> (Value, String) {
    let (req, send) = h.next_request().await.expect("no request");
    assert_eq!(req.method(), method, "{}", req.uri());
    assert_eq!(req.uri().path(), path);
    let ctype = req
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let query = req.uri().query().unwrap_or("").to_owned();
    let body = req.into_body().collect_bytes().await.unwrap();
    let body = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).unwrap()
    };
    send.send_response(
        Response::builder()
            .status(StatusCode::from_u16(status).unwrap())
            .body(Body::from(serde_json::to_vec(&reply).unwrap()))
            .unwrap(),
    );
    (body, format!("{ctype} {query}"))
}

#[tokio::test]
async fn node_ready_creates_a_missing_node_then_patches_its_status() {
    let (client, mut h) = mock();
    let server = tokio::spawn(async move {
        let not_found = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
            "message": "nodes \"edge-1\" not found", "reason": "NotFound", "code": 404});
        let (patch, ctype) = expect(
            &mut h,
            Method::PATCH,
            "/api/v1/nodes/edge-1/status",
            404,
            not_found,
        )
        .await;
        assert!(
            ctype.starts_with("application/strategic-merge-patch+json"),
            "{ctype}"
        );
        assert_eq!(patch["status"]["conditions"][0]["type"], "Ready");
        assert_eq!(patch["status"]["conditions"][0]["status"], "True");
        let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "edge-1"}});
        let (created, _) = expect(&mut h, Method::POST, "/api/v1/nodes", 201, node.clone()).await;
        assert_eq!(created["metadata"]["name"], "edge-1");
        assert!(
            created["metadata"]["labels"]
                .get("node-role.kubernetes.io/edge")
                .is_some()
        );
        let (again, _) = expect(
            &mut h,
            Method::PATCH,
            "/api/v1/nodes/edge-1/status",
            200,
            node,
        )
        .await;
        assert_eq!(again, patch);
    });
    control::observed::apiserver::set_node_ready(
        &client,
        "edge-1",
        true,
        "EdgeConnected",
        "2026-01-01T00:00:00Z",
    )
    .await
    .unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn pod_and_device_status_are_merge_patched() {
    let (client, mut h) = mock();
    let server = tokio::spawn(async move {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-1", "namespace": "default"}});
        let (p, ctype) = expect(
            &mut h,
            Method::PATCH,
            "/api/v1/namespaces/default/pods/web-1/status",
            200,
            pod,
        )
        .await;
        assert!(ctype.starts_with("application/merge-patch+json"), "{ctype}");
        assert_eq!(p, json!({"status": {"phase": "Running"}}));
        let dev = json!({"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device",
            "metadata": {"name": "t1", "namespace": "default"}, "spec": {}});
        let (d, _) = expect(
            &mut h,
            Method::PATCH,
            "/apis/devices.kubeedge.io/v1beta1/namespaces/default/devices/t1/status",
            200,
            dev,
        )
        .await;
        assert_eq!(d["status"]["twins"][0]["reported"]["value"], "21");
        // An API error reaches the caller.
        let (_, _) = expect(&mut h, Method::PATCH, "/api/v1/namespaces/default/pods/gone/status", 404,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"})).await;
    });
    control::observed::apiserver::patch_pod_status(
        &client,
        "default",
        "web-1",
        &json!({"phase": "Running"}),
    )
    .await
    .unwrap();
    let twins = json!({"twins": [{"propertyName": "temperature", "reported": {"value": "21"}}]});
    control::observed::apiserver::patch_device_status(&client, "default", "t1", &twins)
        .await
        .unwrap();
    let err =
        control::observed::apiserver::patch_pod_status(&client, "default", "gone", &json!({}))
            .await
            .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref e) if e.code == 404),
        "{err}"
    );
    server.await.unwrap();
}

#[test]
fn checked_in_crds_are_current() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crds/crds.yaml");
    let want = control::crd::crds_yaml();
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "{} is stale: regenerate with `cloudcontrol crds > control/crds/crds.yaml`",
        path.display()
    );
    let docs: Vec<Value> = serde_saphyr::from_multiple(&have).unwrap();
    let names: Vec<&str> = docs
        .iter()
        .map(|d| d["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "devices.devices.kubeedge.io",
            "devicemodels.devices.kubeedge.io",
            "nodesyncs.reliablesyncs.apiary.dev"
        ]
    );
    assert!(
        docs[0]["spec"]["versions"][0]["subresources"]
            .get("status")
            .is_some()
    );
}

#[tokio::test]
async fn status_patches_are_retried_until_they_land_and_dropped_when_refused() {
    let (client, mut h) = mock();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let writer = tokio::spawn(control::observed::patches::write_patches(client, rx));
    let device = "/apis/devices.kubeedge.io/v1beta1/namespaces/default/devices/t1/status";
    let unavailable = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
        "reason": "ServiceUnavailable", "code": 503, "message": "try again"});
    tx.send(control::core::StatusChange::Device {
        namespace: "default".into(),
        name: "t1".into(),
        reported: json!({"twins": [{"propertyName": "temperature", "reported": {"value": "21"}}]}),
    })
    .unwrap();
    let (first, _) = expect(&mut h, Method::PATCH, device, 503, unavailable.clone()).await;
    let (second, _) = expect(&mut h, Method::PATCH, device, 503, unavailable).await;
    let (third, _) = expect(&mut h, Method::PATCH, device, 200, json!({})).await;
    assert_eq!(first["status"]["twins"][0]["reported"]["value"], "21");
    assert_eq!(
        (&second, &third),
        (&first, &first),
        "the same patch, sent again"
    );

    // A pod that no longer exists: refused for good, not retried; the
    // next change is the next request.
    tx.send(control::core::StatusChange::Pod {
        namespace: "default".into(),
        name: "gone".into(),
        status: json!({"phase": "Running"}),
    })
    .unwrap();
    expect(&mut h, Method::PATCH, "/api/v1/namespaces/default/pods/gone/status", 404,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"})).await;
    tx.send(control::core::StatusChange::Pod {
        namespace: "default".into(),
        name: "web-1".into(),
        status: json!({"phase": "Running"}),
    })
    .unwrap();
    let (p, _) = expect(
        &mut h,
        Method::PATCH,
        "/api/v1/namespaces/default/pods/web-1/status",
        200,
        json!({}),
    )
    .await;
    assert_eq!(p, json!({"status": {"phase": "Running"}}));
    drop(tx);
    tokio::time::timeout(std::time::Duration::from_secs(5), writer)
        .await
        .expect("the writer ends when its channel closes")
        .unwrap();
}

#[tokio::test]
async fn checkpoints_are_applied_per_node_and_read_back() {
    let (client, mut h) = mock();
    let server = tokio::spawn(async move {
        let path = "/apis/reliablesyncs.apiary.dev/v1alpha1/nodesyncs/edge-1";
        let stored = json!({"apiVersion": "reliablesyncs.apiary.dev/v1alpha1", "kind": "NodeSync",
            "metadata": {"name": "edge-1"}, "spec": {"objects": {"default/pod/web-1": 12}, "upstreamSeq": 7}});
        let (body, ctype_query) = expect(&mut h, Method::PATCH, path, 200, stored).await;
        assert!(
            ctype_query.starts_with("application/apply-patch+yaml")
                && ctype_query.contains("fieldManager=cloudcontrol")
                && ctype_query.contains("force=true"),
            "a forced server-side apply: {ctype_query}"
        );
        assert_eq!(
            body,
            json!({"apiVersion": "reliablesyncs.apiary.dev/v1alpha1", "kind": "NodeSync",
                "metadata": {"name": "edge-1"},
                "spec": {"objects": {"default/pod/web-1": 12}, "upstreamSeq": 7, "storeId": 9}})
        );
        let list = json!({"apiVersion": "reliablesyncs.apiary.dev/v1alpha1", "kind": "NodeSyncList",
            "metadata": {"resourceVersion": "5"}, "items": [
                {"apiVersion": "reliablesyncs.apiary.dev/v1alpha1", "kind": "NodeSync",
                 "metadata": {"name": "edge-1"},
                 "spec": {"objects": {"default/pod/web-1": 12, "not-a-key": 3}, "upstreamSeq": 7, "storeId": 9}}]});
        expect(
            &mut h,
            Method::GET,
            "/apis/reliablesyncs.apiary.dev/v1alpha1/nodesyncs",
            200,
            list,
        )
        .await;
    });
    let objects = [("default/pod/web-1".to_owned(), 12)].into();
    control::observed::apiserver::apply_checkpoint(&client, "edge-1", &objects, 7, 9)
        .await
        .unwrap();
    let loaded = control::checkpoint::nodesync::load_checkpoints(&client)
        .await
        .unwrap();
    server.await.unwrap();
    assert_eq!(
        loaded,
        [control::checkpoint::nodesync::LoadedCheckpoint {
            node: "edge-1".into(),
            checkpoint: control::core::checkpoints::NodeCheckpoint {
                acked: [(ObjectKey::new("pod", "default", "web-1"), 12)].into(),
                upstream_seq: 7,
                store_id: 9,
            },
        }]
    );
}
