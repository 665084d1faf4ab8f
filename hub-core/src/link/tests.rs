//! The edge link driven as the cloud would: frames built with the
//! `FrameEncoder`, what the link sends read back with a `FrameDecoder`.

use super::*;
use crate::PROTOCOL_VERSION;
use crate::protocol::CAPABILITIES;
use schema::FrameView;
use schema::frames::{Close, Hello, Welcome};

/// A frame the link sent, reduced to what the tests look at.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Sent {
    Hello {
        node_id: String,
        resume_seq: u64,
        received_seq: u64,
    },
    Ack(u64),
    Keepalive,
    Batch(Vec<u64>),
    Close(CloseReason),
    Other(&'static str),
}

/// Nothing sent, nothing reported.
const NOTHING: [Sent; 0] = [];
const NO_EVENTS: [LinkEvent; 0] = [];

fn decode(bytes: &[u8]) -> Vec<Sent> {
    let mut d = FrameDecoder::default();
    d.handle_bytes(bytes);
    let mut out = Vec::new();
    while let Some(frame) = d.poll_frame().expect("the link sends valid frames") {
        out.push(match frame {
            FrameView::Hello(h) => {
                assert_eq!(h.protocol_version(), PROTOCOL_VERSION);
                let caps: Vec<_> = h.capabilities().unwrap_or_default().iter().collect();
                assert_eq!(caps, CAPABILITIES);
                Sent::Hello {
                    node_id: h.node_id().unwrap_or_default().to_owned(),
                    resume_seq: h.resume_seq(),
                    received_seq: h.received_seq(),
                }
            }
            FrameView::Ack(a) => Sent::Ack(a.seq()),
            FrameView::Keepalive(_) => Sent::Keepalive,
            FrameView::Batch(b) => Sent::Batch(b.iter().map(|m| m.header.seq).collect()),
            FrameView::Close(c) => Sent::Close(c.reason()),
            other => Sent::Other(other.name()),
        });
    }
    out
}

/// Everything the link transmits at `now`, and whether it closed.
fn transmit(link: &mut Link, now: Millis) -> (Vec<Sent>, bool) {
    let mut frames = Vec::new();
    let mut closed = false;
    while let Some(t) = link.poll_transmit(now) {
        assert!(!closed, "nothing is transmitted after a close");
        frames.extend(decode(&t.bytes));
        closed |= t.close;
    }
    (frames, closed)
}

fn events(link: &mut Link) -> Vec<LinkEvent> {
    std::iter::from_fn(|| link.poll_event()).collect()
}

fn welcome(resume_seq: u64, keepalive_interval_ms: u32, window: u32) -> Vec<u8> {
    welcome_max(resume_seq, keepalive_interval_ms, window, 0)
}

fn welcome_max(resume_seq: u64, interval: u32, window: u32, max_frame_bytes: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let w = Welcome {
        protocol_version: PROTOCOL_VERSION,
        resume_seq,
        keepalive_interval_ms: interval,
        max_frame_bytes,
        window,
        capabilities: CAPABILITIES,
    };
    FrameEncoder::default().welcome(&w, &mut out).unwrap();
    out
}

fn batch(messages: &[Message]) -> Vec<u8> {
    let mut out = Vec::new();
    FrameEncoder::default()
        .batch(messages.iter().map(Message::as_ref), &mut out)
        .unwrap();
    out
}

fn ack(seq: u64) -> Vec<u8> {
    let mut out = Vec::new();
    FrameEncoder::default().ack(seq, &mut out).unwrap();
    out
}

fn keepalive() -> Vec<u8> {
    let mut out = Vec::new();
    FrameEncoder::default().keepalive(0, &mut out).unwrap();
    out
}

fn close(reason: CloseReason, retry_after_ms: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let c = Close {
        reason,
        text: "from the cloud",
        retry_after_ms,
    };
    FrameEncoder::default().close(&c, &mut out).unwrap();
    out
}

/// A downstream message as the cloud numbers it.
fn down(seq: u64) -> Message {
    let mut m = Message::default();
    m.header.seq = seq;
    m.route.resource = format!("default/pod/p{seq}");
    m.content = b"{}".to_vec();
    m
}

fn best_effort(id: &str) -> Message {
    let mut m = Message::default();
    m.header.best_effort = true;
    m.header.id = id.to_owned();
    m
}

/// An upstream message; its seq is set by the link.
fn up_msg(content_len: usize) -> Message {
    let mut m = Message::default();
    m.route.resource = "node/status".to_owned();
    m.content = vec![b'x'; content_len];
    m
}

fn delivered(events: &[LinkEvent]) -> Vec<u64> {
    events
        .iter()
        .filter_map(|e| match e {
            LinkEvent::Downstream(m) => Some(m.header.seq),
            _ => None,
        })
        .collect()
}

fn link(committed_seq: u64) -> Link {
    Link::new(LinkConfig::new("node-a"), committed_seq, 7, 0)
}

/// Connects (the attempt must be due at `now`) and returns what was sent.
fn connect(link: &mut Link, now: Millis) -> Vec<Sent> {
    assert!(link.poll_connect(now), "an attempt is due at {now}");
    link.handle_connected(now);
    let (sent, closed) = transmit(link, now);
    assert!(!closed);
    sent
}

/// Connects and receives a Welcome; returns the events.
fn bring_up(link: &mut Link, now: Millis, welcome_bytes: &[u8]) -> Vec<LinkEvent> {
    connect(link, now);
    link.handle_bytes(welcome_bytes, now);
    assert!(link.is_up());
    events(link)
}

fn ended(link: &mut Link) -> Option<CloseReason> {
    let evs = events(link);
    let last = evs.last().expect("an event");
    let LinkEvent::Disconnected { reason, .. } = last else {
        panic!("expected Disconnected, got {evs:?}");
    };
    *reason
}

/// The `Hello` node-a sends with these resume points.
fn hello(resume_seq: u64, received_seq: u64) -> Sent {
    Sent::Hello {
        node_id: "node-a".to_owned(),
        resume_seq,
        received_seq,
    }
}

#[test]
fn handshake_sends_hello_with_the_committed_seq() {
    let mut l = link(42);
    assert!(l.poll_connect(0));
    assert!(!l.poll_connect(0), "once per attempt");
    assert_eq!(l.poll_timeout(), None, "the glue is connecting");
    l.handle_connected(0);
    let (sent, closed) = transmit(&mut l, 0);
    assert_eq!((sent, closed), (vec![hello(42, 42)], false));
    assert!(!l.is_up());
    assert_eq!(l.poll_timeout(), Some(10_000), "handshake deadline");
}

#[test]
fn welcome_emits_connected() {
    let mut l = link(0);
    let evs = bring_up(&mut l, 0, &welcome(0, 1000, 16));
    assert_eq!(evs, vec![LinkEvent::Connected { upstream_resume: 0 }]);
    assert!(!l.poll_connect(0));
}

#[test]
fn welcome_split_at_every_byte_still_brings_the_link_up() {
    let bytes = welcome(9, 1000, 16);
    let mut l = link(0);
    connect(&mut l, 0);
    for b in &bytes {
        assert!(!l.is_up());
        l.handle_bytes(std::slice::from_ref(b), 1);
    }
    assert!(l.is_up());
    assert_eq!(
        events(&mut l),
        vec![
            LinkEvent::Connected { upstream_resume: 9 },
            LinkEvent::UpstreamAcked { seq: 9 }
        ]
    );
}

#[test]
fn downstream_is_deduplicated_by_seq() {
    let mut l = link(5);
    bring_up(&mut l, 0, &welcome(0, 1000, 16));
    l.handle_bytes(&batch(&[down(4), down(5), down(6), down(7), down(6)]), 1);
    assert_eq!(delivered(&events(&mut l)), [6, 7]);
    l.handle_bytes(&batch(&[down(7), down(8)]), 2);
    assert_eq!(delivered(&events(&mut l)), [8]);
    assert_eq!(l.highest_seen(), 8);
    assert_eq!(l.committed_seq(), 5, "seen is not committed");
}

#[test]
fn best_effort_messages_are_delivered_every_time() {
    let mut l = link(0);
    bring_up(&mut l, 0, &welcome(0, 1000, 16));
    let be = [best_effort("a"), best_effort("b")];
    l.handle_bytes(&batch(&be), 1);
    l.handle_bytes(&batch(&be[..1]), 2);
    let ids: Vec<_> = events(&mut l)
        .into_iter()
        .filter_map(|e| match e {
            LinkEvent::Downstream(m) => Some(m.header.id),
            _ => None,
        })
        .collect();
    assert_eq!(ids, ["a", "b", "a"]);
    assert_eq!(l.highest_seen(), 0);
    assert_eq!(transmit(&mut l, 3), (vec![], false), "never acknowledged");
}

#[test]
fn seen_seqs_survive_a_reconnect_and_hello_carries_the_committed_seq() {
    let mut l = link(0);
    bring_up(&mut l, 0, &welcome(0, 1000, 16));
    l.handle_bytes(&batch(&[down(1), down(2), down(3)]), 1);
    l.handle_committed(2);
    l.handle_disconnected(2);
    assert_eq!(ended(&mut l), None);
    let at = l.poll_timeout().unwrap();
    // Committed 2, received 3: a restarted hub numbers above 3.
    assert_eq!(connect(&mut l, at), [hello(2, 3)]);
    l.handle_bytes(&welcome(0, 1000, 16), at);
    l.handle_bytes(&batch(&[down(3), down(4)]), at);
    assert_eq!(delivered(&events(&mut l)), [4], "3 was already handed over");
}

#[test]
fn acks_only_after_commit_and_coalesced() {
    let mut l = link(0);
    bring_up(&mut l, 0, &welcome(0, 1000, 16));
    l.handle_bytes(&batch(&[down(1), down(2), down(3)]), 1);
    assert_eq!(delivered(&events(&mut l)), [1, 2, 3]);
    assert_eq!(
        transmit(&mut l, 1),
        (vec![], false),
        "nothing committed yet"
    );
    l.handle_committed(1);
    l.handle_committed(3);
    l.handle_committed(2);
    assert_eq!(transmit(&mut l, 2), (vec![Sent::Ack(3)], false));
    assert_eq!(l.committed_seq(), 3);
    l.handle_committed(3);
    assert_eq!(transmit(&mut l, 3), (vec![], false), "nothing new to ack");
}

#[test]
fn outbox_waits_for_welcome_and_leaves_in_one_batch() {
    let mut l = link(0);
    for seq in 1..=3 {
        l.handle_outbox(seq, up_msg(10));
    }
    let sent = connect(&mut l, 0);
    assert!(matches!(sent.as_slice(), [Sent::Hello { .. }]), "{sent:?}");
    l.handle_bytes(&welcome(0, 1000, 16), 1);
    assert_eq!(
        transmit(&mut l, 1),
        (vec![Sent::Batch(vec![1, 2, 3])], false)
    );
    assert_eq!((l.outbox_len(), l.in_flight()), (3, 3));
    l.handle_outbox(4, up_msg(10));
    assert_eq!(transmit(&mut l, 2), (vec![Sent::Batch(vec![4])], false));
}

#[test]
fn window_is_respected_and_acks_refill_it() {
    let mut l = link(0);
    bring_up(&mut l, 0, &welcome(0, 1000, 4));
    for seq in 1..=10 {
        l.handle_outbox(seq, up_msg(10));
    }
    assert_eq!(transmit(&mut l, 1).0, [Sent::Batch(vec![1, 2, 3, 4])]);
    assert_eq!(transmit(&mut l, 2).0, NOTHING, "window full");
    l.handle_bytes(&ack(2), 3);
    assert_eq!(events(&mut l), [LinkEvent::UpstreamAcked { seq: 2 }]);
    assert_eq!(l.outbox_len(), 8);
    assert_eq!(transmit(&mut l, 3).0, [Sent::Batch(vec![5, 6])]);
    l.handle_bytes(&ack(2), 4);
    assert_eq!(events(&mut l), NO_EVENTS, "an old ack changes nothing");
}

#[test]
fn unacked_entries_are_resent_in_order_after_reconnect() {
    let mut l = link(0);
    bring_up(&mut l, 0, &welcome(0, 1000, 16));
    for seq in 1..=5 {
        l.handle_outbox(seq, up_msg(10));
    }
    assert_eq!(transmit(&mut l, 1).0, [Sent::Batch(vec![1, 2, 3, 4, 5])]);
    l.handle_bytes(&ack(2), 2);
    l.handle_disconnected(3);
    let evs = events(&mut l);
    assert_eq!(evs[0], LinkEvent::UpstreamAcked { seq: 2 });
    assert!(matches!(
        evs[1],
        LinkEvent::Disconnected { reason: None, .. }
    ));
    assert_eq!((l.outbox_len(), l.in_flight()), (3, 0));
    let at = l.poll_timeout().unwrap();
    connect(&mut l, at);
    assert_eq!(transmit(&mut l, at).0, NOTHING, "nothing before Welcome");
    l.handle_bytes(&welcome(2, 1000, 16), at);
    assert_eq!(transmit(&mut l, at).0, [Sent::Batch(vec![3, 4, 5])]);
}

#[test]
fn entries_covered_by_welcome_resume_are_not_resent() {
    let mut l = link(0);
    bring_up(&mut l, 0, &welcome(0, 1000, 16));
    for seq in 1..=5 {
        l.handle_outbox(seq, up_msg(10));
    }
    transmit(&mut l, 1);
    l.handle_disconnected(2);
    events(&mut l);
    let at = l.poll_timeout().unwrap();
    let evs = bring_up(&mut l, at, &welcome(4, 1000, 16));
    assert_eq!(
        evs,
        [
            LinkEvent::Connected { upstream_resume: 4 },
            LinkEvent::UpstreamAcked { seq: 4 }
        ]
    );
    assert_eq!(l.outbox_len(), 1);
    assert_eq!(transmit(&mut l, at).0, [Sent::Batch(vec![5])]);
    l.handle_outbox(3, up_msg(1));
    assert_eq!(events(&mut l), NO_EVENTS, "not increasing: ignored");
    assert_eq!(l.outbox_len(), 1);
}

#[test]
fn outbox_entry_the_cloud_already_has_is_acked_at_once() {
    let mut l = link(0);
    bring_up(&mut l, 0, &welcome(4, 1000, 16));
    l.handle_outbox(3, up_msg(1));
    assert_eq!(events(&mut l), [LinkEvent::UpstreamAcked { seq: 4 }]);
    assert_eq!(l.outbox_len(), 0);
    l.handle_outbox(5, up_msg(1));
    assert_eq!(transmit(&mut l, 1).0, [Sent::Batch(vec![5])]);
}

#[test]
fn rate_limit_sends_the_burst_then_30_per_second() {
    let mut l = link(0);
    bring_up(&mut l, 0, &welcome(0, 60_000, 1000));
    for seq in 1..=100 {
        l.handle_outbox(seq, up_msg(10));
    }
    let count = |sent: &[Sent]| -> usize {
        sent.iter()
            .map(|s| match s {
                Sent::Batch(seqs) => seqs.len(),
                _ => 0,
            })
            .sum()
    };
    let (first, _) = transmit(&mut l, 0);
    assert_eq!(first.len(), 1, "one Batch frame per call");
    assert_eq!(count(&first), 60);
    assert_eq!(transmit(&mut l, 0).0, NOTHING, "bucket empty");
    assert_eq!(l.poll_timeout(), Some(34), "1000 ms / 30, rounded up");
    let mut total = 60;
    let mut sent_by_1s = None;
    let mut now = 0;
    while total < 100 {
        let at = l.poll_timeout().unwrap();
        assert!(at > now, "time moves on");
        now = at;
        if now > 1000 && sent_by_1s.is_none() {
            sent_by_1s = Some(total);
        }
        l.handle_timeout(now);
        let (sent, _) = transmit(&mut l, now);
        total += count(&sent);
    }
    assert_eq!(total, 100);
    assert_eq!(sent_by_1s, Some(60 + 30), "30/s after the burst");
    assert!(
        (1300..=1400).contains(&now),
        "40 more take 4/3 s, done at {now}"
    );
    assert_eq!(l.in_flight(), 100);
}

#[test]
fn keepalive_is_sent_after_an_idle_interval() {
    let mut l = link(0);
    bring_up(&mut l, 0, &welcome(0, 1000, 16));
    assert_eq!(l.poll_timeout(), Some(1000), "Hello went out at 0");
    l.handle_timeout(999);
    assert_eq!(transmit(&mut l, 999).0, NOTHING);
    l.handle_timeout(1000);
    assert_eq!(transmit(&mut l, 1000).0, [Sent::Keepalive]);
    // Anything sent counts: an Ack at 1500 moves the next keepalive.
    l.handle_bytes(&batch(&[down(1)]), 1500);
    l.handle_committed(1);
    assert_eq!(transmit(&mut l, 1500).0, [Sent::Ack(1)]);
    l.handle_timeout(2000);
    assert_eq!(transmit(&mut l, 2000).0, NOTHING);
    assert_eq!(l.poll_timeout(), Some(2500));
    l.handle_timeout(2500);
    assert_eq!(transmit(&mut l, 2500).0, [Sent::Keepalive]);
}

#[test]
fn read_deadline_closes_with_timeout_after_three_silent_intervals() {
    let mut l = link(0);
    bring_up(&mut l, 0, &welcome(0, 1000, 16));
    l.handle_bytes(&keepalive(), 100);
    let now = loop {
        let now = l.poll_timeout().unwrap();
        l.handle_timeout(now);
        let (sent, closed) = transmit(&mut l, now);
        if closed {
            assert_eq!(sent, [Sent::Close(CloseReason::Timeout)]);
            break now;
        }
        assert_eq!(sent, [Sent::Keepalive], "at {now}");
        assert!(l.is_up(), "still up at {now}");
    };
    assert_eq!(now, 3100, "3 intervals after the last byte, not before");
    assert_eq!(ended(&mut l), Some(CloseReason::Timeout));
    assert!(!l.is_up());
    l.handle_bytes(&batch(&[down(1)]), now);
    assert_eq!(
        events(&mut l),
        NO_EVENTS,
        "bytes after the close are ignored"
    );
    l.handle_disconnected(now);
    assert_eq!(events(&mut l), NO_EVENTS, "the connection already ended");
}

#[test]
fn handshake_times_out_without_welcome() {
    let mut l = link(0);
    connect(&mut l, 0);
    l.handle_timeout(9_999);
    assert_eq!(transmit(&mut l, 9_999), (vec![], false));
    l.handle_timeout(10_000);
    assert_eq!(
        transmit(&mut l, 10_000),
        (vec![Sent::Close(CloseReason::HandshakeTimeout)], true)
    );
    assert_eq!(ended(&mut l), Some(CloseReason::HandshakeTimeout));
    let at = l.poll_timeout().unwrap();
    assert!((10_250..=10_500).contains(&at), "first backoff: {at}");
    assert!(!l.poll_connect(at - 1));
    assert!(l.poll_connect(at));
}

#[test]
fn reconnect_backoff_grows_is_jittered_and_resets_after_welcome() {
    let delays = |seed| {
        let mut l = Link::new(LinkConfig::new("n"), 0, seed, 0);
        let mut now = 0;
        let mut delays = Vec::new();
        for _ in 0..8 {
            assert!(l.poll_connect(now));
            l.handle_connect_failed(now);
            assert!(!l.poll_connect(now));
            let at = l.poll_timeout().unwrap();
            delays.push(at - now);
            now = at;
        }
        (l, now, delays)
    };
    let (mut l, now, a) = delays(1);
    let (_, _, b) = delays(2);
    assert_ne!(a, b, "jittered per seed");
    for (n, d) in a.iter().chain(&b).enumerate() {
        let cap = (500u64 << (n % 8)).min(30_000);
        assert!((250..=cap).contains(d), "attempt {n}: {d} ms");
    }
    assert!(a[6] + a[7] > 2 * 500, "grows: {a:?}");
    assert!(b[6] + b[7] > 2 * 500, "grows: {b:?}");
    bring_up(&mut l, now, &welcome(0, 1000, 16));
    l.handle_disconnected(now + 1);
    let d = l.poll_timeout().unwrap() - (now + 1);
    assert!((250..=500).contains(&d), "reset after Welcome: {d}");
}

#[test]
fn close_with_retry_after_delays_the_next_attempt() {
    let mut l = link(0);
    bring_up(&mut l, 0, &welcome(0, 1000, 16));
    l.handle_bytes(&close(CloseReason::Overloaded, 60_000), 100);
    assert_eq!(
        events(&mut l),
        [LinkEvent::Disconnected {
            reason: Some(CloseReason::Overloaded),
            text: "from the cloud".to_owned()
        }]
    );
    assert_eq!(transmit(&mut l, 100), (vec![], true), "close, no reply");
    assert_eq!(l.poll_timeout(), Some(60_100));
    assert!(!l.poll_connect(60_099));
    assert!(l.poll_connect(60_100));
}

#[test]
fn garbage_bytes_close_with_protocol_error() {
    let mut l = link(0);
    bring_up(&mut l, 0, &welcome(0, 1000, 16));
    l.handle_bytes(b"GET / HTTP/1.1\r\n\r\n", 5);
    assert_eq!(
        transmit(&mut l, 5),
        (vec![Sent::Close(CloseReason::ProtocolError)], true)
    );
    assert_eq!(ended(&mut l), Some(CloseReason::ProtocolError));
    l.handle_bytes(&batch(&[down(1)]), 6);
    assert_eq!(events(&mut l), NO_EVENTS);
    assert_eq!(transmit(&mut l, 6), (vec![], false));
}

#[test]
fn batch_before_welcome_is_a_protocol_error() {
    let mut l = link(0);
    connect(&mut l, 0);
    l.handle_bytes(&batch(&[down(1)]), 1);
    assert_eq!(
        transmit(&mut l, 1),
        (vec![Sent::Close(CloseReason::ProtocolError)], true)
    );
    let evs = events(&mut l);
    assert_eq!(delivered(&evs), [] as [u64; 0]);
    assert!(matches!(
        evs.as_slice(),
        [LinkEvent::Disconnected {
            reason: Some(CloseReason::ProtocolError),
            ..
        }]
    ));
}

#[test]
fn hello_or_second_welcome_from_the_cloud_is_a_protocol_error() {
    let mut hello = Vec::new();
    let h = Hello {
        node_id: "cloud",
        protocol_version: PROTOCOL_VERSION,
        resume_seq: 0,
        capabilities: &[],
        received_seq: 0,
        store_id: 0,
    };
    FrameEncoder::default().hello(&h, &mut hello).unwrap();
    for bytes in [hello, welcome(0, 1000, 16)] {
        let mut l = link(0);
        bring_up(&mut l, 0, &welcome(0, 1000, 16));
        l.handle_bytes(&bytes, 1);
        let (sent, closed) = transmit(&mut l, 1);
        assert_eq!(
            (sent, closed),
            (vec![Sent::Close(CloseReason::ProtocolError)], true)
        );
        assert_eq!(ended(&mut l), Some(CloseReason::ProtocolError));
    }
}

#[test]
fn welcome_with_another_version_is_refused() {
    let mut l = link(0);
    connect(&mut l, 0);
    let mut bytes = Vec::new();
    let w = Welcome {
        protocol_version: PROTOCOL_VERSION + 1,
        ..Welcome::default()
    };
    FrameEncoder::default().welcome(&w, &mut bytes).unwrap();
    l.handle_bytes(&bytes, 1);
    assert!(!l.is_up());
    assert_eq!(
        transmit(&mut l, 1).0,
        [Sent::Close(CloseReason::VersionMismatch)]
    );
}

#[test]
fn batches_respect_the_clouds_frame_limit_and_skip_what_never_fits() {
    let mut l = link(0);
    bring_up(&mut l, 0, &welcome_max(0, 1000, 100, 1024));
    l.handle_outbox(1, up_msg(5000));
    for seq in 2..=11 {
        l.handle_outbox(seq, up_msg(300));
    }
    let mut seqs = Vec::new();
    while let Some(t) = l.poll_transmit(1) {
        for frame in decode(&t.bytes) {
            let Sent::Batch(s) = frame else {
                panic!("{frame:?}")
            };
            assert!(t.bytes.len() <= 1024 + schema::PREFIX_LEN);
            assert!(s.len() >= 2, "frames are filled: {s:?}");
            seqs.extend(s);
        }
    }
    assert_eq!(seqs, (2..=11).collect::<Vec<_>>());
    assert_eq!(l.oversized_dropped(), 1);
}

#[test]
fn disconnect_while_connecting_counts_as_a_failed_attempt() {
    let mut l = link(0);
    assert!(l.poll_connect(0));
    l.handle_disconnected(0);
    assert_eq!(events(&mut l), NO_EVENTS, "no connection was up");
    assert!(l.poll_timeout().unwrap() >= 250);
}

#[test]
fn commits_while_down_travel_in_hello_not_in_an_ack() {
    let mut l = link(0);
    bring_up(&mut l, 0, &welcome(0, 1000, 16));
    l.handle_bytes(&batch(&[down(1), down(2)]), 1);
    l.handle_disconnected(2);
    l.handle_committed(2);
    let at = l.poll_timeout().unwrap();
    assert_eq!(connect(&mut l, at), [hello(2, 2)]);
    l.handle_bytes(&welcome(0, 1000, 16), at);
    assert_eq!(transmit(&mut l, at).0, NOTHING, "no Ack repeats the Hello");
}

#[test]
fn a_frame_over_the_limit_closes_with_frame_too_large() {
    let mut config = LinkConfig::new("node-a");
    config.max_frame_bytes = 1024;
    let mut l = Link::new(config, 0, 1, 0);
    bring_up(&mut l, 0, &welcome(0, 1000, 16));
    let mut big = down(1);
    big.content = vec![b'x'; 2000];
    l.handle_bytes(&batch(&[big]), 1);
    assert_eq!(
        transmit(&mut l, 1),
        (vec![Sent::Close(CloseReason::FrameTooLarge)], true)
    );
    assert_eq!(ended(&mut l), Some(CloseReason::FrameTooLarge));
}

#[test]
fn an_idle_link_with_a_live_cloud_stays_up_on_keepalives_alone() {
    let mut l = link(0);
    bring_up(&mut l, 0, &welcome(0, 1000, 16));
    let mut now = 0;
    let mut keepalives = 0;
    while now < 3_600_000 {
        let at = l.poll_timeout().unwrap();
        assert!(at > now, "poll_timeout moves forward: {at} after {now}");
        now = at;
        l.handle_timeout(now);
        let (sent, closed) = transmit(&mut l, now);
        assert!(!closed && l.is_up(), "closed at {now}");
        assert_eq!(sent, [Sent::Keepalive], "at {now}");
        keepalives += 1;
        l.handle_bytes(&keepalive(), now);
    }
    assert_eq!(keepalives, 3600);
}
