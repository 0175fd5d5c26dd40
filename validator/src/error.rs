//! Operational errors (as opposed to ride refusals, which are
//! [`fare_credential::RejectReason`]s inside a [`crate::Decision`]).

use fare_credential::codec::CodecError;
use fare_credential::trust::TrustError;
use fare_credential::FormatError;
use std::path::PathBuf;

/// Why a bundle was not installed. The installed bundle stays as it was.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// Bad root signature, truncated or malformed bundle.
    #[error("bundle refused: {0} (is it signed by this deployment's root key?)")]
    Format(#[from] FormatError),
    /// The offered version is older than the installed one.
    #[error("bundle version {offered} is older than the installed version {installed}: rollback refused")]
    Rollback {
        /// Installed version.
        installed: u64,
        /// Offered version.
        offered: u64,
    },
    /// The offered version equals the installed one.
    #[error("bundle version {version} is already installed")]
    NotNewer {
        /// The version.
        version: u64,
    },
    /// A deny-list delta that does not start from the installed version.
    #[error("bundle {offered} carries a deny-list delta from version {base}, but this reader holds {installed}: ask for a snapshot")]
    DeltaBase {
        /// Installed version.
        installed: u64,
        /// The delta's base version.
        base: u64,
        /// Offered version.
        offered: u64,
    },
    /// A deny-list delta whose base deny list is not the one this reader
    /// holds (its base hash differs), or a v1 delta, which names no base hash.
    #[error("bundle {offered}'s deny-list delta was computed from another deny list than the one this reader holds (version {installed}): {why}; ask for a snapshot")]
    DeltaBaseHash {
        /// Installed version.
        installed: u64,
        /// Offered version.
        offered: u64,
        /// What differs.
        why: &'static str,
    },
    /// A deny-list delta from another publisher than the installed bundle's.
    #[error("bundle {offered} is a delta from publisher {publisher}, but the installed bundle is publisher {installed}'s: ask for a snapshot")]
    OtherPublisher {
        /// Installed bundle's publisher id (hex).
        installed: String,
        /// Offered bundle's publisher id (hex).
        publisher: String,
        /// Offered version.
        offered: u64,
    },
    /// A bundle of another publisher signed no later than the installed one:
    /// versions of two publishers are not comparable, so only a newer
    /// signed server time may switch lines.
    #[error("bundle from publisher {publisher} was signed at {offered_time}, not after the installed one of publisher {installed} ({installed_time}): refused")]
    PublisherRollback {
        /// Installed bundle's publisher id (hex).
        installed: String,
        /// Offered bundle's publisher id (hex).
        publisher: String,
        /// Installed bundle's server time.
        installed_time: u64,
        /// Offered bundle's server time.
        offered_time: u64,
    },
    /// The trust list is unusable (weak key, duplicate id, empty window).
    #[error("bundle trust list refused: {0}")]
    Trust(#[from] TrustError),
    /// A v3 bundle that names its tariff by a digest this reader's tariff
    /// does not have (or a reader with no tariff yet).
    #[error("bundle {offered} names its tariff by digest {digest} but this reader holds no tariff with that digest: ask again without `tariff=`")]
    TariffNotHeld {
        /// Offered version.
        offered: u64,
        /// The signed tariff digest (hex).
        digest: String,
    },
}

impl BundleError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            BundleError::Format(FormatError::BadSignature { .. }) => "bundle_bad_signature",
            BundleError::Format(_) => "bundle_malformed",
            BundleError::Rollback { .. } => "bundle_rollback",
            BundleError::NotNewer { .. } => "bundle_not_newer",
            BundleError::DeltaBase { .. } => "bundle_delta_base_mismatch",
            BundleError::DeltaBaseHash { .. } => "bundle_delta_base_hash",
            BundleError::OtherPublisher { .. } => "bundle_other_publisher",
            BundleError::PublisherRollback { .. } => "bundle_publisher_rollback",
            BundleError::Trust(_) => "bundle_bad_trust_list",
            BundleError::TariffNotHeld { .. } => "bundle_tariff_not_held",
        }
    }
}

/// Everything that can go wrong operating a reader, other than a refused ride.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ValidatorError {
    /// A file could not be read or written.
    #[error("{what}: {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// sled failed (disk full, I/O error, corrupt database).
    #[error("ride log ({what}): {source} (disk full or failing? the log is left as it was)")]
    Sled {
        /// What was being done.
        what: &'static str,
        /// sled's error.
        source: sled::Error,
    },
    /// The sync after sled's flush did not reach the device: the write may not survive a power cut.
    #[error("ride log: {0}")]
    DeviceSync(#[from] fare_durable::SyncError),
    /// A stored value did not decode: the log is corrupt or from another build.
    #[error("ride log value unreadable: {0}")]
    Codec(#[from] CodecError),
    /// A stored record is inconsistent (bad chain, gap, wrong reader).
    #[error("ride log corrupt at sequence {seq}: {why}")]
    Corrupt {
        /// Sequence of the bad record.
        seq: u64,
        /// What is wrong.
        why: String,
    },
    /// Bad configuration value.
    #[error("config `{field}`: {why}")]
    Config {
        /// The key.
        field: &'static str,
        /// What was expected.
        why: String,
    },
    /// The directory holds no provisioned reader.
    #[error("{}: not a provisioned reader directory (run `fare-validator provision`)", dir.display())]
    NotProvisioned {
        /// The directory.
        dir: PathBuf,
    },
    /// `provision` on a directory that already holds a reader.
    #[error("{}: already provisioned as reader {reader_id}; refusing to overwrite its key and log", dir.display())]
    AlreadyProvisioned {
        /// The directory.
        dir: PathBuf,
        /// Its reader id.
        reader_id: u32,
    },
    /// Config names a different reader than the log was created for.
    #[error("config says reader {config} but the ride log belongs to reader {stored}: the chain cannot change owner")]
    ReaderIdMismatch {
        /// From reader.toml.
        config: u32,
        /// From the log.
        stored: u32,
    },
    /// A key file is unusable.
    #[error("key file {}: {why}", path.display())]
    Key {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// Bundle refused.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// Settlement acknowledged records this reader never wrote.
    #[error("settlement acknowledged up to {acked} but this reader's last ride is {last}: wrong reader id or a settlement bug")]
    AckBeyondLog {
        /// Acknowledged sequence.
        acked: u64,
        /// Last sequence written.
        last: u64,
    },
    /// A record could not be encoded (over-long name).
    #[error("ride record: {0}")]
    Format(#[from] FormatError),
    /// Upload or bundle download failed.
    #[error("sync with {url}: {why}")]
    Sync {
        /// The URL.
        url: String,
        /// What failed.
        why: String,
    },
    /// The ride log ends below (or disagrees with) its high-water mark: its
    /// tail was damaged or truncated. The reader refuses to decide rather
    /// than reuse sequence numbers or forget used codes.
    #[error("ride log went backwards: {why}; records {missing_from}..={missing_to} are missing. The reader refuses rides: upload what remains, then re-provision it under a new reader id (validator/README.md, \"Damaged log\")")]
    LogBehind {
        /// First missing (or rewritten) sequence.
        missing_from: u64,
        /// Last missing sequence (the high-water mark).
        missing_to: u64,
        /// What was found.
        why: String,
    },
    /// An accept would have overwritten, in the ride ring (`log.ring`), a
    /// record that sled has not made durable on the device yet. A bug (the
    /// reader syncs sled before this can happen): nothing was overwritten,
    /// and the reader refuses rides until restarted.
    #[error("ride ring overrun: ride {seq} would overwrite ride {} in the {slots}-slot ring, but sled is durable only through {sled_durable_through}; nothing was overwritten (a bug: please report it)", seq.saturating_sub(*slots))]
    RingOverrun {
        /// The ride being written.
        seq: u64,
        /// Highest sequence durable in sled.
        sled_durable_through: u64,
        /// Ring slots.
        slots: u64,
    },
    /// An acknowledgement was refused: unsigned, wrongly signed, for another
    /// reader or request, or naming a chain hash this reader does not hold
    /// at that sequence. Nothing was acknowledged.
    #[error("acknowledgement refused ({code}): {why}")]
    AckRefused {
        /// `ack_unsigned`, `ack_bad_signature` or `ack_mismatch`.
        code: &'static str,
        /// What was wrong.
        why: String,
    },
    /// This reader's chain forked from what settlement holds. It keeps every
    /// record and stops compacting until an operator recovers it.
    #[error("chain forked from settlement at sequence {at}: {why}. Every record is kept and nothing is compacted; recover per validator/README.md (\"Forked reader\")")]
    Forked {
        /// Sequence where the chains disagree (or settlement's head).
        at: u64,
        /// What was seen.
        why: String,
    },
    /// Settlement holds less than this reader believed acknowledged, and
    /// the reader no longer has some of the records settlement lacks.
    #[error("settlement holds this reader only up to {settlement_holds}; records {missing_from}..={missing_to} were compacted here and must be restored at settlement from its backup or written off (validator/README.md, \"Settlement restored\")")]
    SettlementBehind {
        /// What settlement holds.
        settlement_holds: u64,
        /// First record neither side holds.
        missing_from: u64,
        /// Last record neither side holds.
        missing_to: u64,
    },
}

impl ValidatorError {
    /// Stable machine-readable code (`status --json`, logs).
    pub fn code(&self) -> &'static str {
        match self {
            ValidatorError::Io { .. } => "io_error",
            ValidatorError::Sled { .. } => "storage_error",
            ValidatorError::DeviceSync(_) => "device_sync_failed",
            ValidatorError::Codec(_) => "stored_value_unreadable",
            ValidatorError::Corrupt { .. } => "log_corrupt",
            ValidatorError::Config { .. } => "bad_config",
            ValidatorError::NotProvisioned { .. } => "not_provisioned",
            ValidatorError::AlreadyProvisioned { .. } => "already_provisioned",
            ValidatorError::ReaderIdMismatch { .. } => "reader_id_mismatch",
            ValidatorError::Key { .. } => "bad_key_file",
            ValidatorError::Bundle(b) => b.code(),
            ValidatorError::AckBeyondLog { .. } => "ack_beyond_log",
            ValidatorError::Format(_) => "bad_record",
            ValidatorError::Sync { .. } => "sync_failed",
            ValidatorError::LogBehind { .. } => "log_behind_high_water_mark",
            ValidatorError::RingOverrun { .. } => "ride_ring_overrun",
            ValidatorError::AckRefused { code, .. } => code,
            ValidatorError::Forked { .. } => "chain_forked",
            ValidatorError::SettlementBehind { .. } => "settlement_behind",
        }
    }

    pub(crate) fn sled(what: &'static str) -> impl FnOnce(sled::Error) -> ValidatorError {
        move |source| ValidatorError::Sled { what, source }
    }
}
