//! Sleeping until a ring has data or room, and waking the sleeper: futexes on
//! the seq words of the shared mapping, following the protocol documented in
//! `hub_core::ring` ("Waiting"). Shared futexes, not private ones: the
//! sleeper and the waker are in different processes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use hub_core::ring::{Cursor, Signals};
use memmap2::MmapRaw;
use rustix::io::Errno;
use rustix::thread::futex;

use crate::Occupancy;

/// Longest single futex sleep; a wait with a longer timeout sleeps again.
const MAX_NAP: Duration = Duration::from_secs(60);

/// A cloneable, `Send + Sync` handle to one process's end of a ring file that
/// can only wait, report occupancy and [`close`](Waiter::close): give it to
/// the thread that blocks (glommio's `spawn_blocking`, tokio's
/// `spawn_blocking`) while the owner of the [`RingFile`](crate::RingFile)
/// keeps pushing and popping. It keeps the mapping alive.
///
/// One thread at a time waits for inbound data, and one for outbound room:
/// each ring has one wake-up flag per side.
#[derive(Debug, Clone)]
pub struct Waiter {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// Never read: keeps the memory `inbound` and `outbound` point into
    /// mapped.
    _map: MmapRaw,
    inbound: Signals,
    outbound: Signals,
    closed: AtomicBool,
}

impl Waiter {
    pub(crate) fn new(map: MmapRaw, inbound: Signals, outbound: Signals) -> Self {
        Waiter {
            shared: Arc::new(Shared {
                _map: map,
                inbound,
                outbound,
                closed: AtomicBool::new(false),
            }),
        }
    }

    /// Blocks until the inbound ring holds an unreleased record, `timeout`
    /// passes, or [`Waiter::close`] is called. Returns whether a record is
    /// there.
    pub fn wait_inbound(&self, timeout: Duration) -> bool {
        self.wait_inbound_from(None, timeout)
    }

    /// As [`Waiter::wait_inbound`], for a record after `cursor`: for a
    /// consumer that holds read records unreleased while it waits for more.
    pub fn wait_inbound_after(&self, cursor: Cursor, timeout: Duration) -> bool {
        self.wait_inbound_from(Some(cursor), timeout)
    }

    /// Blocks until the outbound ring has room for a record of `bytes`
    /// bytes, `timeout` passes, or [`Waiter::close`] is called. Returns
    /// whether there is room; always false for a record larger than the
    /// ring's maximum.
    pub fn wait_outbound_room(&self, bytes: usize, timeout: Duration) -> bool {
        let ring = self.shared.outbound;
        if bytes > ring.max_record() {
            return false;
        }
        self.wait(
            timeout,
            ring.consumer_word(),
            || ring.prepare_wait_for_room(bytes),
            || ring.end_wait_for_room(),
            || ring.has_room(bytes),
        )
    }

    /// For shutdown: wakes every thread of this process waiting through this
    /// file, and makes every later wait return at once. Clones share it.
    pub fn close(&self) {
        let shared = &*self.shared;
        shared.closed.store(true, Ordering::SeqCst);
        // Changing the words a sleeper waits on makes a futex wait that is
        // about to start return at once; the words only ever signal "changed".
        for word in [
            shared.inbound.producer_word(),
            shared.outbound.consumer_word(),
        ] {
            word.fetch_add(1, Ordering::SeqCst);
            wake(word);
        }
    }

    /// Whether [`Waiter::close`] was called on this handle or a clone.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::SeqCst)
    }

    /// How full both rings are.
    pub fn occupancy(&self) -> Occupancy {
        let Shared {
            inbound, outbound, ..
        } = &*self.shared;
        Occupancy {
            inbound_used: inbound.used(),
            inbound_capacity: inbound.capacity(),
            outbound_used: outbound.used(),
            outbound_capacity: outbound.capacity(),
        }
    }

    fn wait_inbound_from(&self, after: Option<Cursor>, timeout: Duration) -> bool {
        let ring = self.shared.inbound;
        self.wait(
            timeout,
            ring.producer_word(),
            || ring.prepare_wait_for_data(after),
            || ring.end_wait_for_data(),
            || ring.has_data(after),
        )
    }

    /// The sleeping loop: `prepare` raises the flag and checks again (giving
    /// the seq value to sleep on), `end` lowers the flag, `ready` is the
    /// condition waited for.
    fn wait(
        &self,
        timeout: Duration,
        word: &AtomicU32,
        prepare: impl Fn() -> Option<u32>,
        end: impl Fn(),
        ready: impl Fn() -> bool,
    ) -> bool {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            let Some(seen) = prepare() else {
                return true;
            };
            // After `prepare`: `close` sets the flag before changing `word`,
            // so either it is seen here or the futex wait returns at once.
            let nap = match deadline {
                Some(deadline) => deadline.saturating_duration_since(Instant::now()),
                None => MAX_NAP,
            };
            if self.is_closed() || nap.is_zero() {
                end();
                return ready();
            }
            sleep(word, seen, nap.min(MAX_NAP));
            end();
        }
    }
}

/// Sleeps while `word` holds `seen`, at most `nap`. Returns early on a wake,
/// a change of the word, or a signal; the caller checks again.
fn sleep(word: &AtomicU32, seen: u32, nap: Duration) {
    let timeout = futex::Timespec::try_from(nap).ok();
    match futex::wait(word, futex::Flags::empty(), seen, timeout.as_ref()) {
        Ok(()) | Err(Errno::AGAIN | Errno::INTR | Errno::TIMEDOUT) => {}
        // Only an invalid address or a kernel without futexes gets here; fall
        // back to polling rather than spinning.
        Err(_) => std::thread::sleep(nap.min(Duration::from_millis(1))),
    }
}

/// Wakes whoever sleeps on `word`, in any process.
pub(crate) fn wake(word: &AtomicU32) {
    // FUTEX_WAKE fails only for an invalid address or operation, impossible
    // for a word of a live mapping; there is nothing to do about it anyway.
    let _ = futex::wake(word, futex::Flags::empty(), i32::MAX as u32);
}
