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
}

/// One record in a shared-memory ring between `cloudcontrol` and a shard.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum RingRecord {
    /// control → shard: deliver `message` to `node_id`, replacing any pending
    /// version of `key`; sent at most once, and only while the node is
    /// connected, when `message.header.best_effort` is set.
    Downstream {
        node_id: String,
        key: ObjectKey,
        message: Message,
    },
    /// control → shard: the control side took over `node_id`'s upstream
    /// messages up to `seq` from its store `store_id`, so the shard may
    /// acknowledge them to the edge (unless the node's store is another one
    /// by now).
    Committed {
        node_id: String,
        store_id: u64,
        seq: u64,
    },
    /// control → shard: a full snapshot of `node_id`'s objects follows.
    ResyncStarted { node_id: String },
    /// shard → control: `node_id` sent `message` (its `header.seq` numbers
    /// it within the store `store_id`).
    Upstream {
        node_id: String,
        store_id: u64,
        message: Message,
    },
    /// shard → control: `node_id` durably committed these object versions
    /// in its store `store_id`.
    Delivered {
        node_id: String,
        store_id: u64,
        objects: Vec<DeliveredObject>,
    },
    /// shard → control: `node_id`'s queue overflowed or it lost committed
    /// data; send it a full snapshot.
    ResyncNeeded { node_id: String },
    /// shard → control: `node_id` is connected (it completed a handshake)
    /// with its store `store_id` (0: the edge sends none). A store
    /// identity other than the one the control side knew means the node
    /// lost everything it committed.
    Connected {
        node_id: String,
        at_ms: u64,
        store_id: u64,
    },
    /// shard → control: `node_id`'s link closed with a `CloseReason` code
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
