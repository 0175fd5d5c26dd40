//! Versioned migrations (`settlement/migrations/NNNN_name.sql`), applied in
//! order at start and by `fare-settlement migrate`, each in its own
//! transaction, under an advisory lock so that instances starting together
//! apply each once. An applied migration whose text changed, or a database
//! migrated by a newer build, is refused.

use super::pool::pg_err;
use crate::error::StoreError;
use tokio_postgres::Client;

/// Advisory lock key of the migration step ("fare-mig").
pub const MIGRATION_LOCK_KEY: i64 = 0x6661_7265_2d6d_6967;

/// One migration: version, name, SQL.
pub type Migration = (i32, &'static str, &'static str);

/// Every migration of this build, in order.
pub const MIGRATIONS: &[Migration] = &[
    (
        1,
        "kv_tables",
        include_str!("../../../migrations/0001_kv_tables.sql"),
    ),
    (
        2,
        "passenger_tables",
        include_str!("../../../migrations/0002_passenger_tables.sql"),
    ),
    (
        3,
        "distribution_keys_and_day_partitions",
        include_str!("../../../migrations/0003_distribution_keys_and_day_partitions.sql"),
    ),
];

/// What [`migrate`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct MigrationReport {
    /// Versions applied now.
    pub applied: Vec<i32>,
    /// The schema version after the step.
    pub version: i32,
}

fn checksum(sql: &str) -> Vec<u8> {
    blake3::hash(sql.as_bytes()).as_bytes().to_vec()
}

/// Applies the missing migrations.
pub async fn migrate(client: &Client) -> Result<MigrationReport, StoreError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await
        .map_err(pg_err)?;
    let r = apply_missing(client).await;
    let unlock = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_KEY])
        .await
        .map_err(pg_err);
    let report = r?;
    unlock?;
    Ok(report)
}

async fn apply_missing(client: &Client) -> Result<MigrationReport, StoreError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version integer PRIMARY KEY,
                name text NOT NULL,
                checksum bytea NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await
        .map_err(pg_err)?;
    let rows = client
        .query(
            "SELECT version, name, checksum FROM schema_migrations ORDER BY version",
            &[],
        )
        .await
        .map_err(pg_err)?;
    let mut report = MigrationReport::default();
    for row in &rows {
        let (v, name, sum): (i32, String, Vec<u8>) = (row.get(0), row.get(1), row.get(2));
        match MIGRATIONS.iter().find(|m| m.0 == v) {
            None => {
                return Err(StoreError::Schema(format!(
                    "postgres: the database has migration {v} ({name}), unknown to this build: it was migrated by a newer fare-settlement"
                )))
            }
            Some(m) if checksum(m.2) != sum => {
                return Err(StoreError::Schema(format!(
                    "postgres: migration {v} ({name}) differs from the one applied to this database"
                )))
            }
            Some(_) => report.version = report.version.max(v),
        }
    }
    for (v, name, sql) in MIGRATIONS {
        if rows.iter().any(|r| r.get::<_, i32>(0) == *v) {
            continue;
        }
        let record = format!(
            "INSERT INTO schema_migrations (version, name, checksum) VALUES ({v}, '{name}', '\\x{}')",
            hex::encode(checksum(sql))
        );
        let run = async {
            client.batch_execute("BEGIN").await.map_err(pg_err)?;
            client.batch_execute(sql).await.map_err(pg_err)?;
            after_sql(client, *v).await?;
            client.batch_execute(&record).await.map_err(pg_err)?;
            client.batch_execute("COMMIT").await.map_err(pg_err)
        };
        if let Err(e) = run.await {
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(e);
        }
        tracing::info!(version = v, name, "applied migration");
        report.applied.push(*v);
        report.version = *v;
    }
    Ok(report)
}

/// Rows copied per statement by a data step.
const COPY_PAGE_ROWS: i64 = 10_000;

/// The data step of a migration, in its transaction after its SQL:
/// 0003 copies every `kv_*_v2` table into its new table, computing the
/// distribution key and (ride history) the day of each row in Rust, then
/// drops the old table.
async fn after_sql(client: &Client, version: i32) -> Result<(), StoreError> {
    if version != 3 {
        return Ok(());
    }
    for space in super::layout::ALL_SPACES {
        copy_v2(client, space).await?;
    }
    Ok(())
}

async fn copy_v2(client: &Client, space: super::Space) -> Result<(), StoreError> {
    let t = super::table(space);
    let parts = super::Partitions::default();
    let mut after: Vec<u8> = Vec::new();
    let mut first = true;
    loop {
        let rows = client
            .query(
                &format!("SELECT k, v FROM {t}_v2 WHERE k > $1 OR $2 ORDER BY k LIMIT $3"),
                &[&after, &first, &COPY_PAGE_ROWS],
            )
            .await
            .map_err(pg_err)?;
        let Some(last) = rows.last() else { break };
        after = last.get(0);
        first = false;
        let mut w = crate::store::WriteSet::default();
        for r in &rows {
            w.put(space, r.get::<_, Vec<u8>>(0), r.get::<_, Vec<u8>>(1));
        }
        let plan = super::Plan::new(w)?;
        let done = async {
            parts.ensure(client, &plan.needed_partitions()).await?;
            super::apply(client, &plan).await
        };
        done.await.map_err(|e| match e {
            super::TxError::Retry(e) | super::TxError::Fail(e) => e,
        })?;
    }
    client
        .batch_execute(&format!("DROP TABLE {t}_v2"))
        .await
        .map_err(pg_err)
}
