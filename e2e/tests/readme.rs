//! The README's "Running the system" commands work exactly as printed. Each
//! line of that section's code block runs as a real process from the
//! repository's root, with only the placeholders filled in: `<token>` with
//! what `cloudcontrol token` printed, `<hub-host>` with 127.0.0.1 and the
//! `/var/lib/apiary` prefix with a temporary directory. cloudhub becomes
//! ready, the edge joins, its MetaServer lists its pod and `cloudcontrol
//! get` shows the node, the pods and the devices.
//!
//! The commands run on their printed ports (10000, 10002, 9091, 10550,
//! 1883) and their ring directory, `/dev/shm/apiary`: the ring files this
//! test finds unused there at the start, and those it made, are removed.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use support::{Process, binary, eventually, get};

/// The ring directory of cloudcontrol's defaults and of
/// `tuning/small-fleet.toml`.
const RING_DIR: &str = "/dev/shm/apiary";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// The commands of the code block under `## Running the system`, each as
/// its words: continuation lines joined, comments dropped.
fn readme_commands() -> Vec<Vec<String>> {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let section = readme
        .split_once("\n## Running the system\n")
        .expect("a Running the system section")
        .1;
    let block = section
        .split_once("```\n")
        .expect("a code block in Running the system")
        .1
        .split_once("\n```")
        .unwrap()
        .0;
    let mut commands: Vec<Vec<String>> = Vec::new();
    let mut current = String::new();
    for line in block.lines() {
        let line = line
            .split_once(" #")
            .map_or(line, |(code, _)| code)
            .trim_end();
        match line.strip_suffix('\\') {
            Some(start) => current.push_str(start),
            None => {
                current.push_str(line);
                if !current.trim().is_empty() {
                    commands.push(current.split_whitespace().map(str::to_owned).collect());
                }
                current.clear();
            }
        }
    }
    for words in &commands {
        let shell = words
            .iter()
            .map(|w| w.replace("<token>", "").replace("<hub-host>", ""))
            .find(|w| w.contains(['|', ';', '&', '\'', '"', '$', '<', '>']));
        assert!(
            shell.is_none(),
            "the README's commands are plain commands, not shell syntax: {words:?}"
        );
    }
    commands
}

/// The ring files in `RING_DIR` and the processes mapping them.
fn ring_files() -> Vec<PathBuf> {
    let Ok(dir) = std::fs::read_dir(RING_DIR) else {
        return Vec::new();
    };
    dir.filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "ring"))
        .collect()
}

fn mapped_by_a_process(file: &Path) -> bool {
    let name = file.to_string_lossy();
    std::fs::read_dir("/proc").unwrap().any(|e| {
        e.ok()
            .and_then(|e| std::fs::read_to_string(e.path().join("maps")).ok())
            .is_some_and(|maps| maps.lines().any(|l| l.ends_with(&*name)))
    })
}

/// Removes the ring files of `RING_DIR` when dropped (after the processes).
struct RingFiles;

impl RingFiles {
    fn claim() -> Self {
        for file in ring_files() {
            assert!(
                !mapped_by_a_process(&file),
                "{} is in use by a running cloudcontrol or cloudhub: stop it first",
                file.display()
            );
            std::fs::remove_file(&file).unwrap();
        }
        RingFiles
    }
}

impl Drop for RingFiles {
    fn drop(&mut self) {
        for file in ring_files() {
            let _ = std::fs::remove_file(file);
        }
    }
}

/// What `cloudcontrol get WHAT` must show once the edge is up.
fn shows(what: &str, table: &str) -> bool {
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    match what {
        "nodes" => rows.iter().any(|r| r.starts_with(&["edge-1", "Ready"])),
        // Pods are listed once their node reports their status (Pending,
        // with the reason, where no runtime runs them).
        "pods" => rows
            .first()
            .is_some_and(|r| r.starts_with(&["NAMESPACE", "NAME", "READY", "STATUS"])),
        // Devices likewise once their twin reports (the quick start's
        // test publishes one and sees it here).
        "devices" => rows
            .first()
            .is_some_and(|r| r.starts_with(&["NAMESPACE", "NAME", "NODE", "REPORTED"])),
        other => panic!("the README gets {other:?}; this test knows nodes, pods and devices"),
    }
}

#[test]
fn the_running_the_system_commands_work_as_printed() {
    let tmp = tempfile::tempdir().unwrap();
    let tmp = tmp.path();
    let prefix = tmp.join("apiary");
    let rings = RingFiles::claim();
    let mut daemons = Vec::new();
    let mut token = None;
    let mut metaserver = None;
    let mut gets = Vec::new();

    for (n, words) in readme_commands().into_iter().enumerate() {
        let args: Vec<String> = words[1..]
            .iter()
            .map(|w| match w.as_str() {
                "<token>" => token.clone().expect("a token printed before <token>"),
                _ => w
                    .replace("<hub-host>", "127.0.0.1")
                    .replace("/var/lib/apiary", &prefix.to_string_lossy()),
            })
            .collect();
        let program = words[0].as_str();
        let sub = args.first().map_or("", String::as_str);
        let mut command = Command::new(binary(program));
        command.args(&args).current_dir(repo_root());
        let name = format!("{n}-{program}");
        match (program, sub) {
            ("cloudcontrol", s) if s.starts_with("--") || s == "run" => {
                let p = Process::start(&name, &mut command, tmp);
                p.wait_for("certs=");
                daemons.push(p);
            }
            ("cloudhub", _) => {
                let p = Process::start(&name, &mut command, tmp);
                p.wait_for("tls=");
                daemons.push(p);
            }
            ("edgecore", "run") => {
                let p = Process::start(&name, &mut command, tmp);
                let addr: SocketAddr = p.wait_for("metaserver=").parse().unwrap();
                metaserver = Some(addr);
                daemons.push(p);
            }
            ("cloudcontrol", "get") => gets.push((args[1].clone(), command)),
            _ => {
                let out = command.output().unwrap();
                assert!(
                    out.status.success(),
                    "{words:?} failed:\n{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                if (program, sub) == ("cloudcontrol", "token") {
                    token = Some(String::from_utf8(out.stdout).unwrap().trim().to_owned());
                }
            }
        }
    }

    let metaserver = metaserver.expect("the README runs an edge");
    eventually(
        "the edge's MetaServer lists its pod",
        || matches!(get(metaserver, "/api/v1/pods"), Some((200, body)) if body.contains("web-1")),
    );
    assert!(!gets.is_empty(), "the README shows `cloudcontrol get`");
    for (what, mut command) in gets {
        eventually(&format!("`cloudcontrol get {what}` answers"), || {
            let out = command.output().unwrap();
            out.status.success() && shows(&what, &String::from_utf8_lossy(&out.stdout))
        });
    }
    drop(daemons);
    drop(rings);
}
