//! The embedded source of desired state: a directory of Kubernetes YAML
//! manifests (`*.yaml`, `*.yml`, `*.json`; one or many objects per file,
//! `---` separated), like `kubectl apply -f DIR` (not recursive).
//!
//! Changes are found by polling the directory every `poll` interval and
//! comparing each file's modification time and length: no extra
//! dependency, and it works where inotify does not (network filesystems,
//! ConfigMap volumes whose files are swapped through symlinks); a stat per
//! file per interval costs nothing at manifest-directory sizes. Only
//! changed files are read again.
//!
//! Bad input never stops the source: a file that does not parse is
//! reported and its previous objects are kept (a half-saved edit deletes
//! nothing on the nodes); an object of an unknown kind, or without a name,
//! is reported and skipped; the same object in two files is reported and
//! the first (by file name) wins.
//!
//! [`Versions`] gives objects resourceVersions that survive restarts: a
//! persisted counter and, per object, the version and content hash, so an
//! unchanged file keeps its versions.
//!
//! A file that did not change keeps its parsed objects (shared, never
//! copied), and [`Versions`] keeps what it made of each: an object whose
//! parse it saw before is neither hashed nor stamped again, so a change to
//! one file costs the objects of that file, not of the whole directory.

use std::collections::{BTreeMap, btree_map::Entry};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use schema::kinds::{self, CLUSTER_NAMESPACE};
use schema::records::ObjectKey;
use serde_json::Value;

use crate::checkpoint::{Store, StoreError, VersionEntry};
use crate::core::plan::{Desired, DesiredObject};

/// Something wrong with a manifest file; reported, never fatal.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not valid YAML, keeping its previous objects: {detail}", path.display())]
    Parse { path: PathBuf, detail: String },
    #[error("{}: document {doc}: {detail}; object skipped", path.display())]
    Object {
        path: PathBuf,
        doc: usize,
        detail: String,
    },
    #[error("{}: {kind} {namespace}/{name} is also defined in {}; this copy is ignored", path.display(), first.display())]
    Duplicate {
        path: PathBuf,
        first: PathBuf,
        kind: String,
        namespace: String,
        name: String,
    },
}

/// One object read from a manifest; shared by the file's state and the
/// scans that return it until the file changes.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedObject {
    pub key: ObjectKey,
    pub value: Arc<Value>,
}

#[derive(Debug)]
struct FileState {
    modified: Option<SystemTime>,
    len: u64,
    objects: Vec<ParsedObject>,
}

/// A watched manifest directory.
#[derive(Debug)]
pub struct ManifestDir {
    dir: PathBuf,
    files: BTreeMap<PathBuf, FileState>,
    scanned: bool,
}

impl ManifestDir {
    pub fn new(dir: &Path) -> ManifestDir {
        ManifestDir {
            dir: dir.to_owned(),
            files: BTreeMap::new(),
            scanned: false,
        }
    }

    /// Looks for changes. Returns every object of the directory when
    /// something changed since the last call (always on the first), with
    /// the problems found on the way.
    pub fn scan(&mut self) -> (Option<Vec<ParsedObject>>, Vec<ManifestError>) {
        let mut errors = Vec::new();
        let mut changed = !self.scanned;
        self.scanned = true;
        let seen = match self.list() {
            Ok(seen) => seen,
            Err(e) => {
                errors.push(e);
                return (None, errors);
            }
        };
        let before = self.files.len();
        self.files.retain(|p, _| seen.contains_key(p));
        changed |= self.files.len() != before;
        for (path, (modified, len)) in seen {
            if let Some(f) = self.files.get(&path)
                && f.modified == modified
                && f.len == len
            {
                continue;
            }
            changed = true;
            let previous = self.files.remove(&path).map(|f| f.objects);
            let objects = match std::fs::read_to_string(&path) {
                Ok(text) => match parse(&path, &text, &mut errors) {
                    Some(objects) => objects,
                    None => previous.unwrap_or_default(),
                },
                Err(source) => {
                    errors.push(ManifestError::Read {
                        path: path.clone(),
                        source,
                    });
                    previous.unwrap_or_default()
                }
            };
            let state = FileState {
                modified,
                len,
                objects,
            };
            self.files.insert(path, state);
        }
        if !changed {
            return (None, errors);
        }
        (Some(self.objects(&mut errors)), errors)
    }

    /// The manifest files of the directory, with their modification time
    /// and length.
    fn list(&self) -> Result<BTreeMap<PathBuf, (Option<SystemTime>, u64)>, ManifestError> {
        let listing = std::fs::read_dir(&self.dir).map_err(|source| ManifestError::Read {
            path: self.dir.clone(),
            source,
        })?;
        let mut seen = BTreeMap::new();
        for entry in listing.flatten() {
            let path = entry.path();
            let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
            if !matches!(ext, "yaml" | "yml" | "json") {
                continue;
            }
            // Follows symlinks, as ConfigMap volumes need.
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if meta.is_file() {
                seen.insert(path, (meta.modified().ok(), meta.len()));
            }
        }
        Ok(seen)
    }

    /// Every object of every file; of one defined twice, the first by file
    /// name (the other is reported).
    fn objects(&self, errors: &mut Vec<ManifestError>) -> Vec<ParsedObject> {
        let mut all: BTreeMap<ObjectKey, (&Path, ParsedObject)> = BTreeMap::new();
        for (path, f) in &self.files {
            for o in &f.objects {
                match all.entry(o.key.clone()) {
                    Entry::Vacant(v) => {
                        v.insert((path, o.clone()));
                    }
                    Entry::Occupied(e) => errors.push(ManifestError::Duplicate {
                        path: path.clone(),
                        first: e.get().0.to_owned(),
                        kind: o.key.kind.clone(),
                        namespace: o.key.namespace.clone(),
                        name: o.key.name.clone(),
                    }),
                }
            }
        }
        all.into_values().map(|(_, o)| o).collect()
    }
}

/// Parses one file's text. `None` when the file is not valid YAML; objects
/// that are individually wrong are reported in `errors` and skipped.
pub fn parse(
    path: &Path,
    text: &str,
    errors: &mut Vec<ManifestError>,
) -> Option<Vec<ParsedObject>> {
    let docs: Vec<Value> = match serde_saphyr::from_multiple(text) {
        Ok(docs) => docs,
        Err(e) => {
            errors.push(ManifestError::Parse {
                path: path.to_owned(),
                detail: e.to_string(),
            });
            return None;
        }
    };
    let mut out = Vec::new();
    for (i, doc) in docs.into_iter().enumerate() {
        if doc.is_null() {
            continue;
        }
        match object(doc) {
            Ok(o) => out.push(o),
            Err(detail) => errors.push(ManifestError::Object {
                path: path.to_owned(),
                doc: i + 1,
                detail,
            }),
        }
    }
    Some(out)
}

fn object(mut value: Value) -> Result<ParsedObject, String> {
    let Some(kind_name) = value.get("kind").and_then(Value::as_str) else {
        return Err("no kind".into());
    };
    let Some(served) = kinds::by_type_name(kind_name) else {
        let known: Vec<&str> = kinds::SERVED.iter().map(|k| k.type_name).collect();
        return Err(format!(
            "unknown kind {kind_name:?} (known: {})",
            known.join(", ")
        ));
    };
    let name = match value.pointer("/metadata/name").and_then(Value::as_str) {
        Some(n) if !n.is_empty() => n.to_owned(),
        _ => return Err(format!("{kind_name} without metadata.name")),
    };
    let kind_name = served.type_name;
    let namespace = if served.namespaced {
        let ns = value
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("default")
            .to_owned();
        value["metadata"]["namespace"] = Value::String(ns.clone());
        ns
    } else {
        CLUSTER_NAMESPACE.to_owned()
    };
    let key = ObjectKey::new(served.kind, &namespace, &name);
    key.validate()
        .map_err(|e| format!("{kind_name} {namespace}/{name}: {e}"))?;
    Ok(ParsedObject {
        key,
        value: Arc::new(value),
    })
}

/// Persistent resourceVersions for manifest objects.
#[derive(Debug)]
pub struct Versions {
    entries: BTreeMap<ObjectKey, VersionEntry>,
    counter: u64,
    /// Per live object, the parse it was last made from and what was made:
    /// the same parse again (an unchanged file) gives the same object.
    made: BTreeMap<ObjectKey, (Arc<Value>, Arc<DesiredObject>)>,
}

impl Versions {
    /// Loads what `store` holds.
    pub fn load(store: &Store) -> Result<Versions, StoreError> {
        let (entries, counter) = store.versions()?;
        Ok(Versions {
            entries,
            counter,
            made: BTreeMap::new(),
        })
    }

    /// Turns the objects of the directory into the desired state: unchanged
    /// objects keep their versions, changed and new ones get the next ones,
    /// vanished ones get a deletion version. Stamps `metadata.resourceVersion`
    /// (and a stable `metadata.uid` and the `metadata.creationTimestamp` of
    /// the object's first appearance, as of `now_ms`, when absent). Changes
    /// are stored before this returns.
    pub fn apply(
        &mut self,
        store: &Store,
        objects: Vec<ParsedObject>,
        now_ms: u64,
    ) -> Result<Desired, StoreError> {
        let mut changed = Vec::new();
        let mut desired = Desired::default();
        for o in objects {
            let object = match self.made.get(&o.key) {
                Some((parsed, made)) if Arc::ptr_eq(parsed, &o.value) => made.clone(),
                _ => self.make(&o, &mut changed, now_ms),
            };
            desired.objects.insert(o.key, object);
        }
        self.made.retain(|key, _| desired.objects.contains_key(key));
        for (key, e) in self.entries.iter_mut() {
            if !e.deleted && !desired.objects.contains_key(key) {
                self.counter += 1;
                e.deleted = true;
                e.rv = self.counter;
                changed.push((key.clone(), *e));
            }
            if e.deleted {
                desired.tombstones.insert(key.clone(), e.rv);
            }
        }
        if !changed.is_empty() {
            store.save_versions(&changed, self.counter)?;
        }
        Ok(desired)
    }

    /// The desired object for a parse not seen before: the version its
    /// content hash earns (a new one when the content is new, recorded in
    /// `changed`), stamped into a copy of the parse.
    fn make(
        &mut self,
        o: &ParsedObject,
        changed: &mut Vec<(ObjectKey, VersionEntry)>,
        now_ms: u64,
    ) -> Arc<DesiredObject> {
        let hash = crate::util::sha256(&serde_json::to_vec(&*o.value).unwrap_or_default());
        let (rv, created_ms) = match self.entries.get(&o.key) {
            Some(e) if !e.deleted && e.hash == hash => (e.rv, e.created_ms),
            previous => {
                // An edit keeps the creation time; a new or re-created object
                // is created now.
                let created_ms = match previous {
                    Some(e) if !e.deleted && e.created_ms != 0 => e.created_ms,
                    _ => now_ms,
                };
                self.counter += 1;
                let e = VersionEntry {
                    rv: self.counter,
                    hash,
                    deleted: false,
                    created_ms,
                };
                self.entries.insert(o.key.clone(), e);
                changed.push((o.key.clone(), e));
                (self.counter, created_ms)
            }
        };
        let mut value = (*o.value).clone();
        stamp(&mut value, &o.key, rv, created_ms);
        let content: Arc<[u8]> = serde_json::to_vec(&value).unwrap_or_default().into();
        let made = Arc::new(DesiredObject { rv, value, content });
        self.made
            .insert(o.key.clone(), (o.value.clone(), made.clone()));
        made
    }
}

fn stamp(value: &mut Value, key: &ObjectKey, rv: u64, created_ms: u64) {
    let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
    if created_ms != 0 && !meta.contains_key("creationTimestamp") {
        let at = clock::rfc3339(created_ms);
        meta.insert("creationTimestamp".into(), Value::String(at));
    }
    if !meta.contains_key("uid") {
        // Seeded with kind/namespace/name (not the key's text, which puts
        // the namespace first): uids already handed out stay the same.
        let h = crate::util::hex(&crate::util::sha256(
            format!("{}/{}/{}", key.kind, key.namespace, key.name).as_bytes(),
        ));
        let uid = format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        );
        meta.insert("uid".into(), Value::String(uid));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-12-01T00:00:00Z.
    const T0: u64 = 1_796_083_200_000;

    #[test]
    fn parses_many_documents_and_reports_bad_objects() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\ndata:\n  k: v\n---\n---\nkind: Deployment\nmetadata:\n  name: d\n---\nkind: Node\nmetadata:\n  name: n1\n---\nkind: Pod\nmetadata: {}\n";
        let mut errors = Vec::new();
        let objs = parse(Path::new("x.yaml"), text, &mut errors).unwrap();
        let keys: Vec<_> = objs
            .iter()
            .map(|o| {
                (
                    o.key.kind.as_str(),
                    o.key.namespace.as_str(),
                    o.key.name.as_str(),
                )
            })
            .collect();
        assert_eq!(
            keys,
            [("configmap", "default", "a"), ("node", "default", "n1")]
        );
        assert_eq!(objs[0].value["metadata"]["namespace"], "default");
        let msgs: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(msgs.len(), 2, "{msgs:?}");
        assert!(msgs[0].contains("unknown kind \"Deployment\""), "{msgs:?}");
        assert!(msgs[1].contains("without metadata.name"), "{msgs:?}");
    }

    #[test]
    fn broken_file_keeps_its_previous_objects() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.yaml");
        std::fs::write(&f, "kind: Secret\nmetadata:\n  name: s\n").unwrap();
        let mut m = ManifestDir::new(dir.path());
        let (objs, errs) = m.scan();
        assert_eq!(objs.unwrap().len(), 1);
        assert!(errs.is_empty());
        assert!(m.scan().0.is_none(), "nothing changed");
        std::fs::write(&f, "kind: Secret\nmetadata: [unclosed\n").unwrap();
        let (objs, errs) = m.scan();
        assert_eq!(objs.unwrap()[0].key.name, "s");
        assert!(
            errs[0].to_string().contains("not valid YAML"),
            "{}",
            errs[0]
        );
        std::fs::remove_file(&f).unwrap();
        assert_eq!(m.scan().0.unwrap().len(), 0);
    }

    #[test]
    fn versions_are_stable_for_unchanged_objects_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let obj = |name: &str, data: &str| ParsedObject {
            key: ObjectKey::new("configmap", "default", name),
            value: Arc::new(
                serde_json::json!({"kind":"ConfigMap","metadata":{"name":name},"data":{"k":data}}),
            ),
        };
        let rv = |d: &Desired, n: &str| d.objects[&ObjectKey::new("configmap", "default", n)].rv;
        let created = |d: &Desired, n: &str| {
            let o = &d.objects[&ObjectKey::new("configmap", "default", n)];
            o.value["metadata"]["creationTimestamp"].clone()
        };
        {
            let store = Store::open(dir.path()).unwrap();
            let mut v = Versions::load(&store).unwrap();
            let d = v
                .apply(&store, vec![obj("a", "1"), obj("b", "1")], T0)
                .unwrap();
            assert_eq!((rv(&d, "a"), rv(&d, "b")), (1, 2));
            assert_eq!(created(&d, "a"), "2026-12-01T00:00:00Z");
            assert_eq!(
                d.objects[&ObjectKey::new("configmap", "default", "a")].value["metadata"]["resourceVersion"],
                "1"
            );
        }
        let store = Store::open(dir.path()).unwrap();
        let mut v = Versions::load(&store).unwrap();
        let d = v
            .apply(&store, vec![obj("a", "1"), obj("b", "2")], T0 + 60_000)
            .unwrap();
        assert_eq!(
            (rv(&d, "a"), rv(&d, "b")),
            (1, 3),
            "unchanged keeps, changed moves on"
        );
        assert_eq!(
            created(&d, "b"),
            "2026-12-01T00:00:00Z",
            "an edit keeps the creation time, across a restart"
        );
        let d = v.apply(&store, vec![obj("b", "2")], T0 + 120_000).unwrap();
        assert_eq!(
            d.tombstones[&ObjectKey::new("configmap", "default", "a")],
            4
        );
        let d = v
            .apply(&store, vec![obj("a", "1"), obj("b", "2")], T0 + 180_000)
            .unwrap();
        assert_eq!(
            rv(&d, "a"),
            5,
            "a re-created object is newer than its deletion"
        );
        assert_eq!(created(&d, "a"), "2026-12-01T00:03:00Z", "re-created now");
    }

    #[test]
    fn a_change_to_one_file_leaves_the_objects_of_the_others_as_they_were() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        let manifests = dir.path().join("manifests");
        std::fs::create_dir(&manifests).unwrap();
        let cm = |name: &str, data: &str| {
            format!("kind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  k: {data}\n")
        };
        std::fs::write(manifests.join("a.yaml"), cm("a", "1")).unwrap();
        std::fs::write(manifests.join("b.yaml"), cm("b", "1")).unwrap();
        let mut m = ManifestDir::new(&manifests);
        let mut v = Versions::load(&store).unwrap();
        let first = v.apply(&store, m.scan().0.unwrap(), T0).unwrap();
        std::fs::write(manifests.join("b.yaml"), cm("b", "two")).unwrap();
        let second = v.apply(&store, m.scan().0.unwrap(), T0).unwrap();
        let (a, b) = (
            ObjectKey::new("configmap", "default", "a"),
            ObjectKey::new("configmap", "default", "b"),
        );
        assert!(
            Arc::ptr_eq(&first.objects[&a], &second.objects[&a]),
            "the unchanged file's object is the one made before"
        );
        assert_eq!(second.objects[&a].rv, 1);
        assert_eq!(second.objects[&b].rv, 3, "the changed object moves on");
        assert_eq!(second.objects[&b].value["data"]["k"], "two");
        std::fs::remove_file(manifests.join("a.yaml")).unwrap();
        let third = v.apply(&store, m.scan().0.unwrap(), T0).unwrap();
        assert_eq!(third.tombstones[&a], 4);
        std::fs::write(manifests.join("a.yaml"), cm("a", "1")).unwrap();
        let fourth = v.apply(&store, m.scan().0.unwrap(), T0).unwrap();
        assert_eq!(fourth.objects[&a].rv, 5, "back after its deletion: newer");
        assert_eq!(fourth.objects[&a].value["metadata"]["resourceVersion"], "5");
    }
}
