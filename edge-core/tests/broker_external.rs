//! External-broker mode against a real mosquitto: the edge's client
//! subscribes to KubeEdge's topics, DeviceTwin answers through mosquitto, and
//! the client comes back after mosquitto is killed and restarted.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use edge_core::broker::external::ExternalConfig;
use edge_core::broker::{EventBus, EventBusConfig, MqttMode};
use edge_core::twin::DeviceTwin;
use heed::EnvOpenOptions;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(10);

/// Debian installs mosquitto in /usr/sbin, which is not on every PATH.
fn mosquitto() -> &'static str {
    if Path::new("/usr/sbin/mosquitto").exists() {
        "/usr/sbin/mosquitto"
    } else {
        "mosquitto"
    }
}

fn mosquitto_present() -> bool {
    Command::new(mosquitto())
        .arg("-h")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

struct Mosquitto(Child);

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_mosquitto(dir: &Path, port: u16) -> Mosquitto {
    let conf = dir.join("mosquitto.conf");
    let mut f = std::fs::File::create(&conf).unwrap();
    writeln!(
        f,
        "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false"
    )
    .unwrap();
    let child = Command::new(mosquitto())
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + WAIT;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "mosquitto did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Mosquitto(child)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The edge (external client + DeviceTwin) on a monoio thread. The receiver
/// gets `true` each time the client is (re)subscribed, then upstream
/// messages' resources.
fn start_edge(dir: &Path, port: u16) -> (mpsc::Receiver<bool>, mpsc::Receiver<String>) {
    // SAFETY: the directory is this test's own; nothing else maps the file.
    #[allow(unsafe_code)]
    let env = unsafe {
        EnvOpenOptions::new()
            .max_dbs(4)
            .map_size(16 << 20)
            .open(dir)
            .unwrap()
    };
    let (ready_tx, ready_rx) = mpsc::channel();
    let (up_tx, up_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut twin = DeviceTwin::open(&env, "node1").unwrap();
        let dev = json!({"metadata": {"name": "d1", "namespace": "default"},
            "spec": {"properties": [{"name": "temperature", "desired": {"value": "25"}}]}});
        twin.handle_device_object(dev.to_string().as_bytes(), 1)
            .unwrap();
        while twin.poll_publish().is_some() {}
        let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        rt.block_on(async move {
            let external = ExternalConfig {
                address: format!("127.0.0.1:{port}"),
                reconnect_ms: 100,
                ..ExternalConfig::default()
            };
            let cfg = EventBusConfig {
                mqtt_mode: MqttMode::External,
                external,
                ..EventBusConfig::default()
            };
            let bus = EventBus::start(&cfg).unwrap();
            let EventBus::External(h) = bus.clone() else {
                panic!("external mode")
            };
            // Report each (re)subscription to the test: a condition polled.
            monoio::spawn(async move {
                let mut was = false;
                loop {
                    let now = h.is_subscribed();
                    if now && !was {
                        let _ = ready_tx.send(true);
                    }
                    was = now;
                    monoio::time::sleep(Duration::from_millis(10)).await;
                }
            });
            loop {
                let m = bus.next_local().await;
                twin.handle_mqtt(&m.topic, &m.payload, 1000).unwrap();
                while let Some((t, p)) = twin.poll_publish() {
                    bus.publish(&t, p, 1).unwrap();
                }
                while let Some(m) = twin.poll_upstream() {
                    let _ = up_tx.send(m.route.resource);
                }
            }
        });
    });
    (ready_rx, up_rx)
}

async fn device(addr: SocketAddr, id: &str) -> (AsyncClient, EventLoop) {
    let (c, mut el) = AsyncClient::new(
        MqttOptions::new(id, addr.ip().to_string(), addr.port()),
        100,
    );
    c.subscribe("$hw/events/device/d1/twin/update/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    tokio::time::timeout(WAIT, async {
        loop {
            if let Event::Incoming(Packet::SubAck(_)) = el.poll().await.expect("mosquitto") {
                return;
            }
        }
    })
    .await
    .expect("suback");
    (c, el)
}

async fn next_on(el: &mut EventLoop, topic: &str) -> Value {
    tokio::time::timeout(WAIT, async {
        loop {
            if let Event::Incoming(Packet::Publish(p)) = el.poll().await.expect("mosquitto")
                && p.topic == topic
            {
                return serde_json::from_slice(&p.payload).unwrap();
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("nothing on {topic}"))
}

async fn update_roundtrip(addr: SocketAddr, id: &str, value: &str, up: &mpsc::Receiver<String>) {
    let (c, mut el) = device(addr, id).await;
    let body = json!({"event_id": id, "twin": {"temperature": {"actual": {"value": value}}}});
    c.publish(
        "$hw/events/device/d1/twin/update",
        QoS::AtLeastOnce,
        false,
        body.to_string(),
    )
    .await
    .unwrap();
    let r = next_on(&mut el, "$hw/events/device/d1/twin/update/result").await;
    assert_eq!(r["twin"]["temperature"]["actual"]["value"], value);
    let d = next_on(&mut el, "$hw/events/device/d1/twin/update/delta").await;
    assert_eq!(d["delta"]["temperature"], "25");
    assert_eq!(up.recv_timeout(WAIT).unwrap(), "default/devicestatus/d1");
}

#[tokio::test]
async fn twin_through_mosquitto_survives_its_restart() {
    if !mosquitto_present() {
        println!("NOTICE: mosquitto binary absent; external-broker test skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let broker = start_mosquitto(dir.path(), port);
    let lmdb = dir.path().join("lmdb");
    std::fs::create_dir(&lmdb).unwrap();
    let (ready, up) = start_edge(&lmdb, port);
    assert!(ready.recv_timeout(WAIT).unwrap(), "edge subscribed");
    update_roundtrip(addr, "dev-a", "21", &up).await;

    // mosquitto dies (SIGKILL) and comes back: the edge reconnects and
    // subscribes again.
    drop(broker);
    let _broker = start_mosquitto(dir.path(), port);
    assert!(ready.recv_timeout(WAIT).unwrap(), "edge subscribed again");
    update_roundtrip(addr, "dev-b", "22", &up).await;
}
