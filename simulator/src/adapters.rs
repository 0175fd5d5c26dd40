//! Every call the simulator makes into the wallet, reader and settlement
//! libraries, in one place.
//!
//! Those libraries are being changed on other branches (the reader's sync
//! protocol, settlement's error/outcome types), so the rest of the simulator
//! talks only to the small types below. After a merge, fix this file.
//!
//! Library calls made here (the list the report names):
//!
//! * wallet: `DeviceWallet::generate`, `public_key`, `install`,
//!   `observe_server_time`, `make_code`; `Credential::from_bytes`; online
//!   riders: `Wallet::{init, open, next_code, install_renewal}` and
//!   `online::{enroll, renew}` (`--network`).
//! * reader: `ReaderConfig::new`, `ReaderIdentityConfig`, `Reader::provision`,
//!   `Reader::open`, `decide_payload`, `decide_frame`, `next_batch`,
//!   `install_bundle`, `bundle_version`, `state`, `records`,
//!   `verify_chain`, `maintenance`; `Decision::{is_accept, ride_id,
//!   reason_code, total_ns}`; `BundleError::NotNewer`. Uploads and bundle
//!   fetches go through `sync::contact` (see [`crate::link`]).
//! * settlement: `App::open`, `App::settle`, `App::bundle`, `App::refresh_deny`,
//!   `ops::{create_account, register_device, provision_reader, pay,
//!   set_frozen, register_device_via}`, `passengers::{issue_token,
//!   account_caller, rotate_token}`, `intake::{answer_batch, answer_bundle}` (what
//!   `POST /v1/batches` and the bundle route do, served in process), `serve` (`--network`), `reports::{daily, exposure,
//!   ledger}`, `Db::{results, incidents, fraud_events, revoked_accounts,
//!   balance, postings_of, ride_count, commit, put_postings, put_balances,
//!   reader}`, `core::passenger_account`; `ApiError::{body, status}`.

use fare_credential::{Clock, Credential, CredentialId, ManualClock, Profile, SigningKey};
use fare_settlement::{App, Config};
use fare_validator::{Reader, ReaderConfig, ReaderIdentityConfig};
use fare_wallet::DeviceWallet;
use rand_core::CryptoRngCore;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Errors from the libraries, as text (the simulator reports, never matches on them).
pub type AdapterResult<T> = Result<T, String>;

fn s<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

// ------------------------------------------------------------------ wallet

/// A phone: the pure wallet core, or (a rider who enrolled online) the
/// wallet app's own wallet directory.
#[derive(Debug)]
pub struct Phone {
    inner: PhoneWallet,
}

#[derive(Debug)]
enum PhoneWallet {
    /// Enrolled at the counter: the in-memory core.
    Core(DeviceWallet),
    /// Enrolled online: `fare_wallet::Wallet` on its directory, with the
    /// passenger token (in process: kept here; over HTTP: in the wallet's
    /// `passenger.json`, where `fare_wallet::online` keeps it).
    App {
        wallet: fare_wallet::Wallet,
        account: String,
        token: Option<String>,
    },
}

/// A renewal's result: the new credential's id.
pub type RenewedId = [u8; 16];

impl Phone {
    /// A phone with a fresh device key.
    pub fn generate(rng: &mut impl CryptoRngCore) -> Phone {
        Phone {
            inner: PhoneWallet::Core(DeviceWallet::generate(rng)),
        }
    }
    /// Its device public key.
    pub fn public_key(&self) -> [u8; 32] {
        match &self.inner {
            PhoneWallet::Core(w) => w.public_key(),
            PhoneWallet::App { wallet, .. } => wallet.core().public_key(),
        }
    }
    fn core_mut(&mut self) -> AdapterResult<&mut DeviceWallet> {
        match &mut self.inner {
            PhoneWallet::Core(w) => Ok(w),
            PhoneWallet::App { .. } => {
                Err("an online-enrolled wallet installs renewals only".into())
            }
        }
    }
    /// Installs a credential (bytes as issued) and learns the server's time.
    pub fn install(
        &mut self,
        credential: &[u8],
        server_now: u64,
        device_now: u64,
    ) -> AdapterResult<()> {
        let c = Credential::from_bytes(credential).map_err(s)?;
        let core = self.core_mut()?;
        core.install(c).map_err(s)?;
        core.observe_server_time(server_now, device_now);
        Ok(())
    }
    /// Pretends the server's time was `server_now` when the phone read `device_now`
    /// (a tampered phone clock correction).
    pub fn set_offset(&mut self, server_now: u64, device_now: u64) -> AdapterResult<()> {
        self.core_mut()?.observe_server_time(server_now, device_now);
        Ok(())
    }
    /// The next ride code at the phone's clock reading.
    pub fn code(&mut self, device_now: u64) -> AdapterResult<Vec<u8>> {
        let code = match &mut self.inner {
            PhoneWallet::Core(w) => w.make_code(device_now).map_err(s)?,
            PhoneWallet::App { wallet, .. } => wallet.next_code(device_now).map_err(s)?,
        };
        Ok(code.as_bytes().to_vec())
    }

    /// Enrols a phone online as `fare-wallet enroll` does: a new wallet in
    /// `dir`, the operator's `token` exchanged for one only the phone knows,
    /// then a renewal (a fresh key and its credential). Over HTTP
    /// (`--network`) through `fare_wallet::online::enroll` itself; in
    /// process through the same settlement calls its routes make, in the
    /// same order (so both give the same ids). Returns the phone and its
    /// credential id.
    pub fn enrol_online(
        dir: &Path,
        settlement: &Backoffice,
        account: &str,
        token: &str,
        valid_for_s: u64,
        device_now: u64,
        rng: &mut impl CryptoRngCore,
    ) -> AdapterResult<(Phone, RenewedId)> {
        if let Some(url) = settlement.base_url() {
            let clock = move || device_now;
            fare_wallet::online::enroll(dir, &url, account, token, valid_for_s, &clock, rng)
                .map_err(online_code)?;
            let wallet = fare_wallet::Wallet::open(dir).map_err(s)?;
            let phone = Phone {
                inner: PhoneWallet::App {
                    wallet,
                    account: account.into(),
                    token: None,
                },
            };
            let id = phone.credential_id()?;
            return Ok((phone, id));
        }
        // As `enroll`: the wallet directory is made once and kept.
        let wallet = if dir.join("device.key").exists() {
            fare_wallet::Wallet::open(dir)
        } else {
            fare_wallet::Wallet::init(dir, false, rng)
        }
        .map_err(s)?;
        let fresh = settlement
            .rotate_passenger_token(account, token)
            .map_err(refusal_code)?;
        let mut phone = Phone {
            inner: PhoneWallet::App {
                wallet,
                account: account.into(),
                token: Some(fresh),
            },
        };
        let id = phone.renew_online(settlement, valid_for_s, device_now, rng)?;
        Ok((phone, id))
    }

    /// Renews online as `fare-wallet renew` does: a fresh device key, its
    /// credential from settlement with the passenger token, installed with
    /// the sequence restarted and the clock offset from the answer.
    pub fn renew_online(
        &mut self,
        settlement: &Backoffice,
        valid_for_s: u64,
        device_now: u64,
        rng: &mut impl CryptoRngCore,
    ) -> AdapterResult<RenewedId> {
        let PhoneWallet::App {
            wallet,
            account,
            token,
        } = &mut self.inner
        else {
            return Err("renewal: the phone did not enrol online".into());
        };
        match token {
            None => {
                let clock = move || device_now;
                // The server's address of now: a settlement restart serves
                // on a new loopback port (`renew --server`).
                let url = settlement.base_url();
                fare_wallet::online::renew(wallet, url.as_deref(), valid_for_s, &clock, rng)
                    .map_err(online_code)?;
            }
            Some(token) => {
                let key = SigningKey::generate(rng);
                let (bytes, server_now) = settlement
                    .renew_with_token(token, account, key.verifying_key().to_bytes(), valid_for_s)
                    .map_err(refusal_code)?;
                wallet
                    .install_renewal(key, &bytes, (server_now, device_now))
                    .map_err(s)?;
            }
        }
        self.credential_id()
    }

    /// Whether the wallet enrolled online (it renews with its passenger token).
    pub fn online(&self) -> bool {
        matches!(self.inner, PhoneWallet::App { .. })
    }

    fn credential_id(&self) -> AdapterResult<RenewedId> {
        let c = match &self.inner {
            PhoneWallet::Core(w) => w.credential(),
            PhoneWallet::App { wallet, .. } => wallet.core().credential(),
        };
        c.map(|c| c.body().credential_id.0)
            .ok_or_else(|| "no credential installed".to_string())
    }
}

/// Settlement's stable error code in an error body (`{"error": CODE, ...}`),
/// else the text itself: renewal refusals are counted by code, the same
/// in process and over HTTP.
fn refusal_code(body: String) -> String {
    serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("error").and_then(|c| c.as_str()).map(str::to_string))
        .unwrap_or(body)
}

/// The stable code of the wallet's online failure (settlement's code when it refused).
fn online_code(e: fare_wallet::online::OnlineError) -> String {
    match e {
        fare_wallet::online::OnlineError::Refused { code, .. } => code,
        other => other.to_string(),
    }
}

// ------------------------------------------------------------------ reader

/// What the reader answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// Sequence of the accepted ride (`None` on reject).
    pub accepted_seq: Option<u64>,
    /// Stable reject reason (`None` on accept).
    pub reason: Option<String>,
    /// Wall-clock decision time, nanoseconds (not deterministic).
    pub latency_ns: u64,
}

/// Reader storage options the scenario controls.
#[derive(Clone, Copy, Debug)]
pub struct ReaderStorage {
    /// Logical log limit, bytes (`None`: the reader's default).
    pub max_log_bytes: Option<u64>,
    /// fdatasync after flush (off on tmpfs-backed simulations for speed is fine; on by default).
    pub device_sync: bool,
    /// Records per upload batch.
    pub batch_max_records: usize,
    /// sled page cache, bytes.
    pub cache_bytes: u64,
    /// sled log segment size, bytes (sled buffers one in memory).
    pub segment_bytes: u64,
}

/// Identity of a reader to provision.
#[derive(Clone, Debug)]
pub struct ReaderIdentity {
    /// Reader id (≥ 1).
    pub reader_id: u32,
    /// Operator.
    pub operator: String,
    /// Vehicle.
    pub vehicle: String,
    /// Route.
    pub route: String,
}

/// A real bus reader on its sled log.
pub struct BusReader {
    inner: Reader,
    batch_max_records: usize,
}

impl std::fmt::Debug for BusReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BusReader").finish_non_exhaustive()
    }
}

fn answer(d: fare_validator::decision::Decision) -> Answer {
    Answer {
        accepted_seq: d.ride_id().map(|r| r.seq),
        reason: d.reason_code().map(str::to_string),
        latency_ns: d.total_ns,
    }
}

impl BusReader {
    /// Provisions a reader in `dir` with its key, the root key and a first bundle.
    pub fn provision(
        dir: &Path,
        id: &ReaderIdentity,
        storage: ReaderStorage,
        root_public: [u8; 32],
        key: SigningKey,
        bundle: &[u8],
        now: u64,
    ) -> AdapterResult<BusReader> {
        let mut cfg = ReaderConfig::new(ReaderIdentityConfig {
            reader_id: id.reader_id,
            operator: id.operator.clone(),
            vehicle: id.vehicle.clone(),
            route: id.route.clone(),
            stop: None,
        });
        if let Some(m) = storage.max_log_bytes {
            cfg.storage.max_log_bytes = m;
        }
        cfg.storage.device_sync = storage.device_sync;
        cfg.storage.batch_max_records = storage.batch_max_records;
        // Many readers in one process: keep sled's page cache small.
        cfg.storage.cache_capacity_bytes = storage.cache_bytes;
        cfg.storage.segment_bytes = storage.segment_bytes;
        // No flusher thread per reader: a simulated reader's writes reach
        // its files at its own durability points (every accept,
        // acknowledgement and bundle), as on a bus; thousands of readers
        // share two cores here.
        cfg.storage.background_flush_ms = 0;
        // The most generous decode budget: a loaded machine must not turn a
        // frame into `no_code_found` (that would make runs differ).
        cfg.camera.decode_budget_ms = fare_validator::config::MAX_DECODE_BUDGET_MS;
        let root = fare_credential::keys::parse_public_key(&root_public).map_err(s)?;
        let inner = Reader::provision(dir, cfg, root, key, bundle, now).map_err(s)?;
        Ok(BusReader {
            inner,
            batch_max_records: storage.batch_max_records,
        })
    }
    /// Opens a provisioned reader (after a crash or a restore).
    pub fn open(dir: &Path, now: u64) -> AdapterResult<BusReader> {
        let inner = Reader::open(dir, now).map_err(s)?;
        let batch_max_records = inner.config().storage.batch_max_records;
        Ok(BusReader {
            inner,
            batch_max_records,
        })
    }
    /// Flushes the log to the device (the validator's `Reader::flush`, as
    /// on exit) and closes it; [`BusReader::open`] brings it back.
    pub fn close(self) -> AdapterResult<()> {
        self.inner.flush().map_err(s)
    }
    /// Decides on payload bytes.
    pub fn decide_payload(&mut self, bytes: &[u8], now: u64) -> Answer {
        answer(self.inner.decide_payload(bytes, now))
    }
    /// Decides on a camera frame.
    pub fn decide_frame(&mut self, frame: &image::GrayImage, now: u64) -> Answer {
        answer(self.inner.decide_frame(frame, now))
    }
    /// The next signed batch `(bytes, first, last)`.
    pub fn next_batch(&self) -> AdapterResult<Option<(Vec<u8>, u64, u64)>> {
        self.inner.next_batch(self.batch_max_records).map_err(s)
    }
    /// The real reader, for the sync glue in [`crate::link`] (the
    /// validator's `sync::contact` takes the reader itself).
    pub fn reader_mut(&mut self) -> &mut Reader {
        &mut self.inner
    }
    /// Installs a bundle; `Ok(false)` when it is not newer.
    pub fn install_bundle(&mut self, bytes: &[u8], now: u64) -> AdapterResult<bool> {
        match self.inner.install_bundle(bytes, now) {
            Ok(_) => Ok(true),
            Err(fare_validator::ValidatorError::Bundle(
                fare_validator::error::BundleError::NotNewer { .. },
            )) => Ok(false),
            Err(e) => Err(e.to_string()),
        }
    }
    /// Installed bundle version.
    pub fn bundle_version(&self) -> u64 {
        self.inner.bundle_version()
    }
    /// Highest acknowledged sequence.
    pub fn acked_up_to(&self) -> u64 {
        self.inner.state().acked_up_to
    }
    /// Last sequence written (0: none).
    pub fn last_seq(&self) -> u64 {
        self.inner.state().next_seq - 1
    }
    /// Housekeeping (replay pruning, compaction).
    pub fn maintenance(&mut self, now: u64) -> AdapterResult<()> {
        self.inner.maintenance(now).map_err(s)
    }
    /// Walks the chain; the number of records.
    pub fn verify_chain(&self) -> AdapterResult<u64> {
        self.inner.verify_chain().map_err(s)
    }
    /// Every record in the log `(seq, reader time, encoded record)`.
    pub fn records(&self) -> AdapterResult<Vec<fare_credential::RideRecord>> {
        self.inner.records().map(|r| r.map_err(s)).collect()
    }
}

// -------------------------------------------------------------- settlement

/// One settled ride as settlement reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettledRide {
    /// Reader.
    pub reader_id: u32,
    /// Reader sequence.
    pub seq: u64,
    /// Outcome code (`charged`, `duplicate`, `forged`, ...).
    pub outcome: String,
    /// True when the outcome is rated (charged in some amount, possibly 0).
    pub rated: bool,
    /// Account charged.
    pub account_id: Option<String>,
    /// Credential and device sequence of the code, when it parsed.
    pub code_key: Option<([u8; 16], u32)>,
    /// Amount currently rated.
    pub amount_minor: i64,
    /// Operator credited.
    pub operator: String,
}

/// A fraud event: `(kind, charged ride, duplicate ride)`, rides as `(reader, seq)`.
pub type FraudEvent = (String, (u32, u64), (u32, u64));

/// Planted settlement bugs (tests of the oracle only).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlantedBugs {
    /// After each settlement run, charge the first newly charged ride a second time.
    pub double_charge: bool,
}

/// `fare-settlement serve` on a loopback listener (`--network`): the
/// library's own server (`fare_settlement::serve`) on its own runtime,
/// sharing the [`App`] the simulator administers directly.
struct Server {
    rt: tokio::runtime::Runtime,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    link: fare_validator::sync::HttpLink,
    /// `http://127.0.0.1:PORT` (the wallet's online calls go there).
    url: String,
}

/// Per-request time limit of the readers' HTTP link in `--network` runs:
/// generous, so a loaded machine cannot turn an answer into a timeout (that
/// would make runs differ); the injected faults are the link's only failures.
pub const NETWORK_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// A disputed fare held in suspense: `(charged ride (reader, seq), operator
/// held from, amount held)`.
pub type HeldDispute = ((u32, u64), String, i64);

/// A published deny list: `(version, denied credential ids)`.
pub type DenyHead = (u64, Vec<[u8; 16]>);

/// A rider to enrol ([`Backoffice::enrol_batch`]).
#[derive(Clone, Debug)]
pub struct Enrolment {
    /// Account id.
    pub account: String,
    /// Concession profile.
    pub profile: Profile,
    /// Credit limit, minor units.
    pub credit_limit: i64,
    /// The phone's device public key.
    pub device_public_key: [u8; 32],
    /// Credential lifetime asked for.
    pub valid_for_s: u64,
}

/// How the simulator runs settlement ([`Backoffice::open`]).
#[derive(Clone, Copy, Debug)]
pub struct BackofficeOptions {
    /// Seed of settlement's RNG (each reopen after a restart adds its count).
    pub seed: u64,
    /// Bugs planted on purpose, for the oracle to find.
    pub bugs: PlantedBugs,
    /// Serve over loopback HTTP (`--network`) instead of in process.
    pub network: bool,
    /// Settlement's sled page cache, MiB (`settlement_cache_mb`).
    pub cache_mb: u64,
}

/// The settlement service, in process, on its sled data dir.
pub struct Backoffice {
    app: Option<Arc<App>>,
    server: Option<Server>,
    network: bool,
    dir: PathBuf,
    config: Config,
    clock: ManualClock,
    seed: u64,
    opens: u64,
    bugs: PlantedBugs,
    doubled: bool,
}

impl std::fmt::Debug for Backoffice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backoffice")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn api<T, E: Into<fare_settlement::ApiError>>(r: Result<T, E>) -> AdapterResult<T> {
    r.map_err(|e| e.into().body().to_string())
}

impl Backoffice {
    /// Opens (initialising keys on first open) settlement in `dir` with the
    /// tariff JSON in `tariff_file`, at simulated time `now`.
    pub fn open(
        dir: &Path,
        tariff_file: &Path,
        now: u64,
        options: BackofficeOptions,
    ) -> AdapterResult<Backoffice> {
        let config = Config {
            operator_token: "simulator".into(),
            tariff_file: Some(tariff_file.to_path_buf()),
            sled_cache_mb: options.cache_mb,
            ..Config::default()
        };
        let clock = ManualClock::new(now);
        let mut b = Backoffice {
            app: None,
            server: None,
            network: options.network,
            dir: dir.to_path_buf(),
            config,
            clock,
            seed: options.seed,
            opens: 0,
            bugs: options.bugs,
            doubled: false,
        };
        b.reopen()?;
        Ok(b)
    }
    fn reopen(&mut self) -> AdapterResult<()> {
        self.stop_server()?;
        if let Some(app) = self.app.take() {
            // Every clone (the server's) is gone: the database closes here.
            Arc::try_unwrap(app).map_err(|_| "settlement still in use at restart".to_string())?;
        }
        let app = Arc::new(
            App::open(
                &self.dir,
                self.config.clone(),
                Arc::new(self.clock.clone()),
                Some(self.seed.wrapping_add(self.opens)),
            )
            .map_err(s)?,
        );
        self.opens += 1;
        if self.network {
            self.server = Some(Self::start_server(app.clone())?);
        }
        self.app = Some(app);
        Ok(())
    }
    fn start_server(app: Arc<App>) -> AdapterResult<Server> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("sim-settlement")
            .enable_all()
            .build()
            .map_err(s)?;
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(s)?;
        std_listener.set_nonblocking(true).map_err(s)?;
        let addr = std_listener.local_addr().map_err(s)?;
        let listener = {
            let _guard = rt.enter();
            tokio::net::TcpListener::from_std(std_listener).map_err(s)?
        };
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let task = rt.spawn(fare_settlement::serve(listener, app, async {
            let _ = rx.await;
        }));
        // A new client per server: no pooled connection to a stopped one.
        let url = format!("http://{addr}");
        let link = fare_validator::sync::HttpLink::new(&url, NETWORK_REQUEST_TIMEOUT).map_err(s)?;
        Ok(Server {
            rt,
            stop,
            task,
            link,
            url,
        })
    }
    fn stop_server(&mut self) -> AdapterResult<()> {
        if let Some(srv) = self.server.take() {
            let _ = srv.stop.send(());
            srv.rt
                .block_on(srv.task)
                .map_err(s)?
                .map_err(|e| format!("settlement server: {e}"))?;
            srv.rt.shutdown_timeout(std::time::Duration::from_secs(10));
        }
        Ok(())
    }
    /// The HTTP link to the loopback server (`--network` runs only).
    pub fn http_link(&self) -> Option<&fare_validator::sync::HttpLink> {
        self.server.as_ref().map(|s| &s.link)
    }
    /// The loopback server's base URL (`--network` runs only).
    pub fn base_url(&self) -> Option<String> {
        self.server.as_ref().map(|s| s.url.clone())
    }
    /// The operator enrols a phone for online use: a passenger token
    /// (`POST /v1/accounts/{id}/tokens`, called in process as every
    /// administration step of the simulator is).
    pub fn issue_passenger_token(&self, account: &str) -> AdapterResult<String> {
        let app = self.app();
        let _w = app.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut rng = app.rng.lock().unwrap_or_else(|p| p.into_inner());
        let req = fare_settlement::passengers::IssueToken {
            label: "simulated phone".into(),
        };
        let t =
            fare_settlement::passengers::issue_token(&app.db, account, &req, self.now(), &mut *rng)
                .map_err(|e| e.body().to_string())?;
        Ok(t.token)
    }
    /// The caller a request with `Authorization: Bearer <token>` on
    /// account `account`'s routes is (settlement's own `account_caller`).
    fn passenger_caller(
        &self,
        account: &str,
        token: &str,
    ) -> AdapterResult<fare_settlement::passengers::Caller> {
        let app = self.app();
        let mut headers = reqwest::header::HeaderMap::new();
        let value = format!("Bearer {token}").parse().map_err(s)?;
        headers.insert(reqwest::header::AUTHORIZATION, value);
        fare_settlement::passengers::account_caller(&app.db, &app.operator_token, &headers, account)
            .map_err(|e| e.body().to_string())
    }
    /// What `POST /v1/accounts/{id}/tokens/rotate` does with `token`: the
    /// new token (in-process phones).
    pub fn rotate_passenger_token(&self, account: &str, token: &str) -> AdapterResult<String> {
        let app = self.app();
        let caller = self.passenger_caller(account, token)?;
        let _w = app.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut rng = app.rng.lock().unwrap_or_else(|p| p.into_inner());
        let t = fare_settlement::passengers::rotate_token(&app.db, &caller, self.now(), &mut *rng)
            .map_err(|e| e.body().to_string())?;
        Ok(t.token)
    }
    /// What `POST /v1/accounts/{id}/devices` does for a passenger token
    /// (in-process phones): `(credential bytes, server time)`.
    pub fn renew_with_token(
        &self,
        token: &str,
        account: &str,
        device_public_key: [u8; 32],
        valid_for_s: u64,
    ) -> AdapterResult<(Vec<u8>, u64)> {
        let app = self.app();
        let caller = self.passenger_caller(account, token)?;
        let req = fare_settlement::ops::RegisterDevice {
            device_public_key: hex::encode(device_public_key),
            valid_for_s,
        };
        drop(app.reload_keys().map_err(s)?);
        let _w = app.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut rng = app.rng.lock().unwrap_or_else(|p| p.into_inner());
        let c = api(fare_settlement::ops::register_device_via(
            &app.db,
            &app.keys,
            account,
            &req,
            caller.device_id(),
            self.config.max_credential_validity_s,
            self.now(),
            &mut *rng,
        ))?;
        Ok((hex::decode(&c.credential).map_err(s)?, self.now()))
    }
    /// Stops the server, if any (end of a run).
    pub fn shutdown(&mut self) -> AdapterResult<()> {
        self.stop_server()
    }
    /// Answers a batch as `POST /v1/batches` does (settlement's own
    /// `intake::answer_batch`), in process: `(HTTP status, JSON body)`.
    pub fn answer_batch(&self, body: &[u8], reader_time: u64, auth: &str) -> (u16, Vec<u8>) {
        let r =
            fare_settlement::intake::answer_batch(self.app(), body, Some(auth), Some(reader_time));
        match r {
            Ok(v) => (200, v.to_string().into_bytes()),
            Err(e) => (e.status.as_u16(), e.body().to_string().into_bytes()),
        }
    }
    /// Answers `GET /v1/readers/{id}/bundle?since=&tariff=` in process
    /// (settlement's own `intake::answer_bundle`): `(HTTP status, body)`.
    pub fn answer_bundle(
        &self,
        query: fare_validator::sync::BundleQuery,
        reader_time: u64,
        auth: &str,
    ) -> (u16, Vec<u8>) {
        let target = query.target();
        let caller = fare_settlement::intake::BundleCaller::Reader(Some(auth));
        match fare_settlement::intake::answer_bundle(
            self.app(),
            query,
            caller,
            &target,
            Some(reader_time),
        ) {
            Ok(bytes) => (200, bytes),
            Err(e) => (e.status.as_u16(), e.body().to_string().into_bytes()),
        }
    }
    /// A crash and restart: drops the app (its database closes) and opens it again.
    pub fn restart(&mut self) -> AdapterResult<()> {
        self.reopen()
    }
    fn app(&self) -> &App {
        self.app
            .as_deref()
            .expect("settlement is open between restarts")
    }
    /// Sets settlement's clock.
    pub fn set_time(&self, now: u64) {
        self.clock.set(now);
    }
    /// Current settlement time.
    pub fn now(&self) -> u64 {
        self.clock.now_unix_s()
    }
    /// Credential validity settlement issues (and the code validity / skew readers use).
    pub fn policy(&self) -> (u64, u64, u64) {
        (
            self.config.max_credential_validity_s,
            self.config.code_validity_s,
            self.config.skew_tolerance_s,
        )
    }
    /// The deployment root public key.
    pub fn root_public_key(&self) -> AdapterResult<[u8; 32]> {
        let path = self.dir.join("keys").join("root.pub");
        let text = std::fs::read_to_string(&path).map_err(s)?;
        let b = hex::decode(text.trim()).map_err(s)?;
        b.try_into()
            .map_err(|_| "root.pub: not 32 bytes".to_string())
    }
    /// Creates an account.
    pub fn create_account(
        &self,
        id: &str,
        profile: Profile,
        credit_limit: i64,
    ) -> AdapterResult<()> {
        let app = self.app();
        let req = fare_settlement::ops::CreateAccount {
            account_id: Some(id.into()),
            profile: Some(profile),
            credit_limit_minor: Some(credit_limit),
        };
        let mut rng = app.rng.lock().unwrap_or_else(|p| p.into_inner());
        api(fare_settlement::ops::create_account(
            &app.db,
            &req,
            self.config.default_credit_limit_minor,
            self.now(),
            &mut *rng,
        ))?;
        Ok(())
    }
    /// Enrols riders in one write set (one commit, one flush) instead of
    /// the two commits per rider of `create_account` + `register_device`:
    /// the same account and credential records (`Db::put_account`,
    /// `KeyStore::issue_credential_with_id`, `Db::put_credential`), the same
    /// draws from settlement's RNG in the same order, so the same credential
    /// ids, with the credentials checked and signed on every core.
    /// For fresh accounts only (the simulator's riders); returns the write
    /// set, for [`Backoffice::commit_enrolments`] (which may run while the
    /// next batch is prepared), and each rider's `(credential bytes,
    /// credential id)`.
    #[allow(clippy::type_complexity)]
    pub fn prepare_enrolments(
        &self,
        riders: &[Enrolment],
    ) -> AdapterResult<(fare_settlement::store::WriteSet, Vec<(Vec<u8>, [u8; 16])>)> {
        use fare_settlement::model::{Account, CredentialRecord};
        use fare_settlement::store::{Db, WriteSet};
        use rayon::prelude::*;
        let app = self.app();
        let now = self.now();
        let mut w = WriteSet::default();
        // The ids drawn in the riders' order, as `issue_credential` one at a
        // time would; the checks and signatures on every core.
        let ids: Vec<CredentialId> = {
            let mut rng = app.rng.lock().unwrap_or_else(|p| p.into_inner());
            riders
                .iter()
                .map(|_| fare_keys::draw_credential_id(&mut *rng))
                .collect()
        };
        let checked = device_keys_checked_together(riders);
        let keys = app.keys.lock().unwrap_or_else(|p| p.into_inner());
        let creds = riders
            .par_iter()
            .zip(checked)
            .zip(ids)
            .map(|((r, key), id)| {
                let req = fare_keys::IssueRequest {
                    device_public_key: r.device_public_key,
                    profile: r.profile,
                    valid_from_unix_s: now,
                    valid_for_s: r.valid_for_s.min(self.config.max_credential_validity_s),
                };
                key.map_err(fare_keys::KeysError::from)
                    .and_then(|key| keys.issue_credential_for_key(&req, &key, now, id))
                    .map_err(|e| format!("{}: {e}", r.account))
            })
            .collect::<Result<Vec<_>, String>>()?;
        drop(keys);
        let mut out = Vec::with_capacity(riders.len());
        for (r, cred) in riders.iter().zip(creds) {
            Db::put_account(
                &mut w,
                &Account {
                    account_id: r.account.clone(),
                    profile: r.profile,
                    credit_limit_minor: r.credit_limit,
                    frozen: false,
                    created_unix_s: now,
                },
            );
            let body = cred.body();
            Db::put_credential(
                &mut w,
                &CredentialRecord {
                    credential_id: body.credential_id,
                    account_id: r.account.clone(),
                    profile: body.profile,
                    valid_from_unix_s: u64::from(body.valid_from_unix_s),
                    valid_until_unix_s: u64::from(body.valid_until_unix_s),
                    issued_unix_s: now,
                },
            );
            out.push((cred.as_bytes().to_vec(), body.credential_id.0));
        }
        Ok((w, out))
    }

    /// Commits a write set of [`Backoffice::prepare_enrolments`] (one
    /// commit, one flush).
    pub fn commit_enrolments(&self, writes: fare_settlement::store::WriteSet) -> AdapterResult<()> {
        self.app().db.commit(writes).map_err(s)
    }
    /// Registers a device key and issues a credential: `(credential bytes, id, valid until)`.
    pub fn issue(
        &self,
        account: &str,
        device_public_key: [u8; 32],
        valid_for_s: u64,
    ) -> AdapterResult<(Vec<u8>, [u8; 16], u64)> {
        let app = self.app();
        let req = fare_settlement::ops::RegisterDevice {
            device_public_key: hex::encode(device_public_key),
            valid_for_s,
        };
        let mut rng = app.rng.lock().unwrap_or_else(|p| p.into_inner());
        let c = api(fare_settlement::ops::register_device(
            &app.db,
            &app.keys,
            account,
            &req,
            self.config.max_credential_validity_s,
            self.now(),
            &mut *rng,
        ))?;
        let id = CredentialId::from_hex(&c.credential_id).map_err(s)?;
        Ok((
            hex::decode(&c.credential).map_err(s)?,
            id.0,
            c.valid_until_unix_s,
        ))
    }
    /// Provisions a reader.
    pub fn provision_reader(&self, id: &ReaderIdentity, public_key: [u8; 32]) -> AdapterResult<()> {
        let req = fare_settlement::ops::ProvisionReader {
            reader_id: id.reader_id,
            public_key: hex::encode(public_key),
            operator: id.operator.clone(),
            vehicle: id.vehicle.clone(),
            route: id.route.clone(),
        };
        api(fare_settlement::ops::provision_reader(
            &self.app().db,
            &req,
            self.now(),
        ))?;
        Ok(())
    }
    /// A reader bundle (deny list delta since `since`), with the deny list
    /// it carries: `(bytes, deny version, denied credential ids)`. (Serving a
    /// bundle publishes a new deny version when the revoked set changed.)
    pub fn bundle(&self, since: Option<u64>) -> AdapterResult<(Vec<u8>, u64, Vec<[u8; 16]>)> {
        let bytes = self.app().bundle(since).map_err(s)?;
        let (version, ids) = self.deny_head()?;
        Ok((bytes, version, ids))
    }
    /// Publishes the deny list if it changed: `(version, denied credential ids)`.
    pub fn deny_head(&self) -> AdapterResult<DenyHead> {
        let head = self.app().refresh_deny().map_err(s)?;
        Ok((
            head.version,
            head.credential_ids.iter().map(|c| c.0).collect(),
        ))
    }
    /// Runs settlement, adding the wall time of each of its phases to
    /// `times`, and publishes the deny list: `(deny version, denied ids)`.
    pub fn settle(
        &mut self,
        times: &mut fare_settlement::settle::PhaseTimes,
    ) -> AdapterResult<(u64, Vec<[u8; 16]>)> {
        self.app().settle_timed(times).map_err(s)?;
        if self.bugs.double_charge && !self.doubled {
            self.plant_double_charge()?;
        }
        let d = self.app().refresh_deny().map_err(s)?;
        Ok((d.version, d.credential_ids.iter().map(|c| c.0).collect()))
    }
    /// The planted bug: one charged ride charged a second time (a balanced
    /// posting, so only an oracle comparing amounts can see it).
    fn plant_double_charge(&mut self) -> AdapterResult<()> {
        let app = self.app();
        let Some(r) = app
            .db
            .results()
            .map_err(s)?
            .into_iter()
            .find(|r| r.outcome.is_rated() && r.amount_minor > 0 && r.account_id.is_some())
        else {
            return Ok(());
        };
        let account = r.account_id.clone().unwrap_or_default();
        let posting = fare_ledger::Posting {
            posting_id: format!("planted-double/{}", r.ride),
            debit: fare_ledger::AccountRef::passenger(&account),
            credit: fare_ledger::AccountRef::operator(&r.operator),
            amount_minor: r.amount_minor,
            kind: fare_ledger::PostingKind::RideAdjustment,
            ride_key: Some(r.ride.to_string()),
            service_day: r.service_day.parse().ok(),
        };
        let mut balances = std::collections::HashMap::new();
        for acc in [posting.debit.to_string(), posting.credit.to_string()] {
            balances.insert(acc.clone(), app.db.balance(&acc).map_err(s)?);
        }
        let mut w = fare_settlement::store::WriteSet::default();
        fare_settlement::store::Db::put_postings(
            &mut w,
            std::slice::from_ref(&posting),
            &mut balances,
        );
        fare_settlement::store::Db::put_balances(&mut w, &balances);
        app.db.commit(w).map_err(s)?;
        self.doubled = true;
        Ok(())
    }
    /// Records a payment. The deny list is published by the next
    /// settlement run (the route publishes after each payment; the
    /// evening's payments come in a burst here, and a debtor leaving the
    /// list later is harmless).
    pub fn pay(&self, account: &str, payment_id: &str, amount: i64) -> AdapterResult<()> {
        let req = fare_settlement::ops::MakePayment {
            payment_id: payment_id.into(),
            amount_minor: amount,
        };
        let app = self.app();
        {
            let _w = app.write_lock.lock().unwrap_or_else(|p| p.into_inner());
            api(fare_settlement::ops::pay(
                &app.db,
                account,
                &req,
                self.now(),
            ))?;
        }
        Ok(())
    }
    /// Freezes an account (a reported stolen phone), then publishes the
    /// deny list (as `POST /v1/accounts/{id}/freeze` does).
    pub fn freeze(&self, account: &str) -> AdapterResult<DenyHead> {
        let app = self.app();
        {
            let _w = app.write_lock.lock().unwrap_or_else(|p| p.into_inner());
            api(fare_settlement::ops::set_frozen(&app.db, account, true))?;
        }
        self.deny_head()
    }
    /// An account's balance (negative: debt).
    pub fn balance(&self, account: &str) -> AdapterResult<i64> {
        let app = self.app();
        app.db
            .balance(&fare_settlement::core::passenger_account(account))
            .map_err(s)
    }
    /// The sum of an account's postings (credits minus debits).
    pub fn postings_sum(&self, account: &str) -> AdapterResult<i64> {
        let app = self.app();
        let acc = fare_settlement::core::passenger_account(account);
        let mut sum = 0i64;
        for p in app.db.postings_of(&acc).map_err(s)? {
            if p.credit.to_string() == acc {
                sum += p.amount_minor;
            }
            if p.debit.to_string() == acc {
                sum -= p.amount_minor;
            }
        }
        Ok(sum)
    }
    /// Every settled ride.
    pub fn results(&self) -> AdapterResult<Vec<SettledRide>> {
        Ok(self
            .app()
            .db
            .results()
            .map_err(s)?
            .into_iter()
            .map(|r| SettledRide {
                reader_id: r.ride.reader_id,
                seq: r.ride.reader_seq,
                outcome: r.outcome.code().to_string(),
                rated: r.outcome.is_rated(),
                account_id: r.account_id,
                code_key: r.credential_id.zip(r.device_seq).map(|(c, d)| (c.0, d)),
                amount_minor: r.amount_minor,
                operator: r.operator,
            })
            .collect())
    }
    /// Rides held (ingested).
    pub fn ride_count(&self) -> AdapterResult<u64> {
        self.app().db.ride_count().map_err(s)
    }
    /// Reader incidents `(reader, kind, seq)`.
    pub fn incidents(&self) -> AdapterResult<Vec<(u32, String, u64)>> {
        Ok(self
            .app()
            .db
            .incidents()
            .map_err(s)?
            .into_iter()
            .map(|i| (i.reader_id, i.kind, i.seq))
            .collect())
    }
    /// Fraud events `(kind, charged ride, duplicate ride)`.
    pub fn fraud_events(&self) -> AdapterResult<Vec<FraudEvent>> {
        Ok(self
            .app()
            .db
            .fraud_events()
            .map_err(s)?
            .into_iter()
            .map(|f| {
                (
                    f.kind,
                    (f.charged_ride.reader_id, f.charged_ride.reader_seq),
                    (f.duplicate_ride.reader_id, f.duplicate_ride.reader_seq),
                )
            })
            .collect())
    }
    /// Disputed fares held in suspense.
    pub fn disputes(&self) -> AdapterResult<Vec<HeldDispute>> {
        Ok(self
            .app()
            .db
            .disputes()
            .map_err(s)?
            .into_iter()
            .map(|d| {
                (
                    (d.charged_ride.reader_id, d.charged_ride.reader_seq),
                    d.held_from,
                    d.held_minor,
                )
            })
            .collect())
    }
    /// Accounts on the deny list.
    pub fn revoked_accounts(&self) -> AdapterResult<Vec<String>> {
        self.app().db.revoked_accounts().map_err(s)
    }
    /// Revenue per operator from the daily report (all days).
    pub fn revenue_by_operator(&self) -> AdapterResult<BTreeMap<String, i64>> {
        let mut out = BTreeMap::new();
        for l in fare_settlement::reports::daily(&self.app().db, None).map_err(s)? {
            *out.entry(l.operator).or_insert(0) += l.revenue_minor;
        }
        Ok(out)
    }
    /// Ledger check: `(sum of all balances, posting count, operator revenue balances)`.
    pub fn ledger(&self) -> AdapterResult<(i64, u64, BTreeMap<String, i64>)> {
        let l = fare_settlement::reports::ledger(&self.app().db).map_err(s)?;
        let ops = l
            .balances
            .iter()
            .filter_map(|(k, v)| k.strip_prefix("operator:").map(|o| (o.to_string(), *v)))
            .collect();
        Ok((l.sum_minor, l.postings, ops))
    }
    /// Exposure report: account → (debt, bound).
    pub fn exposure(&self) -> AdapterResult<BTreeMap<String, (i64, Option<i64>)>> {
        let app = self.app();
        Ok(fare_settlement::reports::exposure(
            &app.db,
            &app.tariff,
            self.now(),
            self.config.skew_tolerance_s,
        )
        .map_err(s)?
        .into_iter()
        .map(|e| (e.account_id, (e.debt_minor, e.exposure_bound_minor)))
        .collect())
    }
}

/// The enrolling riders' device keys, checked for issuance as
/// `issue_credential_with_id` checks each (valid, not weak, no
/// small-order component) but in groups
/// (`fare_credential::keys::device_keys_for_issuance`: about a third of
/// the cost per key), one group per core. The group test's subsets come
/// from the OS, not from the run's seed: a mixed-order key is caught
/// whatever they are (except with probability 2⁻¹²⁸), so the report does
/// not depend on them, and they stay unknown to whoever chose the keys.
fn device_keys_checked_together(
    riders: &[Enrolment],
) -> Vec<Result<fare_credential::keys::IssuableKey, fare_credential::keys::KeyError>> {
    use rand_core::SeedableRng;
    use rayon::prelude::*;
    let part = riders
        .len()
        .div_ceil(rayon::current_num_threads())
        .max(fare_credential::subgroup::GROUP_TEST_MIN_POINTS);
    riders
        .par_chunks(part)
        .flat_map_iter(|group| {
            let keys: Vec<[u8; 32]> = group.iter().map(|r| r.device_public_key).collect();
            let mut rng = rand_chacha::ChaCha20Rng::from_entropy();
            fare_credential::keys::device_keys_for_issuance(&keys, &mut rng)
        })
        .collect()
}
