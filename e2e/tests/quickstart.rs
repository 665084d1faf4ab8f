//! The README's quick start as a user runs it: `bash examples/quickstart.sh`
//! (here on the debug binaries and on free ports) starts cloudcontrol,
//! cloudhub and two edgecores; once it says what to try next, each edge's
//! MetaServer lists that edge's pod, the printed twin update arrives in the
//! printed `cloudcontrol get devices`; and SIGINT, as Ctrl-C sends, stops
//! every process it started.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use support::{PATIENCE, Process, binary, eventually, get};

/// A process as `/proc/PID/stat` shows it: name, parent and start time.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ProcStat {
    pid: u32,
    comm: String,
    state: char,
    ppid: u32,
    start_ticks: u64,
}

fn proc_stat(pid: u32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (head, tail) = text.rsplit_once(')')?;
    let comm = head.split_once('(')?.1.to_owned();
    let fields: Vec<&str> = tail.split_whitespace().collect();
    Some(ProcStat {
        pid,
        comm,
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        start_ticks: fields.get(19)?.parse().ok()?,
    })
}

/// The running children of `parent` named cloudcontrol, cloudhub or edgecore.
fn children(parent: u32) -> Vec<ProcStat> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter_map(proc_stat)
        .filter(|p| p.ppid == parent && p.state != 'Z')
        .filter(|p| ["cloudcontrol", "cloudhub", "edgecore"].contains(&p.comm.as_str()))
        .collect()
}

/// Whether that very process (same pid, same start) still runs.
fn still_running(p: &ProcStat) -> bool {
    proc_stat(p.pid).is_some_and(|now| now.start_ticks == p.start_ticks && now.state != 'Z')
}

/// Kills (SIGKILL) what the launcher started if the test fails before the
/// launcher could stop it.
struct Started(Vec<ProcStat>);

impl Drop for Started {
    fn drop(&mut self) {
        for p in self.0.iter().filter(|p| still_running(p)) {
            if let Some(pid) = rustix::process::Pid::from_raw(p.pid as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
    }
}

/// The text between the first pair of single quotes after `flag ` in `line`.
fn quoted_after<'a>(line: &'a str, flag: &str) -> &'a str {
    let rest = line
        .split_once(&format!("{flag} '"))
        .unwrap_or_else(|| panic!("no {flag} '…' in {line:?}"))
        .1;
    rest.split_once('\'').unwrap().0
}

/// Publishes `payload` on `topic` (QoS 1) and returns once the broker has
/// acknowledged it, as `mosquitto_pub -q 1` would.
fn publish(mqtt: SocketAddr, topic: &str, payload: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let options =
            rumqttc::MqttOptions::new("quickstart-test", mqtt.ip().to_string(), mqtt.port());
        let (client, mut events) = rumqttc::AsyncClient::new(options, 10);
        client
            .publish(topic, rumqttc::QoS::AtLeastOnce, false, payload.to_owned())
            .await
            .unwrap();
        tokio::time::timeout(PATIENCE, async {
            loop {
                match events.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) => return,
                    Ok(_) => {}
                    Err(e) => panic!("MQTT connection to the edge: {e}"),
                }
            }
        })
        .await
        .expect("the edge's broker acknowledges the publish");
    });
}

#[test]
fn the_quick_start_runs_the_system_and_ctrl_c_stops_all_of_it() {
    let tmp = tempfile::tempdir().unwrap();
    let tmp = tmp.path();
    let bins = binary("cloudcontrol").parent().unwrap().to_owned();
    binary("cloudhub");
    binary("edgecore");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/quickstart.sh");
    let mut launcher = Process::start(
        "quickstart",
        // As from a terminal, whose shell leaves SIGINT at its default: a
        // test run started in the background of a script inherits SIGINT
        // ignored, and bash cannot trap a signal ignored at its start.
        Command::new("env")
            .args(["--default-signal=INT", "bash"])
            .arg(&script)
            .arg("--bin-dir")
            .arg(&bins)
            .args(["--base-port", "0", "--dir"])
            .arg(tmp.join("run")),
        tmp,
    );
    let printed = launcher.lines_until("Ctrl-C stops everything");
    let started = Started(children(launcher.pid()));
    let mut names: Vec<&str> = started.0.iter().map(|p| p.comm.as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["cloudcontrol", "cloudhub", "edgecore", "edgecore"],
        "{started:?}",
        started = started.0
    );

    // Each edge's MetaServer, as printed for kubectl, lists that edge's pod.
    let metaservers: Vec<SocketAddr> = printed
        .iter()
        .filter_map(|l| l.trim().strip_prefix("kubectl --server http://"))
        .map(|rest| rest.split_whitespace().next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(metaservers.len(), 2, "{printed:#?}");
    for (meta, (own, other)) in metaservers
        .iter()
        .zip([("web-1", "web-2"), ("web-2", "web-1")])
    {
        eventually(
            &format!("{own} on the MetaServer at {meta}"),
            || matches!(get(*meta, "/api/v1/pods"), Some((200, body)) if body.contains(own)),
        );
        let (_, body) = get(*meta, "/api/v1/pods").unwrap();
        assert!(!body.contains(other), "{meta} lists {other}: {body}");
    }

    // The printed twin update, published where mosquitto_pub would, shows
    // up in the printed `cloudcontrol get devices`.
    let pub_line = printed
        .iter()
        .find(|l| l.trim().starts_with("mosquitto_pub "))
        .unwrap_or_else(|| panic!("no mosquitto_pub line: {printed:#?}"));
    let words: Vec<&str> = pub_line.split_whitespace().collect();
    let after = |flag: &str| words[words.iter().position(|w| *w == flag).unwrap() + 1];
    let mqtt: SocketAddr = format!("{}:{}", after("-h"), after("-p")).parse().unwrap();
    publish(
        mqtt,
        quoted_after(pub_line, "-t"),
        quoted_after(pub_line, "-m"),
    );
    let get_line = printed
        .iter()
        .map(|l| l.trim())
        .find(|l| l.contains("cloudcontrol get devices"))
        .unwrap_or_else(|| panic!("no cloudcontrol get devices line: {printed:#?}"));
    let get_words: Vec<&str> = get_line.split_whitespace().collect();
    eventually("the twin update in `cloudcontrol get devices`", || {
        let out = Command::new(get_words[0])
            .args(&get_words[1..])
            .output()
            .unwrap();
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("temperature=21.5")
    });

    // Ctrl-C: the launcher stops everything it started and exits.
    let pid = rustix::process::Pid::from_raw(launcher.pid() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    let status = launcher.exit_status();
    assert_eq!(status.code(), Some(130), "{}", launcher.log_text());
    let left: Vec<&ProcStat> = started.0.iter().filter(|p| still_running(p)).collect();
    assert!(left.is_empty(), "still running after Ctrl-C: {left:?}");
    // The logs are where it said.
    let logs = printed
        .iter()
        .find_map(|l| l.strip_prefix("Logs: "))
        .unwrap_or_else(|| panic!("no Logs: line: {printed:#?}"));
    let logs = Path::new(logs.split_once('{').unwrap().0);
    for name in ["cloudcontrol", "cloudhub", "edge-1", "edge-2"] {
        let log = std::fs::read_to_string(logs.join(format!("{name}.log"))).unwrap();
        assert!(!log.is_empty(), "{name}.log is empty");
    }
}
