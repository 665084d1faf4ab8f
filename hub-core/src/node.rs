//! What the cloud keeps for one node, connected or not: its object queue, its
//! downstream send window, and how far each direction has been acknowledged.
//!
//! A [`NodeState`] outlives connections: messages in the window when a link
//! drops are sent again after the node resumes, and the queue keeps filling
//! while the node is away.

use std::collections::VecDeque;
use std::sync::Arc;

use schema::records::ObjectKey;
use schema::{FrameEncoder, MessageRef};

use crate::body::{Bodies, BodyId};
use crate::protocol::Millis;
use crate::queue::{DELETE_OPERATION, Meta, NodeQueue, PushOutcome};

/// A numbered message sent and not yet acknowledged.
#[derive(Debug)]
struct InFlight {
    seq: u64,
    key: Arc<ObjectKey>,
    body: BodyId,
    /// When it was last sent: the oldest of these bounds the retransmit
    /// deadline.
    sent_at: Millis,
}

/// An object version the node durably committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// The object, shared with the hub's tables (no copy per message).
    pub key: Arc<ObjectKey>,
    pub resource_version: u64,
    /// It was the object's delete.
    pub deleted: bool,
    pub seq: u64,
}

/// What a node's `Hello` says it holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Resume {
    /// Highest downstream seq it committed.
    pub(crate) seq: u64,
    /// Highest downstream seq it received.
    pub(crate) received_seq: u64,
    /// Its store's identity (0: none).
    pub(crate) store_id: u64,
}

/// How much [`NodeState::fill`] may send.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SendLimits {
    /// Numbered messages in flight at most.
    pub(crate) window: usize,
    /// Largest `Batch` frame, in bytes.
    pub(crate) max_batch: usize,
    /// Retransmission timeout.
    pub(crate) rto: Millis,
}

/// The cloud's state for one node.
#[derive(Debug)]
pub(crate) struct NodeState {
    pub(crate) id: Arc<str>,
    queue: NodeQueue<BodyId>,
    inflight: VecDeque<InFlight>,
    /// Number the next message entering the window gets.
    next_seq: u64,
    /// Highest downstream number the node acknowledged.
    acked_seq: u64,
    /// The whole window must be sent again before anything new.
    resend: bool,
    /// When the window is sent again if no ack arrives.
    pub(crate) retransmit_at: Option<Millis>,
    /// Best-effort messages for the current connection.
    best_effort: Vec<BodyId>,
    /// Highest upstream number handed to the application.
    pub(crate) upstream_seq: u64,
    /// Highest upstream number the application has taken over.
    pub(crate) upstream_committed: u64,
    /// Highest upstream number acknowledged to the node.
    pub(crate) upstream_acked: u64,
    /// Connection currently serving the node.
    pub(crate) conn: Option<u64>,
    /// Identity of the node's store from its last `Hello`; 0 when unknown
    /// (not seen since the hub started, or the node sends none).
    pub(crate) store_id: u64,
    /// While the queue waits for a resync: when it was last asked for, as
    /// seen by a timer check (`None` until the first check after asking).
    resync_asked_at: Option<Millis>,
}

/// Best-effort messages held per node at most; more are dropped.
pub(crate) const BEST_EFFORT_LIMIT: usize = 1024;

impl NodeState {
    pub(crate) fn new(id: Arc<str>, queue_budget: usize) -> Self {
        Self {
            id,
            queue: NodeQueue::new(queue_budget),
            inflight: VecDeque::new(),
            next_seq: 1,
            acked_seq: 0,
            resend: false,
            retransmit_at: None,
            best_effort: Vec::new(),
            upstream_seq: 0,
            upstream_committed: 0,
            upstream_acked: 0,
            conn: None,
            store_id: 0,
            resync_asked_at: None,
        }
    }

    /// Queues a copy of `message` in the slab, unless the queue drops it.
    pub(crate) fn push(
        &mut self,
        bodies: &mut Bodies,
        key: &ObjectKey,
        message: &MessageRef<'_>,
    ) -> PushOutcome {
        let meta = Meta::of(message);
        self.queue
            .push_with(key, meta, |b: &mut Bodies| b.insert(message), bodies)
    }

    pub(crate) fn push_best_effort(
        &mut self,
        bodies: &mut Bodies,
        message: &MessageRef<'_>,
    ) -> bool {
        if self.best_effort.len() >= BEST_EFFORT_LIMIT {
            return false;
        }
        self.best_effort.push(bodies.insert(message));
        true
    }

    pub(crate) fn needs_resync(&self) -> bool {
        self.queue.needs_resync()
    }

    pub(crate) fn resync_started(&mut self) {
        self.queue.resync_started();
        self.resync_asked_at = None;
    }

    /// Whether the resync the queue waits for is to be asked for again at
    /// `now`, every `retry` ms; the first check after asking starts the
    /// clock.
    pub(crate) fn resync_retry_due(&mut self, now: Millis, retry: Millis) -> bool {
        if !self.queue.needs_resync() {
            self.resync_asked_at = None;
            return false;
        }
        match self.resync_asked_at {
            Some(at) if now < at + retry => false,
            Some(_) => {
                self.resync_asked_at = Some(now);
                true
            }
            None => {
                self.resync_asked_at = Some(now);
                false
            }
        }
    }

    /// Messages waiting in the queue and in the window.
    pub(crate) fn depth(&self) -> (usize, usize) {
        (self.queue.len(), self.inflight.len())
    }

    /// Applies the node's `Hello`: releases what it committed
    /// (`resume_seq`), schedules the rest of the window to be sent again, and,
    /// when nothing is in flight, numbers new messages above everything the
    /// node has received (`received_seq`), so that a restarted hub never
    /// reuses a number the node holds.
    ///
    /// What the hub believes the node holds is only a cache of what the
    /// node said: a resume point behind what it acknowledged, or a store
    /// identity other than the one it had, resets it (the acknowledged
    /// versions; for a new store also the upstream numbering, which the new
    /// store starts again from 1). Returns false in either case: the node
    /// lost data it once acknowledged and needs a full resync.
    pub(crate) fn resume(
        &mut self,
        bodies: &mut Bodies,
        resume: Resume,
        delivered: &mut Vec<Delivered>,
    ) -> bool {
        let new_store = self.store_id != 0 && resume.store_id != self.store_id;
        let intact = resume.seq >= self.acked_seq && !new_store;
        self.store_id = resume.store_id;
        if new_store {
            self.upstream_seq = 0;
            self.upstream_committed = 0;
            self.upstream_acked = 0;
        }
        if !intact {
            self.queue.reset_acknowledged();
            self.acked_seq = resume.seq;
        }
        self.release_through(bodies, resume.seq, delivered);
        if self.inflight.is_empty() {
            self.next_seq = self.next_seq.max(resume.seq.max(resume.received_seq) + 1);
        }
        self.resend = !self.inflight.is_empty();
        for id in self.best_effort.drain(..) {
            bodies.remove(id);
        }
        intact
    }

    /// Applies a cumulative ack. Returns false if it acknowledges a number
    /// that was never sent.
    pub(crate) fn ack(
        &mut self,
        bodies: &mut Bodies,
        seq: u64,
        delivered: &mut Vec<Delivered>,
    ) -> bool {
        if seq >= self.next_seq {
            return false;
        }
        self.release_through(bodies, seq, delivered);
        true
    }

    fn release_through(&mut self, bodies: &mut Bodies, seq: u64, delivered: &mut Vec<Delivered>) {
        while let Some(front) = self.inflight.front() {
            if front.seq > seq {
                break;
            }
            // The queue recorded the version when it entered the window;
            // a delete the node committed leaves nothing to remember.
            if let Some(done) = self.inflight.pop_front() {
                let m = bodies.get(done.body).as_ref();
                let rv = m.header.resource_version;
                let deleted = m.route.operation == DELETE_OPERATION;
                bodies.remove(done.body);
                if deleted {
                    self.queue.forget_at(&done.key, rv);
                }
                delivered.push(Delivered {
                    resource_version: rv,
                    key: done.key,
                    deleted,
                    seq: done.seq,
                });
            }
        }
        self.acked_seq = self.acked_seq.max(seq);
        self.retransmit_at = None;
    }

    /// Returns the memory of an empty queue and window to the allocator.
    pub(crate) fn shrink_idle(&mut self) {
        self.queue.shrink_idle();
        if self.inflight.is_empty() {
            self.inflight = VecDeque::new();
        }
        if self.best_effort.is_empty() {
            self.best_effort = Vec::new();
        }
    }

    /// Asks for the whole window to be sent again.
    pub(crate) fn retransmit(&mut self) {
        self.resend = !self.inflight.is_empty();
    }

    /// Encodes everything ready for the node into `out` as `Batch` frames of at
    /// most `max_batch` bytes: best-effort messages, the window again if it
    /// is due, then new messages while the window has room. Returns how many
    /// messages were encoded.
    pub(crate) fn fill(
        &mut self,
        bodies: &mut Bodies,
        encoder: &mut FrameEncoder,
        limits: SendLimits,
        now: Millis,
        out: &mut Vec<u8>,
    ) -> usize {
        let SendLimits {
            window,
            max_batch,
            rto,
        } = limits;
        let mut batch = BatchWriter::new(encoder, max_batch, out);
        for id in self.best_effort.drain(..) {
            batch.push(&bodies.get(id).as_ref());
            bodies.remove(id);
        }
        if std::mem::take(&mut self.resend) {
            for f in &mut self.inflight {
                batch.push(&bodies.get(f.body).as_ref());
                f.sent_at = now;
            }
        }
        while self.inflight.len() < window {
            // Once in the window a version is as good as delivered: it is
            // sent until acknowledged, so anything older is stale from now.
            let Some((key, body)) = self.queue.pop_shared(true, bodies) else {
                break;
            };
            bodies.get_mut(body).number(self.next_seq);
            batch.push(&bodies.get(body).as_ref());
            self.inflight.push_back(InFlight {
                seq: self.next_seq,
                key,
                body,
                sent_at: now,
            });
            self.next_seq += 1;
        }
        // The oldest unacknowledged message bounds the deadline: sending
        // newer ones behind it never moves it later.
        self.retransmit_at = self.inflight.front().map(|f| f.sent_at + rto);
        batch.finish()
    }
}

/// Cuts a run of messages into `Batch` frames no larger than the limit.
struct BatchWriter<'a> {
    encoder: &'a mut FrameEncoder,
    max_batch: usize,
    out: &'a mut Vec<u8>,
    sent: usize,
}

impl<'a> BatchWriter<'a> {
    fn new(encoder: &'a mut FrameEncoder, max_batch: usize, out: &'a mut Vec<u8>) -> Self {
        encoder.begin_batch();
        Self {
            encoder,
            max_batch,
            out,
            sent: 0,
        }
    }

    fn push(&mut self, m: &MessageRef<'_>) {
        if self.encoder.batch_messages() > 0
            && self.encoder.batch_len() + m.payload_len() + 128 > self.max_batch
        {
            self.flush();
        }
        self.encoder.push_message(m);
        self.sent += 1;
    }

    fn flush(&mut self) {
        if self.encoder.batch_messages() > 0 {
            // A single message larger than the frame limit cannot be sent;
            // the encoder refuses it and it is dropped with its batch.
            let _ = self.encoder.finish_batch(self.out);
        }
        self.encoder.begin_batch();
    }

    fn finish(mut self) -> usize {
        self.flush();
        self.sent
    }
}
