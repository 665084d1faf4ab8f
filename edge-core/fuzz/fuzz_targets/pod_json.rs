//! Arbitrary bytes as a stored Pod, read by Edged and planned against an
//! empty runtime: a Pod that is not one is refused with an error; one that
//! is gets its operations and status; nothing panics.
#![no_main]

use std::collections::BTreeMap;

use edged::{Edged, EdgedConfig, Objects, Observed, Pod, PodKey};
use libfuzzer_sys::fuzz_target;

struct NoObjects;

impl Objects for NoObjects {
    fn config_map(&self, _: &str, _: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        None
    }
    fn secret(&self, _: &str, _: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        None
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(pod) = Pod::from_json(data) else { return };
    let key = PodKey::new(&pod.namespace, &pod.name);
    let mut edged = Edged::new(EdgedConfig {
        host_ip: "10.0.0.2".into(),
        runtime_name: "containerd".into(),
        log_root: "/var/log/pods".into(),
        root_directory: "/var/lib/edged".into(),
        resync_ms: 10_000,
    });
    edged.handle_pod(pod, 1_000);
    if edged.poll_sync(1_000).is_some() {
        let _ = edged.handle_observed(&key, &Observed::default(), &NoObjects, 1_000);
    }
    let _ = edged.poll_status();
    let _ = edged.poll_probe(1_000);
});
