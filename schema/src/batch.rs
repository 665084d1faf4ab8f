//! The columnar `Batch`: reading one in place and building one.
//!
//! A batch is three buffers: fixed-size `Message` structs, the `text` of every
//! string, and the `content` of every message; a message's strings and content
//! are spans of those buffers. The flatbuffers verifier checks the three
//! buffers; [`BatchView::new`] then checks every span, so that reading a
//! message afterwards cannot fail and copies nothing.

use std::fmt;

use crate::codec::DecodeError;
use crate::fb;
use crate::message::{Header, MessageRef, Route};

/// A received, fully checked `Batch`, read in place.
#[derive(Clone, Copy)]
pub struct BatchView<'a> {
    messages: flatbuffers::Vector<'a, fb::Message>,
    text: &'a str,
    content: &'a [u8],
}

impl fmt::Debug for BatchView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchView")
            .field("messages", &self.len())
            .field("text_bytes", &self.text.len())
            .field("content_bytes", &self.content.len())
            .finish()
    }
}

impl<'a> BatchView<'a> {
    /// Checks every span of a verified batch against its buffer.
    pub fn new(batch: fb::Batch<'a>) -> Result<Self, DecodeError> {
        let view = Self {
            messages: batch.messages().unwrap_or_default(),
            text: batch.text().unwrap_or_default(),
            content: batch.content().map(|c| c.bytes()).unwrap_or_default(),
        };
        // Strings that are all ASCII have a character boundary at every
        // byte, so only the ranges need checking.
        let ascii = view.text.is_ascii();
        let text_len = view.text.len();
        for (i, m) in view.messages.iter().enumerate() {
            let (h, r) = (m.header(), m.route());
            let text_spans = [
                ("id", h.id()),
                ("parent_id", h.parent_id()),
                ("message_type", h.message_type()),
                ("source", r.source()),
                ("destination", r.destination()),
                ("group", r.group()),
                ("operation", r.operation()),
                ("resource", r.resource()),
            ];
            for (field, span) in text_spans {
                let ok = if ascii {
                    range(span).end <= text_len
                } else {
                    view.text.get(range(span)).is_some()
                };
                if !ok {
                    return Err(bad_span(i, field, span, view.text.len()));
                }
            }
            if view.content.get(range(m.content())).is_none() {
                return Err(bad_span(i, "content", m.content(), view.content.len()));
            }
        }
        Ok(view)
    }

    /// Number of messages.
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// The `i`th message, or `None` past the end.
    pub fn get(&self, i: usize) -> Option<MessageRef<'a>> {
        (i < self.len()).then(|| self.read(self.messages.get(i)))
    }

    /// Every message, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = MessageRef<'a>> + use<'a> {
        let this = *self;
        self.messages.iter().map(move |m| this.read(m))
    }

    fn read(&self, m: &fb::Message) -> MessageRef<'a> {
        // Spans were checked in `new`; the fallbacks are never taken.
        let text = |span: &fb::Span| self.text.get(range(span)).unwrap_or_default();
        let (h, r) = (m.header(), m.route());
        MessageRef {
            header: Header {
                id: text(h.id()),
                parent_id: text(h.parent_id()),
                timestamp_ms: h.timestamp_ms(),
                sync: h.sync(),
                resource_version: h.resource_version(),
                seq: h.seq(),
                best_effort: h.best_effort(),
                message_type: text(h.message_type()),
            },
            route: Route {
                source: text(r.source()),
                destination: text(r.destination()),
                group: text(r.group()),
                operation: text(r.operation()),
                resource: text(r.resource()),
            },
            content: self.content.get(range(m.content())).unwrap_or_default(),
        }
    }
}

fn range(span: &fb::Span) -> std::ops::Range<usize> {
    let start = span.offset() as usize;
    start..start.saturating_add(span.len() as usize)
}

#[cold]
fn bad_span(message: usize, field: &str, span: &fb::Span, buffer_len: usize) -> DecodeError {
    DecodeError::Invalid {
        detail: format!(
            "message {message}: {field} span {}+{} does not lie on character boundaries within {buffer_len} bytes",
            span.offset(),
            span.len()
        ),
    }
}

/// The buffers of a batch being built; part of the frame encoder.
#[derive(Debug, Default)]
pub(crate) struct BatchBuffers {
    pub(crate) messages: Vec<fb::Message>,
    pub(crate) text: String,
    pub(crate) content: Vec<u8>,
    /// Route of the previous message, whose strings a batch shares.
    last_route: Option<fb::Route>,
}

/// Fixed bytes of the Batch and Frame tables, vector lengths and alignment.
const BATCH_OVERHEAD: usize = 96;

impl BatchBuffers {
    pub(crate) fn clear(&mut self) {
        self.messages.clear();
        self.text.clear();
        self.content.clear();
        self.last_route = None;
    }

    /// Upper bound of the encoded body if the batch were finished now.
    pub(crate) fn encoded_len(&self) -> usize {
        self.messages.len() * size_of::<fb::Message>()
            + self.text.len()
            + self.content.len()
            + BATCH_OVERHEAD
    }

    pub(crate) fn push(&mut self, m: &MessageRef<'_>) {
        let (h, r) = (&m.header, &m.route);
        let last = self.last_route;
        let header = fb::Header::new(
            h.timestamp_ms,
            h.resource_version,
            h.seq,
            &self.text(h.id, None),
            &self.text(h.parent_id, None),
            &self.text(h.message_type, None),
            h.sync,
            h.best_effort,
        );
        let route = fb::Route::new(
            &self.text(r.source, last.map(|l| *l.source())),
            &self.text(r.destination, last.map(|l| *l.destination())),
            &self.text(r.group, last.map(|l| *l.group())),
            &self.text(r.operation, last.map(|l| *l.operation())),
            &self.text(r.resource, None),
        );
        let offset = self.content.len();
        self.content.extend_from_slice(m.content);
        let content = span(offset, m.content.len());
        self.messages
            .push(fb::Message::new(&header, &route, &content));
        self.last_route = Some(route);
    }

    /// Appends `s` to the text, or reuses `same_as` if it holds `s` already.
    fn text(&mut self, s: &str, same_as: Option<fb::Span>) -> fb::Span {
        if s.is_empty() {
            return span(0, 0);
        }
        if let Some(prev) = same_as
            && self.text.get(range(&prev)) == Some(s)
        {
            return prev;
        }
        let offset = self.text.len();
        self.text.push_str(s);
        span(offset, s.len())
    }
}

/// Offsets past `u32::MAX` only occur in batches far over any frame limit,
/// which `FrameEncoder::finish_batch` refuses before encoding.
fn span(offset: usize, len: usize) -> fb::Span {
    fb::Span::new(offset as u32, len as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::verify;

    /// Encodes a batch of one message whose spans are given as they are.
    fn raw_batch(text: &str, resource: fb::Span, content: fb::Span) -> Vec<u8> {
        let mut fbb = flatbuffers::FlatBufferBuilder::new();
        let empty = span(0, 0);
        let header = fb::Header::new(1, 2, 3, &empty, &empty, &empty, false, false);
        let route = fb::Route::new(&empty, &empty, &empty, &empty, &resource);
        let messages = fbb.create_vector(&[fb::Message::new(&header, &route, &content)]);
        let text = fbb.create_string(text);
        let content_bytes = fbb.create_vector(&[1u8, 2, 3]);
        let batch = fb::Batch::create(
            &mut fbb,
            &fb::BatchArgs {
                messages: Some(messages),
                text: Some(text),
                content: Some(content_bytes),
            },
        );
        let frame = fb::Frame::create(
            &mut fbb,
            &fb::FrameArgs {
                payload_type: fb::Payload::Batch,
                payload: Some(batch.as_union_value()),
            },
        );
        fbb.finish_minimal(frame);
        fbb.finished_data().to_vec()
    }

    fn decode(body: &[u8]) -> Result<MessageRef<'_>, DecodeError> {
        let view = verify(&flatbuffers::VerifierOptions::default(), body)?;
        Ok(view.messages().next().expect("one message"))
    }

    #[test]
    fn spans_inside_their_buffers_read_in_place() {
        let body = raw_batch("default/pod/nginx", span(8, 3), span(1, 2));
        let m = decode(&body).unwrap();
        assert_eq!(m.route.resource, "pod");
        assert_eq!(m.content, &[2, 3]);
        assert_eq!(
            (
                m.header.timestamp_ms,
                m.header.resource_version,
                m.header.seq
            ),
            (1, 2, 3)
        );
    }

    #[test]
    fn spans_outside_their_buffers_are_refused() {
        for (resource, content) in [
            (span(8, 100), span(0, 0)),
            (span(u32::MAX as usize, 2), span(0, 0)),
            (span(0, 0), span(2, 2)),
            (span(0, 0), span(u32::MAX as usize, u32::MAX as usize)),
        ] {
            let body = raw_batch("default/pod/nginx", resource, content);
            assert!(matches!(decode(&body), Err(DecodeError::Invalid { .. })));
        }
    }

    #[test]
    fn spans_splitting_a_character_are_refused() {
        // "é" is two bytes; a span ending between them is not a string.
        let body = raw_batch("café", span(0, 4), span(0, 0));
        let err = decode(&body).unwrap_err();
        assert!(err.to_string().contains("resource span 0+4"), "{err}");
        let body = raw_batch("café", span(0, 5), span(0, 0));
        assert_eq!(decode(&body).unwrap().route.resource, "café");
    }

    #[test]
    fn repeated_route_strings_are_stored_once() {
        let mut buffers = BatchBuffers::default();
        let mut m = MessageRef::default();
        m.route.source = "edgecontroller";
        m.route.group = "resource";
        m.route.operation = "update";
        for resource in ["default/pod/a", "default/pod/b", "default/pod/c"] {
            m.route.resource = resource;
            buffers.push(&m);
        }
        assert_eq!(
            buffers.text.len(),
            "edgecontroller".len() + "resource".len() + "update".len() + 3 * "default/pod/a".len()
        );
    }
}
