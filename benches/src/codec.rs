//! The codec workload: one batch of messages through Apiary's frames and
//! through Beehive JSON, shared by the criterion bench (`benches/codec.rs`)
//! and `fleetbench codec`, which measures both paths interleaved so that the
//! machine's noise hits them alike.

use std::hint::black_box;
use std::time::Instant;

use schema::{FrameDecoder, FrameEncoder, FrameView, Message, MessageRef, beehive};

use crate::workload::pod_updates;

/// One batch, encoded both ways, with the encoder and decoder a link keeps.
#[derive(Debug)]
pub struct CodecWorkload {
    messages: Vec<Message>,
    frame: Vec<u8>,
    jsons: Vec<String>,
    encoder: FrameEncoder,
    decoder: FrameDecoder,
}

/// Touches every field so that nothing is left unread.
fn checksum(m: &MessageRef<'_>) -> u64 {
    let h = &m.header;
    let r = &m.route;
    m.payload_len() as u64
        + h.timestamp_ms
        + h.resource_version
        + h.seq
        + u64::from(h.sync)
        + u64::from(h.best_effort)
        + u64::from(m.content.first().copied().unwrap_or(0))
        + u64::from(r.resource.as_bytes().last().copied().unwrap_or(0))
}

impl CodecWorkload {
    /// `batch` Pod updates with `content` bytes of JSON content each.
    pub fn new(batch: u64, content: usize) -> Self {
        let messages = pod_updates("edge-node-0001", batch, content);
        let jsons = messages.iter().map(beehive::to_json).collect();
        let mut this = Self {
            messages,
            frame: Vec::new(),
            jsons,
            encoder: FrameEncoder::default(),
            decoder: FrameDecoder::default(),
        };
        this.apiary_encode();
        this
    }

    /// Encodes the batch as one frame; returns its length.
    pub fn apiary_encode(&mut self) -> usize {
        self.frame.clear();
        self.encoder
            .batch(self.messages.iter().map(Message::as_ref), &mut self.frame)
            .expect("the batch fits in a frame");
        self.frame.len()
    }

    /// Feeds the frame to the decoder and reads every field of every message.
    pub fn apiary_decode(&mut self) -> u64 {
        self.decoder.handle_bytes(black_box(&self.frame));
        let Ok(Some(view @ FrameView::Batch(_))) = self.decoder.poll_frame() else {
            panic!("the encoded batch decodes");
        };
        view.messages().map(|m| checksum(&m)).sum()
    }

    /// Writes every message as Beehive JSON; returns the bytes written.
    pub fn json_encode(&self) -> usize {
        self.messages
            .iter()
            .map(|m| beehive::to_json(m).len())
            .sum()
    }

    /// Reads every Beehive JSON message and every field of it.
    pub fn json_decode(&self) -> u64 {
        self.jsons
            .iter()
            .map(|j| {
                let m = beehive::from_json(black_box(j.as_bytes())).expect("valid Beehive JSON");
                checksum(&m.as_ref())
            })
            .sum()
    }

    /// Frame bytes and JSON bytes of the batch.
    pub fn sizes(&self) -> (usize, usize) {
        (self.frame.len(), self.jsons.iter().map(String::len).sum())
    }
}

/// Medians over the rounds of `fleetbench codec`.
#[derive(Debug, Clone, Copy)]
pub struct CodecReport {
    pub apiary_encode_ns: f64,
    pub apiary_decode_ns: f64,
    pub json_encode_ns: f64,
    pub json_decode_ns: f64,
    pub decode_ratio: f64,
    pub encode_ratio: f64,
}

/// Times `iters` calls of each path, interleaved, for `rounds` rounds, and
/// returns the medians of the per-round times and ratios.
pub fn measure(workload: &mut CodecWorkload, rounds: usize, iters: u32) -> CodecReport {
    let time = |f: &mut dyn FnMut() -> u64| {
        let start = Instant::now();
        for _ in 0..iters {
            black_box(f());
        }
        start.elapsed().as_nanos() as f64 / f64::from(iters)
    };
    let mut rows = Vec::with_capacity(rounds);
    for _ in 0..rounds.max(1) {
        let ae = time(&mut || workload.apiary_encode() as u64);
        let ad = time(&mut || workload.apiary_decode());
        let je = time(&mut || workload.json_encode() as u64);
        let jd = time(&mut || workload.json_decode());
        rows.push([ae, ad, je, jd, jd / ad, je / ae]);
    }
    let median = |i: usize| {
        let mut v: Vec<f64> = rows.iter().map(|r| r[i]).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    CodecReport {
        apiary_encode_ns: median(0),
        apiary_decode_ns: median(1),
        json_encode_ns: median(2),
        json_decode_ns: median(3),
        decode_ratio: median(4),
        encode_ratio: median(5),
    }
}
