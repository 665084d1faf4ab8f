//! Tombstone compaction, as the API server compacts etcd: the last state
//! of every deleted object would otherwise be kept for ever, and a node
//! whose pods come and go for weeks would fill its store. The newest
//! [`TOMBSTONES_KEPT`] tombstones are kept; dropping older ones raises the
//! store's compacted resourceVersion, and a watch resumed from below it
//! cannot be replayed (it might miss a deletion): the MetaServer answers
//! it with the API server's 410 Gone, and the client lists again. The
//! `versions` entry of a dropped tombstone (its key and 8 bytes) stays, so
//! a stale update still cannot bring the object back.

use heed::RwTxn;

use super::{META_COMPACTED_RV, Store, StoreError, decode};

/// Tombstones kept: a replay window of this many deletions.
pub const TOMBSTONES_KEPT: u64 = 4096;

/// A watch from a version older than the store can replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too old resource version: {asked} ({compacted})")]
pub struct TooOld {
    pub asked: u64,
    pub compacted: u64,
}

/// `tombstone_log` key: the tombstone's resourceVersion (big-endian) then
/// its object key, so the log reads oldest first.
fn log_key(rv: u64, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + key.len());
    k.extend_from_slice(&rv.to_be_bytes());
    k.extend_from_slice(key);
    k
}

impl Store {
    /// Keeps `n` tombstones instead of [`TOMBSTONES_KEPT`] (for tests).
    pub fn with_tombstones_kept(mut self, n: u64) -> Self {
        self.tombstones_kept = n;
        self
    }

    /// The newest resourceVersion of a dropped tombstone (0: none dropped).
    pub fn compacted_resource_version(&self) -> Result<u64, StoreError> {
        self.meta_get(META_COMPACTED_RV)
    }

    /// Whether changes after `after` can all be replayed.
    pub fn check_replayable(&self, after: u64) -> Result<Result<(), TooOld>, StoreError> {
        let compacted = self.compacted_resource_version()?;
        Ok(if after < compacted {
            Err(TooOld {
                asked: after,
                compacted,
            })
        } else {
            Ok(())
        })
    }

    pub(super) fn log_tombstone(
        &self,
        wtxn: &mut RwTxn<'_>,
        rv: u64,
        key: &[u8],
    ) -> Result<(), StoreError> {
        self.tombstone_log.put(wtxn, &log_key(rv, key), &[])?;
        Ok(())
    }

    /// Drops the oldest tombstones past the number kept. A log entry whose
    /// object came back (or was deleted again later) is dropped alone.
    pub(super) fn compact(&self, wtxn: &mut RwTxn<'_>) -> Result<(), StoreError> {
        let mut excess = self
            .tombstones
            .len(wtxn)?
            .saturating_sub(self.tombstones_kept);
        if excess == 0 {
            return Ok(());
        }
        let mut compacted = self.meta.get(wtxn, META_COMPACTED_RV)?.unwrap_or(0);
        while excess > 0 {
            let Some((entry, _)) = self.tombstone_log.first(wtxn)? else {
                break;
            };
            let entry = entry.to_vec();
            self.tombstone_log.delete(wtxn, &entry)?;
            let Some((rv, key)) = entry.split_first_chunk::<8>() else {
                continue;
            };
            let rv = u64::from_be_bytes(*rv);
            let current = self
                .tombstones
                .get(wtxn, key)?
                .map(|b| decode(key, b))
                .transpose()?;
            if current.is_some_and(|t| t.resource_version == rv) {
                self.tombstones.delete(wtxn, key)?;
                compacted = compacted.max(rv);
                excess -= 1;
            }
        }
        self.meta.put(wtxn, META_COMPACTED_RV, &compacted)?;
        Ok(())
    }

    /// A store written before the log existed: log its tombstones once.
    pub(super) fn ensure_tombstone_log(&self) -> Result<(), StoreError> {
        let mut wtxn = self.env.write_txn()?;
        if !self.tombstone_log.is_empty(&wtxn)? || self.tombstones.is_empty(&wtxn)? {
            return Ok(());
        }
        let mut entries = Vec::new();
        for entry in self.tombstones.iter(&wtxn)? {
            let (k, v) = entry?;
            entries.push(log_key(decode(k, v)?.resource_version, k));
        }
        for e in entries {
            self.tombstone_log.put(&mut wtxn, &e, &[])?;
        }
        wtxn.commit()?;
        Ok(())
    }
}
