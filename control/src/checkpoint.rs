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
//! Acknowledgements are batched: [`Store::ack`] only marks them dirty in
//! memory (reads see them at once); [`Store::flush`] commits every dirty
//! entry in one transaction. The caller flushes on a timer or when
//! [`Store::dirty`] grows, and always before confirming upstream messages.

// heed's `EnvOpenOptions::open` is `unsafe`: LMDB maps the file, and the
// caller must not open the same environment twice in one process nor let
// another program truncate it. The store is opened once per process, in a
// directory that belongs to cloudcontrol.
#![allow(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use heed::byteorder::BE;
use heed::types::{Bytes, Str, U64};
use heed::{CommitOrAbort, Database, Env, EnvOpenOptions};
use schema::records::ObjectKey;

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
}

/// The durable state; see the module doc.
#[derive(Debug)]
pub struct Store {
    env: Env,
    acked: Database<'static, Bytes, U64<BE>>,
    upstream: Database<'static, Str, U64<BE>>,
    stores: Database<'static, Str, U64<BE>>,
    versions: Database<'static, Bytes, Bytes>,
    meta: Database<'static, Str, U64<BE>>,
    /// node → key → acknowledged version (`None`: the node no longer has it).
    dirty_acks: BTreeMap<String, BTreeMap<ObjectKey, Option<u64>>>,
    dirty_count: usize,
    dirty_upstream: BTreeMap<String, u64>,
    dirty_stores: BTreeMap<String, u64>,
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
            dirty_acks: BTreeMap::new(),
            dirty_count: 0,
            dirty_upstream: BTreeMap::new(),
            dirty_stores: BTreeMap::new(),
        })
    }

    /// The identity of `node`'s store, 0 when none is known.
    pub fn store_id(&self, node: &str) -> Result<u64, StoreError> {
        if let Some(id) = self.dirty_stores.get(node) {
            return Ok(*id);
        }
        let rtxn = self.env.read_txn().map_err(lmdb("read"))?;
        Ok(self
            .stores
            .get(&rtxn, node)
            .map_err(lmdb("read store id"))?
            .unwrap_or(0))
    }

    /// Records the identity of `node`'s store, first seen (durable at the
    /// next flush).
    pub fn set_store_id(&mut self, node: &str, id: u64) {
        self.dirty_stores.insert(node.to_owned(), id);
    }

    /// `node` has a new store, `id`: it holds nothing and has sent nothing
    /// upstream from it. Forgets its checkpoint and upstream seq and records
    /// the new identity, durably before returning (rare: only after a node
    /// lost its data).
    pub fn reset_node(&mut self, node: &str, id: u64) -> Result<(), StoreError> {
        if let Some(keys) = self.dirty_acks.remove(node) {
            self.dirty_count -= keys.len();
        }
        self.dirty_upstream.remove(node);
        self.dirty_stores.remove(node);
        let mut wtxn = self.env.write_txn().map_err(lmdb("begin"))?;
        let prefix = encode_parts(&[node]);
        let keys: Vec<Vec<u8>> = self
            .acked
            .prefix_iter(&wtxn, &prefix)
            .map_err(lmdb("scan checkpoints"))?
            .map(|item| item.map(|(k, _)| k.to_vec()))
            .collect::<Result<_, _>>()
            .map_err(lmdb("scan checkpoints"))?;
        for k in keys {
            self.acked
                .delete(&mut wtxn, &k)
                .map_err(lmdb("reset checkpoint"))?;
        }
        self.upstream
            .put(&mut wtxn, node, &0)
            .map_err(lmdb("reset upstream seq"))?;
        self.stores
            .put(&mut wtxn, node, &id)
            .map_err(lmdb("write store id"))?;
        wtxn.commit().map_err(lmdb("commit"))
    }

    /// What `node` acknowledged: key → version, dirty entries included.
    pub fn acked(&self, node: &str) -> Result<BTreeMap<ObjectKey, u64>, StoreError> {
        let rtxn = self.env.read_txn().map_err(lmdb("read"))?;
        let prefix = encode_parts(&[node]);
        let mut out = BTreeMap::new();
        for item in self
            .acked
            .prefix_iter(&rtxn, &prefix)
            .map_err(lmdb("scan checkpoints"))?
        {
            let (k, rv) = item.map_err(lmdb("scan checkpoints"))?;
            if let Some((_, key)) = decode_ack_key(k) {
                out.insert(key, rv);
            }
        }
        for (key, rv) in self.dirty_acks.get(node).into_iter().flatten() {
            match rv {
                Some(rv) => out.insert(key.clone(), *rv),
                None => out.remove(key),
            };
        }
        Ok(out)
    }

    /// Every node with a checkpoint entry.
    pub fn acked_nodes(&self) -> Result<BTreeSet<String>, StoreError> {
        let rtxn = self.env.read_txn().map_err(lmdb("read"))?;
        let mut out = BTreeSet::new();
        for item in self.acked.iter(&rtxn).map_err(lmdb("scan checkpoints"))? {
            let (k, _) = item.map_err(lmdb("scan checkpoints"))?;
            if let Some((node, _)) = decode_ack_key(k) {
                out.insert(node);
            }
        }
        out.extend(self.dirty_acks.keys().cloned());
        Ok(out)
    }

    /// Records that `node` holds `key` at `rv` (`None`: no longer holds it).
    pub fn ack(&mut self, node: &str, key: ObjectKey, rv: Option<u64>) {
        let per_node = self.dirty_acks.entry(node.to_owned()).or_default();
        if per_node.insert(key, rv).is_none() {
            self.dirty_count += 1;
        }
    }

    /// The last upstream seq taken from `node`.
    pub fn upstream_seq(&self, node: &str) -> Result<u64, StoreError> {
        if let Some(seq) = self.dirty_upstream.get(node) {
            return Ok(*seq);
        }
        let rtxn = self.env.read_txn().map_err(lmdb("read"))?;
        Ok(self
            .upstream
            .get(&rtxn, node)
            .map_err(lmdb("read upstream seq"))?
            .unwrap_or(0))
    }

    /// Sets the last upstream seq taken from `node` (durable at the next
    /// flush).
    pub fn set_upstream_seq(&mut self, node: &str, seq: u64) {
        self.dirty_upstream.insert(node.to_owned(), seq);
    }

    /// Nodes with entries waiting for [`Store::flush`].
    pub fn dirty_nodes(&self) -> Vec<String> {
        let nodes: BTreeSet<&String> = self
            .dirty_acks
            .keys()
            .chain(self.dirty_upstream.keys())
            .chain(self.dirty_stores.keys())
            .collect();
        nodes.into_iter().cloned().collect()
    }

    /// Merges a checkpoint kept elsewhere (Kubernetes mode: the node's
    /// `NodeSync`, a copy that may lag) into this one: each version and the
    /// upstream seq become the newer of the two. A copy made of another
    /// store of the node than the one known here is older, and ignored.
    /// Durable at the next flush.
    pub fn import(
        &mut self,
        node: &str,
        objects: &BTreeMap<ObjectKey, u64>,
        upstream_seq: u64,
        store_id: u64,
    ) -> Result<(), StoreError> {
        match self.store_id(node)? {
            0 if store_id != 0 => self.set_store_id(node, store_id),
            known if known != store_id && store_id != 0 => return Ok(()),
            _ => {}
        }
        let have = self.acked(node)?;
        for (key, rv) in objects {
            if have.get(key).is_none_or(|h| h < rv) {
                self.ack(node, key.clone(), Some(*rv));
            }
        }
        if upstream_seq > self.upstream_seq(node)? {
            self.set_upstream_seq(node, upstream_seq);
        }
        Ok(())
    }

    /// Entries waiting for [`Store::flush`].
    pub fn dirty(&self) -> usize {
        self.dirty_count + self.dirty_upstream.len() + self.dirty_stores.len()
    }

    /// Commits every dirty entry in one durable transaction.
    pub fn flush(&mut self) -> Result<(), StoreError> {
        if self.dirty() == 0 {
            return Ok(());
        }
        let mut wtxn = self.env.write_txn().map_err(lmdb("begin"))?;
        for (node, keys) in &self.dirty_acks {
            for (key, rv) in keys {
                let k = encode_ack_key(node, key);
                match rv {
                    Some(rv) => self.acked.put(&mut wtxn, &k, rv).map(drop),
                    None => self.acked.delete(&mut wtxn, &k).map(drop),
                }
                .map_err(lmdb("write checkpoint"))?;
            }
        }
        for (node, seq) in &self.dirty_upstream {
            self.upstream
                .put(&mut wtxn, node, seq)
                .map_err(lmdb("write upstream seq"))?;
        }
        for (node, id) in &self.dirty_stores {
            self.stores
                .put(&mut wtxn, node, id)
                .map_err(lmdb("write store id"))?;
        }
        wtxn.commit().map_err(lmdb("commit"))?;
        self.dirty_acks.clear();
        self.dirty_upstream.clear();
        self.dirty_stores.clear();
        self.dirty_count = 0;
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
        &mut self,
        changed: &[(ObjectKey, VersionEntry)],
        counter: u64,
    ) -> Result<(), StoreError> {
        let mut wtxn = self.env.write_txn().map_err(lmdb("begin"))?;
        for (key, e) in changed {
            let mut v = Vec::with_capacity(41);
            v.extend_from_slice(&e.rv.to_be_bytes());
            v.push(u8::from(e.deleted));
            v.extend_from_slice(&e.hash);
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

fn decode_version(v: &[u8]) -> Option<VersionEntry> {
    if v.len() != 41 {
        return None;
    }
    Some(VersionEntry {
        rv: u64::from_be_bytes(v[..8].try_into().ok()?),
        deleted: v[8] != 0,
        hash: v[9..].try_into().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::key;

    #[test]
    fn acks_survive_reopen_only_after_flush_and_prefixes_do_not_mix() {
        let dir = tempfile::tempdir().unwrap();
        let a = key("pod", "default", "a");
        {
            let mut s = Store::open(dir.path()).unwrap();
            s.ack("edge-1", a.clone(), Some(5));
            s.ack("edge-10", a.clone(), Some(9));
            assert_eq!(s.acked("edge-1").unwrap()[&a], 5, "dirty entries are read");
            s.flush().unwrap();
            s.ack("edge-1", a.clone(), Some(6));
            s.set_upstream_seq("edge-1", 42);
        }
        let mut s = Store::open(dir.path()).unwrap();
        assert_eq!(s.acked("edge-1").unwrap()[&a], 5, "unflushed ack is gone");
        assert_eq!(s.acked("edge-10").unwrap()[&a], 9);
        assert_eq!(s.upstream_seq("edge-1").unwrap(), 0);
        assert_eq!(
            s.acked_nodes().unwrap().into_iter().collect::<Vec<_>>(),
            ["edge-1", "edge-10"]
        );
        s.ack("edge-1", a.clone(), None);
        s.set_upstream_seq("edge-1", 42);
        s.flush().unwrap();
        assert!(s.acked("edge-1").unwrap().is_empty());
        assert_eq!(s.upstream_seq("edge-1").unwrap(), 42);
    }

    #[test]
    fn versions_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path()).unwrap();
        let e = VersionEntry {
            rv: 7,
            hash: [3; 32],
            deleted: true,
        };
        s.save_versions(&[(key("secret", "ns", "x"), e)], 9)
            .unwrap();
        let (v, counter) = s.versions().unwrap();
        assert_eq!(counter, 9);
        assert_eq!(v[&key("secret", "ns", "x")], e);
    }

    #[test]
    fn an_imported_checkpoint_only_moves_versions_forward() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path()).unwrap();
        let (a, b, c) = (
            key("pod", "d", "a"),
            key("pod", "d", "b"),
            key("pod", "d", "c"),
        );
        s.ack("edge-1", a.clone(), Some(5));
        s.ack("edge-1", b.clone(), Some(9));
        s.set_upstream_seq("edge-1", 40);
        s.flush().unwrap();
        let copy = [(a.clone(), 7), (b.clone(), 3), (c.clone(), 1)].into();
        s.import("edge-1", &copy, 30, 0).unwrap();
        s.import("edge-2", &[(a.clone(), 2)].into(), 8, 0).unwrap();
        assert_eq!(s.dirty_nodes(), ["edge-1", "edge-2"]);
        s.flush().unwrap();
        let got = s.acked("edge-1").unwrap();
        assert_eq!((got[&a], got[&b], got[&c]), (7, 9, 1));
        assert_eq!(s.upstream_seq("edge-1").unwrap(), 40, "the newer seq stays");
        assert_eq!(s.acked("edge-2").unwrap()[&a], 2);
        assert_eq!(s.upstream_seq("edge-2").unwrap(), 8);
    }

    #[test]
    fn a_new_store_resets_the_node_and_a_copy_of_another_store_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path()).unwrap();
        let a = key("pod", "d", "a");
        s.set_store_id("edge-1", 5);
        s.ack("edge-1", a.clone(), Some(5));
        s.ack("edge-10", a.clone(), Some(6));
        s.set_upstream_seq("edge-1", 40);
        s.flush().unwrap();
        s.ack("edge-1", key("pod", "d", "b"), Some(7));
        s.reset_node("edge-1", 6).unwrap();
        assert!(s.acked("edge-1").unwrap().is_empty());
        assert_eq!(s.upstream_seq("edge-1").unwrap(), 0);
        assert_eq!(s.store_id("edge-1").unwrap(), 6);
        assert_eq!(
            s.acked("edge-10").unwrap().len(),
            1,
            "another node keeps its own"
        );
        assert_eq!(s.dirty(), 0);
        // A NodeSync copy made of the lost store changes nothing.
        s.import("edge-1", &[(a.clone(), 5)].into(), 40, 5).unwrap();
        assert_eq!(s.dirty(), 0);
        drop(s);
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.store_id("edge-1").unwrap(), 6, "durable");
        assert!(s.acked("edge-1").unwrap().is_empty());
    }
}
