//! `kubectl get` against the MetaServer prints the columns the API server
//! gives each kind (the MetaServer answers with Tables), with real ages, and
//! `kubectl get -w` prints a change as it happens.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use support::{Edge, TestHub, downstream, edge_config, key, pki, wait_for};

fn send(hub: &TestHub, kind: &str, ns: &str, name: &str, rv: u64, json: String) {
    let k = key(kind, ns, name);
    hub.send(k.clone(), downstream("update", &k, rv, json));
}

/// An RFC 3339 time `secs` ago.
fn ago(secs: u64) -> String {
    clock::rfc3339(clock::unix_ms() - secs * 1000)
}

fn kubectl(edge: &Edge, args: &[&str]) -> String {
    let out = Command::new("kubectl")
        .args(["--server", &format!("http://{}", edge.metaserver), "get"])
        .args(args)
        .output()
        .expect("kubectl (bash .ci/test installs it)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "kubectl get {args:?}: {err}");
    // Columns are padded to their widths: compare words.
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n")
}

fn seed(hub: &TestHub) {
    let pod = format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"web-1","namespace":"default","creationTimestamp":"{}"}},"spec":{{"nodeName":"edge-1","containers":[{{"name":"c","image":"busybox"}}]}},"status":{{"phase":"Pending"}}}}"#,
        ago(300)
    );
    send(hub, "pod", "default", "web-1", 10, pod);
    let cm = format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"cfg","namespace":"default","creationTimestamp":"{}"}},"data":{{"a":"1","b":"2"}}}}"#,
        ago(3 * 3600)
    );
    send(hub, "configmap", "default", "cfg", 11, cm);
    let secret = format!(
        r#"{{"apiVersion":"v1","kind":"Secret","metadata":{{"name":"creds","namespace":"default","creationTimestamp":"{}"}},"type":"Opaque","data":{{"password":"aHVudGVyMg=="}}}}"#,
        ago(3 * 86_400)
    );
    send(hub, "secret", "default", "creds", 12, secret);
    let node = format!(
        r#"{{"apiVersion":"v1","kind":"Node","metadata":{{"name":"edge-1","creationTimestamp":"{}","labels":{{"node-role.kubernetes.io/edge":""}}}},"status":{{"conditions":[{{"type":"Ready","status":"True"}}],"addresses":[{{"type":"InternalIP","address":"10.0.0.5"}}],"nodeInfo":{{"kubeletVersion":"v1.30.0","osImage":"Debian","kernelVersion":"6.1.0","containerRuntimeVersion":"containerd://1.6.20"}}}}}}"#,
        ago(1800)
    );
    send(hub, "node", "default", "edge-1", 13, node);
    let device = format!(
        r#"{{"apiVersion":"devices.kubeedge.io/v1beta1","kind":"Device","metadata":{{"name":"thermo","namespace":"default","creationTimestamp":"{}"}},"spec":{{}}}}"#,
        ago(600)
    );
    send(hub, "device", "default", "thermo", 14, device);
    wait_for(30, "5 objects committed", || hub.delivered_count() == 5);
}

#[test]
fn kubectl_get_prints_each_kinds_columns() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(&dir.path().join("pki"));
    let hub = TestHub::start(&pki, "127.0.0.1:0");
    let edge = Edge::start(&edge_config(dir.path(), &pki, &hub.addr.to_string()));
    seed(&hub);

    assert_eq!(
        kubectl(&edge, &["pods", "-o", "wide"]),
        "NAME READY STATUS RESTARTS AGE IP NODE\nweb-1 0/0 Pending 0 5m <none> edge-1"
    );
    assert_eq!(kubectl(&edge, &["configmaps"]), "NAME DATA AGE\ncfg 2 3h");
    assert_eq!(
        kubectl(&edge, &["secrets"]),
        "NAME TYPE DATA AGE\ncreds Opaque 1 3d"
    );
    assert_eq!(
        kubectl(&edge, &["nodes"]),
        "NAME STATUS ROLES AGE VERSION\nedge-1 Ready edge 30m v1.30.0"
    );
    let wide = kubectl(&edge, &["nodes", "-o", "wide"]);
    assert!(
        wide.ends_with(
            "edge-1 Ready edge 30m v1.30.0 10.0.0.5 <none> Debian 6.1.0 containerd://1.6.20"
        ),
        "{wide}"
    );
    assert_eq!(
        kubectl(&edge, &["devices.devices.kubeedge.io"]),
        "NAME AGE\nthermo 10m"
    );
    let all = kubectl(&edge, &["configmaps", "-A"]);
    assert_eq!(all, "NAMESPACE NAME DATA AGE\ndefault cfg 2 3h");
}

#[test]
fn kubectl_get_watch_prints_a_change() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(&dir.path().join("pki"));
    let hub = TestHub::start(&pki, "127.0.0.1:0");
    let edge = Edge::start(&edge_config(dir.path(), &pki, &hub.addr.to_string()));
    seed(&hub);

    let mut child = Command::new("kubectl")
        .args(["--server", &format!("http://{}", edge.metaserver)])
        .args(["get", "configmaps", "-w"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let words = line.split_whitespace().collect::<Vec<_>>().join(" ");
            if tx.send(words).is_err() {
                break;
            }
        }
    });
    let line = || {
        rx.recv_timeout(Duration::from_secs(20))
            .expect("a line from kubectl get -w in time")
    };
    assert_eq!(line(), "NAME DATA AGE");
    assert_eq!(line(), "cfg 2 3h");
    // A third key: the change is printed as a row of the same table.
    let cm = format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"cfg","namespace":"default","creationTimestamp":"{}"}},"data":{{"a":"1","b":"2","c":"3"}}}}"#,
        ago(3 * 3600)
    );
    send(&hub, "configmap", "default", "cfg", 20, cm);
    assert_eq!(line(), "cfg 3 3h");
    child.kill().unwrap();
    child.wait().unwrap();
}
