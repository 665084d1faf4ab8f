//! Arbitrary bytes from an MQTT client into the edge's embedded broker,
//! before and after a valid CONNECT: the broker answers, closes that client
//! or ignores; it never panics and never allocates what a header merely
//! declares.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    edge_core::broker::fuzz_bytes(data);
});
