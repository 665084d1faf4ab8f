//! Arbitrary bytes from a connection into the hub, after a valid `Hello` or
//! instead of one: the hub answers, closes, or ignores; it never panics and
//! its answers always decode.
#![no_main]

use hub_core::protocol::CAPABILITIES;
use hub_core::{Hub, HubConfig, PROTOCOL_VERSION};
use libfuzzer_sys::fuzz_target;
use schema::frames::Hello;
use schema::{FrameDecoder, FrameEncoder};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, data)) = data.split_first() else {
        return;
    };
    let mut hub = Hub::new(HubConfig {
        max_frame_bytes: 1 << 16,
        ..HubConfig::default()
    });
    hub.handle_connect(1, Some("edge-1"), 0);
    if mode & 1 == 1 {
        let mut hello = Vec::new();
        let h = Hello {
            node_id: "edge-1",
            protocol_version: PROTOCOL_VERSION,
            resume_seq: u64::from(mode >> 1),
            capabilities: CAPABILITIES,
            received_seq: u64::from(mode),
            store_id: u64::from(mode >> 2),
        };
        FrameEncoder::default()
            .hello(&h, &mut hello)
            .expect("Hello encodes");
        hub.handle_bytes(1, &hello, 0);
    }
    let piece = usize::from(mode >> 4).max(1);
    let mut answers = FrameDecoder::default();
    for (i, chunk) in data.chunks(piece).enumerate() {
        hub.handle_bytes(1, chunk, i as u64);
        while let Some((_, t)) = hub.poll_transmit(i as u64) {
            answers.handle_bytes(&t.bytes);
            while answers
                .poll_frame()
                .expect("the hub sends valid frames")
                .is_some()
            {}
        }
        while hub.poll_event().is_some() {}
    }
    hub.handle_timeout(1_000_000);
    while hub.poll_transmit(1_000_000).is_some() {}
});
