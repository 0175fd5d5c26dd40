//! Measures settling a Wuhan peak day: by default 100,000 credentials × 10
//! rides = 1,000,000 rides, re-verified (batched ed25519 on all cores),
//! rated (fare-tariff demo tariff) and posted (fare-ledger postings).
//!
//! ```sh
//! cargo run --release -p fare-settlement --example settle_million            # core, in memory
//! cargo run --release -p fare-settlement --example settle_million -- 100000 10 --store   # + sled ingest and a full settle run
//! cargo run --release -p fare-settlement --example settle_million -- 100000 10 --store --chunk 1000000   # one chunk
//! cargo run --release -p fare-settlement --example settle_million -- 100000 10 --store --no-core   # only the sled path
//! RAYON_NUM_THREADS=1 cargo run --release -p fare-settlement --example settle_million  # one core
//! cargo run --release -p fare-settlement --example settle_million -- 100000 10 --store --no-core --arrivals 24
//! ```
//!
//! `--arrivals N` (with `--store`): each reader's rides are uploaded in N
//! parts in reader-time order (the day arriving hour by hour), with a
//! settlement run after each part, as the simulator and an operator run it
//! several times a day; it prints each run's CPU seconds and their sum.

use fare_credential::record::genesis_hash;
use fare_credential::testkit::{chain_records, seeded_key, DEMO_DAY_T0};
use fare_credential::{Credential, CredentialId, ManualClock, Profile, RideCode, SigningKey};
use fare_settlement::core::{settle_chunk, Facts, RideIn};
use fare_settlement::model::{Account, CredentialRecord, RideId};
use fare_settlement::reverify::{reverify, CodeToVerify};
use fare_tariff::Tariff;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rayon::prelude::*;
use std::collections::HashMap;
use std::time::Instant;

// The same allocator as the `fare-settlement` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const T0: u64 = DEMO_DAY_T0; // 2026-03-10 08:00 Asia/Shanghai

/// CPU seconds (user + system) this process used so far, from /proc (Linux):
/// the shared build machine is often loaded, so wall time alone misleads.
fn cpu_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14 and 15 of stat; after the `)` they are at 11 and 12. 100 ticks/s.
    (ticks(11) + ticks(12)) / 100.0
}

/// Long by design: a measurement script read top to bottom (population,
/// in-memory core run, then the store run), each phase timed where it
/// stands; split, the timings would straddle function boundaries.
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n_creds: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let per: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10);
    let with_store = args.iter().any(|a| a == "--store");
    let threads = rayon::current_num_threads();
    println!(
        "{} credentials × {per} rides = {} rides, {threads} rayon thread(s)",
        n_creds,
        n_creds * per
    );

    // Generation (not measured as settlement): issuer, credentials, codes.
    let t = Instant::now();
    let issuer = seeded_key(1);
    let trust_keys = vec![fare_credential::IssuerKey {
        key_id: 1,
        public_key: issuer.verifying_key().to_bytes(),
        valid_from_unix_s: 0,
        valid_until_unix_s: u64::MAX,
    }];
    let trust = fare_credential::TrustList::new(trust_keys).unwrap();
    let creds: Vec<(SigningKey, Credential)> = (0..n_creds)
        .into_par_iter()
        .map(|i| {
            let dev = seeded_key(1_000 + i as u64);
            let c = fare_credential::testkit::issue(
                &issuer,
                1,
                &dev,
                fare_credential::testkit::numbered_credential_id(i as u64),
                Profile::ALL[i % 4],
                T0 - 86_400,
                T0 + 86_400,
            );
            (dev, c)
        })
        .collect();
    let n_readers = 1000u32;
    // Ride j of credential i: at 06:00 + j × 97 min + i mod 3600 s, on reader (i + j) mod 1000.
    let rides: Vec<(u32, u64, Vec<u8>)> = (0..n_creds * per)
        .into_par_iter()
        .map(|k| {
            let (i, j) = (k / per, k % per);
            let t = T0 - 2 * 3600 + (j as u64) * 97 * 60 + (i as u64 % 3600);
            let (dev, cred) = &creds[i];
            let code = RideCode::sign_v1(cred, (t - 5) as u32, j as u32 + 1, dev);
            (
                ((i + j) as u32) % n_readers + 1,
                t,
                code.as_bytes().to_vec(),
            )
        })
        .collect();
    println!(
        "generated in {:.1} s (not part of settlement)",
        t.elapsed().as_secs_f64()
    );

    let tariff = Tariff::demo();
    let policy = fare_credential::Policy::default();
    let credentials: HashMap<CredentialId, CredentialRecord> = creds
        .iter()
        .enumerate()
        .map(|(i, (_, c))| {
            (
                c.id(),
                CredentialRecord {
                    credential_id: c.id(),
                    account_id: format!("acc-{i}"),
                    profile: c.body().profile,
                    valid_from_unix_s: c.body().valid_from_unix_s as u64,
                    valid_until_unix_s: c.body().valid_until_unix_s as u64,
                    issued_unix_s: T0 - 86_400,
                },
            )
        })
        .collect();
    let accounts: HashMap<String, Account> = (0..n_creds)
        .map(|i| {
            (
                format!("acc-{i}"),
                Account {
                    account_id: format!("acc-{i}"),
                    profile: Profile::ALL[i % 4],
                    credit_limit_minor: 2_000,
                    frozen: false,
                    created_unix_s: 0,
                },
            )
        })
        .collect();

    // `--chunk N`: rides per settlement chunk (default: the config's).
    let chunk = args
        .iter()
        .position(|a| a == "--chunk")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok());
    // `--arrivals N`: rides uploaded in N parts, a settlement run after each.
    let arrivals: usize = args
        .iter()
        .position(|a| a == "--arrivals")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    if with_store && args.iter().any(|a| a == "--no-core") {
        store_run(&creds, &rides, n_readers, chunk, arrivals);
        return;
    }

    // Settlement core: re-verify, then rate and post.
    let t_all = Instant::now();
    let codes: Vec<CodeToVerify<'_>> = rides
        .iter()
        .map(|(_, t, c)| CodeToVerify {
            code: c,
            reader_time_unix_s: *t,
            strict: false,
        })
        .collect();
    let t = Instant::now();
    let c0 = cpu_s();
    let verdicts = reverify(&codes, &trust, &policy);
    let verify_s = t.elapsed().as_secs_f64();
    let verify_cpu = cpu_s() - c0;
    let bad = verdicts.iter().filter(|v| v.is_err()).count();
    assert_eq!(bad, 0, "all generated rides are genuine");
    let ride_in: Vec<RideIn> = rides
        .iter()
        .enumerate()
        .map(|(k, (reader, t, _))| RideIn {
            ride: RideId {
                reader_id: *reader,
                reader_seq: k as u64 + 1,
            },
            reader_time_unix_s: *t,
            operator: if matches!(reader % 3, 0) {
                "metro".into()
            } else {
                "city-bus".into()
            },
            route: if matches!(reader % 3, 0) {
                "L1".into()
            } else {
                "1".into()
            },
        })
        .collect();
    let empty = HashMap::new();
    let no_days = HashMap::new();
    let balances = HashMap::new();
    let facts = Facts {
        tariff: &tariff,
        now_unix_s: T0 + 86_400,
        credentials: &credentials,
        accounts: &accounts,
        balances: &balances,
        seen_codes: &empty,
        days: &no_days,
        operators: &HashMap::new(),
    };
    let t = Instant::now();
    let c0 = cpu_s();
    let out = settle_chunk(&ride_in, &verdicts, &facts);
    let rate_s = t.elapsed().as_secs_f64();
    let rate_cpu = cpu_s() - c0;
    let total_s = t_all.elapsed().as_secs_f64();
    let charged: i64 = out.results.iter().map(|r| r.amount_minor).sum();
    let posted: i64 = out.postings.iter().map(|p| p.amount_minor).sum();
    assert_eq!(charged, posted, "every charge is posted once");
    let n = rides.len() as f64;
    println!(
        "re-verify {verify_s:.2} s ({:.0} rides/s) | rate + post {rate_s:.2} s ({:.0} rides/s) | core total {total_s:.2} s ({:.0} rides/s)",
        n / verify_s,
        n / rate_s,
        n / total_s
    );
    println!(
        "CPU time: re-verify {verify_cpu:.2} s ({:.0} rides per CPU-second), rate + post {rate_cpu:.2} s ({:.0} rides per CPU-second)",
        n / verify_cpu.max(0.01),
        n / rate_cpu.max(0.01)
    );
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average during the run: {}", load.trim());
    println!(
        "{} postings, {} charged minor units, {} distinct credentials",
        out.postings.len(),
        charged,
        credentials.len()
    );

    if with_store {
        // The in-memory core's data (GBs at 1M rides) is freed first so it
        // does not weigh on the store run's allocations.
        drop((out, verdicts, ride_in, codes, credentials, accounts));
        store_run(&creds, &rides, n_readers, chunk, arrivals);
    }
}

/// Full path through sled: ingest (no HTTP) then one `App::settle`, or
/// `arrivals` rounds of ingest and settle.
/// Long by design for the same reason as `main`: phases timed in order.
fn store_run(
    creds: &[(SigningKey, Credential)],
    rides: &[(u32, u64, Vec<u8>)],
    n_readers: u32,
    chunk: Option<usize>,
    arrivals: usize,
) {
    use fare_settlement::{ingest, App, Config};
    let dir = tempfile::tempdir().unwrap();
    let defaults = Config::default();
    let cfg = Config {
        operator_token: "x".into(),
        settle_chunk_rides: chunk.unwrap_or(defaults.settle_chunk_rides),
        ..defaults
    };
    let app = App::open(
        dir.path(),
        cfg,
        std::sync::Arc::new(ManualClock::new(T0 - 86_400)),
        Some(1),
    )
    .unwrap();
    // The example's credentials come from its own issuer, so register them
    // by writing the map directly (the issuance API would re-issue them).
    // The credentials must come from the app's own issuer key: issue them
    // again for the same device keys and re-sign the codes.
    let mut w = fare_settlement::store::WriteSet::default();
    let keys = app.keys.lock().unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let mut map = Vec::with_capacity(creds.len());
    for (i, (dev, _)) in creds.iter().enumerate() {
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
        fare_settlement::store::Db::put_account(&mut w, &acc);
        fare_settlement::store::Db::put_credential(
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
        map.push(c);
    }
    drop(keys);
    app.db.commit(w).unwrap();
    let per = rides.len() / creds.len();
    // Re-sign the codes with the registered credentials, per reader in order.
    let mut by_reader: Vec<Vec<(u64, Vec<u8>)>> = vec![Vec::new(); n_readers as usize];
    let signed: Vec<(u32, u64, Vec<u8>)> = rides
        .par_iter()
        .enumerate()
        .map(|(k, (r, t, _))| {
            let (i, j) = (k / per, k % per);
            let code = RideCode::sign_v1(&map[i], (t - 5) as u32, j as u32 + 1, &creds[i].0);
            (*r, *t, code.as_bytes().to_vec())
        })
        .collect();
    for (r, t, c) in signed {
        by_reader[(r - 1) as usize].push((t, c));
    }
    if arrivals > 1 {
        // A reader uploads its log in order of its clock.
        for list in &mut by_reader {
            list.sort_by_key(|(t, _)| *t);
        }
    }
    let keys: Vec<SigningKey> = (1..=n_readers)
        .map(|reader_id| seeded_key(50_000 + reader_id as u64))
        .collect();
    for reader_id in 1..=n_readers {
        let key = &keys[reader_id as usize - 1];
        fare_settlement::ops::provision_reader(
            &app.db,
            &fare_settlement::ops::ProvisionReader {
                reader_id,
                public_key: hex::encode(key.verifying_key().to_bytes()),
                operator: if matches!(reader_id % 3, 0) {
                    "metro".into()
                } else {
                    "city-bus".into()
                },
                vehicle: format!("bus-{reader_id}"),
                route: if matches!(reader_id % 3, 0) {
                    "L1".into()
                } else {
                    "1".into()
                },
            },
            0,
        )
        .unwrap();
    }
    // Each reader's chain head and next sequence, carried across arrivals.
    let mut heads: Vec<([u8; 32], u64)> = (1..=n_readers).map(|r| (genesis_hash(r), 1)).collect();
    let (mut ingest_s, mut settle_s, mut settle_cpu) = (0.0, 0.0, 0.0);
    let mut summary = fare_settlement::settle::RunSummary::default();
    let mut phases = fare_settlement::settle::PhaseTimes::default();
    for part in 0..arrivals {
        let t = Instant::now();
        for (ri, list) in by_reader.iter().enumerate() {
            let reader_id = ri as u32 + 1;
            let (lo, hi) = (
                list.len() * part / arrivals,
                list.len() * (part + 1) / arrivals,
            );
            let vehicle = format!("bus-{reader_id}");
            let (prev, seq) = &mut heads[ri];
            for chunk in list[lo..hi].chunks(fare_credential::batch::MAX_BATCH_RECORDS) {
                let batch_prev = *prev;
                let (records, head) = chain_records(reader_id, *seq, *prev, &vehicle, "1", chunk);
                (*prev, *seq) = (head, *seq + chunk.len() as u64);
                let body = fare_credential::Batch {
                    reader_id,
                    prev_hash: batch_prev,
                    records,
                }
                .sign_v1(&keys[ri])
                .unwrap();
                ingest::ingest_batch(&app.db, &body, 0).unwrap();
            }
        }
        ingest_s += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let c0 = cpu_s();
        let s = app.settle_timed(&mut phases).unwrap();
        let (run_s, run_cpu) = (t.elapsed().as_secs_f64(), cpu_s() - c0);
        if arrivals > 1 {
            println!(
                "run {}/{arrivals}: {} rides, {run_s:.2} s, {run_cpu:.2} CPU-s",
                part + 1,
                s.rides
            );
        }
        (settle_s, settle_cpu) = (settle_s + run_s, settle_cpu + run_cpu);
        summary.add(s);
    }
    println!("settle phases (wall): {phases}");
    let n = rides.len() as f64;
    println!(
        "sled: ingest {ingest_s:.1} s ({:.0} records/s) | full settle run{} {settle_s:.1} s ({:.0} rides/s, {settle_cpu:.1} CPU-s), {} chunks, {} postings",
        n / ingest_s,
        if arrivals > 1 { "s (sum)" } else { "" },
        n / settle_s,
        summary.chunks,
        summary.postings
    );
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average after the settle run: {}", load.trim());
}
