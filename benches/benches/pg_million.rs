//! One million rides (100,000 credentials × 10, 1,000 readers) uploaded
//! over HTTP on loopback to a real `fare-settlement` service and settled
//! by one run, on PostgreSQL (a throwaway cluster from `fare-pgtest`,
//! `fsync` on) and on sled, in one process: wall, CPU of this process and
//! of the PostgreSQL server, database size. Issue #13's targets: ingest ≥
//! 50k rides/s and the settle run ≤ 30 s on PostgreSQL.
//!
//! ```sh
//! cargo bench -p fare-benches --bench pg_million                 # 100000 credentials × 10 rides
//! cargo bench -p fare-benches --bench pg_million -- 10000 10     # a tenth
//! BENCH_SETTLE_CHUNK_RIDES=250000 cargo bench -p fare-benches --bench pg_million   # another settle_chunk_rides
//! ```
//!
//! A measurement script, read top to bottom (not criterion: one 1M-ride
//! run takes minutes). Numbers in settlement/README.md.

use fare_credential::record::genesis_hash;
use fare_credential::request::REQUEST_AUTH_HEADER;
use fare_credential::testkit::{batch_request_auth, chain_records, seeded_key, DEMO_DAY_T0};
use fare_credential::{Batch, Clock, ManualClock, Profile, RideCode, SigningKey};
use fare_settlement::model::{Account, CredentialRecord};
use fare_settlement::store::{Db, WriteSet};
use fare_settlement::{ops, App, Config};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

// The same allocator as the `fare-settlement` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const T0: u64 = DEMO_DAY_T0;
/// Readers of the day (rides spread over them).
const READERS: u32 = 1_000;
/// Concurrent uploading clients.
const UPLOADERS: usize = 16;
/// The service's `request_timeout_ms` in this bench (see `config`).
const BENCH_REQUEST_TIMEOUT_MS: u64 = 120_000;
/// PostgreSQL settings of the benchmark's cluster (a dedicated server's,
/// scaled to this machine; durability settings stay the defaults).
const PG_SETTINGS: &[(&str, &str)] = &[
    ("shared_buffers", "1GB"),
    ("max_wal_size", "8GB"),
    ("checkpoint_timeout", "30min"),
    ("wal_compression", "on"),
];

/// CPU seconds (user + system) of a process from /proc (Linux), with its
/// reaped children when `children`.
fn cpu_of(pid: &str, children: bool) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime, stime, cutime, cstime: fields 14–17, after the `)` at 11–14.
    let own = ticks(11) + ticks(12);
    (if children {
        own + ticks(13) + ticks(14)
    } else {
        own
    }) / 100.0
}

/// CPU seconds of the PostgreSQL server: the postmaster, its live children
/// (backends, WAL writer, checkpointer) and those that exited.
fn server_cpu(postmaster: u32) -> f64 {
    let mut total = cpu_of(&postmaster.to_string(), true);
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let after = stat.rsplit(')').next().unwrap_or("");
        if after.split_whitespace().nth(1) == Some(&postmaster.to_string()) {
            total += cpu_of(&name, false);
        }
    }
    total
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// The day's rides: per reader, its signed batches in order.
struct Day {
    rides: usize,
    batches: Vec<Vec<Vec<u8>>>,
}

/// Accounts and credentials (issued by the shared KEYS directory's
/// issuer), then the rides signed by the phones, chained and batched by
/// reader. Not measured.
fn generate(app: &App, n_creds: usize, per: usize) -> (WriteSet, Day) {
    let keys = app.keys.lock().unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let mut w = WriteSet::default();
    let mut creds = Vec::with_capacity(n_creds);
    for i in 0..n_creds {
        let dev = seeded_key(1_000 + i as u64);
        let c = keys
            .issue_credential(
                &fare_keys::IssueRequest {
                    device_public_key: dev.verifying_key().to_bytes(),
                    profile: Profile::ALL[i % 4],
                    valid_from_unix_s: T0 - 86_400,
                    valid_for_s: 2 * 86_400,
                },
                T0 - 86_400,
                &mut rng,
            )
            .unwrap();
        let acc = Account {
            account_id: format!("acc-{i}"),
            profile: Profile::ALL[i % 4],
            credit_limit_minor: 2_000,
            frozen: false,
            created_unix_s: 0,
        };
        Db::put_account(&mut w, &acc);
        Db::put_credential(
            &mut w,
            &CredentialRecord {
                credential_id: c.id(),
                account_id: acc.account_id.clone(),
                profile: c.body().profile,
                valid_from_unix_s: c.body().valid_from_unix_s as u64,
                valid_until_unix_s: c.body().valid_until_unix_s as u64,
                issued_unix_s: T0 - 86_400,
            },
        );
        creds.push((dev, c));
    }
    drop(keys);
    // Ride j of credential i: 06:00 + j × 97 min + i mod 3600 s, on reader (i + j) mod READERS.
    use rayon::prelude::*;
    let signed: Vec<(u32, u64, Vec<u8>)> = (0..n_creds * per)
        .into_par_iter()
        .map(|k| {
            let (i, j) = (k / per, k % per);
            let t = T0 - 2 * 3600 + (j as u64) * 97 * 60 + (i as u64 % 3600);
            let (dev, c) = &creds[i];
            let code = RideCode::sign_v1(c, (t - 5) as u32, j as u32 + 1, dev);
            (((i + j) as u32) % READERS + 1, t, code.as_bytes().to_vec())
        })
        .collect();
    let mut by_reader: Vec<Vec<(u64, Vec<u8>)>> = vec![Vec::new(); READERS as usize];
    for (r, t, c) in signed {
        by_reader[(r - 1) as usize].push((t, c));
    }
    let batches = by_reader
        .par_iter()
        .enumerate()
        .map(|(ri, list)| reader_batches(ri as u32 + 1, list))
        .collect();
    let day = Day {
        rides: n_creds * per,
        batches,
    };
    (w, day)
}

fn reader_key(reader_id: u32) -> SigningKey {
    seeded_key(50_000 + u64::from(reader_id))
}

/// One reader's rides as signed batches, chained from genesis.
fn reader_batches(reader_id: u32, list: &[(u64, Vec<u8>)]) -> Vec<Vec<u8>> {
    let key = reader_key(reader_id);
    let vehicle = format!("bus-{reader_id}");
    let (mut prev, mut seq) = (genesis_hash(reader_id), 1u64);
    let mut out = Vec::new();
    for chunk in list.chunks(fare_credential::batch::MAX_BATCH_RECORDS) {
        let (records, head) = chain_records(reader_id, seq, prev, &vehicle, "1", chunk);
        let body = Batch {
            reader_id,
            prev_hash: prev,
            records,
        }
        .sign_v1(&key)
        .unwrap();
        (prev, seq) = (head, seq + chunk.len() as u64);
        out.push(body);
    }
    out
}

fn provision(app: &App) {
    for reader_id in 1..=READERS {
        let metro = reader_id % 3 == 0;
        ops::provision_reader(
            &app.db,
            &ops::ProvisionReader {
                reader_id,
                public_key: hex::encode(reader_key(reader_id).verifying_key().to_bytes()),
                operator: if metro { "metro" } else { "city-bus" }.into(),
                vehicle: format!("bus-{reader_id}"),
                route: if metro { "L1" } else { "1" }.into(),
            },
            0,
        )
        .unwrap();
    }
}

/// Uploads every batch over HTTP (`UPLOADERS` clients, each reader's
/// batches in order by one client); returns the wall seconds.
fn upload(app: Arc<App>, day: &Day) -> f64 {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("http://{}/v1/batches", listener.local_addr().unwrap());
    let now = app.clock.now_unix_s();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = rt.spawn(fare_settlement::serve(listener, app, async {
        let _ = rx.await;
    }));
    let client = reqwest::Client::new();
    let t = Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for u in 0..UPLOADERS {
            let mine: Vec<(u32, Vec<u8>)> = (0..day.batches.len())
                .skip(u)
                .step_by(UPLOADERS)
                .flat_map(|ri| {
                    day.batches[ri]
                        .iter()
                        .map(move |b| (ri as u32 + 1, b.clone()))
                })
                .collect();
            let (client, url) = (client.clone(), url.clone());
            tasks.push(tokio::spawn(async move {
                for (reader_id, body) in mine {
                    // Signed as the reader (SPEC §9) at the service's clock,
                    // which stands still in this bench.
                    let auth = batch_request_auth(&reader_key(reader_id), reader_id, now, &body);
                    let rq = client.post(&url).header(REQUEST_AUTH_HEADER, auth);
                    let r = rq.body(body).send().await.unwrap();
                    let status = r.status().as_u16();
                    assert_eq!(status, 200, "{}", r.text().await.unwrap_or_default());
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    });
    let wall = t.elapsed().as_secs_f64();
    let _ = tx.send(());
    rt.block_on(server).unwrap().unwrap();
    wall
}

/// What one backend measured.
struct Measured {
    ingest_s: f64,
    ingest_cpu: f64,
    ingest_db_cpu: f64,
    settle_s: f64,
    settle_cpu: f64,
    settle_db_cpu: f64,
    bytes: u64,
    wal_bytes: u64,
    summary: fare_settlement::settle::RunSummary,
}

/// Ingests and settles `day` on one app; `db_cpu` reads the database
/// server's CPU seconds (0 for sled, which runs in this process).
fn measure(app: Arc<App>, day: &Day, db_cpu: &dyn Fn() -> f64) -> Measured {
    let me = std::process::id().to_string();
    let (c0, d0) = (cpu_of(&me, false), db_cpu());
    let ingest_s = upload(app.clone(), day);
    let (c1, d1) = (cpu_of(&me, false), db_cpu());
    let t = Instant::now();
    let mut phases = fare_settlement::settle::PhaseTimes::default();
    let summary = app.settle_timed(&mut phases).unwrap();
    let settle_s = t.elapsed().as_secs_f64();
    let (c2, d2) = (cpu_of(&me, false), db_cpu());
    println!("  settle phases (wall): {phases}");
    println!("  load average: {}", load());
    Measured {
        ingest_s,
        ingest_cpu: c1 - c0,
        ingest_db_cpu: d1 - d0,
        settle_s,
        settle_cpu: c2 - c1,
        settle_db_cpu: d2 - d1,
        bytes: 0,
        wal_bytes: 0,
        summary,
    }
}

fn report(name: &str, n: usize, m: &Measured) {
    let n = n as f64;
    println!(
        "{name}: ingest over HTTP {:.1} s ({:.0} rides/s; CPU: service+clients {:.1} s, database server {:.1} s) | \
         settle run {:.1} s ({:.0} rides/s; CPU: service {:.1} s, database server {:.1} s) | \
         {} chunks, {} postings | on disk {:.0} MB (+ WAL {:.0} MB)",
        m.ingest_s,
        n / m.ingest_s,
        m.ingest_cpu,
        m.ingest_db_cpu,
        m.settle_s,
        n / m.settle_s,
        m.settle_cpu,
        m.settle_db_cpu,
        m.summary.chunks,
        m.summary.postings,
        m.bytes as f64 / 1e6,
        m.wal_bytes as f64 / 1e6,
    );
}

fn config(keys: &Path) -> Config {
    Config {
        operator_token: "bench-operator-token".into(),
        keys_dir: Some(keys.to_path_buf()),
        // A throughput measurement, not a latency test: on the shared
        // 2-core machine at load 13+, 16 uploads of 1,000-ride batches at
        // once can take longer than the default 10 s each (a 1M run's sled
        // leg failed with `408 request_timeout` on 1 December).
        request_timeout_ms: BENCH_REQUEST_TIMEOUT_MS,
        settle_chunk_rides: fare_benches::env_setting(
            "BENCH_SETTLE_CHUNK_RIDES",
            Config::default().settle_chunk_rides,
        ),
        ..Config::default()
    }
}

fn main() {
    // `cargo bench` adds `--bench`; every other argument is a count.
    let nums: Vec<usize> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .map(|a| {
            a.parse().unwrap_or_else(|e| {
                eprintln!("pg_million: argument {a:?} is not a count of credentials or rides per credential: {e}");
                std::process::exit(2)
            })
        })
        .collect();
    let n_creds = nums.first().copied().unwrap_or(100_000);
    let per = nums.get(1).copied().unwrap_or(10);
    let Some(cluster) = fare_pgtest::PgCluster::start_with_settings(PG_SETTINGS) else {
        return;
    };
    let keys = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0 - 86_400));
    let sled_dir = tempfile::tempdir().unwrap();
    let sled =
        Arc::new(App::open(sled_dir.path(), config(keys.path()), clock.clone(), Some(1)).unwrap());
    let pg_dir = tempfile::tempdir().unwrap();
    let pg_cfg = Config {
        database_url: Some(cluster.create_database()),
        ..config(keys.path())
    };
    let pg = Arc::new(App::open(pg_dir.path(), pg_cfg, clock, Some(1)).unwrap());

    let t = Instant::now();
    let (accounts, day) = generate(&sled, n_creds, per);
    println!(
        "{} credentials × {per} rides = {} rides on {READERS} readers, {} batches; generated in {:.1} s (not measured)",
        n_creds,
        day.rides,
        day.batches.iter().map(Vec::len).sum::<usize>(),
        t.elapsed().as_secs_f64()
    );
    let second = WriteSet {
        puts: accounts.puts.clone(),
        ..WriteSet::default()
    };
    sled.db.commit(accounts).unwrap();
    pg.db.commit(second).unwrap();
    provision(&sled);
    provision(&pg);

    let postmaster = cluster.postmaster_pid().expect("postmaster.pid");
    let data = Path::new(&cluster.data_dir()).to_path_buf();
    let (base0, wal0) = (
        fare_durable::dir_bytes(&data.join("base")),
        fare_durable::dir_bytes(&data.join("pg_wal")),
    );
    println!("PostgreSQL (fsync on, {PG_SETTINGS:?}):");
    let mut on_pg = measure(pg.clone(), &day, &|| server_cpu(postmaster));
    on_pg.bytes = fare_durable::dir_bytes(&data.join("base")).saturating_sub(base0);
    on_pg.wal_bytes = fare_durable::dir_bytes(&data.join("pg_wal")).saturating_sub(wal0);
    drop(pg);
    println!("sled:");
    let mut on_sled = measure(sled.clone(), &day, &|| 0.0);
    on_sled.bytes = fare_durable::dir_bytes(&sled_dir.path().join("db"));
    assert_eq!(
        on_pg.summary, on_sled.summary,
        "both backends settle the same"
    );
    assert_eq!(on_pg.summary.rides as usize, day.rides);
    report("PostgreSQL", day.rides, &on_pg);
    report("sled", day.rides, &on_sled);
}
