//! What the MetaServer's paths mean: the served resources, the routing of
//! a path to a list, a get or a discovery document, and those documents.

use schema::kinds::{DEVICES_API_VERSION, Kind, SERVED};
use serde_json::{Value, json};

/// A resource the MetaServer serves: one of Apiary's served kinds.
pub type Resource = Kind;

const DEVICES_GV: &str = DEVICES_API_VERSION;

/// The served kinds of one group version.
fn table(group_version: &str) -> impl Iterator<Item = Resource> {
    SERVED
        .iter()
        .copied()
        .filter(move |k| k.api_version == group_version)
}

/// What a path asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// A fixed discovery document.
    Discovery(Value),
    List {
        resource: Resource,
        namespace: Option<String>,
    },
    Get {
        resource: Resource,
        namespace: String,
        name: String,
    },
    /// A container's log (`pods/{name}/log`).
    Log {
        namespace: String,
        name: String,
    },
    /// A command run in a container (`pods/{name}/exec`).
    Exec {
        namespace: String,
        name: String,
    },
    NotFound,
}

/// Maps a path to what it asks for.
pub fn route(path: &str) -> Route {
    let path = path.trim_end_matches('/');
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segs.as_slice() {
        ["version"] => Route::Discovery(version()),
        ["api"] => Route::Discovery(json!({
            "kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}]
        })),
        ["api", "v1"] => Route::Discovery(resource_list("v1")),
        ["apis"] => Route::Discovery(group_list()),
        ["apis", "devices.kubeedge.io"] => Route::Discovery(group()),
        ["apis", "devices.kubeedge.io", "v1beta1"] => Route::Discovery(resource_list(DEVICES_GV)),
        ["api", "v1", rest @ ..] => resource_route("v1", rest),
        ["apis", "devices.kubeedge.io", "v1beta1", rest @ ..] => resource_route(DEVICES_GV, rest),
        _ => Route::NotFound,
    }
}

fn resource_route(group_version: &str, rest: &[&str]) -> Route {
    let find = |p: &str| table(group_version).find(|r| r.plural == p);
    match rest {
        [plural] => find(plural).map_or(Route::NotFound, |resource| Route::List {
            resource,
            namespace: None,
        }),
        [plural, name] => match find(plural) {
            // Cluster-scoped objects live in namespace "default" on the link.
            Some(resource) if !resource.namespaced => Route::Get {
                resource,
                namespace: "default".to_owned(),
                name: (*name).to_owned(),
            },
            _ => Route::NotFound,
        },
        ["namespaces", ns, plural] => match find(plural) {
            Some(resource) if resource.namespaced => Route::List {
                resource,
                namespace: Some((*ns).to_owned()),
            },
            _ => Route::NotFound,
        },
        ["namespaces", ns, "pods", name, "log"] if group_version == "v1" => Route::Log {
            namespace: (*ns).to_owned(),
            name: (*name).to_owned(),
        },
        ["namespaces", ns, "pods", name, "exec"] if group_version == "v1" => Route::Exec {
            namespace: (*ns).to_owned(),
            name: (*name).to_owned(),
        },
        ["namespaces", ns, plural, name] => match find(plural) {
            Some(resource) if resource.namespaced => Route::Get {
                resource,
                namespace: (*ns).to_owned(),
                name: (*name).to_owned(),
            },
            _ => Route::NotFound,
        },
        _ => Route::NotFound,
    }
}

fn version() -> Value {
    json!({
        "major": "1", "minor": "34",
        "gitVersion": format!("v1.34.0-apiary-{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "", "gitTreeState": "clean", "buildDate": "",
        "goVersion": "", "compiler": "rustc", "platform": "linux",
    })
}

fn resource_list(group_version: &str) -> Value {
    let mut resources: Vec<Value> = table(group_version)
        .map(|r| {
            json!({
                "name": r.plural, "singularName": r.kind, "namespaced": r.namespaced,
                "kind": r.type_name, "verbs": ["get", "list", "watch"],
            })
        })
        .collect();
    if group_version == "v1" {
        resources.push(
            json!({"name": "pods/log", "singularName": "", "namespaced": true,
                              "kind": "Pod", "verbs": ["get"]}),
        );
    }
    json!({"kind": "APIResourceList", "apiVersion": "v1",
           "groupVersion": group_version, "resources": resources})
}

fn group() -> Value {
    json!({
        "kind": "APIGroup", "apiVersion": "v1", "name": "devices.kubeedge.io",
        "versions": [{"groupVersion": DEVICES_GV, "version": "v1beta1"}],
        "preferredVersion": {"groupVersion": DEVICES_GV, "version": "v1beta1"},
    })
}

fn group_list() -> Value {
    let mut g = group();
    if let Some(o) = g.as_object_mut() {
        o.remove("kind");
        o.remove("apiVersion");
    }
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [g]})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let list = |p| match route(p) {
            Route::List {
                resource,
                namespace,
            } => Some((resource.kind, namespace)),
            _ => None,
        };
        assert_eq!(list("/api/v1/pods"), Some(("pod", None)));
        assert_eq!(
            list("/api/v1/namespaces/ns/configmaps/"),
            Some(("configmap", Some("ns".to_owned())))
        );
        assert_eq!(
            list("/apis/devices.kubeedge.io/v1beta1/namespaces/d/devices"),
            Some(("device", Some("d".to_owned())))
        );
        assert_eq!(list("/api/v1/nodes"), Some(("node", None)));
        assert!(
            matches!(route("/api/v1/nodes/n1"), Route::Get { ref namespace, .. } if namespace == "default")
        );
        assert!(matches!(route("/api/v1/pods/p"), Route::NotFound));
        assert_eq!(
            route("/api/v1/namespaces/ns/pods/web-1/log"),
            Route::Log {
                namespace: "ns".to_owned(),
                name: "web-1".to_owned()
            }
        );
        assert!(matches!(
            route("/api/v1/namespaces/ns/configmaps/c/log"),
            Route::NotFound
        ));
        assert!(matches!(
            route("/api/v1/namespaces/x/nodes"),
            Route::NotFound
        ));
        assert!(matches!(route("/api/v1/widgets"), Route::NotFound));
        assert!(matches!(route("/apis"), Route::Discovery(_)));
        assert!(matches!(route("/../../etc/passwd"), Route::NotFound));
    }
}
