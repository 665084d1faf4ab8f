//! The whole system end to end, as an operator runs it: `cloudcontrol` on
//! the example manifests, `cloudhub` with the certificates cloudcontrol
//! made, and two `edgecore` processes joined with tokens. A manifest change
//! reaches both edges' MetaServers; a twin update published by an MQTT
//! client on an edge is answered with a delta and comes back as Device
//! status in `cloudcontrol get devices`; `cloudhub` killed with SIGKILL and started again loses
//! nothing.
//!
//! Every wait polls what a user would look at (an HTTP answer, a command's
//! output) until it shows the expected state or a deadline passes
//! (`support`).

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use support::{
    PATIENCE, devices_table, eventually, get, join, start_control, start_edge, start_hub, table,
    token,
};

fn configmap_says(edge: SocketAddr, text: &str) -> bool {
    matches!(
        get(edge, "/api/v1/namespaces/default/configmaps/web-config"),
        Some((200, body)) if body.contains(text)
    )
}

/// Publishes a reported temperature for `device` on the edge's broker, as a
/// device driver does, and returns the delta the edge answers with (the
/// example Device desires 20).
fn twin_update(mqtt: SocketAddr, device: &str, value: &str) -> serde_json::Value {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut options = rumqttc::MqttOptions::new(
            format!("driver-{value}"),
            mqtt.ip().to_string(),
            mqtt.port(),
        );
        options.set_keep_alive(Duration::from_secs(30));
        let (client, mut events) = rumqttc::AsyncClient::new(options, 10);
        let delta_topic = format!("$hw/events/device/{device}/twin/update/delta");
        client
            .subscribe(&delta_topic, rumqttc::QoS::AtLeastOnce)
            .await
            .unwrap();
        let payload = format!(
            r#"{{"event_id":"e-{value}","timestamp":0,"twin":{{"temperature":{{"actual":{{"value":"{value}"}},"metadata":{{"type":"Updated"}}}}}}}}"#
        );
        let mut published = false;
        tokio::time::timeout(PATIENCE, async {
            loop {
                match events.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) if !published => {
                        published = true;
                        client
                            .publish(
                                format!("$hw/events/device/{device}/twin/update"),
                                rumqttc::QoS::AtLeastOnce,
                                false,
                                payload.clone(),
                            )
                            .await
                            .unwrap();
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)))
                        if p.topic == delta_topic =>
                    {
                        return serde_json::from_slice(&p.payload).expect("a JSON delta");
                    }
                    Ok(_) => {}
                    Err(e) => panic!("MQTT connection to the edge: {e}"),
                }
            }
        })
        .await
        .expect("a delta from the edge")
    })
}

#[test]
fn manifests_reach_edges_twins_reach_the_cloud_and_a_hub_restart_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let manifests = dir.join("manifests");
    let data = dir.join("control");
    let rings = dir.join("rings");
    std::fs::create_dir_all(&manifests).unwrap();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/manifests");
    for entry in std::fs::read_dir(&examples).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, manifests.join(path.file_name().unwrap())).unwrap();
    }

    let (control, certs) = start_control(dir, &manifests, &data, &rings, "127.0.0.1:0");
    let (hub, hub_port) = start_hub(dir, &data, &rings, 0, "");
    let token = token(&data);

    // Two edges join with the token and run.
    let mut edges = Vec::new();
    for node in ["edge-1", "edge-2"] {
        let cloud = format!("127.0.0.1:{hub_port}");
        let config = join(&token, &cloud, &certs, node, &dir.join(node));
        edges.push(start_edge(node, &config, dir));
    }

    // The example manifests reach both MetaServers.
    for (_, meta, _) in &edges {
        eventually("the example config map on an edge", || {
            configmap_says(*meta, "hello from the cloud")
        });
    }
    // These edges have no container runtime: their pods wait, saying why,
    // and the nodes stay Ready for everything else.
    eventually("web-1 Pending for want of a runtime", || {
        table(&data, "pods").lines().any(|l| {
            let cells: Vec<&str> = l.split_whitespace().collect();
            cells.len() > 3
                && cells[1] == "web-1"
                && cells[2] == "0/1"
                && cells[3] == "ContainerRuntimeUnavailable"
        })
    });
    // A manifest change reaches both.
    let config_yaml = manifests.join("config.yaml");
    let original = std::fs::read_to_string(&config_yaml).unwrap();
    std::fs::write(
        &config_yaml,
        original.replace("hello from the cloud", "hello again"),
    )
    .unwrap();
    for (_, meta, _) in &edges {
        eventually("the changed config map on an edge", || {
            configmap_says(*meta, "hello again")
        });
    }

    // A device reports a twin value over MQTT on edge-1 once the edge has
    // its Device: the edge answers with a delta and the cloud shows it.
    eventually("the Device on edge-1", || {
        matches!(
            get(
                edges[0].1,
                "/apis/devices.kubeedge.io/v1beta1/namespaces/default/devices/thermometer-1"
            ),
            Some((200, _))
        )
    });
    let delta = twin_update(edges[0].2, "thermometer-1", "21.5");
    assert_eq!(delta["delta"]["temperature"], "20", "{delta}");
    eventually(
        "the reported temperature in `cloudcontrol get devices`",
        || devices_table(&data).contains("temperature=21.5"),
    );

    // cloudhub dies hard and comes back on the same port: what changes
    // meanwhile and after reaches the edges, and reports still flow.
    drop(hub);
    std::fs::write(
        &config_yaml,
        original.replace("hello from the cloud", "after the restart"),
    )
    .unwrap();
    let (_hub, _) = start_hub(dir, &data, &rings, hub_port, "");
    for (_, meta, _) in &edges {
        eventually("the change made while cloudhub was down", || {
            configmap_says(*meta, "after the restart")
        });
    }
    let delta = twin_update(edges[0].2, "thermometer-1", "22.5");
    assert_eq!(delta["delta"]["temperature"], "20", "{delta}");
    eventually("a report after the restart", || {
        devices_table(&data).contains("temperature=22.5")
    });
    drop(control);
}
