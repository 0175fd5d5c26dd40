//! The PostgreSQL backend: one table `kv_<space> (k bytea PRIMARY KEY,
//! v bytea)` per [`Space`] (migrations in `settlement/migrations/`), the
//! same keys and values as sled, and [`Store::commit`] as one transaction.
//!
//! * Reads are single statements on a pooled connection (read committed:
//!   each sees every commit that finished before it), sent with typed
//!   parameters (`query_typed`: one request, no prepare round trip);
//!   [`Store::get_many`] is one join with `UNNEST … WITH ORDINALITY`,
//!   [`Store::range_many`] one `LATERAL` range scan per bound pair.
//! * A commit checks its preconditions, deletes and upserts in one
//!   transaction; with preconditions it runs `SERIALIZABLE` (an absent key
//!   has no row to lock) and is retried whole on a serialization failure
//!   or deadlock, up to [`MAX_COMMIT_ATTEMPTS`]. Writes are batched:
//!   `INSERT … SELECT * FROM UNNEST($1::bytea[], $2::bytea[]) ON CONFLICT
//!   (k) DO UPDATE`, at most [`MAX_ROWS_PER_STATEMENT`] rows a statement.
//!   The transaction is pipelined: `BEGIN` and every statement go out at
//!   once (the precondition reads first), then `COMMIT`, or `ROLLBACK`
//!   when a precondition does not hold: two round trips a commit.
//! * The writer claim ([`Store::claim_writer`]): a session advisory lock
//!   held on one connection for as long as the service's write lock is
//!   held, and the commits of that section run on that same connection, so
//!   a write is committed only while its claim is held; a killed instance's
//!   connection closes and the server drops its lock and its open
//!   transaction together.

mod layout;
pub mod migrate;
mod pool;

pub use layout::{dist, dist_key, partitioned, utc_day, Dist, PARTITIONED, UNDATED};
pub use migrate::{MigrationReport, MIGRATIONS, MIGRATION_LOCK_KEY};
pub use pool::{MAX_POOL_WAIT, MIN_POOL_WAIT, POOL_WAIT};

use super::{Entries, Space, Store, WriteSet};
use crate::error::StoreError;
use pool::{block_on, pg_err, Conn, Pool};
use rayon::prelude::*;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;
use std::time::Duration;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Row};

/// The connection pool's settings (`database_pool_size`,
/// `database_pool_wait_ms`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolOptions {
    /// At most this many connections (≥ 1; the service asks for at least
    /// [`MIN_POOL_SIZE`]).
    pub size: usize,
    /// A caller waits at most this long for a free connection, then gets
    /// [`StoreError::PoolExhausted`].
    pub wait: Duration,
}

impl PoolOptions {
    /// `size` connections, the default wait ([`POOL_WAIT`]).
    pub fn sized(size: usize) -> PoolOptions {
        PoolOptions {
            size,
            wait: POOL_WAIT,
        }
    }
}

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
    /// Day partitions known to exist (created by this or another instance).
    parts: Arc<Partitions>,
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
    /// `pool_size` connections, callers waiting at most [`POOL_WAIT`] for
    /// one. Applies no migration (see [`Self::migrate`]).
    pub fn connect(url: &str, pool_size: usize) -> Result<PostgresStore, StoreError> {
        Self::connect_with(url, PoolOptions::sized(pool_size))
    }

    /// [`Self::connect`] with the pool's size and wait given.
    pub fn connect_with(url: &str, pool: PoolOptions) -> Result<PostgresStore, StoreError> {
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Database(format!("database_url: {e}")))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(CLIENT_THREADS)
            .thread_name("postgres-client")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Resources(format!("postgres client runtime: {e}")))?;
        let pool = Pool::new(rt.handle().clone(), config, pool.size, pool.wait);
        let store = PostgresStore {
            rt: Some(rt),
            pool,
            claim: Mutex::default(),
            parts: Arc::default(),
        };
        // Fail at start, not at the first request, when the database is unreachable.
        store.health()?;
        Ok(store)
    }

    /// Connects and applies the missing migrations.
    pub fn open(url: &str, pool_size: usize) -> Result<PostgresStore, StoreError> {
        Self::open_with(url, PoolOptions::sized(pool_size))
    }

    /// [`Self::open`] with the pool's size and wait given.
    pub fn open_with(url: &str, pool: PoolOptions) -> Result<PostgresStore, StoreError> {
        let store = Self::connect_with(url, pool)?;
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
            (None, e) => Err(StoreError::Database(format!(
                "postgres: writer claim not held, nothing written: {}",
                e.as_deref().unwrap_or("unknown")
            ))),
        }
    }

    /// Commits a plan as one transaction on the claim's connection (or a
    /// pooled one), retried whole on a serialization failure, a deadlock or
    /// a day partition dropped meanwhile (see [`MAX_COMMIT_ATTEMPTS`]).
    fn commit_plan(&self, plan: Plan) -> Result<(), StoreError> {
        let plan = Arc::new(plan);
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
                commit_once(client.clone(), plan.clone(), self.parts.clone()),
            )?;
            match r {
                Ok(()) => return Ok(()),
                Err(TxError::Fail(e)) => return Err(e),
                Err(TxError::Retry(e)) if attempt >= MAX_COMMIT_ATTEMPTS => return Err(e),
                Err(TxError::Retry(_)) => {
                    // A partition may have been dropped: create it again.
                    self.parts.forget();
                    std::thread::sleep(COMMIT_RETRY_PAUSE * attempt);
                    attempt += 1;
                }
            }
        }
    }

    fn take_claim(&self) -> Result<Conn, StoreError> {
        let conn = self.pool.get()?;
        let c = conn.client();
        block_on(self.pool.runtime(), async move {
            c.execute_typed(
                "SELECT pg_advisory_lock($1)",
                &[(&WRITER_CLAIM_KEY, Type::INT8)],
            )
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
    /// Partitioned spaces: the day of each put row.
    days: BTreeMap<u8, BTreeMap<Vec<u8>, i32>>,
    /// Partitioned spaces: put rows that may live in another day's
    /// partition now (a block whose newest ride moved to a later day, or
    /// written without a precondition): their other rows are deleted.
    moves: BTreeMap<u8, BTreeSet<Vec<u8>>>,
    /// Day partitions dropped in the same transaction (the purge).
    drops: Vec<(Space, i32)>,
    /// `Store::commit_unsynced`: the commit does not wait for the WAL flush
    /// (`synchronous_commit = off` for this transaction only).
    unsynced: bool,
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
        p.plan_days();
        Ok(p)
    }

    /// Days of the partitioned puts, and which of them may move.
    fn plan_days(&mut self) {
        for (id, (space, rows)) in &self.puts {
            if !partitioned(*space) {
                continue;
            }
            let days: BTreeMap<Vec<u8>, i32> = rows
                .par_iter()
                .map(|(k, v)| (k.clone(), layout::row_day(*space, k, v)))
                .collect();
            // Day states take their day from the key: they never move.
            if *space != Space::Days {
                let expected = self.checks.get(id).map(|(_, e)| e);
                let moves: BTreeSet<Vec<u8>> = days
                    .iter()
                    .filter(|(k, day)| match expected.and_then(|e| e.get(*k)) {
                        None => true,
                        Some(None) => false,
                        Some(Some(old)) => layout::row_day(*space, k, old) != **day,
                    })
                    .map(|(k, _)| k.clone())
                    .collect();
                if !moves.is_empty() {
                    self.moves.insert(*id, moves);
                }
            }
            self.days.insert(*id, days);
        }
    }

    /// The (space, day) partitions the puts need.
    fn needed_partitions(&self) -> BTreeSet<(Space, i32)> {
        let mut out = BTreeSet::new();
        for (id, days) in &self.days {
            let space = self.puts[id].0;
            out.extend(days.values().map(|d| (space, *d)));
        }
        out
    }
}

/// The day partitions known to exist, so that each is created once (by
/// `CREATE TABLE IF NOT EXISTS … PARTITION OF`, before the transaction that
/// first writes into it).
#[derive(Default)]
struct Partitions {
    known: Mutex<HashSet<(Space, i32)>>,
}

impl Partitions {
    async fn ensure(&self, c: &Client, needed: &BTreeSet<(Space, i32)>) -> Result<(), TxError> {
        for (space, day) in needed {
            if self.knows(*space, *day) {
                continue;
            }
            let t = table(*space);
            let sql = format!(
                "CREATE TABLE IF NOT EXISTS {} PARTITION OF {t} FOR VALUES FROM ({day}) TO ({})",
                layout::partition_name(t, *day),
                layout::next_day(*day).map_err(TxError::Fail)?
            );
            match c.batch_execute(&sql).await {
                Ok(()) => {}
                // Another instance created it at the same moment.
                Err(e)
                    if matches!(e.code(), Some(c) if *c == SqlState::DUPLICATE_TABLE
                        || *c == SqlState::UNIQUE_VIOLATION) => {}
                Err(e) => return Err(e.into()),
            }
            self.known
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert((*space, *day));
        }
        Ok(())
    }

    fn knows(&self, space: Space, day: i32) -> bool {
        self.known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&(space, day))
    }

    /// Forgets every partition (one was dropped by a purge somewhere).
    fn forget(&self) {
        self.known.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// Why one attempt of a commit failed.
enum TxError {
    /// Serialization failure, deadlock, or a day partition dropped under
    /// us: the whole transaction may be retried.
    Retry(StoreError),
    /// Anything else (a failed precondition included).
    Fail(StoreError),
}

impl From<tokio_postgres::Error> for TxError {
    fn from(e: tokio_postgres::Error) -> Self {
        // CHECK_VIOLATION on insert into a partitioned table: no partition
        // for the row (a purge dropped it after we created it).
        let retry = matches!(
            e.code(),
            Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE
                || *c == SqlState::T_R_DEADLOCK_DETECTED
                || *c == SqlState::CHECK_VIOLATION
        );
        if retry {
            TxError::Retry(pg_err(e))
        } else {
            TxError::Fail(pg_err(e))
        }
    }
}

async fn commit_once(
    c: Arc<Client>,
    plan: Arc<Plan>,
    parts: Arc<Partitions>,
) -> Result<(), TxError> {
    parts.ensure(&c, &plan.needed_partitions()).await?;
    let begin = match (plan.checks.is_empty(), plan.unsynced) {
        (true, false) => "BEGIN",
        (false, false) => "BEGIN ISOLATION LEVEL SERIALIZABLE",
        (true, true) => "BEGIN; SET LOCAL synchronous_commit TO off",
        (false, true) => "BEGIN ISOLATION LEVEL SERIALIZABLE; SET LOCAL synchronous_commit TO off",
    };
    // Pipelined: BEGIN and every statement are sent at once (each one
    // request with typed parameters: no prepare round trip) and the server
    // runs them in order, so a transaction costs two round trips (these
    // and COMMIT) instead of one or two per statement. The preconditions
    // are read first, before any write of the transaction; when one does
    // not hold the transaction is rolled back, so nothing is written.
    match apply_pipelined(&c, &plan, Some(begin)).await {
        Ok(()) => Ok(c.batch_execute("COMMIT").await?),
        Err(e) => {
            // A broken connection is dropped by the pool; the server rolls back.
            let _ = c.batch_execute("ROLLBACK").await;
            Err(e)
        }
    }
}

/// Applies a plan inside the transaction the caller opened (migrations).
async fn apply(c: &Client, plan: &Plan) -> Result<(), TxError> {
    apply_pipelined(c, plan, None).await
}

/// Sends `begin` (when given) and the plan's statements pipelined, and
/// reads what they answered (see [`outcome`]); commits nothing.
async fn apply_pipelined(
    c: &Client,
    plan: &Plan,
    begin: Option<&'static str>,
) -> Result<(), TxError> {
    let stmts = statements(plan);
    let mut reqs: Vec<Request<'_>> = Vec::with_capacity(stmts.len() + 1);
    reqs.push(Box::pin(async move {
        match begin {
            Some(b) => c.batch_execute(b).await.map(|()| Vec::new()),
            None => Ok(Vec::new()),
        }
    }));
    for st in &stmts {
        reqs.push(Box::pin(async move {
            let params: Vec<(&(dyn ToSql + Sync), Type)> = st
                .params
                .iter()
                .map(|(p, t)| (&**p as &(dyn ToSql + Sync), t.clone()))
                .collect();
            c.query_typed(&st.sql, &params).await
        }));
    }
    let results = pipeline(reqs).await;
    outcome(plan, &stmts, results)
}

/// One request of a pipelined transaction.
type Request<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Vec<Row>, tokio_postgres::Error>> + Send + 'a>,
>;

/// Sends every request in order (tokio-postgres sends a request when its
/// future is first polled: one poll each, in order), then waits for the
/// answers; returns them in the same order.
async fn pipeline(mut reqs: Vec<Request<'_>>) -> Vec<Result<Vec<Row>, tokio_postgres::Error>> {
    let mut done: Vec<Option<Result<Vec<Row>, tokio_postgres::Error>>> =
        reqs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        for (f, slot) in reqs.iter_mut().zip(done.iter_mut()) {
            if let std::task::Poll::Ready(r) = f.as_mut().poll(cx) {
                *slot = Some(r);
            }
        }
        std::task::Poll::Ready(())
    })
    .await;
    let mut out = Vec::with_capacity(reqs.len());
    for (f, slot) in reqs.into_iter().zip(done) {
        out.push(match slot {
            Some(r) => r,
            None => f.await,
        });
    }
    out
}

/// What the answers of a pipelined transaction (BEGIN first, then
/// `stmts`) mean: an error before the preconditions were read is that
/// error; a precondition that does not hold is a conflict (whatever a
/// later write answered: it would fail on every attempt); else the first
/// write error, if any.
fn outcome(
    plan: &Plan,
    stmts: &[Stmt<'_>],
    results: Vec<Result<Vec<Row>, tokio_postgres::Error>>,
) -> Result<(), TxError> {
    let mut results = results.into_iter();
    if let Some(Err(e)) = results.next() {
        return Err(e.into());
    }
    let mut current: BTreeMap<(u8, Vec<u8>), Vec<u8>> = BTreeMap::new();
    let mut write_error: Option<tokio_postgres::Error> = None;
    for (st, r) in stmts.iter().zip(results) {
        match (r, st.check) {
            (Ok(rows), Some(space)) => {
                for row in rows {
                    current.insert((space, row.get(0)), row.get(1));
                }
            }
            (Ok(_), None) => {}
            // Checks come first: no write ran before this.
            (Err(e), Some(_)) => return Err(e.into()),
            (Err(e), None) => {
                write_error.get_or_insert(e);
            }
        }
    }
    let holds = plan.checks.iter().all(|(id, (_, expected))| {
        expected
            .iter()
            .all(|(k, want)| current.get(&(*id, k.clone())) == want.as_ref())
    });
    if !holds {
        return Err(TxError::Fail(StoreError::Conflict {
            what: "precondition",
        }));
    }
    match write_error {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// A typed statement parameter (sent without a prepare round trip).
type Param<'a> = (Box<dyn ToSql + Sync + Send + 'a>, Type);

/// One statement of a commit.
struct Stmt<'a> {
    sql: String,
    params: Vec<Param<'a>>,
    /// A precondition read: the space (id) whose `(k, v)` rows it returns.
    check: Option<u8>,
}

/// `(d, k)` columns of a list of keys.
fn dk<'a>(space: Space, keys: impl Iterator<Item = &'a [u8]>) -> (Vec<&'a [u8]>, Vec<&'a [u8]>) {
    keys.map(|k| (dist_key(space, k), k)).unzip()
}

/// A `bytea[]` parameter.
fn bytea_array<'a>(v: Vec<&'a [u8]>) -> Param<'a> {
    (Box::new(v), Type::BYTEA_ARRAY)
}

/// `sql` (parameters: the keys' `d` and `k` columns) once per
/// [`MAX_ROWS_PER_STATEMENT`] keys of `space`.
fn keyed<'a>(
    out: &mut Vec<Stmt<'a>>,
    sql: &str,
    space: Space,
    keys: &[&'a [u8]],
    check: Option<u8>,
) {
    for part in keys.chunks(MAX_ROWS_PER_STATEMENT) {
        let (ds, ks) = dk(space, part.iter().copied());
        out.push(Stmt {
            sql: sql.to_string(),
            params: vec![bytea_array(ds), bytea_array(ks)],
            check,
        });
    }
}

/// The statements of a plan, in the order they must run: precondition
/// reads, deletes, upserts (batched as `UNNEST` arrays of at most
/// [`MAX_ROWS_PER_STATEMENT`] rows), partition drops.
fn statements(plan: &Plan) -> Vec<Stmt<'_>> {
    let mut out = Vec::new();
    for (id, (space, expected)) in &plan.checks {
        let sql = format!(
            "SELECT x.k, t.v FROM UNNEST($1::bytea[], $2::bytea[]) AS x(d, k) \
             JOIN {} t ON t.d = x.d AND t.k = x.k",
            table(*space)
        );
        let keys: Vec<&[u8]> = expected.keys().map(Vec::as_slice).collect();
        keyed(&mut out, &sql, *space, &keys, Some(*id));
    }
    for (space, keys) in plan.deletes.values() {
        let sql = format!(
            "DELETE FROM {} t USING UNNEST($1::bytea[], $2::bytea[]) AS x(d, k) \
             WHERE t.d = x.d AND t.k = x.k",
            table(*space)
        );
        let keys: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        keyed(&mut out, &sql, *space, &keys, None);
    }
    for (id, (space, rows)) in &plan.puts {
        match plan.days.get(id) {
            None => upserts(&mut out, *space, rows),
            Some(days) => dated_upserts(&mut out, *space, rows, days, plan.moves.get(id)),
        }
    }
    for (space, day) in &plan.drops {
        out.push(Stmt {
            sql: format!(
                "DROP TABLE IF EXISTS {}",
                layout::partition_name(table(*space), *day)
            ),
            params: Vec::new(),
            check: None,
        });
    }
    out
}

/// Upserts into an undated table.
fn upserts<'a>(out: &mut Vec<Stmt<'a>>, space: Space, rows: &'a Rows) {
    let sql = format!(
        "INSERT INTO {} (d, k, v) SELECT * FROM UNNEST($1::bytea[], $2::bytea[], $3::bytea[]) \
         ON CONFLICT (d, k) DO UPDATE SET v = EXCLUDED.v",
        table(space)
    );
    let rows: Vec<(&[u8], &[u8])> = rows
        .iter()
        .map(|(k, v)| (k.as_slice(), v.as_slice()))
        .collect();
    for part in rows.chunks(MAX_ROWS_PER_STATEMENT) {
        let (ds, ks) = dk(space, part.iter().map(|r| r.0));
        let vs: Vec<&[u8]> = part.iter().map(|r| r.1).collect();
        out.push(Stmt {
            sql: sql.clone(),
            params: vec![bytea_array(ds), bytea_array(ks), bytea_array(vs)],
            check: None,
        });
    }
}

/// Upserts into a day-partitioned table; rows that may have lived in
/// another day's partition are first deleted there (the primary key
/// includes the day, so only the store keeps a key in one partition).
fn dated_upserts<'a>(
    out: &mut Vec<Stmt<'a>>,
    space: Space,
    rows: &'a Rows,
    days: &'a BTreeMap<Vec<u8>, i32>,
    moves: Option<&'a BTreeSet<Vec<u8>>>,
) {
    let t = table(space);
    if let Some(moves) = moves {
        let sql = format!(
            "DELETE FROM {t} t USING UNNEST($1::bytea[], $2::bytea[], $3::int4[]) AS x(d, k, day) \
             WHERE t.d = x.d AND t.k = x.k AND t.day <> x.day"
        );
        let keys: Vec<&[u8]> = moves.iter().map(Vec::as_slice).collect();
        for part in keys.chunks(MAX_ROWS_PER_STATEMENT) {
            let (ds, ks) = dk(space, part.iter().copied());
            let dys: Vec<i32> = part.iter().map(|k| days[*k]).collect();
            out.push(Stmt {
                sql: sql.clone(),
                params: vec![
                    bytea_array(ds),
                    bytea_array(ks),
                    (Box::new(dys), Type::INT4_ARRAY),
                ],
                check: None,
            });
        }
    }
    let sql = format!(
        "INSERT INTO {t} (d, k, day, v) \
         SELECT * FROM UNNEST($1::bytea[], $2::bytea[], $3::int4[], $4::bytea[]) \
         ON CONFLICT (d, k, day) DO UPDATE SET v = EXCLUDED.v"
    );
    let rows: Vec<(&[u8], &[u8])> = rows
        .iter()
        .map(|(k, v)| (k.as_slice(), v.as_slice()))
        .collect();
    for part in rows.chunks(MAX_ROWS_PER_STATEMENT) {
        let (ds, ks) = dk(space, part.iter().map(|r| r.0));
        let dys: Vec<i32> = part.iter().map(|r| days[r.0]).collect();
        let vs: Vec<&[u8]> = part.iter().map(|r| r.1).collect();
        out.push(Stmt {
            sql: sql.clone(),
            params: vec![
                bytea_array(ds),
                bytea_array(ks),
                (Box::new(dys), Type::INT4_ARRAY),
                bytea_array(vs),
            ],
            check: None,
        });
    }
}

fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// The rows between two bounds (`(d, k)` row comparisons on the primary
/// key; see `layout`).
async fn select_range(
    c: Arc<Client>,
    sql: String,
    lo: (Vec<u8>, Vec<u8>),
    hi: Option<(Vec<u8>, Vec<u8>)>,
    limit: i64,
) -> Result<Entries, StoreError> {
    let rows = match &hi {
        Some(hi) => {
            let p: [(&(dyn ToSql + Sync), Type); 5] = [
                (&lo.0, Type::BYTEA),
                (&lo.1, Type::BYTEA),
                (&hi.0, Type::BYTEA),
                (&hi.1, Type::BYTEA),
                (&limit, Type::INT8),
            ];
            c.query_typed(&sql, &p).await
        }
        None => {
            let p: [(&(dyn ToSql + Sync), Type); 3] = [
                (&lo.0, Type::BYTEA),
                (&lo.1, Type::BYTEA),
                (&limit, Type::INT8),
            ];
            c.query_typed(&sql, &p).await
        }
    }
    .map_err(pg_err)?;
    Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// A bound as `(d, k)`.
fn bound(space: Space, k: &[u8]) -> (Vec<u8>, Vec<u8>) {
    (dist_key(space, k).to_vec(), k.to_vec())
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

/// `Err` for a space without day partitions: only ride history has them
/// (a caller asking for another one is a bug).
fn require_partitioned(space: Space) -> Result<(), StoreError> {
    match partitioned(space) {
        true => Ok(()),
        false => Err(StoreError::Internal(format!(
            "{space:?} is not partitioned by day"
        ))),
    }
}

impl Store for PostgresStore {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let sql = format!("SELECT v FROM {} WHERE d = $1 AND k = $2", table(space));
        let (d, key) = bound(space, key);
        self.pool.with(|c| async move {
            let row = c
                .query_typed_opt(&sql, &[(&d, Type::BYTEA), (&key, Type::BYTEA)])
                .await
                .map_err(pg_err)?;
            Ok(row.map(|r| r.get(0)))
        })
    }

    fn get_many(&self, space: Space, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        super::check_read_len("get_many", keys.len())?;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        // The ordinal of each key says where its value goes (1-based).
        let sql = format!(
            "SELECT x.i, t.v FROM UNNEST($1::bytea[], $2::bytea[]) WITH ORDINALITY AS x(d, k, i) \
             JOIN {} t ON t.d = x.d AND t.k = x.k",
            table(space)
        );
        let (ds, ks): (Vec<Vec<u8>>, Vec<Vec<u8>>) = keys.iter().map(|k| bound(space, k)).unzip();
        let n = keys.len();
        self.pool.with(|c| async move {
            let rows = c
                .query_typed(&sql, &[(&ds, Type::BYTEA_ARRAY), (&ks, Type::BYTEA_ARRAY)])
                .await
                .map_err(pg_err)?;
            let mut out: Vec<Option<Vec<u8>>> = vec![None; n];
            for r in rows {
                let i: i64 = r.get(0);
                let slot = usize::try_from(i - 1)
                    .ok()
                    .and_then(|i| out.get_mut(i))
                    .ok_or_else(|| StoreError::Internal(format!("get_many: ordinal {i}")))?;
                *slot = Some(r.get(1));
            }
            Ok(out)
        })
    }

    fn range_many(
        &self,
        space: Space,
        bounds: &[(Vec<u8>, Vec<u8>)],
        limit_each: usize,
    ) -> Result<Vec<Entries>, StoreError> {
        super::check_read_len("range_many", bounds.len())?;
        if bounds.is_empty() {
            return Ok(Vec::new());
        }
        // One index range scan per bound pair (the `(d, k)` row comparison
        // of `range`), in order of the pair, then of the key.
        let sql = format!(
            "SELECT x.i, r.k, r.v \
             FROM UNNEST($1::bytea[], $2::bytea[], $3::bytea[], $4::bytea[]) \
                  WITH ORDINALITY AS x(ld, lk, hd, hk, i) \
             CROSS JOIN LATERAL (SELECT t.d, t.k, t.v FROM {} t \
                  WHERE (t.d, t.k) >= (x.ld, x.lk) AND (t.d, t.k) < (x.hd, x.hk) \
                  ORDER BY t.d, t.k LIMIT $5) r \
             ORDER BY x.i, r.d, r.k",
            table(space)
        );
        let mut cols: [Vec<Vec<u8>>; 4] = Default::default();
        for (start, end) in bounds {
            let (ld, lk) = bound(space, start);
            let (hd, hk) = bound(space, end);
            cols[0].push(ld);
            cols[1].push(lk);
            cols[2].push(hd);
            cols[3].push(hk);
        }
        let (n, limit) = (bounds.len(), sql_limit(limit_each));
        self.pool.with(|c| async move {
            let [ld, lk, hd, hk] = &cols;
            let rows = c
                .query_typed(
                    &sql,
                    &[
                        (ld, Type::BYTEA_ARRAY),
                        (lk, Type::BYTEA_ARRAY),
                        (hd, Type::BYTEA_ARRAY),
                        (hk, Type::BYTEA_ARRAY),
                        (&limit, Type::INT8),
                    ],
                )
                .await
                .map_err(pg_err)?;
            let mut out: Vec<Entries> = vec![Vec::new(); n];
            for r in rows {
                let i: i64 = r.get(0);
                let slot = usize::try_from(i - 1)
                    .ok()
                    .and_then(|i| out.get_mut(i))
                    .ok_or_else(|| StoreError::Internal(format!("range_many: ordinal {i}")))?;
                slot.push((r.get(1), r.get(2)));
            }
            Ok(out)
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
            Some(a) if a >= prefix => (bound(space, a), ">"),
            _ => (bound(space, prefix), ">="),
        };
        let hi = prefix_end(prefix).map(|e| bound(space, &e));
        let t = table(space);
        let sql = match hi {
            Some(_) => format!(
                "SELECT k, v FROM {t} WHERE (d, k) {op} ($1, $2) AND (d, k) < ($3, $4) \
                 ORDER BY d, k LIMIT $5"
            ),
            None => {
                format!("SELECT k, v FROM {t} WHERE (d, k) {op} ($1, $2) ORDER BY d, k LIMIT $3")
            }
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
            "SELECT k, v FROM {} WHERE (d, k) >= ($1, $2) AND (d, k) < ($3, $4) \
             ORDER BY d, k LIMIT $5",
            table(space)
        );
        let (lo, hi, limit) = (
            bound(space, start),
            Some(bound(space, end)),
            sql_limit(limit),
        );
        self.pool.with(|c| select_range(c, sql, lo, hi, limit))
    }

    fn commit(&self, writes: WriteSet) -> Result<(), StoreError> {
        self.commit_plan(Plan::new(writes)?)
    }

    fn commit_unsynced(&self, writes: WriteSet) -> Result<(), StoreError> {
        let mut plan = Plan::new(writes)?;
        plan.unsynced = true;
        self.commit_plan(plan)
    }

    fn history_days(&self, space: Space) -> Result<Option<Vec<i32>>, StoreError> {
        if !partitioned(space) {
            return Ok(None);
        }
        let prefix = format!("{}_d", table(space));
        self.pool.with(|c| async move {
            let rows = c
                .query(
                    "SELECT c.relname::text FROM pg_inherits i \
                     JOIN pg_class c ON c.oid = i.inhrelid \
                     JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = $1",
                    &[&table(space)],
                )
                .await
                .map_err(pg_err)?;
            let mut days: Vec<i32> = rows
                .iter()
                .filter_map(|r| r.get::<_, String>(0).strip_prefix(&prefix)?.parse().ok())
                .collect();
            days.sort_unstable();
            Ok(Some(days))
        })
    }

    fn history_day_entries(&self, space: Space, day: i32) -> Result<Entries, StoreError> {
        require_partitioned(space)?;
        let sql = format!(
            "SELECT k, v FROM {} ORDER BY d, k",
            layout::partition_name(table(space), day)
        );
        self.pool.with(|c| async move {
            let rows = c.query(&sql, &[]).await.map_err(pg_err)?;
            Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
        })
    }

    fn commit_dropping_days(
        &self,
        writes: WriteSet,
        days: &[(Space, i32)],
    ) -> Result<(), StoreError> {
        for (space, _) in days {
            require_partitioned(*space)?;
        }
        let mut plan = Plan::new(writes)?;
        plan.drops = days.to_vec();
        let r = self.commit_plan(plan);
        self.parts.forget();
        r
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
            c.query_typed_one(
                "SELECT pg_advisory_unlock($1)",
                &[(&WRITER_CLAIM_KEY, Type::INT8)],
            )
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
            c.query_typed_one("SELECT 1", &[]).await.map_err(pg_err)?;
            Ok(())
        })
    }

    fn backend(&self) -> &'static str {
        "postgres"
    }
}
