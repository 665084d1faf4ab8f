//! Durable apply throughput of MetaManager's store with group commit: each
//! iteration applies 1,000 downstream messages (~400-byte pods, all newer
//! than what is stored) and commits them in one fdatasync'ed LMDB
//! transaction, as edgecore does for one received batch.
//!
//! `cargo bench -p edge-core --bench apply`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
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

criterion_group!(benches, apply);
criterion_main!(benches);
