//! Messages per second through the hub engine, no I/O: 10,000 connected
//! sessions, 16 Pod updates with 256-byte content per node per round, each
//! round enqueued, transmitted as one batch per node and acknowledged; once
//! with owned messages dropped in the round, once with borrowed ones.

use benches::engine::EngineWorkload;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

const NODES: usize = 10_000;
const PER_NODE: u64 = 16;
const CONTENT: usize = 256;

fn engine(c: &mut Criterion) {
    let mut workload = EngineWorkload::new(NODES);
    let mut group = c.benchmark_group("engine");
    group.sample_size(10);
    group.throughput(Throughput::Elements(NODES as u64 * PER_NODE));
    let names = workload.names().to_vec();
    let mut round = 0;
    group.bench_function("enqueue_transmit_ack_10k_sessions", |b| {
        b.iter_batched(
            || {
                round += 1;
                EngineWorkload::messages(&names, round, PER_NODE, CONTENT)
            },
            |messages| {
                let n = messages.len() as u64;
                let delivered = workload.round(messages);
                assert_eq!(delivered, n, "every message was acknowledged");
            },
            BatchSize::PerIteration,
        )
    });
    // The same with messages the hub only borrows: what the engine costs
    // once ring records are read in place.
    group.bench_function("borrowed_enqueue_transmit_ack_10k_sessions", |b| {
        b.iter_batched(
            || {
                round += 1;
                EngineWorkload::messages(&names, round, PER_NODE, CONTENT)
            },
            |messages| {
                let delivered = workload.round_borrowed(&messages);
                assert_eq!(delivered, messages.len() as u64);
                // Dropped by the harness, outside the measurement.
                messages
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, engine);
criterion_main!(benches);
