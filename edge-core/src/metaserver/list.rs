//! Lists, whole or page by page as the API server pages them: `limit=N`
//! returns at most N selected objects and, when more may follow, a
//! `metadata.continue` token; `continue=<token>` returns the next page.
//! The token carries the first page's resourceVersion and the last key
//! returned, so every page reports the first page's resourceVersion and a
//! watch from it replays whatever changed while the pages were read. A
//! token that is not one is refused with 400, as the API server does.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use super::{Resource, Selector, Source, table};

/// What a list asks for, beyond its resource and namespace.
pub(super) struct ListRequest<'a> {
    pub selector: &'a Selector,
    pub as_table: bool,
    /// `limit`; 0 for none.
    pub limit: usize,
    /// `continue`, when given.
    pub from: Option<&'a str>,
}

/// Why a list could not be answered.
#[derive(Debug, thiserror::Error)]
pub(super) enum ListError {
    #[error("continue key is not valid: {0}")]
    Continue(&'static str),
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
}

/// Where a list resumes: the first page's version, after this key.
#[derive(Debug, PartialEq, Eq)]
struct Continue {
    /// The list it continues: kind and namespace (empty for all).
    scope: String,
    rv: u64,
    namespace: String,
    name: String,
}

impl Continue {
    fn encode(&self) -> String {
        let start = format!("{}\u{0}{}", self.namespace, self.name);
        let doc =
            json!({"v": "meta.k8s.io/v1", "scope": self.scope, "rv": self.rv, "start": start});
        URL_SAFE_NO_PAD.encode(doc.to_string())
    }

    fn decode(token: &str) -> Result<Self, ListError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(token.trim_end_matches('='))
            .map_err(|_| ListError::Continue("not base64"))?;
        let doc: Value =
            serde_json::from_slice(&bytes).map_err(|_| ListError::Continue("not JSON"))?;
        if doc["v"] != "meta.k8s.io/v1" {
            return Err(ListError::Continue("unknown version"));
        }
        let rv = doc["rv"]
            .as_u64()
            .ok_or(ListError::Continue("no resourceVersion"))?;
        let (namespace, name) = doc["start"]
            .as_str()
            .and_then(|s| s.split_once('\u{0}'))
            .ok_or(ListError::Continue("no start key"))?;
        let scope = doc["scope"]
            .as_str()
            .ok_or(ListError::Continue("no scope"))?;
        Ok(Self {
            scope: scope.to_owned(),
            rv,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })
    }
}

/// The list (or Table) of `r` in `namespace` that `req` asks for.
pub(super) fn list(
    shared: &Source,
    r: Resource,
    namespace: Option<&str>,
    req: &ListRequest<'_>,
) -> Result<Vec<u8>, ListError> {
    let scope = format!("{}/{}", r.kind, namespace.unwrap_or(""));
    let from = req.from.map(Continue::decode).transpose()?;
    if from.as_ref().is_some_and(|c| c.scope != scope) {
        return Err(ListError::Continue("it continues another list"));
    }
    // Read the version first: a change committed in between is then seen
    // again by a watch from this version, never missed.
    let rv = match &from {
        Some(c) => c.rv,
        None => shared.store.max_resource_version()?,
    };
    let after = from
        .as_ref()
        .map(|c| (c.namespace.as_str(), c.name.as_str()));
    let (mut items, mut last, mut more) = (Vec::new(), None, false);
    shared.store.visit(r.kind, namespace, after, |o| {
        if req.limit > 0 && items.len() == req.limit {
            more = true;
            return false;
        }
        if !req.selector.may_match(&o.data) {
            return true;
        }
        let v = shared.object(&o, r);
        if req.selector.matches(&v) {
            items.push(v);
            last = Some(o.key);
        }
        true
    })?;
    let token = last.filter(|_| more).map(|k| {
        let c = Continue {
            scope,
            rv,
            namespace: k.namespace,
            name: k.name,
        };
        c.encode()
    });
    let mut doc = if req.as_table {
        table::of(r.kind, &items, rv, clock::unix_ms())
    } else {
        json!({
            "kind": format!("{}List", r.type_name),
            "apiVersion": r.api_version,
            "metadata": {"resourceVersion": rv.to_string()},
            "items": items,
        })
    };
    if let Some(token) = token {
        doc["metadata"]["continue"] = json!(token);
    }
    Ok(doc.to_string().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip_and_garbage_is_refused() {
        let c = Continue {
            scope: "pod/default".to_owned(),
            rv: 42,
            namespace: "default".to_owned(),
            name: "web-1".to_owned(),
        };
        assert_eq!(Continue::decode(&c.encode()).unwrap(), c);
        for bad in [
            "",
            "!!!",
            "bm90IGpzb24",
            &URL_SAFE_NO_PAD.encode(r#"{"v":"x"}"#),
        ] {
            assert!(Continue::decode(bad).is_err(), "{bad:?}");
        }
        let no_start = URL_SAFE_NO_PAD.encode(r#"{"v":"meta.k8s.io/v1","rv":1}"#);
        assert!(Continue::decode(&no_start).is_err());
    }
}
