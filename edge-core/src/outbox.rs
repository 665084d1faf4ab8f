//! The upstream outbox, in the same LMDB environment as the objects.
//!
//! Every upstream message gets the next sequence number of the node's
//! lifetime (kept in `meta`, so numbers are never reused even after the
//! outbox empties) and is written durably before the link may send it. The
//! entries are deleted when the cloud acknowledges them (cumulatively), in
//! the next group commit ([`Store::commit`]) or by [`Store::outbox_ack`].

use schema::Message;
use schema::records::{self, OutboxEntry};

use crate::store::{META_UPSTREAM_SEQ, Store, StoreError};

impl Store {
    /// Writes `messages` to the outbox in one durable transaction and
    /// returns them with their sequence numbers, ready for
    /// `Link::handle_outbox`.
    pub fn outbox_append(
        &self,
        messages: Vec<Message>,
        now_ms: u64,
    ) -> Result<Vec<(u64, Message)>, StoreError> {
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let mut wtxn = self.env.write_txn()?;
        let mut seq = self.meta.get(&wtxn, META_UPSTREAM_SEQ)?.unwrap_or(0);
        let mut out = Vec::with_capacity(messages.len());
        for mut message in messages {
            seq += 1;
            message.header.seq = seq;
            let entry = OutboxEntry {
                seq,
                created_ms: now_ms,
                message,
            };
            self.outbox
                .put(&mut wtxn, &seq, &records::to_bytes(&entry))?;
            out.push((seq, entry.message));
        }
        self.meta.put(&mut wtxn, META_UPSTREAM_SEQ, &seq)?;
        wtxn.commit()?;
        Ok(out)
    }

    /// Every entry still waiting for the cloud, oldest first.
    pub fn outbox_pending(&self) -> Result<Vec<(u64, Message)>, StoreError> {
        let rtxn = self.env.read_txn()?;
        let mut out = Vec::new();
        for entry in self.outbox.iter(&rtxn)? {
            let (seq, bytes) = entry?;
            let entry =
                records::from_bytes::<OutboxEntry>(bytes).map_err(|e| StoreError::Corrupt {
                    key: format!("outbox/{seq}"),
                    detail: e.to_string(),
                })?;
            out.push((seq, entry.message));
        }
        Ok(out)
    }

    /// Entries waiting for the cloud.
    pub fn outbox_len(&self) -> Result<u64, StoreError> {
        let rtxn = self.env.read_txn()?;
        Ok(self.outbox.len(&rtxn)?)
    }

    /// The cloud took over every entry up to `seq`: deletes them durably.
    pub fn outbox_ack(&self, seq: u64) -> Result<(), StoreError> {
        let mut wtxn = self.env.write_txn()?;
        self.outbox.delete_range(&mut wtxn, &(..=seq))?;
        wtxn.commit()?;
        Ok(())
    }

    /// The highest upstream seq ever handed out.
    pub fn upstream_seq(&self) -> Result<u64, StoreError> {
        self.meta_get(META_UPSTREAM_SEQ)
    }
}
