//! Buffers the glue hands back for the hub to reuse, bounded in bytes.
//!
//! The hub hands out a buffer with each output ([`crate::protocol::Transmit`]
//! bytes, the list of a [`crate::HubEvent::Delivered`]); the glue gives it
//! back once done ([`crate::Hub::recycle_transmit`],
//! [`crate::Hub::recycle_delivered`]), and the next output reuses it instead
//! of allocating. A turn may need many at once (every node acknowledging in
//! one read), so the pool is bounded by the bytes it holds, not by a count,
//! and [`Pool::trim`] gives back what was not needed since the last trim.

/// Cleared vectors with their capacity, for reuse.
#[derive(Debug)]
pub(crate) struct Pool<T> {
    spare: Vec<Vec<T>>,
    /// Bytes of capacity held in `spare`.
    bytes: usize,
    /// Most bytes held.
    limit: usize,
    /// Largest capacity, in elements, kept: one large output does not pin
    /// its memory.
    largest: usize,
    /// Fewest vectors `spare` held since the last trim: that many were not
    /// needed.
    low: usize,
}

impl<T> Pool<T> {
    pub(crate) fn new(limit: usize, largest: usize) -> Self {
        Self {
            spare: Vec::new(),
            bytes: 0,
            limit,
            largest,
            low: 0,
        }
    }

    /// A cleared vector, with capacity if one was given back.
    pub(crate) fn take(&mut self) -> Vec<T> {
        let v = self.spare.pop().unwrap_or_default();
        self.bytes -= Self::size(&v);
        self.low = self.low.min(self.spare.len());
        v
    }

    /// Keeps `v` for a later [`take`](Self::take) if it fits the bounds.
    pub(crate) fn give(&mut self, mut v: Vec<T>) {
        let size = Self::size(&v);
        if size > 0 && v.capacity() <= self.largest && self.bytes + size <= self.limit {
            v.clear();
            self.bytes += size;
            self.spare.push(v);
        }
    }

    /// Gives back the vectors no take needed since the last trim, the
    /// least recently given first.
    pub(crate) fn trim(&mut self) {
        let unused = self.low.min(self.spare.len());
        for v in self.spare.drain(..unused) {
            self.bytes -= v.capacity() * size_of::<T>();
        }
        if self.spare.is_empty() {
            self.spare = Vec::new();
        }
        self.low = self.spare.len();
    }

    fn size(v: &Vec<T>) -> usize {
        v.capacity() * size_of::<T>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_back_vectors_are_reused_within_the_byte_limit() {
        let mut pool = Pool::<u64>::new(1024, 64);
        pool.give(Vec::with_capacity(64));
        pool.give(Vec::with_capacity(64));
        pool.give(Vec::with_capacity(65));
        pool.give(Vec::new());
        assert_eq!(pool.bytes, 1024, "the third is too large, the fourth empty");
        pool.give(Vec::with_capacity(1));
        assert_eq!(pool.spare.len(), 2, "over the byte limit");
        let mut v = pool.take();
        assert!(v.is_empty() && v.capacity() == 64);
        v.push(1);
        pool.give(v);
        assert!(pool.take().is_empty(), "given back cleared");
        pool.take();
        assert_eq!((pool.bytes, pool.take().capacity()), (0, 0));
    }

    #[test]
    fn trim_gives_back_what_no_take_needed_since_the_last_one() {
        let mut pool = Pool::<u8>::new(1 << 20, 1 << 10);
        for _ in 0..3 {
            pool.give(Vec::with_capacity(8));
        }
        pool.trim();
        assert_eq!(pool.spare.len(), 3, "the first trim only starts the count");
        let v = pool.take();
        pool.give(v);
        pool.trim();
        assert_eq!((pool.spare.len(), pool.bytes), (1, 8), "one was needed");
        pool.trim();
        assert_eq!((pool.spare.capacity(), pool.bytes), (0, 0));
    }
}
