//! KubeEdge's Beehive message JSON, converted to and from [`Message`].
//!
//! The JSON shape is KubeEdge's `model.Message`:
//!
//! ```json
//! {"header":{"msg_id":"…","parent_msg_id":"…","timestamp":1700000000000,
//!            "resourceversion":"42","sync":true,"type":"…"},
//!  "route":{"source":"edgecontroller","destination":"…","group":"resource",
//!           "operation":"update","resource":"default/pod/nginx"},
//!  "content":{…}}
//! ```
//!
//! Conversion is lossless in both directions:
//! - content that is exactly one JSON value (no surrounding whitespace) is
//!   embedded as that value, byte for byte; JSON content is read back as the
//!   exact text of the value. A missing `content` is empty content.
//! - any other content is written as a base64 string, as Go writes a
//!   `[]byte`, and marked with `"content_encoding":"base64"` in the header.
//! - the link's delivery fields, which Beehive does not have, are written as
//!   header fields `seq` and `best_effort` when set; KubeEdge ignores them.
//! - `resourceversion` is a decimal string in Beehive and a `u64` here; it is
//!   omitted when 0.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::message::{Header, Message, Route};

const BASE64_ENCODING: &str = "base64";

#[derive(Serialize, Deserialize)]
struct JsonMessage {
    header: JsonHeader,
    #[serde(default)]
    route: JsonRoute,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    content: Option<Box<RawValue>>,
}

/// A present `content`, `null` included: only a missing one is `None`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(d).map(Some)
}

#[derive(Serialize, Deserialize)]
struct JsonHeader {
    #[serde(rename = "msg_id", default)]
    id: String,
    #[serde(
        rename = "parent_msg_id",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    parent_id: String,
    #[serde(default)]
    timestamp: u64,
    #[serde(
        rename = "resourceversion",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    resource_version: String,
    #[serde(default, skip_serializing_if = "is_false")]
    sync: bool,
    #[serde(rename = "type", default, skip_serializing_if = "String::is_empty")]
    message_type: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    seq: u64,
    #[serde(default, skip_serializing_if = "is_false")]
    best_effort: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    content_encoding: String,
}

#[derive(Serialize, Deserialize, Default)]
struct JsonRoute {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    source: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    destination: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    group: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    operation: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    resource: String,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Why Beehive JSON could not be read as a [`Message`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromJsonError {
    /// Not JSON, or not the shape of a Beehive message.
    Json { detail: String },
    /// `resourceversion` is not a decimal `u64`.
    ResourceVersion { value: String },
    /// `content_encoding` names an encoding this build does not know.
    ContentEncoding { value: String },
    /// Content marked base64 is not a base64 string.
    Base64 { detail: String },
}

impl fmt::Display for FromJsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Json { detail } => write!(f, "not a Beehive message: {detail}"),
            Self::ResourceVersion { value } => {
                write!(f, "resourceversion {value:?} is not a decimal integer")
            }
            Self::ContentEncoding { value } => write!(f, "unknown content_encoding {value:?}"),
            Self::Base64 { detail } => write!(f, "content marked base64 does not decode: {detail}"),
        }
    }
}

impl std::error::Error for FromJsonError {}

/// Writes `message` as Beehive JSON.
pub fn to_json(message: &Message) -> String {
    let h = &message.header;
    let r = &message.route;
    let (content, content_encoding) = content_to_json(&message.content);
    let json = JsonMessage {
        header: JsonHeader {
            id: h.id.clone(),
            parent_id: h.parent_id.clone(),
            timestamp: h.timestamp_ms,
            resource_version: match h.resource_version {
                0 => String::new(),
                rv => rv.to_string(),
            },
            sync: h.sync,
            message_type: h.message_type.clone(),
            seq: h.seq,
            best_effort: h.best_effort,
            content_encoding: content_encoding.to_owned(),
        },
        route: JsonRoute {
            source: r.source.clone(),
            destination: r.destination.clone(),
            group: r.group.clone(),
            operation: r.operation.clone(),
            resource: r.resource.clone(),
        },
        content,
    };
    // Serializing strings, integers and already-valid raw JSON cannot fail.
    serde_json::to_string(&json).unwrap_or_default()
}

/// Reads Beehive JSON into a [`Message`].
pub fn from_json(json: &[u8]) -> Result<Message, FromJsonError> {
    let m: JsonMessage = serde_json::from_slice(json).map_err(|e| FromJsonError::Json {
        detail: e.to_string(),
    })?;
    let h = m.header;
    let resource_version = match h.resource_version.as_str() {
        "" => 0,
        s => s.parse().map_err(|_| FromJsonError::ResourceVersion {
            value: h.resource_version.clone(),
        })?,
    };
    let content = match (h.content_encoding.as_str(), m.content) {
        (_, None) => Vec::new(),
        ("", Some(raw)) => raw.get().as_bytes().to_vec(),
        (BASE64_ENCODING, Some(raw)) => {
            let text: String =
                serde_json::from_str(raw.get()).map_err(|e| FromJsonError::Base64 {
                    detail: e.to_string(),
                })?;
            BASE64.decode(text).map_err(|e| FromJsonError::Base64 {
                detail: e.to_string(),
            })?
        }
        (other, Some(_)) => {
            return Err(FromJsonError::ContentEncoding {
                value: other.to_owned(),
            });
        }
    };
    Ok(Message {
        header: Header {
            id: h.id,
            parent_id: h.parent_id,
            timestamp_ms: h.timestamp,
            sync: h.sync,
            resource_version,
            seq: h.seq,
            best_effort: h.best_effort,
            message_type: h.message_type,
        },
        route: Route {
            source: m.route.source,
            destination: m.route.destination,
            group: m.route.group,
            operation: m.route.operation,
            resource: m.route.resource,
        },
        content,
    })
}

/// Content as a JSON value and the `content_encoding` it needs.
fn content_to_json(content: &[u8]) -> (Option<Box<RawValue>>, &'static str) {
    if content.is_empty() {
        return (None, "");
    }
    if let Ok(raw) = serde_json::from_slice::<&RawValue>(content) {
        // Surrounding whitespace would be lost on the way back.
        if raw.get().len() == content.len() {
            return (Some(raw.to_owned()), "");
        }
    }
    let encoded = serde_json::to_string(&BASE64.encode(content)).unwrap_or_default();
    (RawValue::from_string(encoded).ok(), BASE64_ENCODING)
}
