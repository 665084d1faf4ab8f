//! Kubernetes resource quantities (`500m`, `0.5`, `128Mi`, `1G`, `2e3`), as
//! far as limits for the runtime need them.

use serde_json::Value;

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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
