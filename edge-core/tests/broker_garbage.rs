//! Garbage into the broker core: random bytes, and valid MQTT streams with
//! random corruption, through `broker::fuzz_bytes` (what the cargo-fuzz target
//! calls). Nothing may panic or allocate what a length field claims.

use edge_core::broker::fuzz_bytes;
use proptest::prelude::*;

/// A valid stream after the CONNECT that `fuzz_bytes` prefixes: SUBSCRIBE
/// `$hw/#` QoS 1, PUBLISH QoS 1 and QoS 0 on `$hw/x`, PINGREQ, PUBACK,
/// UNSUBSCRIBE, DISCONNECT.
const STREAM: &[u8] = &[
    0x82, 10, 0, 1, 0, 5, b'$', b'h', b'w', b'/', b'#', 1, // SUBSCRIBE $hw/#
    0x32, 9, 0, 5, b'$', b'h', b'w', b'/', b'x', 0, 2, // QoS 1 publish, pid 2, empty payload
    0x30, 8, 0, 5, b'$', b'h', b'w', b'/', b'x', b'!', // QoS 0 publish
    0xc0, 0, // PINGREQ
    0x40, 2, 0, 1, // PUBACK
    0xa2, 7, 0, 3, 0, 3, b'a', b'/', b'#', // UNSUBSCRIBE
    0xe0, 0, // DISCONNECT
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 100_000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..400)) {
        fuzz_bytes(&data);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 20_000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn corrupted_valid_streams_never_panic(
        prefix in 0u8..3,
        step in 1u8..40,
        flips in prop::collection::vec((0usize..STREAM.len(), any::<u8>()), 0..4),
        cut in 0usize..=STREAM.len(),
    ) {
        let mut data = vec![prefix, step];
        data.extend_from_slice(&STREAM[..cut]);
        for (i, b) in flips {
            if let Some(x) = data.get_mut(2 + i) {
                *x = b;
            }
        }
        fuzz_bytes(&data);
    }
}
