//! The DeviceTwin/EventBus hooks: upstream messages handed over while the
//! cloud is unreachable wait in the durable outbox and reach the cloud, in
//! order and once, when it returns; Device changes reach `on_change`.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use edge_core::config::EdgeConfig;
use edge_core::daemon::{self, EdgeHooks, Upstream};
use schema::{Header, Message, Route};
use support::{TestHub, downstream, edge_config, key, pki, wait_for};

fn device_status(i: u64) -> Message {
    let content = format!(
        r#"{{"twins":[{{"propertyName":"temperature","reported":{{"value":"{i}","metadata":{{"timestamp":"{i}"}}}}}}]}}"#
    );
    Message {
        header: Header {
            id: format!("twin-{i}"),
            ..Header::default()
        },
        route: Route {
            source: "twin".into(),
            group: "twin".into(),
            operation: "update".into(),
            resource: "default/devicestatus/thermometer".into(),
            ..Route::default()
        },
        content: content.into_bytes(),
    }
}

#[test]
fn offline_upstream_is_kept_and_sent_when_the_cloud_returns() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(&dir.path().join("pki"));
    // The cloud is down: its address accepts TCP and hangs up at once.
    let down = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let cloud = down.local_addr().unwrap().to_string();
    let config = EdgeConfig::load(&edge_config(dir.path(), &pki, &cloud)).unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<Upstream>();
    let devices = Arc::new(AtomicUsize::new(0));
    let seen = devices.clone();
    std::thread::spawn(move || {
        let hooks = EdgeHooks {
            on_change: vec![Box::new(move |changes| {
                let n = changes
                    .iter()
                    .filter(|c| c.object.key.kind == "device")
                    .count();
                seen.fetch_add(n, Ordering::SeqCst);
            })],
            on_start: Some(Box::new(move |up| tx.send(up).unwrap())),
        };
        daemon::run(config, hooks).unwrap();
    });
    let upstream = rx.recv().unwrap();
    for i in 1..=20 {
        assert!(upstream.send(vec![device_status(i)]));
    }
    // Two failed attempts: the messages were queued while offline.
    for _ in 0..2 {
        drop(down.accept().unwrap());
    }
    drop(down);

    let hub = TestHub::start(&pki, &cloud);
    let twins = || -> Vec<String> {
        hub.seen
            .lock()
            .unwrap()
            .upstream
            .iter()
            .filter(|m| m.route.resource == "default/devicestatus/thermometer")
            .map(|m| m.header.id.clone())
            .collect()
    };
    wait_for(60, "the queued twin reports upstream", || {
        twins().len() >= 20
    });
    let expected: Vec<String> = (1..=20).map(|i| format!("twin-{i}")).collect();
    assert_eq!(twins(), expected);

    let k = key("device", "default", "thermometer");
    let device = r#"{"apiVersion":"devices.kubeedge.io/v1beta1","kind":"Device","metadata":{"name":"thermometer","namespace":"default"}}"#;
    hub.send(k.clone(), downstream("insert", &k, 3, device.to_owned()));
    wait_for(30, "the device change hook", || {
        devices.load(Ordering::SeqCst) == 1
    });
}

/// Another thread (Edged's) hands messages to the daemon: each must wake it
/// at once, not wait for the daemon's next timer. The timers here are set
/// ten minutes out, so a lost wake-up leaves the message unsent.
#[test]
fn upstream_from_another_thread_wakes_the_daemon_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(&dir.path().join("pki"));
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let cloud = port.local_addr().unwrap().to_string();
    drop(port);
    let hub = TestHub::start(&pki, &cloud);
    let path = edge_config(dir.path(), &pki, &cloud);
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("heartbeat = 2", "heartbeat = 600")
        .replace(
            "nodeStatusUpdateFrequency = 1",
            "nodeStatusUpdateFrequency = 600",
        );
    std::fs::write(&path, text).unwrap();
    let config = EdgeConfig::load(&path).unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<Upstream>();
    std::thread::spawn(move || {
        let hooks = EdgeHooks {
            on_change: Vec::new(),
            on_start: Some(Box::new(move |up| tx.send(up).unwrap())),
        };
        daemon::run(config, hooks).unwrap();
    });
    let upstream = rx.recv().unwrap();
    let seen = |id: &str| {
        hub.seen
            .lock()
            .unwrap()
            .upstream
            .iter()
            .any(|m| m.header.id == id)
    };
    // The first node status says the link is up and the daemon idle.
    wait_for(30, "the first node status", || {
        hub.seen
            .lock()
            .unwrap()
            .upstream
            .iter()
            .any(|m| m.route.resource.contains("nodestatus"))
    });
    for i in 1..=5 {
        let start = std::time::Instant::now();
        assert!(upstream.send(vec![device_status(i)]));
        wait_for(5, "the message handed over from another thread", || {
            seen(&format!("twin-{i}"))
        });
        eprintln!("message {i} reached the cloud in {:?}", start.elapsed());
    }
}
