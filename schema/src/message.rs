//! The Beehive message shared by every part of Apiary.
//!
//! [`Message`] owns its fields and is what the edge stores and what Beehive
//! JSON converts to and from. [`MessageRef`] borrows the same fields, either
//! from a [`Message`] or, without copying, from a received batch
//! ([`crate::BatchView`]); it
//! is what the frame encoder takes and what a received batch hands out.

/// Beehive message header (KubeEdge `model.MessageHeader`) with the link's
/// delivery fields.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct Header<S = String> {
    /// Message id (`msg_id`), usually a UUID.
    pub id: S,
    /// Id of the message this one answers (`parent_msg_id`), or empty.
    pub parent_id: S,
    /// Creation time, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// Whether the sender waits for a response.
    pub sync: bool,
    /// resourceVersion of the object carried, 0 when none.
    pub resource_version: u64,
    /// Link sequence number, 0 for best-effort messages.
    pub seq: u64,
    /// Never retransmitted, never acknowledged.
    pub best_effort: bool,
    /// Beehive message type (`type`), usually empty.
    pub message_type: S,
}

/// Beehive message route (KubeEdge `model.MessageRoute`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct Route<S = String> {
    pub source: S,
    pub destination: S,
    pub group: S,
    pub operation: S,
    pub resource: S,
}

/// An owned Beehive message.
#[derive(
    Debug, Clone, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct Message {
    pub header: Header,
    pub route: Route,
    /// Opaque content; JSON for every KubeEdge resource.
    pub content: Vec<u8>,
}

/// A Beehive message whose fields borrow from elsewhere.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MessageRef<'a> {
    pub header: Header<&'a str>,
    pub route: Route<&'a str>,
    pub content: &'a [u8],
}

impl Message {
    /// Borrows every field.
    pub fn as_ref(&self) -> MessageRef<'_> {
        let h = &self.header;
        let r = &self.route;
        MessageRef {
            header: Header {
                id: &h.id,
                parent_id: &h.parent_id,
                timestamp_ms: h.timestamp_ms,
                sync: h.sync,
                resource_version: h.resource_version,
                seq: h.seq,
                best_effort: h.best_effort,
                message_type: &h.message_type,
            },
            route: Route {
                source: &r.source,
                destination: &r.destination,
                group: &r.group,
                operation: &r.operation,
                resource: &r.resource,
            },
            content: &self.content,
        }
    }
}

impl<'a> MessageRef<'a> {
    /// The message's strings in a fixed order: header id, parent id,
    /// message type, then route source, destination, group, operation,
    /// resource.
    pub fn strings(&self) -> [&'a str; 8] {
        let (h, r) = (&self.header, &self.route);
        [
            h.id,
            h.parent_id,
            h.message_type,
            r.source,
            r.destination,
            r.group,
            r.operation,
            r.resource,
        ]
    }

    /// Copies every field into an owned [`Message`].
    pub fn to_owned(&self) -> Message {
        let h = &self.header;
        let r = &self.route;
        Message {
            header: Header {
                id: h.id.to_owned(),
                parent_id: h.parent_id.to_owned(),
                timestamp_ms: h.timestamp_ms,
                sync: h.sync,
                resource_version: h.resource_version,
                seq: h.seq,
                best_effort: h.best_effort,
                message_type: h.message_type.to_owned(),
            },
            route: Route {
                source: r.source.to_owned(),
                destination: r.destination.to_owned(),
                group: r.group.to_owned(),
                operation: r.operation.to_owned(),
                resource: r.resource.to_owned(),
            },
            content: self.content.to_vec(),
        }
    }

    /// Bytes of variable-length data the message carries; the frame encoder
    /// adds a fixed overhead per message on top of this.
    pub fn payload_len(&self) -> usize {
        self.strings().iter().map(|s| s.len()).sum::<usize>() + self.content.len()
    }
}
