//! Kubernetes resource quantities (`500m`, `0.5`, `128Mi`, `1G`, `2e3`), as
//! far as limits for the runtime need them.

use serde_json::Value;

use crate::pod::Pod;

/// A quantity in thousandths of its unit (CPU in millicores, memory in
/// milli-bytes), or None when it is not a quantity.
fn milli(v: &Value) -> Option<u128> {
    let text = match v {
        Value::String(s) => s.trim().to_owned(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && frac.is_empty() || whole.len() > 20 || frac.contains('.') {
        return None;
    }
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let mut value = whole.checked_mul(1000)?;
    for (i, d) in frac.bytes().take(3).enumerate() {
        value += u128::from(d - b'0') * 10u128.pow(2 - i as u32);
    }
    let scale: u128 = match suffix {
        "" => 1,
        "m" => return Some(value / 1000),
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        e if e.starts_with(['e', 'E']) => 10u128.checked_pow(e[1..].parse().ok()?)?,
        _ => return None,
    };
    value.checked_mul(scale)
}

/// CPU in millicores: `"500m"` → 500, `"2"` → 2000.
pub(crate) fn cpu_millis(v: &Value) -> Option<u64> {
    milli(v).and_then(|m| u64::try_from(m).ok())
}

/// Memory in bytes: `"128Mi"` → 134217728.
pub(crate) fn bytes(v: &Value) -> Option<u64> {
    milli(v).and_then(|m| u64::try_from(m / 1000).ok())
}

/// The pod's QoS class by the kubelet's rules (`GetPodQOS`), over the CPU
/// and memory of its init and app containers: `BestEffort` when none asks
/// for any, `Guaranteed` when every container limits both and requests
/// what it limits (a request left out is its limit, as the API server
/// defaults it), `Burstable` otherwise.
pub(crate) fn qos_class(pod: &Pod) -> &'static str {
    let containers = pod.spec.init_containers.iter().chain(&pod.spec.containers);
    let (mut any, mut guaranteed) = (false, true);
    for c in containers {
        for resource in ["cpu", "memory"] {
            let amount = |v: Option<&Value>| v.and_then(milli).filter(|&m| m > 0);
            let limit = amount(c.resources.limits.get(resource));
            let request = match c.resources.requests.get(resource) {
                Some(v) => amount(Some(v)),
                None => limit,
            };
            any |= limit.is_some() || request.is_some();
            guaranteed &= limit.is_some() && request == limit;
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(resources: &[Value]) -> Pod {
        let containers: Vec<Value> = resources
            .iter()
            .enumerate()
            .map(|(i, r)| json!({"name": format!("c{i}"), "image": "i", "resources": r}))
            .collect();
        let pod = json!({"metadata": {"name": "p", "namespace": "default", "uid": "u"},
            "spec": {"containers": containers}});
        Pod::from_json(pod.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn the_qos_class_follows_the_kubelets_rules() {
        assert_eq!(qos_class(&pod(&[json!({})])), "BestEffort");
        let full = json!({"limits": {"cpu": "500m", "memory": "64Mi"}});
        assert_eq!(qos_class(&pod(&[full.clone(), full.clone()])), "Guaranteed");
        let same = json!({"limits": {"cpu": "1", "memory": "1Gi"},
            "requests": {"cpu": "1000m", "memory": "1Gi"}});
        assert_eq!(qos_class(&pod(&[same])), "Guaranteed");
        let less = json!({"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "100m"}});
        assert_eq!(qos_class(&pod(&[less])), "Burstable");
        let cpu_only = json!({"limits": {"cpu": "1"}});
        assert_eq!(qos_class(&pod(&[cpu_only])), "Burstable");
        assert_eq!(qos_class(&pod(&[full, json!({})])), "Burstable");
        let zero = json!({"requests": {"cpu": "0", "memory": "0"}});
        assert_eq!(qos_class(&pod(&[zero])), "BestEffort");
    }

    #[test]
    fn quantities_read_as_the_api_server_writes_them() {
        assert_eq!(cpu_millis(&json!("500m")), Some(500));
        assert_eq!(cpu_millis(&json!("2")), Some(2000));
        assert_eq!(cpu_millis(&json!("0.25")), Some(250));
        assert_eq!(cpu_millis(&json!(1)), Some(1000));
        assert_eq!(bytes(&json!("128Mi")), Some(128 << 20));
        assert_eq!(bytes(&json!("1G")), Some(1_000_000_000));
        assert_eq!(bytes(&json!("2e3")), Some(2000));
        assert_eq!(bytes(&json!("1.5Gi")), Some(3 << 29));
    }

    #[test]
    fn garbage_is_not_a_quantity() {
        for v in [
            json!("lots"),
            json!(""),
            json!("12Xi"),
            json!(null),
            json!("."),
            json!("1e99999"),
            json!("1.2.3"),
        ] {
            assert_eq!(bytes(&v), None, "{v}");
        }
        assert_eq!(bytes(&json!("99999999999999999999999Ti")), None);
    }
}
