//! The application: database, keys, tariff, configuration, clock and RNG,
//! shared by the HTTP service and the CLI.

use crate::bundle;
use crate::config::Config;
use crate::settle::{self, RunSummary, SettleContext};
use crate::store::{Db, PostgresStore, SledStore, Store, WriteLock};
use fare_credential::{Clock, TrustList};
use fare_keys::KeyStore;
use fare_tariff::Tariff;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Why the application could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppError {
    /// The database.
    #[error(
        "database in {path}: {source} (is another `fare-settlement` process using this data dir?)"
    )]
    Store {
        /// Data dir.
        path: PathBuf,
        /// Cause.
        source: crate::error::StoreError,
    },
    /// The PostgreSQL database (`database_url`).
    #[error("database: {0}")]
    Database(crate::error::StoreError),
    /// The KEYS directory.
    #[error("keys dir {path}: {source}")]
    Keys {
        /// Keys dir.
        path: PathBuf,
        /// Cause.
        source: fare_keys::KeysError,
    },
    /// The tariff file.
    #[error("tariff {path}: {message}")]
    Tariff {
        /// File.
        path: PathBuf,
        /// Cause.
        message: String,
    },
    /// The trust list from the keys is unusable.
    #[error("trust list: {0}")]
    Trust(String),
    /// Storage during a run.
    #[error(transparent)]
    Run(#[from] crate::error::StoreError),
    /// Bundle / deny list publication.
    #[error(transparent)]
    Bundle(#[from] bundle::BundleError),
    /// The acknowledgement key.
    #[error(transparent)]
    AckKey(#[from] crate::acks::AckKeyError),
}

/// Everything a request or a run needs.
pub struct App {
    /// Database.
    pub db: Db,
    /// Keys (issuer, root, bundle version counter).
    pub keys: Mutex<KeyStore>,
    /// Tariff.
    pub tariff: Tariff,
    /// Tariff as UTF-8 JSON (the bundle's tariff bytes).
    pub tariff_json: Vec<u8>,
    /// `tariff_digest` of `tariff_json` (SPEC §4.2), computed once: every
    /// bundle answer compares it with the reader's.
    pub tariff_digest: [u8; 32],
    /// Configuration.
    pub config: Config,
    /// Clock.
    pub clock: Arc<dyn Clock>,
    /// RNG for ids (seeded in tests).
    pub rng: Mutex<ChaCha20Rng>,
    /// Serialises writers: this process's mutex and, on PostgreSQL, the
    /// writer claim that excludes the other instances (`store::WriteLock`).
    pub write_lock: WriteLock,
    /// Operator bearer token in effect.
    pub operator_token: String,
    /// Where it came from, for the start-up message (never the token itself).
    pub operator_token_source: String,
    /// Settlement runs started over HTTP (shared with their background tasks).
    pub runs: Arc<Mutex<settle::RunRegistry>>,
    /// Signs batch acknowledgements (`crate::acks`).
    pub acks: crate::acks::AckSigner,
    /// Signed reader requests seen recently (replay refusal, `crate::readers`).
    pub recent_requests: crate::readers::RecentRequests,
    /// Credentials re-verification accepted in this process's earlier runs
    /// (not checked again by a later run of the day).
    pub checked_credentials: crate::reverify::CredentialCache,
    /// The deny list head, decoded once per version (`bundle::HeadCache`).
    pub deny_head: bundle::HeadCache,
    /// Batch checks and settlement runs under way: a batch is checked on
    /// all cores only when it is the only one.
    pub core_users: CoreUsers,
}

/// How many batch checks and settlement runs of this process are under way
/// (each registered by [`CoreUsers::enter`] for its duration). A batch's
/// `R` group test (`ingest::check_batch`) takes every core only when
/// nothing else is running: one reader uploading a backlog then gets its
/// batches checked twice as fast on two cores, while many readers
/// uploading at once keep a core each (no contention on the rayon pool),
/// and an upload during a settlement run never waits behind the run's
/// rayon jobs.
#[derive(Debug, Default)]
pub struct CoreUsers(std::sync::atomic::AtomicUsize);

impl CoreUsers {
    /// Registers one user until the returned guard drops.
    pub fn enter(&self) -> CoreUse<'_> {
        let before = self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        CoreUse {
            users: self,
            alone: before == 0,
        }
    }
}

/// A registered user of the cores ([`CoreUsers::enter`]).
#[derive(Debug)]
pub struct CoreUse<'a> {
    users: &'a CoreUsers,
    alone: bool,
}

impl CoreUse<'_> {
    /// Whether nothing else was registered when this one entered.
    pub fn alone(&self) -> bool {
        self.alone
    }
}

impl Drop for CoreUse<'_> {
    fn drop(&mut self) {
        self.users
            .0
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl App {
    /// Opens the database (PostgreSQL when `config.database_url` is set,
    /// with the missing migrations applied; else sled in `DATA/db`) and the
    /// keys dir (config, else `DATA/keys`, initialised when missing).
    /// `rng_seed` makes ids deterministic (tests); `None` seeds from the OS.
    pub fn open(
        data_dir: &Path,
        config: Config,
        clock: Arc<dyn Clock>,
        rng_seed: Option<u64>,
    ) -> Result<App, AppError> {
        // Synced up the tree: a power cut right after a first start must
        // not lose the data directory itself.
        fare_durable::create_dir_all(data_dir).map_err(|e| AppError::Store {
            path: data_dir.into(),
            source: crate::error::StoreError::Backend(e.to_string()),
        })?;
        let store: Arc<dyn Store> = match &config.database_url {
            Some(url) => Arc::new(
                PostgresStore::open_with(url, config.database_pool())
                    .map_err(AppError::Database)?,
            ),
            None => {
                let db_path = data_dir.join("db");
                let cache_bytes = config.sled_cache_mb << 20;
                let store = SledStore::open_sized(&db_path, cache_bytes);
                Arc::new(store.map_err(|source| AppError::Store {
                    path: db_path,
                    source,
                })?)
            }
        };
        let mut rng = match rng_seed {
            Some(s) => ChaCha20Rng::seed_from_u64(s),
            None => ChaCha20Rng::from_entropy(),
        };
        let keys_dir = config
            .keys_dir
            .clone()
            .unwrap_or_else(|| data_dir.join("keys"));
        let keys = open_keys(&keys_dir, clock.now_unix_s(), &mut rng)?;
        let (tariff, tariff_json) = load_tariff(config.tariff_file.as_deref())?;
        let (operator_token, operator_token_source) =
            crate::config::operator_token(&config, data_dir, &mut rng).map_err(|e| {
                AppError::Store {
                    path: data_dir.join(crate::config::OPERATOR_TOKEN_FILE),
                    source: crate::error::StoreError::Backend(e.to_string()),
                }
            })?;
        let acks = crate::acks::AckSigner::open_or_create(&keys, clock.now_unix_s(), &mut rng)?;
        Ok(App {
            acks,
            recent_requests: Default::default(),
            checked_credentials: Default::default(),
            deny_head: Default::default(),
            core_users: CoreUsers::default(),
            db: Db::new(store.clone()),
            keys: Mutex::new(keys),
            tariff,
            tariff_digest: fare_credential::bundle::tariff_digest(&tariff_json),
            tariff_json,
            config,
            clock,
            rng: Mutex::new(rng),
            write_lock: WriteLock::new(store),
            operator_token,
            operator_token_source,
            runs: Arc::default(),
        })
    }

    /// Current time.
    pub fn now(&self) -> u64 {
        self.clock.now_unix_s()
    }

    /// The trust list from the keys.
    pub fn trust(&self) -> Result<TrustList, AppError> {
        let keys = self.reload_keys()?.trust_list();
        TrustList::new(keys).map_err(|e| AppError::Trust(e.to_string()))
    }

    /// Settles everything ingested so far and publishes the deny list.
    pub fn settle(&self) -> Result<RunSummary, AppError> {
        self.settle_timed(&mut settle::PhaseTimes::default())
    }

    /// Settles as run `run_id` of [`App::runs`] (registered by the caller
    /// with `start`): a panic is the run's failure, not the caller's, and the
    /// run shows as finished only once this handle on the App is released.
    /// Blocking: for `spawn_blocking`.
    pub fn settle_as_run(self: Arc<Self>, run_id: u64) -> Result<RunSummary, String> {
        let result = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.settle()))
        {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err("settlement run panicked (a bug: see the log)".to_string()),
        };
        let (now, runs) = (self.now(), self.runs.clone());
        drop(self);
        runs.lock()
            .unwrap_or_else(|p| p.into_inner())
            .finish(run_id, result.clone(), now);
        result
    }

    /// [`App::settle`], adding the wall time of each phase to `times`.
    pub fn settle_timed(&self, times: &mut settle::PhaseTimes) -> Result<RunSummary, AppError> {
        let _cores = self.core_users.enter();
        let trust = self.trust()?;
        let ctx = SettleContext {
            tariff: &self.tariff,
            trust: &trust,
            policy: self.config.policy(),
            chunk_rides: self.config.settle_chunk_rides,
            write_lock: &self.write_lock,
            checked_credentials: &self.checked_credentials,
        };
        let now = self.now();
        let summary = settle::run_timed(&self.db, &ctx, now, times)?;
        self.refresh_deny()?;
        Ok(summary)
    }

    /// Purges ride history older than `ride_retention_days` (privacy).
    pub fn purge(&self) -> Result<settle::PurgeSummary, AppError> {
        let now = self.now();
        let cutoff = now.saturating_sub(self.config.ride_retention_days * 86_400);
        let day = crate::core::service_day(&self.tariff, cutoff).to_string();
        let summary = settle::purge(&self.db, &self.write_lock, cutoff, &day)?;
        // Lost phones' credentials that already left the deny list.
        let _w = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        crate::passengers::purge_denied(
            &self.db,
            now.saturating_sub(self.config.skew_tolerance_s),
        )?;
        Ok(summary)
    }

    /// The keys, re-read first when `fare-keys` (or another process)
    /// changed the KEYS directory beside this service: a rotation made there
    /// is published, never undone.
    pub fn reload_keys(&self) -> Result<std::sync::MutexGuard<'_, KeyStore>, AppError> {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        let path = keys.dir().to_path_buf();
        if keys
            .reload_if_changed()
            .map_err(|source| AppError::Keys { path, source })?
        {
            tracing::info!(trust = ?keys.trust_list(), "KEYS directory changed beside the service: reloaded");
        }
        Ok(keys)
    }

    /// Publishes a new deny list version if it changed.
    pub fn refresh_deny(&self) -> Result<bundle::DenyStateSummary, AppError> {
        let trust = self.reload_keys()?.trust_list();
        let _w = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let head = bundle::refresh(
            &self.db,
            &self.keys,
            bundle::material_hash(&trust, &self.tariff_digest),
            self.now(),
            self.config.skew_tolerance_s,
            None,
        )?;
        Ok(bundle::DenyStateSummary {
            version: head.version,
            credential_ids: head.ids,
        })
    }

    /// The signed bundle for a reader at deny version `since`, with the
    /// tariff's bytes.
    pub fn bundle(&self, since: Option<u64>) -> Result<Vec<u8>, AppError> {
        self.bundle_for(since, None)
    }

    /// The signed bundle (v3) for a reader at deny version `since` holding
    /// a tariff of digest `tariff_held`: the tariff's bytes are left out
    /// when that is the current tariff's digest (SPEC §4.2).
    pub fn bundle_for(
        &self,
        since: Option<u64>,
        tariff_held: Option<[u8; 32]>,
    ) -> Result<Vec<u8>, AppError> {
        drop(self.reload_keys()?);
        let tariff = bundle::TariffToSend {
            json: &self.tariff_json,
            digest: self.tariff_digest,
            reader_holds_it: tariff_held == Some(self.tariff_digest),
        };
        Ok(bundle::reader_bundle(
            self.acks.publisher_id(),
            &self.db,
            &self.write_lock,
            &self.deny_head,
            &self.keys,
            tariff,
            since,
            self.now(),
            self.config.skew_tolerance_s,
            self.config.bundle_refresh_s,
        )?)
    }
}

/// Opens the KEYS directory, or initialises a new deployment there.
fn open_keys(keys_dir: &Path, now: u64, rng: &mut ChaCha20Rng) -> Result<KeyStore, AppError> {
    let keys = if keys_dir.join("root.key").exists() {
        KeyStore::open(keys_dir)
    } else {
        let k = KeyStore::init(keys_dir, now, rng);
        if k.is_ok() {
            tracing::warn!(
                root_public_key = %keys_dir.join("root.pub").display(),
                "no KEYS dir: initialised a new deployment; provision readers with this root public key"
            );
        }
        k
    };
    keys.map_err(|source| AppError::Keys {
        path: keys_dir.to_path_buf(),
        source,
    })
}

/// The tariff and the JSON bytes it was read from (the demo tariff when no
/// file is configured).
fn load_tariff(file: Option<&Path>) -> Result<(Tariff, Vec<u8>), AppError> {
    let Some(p) = file else {
        let t = Tariff::demo();
        let j = t.to_json().into_bytes();
        return Ok((t, j));
    };
    let err = |message: String| AppError::Tariff {
        path: p.to_path_buf(),
        message,
    };
    let bytes = std::fs::read(p).map_err(|e| err(e.to_string()))?;
    let t = Tariff::from_json_bytes(&bytes).map_err(|e| err(e.to_string()))?;
    Ok((t, bytes))
}

#[cfg(test)]
mod tests {
    use super::CoreUsers;

    /// Only a user that entered with nobody else registered is alone; a
    /// guard dropped (also by an early return) makes room again.
    #[test]
    fn core_users_alone_only_without_others() {
        let users = CoreUsers::default();
        let first = users.enter();
        assert!(first.alone());
        let second = users.enter();
        assert!(!second.alone());
        drop(first);
        assert!(!users.enter().alone(), "the second is still under way");
        drop(second);
        assert!(users.enter().alone());
        assert!(users.enter().alone(), "each guard above dropped at once");
    }
}
