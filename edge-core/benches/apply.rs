//! Durable apply throughput of MetaManager's store with group commit: each
//! iteration applies 1,000 downstream messages (~400-byte pods, all newer
//! than what is stored) and commits them in one fdatasync'ed LMDB
//! transaction, as edgecore does for one received batch. Before the
//! criterion run it prints the commit latency of 300 such batches
//! (p50/p99/max), for the budget's commit p99.
//!
//! `cargo bench -p edge-core --bench apply`

use criterion::{Criterion, Throughput, criterion_group};
use edge_core::store::{DEFAULT_MAP_SIZE, Store};
use schema::{Header, Message, Route};

const BATCH: u64 = 1000;
const OBJECTS: u64 = 10_000;

fn message(i: u64, rv: u64) -> Message {
    let name = format!("pod-{:05}", i % OBJECTS);
    let content = format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}","namespace":"bench","uid":"0b4e7c1a-{i:012}","resourceVersion":"{rv}","labels":{{"app":"bench"}}}},"spec":{{"nodeName":"edge-1","containers":[{{"name":"app","image":"registry.example/app:1.2.3","resources":{{"limits":{{"cpu":"100m","memory":"64Mi"}}}}}}]}}}}"#
    );
    Message {
        header: Header {
            id: format!("msg-{rv}"),
            resource_version: rv,
            seq: rv,
            ..Header::default()
        },
        route: Route {
            source: "edgecontroller".into(),
            group: "resource".into(),
            operation: "update".into(),
            resource: format!("bench/pod/{name}"),
            ..Route::default()
        },
        content: content.into_bytes(),
    }
}

fn apply(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), DEFAULT_MAP_SIZE).unwrap();
    let mut rv = 0;
    let mut group = c.benchmark_group("store");
    group.throughput(Throughput::Elements(BATCH));
    group.sample_size(30);
    group.bench_function("durable_apply_batch_1000", |b| {
        b.iter_batched(
            || {
                (0..BATCH)
                    .map(|_| {
                        rv += 1;
                        message(rv, rv)
                    })
                    .collect::<Vec<_>>()
            },
            |batch| {
                let last = batch.last().map_or(0, |m| m.header.seq);
                let done = store.commit(&batch, last, None).unwrap();
                assert_eq!(done.changes.len() as u64, BATCH);
            },
            criterion::BatchSize::PerIteration,
        );
    });
    group.finish();
}

/// Times 300 batch commits one by one and prints their p50, p99 and max.
fn commit_latency() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), DEFAULT_MAP_SIZE).unwrap();
    let mut rv = 0;
    let mut times: Vec<std::time::Duration> = (0..300)
        .map(|_| {
            let batch: Vec<Message> = (0..BATCH)
                .map(|_| {
                    rv += 1;
                    message(rv, rv)
                })
                .collect();
            let started = std::time::Instant::now();
            store.commit(&batch, rv, None).unwrap();
            started.elapsed()
        })
        .collect();
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    println!(
        "store/commit_latency_batch_1000: p50 {:?}  p99 {:?}  max {:?}  ({} commits)",
        at(0.50),
        at(0.99),
        times[times.len() - 1],
        times.len()
    );
}

criterion_group!(benches, apply);

fn main() {
    commit_latency();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
