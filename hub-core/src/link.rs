//! The edge end of the cloud–edge link, as a sans-IO state machine.
//!
//! [`Link`] speaks the protocol of [`crate::protocol`] for one edge node: it
//! decides when to (re)connect, performs the handshake, delivers downstream
//! messages once each, acknowledges what the application committed, sends
//! the upstream outbox within the window and the rate limit, resends it after
//! a reconnect, and keeps the connection alive or closes it when the cloud
//! goes silent. Sockets, TLS and the store belong to the glue.

use std::collections::VecDeque;

use outbox::Outbox;
use schema::fb::CloseReason;
use schema::{DecodeError, DecoderConfig, FrameDecoder, FrameEncoder, Message};

use crate::backoff::Backoff;
use crate::protocol::{Millis, Transmit};
use crate::ratelimit::TokenBucket;

mod config;
mod frames;
mod outbox;
#[cfg(test)]
mod tests;

pub use config::{DEFAULT_WINDOW, LinkConfig};

/// What the link tells the application.
// Most events are `Downstream`: boxing it would cost an allocation per
// message to shrink the rare others.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// `Welcome` received: the link is up.
    Connected {
        /// Highest upstream seq the cloud says it has taken over.
        upstream_resume: u64,
    },
    /// A downstream message to apply and commit (then call
    /// [`Link::handle_committed`] unless it is best-effort).
    Downstream(Message),
    /// The cloud has taken over every upstream message up to `seq`: the
    /// application may delete outbox entries `<= seq`.
    UpstreamAcked {
        /// Cumulative upstream sequence number.
        seq: u64,
    },
    /// The connection ended.
    Disconnected {
        /// The close reason, sent by the cloud or by this end; `None` when the
        /// transport was lost without a `Close`.
        reason: Option<CloseReason>,
        /// Human-readable detail.
        text: String,
    },
}

/// Where the link is in its connection's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No connection; the next attempt may start at `at`.
    Waiting { at: Millis },
    /// `poll_connect` said yes; the glue is connecting.
    Connecting,
    /// Transport up, `Hello` queued; `Welcome` due by `deadline`.
    Handshaking { deadline: Millis },
    /// `Welcome` received.
    Up,
}

/// The edge end of the link.
///
/// # Call order
///
/// The glue runs one loop per link:
///
/// 1. If [`poll_connect`](Self::poll_connect) returns true, open a
///    connection, then report [`handle_connected`](Self::handle_connected) or
///    [`handle_connect_failed`](Self::handle_connect_failed).
/// 2. Feed what happens: [`handle_bytes`](Self::handle_bytes) for received
///    bytes, [`handle_disconnected`](Self::handle_disconnected) when the
///    transport is lost, [`handle_timeout`](Self::handle_timeout) when the
///    instant of [`poll_timeout`](Self::poll_timeout) has come,
///    [`handle_committed`](Self::handle_committed) after a durable commit of
///    downstream messages, [`handle_outbox`](Self::handle_outbox) after a
///    durable outbox write.
/// 3. After every input, drain [`poll_transmit`](Self::poll_transmit) (write
///    each `Transmit` in one send, close the connection when `close` is set)
///    and [`poll_event`](Self::poll_event); then wait for I/O or
///    `poll_timeout`, and go back to 1.
///
/// Once a connection ends (a `Close` either way, a timeout, a lost
/// transport) bytes are ignored until the next `handle_connected`, and a
/// later `handle_disconnected` for it changes nothing.
#[derive(Debug)]
pub struct Link {
    config: LinkConfig,
    state: State,
    /// Latest time seen by any call.
    now: Millis,
    backoff: Backoff,
    encoder: FrameEncoder,
    /// Frame limit the encoder enforces: the cloud's once it said.
    send_max: u32,
    /// Decoder of the current connection; `None` when there is none.
    decoder: Option<FrameDecoder>,
    events: VecDeque<LinkEvent>,
    /// Keepalive interval in force (from `Welcome`).
    interval: Millis,
    last_received: Millis,
    last_sent: Millis,
    /// Frames waiting for `poll_transmit`.
    hello_pending: bool,
    ack_pending: Option<u64>,
    keepalive_pending: bool,
    close_frame: Option<(CloseReason, String)>,
    close_conn: bool,
    /// Highest downstream seq durably committed by the application.
    committed_seq: u64,
    /// Highest downstream seq handed to the application.
    highest_seen: u64,
    outbox: Outbox,
}

impl Link {
    /// A link with nothing sent yet, ready to connect at once.
    /// `committed_seq` is the highest downstream seq durably committed (from
    /// the store); `seed` seeds the reconnect jitter.
    pub fn new(config: LinkConfig, committed_seq: u64, seed: u64, now: Millis) -> Self {
        Self {
            state: State::Waiting { at: now },
            now,
            backoff: Backoff::new(config.backoff, seed),
            encoder: FrameEncoder::new(config.max_frame_bytes),
            send_max: config.max_frame_bytes,
            decoder: None,
            events: VecDeque::new(),
            interval: config.keepalive_interval_ms,
            last_received: now,
            last_sent: now,
            hello_pending: false,
            ack_pending: None,
            keepalive_pending: false,
            close_frame: None,
            close_conn: false,
            committed_seq,
            highest_seen: committed_seq,
            outbox: Outbox::new(TokenBucket::new(config.qps, config.burst, now)),
            config,
        }
    }

    /// True when the glue should open a connection now; true once per
    /// attempt, then false until that attempt or its connection ends.
    pub fn poll_connect(&mut self, now: Millis) -> bool {
        self.tick(now);
        match self.state {
            State::Waiting { at } if now >= at => {
                self.state = State::Connecting;
                true
            }
            _ => false,
        }
    }

    /// The transport is up: queues `Hello` and starts the handshake deadline.
    /// Whatever belonged to an earlier connection is forgotten.
    pub fn handle_connected(&mut self, now: Millis) {
        self.tick(now);
        self.reset_connection();
        self.close_frame = None;
        self.close_conn = false;
        self.decoder = Some(FrameDecoder::new(DecoderConfig {
            max_frame_bytes: self.config.max_frame_bytes,
            ..DecoderConfig::default()
        }));
        if self.send_max != self.config.max_frame_bytes {
            self.send_max = self.config.max_frame_bytes;
            self.encoder = FrameEncoder::new(self.send_max);
        }
        self.interval = self.config.keepalive_interval_ms;
        self.hello_pending = true;
        self.last_received = now;
        self.last_sent = now;
        let deadline = now.saturating_add(self.config.handshake_timeout_ms);
        self.state = State::Handshaking { deadline };
    }

    /// The connection attempt failed: the next one waits for the backoff.
    pub fn handle_connect_failed(&mut self, now: Millis) {
        self.tick(now);
        match self.state {
            State::Waiting { .. } => {}
            State::Connecting => self.schedule_reconnect(now, 0),
            State::Handshaking { .. } | State::Up => self.handle_disconnected(now),
        }
    }

    /// Bytes received on the current connection.
    pub fn handle_bytes(&mut self, bytes: &[u8], now: Millis) {
        self.tick(now);
        let Some(mut decoder) = self.decoder.take() else {
            return;
        };
        if !bytes.is_empty() {
            self.last_received = now;
        }
        decoder.handle_bytes(bytes);
        loop {
            match decoder.poll_frame() {
                Ok(Some(frame)) => self.on_frame(frame, now),
                Ok(None) => break,
                Err(e) => {
                    let reason = match e {
                        DecodeError::FrameTooLarge { .. } => CloseReason::FrameTooLarge,
                        _ => CloseReason::ProtocolError,
                    };
                    self.close_locally(now, reason, e.to_string());
                }
            }
            if !self.is_connected() {
                return;
            }
        }
        self.decoder = Some(decoder);
    }

    /// The transport was lost: reports `Disconnected` and schedules a
    /// reconnect. Delivered downstream seqs and the outbox are kept.
    pub fn handle_disconnected(&mut self, now: Millis) {
        self.tick(now);
        match self.state {
            State::Waiting { .. } => {}
            State::Connecting => self.schedule_reconnect(now, 0),
            State::Handshaking { .. } | State::Up => {
                self.end_connection(now, 0, None, "connection lost".to_owned());
            }
        }
    }

    /// The instant of [`poll_timeout`](Self::poll_timeout) has come: enforces
    /// the handshake and read deadlines and queues a keepalive when idle.
    pub fn handle_timeout(&mut self, now: Millis) {
        self.tick(now);
        match self.state {
            State::Handshaking { deadline } if now >= deadline => {
                self.close_locally(now, CloseReason::HandshakeTimeout, "no Welcome".to_owned());
            }
            State::Up if now >= self.read_deadline() => {
                let text = format!(
                    "nothing received for {} ms",
                    now.saturating_sub(self.last_received)
                );
                self.close_locally(now, CloseReason::Timeout, text);
            }
            State::Up if now >= self.last_sent.saturating_add(self.interval) => {
                self.keepalive_pending = true;
                // A quiet link gives its receive buffer back.
                if let Some(decoder) = self.decoder.as_mut() {
                    decoder.release_idle();
                }
            }
            _ => {}
        }
    }

    /// The application durably committed downstream messages up to `seq`:
    /// queues one cumulative `Ack` (coalesced until the next transmit).
    pub fn handle_committed(&mut self, seq: u64) {
        if seq <= self.committed_seq {
            return;
        }
        self.committed_seq = seq;
        self.highest_seen = self.highest_seen.max(seq);
        self.ack_pending = Some(seq);
    }

    /// The application durably wrote upstream message `seq` to its outbox.
    /// The link stamps `seq` into the header and keeps the message until the
    /// cloud acknowledges it. A `seq` not above the previous one is ignored;
    /// one the cloud already acknowledged is reported acked at once.
    pub fn handle_outbox(&mut self, seq: u64, message: Message) {
        if let Some(acked) = self.outbox.push(seq, message) {
            self.events
                .push_back(LinkEvent::UpstreamAcked { seq: acked });
        }
    }

    /// Everything queued for the connection as whole frames, at most one
    /// `Batch` of upstream messages per call; `None` when there is nothing.
    /// With `close` set (its bytes may be empty, e.g. after the cloud's
    /// `Close`) the glue writes the bytes and closes the connection.
    pub fn poll_transmit(&mut self, now: Millis) -> Option<Transmit> {
        self.tick(now);
        let mut bytes = Vec::new();
        match self.state {
            State::Handshaking { .. } if self.hello_pending => self.write_hello(&mut bytes),
            State::Up => self.write_up(now, &mut bytes),
            _ => {}
        }
        if self.close_conn {
            self.close_conn = false;
            bytes.clear();
            self.write_close(&mut bytes);
            return Some(Transmit { bytes, close: true });
        }
        if bytes.is_empty() {
            return None;
        }
        self.last_sent = now;
        Some(Transmit {
            bytes,
            close: false,
        })
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<LinkEvent> {
        self.events.pop_front()
    }

    /// The earliest instant at which [`handle_timeout`](Self::handle_timeout)
    /// (or, when waiting to reconnect, [`poll_connect`](Self::poll_connect))
    /// must be called; `None` while a connection attempt is under way.
    pub fn poll_timeout(&self) -> Option<Millis> {
        match self.state {
            State::Waiting { at } => Some(at),
            State::Connecting => None,
            State::Handshaking { deadline } => Some(deadline),
            State::Up => {
                let mut at = self.read_deadline();
                if !self.keepalive_pending {
                    at = at.min(self.last_sent.saturating_add(self.interval));
                }
                if let Some(send_at) = self.outbox.next_send_at(self.now) {
                    at = at.min(send_at);
                }
                Some(at)
            }
        }
    }

    /// Whether `Welcome` was received and the connection is open.
    pub fn is_up(&self) -> bool {
        self.state == State::Up
    }

    /// Highest downstream seq durably committed.
    pub fn committed_seq(&self) -> u64 {
        self.committed_seq
    }

    /// Highest downstream seq handed to the application.
    pub fn highest_seen(&self) -> u64 {
        self.highest_seen
    }

    /// Upstream messages kept until acknowledged.
    pub fn outbox_len(&self) -> usize {
        self.outbox.len()
    }

    /// Upstream messages sent on this connection and not yet acknowledged.
    pub fn in_flight(&self) -> usize {
        self.outbox.in_flight()
    }

    /// Upstream messages dropped because even alone they exceed the cloud's
    /// maximum frame size (they can never be sent).
    pub fn oversized_dropped(&self) -> u64 {
        self.outbox.oversized_dropped()
    }

    fn tick(&mut self, now: Millis) {
        self.now = self.now.max(now);
    }

    fn is_connected(&self) -> bool {
        matches!(self.state, State::Handshaking { .. } | State::Up)
    }

    fn read_deadline(&self) -> Millis {
        let missed = Millis::from(self.config.missed_keepalives.max(1));
        self.last_received
            .saturating_add(self.interval.saturating_mul(missed))
    }

    /// Ends the connection with a `Close` of this end's own.
    fn close_locally(&mut self, now: Millis, reason: CloseReason, text: String) {
        self.close_frame = Some((reason, text.clone()));
        self.close_conn = true;
        self.end_connection(now, 0, Some(reason), text);
    }

    /// Ends the current connection: reports it and schedules the next one.
    fn end_connection(
        &mut self,
        now: Millis,
        retry_after: Millis,
        reason: Option<CloseReason>,
        text: String,
    ) {
        self.reset_connection();
        self.schedule_reconnect(now, retry_after);
        self.events
            .push_back(LinkEvent::Disconnected { reason, text });
    }

    fn schedule_reconnect(&mut self, now: Millis, retry_after: Millis) {
        let delay = self.backoff.next_delay().max(retry_after);
        self.state = State::Waiting {
            at: now.saturating_add(delay),
        };
    }

    /// Forgets everything that belonged to the previous connection.
    fn reset_connection(&mut self) {
        self.decoder = None;
        self.outbox.restart(DEFAULT_WINDOW);
        self.hello_pending = false;
        self.ack_pending = None;
        self.keepalive_pending = false;
    }
}
