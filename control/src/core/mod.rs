//! The control core, sans-IO: desired state, ring records and the time in,
//! [`Effect`]s out. It decides what each node is sent ([`plan`]), keeps
//! every node's checkpoint in memory ([`checkpoints`]) and turns what edges
//! report into status changes ([`upstream`]); the process glue carries the
//! effects out in order.
//!
//! Call order:
//! 1. [`Control::handle_desired`] with each new desired state (the first
//!    call also sends every node what it has not acknowledged);
//! 2. [`Control::handle_records`] with a batch read from a shard's ring;
//! 3. [`Control::handle_tick`] every few tens of milliseconds (batched
//!    checkpoint writes);
//! 4. then carry out [`Control::poll_effect`] until `None`, in order: an
//!    [`Effect::Persist`] must be durable before the next effect is carried
//!    out (a `Committed` record after it promises the edge that its upstream
//!    messages are safe; an object sent after it is one the checkpoint now
//!    says the node may hold, so that a restart still deletes it there when
//!    it goes away). Release a ring batch only after its effects.
//!
//! It depends on `schema` and `hub_core` alone: no I/O, no clock, no async
//! runtime, nothing else of this crate.

pub mod checkpoints;
pub mod plan;
mod upstream;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use hub_core::shard_of;
use schema::records::{DeliveredObject, DownRecord, ObjectKey, UpRecord};
use schema::{Header, Message, Route};
use serde_json::Value;

use self::checkpoints::{CheckpointWrites, Checkpoints};

use self::plan::{Action, Assignment, Desired, kind};

/// Write checkpoints at least this often while some are dirty.
pub const FLUSH_INTERVAL_MS: u64 = 100;
/// … or as soon as this many are dirty.
pub const FLUSH_ENTRIES: usize = 1000;

/// What the glue must do, in order.
// Most effects are records, moved once from the queue into a ring.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Write `record` into the ring of `shard`.
    Send { shard: u16, record: DownRecord },
    /// Make these checkpoint changes durable before the next effect.
    Persist(CheckpointWrites),
    /// Something `node` reported, or its link: for the status files, and
    /// in Kubernetes mode for the API server.
    Status { node: String, change: StatusChange },
    /// `node` became an edge node: give it a status entry if it has none.
    NodeAssigned(String),
}

/// An observed change, carried by [`Effect::Status`].
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
    /// A node's whole delivery checkpoint after a write (objects keyed
    /// `namespace/kind/name`), for its `NodeSync` object; only with
    /// [`Control::report_checkpoints`].
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
    report_checkpoints: bool,
    shards: u16,
    checkpoints: Checkpoints,
    desired: Desired,
    assignment: Assignment,
    started: bool,
    /// Deletes sent and not yet acknowledged: node → key → version.
    pending_deletes: HashMap<String, HashMap<ObjectKey, u64>>,
    /// Upstream seqs to confirm to the shards once durable.
    commits: BTreeMap<String, u64>,
    out: VecDeque<Effect>,
    /// Sends held back until what they tell the checkpoints is durable
    /// (objects a node may now hold), released by the next `flush`.
    staged: VecDeque<Effect>,
    now_ms: u64,
    last_flush_ms: u64,
    next_id: u64,
    problems: Vec<String>,
}

impl Control {
    /// A core over `shards` rings, starting from the checkpoints read back
    /// from durable storage.
    pub fn new(shards: u16, checkpoints: Checkpoints) -> Control {
        Control {
            report_checkpoints: false,
            shards: shards.max(1),
            checkpoints,
            desired: Desired::default(),
            assignment: Assignment::default(),
            started: false,
            pending_deletes: HashMap::new(),
            commits: BTreeMap::new(),
            out: VecDeque::new(),
            staged: VecDeque::new(),
            now_ms: 0,
            last_flush_ms: 0,
            next_id: 0,
            problems: Vec::new(),
        }
    }

    /// Also report each node's whole checkpoint after every write
    /// ([`StatusChange::Checkpoint`], Kubernetes mode).
    pub fn report_checkpoints(&mut self, on: bool) {
        self.report_checkpoints = on;
    }

    /// The next thing to do.
    pub fn poll_effect(&mut self) -> Option<Effect> {
        self.out.pop_front()
    }

    /// The current desired state.
    pub fn desired(&self) -> &Desired {
        &self.desired
    }

    /// The checkpoints as the core sees them (durable or about to be).
    pub fn checkpoints(&self) -> &Checkpoints {
        &self.checkpoints
    }

    /// Checkpoint entries not yet handed out as [`Effect::Persist`].
    pub fn dirty(&self) -> usize {
        self.checkpoints.dirty()
    }

    /// Edge nodes' JSON, for the bootstrap endpoint.
    pub fn edge_nodes(&self) -> BTreeMap<String, Arc<[u8]>> {
        self.assignment
            .nodes
            .keys()
            .filter_map(|n| {
                let k = ObjectKey::new(kind::NODE, plan::CLUSTER_NAMESPACE, n);
                Some((n.clone(), self.desired.objects.get(&k)?.content.clone()))
            })
            .collect()
    }

    /// A new desired state.
    pub fn handle_desired(&mut self, desired: Desired, now_ms: u64) {
        self.now_ms = now_ms;
        let assignment = plan::assign(&desired);
        self.log_problems(&assignment);
        for node in assignment.nodes.keys() {
            if !self.assignment.nodes.contains_key(node) {
                self.out.push_back(Effect::NodeAssigned(node.clone()));
            }
        }
        let old = std::mem::replace(&mut self.assignment, assignment);
        self.desired = desired;
        if !self.started {
            // First state since start: what each node has not acknowledged.
            self.started = true;
            let mut nodes = self.checkpoints.acked_nodes();
            nodes.extend(self.assignment.nodes.keys().cloned());
            for node in nodes {
                self.sync_node(&node);
            }
        } else {
            for (node, action) in plan::changes(&self.desired, &old, &self.assignment) {
                self.send(&node, action);
            }
        }
        self.release_staged();
    }

    fn log_problems(&mut self, assignment: &Assignment) {
        let problems: Vec<String> = assignment.problems.iter().map(|p| p.to_string()).collect();
        for p in &problems {
            if !self.problems.contains(p) {
                tracing::error!("{p}");
            }
        }
        self.problems = problems;
    }

    /// What `node` should hold.
    fn want(&self, node: &str) -> plan::NodeObjects {
        self.assignment.nodes.get(node).cloned().unwrap_or_default()
    }

    /// Sends `node` what it lacks according to its checkpoint.
    fn sync_node(&mut self, node: &str) {
        let have = self.checkpoints.acked(node);
        let desired = &self.desired;
        let actions = plan::diff(&self.want(node), &have, |k, h| {
            plan::delete_version(desired, k, h)
        });
        if !actions.is_empty() {
            tracing::info!(node, "sending {} objects not acknowledged", actions.len());
        }
        for a in actions {
            self.send(node, a);
        }
    }

    /// Sends `node` a full snapshot of its objects, and deletes of what its
    /// checkpoint says it holds beyond them.
    fn resync(&mut self, node: &str) {
        // Held back with the snapshot, after what the checkpoints learn.
        let record = DownRecord::ResyncStarted {
            node_id: node.to_owned(),
        };
        self.queue(node, record, true);
        let have = self.checkpoints.acked(node);
        let desired = &self.desired;
        let actions = plan::snapshot(&self.want(node), &have, |k, h| {
            plan::delete_version(desired, k, h)
        });
        for a in actions {
            self.send(node, a);
        }
    }

    fn send(&mut self, node: &str, action: Action) {
        let mut staged = false;
        let (key, rv, operation, content) = match action {
            Action::Upsert { key, rv, insert } => {
                let Some(obj) = self.desired.objects.get(&key) else {
                    return;
                };
                let op = if insert { "insert" } else { "update" };
                staged = self.checkpoints.sending(node, &key);
                // A delete sent before is overtaken.
                if let Some(p) = self.pending_deletes.get_mut(node) {
                    p.remove(&key);
                }
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
                id: format!("{:016x}-{:08x}", self.now_ms, self.next_id),
                timestamp_ms: self.now_ms,
                resource_version: rv,
                ..Header::default()
            },
            route: Route {
                source: "edgecontroller".into(),
                group: "resource".into(),
                operation: operation.into(),
                resource: key.to_string(),
                ..Route::default()
            },
            content,
        };
        let node_id = node.to_owned();
        let record = DownRecord::Downstream {
            node_id,
            key,
            message,
        };
        self.queue(node, record, staged);
    }

    fn push(&mut self, node: &str, record: DownRecord) {
        self.queue(node, record, false);
    }

    /// Queues `record` for `node`'s shard; held back (`hold`, or behind
    /// others held back) until the next `flush`.
    fn queue(&mut self, node: &str, record: DownRecord, hold: bool) {
        let send = Effect::Send {
            shard: shard_of(node, self.shards),
            record,
        };
        match hold || !self.staged.is_empty() {
            true => self.staged.push_back(send),
            false => self.out.push_back(send),
        }
    }

    /// Makes the sends held back go, after the write that covers them.
    fn release_staged(&mut self) {
        if !self.staged.is_empty() {
            self.flush();
        }
    }

    /// A batch of records from a shard's ring. When it held upstream
    /// messages, their seqs are persisted and `Committed` records follow.
    pub fn handle_records(&mut self, records: Vec<UpRecord>, now_ms: u64) {
        self.now_ms = now_ms;
        for r in records {
            self.handle_record(r);
        }
        self.release_staged();
        if !self.commits.is_empty() {
            self.flush();
            for (node, seq) in std::mem::take(&mut self.commits) {
                let store_id = self.checkpoints.store_id(&node);
                let record = DownRecord::Committed {
                    node_id: node.clone(),
                    store_id,
                    seq,
                };
                self.push(&node, record);
            }
        }
    }

    fn handle_record(&mut self, record: UpRecord) {
        match record {
            UpRecord::Connected {
                node_id,
                at_ms,
                store_id,
            } => self.connected(&node_id, at_ms, store_id),
            UpRecord::Disconnected {
                node_id,
                at_ms,
                reason,
            } => {
                tracing::info!(node = node_id, reason, "disconnected");
                self.status(
                    &node_id,
                    StatusChange::NodeLink {
                        node: node_id.clone(),
                        ready: false,
                        reason: "EdgeDisconnected",
                        at_ms,
                    },
                );
            }
            UpRecord::Delivered {
                node_id,
                store_id,
                objects,
            } => {
                self.observe_store(&node_id, store_id);
                self.delivered(&node_id, objects);
            }
            UpRecord::ResyncNeeded { node_id } => {
                tracing::warn!(node = node_id, "resync needed: sending a full snapshot");
                self.resync(&node_id);
            }
            UpRecord::Upstream {
                node_id,
                store_id,
                message,
            } => {
                self.observe_store(&node_id, store_id);
                self.upstream(&node_id, message);
            }
        }
    }

    fn status(&mut self, node: &str, change: StatusChange) {
        let node = node.to_owned();
        self.out.push_back(Effect::Status { node, change });
    }

    /// `node` is connected with its store `store_id`: status, then what it
    /// lacks (everything, if the store is new).
    fn connected(&mut self, node: &str, at_ms: u64, store_id: u64) {
        tracing::info!(node, "connected");
        self.status(
            node,
            StatusChange::NodeLink {
                node: node.to_owned(),
                ready: true,
                reason: "EdgeConnected",
                at_ms,
            },
        );
        if !self.observe_store(node, store_id) {
            self.sync_node(node);
        }
    }

    /// Notes the store `store_id` that a record of `node` came from. One
    /// other than the store known for the node means the node lost all it
    /// had (a wiped or replaced disk): its checkpoint and upstream seq are
    /// forgotten, durably, and then it gets a full snapshot. Returns whether
    /// that happened.
    fn observe_store(&mut self, node: &str, store_id: u64) -> bool {
        let known = self.checkpoints.store_id(node);
        if store_id == known || store_id == 0 {
            return false;
        }
        if known == 0 {
            self.checkpoints.set_store_id(node, store_id);
            return false;
        }
        tracing::warn!(
            node,
            "the node has a new store (it lost its data): sending a full snapshot"
        );
        self.checkpoints.reset_node(node, store_id);
        self.pending_deletes.remove(node);
        self.commits.remove(node);
        self.resync(node);
        true
    }

    /// What `node` committed. An acknowledged delete forgets the object,
    /// unless it was sent again since; an update acknowledged while a
    /// delete of it is on the way leaves it at "may hold" (0), since a delete
    /// can carry the update's own version and its acknowledgement can be
    /// lost with a hub: the checkpoint never claims a version the node may
    /// no longer have.
    fn delivered(&mut self, node: &str, objects: Vec<DeliveredObject>) {
        for d in objects {
            let pending = self.pending_deletes.get_mut(node);
            let delete_rv = pending.as_ref().and_then(|p| p.get(&d.key)).copied();
            let rv = match (d.deleted, delete_rv) {
                (true, Some(rv)) => {
                    if d.resource_version >= rv
                        && let Some(p) = pending
                    {
                        p.remove(&d.key);
                    }
                    None
                }
                // Sent again since (or before a restart): it may hold it.
                (true, None) if self.checkpoints.holds(node, &d.key) => Some(0),
                (true, None) => continue,
                (false, Some(_)) => Some(0),
                (false, None) => Some(d.resource_version),
            };
            self.checkpoints.ack(node, d.key, rv);
        }
    }

    fn upstream(&mut self, node: &str, message: Message) {
        let seq = message.header.seq;
        let last = self.checkpoints.upstream_seq(node);
        if seq != 0 && seq <= last {
            // Already applied: confirm again, apply nothing.
            let c = self.commits.entry(node.to_owned()).or_insert(0);
            *c = (*c).max(last);
            return;
        }
        match upstream::status_change(node, &self.assignment, &message) {
            Ok(change) => self.status(node, change),
            Err(e) => tracing::error!(
                node,
                resource = message.route.resource,
                seq,
                "upstream message dropped: {e}"
            ),
        }
        if seq != 0 {
            self.checkpoints.set_upstream_seq(node, seq);
            let c = self.commits.entry(node.to_owned()).or_insert(0);
            *c = (*c).max(seq);
        }
    }

    /// Timer: hands out checkpoint writes when due.
    pub fn handle_tick(&mut self, now_ms: u64) {
        self.now_ms = now_ms;
        let dirty = self.checkpoints.dirty();
        if dirty > 0
            && (dirty >= FLUSH_ENTRIES
                || now_ms.saturating_sub(self.last_flush_ms) >= FLUSH_INTERVAL_MS)
        {
            self.flush();
        }
    }

    /// The process stops: hands out every checkpoint change now.
    pub fn handle_shutdown(&mut self) {
        self.flush();
    }

    /// Hands out every checkpoint change as one [`Effect::Persist`], then
    /// the changed nodes' whole checkpoints when they are reported.
    fn flush(&mut self) {
        let nodes = match self.report_checkpoints {
            true => self.checkpoints.dirty_nodes(),
            false => Vec::new(),
        };
        let writes = self.checkpoints.take_writes();
        if !writes.is_empty() {
            self.out.push_back(Effect::Persist(writes));
        }
        self.out.extend(self.staged.drain(..));
        self.last_flush_ms = self.now_ms;
        for node in nodes {
            let c = self.checkpoints.node(&node);
            let objects = (c.acked.iter())
                .filter(|(_, rv)| **rv > 0)
                .map(|(k, rv)| (k.to_string(), *rv));
            self.status(
                &node,
                StatusChange::Checkpoint {
                    node: node.clone(),
                    objects: objects.collect(),
                    upstream_seq: c.upstream_seq,
                    store_id: c.store_id,
                },
            );
        }
    }
}
