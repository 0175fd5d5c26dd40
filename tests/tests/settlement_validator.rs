//! The real reader (fare-validator) against the real back office
//! (fare-settlement) over HTTP on loopback: provisioning with a settlement
//! bundle, offline decisions, `sync` upload, settlement, and the deny list
//! flowing back to the reader.

use fare_credential::{Credential, ManualClock, RideCode};
use fare_settlement::{App, Config};
use fare_validator::{sync, Reader, ReaderConfig};
use serde_json::{json, Value};
use std::sync::Arc;

const T0: u64 = fare_credential::testkit::DEMO_DAY_T0; // 2026-03-10 08:00 Asia/Shanghai
const TOKEN: &str = "op-token";

async fn op(client: &reqwest::Client, url: &str, path: &str, body: Value) -> (u16, Value) {
    let r = client
        .post(format!("{url}{path}"))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_rides_sync_to_settlement_are_charged_and_the_deny_list_comes_back() {
    let sdir = tempfile::tempdir().unwrap();
    let rdir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0 - 3600);
    let cfg = Config {
        operator_token: TOKEN.into(),
        ..Config::default()
    };
    let app = Arc::new(App::open(sdir.path(), cfg, Arc::new(clock.clone()), Some(5)).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(fare_settlement::serve(listener, app.clone(), async {
        let _ = rx.await;
    }));
    let client = reqwest::Client::new();

    // Provision reader 1 with settlement, then the reader with settlement's bundle.
    let reader_key = fare_credential::testkit::seeded_key(1);
    let (s, v) = op(
        &client,
        &url,
        "/v1/readers",
        json!({"reader_id": 1, "public_key": hex::encode(reader_key.verifying_key().to_bytes()),
               "operator": "city-bus", "vehicle": "bus-1", "route": "1"}),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let bundle = client
        .get(format!("{url}/v1/readers/1/bundle"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let root = app.keys.lock().unwrap().root_public_key();
    let rcfg: ReaderConfig = serde_json::from_value(
        json!({"reader": {"reader_id": 1, "operator": "city-bus", "vehicle": "bus-1", "route": "1"}}),
    )
    .unwrap();
    let mut reader =
        Reader::provision(rdir.path(), rcfg, root, reader_key, &bundle, T0 - 3600).unwrap();

    // An adult account with a credit limit of 300 and a phone.
    let (s, v) = op(
        &client,
        &url,
        "/v1/accounts",
        json!({"account_id": "alice", "credit_limit_minor": 300}),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let device = fare_credential::testkit::seeded_key(2);
    let (s, v) = op(
        &client,
        &url,
        "/v1/accounts/alice/devices",
        json!({"device_public_key": hex::encode(device.verifying_key().to_bytes()), "valid_for_s": 86_400}),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let cred =
        Credential::from_bytes(&hex::decode(v["credential"].as_str().unwrap()).unwrap()).unwrap();

    // Two rides 3 hours apart (no transfer): 200 + 200 on route 1.
    for (seq, t) in [(1u32, T0), (2, T0 + 3 * 3600)] {
        let code = RideCode::sign_v1(&cred, (t - 3) as u32, seq, &device);
        let d = reader.decide_payload(code.as_bytes(), t);
        assert!(d.is_accept(), "{}", d.message());
    }
    let report = sync::sync(&mut reader, &url, T0 + 4 * 3600).await.unwrap();
    assert_eq!(report.acked_up_to, 2);

    // Settle: 400 owed, over the limit of 300: alice goes on the deny list.
    clock.set(T0 + 5 * 3600);
    let (s, run) = op(&client, &url, "/v1/settlement/runs", json!({})).await;
    assert_eq!((s, run["rides"].as_u64()), (200, Some(2)), "{run}");
    let stmt: Value = client
        .get(format!("{url}/v1/accounts/alice"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stmt["balance_minor"], -400);
    assert_eq!(stmt["revoked"], true);

    // The reader's next sync brings the deny list; alice's next code is refused.
    let report = sync::sync(&mut reader, &url, T0 + 5 * 3600).await.unwrap();
    assert!(report.bundle_installed.is_some(), "{report:?}");
    let t = T0 + 6 * 3600;
    let code = RideCode::sign_v1(&cred, (t - 3) as u32, 3, &device);
    let d = reader.decide_payload(code.as_bytes(), t);
    assert_eq!(d.reason_code(), Some("revoked"), "{}", d.message());

    let _ = tx.send(());
    server.await.unwrap().unwrap();
}
