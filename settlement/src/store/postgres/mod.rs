//! The PostgreSQL backend: one table `kv_<space> (k bytea PRIMARY KEY,
//! v bytea)` per [`Space`] (migrations in `settlement/migrations/`), the
//! same keys and values as sled, and [`Store::commit`] as one transaction.
//!
//! * Reads are single statements on a pooled connection (read committed:
//!   each sees every commit that finished before it).
//! * A commit checks its preconditions, deletes and upserts in one
//!   transaction; with preconditions it runs `SERIALIZABLE` (an absent key
//!   has no row to lock) and is retried whole on a serialization failure
//!   or deadlock, up to [`MAX_COMMIT_ATTEMPTS`]. Writes are batched:
//!   `INSERT … SELECT * FROM UNNEST($1::bytea[], $2::bytea[]) ON CONFLICT
//!   (k) DO UPDATE`, at most [`MAX_ROWS_PER_STATEMENT`] rows a statement.
//! * The writer claim ([`Store::claim_writer`]): a session advisory lock
//!   held on one connection for as long as the service's write lock is
//!   held, and the commits of that section run on that same connection, so
//!   a write is committed only while its claim is held; a killed instance's
//!   connection closes and the server drops its lock and its open
//!   transaction together.

pub mod migrate;
mod pool;

pub use migrate::{MigrationReport, MIGRATIONS, MIGRATION_LOCK_KEY};

use super::{Entries, Space, Store, WriteSet};
use crate::error::StoreError;
use pool::{block_on, pg_err, Conn, Pool};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;
use std::time::Duration;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

/// Default of `database_pool_size`.
pub const DEFAULT_POOL_SIZE: usize = 16;
/// Smallest `database_pool_size`: a run holds one connection for its claim
/// while its producer and settler read on others.
pub const MIN_POOL_SIZE: usize = 4;
/// Largest `database_pool_size` (PostgreSQL's default `max_connections` is 100).
pub const MAX_POOL_SIZE: usize = 1_000;
/// Rows per batched statement (`UNNEST` arrays, `= ANY` lists).
pub const MAX_ROWS_PER_STATEMENT: usize = 10_000;
/// Attempts of a commit that fails with a serialization failure or deadlock.
pub const MAX_COMMIT_ATTEMPTS: u32 = 8;
/// Pause before a commit's retry, times the attempt number.
pub const COMMIT_RETRY_PAUSE: Duration = Duration::from_millis(5);
/// Advisory lock key of the writer claim ("fare-wri").
pub const WRITER_CLAIM_KEY: i64 = 0x6661_7265_2d77_7269;
/// Threads of the client runtime (socket I/O only; queries run on the server).
const CLIENT_THREADS: usize = 2;

/// The table of a space.
pub fn table(space: Space) -> &'static str {
    match space {
        Space::Accounts => "kv_accounts",
        Space::Credentials => "kv_credentials",
        Space::AccountCredentials => "kv_account_credentials",
        Space::Readers => "kv_readers",
        Space::ReaderStates => "kv_reader_states",
        Space::Rides => "kv_rides",
        Space::Results => "kv_results",
        Space::Incidents => "kv_incidents",
        Space::Postings => "kv_postings",
        Space::RidePostings => "kv_ride_postings",
        Space::Balances => "kv_balances",
        Space::AccountPostings => "kv_account_postings",
        Space::Days => "kv_days",
        Space::Codes => "kv_codes",
        Space::Fraud => "kv_fraud",
        Space::Payments => "kv_payments",
        Space::DenyVersions => "kv_deny_versions",
        Space::Revoked => "kv_revoked",
        Space::Meta => "kv_meta",
        Space::Disputes => "kv_disputes",
        Space::PassengerTokens => "kv_passenger_tokens",
        Space::AccountTokens => "kv_account_tokens",
        Space::DeviceKeys => "kv_device_keys",
        Space::DeviceCredentials => "kv_device_credentials",
        Space::DeniedCredentials => "kv_denied_credentials",
    }
}

/// The writer claim of this process: which thread holds it, on which
/// connection (or why it could not be taken).
#[derive(Default)]
struct Claim {
    holder: Option<ThreadId>,
    conn: Option<Conn>,
    error: Option<String>,
}

/// PostgreSQL-backed [`Store`].
pub struct PostgresStore {
    // Dropped last (see Drop): the clients' connection tasks run on it.
    rt: Option<tokio::runtime::Runtime>,
    pool: Arc<Pool>,
    claim: Mutex<Claim>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("pool", &self.pool)
            .finish_non_exhaustive()
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            // Not `drop(rt)`: that blocks, which panics inside a runtime.
            rt.shutdown_background();
        }
    }
}

impl PostgresStore {
    /// Connects to `url` (`postgres://…` or key=value form) with at most
    /// `pool_size` connections. Applies no migration (see [`Self::migrate`]).
    pub fn connect(url: &str, pool_size: usize) -> Result<PostgresStore, StoreError> {
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Backend(format!("database_url: {e}")))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(CLIENT_THREADS)
            .thread_name("postgres-client")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Backend(format!("postgres client runtime: {e}")))?;
        let pool = Pool::new(rt.handle().clone(), config, pool_size);
        let store = PostgresStore {
            rt: Some(rt),
            pool,
            claim: Mutex::default(),
        };
        // Fail at start, not at the first request, when the database is unreachable.
        store.health()?;
        Ok(store)
    }

    /// Connects and applies the missing migrations.
    pub fn open(url: &str, pool_size: usize) -> Result<PostgresStore, StoreError> {
        let store = Self::connect(url, pool_size)?;
        store.migrate()?;
        Ok(store)
    }

    /// Applies the migrations this database lacks.
    pub fn migrate(&self) -> Result<MigrationReport, StoreError> {
        self.pool
            .with(|c| async move { migrate::migrate(&c).await })
    }

    /// The client that must run this thread's commits: the claim's when
    /// this thread holds it; an error when its claim could not be taken.
    fn claimed_client(&self) -> Result<Option<Arc<Client>>, StoreError> {
        let claim = self.claim.lock().unwrap_or_else(|p| p.into_inner());
        if claim.holder != Some(std::thread::current().id()) {
            return Ok(None);
        }
        match (&claim.conn, &claim.error) {
            (Some(c), _) => Ok(Some(c.client())),
            (None, e) => Err(StoreError::Backend(format!(
                "postgres: writer claim not held, nothing written: {}",
                e.as_deref().unwrap_or("unknown")
            ))),
        }
    }

    fn take_claim(&self) -> Result<Conn, StoreError> {
        let conn = self.pool.get()?;
        let c = conn.client();
        block_on(self.pool.runtime(), async move {
            c.execute("SELECT pg_advisory_lock($1)", &[&WRITER_CLAIM_KEY])
                .await
                .map_err(pg_err)
        })??;
        Ok(conn)
    }
}

/// A write set grouped by space: keys sorted (a fixed lock order), the
/// last put of a key wins, and a put wins over a delete (as in sled's batch).
#[derive(Default)]
struct Plan {
    checks: BTreeMap<u8, (Space, Expected)>,
    deletes: BTreeMap<u8, (Space, BTreeSet<Vec<u8>>)>,
    puts: BTreeMap<u8, (Space, Rows)>,
}

/// Key → expected current value (`None`: absent).
type Expected = BTreeMap<Vec<u8>, Option<Vec<u8>>>;
/// Key → value to write.
type Rows = BTreeMap<Vec<u8>, Vec<u8>>;

impl Plan {
    fn new(w: WriteSet) -> Result<Plan, StoreError> {
        let mut p = Plan::default();
        for (s, k, v) in w.checks {
            let e = p.checks.entry(s as u8).or_insert((s, BTreeMap::new()));
            if e.1.insert(k, v.clone()).is_some_and(|prev| prev != v) {
                // Two different expectations of one key can never both hold.
                return Err(StoreError::Conflict {
                    what: "precondition",
                });
            }
        }
        for (s, k, v) in w.puts {
            p.puts
                .entry(s as u8)
                .or_insert((s, BTreeMap::new()))
                .1
                .insert(k, v);
        }
        for (s, k) in w.deletes {
            let put = p
                .puts
                .get(&(s as u8))
                .is_some_and(|(_, m)| m.contains_key(&k));
            if !put {
                p.deletes
                    .entry(s as u8)
                    .or_insert((s, BTreeSet::new()))
                    .1
                    .insert(k);
            }
        }
        Ok(p)
    }
}

/// Why one attempt of a commit failed.
enum TxError {
    /// Serialization failure or deadlock: the whole transaction may be retried.
    Retry(StoreError),
    /// Anything else (a failed precondition included).
    Fail(StoreError),
}

impl From<tokio_postgres::Error> for TxError {
    fn from(e: tokio_postgres::Error) -> Self {
        let retry = matches!(
            e.code(),
            Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
        );
        if retry {
            TxError::Retry(pg_err(e))
        } else {
            TxError::Fail(pg_err(e))
        }
    }
}

async fn commit_once(c: Arc<Client>, plan: Arc<Plan>) -> Result<(), TxError> {
    let begin = if plan.checks.is_empty() {
        "BEGIN"
    } else {
        "BEGIN ISOLATION LEVEL SERIALIZABLE"
    };
    c.batch_execute(begin).await?;
    match apply(&c, &plan).await {
        Ok(()) => Ok(c.batch_execute("COMMIT").await?),
        Err(e) => {
            // A broken connection is dropped by the pool; the server rolls back.
            let _ = c.batch_execute("ROLLBACK").await;
            Err(e)
        }
    }
}

async fn apply(c: &Client, plan: &Plan) -> Result<(), TxError> {
    for (space, expected) in plan.checks.values() {
        let keys: Vec<&[u8]> = expected.keys().map(Vec::as_slice).collect();
        let mut current: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        for part in keys.chunks(MAX_ROWS_PER_STATEMENT) {
            let sql = format!("SELECT k, v FROM {} WHERE k = ANY($1)", table(*space));
            for row in c.query(&sql, &[&part]).await? {
                current.insert(row.get(0), row.get(1));
            }
        }
        for (k, want) in expected {
            if current.get(k) != want.as_ref() {
                return Err(TxError::Fail(StoreError::Conflict {
                    what: "precondition",
                }));
            }
        }
    }
    for (space, keys) in plan.deletes.values() {
        let keys: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        let sql = format!("DELETE FROM {} WHERE k = ANY($1)", table(*space));
        for part in keys.chunks(MAX_ROWS_PER_STATEMENT) {
            c.execute(&sql, &[&part]).await?;
        }
    }
    for (space, rows) in plan.puts.values() {
        let sql = format!(
            "INSERT INTO {} (k, v) SELECT * FROM UNNEST($1::bytea[], $2::bytea[]) \
             ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v",
            table(*space)
        );
        let rows: Vec<(&[u8], &[u8])> = rows
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
            .collect();
        for part in rows.chunks(MAX_ROWS_PER_STATEMENT) {
            let ks: Vec<&[u8]> = part.iter().map(|r| r.0).collect();
            let vs: Vec<&[u8]> = part.iter().map(|r| r.1).collect();
            c.execute(&sql, &[&ks, &vs]).await?;
        }
    }
    Ok(())
}

/// The smallest key greater than every key starting with `prefix`, if any.
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

async fn select_range(
    c: Arc<Client>,
    sql: String,
    lo: Vec<u8>,
    hi: Option<Vec<u8>>,
    limit: i64,
) -> Result<Entries, StoreError> {
    let rows = match &hi {
        Some(hi) => c.query(&sql, &[&lo, hi, &limit]).await,
        None => c.query(&sql, &[&lo, &limit]).await,
    }
    .map_err(pg_err)?;
    Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
}

impl Store for PostgresStore {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let sql = format!("SELECT v FROM {} WHERE k = $1", table(space));
        let key = key.to_vec();
        self.pool.with(|c| async move {
            let row = c.query_opt(&sql, &[&key]).await.map_err(pg_err)?;
            Ok(row.map(|r| r.get(0)))
        })
    }

    fn scan(
        &self,
        space: Space,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StoreError> {
        // Strictly after `after`, never before the prefix.
        let (lo, op) = match after {
            Some(a) if a >= prefix => (a.to_vec(), ">"),
            _ => (prefix.to_vec(), ">="),
        };
        let hi = prefix_end(prefix);
        let t = table(space);
        let sql = match hi {
            Some(_) => {
                format!("SELECT k, v FROM {t} WHERE k {op} $1 AND k < $2 ORDER BY k LIMIT $3")
            }
            None => format!("SELECT k, v FROM {t} WHERE k {op} $1 ORDER BY k LIMIT $2"),
        };
        let limit = sql_limit(limit);
        self.pool.with(|c| select_range(c, sql, lo, hi, limit))
    }

    fn range(
        &self,
        space: Space,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Entries, StoreError> {
        let sql = format!(
            "SELECT k, v FROM {} WHERE k >= $1 AND k < $2 ORDER BY k LIMIT $3",
            table(space)
        );
        let (lo, hi, limit) = (start.to_vec(), Some(end.to_vec()), sql_limit(limit));
        self.pool.with(|c| select_range(c, sql, lo, hi, limit))
    }

    fn commit(&self, writes: WriteSet) -> Result<(), StoreError> {
        let plan = Arc::new(Plan::new(writes)?);
        let claimed = self.claimed_client()?;
        let pooled = match claimed {
            Some(_) => None,
            None => Some(self.pool.get()?),
        };
        let client = match (&claimed, &pooled) {
            (Some(c), _) => c.clone(),
            (None, Some(p)) => p.client(),
            (None, None) => unreachable!("one of the two is set above"),
        };
        let mut attempt = 1;
        loop {
            let r = block_on(
                self.pool.runtime(),
                commit_once(client.clone(), plan.clone()),
            )?;
            match r {
                Ok(()) => return Ok(()),
                Err(TxError::Fail(e)) => return Err(e),
                Err(TxError::Retry(e)) if attempt >= MAX_COMMIT_ATTEMPTS => return Err(e),
                Err(TxError::Retry(_)) => {
                    std::thread::sleep(COMMIT_RETRY_PAUSE * attempt);
                    attempt += 1;
                }
            }
        }
    }

    fn claim_writer(&self) {
        let me = std::thread::current().id();
        let taken = self.take_claim();
        let mut claim = self.claim.lock().unwrap_or_else(|p| p.into_inner());
        claim.holder = Some(me);
        match taken {
            Ok(conn) => {
                claim.conn = Some(conn);
                claim.error = None;
            }
            Err(e) => {
                tracing::error!(error = %e, "writer claim failed: this section's commits will fail");
                claim.conn = None;
                claim.error = Some(e.to_string());
            }
        }
    }

    fn release_writer(&self) {
        let conn = {
            let mut claim = self.claim.lock().unwrap_or_else(|p| p.into_inner());
            claim.holder = None;
            claim.error = None;
            claim.conn.take()
        };
        let Some(conn) = conn else { return };
        let c = conn.client();
        let unlocked = block_on(self.pool.runtime(), async move {
            c.query_one("SELECT pg_advisory_unlock($1)", &[&WRITER_CLAIM_KEY])
                .await
                .map(|r| r.get::<_, bool>(0))
        });
        if !matches!(unlocked, Ok(Ok(true))) {
            // The lock goes with the session: never hand this one out again.
            tracing::warn!("writer claim unlock failed: closing its connection");
            conn.discard();
        }
    }

    fn health(&self) -> Result<(), StoreError> {
        self.pool.with(|c| async move {
            c.query_one("SELECT 1", &[]).await.map_err(pg_err)?;
            Ok(())
        })
    }

    fn backend(&self) -> &'static str {
        "postgres"
    }
}
