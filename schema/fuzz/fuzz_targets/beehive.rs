//! Beehive JSON from a KubeEdge peer: anything accepted converts back and
//! forth without loss.
#![no_main]

use libfuzzer_sys::fuzz_target;
use schema::beehive;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = beehive::from_json(data) {
        let json = beehive::to_json(&message);
        assert_eq!(beehive::from_json(json.as_bytes()).unwrap(), message);
    }
});
