//! The per-node downstream queue, coalesced by object.
//!
//! A [`NodeQueue`] holds the messages waiting to enter a node's send window,
//! at most one per object ([`ObjectKey`]): a newer version of an object
//! replaces the pending one, so a node that is offline for a week costs memory
//! for its objects, not for their history. The queue's bytes are bounded by a
//! budget; going over it drops everything and asks the application for a
//! full resync instead of growing.
//!
//! Call order: the application [`push`](NodeQueue::push)es messages as they
//! are produced; the session [`pop_front`](NodeQueue::pop_front)s them into
//! its send window while the window has room, and reports each object version
//! the node durably committed with [`acknowledged`](NodeQueue::acknowledged).
//! After [`PushOutcome::Overflow`] the application calls
//! [`resync_started`](NodeQueue::resync_started) and pushes a full snapshot.

use std::collections::VecDeque;
use std::collections::hash_map::Entry as MapEntry;
use std::sync::Arc;

use rustc_hash::FxHashMap as HashMap;

use schema::Message;
use schema::records::ObjectKey;

/// Route operation of a message that deletes its object.
pub const DELETE_OPERATION: &str = "delete";

/// Bytes charged for each pending entry on top of
/// [`MessageRef::payload_len`](schema::MessageRef::payload_len).
///
/// It is an upper estimate, on 64-bit targets, of the fixed-size memory one
/// entry occupies: the [`Message`] struct with the entry's bookkeeping, the
/// shared [`ObjectKey`] allocation with its reference counts, the two
/// pointers to it (one in the map, one in the FIFO) and the hash table's
/// slack; a compile-time check keeps it honest. The
/// key's own strings are not charged: they repeat names the route's
/// `resource` already carries, which `payload_len` counts.
pub const ENTRY_OVERHEAD: usize = 512;

/// Bytes charged for each acknowledged version on top of its key's strings:
/// an upper estimate of the map entry (key, version, hash table slack).
pub const ACKED_OVERHEAD: usize = 96;

const _: () = assert!(
    size_of::<ObjectKey>() + size_of::<u64>() + 16 <= ACKED_OVERHEAD,
    "ACKED_OVERHEAD no longer covers an acknowledged entry's fixed-size memory"
);

/// Bytes charged for the acknowledged version of `key`.
fn acked_cost(key: &ObjectKey) -> usize {
    ACKED_OVERHEAD + key.kind.len() + key.namespace.len() + key.name.len()
}

const _: () = assert!(
    size_of::<Pending>() + size_of::<ObjectKey>() + 16 + 2 * size_of::<Arc<ObjectKey>>() + 16
        <= ENTRY_OVERHEAD,
    "ENTRY_OVERHEAD no longer covers an entry's fixed-size memory"
);

/// What [`NodeQueue::push`] did with a message.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// Nothing was pending for the key: the message joined the back.
    Queued,
    /// The message superseded the pending one of its key, which is dropped;
    /// the key keeps its place in the FIFO.
    Replaced {
        /// resourceVersion of the dropped message.
        previous: u64,
    },
    /// The message was dropped: the pending or acknowledged version of its
    /// key is at least as new.
    Stale {
        /// The pending or acknowledged version that made it stale.
        known: u64,
    },
    /// The message was dropped because the queue is over its byte budget or
    /// already waiting for a resync; see [`NodeQueue::needs_resync`].
    Overflow {
        /// Pending entries released by this push (0 when the queue was
        /// already waiting for a resync).
        released: usize,
    },
}

/// A pending message and what the queue needs to know about it.
#[derive(Debug)]
struct Pending {
    message: Message,
    resource_version: u64,
    delete: bool,
    /// Bytes charged for this entry, see [`NodeQueue::cost_of`].
    cost: usize,
}

/// The downstream queue of one node: FIFO across objects, at most one pending
/// message per object, bounded in bytes.
///
/// Version rules, for a message of resourceVersion `rv` and a key whose
/// pending or acknowledged version is `known`:
///
/// - `rv == 0` means unversioned: it always replaces, and is never stale;
/// - an update is stale unless `rv > known`, or `rv == known` and `known`
///   is a delete: an object the node dropped because it no longer needed
///   it is dropped at its current version, and comes back at that version
///   when the node needs it again (an object really deleted goes away at a
///   version newer than any it had, so nothing comes back at that one);
/// - a delete is stale unless `rv >= known`: it wins ties, because a delete
///   usually carries the last version of the object, which may be exactly
///   the update pending or acknowledged before it.
///
/// A replacing message takes over the pending entry's place in the FIFO
/// rather than going to the back, so an object updated faster than the link
/// drains is still sent, with its newest version, when its turn comes.
///
/// Acknowledged versions are kept per key, one small entry per object the
/// node holds, charged to the byte budget ([`ACKED_OVERHEAD`] plus the
/// key's strings). They are what the hub believes the node holds, a cache of
/// what the node said: [`reset_acknowledged`](Self::reset_acknowledged)
/// drops them when the node turns out to hold less, and an acknowledged
/// delete is forgotten ([`forget_at`](Self::forget_at)) so the map is
/// bounded by the node's live objects.
///
/// Output is deterministic: the hash maps are only looked up, never iterated,
/// so their random seed cannot change the order of anything popped.
#[derive(Debug)]
pub struct NodeQueue {
    budget: usize,
    bytes: usize,
    needs_resync: bool,
    /// Invariant: holds exactly the keys of `order`.
    pending: HashMap<Arc<ObjectKey>, Pending>,
    /// Keys with a pending message, each once, oldest first.
    order: VecDeque<Arc<ObjectKey>>,
    acked: HashMap<ObjectKey, u64>,
    /// Bytes charged for `acked`, part of the budget.
    acked_bytes: usize,
}

/// Top bit of a known version: it is the version of a delete.
const DELETED: u64 = 1 << 63;

/// A known version as kept in the acknowledged map.
fn known(rv: u64, delete: bool) -> u64 {
    if delete { rv | DELETED } else { rv & !DELETED }
}

/// Whether a message of version `rv` is no newer than the `known` version
/// (with its delete bit) under the rules documented on [`NodeQueue`].
fn is_stale(rv: u64, delete: bool, known: u64) -> bool {
    let (known, known_delete) = (known & !DELETED, known & DELETED != 0);
    rv != 0
        && if delete {
            rv < known
        } else {
            rv < known || (rv == known && !known_delete)
        }
}

impl NodeQueue {
    /// An empty queue that holds at most `budget` bytes, counted by
    /// [`cost_of`](Self::cost_of).
    pub fn new(budget: usize) -> Self {
        Self {
            budget,
            bytes: 0,
            needs_resync: false,
            pending: HashMap::default(),
            order: VecDeque::new(),
            acked: HashMap::default(),
            acked_bytes: 0,
        }
    }

    /// Bytes a message is charged while pending: its payload plus
    /// [`ENTRY_OVERHEAD`].
    pub fn cost_of(message: &Message) -> usize {
        message.as_ref().payload_len() + ENTRY_OVERHEAD
    }

    /// Queues `message` for the object `key`, coalescing with the message
    /// pending for it; see the type's documentation for the version rules.
    ///
    /// If the queue would go over its budget, it releases every pending
    /// entry, sets [`needs_resync`](Self::needs_resync) and returns
    /// [`PushOutcome::Overflow`]; so do all pushes until
    /// [`resync_started`](Self::resync_started).
    pub fn push(&mut self, key: ObjectKey, message: Message) -> PushOutcome {
        if self.needs_resync {
            return PushOutcome::Overflow { released: 0 };
        }
        let rv = message.header.resource_version;
        let delete = message.route.operation == DELETE_OPERATION;
        if let Some(&known) = self.acked.get(&key)
            && is_stale(rv, delete, known)
        {
            return PushOutcome::Stale {
                known: known & !DELETED,
            };
        }
        let previous = self.pending.get(&key);
        if let Some(p) = previous
            && is_stale(rv, delete, known(p.resource_version, p.delete))
        {
            return PushOutcome::Stale {
                known: p.resource_version,
            };
        }
        let cost = Self::cost_of(&message);
        let freed = previous.map_or(0, |p| p.cost);
        let bytes = self.bytes.saturating_sub(freed).saturating_add(cost);
        if bytes + self.acked_bytes > self.budget {
            let released = self.pending.len();
            self.release_all();
            // The snapshot that follows is sent whole: the memory of what
            // the node holds is given back with the rest.
            self.reset_acknowledged();
            self.needs_resync = true;
            return PushOutcome::Overflow { released };
        }
        self.bytes = bytes;
        let entry = Pending {
            message,
            resource_version: rv,
            delete,
            cost,
        };
        match self.pending.entry(Arc::new(key)) {
            MapEntry::Occupied(mut slot) => PushOutcome::Replaced {
                previous: slot.insert(entry).resource_version,
            },
            MapEntry::Vacant(slot) => {
                // The FIFO shares the map's key: no copy of its strings.
                self.order.push_back(Arc::clone(slot.key()));
                slot.insert(entry);
                PushOutcome::Queued
            }
        }
    }

    /// Takes the oldest pending message, or `None` when nothing is pending.
    pub fn pop_front(&mut self) -> Option<Message> {
        self.pop_front_with_key().map(|(_, message)| message)
    }

    /// Takes the oldest pending message with its key, which the session
    /// keeps to report [`acknowledged`](Self::acknowledged) later.
    ///
    /// Entries that became stale while pending, because the node meanwhile
    /// acknowledged a version at least as new, are discarded on the way.
    pub fn pop_front_with_key(&mut self) -> Option<(ObjectKey, Message)> {
        while let Some(key) = self.order.pop_front() {
            let Some(entry) = self.pending.remove(&*key) else {
                continue;
            };
            self.bytes = self.bytes.saturating_sub(entry.cost);
            if let Some(&known) = self.acked.get(&*key)
                && is_stale(entry.resource_version, entry.delete, known)
            {
                continue;
            }
            // The map's copy went with `remove`: this is the last owner.
            let key = Arc::try_unwrap(key).unwrap_or_else(|shared| (*shared).clone());
            return Some((key, entry.message));
        }
        None
    }

    /// Takes the oldest pending message for the send window and records its
    /// version as the newest the node will have: it is sent until it is
    /// acknowledged, so anything older is stale from now on. The same as
    /// [`pop_front_with_key`](Self::pop_front_with_key) followed by
    /// [`acknowledged`](Self::acknowledged), with one lookup instead of two.
    pub fn pop_for_send(&mut self) -> Option<(ObjectKey, Message)> {
        while let Some(key) = self.order.pop_front() {
            let Some(entry) = self.pending.remove(&*key) else {
                continue;
            };
            self.bytes = self.bytes.saturating_sub(entry.cost);
            let key = Arc::try_unwrap(key).unwrap_or_else(|shared| (*shared).clone());
            let rv = entry.resource_version;
            match self.acked.get_mut(&key) {
                Some(k) if is_stale(rv, entry.delete, *k) => continue,
                // Not stale: at least as new as what was known.
                Some(k) if rv != 0 => *k = known(rv, entry.delete),
                Some(_) => {}
                None if rv != 0 => self.insert_acked(key.clone(), known(rv, entry.delete)),
                None => {}
            }
            return Some((key, entry.message));
        }
        None
    }

    /// Records that the node durably committed version `rv` of `key`; later
    /// messages for `key` must be newer to be queued. Version 0 records
    /// nothing, and the recorded version never goes down. A new key that
    /// would take the queue over its budget is not recorded: the map is a
    /// cache, and the node itself refuses versions it already holds.
    pub fn acknowledged(&mut self, key: &ObjectKey, rv: u64) {
        if rv == 0 {
            return;
        }
        let room = self.bytes() + acked_cost(key) <= self.budget;
        match self.acked.get_mut(key) {
            Some(k) if rv >= *k & !DELETED => *k = rv,
            Some(_) => {}
            None if room => self.insert_acked(key.clone(), rv),
            None => {}
        }
    }

    fn insert_acked(&mut self, key: ObjectKey, rv: u64) {
        self.acked_bytes += acked_cost(&key);
        self.acked.insert(key, rv);
    }

    /// Drops the acknowledged version of `key`.
    pub fn forget(&mut self, key: &ObjectKey) {
        if self.acked.remove(key).is_some() {
            self.acked_bytes = self.acked_bytes.saturating_sub(acked_cost(key));
        }
    }

    /// Drops the acknowledged version of `key` if it is still `rv`: the
    /// node acknowledged the delete of version `rv`, so it holds nothing of
    /// `key` any more (unless a newer version entered the window since).
    pub fn forget_at(&mut self, key: &ObjectKey, rv: u64) {
        if self.acked.get(key) == Some(&known(rv, true)) {
            self.forget(key);
        }
    }

    /// Forgets every acknowledged version: the node holds less than it
    /// said (it lost its store, or resumed behind what it acknowledged), so
    /// whatever is pushed next is sent, however old.
    pub fn reset_acknowledged(&mut self) {
        self.acked = HashMap::default();
        self.acked_bytes = 0;
    }

    /// Clears [`needs_resync`](Self::needs_resync) so pushes are accepted
    /// again. The application calls it right before pushing a full snapshot
    /// of the node's objects. Acknowledged versions are kept, so snapshot
    /// entries the node already committed come back as
    /// [`PushOutcome::Stale`] and cost nothing.
    pub fn resync_started(&mut self) {
        self.needs_resync = false;
    }

    /// Whether the queue overflowed and refuses pushes until
    /// [`resync_started`](Self::resync_started).
    pub fn needs_resync(&self) -> bool {
        self.needs_resync
    }

    /// Number of pending entries. Entries acknowledged while pending count
    /// until [`pop_front`](Self::pop_front) discards them.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Bytes charged for the pending entries and the acknowledged versions;
    /// never above the budget.
    pub fn bytes(&self) -> usize {
        self.bytes + self.acked_bytes
    }

    /// Acknowledged versions held (one per object the node is believed to
    /// hold).
    pub fn acknowledged_len(&self) -> usize {
        self.acked.len()
    }

    /// The byte budget given to [`new`](Self::new).
    pub fn budget(&self) -> usize {
        self.budget
    }

    /// Drops every pending entry and gives their memory back.
    /// Returns the memory of an empty queue to the allocator (the session
    /// calls it when the link goes quiet).
    pub fn shrink_idle(&mut self) {
        if self.pending.is_empty() {
            self.release_all();
        }
        self.acked.shrink_to_fit();
    }

    fn release_all(&mut self) {
        self.pending = HashMap::default();
        self.order = VecDeque::new();
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests;
