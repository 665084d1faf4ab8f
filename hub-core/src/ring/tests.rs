//! The ring over ordinary memory: one end per `Ring`, as two processes would
//! have; a producer and a consumer thread racing; restarts; corruption.
//! Runs under Miri: `cargo +nightly miri test -p hub-core ring::` (smaller
//! counts are used there).

use super::*;

/// An 8-byte aligned region, as a file mapping would be.
struct Region(Vec<u64>);

impl Region {
    fn new(data: usize) -> Self {
        Region(vec![0u64; (HEADER_BYTES + data) / 8])
    }
    fn ptr(&mut self) -> NonNull<u8> {
        NonNull::new(self.0.as_mut_ptr().cast::<u8>()).expect("a Vec's pointer is not null")
    }
    fn len(&self) -> usize {
        self.0.len() * 8
    }
    fn ring(&mut self) -> Ring {
        let (ptr, len) = (self.ptr(), self.len());
        // SAFETY: the region outlives every ring of the test and is only used
        // through rings.
        unsafe { Ring::new(ptr, len) }.expect("a valid region")
    }
}

fn record(i: u32) -> Vec<u8> {
    let len = (i as usize * 7) % 45;
    (0..len)
        .map(|j| (i as usize + j) as u8)
        .chain(i.to_le_bytes())
        .collect()
}

const ROUNDS: u32 = if cfg!(miri) { 300 } else { 200_000 };

#[test]
fn records_come_out_in_order_across_many_wraps() {
    let mut region = Region::new(256);
    let (producer, consumer) = (region.ring(), region.ring());
    let mut out = Vec::new();
    let mut next_out = 0;
    for i in 0..ROUNDS {
        while let Err(RingError::Full) = producer.push(&record(i)) {
            assert!(consumer.pop(&mut out).unwrap());
            assert_eq!(out, record(next_out));
            next_out += 1;
        }
    }
    while consumer.pop(&mut out).unwrap() {
        assert_eq!(out, record(next_out));
        next_out += 1;
    }
    assert_eq!(next_out, ROUNDS);
    assert_eq!(consumer.used(), 0);
}

#[test]
fn producer_and_consumer_threads_race() {
    let mut region = Region::new(1024);
    let producer = region.ring();
    let consumer = region.ring();
    std::thread::scope(|s| {
        s.spawn(move || {
            for i in 0..ROUNDS {
                loop {
                    match producer.push(&record(i)) {
                        Ok(()) => break,
                        Err(RingError::Full) => std::thread::yield_now(),
                        Err(e) => panic!("{e}"),
                    }
                }
            }
        });
        s.spawn(move || {
            let mut out = Vec::new();
            let mut i = 0;
            while i < ROUNDS {
                if consumer.pop(&mut out).unwrap() {
                    assert_eq!(out, record(i), "record {i}");
                    i += 1;
                } else {
                    std::thread::yield_now();
                }
            }
            assert!(!consumer.pop(&mut out).unwrap());
        });
    });
}

#[test]
fn either_end_restarts_and_nothing_is_lost_or_repeated() {
    let mut region = Region::new(512);
    let mut out = Vec::new();
    let mut producer = region.ring();
    for i in 0..10 {
        producer.push(&record(i)).unwrap();
    }
    {
        let consumer = region.ring();
        for i in 0..4 {
            assert!(consumer.pop(&mut out).unwrap());
            assert_eq!(out, record(i));
        }
    }
    // Both ends went away; they come back over the same memory.
    producer = region.ring();
    for i in 10..12 {
        producer.push(&record(i)).unwrap();
    }
    let consumer = region.ring();
    for i in 4..12 {
        assert!(consumer.pop(&mut out).unwrap());
        assert_eq!(out, record(i));
    }
    assert!(!consumer.pop(&mut out).unwrap());
}

#[test]
fn unpublished_half_written_record_is_invisible() {
    let mut region = Region::new(256);
    let ring = region.ring();
    ring.push(b"first").unwrap();
    // A producer that died mid-write: bytes in the free area, tail unmoved.
    let free = HEADER_BYTES + 16;
    region.0[free / 8] = 0x0505_0505_0000_0040;
    let ring = region.ring();
    let mut out = Vec::new();
    assert!(ring.pop(&mut out).unwrap());
    assert_eq!(out, b"first");
    assert!(!ring.pop(&mut out).unwrap());
    ring.push(b"second").unwrap();
    assert!(ring.pop(&mut out).unwrap());
    assert_eq!(out, b"second");
}

#[test]
fn full_and_oversized_records_are_refused() {
    let mut region = Region::new(128);
    let ring = region.ring();
    assert_eq!(ring.max_record(), 56);
    assert!(matches!(
        ring.push(&[0; 57]),
        Err(RingError::TooLarge { len: 57, max: 56 })
    ));
    ring.push(&[1; 56]).unwrap();
    ring.push(&[2; 56]).unwrap();
    assert_eq!(ring.push(&[3]), Err(RingError::Full));
    let mut out = Vec::new();
    assert!(ring.pop(&mut out).unwrap());
    ring.push(&[3]).unwrap();
}

#[test]
fn bad_regions_and_foreign_rings_are_refused() {
    let mut region = Region::new(100);
    let (ptr, len) = (region.ptr(), region.len());
    // SAFETY: valid memory; the call must refuse it before using it.
    let result = unsafe { Ring::new(ptr, len) };
    assert!(matches!(result, Err(RingError::BadRegion { .. })));

    let mut region = Region::new(256);
    region.ring();
    let (ptr, _) = (region.ptr(), region.len());
    // SAFETY: the same memory, viewed with a smaller capacity.
    let result = unsafe { Ring::new(ptr, HEADER_BYTES + 128) };
    assert!(matches!(result, Err(RingError::Mismatch { .. })));

    region.0[0] = 0xdead_beef;
    let (ptr, len) = (region.ptr(), region.len());
    // SAFETY: valid memory holding a foreign magic.
    let result = unsafe { Ring::new(ptr, len) };
    assert!(matches!(result, Err(RingError::Mismatch { .. })));
}

#[test]
fn corrupt_counters_and_headers_are_reported_not_followed() {
    let mut region = Region::new(256);
    let ring = region.ring();
    ring.push(b"hello").unwrap();
    // A record header claiming more bytes than were published.
    region.0[HEADER_BYTES / 8] = 4000;
    let ring = region.ring();
    let mut out = Vec::new();
    assert!(matches!(ring.pop(&mut out), Err(RingError::Corrupt { .. })));
    // A tail far beyond the head.
    region.0[TAIL / 8] = 1 << 40;
    let (ptr, len) = (region.ptr(), region.len());
    // SAFETY: valid memory with a corrupt tail.
    let result = unsafe { Ring::new(ptr, len) };
    assert!(matches!(result, Err(RingError::Corrupt { .. })));
}

#[test]
fn wake_up_words_change_with_every_push_and_pop() {
    let mut region = Region::new(256);
    let ring = region.ring();
    let (p, c) = (
        ring.producer_word().load(Ordering::Acquire),
        ring.consumer_word().load(Ordering::Acquire),
    );
    ring.push(b"x").unwrap();
    assert_ne!(ring.producer_word().load(Ordering::Acquire), p);
    let mut out = Vec::new();
    ring.pop(&mut out).unwrap();
    assert_ne!(ring.consumer_word().load(Ordering::Acquire), c);
}
