//! The hub driven by hand-made edge frames: handshake, close reasons, the
//! byte budget, replacement, resume and windowed delivery.

use super::*;
use schema::frames::Hello;
use schema::{Header, Route};

/// What the hub sent, decoded and owned.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Got {
    Welcome {
        resume_seq: u64,
        window: u32,
    },
    Batch(Vec<Message>),
    Ack(u64),
    Keepalive,
    Close {
        reason: CloseReason,
        retry_after_ms: u32,
    },
}

/// A scripted edge node on one connection.
struct Edge {
    conn: ConnId,
    encoder: FrameEncoder,
    decoder: FrameDecoder,
    /// Sent in `Hello`.
    store_id: u64,
}

impl Edge {
    fn new(conn: ConnId) -> Self {
        Self {
            conn,
            encoder: FrameEncoder::default(),
            decoder: FrameDecoder::default(),
            store_id: 0,
        }
    }

    fn hello(&mut self, hub: &mut Hub, node: &str, resume_seq: u64, now: Millis) {
        let mut out = Vec::new();
        let hello = Hello {
            node_id: node,
            protocol_version: PROTOCOL_VERSION,
            resume_seq,
            capabilities: CAPABILITIES,
            received_seq: resume_seq,
            store_id: self.store_id,
        };
        self.encoder.hello(&hello, &mut out).unwrap();
        hub.handle_bytes(self.conn, &out, now);
    }

    fn ack(&mut self, hub: &mut Hub, seq: u64, now: Millis) {
        let mut out = Vec::new();
        self.encoder.ack(seq, &mut out).unwrap();
        hub.handle_bytes(self.conn, &out, now);
    }

    fn send(&mut self, hub: &mut Hub, messages: &[Message], now: Millis) {
        let mut out = Vec::new();
        self.encoder
            .batch(messages.iter().map(Message::as_ref), &mut out)
            .unwrap();
        hub.handle_bytes(self.conn, &out, now);
    }

    fn keepalive(&mut self, hub: &mut Hub, now: Millis) {
        let mut out = Vec::new();
        self.encoder.keepalive(now, &mut out).unwrap();
        hub.handle_bytes(self.conn, &out, now);
    }

    fn decode(&mut self, bytes: &[u8]) -> Vec<Got> {
        self.decoder.handle_bytes(bytes);
        let mut got = Vec::new();
        while let Some(frame) = self.decoder.poll_frame().unwrap() {
            got.push(match frame {
                FrameView::Welcome(w) => Got::Welcome {
                    resume_seq: w.resume_seq(),
                    window: w.window(),
                },
                FrameView::Batch(_) => Got::Batch(frame.messages().map(|m| m.to_owned()).collect()),
                FrameView::Ack(a) => Got::Ack(a.seq()),
                FrameView::Keepalive(_) => Got::Keepalive,
                FrameView::Close(c) => Got::Close {
                    reason: c.reason(),
                    retry_after_ms: c.retry_after_ms(),
                },
                FrameView::Hello(_) => panic!("the hub never sends Hello"),
            });
        }
        got
    }
}

/// Everything the hub transmits now, per connection, decoded.
fn drain(hub: &mut Hub, edges: &mut [&mut Edge], now: Millis) -> Vec<(ConnId, Vec<Got>, bool)> {
    let mut out = Vec::new();
    while let Some((conn, t)) = hub.poll_transmit(now) {
        // Connections the test holds no edge for are closed ones.
        let got = match edges.iter_mut().find(|e| e.conn == conn) {
            Some(edge) => edge.decode(&t.bytes),
            None => Vec::new(),
        };
        out.push((conn, got, t.close));
    }
    out
}

fn events(hub: &mut Hub) -> Vec<HubEvent> {
    std::iter::from_fn(|| hub.poll_event()).collect()
}

fn key(name: &str) -> ObjectKey {
    ObjectKey {
        kind: "configmap".into(),
        namespace: "default".into(),
        name: name.into(),
    }
}

fn update(name: &str, rv: u64) -> Message {
    Message {
        header: Header {
            id: format!("{name}-{rv}"),
            resource_version: rv,
            ..Header::default()
        },
        route: Route {
            source: "edgecontroller".into(),
            group: "resource".into(),
            operation: "update".into(),
            resource: format!("default/configmap/{name}"),
            ..Route::default()
        },
        content: vec![b'x'; 64],
    }
}

fn connected(hub: &mut Hub, conn: ConnId, node: &str, resume: u64, now: Millis) -> Edge {
    let mut edge = Edge::new(conn);
    hub.handle_connect(conn, Some(node), now);
    edge.hello(hub, node, resume, now);
    let sent = drain(hub, &mut [&mut edge], now);
    let mine = sent.iter().find(|(c, _, _)| *c == conn).expect("an answer");
    assert!(matches!(mine.1[0], Got::Welcome { .. }), "{sent:?}");
    edge
}

fn close_reason(sent: &[(ConnId, Vec<Got>, bool)], conn: ConnId) -> Option<CloseReason> {
    sent.iter()
        .filter(|(c, _, close)| *c == conn && *close)
        .flat_map(|(_, got, _)| got)
        .find_map(|g| match g {
            Got::Close { reason, .. } => Some(*reason),
            _ => None,
        })
}

#[test]
fn handshake_welcomes_and_delivers_queued_objects_in_one_batch() {
    let mut hub = Hub::new(HubConfig::default());
    for i in 0..5 {
        let _ = hub
            .handle_downstream(
                "edge-1",
                key(&format!("c{i}")),
                update(&format!("c{i}"), 10 + i),
            )
            .unwrap();
    }
    let mut edge = Edge::new(7);
    hub.handle_connect(7, Some("edge-1"), 0);
    edge.hello(&mut hub, "edge-1", 0, 0);
    let sent = drain(&mut hub, &mut [&mut edge], 0);
    assert_eq!(sent.len(), 1, "one transmit: Welcome and one batch");
    let got = &sent[0].1;
    assert_eq!(
        got[0],
        Got::Welcome {
            resume_seq: 0,
            window: 256
        }
    );
    let Got::Batch(batch) = &got[1] else {
        panic!("{got:?}")
    };
    let seqs: Vec<u64> = batch.iter().map(|m| m.header.seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    assert_eq!(batch[4].header.resource_version, 14);
    assert!(events(&mut hub).contains(&HubEvent::Connected {
        node: "edge-1".into(),
        conn: 7,
        store_id: 0,
    }));
}

#[test]
fn window_limits_flight_and_acks_release_and_report() {
    let mut hub = Hub::new(HubConfig {
        window: 3,
        ..HubConfig::default()
    });
    let mut edge = connected(&mut hub, 1, "n", 0, 0);
    for i in 0..5 {
        let _ = hub
            .handle_downstream("n", key(&format!("k{i}")), update(&format!("k{i}"), 1))
            .unwrap();
    }
    let sent = drain(&mut hub, &mut [&mut edge], 1);
    let Got::Batch(first) = &sent[0].1[0] else {
        panic!()
    };
    assert_eq!(first.len(), 3, "window of 3");
    assert_eq!(hub.depth("n"), Some((2, 3)));
    events(&mut hub);
    edge.ack(&mut hub, 2, 2);
    let delivered = events(&mut hub);
    let HubEvent::Delivered { objects, .. } = &delivered[0] else {
        panic!("{delivered:?}")
    };
    assert_eq!(objects.iter().map(|d| d.seq).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(*objects[0].key, key("k0"));
    let sent = drain(&mut hub, &mut [&mut edge], 2);
    let Got::Batch(second) = &sent[0].1[0] else {
        panic!()
    };
    assert_eq!(
        second.iter().map(|m| m.header.seq).collect::<Vec<_>>(),
        [4, 5]
    );
}

#[test]
fn newer_versions_replace_pending_and_older_than_sent_are_dropped() {
    let mut hub = Hub::new(HubConfig::default());
    let _ = hub
        .handle_downstream("n", key("a"), update("a", 5))
        .unwrap();
    let _ = hub
        .handle_downstream("n", key("a"), update("a", 7))
        .unwrap();
    let stale = hub
        .handle_downstream("n", key("a"), update("a", 6))
        .unwrap();
    assert!(matches!(stale, PushOutcome::Stale { .. }));
    let mut edge = connected_after_queue(&mut hub);
    let sent = drain(&mut hub, &mut [&mut edge], 0);
    assert!(sent.is_empty(), "everything went out with the Welcome");
    // Version 7 is in flight: 6 is stale even before the ack.
    let outcome = hub
        .handle_downstream("n", key("a"), update("a", 6))
        .unwrap();
    assert!(matches!(outcome, PushOutcome::Stale { .. }), "{outcome:?}");
}

fn connected_after_queue(hub: &mut Hub) -> Edge {
    let mut edge = Edge::new(1);
    hub.handle_connect(1, Some("n"), 0);
    edge.hello(hub, "n", 0, 0);
    let sent = drain(hub, &mut [&mut edge], 0);
    let Got::Batch(batch) = &sent[0].1[1] else {
        panic!("{sent:?}")
    };
    assert_eq!(batch.len(), 1);
    assert_eq!(batch[0].header.resource_version, 7);
    edge
}

#[test]
fn resume_sends_only_what_the_node_has_not_committed() {
    let mut hub = Hub::new(HubConfig::default());
    let mut edge = connected(&mut hub, 1, "n", 0, 0);
    for i in 0..4 {
        let _ = hub
            .handle_downstream("n", key(&format!("k{i}")), update(&format!("k{i}"), 1))
            .unwrap();
    }
    drain(&mut hub, &mut [&mut edge], 1);
    hub.handle_disconnect(1);
    events(&mut hub);
    // The node committed 1 and 2 but its acks were lost with the link.
    let mut edge = Edge::new(2);
    hub.handle_connect(2, Some("n"), 5);
    edge.hello(&mut hub, "n", 2, 5);
    let sent = drain(&mut hub, &mut [&mut edge], 5);
    let Got::Batch(again) = &sent[0].1[1] else {
        panic!("{sent:?}")
    };
    assert_eq!(
        again.iter().map(|m| m.header.seq).collect::<Vec<_>>(),
        [3, 4]
    );
    let HubEvent::Delivered { objects, .. } = &events(&mut hub)[0] else {
        panic!()
    };
    assert_eq!(objects.len(), 2, "1 and 2 are reported delivered on resume");
}

#[test]
fn restarted_hub_continues_numbering_after_the_nodes_resume_point() {
    let mut hub = Hub::new(HubConfig::default());
    let _ = hub
        .handle_downstream("n", key("a"), update("a", 3))
        .unwrap();
    let mut edge = Edge::new(1);
    hub.handle_connect(1, Some("n"), 0);
    edge.hello(&mut hub, "n", 500, 0);
    let sent = drain(&mut hub, &mut [&mut edge], 0);
    let Got::Batch(batch) = &sent[0].1[1] else {
        panic!("{sent:?}")
    };
    assert_eq!(batch[0].header.seq, 501);
}

#[test]
fn node_that_lost_acknowledged_data_needs_a_resync() {
    let mut hub = Hub::new(HubConfig::default());
    let mut edge = connected(&mut hub, 1, "n", 0, 0);
    let _ = hub
        .handle_downstream("n", key("a"), update("a", 3))
        .unwrap();
    drain(&mut hub, &mut [&mut edge], 0);
    edge.ack(&mut hub, 1, 1);
    hub.handle_disconnect(1);
    events(&mut hub);
    connected(&mut hub, 2, "n", 0, 2);
    assert!(events(&mut hub).contains(&HubEvent::ResyncNeeded { node: "n".into() }));
}

fn numbered(mut m: Message, seq: u64) -> Message {
    m.header.seq = seq;
    m
}

/// The versions of the objects in the batches of `sent`.
fn versions(sent: &[(ConnId, Vec<Got>, bool)]) -> Vec<(String, u64)> {
    sent.iter()
        .flat_map(|(_, got, _)| got)
        .filter_map(|g| match g {
            Got::Batch(b) => Some(b),
            _ => None,
        })
        .flatten()
        .map(|m| (m.route.resource.clone(), m.header.resource_version))
        .collect()
}

#[test]
fn node_that_lost_its_store_gets_the_snapshot_it_already_had_once() {
    let mut hub = Hub::new(HubConfig::default());
    let mut edge = connected(&mut hub, 1, "n", 0, 0);
    let _ = hub.handle_downstream("n", key("a"), update("a", 3));
    let _ = hub.handle_downstream("n", key("b"), update("b", 4));
    drain(&mut hub, &mut [&mut edge], 0);
    edge.ack(&mut hub, 2, 1);
    hub.handle_disconnect(1);
    events(&mut hub);
    // Wiped: it comes back with nothing committed.
    let mut edge = connected(&mut hub, 2, "n", 0, 2);
    assert!(events(&mut hub).contains(&HubEvent::ResyncNeeded { node: "n".into() }));
    hub.handle_resync_started("n");
    for (name, rv) in [("a", 3), ("b", 4)] {
        let outcome = hub.handle_downstream("n", key(name), update(name, rv));
        assert_eq!(outcome, Ok(PushOutcome::Queued), "{name} is news again");
    }
    let sent = drain(&mut hub, &mut [&mut edge], 3);
    assert_eq!(
        versions(&sent),
        [
            ("default/configmap/a".into(), 3),
            ("default/configmap/b".into(), 4)
        ]
    );
}

#[test]
fn a_new_store_resets_both_directions_even_when_its_resume_point_looks_intact() {
    let mut hub = Hub::new(HubConfig::default());
    let mut edge = Edge::new(1);
    edge.store_id = 11;
    hub.handle_connect(1, Some("n"), 0);
    edge.hello(&mut hub, "n", 0, 0);
    drain(&mut hub, &mut [&mut edge], 0);
    let _ = hub.handle_downstream("n", key("a"), update("a", 3));
    drain(&mut hub, &mut [&mut edge], 1);
    edge.send(&mut hub, &[numbered(update("s", 1), 1)], 1);
    hub.handle_upstream_committed("n", 11, 1);
    drain(&mut hub, &mut [&mut edge], 1);
    hub.handle_disconnect(1);
    events(&mut hub);
    // Another store whose resume point (0, nothing acknowledged downstream
    // yet) would pass for intact.
    let mut edge = Edge::new(2);
    edge.store_id = 12;
    hub.handle_connect(2, Some("n"), 2);
    edge.hello(&mut hub, "n", 0, 2);
    let sent = drain(&mut hub, &mut [&mut edge], 2);
    assert!(
        matches!(sent[0].1[0], Got::Welcome { resume_seq: 0, .. }),
        "upstream numbering starts again: {sent:?}"
    );
    let got = events(&mut hub);
    assert!(
        got.contains(&HubEvent::ResyncNeeded { node: "n".into() }),
        "{got:?}"
    );
    assert!(got.contains(&HubEvent::Connected {
        node: "n".into(),
        conn: 2,
        store_id: 12
    }));
    // The new store's first upstream message is not a duplicate, and a
    // late commit meant for the old store acknowledges nothing.
    edge.send(&mut hub, &[numbered(update("s", 1), 1)], 3);
    let ups = events(&mut hub);
    assert!(
        matches!(&ups[..], [HubEvent::Upstream { store_id: 12, .. }]),
        "{ups:?}"
    );
    hub.handle_upstream_committed("n", 11, 1);
    assert!(
        !drain(&mut hub, &mut [&mut edge], 3)
            .iter()
            .any(|(_, g, _)| g.contains(&Got::Ack(1)))
    );
    hub.handle_upstream_committed("n", 12, 1);
    assert!(
        drain(&mut hub, &mut [&mut edge], 3)
            .iter()
            .any(|(_, g, _)| g.contains(&Got::Ack(1)))
    );
}

#[test]
fn acknowledged_deletes_are_forgotten() {
    let mut hub = Hub::new(HubConfig::default());
    let mut edge = connected(&mut hub, 1, "n", 0, 0);
    let mut delete = update("a", 5);
    delete.route.operation = "delete".into();
    let _ = hub.handle_downstream("n", key("a"), delete);
    drain(&mut hub, &mut [&mut edge], 0);
    edge.ack(&mut hub, 1, 1);
    // Nothing of "a" is remembered: a re-created "a" of any version goes.
    let outcome = hub.handle_downstream("n", key("a"), update("a", 2));
    assert_eq!(outcome, Ok(PushOutcome::Queued));
}

#[test]
fn the_oldest_unacknowledged_message_bounds_the_retransmit_deadline() {
    let config = HubConfig {
        retransmit_timeout_ms: 1_000,
        ..HubConfig::default()
    };
    let mut hub = Hub::new(config);
    let mut edge = connected(&mut hub, 1, "n", 0, 0);
    let _ = hub.handle_downstream("n", key("a"), update("a", 3));
    drain(&mut hub, &mut [&mut edge], 0);
    // Newer messages keep flowing; the first is never acknowledged.
    for t in [300, 600, 900] {
        edge.keepalive(&mut hub, t);
        let name = format!("m{t}");
        let _ = hub.handle_downstream("n", key(&name), update(&name, 1));
        drain(&mut hub, &mut [&mut edge], t);
    }
    assert_eq!(hub.poll_timeout(), Some(1_000));
    hub.handle_timeout(1_000);
    let sent = drain(&mut hub, &mut [&mut edge], 1_000);
    assert_eq!(versions(&sent).len(), 4, "the whole window again: {sent:?}");
}

#[test]
fn unacknowledged_window_is_sent_again_after_the_retransmit_timeout() {
    let config = HubConfig {
        retransmit_timeout_ms: 1_000,
        ..HubConfig::default()
    };
    let mut hub = Hub::new(config);
    let mut edge = connected(&mut hub, 1, "n", 0, 0);
    let _ = hub
        .handle_downstream("n", key("a"), update("a", 3))
        .unwrap();
    drain(&mut hub, &mut [&mut edge], 0);
    assert_eq!(hub.poll_timeout(), Some(1_000));
    edge.keepalive(&mut hub, 999);
    hub.handle_timeout(999);
    assert!(drain(&mut hub, &mut [&mut edge], 999).is_empty());
    hub.handle_timeout(1_000);
    let sent = drain(&mut hub, &mut [&mut edge], 1_000);
    let Got::Batch(again) = &sent[0].1[0] else {
        panic!("{sent:?}")
    };
    assert_eq!(again[0].header.seq, 1);
    edge.ack(&mut hub, 1, 1_001);
    hub.handle_timeout(2_500);
    let after = drain(&mut hub, &mut [&mut edge], 2_500);
    assert!(
        after
            .iter()
            .all(|(_, got, _)| !got.iter().any(|g| matches!(g, Got::Batch(_))))
    );
}

#[test]
fn byte_budget_releases_the_queue_and_asks_for_a_resync_once() {
    let config = HubConfig {
        queue_budget_bytes: 4_000,
        ..HubConfig::default()
    };
    let mut hub = Hub::new(config);
    let mut overflowed = 0;
    for i in 0..100 {
        let outcome =
            hub.handle_downstream("n", key(&format!("k{i}")), update(&format!("k{i}"), 1));
        if matches!(outcome, Ok(PushOutcome::Overflow { .. })) {
            overflowed += 1;
        }
    }
    assert!(overflowed > 50);
    let (queued, _) = hub.depth("n").unwrap();
    assert_eq!(queued, 0, "the queue was released, not grown");
    let resyncs = events(&mut hub)
        .into_iter()
        .filter(|e| matches!(e, HubEvent::ResyncNeeded { .. }))
        .count();
    assert_eq!(resyncs, 1);
    hub.handle_resync_started("n");
    let outcome = hub
        .handle_downstream("n", key("snapshot"), update("snapshot", 1))
        .unwrap();
    assert_eq!(outcome, PushOutcome::Queued);
}

#[test]
fn oversized_message_is_refused() {
    let mut hub = Hub::new(HubConfig {
        max_frame_bytes: 1024,
        ..HubConfig::default()
    });
    let mut big = update("a", 1);
    big.content = vec![0; 2048];
    assert!(matches!(
        hub.handle_downstream("n", key("a"), big),
        Err(DownstreamError::TooLarge { .. })
    ));
}

#[test]
fn second_connection_replaces_the_first() {
    let mut hub = Hub::new(HubConfig::default());
    let mut first = connected(&mut hub, 1, "n", 0, 0);
    events(&mut hub);
    let mut second = Edge::new(2);
    hub.handle_connect(2, Some("n"), 1);
    second.hello(&mut hub, "n", 0, 1);
    let sent = drain(&mut hub, &mut [&mut first, &mut second], 1);
    assert_eq!(close_reason(&sent, 1), Some(CloseReason::Replaced));
    assert!(
        sent.iter()
            .any(|(c, got, _)| *c == 2 && matches!(got[0], Got::Welcome { .. }))
    );
    assert_eq!(hub.connected(), 1);
    let _ = hub
        .handle_downstream("n", key("a"), update("a", 1))
        .unwrap();
    let sent = drain(&mut hub, &mut [&mut first, &mut second], 2);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, 2, "the newer connection gets the traffic");
}

#[test]
fn hello_for_another_node_is_unauthorized() {
    let mut hub = Hub::new(HubConfig::default());
    let mut edge = Edge::new(1);
    hub.handle_connect(1, Some("edge-a"), 0);
    edge.hello(&mut hub, "edge-b", 0, 0);
    let sent = drain(&mut hub, &mut [&mut edge], 0);
    assert_eq!(close_reason(&sent, 1), Some(CloseReason::Unauthorized));
    assert_eq!(hub.connected(), 0);
}

#[test]
fn wrong_protocol_version_is_refused() {
    let mut hub = Hub::new(HubConfig::default());
    let mut edge = Edge::new(1);
    hub.handle_connect(1, None, 0);
    let mut out = Vec::new();
    let hello = Hello {
        node_id: "n",
        protocol_version: 99,
        resume_seq: 0,
        capabilities: &[],
        received_seq: 0,
        store_id: 0,
    };
    edge.encoder.hello(&hello, &mut out).unwrap();
    hub.handle_bytes(1, &out, 0);
    let sent = drain(&mut hub, &mut [&mut edge], 0);
    assert_eq!(close_reason(&sent, 1), Some(CloseReason::VersionMismatch));
}

#[test]
fn node_limit_refuses_new_nodes_but_not_reconnects() {
    let mut hub = Hub::new(HubConfig {
        node_limit: 2,
        ..HubConfig::default()
    });
    connected(&mut hub, 1, "a", 0, 0);
    connected(&mut hub, 2, "b", 0, 0);
    let mut third = Edge::new(3);
    hub.handle_connect(3, Some("c"), 0);
    third.hello(&mut hub, "c", 0, 0);
    let sent = drain(&mut hub, &mut [&mut third], 0);
    assert_eq!(close_reason(&sent, 3), Some(CloseReason::NodeLimit));
    let Got::Close { retry_after_ms, .. } = sent[0].1[0] else {
        panic!()
    };
    assert!(retry_after_ms > 0, "the node is told when to try again");
    // "a" reconnecting replaces itself and is not counted twice.
    connected(&mut hub, 4, "a", 0, 1);
    assert_eq!(hub.connected(), 2);
}

#[test]
fn missing_hello_closes_with_handshake_timeout() {
    let mut hub = Hub::new(HubConfig {
        handshake_timeout_ms: 500,
        ..HubConfig::default()
    });
    let mut edge = Edge::new(1);
    hub.handle_connect(1, Some("n"), 0);
    assert_eq!(hub.poll_timeout(), Some(500));
    hub.handle_timeout(499);
    assert!(drain(&mut hub, &mut [&mut edge], 499).is_empty());
    hub.handle_timeout(500);
    let sent = drain(&mut hub, &mut [&mut edge], 500);
    assert_eq!(close_reason(&sent, 1), Some(CloseReason::HandshakeTimeout));
}

#[test]
fn silent_node_is_closed_within_three_keepalive_intervals() {
    let config = HubConfig {
        keepalive_interval_ms: 1_000,
        ..HubConfig::default()
    };
    let mut hub = Hub::new(config);
    let mut edge = connected(&mut hub, 1, "n", 0, 0);
    hub.handle_timeout(1_000);
    let sent = drain(&mut hub, &mut [&mut edge], 1_000);
    assert_eq!(
        sent[0].1,
        [Got::Keepalive],
        "the idle hub sends a keepalive"
    );
    hub.handle_timeout(2_999);
    assert!(close_reason(&drain(&mut hub, &mut [&mut edge], 2_999), 1).is_none());
    hub.handle_timeout(3_000);
    let sent = drain(&mut hub, &mut [&mut edge], 3_000);
    assert_eq!(close_reason(&sent, 1), Some(CloseReason::Timeout));
    let ev = events(&mut hub);
    assert!(ev.iter().any(|e| matches!(
        e,
        HubEvent::Disconnected {
            reason: Some(CloseReason::Timeout),
            ..
        }
    )));
}

#[test]
fn keepalives_from_the_node_keep_the_link_open() {
    let config = HubConfig {
        keepalive_interval_ms: 1_000,
        ..HubConfig::default()
    };
    let mut hub = Hub::new(config);
    let mut edge = connected(&mut hub, 1, "n", 0, 0);
    for t in (900..10_000).step_by(900) {
        edge.keepalive(&mut hub, t);
        hub.handle_timeout(t);
        assert!(
            close_reason(&drain(&mut hub, &mut [&mut edge], t), 1).is_none(),
            "at {t}"
        );
    }
    assert_eq!(hub.connected(), 1);
}

#[test]
fn garbage_and_oversized_frames_close_the_link() {
    let mut hub = Hub::new(HubConfig {
        max_frame_bytes: 1024,
        ..HubConfig::default()
    });
    let mut edge = Edge::new(1);
    hub.handle_connect(1, Some("n"), 0);
    hub.handle_bytes(1, b"GET / HTTP/1.1\r\n", 0);
    let sent = drain(&mut hub, &mut [&mut edge], 0);
    assert_eq!(close_reason(&sent, 1), Some(CloseReason::ProtocolError));

    let mut edge = Edge::new(2);
    hub.handle_connect(2, Some("n"), 0);
    hub.handle_bytes(2, &schema::codec::Prefix::encode(4096), 0);
    let sent = drain(&mut hub, &mut [&mut edge], 0);
    assert_eq!(close_reason(&sent, 2), Some(CloseReason::FrameTooLarge));
}

#[test]
fn frames_out_of_order_are_protocol_errors() {
    // A Batch before Hello.
    let mut hub = Hub::new(HubConfig::default());
    let mut edge = Edge::new(1);
    hub.handle_connect(1, Some("n"), 0);
    edge.send(&mut hub, &[update("a", 1)], 0);
    let sent = drain(&mut hub, &mut [&mut edge], 0);
    assert_eq!(close_reason(&sent, 1), Some(CloseReason::ProtocolError));
    // An ack for something never sent.
    let mut edge = connected(&mut hub, 2, "n", 0, 0);
    edge.ack(&mut hub, 9, 1);
    let sent = drain(&mut hub, &mut [&mut edge], 1);
    assert_eq!(close_reason(&sent, 2), Some(CloseReason::ProtocolError));
}

#[test]
fn glue_closes_and_shutdown_carry_their_reasons() {
    let mut hub = Hub::new(HubConfig::default());
    let mut a = connected(&mut hub, 1, "a", 0, 0);
    let mut b = connected(&mut hub, 2, "b", 0, 0);
    let mut c = connected(&mut hub, 3, "c", 0, 0);
    hub.handle_close(1, CloseReason::Overloaded, "accept queue full", 5_000);
    hub.handle_close(2, CloseReason::Normal, "bye", 0);
    let sent = drain(&mut hub, &mut [&mut a, &mut b, &mut c], 1);
    assert_eq!(close_reason(&sent, 1), Some(CloseReason::Overloaded));
    assert_eq!(close_reason(&sent, 2), Some(CloseReason::Normal));
    hub.handle_shutdown(10_000);
    let sent = drain(&mut hub, &mut [&mut a, &mut b, &mut c], 2);
    assert_eq!(close_reason(&sent, 3), Some(CloseReason::ShuttingDown));
    let Got::Close { retry_after_ms, .. } = sent[0].1[0] else {
        panic!()
    };
    assert_eq!(retry_after_ms, 10_000);
    assert_eq!(hub.connected(), 0);
}

#[test]
fn upstream_is_deduplicated_and_acknowledged_once_committed() {
    let mut hub = Hub::new(HubConfig::default());
    let mut edge = connected(&mut hub, 1, "n", 0, 0);
    events(&mut hub);
    let mut status = update("status", 0);
    let mut batch = Vec::new();
    for seq in 1..=3 {
        status.header.seq = seq;
        batch.push(status.clone());
    }
    edge.send(&mut hub, &batch, 1);
    edge.send(&mut hub, &batch[1..], 1);
    let ups: Vec<u64> = events(&mut hub)
        .into_iter()
        .filter_map(|e| match e {
            HubEvent::Upstream { message, .. } => Some(message.header.seq),
            _ => None,
        })
        .collect();
    assert_eq!(ups, [1, 2, 3], "duplicates are dropped");
    assert!(
        drain(&mut hub, &mut [&mut edge], 1).is_empty(),
        "no ack before commit"
    );
    hub.handle_upstream_committed("n", 0, 3);
    let sent = drain(&mut hub, &mut [&mut edge], 2);
    assert_eq!(sent[0].1, [Got::Ack(3)]);
    // A reconnect is welcomed with the upstream resume point.
    hub.handle_disconnect(1);
    let mut again = Edge::new(2);
    hub.handle_connect(2, Some("n"), 3);
    again.hello(&mut hub, "n", 0, 3);
    let sent = drain(&mut hub, &mut [&mut again], 3);
    assert_eq!(
        sent[0].1[0],
        Got::Welcome {
            resume_seq: 3,
            window: 256
        }
    );
}

#[test]
fn restarted_hub_numbers_above_what_the_node_received_but_not_committed() {
    // The node committed 500 and holds 501..510 from the previous hub,
    // uncommitted: numbers it would otherwise drop as duplicates.
    let mut hub = Hub::new(HubConfig::default());
    let _ = hub.handle_downstream("n", key("a"), update("a", 3));
    let mut edge = Edge::new(1);
    hub.handle_connect(1, Some("n"), 0);
    let mut out = Vec::new();
    let hello = Hello {
        node_id: "n",
        protocol_version: PROTOCOL_VERSION,
        resume_seq: 500,
        capabilities: CAPABILITIES,
        received_seq: 510,
        store_id: 0,
    };
    edge.encoder.hello(&hello, &mut out).unwrap();
    hub.handle_bytes(1, &out, 0);
    let sent = drain(&mut hub, &mut [&mut edge], 0);
    let Got::Batch(batch) = &sent[0].1[1] else {
        panic!("{sent:?}")
    };
    assert_eq!(batch[0].header.seq, 511);
    // The node commits its old 501..510 and acks 510: nothing new is released.
    edge.ack(&mut hub, 510, 1);
    assert_eq!(hub.depth("n"), Some((0, 1)));
}

#[test]
fn timer_checks_stay_few_under_traffic_and_idle_links_wake_rarely() {
    let mut hub = Hub::new(HubConfig {
        keepalive_interval_ms: 1_000,
        ..HubConfig::default()
    });
    let mut edges: Vec<Edge> = (0..50)
        .map(|i| connected(&mut hub, i, &format!("n{i}"), 0, 0))
        .collect();
    for round in 1..=200u64 {
        let now = round * 10;
        for (i, edge) in edges.iter_mut().enumerate() {
            let name = format!("n{i}");
            let _ = hub.handle_downstream(&name, key("a"), update("a", round));
            let mut refs = [&mut *edge];
            drain(&mut hub, &mut refs, now);
            edge.ack(&mut hub, round, now);
        }
        hub.handle_timeout(now);
        assert!(
            hub.timers.len() <= 2 * edges.len(),
            "{} timer entries",
            hub.timers.len()
        );
    }
    // Idle: one check per connection per keepalive interval, not per call.
    let mut wakeups = 0;
    let mut now = 2_000;
    while now < 12_000 {
        let next = hub.poll_timeout().expect("open links have timers");
        now = next.max(now);
        hub.handle_timeout(now);
        for edge in &mut edges {
            edge.keepalive(&mut hub, now);
        }
        while hub.poll_transmit(now).is_some() {}
        wakeups += 1;
    }
    assert_eq!(hub.connected(), 50);
    assert!(wakeups <= 40, "{wakeups} wakeups in 10 keepalive intervals");
}

#[test]
fn a_resync_not_started_is_asked_for_again_while_the_node_is_connected() {
    let config = HubConfig {
        queue_budget_bytes: 4_000,
        keepalive_interval_ms: 1_000,
        ..HubConfig::default()
    };
    let mut hub = Hub::new(config);
    let mut edge = connected(&mut hub, 1, "n", 0, 0);
    for i in 0..100 {
        let _ = hub.handle_downstream("n", key(&format!("k{i}")), update(&format!("k{i}"), 1));
    }
    let resyncs = |hub: &mut Hub| {
        (events(hub).iter())
            .filter(|e| matches!(e, HubEvent::ResyncNeeded { .. }))
            .count()
    };
    assert_eq!(resyncs(&mut hub), 1);
    // The control side's answer is lost (it was killed): no ResyncStarted.
    // The node stays connected and everything for it is refused meanwhile.
    let mut asked = 0;
    let until = 2 * RESYNC_RETRY_MS + 5_000;
    for t in (900..until).step_by(900) {
        edge.keepalive(&mut hub, t);
        hub.handle_timeout(t);
        drain(&mut hub, &mut [&mut edge], t);
        asked += resyncs(&mut hub);
    }
    assert_eq!(asked, 2, "asked again once per {RESYNC_RETRY_MS} ms");
    hub.handle_resync_started("n");
    let outcome = hub.handle_downstream("n", key("snapshot"), update("snapshot", 2));
    assert_eq!(outcome.unwrap(), PushOutcome::Queued);
    for t in (until..until + 2 * RESYNC_RETRY_MS).step_by(900) {
        edge.keepalive(&mut hub, t);
        hub.handle_timeout(t);
        drain(&mut hub, &mut [&mut edge], t);
        assert_eq!(resyncs(&mut hub), 0, "at {t}: the resync started");
    }
}

/// Messages the slab holds: exactly those queued or in flight (when no
/// best-effort message waits); every other one went back to it.
fn bodies_match_depth(hub: &Hub) {
    let (queued, inflight) = hub.depth_totals();
    assert_eq!(hub.bodies.live(), queued + inflight);
}

#[test]
fn every_message_dropped_sent_or_released_gives_its_body_back() {
    let mut hub = Hub::new(HubConfig {
        window: 4,
        queue_budget_bytes: 6_000,
        ..HubConfig::default()
    });
    for rv in [3, 5, 4] {
        let _ = hub.handle_downstream("n", key("a"), update("a", rv));
    }
    bodies_match_depth(&hub);
    for i in 0..20 {
        let name = format!("k{i}");
        let _ = hub.handle_downstream("n", key(&name), update(&name, 1));
    }
    assert!(hub.nodes["n"].needs_resync(), "the queue overflowed");
    bodies_match_depth(&hub);
    hub.handle_resync_started("n");
    for i in 0..6 {
        let name = format!("s{i}");
        let _ = hub.handle_downstream("n", key(&name), update(&name, 2).as_ref());
    }
    let mut edge = connected(&mut hub, 1, "n", 0, 1);
    assert!(hub.handle_best_effort("n", update("b", 0)));
    drain(&mut hub, &mut [&mut edge], 2);
    bodies_match_depth(&hub);
    // Still waiting when the link drops: the resume drops it.
    assert!(hub.handle_best_effort("n", update("c", 0)));
    hub.handle_disconnect(1);
    let mut edge = connected(&mut hub, 2, "n", 2, 4);
    bodies_match_depth(&hub);
    for (seq, now) in [(4, 5), (6, 6)] {
        edge.ack(&mut hub, seq, now);
        drain(&mut hub, &mut [&mut edge], now);
        bodies_match_depth(&hub);
    }
    assert_eq!(hub.depth("n"), Some((0, 0)));
    assert_eq!(hub.bodies.live(), 0);
    hub.handle_timeout(100_000);
    hub.handle_timeout(200_000);
    assert_eq!(hub.bodies.slots(), 0, "an empty slab gives its slots back");
}
