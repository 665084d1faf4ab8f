//! The embedded broker on monoio (in a thread) against a real MQTT client
//! (rumqttc) and raw sockets.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use edge_core::broker::{Broker, BrokerConfig, BrokerHandle, User, serve};
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, LastWill, MqttOptions,
    Packet, Publish, QoS,
};

const WAIT: Duration = Duration::from_secs(10);

fn start(cfg: BrokerConfig) -> SocketAddr {
    start_with(cfg, false)
}

/// The broker on a monoio thread: io_uring with fallback (`FusionDriver`),
/// or the epoll driver alone (`legacy`), as on kernels without io_uring.
fn start_with(cfg: BrokerConfig, legacy: bool) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    // monoio's epoll driver needs a non-blocking socket.
    listener.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        let run = async move {
            let listener = monoio::net::TcpListener::from_std(listener).expect("listener");
            serve(listener, BrokerHandle::new(Broker::new(cfg))).await
        };
        if legacy {
            let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                .enable_timer()
                .build()
                .expect("runtime");
            rt.block_on(run)
        } else {
            let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
                .enable_timer()
                .build()
                .expect("runtime");
            rt.block_on(run)
        }
    });
    addr
}

fn opts(addr: SocketAddr, id: &str) -> MqttOptions {
    let mut o = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    o.set_keep_alive(Duration::from_secs(30));
    o
}

/// Connects and waits for the CONNACK; the error if the broker refuses.
async fn connect(o: MqttOptions) -> Result<(AsyncClient, EventLoop, bool), ConnectionError> {
    let (c, mut el) = AsyncClient::new(o, 100);
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(Instant::now() < deadline, "no CONNACK");
        if let Event::Incoming(Packet::ConnAck(a)) = el.poll().await? {
            return Ok((c, el, a.session_present));
        }
    }
}

/// Polls until `f` picks an event; panics after the deadline.
async fn until<T>(el: &mut EventLoop, mut f: impl FnMut(&Packet) -> Option<T>) -> T {
    tokio::time::timeout(WAIT, async {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(p)) => {
                    if let Some(t) = f(&p) {
                        return t;
                    }
                }
                Ok(_) => {}
                Err(e) => panic!("connection failed: {e}"),
            }
        }
    })
    .await
    .expect("event in time")
}

async fn publish_of(el: &mut EventLoop) -> Publish {
    until(el, |p| match p {
        Packet::Publish(p) => Some(p.clone()),
        _ => None,
    })
    .await
}

async fn subscribe(c: &AsyncClient, el: &mut EventLoop, filter: &str, qos: QoS) {
    c.subscribe(filter, qos).await.expect("subscribe");
    until(el, |p| matches!(p, Packet::SubAck(_)).then_some(())).await;
}

/// Keeps polling an event loop in the background (for publishers).
fn drive(mut el: EventLoop) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move { while el.poll().await.is_ok() {} })
}

#[tokio::test]
async fn hw_topics_qos0_and_qos1() {
    let addr = start(BrokerConfig::default());
    let (sub, mut sub_el, _) = connect(opts(addr, "sub")).await.unwrap();
    subscribe(
        &sub,
        &mut sub_el,
        "$hw/events/device/+/twin/update/delta",
        QoS::AtLeastOnce,
    )
    .await;
    let (all, mut all_el, _) = connect(opts(addr, "all")).await.unwrap();
    subscribe(&all, &mut all_el, "#", QoS::AtLeastOnce).await;
    let (publ, publ_el, _) = connect(opts(addr, "pub")).await.unwrap();
    let _d = drive(publ_el);

    publ.publish(
        "$hw/events/device/d1/twin/update/delta",
        QoS::AtLeastOnce,
        false,
        "one",
    )
    .await
    .unwrap();
    let p = publish_of(&mut sub_el).await;
    assert_eq!(p.topic, "$hw/events/device/d1/twin/update/delta");
    assert_eq!(&p.payload[..], b"one");
    assert_eq!(p.qos, QoS::AtLeastOnce);
    publ.publish(
        "$hw/events/device/d2/twin/update/delta",
        QoS::AtMostOnce,
        false,
        "two",
    )
    .await
    .unwrap();
    let p = publish_of(&mut sub_el).await;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..], p.qos),
        (
            "$hw/events/device/d2/twin/update/delta",
            &b"two"[..],
            QoS::AtMostOnce
        )
    );

    // `#` does not match `$` topics: the first thing "all" sees is the plain one.
    publ.publish("plain/topic", QoS::AtMostOnce, false, "three")
        .await
        .unwrap();
    let p = publish_of(&mut all_el).await;
    assert_eq!(p.topic, "plain/topic");
}

#[tokio::test]
async fn retained_message_reaches_later_subscriber() {
    let addr = start(BrokerConfig::default());
    let (publ, mut publ_el, _) = connect(opts(addr, "pub")).await.unwrap();
    publ.publish(
        "$hw/events/device/d1/state",
        QoS::AtLeastOnce,
        true,
        "online",
    )
    .await
    .unwrap();
    until(&mut publ_el, |p| {
        matches!(p, Packet::PubAck(_)).then_some(())
    })
    .await;
    let (sub, mut sub_el, _) = connect(opts(addr, "sub")).await.unwrap();
    sub.subscribe("$hw/events/device/+/state", QoS::AtLeastOnce)
        .await
        .unwrap();
    let p = publish_of(&mut sub_el).await;
    assert!(p.retain);
    assert_eq!(&p.payload[..], b"online");
}

#[tokio::test]
async fn last_will_on_abrupt_disconnect() {
    let addr = start(BrokerConfig::default());
    let (sub, mut sub_el, _) = connect(opts(addr, "watcher")).await.unwrap();
    subscribe(
        &sub,
        &mut sub_el,
        "$hw/events/device/+/will",
        QoS::AtLeastOnce,
    )
    .await;
    let mut o = opts(addr, "dying");
    o.set_last_will(LastWill::new(
        "$hw/events/device/d9/will",
        "gone",
        QoS::AtLeastOnce,
        false,
    ));
    let (c, el, _) = connect(o).await.unwrap();
    drop(el); // the socket closes without DISCONNECT
    drop(c);
    let p = publish_of(&mut sub_el).await;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..]),
        ("$hw/events/device/d9/will", &b"gone"[..])
    );
}

#[tokio::test]
async fn clean_disconnect_sends_no_will() {
    let addr = start(BrokerConfig::default());
    let (sub, mut sub_el, _) = connect(opts(addr, "watcher")).await.unwrap();
    subscribe(&sub, &mut sub_el, "w/#", QoS::AtLeastOnce).await;
    let mut o = opts(addr, "polite");
    o.set_last_will(LastWill::new("w/polite", "gone", QoS::AtLeastOnce, false));
    let (c, mut el, _) = connect(o).await.unwrap();
    c.disconnect().await.unwrap();
    while el.poll().await.is_ok() {}
    // The marker is the first message: no will came before it.
    let (pp, pel, _) = connect(opts(addr, "p3")).await.unwrap();
    let _d = drive(pel);
    pp.publish("w/marker", QoS::AtLeastOnce, false, "m")
        .await
        .unwrap();
    let first = publish_of(&mut sub_el).await;
    assert_eq!(first.topic, "w/marker");
}

fn raw_connect(addr: SocketAddr, keep_alive: u16) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let ka = keep_alive.to_be_bytes();
    s.write_all(&[
        0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, ka[0], ka[1], 0, 2, b'r', b'1',
    ])
    .unwrap();
    let mut connack = [0u8; 4];
    s.read_exact(&mut connack).unwrap();
    assert_eq!(connack, [0x20, 2, 0, 0]);
    s
}

/// Reads until EOF (or a reset); panics if the socket stays open.
fn assert_closed(s: &mut TcpStream) {
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                panic!("socket still open")
            }
            Err(_) => return,
        }
    }
}

#[test]
fn keepalive_timeout_closes_silent_client() {
    let addr = start(BrokerConfig::default());
    let mut s = raw_connect(addr, 1);
    let t0 = Instant::now();
    assert_closed(&mut s);
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(1400),
        "closed too early: {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(5),
        "closed too late: {waited:?}"
    );
}

#[tokio::test]
async fn persistent_session_gets_messages_sent_while_offline() {
    let addr = start(BrokerConfig::default());
    let mut o = opts(addr, "keeper");
    o.set_clean_session(false);
    let (c, mut el, present) = connect(o.clone()).await.unwrap();
    assert!(!present);
    subscribe(&c, &mut el, "$hw/events/upload/#", QoS::AtLeastOnce).await;
    c.disconnect().await.unwrap();
    while el.poll().await.is_ok() {}

    let (publ, mut publ_el, _) = connect(opts(addr, "pub")).await.unwrap();
    for i in 0..3 {
        publ.publish(
            format!("$hw/events/upload/m{i}"),
            QoS::AtLeastOnce,
            false,
            "x",
        )
        .await
        .unwrap();
    }
    let mut acks = 0;
    while acks < 3 {
        until(&mut publ_el, |p| {
            matches!(p, Packet::PubAck(_)).then_some(())
        })
        .await;
        acks += 1;
    }
    let (_c, mut el, present) = connect(o).await.unwrap();
    assert!(present, "session present after reconnect");
    for i in 0..3 {
        let p = publish_of(&mut el).await;
        assert_eq!(p.topic, format!("$hw/events/upload/m{i}"));
    }
}

#[tokio::test]
async fn wrong_password_is_refused() {
    let users = vec![User {
        username: "dev".into(),
        password: "s3cret".into(),
    }];
    let addr = start(BrokerConfig {
        users,
        ..BrokerConfig::default()
    });
    let mut o = opts(addr, "intruder");
    o.set_credentials("dev", "guess");
    match connect(o).await {
        Err(ConnectionError::ConnectionRefused(code)) => {
            assert_eq!(code, ConnectReturnCode::BadUserNamePassword)
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("accepted a wrong password"),
    }
    assert!(
        connect(opts(addr, "anonymous")).await.is_err(),
        "anonymous accepted"
    );
    let mut o = opts(addr, "friend");
    o.set_credentials("dev", "s3cret");
    assert!(connect(o).await.is_ok());
}

#[tokio::test]
async fn garbage_and_oversized_close_only_their_client() {
    let cfg = BrokerConfig {
        max_packet_size: 64 * 1024,
        ..BrokerConfig::default()
    };
    let addr = start(cfg);
    let (sub, mut sub_el, _) = connect(opts(addr, "good")).await.unwrap();
    subscribe(&sub, &mut sub_el, "ok/#", QoS::AtLeastOnce).await;

    let mut garbage = TcpStream::connect(addr).unwrap();
    garbage.set_read_timeout(Some(WAIT)).unwrap();
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_closed(&mut garbage);

    // Connected, then declares a 200 MB publish: closed without the broker
    // waiting for (or allocating) the body.
    let mut big = raw_connect(addr, 30);
    big.write_all(&[0x30, 0xff, 0xff, 0xff, 0x7f, 0, 1, b'x'])
        .unwrap();
    assert_closed(&mut big);

    // Garbage after a good CONNECT.
    let mut late = raw_connect(addr, 30);
    late.write_all(&[0xf0, 0x00, 0x13, 0x37]).unwrap();
    assert_closed(&mut late);

    let (p, pel, _) = connect(opts(addr, "publisher")).await.unwrap();
    let _d = drive(pel);
    p.publish("ok/still", QoS::AtLeastOnce, false, "alive")
        .await
        .unwrap();
    let got = publish_of(&mut sub_el).await;
    assert_eq!(&got.payload[..], b"alive");
}

#[tokio::test]
async fn client_limit_refuses_the_extra_client() {
    let addr = start(BrokerConfig {
        max_clients: 2,
        ..BrokerConfig::default()
    });
    let (_a, ael, _) = connect(opts(addr, "a")).await.unwrap();
    let _da = drive(ael);
    let (_b, bel, _) = connect(opts(addr, "b")).await.unwrap();
    let _db = drive(bel);
    match connect(opts(addr, "c")).await {
        Err(ConnectionError::ConnectionRefused(code)) => {
            assert_eq!(code, ConnectReturnCode::ServiceUnavailable)
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("third client accepted"),
    }
}

#[tokio::test]
async fn mqtt5_client_subscribes_and_publishes_on_hw_topic() {
    use rumqttc::v5::mqttbytes::QoS as Qos5;
    use rumqttc::v5::mqttbytes::v5::Packet as Packet5;
    use rumqttc::v5::{AsyncClient as Client5, Event as Event5, MqttOptions as Options5};
    let addr = start(BrokerConfig::default());
    let (c, mut el) = Client5::new(
        Options5::new("five", addr.ip().to_string(), addr.port()),
        10,
    );
    c.subscribe("$hw/events/device/+/state/update", Qos5::AtLeastOnce)
        .await
        .unwrap();
    c.publish(
        "$hw/events/device/d5/state/update",
        Qos5::AtLeastOnce,
        false,
        "on",
    )
    .await
    .unwrap();
    let p = tokio::time::timeout(WAIT, async {
        loop {
            match el.poll().await {
                Ok(Event5::Incoming(Packet5::Publish(p))) => return p,
                Ok(_) => {}
                Err(e) => panic!("MQTT 5 connection failed: {e}"),
            }
        }
    })
    .await
    .expect("publish in time");
    assert_eq!(&p.topic[..], b"$hw/events/device/d5/state/update");
    assert_eq!(&p.payload[..], b"on");
    assert_eq!(p.qos, Qos5::AtLeastOnce);
}

#[tokio::test]
async fn unacknowledged_qos1_comes_again_after_reconnect() {
    let addr = start(BrokerConfig::default());
    let mut o = opts(addr, "forgetful");
    o.set_clean_session(false);
    o.set_manual_acks(true);
    let (c, mut el, _) = connect(o.clone()).await.unwrap();
    subscribe(
        &c,
        &mut el,
        "$hw/events/device/+/twin/update/delta",
        QoS::AtLeastOnce,
    )
    .await;
    let (publ, publ_el, _) = connect(opts(addr, "pub")).await.unwrap();
    let _d = drive(publ_el);
    publ.publish(
        "$hw/events/device/d1/twin/update/delta",
        QoS::AtLeastOnce,
        false,
        "once",
    )
    .await
    .unwrap();
    let first = publish_of(&mut el).await;
    assert!(!first.dup);
    drop(el); // gone without PUBACK
    drop(c);
    let (_c, mut el, present) = connect(o).await.unwrap();
    assert!(present);
    let again = publish_of(&mut el).await;
    assert_eq!((&again.payload[..], again.dup), (&b"once"[..], true));
}

#[tokio::test]
async fn legacy_driver_serves_and_closes_silent_clients() {
    let addr = start_with(BrokerConfig::default(), true);
    let (sub, mut sub_el, _) = connect(opts(addr, "sub")).await.unwrap();
    subscribe(&sub, &mut sub_el, "$hw/events/upload/#", QoS::AtLeastOnce).await;
    let (p, pel, _) = connect(opts(addr, "pub")).await.unwrap();
    let _d = drive(pel);
    p.publish("$hw/events/upload/x", QoS::AtLeastOnce, false, "legacy")
        .await
        .unwrap();
    assert_eq!(&publish_of(&mut sub_el).await.payload[..], b"legacy");
    let closed = tokio::task::spawn_blocking(move || {
        let mut s = raw_connect(addr, 1);
        assert_closed(&mut s);
    });
    closed.await.unwrap();
}

#[tokio::test]
async fn a_client_that_never_reads_does_not_stall_the_others() {
    let addr = start(BrokerConfig::default());
    // Subscribes, then never reads: its socket buffers fill, its queue
    // reaches the bound and drops.
    let stuck = tokio::task::spawn_blocking(move || {
        let mut s = raw_connect(addr, 0);
        s.write_all(&[
            0x82, 12, 0, 1, 0, 7, b'f', b'l', b'o', b'o', b'd', b'/', b'#', 0,
        ])
        .unwrap();
        let mut suback = [0u8; 5];
        s.read_exact(&mut suback).unwrap();
        s
    })
    .await
    .unwrap();
    let big = |id: &str| {
        let mut o = opts(addr, id);
        o.set_max_packet_size(1 << 20, 1 << 20);
        o
    };
    let (sub, mut sub_el, _) = connect(big("reader")).await.unwrap();
    subscribe(&sub, &mut sub_el, "flood/#", QoS::AtLeastOnce).await;
    let (p, pel, _) = connect(big("flooder")).await.unwrap();
    let _d = drive(pel);
    // 25 MB in all: far more than the stuck client's socket buffers and its
    // 1 MiB queue bound. The reader gets each message before the next is sent.
    let payload = vec![b'f'; 32 * 1024];
    for i in 0..800 {
        p.publish("flood/x", QoS::AtLeastOnce, false, payload.clone())
            .await
            .unwrap();
        let got = publish_of(&mut sub_el).await;
        assert_eq!(got.payload.len(), payload.len(), "message {i}");
    }
    drop(stuck);
}
