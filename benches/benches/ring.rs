//! Records per second through the shared-memory ring: 256-byte records, a
//! producer thread and a consumer thread over one 1 MiB ring in ordinary
//! memory (the same code runs over a file mapping shared by two processes).

// Setting up a ring over memory is `unsafe` by contract; see the SAFETY note.
#![allow(unsafe_code)]

use std::ptr::NonNull;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hub_core::ring::{HEADER_BYTES, Ring, RingError};

const RECORDS: u64 = 200_000;
const RECORD: usize = 256;

fn ring(c: &mut Criterion) {
    let mut region = vec![0u64; (HEADER_BYTES + (1 << 20)) / 8];
    let ptr = NonNull::new(region.as_mut_ptr().cast::<u8>()).expect("not null");
    let len = region.len() * 8;
    let mut group = c.benchmark_group("ring");
    group.throughput(Throughput::Elements(RECORDS));
    group.bench_function("spsc_256b_two_threads", |b| {
        b.iter(|| {
            // SAFETY: `region` outlives both rings, which are its only users.
            let (producer, consumer) = unsafe {
                (
                    Ring::new(ptr, len).expect("valid region"),
                    Ring::new(ptr, len).expect("valid region"),
                )
            };
            std::thread::scope(|s| {
                s.spawn(move || {
                    let record = [7u8; RECORD];
                    for _ in 0..RECORDS {
                        while let Err(RingError::Full) = producer.push(&record) {
                            std::hint::spin_loop();
                        }
                    }
                });
                let mut out = Vec::with_capacity(RECORD);
                let mut n = 0;
                while n < RECORDS {
                    if consumer.pop(&mut out).expect("ring intact") {
                        n += 1;
                    } else {
                        std::hint::spin_loop();
                    }
                }
            });
        })
    });
    group.finish();
}

criterion_group!(benches, ring);
criterion_main!(benches);
