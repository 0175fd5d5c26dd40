//! A small connection pool over tokio-postgres, driven by the store's own
//! runtime so that the synchronous [`crate::store::Store`] methods can be
//! called from anywhere (HTTP handlers' blocking threads, rayon workers,
//! the CLI) without entering a runtime.

use crate::error::StoreError;
use std::future::Future;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;
use tokio_postgres::Client;

/// How long a caller waits for a free connection before failing, unless
/// told otherwise (`database_pool_wait_ms`).
pub const POOL_WAIT: Duration = Duration::from_secs(30);
/// Shortest wait for a free connection `database_pool_wait_ms` takes.
pub const MIN_POOL_WAIT: Duration = Duration::from_millis(10);
/// Longest wait for a free connection `database_pool_wait_ms` takes: past
/// it a caller (an HTTP handler, a reader's upload) would have given up.
pub const MAX_POOL_WAIT: Duration = Duration::from_secs(600);

/// Maps a client error to the store's, with the server's message when there is one.
pub fn pg_err(e: tokio_postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(db) => StoreError::Database(format!(
            "postgres: {} ({}): {}",
            db.message(),
            db.code().code(),
            db.detail().unwrap_or("")
        )),
        // The client's message alone ("error connecting to server") hides
        // the cause (refused, no such socket, timed out): add it.
        None => match std::error::Error::source(&e) {
            Some(cause) => StoreError::Database(format!("postgres: {e}: {cause}")),
            None => StoreError::Database(format!("postgres: {e}")),
        },
    }
}

/// Runs `fut` on `rt` and waits for it on this thread (which must not be
/// one of `rt`'s own workers).
pub fn block_on<T: Send + 'static>(
    rt: &tokio::runtime::Handle,
    fut: impl Future<Output = T> + Send + 'static,
) -> Result<T, StoreError> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    rt.spawn(async move {
        let _ = tx.send(fut.await);
    });
    rx.recv()
        .map_err(|_| StoreError::Internal("postgres: the client runtime stopped".into()))
}

#[derive(Default)]
struct PoolState {
    idle: Vec<Arc<Client>>,
    /// Connections open (idle or lent).
    open: usize,
}

/// The pool: at most `max` connections, opened on demand.
pub struct Pool {
    rt: tokio::runtime::Handle,
    config: tokio_postgres::Config,
    max: usize,
    wait: Duration,
    state: Mutex<PoolState>,
    freed: Condvar,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("max", &self.max)
            .field("wait", &self.wait)
            .finish_non_exhaustive()
    }
}

/// A lent connection; back to the pool on drop (closed ones are forgotten).
pub struct Conn {
    client: Option<Arc<Client>>,
    pool: Arc<Pool>,
}

impl Conn {
    /// The client (shared with the futures that use it).
    pub fn client(&self) -> Arc<Client> {
        self.client.clone().expect("present until drop")
    }
}

impl Conn {
    /// Closes the connection instead of returning it to the pool (a
    /// session whose state is unknown, e.g. a lock that would not unlock).
    pub fn discard(mut self) {
        if self.client.take().is_some() {
            let mut st = self.pool.state.lock().unwrap_or_else(|p| p.into_inner());
            st.open -= 1;
            self.pool.freed.notify_one();
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let Some(c) = self.client.take() else { return };
        let mut st = self.pool.state.lock().unwrap_or_else(|p| p.into_inner());
        if c.is_closed() {
            st.open -= 1;
        } else {
            st.idle.push(c);
        }
        self.pool.freed.notify_one();
    }
}

impl Pool {
    /// A pool of at most `max` (≥ 1) connections to `config`, whose callers
    /// wait at most `wait` for one to be free.
    pub fn new(
        rt: tokio::runtime::Handle,
        config: tokio_postgres::Config,
        max: usize,
        wait: Duration,
    ) -> Arc<Pool> {
        Arc::new(Pool {
            rt,
            config,
            max: max.max(1),
            wait,
            state: Mutex::new(PoolState::default()),
            freed: Condvar::new(),
        })
    }

    /// An idle connection, a new one while under the cap, else the first
    /// one freed within the pool's wait ([`StoreError::PoolExhausted`] past it).
    pub fn get(self: &Arc<Self>) -> Result<Conn, StoreError> {
        // One deadline for the whole call: a wake-up that another caller
        // beat to the freed connection does not restart the wait.
        let deadline = std::time::Instant::now() + self.wait;
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(c) = st.idle.pop() {
                if c.is_closed() {
                    st.open -= 1;
                    continue;
                }
                return Ok(self.lend(c));
            }
            if st.open < self.max {
                st.open += 1;
                drop(st);
                return match self.connect() {
                    Ok(c) => Ok(self.lend(c)),
                    Err(e) => {
                        self.state.lock().unwrap_or_else(|p| p.into_inner()).open -= 1;
                        self.freed.notify_one();
                        Err(e)
                    }
                };
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(StoreError::PoolExhausted {
                    waited_ms: u64::try_from(self.wait.as_millis()).unwrap_or(u64::MAX),
                    pool_size: self.max,
                });
            }
            st = self
                .freed
                .wait_timeout(st, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn lend(self: &Arc<Self>, c: Arc<Client>) -> Conn {
        Conn {
            client: Some(c),
            pool: self.clone(),
        }
    }

    fn connect(&self) -> Result<Arc<Client>, StoreError> {
        let config = self.config.clone();
        block_on(&self.rt, async move {
            let (client, connection) = config
                .connect(tokio_postgres::NoTls)
                .await
                .map_err(pg_err)?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::warn!(error = %e, "postgres connection closed");
                }
            });
            prefer_lz4(&client).await;
            Ok(Arc::new(client))
        })?
    }

    /// Runs `f` with a pooled client on the store's runtime.
    pub fn with<T, F, Fut>(self: &Arc<Self>, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Client>) -> Fut,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let conn = self.get()?;
        let r = block_on(&self.rt, f(conn.client()))?;
        drop(conn);
        r
    }

    /// The runtime the clients run on.
    pub fn runtime(&self) -> &tokio::runtime::Handle {
        &self.rt
    }
}

/// The session's TOAST compression for the values it writes: lz4 instead of
/// the server's default (pglz, unless the operator chose otherwise). Ride,
/// result and day blocks are 2–40 KB of signatures and ids, and pglz
/// spent about a third of the database server's CPU on them (1M rides,
/// 100k-ride chunks: server CPU at ingest 12.2 → 7.7 s, in the settle run
/// 15.1 → 12.5 s; settlement/README.md "PostgreSQL"). Reading either kind of
/// value needs no setting, so a database written both ways stays readable.
/// A server built without lz4 refuses the setting: it then keeps its own
/// default, with a warning, and everything else works.
async fn prefer_lz4(client: &Client) {
    if let Err(e) = client
        .batch_execute("SET default_toast_compression = lz4")
        .await
    {
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| {
            tracing::warn!(error = %e, "postgres: lz4 TOAST compression unavailable; values are compressed with the server's default");
        });
    }
}
