//! Provisioning and opening a reader directory: the state rolled forward
//! over the log tail, the high-water-mark check, the replay cache rebuilt.

use super::*;

impl Reader {
    /// Provisions a new reader in `dir` (created if missing): writes the key
    /// (0600), the root key, the config with every default, creates the log
    /// and installs the first bundle. The bundle is verified before anything
    /// is written, so a bad bundle leaves the directory untouched.
    // Longer than a screen: the files are written in a durability order (key, root, config, dir sync, log) that is easiest to check in one piece.
    pub fn provision(
        dir: &Path,
        config: ReaderConfig,
        root: VerifyingKey,
        key: SigningKey,
        bundle_bytes: &[u8],
        now_unix_s: u64,
    ) -> Result<Reader, ValidatorError> {
        config.validate()?;
        PublishedBundle::verify(bundle_bytes, &root).map_err(BundleError::from)?;
        if paths::config(dir).exists() || paths::log(dir).exists() {
            let reader_id =
                ReaderConfig::load(&paths::config(dir)).map_or(0, |c| c.reader.reader_id);
            return Err(ValidatorError::AlreadyProvisioned {
                dir: dir.to_path_buf(),
                reader_id,
            });
        }
        fare_durable::create_dir_all(dir)?;
        let public = key.verifying_key();
        write_new_file(
            &paths::key(dir),
            format!("{}\n", hex::encode(key.to_bytes())).as_bytes(),
            0o600,
        )?;
        write_new_file(
            &paths::public_key(dir),
            format!("{}\n", hex::encode(public.as_bytes())).as_bytes(),
            0o644,
        )?;
        write_new_file(
            &paths::root_key(dir),
            format!("{}\n", hex::encode(root.as_bytes())).as_bytes(),
            0o644,
        )?;
        write_new_file(&paths::config(dir), config.to_toml().as_bytes(), 0o644)?;
        fare_durable::sync_dir(dir)?;
        let db = Self::open_db(dir, &config)?;
        let meta = db
            .open_tree("meta")
            .map_err(ValidatorError::sled("open meta"))?;
        let identity = Identity {
            reader_id: config.reader.reader_id,
            public_key: public.to_bytes(),
        };
        let state = ReaderState {
            next_seq: 1,
            chain_head: genesis_hash(config.reader.reader_id),
            acked_up_to: 0,
            oldest_seq: 1,
            used_bytes: 0,
        };
        let mut batch = sled::Batch::default();
        batch.insert(META_IDENTITY, codec::encode("identity", &identity)?);
        batch.insert(META_STATE, codec::encode("reader state", &state)?);
        meta.apply_batch(batch)
            .map_err(ValidatorError::sled("write identity"))?;
        db.flush().map_err(ValidatorError::sled("flush identity"))?;
        drop(meta);
        // The files provisioning wrote, and `log/`, are entries of `dir`;
        // opening syncs the log's own directory and data file.
        fare_durable::sync_dir(dir)?;
        let mut reader = Reader::open_with(dir, now_unix_s, Some(db))?;
        reader.install_bundle(bundle_bytes, now_unix_s)?;
        tracing::info!(reader_id = config.reader.reader_id, dir = %dir.display(), "reader provisioned");
        Ok(reader)
    }

    fn open_db(dir: &Path, config: &ReaderConfig) -> Result<sled::Db, ValidatorError> {
        remove_torn_snapshots(&paths::log(dir));
        // sled's background threads may hold a just-closed database's file
        // lock for a moment; a restarting reader waits for it, boundedly.
        let mut attempts = 0;
        loop {
            let res = sled::Config::new()
                .path(paths::log(dir))
                .cache_capacity(config.storage.cache_capacity_bytes)
                .segment_size(config.storage.segment_bytes as usize)
                // Accepts flush explicitly; the background flush only bounds
                // how much analytics (rejected scans) a power cut can lose.
                .flush_every_ms(Some(config.storage.background_flush_ms).filter(|ms| *ms > 0))
                .open();
            match res {
                Err(sled::Error::Io(e))
                    if e.to_string().contains("could not acquire lock") && attempts < 150 =>
                {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => {
                    return other.map_err(ValidatorError::sled(
                        "open (is another process using this reader?)",
                    ))
                }
            }
        }
    }

    /// Opens a provisioned reader directory. `now_unix_s` is used to prune
    /// the replay cache and compact acknowledged records.
    pub fn open(dir: &Path, now_unix_s: u64) -> Result<Reader, ValidatorError> {
        Self::open_with(dir, now_unix_s, None)
    }

    // Longer than a screen: the fields of `Reader` are loaded and checked in order, each a few lines; the order (identity before state, state before the mark) is the point.
    fn open_with(
        dir: &Path,
        now_unix_s: u64,
        db: Option<sled::Db>,
    ) -> Result<Reader, ValidatorError> {
        let cfg_path = paths::config(dir);
        if !cfg_path.exists() || !paths::log(dir).exists() {
            return Err(ValidatorError::NotProvisioned {
                dir: dir.to_path_buf(),
            });
        }
        let config = ReaderConfig::load(&cfg_path)?;
        let key = read_signing_key_file(&paths::key(dir))?;
        let root = read_public_key_file(&paths::root_key(dir))?;
        let db = match db {
            Some(db) => db,
            None => Self::open_db(dir, &config)?,
        };
        // sled may have written a recovery snapshot and renamed it while
        // opening: make that durable before anything depends on it.
        let device = fare_durable::DeviceSync::open(&paths::log(dir), config.storage.device_sync)?;
        let tree = |name: &'static str| {
            db.open_tree(name)
                .map_err(ValidatorError::sled("open tree"))
        };
        let (rides, replay, meta, rejected) = (
            tree("rides")?,
            tree("replay")?,
            tree("meta")?,
            tree("rejected")?,
        );
        let get = |k: &[u8]| meta.get(k).map_err(ValidatorError::sled("read meta"));
        let identity: Identity = match get(META_IDENTITY)? {
            Some(v) => codec::decode("identity", &v)?,
            None => {
                return Err(ValidatorError::NotProvisioned {
                    dir: dir.to_path_buf(),
                })
            }
        };
        if identity.reader_id != config.reader.reader_id {
            return Err(ValidatorError::ReaderIdMismatch {
                config: config.reader.reader_id,
                stored: identity.reader_id,
            });
        }
        if identity.public_key != key.verifying_key().to_bytes() {
            return Err(ValidatorError::Key {
                path: paths::key(dir),
                why: "does not match the key this log was created with".into(),
            });
        }
        let saved: ReaderState = match get(META_STATE)? {
            Some(v) => codec::decode("reader state", &v)?,
            None => {
                return Err(ValidatorError::NotProvisioned {
                    dir: dir.to_path_buf(),
                })
            }
        };
        let installed = match get(META_BUNDLE)? {
            Some(v) => {
                let meta: BundleMeta = codec::decode("bundle meta", &v)?;
                let publisher = match get(META_PUBLISHER)? {
                    Some(p) => p.as_ref().try_into().map_err(|_| ValidatorError::Corrupt {
                        seq: 0,
                        why: format!("stored bundle publisher is {} bytes, not 16", p.len()),
                    })?,
                    None => fare_credential::bundle::V1_PUBLISHER,
                };
                Some(Self::load_installed(dir, meta, publisher)?)
            }
            None => None,
        };
        let rejected_next = match rejected
            .last()
            .map_err(ValidatorError::sled("read rejected"))?
        {
            Some((k, _)) => key_seq(&k) + 1,
            None => 0,
        };
        let rejected_count = rejected.len() as u64;
        let sync: crate::sync::SyncState = match get(META_SYNC)? {
            Some(v) => codec::decode("sync state", &v)?,
            None => crate::sync::SyncState::default(),
        };
        let (hwm, mark) = crate::hwm::HighWaterMark::open(dir, config.storage.device_sync)?;
        let cache = CredentialCache::new(config.storage.credential_cache_entries);
        let mut reader = Reader {
            dir: dir.to_path_buf(),
            config,
            key,
            root,
            db,
            device,
            rides,
            replay,
            meta,
            rejected,
            state: saved,
            replay_cache: ReplayCache::default(),
            installed,
            cache,
            rejected_next,
            rejected_count,
            last_prune_unix_s: 0,
            failed: None,
            hwm,
            damaged: None,
            sync,
            // Only distinctness matters (settlement refuses a (time, nonce)
            // it saw from this reader): a random start keeps a restarted
            // process from repeating the last one's nonces within a second.
            request_nonce: rand_core::RngCore::next_u64(&mut rand_core::OsRng),
            request_offset_s: None,
        };
        reader.roll_state_forward()?;
        reader.check_high_water_mark(mark)?;
        reader.rebuild_replay_cache(now_unix_s)?;
        reader.maintenance(now_unix_s)?;
        Ok(reader)
    }

    /// Brings the saved state up to the log: walks the records written after
    /// the saved copy (at most about [`STATE_SAVE_EVERY`] plus whatever a
    /// crash kept from being saved), checking that they are contiguous and
    /// chained from the saved chain head, and adds them to the counters.
    /// Cheap consistency check at open; `verify_chain` walks everything.
    // Longer than a screen: one walk with its three consistency checks side by side.
    fn roll_state_forward(&mut self) -> Result<(), ValidatorError> {
        let saved = self.state.clone();
        let saved_last = saved.next_seq - 1;
        let corrupt = |seq: u64, why: String| ValidatorError::Corrupt { seq, why };
        let last_seq = match self
            .rides
            .last()
            .map_err(ValidatorError::sled("read last ride"))?
        {
            None if saved_last < saved.oldest_seq => return Ok(()),
            None => {
                return Err(corrupt(
                    saved_last,
                    "state names rides but the log is empty".into(),
                ))
            }
            Some((k, _)) => key_seq(&k),
        };
        if last_seq < saved_last {
            return Err(corrupt(
                last_seq,
                format!("last record is {last_seq} but the state names rides up to {saved_last}"),
            ));
        }
        let mut next = saved.clone();
        // The saved head is the hash of record `saved_last` (if still held:
        // compaction may have removed it; then the next record must chain
        // to it, which the loop checks).
        let from = saved_last.max(saved.oldest_seq).max(1);
        for kv in self.rides.range(from.to_be_bytes()..) {
            let (k, v) = kv.map_err(ValidatorError::sled("read rides"))?;
            let seq = key_seq(&k);
            if seq == saved_last {
                if record_hash(&v) != saved.chain_head {
                    return Err(corrupt(
                        seq,
                        "record does not hash to the saved chain head".into(),
                    ));
                }
                continue;
            }
            if seq != next.next_seq {
                return Err(corrupt(
                    seq,
                    format!("expected record {} after the saved state", next.next_seq),
                ));
            }
            let rec = RideRecord::decode_v1(&v)?;
            if rec.reader_seq != seq || rec.prev_hash != next.chain_head {
                return Err(corrupt(seq, "does not chain to the previous record".into()));
            }
            next.next_seq = seq + 1;
            next.chain_head = record_hash(&v);
            next.used_bytes += v.len() as u64;
        }
        if next != saved {
            tracing::debug!(
                from = saved.next_seq,
                to = next.next_seq,
                "reader state rolled forward over the log tail"
            );
            self.state = next;
            self.save_state()?;
            self.durable("flush state")?;
        }
        Ok(())
    }

    /// Compares the log with its high-water mark. A log ending below the
    /// mark, or holding another record at it, lost accepted rides (a
    /// damaged or truncated tail): the reader then refuses every ride,
    /// naming the missing range, and never reuses those sequences. A log one
    /// record past the mark is a power cut between the ride's durability
    /// point and its mark (that ride was not answered yet); the mark catches up.
    fn check_high_water_mark(
        &mut self,
        mark: Option<crate::hwm::Mark>,
    ) -> Result<(), ValidatorError> {
        let last = self.state.next_seq - 1;
        let here = crate::hwm::Mark {
            seq: last,
            chain_hash: self.state.chain_head,
        };
        let Some(mark) = mark else {
            // A reader made before the mark existed, or a new one.
            if last > 0 {
                tracing::warn!(last, "no high-water mark yet: starting it at the log's end");
            }
            return self.hwm.reset(&here);
        };
        let damage = if last < mark.seq {
            Some((
                last + 1,
                format!(
                    "the log ends at {last} but its high-water mark is {}",
                    mark.seq
                ),
            ))
        } else {
            match self.chain_hash_at(mark.seq)? {
                Some(h) if h != mark.chain_hash => Some((
                    mark.seq,
                    format!(
                        "record {} differs from the one the high-water mark names",
                        mark.seq
                    ),
                )),
                _ => None,
            }
        };
        if let Some((from, why)) = damage {
            let e = ValidatorError::LogBehind {
                missing_from: from,
                missing_to: mark.seq,
                why,
            };
            tracing::error!(error = %e, "ride log damaged: refusing rides");
            self.failed = Some(e.to_string());
            self.damaged = Some(e);
            return Ok(());
        }
        if last > mark.seq {
            self.hwm.record(&here)?;
        }
        Ok(())
    }

    /// The chain hash of record `seq` as this log holds it: the genesis
    /// hash for 0, the head for the last record, else from the record (or
    /// its successor's `prev_hash`). `None` when compaction removed both or
    /// `seq` is beyond the log.
    pub fn chain_hash_at(&self, seq: u64) -> Result<Option<[u8; 32]>, ValidatorError> {
        let last = self.state.next_seq - 1;
        if seq > last {
            return Ok(None);
        }
        if seq == last {
            return Ok(Some(self.state.chain_head));
        }
        if seq == 0 {
            return Ok(Some(genesis_hash(self.reader_id())));
        }
        if let Some(v) = self
            .rides
            .get(seq.to_be_bytes())
            .map_err(ValidatorError::sled("read ride"))?
        {
            return Ok(Some(record_hash(&v)));
        }
        match self
            .rides
            .get((seq + 1).to_be_bytes())
            .map_err(ValidatorError::sled("read ride"))?
        {
            Some(v) => Ok(Some(RideRecord::decode_v1(&v)?.prev_hash)),
            None => Ok(None),
        }
    }

    /// Rebuilds the in-memory replay cache: the spilled entries, then the
    /// log read backwards while its codes could still pass. Reader time is
    /// non-decreasing along the log except when the clock steps back; the
    /// scan goes `replay_grace_s` further than strictly needed so a step
    /// back of up to that much cannot hide a live code behind a newer ride.
    fn rebuild_replay_cache(&mut self, now: u64) -> Result<(), ValidatorError> {
        let mut cache = ReplayCache::default();
        for kv in self.replay.iter() {
            let (k, v) = kv.map_err(ValidatorError::sled("read replay spill"))?;
            let e: ReplayEntry = codec::decode("replay entry", &v)?;
            if now <= e.prune_after_unix_s && !cache.insert_spilled(&k, e) {
                tracing::warn!(key = %hex::encode(&k), "unknown replay spill key ignored");
            }
        }
        let p = self.config.policy;
        let horizon_s =
            p.code_validity_s + 2 * p.skew_tolerance_s + 2 * self.config.storage.replay_grace_s;
        let mut scanned = 0u64;
        for kv in self.rides.iter().rev() {
            let (_, v) = kv.map_err(ValidatorError::sled("read rides"))?;
            let rec = RideRecord::decode_v1(&v)?;
            if rec.reader_time_unix_s.saturating_add(horizon_s) < now {
                break;
            }
            scanned += 1;
            if let Some((keys, e)) = self.live_replay_entry(&rec, now) {
                cache.insert(&keys, e);
            }
        }
        tracing::debug!(
            scanned,
            entries = cache.len(),
            "replay cache rebuilt from the log"
        );
        self.replay_cache = cache;
        Ok(())
    }
}

/// Works around a sled 0.34.7 crash-recovery bug found by this crate's crash
/// test: sled writes a snapshot to `snap.<lsn>.generating`, fsyncs it, then
/// renames it to `snap.<lsn>`; but at open it only ignores files ending in
/// `.in___motion`, so a process killed while writing a snapshot leaves a
/// torn `.generating` file that sled then reads, failing every later open
/// with `Corruption { at: None }`. A `.generating` file was by construction
/// never committed (the rename did not happen, and older snapshots are only
/// deleted after it), so removing it before open is safe: sled recovers
/// from the previous snapshot and the log, as it would had the kill come a
/// moment earlier.
fn remove_torn_snapshots(log_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(log_dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            tracing::warn!(file = %name, "removing torn sled snapshot left by a crash");
            let _ = std::fs::remove_file(e.path());
        }
    }
}
