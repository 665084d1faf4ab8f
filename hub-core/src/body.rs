//! The shard's slab of downstream message bodies.
//!
//! A message the hub holds (queued, in the send window, or best-effort) is
//! copied once into a slot of [`Bodies`]: its strings side by side in one
//! buffer, its content in another. Slots are reused with their buffers, so
//! in steady state a message costs no allocation: the queue and the window
//! hold a [`BodyId`] of four bytes. [`Bodies::trim`] gives back the buffers
//! of slots the recent peak did not need.

use schema::{Header, Message, MessageRef, Route};

/// Index of a body in [`Bodies`]; valid until it is removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BodyId(u32);

/// Anything that can be read as a message: the hub copies what it keeps.
pub trait AsMessage {
    fn as_message(&self) -> MessageRef<'_>;
}

impl AsMessage for Message {
    fn as_message(&self) -> MessageRef<'_> {
        self.as_ref()
    }
}

impl AsMessage for &Message {
    fn as_message(&self) -> MessageRef<'_> {
        self.as_ref()
    }
}

impl AsMessage for MessageRef<'_> {
    fn as_message(&self) -> MessageRef<'_> {
        *self
    }
}

/// Number of string fields of a message.
const STRINGS: usize = 8;

/// A slot's buffers beyond this size are given back when it is freed: one
/// large message does not pin its memory.
const KEEP_CAPACITY: usize = 64 << 10;

/// One message, copied.
#[derive(Debug, Default)]
pub(crate) struct Body {
    /// id, parent_id, message_type, source, destination, group, operation,
    /// resource, in that order.
    text: String,
    /// End of each string in `text`.
    ends: [u32; STRINGS],
    content: Vec<u8>,
    timestamp_ms: u64,
    resource_version: u64,
    seq: u64,
    sync: bool,
    best_effort: bool,
    /// The slot holds a body (it is not on the free list).
    used: bool,
}

impl Body {
    fn fill(&mut self, m: &MessageRef<'_>) {
        let h = &m.header;
        self.text.clear();
        // `as_ref` reads them back in `MessageRef::strings`' order.
        for (end, s) in self.ends.iter_mut().zip(m.strings()) {
            self.text.push_str(s);
            // Messages are refused far below 4 GiB (the frame limit).
            *end = self.text.len() as u32;
        }
        self.content.clear();
        self.content.extend_from_slice(m.content);
        self.timestamp_ms = h.timestamp_ms;
        self.resource_version = h.resource_version;
        self.seq = h.seq;
        self.sync = h.sync;
        self.best_effort = h.best_effort;
    }

    fn string(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        // The ends were taken at character boundaries in `fill`.
        self.text
            .get(start..self.ends[i] as usize)
            .unwrap_or_default()
    }

    pub(crate) fn as_ref(&self) -> MessageRef<'_> {
        let s = |i| self.string(i);
        MessageRef {
            header: Header {
                id: s(0),
                parent_id: s(1),
                message_type: s(2),
                timestamp_ms: self.timestamp_ms,
                sync: self.sync,
                resource_version: self.resource_version,
                seq: self.seq,
                best_effort: self.best_effort,
            },
            route: Route {
                source: s(3),
                destination: s(4),
                group: s(5),
                operation: s(6),
                resource: s(7),
            },
            content: &self.content,
        }
    }

    /// Numbers the message for the send window.
    pub(crate) fn number(&mut self, seq: u64) {
        self.seq = seq;
        self.best_effort = false;
    }

    fn release_large(&mut self) {
        if self.text.capacity() > KEEP_CAPACITY {
            self.text = String::new();
        }
        if self.content.capacity() > KEEP_CAPACITY {
            self.content = Vec::new();
        }
    }

    fn release(&mut self) {
        self.text = String::new();
        self.content = Vec::new();
    }
}

/// The slab: bodies in reusable slots.
#[derive(Debug, Default)]
pub(crate) struct Bodies {
    slots: Vec<Body>,
    /// Free slots, the most recently freed last (its buffers are warm).
    free: Vec<u32>,
    /// Most slots in use at once since the last trim.
    peak: usize,
}

impl Bodies {
    /// Copies `m` into a slot.
    pub(crate) fn insert(&mut self, m: &MessageRef<'_>) -> BodyId {
        let id = match self.free.pop() {
            Some(id) => id,
            None => {
                self.slots.push(Body::default());
                // A shard holds far fewer than 4 billion messages: the
                // queue budget bounds each node.
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[id as usize];
        slot.fill(m);
        slot.used = true;
        self.peak = self.peak.max(self.live());
        BodyId(id)
    }

    pub(crate) fn get(&self, id: BodyId) -> &Body {
        &self.slots[id.0 as usize]
    }

    pub(crate) fn get_mut(&mut self, id: BodyId) -> &mut Body {
        &mut self.slots[id.0 as usize]
    }

    /// Frees a slot; its buffers stay for the next body.
    pub(crate) fn remove(&mut self, id: BodyId) {
        let slot = &mut self.slots[id.0 as usize];
        slot.release_large();
        slot.used = false;
        self.free.push(id.0);
    }

    /// Slots, used or free.
    #[cfg(test)]
    pub(crate) fn slots(&self) -> usize {
        self.slots.len()
    }

    /// Bodies held.
    pub(crate) fn live(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Gives back the buffers of free slots beyond what the peak since the
    /// last trim needed, the least recently used first, and the free slots
    /// at the end of the slab. The glue calls it now and then (the hub on
    /// its timers, once per keepalive interval).
    pub(crate) fn trim(&mut self) {
        let keep = self.peak.saturating_sub(self.live());
        let excess = self.free.len().saturating_sub(keep);
        if excess > 0 {
            for &id in &self.free[..excess] {
                self.slots[id as usize].release();
            }
            while self.slots.last().is_some_and(|b| !b.used) {
                self.slots.pop();
            }
            let len = self.slots.len();
            self.free.retain(|&id| (id as usize) < len);
            if self.slots.is_empty() {
                self.slots = Vec::new();
                self.free = Vec::new();
            }
        }
        self.peak = self.live();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: &str, content: &[u8]) -> Message {
        let mut m = Message::default();
        m.header.id = id.into();
        m.header.resource_version = 7;
        m.route.operation = "update".into();
        m.route.resource = "default/pod/é".into();
        m.content = content.to_vec();
        m
    }

    #[test]
    fn a_body_reads_back_as_it_was_given() {
        let mut bodies = Bodies::default();
        let m = message("a", b"{}");
        let id = bodies.insert(&m.as_ref());
        assert_eq!(bodies.get(id).as_ref(), m.as_ref());
        bodies.get_mut(id).number(9);
        assert_eq!(bodies.get(id).as_ref().header.seq, 9);
    }

    #[test]
    fn freed_slots_are_reused_and_trimmed_past_the_peak() {
        let mut bodies = Bodies::default();
        let ids: Vec<_> = (0..4)
            .map(|i| bodies.insert(&message(&i.to_string(), b"x").as_ref()))
            .collect();
        for id in ids {
            bodies.remove(id);
        }
        let again = bodies.insert(&message("b", b"yy").as_ref());
        assert_eq!(bodies.slots.len(), 4, "a free slot was reused");
        assert_eq!(bodies.get(again).as_ref().content, b"yy");
        bodies.trim();
        bodies.trim();
        let kept = bodies.slots.iter().filter(|b| b.text.capacity() > 0);
        assert_eq!(kept.count(), 1, "only the live body keeps its buffers");
        assert_eq!(bodies.live(), 1);
        bodies.remove(again);
        bodies.trim();
        assert_eq!((bodies.slots.capacity(), bodies.free.capacity()), (0, 0));
    }

    #[test]
    fn free_slots_at_the_end_are_dropped_and_the_rest_reused() {
        let mut bodies = Bodies::default();
        let ids: Vec<_> = (0..6)
            .map(|i| bodies.insert(&message(&i.to_string(), b"x").as_ref()))
            .collect();
        for &id in &ids[1..] {
            bodies.remove(id);
        }
        bodies.trim();
        bodies.trim();
        assert_eq!(bodies.slots.len(), 1, "slots past the last live one go");
        assert_eq!(bodies.get(ids[0]).as_ref().header.id, "0");
        let next = bodies.insert(&message("n", b"z").as_ref());
        assert_eq!(bodies.get(next).as_ref().header.id, "n");
        assert_eq!(bodies.live(), 2);
    }
}
