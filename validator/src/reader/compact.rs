//! Replay-cache pruning and compaction of acknowledged records.

use super::*;

impl Reader {
    /// Housekeeping between scans: prunes expired replay entries (at most
    /// once a minute) and compacts acknowledged records past retention.
    pub fn maintenance(&mut self, now_unix_s: u64) -> Result<(), ValidatorError> {
        if now_unix_s >= self.last_prune_unix_s.saturating_add(PRUNE_INTERVAL_S)
            || now_unix_s < self.last_prune_unix_s
        {
            self.prune_replay(now_unix_s)?;
            self.last_prune_unix_s = now_unix_s;
        }
        self.compact(now_unix_s)?;
        Ok(())
    }

    fn prune_replay(&mut self, now: u64) -> Result<usize, ValidatorError> {
        let n = self.replay_cache.prune(now);
        // The spill tree is empty unless a full log was compacted early.
        let mut batch = sled::Batch::default();
        let mut spilled = 0;
        for kv in self.replay.iter() {
            let (k, v) = kv.map_err(ValidatorError::sled("scan replay spill"))?;
            let e: ReplayEntry = codec::decode("replay entry", &v)?;
            if now > e.prune_after_unix_s {
                batch.remove(k);
                spilled += 1;
            }
        }
        if spilled > 0 {
            // Not flushed: losing a prune only means pruning again.
            self.replay
                .apply_batch(batch)
                .map_err(ValidatorError::sled("prune replay spill"))?;
        }
        Ok(n)
    }

    /// Removes acknowledged records whose reader time is older than the
    /// retention period. Returns how many were removed.
    pub fn compact(&mut self, now_unix_s: u64) -> Result<u64, ValidatorError> {
        let before = self.state.oldest_seq;
        self.compact_inner(
            now_unix_s.saturating_sub(self.config.storage.retention_s),
            0,
            now_unix_s,
        )?;
        Ok(self.state.oldest_seq - before)
    }

    /// Removes acknowledged records, oldest first, while their reader time is
    /// ≤ `older_than_unix_s`, or (when `need_bytes` > 0) until that many bytes
    /// were freed regardless of age. A removed record whose code could still
    /// pass at `now_unix_s` leaves its replay entries in the spill tree, in
    /// the same atomic write, so the next open still refuses the code.
    pub(super) fn compact_inner(
        &mut self,
        older_than_unix_s: u64,
        need_bytes: u64,
        now_unix_s: u64,
    ) -> Result<(), ValidatorError> {
        if self.sync.forked.is_some() {
            // A forked reader keeps every record for the operator's review.
            return Ok(());
        }
        let start = self.state.clone();
        loop {
            let freed = start.used_bytes - self.state.used_bytes;
            if need_bytes > 0 && freed >= need_bytes {
                break;
            }
            let more = need_bytes.saturating_sub(freed);
            if !self.compact_chunk(older_than_unix_s, more, now_unix_s)? {
                break;
            }
        }
        if self.state.oldest_seq == start.oldest_seq {
            return Ok(());
        }
        self.durable("flush compaction")?;
        tracing::info!(
            freed_bytes = start.used_bytes - self.state.used_bytes,
            oldest_seq = self.state.oldest_seq,
            "compacted acknowledged rides"
        );
        Ok(())
    }

    /// One atomic step of [`Self::compact_inner`]: at most
    /// [`COMPACT_CHUNK_RECORDS`] records, their replay spill and the new
    /// state in one transaction. Chunked because a sled transaction holds
    /// its whole write set in memory: compacting a week of a busy bus
    /// (≈ 56k records) in one piece doubled the reader's peak memory.
    /// Returns whether it removed anything.
    // Longer than a screen: one transaction: what it reads and what it writes atomically are kept together.
    fn compact_chunk(
        &mut self,
        older_than_unix_s: u64,
        need_bytes: u64,
        now_unix_s: u64,
    ) -> Result<bool, ValidatorError> {
        let mut next = self.state.clone();
        let mut batch = sled::Batch::default();
        let mut spill = sled::Batch::default();
        let mut freed = 0u64;
        let end = self
            .state
            .acked_up_to
            .min(self.state.next_seq - 1)
            .min(self.state.oldest_seq + COMPACT_CHUNK_RECORDS - 1);
        if self.state.oldest_seq > end {
            return Ok(false);
        }
        for kv in self
            .rides
            .range(self.state.oldest_seq.to_be_bytes()..=end.to_be_bytes())
        {
            let (k, v) = kv.map_err(ValidatorError::sled("scan rides"))?;
            if need_bytes > 0 && freed >= need_bytes {
                break;
            }
            let rec = RideRecord::decode_v1(&v)?;
            if need_bytes == 0 && rec.reader_time_unix_s > older_than_unix_s {
                break;
            }
            if let Some((keys, e)) = self.live_replay_entry(&rec, now_unix_s) {
                let ev = codec::encode("replay entry", &e)?;
                spill.insert(&keys.digest_key()[..], ev.clone());
                spill.insert(&keys.seq_key()[..], ev);
            }
            batch.remove(k);
            freed += v.len() as u64;
            next.oldest_seq += 1;
        }
        if next.oldest_seq == self.state.oldest_seq {
            return Ok(false);
        }
        next.used_bytes -= freed;
        let state_bytes = codec::encode("reader state", &next)?;
        (&self.rides, &self.replay, &self.meta)
            .transaction(|(rides, replay, meta)| {
                rides.apply_batch(&batch)?;
                replay.apply_batch(&spill)?;
                meta.insert(META_STATE, state_bytes.as_slice())?;
                Ok::<(), ConflictableTransactionError<()>>(())
            })
            .map_err(|e| ValidatorError::Sled {
                what: "compact",
                source: abort_txn(e),
            })?;
        self.state = next;
        Ok(true)
    }
}
