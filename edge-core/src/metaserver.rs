//! MetaServer: a read-only Kubernetes-style HTTP API over the local store,
//! so kubectl and client libraries on the node work offline.
//!
//! Discovery (`/version`, `/api`, `/api/v1`, `/apis`, the devices group),
//! list and get of pods, configmaps, secrets, nodes (cluster-scoped) and
//! devices/devicemodels, namespaced and across namespaces, containers'
//! logs (`pods/{name}/log`, `logs`) and exec (`pods/{name}/exec`, `exec`),
//! `Status` JSON
//! errors, and watch (`?watch=true`): newline-delimited events, first what
//! changed after `resourceVersion` (everything when it is absent or 0),
//! then live changes, in a chunked response until `timeoutSeconds`; with
//! `sendInitialEvents=true` (a streaming list) the current state, then a
//! bookmark annotated `k8s.io/initial-events-end`.
//! Lists are paged with `limit` and `continue` (`list`).
//! Lists and watches take label and field selectors (`selector`); a
//! selector's watch sends objects entering and leaving the selection as
//! `ADDED` and `DELETED` (`watch::Selection`).
//! resourceVersions are the cloud's; a list's is the highest the store has
//! seen.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use monoio::io::{AsyncReadRent, AsyncWriteRent, Split};
use monoio::net::{TcpListener, TcpStream};
use serde_json::{Value, json};

use crate::store::{Change, Store};

mod access;
mod exec;
mod http;
mod list;
mod logs;
mod routes;
mod selector;
mod stream;
mod table;
mod watch;

pub use access::{Access, AccessError};
pub use http::{Head, HttpError, Request, parse_head};
pub use routes::{Resource, Route, route};
pub use selector::{Selector, SelectorError};
use stream::{Watch, watch};
use watch::Selection;
pub use watch::Watches;

/// Time a connection may take to send a whole request, or stay idle.
const IDLE: Duration = Duration::from_secs(60);

/// What the MetaServer's tasks read: the store, the open watches that the
/// daemon hands every committed change to, Edged's pod statuses, and
/// what serving logs and exec needs.
#[derive(Debug)]
pub struct Source {
    pub access: Access,
    /// `podLogsDir`: where the runtime writes the containers' logs.
    pub log_root: String,
    pub store: Store,
    pub watches: Rc<RefCell<Watches>>,
    pub statuses: Rc<RefCell<PodStatuses>>,
    /// Edged, which asks the runtime to exec (None: Edged is disabled).
    pub exec: Option<crate::workloads::Workloads>,
}

/// The pod statuses Edged reported, served with the pods as the API
/// server serves what a kubelet wrote.
#[derive(Debug, Default)]
pub struct PodStatuses(std::collections::BTreeMap<(String, String), Value>);

impl PodStatuses {
    /// Records `status`; false when it is what was there.
    pub fn set(&mut self, namespace: &str, name: &str, status: Value) -> bool {
        let key = (namespace.to_owned(), name.to_owned());
        self.0.insert(key, status.clone()) != Some(status)
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<&Value> {
        self.0.get(&(namespace.to_owned(), name.to_owned()))
    }

    pub fn remove(&mut self, namespace: &str, name: &str) {
        self.0.remove(&(namespace.to_owned(), name.to_owned()));
    }
}

/// Accepts connections until the process ends; one task per connection.
pub async fn serve(listener: TcpListener, source: Source) {
    let shared = Rc::new(source);
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                monoio::spawn(connection(stream, shared.clone()));
            }
            Err(e) => {
                tracing::warn!("MetaServer accept: {e}");
                monoio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn connection(stream: TcpStream, shared: Rc<Source>) {
    let Some(tls) = shared.access.tls.clone() else {
        return requests(stream, shared).await;
    };
    match monoio::time::timeout(IDLE, tls.accept(stream)).await {
        Ok(Ok(stream)) => requests(stream, shared).await,
        Ok(Err(e)) => tracing::debug!("MetaServer TLS handshake: {e}"),
        Err(_) => tracing::debug!("MetaServer TLS handshake timed out"),
    }
}

/// Serves the requests of one connection, plain or TLS.
async fn requests<S>(mut stream: S, shared: Rc<Source>)
where
    S: AsyncReadRent + AsyncWriteRent + Split + 'static,
{
    let mut buf = Vec::new();
    loop {
        // An idle or trickling client is dropped after a minute.
        let read = monoio::time::timeout(IDLE, http::read_request(&mut stream, &mut buf)).await;
        let req = match read {
            Err(_) | Ok(Ok(None)) => return,
            Ok(Ok(Some(req))) => req,
            Ok(Err(e)) => {
                let status = match e {
                    http::HttpError::TooLarge => 431,
                    _ => 400,
                };
                let body = status_json(status, "BadRequest", &e.to_string(), None);
                let _ = http::write_json(&mut stream, status, body, true).await;
                return;
            }
        };
        // An exec takes the connection over (an unauthorised one is
        // answered 401 below).
        if let Route::Exec { namespace, name } = route(&req.path)
            && shared.access.allows(&req.authorization)
        {
            return exec::serve(stream, &req, &shared, &namespace, &name).await;
        }
        let close = req.close;
        let done = match respond(&mut stream, &req, &shared).await {
            Ok(watched) => watched || close,
            Err(_) => true,
        };
        if done {
            return;
        }
    }
}

/// Answers one request; true when the connection must end (a watch).
async fn respond<S: AsyncWriteRent>(
    stream: &mut S,
    req: &Request,
    shared: &Source,
) -> std::io::Result<bool> {
    if !shared.access.allows(&req.authorization) {
        let body = status_json(401, "Unauthorized", "Unauthorized", None);
        http::write_json(stream, 401, body, req.close).await?;
        return Ok(false);
    }
    if req.method != "GET" {
        let body = status_json(405, "MethodNotAllowed", "the MetaServer is read-only", None);
        http::write_json(stream, 405, body, req.close).await?;
        return Ok(false);
    }
    let (status, body) = match route(&req.path) {
        Route::Discovery(doc) => (200, doc.to_string().into_bytes()),
        Route::List {
            resource,
            namespace,
        } => {
            let selector = Selector::parse(
                req.param("labelSelector"),
                req.param("fieldSelector"),
                resource.kind,
            );
            match selector {
                Err(e) => (400, status_json(400, "BadRequest", &e.to_string(), None)),
                Ok(selector) if matches!(req.param("watch"), Some("true" | "1")) => {
                    let w = Watch {
                        resource,
                        namespace,
                        selector,
                        as_table: table::wanted(&req.accept),
                    };
                    watch(stream, req, shared, w).await?;
                    return Ok(true);
                }
                Ok(selector) => {
                    let page = list::ListRequest {
                        selector: &selector,
                        as_table: table::wanted(&req.accept),
                        limit: req.param("limit").and_then(|l| l.parse().ok()).unwrap_or(0),
                        from: req.param("continue").filter(|c| !c.is_empty()),
                    };
                    match list::list(shared, resource, namespace.as_deref(), &page) {
                        Ok(body) => (200, body),
                        Err(e @ list::ListError::Continue(_)) => {
                            (400, status_json(400, "BadRequest", &e.to_string(), None))
                        }
                        Err(e) => (500, status_json(500, "InternalError", &e.to_string(), None)),
                    }
                }
            }
        }
        Route::Get {
            resource,
            namespace,
            name,
        } => {
            let key = schema::records::ObjectKey {
                kind: resource.kind.to_owned(),
                namespace,
                name: name.clone(),
            };
            match shared.store.get(&key) {
                Ok(Some(o)) => (200, shared.object(&o, resource).to_string().into_bytes()),
                Ok(None) => {
                    let msg = format!("{} \"{name}\" not found", resource.plural);
                    (
                        404,
                        status_json(404, "NotFound", &msg, Some((&name, resource.plural))),
                    )
                }
                Err(e) => (500, status_json(500, "InternalError", &e.to_string(), None)),
            }
        }
        Route::Log { namespace, name } => {
            return logs::serve(stream, req, shared, &namespace, &name).await;
        }
        Route::Exec { .. } => {
            let msg = "exec needs a connection upgrade (WebSocket or SPDY)";
            (400, status_json(400, "BadRequest", msg, None))
        }
        Route::NotFound => {
            let msg = "the server could not find the requested resource";
            (404, status_json(404, "NotFound", msg, None))
        }
    };
    http::write_json(stream, status, body, req.close).await?;
    Ok(false)
}

impl Source {
    /// What is served of a stored object: a pod with its status from Edged.
    fn object(&self, o: &schema::records::StoredObject, r: Resource) -> Value {
        let mut v = object_json(o, r);
        if r.kind == schema::kinds::POD
            && let Some(status) = self.statuses.borrow().get(&o.key.namespace, &o.key.name)
        {
            v["status"] = status.clone();
        }
        v
    }

    /// The watch event line for `c`, as the selection sees it (None: the
    /// client is not told).
    fn event(&self, c: &Change, w: &Watch, selection: &mut Selection) -> Option<Vec<u8>> {
        let mut object = self.object(&c.object, w.resource);
        let change = if w.selector.is_empty() {
            c.change
        } else {
            let key = format!("{}/{}", c.object.key.namespace, c.object.key.name);
            selection.event(&key, c.change, w.selector.matches(&object))?
        };
        if w.as_table {
            let rv = c.object.resource_version;
            object = table::of(w.resource.kind, &[object], rv, clock::unix_ms());
        }
        let mut line = json!({"type": change.as_str(), "object": object})
            .to_string()
            .into_bytes();
        line.push(b'\n');
        Some(line)
    }
}

/// The stored JSON with `apiVersion`, `kind` and `metadata.resourceVersion`
/// filled in from what the store knows.
fn object_json(o: &schema::records::StoredObject, r: Resource) -> Value {
    let mut v: Value = serde_json::from_slice(&o.data).unwrap_or_else(|_| json!({}));
    if !v.is_object() {
        v = json!({});
    }
    let obj = v.as_object_mut().expect("made an object above");
    obj.entry("apiVersion")
        .or_insert_with(|| json!(r.api_version));
    obj.entry("kind").or_insert_with(|| json!(r.type_name));
    let meta = obj.entry("metadata").or_insert_with(|| json!({}));
    if let Some(meta) = meta.as_object_mut() {
        meta.entry("name").or_insert_with(|| json!(o.key.name));
        if r.namespaced {
            meta.entry("namespace")
                .or_insert_with(|| json!(o.key.namespace));
        }
        if !o.uid.is_empty() {
            meta.entry("uid").or_insert_with(|| json!(o.uid));
        }
        meta.insert(
            "resourceVersion".to_owned(),
            json!(o.resource_version.to_string()),
        );
    }
    v
}

/// A Kubernetes `Status` failure.
fn status_json(code: u16, reason: &str, message: &str, details: Option<(&str, &str)>) -> Vec<u8> {
    let mut s = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code,
    });
    if let Some((name, kind)) = details {
        s["details"] = json!({"name": name, "kind": kind});
    }
    s.to_string().into_bytes()
}
