//! Reads KubeEdge Beehive messages (JSON files), sends them through Apiary's
//! link codec as one batch frame, and prints what arrived on the other side.
//!
//! cargo run -p schema --example beehive_frame -- examples/beehive/*.json

use std::process::ExitCode;

use schema::{FrameDecoder, FrameEncoder, FrameView, Message, beehive};

fn main() -> ExitCode {
    let paths: Vec<String> = std::env::args().skip(1).collect();
    if paths.is_empty() {
        eprintln!("usage: beehive_frame FILE.json...");
        return ExitCode::from(2);
    }
    let mut messages = Vec::new();
    let mut json_bytes = 0;
    for path in &paths {
        let json = match std::fs::read(path) {
            Ok(json) => json,
            Err(e) => {
                eprintln!("{path}: {e}");
                return ExitCode::FAILURE;
            }
        };
        match beehive::from_json(&json) {
            Ok(m) => messages.push(m),
            Err(e) => {
                eprintln!("{path}: {e}");
                return ExitCode::FAILURE;
            }
        }
        json_bytes += json.len();
    }

    let mut wire = Vec::new();
    if let Err(e) = FrameEncoder::default().batch(messages.iter().map(Message::as_ref), &mut wire) {
        eprintln!("encoding: {e}");
        return ExitCode::FAILURE;
    }
    println!(
        "{} message(s): {json_bytes} bytes of Beehive JSON, one {}-byte link frame",
        messages.len(),
        wire.len()
    );

    // The receiving end: bytes arrive in pieces; frames come out verified.
    let mut decoder = FrameDecoder::default();
    for piece in wire.chunks(1500) {
        decoder.handle_bytes(piece);
        loop {
            match decoder.poll_frame() {
                Ok(Some(frame @ FrameView::Batch(_))) => {
                    for m in frame.messages() {
                        let (h, r) = (&m.header, &m.route);
                        println!(
                            "received {} {} {} (resourceVersion {}, {} content bytes)",
                            r.operation,
                            r.resource,
                            h.id,
                            h.resource_version,
                            m.content.len()
                        );
                        println!("{}", beehive::to_json(&m.to_owned()));
                    }
                }
                Ok(Some(other)) => println!("received a {} frame", other.name()),
                Ok(None) => break,
                Err(e) => {
                    eprintln!("decoding: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    ExitCode::SUCCESS
}
