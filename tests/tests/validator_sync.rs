//! Reader ↔ settlement over real HTTP on loopback: the reader uploads its
//! signed, hash-chained batches with `fare_validator::sync::sync` until
//! acknowledged, then fetches and installs the bundle settlement signs.

use fare_credential::{ManualClock, Profile, RideCode};
use fare_keys::IssueRequest;
use fare_settlement::{App, Config};
use fare_validator::{Reader, ReaderConfig, ReaderIdentityConfig};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use std::sync::Arc;

const NOW: u64 = 1_800_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_uploads_until_acknowledged_and_installs_a_newer_bundle() {
    let tmp = tempfile::tempdir().unwrap();
    let config = Config {
        operator_token: "op-token".into(),
        ..Config::default()
    };
    let clock = Arc::new(ManualClock::new(NOW));
    let app = Arc::new(
        App::open(
            &tmp.path().join("settlement"),
            config,
            clock.clone(),
            Some(3),
        )
        .unwrap(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(fare_settlement::serve(listener, app.clone(), async {
        let _ = stop_rx.await;
    }));

    let mut rng = ChaCha20Rng::seed_from_u64(9);
    let root_vk = app.keys.lock().unwrap().root_public_key();
    let bundle = app.bundle(None).unwrap();
    let reader_key = fare_credential::keys::generate_signing_key(&mut rng);
    let mut cfg = ReaderConfig::new(ReaderIdentityConfig {
        reader_id: 7,
        operator: "city-bus".into(),
        vehicle: "bus-7".into(),
        route: "7".into(),
        stop: None,
    });
    cfg.storage.batch_max_records = 4; // several batches for 10 rides
    let dir = tmp.path().join("reader");
    let mut reader = Reader::provision(&dir, cfg, root_vk, reader_key, &bundle, NOW).unwrap();
    let first_bundle = reader.bundle_version();

    // Register the reader with settlement (operator endpoint).
    let http = reqwest::Client::new();
    let resp = http
        .post(format!("{url}/v1/readers"))
        .bearer_auth("op-token")
        .json(&serde_json::json!({
            "reader_id": 7,
            "public_key": hex::encode(reader.public_key().as_bytes()),
            "operator": "city-bus", "vehicle": "bus-7", "route": "7",
        }))
        .send()
        .await
        .unwrap();
    assert!(
        resp.status().is_success(),
        "register: {}",
        resp.text().await.unwrap()
    );

    // Ten rides from one phone.
    let device = fare_credential::keys::generate_signing_key(&mut rng);
    let cred = app
        .keys
        .lock()
        .unwrap()
        .issue_credential(
            &IssueRequest {
                device_public_key: device.verifying_key().to_bytes(),
                profile: Profile::Adult,
                valid_from_unix_s: NOW,
                valid_for_s: 86_400,
            },
            NOW,
            &mut rng,
        )
        .unwrap();
    for seq in 1..=10 {
        let code = RideCode::sign_v1(&cred, NOW as u32, seq, &device);
        let d = reader.decide_payload(code.as_bytes(), NOW);
        assert!(d.is_accept(), "{}", d.message());
    }

    let report = fare_validator::sync::sync(&mut reader, &url, NOW)
        .await
        .unwrap();
    assert_eq!(report.acked_up_to, 10);
    assert_eq!(report.batches_sent, 3, "10 rides in batches of 4");
    assert_eq!(reader.state().acked_up_to, 10);
    assert!(reader.next_batch(100).unwrap().is_none());
    assert!(report.bundle_version >= first_bundle);

    // Sync again: nothing to send; acknowledgement persisted across a restart.
    drop(reader);
    let mut reader = Reader::open(&dir, NOW).unwrap();
    assert_eq!(reader.state().acked_up_to, 10);
    let again = fare_validator::sync::sync(&mut reader, &url, NOW)
        .await
        .unwrap();
    assert_eq!(again.batches_sent, 0);

    let _ = stop_tx.send(());
    server.await.unwrap().unwrap();
}
