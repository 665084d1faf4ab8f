//! `fleetbench`'s fleet scenarios end to end on a small fleet: a real
//! `cloudhub` process, real TLS edges, the rings; each run must finish, lose
//! nothing and write its figures.

use std::process::Command;

fn run(scenario: &str, extra: &[&str]) -> serde_json::Value {
    let out_dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_fleetbench"))
        .arg(scenario)
        .args(["--nodes", "60", "--shards", "2", "--out"])
        .arg(out_dir.path())
        .args(extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{scenario}: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("| figure | value |"), "{stdout}");
    let json = out_dir.path().join(format!("fleetbench-{scenario}.json"));
    let svg =
        std::fs::read_to_string(out_dir.path().join(format!("fleetbench-{scenario}.svg"))).unwrap();
    assert!(svg.starts_with("<svg"), "not an SVG plot");
    serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap()
}

#[test]
fn downstream_and_upstream_lose_nothing() {
    let report = run(
        "mixed",
        &["--objects", "30", "--duration", "2", "--upstream-rate", "5"],
    );
    let down = &report["downstream"];
    assert_eq!(down["messages"], 60 * 30, "{report:#}");
    assert_eq!(down["lost"], 0);
    assert!(down["latency"]["p99_us"].as_u64().unwrap() > 0);
    let up = &report["upstream"];
    assert_eq!(up["lost"], 0, "{report:#}");
    assert!(up["messages"].as_u64().unwrap() >= 60, "{report:#}");
    assert_eq!(report["connect_errors"], 0);
    // The hub timed every upstream message from its socket to the ring.
    assert!(
        report["hub"]["up"]["count"].as_u64().unwrap() >= up["messages"].as_u64().unwrap(),
        "{report:#}"
    );
}

#[test]
fn a_storm_brings_every_node_back_and_idle_reports_memory() {
    let report = run("storm", &[]);
    let storm = &report["storm"];
    assert_eq!(storm["nodes"], 60);
    assert!(
        storm["reconnects_per_second"].as_f64().unwrap() > 0.0,
        "{report:#}"
    );
    let report = run("idle", &[]);
    assert!(report["hub_rss_bytes"].as_u64().unwrap() > 0);
    assert_eq!(report["nodes"], 60);
}

#[test]
fn one_edgecore_under_load_reports_its_memory_and_apply_rate() {
    let report = run(
        "edge",
        &["--objects", "500", "--duration", "1", "--rate", "200"],
    );
    let edge = &report["edge"];
    assert_eq!(edge["apply_messages"], 500, "{report:#}");
    assert!(edge["apply_per_second"].as_f64().unwrap() > 0.0);
    let idle = edge["rss_idle_bytes"].as_u64().unwrap();
    assert!(
        idle > 0 && edge["rss_loaded_bytes"].as_u64().unwrap() >= idle,
        "{report:#}"
    );
}

#[test]
fn plaintext_edges_route_everything_and_the_report_says_so() {
    let report = run("downstream", &["--objects", "30", "--plaintext"]);
    assert_eq!(report["transport"], "plaintext", "{report:#}");
    let down = &report["downstream"];
    assert_eq!(down["messages"], 60 * 30, "{report:#}");
    assert_eq!(down["lost"], 0);
    // The hub timed its routing of what it took from the ring.
    let hub = &report["hub"];
    assert!(hub["down"]["count"].as_u64().unwrap() >= 60, "{report:#}");
    assert!(hub["down"]["p99_us"].as_f64().unwrap() > 0.0, "{report:#}");
}

#[test]
fn one_per_send_puts_every_message_in_its_own_frame_and_send() {
    let report = run("downstream", &["--objects", "10", "--one-per-send"]);
    assert_eq!(report["transport"], "TLS 1.3", "{report:#}");
    let down = &report["downstream"];
    assert_eq!(down["messages"], 60 * 10, "{report:#}");
    assert_eq!(down["lost"], 0);
    let hub = &report["hub"];
    let (sends, frames) = (
        hub["sends"].as_u64().unwrap(),
        hub["frames"].as_u64().unwrap(),
    );
    assert_eq!(sends, frames, "one frame per send: {report:#}");
    // Every message went in a send of its own (a keepalive may add one).
    assert!((600..=660).contains(&sends), "{report:#}");
}

#[test]
fn a_fleet_split_over_worker_processes_is_counted_whole() {
    let report = run(
        "mixed",
        &[
            "--objects",
            "20",
            "--duration",
            "2",
            "--upstream-rate",
            "5",
            "--max-nodes-per-process",
            "30",
        ],
    );
    assert_eq!(report["client_processes"], 2, "{report:#}");
    let down = &report["downstream"];
    assert_eq!(down["messages"], 60 * 20, "{report:#}");
    assert_eq!(down["lost"], 0);
    // The workers' latencies reach the merged histogram.
    assert_eq!(down["latency"]["count"], 60 * 20, "{report:#}");
    let up = &report["upstream"];
    assert_eq!(up["lost"], 0, "{report:#}");
    // Every node of both workers sent telemetry (5/s each for 2 s).
    assert!(up["messages"].as_u64().unwrap() >= 60 * 5, "{report:#}");
    assert_eq!(report["connect_errors"], 0);
    // The workers obey the scenario's commands: every node drops and
    // comes back.
    let report = run("storm", &["--max-nodes-per-process", "30"]);
    assert_eq!(report["client_processes"], 2, "{report:#}");
    assert_eq!(report["storm"]["nodes"], 60, "{report:#}");
}

#[test]
fn echo_sends_every_upstream_message_back_to_its_node() {
    let report = run(
        "upstream",
        &["--duration", "2", "--upstream-rate", "5", "--echo"],
    );
    let up = &report["upstream"];
    assert_eq!(up["lost"], 0, "{report:#}");
    let sent = up["messages"].as_u64().unwrap();
    assert!(sent >= 60 * 5, "{report:#}");
    // Each one came back to the edge that sent it, timed from its send.
    let down = &report["downstream"];
    assert_eq!(down["messages"], sent, "{report:#}");
    assert_eq!(down["lost"], 0);
    assert_eq!(down["latency"]["count"], sent, "{report:#}");
    assert!(
        down["latency"]["p50_us"].as_u64().unwrap() >= up["latency"]["p50_us"].as_u64().unwrap(),
        "a round trip takes at least the way up: {report:#}"
    );
}

#[test]
fn fanout_from_cloudcontrol_reaches_every_node_with_every_update() {
    let out_dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_fleetbench"))
        .args(["fanout", "--nodes", "40", "--shards", "2", "--updates", "2"])
        .arg("--out")
        .arg(out_dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "fanout: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("initial sync"), "{stdout}");
    let json = out_dir.path().join("fleetbench-fanout.json");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    let figures = &report["fanout"];
    let initial = &figures["initial"];
    assert_eq!(initial["expected"], 40 * 3, "{report:#}");
    assert_eq!(initial["delivered"], 40 * 3, "{report:#}");
    assert_eq!(initial["lost"], 0);
    let fanout = &figures["fanout"];
    assert_eq!(fanout["expected"], 40 * 2, "{report:#}");
    assert_eq!(fanout["delivered"], 40 * 2, "{report:#}");
    assert_eq!(fanout["lost"], 0);
    assert_eq!(fanout["latency"]["count"], 40 * 2, "{report:#}");
    for phase in [initial, fanout] {
        for figure in [
            "seconds",
            "per_second",
            "per_hub_cpu_second",
            "per_control_cpu_second",
        ] {
            assert!(
                phase[figure].as_f64().unwrap() > 0.0,
                "{figure}: {report:#}"
            );
        }
        assert!(
            phase["latency"]["p99_us"].as_u64().unwrap() > 0,
            "{report:#}"
        );
        assert!(
            phase["latency"]["max_us"].as_u64() >= phase["latency"]["p50_us"].as_u64(),
            "{report:#}"
        );
    }
    assert!(
        figures["control_rss_bytes"].as_u64().unwrap() > 0,
        "{report:#}"
    );
    assert_eq!(report["connect_errors"], 0);
}
