//! Unit tests of the sans-IO broker: clients are mqtt-proto packets, time is
//! a number.

use bytes::Bytes;
use mqtt_proto::{Pid, QoS, QosPid, TopicFilter, TopicName, v3, v5};

use super::{Broker, BrokerConfig, ConnId};

fn enc3(p: v3::Packet) -> Vec<u8> {
    p.encode().unwrap().as_ref().to_vec()
}

fn connect3(
    b: &mut Broker,
    id: u64,
    client: &str,
    clean: bool,
    keep_alive: u16,
    now: u64,
) -> Vec<v3::Packet> {
    assert!(b.handle_connect(ConnId(id), now));
    let mut c = v3::Connect::new(client.into(), keep_alive);
    c.clean_session = clean;
    b.handle_bytes(ConnId(id), &enc3(v3::Packet::Connect(c)), now);
    drain3(b, id)
}

fn pid(n: u16) -> Pid {
    Pid::try_from(n).unwrap()
}

fn subscribe3(b: &mut Broker, id: u64, filter: &str, qos: QoS) -> Vec<v3::Packet> {
    let s = v3::Subscribe::new(pid(1), vec![(TopicFilter::try_from(filter).unwrap(), qos)]);
    b.handle_bytes(ConnId(id), &enc3(v3::Packet::Subscribe(s)), 0);
    drain3(b, id)
}

fn publish3(b: &mut Broker, id: u64, topic: &str, qos: QosPid, payload: &str) {
    let p = v3::Publish::new(
        qos,
        TopicName::try_from(topic).unwrap(),
        Bytes::copy_from_slice(payload.as_bytes()),
    );
    b.handle_bytes(ConnId(id), &enc3(v3::Packet::Publish(p)), 0);
}

/// Every packet sent to `id` (acknowledging each write), others discarded.
fn drain3(b: &mut Broker, id: u64) -> Vec<v3::Packet> {
    let mut out = Vec::new();
    while let Some(t) = b.poll_transmit() {
        b.handle_sent(t.conn);
        if t.conn != ConnId(id) {
            continue;
        }
        let mut rest = &t.bytes[..];
        while !rest.is_empty() {
            let p = v3::Packet::decode(rest).unwrap().unwrap();
            rest = &rest[p.encode_len().unwrap()..];
            out.push(p);
        }
    }
    out
}

fn publishes(pkts: &[v3::Packet]) -> Vec<&v3::Publish> {
    pkts.iter()
        .filter_map(|p| {
            if let v3::Packet::Publish(p) = p {
                Some(p)
            } else {
                None
            }
        })
        .collect()
}

#[test]
fn connack_then_qos1_roundtrip_on_hw_topic() {
    let mut b = Broker::new(BrokerConfig::default());
    let ack = connect3(&mut b, 1, "sub", true, 30, 0);
    assert_eq!(
        ack,
        vec![v3::Packet::Connack(v3::Connack::new(
            false,
            v3::ConnectReturnCode::Accepted
        ))]
    );
    subscribe3(
        &mut b,
        1,
        "$hw/events/device/+/twin/update/delta",
        QoS::Level1,
    );
    connect3(&mut b, 2, "pub", true, 30, 0);
    publish3(
        &mut b,
        2,
        "$hw/events/device/d1/twin/update/delta",
        QosPid::Level1(pid(7)),
        "x",
    );
    let mut got = Vec::new();
    let mut acked = false;
    while let Some(t) = b.poll_transmit() {
        b.handle_sent(t.conn);
        let p = v3::Packet::decode(&t.bytes).unwrap().unwrap();
        match (t.conn, p) {
            (ConnId(2), v3::Packet::Puback(p)) => acked = p == pid(7),
            (ConnId(1), v3::Packet::Publish(p)) => got.push(p),
            _ => {}
        }
    }
    assert!(acked);
    assert_eq!(got.len(), 1);
    assert_eq!(
        &*got[0].topic_name,
        "$hw/events/device/d1/twin/update/delta"
    );
    assert_eq!(got[0].qos_pid.qos(), QoS::Level1);
}

#[test]
fn wildcard_at_first_level_skips_dollar_topics_and_edge_gets_its_topics() {
    let mut b = Broker::new(BrokerConfig::default());
    connect3(&mut b, 1, "all", true, 30, 0);
    subscribe3(&mut b, 1, "#", QoS::Level0);
    connect3(&mut b, 2, "dev", true, 30, 0);
    publish3(
        &mut b,
        2,
        "$hw/events/device/d1/twin/update",
        QosPid::Level0,
        "{}",
    );
    assert!(publishes(&drain3(&mut b, 1)).is_empty());
    let local = b.poll_local().expect("edge gets its topic");
    assert_eq!(local.topic, "$hw/events/device/d1/twin/update");
    publish3(&mut b, 2, "plain", QosPid::Level0, "p");
    assert_eq!(publishes(&drain3(&mut b, 1)).len(), 1);
    assert!(b.poll_local().is_none());
}

#[test]
fn unacked_qos1_is_resent_with_dup_on_persistent_reconnect() {
    let mut b = Broker::new(BrokerConfig::default());
    connect3(&mut b, 1, "keeper", false, 30, 0);
    subscribe3(&mut b, 1, "t/#", QoS::Level1);
    connect3(&mut b, 2, "pub", true, 30, 0);
    publish3(&mut b, 2, "t/a", QosPid::Level1(pid(1)), "a");
    let first = drain3(&mut b, 1);
    assert_eq!(publishes(&first).len(), 1);
    assert!(!publishes(&first)[0].dup);
    b.handle_disconnect(ConnId(1), 10); // no PUBACK was sent
    publish3(&mut b, 2, "t/b", QosPid::Level1(pid(2)), "b");
    let again = connect3(&mut b, 3, "keeper", false, 30, 20);
    assert_eq!(
        again[0],
        v3::Packet::Connack(v3::Connack::new(true, v3::ConnectReturnCode::Accepted))
    );
    let p = publishes(&again);
    assert_eq!(p.len(), 2);
    assert_eq!((&*p[0].topic_name, p[0].dup), ("t/a", true));
    assert_eq!((&*p[1].topic_name, p[1].dup), ("t/b", false));
    // Acked now: a further reconnect resends nothing.
    for q in &p {
        let ack = v3::Packet::Puback(q.qos_pid.pid().unwrap());
        b.handle_bytes(ConnId(3), &enc3(ack), 30);
    }
    b.handle_disconnect(ConnId(3), 40);
    assert!(publishes(&connect3(&mut b, 4, "keeper", false, 30, 50)).is_empty());
}

#[test]
fn full_queue_drops_oldest_qos0_then_refuses_qos1() {
    let cfg = BrokerConfig {
        max_queued_messages: 3,
        ..BrokerConfig::default()
    };
    let mut b = Broker::new(cfg);
    connect3(&mut b, 1, "slow", true, 30, 0);
    subscribe3(&mut b, 1, "t", QoS::Level1);
    connect3(&mut b, 2, "pub", true, 30, 0);
    publish3(&mut b, 2, "t", QosPid::Level0, "0");
    // The slow client's first write never completes: later messages queue.
    let t = std::iter::from_fn(|| b.poll_transmit())
        .find(|t| t.conn == ConnId(1))
        .expect("first publish");
    for i in 1..=4 {
        publish3(&mut b, 2, "t", QosPid::Level0, &i.to_string());
    }
    assert_eq!(b.stats().dropped_messages, 1);
    for i in 5..=8 {
        publish3(&mut b, 2, "t", QosPid::Level1(pid(i)), &i.to_string());
    }
    b.handle_sent(t.conn);
    let got: Vec<String> = publishes(&drain3(&mut b, 1))
        .iter()
        .map(|p| String::from_utf8_lossy(&p.payload).into_owned())
        .collect();
    assert_eq!(got, ["5", "6", "7"]);
    assert_eq!(b.stats().dropped_messages, 1 + 3 + 1);
}

#[test]
fn silence_past_one_and_a_half_keepalive_closes_and_sends_will() {
    let mut b = Broker::new(BrokerConfig::default());
    connect3(&mut b, 1, "watch", true, 30, 0);
    subscribe3(&mut b, 1, "will/#", QoS::Level0);
    assert!(b.handle_connect(ConnId(2), 0));
    let mut c = v3::Connect::new("mortal".into(), 10);
    c.last_will = Some(v3::LastWill::new(
        QoS::Level0,
        TopicName::try_from("will/x").unwrap(),
        Bytes::from_static(b"bye"),
    ));
    b.handle_bytes(ConnId(2), &enc3(v3::Packet::Connect(c)), 1000);
    drain3(&mut b, 2);
    assert_eq!(b.poll_timeout(), Some(16_000));
    b.handle_timeout(15_999);
    assert!(drain3(&mut b, 1).is_empty());
    b.handle_timeout(16_000);
    let mut closed = false;
    let mut will = false;
    while let Some(t) = b.poll_transmit() {
        b.handle_sent(t.conn);
        closed |= t.conn == ConnId(2) && t.close;
        will |= t.conn == ConnId(1) && t.bytes.windows(3).any(|w| w == b"bye");
    }
    assert!(closed && will);
    assert_eq!(b.stats().keepalive_timeouts, 1);
}

#[test]
fn oversized_declaration_closes_before_the_body_arrives() {
    let cfg = BrokerConfig {
        max_packet_size: 1024,
        ..BrokerConfig::default()
    };
    let mut b = Broker::new(cfg);
    connect3(&mut b, 1, "big", true, 30, 0);
    // PUBLISH declaring 268 MB: only the header is sent.
    b.handle_bytes(ConnId(1), &[0x30, 0xff, 0xff, 0xff, 0x7f], 0);
    let t = b.poll_transmit().expect("close");
    assert!(t.close);
    assert_eq!(b.stats().closed_oversize, 1);
    // A packet just under the limit is fine for another client.
    connect3(&mut b, 2, "ok", true, 30, 0);
    publish3(&mut b, 2, "t", QosPid::Level1(pid(1)), &"x".repeat(1000));
    assert!(matches!(drain3(&mut b, 2)[..], [v3::Packet::Puback(_)]));
}

#[test]
fn v5_client_connects_subscribes_and_receives_retained() {
    let mut b = Broker::new(BrokerConfig::default());
    connect3(&mut b, 1, "pub", true, 30, 0);
    let p = v3::Publish {
        retain: true,
        ..v3::Publish::new(
            QosPid::Level0,
            TopicName::try_from("$hw/r").unwrap(),
            Bytes::from_static(b"kept"),
        )
    };
    b.handle_bytes(ConnId(1), &enc3(v3::Packet::Publish(p)), 0);
    assert!(b.handle_connect(ConnId(2), 0));
    let c = v5::Packet::Connect(v5::Connect::new("five".into(), 30));
    b.handle_bytes(ConnId(2), c.encode().unwrap().as_ref(), 0);
    let s = v5::Subscribe::new(
        pid(3),
        vec![(
            TopicFilter::try_from("$hw/+").unwrap(),
            v5::SubscriptionOptions::new(QoS::Level1),
        )],
    );
    b.handle_bytes(
        ConnId(2),
        v5::Packet::Subscribe(s).encode().unwrap().as_ref(),
        0,
    );
    let mut pkts = Vec::new();
    while let Some(t) = b.poll_transmit() {
        b.handle_sent(t.conn);
        let mut rest = &t.bytes[..];
        while t.conn == ConnId(2) && !rest.is_empty() {
            let p = v5::Packet::decode(rest).unwrap().unwrap();
            rest = &rest[p.encode_len().unwrap()..];
            pkts.push(p);
        }
    }
    assert!(
        matches!(&pkts[0], v5::Packet::Connack(c) if c.reason_code == v5::ConnectReasonCode::Success)
    );
    assert!(
        matches!(&pkts[1], v5::Packet::Suback(s) if s.topics == [v5::SubscribeReasonCode::GrantedQoS1])
    );
    assert!(matches!(&pkts[2], v5::Packet::Publish(p) if p.retain && &p.payload[..] == b"kept"));
}

#[test]
fn publish_local_reaches_clients_and_checks_its_topic() {
    let mut b = Broker::new(BrokerConfig::default());
    connect3(&mut b, 1, "dev", true, 30, 0);
    subscribe3(
        &mut b,
        1,
        "$hw/events/device/d1/twin/update/delta",
        QoS::Level1,
    );
    b.publish_local(
        "$hw/events/device/d1/twin/update/delta",
        &b"{}"[..],
        1,
        false,
    )
    .unwrap();
    let got = drain3(&mut b, 1);
    assert_eq!(publishes(&got).len(), 1);
    assert!(b.poll_local().is_none(), "the edge does not hear itself");
    assert!(b.publish_local("a/+/b", &b""[..], 0, false).is_err());
    assert!(b.publish_local("a", &b""[..], 2, false).is_err());
}

#[test]
fn fuzz_bytes_smoke() {
    super::fuzz_bytes(&[]);
    super::fuzz_bytes(&[1, 3, 0x30, 0x03, 0x00, 0x01, b'a']);
    super::fuzz_bytes(&[2, 1, 0xe0, 0x00]);
}

#[test]
fn byte_limits_bound_queues_and_retained_store() {
    let cfg = BrokerConfig {
        max_queued_bytes: 2000,
        max_retained_bytes: 1500,
        ..BrokerConfig::default()
    };
    let mut b = Broker::new(cfg);
    connect3(&mut b, 1, "slow", true, 30, 0);
    subscribe3(&mut b, 1, "t", QoS::Level1);
    connect3(&mut b, 2, "pub", true, 30, 0);
    publish3(&mut b, 2, "t", QosPid::Level0, "first");
    let t = std::iter::from_fn(|| b.poll_transmit())
        .find(|t| t.conn == ConnId(1))
        .expect("first");
    for i in 0..5u16 {
        publish3(&mut b, 2, "t", QosPid::Level1(pid(i + 1)), &"x".repeat(900));
    }
    b.handle_sent(t.conn);
    // 2000 bytes hold two 901-byte messages; the other three were refused.
    assert_eq!(publishes(&drain3(&mut b, 1)).len(), 2);
    assert_eq!(b.stats().dropped_messages, 3);

    for topic in ["r/1", "r/2"] {
        let p = v3::Publish {
            retain: true,
            ..v3::Publish::new(
                QosPid::Level0,
                TopicName::try_from(topic).unwrap(),
                Bytes::from(vec![b'r'; 1000]),
            )
        };
        b.handle_bytes(ConnId(2), &enc3(v3::Packet::Publish(p)), 0);
    }
    assert_eq!(
        b.stats().retained,
        1,
        "the second retained message is over the byte limit"
    );
}

#[test]
fn upload_topics_reach_the_edge() {
    let mut b = Broker::new(BrokerConfig::default());
    connect3(&mut b, 1, "gw", true, 30, 0);
    publish3(
        &mut b,
        1,
        "$hw/events/upload/records",
        QosPid::Level1(pid(1)),
        "r",
    );
    let m = b.poll_local().expect("local");
    assert_eq!(m.topic, "$hw/events/upload/records");
}
