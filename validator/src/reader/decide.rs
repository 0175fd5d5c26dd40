//! The decision pipeline and the durable append of an accepted ride.

use super::*;

impl Reader {
    /// The replay keys and entry of a logged ride whose code could still
    /// pass at `now` (`None` once it cannot: then nothing needs to refuse it).
    pub(super) fn live_replay_entry(
        &self,
        rec: &RideRecord,
        now: u64,
    ) -> Option<(ReplayKeys, ReplayEntry)> {
        match RideCode::from_bytes(&rec.code) {
            Ok(code) => {
                let e = self.replay_entry(&code, rec.reader_seq, rec.reader_time_unix_s);
                (now <= e.prune_after_unix_s).then(|| (ReplayKeys::of(&code), e))
            }
            // Accepted codes parse; one that does not cannot pass again.
            Err(e) => {
                tracing::warn!(seq = rec.reader_seq, error = %e, "logged code does not parse");
                None
            }
        }
    }

    /// The replay entry of an accepted code.
    fn replay_entry(&self, code: &RideCode, seq: u64, seen_unix_s: u64) -> ReplayEntry {
        let p = self.config.policy;
        ReplayEntry {
            seq,
            seen_unix_s,
            prune_after_unix_s: code.issued_at_unix_s() as u64
                + p.code_validity_s
                + p.skew_tolerance_s
                + self.config.storage.replay_grace_s,
        }
    }

    /// Decides on raw payload bytes (already decoded from a QR code).
    pub fn decide_payload(&mut self, bytes: &[u8], now_unix_s: u64) -> Decision {
        self.decide_timed(Ok(bytes), None, now_unix_s, Instant::now())
    }

    /// Decides on a camera frame: QR decode, then the payload pipeline.
    pub fn decide_frame(&mut self, frame: &image::GrayImage, now_unix_s: u64) -> Decision {
        let start = Instant::now();
        let decoded = crate::frames::decode_frame(frame, self.config.camera.decode_budget());
        let decode_ns = start.elapsed().as_nanos() as u64;
        self.decide_decoded(decoded, decode_ns, now_unix_s, start)
    }

    /// Decides on an image file (a stored camera frame): load, QR decode
    /// within `camera.decode_budget_ms`, then the payload pipeline. The
    /// decode stage time includes loading the file.
    pub fn decide_image_file(&mut self, path: &Path, now_unix_s: u64) -> Decision {
        let start = Instant::now();
        let decoded = crate::frames::decode_file(path, self.config.camera.decode_budget());
        let decode_ns = start.elapsed().as_nanos() as u64;
        self.decide_decoded(decoded, decode_ns, now_unix_s, start)
    }

    /// Decides on the result of a decode done elsewhere (`Err`: no code was
    /// found, with why). `start` is when the decode began.
    pub fn decide_decoded(
        &mut self,
        decoded: Result<Vec<u8>, String>,
        decode_ns: u64,
        now_unix_s: u64,
        start: Instant,
    ) -> Decision {
        match decoded {
            Ok(bytes) => self.decide_timed(Ok(&bytes), Some(decode_ns), now_unix_s, start),
            Err(e) => {
                tracing::debug!(error = %e, "no code in frame");
                self.decide_timed(Err(()), Some(decode_ns), now_unix_s, start)
            }
        }
    }

    fn decide_timed(
        &mut self,
        bytes: Result<&[u8], ()>,
        decode_ns: Option<u64>,
        now: u64,
        start: Instant,
    ) -> Decision {
        let mut stages = StageTimes::default();
        if let Some(ns) = decode_ns {
            stages.set(Stage::Decode, ns);
        }
        let mut warnings = Vec::new();
        let outcome = match bytes {
            Err(()) => Outcome::Rejected(RejectReason::NoCodeFound),
            Ok(bytes) => self.pipeline(bytes, now, &mut stages, &mut warnings),
        };
        let decision = Decision {
            outcome,
            at_unix_s: now,
            stages,
            total_ns: start.elapsed().as_nanos() as u64,
            warnings,
        };
        if !decision.is_accept() {
            self.log_rejected(&decision, bytes.ok());
        }
        decision
    }

    /// The checks in the order of the specification (SPEC §3): the
    /// reader's own state and trust age, then the code's stages, then the
    /// append that makes an accept.
    fn pipeline(
        &mut self,
        bytes: &[u8],
        now: u64,
        st: &mut StageTimes,
        warnings: &mut Vec<&'static str>,
    ) -> Outcome {
        if let Err(refused) = self.ready_to_decide(now, warnings) {
            return refused;
        }
        let (code, keys) = match self.verify_stages(bytes, now, st) {
            Ok(checked) => checked,
            Err(reason) => return Outcome::Rejected(reason),
        };
        let t = Instant::now();
        let r = self.append(&code, now, &keys);
        st.set(Stage::Append, t.elapsed().as_nanos() as u64);
        self.append_outcome(&code, r)
    }

    /// Whether the reader may decide at all: its log is writable, a bundle
    /// is installed, and the trust material is not stale (checked first:
    /// with stale material nothing else can be trusted). An aging bundle
    /// adds the `trust_aging` warning.
    fn ready_to_decide(&self, now: u64, warnings: &mut Vec<&'static str>) -> Result<(), Outcome> {
        if let Some(message) = &self.failed {
            return Err(Outcome::StorageError {
                message: message.clone(),
            });
        }
        let Some(inst) = &self.installed else {
            return Err(Outcome::Rejected(RejectReason::NotProvisioned));
        };
        let age = now.saturating_sub(inst.meta.server_time_unix_s);
        let tp = self.config.trust;
        if tp.reject_after_s > 0 && age > tp.reject_after_s {
            return Err(Outcome::Rejected(RejectReason::TrustStale {
                bundle_age_s: age,
                max_age_s: tp.reject_after_s,
            }));
        }
        if age > tp.warn_after_s {
            warnings.push("trust_aging");
        }
        Ok(())
    }

    /// The code's stages, one line each, each timed into `st`: parse,
    /// credential, device signature, time, deny list, replay. Returns the
    /// code and its replay keys, or the first stage's reason to refuse.
    fn verify_stages(
        &mut self,
        bytes: &[u8],
        now: u64,
        st: &mut StageTimes,
    ) -> Result<(RideCode, ReplayKeys), RejectReason> {
        let inst = self
            .installed
            .as_ref()
            .ok_or(RejectReason::NotProvisioned)?;
        macro_rules! stage {
            ($stage:expr, $e:expr) => {{
                let t = Instant::now();
                let r = $e;
                st.set($stage, t.elapsed().as_nanos() as u64);
                r?
            }};
        }
        let code = stage!(Stage::Parse, parse_stage(bytes));
        let device_key = stage!(
            Stage::Credential,
            credential_stage(code.credential(), &inst.trust, now, Some(&mut self.cache))
        );
        stage!(Stage::Device, device_stage(&code, &device_key));
        let policy = self.config.policy;
        stage!(Stage::Time, time_stage(&code, &policy, now));
        stage!(Stage::Deny, deny_stage(&code, &inst.deny));
        let keys = ReplayKeys::of(&code);
        stage!(
            Stage::Replay,
            match self.replay_cache.lookup(&keys) {
                Some(first) => Err(RejectReason::AlreadyUsed {
                    first_ride_seq: first.seq,
                    first_seen_unix_s: first.seen_unix_s,
                }),
                None => Ok(()),
            }
        );
        Ok((code, keys))
    }

    /// The outcome of the append of an accepted `code`: the ride, or the
    /// refusal a full or failed log makes (a failed one refuses every ride
    /// until restart).
    fn append_outcome(&mut self, code: &RideCode, r: Result<u64, AppendError>) -> Outcome {
        let cred = code.credential().body();
        match r {
            Ok(seq) => Outcome::Accepted {
                ride_id: RideId {
                    reader_id: self.reader_id(),
                    seq,
                },
                profile: cred.profile,
                credential_id: cred.credential_id,
            },
            Err(AppendError::Full {
                used_bytes,
                limit_bytes,
            }) => Outcome::Rejected(RejectReason::StorageFull {
                used_bytes,
                limit_bytes,
            }),
            Err(AppendError::Storage(e)) => {
                tracing::error!(error = %e, "ride log write failed; refusing rides until restart");
                let message = e.to_string();
                self.failed = Some(message.clone());
                Outcome::StorageError { message }
            }
        }
    }

    /// Appends the ride: one sled insert (in memory), then the record in
    /// the ring, synced (the one device flush; sled is flushed and its data
    /// file synced lazily, [`Self::sync_sled_if_due`]). The replay cache and the state
    /// change in memory as soon as the insert applied.
    // Longer than a screen: the accept path in its durability order (encode, room, insert, state, lazy sled sync, ring); splitting it would hide that order.
    fn append(&mut self, code: &RideCode, now: u64, keys: &ReplayKeys) -> Result<u64, AppendError> {
        let seq = self.state.next_seq;
        let rc = &self.config.reader;
        let record = RideRecord {
            reader_id: rc.reader_id,
            reader_seq: seq,
            reader_time_unix_s: now,
            vehicle: rc.vehicle.clone(),
            route: rc.route.clone(),
            stop: rc.stop,
            code: code.as_bytes().to_vec(),
            prev_hash: self.state.chain_head,
        };
        let enc = record
            .encode_v1()
            .map_err(|e| AppendError::Storage(e.into()))?;
        let limit = self.config.storage.max_log_bytes;
        if self.state.used_bytes + enc.len() as u64 > limit {
            // Acknowledged records are safe at settlement: drop them early
            // rather than refuse a ride.
            let need = self.state.used_bytes + enc.len() as u64 - limit;
            self.compact_inner(u64::MAX, need, now)
                .map_err(AppendError::Storage)?;
            if self.state.used_bytes + enc.len() as u64 > limit {
                return Err(AppendError::Full {
                    used_bytes: self.state.used_bytes,
                    limit_bytes: limit,
                });
            }
        }
        let chain_head = record_hash(&enc);
        let len = enc.len() as u64;
        let ring_copy = enc.clone();
        if let Err(source) = self.rides.insert(seq.to_be_bytes(), enc) {
            return Err(AppendError::Storage(ValidatorError::Sled {
                what: "append ride",
                source,
            }));
        }
        // The insert is applied in memory: the sequence and the code are
        // spent even if the flush fails, so neither can be used twice.
        self.state.next_seq = seq + 1;
        self.state.chain_head = chain_head;
        self.state.used_bytes += len;
        self.replay_cache
            .insert(keys, self.replay_entry(code, seq, now));
        // The durability point: sled's flush and device sync only when the
        // ring would otherwise wrap onto a record sled has not made durable,
        // then the record in the ring and its `fdatasync`: one device flush
        // per accept (see `crate::hwm`). No `flush()` of sled per accept:
        // the ring entry is the ride's only copy that must survive a crash
        // or a power cut, and open re-inserts what sled lost from it.
        self.sync_sled_if_due(seq).map_err(AppendError::Storage)?;
        self.ring
            .record(seq, &ring_copy, self.sled_durable_through())
            .map_err(AppendError::Storage)?;
        if seq.is_multiple_of(STATE_SAVE_EVERY) {
            // After the answer's durability point, and not flushed: losing
            // it only means rolling forward over a longer tail at open.
            // The ride is durable, so it is answered accept whatever happens here.
            if let Err(e) = self.save_state() {
                tracing::warn!(error = %e, "saving the reader state failed; the next open rolls forward further");
            }
        }
        Ok(seq)
    }

    fn log_rejected(&mut self, d: &Decision, bytes: Option<&[u8]>) {
        let max = self.config.storage.max_rejected_entries;
        if max == 0 {
            return;
        }
        let entry = RejectedScan {
            at_unix_s: d.at_unix_s,
            reason: d.reason_code().unwrap_or("unknown").to_string(),
            message: d.message(),
            payload_blake3: bytes.map(|b| *blake3::hash(b).as_bytes()),
            payload_len: bytes.map_or(0, |b| b.len() as u32),
        };
        // Analytics only: not flushed per scan but at most once a second
        // of reader time (to the page cache), which bounds what a crash
        // loses; failures never affect rides.
        let Ok(v) = codec::encode("rejected scan", &entry) else {
            return;
        };
        if self
            .rejected
            .insert(self.rejected_next.to_be_bytes(), v)
            .is_ok()
        {
            self.rejected_next += 1;
            self.rejected_count += 1;
        }
        if d.at_unix_s != self.rejected_flushed_unix_s {
            self.rejected_flushed_unix_s = d.at_unix_s;
            let _ = self.db.flush();
        }
        while self.rejected_count > max {
            match self.rejected.pop_min() {
                Ok(Some(_)) => self.rejected_count -= 1,
                _ => break,
            }
        }
    }

    /// Rejected scans held for analytics, oldest first.
    pub fn rejected_scans(&self) -> Result<Vec<RejectedScan>, ValidatorError> {
        self.rejected
            .iter()
            .values()
            .map(|v| {
                let v = v.map_err(ValidatorError::sled("read rejected"))?;
                Ok(codec::decode("rejected scan", &v)?)
            })
            .collect()
    }
}

enum AppendError {
    Full { used_bytes: u64, limit_bytes: u64 },
    Storage(ValidatorError),
}
