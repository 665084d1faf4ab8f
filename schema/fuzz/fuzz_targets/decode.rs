//! The link's frame decoder on arbitrary bytes, fed in arbitrary pieces, with
//! every field of every frame read.
#![no_main]

use libfuzzer_sys::fuzz_target;
use schema::codec::DecoderConfig;
use schema::{FrameDecoder, FrameView};

fuzz_target!(|data: &[u8]| {
    let Some((&piece, data)) = data.split_first() else {
        return;
    };
    let piece = usize::from(piece).max(1);
    let mut decoder = FrameDecoder::new(DecoderConfig {
        max_frame_bytes: 1 << 20,
        ..DecoderConfig::default()
    });
    for chunk in data.chunks(piece) {
        decoder.handle_bytes(chunk);
        loop {
            match decoder.poll_frame() {
                Ok(Some(frame)) => read(&frame),
                Ok(None) => break,
                Err(_) => {
                    assert!(decoder.poll_frame().is_err());
                    return;
                }
            }
        }
        assert!(decoder.buffered() <= data.len());
    }
});

fn read(frame: &FrameView<'_>) {
    let mut sum = 0usize;
    match frame {
        FrameView::Hello(h) => {
            sum += h.node_id().map_or(0, str::len)
                + h.capabilities().map_or(0, |c| c.iter().map(str::len).sum());
        }
        FrameView::Welcome(w) => {
            sum += w.capabilities().map_or(0, |c| c.len()) + w.window() as usize
        }
        FrameView::Close(c) => sum += c.text().map_or(0, str::len),
        FrameView::Ack(a) => sum += a.seq() as usize,
        FrameView::Keepalive(k) => sum += k.timestamp_ms() as usize,
        FrameView::Batch(_) => {
            for m in frame.messages() {
                sum += m.payload_len() + m.header.seq as usize;
            }
        }
    }
    std::hint::black_box(sum);
}
