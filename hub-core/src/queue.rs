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
//!
//! The queue holds bodies of any type `B`: owned [`Message`]s by default,
//! slab handles inside the hub, which copies each message once into the
//! shard's slab ([`crate::body`]) so that a message costs no allocation in
//! steady state. Each object has one entry, shared by its pending message
//! and its acknowledged version: an object pushed again after it was
//! acknowledged finds its key in place.

use std::collections::VecDeque;
use std::sync::Arc;

use rustc_hash::FxHashMap as HashMap;

use schema::records::ObjectKey;
use schema::{Message, MessageRef};

use crate::body::{Bodies, Body, BodyId};

mod owned;

/// Route operation of a message that deletes its object.
pub const DELETE_OPERATION: &str = "delete";

/// Bytes charged for each pending entry on top of
/// [`MessageRef::payload_len`](schema::MessageRef::payload_len).
///
/// It is an upper estimate, on 64-bit targets, of the fixed-size memory one
/// entry occupies: the object's entry in the map, the shared [`ObjectKey`]
/// allocation with its reference counts, the pointer in the FIFO, the body
/// (the hub's slab slot, or an owned [`Message`]) and the hash table's slack;
/// compile-time checks keep it honest. The key's own strings are not
/// charged: they repeat names the route's `resource` already carries, which
/// `payload_len` counts.
pub const ENTRY_OVERHEAD: usize = 512;

/// Bytes charged for each acknowledged version on top of its key's strings:
/// an upper estimate of the object's entry (the map's slot, the shared key
/// with its reference counts, hash table slack).
pub const ACKED_OVERHEAD: usize = 160;

/// Heap bytes of a shared key besides its strings: two reference counts.
const SHARED_KEY: usize = 2 * size_of::<usize>() + size_of::<ObjectKey>();
const SLOT: usize = size_of::<Arc<ObjectKey>>() + 16;

const _: () = assert!(
    size_of::<Entry<BodyId>>() + SLOT + SHARED_KEY <= ACKED_OVERHEAD,
    "ACKED_OVERHEAD no longer covers an acknowledged entry's fixed-size memory"
);

const _: () = assert!(
    size_of::<Entry<BodyId>>() + size_of::<Body>() + SLOT + SHARED_KEY + 8 <= ENTRY_OVERHEAD
        && size_of::<Entry<Message>>() + SLOT + SHARED_KEY + 8 <= ENTRY_OVERHEAD,
    "ENTRY_OVERHEAD no longer covers an entry's fixed-size memory"
);

/// Bytes charged for the acknowledged version of `key`.
fn acked_cost(key: &ObjectKey) -> usize {
    ACKED_OVERHEAD + key.kind.len() + key.namespace.len() + key.name.len()
}

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

/// Where bodies the queue drops go: the slab frees their slot.
pub(crate) trait Release<B> {
    fn release(&mut self, body: B);
}

impl Release<BodyId> for Bodies {
    fn release(&mut self, body: BodyId) {
        self.remove(body);
    }
}

/// Owned bodies are simply dropped.
pub(crate) struct Discard;

impl Release<Message> for Discard {
    fn release(&mut self, _: Message) {}
}

/// What the queue needs to know of a message to coalesce and charge it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Meta {
    resource_version: u64,
    delete: bool,
    /// Bytes charged while pending, see [`NodeQueue::cost_of`].
    cost: usize,
}

impl Meta {
    pub(crate) fn of(m: &MessageRef<'_>) -> Self {
        Self {
            resource_version: m.header.resource_version,
            delete: m.route.operation == DELETE_OPERATION,
            cost: m.payload_len() + ENTRY_OVERHEAD,
        }
    }
}

/// A pending message and what the queue needs to know about it.
#[derive(Debug)]
struct Pending<B> {
    body: B,
    meta: Meta,
}

/// What the queue keeps for one object: its pending message, its
/// acknowledged version, or both.
#[derive(Debug)]
struct Entry<B> {
    /// The map's key, for the FIFO to share.
    key: Arc<ObjectKey>,
    /// The acknowledged version with its delete bit ([`known`]); 0 when
    /// none is recorded (version 0 is never recorded).
    known: u64,
    pending: Option<Pending<B>>,
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
/// Output is deterministic: the hash map is only looked up and pruned, never
/// iterated for output, so its seed cannot change the order of anything
/// popped.
#[derive(Debug)]
pub struct NodeQueue<B = Message> {
    budget: usize,
    bytes: usize,
    needs_resync: bool,
    /// Invariant: holds exactly the keys with a pending message or an
    /// acknowledged version.
    entries: HashMap<Arc<ObjectKey>, Entry<B>>,
    /// Keys with a pending message, each once, oldest first.
    order: VecDeque<Arc<ObjectKey>>,
    /// Entries with a pending message.
    pending: usize,
    /// Entries with an acknowledged version.
    acked: usize,
    /// Bytes charged for acknowledged versions, part of the budget.
    acked_bytes: usize,
}

/// Top bit of a known version: it is the version of a delete.
const DELETED: u64 = 1 << 63;

/// A known version as kept in an entry.
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

impl<B> NodeQueue<B> {
    /// An empty queue that holds at most `budget` bytes, counted by
    /// [`cost_of`](Self::cost_of).
    pub fn new(budget: usize) -> Self {
        Self {
            budget,
            bytes: 0,
            needs_resync: false,
            entries: HashMap::default(),
            order: VecDeque::new(),
            pending: 0,
            acked: 0,
            acked_bytes: 0,
        }
    }

    /// Queues the body `make` gives for the object `key`, coalescing with
    /// the message pending for it; see the type's documentation for the
    /// version rules. `make` is called only if the message is queued; a
    /// body the queue drops goes to `store`.
    ///
    /// If the queue would go over its budget, it releases every pending
    /// entry, sets [`needs_resync`](Self::needs_resync) and returns
    /// [`PushOutcome::Overflow`]; so do all pushes until
    /// [`resync_started`](Self::resync_started).
    pub(crate) fn push_with<R: Release<B>>(
        &mut self,
        key: &ObjectKey,
        meta: Meta,
        make: impl FnOnce(&mut R) -> B,
        store: &mut R,
    ) -> PushOutcome {
        if self.needs_resync {
            return PushOutcome::Overflow { released: 0 };
        }
        // One lookup: the entry holds its own key for the FIFO.
        let Some(e) = self.entries.get_mut(key) else {
            return self.push_new(key, meta, make, store);
        };
        let (rv, delete) = (meta.resource_version, meta.delete);
        if e.known != 0 && is_stale(rv, delete, e.known) {
            return PushOutcome::Stale {
                known: e.known & !DELETED,
            };
        }
        let freed = match &e.pending {
            Some(p) if is_stale(rv, delete, known(p.meta.resource_version, p.meta.delete)) => {
                return PushOutcome::Stale {
                    known: p.meta.resource_version,
                };
            }
            Some(p) => p.meta.cost,
            None => 0,
        };
        let bytes = self.bytes.saturating_sub(freed).saturating_add(meta.cost);
        if bytes + self.acked_bytes > self.budget {
            return self.overflow(store);
        }
        self.bytes = bytes;
        let pending = Pending {
            body: make(store),
            meta,
        };
        match e.pending.replace(pending) {
            Some(previous) => {
                store.release(previous.body);
                PushOutcome::Replaced {
                    previous: previous.meta.resource_version,
                }
            }
            None => {
                // The FIFO shares the entry's key: no copy of its strings.
                self.order.push_back(Arc::clone(&e.key));
                self.pending += 1;
                PushOutcome::Queued
            }
        }
    }

    /// [`push_with`](Self::push_with) for an object the queue holds
    /// nothing of.
    fn push_new<R: Release<B>>(
        &mut self,
        key: &ObjectKey,
        meta: Meta,
        make: impl FnOnce(&mut R) -> B,
        store: &mut R,
    ) -> PushOutcome {
        let bytes = self.bytes.saturating_add(meta.cost);
        if bytes + self.acked_bytes > self.budget {
            return self.overflow(store);
        }
        self.bytes = bytes;
        let shared = Arc::new(key.clone());
        self.order.push_back(Arc::clone(&shared));
        let entry = Entry {
            key: Arc::clone(&shared),
            known: 0,
            pending: Some(Pending {
                body: make(store),
                meta,
            }),
        };
        self.entries.insert(shared, entry);
        self.pending += 1;
        PushOutcome::Queued
    }

    /// Releases every pending entry and waits for a resync.
    fn overflow(&mut self, store: &mut impl Release<B>) -> PushOutcome {
        let released = self.pending;
        self.release_all(store);
        // The snapshot that follows is sent whole: the memory of what the
        // node holds is given back with the rest.
        self.reset_acknowledged();
        self.needs_resync = true;
        PushOutcome::Overflow { released }
    }

    /// Takes the oldest pending message with its key; `record` also
    /// records its version as the newest the node will have (see
    /// [`pop_for_send`](NodeQueue::pop_for_send)).
    ///
    /// Entries that became stale while pending, because the node meanwhile
    /// acknowledged a version at least as new, are discarded on the way.
    pub(crate) fn pop_shared(
        &mut self,
        record: bool,
        store: &mut impl Release<B>,
    ) -> Option<(Arc<ObjectKey>, B)> {
        while let Some(key) = self.order.pop_front() {
            let Some(e) = self.entries.get_mut(&*key) else {
                continue;
            };
            let Some(Pending { body, meta }) = e.pending.take() else {
                continue;
            };
            self.pending -= 1;
            self.bytes = self.bytes.saturating_sub(meta.cost);
            let rv = meta.resource_version;
            if e.known != 0 && is_stale(rv, meta.delete, e.known) {
                store.release(body);
                continue;
            }
            if record && rv != 0 {
                if e.known == 0 {
                    // Recorded whatever the budget: the message is sent.
                    self.acked += 1;
                    self.acked_bytes += acked_cost(&key);
                }
                e.known = known(rv, meta.delete);
            }
            if e.known == 0 {
                self.entries.remove(&*key);
            }
            return Some((key, body));
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
        let cost = acked_cost(key);
        let room = self.bytes() + cost <= self.budget;
        let Some(e) = self.entries.get_mut(key) else {
            if room {
                let shared = Arc::new(key.clone());
                let entry = Entry {
                    key: Arc::clone(&shared),
                    known: rv,
                    pending: None,
                };
                self.entries.insert(shared, entry);
                self.acked += 1;
                self.acked_bytes += cost;
            }
            return;
        };
        if e.known != 0 {
            if rv >= e.known & !DELETED {
                e.known = rv;
            }
        } else if room {
            e.known = rv;
            self.acked += 1;
            self.acked_bytes += cost;
        }
    }

    /// Drops the acknowledged version of `key`.
    pub fn forget(&mut self, key: &ObjectKey) {
        let Some(e) = self.entries.get_mut(key) else {
            return;
        };
        if e.known == 0 {
            return;
        }
        e.known = 0;
        self.acked -= 1;
        self.acked_bytes = self.acked_bytes.saturating_sub(acked_cost(key));
        if e.pending.is_none() {
            self.entries.remove(key);
        }
    }

    /// Drops the acknowledged version of `key` if it is still `rv`: the
    /// node acknowledged the delete of version `rv`, so it holds nothing of
    /// `key` any more (unless a newer version entered the window since).
    pub fn forget_at(&mut self, key: &ObjectKey, rv: u64) {
        if self.entries.get(key).map(|e| e.known) == Some(known(rv, true)) {
            self.forget(key);
        }
    }

    /// Forgets every acknowledged version: the node holds less than it
    /// said (it lost its store, or resumed behind what it acknowledged), so
    /// whatever is pushed next is sent, however old.
    pub fn reset_acknowledged(&mut self) {
        if self.pending == 0 {
            self.entries = HashMap::default();
        } else {
            self.entries.retain(|_, e| {
                e.known = 0;
                e.pending.is_some()
            });
        }
        self.acked = 0;
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
    /// until [`pop_front`](NodeQueue::pop_front) discards them.
    pub fn len(&self) -> usize {
        self.pending
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.pending == 0
    }

    /// Bytes charged for the pending entries and the acknowledged versions;
    /// never above the budget.
    pub fn bytes(&self) -> usize {
        self.bytes + self.acked_bytes
    }

    /// Acknowledged versions held (one per object the node is believed to
    /// hold).
    pub fn acknowledged_len(&self) -> usize {
        self.acked
    }

    /// The byte budget given to [`new`](Self::new).
    pub fn budget(&self) -> usize {
        self.budget
    }

    /// Returns the memory of an empty queue to the allocator (the session
    /// calls it when the link goes quiet).
    pub fn shrink_idle(&mut self) {
        if self.pending == 0 {
            self.order = VecDeque::new();
        }
        self.entries.shrink_to_fit();
    }

    /// Drops every pending entry, their bodies to `store`, and gives their
    /// memory back.
    fn release_all(&mut self, store: &mut impl Release<B>) {
        for key in std::mem::take(&mut self.order) {
            if let Some(e) = self.entries.get_mut(&*key)
                && let Some(p) = e.pending.take()
            {
                store.release(p.body);
            }
        }
        self.entries.retain(|_, e| e.known != 0);
        self.pending = 0;
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests;
