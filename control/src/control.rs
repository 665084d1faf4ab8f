//! The control core: desired state and ring records in, ring records and
//! status out. Call order, from [`crate::run`]:
//! 1. [`Control::handle_desired`] with each new desired state (the first
//!    call also sends every node what it has not acknowledged);
//! 2. [`Control::handle_records`] with a batch read from a shard's ring
//!    (release the batch after this returns: upstream messages are then
//!    applied and their seqs durable);
//! 3. [`Control::handle_tick`] every few tens of milliseconds (batched
//!    checkpoint flush);
//! 4. then drain [`Control::poll_record`] into the rings.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use hub_core::shard_of;
use schema::records::{DeliveredObject, ObjectKey, RingRecord};
use schema::{Header, Message, Route};
use serde_json::Value;

use crate::checkpoint::{Store, StoreError};
use crate::plan::{self, Action, Assignment, Desired, kind};
use crate::status::StatusDir;
use crate::util::unix_ms;

/// Flush checkpoints at least this often while some are dirty.
pub const FLUSH_INTERVAL_MS: u64 = 100;
/// … or as soon as this many are dirty.
pub const FLUSH_ENTRIES: usize = 1000;

/// An observed change for an API server (kube mode), besides the status
/// files: drained with [`Control::poll_status_change`].
#[derive(Debug, Clone, PartialEq)]
pub enum StatusChange {
    /// The node's link came up or went down.
    NodeLink {
        node: String,
        ready: bool,
        reason: &'static str,
        at_ms: u64,
    },
    /// The node reported its NodeStatus (partial).
    Node { node: String, status: Value },
    /// A pod's status, reported by its node.
    Pod {
        namespace: String,
        name: String,
        status: Value,
    },
    /// A device's reported twins (`{"twins": [...]}`).
    Device {
        namespace: String,
        name: String,
        reported: Value,
    },
    /// A node's whole delivery checkpoint after a flush (objects keyed
    /// `namespace/kind/name`), for its `NodeSync` object.
    Checkpoint {
        node: String,
        objects: BTreeMap<String, u64>,
        upstream_seq: u64,
        store_id: u64,
    },
}

/// See the module doc.
#[derive(Debug)]
pub struct Control {
    /// Collect [`StatusChange`]s (kube mode only).
    report_changes: bool,
    changes: VecDeque<StatusChange>,
    shards: u16,
    store: Store,
    status: StatusDir,
    desired: Desired,
    assignment: Assignment,
    started: bool,
    /// Deletes sent and not yet acknowledged: node → key → version.
    pending_deletes: HashMap<String, HashMap<ObjectKey, u64>>,
    /// Upstream seqs to confirm to the shards once durable.
    commits: BTreeMap<String, u64>,
    out: VecDeque<(u16, RingRecord)>,
    last_flush_ms: u64,
    next_id: u64,
    problems: Vec<String>,
}

impl Control {
    pub fn new(shards: u16, store: Store, status: StatusDir) -> Control {
        Control {
            report_changes: false,
            changes: VecDeque::new(),
            shards: shards.max(1),
            store,
            status,
            desired: Desired::default(),
            assignment: Assignment::default(),
            started: false,
            pending_deletes: HashMap::new(),
            commits: BTreeMap::new(),
            out: VecDeque::new(),
            last_flush_ms: 0,
            next_id: 0,
            problems: Vec::new(),
        }
    }

    /// Also report status changes for an API server
    /// ([`Control::poll_status_change`]).
    pub fn report_status_changes(&mut self, on: bool) {
        self.report_changes = on;
    }

    /// The next status change for the API server.
    pub fn poll_status_change(&mut self) -> Option<StatusChange> {
        self.changes.pop_front()
    }

    fn change(&mut self, c: StatusChange) {
        if self.report_changes {
            self.changes.push_back(c);
        }
    }

    /// The store (manifest versions live there too).
    pub fn store_mut(&mut self) -> &mut Store {
        &mut self.store
    }

    /// The current desired state.
    pub fn desired(&self) -> &Desired {
        &self.desired
    }

    /// Edge nodes' JSON, for the bootstrap endpoint.
    pub fn edge_nodes(&self) -> BTreeMap<String, std::sync::Arc<[u8]>> {
        self.assignment
            .nodes
            .keys()
            .filter_map(|n| {
                let k = plan::key(kind::NODE, plan::CLUSTER_NAMESPACE, n);
                Some((n.clone(), self.desired.objects.get(&k)?.content.clone()))
            })
            .collect()
    }

    /// A new desired state.
    pub fn handle_desired(&mut self, desired: Desired) -> Result<(), StoreError> {
        let assignment = plan::assign(&desired);
        let problems: Vec<String> = assignment.problems.iter().map(|p| p.to_string()).collect();
        for p in &problems {
            if !self.problems.contains(p) {
                tracing::error!("{p}");
            }
        }
        self.problems = problems;
        for node in assignment.nodes.keys() {
            if let Err(e) = self.status.ensure_node(node) {
                tracing::warn!("status: {e}");
            }
        }
        let old = std::mem::replace(&mut self.assignment, assignment);
        self.desired = desired;
        if !self.started {
            // First state since start: what each node has not acknowledged.
            self.started = true;
            let mut nodes: BTreeSet<String> = self.store.acked_nodes()?;
            nodes.extend(self.assignment.nodes.keys().cloned());
            for node in nodes {
                self.sync_node(&node)?;
            }
            return Ok(());
        }
        for (node, action) in plan::changes(&self.desired, &old, &self.assignment) {
            self.send(&node, action);
        }
        Ok(())
    }

    /// Sends `node` what it lacks according to its checkpoint.
    fn sync_node(&mut self, node: &str) -> Result<(), StoreError> {
        let have = self.store.acked(node)?;
        let empty = plan::NodeObjects::new();
        let want = self.assignment.nodes.get(node).unwrap_or(&empty);
        let desired = &self.desired;
        let actions = plan::diff(want, &have, |k, h| plan::delete_version(desired, k, h));
        if !actions.is_empty() {
            tracing::info!(node, "sending {} objects not acknowledged", actions.len());
        }
        for a in actions {
            self.send(node, a);
        }
        Ok(())
    }

    fn send(&mut self, node: &str, action: Action) {
        let (key, rv, operation, content) = match action {
            Action::Upsert { key, rv, insert } => {
                let Some(obj) = self.desired.objects.get(&key) else {
                    return;
                };
                let op = if insert { "insert" } else { "update" };
                (key, rv, op, obj.content.to_vec())
            }
            Action::Delete { key, rv } => {
                self.pending_deletes
                    .entry(node.to_owned())
                    .or_default()
                    .insert(key.clone(), rv);
                (key, rv, "delete", Vec::new())
            }
        };
        self.next_id += 1;
        let message = Message {
            header: Header {
                id: format!("{:016x}-{:08x}", unix_ms(), self.next_id),
                timestamp_ms: unix_ms(),
                resource_version: rv,
                ..Header::default()
            },
            route: Route {
                source: "edgecontroller".into(),
                group: "resource".into(),
                operation: operation.into(),
                resource: format!("{}/{}/{}", key.namespace, key.kind, key.name),
                ..Route::default()
            },
            content,
        };
        let shard = shard_of(node, self.shards);
        self.out.push_back((
            shard,
            RingRecord::Downstream {
                node_id: node.to_owned(),
                key,
                message,
            },
        ));
    }

    /// A batch of records from a shard's ring. Upstream messages are applied
    /// and their seqs made durable before this returns, and `Committed`
    /// records queued.
    pub fn handle_records(&mut self, records: Vec<RingRecord>) -> Result<(), StoreError> {
        for r in records {
            match r {
                RingRecord::Connected {
                    node_id,
                    at_ms,
                    store_id,
                } => self.connected(&node_id, at_ms, store_id)?,
                RingRecord::Disconnected {
                    node_id,
                    at_ms,
                    reason,
                } => {
                    tracing::info!(node = node_id, reason, "disconnected");
                    self.status_log(self.status.node_link(
                        &node_id,
                        false,
                        "EdgeDisconnected",
                        at_ms,
                    ));
                    self.change(StatusChange::NodeLink {
                        node: node_id,
                        ready: false,
                        reason: "EdgeDisconnected",
                        at_ms,
                    });
                }
                RingRecord::Delivered {
                    node_id,
                    store_id,
                    objects,
                } => {
                    self.observe_store(&node_id, store_id)?;
                    self.delivered(&node_id, objects);
                }
                RingRecord::ResyncNeeded { node_id } => {
                    tracing::warn!(node = node_id, "resync needed: sending a full snapshot");
                    self.resync(&node_id)?;
                }
                RingRecord::Upstream {
                    node_id,
                    store_id,
                    message,
                } => {
                    self.observe_store(&node_id, store_id)?;
                    self.upstream(&node_id, message)?;
                }
                other => tracing::error!("unexpected record from a shard: {other:?}"),
            }
        }
        if !self.commits.is_empty() {
            self.flush()?;
            for (node, seq) in std::mem::take(&mut self.commits) {
                let shard = shard_of(&node, self.shards);
                let store_id = self.store.store_id(&node)?;
                let record = RingRecord::Committed {
                    node_id: node,
                    store_id,
                    seq,
                };
                self.out.push_back((shard, record));
            }
        }
        Ok(())
    }

    /// `node` is connected with its store `store_id`: status, then what it
    /// lacks (everything, if the store is new).
    fn connected(&mut self, node: &str, at_ms: u64, store_id: u64) -> Result<(), StoreError> {
        tracing::info!(node, "connected");
        self.status_log(self.status.node_link(node, true, "EdgeConnected", at_ms));
        self.change(StatusChange::NodeLink {
            node: node.to_owned(),
            ready: true,
            reason: "EdgeConnected",
            at_ms,
        });
        if !self.observe_store(node, store_id)? {
            self.sync_node(node)?;
        }
        Ok(())
    }

    /// Notes the store `store_id` that a record of `node` came from. One
    /// other than the store known for the node means the node lost all it
    /// had (a wiped or replaced disk): its checkpoint and upstream seq are
    /// forgotten and it gets a full snapshot. Returns whether that happened.
    fn observe_store(&mut self, node: &str, store_id: u64) -> Result<bool, StoreError> {
        let known = self.store.store_id(node)?;
        if store_id == known || store_id == 0 {
            return Ok(false);
        }
        if known == 0 {
            self.store.set_store_id(node, store_id);
            return Ok(false);
        }
        tracing::warn!(
            node,
            "the node has a new store (it lost its data): sending a full snapshot"
        );
        self.store.reset_node(node, store_id)?;
        self.pending_deletes.remove(node);
        self.commits.remove(node);
        self.resync(node)?;
        Ok(true)
    }

    /// Sends `node` a full snapshot of its objects, and deletes of what its
    /// checkpoint says it holds beyond them.
    fn resync(&mut self, node: &str) -> Result<(), StoreError> {
        let shard = shard_of(node, self.shards);
        let record = RingRecord::ResyncStarted {
            node_id: node.to_owned(),
        };
        self.out.push_back((shard, record));
        let have = self.store.acked(node)?;
        let empty = plan::NodeObjects::new();
        let want = self.assignment.nodes.get(node).unwrap_or(&empty).clone();
        let desired = &self.desired;
        let mut actions = plan::diff(&want, &plan::NodeObjects::new(), |k, h| {
            plan::delete_version(desired, k, h)
        });
        actions.extend(
            have.iter()
                .filter(|(k, _)| !want.contains_key(*k))
                .map(|(k, h)| Action::Delete {
                    key: k.clone(),
                    rv: plan::delete_version(desired, k, *h),
                }),
        );
        for a in actions {
            self.send(node, a);
        }
        Ok(())
    }

    fn status_log<E: std::fmt::Display>(&self, r: Result<(), E>) {
        if let Err(e) = r {
            tracing::warn!("status: {e}");
        }
    }

    fn delivered(&mut self, node: &str, objects: Vec<DeliveredObject>) {
        for d in objects {
            let pending = self.pending_deletes.get_mut(node);
            match pending.as_ref().and_then(|p| p.get(&d.key)) {
                Some(&rv) if d.resource_version >= rv => {
                    if let Some(p) = pending {
                        p.remove(&d.key);
                    }
                    self.store.ack(node, d.key, None);
                }
                _ => self.store.ack(node, d.key, Some(d.resource_version)),
            }
        }
    }

    fn upstream(&mut self, node: &str, message: Message) -> Result<(), StoreError> {
        let seq = message.header.seq;
        let last = self.store.upstream_seq(node)?;
        if seq != 0 && seq <= last {
            // Already applied: confirm again, apply nothing.
            let c = self.commits.entry(node.to_owned()).or_insert(0);
            *c = (*c).max(last);
            return Ok(());
        }
        if let Err(e) = self.apply(node, &message) {
            tracing::error!(
                node,
                resource = message.route.resource,
                seq,
                "upstream message dropped: {e}"
            );
        }
        if seq != 0 {
            self.store.set_upstream_seq(node, seq);
            let c = self.commits.entry(node.to_owned()).or_insert(0);
            *c = (*c).max(seq);
        }
        Ok(())
    }

    /// Applies one upstream message to the status files; a node may only
    /// report on itself and on the pods and devices bound to it.
    fn apply(&mut self, node: &str, m: &Message) -> Result<(), String> {
        let mut parts = m.route.resource.splitn(3, '/');
        let (Some(ns), Some(what), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
            return Err("resource is not namespace/kind/name".into());
        };
        let content: Value =
            serde_json::from_slice(&m.content).map_err(|e| format!("content is not JSON: {e}"))?;
        let owns = |k: &str| {
            self.assignment
                .nodes
                .get(node)
                .is_some_and(|set| set.contains_key(&plan::key(k, ns, name)))
        };
        let (namespace, name) = (ns.to_owned(), name.to_owned());
        let (r, change) = match what {
            "nodestatus" if name == node => (
                self.status.node_status(node, &content),
                StatusChange::Node {
                    node: node.to_owned(),
                    status: content,
                },
            ),
            "nodestatus" => return Err(format!("node {node} reported the status of node {name}")),
            "podstatus" if owns(kind::POD) => (
                self.status.pod_status(&namespace, &name, node, &content),
                StatusChange::Pod {
                    namespace,
                    name,
                    status: content,
                },
            ),
            "devicestatus" if owns(kind::DEVICE) => (
                self.status.device_status(&namespace, &name, node, &content),
                StatusChange::Device {
                    namespace,
                    name,
                    reported: content,
                },
            ),
            "podstatus" | "devicestatus" => {
                return Err(format!("{namespace}/{name} is not bound to node {node}"));
            }
            other => return Err(format!("unknown status kind {other:?}")),
        };
        self.change(change);
        r.map_err(|e| e.to_string())
    }

    /// Timer: flushes checkpoints when due.
    pub fn handle_tick(&mut self, now_ms: u64) -> Result<(), StoreError> {
        let dirty = self.store.dirty();
        if dirty > 0
            && (dirty >= FLUSH_ENTRIES
                || now_ms.saturating_sub(self.last_flush_ms) >= FLUSH_INTERVAL_MS)
        {
            self.flush()?;
        }
        Ok(())
    }

    /// Whether a flush is waiting (for a caller choosing its timer).
    pub fn dirty(&self) -> usize {
        self.store.dirty()
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        let nodes = match self.report_changes {
            true => self.store.dirty_nodes(),
            false => Vec::new(),
        };
        self.store.flush()?;
        self.last_flush_ms = unix_ms();
        for node in nodes {
            let objects = self.store.acked(&node)?;
            let objects = objects
                .iter()
                .map(|(k, rv)| (crate::kube::sync_key(k), *rv))
                .collect();
            let upstream_seq = self.store.upstream_seq(&node)?;
            let store_id = self.store.store_id(&node)?;
            self.change(StatusChange::Checkpoint {
                node,
                objects,
                upstream_seq,
                store_id,
            });
        }
        Ok(())
    }

    /// The next record for a shard's ring.
    pub fn poll_record(&mut self) -> Option<(u16, RingRecord)> {
        self.out.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::key;

    fn delivered(node: &str, name: &str, rv: u64) -> RingRecord {
        RingRecord::Delivered {
            node_id: node.into(),
            store_id: 0,
            objects: vec![DeliveredObject {
                key: key("pod", "default", name),
                resource_version: rv,
            }],
        }
    }

    fn checkpoints(c: &mut Control) -> Vec<StatusChange> {
        std::iter::from_fn(|| c.poll_status_change())
            .filter(|s| matches!(s, StatusChange::Checkpoint { .. }))
            .collect()
    }

    #[test]
    fn each_flush_reports_the_whole_checkpoint_of_every_node_it_changed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        let mut c = Control::new(2, store, StatusDir::new(&dir.path().join("status")));
        c.report_status_changes(true);
        c.handle_records(vec![
            delivered("edge-1", "a", 5),
            delivered("edge-2", "a", 6),
        ])
        .unwrap();
        assert!(checkpoints(&mut c).is_empty(), "nothing before the flush");
        c.handle_tick(u64::MAX).unwrap();
        let one = |node: &str, objects: &[(&str, u64)]| StatusChange::Checkpoint {
            node: node.into(),
            objects: objects.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            upstream_seq: 0,
            store_id: 0,
        };
        assert_eq!(
            checkpoints(&mut c),
            [
                one("edge-1", &[("default/pod/a", 5)]),
                one("edge-2", &[("default/pod/a", 6)])
            ]
        );
        c.handle_records(vec![delivered("edge-1", "b", 7)]).unwrap();
        c.handle_tick(u64::MAX).unwrap();
        assert_eq!(
            checkpoints(&mut c),
            [one("edge-1", &[("default/pod/a", 5), ("default/pod/b", 7)])],
            "only the changed node, with all it holds"
        );
    }
}
