//! Configuration: a TOML file (`--config FILE`); every field has a default,
//! so an empty file (or none) is a working demo configuration.
//!
//! ```toml
//! listen = "127.0.0.1:8080"        # overridden by --listen
//! operator_token = "change-me"     # bearer token of the operator API (or $FARE_OPERATOR_TOKEN;
//!                                  # neither: made at first start, kept in DATA/operator-token)
//! keys_dir = "/var/lib/fare/keys"  # default: DATA/keys (initialised if missing)
//! tariff_file = "tariff.json"      # default: the built-in demo tariff
//! request_timeout_ms = 10000
//! json_body_limit_bytes = 65536
//! default_credit_limit_minor = 2000
//! max_credential_validity_s = 259200
//! code_validity_s = 60             # the readers' policy, re-applied at settlement
//! skew_tolerance_s = 30
//! ride_retention_days = 90         # ride history kept for disputes, then purged
//! settle_chunk_rides = 100000
//! bundle_refresh_s = 3600          # re-publish a quiet bundle after this long
//! run_wait_ms = 8000               # POST /v1/settlement/runs answers 202 after this long
//! max_connections = 512            # open connections served; past it 503 + Retry-After
//! header_read_timeout_ms = 10000   # a request's headers (and a keep-alive wait) must arrive within this
//! database_url = "postgres://fare@db.internal/fare"  # PostgreSQL instead of sled (also --database-url, DATABASE_URL)
//! database_pool_size = 16          # PostgreSQL connections per instance
//! database_pool_wait_ms = 30000    # a request waits this long for a free one, then 503 database_busy
//! sled_cache_mb = 256              # sled's page cache (when not on PostgreSQL)
//!
//! [ui_staff]                       # dashboard logins scoped to one operator (operator id = token)
//! metro = "a-long-random-token-for-metro-staff"
//! ```
//!
//! `settlement/settlement.example.toml` is a commented example of every field.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Environment variable that sets the operator token (over the config file's).
pub const OPERATOR_TOKEN_ENV: &str = "FARE_OPERATOR_TOKEN";
/// File in the data directory holding the operator token made at first
/// start when none is configured (owner-only).
pub const OPERATOR_TOKEN_FILE: &str = "operator-token";
/// Shortest operator token accepted from the config or the environment.
pub const MIN_OPERATOR_TOKEN_BYTES: usize = 16;

/// The operator token in effect and where it is: the configured one
/// (config file or [`OPERATOR_TOKEN_ENV`], already merged into `config`),
/// else the one in `DATA/`[`OPERATOR_TOKEN_FILE`], made there (random,
/// 0600) at the first start. The token survives restarts either way.
pub fn operator_token(
    config: &Config,
    data_dir: &Path,
    rng: &mut impl rand_core::RngCore,
) -> std::io::Result<(String, String)> {
    if !config.operator_token.is_empty() {
        return Ok((
            config.operator_token.clone(),
            format!("configured (config file `operator_token` or ${OPERATOR_TOKEN_ENV})"),
        ));
    }
    let p = data_dir.join(OPERATOR_TOKEN_FILE);
    if p.exists() {
        let t = std::fs::read_to_string(&p)?.trim().to_string();
        if t.len() < MIN_OPERATOR_TOKEN_BYTES {
            return Err(std::io::Error::other(format!(
                "{}: expected an operator token of at least {MIN_OPERATOR_TOKEN_BYTES} characters",
                p.display()
            )));
        }
        return Ok((t, format!("stored in {}", p.display())));
    }
    let mut b = [0u8; 24];
    rng.fill_bytes(&mut b);
    let t = hex::encode(b);
    fare_keys::files::write_atomic(&p, format!("{t}\n").as_bytes(), true)?;
    Ok((
        t,
        format!("generated at first start and stored in {}", p.display()),
    ))
}

/// Default of [`Config::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;
/// Largest [`Config::max_connections`] accepted (each connection is a file
/// descriptor: see "Connections and open files" in the README).
pub const MAX_MAX_CONNECTIONS: usize = 60_000;
/// Default of [`Config::header_read_timeout_ms`].
pub const DEFAULT_HEADER_READ_TIMEOUT_MS: u64 = 10_000;

/// Settlement configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Listen address when `--listen` is not given.
    pub listen: String,
    /// Bearer token for operator endpoints ([`OPERATOR_TOKEN_ENV`] overrides
    /// it). Empty: a random token is made at the first start and kept in
    /// `DATA/operator-token` ([`operator_token`]).
    pub operator_token: String,
    /// KEYS directory (`fare-keys init`); default `DATA/keys`.
    pub keys_dir: Option<PathBuf>,
    /// Tariff JSON file; default the built-in demo tariff.
    pub tariff_file: Option<PathBuf>,
    /// Per-request timeout.
    pub request_timeout_ms: u64,
    /// Limit of JSON request bodies.
    pub json_body_limit_bytes: usize,
    /// Credit limit of new accounts when the request gives none.
    pub default_credit_limit_minor: i64,
    /// Longest credential lifetime issued (bounds the exposure of a stolen phone).
    pub max_credential_validity_s: u64,
    /// Ride code validity after issue (the readers' policy).
    pub code_validity_s: u64,
    /// Clock skew tolerated between phone and reader.
    pub skew_tolerance_s: u64,
    /// Days ride records and results are kept after settlement before purge.
    pub ride_retention_days: u64,
    /// Rides per settlement chunk (each chunk commits atomically).
    pub settle_chunk_rides: usize,
    /// A reader asking for a bundle gets a new version when the last one is
    /// older than this, so its trust material's server time stays fresh.
    /// Readers warn at 2 days of trust age and refuse at 7 (the validator's
    /// `[trust]`), and a revocation publishes at once whatever this says;
    /// but every new version costs every reader a full bundle (with the
    /// tariff) fetched, verified and stored at its next contact, so an
    /// hour, not minutes.
    pub bundle_refresh_s: u64,
    /// `POST /v1/settlement/runs` waits this long for the run (at most 4/5
    /// of `request_timeout_ms`), then answers `202 Accepted` with a run id
    /// while the run goes on (`GET /v1/settlement/runs/{id}`).
    pub run_wait_ms: u64,
    /// Connections served at once; a connection past it is answered `503`
    /// `too_many_connections` with `Retry-After` and closed.
    pub max_connections: usize,
    /// A request's headers must arrive within this after the connection is
    /// ready for them (also the longest a keep-alive connection may idle
    /// between requests); else the connection is closed.
    pub header_read_timeout_ms: u64,
    /// Dashboard (`/ui`) logins of one operator's staff: operator id →
    /// token (at least [`MIN_UI_STAFF_TOKEN_BYTES`]). Such a login sees only
    /// that operator's readers, rides and revenue (see `ui::session`).
    pub ui_staff: std::collections::BTreeMap<String, String>,
    /// PostgreSQL connection string (`postgres://…`); sled in `DATA/db`
    /// when absent. `--database-url` and `DATABASE_URL` override it.
    pub database_url: Option<String>,
    /// PostgreSQL connections per instance (at least 4: a settlement run
    /// holds one for its claim and reads on others).
    pub database_pool_size: usize,
    /// How long a request waits for a free PostgreSQL connection before it
    /// is answered `503 database_busy` (milliseconds).
    pub database_pool_wait_ms: u64,
    /// sled's page cache in MiB (the sled store only). A day's ride
    /// records, results, balances and day states that do not fit are read
    /// back from the log and decoded at each use (the simulator's 1M-ride
    /// day: its settlement runs took 233 s at 256, 190 s at 1024).
    pub sled_cache_mb: u64,
}

/// Smallest `sled_cache_mb`.
pub const MIN_SLED_CACHE_MB: u64 = 16;
/// Largest `sled_cache_mb` (64 GiB).
pub const MAX_SLED_CACHE_MB: u64 = 64 << 10;

/// Checks a `sled_cache_mb` value (also the simulator's scenarios' own).
pub fn check_sled_cache_mb(mb: u64) -> Result<(), String> {
    if (MIN_SLED_CACHE_MB..=MAX_SLED_CACHE_MB).contains(&mb) {
        return Ok(());
    }
    Err(format!(
        "expected {MIN_SLED_CACHE_MB}..={MAX_SLED_CACHE_MB} (MiB)"
    ))
}

/// Shortest token accepted in [`Config::ui_staff`].
pub const MIN_UI_STAFF_TOKEN_BYTES: usize = 16;

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8080".into(),
            operator_token: String::new(),
            keys_dir: None,
            tariff_file: None,
            request_timeout_ms: 10_000,
            json_body_limit_bytes: 64 * 1024,
            default_credit_limit_minor: 2_000,
            max_credential_validity_s: 3 * 86_400,
            code_validity_s: 60,
            skew_tolerance_s: 30,
            ride_retention_days: 90,
            settle_chunk_rides: 100_000,
            bundle_refresh_s: 3600,
            run_wait_ms: 8_000,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_read_timeout_ms: DEFAULT_HEADER_READ_TIMEOUT_MS,
            ui_staff: Default::default(),
            database_url: None,
            database_pool_size: crate::store::postgres::DEFAULT_POOL_SIZE,
            database_pool_wait_ms: crate::store::postgres::POOL_WAIT.as_millis() as u64,
            sled_cache_mb: crate::store::SLED_DEFAULT_CACHE_BYTES >> 20,
        }
    }
}

/// A configuration file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Reading failed.
    #[error("config {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Not valid TOML for this schema (unknown or mistyped field).
    #[error("config {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's message (names the field).
        message: String,
    },
    /// A value is out of range.
    #[error("config field `{field}`: {why}")]
    Invalid {
        /// Field.
        field: &'static str,
        /// Expected.
        why: String,
    },
}

impl Config {
    /// Loads a TOML file (at most 1 MiB).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let meta = std::fs::metadata(path).map_err(|source| ConfigError::Io {
            path: path.into(),
            source,
        })?;
        if meta.len() > 1 << 20 {
            return Err(ConfigError::Invalid {
                field: "(file)",
                why: format!("{} bytes: a config file is at most 1 MiB", meta.len()),
            });
        }
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.into(),
            source,
        })?;
        let c: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            message: e.to_string(),
        })?;
        c.validate()?;
        Ok(c)
    }
    /// Checks ranges: the limits of the service, then its tokens, then
    /// the database settings; the first bad field is named.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_limits()?;
        self.validate_tokens()?;
        self.validate_database()
    }

    /// The money, size, time and connection limits.
    fn validate_limits(&self) -> Result<(), ConfigError> {
        let bad = |field, why: String| Err(ConfigError::Invalid { field, why });
        if self.default_credit_limit_minor < 0 {
            return bad("default_credit_limit_minor", "must be ≥ 0".into());
        }
        if self.json_body_limit_bytes < 1024 || self.json_body_limit_bytes > 16 << 20 {
            return bad("json_body_limit_bytes", "expected 1 KiB..=16 MiB".into());
        }
        if self.max_credential_validity_s == 0
            || self.max_credential_validity_s > fare_keys::MAX_CREDENTIAL_VALIDITY_S
        {
            return bad(
                "max_credential_validity_s",
                format!("expected 1..={}", fare_keys::MAX_CREDENTIAL_VALIDITY_S),
            );
        }
        if self.settle_chunk_rides == 0 {
            return bad("settle_chunk_rides", "must be ≥ 1".into());
        }
        if self.request_timeout_ms == 0 {
            return bad("request_timeout_ms", "must be ≥ 1".into());
        }
        if self.max_connections == 0 || self.max_connections > MAX_MAX_CONNECTIONS {
            return bad(
                "max_connections",
                format!("expected 1..={MAX_MAX_CONNECTIONS}"),
            );
        }
        if self.header_read_timeout_ms == 0 {
            return bad("header_read_timeout_ms", "must be ≥ 1".into());
        }
        if let Err(why) = check_sled_cache_mb(self.sled_cache_mb) {
            return bad("sled_cache_mb", why);
        }
        Ok(())
    }

    /// The operator token and the dashboard staff tokens.
    fn validate_tokens(&self) -> Result<(), ConfigError> {
        let bad = |field, why: String| Err(ConfigError::Invalid { field, why });
        if self
            .operator_token
            .starts_with(crate::passengers::TOKEN_PREFIX)
        {
            return bad(
                "operator_token",
                format!(
                    "must not start with `{}` (the passenger tokens' prefix)",
                    crate::passengers::TOKEN_PREFIX
                ),
            );
        }
        if !self.operator_token.is_empty() && self.operator_token.len() < MIN_OPERATOR_TOKEN_BYTES {
            return bad(
                "operator_token",
                format!("expected at least {MIN_OPERATOR_TOKEN_BYTES} characters (or empty: one is made at first start)"),
            );
        }
        for (operator, token) in &self.ui_staff {
            if token.len() < MIN_UI_STAFF_TOKEN_BYTES || *token == self.operator_token {
                return bad(
                    "ui_staff",
                    format!("operator `{operator}`: its token must have at least {MIN_UI_STAFF_TOKEN_BYTES} bytes and differ from operator_token"),
                );
            }
        }
        Ok(())
    }

    /// The PostgreSQL pool's settings (`database_pool_size`, `database_pool_wait_ms`).
    pub fn database_pool(&self) -> crate::store::PoolOptions {
        crate::store::PoolOptions {
            size: self.database_pool_size,
            wait: std::time::Duration::from_millis(self.database_pool_wait_ms),
        }
    }

    /// The PostgreSQL pool size and wait, and the connection string.
    fn validate_database(&self) -> Result<(), ConfigError> {
        let bad = |field, why: String| Err(ConfigError::Invalid { field, why });
        use crate::store::postgres::{MAX_POOL_SIZE, MAX_POOL_WAIT, MIN_POOL_SIZE, MIN_POOL_WAIT};
        if !(MIN_POOL_SIZE..=MAX_POOL_SIZE).contains(&self.database_pool_size) {
            return bad(
                "database_pool_size",
                format!("expected {MIN_POOL_SIZE}..={MAX_POOL_SIZE}"),
            );
        }
        let wait = std::time::Duration::from_millis(self.database_pool_wait_ms);
        if !(MIN_POOL_WAIT..=MAX_POOL_WAIT).contains(&wait) {
            return bad(
                "database_pool_wait_ms",
                format!(
                    "expected {}..={} (milliseconds)",
                    MIN_POOL_WAIT.as_millis(),
                    MAX_POOL_WAIT.as_millis()
                ),
            );
        }
        if let Some(url) = &self.database_url {
            if url.parse::<tokio_postgres::Config>().is_err() {
                // The parser's message could echo a password: name the field only.
                return bad(
                    "database_url",
                    "expected a PostgreSQL connection string (postgres://user@host/db or key=value pairs)".into(),
                );
            }
        }
        Ok(())
    }
    /// The ride-code policy re-applied at settlement.
    pub fn policy(&self) -> fare_credential::Policy {
        fare_credential::Policy {
            code_validity_s: self.code_validity_s,
            skew_tolerance_s: self.skew_tolerance_s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The config file `text` loads as.
    fn load(text: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("settlement.toml");
        std::fs::write(&path, text).unwrap();
        Config::load(&path)
    }

    #[test]
    fn sled_cache_is_configured_within_its_limits() {
        assert_eq!(load("").unwrap().sled_cache_mb, 256);
        assert_eq!(load("sled_cache_mb = 1024").unwrap().sled_cache_mb, 1024);
        for bad in [0, MIN_SLED_CACHE_MB - 1, MAX_SLED_CACHE_MB + 1] {
            match load(&format!("sled_cache_mb = {bad}")) {
                Err(ConfigError::Invalid { field, why }) => {
                    assert_eq!(field, "sled_cache_mb");
                    assert!(why.contains("16..=65536"), "{why}");
                }
                other => panic!("sled_cache_mb = {bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn database_pool_wait_is_configured_within_its_limits() {
        let default = load("").unwrap();
        assert_eq!(
            default.database_pool().wait,
            std::time::Duration::from_secs(30)
        );
        assert_eq!(default.database_pool().size, 16);
        let c = load("database_pool_wait_ms = 250\ndatabase_pool_size = 5").unwrap();
        assert_eq!(
            c.database_pool(),
            crate::store::PoolOptions {
                size: 5,
                wait: std::time::Duration::from_millis(250)
            }
        );
        for bad in [0, 9, 600_001] {
            match load(&format!("database_pool_wait_ms = {bad}")) {
                Err(ConfigError::Invalid { field, why }) => {
                    assert_eq!(field, "database_pool_wait_ms");
                    assert!(why.contains("10..=600000 (milliseconds)"), "{why}");
                }
                other => panic!("database_pool_wait_ms = {bad}: {other:?}"),
            }
        }
    }
}
