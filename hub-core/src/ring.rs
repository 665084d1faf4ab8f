//! A single-producer, single-consumer byte ring in memory shared between two
//! processes (`cloudcontrol` and one `cloudhub` shard).
//!
//! The glue maps a file (memmap2) and hands the mapping to [`Ring::new`];
//! this module never opens or maps anything, and never sleeps. Records are
//! byte strings (rkyv [`schema::records::DownRecord`]s and
//! [`schema::records::UpRecord`]s in practice), copied in
//! by the producer and copied out by the consumer: no syscall while data
//! flows.
//!
//! # Layout
//!
//! ```text
//! 0    magic u64 | version u32 | 0 u32 | capacity u64        (written once)
//! 64   tail: AtomicU64   total bytes published by the producer
//! 128  head: AtomicU64   total bytes released by the consumer
//! 192  producer_seq, consumer_seq: AtomicU32 (change on every publish/release)
//! 200  consumer_sleeping, producer_sleeping: AtomicU32 (wake-up flags, 0 or 1)
//! 256  data: capacity bytes (a power of two, multiple of 8)
//! ```
//!
//! A record is an 8-byte header (`len: u32`, `0: u32`) and `len` bytes padded
//! to 8. A record never wraps: when it does not fit before the end of the
//! data area, the producer writes a pad header (`len = u32::MAX`) and starts
//! again at offset 0.
//!
//! The first [`GEOMETRY_BYTES`] record the ring's geometry: a process that
//! attaches to a ring another one made reads its capacity there
//! ([`recorded_capacity`]) instead of trusting its own copy of the size.
//!
//! # Consuming in two phases
//!
//! [`Ring::read`] copies a record out without releasing it and returns a
//! [`Cursor`] just past it; reading on from that cursor gives the next record.
//! [`Ring::release`] then frees everything up to a cursor. A consumer that
//! releases only what it has finished processing loses nothing when it dies:
//! the next consumer reads the unreleased records again. [`Ring::pop`] is a
//! read and a release in one.
//!
//! # Restarts
//!
//! Both counters live in the shared memory, so either side can restart and
//! continue where the other left it: a producer that dies mid-write never
//! published the record (the tail did not move); records read but not
//! released are read again by the next consumer.
//!
//! # Waiting
//!
//! The ring never blocks; the glue sleeps on a futex when the ring is empty
//! (consumer) or full (producer), through a [`Signals`] handle whose
//! `prepare_wait_*`, `end_wait_*` and `*_needs_wake` methods carry out this
//! protocol (Dekker-style, so that nobody makes a syscall while both sides
//! are busy):
//!
//! - The sleeper loads the seq word it will wait on (`producer_seq` to wait
//!   for data, `consumer_seq` to wait for room), sets its flag
//!   (`consumer_sleeping` or `producer_sleeping`) to 1, issues a `SeqCst`
//!   fence and checks the ring again. If there is still nothing to do it
//!   futex-waits on the seq word with the value it loaded *before* that check
//!   (a publish in between changed the word, so the wait returns at once).
//!   Awake, it sets its flag back to 0.
//! - The waker publishes (push, or release), issues a `SeqCst` fence, loads
//!   the other side's flag and futex-wakes the seq word only if the flag is
//!   set.
//!
//! The two fences guarantee that the sleeper sees the publish or the waker
//! sees the flag. Each flag has one sleeper at a time (the one consumer or the
//! one producer of the ring).
//!
//! # Trust
//!
//! The other process may be buggy. Every header read from the ring is checked
//! against the capacity and the published tail; a bad one is reported as
//! [`RingError::Corrupt`] and nothing is read out of bounds.

// The ring reads and writes memory shared with another process through raw
// pointers and atomics at fixed offsets; that cannot be expressed without
// `unsafe`. Every `unsafe` block is in this module, next to its argument, and
// the tests run under Miri (see the module tests).
#![allow(unsafe_code)]

use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};

/// "APRING01" little-endian.
const MAGIC: u64 = u64::from_le_bytes(*b"APRING01");
const VERSION: u32 = 1;
/// Bytes before the data area.
pub const HEADER_BYTES: usize = 256;
/// Bytes at the start of the header that record the ring's geometry:
/// magic, version and capacity.
pub const GEOMETRY_BYTES: usize = 24;
const TAIL: usize = 64;
const HEAD: usize = 128;
const PRODUCER_SEQ: usize = 192;
const CONSUMER_SEQ: usize = 196;
const CONSUMER_SLEEPING: usize = 200;
const PRODUCER_SLEEPING: usize = 204;
const RECORD_HEADER: u64 = 8;
const PAD: u32 = u32::MAX;

/// Why a ring could not be set up or used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RingError {
    /// The region is too small, misaligned, or its data area is not a power
    /// of two of at least 64 bytes.
    BadRegion { len: usize },
    /// The region holds a ring of another version or capacity.
    Mismatch { detail: String },
    /// The record is larger than the ring can ever hold.
    TooLarge { len: usize, max: usize },
    /// The ring has no room now; try again after the consumer catches up.
    Full,
    /// The shared header or a record header is inconsistent, or a cursor
    /// handed in does not lie between the head and the tail.
    Corrupt { detail: String },
}

impl fmt::Display for RingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadRegion { len } => write!(
                f,
                "a ring needs an 8-byte aligned region of {HEADER_BYTES} bytes plus a power of two of at least 64; got {len} bytes"
            ),
            Self::Mismatch { detail } => write!(f, "the region holds another ring: {detail}"),
            Self::TooLarge { len, max } => {
                write!(
                    f,
                    "record of {len} bytes exceeds the ring's maximum of {max}"
                )
            }
            Self::Full => f.write_str("ring full"),
            Self::Corrupt { detail } => write!(f, "ring corrupt: {detail}"),
        }
    }
}

impl std::error::Error for RingError {}

/// The data capacity recorded in the first [`GEOMETRY_BYTES`] of a ring's
/// header (read from a file, say, before it is mapped): `Ok(None)` when no
/// ring was initialised there yet (magic 0), [`RingError::Mismatch`] for
/// another magic or version, or a capacity no ring can have.
pub fn recorded_capacity(header: &[u8; GEOMETRY_BYTES]) -> Result<Option<u64>, RingError> {
    let word = |at: usize| {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&header[at..at + 8]);
        u64::from_le_bytes(bytes)
    };
    let (magic, version, capacity) = (word(0), word(8), word(16));
    if magic == 0 {
        return Ok(None);
    }
    if magic != MAGIC {
        return Err(RingError::Mismatch {
            detail: format!("magic {magic:#018x}"),
        });
    }
    if version != u64::from(VERSION) || capacity < 64 || !capacity.is_power_of_two() {
        return Err(RingError::Mismatch {
            detail: format!("version {version}, capacity {capacity}"),
        });
    }
    Ok(Some(capacity))
}

/// The ring position just past a record the consumer has read: pass it to
/// [`Ring::read`] to read the record after it, or to [`Ring::release`] to
/// release everything up to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cursor(u64);

/// One end's view of a shared ring. A ring has exactly one producer and one
/// consumer at a time; each end creates its own `Ring` over the same region.
/// A `Ring` may move to another thread but not be shared between threads
/// (`Send`, not `Sync`); a thread that only waits uses [`Ring::signals`].
#[derive(Debug)]
pub struct Ring {
    signals: Signals,
    /// Two threads pushing (or popping) through one `Ring` would race on the
    /// data area.
    not_sync: PhantomData<Cell<()>>,
}

/// The atomic words of a ring's header — counters, seq words and wake-up
/// flags — without access to the data area: what a thread that waits for
/// the ring, or reports its occupancy, needs. `Copy`, `Send` and `Sync`.
#[derive(Debug, Clone, Copy)]
pub struct Signals {
    base: NonNull<u8>,
    capacity: u64,
}

// SAFETY: a `Signals` only reaches the header's atomic words (the data area is
// reached through `Ring`, which is not `Sync`); atomics may be used from any
// number of threads. The memory stays valid by `Ring::new`'s contract.
unsafe impl Send for Signals {}
// SAFETY: as above.
unsafe impl Sync for Signals {}

impl Ring {
    /// Views `len` bytes at `ptr` as a ring, initialising it if it holds none
    /// yet (all zeros) and checking it if it does.
    ///
    /// # Safety
    ///
    /// `ptr` must be valid for reads and writes of `len` bytes, 8-byte
    /// aligned, for as long as the `Ring` or any [`Signals`] taken from it
    /// lives; the memory may be shared with one other `Ring` (in this or
    /// another process) acting as the other end, and with nothing else that
    /// writes to it.
    pub unsafe fn new(ptr: NonNull<u8>, len: usize) -> Result<Self, RingError> {
        let data = len.saturating_sub(HEADER_BYTES);
        if !(ptr.as_ptr() as usize).is_multiple_of(8) || data < 64 || !data.is_power_of_two() {
            return Err(RingError::BadRegion { len });
        }
        let ring = Ring {
            signals: Signals {
                base: ptr,
                capacity: data as u64,
            },
            not_sync: PhantomData,
        };
        let magic = ring.word(0);
        // The first 16 bytes are written once, before either counter moves;
        // a racing second initialiser writes the same values.
        match magic.load(Ordering::Acquire) {
            0 => {
                ring.word(16).store(ring.capacity(), Ordering::Relaxed);
                ring.word(8).store(u64::from(VERSION), Ordering::Relaxed);
                magic.store(MAGIC, Ordering::Release);
            }
            MAGIC => {
                let version = ring.word(8).load(Ordering::Relaxed);
                let capacity = ring.word(16).load(Ordering::Relaxed);
                if version != u64::from(VERSION) || capacity != ring.capacity() {
                    return Err(RingError::Mismatch {
                        detail: format!("version {version}, capacity {capacity}"),
                    });
                }
            }
            other => {
                return Err(RingError::Mismatch {
                    detail: format!("magic {other:#018x}"),
                });
            }
        }
        ring.check_counters()?;
        Ok(ring)
    }

    /// The header words of this ring, for a thread that waits for it or
    /// reports its occupancy. Valid as long as the region is (see
    /// [`Ring::new`]).
    pub fn signals(&self) -> Signals {
        self.signals
    }

    /// Largest record the ring can hold.
    pub fn max_record(&self) -> usize {
        self.signals.max_record()
    }

    /// Bytes published and not yet released.
    pub fn used(&self) -> u64 {
        self.signals.used()
    }

    /// Size of the data area in bytes.
    pub fn capacity(&self) -> u64 {
        self.signals.capacity
    }

    /// Producer: copies `record` into the ring and publishes it.
    pub fn push(&self, record: &[u8]) -> Result<(), RingError> {
        let max = self.max_record();
        if record.len() > max {
            return Err(RingError::TooLarge {
                len: record.len(),
                max,
            });
        }
        let tail = self.word(TAIL).load(Ordering::Relaxed);
        let head = self.word(HEAD).load(Ordering::Acquire);
        let used = tail.wrapping_sub(head);
        if used > self.capacity() || !tail.is_multiple_of(8) {
            return Err(corrupt(format!("head {head} is past tail {tail}")));
        }
        let (pad, size) = self.signals.space_at(tail, record.len());
        if used + pad + size > self.capacity() {
            return Err(RingError::Full);
        }
        let offset = tail % self.capacity();
        if pad > 0 {
            self.write_header(offset, PAD);
        }
        let at = (tail + pad) % self.capacity();
        self.write_header(at, record.len() as u32);
        // SAFETY: `at + 8 .. at + size` lies inside the data area (a record
        // never wraps) and in the free part of the ring, which only the
        // producer touches until the tail is published below.
        unsafe {
            std::ptr::copy_nonoverlapping(
                record.as_ptr(),
                self.data(at + RECORD_HEADER),
                record.len(),
            );
        }
        self.word(TAIL).store(tail + pad + size, Ordering::Release);
        self.producer_word().fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// Consumer: copies the oldest unreleased record (`from` = `None`), or the
    /// record after `from`, into `out` (replacing its contents) without
    /// releasing it. Returns the cursor just past that record, or `None` when
    /// there is no such record yet. A `from` outside head..=tail (released
    /// already, or never read) is reported as [`RingError::Corrupt`].
    pub fn read(
        &self,
        from: Option<Cursor>,
        out: &mut Vec<u8>,
    ) -> Result<Option<Cursor>, RingError> {
        let head = self.word(HEAD).load(Ordering::Relaxed);
        let tail = self.word(TAIL).load(Ordering::Acquire);
        if tail.wrapping_sub(head) > self.capacity() || !head.is_multiple_of(8) {
            return Err(corrupt(format!("head {head}, tail {tail}")));
        }
        let mut at = match from {
            None => head,
            Some(Cursor(at)) => {
                if at.wrapping_sub(head) > tail.wrapping_sub(head) || !at.is_multiple_of(8) {
                    return Err(corrupt(format!(
                        "cursor {at} is outside head {head} ..= tail {tail}"
                    )));
                }
                at
            }
        };
        loop {
            let available = tail.wrapping_sub(at);
            if available == 0 {
                return Ok(None);
            }
            if available < RECORD_HEADER {
                return Err(corrupt(format!("position {at}, tail {tail}")));
            }
            let offset = at % self.capacity();
            let len = self.read_header(offset);
            if len == PAD {
                // Skip to the start of the data area.
                at += self.capacity() - offset;
                continue;
            }
            let size = RECORD_HEADER + padded(u64::from(len));
            if size > available || offset + size > self.capacity() {
                return Err(corrupt(format!("record of {len} bytes at {at}")));
            }
            out.clear();
            out.reserve(len as usize);
            // SAFETY: the record lies inside the data area and before the
            // published tail (checked above); the producer does not write
            // there until the head moves past it. `out` has `len` bytes of
            // capacity.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    self.data(offset + RECORD_HEADER),
                    out.as_mut_ptr(),
                    len as usize,
                );
                out.set_len(len as usize);
            }
            return Ok(Some(Cursor(at + size)));
        }
    }

    /// Consumer: releases every record up to `cursor` (from [`Ring::read`]),
    /// giving its room back to the producer. A cursor that is not ahead of
    /// the head, or is past the tail, is reported as [`RingError::Corrupt`].
    pub fn release(&self, cursor: Cursor) -> Result<(), RingError> {
        let head = self.word(HEAD).load(Ordering::Relaxed);
        let tail = self.word(TAIL).load(Ordering::Acquire);
        let ahead = cursor.0.wrapping_sub(head);
        if ahead == 0 || ahead > tail.wrapping_sub(head) || !cursor.0.is_multiple_of(8) {
            return Err(corrupt(format!(
                "release to {} with head {head}, tail {tail}",
                cursor.0
            )));
        }
        self.word(HEAD).store(cursor.0, Ordering::Release);
        self.consumer_word().fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// Consumer: copies the oldest record into `out` (replacing its contents)
    /// and releases it. Returns `Ok(false)` when the ring is empty.
    pub fn pop(&self, out: &mut Vec<u8>) -> Result<bool, RingError> {
        match self.read(None, out)? {
            Some(cursor) => self.release(cursor).map(|()| true),
            None => Ok(false),
        }
    }

    /// The word a consumer waits on (futex) while the ring is empty: it
    /// changes every time the producer publishes.
    pub fn producer_word(&self) -> &AtomicU32 {
        self.signals.producer_word()
    }

    /// The word a producer waits on while the ring is full: it changes every
    /// time the consumer releases.
    pub fn consumer_word(&self) -> &AtomicU32 {
        self.signals.consumer_word()
    }

    fn check_counters(&self) -> Result<(), RingError> {
        let tail = self.word(TAIL).load(Ordering::Acquire);
        let head = self.word(HEAD).load(Ordering::Acquire);
        if tail.wrapping_sub(head) > self.capacity()
            || !head.is_multiple_of(8)
            || !tail.is_multiple_of(8)
        {
            return Err(corrupt(format!("head {head}, tail {tail}")));
        }
        Ok(())
    }

    fn word(&self, offset: usize) -> &AtomicU64 {
        self.signals.word(offset)
    }

    /// Pointer to byte `offset` of the data area.
    fn data(&self, offset: u64) -> *mut u8 {
        debug_assert!(offset <= self.capacity());
        // SAFETY: the offset is within the data area (callers check), which
        // starts `HEADER_BYTES` into the region.
        unsafe {
            self.signals
                .base
                .as_ptr()
                .add(HEADER_BYTES + offset as usize)
        }
    }

    fn write_header(&self, offset: u64, len: u32) {
        let mut header = [0u8; 8];
        header[..4].copy_from_slice(&len.to_le_bytes());
        // SAFETY: record headers are 8-aligned and at least 8 bytes from the
        // end of the data area (capacity and offsets are multiples of 8), in
        // the part of the ring only the producer writes.
        unsafe { std::ptr::copy_nonoverlapping(header.as_ptr(), self.data(offset), 8) }
    }

    fn read_header(&self, offset: u64) -> u32 {
        let mut header = [0u8; 4];
        // SAFETY: as for `write_header`, in the published part of the ring.
        unsafe { std::ptr::copy_nonoverlapping(self.data(offset), header.as_mut_ptr(), 4) }
        u32::from_le_bytes(header)
    }
}

impl Signals {
    /// Size of the data area in bytes.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Bytes published and not yet released.
    pub fn used(&self) -> u64 {
        let tail = self.word(TAIL).load(Ordering::Acquire);
        let head = self.word(HEAD).load(Ordering::Acquire);
        tail.wrapping_sub(head)
    }

    /// Largest record the ring can hold.
    pub fn max_record(&self) -> usize {
        (self.capacity / 2 - RECORD_HEADER) as usize
    }

    /// Whether a record is published after `after` (after the head for
    /// `None`): what a consumer waits for.
    pub fn has_data(&self, after: Option<Cursor>) -> bool {
        let tail = self.word(TAIL).load(Ordering::Acquire);
        let from = match after {
            Some(Cursor(at)) => at,
            None => self.word(HEAD).load(Ordering::Acquire),
        };
        tail != from
    }

    /// Whether a record of `len` bytes would fit now: what a producer waits
    /// for. Always false for a record over [`Signals::max_record`].
    pub fn has_room(&self, len: usize) -> bool {
        if len > self.max_record() {
            return false;
        }
        let tail = self.word(TAIL).load(Ordering::Acquire);
        let head = self.word(HEAD).load(Ordering::Acquire);
        let (pad, size) = self.space_at(tail, len);
        tail.wrapping_sub(head)
            .checked_add(pad + size)
            .is_some_and(|need| need <= self.capacity)
    }

    /// Changes every time the producer publishes: the word a consumer
    /// futex-waits on.
    pub fn producer_word(&self) -> &AtomicU32 {
        self.seq(PRODUCER_SEQ)
    }

    /// Changes every time the consumer releases: the word a producer
    /// futex-waits on.
    pub fn consumer_word(&self) -> &AtomicU32 {
        self.seq(CONSUMER_SEQ)
    }

    /// 1 while the consumer is (about to be) asleep waiting for data; the
    /// producer wakes it after a push only then. See "Waiting" above.
    pub fn consumer_sleeping(&self) -> &AtomicU32 {
        self.seq(CONSUMER_SLEEPING)
    }

    /// 1 while the producer is (about to be) asleep waiting for room; the
    /// consumer wakes it after a release only then.
    pub fn producer_sleeping(&self) -> &AtomicU32 {
        self.seq(PRODUCER_SLEEPING)
    }

    /// Consumer about to sleep for data after `after` (after the head for
    /// `None`): raises `consumer_sleeping` and checks again. Returns the value
    /// of [`Signals::producer_word`] to futex-wait on, or `None` (flag
    /// lowered) when data is there. Call [`Signals::end_wait_for_data`] after
    /// the wait.
    pub fn prepare_wait_for_data(&self, after: Option<Cursor>) -> Option<u32> {
        let seen = self.producer_word().load(Ordering::Acquire);
        self.consumer_sleeping().store(1, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        if self.has_data(after) {
            self.end_wait_for_data();
            return None;
        }
        Some(seen)
    }

    /// Consumer awake again: lowers `consumer_sleeping`.
    pub fn end_wait_for_data(&self) {
        self.consumer_sleeping().store(0, Ordering::Relaxed);
    }

    /// Producer, after a push: whether the consumer sleeps (or is about to)
    /// and must be woken on [`Signals::producer_word`].
    pub fn consumer_needs_wake(&self) -> bool {
        fence(Ordering::SeqCst);
        self.consumer_sleeping().load(Ordering::Relaxed) != 0
    }

    /// Producer about to sleep for room for a record of `len` bytes: as
    /// [`Signals::prepare_wait_for_data`], with `producer_sleeping` and
    /// [`Signals::consumer_word`]. Call [`Signals::end_wait_for_room`] after
    /// the wait.
    pub fn prepare_wait_for_room(&self, len: usize) -> Option<u32> {
        let seen = self.consumer_word().load(Ordering::Acquire);
        self.producer_sleeping().store(1, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        if self.has_room(len) {
            self.end_wait_for_room();
            return None;
        }
        Some(seen)
    }

    /// Producer awake again: lowers `producer_sleeping`.
    pub fn end_wait_for_room(&self) {
        self.producer_sleeping().store(0, Ordering::Relaxed);
    }

    /// Consumer, after a release: whether the producer sleeps (or is about
    /// to) and must be woken on [`Signals::consumer_word`].
    pub fn producer_needs_wake(&self) -> bool {
        fence(Ordering::SeqCst);
        self.producer_sleeping().load(Ordering::Relaxed) != 0
    }

    /// Bytes of padding and of record a push of `len` bytes at `tail` takes.
    fn space_at(&self, tail: u64, len: usize) -> (u64, u64) {
        let size = RECORD_HEADER + padded(len as u64);
        let to_end = self.capacity - tail % self.capacity;
        let pad = if size > to_end { to_end } else { 0 };
        (pad, size)
    }

    fn word(&self, offset: usize) -> &AtomicU64 {
        debug_assert!(offset + 8 <= HEADER_BYTES && offset.is_multiple_of(8));
        // SAFETY: `offset` is one of this module's header constants, inside
        // the region and 8-aligned (the region is 8-aligned); the memory is
        // only ever accessed as this atomic by both ends.
        unsafe { &*self.base.as_ptr().add(offset).cast::<AtomicU64>() }
    }

    fn seq(&self, offset: usize) -> &AtomicU32 {
        debug_assert!(offset + 4 <= HEADER_BYTES && offset.is_multiple_of(4));
        // SAFETY: as for `word`, with 4-byte alignment.
        unsafe { &*self.base.as_ptr().add(offset).cast::<AtomicU32>() }
    }
}

fn corrupt(detail: String) -> RingError {
    RingError::Corrupt { detail }
}

fn padded(len: u64) -> u64 {
    len.div_ceil(8) * 8
}

#[cfg(test)]
mod tests;
