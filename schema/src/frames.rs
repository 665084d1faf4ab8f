//! Typed views of received frames and the encoder of frames to send.

use std::fmt;

use flatbuffers::{FlatBufferBuilder, WIPOffset};

use crate::batch::{BatchBuffers, BatchView};
use crate::codec::{DEFAULT_MAX_FRAME_BYTES, DecodeError, Prefix};
use crate::fb;
use crate::message::MessageRef;

/// A verified frame, borrowing the bytes it was decoded from.
#[derive(Debug, Clone, Copy)]
pub enum FrameView<'a> {
    Hello(fb::Hello<'a>),
    Welcome(fb::Welcome<'a>),
    Batch(BatchView<'a>),
    Ack(fb::Ack<'a>),
    Keepalive(fb::Keepalive<'a>),
    Close(fb::Close<'a>),
}

impl<'a> FrameView<'a> {
    /// Picks the payload out of a verified `Frame`.
    pub fn from_frame(frame: fb::Frame<'a>) -> Result<Self, DecodeError> {
        let unknown = DecodeError::UnknownPayload {
            payload_type: frame.payload_type().0,
        };
        let view = match frame.payload_type() {
            fb::Payload::Hello => frame.payload_as_hello().map(Self::Hello),
            fb::Payload::Welcome => frame.payload_as_welcome().map(Self::Welcome),
            fb::Payload::Batch => match frame.payload_as_batch() {
                Some(batch) => Some(Self::Batch(BatchView::new(batch)?)),
                None => None,
            },
            fb::Payload::Ack => frame.payload_as_ack().map(Self::Ack),
            fb::Payload::Keepalive => frame.payload_as_keepalive().map(Self::Keepalive),
            fb::Payload::Close => frame.payload_as_close().map(Self::Close),
            _ => None,
        };
        view.ok_or(unknown)
    }

    /// Name of the frame type, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Hello(_) => "Hello",
            Self::Welcome(_) => "Welcome",
            Self::Batch(_) => "Batch",
            Self::Ack(_) => "Ack",
            Self::Keepalive(_) => "Keepalive",
            Self::Close(_) => "Close",
        }
    }

    /// The messages of a `Batch`, read in place; empty for other frames.
    pub fn messages(&self) -> impl Iterator<Item = MessageRef<'a>> + use<'a> {
        let batch = match self {
            Self::Batch(b) => Some(*b),
            _ => None,
        };
        batch.into_iter().flat_map(|b| b.iter())
    }
}

/// Fields of a `Hello` frame.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Hello<'a> {
    pub node_id: &'a str,
    pub protocol_version: u16,
    pub resume_seq: u64,
    pub capabilities: &'a [&'a str],
    pub received_seq: u64,
    /// The edge store's identity (0: none); see `store_id` in `link.fbs`.
    pub store_id: u64,
}

/// Fields of a `Welcome` frame.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Welcome<'a> {
    pub protocol_version: u16,
    pub resume_seq: u64,
    pub keepalive_interval_ms: u32,
    pub max_frame_bytes: u32,
    pub window: u32,
    pub capabilities: &'a [&'a str],
}

/// Fields of a `Close` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Close<'a> {
    pub reason: fb::CloseReason,
    pub text: &'a str,
    pub retry_after_ms: u32,
}

/// Why a frame could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodeError {
    /// The encoded body would exceed the encoder's maximum frame size; split
    /// the batch (see [`FrameEncoder::batch_len`]).
    FrameTooLarge { len: usize, max: u32 },
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::FrameTooLarge { len, max } => {
                write!(
                    f,
                    "encoded frame of {len} bytes exceeds the maximum of {max} bytes"
                )
            }
        }
    }
}

impl std::error::Error for EncodeError {}

/// Encodes frames, prefix included, onto the end of an output buffer. One
/// encoder per link reuses its builder's memory for every frame.
///
/// Batches are built incrementally: [`begin_batch`](Self::begin_batch), then
/// [`push_message`](Self::push_message) while [`batch_len`](Self::batch_len)
/// stays under the budget, then [`finish_batch`](Self::finish_batch).
pub struct FrameEncoder {
    fbb: FlatBufferBuilder<'static>,
    batch: BatchBuffers,
    max_frame_bytes: u32,
}

impl fmt::Debug for FrameEncoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameEncoder")
            .field("batch_messages", &self.batch.messages.len())
            .field("max_frame_bytes", &self.max_frame_bytes)
            .finish()
    }
}

impl Default for FrameEncoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME_BYTES)
    }
}

impl FrameEncoder {
    pub fn new(max_frame_bytes: u32) -> Self {
        Self {
            fbb: FlatBufferBuilder::with_capacity(1024),
            batch: BatchBuffers::default(),
            max_frame_bytes,
        }
    }

    pub fn hello(&mut self, h: &Hello<'_>, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.reset();
        let fbb = &mut self.fbb;
        let node_id = fbb.create_string(h.node_id);
        let caps = create_strings(fbb, h.capabilities);
        let payload = fb::Hello::create(
            fbb,
            &fb::HelloArgs {
                node_id: Some(node_id),
                protocol_version: h.protocol_version,
                resume_seq: h.resume_seq,
                capabilities: Some(caps),
                received_seq: h.received_seq,
                store_id: h.store_id,
            },
        );
        self.finish(fb::Payload::Hello, payload.as_union_value(), out)
    }

    pub fn welcome(&mut self, w: &Welcome<'_>, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.reset();
        let fbb = &mut self.fbb;
        let caps = create_strings(fbb, w.capabilities);
        let payload = fb::Welcome::create(
            fbb,
            &fb::WelcomeArgs {
                protocol_version: w.protocol_version,
                resume_seq: w.resume_seq,
                keepalive_interval_ms: w.keepalive_interval_ms,
                max_frame_bytes: w.max_frame_bytes,
                window: w.window,
                capabilities: Some(caps),
            },
        );
        self.finish(fb::Payload::Welcome, payload.as_union_value(), out)
    }

    pub fn ack(&mut self, seq: u64, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.reset();
        let payload = fb::Ack::create(&mut self.fbb, &fb::AckArgs { seq });
        self.finish(fb::Payload::Ack, payload.as_union_value(), out)
    }

    pub fn keepalive(&mut self, timestamp_ms: u64, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.reset();
        let payload = fb::Keepalive::create(&mut self.fbb, &fb::KeepaliveArgs { timestamp_ms });
        self.finish(fb::Payload::Keepalive, payload.as_union_value(), out)
    }

    pub fn close(&mut self, c: &Close<'_>, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.reset();
        let text = self.fbb.create_string(c.text);
        let payload = fb::Close::create(
            &mut self.fbb,
            &fb::CloseArgs {
                reason: c.reason,
                text: Some(text),
                retry_after_ms: c.retry_after_ms,
            },
        );
        self.finish(fb::Payload::Close, payload.as_union_value(), out)
    }

    /// Encodes all `messages` as one `Batch` frame.
    pub fn batch<'m>(
        &mut self,
        messages: impl IntoIterator<Item = MessageRef<'m>>,
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        self.begin_batch();
        for m in messages {
            self.push_message(&m);
        }
        self.finish_batch(out)
    }

    /// Starts a `Batch`, dropping any unfinished one.
    pub fn begin_batch(&mut self) {
        self.reset();
    }

    /// Adds a message to the batch being built.
    pub fn push_message(&mut self, m: &MessageRef<'_>) {
        self.batch.push(m);
    }

    /// Messages in the batch being built.
    pub fn batch_messages(&self) -> usize {
        self.batch.messages.len()
    }

    /// Upper bound, in bytes, of the batch body if it were finished now.
    pub fn batch_len(&self) -> usize {
        self.batch.encoded_len()
    }

    /// Finishes the batch and appends it as one frame to `out`. A batch over
    /// the maximum frame size is refused before anything is encoded.
    pub fn finish_batch(&mut self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let len = self.batch.encoded_len();
        if len > self.max_frame_bytes as usize {
            self.reset();
            return Err(EncodeError::FrameTooLarge {
                len,
                max: self.max_frame_bytes,
            });
        }
        let fbb = &mut self.fbb;
        let content = fbb.create_vector(&self.batch.content);
        let text = fbb.create_string(&self.batch.text);
        let messages = fbb.create_vector(&self.batch.messages);
        let payload = fb::Batch::create(
            fbb,
            &fb::BatchArgs {
                messages: Some(messages),
                text: Some(text),
                content: Some(content),
            },
        );
        self.batch.clear();
        self.finish(fb::Payload::Batch, payload.as_union_value(), out)
    }

    fn reset(&mut self) {
        self.fbb.reset();
        self.batch.clear();
    }

    fn finish(
        &mut self,
        payload_type: fb::Payload,
        payload: WIPOffset<flatbuffers::UnionWIPOffset>,
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        let frame = fb::Frame::create(
            &mut self.fbb,
            &fb::FrameArgs {
                payload_type,
                payload: Some(payload),
            },
        );
        self.fbb.finish_minimal(frame);
        let body = self.fbb.finished_data();
        let len = u32::try_from(body.len())
            .ok()
            .filter(|&len| len <= self.max_frame_bytes)
            .ok_or(EncodeError::FrameTooLarge {
                len: body.len(),
                max: self.max_frame_bytes,
            })?;
        out.reserve(crate::PREFIX_LEN + body.len());
        out.extend_from_slice(&Prefix::encode(len));
        out.extend_from_slice(body);
        Ok(())
    }
}

fn create_strings<'f>(
    fbb: &mut FlatBufferBuilder<'f>,
    items: &[&str],
) -> WIPOffset<flatbuffers::Vector<'f, flatbuffers::ForwardsUOffset<&'f str>>> {
    let offsets: Vec<_> = items.iter().map(|s| fbb.create_string(s)).collect();
    fbb.create_vector(&offsets)
}
