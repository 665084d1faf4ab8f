//! Millions of random and mutated byte strings through the frame decoder:
//! each ends in verified frames, a wait for more bytes, or a typed error;
//! never a panic, and never more memory than the bytes given.

use schema::codec::{DecodeError, DecoderConfig, Prefix};
use schema::frames::{Close, Hello, Welcome};
use schema::{
    FrameDecoder, FrameEncoder, FrameView, MAGIC, MessageRef, PREFIX_LEN, WIRE_VERSION, fb,
};

/// xorshift64*: deterministic, so a failure reproduces from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Reads every field of a frame, as a careless consumer would.
fn read_everything(frame: &FrameView<'_>) -> usize {
    let strings = |v: Option<flatbuffers::Vector<'_, flatbuffers::ForwardsUOffset<&str>>>| {
        v.map(|v| v.iter().map(str::len).sum::<usize>())
            .unwrap_or(0)
    };
    match frame {
        FrameView::Hello(h) => {
            h.node_id().map_or(0, str::len)
                + h.resume_seq() as usize % 7
                + strings(h.capabilities())
        }
        FrameView::Welcome(w) => w.window() as usize % 7 + strings(w.capabilities()),
        FrameView::Batch(_) => frame
            .messages()
            .map(|m: MessageRef<'_>| m.payload_len() + m.header.seq as usize % 7)
            .sum(),
        FrameView::Ack(a) => a.seq() as usize % 7,
        FrameView::Keepalive(k) => k.timestamp_ms() as usize % 7,
        FrameView::Close(c) => c.text().map_or(0, str::len) + c.reason().0 as usize,
    }
}

#[derive(Debug, Default)]
struct Outcomes {
    frames: usize,
    incomplete: usize,
    errors: usize,
    bad_magic: usize,
    invalid: usize,
}

/// Feeds `input` in random pieces and drains frames after each piece.
fn feed(
    rng: &mut Rng,
    decoder: &mut FrameDecoder,
    input: &[u8],
    outcomes: &mut Outcomes,
) -> Option<DecodeError> {
    let mut at = 0;
    while at < input.len() {
        let piece = 1 + rng.below(input.len() - at);
        decoder.handle_bytes(&input[at..at + piece]);
        at += piece;
        loop {
            match decoder.poll_frame() {
                Ok(Some(frame)) => {
                    read_everything(&frame);
                    outcomes.frames += 1;
                }
                Ok(None) => break,
                Err(e) => {
                    outcomes.errors += 1;
                    match e {
                        DecodeError::BadMagic { .. } => outcomes.bad_magic += 1,
                        DecodeError::Invalid { .. } => outcomes.invalid += 1,
                        _ => {}
                    }
                    assert_eq!(decoder.poll_frame().err(), Some(DecodeError::Failed));
                    return Some(e);
                }
            }
        }
        // Never holds more than what was given to it.
        assert!(decoder.buffered() <= input.len());
    }
    if decoder.buffered() > 0 {
        outcomes.incomplete += 1;
    }
    None
}

fn valid_frames() -> Vec<Vec<u8>> {
    let mut enc = FrameEncoder::default();
    let mut frames = Vec::new();
    let mut push = |f: &dyn Fn(&mut FrameEncoder, &mut Vec<u8>)| {
        let mut out = Vec::new();
        f(&mut enc, &mut out);
        frames.push(out);
    };
    push(&|e, o| {
        let h = Hello {
            node_id: "edge-node-17",
            protocol_version: 1,
            resume_seq: 42,
            capabilities: &["batch", "resume"],
            received_seq: 44,
            store_id: 0x5eed,
        };
        e.hello(&h, o).unwrap()
    });
    push(&|e, o| {
        let w = Welcome {
            protocol_version: 1,
            resume_seq: 9,
            keepalive_interval_ms: 15_000,
            max_frame_bytes: 1 << 20,
            window: 256,
            capabilities: &["batch"],
        };
        e.welcome(&w, o).unwrap()
    });
    push(&|e, o| e.ack(77, o).unwrap());
    push(&|e, o| e.keepalive(1_700_000_000_000, o).unwrap());
    push(&|e, o| {
        let c = Close {
            reason: fb::CloseReason::Timeout,
            text: "no keepalive for 45s",
            retry_after_ms: 1000,
        };
        e.close(&c, o).unwrap()
    });
    for n in [0usize, 1, 5] {
        push(&|e, o| {
            let mut m = MessageRef::default();
            m.header.id = "0b6a";
            m.header.seq = 3;
            m.route.resource = "default/configmap/settings";
            m.content = br#"{"data":{"k":"v"}}"#;
            e.batch(std::iter::repeat_n(m, n), o).unwrap()
        });
    }
    frames
}

#[test]
fn random_bytes_error_cleanly() {
    let mut rng = Rng(0x5eed_0001);
    let mut outcomes = Outcomes::default();
    let config = DecoderConfig {
        max_frame_bytes: 4096,
        ..DecoderConfig::default()
    };
    for _ in 0..1_000_000 {
        let mut decoder = FrameDecoder::new(config);
        let len = rng.below(96);
        let mut input = rng.bytes(len);
        // Half the time, a well-formed prefix so the verifier sees garbage.
        if rng.below(2) == 0 && len >= PREFIX_LEN {
            let body_len = rng.below(len - PREFIX_LEN + 1) as u32;
            input[..PREFIX_LEN].copy_from_slice(&Prefix::encode(body_len));
        }
        let error = feed(&mut rng, &mut decoder, &input, &mut outcomes);
        if input.len() >= 2 && input[..2] != MAGIC {
            assert!(
                matches!(error, Some(DecodeError::BadMagic { .. })),
                "{input:02x?} gave {error:?}"
            );
        }
    }
    println!("{outcomes:?}");
    assert!(outcomes.bad_magic > 400_000, "{outcomes:?}");
    assert!(
        outcomes.invalid > 10_000,
        "garbage reached the verifier: {outcomes:?}"
    );
}

#[test]
fn mutated_frames_error_cleanly() {
    let frames = valid_frames();
    let mut rng = Rng(0x5eed_0002);
    let mut outcomes = Outcomes::default();
    for round in 0..1_000_000 {
        let original = &frames[round % frames.len()];
        let mut input = original.clone();
        let mut body_only = true;
        for _ in 0..1 + rng.below(4) {
            if input.len() < PREFIX_LEN + 4 {
                break;
            }
            match rng.below(6) {
                0 => {
                    let at = rng.below(input.len());
                    input[at] ^= 1 << rng.below(8);
                    body_only &= at >= PREFIX_LEN;
                }
                1 => {
                    let at = rng.below(input.len());
                    input[at] = rng.next() as u8;
                    body_only &= at >= PREFIX_LEN;
                }
                2 => {
                    // Offsets and lengths are u32s: make one point anywhere.
                    let at = PREFIX_LEN + rng.below(input.len() - PREFIX_LEN - 3);
                    input[at..at + 4].copy_from_slice(&(rng.next() as u32).to_le_bytes());
                }
                3 => {
                    let at = PREFIX_LEN + rng.below(input.len() - PREFIX_LEN);
                    let n = 1 + rng.below(16);
                    let junk = rng.bytes(n);
                    let n = junk.len().min(input.len() - at);
                    input[at..at + n].copy_from_slice(&junk[..n]);
                }
                4 => {
                    // The length field announces something else.
                    let len = rng.below(1 << 25) as u32;
                    input[4..8].copy_from_slice(&len.to_le_bytes());
                    body_only = false;
                }
                _ => input.truncate(rng.below(input.len())),
            }
        }
        let mut decoder = FrameDecoder::default();
        let error = feed(&mut rng, &mut decoder, &input, &mut outcomes);
        if body_only && input.len() <= original.len() {
            // A damaged body never looks like a framing error.
            assert!(
                matches!(
                    error,
                    None | Some(DecodeError::Invalid { .. } | DecodeError::UnknownPayload { .. })
                ),
                "{error:?}"
            );
        }
    }
    println!("{outcomes:?}");
    assert!(outcomes.invalid > 100_000, "{outcomes:?}");
    assert!(outcomes.frames > 20_000, "{outcomes:?}");
    assert!(outcomes.incomplete > 10_000, "{outcomes:?}");
}

#[test]
fn valid_frames_after_garbage_are_not_read() {
    let frames = valid_frames();
    let mut decoder = FrameDecoder::default();
    decoder.handle_bytes(b"GET / HTTP/1.1\r\n\r\n");
    decoder.handle_bytes(&frames[0]);
    assert_eq!(
        decoder.poll_frame().err(),
        Some(DecodeError::BadMagic { found: *b"GE" })
    );
    assert_eq!(decoder.poll_frame().err(), Some(DecodeError::Failed));
    decoder.handle_bytes(&frames[0]);
    assert_eq!(decoder.poll_frame().err(), Some(DecodeError::Failed));
    assert_eq!(decoder.capacity(), 0, "a failed decoder holds no memory");
}

#[test]
fn wrong_version_and_flags_are_refused() {
    let mut frame = valid_frames().remove(0);
    frame[2] = WIRE_VERSION + 1;
    let mut decoder = FrameDecoder::default();
    decoder.handle_bytes(&frame);
    assert_eq!(
        decoder.poll_frame().err(),
        Some(DecodeError::UnsupportedVersion {
            version: WIRE_VERSION + 1
        })
    );
    frame[2] = WIRE_VERSION;
    frame[3] = 0x80;
    let mut decoder = FrameDecoder::default();
    decoder.handle_bytes(&frame);
    assert_eq!(
        decoder.poll_frame().err(),
        Some(DecodeError::UnknownFlags { flags: 0x80 })
    );
}
