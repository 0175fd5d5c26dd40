//! Several `fare-settlement serve` processes on one PostgreSQL database:
//! readers upload to alternating instances while settlement runs start on
//! all of them at once, and instances are killed (`kill -9`) at random
//! moments and restarted. Every ride must be settled exactly once, the
//! ledger balanced, and the result equal to one sled instance settling the
//! same batches. And what `/healthz` tells an operator while the database
//! is down.

use crate::common::serve_child::ServeChild;
use crate::common::*;
use fare_credential::{Credential, ManualClock, SigningKey};
use fare_settlement::store::{PostgresStore, SledStore, Space, Store, WriteSet};
use fare_settlement::{App, Config};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde_json::{json, Value};
use std::sync::Arc;

const INSTANCES: usize = 3;
const READERS: u32 = 4;
const PHONES: u64 = 6;
const BATCHES_PER_READER: u64 = 6;
const RIDES_PER_BATCH: u64 = 3;

async fn op(
    http: &reqwest::Client,
    url: &str,
    path: &str,
    body: Value,
) -> Result<(u16, Value), reqwest::Error> {
    let r = http
        .post(format!("{url}{path}"))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await?;
    let s = r.status().as_u16();
    Ok((s, r.json().await.unwrap_or(Value::Null)))
}

/// Writes `settlement.toml` for instances on `db` (operator token, shared
/// keys, the database URL, then `extra` lines): its path.
fn write_config(db: &TestDb, extra: &str) -> std::path::PathBuf {
    let root = db.path();
    let path = root.join("settlement.toml");
    let url = db.url.as_deref().expect("a PostgreSQL test database");
    let keys = root.join("keys");
    let body = format!(
        "operator_token = \"{TOKEN}\"\nkeys_dir = \"{}\"\ndatabase_url = \"{url}\"\n{extra}",
        keys.display()
    );
    std::fs::write(&path, body).unwrap();
    path
}

/// Copies the provisioning (accounts, credentials, readers) from the
/// PostgreSQL database into a fresh sled database for the reference run.
fn copy_setup(from: &dyn Store, to: &dyn Store) {
    for space in [
        Space::Accounts,
        Space::Credentials,
        Space::AccountCredentials,
        Space::Readers,
    ] {
        let mut w = WriteSet::default();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = from.scan(space, b"", after.as_deref(), 1000).unwrap();
            let Some(last) = page.last() else { break };
            after = Some(last.0.clone());
            for (k, v) in page {
                w.put(space, k, v);
            }
        }
        to.commit(w).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_on_one_database_settle_each_ride_once_across_kill_9() {
    let Some(db) = TestDb::new(Backend::Postgres) else {
        return;
    };
    let url = db.url.clone().unwrap();
    let root = db.path();
    let cfg_path = write_config(&db, "settle_chunk_rides = 4\n");
    let data = |i: usize| root.join(format!("instance-{i}"));
    // The first start makes the keys; the others share them.
    let mut inst: Vec<ServeChild> = vec![ServeChild::start(&data(0), &cfg_path)];
    for i in 1..INSTANCES {
        inst.push(ServeChild::start(&data(i), &cfg_path));
    }
    let http = reqwest::Client::new();
    let u0 = inst[0].url.clone();

    // Provisioning through instance 0; rides at the instances' real time.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut readers: Vec<FakeReader> = (1..=READERS)
        .map(|i| FakeReader::new(i, if i % 2 == 0 { "metro" } else { "city-bus" }, "9"))
        .collect();
    for r in &readers {
        let body = json!({"reader_id": r.id, "public_key": hex::encode(r.key.verifying_key().to_bytes()), "operator": r.operator, "vehicle": format!("bus-{}", r.id), "route": r.route});
        let (s, v) = op(&http, &u0, "/v1/readers", body).await.unwrap();
        assert_eq!(s, 201, "{v}");
    }
    let mut phones = Vec::new();
    for p in 0..PHONES {
        let acc = format!("acc-{p}");
        let (s, v) = op(
            &http,
            &u0,
            "/v1/accounts",
            json!({"account_id": acc, "profile": "adult", "credit_limit_minor": 100_000}),
        )
        .await
        .unwrap();
        assert_eq!(s, 201, "{v}");
        let device = SigningKey::generate(&mut ChaCha20Rng::seed_from_u64(p));
        let (s, v) = op(&http, &u0, &format!("/v1/accounts/{acc}/devices"), json!({"device_public_key": hex::encode(device.verifying_key().to_bytes()), "valid_for_s": 86_400})).await.unwrap();
        assert_eq!(s, 201, "{v}");
        let cred = Credential::from_bytes(&hex::decode(v["credential"].as_str().unwrap()).unwrap())
            .unwrap();
        phones.push(Phone {
            device,
            cred,
            seq: 0,
        });
    }
    let mut t = now;
    for b in 0..BATCHES_PER_READER * RIDES_PER_BATCH {
        for r in readers.iter_mut() {
            t += 7;
            let p = &mut phones[((b + r.id as u64) % PHONES) as usize];
            r.accept(p.code(t.min(now + 50)), t.min(now + 50));
        }
    }

    // Uploads to alternating instances, runs on all at once, kill -9 at
    // seeded random moments (the killed instance restarts at once).
    let mut rng = ChaCha20Rng::seed_from_u64(13);
    let mut kills = 0;
    let mut concurrent_rides = 0;
    for b in 0..BATCHES_PER_READER {
        for r in &readers {
            let (from, to) = (b * RIDES_PER_BATCH + 1, (b + 1) * RIDES_PER_BATCH);
            let mut target = (b as usize + r.id as usize) % INSTANCES;
            let body = r.batch(from, to);
            loop {
                // Signed per attempt, as a reader does (a new nonce each time).
                let unix_now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs();
                let resp = http
                    .post(format!("{}/v1/batches", inst[target].url))
                    .header("content-type", "application/octet-stream")
                    .header(
                        fare_credential::request::REQUEST_AUTH_HEADER,
                        r.batch_request_auth(&body, unix_now),
                    )
                    .body(body.clone())
                    .send()
                    .await;
                match resp {
                    Ok(x) if x.status().as_u16() == 200 => break,
                    // Refused by a dying instance or a lost claim: another one.
                    _ => target = (target + 1) % INSTANCES,
                }
            }
        }
        let runs: Vec<_> = inst
            .iter()
            .map(|i| {
                let (http, url) = (http.clone(), i.url.clone());
                tokio::spawn(async move { op(&http, &url, "/v1/settlement/runs", json!({})).await })
            })
            .collect();
        if rng.next_u32() % 2 == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(u64::from(
                rng.next_u32() % 40,
            )))
            .await;
            let victim = (rng.next_u32() as usize) % INSTANCES;
            inst[victim].child.kill().unwrap();
            inst[victim].child.wait().unwrap();
            kills += 1;
            inst[victim] = ServeChild::start(&data(victim), &cfg_path);
        }
        for r in runs {
            // A killed instance's run fails with it; the others go on.
            if let Ok((200, v)) = r.await.unwrap() {
                concurrent_rides += v["rides"].as_u64().unwrap_or(0);
            }
        }
    }
    assert!(kills > 0, "the seed kills at least once");
    assert!(concurrent_rides > 0, "runs settled rides while others ran");
    // Whatever was left: settled by one instance; then nothing remains.
    let (s, v) = op(&http, &inst[1].url, "/v1/settlement/runs", json!({}))
        .await
        .unwrap();
    assert_eq!(s, 200, "{v}");
    let (s, v) = op(&http, &inst[2].url, "/v1/settlement/runs", json!({}))
        .await
        .unwrap();
    assert_eq!((s, v["rides"].as_u64()), (200, Some(0)), "{v}");
    for mut i in inst {
        i.child.kill().unwrap();
        i.child.wait().unwrap();
    }

    let cfg = |url: Option<String>| Config {
        operator_token: TOKEN.into(),
        keys_dir: Some(root.join("keys")),
        database_url: url,
        ..Config::default()
    };
    let pg = App::open(
        &data(0),
        cfg(Some(url.clone())),
        Arc::new(ManualClock::new(now)),
        Some(1),
    )
    .unwrap();
    let got = ledger_and_rides(&pg);
    let total = u64::from(READERS) * BATCHES_PER_READER * RIDES_PER_BATCH;
    assert_eq!(
        got.1.len() as u64,
        total,
        "every ride has exactly one result"
    );
    let ledger = fare_settlement::reports::ledger(&pg.db).unwrap();
    assert!(ledger.balances.len() > 2, "rides were charged");
    assert_eq!(ledger.balances.values().sum::<i64>(), 0, "ledger balanced");

    // The reference: one sled instance, the same provisioning and batches.
    let sled_dir = root.join("reference");
    {
        let sled = SledStore::open(&sled_dir.join("db")).unwrap();
        let pgs = PostgresStore::open(&url, 4).unwrap();
        copy_setup(&pgs, &sled);
    }
    // sled lets go of its directory lock a moment after the drop.
    let reference = (0..100)
        .find_map(|_| {
            match App::open(
                &sled_dir,
                cfg(None),
                Arc::new(ManualClock::new(now)),
                Some(1),
            ) {
                Ok(a) => Some(a),
                Err(_) => {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                    None
                }
            }
        })
        .expect("reference opens");
    for r in &readers {
        fare_settlement::ingest::ingest_batch(&reference.db, &r.all(), now).unwrap();
    }
    reference.settle().unwrap();
    assert_eq!(got, ledger_and_rides(&reference));
}

/// An operator's health check while the database is down: `/healthz`
/// answers 500 `storage_error` naming PostgreSQL and `database_url` (not
/// the embedded store's data directory), and `ok` again once the database
/// is back, the instance not restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_names_the_database_while_it_is_down_and_recovers() {
    let Some(db) = TestDb::new(Backend::Postgres) else {
        return;
    };
    let root = db.path();
    let cfg_path = write_config(&db, "");
    let inst = ServeChild::start(&root.join("instance"), &cfg_path);
    let health = || async {
        let r = reqwest::get(format!("{}/healthz", inst.url)).await.unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    };
    let up = (200, json!({"status": "ok", "database": "postgres"}));
    assert_eq!(health().await, up);
    let cluster = db.cluster().expect("a PostgreSQL test database");
    cluster.stop();
    let (status, body) = health().await;
    assert_eq!(
        (status, &body["error"]),
        (500, &json!("storage_error")),
        "{body}"
    );
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("is PostgreSQL running") && message.contains("database_url"),
        "{message}"
    );
    assert!(!message.contains("data directory"), "{message}");
    cluster.start_again();
    assert_eq!(health().await, up);
}
