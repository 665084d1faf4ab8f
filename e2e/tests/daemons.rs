//! The daemons as an operator starts them, stderr to a file: the ring size
//! that the first of `cloudcontrol` and `cloudhub` records in the ring files
//! and the second adopts (or refuses, when its own size is set and differs),
//! in both orders; and logs free of terminal colour codes unless stderr is a
//! terminal without `NO_COLOR`.
//!
//! Every wait polls what a user would look at (a stdout line, the log file,
//! the exit status) until it shows the expected state or a deadline passes.

mod support;

use std::path::Path;
use std::process::Command;

use support::{Process, binary};

const SMALL: usize = 1 << 20;
const ESC: u8 = 0x1b;

/// Starts a daemon whose stderr goes to `NAME.log`, with none of the
/// environment's colour or log-level settings.
fn start(name: &str, command: &mut Command, dir: &Path) -> Process {
    Process::start(
        name,
        command.env_remove("NO_COLOR").env_remove("RUST_LOG"),
        dir,
    )
}

/// `cloudcontrol` on an empty manifest directory with one shard, its ring
/// size set only when `ring_bytes` is.
fn cloudcontrol(dir: &Path, ring_bytes: Option<usize>) -> Command {
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    let mut command = Command::new(binary("cloudcontrol"));
    command
        .arg("--manifests")
        .arg(&manifests)
        .arg("--data-dir")
        .arg(dir.join("control"))
        .arg("--ring-dir")
        .arg(dir.join("rings"))
        .args(["--shards", "1", "--cert-address", "127.0.0.1:0"]);
    if let Some(bytes) = ring_bytes {
        command.args(["--ring-bytes", &bytes.to_string()]);
    }
    command
}

/// `cloudhub` with one shard on the plaintext listener, `ringBytes` in its
/// configuration file only when `ring_bytes` is set.
fn cloudhub(dir: &Path, ring_bytes: Option<usize>) -> Command {
    let config = dir.join("cloudhub.toml");
    let ring_bytes = ring_bytes.map_or(String::new(), |b| format!("ringBytes = {b}\n"));
    std::fs::write(
        &config,
        format!(
            "plaintext = true\nplaintextPort = 0\n[shards]\ncount = 1\n\
             [rings]\ndir = '{}'\n{ring_bytes}[metrics]\naddress = '127.0.0.1:0'\n",
            dir.join("rings").display()
        ),
    )
    .unwrap();
    let mut command = Command::new(binary("cloudhub"));
    command.arg("--config").arg(&config);
    command
}

fn ring_file_len(dir: &Path) -> u64 {
    std::fs::metadata(shm::ring_path(&dir.join("rings"), 0))
        .unwrap()
        .len()
}

fn two_rings(ring_bytes: usize) -> u64 {
    2 * (hub_core::ring::HEADER_BYTES + ring_bytes) as u64
}

const CONTROL_READY: &str = "cloudcontrol ready";
const HUB_READY: &str = "cloudhub ready";
const ADOPTED: &str = "adopted its ring size";

#[test]
fn cloudhub_on_its_default_adopts_the_ring_size_cloudcontrol_created() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let control = start("cloudcontrol", &mut cloudcontrol(dir, Some(SMALL)), dir);
    control.lines_until(CONTROL_READY);
    let hub = start("cloudhub", &mut cloudhub(dir, None), dir);
    hub.lines_until(HUB_READY);
    hub.wait_log(ADOPTED);
    assert!(hub.log_text().contains(&format!("ring_bytes={SMALL}")));
    assert!(
        !control.log_text().contains(ADOPTED),
        "control created them"
    );
    assert_eq!(ring_file_len(dir), two_rings(SMALL));
}

#[test]
fn cloudcontrol_on_its_default_adopts_the_ring_size_cloudhub_created() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let hub = start("cloudhub", &mut cloudhub(dir, Some(SMALL)), dir);
    hub.lines_until(HUB_READY);
    let control = start("cloudcontrol", &mut cloudcontrol(dir, None), dir);
    control.lines_until(CONTROL_READY);
    control.wait_log(ADOPTED);
    assert!(control.log_text().contains(&format!("ring_bytes={SMALL}")));
    assert!(!hub.log_text().contains(ADOPTED), "the hub created them");
    assert_eq!(ring_file_len(dir), two_rings(SMALL));
}

#[test]
fn a_configured_size_unlike_the_files_stops_the_second_daemon_naming_both() {
    let other = 2 * SMALL;
    for hub_first in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        let (first, mut second) = if hub_first {
            let hub = start("cloudhub", &mut cloudhub(dir, Some(SMALL)), dir);
            hub.lines_until(HUB_READY);
            let control = start("cloudcontrol", &mut cloudcontrol(dir, Some(other)), dir);
            (hub, control)
        } else {
            let control = start("cloudcontrol", &mut cloudcontrol(dir, Some(SMALL)), dir);
            control.lines_until(CONTROL_READY);
            let hub = start("cloudhub", &mut cloudhub(dir, Some(other)), dir);
            (control, hub)
        };
        let status = second.exit_status();
        assert!(!status.success(), "{} started: {status}", second.name);
        let message = second.log_text();
        for part in [
            SMALL.to_string(),
            other.to_string(),
            format!("but {} is configured", second.name),
            "cloudhub's `rings.ringBytes`".into(),
            "cloudcontrol's `ringBytes`".into(),
            "--ring-bytes".into(),
        ] {
            assert!(message.contains(&part), "{part:?} missing from:\n{message}");
        }
        assert_eq!(ring_file_len(dir), two_rings(SMALL), "file untouched");
        drop(first);
    }
}

/// Starts each daemon in `dir` through `wrap` (the command as given, or run
/// on a terminal), waits until it has logged a line, and returns each one's
/// log.
fn logs_of_every_daemon(dir: &Path, wrap: impl Fn(Command) -> Command) -> Vec<(String, Vec<u8>)> {
    std::fs::create_dir_all(dir).unwrap();
    let control = start("cloudcontrol", &mut wrap(cloudcontrol(dir, None)), dir);
    control.wait_log("started");
    let hub = start("cloudhub", &mut wrap(cloudhub(dir, None)), dir);
    hub.wait_log("running");
    let edge_config = dir.join("edgecore.toml");
    std::fs::write(
        &edge_config,
        format!(
            "[database]\ndataSource = '{}'\n\
             [modules.edgeHub]\nserver = '127.0.0.1:1'\n\
             [modules.edged]\nhostnameOverride = 'edge-1'\n\
             [modules.metaManager.metaServer]\nserver = '127.0.0.1:0'\n\
             [modules.eventBus.broker]\nlisten = '127.0.0.1:0'\n",
            dir.join("edge").display()
        ),
    )
    .unwrap();
    let mut edge = Command::new(binary("edgecore"));
    edge.arg("run").arg("--config").arg(&edge_config);
    let edge = start("edgecore", &mut wrap(edge), dir);
    edge.wait_log("MetaServer listening");
    [control, hub, edge]
        .iter()
        .map(|d| (d.name.clone(), d.log_bytes()))
        .collect()
}

#[test]
fn logs_to_a_file_hold_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    for (name, log) in logs_of_every_daemon(dir.path(), |c| c) {
        assert!(
            !log.contains(&ESC),
            "{name} wrote colour codes to a file:\n{}",
            String::from_utf8_lossy(&log)
        );
    }
}

/// `command` with a terminal as its stdout and stderr (util-linux `script`),
/// whose output `script` copies to its own stderr (the daemon's log);
/// `NO_COLOR` set to `no_color` if given.
fn on_a_terminal(command: Command, no_color: Option<&str>) -> Command {
    let mut line = String::from("exec env");
    if let Some(value) = no_color {
        line.push_str(&format!(" NO_COLOR={value}"));
    }
    for part in std::iter::once(command.get_program()).chain(command.get_args()) {
        line.push_str(&format!(" '{}'", part.to_str().unwrap()));
    }
    let mut shell = Command::new("sh");
    shell.args([
        "-c",
        "exec script --quiet --flush --command \"$0\" /dev/null >&2",
        &line,
    ]);
    shell
}

#[test]
fn a_terminal_gets_colours_unless_no_color_is_set() {
    let dir = tempfile::tempdir().unwrap();
    let colour = logs_of_every_daemon(&dir.path().join("colour"), |c| on_a_terminal(c, None));
    for (name, log) in colour {
        assert!(
            log.contains(&ESC),
            "{name} on a terminal has no colours:\n{}",
            String::from_utf8_lossy(&log)
        );
    }
    let plain = logs_of_every_daemon(&dir.path().join("plain"), |c| on_a_terminal(c, Some("1")));
    for (name, log) in plain {
        assert!(
            !log.contains(&ESC),
            "{name} wrote colour codes with NO_COLOR=1:\n{}",
            String::from_utf8_lossy(&log)
        );
    }
}
