//! A container's environment as the kubelet makes it: `envFrom` first, then
//! `env` (later names win), values from ConfigMaps, Secrets and the pod's
//! own fields, and `$(VAR)` references expanded in values, command and args.

use std::collections::BTreeMap;

use crate::pod::{Container, KeySelector, Objects, Pod};

/// What the pod's fields resolve against besides the pod itself.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Addresses<'a> {
    pub(crate) pod_ip: &'a str,
    pub(crate) host_ip: &'a str,
}

/// The environment of `c`, in order, or the kubelet's
/// `CreateContainerConfigError` message.
pub(crate) fn resolve(
    pod: &Pod,
    c: &Container,
    objects: &dyn Objects,
    at: Addresses<'_>,
) -> Result<Vec<(String, String)>, String> {
    let mut env: Vec<(String, String)> = Vec::new();
    let set = |env: &mut Vec<(String, String)>, name: String, value: String| match env
        .iter_mut()
        .find(|(n, _)| *n == name)
    {
        Some(slot) => slot.1 = value,
        None => env.push((name, value)),
    };
    for from in &c.env_from {
        let (source, kind, name, optional) = match (&from.config_map_ref, &from.secret_ref) {
            (Some(r), _) => (
                objects.config_map(&pod.namespace, &r.name),
                "configmap",
                &r.name,
                r.optional,
            ),
            (None, Some(r)) => (
                objects.secret(&pod.namespace, &r.name),
                "secret",
                &r.name,
                r.optional,
            ),
            (None, None) => continue,
        };
        match source {
            Some(data) => {
                for (k, v) in data {
                    set(
                        &mut env,
                        format!("{}{k}", from.prefix),
                        String::from_utf8_lossy(&v).into_owned(),
                    );
                }
            }
            None if optional => {}
            None => return Err(format!("{kind} \"{name}\" not found")),
        }
    }
    for var in &c.env {
        let value = match (&var.value, &var.value_from) {
            (_, Some(from)) => {
                if let Some(r) = &from.config_map_key_ref {
                    key(
                        pod,
                        r,
                        "ConfigMap",
                        objects.config_map(&pod.namespace, &r.name),
                    )?
                } else if let Some(r) = &from.secret_key_ref {
                    key(pod, r, "Secret", objects.secret(&pod.namespace, &r.name))?
                } else if let Some(f) = &from.field_ref {
                    Some(field(pod, &f.field_path, at)?)
                } else {
                    None
                }
            }
            (Some(v), None) => Some(expand(v, &env)),
            (None, None) => Some(String::new()),
        };
        if let Some(value) = value {
            set(&mut env, var.name.clone(), value);
        }
    }
    Ok(env)
}

/// One key of a ConfigMap or Secret; None when optional and absent.
fn key(
    pod: &Pod,
    r: &KeySelector,
    kind: &str,
    data: Option<BTreeMap<String, Vec<u8>>>,
) -> Result<Option<String>, String> {
    let Some(data) = data else {
        return if r.optional {
            Ok(None)
        } else {
            Err(format!("{} \"{}\" not found", kind.to_lowercase(), r.name))
        };
    };
    match data.get(&r.key) {
        Some(v) => Ok(Some(String::from_utf8_lossy(v).into_owned())),
        None if r.optional => Ok(None),
        None => Err(format!(
            "couldn't find key {} in {kind} {}/{}",
            r.key, pod.namespace, r.name
        )),
    }
}

/// A `fieldRef`, for the paths the kubelet supports.
fn field(pod: &Pod, path: &str, at: Addresses<'_>) -> Result<String, String> {
    let within = |prefix: &str, map: &BTreeMap<String, String>| {
        path.strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix("['"))
            .and_then(|rest| rest.strip_suffix("']"))
            .map(|k| map.get(k).cloned().unwrap_or_default())
    };
    Ok(match path {
        "metadata.name" => pod.name.clone(),
        "metadata.namespace" => pod.namespace.clone(),
        "metadata.uid" => pod.uid.clone(),
        "spec.nodeName" => pod.spec.node_name.clone(),
        "spec.serviceAccountName" => pod.spec.service_account_name.clone(),
        "status.podIP" | "status.podIPs" => at.pod_ip.to_owned(),
        "status.hostIP" | "status.hostIPs" => at.host_ip.to_owned(),
        _ => within("metadata.labels", &pod.labels)
            .or_else(|| within("metadata.annotations", &pod.annotations))
            .ok_or_else(|| format!("unsupported fieldRef path {path:?}"))?,
    })
}

/// `$(NAME)` replaced by NAME's value where it is defined; `$$` is a
/// literal `$`; anything else is left as written (the kubelet's rules).
pub(crate) fn expand(text: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some((name, tail)) = after.strip_prefix('(').and_then(|a| a.split_once(')')) {
            match env.iter().rev().find(|(n, _)| n == name) {
                Some((_, v)) => out.push_str(v),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = tail;
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Store;
    impl Objects for Store {
        fn config_map(&self, ns: &str, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
            (ns == "default" && name == "settings").then(|| {
                BTreeMap::from([
                    ("mode".into(), b"fast".to_vec()),
                    ("level".into(), b"3".to_vec()),
                ])
            })
        }
        fn secret(&self, ns: &str, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
            (ns == "default" && name == "creds")
                .then(|| BTreeMap::from([("password".into(), b"hunter2".to_vec())]))
        }
    }

    fn pod(env: serde_json::Value) -> Pod {
        Pod::from_value(json!({
            "metadata": {"name": "web", "uid": "u1", "labels": {"app": "web"}},
            "spec": {"nodeName": "edge-1", "containers": [{"name": "a", "image": "i", "env": env,
                "envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}]}]}
        }))
        .unwrap()
    }

    const AT: Addresses<'static> = Addresses {
        pod_ip: "10.0.0.5",
        host_ip: "192.168.1.2",
    };

    #[test]
    fn env_comes_from_values_objects_and_fields_with_later_names_winning() {
        let p = pod(json!([
            {"name": "GREETING", "value": "hello $(CFG_mode) $$(x) $(NOPE)"},
            {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}},
            {"name": "PASS", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "CFG_level", "value": "9"},
        ]));
        let env = resolve(&p, &p.spec.containers[0], &Store, AT).unwrap();
        let get = |n: &str| env.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
        assert_eq!(get("GREETING"), Some("hello fast $(x) $(NOPE)"));
        assert_eq!(get("MODE"), Some("fast"));
        assert_eq!(get("PASS"), Some("hunter2"));
        assert_eq!(get("NODE"), Some("edge-1"));
        assert_eq!(get("APP"), Some("web"));
        assert_eq!(get("IP"), Some("10.0.0.5"));
        assert_eq!(get("CFG_level"), Some("9"));
        assert_eq!(env.iter().filter(|(k, _)| k == "CFG_level").count(), 1);
    }

    #[test]
    fn a_missing_object_or_key_is_the_kubelets_config_error_unless_optional() {
        let missing = pod(
            json!([{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "k"}}}]),
        );
        assert_eq!(
            resolve(&missing, &missing.spec.containers[0], &Store, AT),
            Err("configmap \"gone\" not found".into())
        );
        let no_key = pod(
            json!([{"name": "X", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "k"}}}]),
        );
        assert_eq!(
            resolve(&no_key, &no_key.spec.containers[0], &Store, AT),
            Err("couldn't find key k in Secret default/creds".into())
        );
        let optional = pod(
            json!([{"name": "X", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "k", "optional": true}}}]),
        );
        let env = resolve(&optional, &optional.spec.containers[0], &Store, AT).unwrap();
        assert!(env.iter().all(|(k, _)| k != "X"));
    }

    #[test]
    fn expansion_leaves_what_it_cannot_resolve() {
        let env = vec![("A".to_owned(), "1".to_owned())];
        assert_eq!(expand("$(A)-$(B)-$$-$-$(", &env), "1-$(B)-$-$-$(");
        assert_eq!(expand("", &env), "");
    }
}
