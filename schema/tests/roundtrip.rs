//! Round trips through every format of the schema crate: link frames through
//! the encoder and the incremental decoder (fed in arbitrary pieces), rkyv
//! records, and Beehive JSON.

use proptest::prelude::*;
use schema::fb::CloseReason;
use schema::frames::{Close, Hello, Welcome};
use schema::records::{
    self, ArchivedStoredObject, DeliveredObject, DownRecord, ObjectKey, OutboxEntry, StoredObject,
    UpRecord,
};
use schema::{FrameDecoder, FrameEncoder, FrameView, Header, Message, Route, beehive};

fn text() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), "[a-z0-9./-]{1,40}", any::<String>()]
}

fn header() -> impl Strategy<Value = Header> {
    (
        (text(), text(), text()),
        (
            any::<u64>(),
            any::<bool>(),
            any::<u64>(),
            any::<u64>(),
            any::<bool>(),
        ),
    )
        .prop_map(
            |(
                (id, parent_id, message_type),
                (timestamp_ms, sync, resource_version, seq, best_effort),
            )| Header {
                id,
                parent_id,
                timestamp_ms,
                sync,
                resource_version,
                seq,
                best_effort,
                message_type,
            },
        )
}

fn route() -> impl Strategy<Value = Route> {
    (text(), text(), text(), text(), text()).prop_map(
        |(source, destination, group, operation, resource)| Route {
            source,
            destination,
            group,
            operation,
            resource,
        },
    )
}

fn content() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..600),
        // JSON documents, with and without surrounding whitespace.
        (any::<String>(), any::<i64>(), "[ \n]{0,2}").prop_map(|(s, n, ws)| {
            let doc = serde_json::json!({ "name": s, "n": n, "list": [1, 2.5, null, true] });
            format!("{ws}{doc}").into_bytes()
        }),
        Just(b"null".to_vec()),
        Just(b"\"plain string\"".to_vec()),
    ]
}

fn message() -> impl Strategy<Value = Message> {
    (header(), route(), content()).prop_map(|(header, route, content)| Message {
        header,
        route,
        content,
    })
}

/// Feeds `bytes` to a fresh decoder in pieces ending at `cuts` and returns
/// what `read` makes of each frame.
fn decode_in_pieces<T>(
    bytes: &[u8],
    cuts: &[usize],
    mut read: impl FnMut(FrameView<'_>) -> T,
) -> Vec<T> {
    let mut decoder = FrameDecoder::default();
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    points.push(bytes.len());
    points.sort_unstable();
    let mut out = Vec::new();
    let mut from = 0;
    for to in points {
        decoder.handle_bytes(&bytes[from..to]);
        from = to;
        while let Some(frame) = decoder.poll_frame().expect("encoded frames decode") {
            out.push(read(frame));
        }
    }
    assert_eq!(decoder.buffered(), 0, "every byte was consumed");
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn batches_round_trip_in_any_pieces(
        batches in proptest::collection::vec(proptest::collection::vec(message(), 0..8), 1..4),
        cuts in proptest::collection::vec(any::<usize>(), 0..12),
    ) {
        let mut encoder = FrameEncoder::default();
        let mut wire = Vec::new();
        for batch in &batches {
            encoder.batch(batch.iter().map(Message::as_ref), &mut wire).unwrap();
        }
        let decoded = decode_in_pieces(&wire, &cuts, |frame| {
            prop_assert!(matches!(frame, FrameView::Batch(_)), "got {}", frame.name());
            Ok(frame.messages().map(|m| m.to_owned()).collect::<Vec<_>>())
        });
        let decoded: Vec<Vec<Message>> = decoded.into_iter().collect::<Result<_, _>>()?;
        prop_assert_eq!(decoded, batches);
    }

    #[test]
    fn control_frames_round_trip(
        node_id in text(),
        caps in proptest::collection::vec(text(), 0..4),
        version in any::<u16>(),
        seq in any::<u64>(),
        (keepalive, max_frame, window) in (any::<u32>(), any::<u32>(), any::<u32>()),
        reason in 0u8..=11,
        close_text in text(),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        let caps: Vec<&str> = caps.iter().map(String::as_str).collect();
        let mut encoder = FrameEncoder::default();
        let mut wire = Vec::new();
        let hello = Hello {
            node_id: &node_id,
            protocol_version: version,
            resume_seq: seq,
            capabilities: &caps,
            received_seq: seq ^ 1,
            store_id: seq ^ 2,
        };
        encoder.hello(&hello, &mut wire).unwrap();
        let welcome = Welcome {
            protocol_version: version,
            resume_seq: seq,
            keepalive_interval_ms: keepalive,
            max_frame_bytes: max_frame,
            window,
            capabilities: &caps,
        };
        encoder.welcome(&welcome, &mut wire).unwrap();
        encoder.ack(seq, &mut wire).unwrap();
        encoder.keepalive(seq, &mut wire).unwrap();
        let close = Close { reason: CloseReason(reason), text: &close_text, retry_after_ms: keepalive };
        encoder.close(&close, &mut wire).unwrap();

        let strings = |v: Option<flatbuffers::Vector<'_, flatbuffers::ForwardsUOffset<&str>>>| {
            v.map(|v| v.iter().map(str::to_owned).collect::<Vec<_>>()).unwrap_or_default()
        };
        let decoded = decode_in_pieces(&wire, &cuts, |frame| match frame {
            FrameView::Hello(h) => format!(
                "hello {:?} {} {} {:?} {} {}",
                h.node_id().unwrap_or_default(), h.protocol_version(), h.resume_seq(), strings(h.capabilities()),
                h.received_seq(), h.store_id()
            ),
            FrameView::Welcome(w) => format!(
                "welcome {} {} {} {} {} {:?}",
                w.protocol_version(), w.resume_seq(), w.keepalive_interval_ms(),
                w.max_frame_bytes(), w.window(), strings(w.capabilities())
            ),
            FrameView::Ack(a) => format!("ack {}", a.seq()),
            FrameView::Keepalive(k) => format!("keepalive {}", k.timestamp_ms()),
            FrameView::Close(c) => format!(
                "close {} {:?} {}", c.reason().0, c.text().unwrap_or_default(), c.retry_after_ms()
            ),
            FrameView::Batch(_) => "batch".to_owned(),
        });
        let expected = vec![
            format!("hello {node_id:?} {version} {seq} {caps:?} {} {}", seq ^ 1, seq ^ 2),
            format!("welcome {version} {seq} {keepalive} {max_frame} {window} {caps:?}"),
            format!("ack {seq}"),
            format!("keepalive {seq}"),
            format!("close {reason} {close_text:?} {keepalive}"),
        ];
        prop_assert_eq!(decoded, expected);
    }

    #[test]
    fn stored_objects_round_trip(
        (kind, namespace, name, uid) in (text(), text(), text(), text()),
        resource_version in any::<u64>(),
        data in proptest::collection::vec(any::<u8>(), 0..600),
    ) {
        let object = StoredObject { key: ObjectKey { kind, namespace, name }, uid, resource_version, data };
        let bytes = records::to_bytes(&object);
        let archived: &ArchivedStoredObject = records::access(&bytes).unwrap();
        prop_assert_eq!(archived.key.name.as_str(), object.key.name.as_str());
        prop_assert_eq!(archived.resource_version.to_native(), object.resource_version);
        prop_assert_eq!(archived.data.as_slice(), object.data.as_slice());
        prop_assert_eq!(records::from_bytes::<StoredObject>(&bytes).unwrap(), object);
    }

    #[test]
    fn outbox_entries_and_ring_records_round_trip(
        message in message(),
        seq in any::<u64>(),
        created_ms in any::<u64>(),
        node_id in text(),
        which in 0u8..8,
    ) {
        let entry = OutboxEntry { seq, created_ms, message: message.clone() };
        prop_assert_eq!(records::from_bytes::<OutboxEntry>(&records::to_bytes(&entry)).unwrap(), entry);

        let down = match which % 3 {
            0 => DownRecord::Downstream { node_id: node_id.clone(), key: ObjectKey { kind: "pod".into(), namespace: node_id.clone(), name: "web".into() }, message: message.clone() },
            1 => DownRecord::Committed { node_id: node_id.clone(), store_id: created_ms, seq },
            _ => DownRecord::ResyncStarted { node_id: node_id.clone() },
        };
        let bytes = records::to_bytes(&down);
        prop_assert_eq!(records::from_bytes::<DownRecord>(&bytes).unwrap(), down);
        let up = match which % 5 {
            0 => UpRecord::Upstream { node_id, store_id: created_ms, message },
            1 => UpRecord::Connected { node_id, at_ms: created_ms, store_id: seq },
            2 => UpRecord::ResyncNeeded { node_id },
            3 => UpRecord::Delivered { node_id, store_id: created_ms, objects: vec![DeliveredObject { key: ObjectKey::default(), resource_version: seq, deleted: seq % 2 == 0 }] },
            _ => UpRecord::Disconnected { node_id, at_ms: created_ms, reason: 2 },
        };
        let bytes = records::to_bytes(&up);
        prop_assert_eq!(records::from_bytes::<UpRecord>(&bytes).unwrap(), up);
    }

    #[test]
    fn beehive_json_round_trips(message in message()) {
        let json = beehive::to_json(&message);
        // Whatever the content, the output is one valid JSON document.
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        prop_assert!(value["header"].is_object());
        prop_assert_eq!(beehive::from_json(json.as_bytes()).unwrap(), message);
    }
}

#[test]
fn misaligned_record_is_reported_and_still_readable_by_copy() {
    let object = StoredObject {
        key: ObjectKey {
            kind: "pod".into(),
            namespace: "default".into(),
            name: "nginx".into(),
        },
        uid: "1f0e".into(),
        resource_version: 7,
        data: b"{}".to_vec(),
    };
    let bytes = records::to_bytes(&object);
    let mut shifted = vec![0u8; bytes.len() + 1];
    let offset = if (shifted.as_ptr() as usize).is_multiple_of(2) {
        1
    } else {
        0
    };
    shifted[offset..offset + bytes.len()].copy_from_slice(&bytes);
    let misaligned = &shifted[offset..offset + bytes.len()];
    assert!(matches!(
        records::access::<ArchivedStoredObject>(misaligned),
        Err(records::RecordError::Misaligned { .. })
    ));
    assert_eq!(
        records::from_bytes::<StoredObject>(misaligned).unwrap(),
        object
    );
}

#[test]
fn corrupted_records_are_refused() {
    let object = StoredObject {
        key: ObjectKey {
            kind: "configmap".into(),
            namespace: "kube-system".into(),
            name: "settings".into(),
        },
        uid: "uid".into(),
        resource_version: 9,
        data: vec![1; 40],
    };
    let bytes = records::to_bytes(&object);
    let mut refused = 0;
    for cut in 0..bytes.len() {
        let mut truncated = rkyv::util::AlignedVec::<8>::new();
        truncated.extend_from_slice(&bytes[..cut]);
        assert!(
            records::from_bytes::<StoredObject>(&truncated).is_err(),
            "cut at {cut}"
        );
        refused += 1;
    }
    assert_eq!(refused, bytes.len());
    // Every single-byte corruption is either refused or reads as some valid
    // object; those that hit lengths and offsets must be refused.
    let mut corrupted_refused = 0;
    for at in 0..bytes.len() {
        let mut corrupted = bytes.clone();
        corrupted[at] ^= 0xff;
        if records::from_bytes::<StoredObject>(&corrupted).is_err() {
            corrupted_refused += 1;
        }
    }
    assert!(
        corrupted_refused > 0,
        "validation refused no corruption at all"
    );
}

/// A message as KubeEdge's cloudcore writes it reads into a `Message` and
/// back to the same JSON value.
#[test]
fn kubeedge_beehive_json_converts_both_ways() {
    let json = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/beehive/pod-update.json"
    ))
    .unwrap();
    let message = beehive::from_json(&json).unwrap();
    assert_eq!(message.header.id, "9a3f1c52-3e0d-4b1c-8e4b-5d2f6a7b8c90");
    assert_eq!(message.header.resource_version, 123_456);
    assert_eq!(message.route.operation, "update");
    assert_eq!(message.route.resource, "default/pod/nginx");
    let content: serde_json::Value = serde_json::from_slice(&message.content).unwrap();
    assert_eq!(content["metadata"]["name"], "nginx");

    let back: serde_json::Value = serde_json::from_str(&beehive::to_json(&message)).unwrap();
    let original: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(back, original);
}

#[test]
fn bad_beehive_json_gets_a_clear_error() {
    use beehive::FromJsonError;
    let err = beehive::from_json(b"{\"header\":{\"msg_id\":\"a\",\"resourceversion\":\"x1\"}}")
        .unwrap_err();
    assert_eq!(err, FromJsonError::ResourceVersion { value: "x1".into() });
    let err =
        beehive::from_json(b"{\"header\":{\"content_encoding\":\"zip\"},\"content\":\"AA==\"}")
            .unwrap_err();
    assert_eq!(
        err,
        FromJsonError::ContentEncoding {
            value: "zip".into()
        }
    );
    let err =
        beehive::from_json(b"{\"header\":{\"content_encoding\":\"base64\"},\"content\":\"%%\"}")
            .unwrap_err();
    assert!(matches!(err, FromJsonError::Base64 { .. }), "{err}");
    let err = beehive::from_json(b"[1,2]").unwrap_err();
    assert!(matches!(err, FromJsonError::Json { .. }), "{err}");
}
