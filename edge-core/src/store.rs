//! MetaManager's store: Kubernetes objects in LMDB, applied newer-only and
//! committed in groups.
//!
//! One LMDB environment holds five databases:
//! - `objects`: live objects by key (`kind \0 namespace \0 name`), each an
//!   rkyv [`StoredObject`];
//! - `tombstones`: the last state of deleted objects, same key and record,
//!   so that a watch can replay the deletion; the newest
//!   [`TOMBSTONES_KEPT`] are kept (`compaction`), and a watch from before
//!   the oldest one dropped is told its version is too old;
//! - `tombstone_log`: the tombstones by resourceVersion, oldest first;
//! - `outbox`: upstream messages awaiting the cloud's acknowledgement (see
//!   [`crate::outbox`]);
//! - `versions`: per key, the stored resourceVersion and whether the object
//!   is deleted (top bit), so applying a message reads 8 bytes, not a record,
//!   and a stale update can never bring a deleted object back;
//! - `meta`: counters: the link's committed downstream seq, the highest
//!   upstream seq handed out, the highest resourceVersion stored, the
//!   newest resourceVersion of a tombstone dropped; and the
//!   store's identity, a random number chosen when the store is created and
//!   sent to the cloud in `Hello`, so that a wiped or replaced store is
//!   told from one that resumes (the cloud then sends everything again).
//!
//! Plain synchronous code: every `commit` is one LMDB write transaction,
//! durable (fdatasync) when it returns.

use std::path::Path;

use heed::byteorder::BigEndian;
use heed::types::{Bytes, Str, U64};
use heed::{CommitOrAbort, Database, Env, EnvOpenOptions, RoTxn, RwTxn};
use schema::Message;
use schema::records::{self, ObjectKey, StoredObject};

pub(crate) type SeqDb = Database<'static, U64<BigEndian>, Bytes>;
type MetaDb = Database<'static, Str, U64<BigEndian>>;
type ObjectDb = Database<'static, Bytes, Bytes>;
type VersionDb = Database<'static, Bytes, U64<BigEndian>>;

/// Top bit of a `versions` value: the object is deleted (a tombstone).
const DEAD: u64 = 1 << 63;

pub(crate) const META_DOWNSTREAM_SEQ: &str = "downstream_seq";
pub(crate) const META_UPSTREAM_SEQ: &str = "upstream_seq";
const META_MAX_RV: &str = "max_resource_version";
pub(crate) const META_COMPACTED_RV: &str = "compacted_resource_version";
const META_STORE_ID: &str = "store_id";

/// Default LMDB map size: 256 MiB of address space (not memory).
pub const DEFAULT_MAP_SIZE: usize = 256 << 20;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the store directory {path}: {source}")]
    Dir {
        path: String,
        source: std::io::Error,
    },
    #[error("LMDB: {0}")]
    Lmdb(#[from] heed::Error),
    #[error("stored record for {key} is unreadable: {detail}")]
    Corrupt { key: String, detail: String },
}

/// A random number from the system's generator (0 if it failed).
pub(crate) fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    let _ = aws_lc_rs::rand::fill(&mut b);
    u64::from_le_bytes(b)
}

/// What one change did to an object, as a watch reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeType {
    Added,
    Modified,
    Deleted,
}

impl ChangeType {
    /// The Kubernetes watch event type.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

/// A committed change to one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub change: ChangeType,
    /// The object after the change (its last state for a deletion).
    pub object: StoredObject,
}

/// What a group commit did.
#[derive(Debug, Default)]
pub struct Committed {
    /// Objects that changed, in the order applied.
    pub changes: Vec<Change>,
    /// Messages that were not newer than what is stored.
    pub stale: usize,
    /// Messages whose route names no object (counted, not applied).
    pub invalid: usize,
    /// The committed downstream seq after the commit.
    pub downstream_seq: u64,
}

/// The LMDB store of one edge node.
#[derive(Debug, Clone)]
pub struct Store {
    pub(crate) env: Env,
    objects: ObjectDb,
    tombstones: ObjectDb,
    tombstone_log: ObjectDb,
    /// How many tombstones are kept.
    tombstones_kept: u64,
    versions: VersionDb,
    pub(crate) outbox: SeqDb,
    pub(crate) meta: MetaDb,
}

impl Store {
    /// Opens (creating if needed) the store in directory `dir`.
    pub fn open(dir: &Path, map_size: usize) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
            path: dir.display().to_string(),
            source,
        })?;
        let mut options = EnvOpenOptions::new();
        // Six of the store's own and DeviceTwin's two (`twin_devices`,
        // `twin_twins`), plus room.
        options.map_size(map_size).max_dbs(12);
        // SAFETY: LMDB requires that one process opens an environment only
        // once and that nothing else truncates or rewrites the file while it
        // is mapped. edgecore opens its data directory once, at start, and
        // owns it; tests use a fresh temporary directory per store.
        #[allow(unsafe_code)]
        let env = unsafe { options.open(dir)? };
        let wtxn = env.write_txn()?;
        let dbs = env.create_databases_and_commit(wtxn, |wdo, wtxn| -> Result<_, heed::Error> {
            let objects = wdo.create_database::<Bytes, Bytes>(wtxn, Some("objects"))?;
            let tombstones = wdo.create_database::<Bytes, Bytes>(wtxn, Some("tombstones"))?;
            let log = wdo.create_database::<Bytes, Bytes>(wtxn, Some("tombstone_log"))?;
            let versions = wdo.create_database::<Bytes, U64<BigEndian>>(wtxn, Some("versions"))?;
            let outbox = wdo.create_database::<U64<BigEndian>, Bytes>(wtxn, Some("outbox"))?;
            let meta = wdo.create_database::<Str, U64<BigEndian>>(wtxn, Some("meta"))?;
            Ok(CommitOrAbort::<_, ()>::Commit((
                objects, tombstones, log, versions, outbox, meta,
            )))
        })?;
        let CommitOrAbort::Commit((objects, tombstones, tombstone_log, versions, outbox, meta)) =
            dbs
        else {
            unreachable!("the closure never aborts");
        };
        let store = Self {
            env,
            objects,
            tombstones,
            tombstone_log,
            tombstones_kept: TOMBSTONES_KEPT,
            versions,
            outbox,
            meta,
        };
        store.ensure_store_id()?;
        store.ensure_tombstone_log()?;
        Ok(store)
    }

    /// The store's identity: random, never 0, chosen when it was created.
    pub fn store_id(&self) -> Result<u64, StoreError> {
        self.meta_get(META_STORE_ID)
    }

    /// Gives a new store its identity; an existing one keeps its own.
    fn ensure_store_id(&self) -> Result<(), StoreError> {
        if self.store_id()? != 0 {
            return Ok(());
        }
        let mut wtxn = self.env.write_txn()?;
        self.meta
            .put(&mut wtxn, META_STORE_ID, &(random_u64() | 1))?;
        wtxn.commit()?;
        Ok(())
    }

    /// The highest downstream seq committed (the link's resume point).
    pub fn committed_seq(&self) -> Result<u64, StoreError> {
        self.meta_get(META_DOWNSTREAM_SEQ)
    }

    /// The highest resourceVersion the store has seen (live or deleted).
    pub fn max_resource_version(&self) -> Result<u64, StoreError> {
        self.meta_get(META_MAX_RV)
    }

    pub(crate) fn meta_get(&self, name: &str) -> Result<u64, StoreError> {
        let rtxn = self.env.read_txn()?;
        Ok(self.meta.get(&rtxn, name)?.unwrap_or(0))
    }

    /// The live object stored under `key`.
    pub fn get(&self, key: &ObjectKey) -> Result<Option<StoredObject>, StoreError> {
        let rtxn = self.env.read_txn()?;
        let k = encode_key(key);
        self.objects
            .get(&rtxn, &k)?
            .map(|bytes| decode(&k, bytes))
            .transpose()
    }

    /// Live objects of `kind`, in `namespace` or in all namespaces, by key.
    pub fn list(
        &self,
        kind: &str,
        namespace: Option<&str>,
    ) -> Result<Vec<StoredObject>, StoreError> {
        let rtxn = self.env.read_txn()?;
        scan(&rtxn, self.objects, &prefix(kind, namespace))
    }

    /// Visits live objects of `kind` (in `namespace`, or all) in key order
    /// (namespace, then name), starting after `after` (namespace, name),
    /// while `visit` returns true: a list read page by page.
    pub fn visit(
        &self,
        kind: &str,
        namespace: Option<&str>,
        after: Option<(&str, &str)>,
        mut visit: impl FnMut(StoredObject) -> bool,
    ) -> Result<(), StoreError> {
        use std::ops::Bound;
        let rtxn = self.env.read_txn()?;
        let p = prefix(kind, namespace);
        let start = after.map(|(ns, name)| encode_key(&ObjectKey::new(kind, ns, name)));
        let from = match &start {
            Some(k) => Bound::Excluded(k.as_slice()),
            None => Bound::Included(p.as_slice()),
        };
        for entry in self.objects.range(&rtxn, &(from, Bound::Unbounded))? {
            let (k, v) = entry?;
            if !k.starts_with(&p) || !visit(decode(k, v)?) {
                break;
            }
        }
        Ok(())
    }

    /// Changes to objects of `kind` (in `namespace`, or all) with a
    /// resourceVersion above `after`, oldest first: live objects as
    /// `Modified`, deleted ones as `Deleted`.
    pub fn changes_since(
        &self,
        kind: &str,
        namespace: Option<&str>,
        after: u64,
    ) -> Result<Vec<Change>, StoreError> {
        let rtxn = self.env.read_txn()?;
        let p = prefix(kind, namespace);
        let live = scan(&rtxn, self.objects, &p)?
            .into_iter()
            .map(|object| Change {
                change: ChangeType::Modified,
                object,
            });
        let dead = scan(&rtxn, self.tombstones, &p)?
            .into_iter()
            .map(|object| Change {
                change: ChangeType::Deleted,
                object,
            });
        let mut changes: Vec<Change> = live
            .chain(dead)
            .filter(|c| c.object.resource_version > after)
            .collect();
        changes.sort_by_key(|c| c.object.resource_version);
        Ok(changes)
    }

    /// Applies downstream `messages` newer-only, records `downstream_seq`
    /// (when higher) as the resume point and deletes outbox entries up to
    /// `upstream_acked`, all in one durable write transaction.
    pub fn commit<'m>(
        &self,
        messages: impl IntoIterator<Item = &'m Message>,
        downstream_seq: u64,
        upstream_acked: Option<u64>,
    ) -> Result<Committed, StoreError> {
        let mut wtxn = self.env.write_txn()?;
        let mut out = Committed::default();
        let mut max_rv = self.meta.get(&wtxn, META_MAX_RV)?.unwrap_or(0);
        for m in messages {
            let Some((key, op)) = parse_route(m) else {
                out.invalid += 1;
                continue;
            };
            match self.apply(&mut wtxn, key, op, m)? {
                Some(change) => {
                    max_rv = max_rv.max(change.object.resource_version);
                    out.changes.push(change);
                }
                None => out.stale += 1,
            }
        }
        self.meta.put(&mut wtxn, META_MAX_RV, &max_rv)?;
        self.compact(&mut wtxn)?;
        let seq = self
            .meta
            .get(&wtxn, META_DOWNSTREAM_SEQ)?
            .unwrap_or(0)
            .max(downstream_seq);
        self.meta.put(&mut wtxn, META_DOWNSTREAM_SEQ, &seq)?;
        if let Some(acked) = upstream_acked {
            self.outbox.delete_range(&mut wtxn, &(..=acked))?;
        }
        wtxn.commit()?;
        out.downstream_seq = seq;
        Ok(out)
    }

    /// Applies one message; `None` when it is not newer than what is stored.
    fn apply(
        &self,
        wtxn: &mut RwTxn<'_>,
        key: ObjectKey,
        op: Op,
        m: &Message,
    ) -> Result<Option<Change>, StoreError> {
        let k = encode_key(&key);
        let (stored_rv, live) = match self.versions.get(wtxn, &k)? {
            Some(v) => (v & !DEAD, v & DEAD == 0),
            None => (0, false),
        };
        let rv = m.header.resource_version & !DEAD;
        match op {
            Op::Upsert => {
                // Newer only; the exact version of a tombstone brings the
                // object back: the node dropped it at its current version
                // when it no longer needed it (an object deleted for good
                // goes away at a version newer than any it had).
                if rv < stored_rv || (rv == stored_rv && live) {
                    return Ok(None);
                }
                let object = StoredObject {
                    key,
                    uid: uid_of(&m.content),
                    resource_version: rv,
                    data: m.content.clone(),
                };
                self.objects.put(wtxn, &k, &records::to_bytes(&object))?;
                self.versions.put(wtxn, &k, &rv)?;
                if !live && stored_rv > 0 {
                    self.tombstones.delete(wtxn, &k)?;
                }
                let change = if live {
                    ChangeType::Modified
                } else {
                    ChangeType::Added
                };
                Ok(Some(Change { change, object }))
            }
            Op::Delete => {
                // A delete carrying a version older than the live object is
                // stale; one without a version (0) removes what is there.
                if !live || (rv != 0 && rv < stored_rv) {
                    return Ok(None);
                }
                let Some(mut object) = self
                    .objects
                    .get(wtxn, &k)?
                    .map(|b| decode(&k, b))
                    .transpose()?
                else {
                    return Ok(None);
                };
                object.resource_version = object.resource_version.max(rv);
                if !m.content.is_empty() {
                    object.data = m.content.clone();
                }
                self.objects.delete(wtxn, &k)?;
                self.versions
                    .put(wtxn, &k, &(object.resource_version | DEAD))?;
                self.tombstones.put(wtxn, &k, &records::to_bytes(&object))?;
                self.log_tombstone(wtxn, object.resource_version, &k)?;
                Ok(Some(Change {
                    change: ChangeType::Deleted,
                    object,
                }))
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Upsert,
    Delete,
}

/// The object a downstream message is about: route resource
/// `{namespace}/{kind}/{name}`, operation insert, update or delete.
fn parse_route(m: &Message) -> Option<(ObjectKey, Op)> {
    let op = match m.route.operation.as_str() {
        "insert" | "update" | "patch" => Op::Upsert,
        "delete" => Op::Delete,
        _ => return None,
    };
    let key = ObjectKey::parse(&m.route.resource).ok()?;
    Some((key, op))
}

/// `metadata.uid` of a Kubernetes JSON object, or empty.
fn uid_of(content: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Object {
        #[serde(default)]
        metadata: Metadata,
    }
    #[derive(serde::Deserialize, Default)]
    struct Metadata {
        #[serde(default)]
        uid: String,
    }
    serde_json::from_slice::<Object>(content)
        .map(|o| o.metadata.uid)
        .unwrap_or_default()
}

/// `kind \0 namespace \0 name`: objects of one kind (and namespace) are
/// contiguous, so a list is one prefix scan.
pub(crate) fn encode_key(key: &ObjectKey) -> Vec<u8> {
    let mut k = prefix(&key.kind, Some(&key.namespace));
    k.extend_from_slice(key.name.as_bytes());
    k
}

fn prefix(kind: &str, namespace: Option<&str>) -> Vec<u8> {
    let mut p = Vec::with_capacity(64);
    p.extend_from_slice(kind.as_bytes());
    p.push(0);
    if let Some(ns) = namespace {
        p.extend_from_slice(ns.as_bytes());
        p.push(0);
    }
    p
}

fn scan(rtxn: &RoTxn<'_>, db: ObjectDb, p: &[u8]) -> Result<Vec<StoredObject>, StoreError> {
    let mut out = Vec::new();
    for entry in db.prefix_iter(rtxn, p)? {
        let (k, v) = entry?;
        out.push(decode(k, v)?);
    }
    Ok(out)
}

pub(crate) fn decode(key: &[u8], bytes: &[u8]) -> Result<StoredObject, StoreError> {
    records::from_bytes::<StoredObject>(bytes).map_err(|e| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).replace('\0', "/"),
        detail: e.to_string(),
    })
}

mod compaction;
#[cfg(test)]
mod tests;

pub use compaction::{TOMBSTONES_KEPT, TooOld};
