//! What every node acknowledged, in memory: the resourceVersion it holds of
//! each object (0 for an object sent and not yet acknowledged, which it may
//! hold), the last upstream seq taken from it, and the identity of its
//! store. Changes are also collected as [`CheckpointWrites`], which the
//! glue makes durable (the LMDB store of `checkpoint`) before anything
//! that depends on them leaves the process.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use schema::records::ObjectKey;

/// One node's checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeCheckpoint {
    /// key → acknowledged resourceVersion; 0: sent, not yet acknowledged
    /// (the node may hold it, so it is deleted there when it goes away).
    pub acked: BTreeMap<ObjectKey, u64>,
    pub upstream_seq: u64,
    /// 0 when no store is known.
    pub store_id: u64,
}

/// Changes not yet durable, applied in one transaction: `resets` first,
/// then the rest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckpointWrites {
    /// Nodes whose acknowledged versions are all forgotten.
    pub resets: BTreeSet<String>,
    /// node → key → version (`None`: the node no longer holds it).
    pub acks: BTreeMap<String, BTreeMap<ObjectKey, Option<u64>>>,
    pub upstream: BTreeMap<String, u64>,
    pub stores: BTreeMap<String, u64>,
}

impl CheckpointWrites {
    /// Entries to write.
    pub fn len(&self) -> usize {
        self.resets.len()
            + self.acks.values().map(BTreeMap::len).sum::<usize>()
            + self.upstream.len()
            + self.stores.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Nodes with an entry.
    pub fn nodes(&self) -> BTreeSet<String> {
        (self.resets.iter())
            .chain(self.acks.keys())
            .chain(self.upstream.keys())
            .chain(self.stores.keys())
            .cloned()
            .collect()
    }
}

/// Every node's checkpoint; see the module doc.
#[derive(Debug, Clone, Default)]
pub struct Checkpoints {
    nodes: HashMap<String, NodeCheckpoint>,
    writes: CheckpointWrites,
    dirty: usize,
}

impl Checkpoints {
    /// Checkpoints read back from durable storage (nothing to write).
    pub fn from_nodes(nodes: impl IntoIterator<Item = (String, NodeCheckpoint)>) -> Checkpoints {
        Checkpoints {
            nodes: nodes.into_iter().collect(),
            ..Checkpoints::default()
        }
    }

    /// `node`'s checkpoint (empty when none).
    pub fn node(&self, node: &str) -> NodeCheckpoint {
        self.nodes.get(node).cloned().unwrap_or_default()
    }

    /// What `node` acknowledged: key → version.
    pub fn acked(&self, node: &str) -> BTreeMap<ObjectKey, u64> {
        self.nodes
            .get(node)
            .map(|n| n.acked.clone())
            .unwrap_or_default()
    }

    /// Whether `node` holds or may hold `key`.
    pub fn holds(&self, node: &str, key: &ObjectKey) -> bool {
        self.nodes
            .get(node)
            .is_some_and(|n| n.acked.contains_key(key))
    }

    /// Records that `key` is being sent to `node`, which did not hold it:
    /// from now on the node may hold it. Returns whether that is new (and
    /// must be durable before the object leaves).
    pub fn sending(&mut self, node: &str, key: &ObjectKey) -> bool {
        if self.holds(node, key) {
            return false;
        }
        self.ack(node, key.clone(), Some(0));
        true
    }

    /// Every node with an acknowledged object.
    pub fn acked_nodes(&self) -> BTreeSet<String> {
        (self.nodes.iter())
            .filter(|(_, n)| !n.acked.is_empty())
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Records that `node` holds `key` at `rv` (`None`: no longer holds it).
    pub fn ack(&mut self, node: &str, key: ObjectKey, rv: Option<u64>) {
        let acked = &mut self.nodes.entry(node.to_owned()).or_default().acked;
        match rv {
            Some(rv) => acked.insert(key.clone(), rv),
            None => acked.remove(&key),
        };
        let per_node = self.writes.acks.entry(node.to_owned()).or_default();
        if per_node.insert(key, rv).is_none() {
            self.dirty += 1;
        }
    }

    /// The last upstream seq taken from `node`.
    pub fn upstream_seq(&self, node: &str) -> u64 {
        self.nodes.get(node).map_or(0, |n| n.upstream_seq)
    }

    pub fn set_upstream_seq(&mut self, node: &str, seq: u64) {
        self.nodes.entry(node.to_owned()).or_default().upstream_seq = seq;
        self.writes.upstream.insert(node.to_owned(), seq);
    }

    /// The identity of `node`'s store, 0 when none is known.
    pub fn store_id(&self, node: &str) -> u64 {
        self.nodes.get(node).map_or(0, |n| n.store_id)
    }

    /// Records the identity of `node`'s store, first seen.
    pub fn set_store_id(&mut self, node: &str, id: u64) {
        self.nodes.entry(node.to_owned()).or_default().store_id = id;
        self.writes.stores.insert(node.to_owned(), id);
    }

    /// `node` has a new store, `id`: it holds nothing and has sent nothing
    /// upstream from it. Forgets its checkpoint and upstream seq.
    pub fn reset_node(&mut self, node: &str, id: u64) {
        if let Some(keys) = self.writes.acks.remove(node) {
            self.dirty -= keys.len();
        }
        self.nodes.insert(
            node.to_owned(),
            NodeCheckpoint {
                store_id: id,
                ..NodeCheckpoint::default()
            },
        );
        self.writes.resets.insert(node.to_owned());
        self.writes.upstream.insert(node.to_owned(), 0);
        self.writes.stores.insert(node.to_owned(), id);
    }

    /// Merges a checkpoint kept elsewhere (Kubernetes mode: the node's
    /// `NodeSync`, a copy that may lag) into this one: each version and the
    /// upstream seq become the newer of the two. A copy made of another
    /// store of the node than the one known here is older, and ignored.
    pub fn import(&mut self, node: &str, copy: &NodeCheckpoint) {
        match self.store_id(node) {
            0 if copy.store_id != 0 => self.set_store_id(node, copy.store_id),
            known if known != copy.store_id && copy.store_id != 0 => return,
            _ => {}
        }
        let have = self.acked(node);
        for (key, rv) in &copy.acked {
            if have.get(key).is_none_or(|h| h < rv) {
                self.ack(node, key.clone(), Some(*rv));
            }
        }
        if copy.upstream_seq > self.upstream_seq(node) {
            self.set_upstream_seq(node, copy.upstream_seq);
        }
    }

    /// Entries waiting to be written.
    pub fn dirty(&self) -> usize {
        self.dirty
            + self.writes.resets.len()
            + self.writes.upstream.len()
            + self.writes.stores.len()
    }

    /// Nodes with entries waiting to be written.
    pub fn dirty_nodes(&self) -> Vec<String> {
        self.writes.nodes().into_iter().collect()
    }

    /// What changed since the last call, to make durable.
    pub fn take_writes(&mut self) -> CheckpointWrites {
        self.dirty = 0;
        std::mem::take(&mut self.writes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(kind: &str, ns: &str, name: &str) -> ObjectKey {
        ObjectKey::new(kind, ns, name)
    }

    fn copy(acked: &[(ObjectKey, u64)], upstream_seq: u64, store_id: u64) -> NodeCheckpoint {
        NodeCheckpoint {
            acked: acked.iter().cloned().collect(),
            upstream_seq,
            store_id,
        }
    }

    #[test]
    fn an_imported_checkpoint_only_moves_versions_forward() {
        let mut s = Checkpoints::default();
        let (a, b, c) = (
            key("pod", "d", "a"),
            key("pod", "d", "b"),
            key("pod", "d", "c"),
        );
        s.ack("edge-1", a.clone(), Some(5));
        s.ack("edge-1", b.clone(), Some(9));
        s.set_upstream_seq("edge-1", 40);
        s.take_writes();
        s.import(
            "edge-1",
            &copy(&[(a.clone(), 7), (b.clone(), 3), (c.clone(), 1)], 30, 0),
        );
        s.import("edge-2", &copy(&[(a.clone(), 2)], 8, 0));
        assert_eq!(s.dirty_nodes(), ["edge-1", "edge-2"]);
        let got = s.acked("edge-1");
        assert_eq!((got[&a], got[&b], got[&c]), (7, 9, 1));
        assert_eq!(s.upstream_seq("edge-1"), 40, "the newer seq stays");
        assert_eq!(s.acked("edge-2")[&a], 2);
        assert_eq!(s.upstream_seq("edge-2"), 8);
    }

    #[test]
    fn a_new_store_resets_the_node_and_a_copy_of_another_store_is_ignored() {
        let mut s = Checkpoints::default();
        let a = key("pod", "d", "a");
        s.set_store_id("edge-1", 5);
        s.ack("edge-1", a.clone(), Some(5));
        s.ack("edge-10", a.clone(), Some(6));
        s.set_upstream_seq("edge-1", 40);
        s.take_writes();
        s.ack("edge-1", key("pod", "d", "b"), Some(7));
        s.reset_node("edge-1", 6);
        assert!(s.acked("edge-1").is_empty());
        assert_eq!(s.upstream_seq("edge-1"), 0);
        assert_eq!(s.store_id("edge-1"), 6);
        assert_eq!(s.acked("edge-10").len(), 1, "another node keeps its own");
        let w = s.take_writes();
        assert!(w.acks.is_empty(), "the ack before the reset is dropped");
        assert_eq!(w.resets, BTreeSet::from(["edge-1".to_owned()]));
        // A NodeSync copy made of the lost store changes nothing.
        s.import("edge-1", &copy(&[(a.clone(), 5)], 40, 5));
        assert_eq!(s.dirty(), 0);
    }
}
