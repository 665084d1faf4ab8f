//! DeviceTwin on a real LMDB file, behind the embedded broker on monoio, with
//! a real MQTT client (rumqttc) acting as a device.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use clock::unix_ms;
use edge_core::broker::{EventBus, EventBusConfig};
use edge_core::twin::DeviceTwin;
use heed::{Env, EnvOpenOptions};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(10);

fn open_env(dir: &Path) -> Env {
    // SAFETY: the directory is this test's own; nothing else maps the file.
    #[allow(unsafe_code)]
    unsafe {
        EnvOpenOptions::new()
            .max_dbs(4)
            .map_size(16 << 20)
            .open(dir)
            .expect("env")
    }
}

fn device(name: &str, ns: &str, desired: &[(&str, &str)]) -> Vec<u8> {
    let props: Vec<Value> = desired
        .iter()
        .map(|(n, v)| json!({"name": n, "desired": {"value": v}}))
        .collect();
    serde_json::to_vec(&json!({
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "Device",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"deviceModelRef": {"name": "thermo"}, "nodeName": "node1", "properties": props},
    }))
    .unwrap()
}

/// EventBus (embedded broker) and DeviceTwin on one monoio thread, as
/// edgecore runs them.
fn start_edge(env: Env) -> (SocketAddr, mpsc::Receiver<schema::Message>) {
    let (tx, rx) = mpsc::channel();
    let (addr_tx, addr_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut twin = DeviceTwin::open(&env, "node1").expect("twin");
        let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut cfg = EventBusConfig::default();
            cfg.broker.listen = "127.0.0.1:0".to_owned();
            let bus = EventBus::start(&cfg).expect("listen");
            addr_tx.send(bus.local_addr().expect("embedded")).unwrap();
            loop {
                let m = bus.next_local().await;
                twin.handle_mqtt(&m.topic, &m.payload, unix_ms())
                    .expect("lmdb");
                while let Some((t, p)) = twin.poll_publish() {
                    bus.publish(&t, p, 1).expect("publish");
                }
                while let Some(m) = twin.poll_upstream() {
                    let _ = tx.send(m);
                }
            }
        });
    });
    (addr_rx.recv_timeout(WAIT).expect("edge started"), rx)
}

async fn client(addr: SocketAddr, id: &str, filter: &str) -> (AsyncClient, EventLoop) {
    let (c, mut el) = AsyncClient::new(
        MqttOptions::new(id, addr.ip().to_string(), addr.port()),
        100,
    );
    c.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
    tokio::time::timeout(WAIT, async {
        loop {
            if let Event::Incoming(Packet::SubAck(_)) = el.poll().await.expect("connection") {
                return;
            }
        }
    })
    .await
    .expect("suback");
    (c, el)
}

/// The next publish on `topic`, as JSON.
async fn next_on(el: &mut EventLoop, topic: &str) -> Value {
    tokio::time::timeout(WAIT, async {
        loop {
            if let Event::Incoming(Packet::Publish(p)) = el.poll().await.expect("connection")
                && p.topic == topic
            {
                return serde_json::from_slice(&p.payload).expect("JSON payload");
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("nothing on {topic}"))
}

fn seeded_env(dir: &Path) -> Env {
    let env = open_env(dir);
    let mut twin = DeviceTwin::open(&env, "node1").unwrap();
    twin.handle_device_object(
        &device("d1", "factory", &[("temperature", "25"), ("mode", "auto")]),
        1,
    )
    .unwrap();
    env
}

#[tokio::test]
async fn reported_value_gives_result_document_delta_and_upstream_report() {
    let dir = tempfile::tempdir().unwrap();
    let env = seeded_env(dir.path());
    let (addr, upstream) = start_edge(env.clone());
    let (c, mut el) = client(addr, "mapper", "$hw/events/device/d1/twin/update/#").await;
    let update = json!({"event_id": "e1", "timestamp": 1, "twin": {"temperature": {"actual": {"value": "21"}}}});
    c.publish(
        "$hw/events/device/d1/twin/update",
        QoS::AtLeastOnce,
        false,
        update.to_string(),
    )
    .await
    .unwrap();

    let result = next_on(&mut el, "$hw/events/device/d1/twin/update/result").await;
    assert_eq!(result["event_id"], "e1");
    assert_eq!(result["twin"]["temperature"]["actual"]["value"], "21");
    assert!(result.get("code").is_none());
    let doc = next_on(&mut el, "$hw/events/device/d1/twin/update/document").await;
    assert_eq!(
        doc["twin"]["temperature"]["last"]["expected"]["value"],
        "25"
    );
    assert!(doc["twin"]["temperature"]["last"].get("actual").is_none());
    assert_eq!(
        doc["twin"]["temperature"]["current"]["actual"]["value"],
        "21"
    );
    let delta = next_on(&mut el, "$hw/events/device/d1/twin/update/delta").await;
    assert_eq!(delta["delta"], json!({"temperature": "25", "mode": "auto"}));

    let msg = upstream.recv_timeout(WAIT).expect("report upstream");
    assert_eq!(
        (
            msg.route.source.as_str(),
            msg.route.group.as_str(),
            msg.route.operation.as_str()
        ),
        ("twin", "twin", "update")
    );
    assert_eq!(msg.route.resource, "factory/devicestatus/d1");
    let content: Value = serde_json::from_slice(&msg.content).unwrap();
    assert_eq!(content["twins"][0]["propertyName"], "temperature");
    assert_eq!(content["twins"][0]["reported"]["value"], "21");

    // Committed to LMDB: a fresh DeviceTwin on the same environment sees it.
    let again = DeviceTwin::open(&env, "node1").unwrap();
    let t = &again.device("d1").unwrap().twins["temperature"];
    assert_eq!(
        t.actual.as_ref().and_then(|a| a.value.as_deref()),
        Some("21")
    );
}

#[tokio::test]
async fn twin_get_and_membership_get_are_answered() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, _up) = start_edge(seeded_env(dir.path()));
    let (c, mut el) = client(addr, "app", "$hw/events/#").await;
    c.publish(
        "$hw/events/device/d1/twin/get",
        QoS::AtLeastOnce,
        false,
        r#"{"event_id":"g1"}"#,
    )
    .await
    .unwrap();
    let got = next_on(&mut el, "$hw/events/device/d1/twin/get/result").await;
    assert_eq!(got["event_id"], "g1");
    assert_eq!(got["twin"]["temperature"]["expected"]["value"], "25");
    assert_eq!(got["twin"]["mode"]["expected"]["value"], "auto");

    c.publish(
        "$hw/events/node/node1/membership/get",
        QoS::AtLeastOnce,
        false,
        r#"{"event_id":"m1"}"#,
    )
    .await
    .unwrap();
    let m = next_on(&mut el, "$hw/events/node/node1/membership/get/result").await;
    assert_eq!(m["event_id"], "m1");
    assert_eq!(m["devices"][0]["id"], "d1");
    assert_eq!(m["devices"].as_array().map(Vec::len), Some(1));

    c.publish(
        "$hw/events/device/nope/twin/get",
        QoS::AtLeastOnce,
        false,
        r#"{"event_id":"g2"}"#,
    )
    .await
    .unwrap();
    let missing = next_on(&mut el, "$hw/events/device/nope/twin/get/result").await;
    assert_eq!(missing["code"], 404);
}

#[tokio::test]
async fn malformed_update_and_unknown_device_get_errors_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let env = seeded_env(dir.path());
    let before = DeviceTwin::open(&env, "node1")
        .unwrap()
        .device("d1")
        .cloned();
    let (addr, upstream) = start_edge(env.clone());
    let (c, mut el) = client(addr, "broken", "$hw/events/device/+/twin/update/result").await;

    c.publish(
        "$hw/events/device/d1/twin/update",
        QoS::AtLeastOnce,
        false,
        "{not json",
    )
    .await
    .unwrap();
    let r = next_on(&mut el, "$hw/events/device/d1/twin/update/result").await;
    assert_eq!(r["code"], 400);
    assert!(r["reason"].as_str().is_some_and(|s| !s.is_empty()));

    let bad_key = json!({"event_id": "e2", "twin": {"bad key!": {"actual": {"value": "1"}}}});
    c.publish(
        "$hw/events/device/d1/twin/update",
        QoS::AtLeastOnce,
        false,
        bad_key.to_string(),
    )
    .await
    .unwrap();
    let r = next_on(&mut el, "$hw/events/device/d1/twin/update/result").await;
    assert_eq!(
        (r["event_id"].as_str(), r["code"].as_u64()),
        (Some("e2"), Some(400))
    );

    let unknown = json!({"event_id": "e3", "twin": {"temperature": {"actual": {"value": "1"}}}});
    c.publish(
        "$hw/events/device/ghost/twin/update",
        QoS::AtLeastOnce,
        false,
        unknown.to_string(),
    )
    .await
    .unwrap();
    let r = next_on(&mut el, "$hw/events/device/ghost/twin/update/result").await;
    assert_eq!(r["code"], 404);

    let many: serde_json::Map<String, Value> = (0..300)
        .map(|i| (format!("t{i}"), json!({"actual": {"value": "1"}})))
        .collect();
    let flood = json!({"event_id": "e4", "twin": many});
    c.publish(
        "$hw/events/device/d1/twin/update",
        QoS::AtLeastOnce,
        false,
        flood.to_string(),
    )
    .await
    .unwrap();
    let r = next_on(&mut el, "$hw/events/device/d1/twin/update/result").await;
    assert_eq!(
        (r["event_id"].as_str(), r["code"].as_u64()),
        (Some("e4"), Some(400))
    );

    assert!(upstream.try_recv().is_err(), "nothing reported upstream");
    let after = DeviceTwin::open(&env, "node1").unwrap();
    assert_eq!(after.device("d1").cloned(), before);
    assert!(after.device("ghost").is_none());
}

#[test]
fn desired_change_from_cloud_publishes_document_and_delta() {
    let dir = tempfile::tempdir().unwrap();
    let env = open_env(dir.path());
    let mut twin = DeviceTwin::open(&env, "node1").unwrap();
    twin.handle_device_object(&device("d1", "factory", &[("temperature", "25")]), 1)
        .unwrap();
    let first: Vec<String> = std::iter::from_fn(|| twin.poll_publish())
        .map(|(t, _)| t)
        .collect();
    assert!(first.contains(&"$hw/events/node/node1/membership/updated".to_owned()));
    assert!(first.contains(&"$hw/events/device/d1/twin/update/delta".to_owned()));

    // Same object again: nothing changes, nothing is published.
    twin.handle_device_object(&device("d1", "factory", &[("temperature", "25")]), 2)
        .unwrap();
    assert!(twin.poll_publish().is_none());

    twin.handle_device_object(&device("d1", "factory", &[("temperature", "30")]), 3)
        .unwrap();
    let out: Vec<(String, Value)> = std::iter::from_fn(|| twin.poll_publish())
        .map(|(t, p)| (t, serde_json::from_slice(&p).unwrap()))
        .collect();
    let doc = &out
        .iter()
        .find(|(t, _)| t.ends_with("/twin/update/document"))
        .expect("document")
        .1;
    assert_eq!(
        doc["twin"]["temperature"]["last"]["expected"]["value"],
        "25"
    );
    assert_eq!(
        doc["twin"]["temperature"]["current"]["expected"]["value"],
        "30"
    );
    let delta = &out
        .iter()
        .find(|(t, _)| t.ends_with("/twin/update/delta"))
        .expect("delta")
        .1;
    assert_eq!(delta["delta"]["temperature"], "30");

    twin.handle_device_deleted("factory", "d1", 4).unwrap();
    assert!(twin.device("d1").is_none());
    assert!(
        DeviceTwin::open(&env, "node1")
            .unwrap()
            .device("d1")
            .is_none(),
        "deleted from LMDB"
    );
    assert!(
        twin.handle_device_object(b"{\"kind\":\"Device\"}", 5)
            .is_err(),
        "object without metadata refused"
    );
}

#[tokio::test]
async fn upload_goes_upstream_and_state_update_is_answered() {
    let dir = tempfile::tempdir().unwrap();
    let env = seeded_env(dir.path());
    let (addr, upstream) = start_edge(env.clone());
    let (c, mut el) = client(addr, "gateway", "$hw/events/device/+/state/update/result").await;
    c.publish(
        "$hw/events/upload/records",
        QoS::AtLeastOnce,
        false,
        r#"{"reading":1}"#,
    )
    .await
    .unwrap();
    tokio::time::timeout(WAIT, async {
        while !matches!(
            el.poll().await.expect("connection"),
            Event::Incoming(Packet::PubAck(_))
        ) {}
    })
    .await
    .expect("puback");
    let up = upstream.recv_timeout(WAIT).expect("upload upstream");
    assert_eq!(
        (
            up.route.source.as_str(),
            up.route.group.as_str(),
            up.route.operation.as_str()
        ),
        ("eventbus", "user", "upload")
    );
    assert_eq!(up.route.resource, "$hw/events/upload/records");
    assert_eq!(up.content, br#"{"reading":1}"#);

    c.publish(
        "$hw/events/device/d1/state/update",
        QoS::AtLeastOnce,
        false,
        r#"{"event_id":"s1","state":"online"}"#,
    )
    .await
    .unwrap();
    let r = next_on(&mut el, "$hw/events/device/d1/state/update/result").await;
    assert_eq!(r["event_id"], "s1");
    assert!(r.get("code").is_none());
    let stored = DeviceTwin::open(&env, "node1").unwrap();
    assert_eq!(stored.device("d1").unwrap().state, "online");
}
