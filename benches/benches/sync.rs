//! Reader → settlement upload (issue #9; numbers in validator/README.md).
//!
//! criterion groups (real settlement on 127.0.0.1, real readers, real
//! signatures, signed acknowledgements):
//! - `sync/one_reader_1000_rides`: one reader uploads 1,000 rides (one contact);
//! - `sync/100_readers_100_rides_each`: 100 readers upload 100 rides each,
//!   concurrently, to one server;
//!
//! then a report of the reader's decision latency (p50/p99, hdrhistogram)
//! while its sync agent uploads a backlog, against the same reader idle.
//! `SYNC_BENCH_SAMPLES` sets the report's decisions (default 2000).

// criterion_group! generates an undocumented function.
#![allow(missing_docs)]

use criterion::{criterion_group, Criterion};
use fare_credential::ManualClock;
use fare_e2e::sync_fixture::{self, Rider};
use fare_settlement::{App, Config};
use fare_validator::sync::{contact, HttpLink, InFlight};
use fare_validator::Reader;
use hdrhistogram::Histogram;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const NOW: u64 = 1_800_000_000;
const TOKEN: &str = "bench-token";

struct Server {
    app: Arc<App>,
    url: String,
    _tmp: tempfile::TempDir,
}

async fn server() -> Server {
    let tmp = tempfile::tempdir().unwrap();
    let config = Config {
        operator_token: TOKEN.into(),
        ..Config::default()
    };
    let app =
        Arc::new(App::open(tmp.path(), config, Arc::new(ManualClock::new(NOW)), Some(1)).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(fare_settlement::serve(
        listener,
        app.clone(),
        std::future::pending(),
    ));
    Server {
        app,
        url,
        _tmp: tmp,
    }
}

/// A registered reader holding `rides` unacknowledged rides.
async fn reader(
    s: &Server,
    dir: &std::path::Path,
    id: u32,
    rides: u32,
    rng: &mut ChaCha20Rng,
) -> Mutex<Reader> {
    let cfg = sync_fixture::reader_config(id);
    let mut reader =
        sync_fixture::provision_reader(&s.app, &s.url, TOKEN, dir, cfg, rng, NOW).await;
    let mut p = Rider::issue(&s.app, rng, NOW, 86_400);
    for _ in 0..rides {
        assert!(reader.decide_payload(&p.code(NOW), NOW).is_accept());
    }
    Mutex::new(reader)
}

async fn upload(r: &Mutex<Reader>, url: &str) {
    let link = HttpLink::new(url, Duration::from_secs(60)).unwrap();
    let rep = contact(r, &link, &mut InFlight::default(), &|| NOW)
        .await
        .unwrap_or_else(|f| panic!("{}", f.error));
    assert_eq!(rep.pending, 0);
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("sync");
    g.sample_size(10);
    g.bench_function("one_reader_1000_rides", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                let mut rng = ChaCha20Rng::seed_from_u64(1);
                for i in 0..iters {
                    let s = server().await;
                    let tmp = tempfile::tempdir().unwrap();
                    let r = reader(&s, tmp.path(), 1 + i as u32, 1000, &mut rng).await;
                    let t = Instant::now();
                    upload(&r, &s.url).await;
                    total += t.elapsed();
                }
                total
            })
        })
    });
    g.bench_function("100_readers_100_rides_each", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                let mut rng = ChaCha20Rng::seed_from_u64(2);
                for _ in 0..iters {
                    let s = server().await;
                    let tmp = tempfile::tempdir().unwrap();
                    let mut readers = Vec::new();
                    for id in 1..=100u32 {
                        let dir = tmp.path().join(id.to_string());
                        readers.push(Arc::new(reader(&s, &dir, id, 100, &mut rng).await));
                    }
                    let t = Instant::now();
                    let tasks: Vec<_> = readers
                        .iter()
                        .map(|r| {
                            let (r, url) = (r.clone(), s.url.clone());
                            tokio::spawn(async move { upload(&r, &url).await })
                        })
                        .collect();
                    for task in tasks {
                        task.await.unwrap();
                    }
                    total += t.elapsed();
                }
                total
            })
        })
    });
    g.finish();
}

fn p(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1e3
}

/// Decision latency with the agent uploading a backlog vs idle.
fn agent_report() {
    let n: u32 = fare_benches::env_setting("SYNC_BENCH_SAMPLES", 2000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let (s, shared, tmp) = rt.block_on(async {
        let s = server().await;
        let tmp = tempfile::tempdir().unwrap();
        let r = reader(&s, tmp.path(), 1, 20_000, &mut rng).await;
        (s, Arc::new(r), tmp)
    });
    let mut p_rider = Rider::issue(&s.app, &mut rng, NOW, 86_400);
    let measure = |shared: &Mutex<Reader>, p_rider: &mut Rider| {
        let mut h = Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3).unwrap();
        for _ in 0..n {
            let code = p_rider.code(NOW);
            let t = Instant::now();
            let d = shared.lock().unwrap().decide_payload(&code, NOW);
            h.record(t.elapsed().as_nanos() as u64).unwrap();
            assert!(d.is_accept());
        }
        h
    };
    // With the agent uploading the 20,000-ride backlog (batches of 1,000).
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let link = HttpLink::new(&s.url, Duration::from_secs(60)).unwrap();
    let agent = rt.spawn(fare_validator::agent::run(
        shared.clone(),
        link,
        Arc::new(|| NOW),
        None,
        stop_rx,
    ));
    let busy = measure(&shared, &mut p_rider);
    let _ = stop_tx.send(true);
    rt.block_on(agent).unwrap();
    let idle = measure(&shared, &mut p_rider);
    println!("\n== reader decision latency (payload -> durable accept), µs ==");
    println!("  {:<28} {:>8} {:>8} {:>8}", "", "p50", "p99", "max");
    for (name, h) in [("agent uploading a backlog", &busy), ("idle", &idle)] {
        println!(
            "  {:<28} {:>8.1} {:>8.1} {:>8.1}",
            name,
            p(h, 0.5),
            p(h, 0.99),
            h.max() as f64 / 1e3
        );
    }
    drop(tmp);
}

criterion_group!(benches, bench);

fn main() {
    benches();
    agent_report();
    Criterion::default().configure_from_args().final_summary();
}
