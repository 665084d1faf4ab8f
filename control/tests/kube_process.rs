//! `cloudcontrol --kube` as a whole process against a stand-in API server:
//! no Kubernetes API server can be installed here, so the test serves the
//! few paths cloudcontrol uses over plain HTTP on loopback (lists, watch
//! streams held open and fed events on demand, status patches, NodeSync
//! checkpoints), points a kubeconfig at it, and plays the shard end of the
//! rings. It checks the glue of Kubernetes mode: a checkpoint read back
//! from its NodeSync keeps an acknowledged object from being resent; a
//! watch event reaches the ring; a connected node gets its Ready condition
//! patched and its acknowledgements written to its NodeSync.

mod support;

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use schema::records::{DeliveredObject, UpRecord};
use serde_json::{Value, json};
use support::{Cloud, Hub, downstream, key};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const NODESYNCS: &str = "/apis/reliablesyncs.apiary.dev/v1alpha1/nodesyncs";

/// The stand-in API server's state, shared with the test.
#[derive(Default)]
struct Api {
    /// path → list items.
    lists: HashMap<String, Value>,
    /// Writes received: (method, path, body).
    writes: Vec<(String, String, Value)>,
    /// path → open watch streams.
    watches: HashMap<String, Vec<mpsc::UnboundedSender<Value>>>,
}

type Shared = Arc<Mutex<Api>>;

/// Serves on a thread of its own (the test blocks on the rings); returns
/// the address.
fn serve(api: Shared) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap().to_string()).unwrap();
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(connection(sock, api.clone()));
            }
        });
    });
    rx.recv().unwrap()
}

async fn connection(mut sock: TcpStream, api: Shared) {
    let mut buf = Vec::new();
    loop {
        // One request: head, then a body of Content-Length bytes.
        let (method, target, body) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            if let Ok(httparse::Status::Complete(head)) = req.parse(&buf) {
                let len = req
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok()?.parse::<usize>().ok())
                    .unwrap_or(0);
                if buf.len() >= head + len {
                    let r = (
                        req.method.unwrap_or("").to_owned(),
                        req.path.unwrap_or("").to_owned(),
                        buf[head..head + len].to_vec(),
                    );
                    buf.drain(..head + len);
                    break r;
                }
            }
            let mut chunk = [0u8; 8192];
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if method == "GET" && query.contains("watch=true") {
            let (tx, mut rx) = mpsc::unbounded_channel();
            api.lock()
                .unwrap()
                .watches
                .entry(path.to_owned())
                .or_default()
                .push(tx);
            let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
            if sock.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            while let Some(event) = rx.recv().await {
                let mut line = serde_json::to_vec(&event).unwrap();
                line.push(b'\n');
                let chunk = [
                    format!("{:x}\r\n", line.len()).into_bytes(),
                    line,
                    b"\r\n".to_vec(),
                ]
                .concat();
                if sock.write_all(&chunk).await.is_err() {
                    return;
                }
            }
            return;
        }
        let reply = if method == "GET" {
            let items = api.lock().unwrap().lists.get(path).cloned();
            match items {
                Some(items) => {
                    json!({"kind": "List", "metadata": {"resourceVersion": "100"}, "items": items})
                }
                None => {
                    json!({"kind": "List", "metadata": {"resourceVersion": "100"}, "items": []})
                }
            }
        } else {
            api.lock()
                .unwrap()
                .writes
                .push((method.clone(), path.to_owned(), body.clone()));
            // What was written, as the stored object.
            let mut obj = if body.is_object() { body } else { json!({}) };
            obj["metadata"]["name"] = path
                .rsplit('/')
                .find(|s| *s != "status")
                .unwrap_or("x")
                .into();
            obj
        };
        let reply = serde_json::to_vec(&reply).unwrap();
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            reply.len()
        );
        if sock
            .write_all(&[head.into_bytes(), reply].concat())
            .await
            .is_err()
        {
            return;
        }
    }
}

fn node(rv: u32) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "edge-1", "resourceVersion": rv.to_string(),
        "labels": {"node-role.kubernetes.io/edge": ""}}})
}

fn pod(rv: u32) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-1", "namespace": "default", "resourceVersion": rv.to_string()},
        "spec": {"nodeName": "edge-1", "containers": [{"name": "web"}]}})
}

/// Waits up to 20 s for a write that `ok` accepts.
fn wait_write(
    api: &Shared,
    ok: impl Fn(&(String, String, Value)) -> bool,
) -> (String, String, Value) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(w) = api.lock().unwrap().writes.iter().find(|w| ok(w)) {
            return w.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no such write; got {:#?}",
            api.lock().unwrap().writes
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn kube_mode_resumes_from_nodesync_follows_watches_and_writes_status_back() {
    let dir = tempfile::tempdir().unwrap();
    let api: Shared = Arc::default();
    {
        let mut a = api.lock().unwrap();
        a.lists.insert("/api/v1/nodes".into(), json!([node(11)]));
        a.lists.insert("/api/v1/pods".into(), json!([pod(12)]));
        // The node already acknowledged the pod, as its NodeSync says.
        a.lists.insert(
            NODESYNCS.into(),
            json!([{"apiVersion": "reliablesyncs.apiary.dev/v1alpha1", "kind": "NodeSync",
                "metadata": {"name": "edge-1"}, "spec": {"objects": {"default/pod/web-1": 12}, "upstreamSeq": 0}}]),
        );
    }
    let addr = serve(api.clone());
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: t\nclusters:\n- name: t\n  cluster:\n    server: http://{addr}\n\
             contexts:\n- name: t\n  context:\n    cluster: t\n    user: t\nusers:\n- name: t\n  user: {{}}\n"
        ),
    )
    .unwrap();
    let rings = dir.path().join("rings");
    let hub = Hub::open(&rings, 1);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cloudcontrol"));
    cmd.arg("--kube").env("KUBECONFIG", &kubeconfig);
    let cloud = Cloud::start_with(cmd, &dir.path().join("data"), &rings, 1);

    // Only what the checkpoint lacks: the Node, not the acknowledged Pod.
    // (Everything for the first state is in the ring before "ready".)
    let first = downstream(&hub.take_all(), 1);
    assert_eq!(
        first,
        [(
            "edge-1".to_owned(),
            "insert".to_owned(),
            "node/edge-1".to_owned(),
            11
        )],
        "{}",
        cloud.log()
    );

    // A watch event reaches the ring.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let senders = api.lock().unwrap().watches.get("/api/v1/pods").cloned();
        if let Some(senders) = senders
            && senders.iter().any(|s| {
                s.send(json!({"type": "MODIFIED", "object": pod(20)}))
                    .is_ok()
            })
        {
            break;
        }
        assert!(Instant::now() < deadline, "no pod watch; {}", cloud.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    let got = hub.take_until(|r| !downstream(r, 1).is_empty());
    assert_eq!(
        downstream(&got, 1),
        [(
            "edge-1".to_owned(),
            "update".to_owned(),
            "pod/web-1".to_owned(),
            20
        )]
    );

    // The node connects and acknowledges: Ready is patched, and its
    // NodeSync holds both objects.
    hub.push(
        0,
        &UpRecord::Connected {
            node_id: "edge-1".into(),
            at_ms: 1,
            store_id: 0,
        },
    );
    hub.push(
        0,
        &UpRecord::Delivered {
            node_id: "edge-1".into(),
            store_id: 0,
            objects: vec![
                DeliveredObject {
                    key: key("node", "edge-1"),
                    resource_version: 11,
                    deleted: false,
                },
                DeliveredObject {
                    key: key("pod", "web-1"),
                    resource_version: 20,
                    deleted: false,
                },
            ],
        },
    );
    let (_, _, ready) = wait_write(&api, |(m, p, _)| {
        m == "PATCH" && p == "/api/v1/nodes/edge-1/status"
    });
    assert_eq!(ready["status"]["conditions"][0]["type"], "Ready");
    assert_eq!(ready["status"]["conditions"][0]["status"], "True");
    let (_, _, sync) = wait_write(&api, |(m, p, b)| {
        m == "PATCH"
            && *p == format!("{NODESYNCS}/edge-1")
            && b["spec"]["objects"]
                .as_object()
                .is_some_and(|o| o.len() == 2)
    });
    assert_eq!(
        sync["spec"]["objects"],
        json!({"default/node/edge-1": 11, "default/pod/web-1": 20})
    );
    cloud.kill();
}
