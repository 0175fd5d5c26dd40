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
                return Err(StoreError::Backend(format!(
                    "postgres: the database has migration {v} ({name}), unknown to this build: it was migrated by a newer fare-settlement"
                )))
            }
            Some(m) if checksum(m.2) != sum => {
                return Err(StoreError::Backend(format!(
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
        let body = format!(
            "BEGIN;\n{sql}\nINSERT INTO schema_migrations (version, name, checksum) VALUES ({v}, '{name}', '\\x{}');\nCOMMIT;",
            hex::encode(checksum(sql))
        );
        if let Err(e) = client.batch_execute(&body).await {
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(pg_err(e));
        }
        tracing::info!(version = v, name, "applied migration");
        report.applied.push(*v);
        report.version = *v;
    }
    Ok(report)
}
