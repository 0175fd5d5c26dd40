//! Signed batches for upload and the acknowledged sequence.

use super::*;

impl Reader {
    /// Moves the acknowledged sequence back to `to` because settlement,
    /// in a verified acknowledgement, holds only that much (it was restored
    /// from a backup): the records after it are uploaded again. Refuses
    /// with [`ValidatorError::SettlementBehind`] when some of them were
    /// compacted here. Persisted and flushed.
    pub fn rewind_acknowledged(&mut self, to: u64) -> Result<(), ValidatorError> {
        if to >= self.state.acked_up_to {
            return Ok(());
        }
        if to + 1 < self.state.oldest_seq {
            return Err(ValidatorError::SettlementBehind {
                settlement_holds: to,
                missing_from: to + 1,
                missing_to: self.state.oldest_seq - 1,
            });
        }
        let mut next = self.state.clone();
        next.acked_up_to = to;
        self.meta
            .insert(META_STATE, codec::encode("reader state", &next)?)
            .map_err(ValidatorError::sled("write ack"))?;
        self.durable("flush ack rewind")?;
        tracing::warn!(
            from = self.state.acked_up_to,
            to,
            "settlement holds less than it acknowledged: re-sending"
        );
        self.state = next;
        Ok(())
    }

    /// The next batch of unacknowledged records, signed with the reader key:
    /// `(batch v1 bytes, first_seq, last_seq)`, or `None` when everything is
    /// acknowledged. Idempotent until [`Reader::acknowledge`] moves on.
    pub fn next_batch(
        &self,
        max_records: usize,
    ) -> Result<Option<(Vec<u8>, u64, u64)>, ValidatorError> {
        self.batch_from(self.state.acked_up_to + 1, max_records)
    }

    /// A signed batch of the held records from `first` (at most
    /// `max_records`), acknowledged or not: `None` past the log's end or
    /// below what compaction kept. Used to show settlement the records of a
    /// fork the reader found (so settlement records the incident too).
    pub fn batch_from(
        &self,
        first: u64,
        max_records: usize,
    ) -> Result<Option<(Vec<u8>, u64, u64)>, ValidatorError> {
        if first < self.state.oldest_seq {
            return Ok(None);
        }
        let last_written = self.state.next_seq - 1;
        if first > last_written {
            return Ok(None);
        }
        let max = max_records.clamp(1, fare_credential::batch::MAX_BATCH_RECORDS) as u64;
        let last = last_written.min(first + max - 1);
        let mut records = Vec::with_capacity((last - first + 1) as usize);
        for kv in self.rides.range(first.to_be_bytes()..=last.to_be_bytes()) {
            let (_, v) = kv.map_err(ValidatorError::sled("read rides"))?;
            records.push(RideRecord::decode_v1(&v)?);
        }
        if records.len() as u64 != last - first + 1 {
            return Err(ValidatorError::Corrupt {
                seq: first,
                why: format!("expected records {first}..={last}, found {}", records.len()),
            });
        }
        let batch = Batch {
            reader_id: self.reader_id(),
            prev_hash: records[0].prev_hash,
            records,
        };
        let bytes = batch.sign_v1(&self.key)?;
        Ok(Some((bytes, first, last)))
    }

    /// Records that settlement holds everything up to `acked_seq`
    /// (monotonic: a lower value is ignored). Persisted and flushed.
    pub fn acknowledge(&mut self, acked_seq: u64) -> Result<(), ValidatorError> {
        let last = self.state.next_seq - 1;
        if acked_seq > last {
            return Err(ValidatorError::AckBeyondLog {
                acked: acked_seq,
                last,
            });
        }
        if acked_seq <= self.state.acked_up_to {
            return Ok(());
        }
        if let Some(f) = &self.sync.forked {
            return Err(ValidatorError::Forked {
                at: f.at_seq,
                why: f.why.clone(),
            });
        }
        let mut next = self.state.clone();
        next.acked_up_to = acked_seq;
        self.meta
            .insert(META_STATE, codec::encode("reader state", &next)?)
            .map_err(ValidatorError::sled("write ack"))?;
        self.durable("flush ack")?;
        self.state = next;
        Ok(())
    }

    /// Signs a request to settlement with the reader key (SPEC §9), for the
    /// `X-Reader-Auth` header. The time signed is the reader clock
    /// corrected by the offset measured on the last signed answer, so a
    /// reader whose clock drifted still falls in settlement's window.
    pub fn sign_request(
        &mut self,
        method: &str,
        target: &str,
        body: &[u8],
        now_unix_s: u64,
    ) -> Result<String, ValidatorError> {
        let offset = self
            .request_offset_s
            .or(self.sync.clock_offset_s)
            .unwrap_or(0);
        let t = now_unix_s.saturating_add_signed(offset.saturating_neg());
        self.request_nonce = self.request_nonce.wrapping_add(1);
        let auth = fare_credential::RequestAuth::sign_v1(
            &self.key,
            self.reader_id(),
            t,
            self.request_nonce,
            method,
            target,
            body,
        )?;
        Ok(auth.to_header())
    }

    /// Sets the clock offset (reader minus settlement, s) used to time-stamp
    /// signed requests until the next signed answer measures it
    /// ([`crate::sync::note_stale`]).
    pub fn set_request_clock_offset(&mut self, offset_s: i64) {
        self.request_offset_s = Some(offset_s);
    }
}
