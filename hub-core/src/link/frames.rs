//! The frames of the edge link: what [`Link`] does with each received frame
//! and how it writes the frames it sends.

use schema::fb::CloseReason;
use schema::frames::{Close, Hello};
use schema::{FrameEncoder, FrameView};

use super::{Link, LinkEvent, State};
use crate::PROTOCOL_VERSION;
use crate::protocol::{CAPABILITIES, Millis};

impl Link {
    /// Acts on one received frame; anything out of place ends the
    /// connection with `ProtocolError`.
    pub(super) fn on_frame(&mut self, frame: FrameView<'_>, now: Millis) {
        match (frame, self.state) {
            (FrameView::Welcome(w), State::Handshaking { .. }) => {
                if w.protocol_version() != PROTOCOL_VERSION {
                    let text = format!("Welcome speaks version {}", w.protocol_version());
                    return self.close_locally(now, CloseReason::VersionMismatch, text);
                }
                if w.keepalive_interval_ms() > 0 {
                    self.interval = Millis::from(w.keepalive_interval_ms());
                }
                self.outbox.restart(w.window());
                if w.max_frame_bytes() > 0 && w.max_frame_bytes() != self.send_max {
                    self.send_max = w.max_frame_bytes();
                    self.encoder = FrameEncoder::new(self.send_max);
                }
                self.backoff.reset();
                self.state = State::Up;
                let upstream_resume = w.resume_seq();
                self.events
                    .push_back(LinkEvent::Connected { upstream_resume });
                self.acked_upstream(upstream_resume);
            }
            (FrameView::Batch(batch), State::Up) => {
                for m in batch.iter() {
                    let seq = m.header.seq;
                    if seq == 0 || m.header.best_effort {
                        self.events.push_back(LinkEvent::Downstream(m.to_owned()));
                    } else if seq > self.highest_seen {
                        self.highest_seen = seq;
                        self.events.push_back(LinkEvent::Downstream(m.to_owned()));
                    }
                }
            }
            (FrameView::Ack(a), State::Up) => self.acked_upstream(a.seq()),
            (FrameView::Keepalive(_), _) => {}
            (FrameView::Close(c), _) => {
                let retry_after = Millis::from(c.retry_after_ms());
                let text = c.text().unwrap_or_default().to_owned();
                self.close_conn = true;
                self.end_connection(now, retry_after, Some(c.reason()), text);
            }
            (frame, _) => {
                let text = format!("unexpected {} frame", frame.name());
                self.close_locally(now, CloseReason::ProtocolError, text);
            }
        }
    }

    /// The cloud has taken over every upstream message up to `seq`.
    fn acked_upstream(&mut self, seq: u64) {
        if let Some(seq) = self.outbox.acked(seq) {
            self.events.push_back(LinkEvent::UpstreamAcked { seq });
        }
    }

    /// `Hello` with the committed and the highest received seq.
    pub(super) fn write_hello(&mut self, out: &mut Vec<u8>) {
        self.hello_pending = false;
        // Hello carries the committed seq; a separate Ack would repeat it.
        self.ack_pending = None;
        let hello = Hello {
            node_id: &self.config.node_id,
            protocol_version: PROTOCOL_VERSION,
            resume_seq: self.committed_seq,
            capabilities: CAPABILITIES,
            received_seq: self.highest_seen,
            store_id: self.config.store_id,
        };
        if let Err(e) = self.encoder.hello(&hello, out) {
            self.close_locally(self.now, CloseReason::ProtocolError, e.to_string());
        }
    }

    /// What an open link sends: the coalesced `Ack`, one `Batch` of the
    /// outbox, and a `Keepalive` when due and nothing else went out.
    pub(super) fn write_up(&mut self, now: Millis, out: &mut Vec<u8>) {
        if let Some(seq) = self.ack_pending.take()
            && let Err(e) = self.encoder.ack(seq, out)
        {
            return self.close_locally(now, CloseReason::ProtocolError, e.to_string());
        }
        let batch = self
            .outbox
            .write_batch(&mut self.encoder, self.send_max, now, out);
        if let Err(e) = batch {
            // The size check keeps this from happening; should it, the
            // messages are sent again on the next connection.
            return self.close_locally(now, CloseReason::ProtocolError, e.to_string());
        }
        if self.keepalive_pending {
            self.keepalive_pending = false;
            if out.is_empty()
                && let Err(e) = self.encoder.keepalive(now, out)
            {
                self.close_locally(now, CloseReason::ProtocolError, e.to_string());
            }
        }
    }

    /// The `Close` this end queued, if any; nothing when even that cannot
    /// be encoded (the connection is closed all the same).
    pub(super) fn write_close(&mut self, out: &mut Vec<u8>) {
        if let Some((reason, text)) = self.close_frame.take() {
            let close = Close {
                reason,
                text: &text,
                retry_after_ms: 0,
            };
            if self.encoder.close(&close, out).is_err() {
                out.clear();
            }
        }
    }
}
