//! The queue of owned [`Message`]s: the interface of [`NodeQueue`] for
//! callers outside the hub, which keeps its bodies in the shard's slab.

use std::sync::Arc;

use schema::Message;
use schema::records::ObjectKey;

use super::{Discard, Meta, NodeQueue, PushOutcome};

impl NodeQueue<Message> {
    /// Bytes a message is charged while pending: its payload plus
    /// [`ENTRY_OVERHEAD`](super::ENTRY_OVERHEAD).
    pub fn cost_of(message: &Message) -> usize {
        Meta::of(&message.as_ref()).cost
    }

    /// Queues `message` for the object `key`, coalescing with the message
    /// pending for it; see the type's documentation for the version rules.
    ///
    /// If the queue would go over its budget, it releases every pending
    /// entry, sets [`needs_resync`](Self::needs_resync) and returns
    /// [`PushOutcome::Overflow`]; so do all pushes until
    /// [`resync_started`](Self::resync_started).
    pub fn push(&mut self, key: ObjectKey, message: Message) -> PushOutcome {
        let meta = Meta::of(&message.as_ref());
        self.push_with(&key, meta, |_| message, &mut Discard)
    }

    /// Takes the oldest pending message, or `None` when nothing is pending.
    pub fn pop_front(&mut self) -> Option<Message> {
        self.pop_shared(false, &mut Discard).map(|(_, m)| m)
    }

    /// Takes the oldest pending message with its key, which the session
    /// keeps to report [`acknowledged`](Self::acknowledged) later.
    ///
    /// Entries that became stale while pending, because the node meanwhile
    /// acknowledged a version at least as new, are discarded on the way.
    pub fn pop_front_with_key(&mut self) -> Option<(ObjectKey, Message)> {
        let (key, m) = self.pop_shared(false, &mut Discard)?;
        Some((Arc::unwrap_or_clone(key), m))
    }

    /// Takes the oldest pending message for the send window and records its
    /// version as the newest the node will have: it is sent until it is
    /// acknowledged, so anything older is stale from now on. The same as
    /// [`pop_front_with_key`](Self::pop_front_with_key) followed by
    /// [`acknowledged`](Self::acknowledged), with one lookup instead of two.
    pub fn pop_for_send(&mut self) -> Option<(ObjectKey, Message)> {
        let (key, m) = self.pop_shared(true, &mut Discard)?;
        Some((Arc::unwrap_or_clone(key), m))
    }
}
