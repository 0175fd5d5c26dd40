//! Restarts in the middle of ingest and of settlement lose nothing and
//! charge nothing twice; the `fare-settlement` binary serves, settles and
//! reports with no external server.

use crate::common::*;
use fare_credential::testkit::copy_dir;
use fare_credential::ManualClock;
use fare_settlement::{ingest, App, Config};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

/// A deterministic day: `accounts` riders, `rides` rides each, over 4 readers.
fn build_readers(app: &App, accounts: usize, rides: usize) -> Vec<FakeReader> {
    let mut readers = vec![
        FakeReader::new(1, "city-bus", "1"),
        FakeReader::new(2, "city-bus", "7"),
        FakeReader::new(3, "metro", "L1"),
        FakeReader::new(4, "metro", "L2"),
    ];
    for r in &readers {
        provision_in_process(app, r);
    }
    let mut rng = ChaCha20Rng::seed_from_u64(9);
    let profiles = ["adult", "senior", "student", "adult"];
    let mut phones: Vec<Phone> = (0..accounts)
        .map(|a| {
            let limit = 500 + 100 * (a as i64 % 7);
            phone_in_process(app, &format!("acc-{a}"), profiles[a % 4], limit, &mut rng)
        })
        .collect();
    // Rides every 37 minutes from 06:00, spread over the readers.
    for i in 0..rides {
        for (a, phone) in phones.iter_mut().enumerate() {
            let t = at(6, 0) + (i as u64) * 37 * 60 + a as u64;
            let r = (a + i) % 4;
            let code = phone.code(t);
            readers[r].accept(code, t);
        }
    }
    readers
}

fn open(dir: &Path, chunk: usize) -> App {
    open_on(dir, None, chunk)
}

/// [`open`] on PostgreSQL when `url` is given.
fn open_on(dir: &Path, url: Option<&str>, chunk: usize) -> App {
    let cfg = Config {
        operator_token: TOKEN.into(),
        settle_chunk_rides: chunk,
        database_url: url.map(str::to_string),
        ..Config::default()
    };
    // A lock this process just released is waited for by SledStore::open.
    App::open(dir, cfg, Arc::new(ManualClock::new(T0 - 86_400)), Some(1)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_during_ingest_loses_nothing() {
    restart_during_ingest(Backend::Sled).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_during_ingest_loses_nothing_postgres() {
    restart_during_ingest(Backend::Postgres).await
}

async fn restart_during_ingest(backend: Backend) {
    let Some(db) = TestDb::new(backend) else {
        return;
    };
    let reference = db.sibling();
    let dir = &db.dir;
    let url = db.url.as_deref();
    let open = |d: &Path, chunk| {
        open_on(
            d,
            if d == dir.path() {
                url
            } else {
                reference.url.as_deref()
            },
            chunk,
        )
    };
    // Same seeds → same keys, accounts and rides in both dirs.
    let (readers, _) = {
        let app = open(dir.path(), 7);
        let readers = build_readers(&app, 6, 8);
        let ref_app = open(reference.path(), 1000);
        let ref_readers = build_readers(&ref_app, 6, 8);
        for r in &ref_readers {
            ingest::ingest_batch(&ref_app.db, &r.all(), 0).unwrap();
        }
        ref_app.settle().unwrap();
        (readers, ledger_and_rides(&ref_app))
    };
    let ref_app = open(reference.path(), 1000);
    let expected = ledger_and_rides(&ref_app);
    drop(ref_app);

    // First life: half of each reader's log, then a settlement.
    let srv = Server::start_with_clock(
        dir.path(),
        db.config(test_config()),
        ManualClock::new(T0 - 86_400),
    )
    .await;
    for r in &readers {
        let half = r.log.len() as u64 / 2;
        let (s, v) = srv.upload(r.batch(1, half)).await;
        assert_eq!(s, 200, "{v}");
    }
    srv.settle().await;
    srv.stop().await;

    // Second life: the readers did not hear the acks and resend everything,
    // overlapping what is held; then the rest.
    let srv = Server::start_with_clock(
        dir.path(),
        db.config(test_config()),
        ManualClock::new(T0 - 86_400),
    )
    .await;
    for r in &readers {
        let n = r.log.len() as u64;
        let (s, v) = srv.upload(r.batch(1, n / 2)).await;
        assert_eq!((s, v["result"].as_str()), (200, Some("exists")), "{v}");
        let (s, v) = srv.upload(r.batch(n / 2 - 1, n)).await;
        assert_eq!(
            (s, v["result"].as_str(), v["acked_seq"].as_u64()),
            (200, Some("created"), Some(n)),
            "{v}"
        );
    }
    srv.settle().await;
    srv.stop().await;

    let app = open(dir.path(), 7);
    assert_eq!(ledger_and_rides(&app), expected);
    assert_eq!(app.settle().unwrap().rides, 0);
    assert_eq!(ledger_and_rides(&app), expected);
}

/// Long by design: one scenario told in order, whose steps share the
/// service, readers and phones it builds; each assertion reads as the next
/// line of the story (split, the state would travel through many arguments).
#[test]
fn killing_the_settle_binary_mid_run_loses_nothing() {
    let bin = env!("CARGO_BIN_EXE_fare-settlement");
    let prepared = tempfile::tempdir().unwrap();
    let reference = tempfile::tempdir().unwrap();
    let total = {
        let app = open(prepared.path(), 20);
        let readers = build_readers(&app, 24, 20);
        for r in &readers {
            ingest::ingest_batch(&app.db, &r.all(), 0).unwrap();
        }
        readers.iter().map(|r| r.log.len()).sum::<usize>()
    };
    copy_dir(prepared.path(), reference.path());
    let expected = {
        let app = open(reference.path(), 20);
        app.settle().unwrap();
        ledger_and_rides(&app)
    };
    assert_eq!(expected.0["sum_minor"], 0);

    // Kill -9 at several points (wherever that lands — before, inside or
    // after the run — nothing may be lost or doubled), then settle again.
    let mut landed = Vec::new();
    for delay_ms in [40u64, 120, 250] {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(prepared.path(), dir.path());
        let cfg = dir.path().join("settlement.toml");
        std::fs::write(
            &cfg,
            format!("operator_token = \"{TOKEN}\"\nsettle_chunk_rides = 5\n"),
        )
        .unwrap();
        let data = dir.path().to_str().unwrap();
        let cfg_s = cfg.to_str().unwrap();
        let mut child = Command::new(bin)
            .args(["settle", "--data", data, "--config", cfg_s])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill();
        child.wait().unwrap();
        landed.push(open(dir.path(), 5).db.results().unwrap().len());

        let out = Command::new(bin)
            .args(["settle", "--data", data, "--config", cfg_s])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = Command::new(bin)
            .args(["settle", "--data", data, "--config", cfg_s])
            .output()
            .unwrap();
        let again: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(again["rides"], 0, "a second run settles nothing");
        let out = Command::new(bin)
            .args([
                "report", "--data", data, "--config", cfg_s, "--kind", "daily", "--format", "csv",
            ])
            .output()
            .unwrap();
        assert!(out.status.success());
        let csv = String::from_utf8(out.stdout).unwrap();
        assert!(
            csv.starts_with("service_day,operator,route,rides,revenue_minor,refused_rides\n"),
            "{csv}"
        );
        assert_eq!(
            ledger_and_rides(&open(dir.path(), 5)),
            expected,
            "killed after {delay_ms} ms"
        );
    }
    eprintln!("kills landed after {landed:?} of {total} rides settled");
}

#[test]
fn serve_runs_with_no_setup_and_shuts_down_gracefully() {
    let bin = env!("CARGO_BIN_EXE_fare-settlement");
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(bin)
        .args([
            "serve",
            "--data",
            dir.path().to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut addr = None;
    for _ in 0..200 {
        let mut line = String::new();
        if std::io::BufRead::read_line(&mut stderr, &mut line).unwrap() == 0 {
            break;
        }
        if let Some(a) = line.trim().strip_prefix("fare-settlement listening on ") {
            addr = Some(a.to_string());
            break;
        }
    }
    let addr = addr.expect("serve prints its address");
    // Keep draining stderr so the child never blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let health: Value = rt.block_on(async {
        reqwest::get(format!("http://{addr}/healthz"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    assert_eq!(health["status"], "ok");
    assert!(
        dir.path().join("keys/root.pub").exists(),
        "keys initialised on first start"
    );
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "graceful shutdown exits 0: {exit:?}");
}

/// Two settlement runs at once (two `POST /v1/settlement/runs`, or the CLI
/// beside the service): their pipelines interleave chunk by chunk, a chunk
/// one run prefetched while the other settled it is dropped, and the end
/// state equals a single run's.
#[test]
fn concurrent_runs_settle_each_ride_once() {
    let reference = tempfile::tempdir().unwrap();
    let ref_app = open(reference.path(), 1000);
    for r in &build_readers(&ref_app, 6, 8) {
        ingest::ingest_batch(&ref_app.db, &r.all(), 0).unwrap();
    }
    ref_app.settle().unwrap();

    let dir = tempfile::tempdir().unwrap();
    let app = open(dir.path(), 3);
    for r in &build_readers(&app, 6, 8) {
        ingest::ingest_batch(&app.db, &r.all(), 0).unwrap();
    }
    let (a, b) = std::thread::scope(|s| {
        let one = s.spawn(|| app.settle().unwrap());
        let two = s.spawn(|| app.settle().unwrap());
        (one.join().unwrap(), two.join().unwrap())
    });
    assert_eq!(a.rides + b.rides, 48, "{a:?} {b:?}");
    assert_eq!(ledger_and_rides(&app), ledger_and_rides(&ref_app));
    assert_eq!(app.db.results().unwrap().len(), 48);
    assert_eq!(app.settle().unwrap().rides, 0);
}

/// Holds the app's write lock on another thread until [`release`].
fn hold_write_lock(app: Arc<App>) -> (std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>) {
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let h = std::thread::spawn(move || {
        let _guard = app.write_lock.lock().unwrap();
        locked_tx.send(()).unwrap();
        let _ = release_rx.recv();
    });
    locked_rx.recv().unwrap();
    (release_tx, h)
}

fn release((tx, h): (std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>)) {
    tx.send(()).unwrap();
    h.join().unwrap();
}

/// A run that outlasts `run_wait_ms` is answered `202 Accepted` with a run
/// id and goes on in the background (a huge backlog must not hit the request
/// timeout); its status resource shows it running, then done with the same
/// summary a waited-for run returns; nothing settles twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_runs_answer_202_and_report_their_status() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        run_wait_ms: 0,
        ..test_config()
    };
    let srv = Server::start(dir.path(), config).await;
    for r in &build_readers(&srv.app, 6, 8) {
        ingest::ingest_batch(&srv.app.db, &r.all(), 0).unwrap();
    }
    // Holding the write lock keeps the run from finishing, whatever the
    // machine's speed: it must be answered 202 and show as running.
    let lock = hold_write_lock(srv.app.clone());
    let (s, v) = srv.post("/v1/settlement/runs", serde_json::json!({})).await;
    assert_eq!(s, 202, "{v}");
    assert_eq!(v["status"], "running");
    let run_id = v["run_id"].as_u64().unwrap();
    let (s, running) = srv.get(&format!("/v1/settlement/runs/{run_id}")).await;
    assert_eq!(
        (s, running["status"].as_str()),
        (200, Some("running")),
        "{running}"
    );
    assert!(running["summary"].is_null());
    release(lock);
    let url = v["status_url"].as_str().unwrap().to_string();
    assert_eq!(url, format!("/v1/settlement/runs/{run_id}"));
    let done = srv.wait_run(&url).await;
    assert_eq!(done["run_id"], run_id);
    assert_eq!(done["status"], "done", "{done}");
    assert_eq!(done["summary"]["rides"], 48, "{done}");
    assert!(done["finished_unix_s"].is_u64());
    assert_eq!(srv.app.db.results().unwrap().len(), 48);

    // A second run has nothing to do; held back, it too is answered 202.
    let lock = hold_write_lock(srv.app.clone());
    let (s, v) = srv.post("/v1/settlement/runs", serde_json::json!({})).await;
    assert_eq!(s, 202, "{v}");
    release(lock);
    let again = srv.wait_run(v["status_url"].as_str().unwrap()).await;
    assert_eq!(again["summary"]["rides"], 0, "{again}");
    assert_ne!(again["run_id"], done["run_id"]);

    let (s, v) = srv.get("/v1/settlement/runs/999").await;
    assert_eq!((s, v["error"].as_str()), (404, Some("unknown_run")));
    let (s, v) = srv.get("/v1/settlement/runs/x").await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_path")));
    let (s, _) = srv
        .http
        .get(format!("{}{url}", srv.url))
        .send()
        .await
        .map(|r| (r.status().as_u16(), ()))
        .unwrap();
    assert_eq!(s, 401, "the status resource needs the operator token");
    srv.stop().await;
}
