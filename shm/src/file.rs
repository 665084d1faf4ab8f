//! Creating or attaching to a ring file and building its two rings.
//!
//! The file holds the "down" ring (control → shard) then the "up" ring
//! (shard → control), each [`HEADER_BYTES`] of header and a power of two of
//! data. Whichever process comes first creates and sizes it, and the rings'
//! headers record that size; the other process adopts it unless its size was
//! configured explicitly and differs, which is an error naming both. Both
//! may start at once: sizing and ring initialisation happen under an
//! exclusive `flock` on the file, and a file whose length does not match its
//! recorded size is refused, never truncated.

// `Ring::new` takes a raw pointer into the mapping and cannot check that it
// stays valid; this module owns the mapping and keeps it alive for as long as
// the rings and their `Signals`, which is what its contract asks.
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::time::Duration;

use hub_core::ring::{self, Cursor, GEOMETRY_BYTES, HEADER_BYTES, Ring, RingError};
use memmap2::{MmapOptions, MmapRaw};

use crate::wait::{Waiter, wake};
use crate::{Occupancy, RingSize, Role};

/// Why [`RingFile::open`] failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The requested ring size is unusable.
    #[error("ring size {ring_bytes} is not a power of two between 64 bytes and 1 GiB")]
    BadRingSize {
        /// The size asked for.
        ring_bytes: usize,
    },
    /// A system call on the file failed.
    #[error("{}: cannot {action}: {source}", path.display())]
    Io {
        /// The ring file.
        path: PathBuf,
        /// What was being done: "open", "lock", "size", "map", …
        action: &'static str,
        /// The system's answer.
        #[source]
        source: io::Error,
    },
    /// The file's length does not match the ring size its header records
    /// (or, for a file whose rings were never initialised, is no length two
    /// rings can have): not a ring file, or a damaged one.
    #[error(
        "{}: {len} bytes, expected {expected} for two rings of {ring_bytes} bytes; it is not a ring file or is damaged: delete it once both cloudcontrol and this shard's cloudhub are stopped",
        path.display()
    )]
    WrongSize {
        /// The ring file.
        path: PathBuf,
        /// Its length.
        len: u64,
        /// The length two rings of `ring_bytes` take.
        expected: u64,
        /// The ring size the file records.
        ring_bytes: usize,
    },
    /// The file holds rings of another size than the one configured
    /// explicitly for this process.
    #[error(
        "{}: the file holds rings of {file_bytes} bytes, made by the process that started first, but {process} is configured for {configured_bytes}; the size is set by cloudhub's `rings.ringBytes` (config file) or `--ring-bytes`, and by cloudcontrol's `ringBytes` (config file) or `--ring-bytes`: configure the same size in both, or leave it unset in one so that it adopts the file's, or delete the file once both are stopped",
        path.display()
    )]
    SizeConflict {
        /// The ring file.
        path: PathBuf,
        /// The ring size the file records.
        file_bytes: usize,
        /// The ring size configured for this process.
        configured_bytes: usize,
        /// This process: "cloudhub" or "cloudcontrol".
        process: &'static str,
    },
    /// The file has the right length but one half holds no ring of this
    /// version and size, or a corrupt one.
    #[error(
        "{}: the {half} ring is unusable ({source}); delete the file once both cloudcontrol and this shard's cloudhub are stopped",
        path.display()
    )]
    NotARing {
        /// The ring file.
        path: PathBuf,
        /// "down" or "up".
        half: &'static str,
        /// What the ring check found.
        #[source]
        source: RingError,
    },
}

/// Largest ring accepted: two of them must fit a mapping comfortably.
const MAX_RING_BYTES: usize = 1 << 30;

/// One process's end of a shard's ring file: the ring it consumes
/// ([`RingFile::inbound`]) and the one it produces into
/// ([`RingFile::outbound`]). Use [`RingFile::push_and_wake`],
/// [`RingFile::pop_and_wake`] and [`RingFile::release_and_wake`] so that a
/// sleeping peer is woken; hand [`RingFile::waiter`] to the thread that
/// sleeps. `Send`, not `Sync`, like [`Ring`].
///
/// Exactly one process per role may have the file open: the rings are
/// single-producer, single-consumer.
#[derive(Debug)]
pub struct RingFile {
    path: PathBuf,
    role: Role,
    /// The file existed: its ring size was adopted, not chosen.
    adopted: bool,
    inbound: Ring,
    outbound: Ring,
    /// Holds the mapping the rings point into.
    waiter: Waiter,
}

impl RingFile {
    /// Opens the ring file at `path` as `role`, creating it (mode 0600, the
    /// rings carry Secrets) if it does not exist, with two rings of
    /// `size.bytes()` data bytes each (a power of two, at least 64). An
    /// existing file keeps the size its header records: adopted for a
    /// [`RingSize::Default`], refused as [`OpenError::SizeConflict`] for a
    /// [`RingSize::Configured`] of another size ([`RingFile::adopted`] says
    /// which happened). Safe against the other process creating or opening
    /// it at the same moment.
    pub fn open(path: &Path, size: RingSize, role: Role) -> Result<RingFile, OpenError> {
        let wanted = size.bytes();
        if !usable(wanted as u64) {
            return Err(OpenError::BadRingSize { ring_bytes: wanted });
        }
        let io_error = |action| {
            move |source| OpenError::Io {
                path: path.to_owned(),
                action,
                source,
            }
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(io_error("open"))?;
        // Held until the rings are initialised (released explicitly: the
        // mapping keeps the open file, and with it the lock, alive): sizing
        // and ring initialisation happen once, whoever comes first.
        file.lock().map_err(io_error("lock"))?;
        let (ring_bytes, adopted) = settle_size(&file, path, size, role)?;
        let half = HEADER_BYTES + ring_bytes;
        let map = map(&file, half).map_err(io_error("map"))?;
        let base = NonNull::new(map.as_mut_ptr()).expect("a mapping is never at address 0");
        let not_a_ring = |half| {
            move |source| OpenError::NotARing {
                path: path.to_owned(),
                half,
                source,
            }
        };
        // SAFETY: `base .. base + 2 * half` is the mapping, readable and
        // writable, page-aligned (so 8-aligned), and stays mapped as long as
        // `map`, which `Waiter` holds and every `RingFile` and `Waiter` clone
        // keeps (the rings and their `Signals` never outlive both). The two
        // halves do not overlap. The mapping is only reached through rings:
        // this process's end of each and the other process's opposite end.
        let (down, up) = unsafe {
            (
                Ring::new(base, half).map_err(not_a_ring("down"))?,
                Ring::new(base.add(half), half).map_err(not_a_ring("up"))?,
            )
        };
        let (inbound, outbound) = match role {
            Role::Shard => (down, up),
            Role::Control => (up, down),
        };
        file.unlock().map_err(io_error("unlock"))?;
        let waiter = Waiter::new(map, inbound.signals(), outbound.signals());
        Ok(RingFile {
            path: path.to_owned(),
            role,
            adopted,
            inbound,
            outbound,
            waiter,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The role the file was opened as.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Data bytes of each of the two rings: the size this process created
    /// the file with, or the one it adopted.
    pub fn ring_bytes(&self) -> usize {
        self.inbound.capacity() as usize
    }

    /// Whether the file existed (made by the other process, or by an earlier
    /// run) and its ring size was adopted rather than chosen here.
    pub fn adopted(&self) -> bool {
        self.adopted
    }

    /// Logs whether the ring size was chosen here or adopted from the file.
    pub fn log_opened(&self) {
        let path = self.path().display();
        let ring_bytes = self.ring_bytes();
        if self.adopted {
            tracing::info!(%path, ring_bytes, "ring file exists: adopted its ring size");
        } else {
            tracing::info!(%path, ring_bytes, "ring file created");
        }
    }

    /// The ring this process consumes ("up" for control, "down" for a
    /// shard). Reading through it directly is fine; release with
    /// [`RingFile::release_and_wake`] so a producer waiting for room wakes.
    pub fn inbound(&self) -> &Ring {
        &self.inbound
    }

    /// The ring this process produces into. Push with
    /// [`RingFile::push_and_wake`] so a sleeping consumer wakes.
    pub fn outbound(&self) -> &Ring {
        &self.outbound
    }

    /// Pushes `record` into the outbound ring, then wakes the consumer if it
    /// sleeps. [`RingError::Full`] means: wait for room and retry.
    pub fn push_and_wake(&self, record: &[u8]) -> Result<(), RingError> {
        self.outbound.push(record)?;
        self.wake_consumer();
        Ok(())
    }

    /// Wakes the consumer of the outbound ring if it sleeps: after records
    /// pushed with [`Ring::push`] through [`RingFile::outbound`], so that a
    /// burst of records wakes it once rather than once per record.
    pub fn wake_consumer(&self) {
        let signals = self.outbound.signals();
        if signals.consumer_needs_wake() {
            wake(signals.producer_word());
        }
    }

    /// Takes the oldest inbound record into `out` and releases it, then wakes
    /// the producer if it sleeps for room. `Ok(false)`: the ring is empty.
    pub fn pop_and_wake(&self, out: &mut Vec<u8>) -> Result<bool, RingError> {
        let popped = self.inbound.pop(out)?;
        if popped {
            self.wake_producer();
        }
        Ok(popped)
    }

    /// Releases inbound records up to `cursor` (see [`Ring::read`]), then
    /// wakes the producer if it sleeps for room.
    pub fn release_and_wake(&self, cursor: Cursor) -> Result<(), RingError> {
        self.inbound.release(cursor)?;
        self.wake_producer();
        Ok(())
    }

    /// A handle for the thread that sleeps until a ring has data or room.
    pub fn waiter(&self) -> Waiter {
        self.waiter.clone()
    }

    /// [`Waiter::wait_inbound`], on this thread.
    pub fn wait_inbound(&self, timeout: Duration) -> bool {
        self.waiter.wait_inbound(timeout)
    }

    /// [`Waiter::wait_outbound_room`], on this thread.
    pub fn wait_outbound_room(&self, bytes: usize, timeout: Duration) -> bool {
        self.waiter.wait_outbound_room(bytes, timeout)
    }

    /// How full both rings are.
    pub fn occupancy(&self) -> Occupancy {
        self.waiter.occupancy()
    }

    fn wake_producer(&self) {
        let signals = self.inbound.signals();
        if signals.producer_needs_wake() {
            wake(signals.consumer_word());
        }
    }
}

/// Under the file's lock: sizes an empty file for `size`, or reads the ring
/// size an existing one records and holds it against a configured `size`.
/// Returns the ring size and whether it was adopted from the file.
fn settle_size(
    file: &File,
    path: &Path,
    size: RingSize,
    role: Role,
) -> Result<(usize, bool), OpenError> {
    let io_error = |action| {
        move |source| OpenError::Io {
            path: path.to_owned(),
            action,
            source,
        }
    };
    let two_rings = |ring_bytes| 2 * (HEADER_BYTES + ring_bytes) as u64;
    let len = file
        .metadata()
        .map_err(io_error("read the length of"))?
        .len();
    if len == 0 {
        file.set_len(two_rings(size.bytes()))
            .map_err(io_error("size"))?;
        return Ok((size.bytes(), false));
    }
    let recorded = recorded_ring_bytes(file, path, len, size.bytes())?;
    if let RingSize::Configured(configured) = size
        && configured != recorded
    {
        return Err(OpenError::SizeConflict {
            path: path.to_owned(),
            file_bytes: recorded,
            configured_bytes: configured,
            process: role.process(),
        });
    }
    if len != two_rings(recorded) {
        return Err(OpenError::WrongSize {
            path: path.to_owned(),
            len,
            expected: two_rings(recorded),
            ring_bytes: recorded,
        });
    }
    Ok((recorded, true))
}

/// The ring size an existing file of `len` bytes records: the capacity in
/// its "down" ring's header or, when its creator died before initialising
/// the rings (header still zero), the size its length implies.
fn recorded_ring_bytes(
    file: &File,
    path: &Path,
    len: u64,
    wanted: usize,
) -> Result<usize, OpenError> {
    let mut header = [0u8; GEOMETRY_BYTES];
    if len >= GEOMETRY_BYTES as u64 {
        file.read_exact_at(&mut header, 0)
            .map_err(|source| OpenError::Io {
                path: path.to_owned(),
                action: "read the header of",
                source,
            })?;
    }
    let recorded = ring::recorded_capacity(&header).map_err(|source| OpenError::NotARing {
        path: path.to_owned(),
        half: "down",
        source,
    })?;
    let bytes = recorded.unwrap_or_else(|| (len / 2).saturating_sub(HEADER_BYTES as u64));
    if usable(bytes) {
        return Ok(bytes as usize);
    }
    // No size two rings can have: report it against the size asked for.
    let ring_bytes = recorded.map_or(wanted, |b| b as usize);
    Err(OpenError::WrongSize {
        path: path.to_owned(),
        len,
        expected: 2 * (HEADER_BYTES + ring_bytes) as u64,
        ring_bytes,
    })
}

/// Whether `ring_bytes` is a ring size this crate maps.
fn usable(ring_bytes: u64) -> bool {
    ring_bytes.is_power_of_two() && (64..=MAX_RING_BYTES as u64).contains(&ring_bytes)
}

/// Maps both halves of `file` shared, read-write.
fn map(file: &File, half: usize) -> io::Result<MmapRaw> {
    MmapOptions::new().len(2 * half).map_raw(file)
}
