//! Shared helpers of the end-to-end tests: a real service on loopback,
//! real keys, real signed credentials, ride codes and batches.
#![allow(dead_code)]

use fare_credential::testkit::{
    batch_request_auth, seeded_key, test_reader_key, TestReaderLog, DEMO_DAY_T0,
};
use fare_credential::{Credential, ManualClock, RideCode, SigningKey};
use fare_settlement::{App, Config};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// 2026-03-10 08:00 in Asia/Shanghai (00:00 UTC): service day 2026-03-10 of the demo tariff.
pub const T0: u64 = DEMO_DAY_T0;
/// Operator token of the tests.
pub const TOKEN: &str = "test-operator-token";

pub mod bundle;
pub mod day;
pub mod serve_child;

/// The number in environment variable `name` (a test's seed or cycle
/// count, set to replay a run), or `default`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Local Shanghai time on 2026-03-10 as unix seconds.
pub fn at(h: u64, m: u64) -> u64 {
    T0 + h * 3600 + m * 60 - 8 * 3600
}

/// A running service.
pub struct Server {
    pub url: String,
    pub app: Arc<App>,
    pub clock: ManualClock,
    pub data: PathBuf,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    pub http: reqwest::Client,
}

/// The storage backend an end-to-end test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// sled in the data dir (the default).
    Sled,
    /// A fresh database in a throwaway PostgreSQL cluster (`fare-pgtest`).
    Postgres,
}

/// One test's storage: a data dir (sled's database, and the keys on both
/// backends) and, on PostgreSQL, its cluster and database.
pub struct TestDb {
    pub dir: tempfile::TempDir,
    pub url: Option<String>,
    cluster: Option<fare_pgtest::PgCluster>,
}

impl TestDb {
    /// `None` when PostgreSQL is asked for and not installed (the test is
    /// reported SKIPPED locally; with `FARE_REQUIRE_POSTGRES=1` it fails).
    pub fn new(backend: Backend) -> Option<TestDb> {
        let (cluster, url) = match backend {
            Backend::Sled => (None, None),
            Backend::Postgres => {
                let c = fare_pgtest::PgCluster::start()?;
                let url = c.create_database();
                (Some(c), Some(url))
            }
        };
        Some(TestDb {
            dir: tempfile::tempdir().unwrap(),
            url,
            cluster,
        })
    }
    /// Another empty database of the same backend (its own data dir).
    pub fn sibling(&self) -> TestDb {
        TestDb {
            dir: tempfile::tempdir().unwrap(),
            url: self.cluster.as_ref().map(|c| c.create_database()),
            cluster: None,
        }
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    /// The PostgreSQL cluster this database lives in (`None` on sled and
    /// for a [`TestDb::sibling`]).
    #[allow(dead_code)]
    pub fn cluster(&self) -> Option<&fare_pgtest::PgCluster> {
        self.cluster.as_ref()
    }
    /// `config` pointed at this database.
    pub fn config(&self, config: Config) -> Config {
        Config {
            database_url: self.url.clone(),
            ..config
        }
    }
}

pub fn test_config() -> Config {
    Config {
        operator_token: TOKEN.into(),
        settle_chunk_rides: 5,
        ..Config::default()
    }
}

impl Server {
    /// Starts a service on 127.0.0.1:0 over `data` (the clock starts a day before T0).
    pub async fn start(data: &Path, config: Config) -> Server {
        let clock = ManualClock::new(T0 - 86_400);
        Self::start_with_clock(data, config, clock).await
    }

    /// Starts a service with [`test_config`] over `db`: how a scenario run
    /// on both backends begins.
    pub async fn start_on(db: &TestDb) -> Server {
        Self::start(db.path(), db.config(test_config())).await
    }

    pub async fn start_with_clock(data: &Path, config: Config, clock: ManualClock) -> Server {
        let app = Arc::new(
            App::open(data, config, Arc::new(clock.clone()), Some(42)).expect("app opens"),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(fare_settlement::serve(listener, app.clone(), async {
            let _ = rx.await;
        }));
        Server {
            url,
            app,
            clock,
            data: data.to_path_buf(),
            shutdown: Some(tx),
            handle: Some(handle),
            http: reqwest::Client::new(),
        }
    }

    /// Graceful shutdown; the database is closed when this returns.
    pub async fn stop(mut self) {
        let _ = self.shutdown.take().unwrap().send(());
        self.handle.take().unwrap().await.unwrap().unwrap();
        let app = self.app.clone();
        drop(self);
        // The router's clones go with the connection tasks, which may still
        // be unwinding for a moment after serve returned: wait (boundedly)
        // until ours is the last, so the database is really closed.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while Arc::strong_count(&app) > 1 && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(
            Arc::strong_count(&app),
            1,
            "app still shared 10 s after shutdown"
        );
        drop(app);
    }

    pub async fn op(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut rq = self
            .http
            .request(method, format!("{}{}", self.url, path))
            .bearer_auth(TOKEN);
        if let Some(b) = body {
            rq = rq.json(&b);
        }
        let resp = rq.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.op(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.op(reqwest::Method::GET, path, None).await
    }

    /// Posts a batch as its reader would: the request signed (SPEC §9)
    /// with the registered key of the reader the batch names
    /// ([`signer_of`]) at the service's time.
    pub async fn upload(&self, body: Vec<u8>) -> (u16, Value) {
        let id = signer_of(&body);
        let auth = batch_request_auth(&test_reader_key(id), id, self.app.now(), &body);
        self.upload_with(body, Some(&auth)).await
    }

    /// Posts a batch with the `X-Reader-Auth` header `auth` (none: unsigned).
    pub async fn upload_with(&self, body: Vec<u8>, auth: Option<&str>) -> (u16, Value) {
        let mut rq = self
            .http
            .post(format!("{}/v1/batches", self.url))
            .header("content-type", "application/octet-stream");
        if let Some(auth) = auth {
            rq = rq.header(fare_credential::request::REQUEST_AUTH_HEADER, auth);
        }
        let resp = rq.body(body).send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap())
    }

    /// Runs settlement and returns its summary (following a `202 Accepted`
    /// run to its end: a slow machine may take longer than `run_wait_ms`).
    pub async fn settle(&self) -> Value {
        let (s, v) = self.post("/v1/settlement/runs", json!({})).await;
        if s == 202 {
            let st = self.wait_run(v["status_url"].as_str().unwrap()).await;
            assert_eq!(st["status"], "done", "{st}");
            return st["summary"].clone();
        }
        assert_eq!(s, 200, "{v}");
        v
    }

    /// Polls a run's status resource (`/v1/settlement/runs/{id}`) until the
    /// run is no longer `running`; every answer must be 200 and name that
    /// run. Returns the last status.
    pub async fn wait_run(&self, url: &str) -> Value {
        let run_id: u64 = url.rsplit('/').next().unwrap().parse().unwrap();
        loop {
            let (s, st) = self.get(url).await;
            assert_eq!(s, 200, "{st}");
            assert_eq!(st["run_id"], run_id, "{st}");
            if st["status"] != "running" {
                return st;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    pub async fn create_account(&self, id: &str, profile: &str, limit: i64) {
        let (s, v) = self
            .post(
                "/v1/accounts",
                json!({"account_id": id, "profile": profile, "credit_limit_minor": limit}),
            )
            .await;
        assert_eq!(s, 201, "{v}");
    }

    /// Registers a fresh device key for the account; returns the phone.
    pub async fn phone(&self, account: &str, seed: u64) -> Phone {
        let device = seeded_key(seed);
        let (s, v) = self
            .post(
                &format!("/v1/accounts/{account}/devices"),
                json!({"device_public_key": hex::encode(device.verifying_key().to_bytes()), "valid_for_s": 3 * 86_400}),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        let cred = Credential::from_bytes(&hex::decode(v["credential"].as_str().unwrap()).unwrap())
            .unwrap();
        Phone {
            device,
            cred,
            seq: 0,
        }
    }

    pub async fn provision(&self, reader: &FakeReader) {
        let (s, v) = self
            .post(
                "/v1/readers",
                json!({"reader_id": reader.id, "public_key": hex::encode(reader.key.verifying_key().to_bytes()),
                       "operator": reader.operator, "vehicle": format!("bus-{}", reader.id), "route": reader.route}),
            )
            .await;
        assert_eq!(s, 201, "{v}");
    }

    /// Reader `id` of `operator` on `route`, provisioned here: a test's
    /// reader in one line.
    pub async fn provisioned_reader(&self, id: u32, operator: &str, route: &str) -> FakeReader {
        let reader = FakeReader::new(id, operator, route);
        self.provision(&reader).await;
        reader
    }

    /// Creates adult account `account` (credit limit 10 000) and registers
    /// the phone of key `seed` for it: the rider most scenarios need.
    pub async fn adult_rider(&self, account: &str, seed: u64) -> Phone {
        self.create_account(account, "adult", 10_000).await;
        self.phone(account, seed).await
    }

    /// Uploads each reader's whole log in turn, asserting each is accepted
    /// (200): the usual delivery of a day's rides.
    pub async fn upload_all(&self, readers: &[&FakeReader]) {
        for r in readers {
            let (s, v) = self.upload(r.all()).await;
            assert_eq!(s, 200, "{v}");
        }
    }

    /// The `/metrics` text, fetched as a scraper does (no token).
    pub async fn metrics(&self) -> String {
        let resp = self.http.get(format!("{}/metrics", self.url)).send();
        resp.await.unwrap().text().await.unwrap()
    }

    pub async fn rides_of_day(&self, day: &str) -> Vec<Value> {
        let (s, v) = self.get(&format!("/v1/reports/rides?day={day}")).await;
        assert_eq!(s, 200);
        v.as_array().unwrap().clone()
    }

    pub async fn balance(&self, account: &str) -> i64 {
        let (s, v) = self.get(&format!("/v1/accounts/{account}")).await;
        assert_eq!(s, 200, "{v}");
        v["balance_minor"].as_i64().unwrap()
    }
}

/// The reader whose registered key signs an upload of `body`: the one the
/// batch names, or reader 1 (every test's first) for a body that does not
/// parse, so settlement judges the body itself.
pub fn signer_of(body: &[u8]) -> u32 {
    fare_credential::SignedBatch::parse_v1(body).map_or(1, |b| b.reader_id())
}

/// Provisions `r` through `ops` directly (in process, no HTTP).
pub fn provision_in_process(app: &App, r: &FakeReader) {
    fare_settlement::ops::provision_reader(
        &app.db,
        &fare_settlement::ops::ProvisionReader {
            reader_id: r.id,
            public_key: hex::encode(r.key.verifying_key().to_bytes()),
            operator: r.operator.clone(),
            vehicle: format!("bus-{}", r.id),
            route: r.route.clone(),
        },
        app.now(),
    )
    .unwrap();
}

/// Creates account `id` and registers a device key drawn from `rng` for it
/// through `ops` directly (in process, no HTTP); returns the phone.
pub fn phone_in_process(
    app: &App,
    id: &str,
    profile: &str,
    credit_limit_minor: i64,
    rng: &mut rand_chacha::ChaCha20Rng,
) -> Phone {
    use fare_settlement::ops;
    let now = app.now();
    let req: ops::CreateAccount = serde_json::from_value(
        json!({"account_id": id, "profile": profile, "credit_limit_minor": credit_limit_minor}),
    )
    .unwrap();
    ops::create_account(&app.db, &req, 0, now, rng).unwrap();
    let device = SigningKey::generate(rng);
    let issued = ops::register_device(
        &app.db,
        &app.keys,
        id,
        &ops::RegisterDevice {
            device_public_key: hex::encode(device.verifying_key().to_bytes()),
            valid_for_s: 3 * 86_400,
        },
        3 * 86_400,
        now,
        rng,
    )
    .unwrap();
    let cred = Credential::from_bytes(&hex::decode(issued.credential).unwrap()).unwrap();
    Phone {
        device,
        cred,
        seq: 0,
    }
}

/// A phone: device key, credential, device sequence.
pub struct Phone {
    pub device: SigningKey,
    pub cred: Credential,
    pub seq: u32,
}

impl Phone {
    /// A fresh ride code shown at `t` (issued 5 s before).
    pub fn code(&mut self, t: u64) -> Vec<u8> {
        self.seq += 1;
        RideCode::sign_v1(&self.cred, (t - 5) as u32, self.seq, &self.device)
            .as_bytes()
            .to_vec()
    }
}

/// A reader's log and key ([`TestReaderLog`]: real chained records, real
/// signed batches) with the operator it is provisioned for.
pub struct FakeReader {
    pub id: u32,
    pub operator: String,
    reader: TestReaderLog,
}

impl FakeReader {
    pub fn new(id: u32, operator: &str, route: &str) -> FakeReader {
        FakeReader {
            id,
            operator: operator.into(),
            reader: TestReaderLog::new(id, route),
        }
    }
}

impl std::ops::Deref for FakeReader {
    type Target = TestReaderLog;
    fn deref(&self) -> &TestReaderLog {
        &self.reader
    }
}

impl std::ops::DerefMut for FakeReader {
    fn deref_mut(&mut self) -> &mut TestReaderLog {
        &mut self.reader
    }
}

/// A store's balances and per-ride fares, rides sorted: what two stores
/// that settled the same batches must agree on. The postings are left out
/// (how rides fall into chunks decides how many intermediate adjustments
/// exist).
pub fn ledger_and_rides(app: &App) -> (Value, Vec<Value>) {
    let mut ledger =
        serde_json::to_value(fare_settlement::reports::ledger(&app.db).unwrap()).unwrap();
    ledger["postings"] = Value::Null;
    let mut rides: Vec<Value> = app
        .db
        .results()
        .unwrap()
        .iter()
        .map(|r| json!([r.ride, r.amount_minor, r.outcome]))
        .collect();
    rides.sort_by_key(|v| v.to_string());
    (ledger, rides)
}
