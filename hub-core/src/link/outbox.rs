//! The upstream half of the edge link: outbox entries kept until the cloud
//! acknowledges them, sent in order within the window, the rate limit and
//! the cloud's frame size.

use std::collections::VecDeque;

use schema::{EncodeError, FrameEncoder, Message};

use super::DEFAULT_WINDOW;
use crate::protocol::Millis;
use crate::ratelimit::TokenBucket;

/// Upstream messages by increasing seq; the first `in_flight` were sent on
/// the current connection and are not acknowledged yet.
#[derive(Debug)]
pub(super) struct Outbox {
    entries: VecDeque<Message>,
    in_flight: usize,
    window: u32,
    bucket: TokenBucket,
    /// Highest seq the application handed over.
    last_seq: u64,
    /// Highest cumulative ack reported to the application.
    acked: u64,
    oversized_dropped: u64,
}

impl Outbox {
    /// An empty outbox sending at the pace of `bucket`.
    pub(super) fn new(bucket: TokenBucket) -> Self {
        Self {
            entries: VecDeque::new(),
            in_flight: 0,
            window: DEFAULT_WINDOW,
            bucket,
            last_seq: 0,
            acked: 0,
            oversized_dropped: 0,
        }
    }

    /// Keeps entry `seq`, stamping it into the header. A `seq` not above
    /// the previous one is ignored; for one the cloud already acknowledged,
    /// returns the cumulative ack to report instead of keeping it.
    pub(super) fn push(&mut self, seq: u64, mut message: Message) -> Option<u64> {
        if seq <= self.last_seq {
            return None;
        }
        self.last_seq = seq;
        if seq <= self.acked {
            return Some(self.acked);
        }
        message.header.seq = seq;
        self.entries.push_back(message);
        None
    }

    /// The cloud has taken over every entry up to `seq`: drops them and
    /// returns the ack to report if that advanced anything.
    pub(super) fn acked(&mut self, seq: u64) -> Option<u64> {
        let mut removed = 0;
        while self.entries.front().is_some_and(|m| m.header.seq <= seq) {
            self.entries.pop_front();
            removed += 1;
        }
        self.in_flight = self.in_flight.saturating_sub(removed);
        let advanced = removed > 0 || seq > self.acked;
        self.acked = self.acked.max(seq);
        advanced.then_some(seq)
    }

    /// A connection starts or ends: nothing is in flight any more, and
    /// `window` (0: [`DEFAULT_WINDOW`]) is in force.
    pub(super) fn restart(&mut self, window: u32) {
        self.in_flight = 0;
        self.window = if window == 0 { DEFAULT_WINDOW } else { window };
    }

    /// Entries not yet sent that the window leaves room for.
    pub(super) fn sendable(&self) -> usize {
        let room = (self.window as usize).saturating_sub(self.in_flight);
        room.min(self.entries.len().saturating_sub(self.in_flight))
    }

    /// When the rate limit lets the next entry go, if one is waiting.
    pub(super) fn next_send_at(&self, now: Millis) -> Option<Millis> {
        (self.sendable() > 0).then(|| self.bucket.next_available(now))
    }

    /// Appends one `Batch` of the entries the window, the rate limit (one
    /// token each) and `max_frame_bytes` allow; nothing when none may go.
    /// An entry too large to fit a frame even alone can never be sent: it is
    /// dropped and counted (see [`oversized_dropped`](Self::oversized_dropped)).
    pub(super) fn write_batch(
        &mut self,
        encoder: &mut FrameEncoder,
        max_frame_bytes: u32,
        now: Millis,
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        let per_message = size_of::<schema::fb::Message>();
        let first = self.in_flight;
        encoder.begin_batch();
        while self.sendable() > 0 {
            let Some(m) = self.entries.get(self.in_flight) else {
                break;
            };
            let m = m.as_ref();
            // `batch_len` is an upper bound, so this never overshoots.
            if encoder.batch_len() + per_message + m.payload_len() > max_frame_bytes as usize {
                if encoder.batch_messages() > 0 {
                    break;
                }
                self.entries.remove(self.in_flight);
                self.oversized_dropped += 1;
                continue;
            }
            if !self.bucket.try_take(now) {
                break;
            }
            encoder.push_message(&m);
            self.in_flight += 1;
        }
        if encoder.batch_messages() == 0 {
            return Ok(());
        }
        encoder
            .finish_batch(out)
            .inspect_err(|_| self.in_flight = first)
    }

    /// Entries kept.
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Entries sent on this connection, not yet acknowledged.
    pub(super) fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Entries dropped because no frame could hold them.
    pub(super) fn oversized_dropped(&self) -> u64 {
        self.oversized_dropped
    }
}
