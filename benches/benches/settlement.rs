//! Settlement benchmarks (DESIGN.md §6):
//! * `ingest_http`: records/s of reader batches (1024 records) uploaded over
//!   HTTP on loopback to a real service (sled, flushed before the answer);
//! * `r_check`: ingest's prime-order subgroup check of 1,024 rides' `R`,
//!   each alone and as one group test (one core, all cores);
//! * `settle_core`: rides/s re-verified (batched ed25519, all cores) and
//!   rated + posted, in memory;
//! * `settle_run`: rides/s of a full settlement run over sled.
//!
//! The 1M-ride measurement is `cargo run --release -p fare-settlement
//! --example settle_million`; numbers in settlement/README.md.

// criterion_group! generates an undocumented `pub fn benches`.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use fare_credential::record::genesis_hash;
use fare_credential::request::REQUEST_AUTH_HEADER;
use fare_credential::testkit::{batch_request_auth, chain_records, seeded_key, DEMO_DAY_T0};
use fare_credential::{
    Batch, Credential, CredentialId, IssuerKey, ManualClock, Profile, RideCode, RideRecord,
    SigningKey, TrustList,
};
use fare_settlement::core::{settle_chunk, Facts, RideIn};
use fare_settlement::model::{Account, CredentialRecord, RideId};
use fare_settlement::reverify::{reverify, CodeToVerify};
use fare_settlement::{ingest, ops, App, Config};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const T0: u64 = DEMO_DAY_T0;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn config() -> Config {
    Config {
        operator_token: "bench".into(),
        ..Config::default()
    }
}

/// `n` credentials with `per` genuine rides each, from `issuer`.
fn rides(issuer: &SigningKey, n: usize, per: usize) -> (Vec<Credential>, Vec<(u64, Vec<u8>)>) {
    let mut creds = Vec::new();
    let mut out = Vec::new();
    for i in 0..n {
        let dev = seeded_key(i as u64);
        let c = fare_credential::testkit::issue(
            issuer,
            1,
            &dev,
            fare_credential::testkit::numbered_credential_id(i as u64),
            Profile::ALL[i % 4],
            T0 - 86_400,
            T0 + 86_400,
        );
        for j in 0..per {
            let t = T0 - 2 * 3600 + j as u64 * 97 * 60 + i as u64 % 3600;
            out.push((
                t,
                RideCode::sign_v1(&c, (t - 5) as u32, j as u32 + 1, &dev)
                    .as_bytes()
                    .to_vec(),
            ));
        }
        creds.push(c);
    }
    (creds, out)
}

fn chained(
    reader_id: u32,
    from_seq: u64,
    prev: [u8; 32],
    codes: &[(u64, Vec<u8>)],
) -> (Vec<RideRecord>, [u8; 32]) {
    chain_records(reader_id, from_seq, prev, "bus-1", "1", codes)
}

fn ingest_http(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let app = Arc::new(App::open(dir.path(), config(), clock.clone(), Some(1)).unwrap());
    let reader_key = seeded_key(99);
    ops::provision_reader(
        &app.db,
        &ops::ProvisionReader {
            reader_id: 1,
            public_key: hex(&reader_key.verifying_key().to_bytes()),
            operator: "city-bus".into(),
            vehicle: "bus-1".into(),
            route: "1".into(),
        },
        T0,
    )
    .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("http://{}/v1/batches", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = rt.spawn(fare_settlement::serve(listener, app.clone(), async {
        let _ = rx.await;
    }));
    let issuer = seeded_key(7);
    let (_, pool) = rides(&issuer, 103, 10);
    let pool = &pool[..1024];
    let client = reqwest::Client::new();
    let mut next_seq = 1u64;
    let mut prev = genesis_hash(1);
    let mut g = c.benchmark_group("ingest_http");
    g.throughput(Throughput::Elements(1024));
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    g.bench_function("batch_1024_records", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let (records, head) = chained(1, next_seq, prev, pool);
                let body = Batch {
                    reader_id: 1,
                    prev_hash: prev,
                    records,
                }
                .sign_v1(&reader_key)
                .unwrap();
                // A second per batch, so the signed requests' replay window
                // (REQUEST_SKEW_S) slides as it would in real time.
                clock.advance(1);
                let auth = batch_request_auth(
                    &reader_key,
                    1,
                    fare_credential::Clock::now_unix_s(&*clock),
                    &body,
                );
                let started = Instant::now();
                let status = rt.block_on(async {
                    let rq = client.post(&url).header(REQUEST_AUTH_HEADER, auth);
                    rq.body(body).send().await.unwrap().status()
                });
                total += started.elapsed();
                assert_eq!(status.as_u16(), 200);
                next_seq += 1024;
                prev = head;
            }
            total
        })
    });
    g.finish();
    let _ = tx.send(());
    rt.block_on(server).unwrap().unwrap();
}

fn settle_core(c: &mut Criterion) {
    let issuer = seeded_key(7);
    let trust = TrustList::new([IssuerKey {
        key_id: 1,
        public_key: issuer.verifying_key().to_bytes(),
        valid_from_unix_s: 0,
        valid_until_unix_s: u64::MAX,
    }])
    .unwrap();
    let (creds, list) = rides(&issuer, 1638, 10);
    let codes: Vec<CodeToVerify<'_>> = list
        .iter()
        .map(|(t, c)| CodeToVerify {
            code: c,
            reader_time_unix_s: *t,
            strict: false,
        })
        .collect();
    let policy = fare_credential::Policy::default();
    let tariff = fare_tariff::Tariff::demo();
    let credentials: HashMap<CredentialId, CredentialRecord> = creds
        .iter()
        .enumerate()
        .map(|(i, c)| {
            (
                c.id(),
                CredentialRecord {
                    credential_id: c.id(),
                    account_id: format!("acc-{i}"),
                    profile: c.body().profile,
                    valid_from_unix_s: 0,
                    valid_until_unix_s: u64::MAX,
                    issued_unix_s: 0,
                },
            )
        })
        .collect();
    let accounts: HashMap<String, Account> = (0..creds.len())
        .map(|i| {
            (
                format!("acc-{i}"),
                Account {
                    account_id: format!("acc-{i}"),
                    profile: Profile::ALL[i % 4],
                    credit_limit_minor: 2000,
                    frozen: false,
                    created_unix_s: 0,
                },
            )
        })
        .collect();
    let ride_in: Vec<RideIn> = list
        .iter()
        .enumerate()
        .map(|(k, (t, _))| RideIn {
            ride: RideId {
                reader_id: (k % 100) as u32 + 1,
                reader_seq: k as u64 + 1,
            },
            reader_time_unix_s: *t,
            operator: "city-bus".into(),
            route: "1".into(),
        })
        .collect();
    let verdicts = reverify(&codes, &trust, &policy);
    let (empty_codes, empty_days, balances) = (HashMap::new(), HashMap::new(), HashMap::new());
    let facts = Facts {
        tariff: &tariff,
        now_unix_s: T0,
        credentials: &credentials,
        accounts: &accounts,
        balances: &balances,
        seen_codes: &empty_codes,
        days: &empty_days,
        operators: &HashMap::new(),
    };
    let mut g = c.benchmark_group("settle_core");
    g.throughput(Throughput::Elements(list.len() as u64));
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    g.bench_function("reverify_16380_rides", |b| {
        b.iter(|| reverify(&codes, &trust, &policy))
    });
    g.bench_function("rate_and_post_16380_rides", |b| {
        b.iter(|| settle_chunk(&ride_in, &verdicts, &facts))
    });
    g.finish();
}

fn settle_run(c: &mut Criterion) {
    // Setup per iteration (not timed): a fresh data dir holding 4096 ingested
    // rides of 410 accounts; timed: one `App::settle` (re-verify, rate,
    // post, commit to sled with flush, deny list refresh).
    let n_accounts = 410;
    let setup = || {
        let dir = tempfile::tempdir().unwrap();
        let app = App::open(
            dir.path(),
            config(),
            Arc::new(ManualClock::new(T0 - 86_400)),
            Some(1),
        )
        .unwrap();
        let reader_key = seeded_key(99);
        ops::provision_reader(
            &app.db,
            &ops::ProvisionReader {
                reader_id: 1,
                public_key: hex(&reader_key.verifying_key().to_bytes()),
                operator: "city-bus".into(),
                vehicle: "bus-1".into(),
                route: "1".into(),
            },
            0,
        )
        .unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let mut list = Vec::new();
        for i in 0..n_accounts {
            let id = format!("acc-{i}");
            let req = ops::CreateAccount {
                account_id: Some(id.clone()),
                profile: Some(Profile::ALL[i % 4]),
                credit_limit_minor: Some(2000),
            };
            ops::create_account(&app.db, &req, 0, app.now(), &mut rng).unwrap();
            let dev = SigningKey::generate(&mut rng);
            let issued = ops::register_device(
                &app.db,
                &app.keys,
                &id,
                &ops::RegisterDevice {
                    device_public_key: hex(&dev.verifying_key().to_bytes()),
                    valid_for_s: 2 * 86_400,
                },
                3 * 86_400,
                app.now(),
                &mut rng,
            )
            .unwrap();
            let bytes: Vec<u8> = (0..issued.credential.len() / 2)
                .map(|k| u8::from_str_radix(&issued.credential[2 * k..2 * k + 2], 16).unwrap())
                .collect();
            let cred = Credential::from_bytes(&bytes).unwrap();
            for j in 0..10 {
                let t = T0 - 2 * 3600 + j as u64 * 97 * 60 + i as u64;
                list.push((
                    t,
                    RideCode::sign_v1(&cred, (t - 5) as u32, j as u32 + 1, &dev)
                        .as_bytes()
                        .to_vec(),
                ));
            }
        }
        list.truncate(4096);
        let (records, _) = chained(1, 1, genesis_hash(1), &list);
        for (k, chunk) in records.chunks(1024).enumerate() {
            let prev = if k == 0 {
                genesis_hash(1)
            } else {
                records[k * 1024 - 1].hash().unwrap()
            };
            let body = Batch {
                reader_id: 1,
                prev_hash: prev,
                records: chunk.to_vec(),
            }
            .sign_v1(&reader_key)
            .unwrap();
            ingest::ingest_batch(&app.db, &body, 0).unwrap();
        }
        (dir, app)
    };
    let mut g = c.benchmark_group("settle_run");
    g.throughput(Throughput::Elements(4096));
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.bench_function("sled_4096_rides", |b| {
        b.iter_batched(
            setup,
            |(dir, app)| {
                let s = app.settle().unwrap();
                assert_eq!(s.rides, 4096);
                (dir, app)
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

/// Ingest's strict marks for one batch of 1,024 genuine rides: the
/// per-ride `[ℓ]R` check, and the group test on one core and on all.
fn r_check(c: &mut Criterion) {
    use fare_settlement::reverify::{code_needs_strict, codes_need_strict};
    let (_, pool) = rides(&seeded_key(7), 103, 10);
    let codes: Vec<&[u8]> = pool[..1024].iter().map(|(_, c)| c.as_slice()).collect();
    let mut g = c.benchmark_group("r_check");
    g.throughput(Throughput::Elements(codes.len() as u64));
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    g.bench_function("per_ride_1024", |b| {
        b.iter(|| codes.iter().filter(|c| code_needs_strict(c)).count())
    });
    g.bench_function("group_1024_one_core", |b| {
        b.iter(|| codes_need_strict(&codes, false))
    });
    g.bench_function("group_1024_all_cores", |b| {
        b.iter(|| codes_need_strict(&codes, true))
    });
    g.finish();
}

criterion_group!(benches, ingest_http, r_check, settle_core, settle_run);
criterion_main!(benches);
