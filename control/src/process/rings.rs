//! The control side of the shards' ring files: one `RingFile` per shard
//! opened as `Role::Control`, encoded records queued per shard while a ring
//! is full, and two-phase reads of what the shards report.

use std::collections::VecDeque;
use std::path::Path;

use schema::records::{self, DownRecord, UpRecord};
use shm::{Cursor, RingError, RingFile, RingSize, Role, Waiter};

/// Why the rings could not be opened or read.
#[derive(Debug, thiserror::Error)]
pub enum RingsError {
    #[error("cannot create the ring directory {dir}: {source}")]
    Dir { dir: String, source: std::io::Error },
    #[error(transparent)]
    Open(#[from] shm::OpenError),
    #[error("ring of shard {shard}: {source}")]
    Ring { shard: usize, source: RingError },
}

/// The rings of every shard.
#[derive(Debug)]
pub struct Rings {
    files: Vec<RingFile>,
    /// Encoded records waiting for room, per shard.
    pending: Vec<VecDeque<Vec<u8>>>,
    buf: Vec<u8>,
}

impl Rings {
    /// Opens (creating) `dir/shard-N.ring` for `shards` shards; files that
    /// exist keep their ring size (see [`RingFile::open`]), which is logged.
    pub fn open(dir: &Path, shards: u16, size: RingSize) -> Result<Rings, RingsError> {
        std::fs::create_dir_all(dir).map_err(|source| RingsError::Dir {
            dir: dir.display().to_string(),
            source,
        })?;
        let files = (0..usize::from(shards))
            .map(|i| RingFile::open(&shm::ring_path(dir, i), size, Role::Control))
            .collect::<Result<Vec<_>, _>>()?;
        for file in &files {
            file.log_opened();
        }
        Ok(Rings {
            pending: vec![VecDeque::new(); files.len()],
            files,
            buf: Vec::new(),
        })
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// A waiter for shard `shard`'s file, for a blocking thread.
    pub fn waiter(&self, shard: usize) -> Waiter {
        self.files[shard].waiter()
    }

    /// Queues `record` for `shard` and pushes what fits.
    pub fn push(&mut self, shard: u16, record: &DownRecord) {
        let shard = usize::from(shard);
        let Some(pending) = self.pending.get_mut(shard) else {
            tracing::error!(shard, "record for a shard that does not exist: dropped");
            return;
        };
        pending.push_back(records::to_bytes(record).to_vec());
        self.drain(shard);
    }

    /// Pushes queued records of `shard` while they fit. Returns the size of
    /// the record waiting for room, if one is.
    pub fn drain(&mut self, shard: usize) -> Option<usize> {
        let file = &self.files[shard];
        let pending = &mut self.pending[shard];
        while let Some(front) = pending.front() {
            match file.push_and_wake(front) {
                Ok(()) => {}
                Err(RingError::Full) => return Some(front.len()),
                Err(e) => tracing::error!(shard, "record of {} bytes dropped: {e}", front.len()),
            }
            pending.pop_front();
        }
        None
    }

    /// Records queued for `shard` and not yet in its ring.
    pub fn pending(&self, shard: usize) -> usize {
        self.pending[shard].len()
    }

    /// Reads up to `max` records of `shard` without releasing them; release
    /// with [`Rings::release`] once they are processed. Unreadable records
    /// are reported and skipped.
    pub fn read_batch(
        &mut self,
        shard: usize,
        max: usize,
    ) -> Result<(Vec<UpRecord>, Option<Cursor>), RingsError> {
        let file = &self.files[shard];
        let mut out = Vec::new();
        let mut cursor = None;
        while out.len() < max {
            match file.inbound().read(cursor, &mut self.buf) {
                Ok(Some(c)) => {
                    cursor = Some(c);
                    match records::from_bytes::<UpRecord>(&self.buf) {
                        Ok(r) => out.push(r),
                        Err(e) => tracing::error!(shard, "unreadable record from the shard: {e}"),
                    }
                }
                Ok(None) => break,
                Err(source) => return Err(RingsError::Ring { shard, source }),
            }
        }
        Ok((out, cursor))
    }

    /// Releases what [`Rings::read_batch`] read.
    pub fn release(&self, shard: usize, cursor: Cursor) -> Result<(), RingsError> {
        self.files[shard]
            .release_and_wake(cursor)
            .map_err(|source| RingsError::Ring { shard, source })
    }
}
