//! Waiting on the rings without blocking the runtime: one thread per ring
//! sleeps on its futex until the shard wrote records, wakes the loop, and
//! sleeps again once re-armed; a full ring is waited on by a blocking task
//! until the shard made room.

use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use shm::Waiter;
use tokio::sync::mpsc;

use super::rings::Rings;

/// What woke the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// The shard wrote records: read them, then [`RingWaiters::rearm`].
    Inbound(usize),
    /// The shard made room in its full ring.
    Room(usize),
}

/// See the module doc.
#[derive(Debug)]
pub struct RingWaiters {
    waiters: Vec<Waiter>,
    inbound: mpsc::Receiver<usize>,
    arms: Vec<std_mpsc::Sender<()>>,
    room_tx: mpsc::UnboundedSender<usize>,
    room: mpsc::UnboundedReceiver<usize>,
    waiting_for_room: Vec<bool>,
}

impl RingWaiters {
    /// Starts one waiting thread per ring of `rings`, armed.
    pub fn start(rings: &Rings) -> std::io::Result<RingWaiters> {
        let (inbound_tx, inbound) = mpsc::channel::<usize>(rings.len().max(1));
        let mut arms = Vec::new();
        let waiters: Vec<Waiter> = (0..rings.len()).map(|s| rings.waiter(s)).collect();
        for (shard, waiter) in waiters.iter().enumerate() {
            let (arm_tx, arm_rx) = std_mpsc::channel::<()>();
            let waiter = waiter.clone();
            let tx = inbound_tx.clone();
            std::thread::Builder::new()
                .name(format!("ring-{shard}"))
                .spawn(move || {
                    while arm_rx.recv().is_ok() {
                        while !waiter.wait_inbound(Duration::from_secs(1)) {
                            if waiter.is_closed() {
                                return;
                            }
                        }
                        if tx.blocking_send(shard).is_err() {
                            return;
                        }
                    }
                })?;
            let _ = arm_tx.send(());
            arms.push(arm_tx);
        }
        let (room_tx, room) = mpsc::unbounded_channel();
        Ok(RingWaiters {
            waiting_for_room: vec![false; waiters.len()],
            waiters,
            inbound,
            arms,
            room_tx,
            room,
        })
    }

    /// The next wake-up. Cancel-safe.
    pub async fn next(&mut self) -> Wake {
        tokio::select! {
            Some(shard) = self.inbound.recv() => Wake::Inbound(shard),
            Some(shard) = self.room.recv() => {
                self.waiting_for_room[shard] = false;
                Wake::Room(shard)
            }
        }
    }

    /// Waits for `shard`'s next records.
    pub fn rearm(&self, shard: usize) {
        let _ = self.arms[shard].send(());
    }

    /// Pushes what waits in `rings`, and waits for room in each ring that
    /// is full and not waited on already.
    pub fn push_pending(&mut self, rings: &mut Rings) {
        for (shard, waiting) in self.waiting_for_room.iter_mut().enumerate() {
            if *waiting {
                continue;
            }
            let Some(bytes) = rings.drain(shard) else {
                continue;
            };
            *waiting = true;
            let pending = rings.pending(shard);
            tracing::debug!(shard, pending, "ring full: waiting for room");
            let waiter = self.waiters[shard].clone();
            let tx = self.room_tx.clone();
            tokio::task::spawn_blocking(move || {
                waiter.wait_outbound_room(bytes, Duration::from_millis(500));
                let _ = tx.send(shard);
            });
        }
    }

    /// Stops the waiting threads.
    pub fn close(&self) {
        for w in &self.waiters {
            w.close();
        }
    }
}
