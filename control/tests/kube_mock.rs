//! The Kubernetes paths against a mocked API service (`tower-test`, as
//! kube's own tests do; no API server can run here): listing the desired
//! state, the Node Ready condition (creating the Node on 404), Pod and
//! Device status patches, and the checked-in CRDs.

use http::{Method, Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
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

fn list(kind: &str, api_version: &str, items: Value) -> Value {
    json!({"apiVersion": api_version, "kind": format!("{kind}List"), "metadata": {"resourceVersion": "100"}, "items": items})
}

#[tokio::test]
async fn lists_the_desired_state_and_plans_it() {
    let (client, mut h) = mock();
    let server = tokio::spawn(async move {
        let (_, q) = expect(&mut h, Method::GET, "/api/v1/nodes", 200, list("Node", "v1", json!([
            {"metadata": {"name": "edge-1", "resourceVersion": "11", "labels": {"node-role.kubernetes.io/edge": ""}}}]))).await;
        assert!(
            q.contains("labelSelector=node-role.kubernetes.io%2Fedge"),
            "{q}"
        );
        expect(&mut h, Method::GET, "/api/v1/pods", 200, list("Pod", "v1", json!([
            {"metadata": {"name": "web-1", "namespace": "default", "resourceVersion": "12"},
             "spec": {"nodeName": "edge-1", "containers": [{"name": "web", "envFrom": [{"configMapRef": {"name": "cfg"}}]}]}},
            {"metadata": {"name": "elsewhere", "namespace": "default", "resourceVersion": "13"},
             "spec": {"nodeName": "cloud-1", "containers": [{"name": "x"}]}}]))).await;
        expect(&mut h, Method::GET, "/api/v1/configmaps", 200, list("ConfigMap", "v1", json!([
            {"metadata": {"name": "cfg", "namespace": "default", "resourceVersion": "14"}, "data": {"k": "v"}}]))).await;
        expect(
            &mut h,
            Method::GET,
            "/api/v1/secrets",
            200,
            list("Secret", "v1", json!([])),
        )
        .await;
        expect(&mut h, Method::GET, "/apis/devices.kubeedge.io/v1beta1/devices", 200, list("Device", "devices.kubeedge.io/v1beta1", json!([
            {"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device",
             "metadata": {"name": "t1", "namespace": "default", "resourceVersion": "15"},
             "spec": {"nodeName": "edge-1", "deviceModelRef": {"name": "thermo"}, "properties": [{"name": "temperature"}]}}]))).await;
        expect(
            &mut h,
            Method::GET,
            "/apis/devices.kubeedge.io/v1beta1/devicemodels",
            200,
            list(
                "DeviceModel",
                "devices.kubeedge.io/v1beta1",
                json!([
            {"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "DeviceModel",
             "metadata": {"name": "thermo", "namespace": "default", "resourceVersion": "16"},
             "spec": {"properties": [{"name": "temperature", "type": "FLOAT"}]}}]),
            ),
        )
        .await;
    });
    let desired = control::kube::list_desired(&client).await.unwrap();
    server.await.unwrap();
    let a = control::plan::assign(&desired);
    let got: Vec<(String, u64)> = a.nodes["edge-1"]
        .iter()
        .map(|(k, rv)| (format!("{}/{}", k.kind, k.name), *rv))
        .collect();
    assert_eq!(
        got,
        [
            ("configmap/cfg".to_owned(), 14),
            ("device/t1".to_owned(), 15),
            ("devicemodel/thermo".to_owned(), 16),
            ("node/edge-1".to_owned(), 11),
            ("pod/web-1".to_owned(), 12),
        ]
    );
    assert_eq!(a.problems.len(), 1, "the pod on cloud-1 is reported");
    let pod = &desired.objects[&control::plan::key("pod", "default", "web-1")];
    assert_eq!(pod.value["kind"], "Pod");
    assert_eq!(pod.value["apiVersion"], "v1");
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
    control::kube::set_node_ready(
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
    control::kube::patch_pod_status(&client, "default", "web-1", &json!({"phase": "Running"}))
        .await
        .unwrap();
    let twins = json!({"twins": [{"propertyName": "temperature", "reported": {"value": "21"}}]});
    control::kube::patch_device_status(&client, "default", "t1", &twins)
        .await
        .unwrap();
    let err = control::kube::patch_pod_status(&client, "default", "gone", &json!({}))
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
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crds/devices.kubeedge.io.yaml");
    let want = control::kube::crds_yaml();
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "{} is stale: regenerate with `cloudcontrol crds > control/crds/devices.kubeedge.io.yaml`",
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
            "devicemodels.devices.kubeedge.io"
        ]
    );
    assert!(
        docs[0]["spec"]["versions"][0]["subresources"]
            .get("status")
            .is_some()
    );
}
