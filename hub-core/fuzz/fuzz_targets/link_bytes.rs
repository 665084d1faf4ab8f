//! Arbitrary bytes from the cloud into an edge link that has just sent its
//! `Hello`: it delivers, closes or ignores; it never panics and what it sends
//! always decodes.
#![no_main]

use hub_core::link::{Link, LinkConfig};
use libfuzzer_sys::fuzz_target;
use schema::FrameDecoder;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, data)) = data.split_first() else {
        return;
    };
    let mut link = Link::new(
        LinkConfig::new("edge-1"),
        u64::from(mode),
        u64::from(mode),
        0,
    );
    if !link.poll_connect(0) {
        return;
    }
    link.handle_connected(0);
    let piece = usize::from(mode >> 4).max(1);
    let mut sent = FrameDecoder::default();
    for (i, chunk) in data.chunks(piece).enumerate() {
        link.handle_bytes(chunk, i as u64);
        link.handle_committed(i as u64);
        while let Some(t) = link.poll_transmit(i as u64) {
            sent.handle_bytes(&t.bytes);
            while sent
                .poll_frame()
                .expect("the link sends valid frames")
                .is_some()
            {}
        }
        while link.poll_event().is_some() {}
    }
});
