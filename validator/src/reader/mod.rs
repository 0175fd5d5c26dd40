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
//! | `tariff-<digest prefix>.json` | the installed tariff's bytes, written when the tariff changes |
//! | `log/` | sled database: trees `rides`, `meta`, `replay` (spill), `rejected` |
//! | `log.ring` | write-ahead ring and high-water mark of the log: the last [`crate::hwm::RING_SLOTS`] ride records ([`crate::hwm`]) |
//!
//! Durability: an accept is answered only after the ride record's single
//! sled insert and `Db::flush()` returned and the record was written into
//! the ring `log.ring` and `fdatasync`ed there: one device flush per
//! accept. sled's `flush()` alone ends in `sync_file_range`, which a power
//! cut can undo; sled's data file is device-synced
//! ([`fare_durable::DeviceSync`]) at least every [`crate::hwm::RING_SLOTS`]
//! accepts and at every other durability point, and at open the rides the
//! ring holds and sled lost are re-inserted (see [`crate::hwm`] for the
//! invariants and the crash points). Everything else the accept changes
//! (next sequence, chain head, used bytes, the replay cache) is derived from
//! the log, so it need not be written with the ride: the reader state is
//! saved every [`STATE_SAVE_EVERY`] rides and rolled forward over the log's
//! tail at open, and the in-memory replay cache is rebuilt from the tail.

mod bundle;
mod compact;
mod decide;
mod inspect;
mod open;
mod upload;

use crate::config::ReaderConfig;
use crate::decision::{Decision, Outcome, RideId, Stage, StageTimes};
use crate::error::{BundleError, ValidatorError};
use crate::replay::{ReplayCache, ReplayEntry, ReplayKeys};
use fare_credential::bundle::PublishedBundle;
use fare_credential::codec;
use fare_credential::keys::parse_public_key;
use fare_credential::record::{genesis_hash, record_hash};
use fare_credential::trust::IssuerKey;
use fare_credential::verify::{
    credential_stage, deny_stage, device_stage, parse_stage, time_stage,
};
use fare_credential::{
    Batch, CredentialCache, CredentialId, DenyList, DenyUpdate, RejectReason, RideCode, RideRecord,
    SigningKey, TrustList, VerifyingKey,
};
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Instant;

const META_STATE: &[u8] = b"state";
const META_IDENTITY: &[u8] = b"identity";
/// The installed bundle's [`BundleMeta`] (the tariff in its own file).
const META_BUNDLE: &[u8] = b"bundle2";
/// The layout before `bundle2`: [`BundleMetaV1`], the tariff inline. Read at
/// open; the next install replaces it.
const META_BUNDLE_V1: &[u8] = b"bundle";
const META_SYNC: &[u8] = b"sync";
/// The installed bundle's publisher id (16 bytes; absent: the v1 line).
const META_PUBLISHER: &[u8] = b"bundle_publisher";
/// Replay entries are pruned at most this often (seconds of reader time).
const PRUNE_INTERVAL_S: u64 = 60;
/// The reader state is saved after every this many accepted rides (not
/// flushed: the next ride's flush carries it). It bounds how much of the
/// log's tail an open rolls the state forward over; it is not needed for
/// correctness, since the state is a function of the log.
pub const STATE_SAVE_EVERY: u64 = 256;
/// Records removed per compaction transaction (bounds its memory).
pub const COMPACT_CHUNK_RECORDS: u64 = 1024;
/// How long opening a reader waits for its log's lock, which the sled
/// threads of a reader just dropped in this process may still hold
/// (`fare_durable::open_waiting_for_lock`).
pub const LOG_LOCK_WAIT_MS: u64 = 3_000;

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

/// What is stored about the installed bundle (the deny list and the tariff
/// live in their own files). The tariff (tens of KB) is kept out of sled
/// because most installs change only the version and times: in this value
/// it was rewritten at every contact, and sled also logs the whole leaf of
/// the `meta` tree every few updates of any of its keys, so the same bytes
/// went into the reader's flash again and again.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct BundleMeta {
    version: u64,
    server_time_unix_s: u64,
    installed_at_unix_s: u64,
    trust: Vec<IssuerKey>,
    /// The tariff's file (`tariff-<digest prefix>.json`), written once per
    /// tariff; empty for a meta read from the [`META_BUNDLE_V1`] layout
    /// (the tariff was inline), until the next install writes the file.
    tariff_file: String,
    /// [`fare_credential::bundle::tariff_digest`] of the file's bytes
    /// (checked at open).
    tariff_digest: [u8; 32],
    deny_file: String,
    deny_count: u64,
    deny_blake3: [u8; 32],
}

/// The bundle meta as readers stored it under [`META_BUNDLE_V1`], the
/// tariff inline. Only read.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct BundleMetaV1 {
    version: u64,
    server_time_unix_s: u64,
    installed_at_unix_s: u64,
    trust: Vec<IssuerKey>,
    /// As one byte string: the same bytes as a sequence of `u8` under the
    /// codec's fixed-width lengths.
    #[serde(with = "serde_bytes")]
    tariff: Vec<u8>,
    deny_file: String,
    deny_count: u64,
    deny_blake3: [u8; 32],
}

impl BundleMeta {
    /// Whether the tariff is in its file (not: read from the
    /// [`META_BUNDLE_V1`] layout, whose next install writes the file and
    /// removes the old value).
    fn has_tariff_file(&self) -> bool {
        !self.tariff_file.is_empty()
    }
}

impl BundleMetaV1 {
    /// The meta and the tariff, as the current layout holds them (the
    /// tariff's file not written yet).
    fn upgrade(self) -> (BundleMeta, Vec<u8>) {
        let meta = BundleMeta {
            tariff_file: String::new(),
            version: self.version,
            server_time_unix_s: self.server_time_unix_s,
            installed_at_unix_s: self.installed_at_unix_s,
            trust: self.trust,
            tariff_digest: fare_credential::bundle::tariff_digest(&self.tariff),
            deny_file: self.deny_file,
            deny_count: self.deny_count,
            deny_blake3: self.deny_blake3,
        };
        (meta, self.tariff)
    }
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
    /// Who published it ([`fare_credential::bundle::V1_PUBLISHER`] for v1).
    publisher: [u8; fare_credential::bundle::PUBLISHER_ID_LEN],
    /// The tariff's bytes (`meta.tariff_digest` is their digest: what a
    /// bundle request names, v3). Shared: most installs keep it.
    tariff: std::sync::Arc<[u8]>,
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
    /// Reader time of the last `flush()` that covered the rejected scans.
    rejected_flushed_unix_s: u64,
    last_prune_unix_s: u64,
    failed: Option<String>,
    /// The write-ahead ring and high-water mark: each accept's record,
    /// synced (the accept's one device flush).
    ring: crate::hwm::RideRing,
    /// Highest sequence whose sled record is on the device (sled's data
    /// file was device-synced after its insert). The ring never overwrites
    /// a record above it ([`crate::hwm`], invariant I2).
    sled_durable_through: std::sync::atomic::AtomicU64,
    /// Rides re-inserted into sled from the ring at open.
    repaired_from_ring: u64,
    /// Set when the log was found below its high-water mark at open.
    damaged: Option<ValidatorError>,
    /// Upload state (fork, last contact, ...), persisted in `meta`.
    sync: crate::sync::SyncState,
    /// Nonce of the next signed request ([`Reader::sign_request`]).
    request_nonce: u64,
    /// Clock offset for time-stamping requests learnt from a `request_stale`
    /// refusal; cleared when a signed answer measures the offset.
    request_offset_s: Option<i64>,
    /// The acknowledgement-key certificate last verified under `root`.
    ack_certs: fare_credential::ack::AckKeyCertCache,
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
        if state.clock_offset_s.is_some() && state.clock_offset_s != self.sync.clock_offset_s {
            self.request_offset_s = None;
        }
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

    /// Verifies an acknowledgement under the root key
    /// ([`fare_credential::Ack::verify_v1`]), checking its certificate's
    /// root signature once per certificate.
    pub fn verify_ack(
        &mut self,
        bytes: &[u8],
    ) -> Result<fare_credential::Ack, fare_credential::FormatError> {
        fare_credential::Ack::verify_v1_cached(bytes, &self.root, &mut self.ack_certs)
    }

    /// Writes the in-memory state to `meta` (not flushed).
    fn save_state(&self) -> Result<(), ValidatorError> {
        self.meta
            .insert(META_STATE, codec::encode("reader state", &self.state)?)
            .map_err(ValidatorError::sled("write reader state"))?;
        Ok(())
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
        self.installed.as_ref().map(|i| &i.tariff[..])
    }
    /// [`fare_credential::bundle::tariff_digest`] of the installed tariff,
    /// if any: a bundle request names it so that settlement need not send
    /// the bytes again (SPEC §4.2).
    pub fn tariff_digest(&self) -> Option<[u8; 32]> {
        self.installed.as_ref().map(|i| i.meta.tariff_digest)
    }
    /// Number of deny-list entries.
    pub fn deny_len(&self) -> usize {
        self.installed.as_ref().map_or(0, |i| i.deny.len())
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
        let last = self.state.next_seq - 1;
        self.db.flush().map_err(ValidatorError::sled(what))?;
        self.device.sync()?;
        self.sled_durable_through.fetch_max(last, Ordering::Relaxed);
        Ok(())
    }

    /// The lazy `flush()` and device sync of sled's data file on the accept
    /// path, due when ride `seq`'s ring slot would otherwise overwrite a
    /// record sled has not made durable: every [`crate::hwm::RING_SLOTS`]
    /// accepts at most; it covers ride `seq` too (inserted just before).
    /// Only the data file: the
    /// ride records (≤ `MAX_RECORD_BYTES`, far below sled's 128 KiB blob
    /// threshold) are the only values written since the last full sync, and
    /// the one large value the reader writes (the bundle meta) is followed
    /// by a full sync at once, so `blobs/` need not be read here.
    fn sync_sled_if_due(&self, seq: u64) -> Result<(), ValidatorError> {
        let through = self.sled_durable_through.load(Ordering::Relaxed);
        if seq - through.min(seq) >= crate::hwm::RING_SLOTS {
            self.db
                .flush()
                .map_err(ValidatorError::sled("flush rides"))?;
            self.device.sync_data_file()?;
            self.sled_durable_through.fetch_max(seq, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Rides the open re-inserted into sled from the ring (the power cut
    /// came after their ring entry was durable and before sled's copy was).
    pub fn repaired_from_ring(&self) -> u64 {
        self.repaired_from_ring
    }

    /// Highest sequence whose sled record is known to be on the device.
    pub fn sled_durable_through(&self) -> u64 {
        self.sled_durable_through.load(Ordering::Relaxed)
    }
}

/// The sequence number a `rides` key holds (big-endian u64).
fn key_seq(k: &[u8]) -> u64 {
    u64::from_be_bytes(k.try_into().unwrap_or([0; 8]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundle_meta_v1_is_read_as_before() {
        // The `bundle` layout as first stored, `tariff` a plain `Vec<u8>`
        // (a sequence of `u8`; later a byte string, the same bytes under
        // the codec). Readers in the field hold it.
        #[derive(Serialize)]
        struct Before {
            version: u64,
            server_time_unix_s: u64,
            installed_at_unix_s: u64,
            trust: Vec<IssuerKey>,
            tariff: Vec<u8>,
            deny_file: String,
            deny_count: u64,
            deny_blake3: [u8; 32],
        }
        let tariff: Vec<u8> = (0..=255u8).cycle().take(5_000).collect();
        let before = Before {
            version: 7,
            server_time_unix_s: 1_700_000_000,
            installed_at_unix_s: 1_700_000_100,
            trust: Vec::new(),
            tariff: tariff.clone(),
            deny_file: "deny-7.bin".into(),
            deny_count: 3,
            deny_blake3: [9; 32],
        };
        let old = codec::encode("bundle meta", &before).unwrap();
        let v1: BundleMetaV1 = codec::decode("bundle meta", &old).unwrap();
        assert_eq!(codec::encode("bundle meta", &v1).unwrap(), old);
        let (meta, bytes) = v1.upgrade();
        assert_eq!(bytes, tariff);
        assert_eq!(
            meta.tariff_digest,
            fare_credential::bundle::tariff_digest(&tariff)
        );
        assert_eq!((meta.version, meta.deny_file.as_str()), (7, "deny-7.bin"));
    }
}
