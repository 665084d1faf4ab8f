//! A single-producer, single-consumer byte ring in memory shared between two
//! processes (`cloudcontrol` and one `cloudhub` shard).
//!
//! The glue maps a file (memmap2) and hands the mapping to [`Ring::new`];
//! this module never opens or maps anything. Records are byte strings (rkyv
//! [`schema::records::RingRecord`]s in practice), copied in by the producer
//! and copied out by the consumer: no syscall while data flows.
//!
//! # Layout
//!
//! ```text
//! 0    magic u64 | version u32 | 0 u32 | capacity u64        (written once)
//! 64   tail: AtomicU64   total bytes published by the producer
//! 128  head: AtomicU64   total bytes released by the consumer
//! 192  producer_seq, consumer_seq: AtomicU32 (wake-up words for the glue)
//! 256  data: capacity bytes (a power of two, multiple of 8)
//! ```
//!
//! A record is an 8-byte header (`len: u32`, `0: u32`) and `len` bytes padded
//! to 8. A record never wraps: when it does not fit before the end of the
//! data area, the producer writes a pad header (`len = u32::MAX`) and starts
//! again at offset 0.
//!
//! # Restarts
//!
//! Both counters live in the shared memory, so either side can restart and
//! continue where the other left it: a producer that dies mid-write never
//! published the record (the tail did not move); a consumer releases a record
//! only after it has taken it ([`Ring::pop`]), so a record is delivered once
//! unless the consumer dies between taking and releasing it, in which case
//! whatever it took died with it.
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

use std::fmt;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// "APRING01" little-endian.
const MAGIC: u64 = u64::from_le_bytes(*b"APRING01");
const VERSION: u32 = 1;
/// Bytes before the data area.
pub const HEADER_BYTES: usize = 256;
const TAIL: usize = 64;
const HEAD: usize = 128;
const PRODUCER_SEQ: usize = 192;
const CONSUMER_SEQ: usize = 196;
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
    /// The shared header or a record header is inconsistent.
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

/// One end's view of a shared ring. A ring has exactly one producer and one
/// consumer at a time; each end creates its own `Ring` over the same region.
#[derive(Debug)]
pub struct Ring {
    base: NonNull<u8>,
    capacity: u64,
}

// SAFETY: a `Ring` only holds a pointer to shared memory that all access goes
// through atomics or through byte copies of regions the protocol gives to one
// side at a time; moving it to another thread changes nothing.
unsafe impl Send for Ring {}

impl Ring {
    /// Views `len` bytes at `ptr` as a ring, initialising it if it holds none
    /// yet (all zeros) and checking it if it does.
    ///
    /// # Safety
    ///
    /// `ptr` must be valid for reads and writes of `len` bytes, 8-byte
    /// aligned, for as long as the `Ring` lives; the memory may be shared with
    /// one other `Ring` (in this or another process) acting as the other end,
    /// and with nothing else that writes to it.
    pub unsafe fn new(ptr: NonNull<u8>, len: usize) -> Result<Self, RingError> {
        let data = len.saturating_sub(HEADER_BYTES);
        if !(ptr.as_ptr() as usize).is_multiple_of(8) || data < 64 || !data.is_power_of_two() {
            return Err(RingError::BadRegion { len });
        }
        let ring = Ring {
            base: ptr,
            capacity: data as u64,
        };
        let magic = ring.word(0);
        // The first 16 bytes are written once, before either counter moves;
        // a racing second initialiser writes the same values.
        match magic.load(Ordering::Acquire) {
            0 => {
                ring.word(16).store(ring.capacity, Ordering::Relaxed);
                ring.word(8).store(u64::from(VERSION), Ordering::Relaxed);
                magic.store(MAGIC, Ordering::Release);
            }
            MAGIC => {
                let version = ring.word(8).load(Ordering::Relaxed);
                let capacity = ring.word(16).load(Ordering::Relaxed);
                if version != u64::from(VERSION) || capacity != ring.capacity {
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

    /// Largest record the ring can hold.
    pub fn max_record(&self) -> usize {
        (self.capacity / 2 - RECORD_HEADER) as usize
    }

    /// Bytes published and not yet released.
    pub fn used(&self) -> u64 {
        let tail = self.word(TAIL).load(Ordering::Acquire);
        let head = self.word(HEAD).load(Ordering::Acquire);
        tail.wrapping_sub(head)
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
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
        if used > self.capacity || !tail.is_multiple_of(8) {
            return Err(self.corrupt(format!("head {head} is past tail {tail}")));
        }
        let size = RECORD_HEADER + padded(record.len() as u64);
        let offset = tail % self.capacity;
        let to_end = self.capacity - offset;
        let pad = if size > to_end { to_end } else { 0 };
        if used + pad + size > self.capacity {
            return Err(RingError::Full);
        }
        if pad > 0 {
            self.write_header(offset, PAD);
        }
        let at = (tail + pad) % self.capacity;
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
        self.seq(PRODUCER_SEQ).fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// Consumer: copies the oldest record into `out` (replacing its contents)
    /// and releases it. Returns `Ok(false)` when the ring is empty.
    pub fn pop(&self, out: &mut Vec<u8>) -> Result<bool, RingError> {
        let mut head = self.word(HEAD).load(Ordering::Relaxed);
        let tail = self.word(TAIL).load(Ordering::Acquire);
        if !head.is_multiple_of(8) {
            return Err(self.corrupt(format!("head {head} is not 8-aligned")));
        }
        loop {
            let available = tail.wrapping_sub(head);
            if available == 0 {
                return Ok(false);
            }
            if available > self.capacity || available < RECORD_HEADER {
                return Err(self.corrupt(format!("head {head}, tail {tail}")));
            }
            let offset = head % self.capacity;
            let len = self.read_header(offset);
            if len == PAD {
                // Skip to the start of the data area.
                head += self.capacity - offset;
                continue;
            }
            let size = RECORD_HEADER + padded(u64::from(len));
            if size > available || offset + size > self.capacity {
                return Err(self.corrupt(format!("record of {len} bytes at {head}")));
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
            self.word(HEAD).store(head + size, Ordering::Release);
            self.seq(CONSUMER_SEQ).fetch_add(1, Ordering::Release);
            return Ok(true);
        }
    }

    /// The word the glue waits on (futex) while the ring is empty: it changes
    /// every time the producer publishes.
    pub fn producer_word(&self) -> &AtomicU32 {
        self.seq(PRODUCER_SEQ)
    }

    /// The word the glue waits on while the ring is full: it changes every
    /// time the consumer releases.
    pub fn consumer_word(&self) -> &AtomicU32 {
        self.seq(CONSUMER_SEQ)
    }

    fn check_counters(&self) -> Result<(), RingError> {
        let tail = self.word(TAIL).load(Ordering::Acquire);
        let head = self.word(HEAD).load(Ordering::Acquire);
        if tail.wrapping_sub(head) > self.capacity
            || !head.is_multiple_of(8)
            || !tail.is_multiple_of(8)
        {
            return Err(self.corrupt(format!("head {head}, tail {tail}")));
        }
        Ok(())
    }

    fn corrupt(&self, detail: String) -> RingError {
        RingError::Corrupt { detail }
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

    /// Pointer to byte `offset` of the data area.
    fn data(&self, offset: u64) -> *mut u8 {
        debug_assert!(offset <= self.capacity);
        // SAFETY: the offset is within the data area (callers check), which
        // starts `HEADER_BYTES` into the region.
        unsafe { self.base.as_ptr().add(HEADER_BYTES + offset as usize) }
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

fn padded(len: u64) -> u64 {
    len.div_ceil(8) * 8
}

#[cfg(test)]
mod tests;
