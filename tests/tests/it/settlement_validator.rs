//! The real reader (fare-validator) against the real back office
//! (fare-settlement) over HTTP on loopback: provisioning with a settlement
//! bundle, offline decisions, `sync` upload, settlement, and the deny list
//! flowing back to the reader.

use crate::svc::Svc;
use fare_credential::{Credential, RideCode};
use fare_validator::sync;
use serde_json::json;

const T0: u64 = fare_credential::testkit::DEMO_DAY_T0; // 2026-03-10 08:00 Asia/Shanghai

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_rides_sync_to_settlement_are_charged_and_the_deny_list_comes_back() {
    let svc = Svc::start(T0 - 3600, Some(5)).await;
    let rdir = tempfile::tempdir().unwrap();

    // Provision reader 1 with settlement, then the reader with settlement's bundle.
    let mut reader = svc.reader(rdir.path(), 1).await;

    // An adult account with a credit limit of 300 and a phone.
    let (s, v) = svc
        .op(
            "/v1/accounts",
            json!({"account_id": "alice", "credit_limit_minor": 300}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let device = fare_credential::testkit::seeded_key(2);
    let (s, v) = svc
        .op(
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
    let report = sync::sync(&mut reader, &svc.url, T0 + 4 * 3600)
        .await
        .unwrap();
    assert_eq!(report.acked_up_to, 2);

    // Settle: 400 owed, over the limit of 300: alice goes on the deny list.
    svc.clock.set(T0 + 5 * 3600);
    let (s, run) = svc.op("/v1/settlement/runs", json!({})).await;
    assert_eq!((s, run["rides"].as_u64()), (200, Some(2)), "{run}");
    let stmt = svc.get("/v1/accounts/alice").await;
    assert_eq!(stmt["balance_minor"], -400);
    assert_eq!(stmt["revoked"], true);

    // The reader's next sync brings the deny list; alice's next code is refused.
    let report = sync::sync(&mut reader, &svc.url, T0 + 5 * 3600)
        .await
        .unwrap();
    assert!(report.bundle_installed.is_some(), "{report:?}");
    let t = T0 + 6 * 3600;
    let code = RideCode::sign_v1(&cred, (t - 3) as u32, 3, &device);
    let d = reader.decide_payload(code.as_bytes(), t);
    assert_eq!(d.reason_code(), Some("revoked"), "{}", d.message());

    svc.stop().await;
}
