//! The frame codec: cuts a byte stream into verified frames, sans-IO.
//!
//! On the wire every frame is an 8-byte prefix followed by one flatbuffers
//! `Frame` table:
//!
//! ```text
//! 0      2         3       4              8
//! | "AP" | version | flags | body length  | body (flatbuffers Frame) ...
//!                            u32 little-endian
//! ```
//!
//! [`FrameDecoder`] is fed whatever bytes arrived ([`FrameDecoder::handle_bytes`])
//! and hands out complete frames ([`FrameDecoder::poll_frame`]) as views that
//! borrow its buffer: nothing is allocated per frame or per message. Every body
//! passes the flatbuffers verifier before a field is read. The body length is
//! checked against the maximum frame size as soon as the prefix arrives, and
//! buffer space is only taken as bytes actually arrive, so a peer announcing a
//! huge frame costs nothing until it sends it.

use std::fmt;

use crate::fb;
use crate::frames::FrameView;

/// First two bytes of every frame.
pub const MAGIC: [u8; 2] = *b"AP";
/// Version of the framing and of the schema's compatibility rules.
pub const WIRE_VERSION: u8 = 1;
/// Length of the prefix before each frame body.
pub const PREFIX_LEN: usize = 8;
/// Default maximum frame body size: 16 MiB.
pub const DEFAULT_MAX_FRAME_BYTES: u32 = 16 << 20;

/// Limits applied to every received frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecoderConfig {
    /// Largest accepted frame body in bytes. Default 16 MiB.
    pub max_frame_bytes: u32,
    /// Deepest accepted nesting of tables and vectors. Default 16; the link's
    /// frames nest four deep.
    pub max_depth: usize,
}

impl Default for DecoderConfig {
    fn default() -> Self {
        Self {
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            max_depth: 16,
        }
    }
}

/// The parsed 8-byte prefix of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix {
    pub version: u8,
    pub flags: u8,
    pub body_len: u32,
}

impl Prefix {
    /// Writes the prefix of a body of `body_len` bytes.
    pub fn encode(body_len: u32) -> [u8; PREFIX_LEN] {
        let mut p = [0u8; PREFIX_LEN];
        p[..2].copy_from_slice(&MAGIC);
        p[2] = WIRE_VERSION;
        p[3] = 0;
        p[4..].copy_from_slice(&body_len.to_le_bytes());
        p
    }

    /// Parses and checks a prefix.
    pub fn decode(bytes: &[u8; PREFIX_LEN], max_frame_bytes: u32) -> Result<Self, DecodeError> {
        if bytes[..2] != MAGIC {
            return Err(DecodeError::BadMagic {
                found: [bytes[0], bytes[1]],
            });
        }
        let prefix = Prefix {
            version: bytes[2],
            flags: bytes[3],
            body_len: u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
        };
        if prefix.version != WIRE_VERSION {
            return Err(DecodeError::UnsupportedVersion {
                version: prefix.version,
            });
        }
        if prefix.flags != 0 {
            return Err(DecodeError::UnknownFlags {
                flags: prefix.flags,
            });
        }
        if prefix.body_len > max_frame_bytes {
            return Err(DecodeError::FrameTooLarge {
                len: prefix.body_len,
                max: max_frame_bytes,
            });
        }
        Ok(prefix)
    }
}

/// Why a received byte stream could not be decoded. Every error is final for
/// the link: the framing can no longer be trusted, the connection is closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The frame does not start with [`MAGIC`]: not an Apiary link.
    BadMagic { found: [u8; 2] },
    /// The peer speaks a framing version this build does not.
    UnsupportedVersion { version: u8 },
    /// Reserved prefix flags were set.
    UnknownFlags { flags: u8 },
    /// The prefix announced a body larger than the configured maximum.
    FrameTooLarge { len: u32, max: u32 },
    /// The body failed the flatbuffers verifier.
    Invalid { detail: String },
    /// The frame holds no payload or a payload type this build does not know.
    UnknownPayload { payload_type: u8 },
    /// An earlier error ended this stream; the decoder accepts nothing more.
    Failed,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadMagic { found } => write!(
                f,
                "not an Apiary frame: magic {found:02x?}, expected \"AP\""
            ),
            Self::UnsupportedVersion { version } => {
                write!(
                    f,
                    "unsupported wire version {version}, this build speaks {WIRE_VERSION}"
                )
            }
            Self::UnknownFlags { flags } => write!(f, "reserved frame flags set: {flags:#04x}"),
            Self::FrameTooLarge { len, max } => {
                write!(f, "frame of {len} bytes exceeds the maximum of {max} bytes")
            }
            Self::Invalid { detail } => write!(f, "malformed frame: {detail}"),
            Self::UnknownPayload { payload_type } => {
                write!(f, "unknown frame payload type {payload_type}")
            }
            Self::Failed => f.write_str("stream already failed to decode"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Incremental decoder of one link's received bytes.
///
/// Call order: [`handle_bytes`](Self::handle_bytes) with whatever arrived, then
/// [`poll_frame`](Self::poll_frame) until it returns `Ok(None)`; repeat. A frame
/// view borrows the decoder and must be dropped before the next call. After an
/// error every later `poll_frame` returns [`DecodeError::Failed`].
///
/// Memory: the buffer holds at most one incomplete frame plus the bytes of the
/// last `handle_bytes` call; [`release_idle`](Self::release_idle) frees it.
#[derive(Debug)]
pub struct FrameDecoder {
    config: DecoderConfig,
    verifier: flatbuffers::VerifierOptions,
    buf: Vec<u8>,
    /// Start of the bytes not yet handed out.
    start: usize,
    /// Length of the frame handed out by the last `poll_frame`, consumed at
    /// the next call.
    handed_out: usize,
    failed: bool,
}

impl FrameDecoder {
    pub fn new(config: DecoderConfig) -> Self {
        let max = config.max_frame_bytes as usize;
        let verifier = flatbuffers::VerifierOptions {
            max_depth: config.max_depth,
            // Every table starts with a 4-byte offset, so a body of n bytes
            // holds at most n/4 of them.
            max_tables: max / 4 + 1,
            // Without shared sub-objects the verifier visits each byte at most
            // once; the margin covers alignment. Shared offsets that make a
            // small frame look huge are refused.
            max_apparent_size: max.saturating_mul(2).max(1 << 16),
            ignore_missing_null_terminator: false,
        };
        Self {
            config,
            verifier,
            buf: Vec::new(),
            start: 0,
            handed_out: 0,
            failed: false,
        }
    }

    /// Configuration this decoder enforces.
    pub fn config(&self) -> &DecoderConfig {
        &self.config
    }

    /// Appends received bytes.
    pub fn handle_bytes(&mut self, data: &[u8]) {
        self.consume_handed_out();
        if self.failed {
            return;
        }
        if self.start > 0 && (self.start == self.buf.len() || self.start >= self.buf.capacity() / 2)
        {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// Returns the buffer's memory to the allocator when it holds no partial
    /// frame. A busy link keeps its buffer from frame to frame; the session
    /// calls this when the link goes quiet (on its keepalive tick) so that
    /// idle links stay small. Returns the bytes released.
    pub fn release_idle(&mut self) -> usize {
        self.consume_handed_out();
        if self.start < self.buf.len() {
            return 0;
        }
        let released = self.buf.capacity();
        self.buf = Vec::new();
        self.start = 0;
        released
    }

    /// Bytes received but not yet handed out as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start - self.handed_out
    }

    /// Bytes of heap the decoder holds.
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Returns the next complete, verified frame, or `Ok(None)` when more
    /// bytes are needed.
    pub fn poll_frame(&mut self) -> Result<Option<FrameView<'_>>, DecodeError> {
        self.consume_handed_out();
        if self.failed {
            return Err(DecodeError::Failed);
        }
        let avail = &self.buf[self.start..];
        let Some(prefix_bytes) = avail.first_chunk::<PREFIX_LEN>() else {
            // A stream that is not Apiary's is refused as soon as it shows.
            if let Some(&found) = avail.first_chunk::<2>()
                && found != MAGIC
            {
                return Err(self.fail(DecodeError::BadMagic { found }));
            }
            return Ok(None);
        };
        let prefix = match Prefix::decode(prefix_bytes, self.config.max_frame_bytes) {
            Ok(p) => p,
            Err(e) => return Err(self.fail(e)),
        };
        let frame_len = PREFIX_LEN + prefix.body_len as usize;
        if avail.len() < frame_len {
            return Ok(None);
        }
        let body_range = self.start + PREFIX_LEN..self.start + frame_len;
        self.handed_out = frame_len;
        match verify(&self.verifier, &self.buf[body_range]) {
            Ok(view) => Ok(Some(view)),
            Err(e) => {
                // The buffer is still borrowed here; it is released at the
                // next call.
                self.failed = true;
                Err(e)
            }
        }
    }

    fn consume_handed_out(&mut self) {
        self.start += std::mem::take(&mut self.handed_out);
        if self.failed && self.buf.capacity() > 0 {
            self.buf = Vec::new();
            self.start = 0;
        }
    }

    fn fail(&mut self, e: DecodeError) -> DecodeError {
        self.failed = true;
        self.buf = Vec::new();
        self.start = 0;
        e
    }
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new(DecoderConfig::default())
    }
}

/// Verifies one frame body and returns its typed view.
pub fn verify<'a>(
    opts: &flatbuffers::VerifierOptions,
    body: &'a [u8],
) -> Result<FrameView<'a>, DecodeError> {
    let frame = flatbuffers::root_with_opts::<fb::Frame<'_>>(opts, body).map_err(|e| {
        DecodeError::Invalid {
            detail: e.to_string(),
        }
    })?;
    FrameView::from_frame(frame)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frames::FrameEncoder;

    fn ack_frame(seq: u64) -> Vec<u8> {
        let mut out = Vec::new();
        FrameEncoder::default().ack(seq, &mut out).unwrap();
        out
    }

    #[test]
    fn frame_split_at_every_byte_decodes_once() {
        let frame = ack_frame(5);
        for cut in 0..=frame.len() {
            let mut d = FrameDecoder::default();
            d.handle_bytes(&frame[..cut]);
            if cut < frame.len() {
                assert!(d.poll_frame().unwrap().is_none(), "cut {cut}");
                d.handle_bytes(&frame[cut..]);
            }
            let Some(FrameView::Ack(a)) = d.poll_frame().unwrap() else {
                panic!("an Ack comes out at cut {cut}");
            };
            assert_eq!(a.seq(), 5);
            assert!(d.poll_frame().unwrap().is_none());
            assert_eq!(d.buffered(), 0);
        }
    }

    #[test]
    fn oversized_frame_is_refused_from_its_prefix_alone() {
        let mut d = FrameDecoder::new(DecoderConfig {
            max_frame_bytes: 1024,
            ..DecoderConfig::default()
        });
        d.handle_bytes(&Prefix::encode(1025));
        assert_eq!(
            d.poll_frame().err(),
            Some(DecodeError::FrameTooLarge {
                len: 1025,
                max: 1024
            })
        );
    }

    #[test]
    fn announced_frame_takes_memory_only_as_it_arrives() {
        let mut d = FrameDecoder::default();
        d.handle_bytes(&Prefix::encode(DEFAULT_MAX_FRAME_BYTES));
        d.handle_bytes(&[0u8; 100]);
        assert!(d.poll_frame().unwrap().is_none());
        assert!(d.capacity() < 4096, "holds {} bytes", d.capacity());
    }

    #[test]
    fn idle_decoder_releases_its_buffer_but_never_a_partial_frame() {
        let mut d = FrameDecoder::default();
        let mut big = Vec::new();
        let content = vec![7u8; 200_000];
        let m = crate::MessageRef {
            content: &content,
            ..Default::default()
        };
        FrameEncoder::default().batch([m], &mut big).unwrap();
        d.handle_bytes(&big[..1000]);
        assert_eq!(d.release_idle(), 0, "a partial frame is kept");
        d.handle_bytes(&big[1000..]);
        let frame = d.poll_frame().unwrap().unwrap();
        assert_eq!(frame.messages().next().unwrap().content.len(), 200_000);
        assert!(d.poll_frame().unwrap().is_none());
        assert!(d.release_idle() >= big.len());
        assert_eq!(d.capacity(), 0);
        d.handle_bytes(&ack_frame(1));
        assert!(matches!(d.poll_frame().unwrap(), Some(FrameView::Ack(_))));
    }

    #[test]
    fn many_frames_in_one_read() {
        let mut bytes = Vec::new();
        for seq in 1..=100 {
            bytes.extend_from_slice(&ack_frame(seq));
        }
        let mut d = FrameDecoder::default();
        d.handle_bytes(&bytes);
        let mut seen = Vec::new();
        while let Some(FrameView::Ack(a)) = d.poll_frame().unwrap() {
            seen.push(a.seq());
        }
        assert_eq!(seen, (1..=100).collect::<Vec<_>>());
    }

    #[test]
    fn encoder_refuses_frames_over_its_maximum() {
        let mut enc = FrameEncoder::new(100);
        let content = [0u8; 200];
        let m = crate::MessageRef {
            content: &content,
            ..Default::default()
        };
        let mut out = Vec::new();
        let err = enc.batch([m], &mut out).unwrap_err();
        assert!(matches!(
            err,
            crate::EncodeError::FrameTooLarge { max: 100, .. }
        ));
        assert!(out.is_empty(), "nothing is written on error");
        enc.ack(1, &mut out).unwrap();
        assert!(!out.is_empty(), "the encoder is usable after an error");
    }
}
