//! One store conformance suite, two backends: every check runs against
//! sled and against PostgreSQL (a throwaway cluster from `fare-pgtest`;
//! SKIPPED locally when PostgreSQL is not installed, a failure in CI).

use fare_settlement::store::{
    PostgresStore, SledStore, Space, Store, WriteLock, WriteSet, MAX_KEYS_PER_READ,
};
use fare_settlement::StoreError;
use std::sync::Arc;

/// A backend under test that can be opened again on the same data.
enum Backend {
    Sled(tempfile::TempDir),
    Postgres(fare_pgtest::PgCluster, String),
}

impl Backend {
    fn sled() -> Backend {
        Backend::Sled(tempfile::tempdir().unwrap())
    }
    fn postgres() -> Option<Backend> {
        let c = fare_pgtest::PgCluster::start()?;
        let url = c.create_database();
        Some(Backend::Postgres(c, url))
    }
    fn open(&self) -> Arc<dyn Store> {
        match self {
            Backend::Sled(d) => Arc::new(SledStore::open(&d.path().join("db")).unwrap()),
            Backend::Postgres(_, url) => Arc::new(PostgresStore::open(url, 8).unwrap()),
        }
    }
}

fn put(s: &dyn Store, space: Space, k: &[u8], v: &[u8]) {
    let mut w = WriteSet::default();
    w.put(space, k, v);
    s.commit(w).unwrap();
}

fn keys(entries: &[(Vec<u8>, Vec<u8>)]) -> Vec<Vec<u8>> {
    entries.iter().map(|e| e.0.clone()).collect()
}

fn point_reads_and_spaces(s: &dyn Store) {
    assert_eq!(s.get(Space::Meta, b"nothing").unwrap(), None);
    put(s, Space::Meta, b"k", b"meta");
    put(s, Space::Accounts, b"k", b"account");
    assert_eq!(
        s.get(Space::Meta, b"k").unwrap().as_deref(),
        Some(&b"meta"[..])
    );
    assert_eq!(
        s.get(Space::Accounts, b"k").unwrap().as_deref(),
        Some(&b"account"[..])
    );
    // Empty values and binary keys round-trip.
    put(s, Space::Revoked, &[0, 0xff, 0], b"");
    assert_eq!(
        s.get(Space::Revoked, &[0, 0xff, 0]).unwrap().as_deref(),
        Some(&b""[..])
    );
    let mut w = WriteSet::default();
    w.delete(Space::Meta, b"k".to_vec());
    s.commit(w).unwrap();
    assert_eq!(s.get(Space::Meta, b"k").unwrap(), None);
    assert!(
        s.get(Space::Accounts, b"k").unwrap().is_some(),
        "spaces are separate"
    );
}

fn scans_in_bytewise_order(s: &dyn Store) {
    let all: Vec<Vec<u8>> = vec![
        b"a".to_vec(),
        b"a\x00".to_vec(),
        b"a\x00\x01".to_vec(),
        b"a\x7f".to_vec(),
        b"a\x80".to_vec(),
        b"a\xff".to_vec(),
        b"a\xff\xff".to_vec(),
        b"b".to_vec(),
        vec![0xff],
        vec![0xff, 0xff, 1],
    ];
    // Inserted in reverse: order comes from the store.
    let mut w = WriteSet::default();
    for k in all.iter().rev() {
        w.put(Space::Codes, k.clone(), k.clone());
    }
    s.commit(w).unwrap();
    let whole = s.scan(Space::Codes, b"", None, usize::MAX).unwrap();
    assert_eq!(keys(&whole), all);
    assert!(whole.iter().all(|(k, v)| k == v));
    assert_eq!(
        keys(&s.scan(Space::Codes, b"a", None, 100).unwrap()),
        all[..7].to_vec()
    );
    assert_eq!(
        keys(&s.scan(Space::Codes, b"a\xff", None, 100).unwrap()),
        all[5..7].to_vec()
    );
    // A prefix of 0xff bytes has no upper bound key.
    assert_eq!(
        keys(&s.scan(Space::Codes, &[0xff], None, 100).unwrap()),
        all[8..].to_vec()
    );
    // Paging: strictly after, limited.
    assert_eq!(
        keys(&s.scan(Space::Codes, b"a", None, 2).unwrap()),
        all[..2].to_vec()
    );
    assert_eq!(
        keys(&s.scan(Space::Codes, b"a", Some(b"a\x00\x01"), 2).unwrap()),
        all[3..5].to_vec()
    );
    assert!(s
        .scan(Space::Codes, b"a", Some(b"a\xff\xff"), 10)
        .unwrap()
        .is_empty());
    assert!(s.scan(Space::Codes, b"c", None, 10).unwrap().is_empty());
    // Ranges: start inclusive, end exclusive, limited.
    assert_eq!(
        keys(&s.range(Space::Codes, b"a\x00", b"a\x80", 100).unwrap()),
        all[1..4].to_vec()
    );
    assert_eq!(
        keys(&s.range(Space::Codes, b"a\x00", b"a\x80", 1).unwrap()),
        all[1..2].to_vec()
    );
    assert!(s
        .range(Space::Codes, b"a\x80", b"a\x80", 10)
        .unwrap()
        .is_empty());
    assert!(
        s.scan(Space::Fraud, b"", None, 10).unwrap().is_empty(),
        "other spaces hold nothing"
    );
}

fn preconditions_are_atomic(s: &dyn Store) {
    put(s, Space::ReaderStates, b"r1", b"v1");
    // A failed check writes nothing, in any space.
    let mut w = WriteSet::default();
    w.check(Space::ReaderStates, b"r1".to_vec(), Some(b"stale".to_vec()));
    w.put(Space::ReaderStates, b"r1", b"v2");
    w.put(Space::Rides, b"block", b"rides");
    w.delete(Space::Accounts, b"k".to_vec());
    assert!(matches!(s.commit(w), Err(StoreError::Conflict { .. })));
    assert_eq!(
        s.get(Space::ReaderStates, b"r1").unwrap().as_deref(),
        Some(&b"v1"[..])
    );
    assert_eq!(s.get(Space::Rides, b"block").unwrap(), None);
    assert!(s.get(Space::Accounts, b"k").unwrap().is_some());
    // "Absent" expected of a present key fails; of an absent one holds.
    let mut w = WriteSet::default();
    w.check(Space::ReaderStates, b"r1".to_vec(), None);
    w.put(Space::Rides, b"block", b"rides");
    assert!(matches!(s.commit(w), Err(StoreError::Conflict { .. })));
    let mut w = WriteSet::default();
    w.check(Space::ReaderStates, b"r1".to_vec(), Some(b"v1".to_vec()));
    w.check(Space::ReaderStates, b"r2".to_vec(), None);
    w.put(Space::ReaderStates, b"r1", b"v2");
    w.put(Space::ReaderStates, b"r2", b"new");
    s.commit(w).unwrap();
    assert_eq!(
        s.get(Space::ReaderStates, b"r1").unwrap().as_deref(),
        Some(&b"v2"[..])
    );
    assert_eq!(
        s.get(Space::ReaderStates, b"r2").unwrap().as_deref(),
        Some(&b"new"[..])
    );
}

/// `commit_unsynced` is a commit in all but the wait for the device:
/// checked, atomic, visible at once, and durable with the next `commit`
/// (checked after reopening, in `run_suite`).
fn unsynced_commits_are_checked_and_atomic(s: &dyn Store) {
    put(s, Space::Readers, b"seen", b"v1");
    let mut w = WriteSet::default();
    w.check(Space::Readers, b"seen".to_vec(), Some(b"stale".to_vec()));
    w.put(Space::Readers, b"seen", b"v2");
    w.put(Space::Meta, b"contact", b"lost");
    assert!(matches!(
        s.commit_unsynced(w),
        Err(StoreError::Conflict { .. })
    ));
    assert_eq!(s.get(Space::Meta, b"contact").unwrap(), None);
    let mut w = WriteSet::default();
    w.check(Space::Readers, b"seen".to_vec(), Some(b"v1".to_vec()));
    w.put(Space::Readers, b"seen", b"v2");
    w.put(Space::Meta, b"contact", b"unsynced");
    s.commit_unsynced(w).unwrap();
    assert_eq!(
        s.get(Space::Meta, b"contact").unwrap().as_deref(),
        Some(&b"unsynced"[..])
    );
    put(s, Space::Meta, b"after", b"synced");
}

fn puts_win_over_deletes_and_last_put_wins(s: &dyn Store) {
    let mut w = WriteSet::default();
    w.put(Space::Days, b"d", b"first");
    w.delete(Space::Days, b"d".to_vec());
    w.put(Space::Days, b"d", b"last");
    w.delete(Space::Days, b"gone".to_vec());
    s.commit(w).unwrap();
    assert_eq!(
        s.get(Space::Days, b"d").unwrap().as_deref(),
        Some(&b"last"[..])
    );
}

/// More rows than one batched statement carries.
fn large_write_sets(s: &dyn Store) {
    let n = 25_000u32;
    let mut w = WriteSet::default();
    for i in 0..n {
        w.put(Space::Postings, i.to_be_bytes(), vec![7u8; 40]);
    }
    s.commit(w).unwrap();
    let mut count = 0;
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = s
            .scan(Space::Postings, b"", after.as_deref(), 4096)
            .unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.0.clone());
        count += page.len();
    }
    assert_eq!(count, n as usize);
    let mut w = WriteSet::default();
    for i in 0..n {
        w.delete(Space::Postings, i.to_be_bytes().to_vec());
    }
    s.commit(w).unwrap();
    assert!(s.scan(Space::Postings, b"", None, 10).unwrap().is_empty());
}

/// Compare-and-swap increments from several threads: none is lost.
fn concurrent_cas_loses_no_update(s: Arc<dyn Store>) {
    const THREADS: u64 = 4;
    const INCREMENTS: u64 = 25;
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let s = s.clone();
            std::thread::spawn(move || {
                let mut done = 0;
                while done < INCREMENTS {
                    let cur = s.get(Space::Meta, b"counter").unwrap();
                    let n = cur
                        .as_deref()
                        .map_or(0, |b| u64::from_be_bytes(b.try_into().unwrap()));
                    let mut w = WriteSet::default();
                    w.check(Space::Meta, b"counter".to_vec(), cur);
                    w.put(Space::Meta, b"counter", (n + 1).to_be_bytes());
                    match s.commit(w) {
                        Ok(()) => done += 1,
                        Err(StoreError::Conflict { .. }) => {}
                        Err(e) => panic!("{e}"),
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let v = s.get(Space::Meta, b"counter").unwrap().unwrap();
    assert_eq!(
        u64::from_be_bytes(v.try_into().unwrap()),
        THREADS * INCREMENTS
    );
}

/// `get_many` and `range_many` answer exactly what `get` and `range` answer,
/// key by key and range by range, in the order asked (absent and repeated
/// keys, empty and limited ranges, a day-partitioned space), and refuse
/// more than `MAX_KEYS_PER_READ` keys.
fn batched_reads_match_single_reads(s: &dyn Store) {
    let mut w = WriteSet::default();
    for i in 0..50u32 {
        w.put(Space::Credentials, format!("cred-{i:03}"), i.to_be_bytes());
    }
    w.put(Space::Credentials, vec![0xff, 0], b"high");
    w.put(Space::Days, b"acc\x0020260310".to_vec(), b"d1".to_vec());
    w.put(Space::Days, b"acc\x0020260311".to_vec(), b"d2".to_vec());
    w.put(Space::Days, b"acd\x0020260310".to_vec(), b"d3".to_vec());
    s.commit(w).unwrap();

    let asked: Vec<Vec<u8>> = [
        &b"cred-007"[..],
        b"absent",
        b"cred-049",
        b"cred-007",
        b"",
        &[0xff, 0],
        b"cred-000",
    ]
    .iter()
    .map(|k| k.to_vec())
    .collect();
    let many = s.get_many(Space::Credentials, &asked).unwrap();
    let single: Vec<Option<Vec<u8>>> = asked
        .iter()
        .map(|k| s.get(Space::Credentials, k).unwrap())
        .collect();
    assert_eq!(many, single);
    assert_eq!(many[0].as_deref(), Some(&7u32.to_be_bytes()[..]));
    assert_eq!(many[1], None);
    assert_eq!(many[3], many[0], "a repeated key answers twice");
    assert_eq!(many[5].as_deref(), Some(&b"high"[..]));
    assert!(s.get_many(Space::Credentials, &[]).unwrap().is_empty());
    let day = s
        .get_many(Space::Days, &[b"acd\x0020260310".to_vec(), b"acc".to_vec()])
        .unwrap();
    assert_eq!(day, vec![Some(b"d3".to_vec()), None]);
    let too_many = vec![b"k".to_vec(); MAX_KEYS_PER_READ + 1];
    assert!(matches!(
        s.get_many(Space::Meta, &too_many),
        Err(StoreError::Internal(_))
    ));

    let b = |x: &[u8], y: &[u8]| (x.to_vec(), y.to_vec());
    let bounds = vec![
        b(b"cred-010", b"cred-020"),
        b(b"cred-045", b"cred-999"),
        b(b"x", b"y"),
        b(b"cred-010", b"cred-020"),
        b(b"", &[0xff, 0xff]),
        b(b"cred-030", b"cred-030"),
    ];
    let many = s.range_many(Space::Credentials, &bounds, 3).unwrap();
    assert_eq!(many.len(), bounds.len());
    for ((start, end), got) in bounds.iter().zip(&many) {
        assert_eq!(got, &s.range(Space::Credentials, start, end, 3).unwrap());
    }
    assert_eq!(
        keys(&many[0]),
        [
            b"cred-010".to_vec(),
            b"cred-011".to_vec(),
            b"cred-012".to_vec()
        ]
    );
    assert_eq!(
        keys(&many[1]),
        [
            b"cred-045".to_vec(),
            b"cred-046".to_vec(),
            b"cred-047".to_vec()
        ]
    );
    assert!(many[2].is_empty() && many[5].is_empty());
    assert_eq!(many[3], many[0]);
    assert_eq!(many[4][0].0, b"cred-000".to_vec());
    let days = s
        .range_many(
            Space::Days,
            &[
                b(b"acc\x0020260310", b"acc\x0020260311\xff"),
                b(b"acd\x00", b"acd\x01"),
                b(b"acc\x0020260311", b"acc\x0020260312"),
            ],
            100,
        )
        .unwrap();
    assert_eq!(
        keys(&days[0]),
        [b"acc\x0020260310".to_vec(), b"acc\x0020260311".to_vec()]
    );
    assert_eq!(days[1], vec![(b"acd\x0020260310".to_vec(), b"d3".to_vec())]);
    assert_eq!(keys(&days[2]), [b"acc\x0020260311".to_vec()]);
    let too_many = vec![b(b"a", b"b"); MAX_KEYS_PER_READ + 1];
    assert!(matches!(
        s.range_many(Space::Meta, &too_many, 1),
        Err(StoreError::Internal(_))
    ));
}

fn run_suite(b: &Backend) {
    let s = b.open();
    point_reads_and_spaces(&*s);
    scans_in_bytewise_order(&*s);
    preconditions_are_atomic(&*s);
    unsynced_commits_are_checked_and_atomic(&*s);
    puts_win_over_deletes_and_last_put_wins(&*s);
    large_write_sets(&*s);
    concurrent_cas_loses_no_update(s.clone());
    batched_reads_match_single_reads(&*s);
    s.health().unwrap();
    drop(s);
    // Committed means durable: everything is there after reopening.
    let s = b.open();
    assert_eq!(
        s.get(Space::Days, b"d").unwrap().as_deref(),
        Some(&b"last"[..])
    );
    assert_eq!(s.scan(Space::Codes, b"", None, 100).unwrap().len(), 10);
    for (k, v) in [(&b"contact"[..], &b"unsynced"[..]), (b"after", b"synced")] {
        assert_eq!(s.get(Space::Meta, k).unwrap().as_deref(), Some(v));
    }
    assert_eq!(
        s.get(Space::Readers, b"seen").unwrap().as_deref(),
        Some(&b"v2"[..])
    );
}

#[test]
fn conformance_sled() {
    let b = Backend::sled();
    run_suite(&b);
    assert_eq!(b.open().backend(), "sled");
}

#[test]
fn conformance_postgres() {
    let Some(b) = Backend::postgres() else { return };
    run_suite(&b);
    assert_eq!(b.open().backend(), "postgres");
}

/// Two instances (two stores on one database): read-modify-write sections
/// without any compare-and-swap stay exact, because the writer claim
/// excludes the other instance, not only this process's threads.
#[test]
fn writer_claim_excludes_other_instances_postgres() {
    let Some(b) = Backend::postgres() else { return };
    const PER_THREAD: u64 = 20;
    let instances: Vec<Arc<WriteLock>> = (0..2)
        .map(|_| {
            let s = b.open();
            Arc::new(WriteLock::new(s))
        })
        .collect();
    let stores: Vec<Arc<dyn Store>> = (0..2).map(|_| b.open()).collect();
    let mut threads = Vec::new();
    for (i, lock) in instances.iter().enumerate() {
        for _ in 0..2 {
            let lock = lock.clone();
            let reader = stores[i].clone();
            threads.push(std::thread::spawn(move || {
                for _ in 0..PER_THREAD {
                    let _g = lock.lock().unwrap_or_else(|p| p.into_inner());
                    // Read on another connection, write blind: only the
                    // claim keeps the other instance out in between.
                    let cur = reader.get(Space::Meta, b"n").unwrap();
                    let n = cur
                        .as_deref()
                        .map_or(0, |v| u64::from_be_bytes(v.try_into().unwrap()));
                    std::thread::yield_now();
                    let mut w = WriteSet::default();
                    w.put(Space::Meta, b"n", (n + 1).to_be_bytes());
                    lock_store_commit(&lock, w);
                }
            }));
        }
    }
    for t in threads {
        t.join().unwrap();
    }
    let v = stores[0].get(Space::Meta, b"n").unwrap().unwrap();
    assert_eq!(u64::from_be_bytes(v.try_into().unwrap()), 4 * PER_THREAD);
}

/// Commits through the lock's own store (the claim's connection).
fn lock_store_commit(lock: &WriteLock, w: WriteSet) {
    lock.store().commit(w).unwrap();
}

#[test]
fn migrations_apply_once_postgres() {
    let Some(Backend::Postgres(_c, url)) = Backend::postgres() else {
        return;
    };
    let s = PostgresStore::connect(&url, 4).unwrap();
    let first = s.migrate().unwrap();
    let every: Vec<i32> = fare_settlement::store::postgres::migrate::MIGRATIONS
        .iter()
        .map(|m| m.0)
        .collect();
    assert_eq!(first.applied, every);
    let again = s.migrate().unwrap();
    assert!(again.applied.is_empty());
    assert_eq!(again.version, first.version);
    // Instances starting together: each migration is applied once.
    let fresh = _c.create_database();
    let t: Vec<_> = (0..3)
        .map(|_| {
            let url = fresh.clone();
            std::thread::spawn(move || PostgresStore::connect(&url, 4).unwrap().migrate().unwrap())
        })
        .collect();
    let applied: usize = t.into_iter().map(|t| t.join().unwrap().applied.len()).sum();
    assert_eq!(applied, every.len());
}

/// A pool whose every connection stays busy: the caller waits the pool's
/// wait, then gets `PoolExhausted` (answered `503 database_busy`, naming
/// the pool), not the "is PostgreSQL running?" of an unreachable database;
/// once the connection is back the same read succeeds.
#[test]
fn a_busy_pool_is_database_busy_not_unreachable_postgres() {
    use fare_settlement::error::{ApiError, ErrorCode};
    use fare_settlement::store::PoolOptions;
    use std::time::Duration;
    let Some(Backend::Postgres(_c, url)) = Backend::postgres() else {
        return;
    };
    let pool = PoolOptions {
        size: 1,
        wait: Duration::from_millis(200),
    };
    let s = Arc::new(PostgresStore::open_with(&url, pool).unwrap());
    // The writer claim holds the only connection until it is released.
    s.claim_writer();
    let other = s.clone();
    let e = std::thread::spawn(move || other.get(Space::Meta, b"k"))
        .join()
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(
            e,
            StoreError::PoolExhausted {
                waited_ms: 200,
                pool_size: 1
            }
        ),
        "{e:?}"
    );
    let msg = e.to_string();
    assert!(msg.contains("database_pool_size"), "{msg}");
    assert!(!msg.contains("is PostgreSQL running"), "{msg}");
    assert_eq!(e.code(), ErrorCode::DatabaseBusy);
    let api = ApiError::from(e);
    assert_eq!((api.code, api.status.as_u16()), ("database_busy", 503));
    s.release_writer();
    let other = s.clone();
    let read = std::thread::spawn(move || other.get(Space::Meta, b"k"));
    assert_eq!(read.join().unwrap().unwrap(), None);
}
