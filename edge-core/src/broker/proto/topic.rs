//! Topic filter matching (MQTT 4.7), `$`-topics included.
//!
//! A filter whose first level is `+` or `#` never matches a topic that starts
//! with `$` (MQTT-4.7.2-1); a filter that names the `$` level explicitly, such
//! as `$hw/events/device/+/twin/update`, matches like any other.

/// Whether `filter` (already validated) matches `topic`.
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// The topics KubeEdge's EventBus subscribes to for DeviceTwin and upstream.
pub const KUBEEDGE_TOPICS: [&str; 5] = [
    "$hw/events/device/+/twin/update",
    "$hw/events/device/+/twin/get",
    "$hw/events/device/+/state/update",
    "$hw/events/node/+/membership/get",
    "$hw/events/upload/#",
];

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn plain_and_wildcards() {
        assert!(matches("a/b", "a/b"));
        assert!(!matches("a/b", "a/c"));
        assert!(matches("a/+", "a/b"));
        assert!(!matches("a/+", "a/b/c"));
        assert!(matches("a/#", "a/b/c"));
        assert!(matches("a/#", "a"));
        assert!(matches("#", "a/b"));
        assert!(matches("+/+", "/x"));
        assert!(!matches("a/b/c", "a/b"));
        assert!(matches("a/+/c", "a//c"));
    }

    #[test]
    fn dollar_topics() {
        assert!(!matches("#", "$hw/events/upload/x"));
        assert!(!matches("+/events/upload/x", "$hw/events/upload/x"));
        assert!(matches("$hw/events/upload/#", "$hw/events/upload/x"));
        assert!(matches(
            "$hw/events/device/+/twin/update",
            "$hw/events/device/d1/twin/update"
        ));
        assert!(!matches(
            "$hw/events/device/+/twin/update",
            "$hw/events/device/d1/twin/update/delta"
        ));
        assert!(matches("$hw/#", "$hw/events"));
    }
}
