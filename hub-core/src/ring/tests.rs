//! The ring over ordinary memory: one end per `Ring`, as two processes would
//! have; a producer and a consumer thread racing; restarts; corruption;
//! reading ahead and releasing later; the sleeping protocol over a stand-in
//! futex. Runs under Miri: `cargo +nightly miri test -p hub-core --lib ring::`
//! (smaller counts are used there).

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

/// The geometry bytes of `region`'s header.
fn geometry(region: &Region) -> [u8; GEOMETRY_BYTES] {
    let mut bytes = [0u8; GEOMETRY_BYTES];
    for (chunk, word) in bytes.chunks_mut(8).zip(&region.0) {
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    bytes
}

#[test]
fn the_header_records_the_capacity_for_a_later_attacher() {
    let mut region = Region::new(512);
    assert_eq!(
        recorded_capacity(&geometry(&region)),
        Ok(None),
        "never initialised"
    );
    region.ring();
    assert_eq!(recorded_capacity(&geometry(&region)), Ok(Some(512)));

    for (word, value) in [(0, 0xdead_beef), (1, 2), (2, 100), (2, 32)] {
        let mut foreign = Region::new(512);
        foreign.ring();
        foreign.0[word] = value;
        assert!(
            matches!(
                recorded_capacity(&geometry(&foreign)),
                Err(RingError::Mismatch { .. })
            ),
            "word {word} = {value}"
        );
    }
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

#[test]
fn several_reads_then_one_release() {
    let mut region = Region::new(256);
    let (producer, consumer) = (region.ring(), region.ring());
    for i in 0..3 {
        producer.push(&record(i)).unwrap();
    }
    let mut out = Vec::new();
    let first = consumer.read(None, &mut out).unwrap().unwrap();
    assert_eq!(out, record(0));
    let second = consumer.read(Some(first), &mut out).unwrap().unwrap();
    assert_eq!(out, record(1));
    // Reading again from the head gives the oldest record: nothing released.
    assert_eq!(consumer.read(None, &mut out).unwrap(), Some(first));
    assert_eq!(out, record(0));
    let used = consumer.used();
    consumer.release(second).unwrap();
    assert!(consumer.used() < used);
    assert!(consumer.pop(&mut out).unwrap());
    assert_eq!(out, record(2));
    assert_eq!(consumer.read(None, &mut out).unwrap(), None);
    assert_eq!(consumer.used(), 0);
}

#[test]
fn reading_ahead_across_many_wraps() {
    let mut region = Region::new(256);
    let (producer, consumer) = (region.ring(), region.ring());
    let mut out = Vec::new();
    let (mut next_in, mut next_out) = (0, 0);
    while next_out < ROUNDS {
        while next_in < ROUNDS && producer.push(&record(next_in)).is_ok() {
            next_in += 1;
        }
        // Read everything there is, then release it in one go.
        let mut cursor = None;
        while let Some(after) = consumer.read(cursor, &mut out).unwrap() {
            assert_eq!(out, record(next_out));
            next_out += 1;
            cursor = Some(after);
        }
        consumer
            .release(cursor.expect("the producer pushed at least one record"))
            .unwrap();
        assert_eq!(consumer.used(), 0);
    }
}

#[test]
fn bad_cursors_are_refused_as_corrupt() {
    let mut region = Region::new(256);
    let ring = region.ring();
    ring.push(b"one").unwrap();
    ring.push(b"two").unwrap();
    let mut out = Vec::new();
    let first = ring.read(None, &mut out).unwrap().unwrap();
    ring.release(first).unwrap();
    // Not ahead of the head: released already.
    assert!(matches!(
        ring.release(first),
        Err(RingError::Corrupt { .. })
    ));
    // Behind the head: a stale cursor cannot be read from either.
    assert!(matches!(
        ring.release(Cursor(0)),
        Err(RingError::Corrupt { .. })
    ));
    assert!(matches!(
        ring.read(Some(Cursor(0)), &mut out),
        Err(RingError::Corrupt { .. })
    ));
    // Past the tail, or not on a record boundary.
    let past = Cursor(ring.word(TAIL).load(Ordering::Relaxed) + 8);
    assert!(matches!(ring.release(past), Err(RingError::Corrupt { .. })));
    assert!(matches!(
        ring.read(Some(past), &mut out),
        Err(RingError::Corrupt { .. })
    ));
    assert!(matches!(
        ring.release(Cursor(first.0 + 4)),
        Err(RingError::Corrupt { .. })
    ));
    // Nothing moved.
    assert!(ring.pop(&mut out).unwrap());
    assert_eq!(out, b"two");
}

#[test]
fn a_restarted_consumer_reads_unreleased_records_again_exactly_once() {
    let mut region = Region::new(512);
    let producer = region.ring();
    for i in 0..6 {
        producer.push(&record(i)).unwrap();
    }
    let mut out = Vec::new();
    {
        // Reads four, releases two, dies.
        let consumer = region.ring();
        let mut cursor = None;
        let mut cursors = Vec::new();
        for i in 0..4 {
            cursor = consumer.read(cursor, &mut out).unwrap();
            assert_eq!(out, record(i));
            cursors.push(cursor.unwrap());
        }
        consumer.release(cursors[1]).unwrap();
    }
    let consumer = region.ring();
    let mut cursor = None;
    for i in 2..6 {
        cursor = consumer.read(cursor, &mut out).unwrap();
        assert_eq!(out, record(i), "record {i} again after the restart");
    }
    assert_eq!(consumer.read(cursor, &mut out).unwrap(), None);
    consumer.release(cursor.unwrap()).unwrap();
    // Released: a third consumer sees nothing more.
    let consumer = region.ring();
    assert_eq!(consumer.read(None, &mut out).unwrap(), None);
}

#[test]
fn signals_predict_push_and_read() {
    let mut region = Region::new(128);
    let (producer, consumer) = (region.ring(), region.ring());
    let signals = consumer.signals();
    let mut out = Vec::new();
    assert!(!signals.has_data(None));
    assert!(!signals.has_room(signals.max_record() + 1));
    for i in 0..(if cfg!(miri) { 60 } else { 2_000 }) {
        let len = (i * 13) % 57;
        let fits = signals.has_room(len);
        match producer.push(&vec![1; len]) {
            Ok(()) => assert!(fits, "round {i}: pushed {len} bytes, has_room said no"),
            Err(RingError::Full) => {
                assert!(!fits, "round {i}: {len} bytes refused, has_room said yes");
                let cursor = consumer.read(None, &mut out).unwrap();
                assert!(signals.has_data(None));
                assert_eq!(
                    signals.has_data(cursor),
                    consumer.read(cursor, &mut out).unwrap().is_some()
                );
                consumer.release(cursor.unwrap()).unwrap();
            }
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn wake_up_flags_are_raised_only_while_there_is_nothing_to_do() {
    let mut region = Region::new(128);
    let ring = region.ring();
    let signals = ring.signals();
    assert!(!signals.consumer_needs_wake() && !signals.producer_needs_wake());

    // Empty: the consumer would sleep on the producer's word as it was.
    let seen = ring.producer_word().load(Ordering::Acquire);
    assert_eq!(signals.prepare_wait_for_data(None), Some(seen));
    assert!(signals.consumer_needs_wake());
    assert!(!signals.producer_needs_wake());
    signals.end_wait_for_data();
    assert!(!signals.consumer_needs_wake());

    ring.push(&[1; 56]).unwrap();
    assert_eq!(signals.prepare_wait_for_data(None), None);
    assert!(
        !signals.consumer_needs_wake(),
        "flag lowered when data is there"
    );

    // Room for one more 56-byte record, then full.
    assert_eq!(signals.prepare_wait_for_room(56), None);
    ring.push(&[2; 56]).unwrap();
    let seen = ring.consumer_word().load(Ordering::Acquire);
    assert_eq!(signals.prepare_wait_for_room(1), Some(seen));
    assert!(signals.producer_needs_wake());
    signals.end_wait_for_room();
    assert!(!signals.producer_needs_wake());
}

/// What the kernel's futex does for the protocol, over a mutex and a condvar:
/// `wait` sleeps only while the word still holds the value, checked under
/// the lock that `wake` takes.
#[derive(Default)]
struct StandInFutex {
    lock: std::sync::Mutex<()>,
    woken: std::sync::Condvar,
}

impl StandInFutex {
    /// Returns false if the wait ran into its (generous) timeout: with the
    /// protocol right, every sleeper is woken.
    fn wait(&self, word: &AtomicU32, seen: u32) -> bool {
        let guard = self.lock.lock().unwrap();
        if word.load(Ordering::SeqCst) != seen {
            return true;
        }
        let (_guard, result) = self
            .woken
            .wait_timeout(guard, std::time::Duration::from_secs(5))
            .unwrap();
        !result.timed_out()
    }

    fn wake(&self) {
        let _guard = self.lock.lock().unwrap();
        self.woken.notify_all();
    }
}

#[test]
fn sleeping_protocol_loses_no_wake_up() {
    let rounds = if cfg!(miri) { 100 } else { 20_000 };
    let mut region = Region::new(128);
    let (producer, consumer) = (region.ring(), region.ring());
    let futex = StandInFutex::default();
    std::thread::scope(|s| {
        let futex = &futex;
        s.spawn(move || {
            let signals = producer.signals();
            for i in 0..rounds {
                let record = record(i);
                loop {
                    match producer.push(&record) {
                        Ok(()) => break,
                        Err(RingError::Full) => {
                            if let Some(seen) = signals.prepare_wait_for_room(record.len()) {
                                let woken = futex.wait(signals.consumer_word(), seen);
                                signals.end_wait_for_room();
                                assert!(woken, "producer never woken at record {i}");
                            }
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
                if signals.consumer_needs_wake() {
                    futex.wake();
                }
            }
        });
        s.spawn(move || {
            let signals = consumer.signals();
            let mut out = Vec::new();
            let mut i = 0;
            while i < rounds {
                if consumer.pop(&mut out).unwrap() {
                    assert_eq!(out, record(i), "record {i}");
                    i += 1;
                    if signals.producer_needs_wake() {
                        futex.wake();
                    }
                } else if let Some(seen) = signals.prepare_wait_for_data(None) {
                    let woken = futex.wait(signals.producer_word(), seen);
                    signals.end_wait_for_data();
                    assert!(woken, "consumer never woken at record {i}");
                }
            }
        });
    });
}
