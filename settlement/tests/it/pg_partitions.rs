//! Ride history by day on PostgreSQL (migration 0003): ride blocks, result
//! blocks and day states live in one partition per day, a block follows
//! its newest ride into a later day's partition, the retention purge drops
//! whole days (and nothing newer), a late ride re-creates a dropped day;
//! migration 0003 carries the rows of a 0002 database over; and a database
//! migrated by another build is refused, naming the migration.

use crate::common::*;
use fare_settlement::store::postgres::{PostgresStore, MIGRATIONS};
use fare_settlement::store::{Space, Store};
use fare_settlement::StoreError;

const DAY_A: i32 = 20260310;
const DAY_B: i32 = 20260311;

/// The readers whose blocks a day partition of `space` holds.
fn readers_in(store: &dyn Store, space: Space, day: i32) -> Vec<u32> {
    let mut r: Vec<u32> = store
        .history_day_entries(space, day)
        .unwrap()
        .iter()
        .map(|(k, _)| u32::from_be_bytes(k[..4].try_into().unwrap()))
        .collect();
    r.dedup();
    r
}

/// A plain client of the test database, its connection driven in the background.
async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}

async fn upload(srv: &Server, reader: &FakeReader, from: u64, to: u64) {
    let (s, v) = srv.upload(reader.batch(from, to)).await;
    assert_eq!(s, 200, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ride_history_is_kept_by_day_and_the_purge_drops_whole_days_postgres() {
    let Some(db) = TestDb::new(Backend::Postgres) else {
        return;
    };
    let srv = Server::start(db.path(), db.config(test_config())).await;
    srv.create_account("alice", "adult", 10_000).await;
    let mut phone = srv.phone("alice", 1).await;
    let (mut r1, mut r2, mut r3) = (
        FakeReader::new(1, "city-bus", "1"),
        FakeReader::new(2, "city-bus", "1"),
        FakeReader::new(3, "metro", "L1"),
    );
    for r in [&r1, &r2, &r3] {
        srv.provision(r).await;
    }
    // Day A (UTC 2026-03-10): two rides on reader 1, one on reader 3.
    // Day B: one on reader 2, and reader 3's second ride, which carries its
    // block (seq 1 and 2) into day B's partition.
    let (a1, a2, b) = (T0 + 3_600, T0 + 5 * 3_600, T0 + 86_400 + 7_200);
    r1.accept(phone.code(a1), a1);
    r1.accept(phone.code(a1 + 600), a1 + 600);
    upload(&srv, &r1, 1, 2).await;
    r3.accept(phone.code(a2), a2);
    upload(&srv, &r3, 1, 1).await;
    let store = srv.app.db.store();
    assert_eq!(readers_in(store, Space::Rides, DAY_A), vec![1, 3]);
    r3.accept(phone.code(b), b);
    upload(&srv, &r3, 2, 2).await;
    r2.accept(phone.code(b + 60), b + 60);
    upload(&srv, &r2, 1, 1).await;
    assert_eq!(srv.settle().await["rides"], 5);

    let days = |s: Space| store.history_days(s).unwrap().unwrap();
    assert_eq!(days(Space::Rides), vec![DAY_A, DAY_B]);
    assert_eq!(
        readers_in(store, Space::Rides, DAY_A),
        vec![1],
        "block moved"
    );
    assert_eq!(readers_in(store, Space::Rides, DAY_B), vec![2, 3]);
    assert_eq!(days(Space::Results), vec![DAY_A, DAY_B]);
    // Service days of the demo tariff (Asia/Shanghai): 10 and 11 March.
    assert_eq!(days(Space::Days), vec![DAY_A, DAY_B]);
    let ledger = srv.get("/v1/reports/ledger").await.1;

    // Retention 90 days: the cutoff falls at 01:00 UTC on day B.
    srv.clock.set(T0 + 86_400 + 3_600 + 90 * 86_400);
    let (s, p) = srv
        .post("/v1/settlement/purge", serde_json::json!({}))
        .await;
    assert_eq!(
        (s, p["rides"].as_u64(), p["days"].as_u64()),
        (200, Some(2), Some(1)),
        "{p}"
    );
    assert_eq!(days(Space::Rides), vec![DAY_B]);
    assert_eq!(days(Space::Results), vec![DAY_B]);
    assert_eq!(days(Space::Days), vec![DAY_B]);
    assert!(srv.app.db.rides(1, 1, 2).unwrap().is_empty());
    // Reader 3's day-A ride shares a block with a day-B ride: kept.
    assert_eq!(srv.app.db.rides(3, 1, 2).unwrap().len(), 2);
    assert_eq!(srv.app.db.rides(2, 1, 1).unwrap().len(), 1);
    assert_eq!(srv.get("/v1/reports/ledger").await.1, ledger, "money stays");

    // A late day-A ride re-creates the dropped day's partitions.
    r1.accept(phone.code(a1 + 1_200), a1 + 1_200);
    upload(&srv, &r1, 3, 3).await;
    assert_eq!(srv.settle().await["rides"], 1);
    assert_eq!(days(Space::Rides), vec![DAY_A, DAY_B]);
    assert_eq!(readers_in(store, Space::Results, DAY_A), vec![1]);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_0003_carries_a_0002_database_over_postgres() {
    let Some(db) = TestDb::new(Backend::Postgres) else {
        return;
    };
    let url = db.url.clone().unwrap();
    let client = connect(&url).await;
    // The database as a build with migrations 0001 and 0002 left it.
    client
        .batch_execute(
            "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,
             checksum bytea NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await
        .unwrap();
    for (v, name, sql) in &MIGRATIONS[..2] {
        client.batch_execute(sql).await.unwrap();
        let sum = blake3::hash(sql.as_bytes()).as_bytes().to_vec();
        client
            .execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                &[v, name, &sum],
            )
            .await
            .unwrap();
    }
    let day_key = b"alice\x0020260310".to_vec();
    let ride_key = vec![0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0];
    for (t, k, v) in [
        ("kv_accounts", b"alice".to_vec(), b"account".to_vec()),
        ("kv_days", day_key.clone(), b"day".to_vec()),
        ("kv_rides", ride_key.clone(), b"not a ride block".to_vec()),
        ("kv_meta", b"settle_chunk_no".to_vec(), vec![0, 0, 0, 9]),
    ] {
        let sql = format!("INSERT INTO {t} (k, v) VALUES ($1, $2)");
        client.execute(&sql, &[&k, &v]).await.unwrap();
    }
    let report = tokio::task::spawn_blocking(move || {
        let s = PostgresStore::connect(&url, 4).unwrap();
        let report = s.migrate().unwrap();
        let get = |space, k: &[u8]| s.get(space, k).unwrap();
        assert_eq!(get(Space::Accounts, b"alice").unwrap(), b"account");
        assert_eq!(get(Space::Days, &day_key).unwrap(), b"day");
        assert_eq!(get(Space::Rides, &ride_key).unwrap(), b"not a ride block");
        assert_eq!(
            get(Space::Meta, b"settle_chunk_no").unwrap(),
            vec![0, 0, 0, 9]
        );
        assert_eq!(s.history_days(Space::Days).unwrap().unwrap(), vec![DAY_A]);
        // A value that is no ride block has no day: never purged.
        assert!(s.history_days(Space::Rides).unwrap().unwrap().is_empty());
        report
    })
    .await
    .unwrap();
    assert_eq!(report.applied, vec![3]);
    let left: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'kv\\_%\\_v2'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "the 0002 tables are dropped");
}

/// A database migrated by another build (a migration this build does not
/// know, or one whose text differs from this build's) is refused at open
/// as a schema mismatch that names the migration and what to run, not as
/// an unreachable database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_migrated_by_another_build_is_refused_naming_the_migration_postgres() {
    let Some(db) = TestDb::new(Backend::Postgres) else {
        return;
    };
    let url = db.url.clone().unwrap();
    let client = connect(&url).await;
    let open = || {
        let url = url.clone();
        tokio::task::spawn_blocking(move || PostgresStore::open(&url, 2).map(drop))
    };
    let refusal = |r: Result<(), StoreError>, names: &str| {
        let e = r.expect_err("a database of another build opened");
        let msg = e.to_string();
        assert!(matches!(e, StoreError::Schema(_)), "{msg}");
        assert!(msg.contains(names), "{msg}");
        assert!(
            msg.contains("run the fare-settlement build that migrated this database")
                && !msg.contains("is PostgreSQL running"),
            "{msg}"
        );
    };
    open().await.unwrap().unwrap();

    client
        .execute(
            "INSERT INTO schema_migrations (version, name, checksum) VALUES (99, 'from_a_newer_build', '\\x00')",
            &[],
        )
        .await
        .unwrap();
    refusal(
        open().await.unwrap(),
        "migration 99 (from_a_newer_build), unknown to this build",
    );

    let sql = "DELETE FROM schema_migrations WHERE version = 99";
    client.execute(sql, &[]).await.unwrap();
    open().await.unwrap().unwrap();
    let sql = "UPDATE schema_migrations SET checksum = '\\x00' WHERE version = 1";
    client.execute(sql, &[]).await.unwrap();
    let (_, name, _) = MIGRATIONS[0];
    refusal(
        open().await.unwrap(),
        &format!("migration 1 ({name}) differs from the one applied"),
    );
}

/// The blocks of ride history are TOASTed with lz4, which the service asks
/// for on each of its connections (pglz cost a third of the server's CPU).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ride_history_blocks_are_compressed_with_lz4_postgres() {
    let Some(db) = TestDb::new(Backend::Postgres) else {
        return;
    };
    let srv = Server::start(db.path(), db.config(test_config())).await;
    srv.create_account("alice", "adult", 100_000).await;
    let mut phone = srv.phone("alice", 1).await;
    let mut reader = FakeReader::new(1, "city-bus", "1");
    srv.provision(&reader).await;
    // 40 rides of one phone: a block far past the 2 KB TOAST threshold,
    // with the phone's credential repeated in every code (compressible).
    for i in 0..40 {
        let t = T0 + 3_600 + i * 300;
        reader.accept(phone.code(t), t);
    }
    upload(&srv, &reader, 1, 40).await;
    srv.settle().await;
    let url = db.url.clone().expect("a PostgreSQL database");
    let client = connect(&url).await;
    for space in [Space::Rides, Space::Results] {
        let sql = format!(
            "SELECT pg_column_compression(v) AS m, count(*) AS n FROM {} \
             WHERE pg_column_compression(v) IS NOT NULL GROUP BY 1",
            fare_settlement::store::postgres::table(space)
        );
        let rows = client.query(sql.as_str(), &[]).await.unwrap();
        let methods: Vec<(String, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        assert_eq!(
            methods.iter().map(|(m, _)| m.as_str()).collect::<Vec<_>>(),
            vec!["lz4"],
            "{space:?}: compressed values by method: {methods:?}"
        );
    }
}
