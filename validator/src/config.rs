//! Reader configuration: `READER/reader.toml`, written with every default at
//! `provision` so an operator sees (and can edit) each knob. Unknown keys are
//! refused so a typo cannot silently fall back to a default.

use crate::error::ValidatorError;
use fare_credential::record::MAX_NAME_BYTES;
use fare_credential::Policy;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The whole `reader.toml`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReaderConfig {
    /// Who this reader is and where it rides.
    pub reader: ReaderIdentityConfig,
    /// Code freshness.
    #[serde(default)]
    pub policy: Policy,
    /// What to do as trust material ages.
    #[serde(default)]
    pub trust: TrustPolicy,
    /// Ride log limits and retention.
    #[serde(default)]
    pub storage: StorageConfig,
    /// Camera frame decoding.
    #[serde(default)]
    pub camera: CameraConfig,
    /// The background sync agent (`run --server`).
    #[serde(default)]
    pub sync: SyncConfig,
}

/// `[sync]`: how the reader talks to settlement (see validator/README.md,
/// "Sync").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyncConfig {
    /// Time between contacts when everything is uploaded (the bundle is
    /// fetched on every contact), milliseconds.
    pub interval_ms: u64,
    /// First retry delay after a failed contact, milliseconds (doubles per
    /// failure up to `max_backoff_ms`, plus up to as much again of jitter).
    pub min_backoff_ms: u64,
    /// Longest retry delay, milliseconds.
    pub max_backoff_ms: u64,
    /// One request's time limit (connect, send, answer), milliseconds.
    pub request_timeout_ms: u64,
    /// Warn when the reader clock and settlement's disagree by more than this.
    pub clock_warn_s: u64,
    /// Seed of the retry jitter (ChaCha8); `0`: derived from the reader id,
    /// so a fleet coming back online does not retry in step.
    pub jitter_seed: u64,
}

/// Smallest `sync.min_backoff_ms`.
pub const MIN_BACKOFF_MS: u64 = 1;
/// Largest `sync.max_backoff_ms` (one hour).
pub const MAX_BACKOFF_MS: u64 = 3_600_000;

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            interval_ms: 60_000,
            min_backoff_ms: 1_000,
            max_backoff_ms: 300_000,
            request_timeout_ms: 30_000,
            clock_warn_s: 30,
            jitter_seed: 0,
        }
    }
}

/// `[camera]`: how much time one camera frame may cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CameraConfig {
    /// Wall-clock budget for reading the QR code of one frame, milliseconds.
    /// The decoder tries cheaper ways first and starts a harder one only if
    /// it fits in what is left; a frame it gives up on is `no_code_found`
    /// and the camera's next frame gets a fresh budget. Lower it on slow
    /// reader hardware to keep every decision inside the 100 ms budget
    /// (fewer hard frames are read, never a wrong one).
    pub decode_budget_ms: u64,
}

/// Largest accepted `camera.decode_budget_ms`: a frame that takes longer
/// than a second is a frame the passenger has given up on.
pub const MAX_DECODE_BUDGET_MS: u64 = 1000;

impl Default for CameraConfig {
    fn default() -> Self {
        CameraConfig {
            decode_budget_ms: fare_qr::DEFAULT_DECODE_BUDGET.as_millis() as u64,
        }
    }
}

impl CameraConfig {
    /// The budget as a duration.
    pub fn decode_budget(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.decode_budget_ms)
    }
}

/// `[reader]`: identity and placement. `reader_id` is also stored in the log
/// and must never change for a given log (the hash chain starts from it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReaderIdentityConfig {
    /// Reader id registered with settlement.
    pub reader_id: u32,
    /// Operator name (informational; settlement knows it from registration).
    #[serde(default)]
    pub operator: String,
    /// Vehicle name, ≤ 32 bytes; written into every ride record.
    pub vehicle: String,
    /// Route name, ≤ 32 bytes; written into every ride record.
    pub route: String,
    /// Stop id if the reader knows it (fixed gate readers do; buses may not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<u32>,
}

/// `[trust]`: how old the installed bundle (measured from its signed
/// `server_time_unix_s` to the reader's clock) may get.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrustPolicy {
    /// Past this age decisions still accept but carry a `trust_aging`
    /// warning and a log line, so a depot notices a reader that stopped syncing.
    pub warn_after_s: u64,
    /// Past this age every ride is refused with `trust_stale`: the deny list
    /// is too old to bound exposure. `0` disables the refusal (an explicit
    /// operator choice for readers that cannot sync for long periods).
    pub reject_after_s: u64,
}

impl Default for TrustPolicy {
    fn default() -> Self {
        TrustPolicy {
            warn_after_s: 2 * 86_400,
            reject_after_s: 7 * 86_400,
        }
    }
}

/// sled's own default log segment size (`storage.segment_bytes`).
pub const DEFAULT_SEGMENT_BYTES: u64 = 512 << 10;
/// Smallest `storage.segment_bytes` (a ride record and the reader's
/// metadata stay far below a quarter of it).
pub const MIN_SEGMENT_BYTES: u64 = 64 << 10;
/// Largest `storage.segment_bytes` (sled's limit).
pub const MAX_SEGMENT_BYTES: u64 = 16 << 20;

/// `[storage]`: limits on everything the reader keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Logical size limit of the ride log (sum of the encoded ride records;
    /// sled's on-disk footprint is several times larger). When reached,
    /// acknowledged records are dropped early; if unacknowledged records
    /// alone fill it, rides are refused with `storage_full`.
    pub max_log_bytes: u64,
    /// How long records acknowledged by settlement are kept (for disputes
    /// and re-upload) before compaction removes them.
    pub retention_s: u64,
    /// Rejected scans kept for analytics (oldest dropped first).
    pub max_rejected_entries: u64,
    /// Credentials whose issuer signature is cached (a returning rider costs
    /// one signature check instead of two).
    pub credential_cache_entries: usize,
    /// Extra time replay-cache entries are kept after their code could no
    /// longer pass the freshness check, so a reader clock stepping back
    /// cannot resurrect a pruned code.
    pub replay_grace_s: u64,
    /// sled page cache size in bytes (sled's own default is 1 GiB, far too
    /// much for a reader).
    pub cache_capacity_bytes: u64,
    /// sled's log segment size in bytes: a power of two from
    /// [`MIN_SEGMENT_BYTES`] to [`MAX_SEGMENT_BYTES`]. sled keeps a segment
    /// buffer of this size in memory, and a value above a quarter of it is
    /// written to a file of its own. sled refuses to open a log with another
    /// size than the one it was created with: set it before provisioning.
    pub segment_bytes: u64,
    /// sled's background flush period in milliseconds (0, the default: no
    /// flusher thread). Nothing needs it: accepts are durable through the
    /// ride ring, acknowledgements and bundles are flushed explicitly, and
    /// rejected scans at most once a second. A flusher thread writing
    /// sled's log competes with the accept's device write.
    pub background_flush_ms: u64,
    /// Records per upload batch (≤ the batch format's 4096).
    pub batch_max_records: usize,
    /// Make every accept's ride-ring write, and sled's data file at every
    /// durability point, reach the device so an accepted ride survives a
    /// power cut, not only a crash (default `true`). `false` leaves the page
    /// cache as the durability point: it is there only so a test can show
    /// what a power cut then loses; never turn it off on a bus.
    pub device_sync: bool,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            max_log_bytes: 256 << 20,
            retention_s: 7 * 86_400,
            max_rejected_entries: 10_000,
            credential_cache_entries: 4096,
            replay_grace_s: 3600,
            cache_capacity_bytes: 8 << 20,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            background_flush_ms: 0,
            batch_max_records: 1000,
            device_sync: true,
        }
    }
}

impl ReaderConfig {
    /// A config with every default and the given identity.
    pub fn new(reader: ReaderIdentityConfig) -> Self {
        ReaderConfig {
            reader,
            policy: Policy::default(),
            trust: TrustPolicy::default(),
            storage: StorageConfig::default(),
            camera: CameraConfig::default(),
            sync: SyncConfig::default(),
        }
    }

    /// Checks values a record or batch could not hold.
    // Longer than a screen: one check per configuration field, listed flat.
    pub fn validate(&self) -> Result<(), ValidatorError> {
        let bad = |field: &'static str, why: String| ValidatorError::Config { field, why };
        for (field, v) in [
            ("reader.vehicle", &self.reader.vehicle),
            ("reader.route", &self.reader.route),
        ] {
            if v.len() > MAX_NAME_BYTES {
                return Err(bad(
                    field,
                    format!(
                        "{} bytes, at most {MAX_NAME_BYTES} fit in a ride record",
                        v.len()
                    ),
                ));
            }
        }
        let max = fare_credential::batch::MAX_BATCH_RECORDS;
        if self.storage.batch_max_records == 0 || self.storage.batch_max_records > max {
            return Err(bad(
                "storage.batch_max_records",
                format!("{}: expected 1..={max}", self.storage.batch_max_records),
            ));
        }
        let seg = self.storage.segment_bytes;
        if !seg.is_power_of_two() || !(MIN_SEGMENT_BYTES..=MAX_SEGMENT_BYTES).contains(&seg) {
            return Err(bad(
                "storage.segment_bytes",
                format!(
                    "{seg}: expected a power of two from {MIN_SEGMENT_BYTES} to {MAX_SEGMENT_BYTES}"
                ),
            ));
        }
        if !(1..=MAX_DECODE_BUDGET_MS).contains(&self.camera.decode_budget_ms) {
            return Err(bad(
                "camera.decode_budget_ms",
                format!(
                    "{}: expected 1..={MAX_DECODE_BUDGET_MS} milliseconds",
                    self.camera.decode_budget_ms
                ),
            ));
        }
        let sc = self.sync;
        if sc.min_backoff_ms < MIN_BACKOFF_MS
            || sc.max_backoff_ms > MAX_BACKOFF_MS
            || sc.min_backoff_ms > sc.max_backoff_ms
        {
            return Err(bad(
                "sync.min_backoff_ms",
                format!(
                    "{}..{}: expected {MIN_BACKOFF_MS} ≤ min ≤ max ≤ {MAX_BACKOFF_MS}",
                    sc.min_backoff_ms, sc.max_backoff_ms
                ),
            ));
        }
        if sc.request_timeout_ms == 0 || sc.interval_ms == 0 {
            return Err(bad(
                "sync.request_timeout_ms",
                "request_timeout_ms and interval_ms must be at least 1".into(),
            ));
        }
        if self.policy.code_validity_s == 0 {
            return Err(bad(
                "policy.code_validity_s",
                "0: a code must be valid for at least 1 s".into(),
            ));
        }
        Ok(())
    }

    /// Reads and validates a TOML file.
    pub fn load(path: &Path) -> Result<ReaderConfig, ValidatorError> {
        let text = std::fs::read_to_string(path).map_err(|source| ValidatorError::Io {
            what: "read reader config",
            path: path.to_path_buf(),
            source,
        })?;
        let cfg: ReaderConfig = toml::from_str(&text).map_err(|e| ValidatorError::Config {
            field: "reader.toml",
            why: format!("{}: {e}", path.display()),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The TOML text, with a header pointing at the documentation.
    pub fn to_toml(&self) -> String {
        let body = toml::to_string_pretty(self).expect("config serialises");
        format!(
            "# fare-validator reader config. Every key is documented in validator/README.md.\n\
             # Times in seconds, sizes in bytes.\n\n{body}"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ReaderConfig {
        ReaderConfig::new(ReaderIdentityConfig {
            reader_id: 1,
            operator: "op".into(),
            vehicle: "bus-1".into(),
            route: "R1".into(),
            stop: None,
        })
    }

    fn refused_field(c: &ReaderConfig) -> Option<&'static str> {
        match c.validate() {
            Err(ValidatorError::Config { field, .. }) => Some(field),
            _ => None,
        }
    }

    #[test]
    fn sled_segment_size_is_checked() {
        let mut c = config();
        assert_eq!(refused_field(&c), None);
        for ok in [MIN_SEGMENT_BYTES, DEFAULT_SEGMENT_BYTES, MAX_SEGMENT_BYTES] {
            c.storage.segment_bytes = ok;
            assert_eq!(refused_field(&c), None, "{ok}");
        }
        for bad in [0, MIN_SEGMENT_BYTES / 2, 100_000, MAX_SEGMENT_BYTES * 2] {
            c.storage.segment_bytes = bad;
            assert_eq!(refused_field(&c), Some("storage.segment_bytes"), "{bad}");
        }
    }

    #[test]
    fn a_background_flush_period_survives_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reader.toml");
        let mut c = config();
        c.storage.background_flush_ms = 250;
        c.storage.segment_bytes = MIN_SEGMENT_BYTES;
        std::fs::write(&path, c.to_toml()).unwrap();
        let back = ReaderConfig::load(&path).unwrap();
        assert_eq!(back.storage, c.storage);
    }
}
