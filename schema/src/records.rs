//! rkyv records: what the edge keeps in LMDB and what crosses the
//! shared-memory rings between `cloudcontrol` and the `cloudhub` shards.
//!
//! Writers call [`to_bytes`]; readers of bytes that came from disk or shared
//! memory call [`access`], which runs bytecheck validation before anything is
//! read, or [`from_bytes`] for an owned copy. Archived roots must be 8-byte
//! aligned; [`access`] reports misaligned input instead of reading it, and
//! [`from_bytes`] copies such input into an aligned buffer first.

use std::fmt;

use rkyv::api::high::{HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;

use crate::message::Message;

/// Alignment archived records need.
pub const RECORD_ALIGN: usize = 8;

/// Identity of a Kubernetes object on a node: kind, namespace, name. The
/// namespace is empty for cluster-scoped kinds.
#[derive(
    Debug,
    Clone,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[rkyv(derive(Debug))]
pub struct ObjectKey {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

/// Why text is not an [`ObjectKey`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// Not three `/`-separated parts.
    Shape,
    /// A part is empty or holds `/` or NUL.
    Part { part: &'static str },
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Shape => f.write_str("not namespace/kind/name"),
            Self::Part { part } => write!(f, "the {part} is empty or holds '/' or NUL"),
        }
    }
}

impl std::error::Error for KeyError {}

impl ObjectKey {
    /// The key of an object of `kind` (lowercase singular) named `name` in
    /// `namespace`.
    pub fn new(kind: &str, namespace: &str, name: &str) -> ObjectKey {
        ObjectKey {
            kind: kind.to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    /// Reads `namespace/kind/name`, as message resources and checkpoint
    /// copies write a key ([`ObjectKey`]'s `Display`).
    pub fn parse(s: &str) -> Result<ObjectKey, KeyError> {
        let mut parts = s.splitn(3, '/');
        let (Some(namespace), Some(kind), Some(name)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(KeyError::Shape);
        };
        let key = ObjectKey::new(kind, namespace, name);
        key.validate()?;
        Ok(key)
    }

    /// Whether every part is non-empty and free of `/` and NUL (which
    /// separate parts in resources and store keys).
    pub fn validate(&self) -> Result<(), KeyError> {
        let bad = |s: &str| s.is_empty() || s.contains(['\0', '/']);
        for (part, value) in [
            ("namespace", &self.namespace),
            ("kind", &self.kind),
            ("name", &self.name),
        ] {
            if bad(value) {
                return Err(KeyError::Part { part });
            }
        }
        Ok(())
    }
}

/// `namespace/kind/name`: the resource of the messages that carry the object.
impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.namespace, self.kind, self.name)
    }
}

/// An object as the edge's MetaManager stores it.
#[derive(
    Debug, Clone, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
#[rkyv(derive(Debug))]
pub struct StoredObject {
    pub key: ObjectKey,
    pub uid: String,
    pub resource_version: u64,
    /// The object as received (Kubernetes JSON).
    pub data: Vec<u8>,
}

/// An upstream message waiting in the edge's durable outbox until the cloud
/// acknowledges its sequence number.
#[derive(
    Debug, Clone, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct OutboxEntry {
    pub seq: u64,
    /// When the entry was written, milliseconds since the Unix epoch.
    pub created_ms: u64,
    pub message: Message,
}

/// An object version a node durably committed, as reported to the control
/// side.
#[derive(
    Debug, Clone, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct DeliveredObject {
    pub key: ObjectKey,
    pub resource_version: u64,
    /// What was committed is the object's delete: a delete and an update
    /// can carry the same version (an object dropped from a node because
    /// it no longer needs it is dropped at its current version).
    pub deleted: bool,
}

/// A record in a shared-memory ring from `cloudcontrol` to a shard.
// Records are made once and encoded into a ring at once: a boxed message
// would cost an allocation per record for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum DownRecord {
    /// Deliver `message` to `node_id`, replacing any pending version of
    /// `key`; sent at most once, and only while the node is
    /// connected, when `message.header.best_effort` is set.
    Downstream {
        node_id: String,
        key: ObjectKey,
        message: Message,
    },
    /// The control side took over `node_id`'s upstream
    /// messages up to `seq` from its store `store_id`, so the shard may
    /// acknowledge them to the edge (unless the node's store is another one
    /// by now).
    Committed {
        node_id: String,
        store_id: u64,
        seq: u64,
    },
    /// A full snapshot of `node_id`'s objects follows.
    ResyncStarted { node_id: String },
}

/// A record in a shared-memory ring from a shard to `cloudcontrol`.
// Records are made once and encoded into a ring at once: a boxed message
// would cost an allocation per record for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum UpRecord {
    /// `node_id` sent `message` (its `header.seq` numbers
    /// it within the store `store_id`).
    Upstream {
        node_id: String,
        store_id: u64,
        message: Message,
    },
    /// `node_id` durably committed these object versions
    /// in its store `store_id`.
    Delivered {
        node_id: String,
        store_id: u64,
        objects: Vec<DeliveredObject>,
    },
    /// `node_id`'s queue overflowed or it lost committed
    /// data; send it a full snapshot.
    ResyncNeeded { node_id: String },
    /// `node_id` is connected (it completed a handshake)
    /// with its store `store_id` (0: the edge sends none). A store
    /// identity other than the one the control side knew means the node
    /// lost everything it committed.
    Connected {
        node_id: String,
        at_ms: u64,
        store_id: u64,
    },
    /// `node_id`'s link closed with a `CloseReason` code
    /// (`u8::MAX` when the transport was lost without a `Close`).
    Disconnected {
        node_id: String,
        at_ms: u64,
        reason: u8,
    },
}

/// Why stored or shared bytes could not be read as a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordError {
    /// The bytes do not start on an 8-byte boundary.
    Misaligned { address: usize },
    /// Validation failed: truncated, corrupted or not this record type.
    Invalid { detail: String },
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Misaligned { address } => {
                write!(
                    f,
                    "record at {address:#x} is not {RECORD_ALIGN}-byte aligned"
                )
            }
            Self::Invalid { detail } => write!(f, "invalid record: {detail}"),
        }
    }
}

impl std::error::Error for RecordError {}

/// Serializes a record into an aligned buffer.
pub fn to_bytes<T>(record: &T) -> AlignedVec
where
    T: for<'a> rkyv::Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Panic>>,
{
    // Serializing into memory has no failure mode: the `Panic` strategy
    // compiles to nothing.
    match rkyv::to_bytes::<rancor::Panic>(record) {
        Ok(bytes) => bytes,
    }
}

/// Validates `bytes` and returns the archived record, read in place.
pub fn access<T>(bytes: &[u8]) -> Result<&T, RecordError>
where
    T: rkyv::Portable + for<'a> CheckBytes<HighValidator<'a, rancor::Error>>,
{
    let address = bytes.as_ptr() as usize;
    if !address.is_multiple_of(RECORD_ALIGN) {
        return Err(RecordError::Misaligned { address });
    }
    rkyv::access::<T, rancor::Error>(bytes).map_err(invalid)
}

/// Validates `bytes` and deserializes an owned record, copying misaligned
/// input into an aligned buffer first.
pub fn from_bytes<T>(bytes: &[u8]) -> Result<T, RecordError>
where
    T: rkyv::Archive,
    T::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>
        + rkyv::Deserialize<T, rkyv::api::high::HighDeserializer<rancor::Error>>,
{
    let aligned;
    let bytes = if (bytes.as_ptr() as usize).is_multiple_of(RECORD_ALIGN) {
        bytes
    } else {
        let mut copy = AlignedVec::<RECORD_ALIGN>::with_capacity(bytes.len());
        copy.extend_from_slice(bytes);
        aligned = copy;
        &aligned[..]
    };
    rkyv::from_bytes::<T, rancor::Error>(bytes).map_err(invalid)
}

fn invalid(e: rancor::Error) -> RecordError {
    RecordError::Invalid {
        detail: e.to_string(),
    }
}
