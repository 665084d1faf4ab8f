//! What edges report, played into the shard→control ring: status shown by
//! `cloudcontrol get`, `Committed` pushed back, duplicates not re-applied,
//! and a node reporting on what is not its own refused.

mod support;

use std::process::Command;

use schema::records::UpRecord;
use support::{Cloud, Hub, committed, dirs, upstream};

fn get(data: &std::path::Path, what: &str) -> Vec<Vec<String>> {
    let out = Command::new(env!("CARGO_BIN_EXE_cloudcontrol"))
        .args(["get", what, "--data-dir"])
        .arg(data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect()
}

#[test]
fn reports_become_status_and_are_committed() {
    let t = tempfile::tempdir().unwrap();
    let (m, data, rings) = dirs(t.path());
    support::example_manifests(&m);
    let shards = 2;
    let hub = Hub::open(&rings, shards);
    let cloud = Cloud::start(&m, &data, &rings, shards);
    hub.take_all();
    let s1 = hub_core::shard_of("edge-1", shards);
    let nodes = get(&data, "nodes");
    assert_eq!(nodes[1][..2], ["edge-1", "Unknown"]);

    hub.push(
        s1,
        &UpRecord::Connected {
            node_id: "edge-1".into(),
            at_ms: 1,
            store_id: 0,
        },
    );
    hub.push(
        s1,
        &upstream(
            "edge-1",
            1,
            "edged",
            "default/nodestatus/edge-1",
            r#"{"conditions":[{"type":"MemoryPressure","status":"False"}]}"#,
        ),
    );
    hub.push(
        s1,
        &upstream(
            "edge-1",
            2,
            "edged",
            "default/podstatus/web-1",
            r#"{"phase":"Running","conditions":[{"type":"Ready","status":"True"}],
                "containerStatuses":[{"name":"web","ready":true,"restartCount":2,"state":{"running":{}}}]}"#,
        ),
    );
    hub.push(s1, &upstream("edge-1", 3, "twin", "default/devicestatus/thermometer-1",
        r#"{"twins":[{"propertyName":"temperature","reported":{"value":"21","metadata":{"timestamp":"1700000000000"}}}]}"#));
    // Not edge-1's pod, and garbage: dropped with an error, still committed.
    hub.push(
        s1,
        &upstream(
            "edge-1",
            4,
            "edged",
            "default/podstatus/web-2",
            r#"{"phase":"Failed"}"#,
        ),
    );
    hub.push(
        s1,
        &upstream("edge-1", 5, "edged", "default/podstatus/web-1", "not json"),
    );
    hub.take_until(|r| committed(r, "edge-1", 5));

    let nodes = get(&data, "nodes");
    assert_eq!(nodes[0], ["NAME", "STATUS", "ROLES", "AGE"]);
    assert_eq!(nodes[1][..3], ["edge-1", "Ready", "agent,edge"]);
    assert_eq!(nodes[2][..2], ["edge-2", "Unknown"]);
    // As kubectl shows pods: ready containers, restarts, age.
    let pods = get(&data, "pods");
    assert_eq!(
        pods,
        [
            vec![
                "NAMESPACE",
                "NAME",
                "READY",
                "STATUS",
                "RESTARTS",
                "AGE",
                "NODE"
            ],
            vec![
                "default",
                "web-1",
                "1/1",
                "Running",
                "2",
                "<unknown>",
                "edge-1"
            ],
        ]
    );
    let devices = get(&data, "devices");
    assert_eq!(
        devices[1],
        ["default", "thermometer-1", "edge-1", "temperature=21"]
    );

    // A duplicate (seq 3 again, at-least-once) is confirmed, not applied.
    hub.push(
        s1,
        &upstream(
            "edge-1",
            3,
            "twin",
            "default/devicestatus/thermometer-1",
            r#"{"twins":[{"propertyName":"temperature","reported":{"value":"99"}}]}"#,
        ),
    );
    hub.take_until(|r| committed(r, "edge-1", 5));
    assert_eq!(get(&data, "devices")[1][3], "temperature=21");
    // The next one is.
    hub.push(
        s1,
        &upstream(
            "edge-1",
            6,
            "twin",
            "default/devicestatus/thermometer-1",
            r#"{"twins":[{"propertyName":"temperature","reported":{"value":"22"}}]}"#,
        ),
    );
    hub.take_until(|r| committed(r, "edge-1", 6));
    assert_eq!(get(&data, "devices")[1][3], "temperature=22");

    hub.push(
        s1,
        &UpRecord::Disconnected {
            node_id: "edge-1".into(),
            at_ms: 2,
            reason: u8::MAX,
        },
    );
    hub.push(
        s1,
        &upstream(
            "edge-1",
            7,
            "edged",
            "default/nodestatus/edge-2",
            r#"{"conditions":[]}"#,
        ),
    );
    hub.take_until(|r| committed(r, "edge-1", 7));
    assert_eq!(get(&data, "nodes")[1][1], "NotReady");
    let log = cloud.log();
    assert!(
        log.contains("default/web-2 is not bound to node edge-1"),
        "{log}"
    );
    assert!(log.contains("content is not JSON"), "{log}");
    assert!(
        log.contains("node edge-1 reported the status of node edge-2"),
        "{log}"
    );
}
