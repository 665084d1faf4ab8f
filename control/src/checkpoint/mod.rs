//! The control side's durable state, in one LMDB environment under the data
//! dir (`DATA/store`): delivery checkpoints (the last resourceVersion each
//! node acknowledged for each object), the last upstream seq taken from each
//! node, the identity of each node's store (a new one means the node lost
//! everything, and its checkpoint is reset), and the manifest mode's object
//! versions and version counter.
//!
//! LMDB rather than an atomically replaced file: checkpoints grow with nodes
//! × objects, and a flush must write only what changed (a few pages), not
//! rewrite everything; one transaction commits a whole batch durably, and a
//! node's checkpoint is one prefix scan when it connects.
//!
//! The control core keeps every checkpoint in memory
//! ([`crate::core::checkpoints`]); this store loads them at start
//! ([`Store::load`]) and makes each batch of changes durable in one
//! transaction ([`Store::write`]), off the async threads. [`nodesync`]
//! reads the copies kept in Kubernetes.
//!
//! It may depend on the core's checkpoint types and the custom resources
//! ([`crate::crd`]), never on the process glue.

// heed's `EnvOpenOptions::open` is `unsafe`: LMDB maps the file, and the
// caller must not open the same environment twice in one process nor let
// another program truncate it. The store is opened once per process, in a
// directory that belongs to cloudcontrol.
#![allow(unsafe_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use heed::byteorder::BE;
use heed::types::{Bytes, Str, U64};
use heed::{CommitOrAbort, Database, Env, EnvOpenOptions};
use schema::records::ObjectKey;

use crate::core::checkpoints::{CheckpointWrites, Checkpoints, NodeCheckpoint};

pub mod nodesync;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the store directory {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("store {action}: {source}")]
    Lmdb {
        action: &'static str,
        source: heed::Error,
    },
}

fn lmdb(action: &'static str) -> impl FnOnce(heed::Error) -> StoreError {
    move |source| StoreError::Lmdb { action, source }
}

/// The version of one manifest object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionEntry {
    pub rv: u64,
    /// SHA-256 of the object as read (before versions are stamped in).
    pub hash: [u8; 32],
    /// The object went away at `rv`.
    pub deleted: bool,
    /// When the object first appeared (Unix ms; 0: before this was kept),
    /// its `metadata.creationTimestamp`.
    pub created_ms: u64,
}

/// The durable state; see the module doc. Clones share one environment
/// (one per process): the manifest source writes versions through one
/// while checkpoints are written through another.
#[derive(Debug, Clone)]
pub struct Store {
    env: Env,
    acked: Database<'static, Bytes, U64<BE>>,
    upstream: Database<'static, Str, U64<BE>>,
    stores: Database<'static, Str, U64<BE>>,
    versions: Database<'static, Bytes, Bytes>,
    meta: Database<'static, Str, U64<BE>>,
}

const COUNTER: &str = "manifest-counter";

impl Store {
    /// Opens (creating) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
            path: dir.to_owned(),
            source,
        })?;
        // SAFETY: see the module-level comment on `unsafe_code`.
        let env = unsafe {
            EnvOpenOptions::new()
                .map_size(1 << 34)
                .max_dbs(8)
                .open(dir)
                .map_err(lmdb("open"))?
        };
        let wtxn = env.write_txn().map_err(lmdb("begin"))?;
        let (acked, upstream, stores, versions, meta) = env
            .create_databases_and_commit(wtxn, |o, w| {
                let acked = o.create_database(w, Some("acked"))?;
                let upstream = o.create_database(w, Some("upstream"))?;
                let stores = o.create_database(w, Some("stores"))?;
                let versions = o.create_database(w, Some("versions"))?;
                let meta = o.create_database(w, Some("meta"))?;
                Ok::<_, heed::Error>(CommitOrAbort::<_, ()>::Commit((
                    acked, upstream, stores, versions, meta,
                )))
            })
            .map_err(lmdb("create databases"))?
            .commit()
            .expect("never aborted");
        Ok(Store {
            env,
            acked,
            upstream,
            stores,
            versions,
            meta,
        })
    }

    /// Every node's checkpoint.
    pub fn load(&self) -> Result<Checkpoints, StoreError> {
        let rtxn = self.env.read_txn().map_err(lmdb("read"))?;
        let mut nodes: BTreeMap<String, NodeCheckpoint> = BTreeMap::new();
        for item in self.acked.iter(&rtxn).map_err(lmdb("scan checkpoints"))? {
            let (k, rv) = item.map_err(lmdb("scan checkpoints"))?;
            if let Some((node, key)) = decode_ack_key(k) {
                nodes.entry(node).or_default().acked.insert(key, rv);
            }
        }
        for item in self
            .upstream
            .iter(&rtxn)
            .map_err(lmdb("scan upstream seqs"))?
        {
            let (node, seq) = item.map_err(lmdb("scan upstream seqs"))?;
            nodes.entry(node.to_owned()).or_default().upstream_seq = seq;
        }
        for item in self.stores.iter(&rtxn).map_err(lmdb("scan store ids"))? {
            let (node, id) = item.map_err(lmdb("scan store ids"))?;
            nodes.entry(node.to_owned()).or_default().store_id = id;
        }
        Ok(Checkpoints::from_nodes(nodes))
    }

    /// Commits `writes` in one durable transaction: resets first.
    pub fn write(&self, writes: &CheckpointWrites) -> Result<(), StoreError> {
        if writes.is_empty() {
            return Ok(());
        }
        let mut wtxn = self.env.write_txn().map_err(lmdb("begin"))?;
        for node in &writes.resets {
            self.reset(&mut wtxn, node)?;
        }
        for (node, keys) in &writes.acks {
            for (key, rv) in keys {
                let k = encode_ack_key(node, key);
                match rv {
                    Some(rv) => self.acked.put(&mut wtxn, &k, rv).map(drop),
                    None => self.acked.delete(&mut wtxn, &k).map(drop),
                }
                .map_err(lmdb("write checkpoint"))?;
            }
        }
        for (node, seq) in &writes.upstream {
            self.upstream
                .put(&mut wtxn, node, seq)
                .map_err(lmdb("write upstream seq"))?;
        }
        for (node, id) in &writes.stores {
            self.stores
                .put(&mut wtxn, node, id)
                .map_err(lmdb("write store id"))?;
        }
        wtxn.commit().map_err(lmdb("commit"))
    }

    /// Deletes every acknowledged version of `node`.
    fn reset(&self, wtxn: &mut heed::RwTxn<'_>, node: &str) -> Result<(), StoreError> {
        let prefix = encode_parts(&[node]);
        let keys: Vec<Vec<u8>> = self
            .acked
            .prefix_iter(wtxn, &prefix)
            .map_err(lmdb("scan checkpoints"))?
            .map(|item| item.map(|(k, _)| k.to_vec()))
            .collect::<Result<_, _>>()
            .map_err(lmdb("scan checkpoints"))?;
        for k in keys {
            self.acked
                .delete(wtxn, &k)
                .map_err(lmdb("reset checkpoint"))?;
        }
        Ok(())
    }

    /// The manifest mode's versions and counter.
    pub fn versions(&self) -> Result<(BTreeMap<ObjectKey, VersionEntry>, u64), StoreError> {
        let rtxn = self.env.read_txn().map_err(lmdb("read"))?;
        let mut out = BTreeMap::new();
        for item in self.versions.iter(&rtxn).map_err(lmdb("scan versions"))? {
            let (k, v) = item.map_err(lmdb("scan versions"))?;
            if let (Some(key), Some(entry)) = (decode_key(k), decode_version(v)) {
                out.insert(key, entry);
            }
        }
        let counter = self
            .meta
            .get(&rtxn, COUNTER)
            .map_err(lmdb("read counter"))?
            .unwrap_or(0);
        Ok((out, counter))
    }

    /// Durably stores changed versions and the counter, in one transaction.
    pub fn save_versions(
        &self,
        changed: &[(ObjectKey, VersionEntry)],
        counter: u64,
    ) -> Result<(), StoreError> {
        let mut wtxn = self.env.write_txn().map_err(lmdb("begin"))?;
        for (key, e) in changed {
            let mut v = Vec::with_capacity(49);
            v.extend_from_slice(&e.rv.to_be_bytes());
            v.push(u8::from(e.deleted));
            v.extend_from_slice(&e.hash);
            v.extend_from_slice(&e.created_ms.to_be_bytes());
            self.versions
                .put(&mut wtxn, &encode_key(key), &v)
                .map_err(lmdb("write version"))?;
        }
        self.meta
            .put(&mut wtxn, COUNTER, &counter)
            .map_err(lmdb("write counter"))?;
        wtxn.commit().map_err(lmdb("commit"))
    }
}

/// Length-prefixed parts (u32 BE length, bytes): unambiguous and
/// prefix-scannable by the first parts.
fn encode_parts(parts: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in parts {
        out.extend_from_slice(&(p.len() as u32).to_be_bytes());
        out.extend_from_slice(p.as_bytes());
    }
    out
}

fn decode_parts(mut b: &[u8]) -> Option<Vec<String>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let len = u32::from_be_bytes(b.get(..4)?.try_into().ok()?) as usize;
        let s = b.get(4..4 + len)?;
        out.push(String::from_utf8(s.to_vec()).ok()?);
        b = &b[4 + len..];
    }
    Some(out)
}

fn encode_key(key: &ObjectKey) -> Vec<u8> {
    encode_parts(&[&key.kind, &key.namespace, &key.name])
}

fn decode_key(b: &[u8]) -> Option<ObjectKey> {
    let mut p = decode_parts(b)?;
    (p.len() == 3).then(|| ObjectKey {
        name: p.pop().unwrap_or_default(),
        namespace: p.pop().unwrap_or_default(),
        kind: p.pop().unwrap_or_default(),
    })
}

fn encode_ack_key(node: &str, key: &ObjectKey) -> Vec<u8> {
    encode_parts(&[node, &key.kind, &key.namespace, &key.name])
}

fn decode_ack_key(b: &[u8]) -> Option<(String, ObjectKey)> {
    let mut p = decode_parts(b)?.into_iter();
    let node = p.next()?;
    let key = ObjectKey {
        kind: p.next()?,
        namespace: p.next()?,
        name: p.next()?,
    };
    p.next().is_none().then_some((node, key))
}

/// rv (u64 BE), deleted (u8), hash (32 bytes), then created (u64 BE),
/// which entries written before it was kept lack.
fn decode_version(v: &[u8]) -> Option<VersionEntry> {
    let created_ms = match v.len() {
        41 => 0,
        49 => u64::from_be_bytes(v[41..].try_into().ok()?),
        _ => return None,
    };
    Some(VersionEntry {
        rv: u64::from_be_bytes(v[..8].try_into().ok()?),
        deleted: v[8] != 0,
        hash: v[9..41].try_into().ok()?,
        created_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(kind: &str, ns: &str, name: &str) -> ObjectKey {
        ObjectKey::new(kind, ns, name)
    }

    #[test]
    fn acks_survive_reopen_only_after_flush_and_prefixes_do_not_mix() {
        let dir = tempfile::tempdir().unwrap();
        let a = key("pod", "default", "a");
        {
            let s = Store::open(dir.path()).unwrap();
            let mut c = s.load().unwrap();
            c.ack("edge-1", a.clone(), Some(5));
            c.ack("edge-10", a.clone(), Some(9));
            assert_eq!(c.acked("edge-1")[&a], 5, "dirty entries are read");
            s.write(&c.take_writes()).unwrap();
            c.ack("edge-1", a.clone(), Some(6));
            c.set_upstream_seq("edge-1", 42);
        }
        let s = Store::open(dir.path()).unwrap();
        let mut c = s.load().unwrap();
        assert_eq!(c.acked("edge-1")[&a], 5, "unflushed ack is gone");
        assert_eq!(c.acked("edge-10")[&a], 9);
        assert_eq!(c.upstream_seq("edge-1"), 0);
        assert_eq!(
            c.acked_nodes().into_iter().collect::<Vec<_>>(),
            ["edge-1", "edge-10"]
        );
        c.ack("edge-1", a.clone(), None);
        c.set_upstream_seq("edge-1", 42);
        s.write(&c.take_writes()).unwrap();
        let c = s.load().unwrap();
        assert!(c.acked("edge-1").is_empty());
        assert_eq!(c.upstream_seq("edge-1"), 42);
    }

    #[test]
    fn versions_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let e = VersionEntry {
            rv: 7,
            hash: [3; 32],
            deleted: true,
            created_ms: 1_700_000_000_123,
        };
        s.save_versions(&[(key("secret", "ns", "x"), e)], 9)
            .unwrap();
        let (v, counter) = s.versions().unwrap();
        assert_eq!(counter, 9);
        assert_eq!(v[&key("secret", "ns", "x")], e);
        // An entry written before creation times were kept still reads.
        let mut old = 7u64.to_be_bytes().to_vec();
        old.push(0);
        old.extend_from_slice(&[3; 32]);
        let old = decode_version(&old).unwrap();
        assert_eq!((old.rv, old.created_ms), (7, 0));
        assert_eq!(decode_version(&[0; 40]), None);
    }

    #[test]
    fn a_reset_is_durable_and_touches_no_other_node() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let a = key("pod", "d", "a");
        let mut c = s.load().unwrap();
        c.set_store_id("edge-1", 5);
        c.ack("edge-1", a.clone(), Some(5));
        c.ack("edge-10", a.clone(), Some(6));
        c.set_upstream_seq("edge-1", 40);
        s.write(&c.take_writes()).unwrap();
        c.reset_node("edge-1", 6);
        c.ack("edge-1", key("pod", "d", "b"), Some(7));
        s.write(&c.take_writes()).unwrap();
        drop(s);
        let c = Store::open(dir.path()).unwrap().load().unwrap();
        assert_eq!(c.store_id("edge-1"), 6, "durable");
        assert_eq!(c.upstream_seq("edge-1"), 0);
        assert_eq!(
            c.acked("edge-1").into_keys().collect::<Vec<_>>(),
            [key("pod", "d", "b")],
            "only what came after the reset"
        );
        assert_eq!(c.acked("edge-10").len(), 1, "another node keeps its own");
    }
}
