//! What the cloud keeps for one node, connected or not: its object queue, its
//! downstream send window, and how far each direction has been acknowledged.
//!
//! A [`NodeState`] outlives connections: messages in the window when a link
//! drops are sent again after the node resumes, and the queue keeps filling
//! while the node is away.

use std::collections::VecDeque;
use std::sync::Arc;

use schema::records::ObjectKey;
use schema::{FrameEncoder, Message};

use crate::protocol::Millis;
use crate::queue::{NodeQueue, PushOutcome};

/// A numbered message sent and not yet acknowledged.
#[derive(Debug)]
struct InFlight {
    seq: u64,
    key: ObjectKey,
    message: Message,
}

/// An object version the node durably committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    pub key: ObjectKey,
    pub resource_version: u64,
    pub seq: u64,
}

/// The cloud's state for one node.
#[derive(Debug)]
pub(crate) struct NodeState {
    pub(crate) id: Arc<str>,
    queue: NodeQueue,
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
    best_effort: Vec<Message>,
    /// Highest upstream number handed to the application.
    pub(crate) upstream_seq: u64,
    /// Highest upstream number the application has taken over.
    pub(crate) upstream_committed: u64,
    /// Highest upstream number acknowledged to the node.
    pub(crate) upstream_acked: u64,
    /// Connection currently serving the node.
    pub(crate) conn: Option<u64>,
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
        }
    }

    pub(crate) fn push(&mut self, key: ObjectKey, message: Message) -> PushOutcome {
        self.queue.push(key, message)
    }

    pub(crate) fn push_best_effort(&mut self, message: Message) -> bool {
        if self.best_effort.len() >= BEST_EFFORT_LIMIT {
            return false;
        }
        self.best_effort.push(message);
        true
    }

    pub(crate) fn needs_resync(&self) -> bool {
        self.queue.needs_resync()
    }

    pub(crate) fn resync_started(&mut self) {
        self.queue.resync_started();
    }

    /// Messages waiting in the queue and in the window.
    pub(crate) fn depth(&self) -> (usize, usize) {
        (self.queue.len(), self.inflight.len())
    }

    /// Applies the node's `Hello`: releases what it committed
    /// (`resume_seq`), schedules the rest of the window to be sent again, and,
    /// when nothing is in flight, numbers new messages above everything the
    /// node has received (`received_seq`), so that a restarted hub never
    /// reuses a number the node holds. Returns false when the node has lost
    /// data it once acknowledged.
    pub(crate) fn resume(
        &mut self,
        resume_seq: u64,
        received_seq: u64,
        delivered: &mut Vec<Delivered>,
    ) -> bool {
        let intact = resume_seq >= self.acked_seq;
        self.release_through(resume_seq, delivered);
        if self.inflight.is_empty() {
            self.next_seq = self.next_seq.max(resume_seq.max(received_seq) + 1);
        }
        self.resend = !self.inflight.is_empty();
        self.best_effort.clear();
        intact
    }

    /// Applies a cumulative ack. Returns false if it acknowledges a number
    /// that was never sent.
    pub(crate) fn ack(&mut self, seq: u64, delivered: &mut Vec<Delivered>) -> bool {
        if seq >= self.next_seq {
            return false;
        }
        self.release_through(seq, delivered);
        true
    }

    fn release_through(&mut self, seq: u64, delivered: &mut Vec<Delivered>) {
        while let Some(front) = self.inflight.front() {
            if front.seq > seq {
                break;
            }
            // The queue recorded the version when it entered the window.
            if let Some(done) = self.inflight.pop_front() {
                delivered.push(Delivered {
                    resource_version: done.message.header.resource_version,
                    key: done.key,
                    seq: done.seq,
                });
            }
        }
        self.acked_seq = self.acked_seq.max(seq);
        if self.inflight.is_empty() {
            self.retransmit_at = None;
        }
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
        encoder: &mut FrameEncoder,
        window: usize,
        max_batch: usize,
        rto: Millis,
        now: Millis,
        out: &mut Vec<u8>,
    ) -> usize {
        let mut batch = BatchWriter::new(encoder, max_batch, out);
        for m in self.best_effort.drain(..) {
            batch.push(&m);
        }
        if std::mem::take(&mut self.resend) {
            for f in &self.inflight {
                batch.push(&f.message);
            }
        }
        while self.inflight.len() < window {
            // Once in the window a version is as good as delivered: it is
            // sent until acknowledged, so anything older is stale from now.
            let Some((key, mut message)) = self.queue.pop_for_send() else {
                break;
            };
            message.header.seq = self.next_seq;
            message.header.best_effort = false;
            batch.push(&message);
            self.inflight.push_back(InFlight {
                seq: self.next_seq,
                key,
                message,
            });
            self.next_seq += 1;
        }
        let sent = batch.finish();
        if sent > 0 && !self.inflight.is_empty() {
            self.retransmit_at = Some(now + rto);
        }
        sent
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

    fn push(&mut self, m: &Message) {
        let m = m.as_ref();
        if self.encoder.batch_messages() > 0
            && self.encoder.batch_len() + m.payload_len() + 128 > self.max_batch
        {
            self.flush();
        }
        self.encoder.push_message(&m);
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
