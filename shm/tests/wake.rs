//! Sleeping until the other side acts: a waiter blocked with a long timeout
//! returns as soon as the peer pushes or makes room, a waiter with nothing
//! to wait for times out, and `close` ends a wait at once. The peer is
//! another `RingFile` over the same file, on another thread.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use shm::{RingError, RingFile, RingSize, Role, Waiter, ring_path};

const LONG: Duration = Duration::from_secs(10);
/// Far below `LONG`: a wake-up arrived, the timeout did not end the wait.
const PROMPT: Duration = Duration::from_secs(5);

const _: () = {
    const fn send_sync_clone<T: Send + Sync + Clone>() {}
    const fn send<T: Send>() {}
    send_sync_clone::<Waiter>();
    send::<RingFile>();
};

fn pair() -> (tempfile::TempDir, RingFile, RingFile) {
    let dir = tempfile::tempdir().unwrap();
    let path = ring_path(dir.path(), 0);
    let control = RingFile::open(&path, RingSize::Default(256), Role::Control).unwrap();
    let shard = RingFile::open(&path, RingSize::Default(256), Role::Shard).unwrap();
    (dir, control, shard)
}

/// Polls until `flag` is raised: the waiter is asleep or about to be.
fn until_raised(flag: &AtomicU32) {
    let deadline = Instant::now() + PROMPT;
    while flag.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the waiter never went to sleep");
        std::thread::yield_now();
    }
}

/// Runs `wait` on another thread once it has nothing to wait for, does
/// `act` once it sleeps (its flag is raised), and returns what `wait`
/// returned and how long it took.
fn wait_then(
    flag: &AtomicU32,
    wait: impl FnOnce() -> bool + Send,
    act: impl FnOnce(),
) -> (bool, Duration) {
    std::thread::scope(|s| {
        let waiting = s.spawn(move || {
            let start = Instant::now();
            (wait(), start.elapsed())
        });
        until_raised(flag);
        act();
        waiting.join().unwrap()
    })
}

#[test]
fn a_sleeping_consumer_wakes_promptly_when_the_other_side_pushes() {
    let (_dir, control, shard) = pair();
    let waiter = shard.waiter();
    let signals = shard.inbound().signals();
    for round in 0..20 {
        let (woken, elapsed) = wait_then(
            signals.consumer_sleeping(),
            || waiter.wait_inbound(LONG),
            || control.push_and_wake(b"wake up").unwrap(),
        );
        assert!(woken, "round {round}");
        assert!(elapsed < PROMPT, "round {round}: woken after {elapsed:?}");
        assert_eq!(signals.consumer_sleeping().load(Ordering::SeqCst), 0);
        let mut out = Vec::new();
        assert!(shard.pop_and_wake(&mut out).unwrap());
        assert_eq!(out, b"wake up");
    }
}

#[test]
fn a_consumer_with_nothing_to_read_times_out_with_false() {
    let (_dir, _control, shard) = pair();
    let start = Instant::now();
    assert!(!shard.wait_inbound(Duration::from_millis(50)));
    let elapsed = start.elapsed();
    assert!(elapsed >= Duration::from_millis(50), "{elapsed:?}");
    assert!(elapsed < PROMPT, "{elapsed:?}");
    assert_eq!(
        shard
            .inbound()
            .signals()
            .consumer_sleeping()
            .load(Ordering::SeqCst),
        0
    );
}

#[test]
fn a_waiting_consumer_returns_at_once_when_data_is_there() {
    let (_dir, control, shard) = pair();
    control.push_and_wake(b"already here").unwrap();
    assert!(shard.waiter().wait_inbound(LONG));
    // Read but unreleased: `wait_inbound_after` waits for what comes next.
    let mut out = Vec::new();
    let cursor = shard.inbound().read(None, &mut out).unwrap().unwrap();
    assert!(shard.wait_inbound(Duration::ZERO));
    assert!(
        !shard
            .waiter()
            .wait_inbound_after(cursor, Duration::from_millis(20))
    );
    let waiter = shard.waiter();
    let (woken, elapsed) = wait_then(
        shard.inbound().signals().consumer_sleeping(),
        || waiter.wait_inbound_after(cursor, LONG),
        || control.push_and_wake(b"next").unwrap(),
    );
    assert!(woken && elapsed < PROMPT, "{woken} after {elapsed:?}");
}

#[test]
fn a_producer_waiting_for_room_wakes_when_the_consumer_releases() {
    let (_dir, control, shard) = pair();
    let record = [5u8; 100];
    let fill = |file: &RingFile| {
        while file.push_and_wake(&record).is_ok() {}
        assert_eq!(file.push_and_wake(&record), Err(RingError::Full));
    };
    let waiter = control.waiter();
    let signals = control.outbound().signals();
    let flag = signals.producer_sleeping();
    let mut out = Vec::new();

    fill(&control);
    let (room, elapsed) = wait_then(
        flag,
        || waiter.wait_outbound_room(record.len(), LONG),
        || assert!(shard.pop_and_wake(&mut out).unwrap()),
    );
    assert!(room && elapsed < PROMPT, "{room} after {elapsed:?}");
    control.push_and_wake(&record).unwrap();

    fill(&control);
    let (room, elapsed) = wait_then(
        flag,
        || waiter.wait_outbound_room(record.len(), LONG),
        || {
            let cursor = shard.inbound().read(None, &mut out).unwrap().unwrap();
            shard.release_and_wake(cursor).unwrap();
        },
    );
    assert!(room && elapsed < PROMPT, "{room} after {elapsed:?}");
    assert_eq!(flag.load(Ordering::SeqCst), 0);
}

#[test]
fn a_producer_with_no_room_times_out_and_an_oversized_record_never_fits() {
    let (_dir, control, _shard) = pair();
    while control.push_and_wake(&[1; 50]).is_ok() {}
    assert!(!control.wait_outbound_room(50, Duration::from_millis(20)));
    let max = control.outbound().max_record();
    let start = Instant::now();
    assert!(!control.wait_outbound_room(max + 1, LONG));
    assert!(start.elapsed() < PROMPT);
}

#[test]
fn close_wakes_a_sleeping_waiter_and_ends_later_waits_at_once() {
    let (_dir, control, shard) = pair();
    let waiter = shard.waiter();
    let closer = waiter.clone();
    let (woken, elapsed) = wait_then(
        shard.inbound().signals().consumer_sleeping(),
        || waiter.wait_inbound(LONG),
        || closer.close(),
    );
    assert!(!woken && elapsed < PROMPT, "{woken} after {elapsed:?}");
    assert!(shard.waiter().is_closed());

    let start = Instant::now();
    assert!(!shard.wait_inbound(LONG));
    while shard.push_and_wake(&[2; 50]).is_ok() {}
    assert!(!shard.wait_outbound_room(50, LONG));
    assert!(start.elapsed() < PROMPT);
    // Closing is this process's business: the other side still waits.
    assert!(!control.waiter().is_closed());
    assert!(control.wait_inbound(Duration::ZERO));
}
