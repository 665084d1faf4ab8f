//! Pods from a manifest directory run on an edge's containerd, checked as
//! an operator would: `cloudcontrol get pods` (READY, STATUS, RESTARTS),
//! the container logs where the kubelet writes them, and what `ctr` shows.
//! One edge runs a pod that prints its env and ConfigMap volume, one that
//! crash-loops, one whose image is missing with `Never`, one on the host
//! network, one whose liveness probe fails and one whose readiness probe
//! does; then a spec change, a delete, and kill -9 of edgecore with
//! the containers adopted, not restarted, by the next edgecore.
//!
//! The runtime is a real containerd of the test's own with images built
//! from a static busybox (`support::containerd`). Every wait polls what a
//! user looks at until it shows the expected state or a deadline passes.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use support::containerd::{BUSYBOX, Containerd, PAUSE};
use support::{
    PATIENCE, Process, eventually, get, join, start_control, start_edge, start_hub, table, token,
};

const CONFIG: &str = r#"apiVersion: v1
kind: Node
metadata:
  name: edge-1
  labels: {node-role.kubernetes.io/edge: ""}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: default}
data: {mode: fast}
---
apiVersion: v1
kind: Secret
metadata: {name: creds, namespace: default}
data: {password: aHVudGVyMg==}
"#;

fn web(version: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: web, namespace: default}}
spec:
  nodeName: edge-1
  terminationGracePeriodSeconds: 2
  containers:
    - name: web
      image: {BUSYBOX}
      imagePullPolicy: Never
      command: ["sh", "-c", "echo {version} mode=$MODE password=$PASSWORD node=$NODE file=`cat /etc/web/mode`; exec sleep 3600"]
      resources: {{limits: {{cpu: 500m, memory: 64Mi}}}}
      env:
        - {{name: MODE, valueFrom: {{configMapKeyRef: {{name: settings, key: mode}}}}}}
        - {{name: PASSWORD, valueFrom: {{secretKeyRef: {{name: creds, key: password}}}}}}
        - {{name: NODE, valueFrom: {{fieldRef: {{fieldPath: spec.nodeName}}}}}}
      volumeMounts: [{{name: config, mountPath: /etc/web}}]
  volumes: [{{name: config, configMap: {{name: settings}}}}]
"#
    )
}

fn others() -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: crash, namespace: default}}
spec:
  nodeName: edge-1
  containers: [{{name: app, image: "{BUSYBOX}", imagePullPolicy: Never, command: ["sh", "-c", "echo crashing; exit 3"]}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: probed, namespace: default}}
spec:
  nodeName: edge-1
  terminationGracePeriodSeconds: 1
  containers:
    - name: app
      image: "{BUSYBOX}"
      imagePullPolicy: Never
      command: ["sh", "-c", "touch /tmp/healthy; sleep 2; rm /tmp/healthy; exec sleep 3600"]
      livenessProbe: {{exec: {{command: [cat, /tmp/healthy]}}, periodSeconds: 1, failureThreshold: 2}}
---
apiVersion: v1
kind: Pod
metadata: {{name: unready, namespace: default}}
spec:
  nodeName: edge-1
  hostNetwork: true
  containers:
    - name: app
      image: "{BUSYBOX}"
      imagePullPolicy: Never
      command: ["sleep", "3600"]
      readinessProbe: {{tcpSocket: {{port: 9}}, periodSeconds: 1}}
---
apiVersion: v1
kind: Pod
metadata: {{name: missing, namespace: default}}
spec:
  nodeName: edge-1
  containers: [{{name: app, image: "apiary.local/nothing:1", imagePullPolicy: Never}}]
"#
    )
}

fn host() -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: host, namespace: default}}
spec:
  nodeName: edge-1
  hostNetwork: true
  terminationGracePeriodSeconds: 1
  containers: [{{name: app, image: "{BUSYBOX}", imagePullPolicy: Never, command: ["sleep", "3600"]}}]
"#
    )
}

/// Sets `key = value` in the edge's TOML, where `edgecore join` wrote it.
fn set(text: &str, key: &str, value: &str) -> String {
    let prefix = format!("{key} = ");
    assert!(
        text.lines().any(|l| l.starts_with(&prefix)),
        "{key} is not in:\n{text}"
    );
    text.lines()
        .map(|l| {
            if l.starts_with(&prefix) {
                format!("{prefix}{value:?}")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `cloudcontrol get pods`' row of `name`: NAMESPACE NAME READY STATUS RESTARTS AGE NODE.
fn pod_row(data: &Path, name: &str) -> Option<Vec<String>> {
    table(data, "pods")
        .lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .find(|r| r.get(1).map(String::as_str) == Some(name))
}

fn shows(data: &Path, name: &str, ready: &str, status: &str) -> bool {
    pod_row(data, name).is_some_and(|r| r[2] == ready && r[3] == status)
}

fn restarts(data: &Path, name: &str) -> u32 {
    pod_row(data, name).map_or(0, |r| r[4].parse().unwrap())
}

/// The pod's log directory under `logs` (`<namespace>_<name>_<uid>`).
fn log_dir(logs: &Path, name: &str) -> Option<PathBuf> {
    std::fs::read_dir(logs)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("default_{name}_"))
        })
}

fn log_holds(logs: &Path, pod: &str, file: &str, text: &str) -> bool {
    log_dir(logs, pod)
        .and_then(|d| std::fs::read_to_string(d.join(file)).ok())
        .is_some_and(|t| t.contains(text))
}

/// The ids of `pod`'s running app containers (not its sandbox), as `ctr`
/// lists them.
fn running_tasks(c: &Containerd, pod: &str) -> Vec<String> {
    let filter = format!(
        "labels.\"io.kubernetes.pod.name\"=={pod},labels.\"io.cri-containerd.kind\"==container"
    );
    let ids = c.ctr(&["containers", "ls", "-q", &filter]);
    let tasks = c.ctr(&["tasks", "ls"]);
    let mut running: Vec<String> = ids
        .lines()
        .filter(|id| {
            tasks
                .lines()
                .any(|t| t.starts_with(id) && t.contains("RUNNING"))
        })
        .map(str::to_owned)
        .collect();
    running.sort();
    running
}

/// edgecore and its MetaServer's address.
fn start_edge_on(config: &Path, dir: &Path) -> (Process, SocketAddr) {
    let (edge, meta, _) = start_edge("edge-1", config, dir);
    (edge, meta)
}

/// What `kubectl get pods` prints from the edge's MetaServer.
fn kubectl_pods(meta: SocketAddr) -> String {
    let out = std::process::Command::new("kubectl")
        .args([
            "--server",
            &format!("http://{meta}"),
            "get",
            "pods",
            "-o",
            "wide",
        ])
        .output()
        .expect("kubectl (bash .ci/test installs it)");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// `kubectl exec ARGS` against the edge's MetaServer with `stdin`: its
/// exit code and its output (stdout, then stderr).
fn kubectl_exec(meta: SocketAddr, args: &[&str], stdin: &str) -> (Option<i32>, String) {
    use std::io::Write as _;
    let mut child = std::process::Command::new("kubectl")
        .args(["--server", &format!("http://{meta}"), "exec"])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code(), text)
}

#[test]
fn pods_run_crash_loop_update_delete_and_survive_an_edgecore_kill() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("cri")).unwrap();
    let runtime = Containerd::start_with_images(&dir.join("cri"));
    let (manifests, data, rings) = (
        dir.join("manifests"),
        dir.join("control"),
        dir.join("rings"),
    );
    std::fs::create_dir_all(&manifests).unwrap();
    std::fs::write(manifests.join("config.yaml"), CONFIG).unwrap();
    std::fs::write(manifests.join("web.yaml"), web("v1")).unwrap();
    std::fs::write(manifests.join("others.yaml"), others()).unwrap();
    std::fs::write(manifests.join("host.yaml"), host()).unwrap();
    let (_control, certs) = start_control(dir, &manifests, &data, &rings, "127.0.0.1:0");
    let (_hub, hub_port) = start_hub(dir, &data, &rings, 0, "");
    let config = join(
        &token(&data),
        &format!("127.0.0.1:{hub_port}"),
        &certs,
        "edge-1",
        &dir.join("edge-1"),
    );
    let logs = dir.join("pod-logs");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text = set(&text, "remoteRuntimeEndpoint", &runtime.endpoint());
    text = set(&text, "podSandboxImage", PAUSE);
    text = set(&text, "rootDirectory", &dir.join("edged").to_string_lossy());
    text = set(&text, "podLogsDir", &logs.to_string_lossy());
    std::fs::write(&config, text).unwrap();
    let (edge, meta) = start_edge_on(&config, dir);

    // Running and Ready, with its env and volume as the container sees them.
    eventually("web Running 1/1", || shows(&data, "web", "1/1", "Running"));
    // The edge's MetaServer serves the same status, and kubectl shows it.
    eventually("web Running on the edge's MetaServer", || {
        matches!(get(meta, "/api/v1/namespaces/default/pods/web"),
            Some((200, body)) if body.contains(r#""phase":"Running""#))
    });
    eventually("kubectl get pods on the edge shows web Running", || {
        kubectl_pods(meta).lines().any(|l| {
            let cells: Vec<&str> = l.split_whitespace().collect();
            cells.len() >= 7 && cells[..4] == ["web", "1/1", "Running", "0"] && cells[6] == "edge-1"
        })
    });
    eventually("web's log shows its env and volume", || {
        log_holds(
            &logs,
            "web",
            "web/0.log",
            "v1 mode=fast password=hunter2 node=edge-1 file=fast",
        )
    });
    let line = std::fs::read_to_string(log_dir(&logs, "web").unwrap().join("web/0.log")).unwrap();
    assert!(
        line.contains(" stdout F v1 mode=fast"),
        "CRI log format: {line}"
    );
    eventually("host Running on the host network", || {
        shows(&data, "host", "1/1", "Running")
    });
    // Restarted after each exit, with the kubelet's back-off between.
    eventually("crash in CrashLoopBackOff after a restart", || {
        shows(&data, "crash", "0/1", "CrashLoopBackOff") && restarts(&data, "crash") >= 1
    });
    assert!(log_holds(&logs, "crash", "app/0.log", "crashing"));
    eventually("missing waits for its image", || {
        shows(&data, "missing", "0/1", "ErrImageNeverPull")
    });
    // Probes: a failing liveness probe restarts; a failing readiness probe
    // leaves the pod Running but not ready.
    eventually("probed restarted by its liveness probe", || {
        shows(&data, "probed", "1/1", "Running") && restarts(&data, "probed") >= 1
    });
    eventually("unready Running and not ready", || {
        shows(&data, "unready", "0/1", "Running")
    });

    // A changed ConfigMap reaches the running container's volume.
    let first = running_tasks(&runtime, "web");
    assert_eq!(first.len(), 1, "{first:?}");
    std::fs::write(
        manifests.join("config.yaml"),
        CONFIG.replace("mode: fast", "mode: slow"),
    )
    .unwrap();
    let mut n = 0;
    eventually("the new mode inside web", || {
        n += 1;
        let exec = format!("check-{n}");
        let out = runtime.ctr_output(&[
            "tasks",
            "exec",
            "--exec-id",
            &exec,
            &first[0],
            "cat",
            "/etc/web/mode",
        ]);
        String::from_utf8_lossy(&out.stdout).contains("slow")
    });
    assert_eq!(
        running_tasks(&runtime, "web"),
        first,
        "a volume update restarts nothing"
    );
    // kubectl exec at the edge, through the runtime's streaming server:
    // output, stdin, and the command's exit code.
    let (code, out) = kubectl_exec(meta, &["web", "--", "cat", "/etc/web/mode"], "");
    assert_eq!((code, out.as_str()), (Some(0), "slow"));
    let (code, out) = kubectl_exec(
        meta,
        &["-i", "web", "--", "tr", "a-z", "A-Z"],
        "hello edge\n",
    );
    assert_eq!((code, out.as_str()), (Some(0), "HELLO EDGE\n"));
    let (code, _) = kubectl_exec(meta, &["web", "--", "sh", "-c", "exit 3"], "");
    assert_eq!(code, Some(3), "the command's exit code");
    let (code, out) = kubectl_exec(meta, &["missing", "--", "true"], "");
    assert!(code != Some(0) && out.contains("not running"), "{out}");

    // A spec change replaces the container: a new attempt, its own log.
    std::fs::write(manifests.join("web.yaml"), web("v2")).unwrap();
    eventually("web's second attempt logs v2", || {
        log_holds(&logs, "web", "web/1.log", "v2 mode=slow")
    });
    eventually("web Running again with one restart", || {
        shows(&data, "web", "1/1", "Running") && restarts(&data, "web") == 1
    });
    // kubectl logs at the edge reads the runtime's files: the current
    // attempt, the previous one, and a followed log stays open while its
    // container runs.
    let logs_of = |args: &[&str]| {
        let out = std::process::Command::new("kubectl")
            .args(["--server", &format!("http://{meta}"), "logs"])
            .args(args)
            .output()
            .expect("kubectl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(
        logs_of(&["web"]).starts_with("v2 mode=slow"),
        "{}",
        logs_of(&["web"])
    );
    assert!(logs_of(&["web", "--previous"]).starts_with("v1 mode=fast"));
    assert!(logs_of(&["crash", "--tail", "1"]).contains("crashing"));
    let mut follow = std::process::Command::new("kubectl")
        .args(["--server", &format!("http://{meta}"), "logs", "-f", "web"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = follow.stdout.take().unwrap();
    std::thread::spawn(move || {
        let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
        let _ = tx.send(lines.next().and_then(Result::ok));
        // The end of the stream, when it comes.
        let _ = tx.send(lines.last().and_then(Result::ok).or(Some(String::new())));
    });
    let followed = rx.recv_timeout(PATIENCE).unwrap().unwrap_or_default();
    assert!(followed.starts_with("v2 mode=slow"), "{followed}");
    assert!(
        rx.recv_timeout(std::time::Duration::from_secs(2)).is_err(),
        "a followed log stays open while its container runs"
    );
    follow.kill().unwrap();
    follow.wait().unwrap();

    let second = running_tasks(&runtime, "web");
    assert_eq!(second.len(), 1, "{second:?}");
    assert_ne!(first, second);
    // Its limits reached the runtime: a 64Mi memory limit, half a CPU.
    let info: serde_json::Value =
        serde_json::from_str(&runtime.ctr(&["containers", "info", &second[0]])).unwrap();
    let resources = &info["Spec"]["linux"]["resources"];
    assert_eq!(resources["memory"]["limit"], 64 << 20, "{resources}");
    assert_eq!(resources["cpu"]["quota"], 50_000, "{resources}");
    assert_eq!(resources["cpu"]["period"], 100_000, "{resources}");

    // A deleted pod's containers stop and go.
    assert_eq!(running_tasks(&runtime, "host").len(), 1);
    std::fs::remove_file(manifests.join("host.yaml")).unwrap();
    eventually("host's containers removed", || {
        let filter = "labels.\"io.kubernetes.pod.name\"==host";
        runtime
            .ctr(&["containers", "ls", "-q", filter])
            .trim()
            .is_empty()
    });

    // kill -9 edgecore: the containers run on; the next edgecore adopts them.
    drop(edge);
    assert_eq!(
        running_tasks(&runtime, "web"),
        second,
        "web runs while edgecore is down"
    );
    let log = dir.join("edge-1.log");
    let before = std::fs::read_to_string(&log).unwrap().len();
    let _edge = start_edge_on(&config, dir).0;
    eventually("the new edgecore reports web Running", || {
        let text = std::fs::read_to_string(&log).unwrap();
        text[before..].contains("pod=default/web phase=Running")
    });
    assert!(shows(&data, "web", "1/1", "Running"));
    eventually("crash keeps crash-looping under the new edgecore", || {
        shows(&data, "crash", "0/1", "CrashLoopBackOff")
    });
    assert_eq!(
        running_tasks(&runtime, "web"),
        second,
        "adopted, not restarted"
    );
    assert_eq!(restarts(&data, "web"), 1);
}
