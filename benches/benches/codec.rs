//! Encoding and decoding a batch of 64 messages with 256-byte content: the
//! link's flatbuffers frames next to the same messages as Beehive JSON (what
//! KubeEdge puts on its link). "Decode" reads every field of every message.
//!
//! `fleetbench codec` measures the same paths interleaved and prints ratios.

use benches::codec::CodecWorkload;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const BATCH: u64 = 64;
const CONTENT: usize = 256;

fn codec(c: &mut Criterion) {
    let mut workload = CodecWorkload::new(BATCH, CONTENT);
    let mut group = c.benchmark_group("batch64x256");
    group.throughput(Throughput::Elements(BATCH));
    group.bench_function("apiary_encode", |b| b.iter(|| workload.apiary_encode()));
    group.bench_function("apiary_decode", |b| b.iter(|| workload.apiary_decode()));
    group.bench_function("json_encode", |b| b.iter(|| workload.json_encode()));
    group.bench_function("json_decode", |b| b.iter(|| workload.json_decode()));
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
