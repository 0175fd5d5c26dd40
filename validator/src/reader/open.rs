//! Provisioning and opening a reader directory: the state rolled forward
//! over the log tail, the high-water-mark check, the replay cache rebuilt.

use super::*;

impl Reader {
    /// Provisions a new reader in `dir` (created if missing): writes the key
    /// (0600), the root key, the config with every default, creates the log
    /// and installs the first bundle. The bundle is verified before anything
    /// is written, so a bad bundle leaves the directory untouched.
    ///
    /// The order is the durability order: the files (key, public key, root,
    /// config), the directory synced, the log with the identity and a
    /// first state flushed, the directory synced again; only then the open
    /// and the bundle install.
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
        write_provisioned_files(dir, &config, &root, &key)?;
        fare_durable::sync_dir(dir)?;
        let db = Self::create_log(dir, &config, &key)?;
        // The files provisioning wrote, and `log/`, are entries of `dir`;
        // opening syncs the log's own directory and data file.
        fare_durable::sync_dir(dir)?;
        let mut reader = Reader::open_with(dir, now_unix_s, Some(db))?;
        reader.install_bundle(bundle_bytes, now_unix_s)?;
        tracing::info!(reader_id = config.reader.reader_id, dir = %dir.display(), "reader provisioned");
        Ok(reader)
    }

    /// A new log holding the reader's identity and an empty state, flushed.
    fn create_log(
        dir: &Path,
        config: &ReaderConfig,
        key: &SigningKey,
    ) -> Result<sled::Db, ValidatorError> {
        let db = Self::open_db(dir, config)?;
        let meta = db
            .open_tree("meta")
            .map_err(ValidatorError::sled("open meta"))?;
        let identity = Identity {
            reader_id: config.reader.reader_id,
            public_key: key.verifying_key().to_bytes(),
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
        Ok(db)
    }

    fn open_db(dir: &Path, config: &ReaderConfig) -> Result<sled::Db, ValidatorError> {
        remove_torn_snapshots(&paths::log(dir));
        let sled_config = sled::Config::new()
            .path(paths::log(dir))
            .cache_capacity(config.storage.cache_capacity_bytes)
            .segment_size(config.storage.segment_bytes as usize)
            // Accepts flush explicitly; the background flush only bounds
            // how much analytics (rejected scans) a power cut can lose.
            .flush_every_ms(Some(config.storage.background_flush_ms).filter(|ms| *ms > 0));
        // A restarting reader waits, boundedly, for the lock its previous
        // instance's sled threads may still hold.
        let wait = std::time::Duration::from_millis(LOG_LOCK_WAIT_MS);
        fare_durable::open_waiting_for_lock(&sled_config, wait).map_err(ValidatorError::sled(
            "open (is another process using this reader?)",
        ))
    }

    /// Opens a provisioned reader directory. `now_unix_s` is used to prune
    /// the replay cache and compact acknowledged records.
    pub fn open(dir: &Path, now_unix_s: u64) -> Result<Reader, ValidatorError> {
        Self::open_with(dir, now_unix_s, None)
    }

    /// Opens the reader in `dir` (over `db` when provisioning just opened
    /// it), then brings it up to its log: state rolled forward, the
    /// high-water mark checked, the replay cache rebuilt, maintenance run.
    fn open_with(
        dir: &Path,
        now_unix_s: u64,
        db: Option<sled::Db>,
    ) -> Result<Reader, ValidatorError> {
        let cfg_path = paths::config(dir);
        if !cfg_path.exists() || !paths::log(dir).exists() {
            return Err(not_provisioned(dir));
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
        let (mut reader, ring) = Self::load(dir, config, key, root, db, device)?;
        // Before anything reads the log: the rides the ring holds and
        // sled lost to a power cut go back in (see `crate::hwm`).
        reader.repair_from_ring(&ring)?;
        reader.roll_state_forward()?;
        reader.check_high_water_mark(ring.mark())?;
        reader.rebuild_replay_cache(now_unix_s)?;
        reader.maintenance(now_unix_s)?;
        Ok(reader)
    }

    /// The reader as its log saved it (identity checked against the
    /// config and key first, then the state, bundle, rejected-scan
    /// position and sync state), and the high-water mark as last written.
    // Longer than a screen: two thirds of it is the `Reader` literal, one field a line.
    fn load(
        dir: &Path,
        config: ReaderConfig,
        key: SigningKey,
        root: VerifyingKey,
        db: sled::Db,
        device: fare_durable::DeviceSync,
    ) -> Result<(Reader, crate::hwm::RingContents), ValidatorError> {
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
        let identity: Identity =
            read_meta(&meta, META_IDENTITY, "identity")?.ok_or_else(|| not_provisioned(dir))?;
        check_identity(dir, &identity, &config, &key)?;
        let saved: ReaderState =
            read_meta(&meta, META_STATE, "reader state")?.ok_or_else(|| not_provisioned(dir))?;
        let installed = Self::load_installed_meta(dir, &meta)?;
        let (rejected_next, rejected_count) = rejected_position(&rejected)?;
        let sync = read_meta(&meta, META_SYNC, "sync state")?.unwrap_or_default();
        let (ring, contents) = crate::hwm::RideRing::open(dir, config.storage.device_sync)?;
        let cache = CredentialCache::new(config.storage.credential_cache_entries);
        let reader = Reader {
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
            rejected_flushed_unix_s: 0,
            last_prune_unix_s: 0,
            failed: None,
            ring,
            // `DeviceSync::open` just synced sled's data file: whatever
            // sled recovered is on the device (set to the log's end after
            // the repair).
            sled_durable_through: std::sync::atomic::AtomicU64::new(0),
            repaired_from_ring: 0,
            damaged: None,
            sync,
            // Only distinctness matters (settlement refuses a (time, nonce)
            // it saw from this reader): a random start keeps a restarted
            // process from repeating the last one's nonces within a second.
            request_nonce: rand_core::RngCore::next_u64(&mut rand_core::OsRng),
            request_offset_s: None,
            ack_certs: Default::default(),
        };
        Ok((reader, contents))
    }

    /// The installed bundle the `meta` tree names (its deny list read from
    /// its file), or `None` before the first install.
    fn load_installed_meta(
        dir: &Path,
        meta: &sled::Tree,
    ) -> Result<Option<Installed>, ValidatorError> {
        let (bundle_meta, tariff) = match read_meta::<BundleMeta>(meta, META_BUNDLE, "bundle meta")?
        {
            Some(m) => {
                let tariff = read_tariff_file(dir, &m)?;
                (m, tariff)
            }
            None => match read_meta::<BundleMetaV1>(meta, META_BUNDLE_V1, "bundle meta v1")? {
                Some(v1) => v1.upgrade(),
                None => return Ok(None),
            },
        };
        let publisher = match meta
            .get(META_PUBLISHER)
            .map_err(ValidatorError::sled("read meta"))?
        {
            Some(p) => p.as_ref().try_into().map_err(|_| ValidatorError::Corrupt {
                seq: 0,
                why: format!("stored bundle publisher is {} bytes, not 16", p.len()),
            })?,
            None => fare_credential::bundle::V1_PUBLISHER,
        };
        Ok(Some(Self::load_installed(
            dir,
            bundle_meta,
            tariff,
            publisher,
        )?))
    }

    /// Re-inserts into sled the valid ring entries it lacks (a power cut
    /// after the ring's `fdatasync` and before sled's data reached the
    /// device): ascending, same sequence and bytes, each only if it is a
    /// record of this reader under that sequence and chains to the record
    /// before it (from the log, the ring, or the saved state's head). The
    /// first entry that fails stops the repair: what is left missing below
    /// the mark is then reported as damage by the mark check. Entries below
    /// the saved `oldest_seq` were compacted and are skipped. Ends with a
    /// full device sync, so the repaired rides no longer depend on the ring.
    fn repair_from_ring(&mut self, ring: &crate::hwm::RingContents) -> Result<(), ValidatorError> {
        let floor = self.state.oldest_seq.max(1);
        let mut inserted = 0u64;
        let mut prev: Option<(u64, [u8; 32])> = None;
        for e in ring.entries.iter().filter(|e| e.seq >= floor) {
            let held = self
                .rides
                .get(e.seq.to_be_bytes())
                .map_err(ValidatorError::sled("read ride"))?;
            if held.is_some() {
                prev = Some((e.seq, record_hash(&e.record)));
                continue;
            }
            let expected_prev = match prev {
                Some((s, h)) if s + 1 == e.seq => Some(h),
                _ => self.chain_hash_before(e.seq)?,
            };
            let rec = match RideRecord::decode_v1(&e.record) {
                Ok(r) => r,
                Err(err) => {
                    tracing::error!(seq = e.seq, error = %err, "ring entry does not decode: repair stops");
                    break;
                }
            };
            if rec.reader_seq != e.seq
                || rec.reader_id != self.reader_id()
                || Some(rec.prev_hash) != expected_prev
            {
                tracing::error!(
                    seq = e.seq,
                    "ring entry does not chain to the log: repair stops"
                );
                break;
            }
            self.rides
                .insert(e.seq.to_be_bytes(), e.record.as_slice())
                .map_err(ValidatorError::sled("re-insert ride from ring"))?;
            inserted += 1;
            prev = Some((e.seq, record_hash(&e.record)));
        }
        if inserted > 0 {
            self.db
                .flush()
                .map_err(ValidatorError::sled("flush rides from ring"))?;
            self.device.sync()?;
            tracing::warn!(
                rides = inserted,
                "re-inserted rides from the ring that sled lost to a power cut"
            );
        }
        self.repaired_from_ring = inserted;
        Ok(())
    }

    /// The chain hash ride `seq` must name as its `prev_hash`, as the log
    /// or the saved state knows it (`None`: unknown).
    fn chain_hash_before(&self, seq: u64) -> Result<Option<[u8; 32]>, ValidatorError> {
        let before = seq - 1;
        if before == 0 {
            return Ok(Some(genesis_hash(self.reader_id())));
        }
        if before == self.state.next_seq - 1 {
            return Ok(Some(self.state.chain_head));
        }
        Ok(self
            .rides
            .get(before.to_be_bytes())
            .map_err(ValidatorError::sled("read ride"))?
            .map(|v| record_hash(&v)))
    }

    /// Brings the saved state up to the log: walks the records written after
    /// the saved copy (at most about [`STATE_SAVE_EVERY`] plus whatever a
    /// crash kept from being saved), checking that they are contiguous and
    /// chained from the saved chain head, and adds them to the counters.
    /// Cheap consistency check at open; `verify_chain` walks everything.
    fn roll_state_forward(&mut self) -> Result<(), ValidatorError> {
        let saved = self.state.clone();
        if !self.log_reaches_saved_state(&saved)? {
            return Ok(());
        }
        let next = self.walk_tail(&saved)?;
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

    /// Whether the log holds rides to walk: `false` for an empty log the
    /// saved state agrees with; an error when the log ends before the rides
    /// the saved state names.
    fn log_reaches_saved_state(&self, saved: &ReaderState) -> Result<bool, ValidatorError> {
        let saved_last = saved.next_seq - 1;
        let corrupt = |seq: u64, why: String| ValidatorError::Corrupt { seq, why };
        let last_seq = match self
            .rides
            .last()
            .map_err(ValidatorError::sled("read last ride"))?
        {
            None if saved_last < saved.oldest_seq => return Ok(false),
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
        Ok(true)
    }

    /// `saved` advanced over the records after it, each checked: the
    /// record at the saved head hashes to it, the later ones are
    /// contiguous and chained.
    fn walk_tail(&self, saved: &ReaderState) -> Result<ReaderState, ValidatorError> {
        let saved_last = saved.next_seq - 1;
        let corrupt = |seq: u64, why: String| ValidatorError::Corrupt { seq, why };
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
        Ok(next)
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
            self.sled_durable_through.store(last, Ordering::Relaxed);
            return self.ring.reset(&here);
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
            // The ride past the mark reached sled but not (intact) the ring:
            // never answered, kept. sled is durable through it (the open
            // synced it), so a bare mark suffices.
            self.ring.reset(&here)?;
        }
        self.sled_durable_through.store(last, Ordering::Relaxed);
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

/// The files of a new reader: its key (0600), public key, the root key
/// and the config with every default.
fn write_provisioned_files(
    dir: &Path,
    config: &ReaderConfig,
    root: &VerifyingKey,
    key: &SigningKey,
) -> Result<(), ValidatorError> {
    let hex_line = |b: &[u8]| format!("{}\n", hex::encode(b));
    write_new_file(
        &paths::key(dir),
        hex_line(&key.to_bytes()).as_bytes(),
        0o600,
    )?;
    write_new_file(
        &paths::public_key(dir),
        hex_line(key.verifying_key().as_bytes()).as_bytes(),
        0o644,
    )?;
    write_new_file(
        &paths::root_key(dir),
        hex_line(root.as_bytes()).as_bytes(),
        0o644,
    )?;
    write_new_file(&paths::config(dir), config.to_toml().as_bytes(), 0o644)
}

/// The next rejected-scan key and how many the `rejected` tree holds.
fn rejected_position(rejected: &sled::Tree) -> Result<(u64, u64), ValidatorError> {
    let next = match rejected
        .last()
        .map_err(ValidatorError::sled("read rejected"))?
    {
        Some((k, _)) => key_seq(&k) + 1,
        None => 0,
    };
    Ok((next, rejected.len() as u64))
}

fn not_provisioned(dir: &Path) -> ValidatorError {
    ValidatorError::NotProvisioned {
        dir: dir.to_path_buf(),
    }
}

/// The installed tariff: the file `meta` names, refused past
/// [`fare_credential::bundle::MAX_TARIFF_BYTES`] or when it does not have
/// the digest `meta` recorded.
fn read_tariff_file(dir: &Path, meta: &BundleMeta) -> Result<Vec<u8>, ValidatorError> {
    let path = dir.join(&meta.tariff_file);
    let file = std::fs::File::open(&path).map_err(io("open tariff", &path))?;
    let limit = fare_credential::bundle::MAX_TARIFF_BYTES as u64;
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(io("read tariff", &path))?;
    let why = if bytes.len() as u64 > limit {
        format!("tariff file {} is over {limit} bytes", path.display())
    } else if fare_credential::bundle::tariff_digest(&bytes) != meta.tariff_digest {
        format!(
            "tariff file {} does not match its recorded digest",
            path.display()
        )
    } else {
        return Ok(bytes);
    };
    Err(ValidatorError::Corrupt { seq: 0, why })
}

/// The value at `key` of the `meta` tree, decoded as a `what`.
fn read_meta<T: serde::de::DeserializeOwned>(
    meta: &sled::Tree,
    key: &[u8],
    what: &'static str,
) -> Result<Option<T>, ValidatorError> {
    match meta.get(key).map_err(ValidatorError::sled("read meta"))? {
        Some(v) => Ok(Some(codec::decode(what, &v)?)),
        None => Ok(None),
    }
}

/// The log was made by this reader: the config's reader id and the key
/// file's key are the ones stored at provisioning.
fn check_identity(
    dir: &Path,
    identity: &Identity,
    config: &ReaderConfig,
    key: &SigningKey,
) -> Result<(), ValidatorError> {
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
    Ok(())
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
