//! `kubectl logs` against the MetaServer, offline-capable, from CRI log
//! files laid out as the runtime writes them under `podLogsDir`: the
//! kubelet's options and the API server's refusals. (The end-to-end Edged
//! test reads the logs of containers a real containerd runs.)

mod support;

use std::path::Path;
use std::process::Command;

use support::{Edge, TestHub, downstream, edge_config, http_get, key, pki, wait_for};

const CURRENT: &str = "2026-12-04T10:00:00.000000001Z stdout F one\n\
                       2026-12-04T10:00:01.5Z stderr P two, \n\
                       2026-12-04T10:00:01.6Z stderr F joined\n\
                       2026-12-04T10:00:02Z stdout F three\n";
const PREVIOUS: &str = "2026-12-04T09:00:00Z stdout F before the restart\n";

fn kubectl(edge: &Edge, args: &[&str]) -> (bool, String) {
    let out = Command::new("kubectl")
        .args(["--server", &format!("http://{}", edge.metaserver), "logs"])
        .args(args)
        .output()
        .expect("kubectl (bash .ci/test installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    (
        out.status.success(),
        if out.status.success() { text } else { err },
    )
}

fn setup(dir: &Path) -> (TestHub, Edge) {
    let pki = pki(&dir.join("pki"));
    let hub = TestHub::start(&pki, "127.0.0.1:0");
    let logs = dir.join("pods");
    let config = edge_config(dir, &pki, &hub.addr.to_string());
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "nodeStatusUpdateFrequency = 1\n",
        &format!("nodeStatusUpdateFrequency = 1\npodLogsDir = {logs:?}\n"),
    );
    std::fs::write(&config, text).unwrap();
    let edge = Edge::start(&config);

    let pods = [
        ("web-1", r#"[{"name":"app","image":"busybox"}]"#),
        (
            "two",
            r#"[{"name":"app","image":"busybox"},{"name":"sidecar","image":"busybox"}]"#,
        ),
    ];
    for (i, (name, containers)) in pods.iter().enumerate() {
        let k = key("pod", "default", name);
        let json = format!(
            r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}","namespace":"default","uid":"u-{name}"}},"spec":{{"containers":{containers}}}}}"#
        );
        hub.send(k.clone(), downstream("update", &k, 10 + i as u64, json));
    }
    wait_for(30, "the pods committed", || hub.delivered_count() == 2);
    let app = logs.join("default_web-1_u-web-1/app");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::write(app.join("0.log"), PREVIOUS).unwrap();
    std::fs::write(app.join("1.log"), CURRENT).unwrap();
    std::fs::create_dir_all(logs.join("default_two_u-two/sidecar")).unwrap();
    std::fs::write(
        logs.join("default_two_u-two/sidecar/0.log"),
        "2026-12-04T10:00:00Z stdout F sidecar says hi\n",
    )
    .unwrap();
    (hub, edge)
}

#[test]
fn kubectl_logs_with_the_kubelets_options() {
    let dir = tempfile::tempdir().unwrap();
    let (_hub, edge) = setup(dir.path());
    let ok = |args: &[&str]| {
        let (ok, out) = kubectl(&edge, args);
        assert!(ok, "kubectl logs {args:?}: {out}");
        out
    };
    assert_eq!(ok(&["web-1"]), "one\ntwo, joined\nthree\n");
    assert_eq!(
        ok(&["web-1", "-c", "app", "--tail", "2"]),
        "two, joined\nthree\n"
    );
    assert_eq!(ok(&["web-1", "--tail", "1"]), "three\n");
    assert_eq!(ok(&["web-1", "--tail", "9"]), "one\ntwo, joined\nthree\n");
    assert_eq!(
        ok(&["web-1", "--timestamps", "--tail", "1"]),
        "2026-12-04T10:00:02Z three\n"
    );
    assert_eq!(
        ok(&["web-1", "--since-time", "2026-12-04T10:00:01Z"]),
        "two, joined\nthree\n"
    );
    assert_eq!(ok(&["web-1", "--limit-bytes", "6"]), "one\ntw");
    assert_eq!(ok(&["web-1", "--previous"]), "before the restart\n");
    assert_eq!(ok(&["two", "-c", "sidecar"]), "sidecar says hi\n");
    // Nothing has run in `two`'s app container yet; there is no previous
    // one of the sidecar.
    let (ok2, err) = kubectl(&edge, &["two", "-c", "app"]);
    assert!(!ok2 && err.contains("is waiting to start"), "{err}");
    let (ok2, err) = kubectl(&edge, &["two", "-c", "sidecar", "-p"]);
    assert!(
        !ok2 && err.contains("previous terminated container"),
        "{err}"
    );
}

#[test]
fn refusals_read_as_the_api_servers() {
    let dir = tempfile::tempdir().unwrap();
    let (_hub, edge) = setup(dir.path());
    let get = |q: &str| {
        http_get(
            edge.metaserver,
            &format!("/api/v1/namespaces/default/pods/{q}"),
        )
    };
    let (code, body) = get("two/log");
    assert_eq!(code, 400);
    assert!(
        body.contains(
            "a container name must be specified for pod two, choose one of: [app sidecar]"
        ),
        "{body}"
    );
    let (code, body) = get("web-1/log?container=nope");
    assert_eq!(code, 400);
    assert!(
        body.contains("container nope is not valid for pod web-1"),
        "{body}"
    );
    let (code, body) = get("ghost/log");
    assert_eq!(code, 404);
    assert!(body.contains(r#"pods \"ghost\" not found"#), "{body}");
    for garbage in [
        "tailLines=-1",
        "limitBytes=lots",
        "sinceTime=yesterday",
        "sinceSeconds=1e3",
    ] {
        let (code, body) = get(&format!("web-1/log?{garbage}"));
        assert_eq!(code, 400, "{garbage}: {body}");
    }
    // The server serves on.
    let (code, body) = get("web-1/log?tailLines=1");
    assert_eq!(code, 200);
    assert!(body.contains("three\n") && !body.contains("one"), "{body}");
}
