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
