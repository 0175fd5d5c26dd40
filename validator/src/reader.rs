//! The reader: state on disk, the decision pipeline, the bundle, uploads.
//!
//! Files in a reader directory:
//!
//! | file | what |
//! |---|---|
//! | `reader.toml` | config ([`ReaderConfig`]) |
//! | `reader.key` | reader signing key, 64 hex chars, mode 0600 |
//! | `reader.pub` | reader public key hex (register with settlement) |
//! | `root.pub` | deployment root public key hex (verifies bundles) |
//! | `deny-<version>.bin` | the installed deny list: sorted 16-byte ids |
//! | `log/` | sled database: trees `rides`, `meta`, `replay` (spill), `rejected` |
//! | `log.hwm` | high-water mark of the log: last sequence and chain hash ([`crate::hwm`]) |
//!
//! Durability: an accept is answered only after the ride record's single
//! sled insert, `Db::flush()` and an `fdatasync` of sled's data file
//! ([`fare_durable::DeviceSync`]) returned: `flush()` alone ends in
//! `sync_file_range`, which a power cut can undo. Everything else the accept changes
//! (next sequence, chain head, used bytes, the replay cache) is derived from
//! the log, so it need not be written with the ride: the reader state is
//! saved every [`STATE_SAVE_EVERY`] rides and rolled forward over the log's
//! tail at open, and the in-memory replay cache is rebuilt from the tail.

use crate::config::ReaderConfig;
use crate::decision::{Decision, Outcome, RideId, Stage, StageTimes};
use crate::error::{BundleError, ValidatorError};
use crate::replay::{ReplayCache, ReplayEntry, ReplayKeys};
use fare_credential::codec;
use fare_credential::keys::parse_public_key;
use fare_credential::record::{genesis_hash, record_hash};
use fare_credential::trust::IssuerKey;
use fare_credential::verify::{
    credential_stage, deny_stage, device_stage, parse_stage, time_stage,
};
use fare_credential::{
    Batch, CredentialCache, CredentialId, DenyList, DenyUpdate, ReaderBundle, RejectReason,
    RideCode, RideRecord, SigningKey, TrustList, VerifyingKey,
};
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

const META_STATE: &[u8] = b"state";
const META_IDENTITY: &[u8] = b"identity";
const META_BUNDLE: &[u8] = b"bundle";
const META_SYNC: &[u8] = b"sync";
/// Replay entries are pruned at most this often (seconds of reader time).
const PRUNE_INTERVAL_S: u64 = 60;
/// The reader state is saved after every this many accepted rides (not
/// flushed: the next ride's flush carries it). It bounds how much of the
/// log's tail an open rolls the state forward over; it is not needed for
/// correctness, since the state is a function of the log.
pub const STATE_SAVE_EVERY: u64 = 256;
/// Records removed per compaction transaction (bounds its memory).
pub const COMPACT_CHUNK_RECORDS: u64 = 1024;

/// The reader's persistent counters. A function of the ride log: saved
/// periodically, at compaction and at acknowledgement, and rolled forward
/// over the records written after the saved copy when the log is opened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReaderState {
    /// Sequence the next accepted ride gets (starts at 1).
    pub next_seq: u64,
    /// Chain hash of the last record (genesis hash before the first).
    pub chain_head: [u8; 32],
    /// Highest sequence settlement acknowledged (0: none).
    pub acked_up_to: u64,
    /// Lowest sequence still in the log (compaction removes below it).
    pub oldest_seq: u64,
    /// Sum of the encoded sizes of the records in the log.
    pub used_bytes: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Identity {
    reader_id: u32,
    public_key: [u8; 32],
}

/// What is stored about the installed bundle (the deny list lives in its own file).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct BundleMeta {
    version: u64,
    server_time_unix_s: u64,
    installed_at_unix_s: u64,
    trust: Vec<IssuerKey>,
    tariff: Vec<u8>,
    deny_file: String,
    deny_count: u64,
    deny_blake3: [u8; 32],
}

/// A rejected scan, kept (bounded) for analytics. Holds no code bytes: only
/// their digest, so the analytics log carries no rider pseudonym.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedScan {
    /// Reader time.
    pub at_unix_s: u64,
    /// Stable reason code.
    pub reason: String,
    /// Human message.
    pub message: String,
    /// blake3 of the scanned bytes (empty when no code was found).
    pub payload_blake3: Option<[u8; 32]>,
    /// Scanned length.
    pub payload_len: u32,
}

struct Installed {
    meta: BundleMeta,
    trust: TrustList,
    deny: DenyList,
}

/// Reader status for `status` and monitoring.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    /// Reader id.
    pub reader_id: u32,
    /// Reader public key hex.
    pub public_key: String,
    /// Vehicle.
    pub vehicle: String,
    /// Route.
    pub route: String,
    /// Rides accepted since provisioning.
    pub rides_total: u64,
    /// Next sequence.
    pub next_seq: u64,
    /// Highest acknowledged sequence.
    pub acked_up_to: u64,
    /// Rides not yet acknowledged.
    pub unacked: u64,
    /// Lowest sequence still held.
    pub oldest_seq: u64,
    /// Logical log size.
    pub used_bytes: u64,
    /// Configured limit.
    pub max_log_bytes: u64,
    /// Installed bundle version.
    pub bundle_version: u64,
    /// Bundle age by the reader clock at `now`.
    pub bundle_age_s: u64,
    /// `ok`, `aging` (warn) or `stale` (refusing rides).
    pub trust_state: &'static str,
    /// Reader clock minus settlement clock when the bundle was installed
    /// (positive: reader ahead).
    pub clock_offset_at_install_s: i64,
    /// Trusted issuer keys.
    pub trust_keys: usize,
    /// Deny-list entries.
    pub deny_entries: usize,
    /// Replay-cache entries (two per ride still within validity).
    pub replay_entries: usize,
    /// Rejected scans held.
    pub rejected_entries: u64,
    /// Chain head hex.
    pub chain_head: String,
    /// Why the reader refuses every ride, when it does (damaged log,
    /// storage failure); `None` while it decides normally.
    pub refusing: Option<String>,
    /// Upload state: fork, settlement behind, last contact, last error,
    /// clock offset, refused acknowledgements.
    pub sync: crate::sync::SyncState,
    /// `ok`, `forked`, `settlement_behind` or `log_damaged`.
    pub sync_state: &'static str,
    /// Reader time of the oldest unacknowledged ride, when there is one.
    pub oldest_pending_unix_s: Option<u64>,
}

/// An open reader. One process at a time (sled locks the log).
pub struct Reader {
    dir: PathBuf,
    config: ReaderConfig,
    key: SigningKey,
    root: VerifyingKey,
    db: sled::Db,
    /// The sync after `flush()` that reaches the device.
    device: fare_durable::DeviceSync,
    rides: sled::Tree,
    /// Replay entries of records compacted while their code could still
    /// pass (rare: only an early compaction of a full log does it).
    replay: sled::Tree,
    meta: sled::Tree,
    rejected: sled::Tree,
    state: ReaderState,
    replay_cache: ReplayCache,
    installed: Option<Installed>,
    cache: CredentialCache,
    rejected_next: u64,
    rejected_count: u64,
    last_prune_unix_s: u64,
    failed: Option<String>,
    /// The log's high-water mark, written after each accept's durability point.
    hwm: crate::hwm::HighWaterMark,
    /// Set when the log was found below its high-water mark at open.
    damaged: Option<ValidatorError>,
    /// Upload state (fork, last contact, ...), persisted in `meta`.
    sync: crate::sync::SyncState,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("dir", &self.dir)
            .field("reader_id", &self.config.reader.reader_id)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

/// Maps an I/O error to [`ValidatorError::Io`] naming what was done to which file.
pub(crate) fn io<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> ValidatorError + 'a {
    move |source| ValidatorError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Reads a file holding a 32-byte public key as 64 hex characters.
pub fn read_public_key_file(path: &Path) -> Result<VerifyingKey, ValidatorError> {
    let text = std::fs::read_to_string(path).map_err(io("read public key", path))?;
    let key_err = |why: String| ValidatorError::Key {
        path: path.to_path_buf(),
        why,
    };
    let bytes = hex::decode(text.trim())
        .map_err(|e| key_err(format!("expected 64 hex characters: {e}")))?;
    parse_public_key(&bytes).map_err(|e| key_err(e.to_string()))
}

fn read_signing_key_file(path: &Path) -> Result<SigningKey, ValidatorError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path).map_err(io("stat reader key", path))?;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %path.display(), "reader key is readable by group or others; chmod 600 it");
        }
    }
    let text = std::fs::read_to_string(path).map_err(io("read reader key", path))?;
    let bytes = hex::decode(text.trim()).map_err(|e| ValidatorError::Key {
        path: path.to_path_buf(),
        why: format!("expected 64 hex characters: {e}"),
    })?;
    let arr: [u8; 32] = bytes.try_into().map_err(|v: Vec<u8>| ValidatorError::Key {
        path: path.to_path_buf(),
        why: format!("expected 32 bytes, found {}", v.len()),
    })?;
    Ok(SigningKey::from_bytes(&arr))
}

fn write_new_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), ValidatorError> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = opts.open(path).map_err(io("create", path))?;
    f.write_all(contents).map_err(io("write", path))?;
    f.sync_all().map_err(io("sync", path))?;
    Ok(())
}

fn abort_txn(e: TransactionError<()>) -> sled::Error {
    match e {
        TransactionError::Storage(e) => e,
        TransactionError::Abort(()) => sled::Error::Unsupported("transaction aborted".into()),
    }
}

/// Paths inside a reader directory.
pub mod paths {
    use std::path::{Path, PathBuf};
    /// `reader.toml`.
    pub fn config(dir: &Path) -> PathBuf {
        dir.join("reader.toml")
    }
    /// `reader.key`.
    pub fn key(dir: &Path) -> PathBuf {
        dir.join("reader.key")
    }
    /// `reader.pub`.
    pub fn public_key(dir: &Path) -> PathBuf {
        dir.join("reader.pub")
    }
    /// `root.pub`.
    pub fn root_key(dir: &Path) -> PathBuf {
        dir.join("root.pub")
    }
    /// `log/` (sled).
    pub fn log(dir: &Path) -> PathBuf {
        dir.join("log")
    }
}

impl Reader {
    /// Provisions a new reader in `dir` (created if missing): writes the key
    /// (0600), the root key, the config with every default, creates the log
    /// and installs the first bundle. The bundle is verified before anything
    /// is written, so a bad bundle leaves the directory untouched.
    pub fn provision(
        dir: &Path,
        config: ReaderConfig,
        root: VerifyingKey,
        key: SigningKey,
        bundle_bytes: &[u8],
        now_unix_s: u64,
    ) -> Result<Reader, ValidatorError> {
        config.validate()?;
        ReaderBundle::verify_v1(bundle_bytes, &root).map_err(BundleError::from)?;
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
                // Accepts flush explicitly; the background flush only bounds
                // how much analytics (rejected scans) a power cut can lose.
                .flush_every_ms(Some(1000))
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
                Some(Self::load_installed(dir, meta)?)
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

    /// Why the log is damaged, when its high-water mark found it so at open.
    pub fn log_damage(&self) -> Option<&ValidatorError> {
        self.damaged.as_ref()
    }

    /// The upload state (persisted).
    pub fn sync_state(&self) -> &crate::sync::SyncState {
        &self.sync
    }

    /// Replaces the upload state. `durable`: wait for the device (a fork,
    /// which must survive a power cut); else the next flush carries it.
    pub fn set_sync_state(
        &mut self,
        state: crate::sync::SyncState,
        durable: bool,
    ) -> Result<(), ValidatorError> {
        self.meta
            .insert(META_SYNC, codec::encode("sync state", &state)?)
            .map_err(ValidatorError::sled("write sync state"))?;
        if durable {
            self.durable("flush sync state")?;
        }
        self.sync = state;
        Ok(())
    }

    /// The deployment root key (verifies bundles and acknowledgements).
    pub fn root_key(&self) -> &VerifyingKey {
        &self.root
    }

    /// Signs `domain || message` with the reader key (signed requests).
    pub fn sign_with_reader_key(&self, domain: &[u8], message: &[u8]) -> [u8; 64] {
        fare_credential::keys::sign_domain(&self.key, domain, message)
    }

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

    /// The replay keys and entry of a logged ride whose code could still
    /// pass at `now` (`None` once it cannot: then nothing needs to refuse it).
    fn live_replay_entry(&self, rec: &RideRecord, now: u64) -> Option<(ReplayKeys, ReplayEntry)> {
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

    /// Writes the in-memory state to `meta` (not flushed).
    fn save_state(&self) -> Result<(), ValidatorError> {
        self.meta
            .insert(META_STATE, codec::encode("reader state", &self.state)?)
            .map_err(ValidatorError::sled("write reader state"))?;
        Ok(())
    }

    fn load_installed(dir: &Path, meta: BundleMeta) -> Result<Installed, ValidatorError> {
        let path = dir.join(&meta.deny_file);
        let file = std::fs::File::open(&path).map_err(io("open deny list", &path))?;
        let mut r = BufReader::with_capacity(1 << 16, file);
        let mut ids = Vec::with_capacity(meta.deny_count as usize);
        let mut hasher = blake3::Hasher::new();
        let mut buf = [0u8; 16];
        for _ in 0..meta.deny_count {
            r.read_exact(&mut buf)
                .map_err(io("read deny list", &path))?;
            hasher.update(&buf);
            ids.push(CredentialId(buf));
        }
        let mut extra = [0u8; 1];
        let trailing = r.read(&mut extra).map_err(io("read deny list", &path))?;
        if trailing != 0 || *hasher.finalize().as_bytes() != meta.deny_blake3 {
            return Err(ValidatorError::Corrupt {
                seq: 0,
                why: format!(
                    "deny list {} does not match its recorded hash",
                    path.display()
                ),
            });
        }
        let trust = TrustList::new(meta.trust.iter().cloned()).map_err(BundleError::from)?;
        // The file is written sorted; from_ids re-sorts cheaply and dedups.
        let deny = DenyList::from_ids(ids);
        Ok(Installed { meta, trust, deny })
    }

    /// The configuration in use.
    pub fn config(&self) -> &ReaderConfig {
        &self.config
    }
    /// This reader's id.
    pub fn reader_id(&self) -> u32 {
        self.config.reader.reader_id
    }
    /// The reader's public key.
    pub fn public_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }
    /// The persistent counters.
    pub fn state(&self) -> &ReaderState {
        &self.state
    }
    /// Installed bundle version (0: none).
    pub fn bundle_version(&self) -> u64 {
        self.installed.as_ref().map_or(0, |i| i.meta.version)
    }
    /// Installed tariff bytes (UTF-8 JSON), if any.
    pub fn tariff(&self) -> Option<&[u8]> {
        self.installed.as_ref().map(|i| i.meta.tariff.as_slice())
    }
    /// Number of deny-list entries.
    pub fn deny_len(&self) -> usize {
        self.installed.as_ref().map_or(0, |i| i.deny.len())
    }

    // ---------------------------------------------------------------- bundle

    /// Verifies and installs a root-signed bundle. Refuses a bad signature,
    /// a version not newer than the installed one, and a delta from another
    /// base. Atomic: a crash leaves either the old or the new bundle.
    pub fn install_bundle(&mut self, bytes: &[u8], now_unix_s: u64) -> Result<u64, ValidatorError> {
        let bundle = ReaderBundle::verify_v1(bytes, &self.root).map_err(BundleError::from)?;
        let installed_version = self.bundle_version();
        if self.installed.is_some() {
            if bundle.bundle_version < installed_version {
                return Err(BundleError::Rollback {
                    installed: installed_version,
                    offered: bundle.bundle_version,
                }
                .into());
            }
            if bundle.bundle_version == installed_version {
                return Err(BundleError::NotNewer {
                    version: installed_version,
                }
                .into());
            }
        }
        let trust = TrustList::new(bundle.trust.iter().cloned()).map_err(BundleError::from)?;
        let deny = match bundle.deny {
            DenyUpdate::Snapshot(ids) => DenyList::from_ids(ids),
            DenyUpdate::Delta {
                base_version,
                add,
                remove,
            } => match &self.installed {
                Some(cur) if base_version == cur.meta.version => {
                    let mut d = cur.deny.clone();
                    d.apply_delta(&add, &remove);
                    d
                }
                _ => {
                    return Err(BundleError::DeltaBase {
                        installed: installed_version,
                        base: base_version,
                        offered: bundle.bundle_version,
                    }
                    .into())
                }
            },
        };
        // Deny list file first (fsynced, under a new name), then the meta
        // pointing at it in one sled write + flush; the old file goes last.
        let deny_file = format!("deny-{}.bin", bundle.bundle_version);
        let path = self.dir.join(&deny_file);
        let tmp = self.dir.join(format!("{deny_file}.tmp"));
        let mut hasher = blake3::Hasher::new();
        {
            let f = std::fs::File::create(&tmp).map_err(io("create deny list", &tmp))?;
            let mut w = std::io::BufWriter::with_capacity(1 << 16, f);
            for id in deny.ids() {
                hasher.update(&id.0);
                w.write_all(&id.0).map_err(io("write deny list", &tmp))?;
            }
            let f = w.into_inner().map_err(|e| ValidatorError::Io {
                what: "write deny list",
                path: tmp.clone(),
                source: e.into_error(),
            })?;
            f.sync_all().map_err(io("sync deny list", &tmp))?;
        }
        std::fs::rename(&tmp, &path).map_err(io("rename deny list", &path))?;
        fare_durable::sync_dir(&self.dir)?;
        let meta = BundleMeta {
            version: bundle.bundle_version,
            server_time_unix_s: bundle.server_time_unix_s,
            installed_at_unix_s: now_unix_s,
            trust: bundle.trust.clone(),
            tariff: bundle.tariff,
            deny_file: deny_file.clone(),
            deny_count: deny.len() as u64,
            deny_blake3: *hasher.finalize().as_bytes(),
        };
        self.meta
            .insert(META_BUNDLE, codec::encode("bundle meta", &meta)?)
            .map_err(ValidatorError::sled("write bundle meta"))?;
        self.durable("flush bundle meta")?;
        let old = self.installed.replace(Installed { meta, trust, deny });
        if let Some(old) = old {
            if old.meta.deny_file != deny_file {
                let _ = std::fs::remove_file(self.dir.join(&old.meta.deny_file));
            }
        }
        // A removed issuer key must stop verifying at once.
        self.cache.clear();
        let offset = now_unix_s as i64 - bundle.server_time_unix_s as i64;
        tracing::info!(
            version = bundle.bundle_version,
            deny = self.deny_len(),
            clock_offset_s = offset,
            "bundle installed"
        );
        if offset.unsigned_abs() > self.config.policy.skew_tolerance_s {
            tracing::warn!(
                clock_offset_s = offset,
                "reader clock disagrees with settlement's by more than the skew tolerance; fix the reader clock"
            );
        }
        Ok(bundle.bundle_version)
    }

    // -------------------------------------------------------------- decision

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

    fn pipeline(
        &mut self,
        bytes: &[u8],
        now: u64,
        st: &mut StageTimes,
        warnings: &mut Vec<&'static str>,
    ) -> Outcome {
        if let Some(message) = &self.failed {
            return Outcome::StorageError {
                message: message.clone(),
            };
        }
        let Some(inst) = &self.installed else {
            return Outcome::Rejected(RejectReason::NotProvisioned);
        };
        // Trust age first: with stale material nothing else can be trusted.
        let age = now.saturating_sub(inst.meta.server_time_unix_s);
        let tp = self.config.trust;
        if tp.reject_after_s > 0 && age > tp.reject_after_s {
            return Outcome::Rejected(RejectReason::TrustStale {
                bundle_age_s: age,
                max_age_s: tp.reject_after_s,
            });
        }
        if age > tp.warn_after_s {
            warnings.push("trust_aging");
        }
        macro_rules! stage {
            ($stage:expr, $e:expr) => {{
                let t = Instant::now();
                let r = $e;
                st.set($stage, t.elapsed().as_nanos() as u64);
                match r {
                    Ok(v) => v,
                    Err(reason) => return Outcome::Rejected(reason),
                }
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
        let cred = code.credential().body();
        let t = Instant::now();
        let r = self.append(&code, now, &keys);
        st.set(Stage::Append, t.elapsed().as_nanos() as u64);
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

    /// Appends the ride: one sled insert, then the durability point
    /// ([`Self::durable`]: `flush()` and `fdatasync`). The replay cache
    /// and the state change in memory as soon as the insert applied.
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
        self.durable("flush ride").map_err(AppendError::Storage)?;
        // After the ride is on the device, before the answer: the mark is
        // never ahead of the log (see `crate::hwm`).
        self.hwm
            .record(&crate::hwm::Mark {
                seq,
                chain_hash: chain_head,
            })
            .map_err(AppendError::Storage)?;
        if seq % STATE_SAVE_EVERY == 0 {
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
        // Analytics only: not flushed per scan (sled's background flush
        // bounds the loss to about a second), and failures never affect rides.
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

    // ----------------------------------------------------------- maintenance

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
    fn compact_inner(
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

    // --------------------------------------------------------------- uploads

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

    // ---------------------------------------------------------------- export

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

    /// Flushes everything (rejected-scan analytics included) to the device. Called on exit.
    pub fn flush(&self) -> Result<(), ValidatorError> {
        self.durable("flush")
    }

    /// The durability point: sled's `flush()`, then the `fdatasync` that
    /// reaches the device (see [`fare_durable`]). Nothing that depends on a
    /// write being durable (an accept, an acknowledgement, a new bundle)
    /// happens before this returned.
    fn durable(&self, what: &'static str) -> Result<(), ValidatorError> {
        self.db.flush().map_err(ValidatorError::sled(what))?;
        self.device.sync()?;
        Ok(())
    }
}

enum AppendError {
    Full { used_bytes: u64, limit_bytes: u64 },
    Storage(ValidatorError),
}

/// The sequence number a `rides` key holds (big-endian u64).
fn key_seq(k: &[u8]) -> u64 {
    u64::from_be_bytes(k.try_into().unwrap_or([0; 8]))
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
