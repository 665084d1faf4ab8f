//! The entry of the fuzz targets and the garbage-input tests: arbitrary bytes
//! into a fresh broker, with time as a made-up number.

use super::{Broker, BrokerConfig, ConnId};

/// Feeds arbitrary bytes to a fresh broker core, as a fuzz target does.
///
/// The first byte chooses a prefix: nothing, or a valid MQTT 3.1.1 or 5
/// CONNECT (so later bytes reach the connected states); the rest is cut into
/// reads of the size the second byte gives. Must never panic.
pub fn fuzz_bytes(data: &[u8]) {
    const V3: &[u8] = &[0x10, 12, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 30, 0, 0];
    const V5: &[u8] = &[0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 5, 2, 0, 30, 0, 0, 0];
    let mut cfg = BrokerConfig {
        max_packet_size: 4096,
        ..BrokerConfig::default()
    };
    cfg.max_queued_messages = 64;
    let mut b = Broker::new(cfg);
    let conn = ConnId(1);
    let sub = ConnId(2);
    b.handle_connect(conn, 0);
    b.handle_connect(sub, 0);
    // A second client subscribed to everything receives what the first routes.
    b.handle_bytes(
        sub,
        &[0x10, 12, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 30, 0, 0],
        0,
    );
    b.handle_bytes(sub, &[0x82, 6, 0, 1, 0, 1, b'#', 1], 0);
    let (first, rest) = data.split_first().unwrap_or((&0, &[]));
    match first % 3 {
        1 => b.handle_bytes(conn, V3, 1),
        2 => b.handle_bytes(conn, V5, 1),
        _ => {}
    }
    let (step, body) = match rest.split_first() {
        Some((s, body)) => (usize::from(*s).max(1), body),
        None => (7, rest),
    };
    for (i, chunk) in body.chunks(step).enumerate() {
        let now = 2 + i as u64 * 1000;
        b.handle_bytes(conn, chunk, now);
        while let Some(t) = b.poll_transmit() {
            b.handle_sent(t.conn);
        }
        while b.poll_local().is_some() {}
        b.handle_timeout(now);
    }
    b.handle_disconnect(conn, u64::MAX / 4);
    b.handle_timeout(u64::MAX / 2);
    while let Some(t) = b.poll_transmit() {
        b.handle_sent(t.conn);
    }
}
