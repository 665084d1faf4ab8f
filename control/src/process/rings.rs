//! The control side of the shards' ring files: one `RingFile` per shard
//! opened as `Role::Control`, encoded records queued per shard while a ring
//! is full, and two-phase reads of what the shards report.
//!
//! A burst of records wakes a sleeping shard once, not once per record:
//! the shard then takes the burst in one turn instead of waking, taking a
//! few records and sleeping again while this side is still pushing. Pushes
//! wake it every [`WAKE_EVERY`] records, when its ring is full, and at
//! [`Rings::wake`], which the loop calls after each round of effects.

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

/// Records pushed between two wake-ups of a shard, at most.
pub const WAKE_EVERY: usize = 1024;

/// The rings of every shard.
#[derive(Debug)]
pub struct Rings {
    files: Vec<RingFile>,
    /// Encoded records waiting for room, per shard.
    pending: Vec<VecDeque<Vec<u8>>>,
    /// Records pushed since the shard was last woken, per shard.
    unwoken: Vec<usize>,
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
            unwoken: vec![0; files.len()],
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
    /// the record waiting for room, if one is; the shard is woken then, as
    /// only it can make room.
    pub fn drain(&mut self, shard: usize) -> Option<usize> {
        while let Some(front) = self.pending[shard].front() {
            match self.files[shard].outbound().push(front) {
                Ok(()) => self.unwoken[shard] += 1,
                Err(RingError::Full) => {
                    let waiting = front.len();
                    self.wake_shard(shard);
                    return Some(waiting);
                }
                Err(e) => tracing::error!(shard, "record of {} bytes dropped: {e}", front.len()),
            }
            self.pending[shard].pop_front();
            if self.unwoken[shard] >= WAKE_EVERY {
                self.wake_shard(shard);
            }
        }
        None
    }

    /// Wakes every shard that was pushed records since it was last woken
    /// (if it sleeps).
    pub fn wake(&mut self) {
        for shard in 0..self.files.len() {
            if self.unwoken[shard] > 0 {
                self.wake_shard(shard);
            }
        }
    }

    fn wake_shard(&mut self, shard: usize) {
        self.files[shard].wake_consumer();
        self.unwoken[shard] = 0;
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    /// Far longer than any wait of a wake-up that arrives: a wait that
    /// reaches it is a lost wake-up.
    const LONG: Duration = Duration::from_secs(10);

    fn committed(seq: u64) -> DownRecord {
        DownRecord::Committed {
            node_id: "edge-1".into(),
            store_id: 1,
            seq,
        }
    }

    /// The shard's side: takes records until `n` arrived, sleeping while
    /// the ring is empty; counts its sleeps. Fails on a wait that no
    /// wake-up ended.
    fn consume(shard: &RingFile, n: u64, sleeps: &AtomicUsize) -> Vec<u64> {
        let mut seqs = Vec::new();
        let mut buf = Vec::new();
        while (seqs.len() as u64) < n {
            if !shard.pop_and_wake(&mut buf).unwrap() {
                sleeps.fetch_add(1, Ordering::SeqCst);
                assert!(shard.wait_inbound(LONG), "a wake-up was lost");
                continue;
            }
            match records::from_bytes::<DownRecord>(&buf).unwrap() {
                DownRecord::Committed { seq, .. } => seqs.push(seq),
                other => panic!("unexpected {other:?}"),
            }
        }
        seqs
    }

    fn open(size: usize) -> (tempfile::TempDir, Rings, RingFile) {
        let dir = tempfile::tempdir().unwrap();
        let rings = Rings::open(dir.path(), 1, RingSize::Default(size)).unwrap();
        let shard = RingFile::open(
            &shm::ring_path(dir.path(), 0),
            RingSize::Default(size),
            Role::Shard,
        )
        .unwrap();
        (dir, rings, shard)
    }

    #[test]
    fn a_burst_wakes_a_sleeping_shard_once_per_wake_every_records() {
        let (_dir, mut rings, shard) = open(1 << 20);
        let n = 3 * WAKE_EVERY as u64;
        let sleeps = AtomicUsize::new(0);
        let seqs = std::thread::scope(|s| {
            let sleeps = &sleeps;
            let taking = s.spawn(move || consume(&shard, n, sleeps));
            let flag = rings.files[0].outbound().signals();
            while flag.consumer_sleeping().load(Ordering::SeqCst) == 0 {
                std::thread::yield_now();
            }
            for seq in 0..n {
                rings.push(0, &committed(seq));
            }
            rings.wake();
            taking.join().unwrap()
        });
        assert_eq!(seqs, (0..n).collect::<Vec<_>>());
        // One sleep before the burst, then at most one per wake-up.
        let slept = sleeps.load(Ordering::SeqCst);
        assert!(slept <= 1 + 3, "slept {slept} times for {n} records");
    }

    #[test]
    fn records_beyond_a_full_ring_all_arrive_in_order() {
        let (_dir, mut rings, shard) = open(4096);
        let n = 2000;
        let sleeps = AtomicUsize::new(0);
        let seqs = std::thread::scope(|s| {
            let sleeps = &sleeps;
            let taking = s.spawn(move || consume(&shard, n, sleeps));
            for seq in 0..n {
                rings.push(0, &committed(seq));
            }
            let waiter = rings.waiter(0);
            while let Some(bytes) = rings.drain(0) {
                assert!(waiter.wait_outbound_room(bytes, LONG), "no room made");
            }
            rings.wake();
            taking.join().unwrap()
        });
        assert_eq!(seqs, (0..n).collect::<Vec<_>>());
    }
}
