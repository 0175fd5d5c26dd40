//! Export, full-chain verification and status.

use super::*;

impl Reader {
    /// Every record still in the log, oldest first.
    pub fn records(&self) -> impl Iterator<Item = Result<RideRecord, ValidatorError>> + '_ {
        self.rides.iter().values().map(|v| {
            let v = v.map_err(ValidatorError::sled("read rides"))?;
            Ok(RideRecord::decode_v1(&v)?)
        })
    }

    /// Walks the whole log: sequences contiguous from `oldest_seq`, each record
    /// chained to the one before (to the genesis hash if nothing was
    /// compacted), the last one hashing to the chain head, the right reader
    /// id. Returns the number of records.
    pub fn verify_chain(&self) -> Result<u64, ValidatorError> {
        let mut expect = self.state.oldest_seq;
        let mut prev: Option<[u8; 32]> = (expect == 1).then(|| genesis_hash(self.reader_id()));
        for kv in self.rides.iter() {
            let (k, v) = kv.map_err(ValidatorError::sled("read rides"))?;
            let seq = key_seq(&k);
            let rec = RideRecord::decode_v1(&v)?;
            let bad = |why: String| ValidatorError::Corrupt { seq, why };
            if seq != expect || rec.reader_seq != expect {
                return Err(bad(format!(
                    "expected sequence {expect}, record says {}",
                    rec.reader_seq
                )));
            }
            if rec.reader_id != self.reader_id() {
                return Err(bad(format!("record names reader {}", rec.reader_id)));
            }
            if let Some(p) = prev {
                if rec.prev_hash != p {
                    return Err(bad("does not chain to the previous record".into()));
                }
            }
            prev = Some(record_hash(&v));
            expect += 1;
        }
        if expect != self.state.next_seq {
            return Err(ValidatorError::Corrupt {
                seq: expect,
                why: format!(
                    "log ends before the state's next sequence {}",
                    self.state.next_seq
                ),
            });
        }
        if let Some(p) = prev {
            if p != self.state.chain_head {
                return Err(ValidatorError::Corrupt {
                    seq: expect - 1,
                    why: "last record does not hash to the chain head".into(),
                });
            }
        }
        Ok(self.state.next_seq - self.state.oldest_seq)
    }

    /// Status at reader time `now_unix_s`.
    pub fn status(&self, now_unix_s: u64) -> Status {
        let (version, age, offset, keys, deny) = match &self.installed {
            Some(i) => (
                i.meta.version,
                now_unix_s.saturating_sub(i.meta.server_time_unix_s),
                i.meta.installed_at_unix_s as i64 - i.meta.server_time_unix_s as i64,
                i.trust.len(),
                i.deny.len(),
            ),
            None => (0, 0, 0, 0, 0),
        };
        let tp = self.config.trust;
        let trust_state =
            if self.installed.is_none() || (tp.reject_after_s > 0 && age > tp.reject_after_s) {
                "stale"
            } else if age > tp.warn_after_s {
                "aging"
            } else {
                "ok"
            };
        Status {
            reader_id: self.reader_id(),
            public_key: hex::encode(self.public_key().as_bytes()),
            vehicle: self.config.reader.vehicle.clone(),
            route: self.config.reader.route.clone(),
            rides_total: self.state.next_seq - 1,
            next_seq: self.state.next_seq,
            acked_up_to: self.state.acked_up_to,
            unacked: self.state.next_seq - 1 - self.state.acked_up_to,
            oldest_seq: self.state.oldest_seq,
            used_bytes: self.state.used_bytes,
            max_log_bytes: self.config.storage.max_log_bytes,
            bundle_version: version,
            bundle_age_s: age,
            trust_state,
            clock_offset_at_install_s: offset,
            trust_keys: keys,
            deny_entries: deny,
            replay_entries: self.replay_cache.len(),
            rejected_entries: self.rejected_count,
            chain_head: hex::encode(self.state.chain_head),
            refusing: self.failed.clone(),
            sync_state: if self.damaged.is_some() {
                "log_damaged"
            } else if self.sync.forked.is_some() {
                "forked"
            } else if self.sync.settlement_behind.is_some() {
                "settlement_behind"
            } else {
                "ok"
            },
            sync: self.sync.clone(),
            oldest_pending_unix_s: self.oldest_pending_time(),
        }
    }

    /// Reader time of the first unacknowledged ride still held.
    fn oldest_pending_time(&self) -> Option<u64> {
        let first = self.state.acked_up_to + 1;
        if first >= self.state.next_seq {
            return None;
        }
        let v = self.rides.get(first.to_be_bytes()).ok()??;
        RideRecord::decode_v1(&v).ok().map(|r| r.reader_time_unix_s)
    }
}
