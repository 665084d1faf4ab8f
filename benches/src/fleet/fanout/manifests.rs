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

/// Nodes (and Pods) per manifest file: `cloudcontrol`'s YAML parser takes
/// at most 1024 documents per file.
const PER_FILE: usize = 1000;

/// Writes the Nodes, Pods and the first ConfigMap (update 0) into `dir`,
/// in files of at most [`PER_FILE`] objects.
pub fn write_fleet(dir: &Path, nodes: &[String], payload: usize) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut text = String::with_capacity(PER_FILE * 200);
    for (i, chunk) in nodes.chunks(PER_FILE).enumerate() {
        text.clear();
        for node in chunk {
            let _ = write!(
                text,
                "---\napiVersion: v1\nkind: Node\nmetadata:\n  name: {node}\n  labels:\n    \
                 node-role.kubernetes.io/edge: \"\"\n"
            );
        }
        std::fs::write(dir.join(format!("nodes-{i:04}.yaml")), &text)?;
        text.clear();
        for node in chunk {
            let _ = write!(
                text,
                "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: app-{node}\n  namespace: default\n\
                 spec:\n  nodeName: {node}\n  containers:\n    - name: app\n      image: busybox:1.36\n\
                 \x20     envFrom:\n        - configMapRef:\n            name: {CONFIG_NAME}\n"
            );
        }
        std::fs::write(dir.join(format!("pods-{i:04}.yaml")), &text)?;
    }
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

    #[test]
    fn a_large_fleet_is_split_into_files_cloudcontrol_accepts() {
        let dir = tempfile::tempdir().unwrap();
        let names: Vec<String> = (0..2500).map(|i| format!("node-{i:06}")).collect();
        write_fleet(dir.path(), &names, 64).unwrap();
        let (mut nodes, mut pods) = (0, 0);
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            assert!(text.matches("---\n").count() <= 1024);
            nodes += text.matches("kind: Node\n").count();
            pods += text.matches("nodeName: node-").count();
        }
        assert_eq!((nodes, pods), (2500, 2500));
    }
}
