//! The manifest directory `cloudcontrol` reads in the fan-out scenario:
//! one edge Node per fleet node, one Pod bound to each that takes its
//! environment from the ConfigMap [`CONFIG_NAME`], and that ConfigMap,
//! whose data value carries the number of the update that wrote it.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

/// The ConfigMap every Pod references.
pub const CONFIG_NAME: &str = "fleet-config";

/// What precedes the update number in the ConfigMap's JSON as
/// `cloudcontrol` sends it (`data.payload` begins with `u<number>-`).
const MARKER: &[u8] = br#""payload":"u"#;

/// Writes the Nodes, Pods and the first ConfigMap (update 0) into `dir`.
pub fn write_fleet(dir: &Path, nodes: &[String], payload: usize) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut text = String::with_capacity(nodes.len() * 160);
    for node in nodes {
        let _ = write!(
            text,
            "---\napiVersion: v1\nkind: Node\nmetadata:\n  name: {node}\n  labels:\n    \
             node-role.kubernetes.io/edge: \"\"\n"
        );
    }
    std::fs::write(dir.join("nodes.yaml"), &text)?;
    text.clear();
    for node in nodes {
        let _ = write!(
            text,
            "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: app-{node}\n  namespace: default\n\
             spec:\n  nodeName: {node}\n  containers:\n    - name: app\n      image: busybox:1.36\n\
             \x20     envFrom:\n        - configMapRef:\n            name: {CONFIG_NAME}\n"
        );
    }
    std::fs::write(dir.join("pods.yaml"), &text)?;
    write_config(dir, 0, payload)
}

/// Replaces the ConfigMap with the value of `update`, atomically (a
/// rename), so that `cloudcontrol` never reads half a file.
pub fn write_config(dir: &Path, update: u64, payload: usize) -> std::io::Result<()> {
    let text = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {CONFIG_NAME}\n  namespace: default\n\
         data:\n  payload: \"{}\"\n",
        value(update, payload)
    );
    // Not a manifest extension until renamed.
    let partial = dir.join("config.yaml.partial");
    let mut f = std::fs::File::create(&partial)?;
    f.write_all(text.as_bytes())?;
    drop(f);
    std::fs::rename(partial, dir.join("config.yaml"))
}

/// The data value of `update`: `u<update>-` then filler up to `payload`
/// bytes.
pub fn value(update: u64, payload: usize) -> String {
    let mut v = format!("u{update:06}-");
    let fill = payload.saturating_sub(v.len());
    v.extend(std::iter::repeat_n('a', fill));
    v
}

/// The update number carried by a ConfigMap's JSON, if it is one of ours.
pub fn update_of(content: &[u8]) -> Option<u64> {
    let at = content.windows(MARKER.len()).position(|w| w == MARKER)? + MARKER.len();
    let digits = &content[at..];
    let len = digits
        .iter()
        .take(9)
        .take_while(|b| b.is_ascii_digit())
        .count();
    if len == 0 || digits.get(len) != Some(&b'-') {
        return None;
    }
    std::str::from_utf8(&digits[..len]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_update_number_survives_the_trip_through_json() {
        let json = serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": CONFIG_NAME, "resourceVersion": "7"},
            "data": {"payload": value(42, 256)},
        });
        let bytes = serde_json::to_vec(&json).unwrap();
        assert_eq!(update_of(&bytes), Some(42));
        assert_eq!(value(3, 256).len(), 256);
        assert_eq!(update_of(br#"{"kind":"Pod"}"#), None);
        assert_eq!(update_of(br#"{"payload":"u12x"}"#), None);
    }
}
