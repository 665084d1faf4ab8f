//! Arbitrary bytes as a request to the MetaServer: the HTTP head parser
//! either asks for more, refuses with an error or yields a request within
//! the bytes given; its selectors parse or are refused, and a parsed one
//! is matched against a pod; nothing panics.
#![no_main]

use edge_core::metaserver::{Selector, parse_head};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(Some(head)) = parse_head(data) else {
        return;
    };
    assert!(head.len <= data.len());
    assert!(head.body <= 1 << 20);
    let pod = serde_json::json!({
        "metadata": {"name": "web-1", "namespace": "default", "labels": {"app": "web", "n": "3"}},
        "spec": {"nodeName": "edge-1"},
        "status": {"phase": "Running"},
    });
    let (labels, fields) = (
        head.request.param("labelSelector"),
        head.request.param("fieldSelector"),
    );
    for kind in ["pod", "secret", "node", "configmap", "device"] {
        if let Ok(selector) = Selector::parse(labels, fields, kind) {
            let _ = selector.matches(&pod);
        }
    }
});
