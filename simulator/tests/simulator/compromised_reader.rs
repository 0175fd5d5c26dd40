//! A compromised reader's own upload reaches settlement's ingest even when
//! the reader's clock is far from settlement's (demo seeds 11, 18, 22 and
//! 36 lost the attack's honest rides: the reader had a 2-hour clock jump
//! that no sync had corrected, its upload was signed at that time and
//! refused as `request_stale`, and the simulator never looked at the
//! answer).

use fare_credential::record::genesis_hash;
use fare_credential::{Batch, RideRecord, SigningKey};
use fare_simulator::adapters::{
    Backoffice, BackofficeOptions, BusReader, PlantedBugs, ReaderIdentity, ReaderStorage,
};
use fare_simulator::link::{post_as_reader, post_raw, Transport};
use fare_simulator::{RunOptions, Scenario};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// Settlement's clock in this test (2027-03-15 12:00 UTC).
const NOW: u64 = 1_805_112_000;
/// The demo's reader clock jump.
const JUMP_S: u64 = 7_200;

/// Settlement in `dir` with reader 16 registered, and that reader
/// provisioned with its first bundle.
fn settlement_and_reader(dir: &std::path::Path) -> (Backoffice, BusReader, SigningKey) {
    let tariff =
        fare_tariff::Tariff::from_spec(Scenario::preset("demo").unwrap().tariff_spec()).unwrap();
    let tariff_path = dir.join("tariff.json");
    std::fs::write(&tariff_path, tariff.to_json()).unwrap();
    let options = BackofficeOptions {
        seed: 1,
        bugs: PlantedBugs::default(),
        network: false,
        cache_mb: fare_settlement::Config::default().sled_cache_mb,
    };
    let s = Backoffice::open(&dir.join("settlement"), &tariff_path, NOW, options).unwrap();
    let key = SigningKey::generate(&mut ChaCha20Rng::seed_from_u64(16));
    let id = ReaderIdentity {
        reader_id: 16,
        operator: "city-bus".into(),
        vehicle: "bus-16".into(),
        route: "C1".into(),
    };
    s.provision_reader(&id, key.verifying_key().to_bytes())
        .unwrap();
    let (bundle, _, _) = s.bundle(None).unwrap();
    let storage = ReaderStorage {
        max_log_bytes: None,
        device_sync: false,
        batch_max_records: 64,
        cache_bytes: 1 << 20,
        segment_bytes: 64 << 10,
    };
    let root = s.root_public_key().unwrap();
    let reader = BusReader::provision(
        &dir.join("reader"),
        &id,
        storage,
        root,
        key.clone(),
        &bundle,
        NOW,
    )
    .unwrap();
    (s, reader, key)
}

/// A batch of one record, chained from reader 16's genesis, signed with
/// its key (a code under an issuer settlement never trusted: settlement
/// stores it and re-verification refuses it later).
fn one_record_batch(key: &SigningKey, reader_time: u64) -> Vec<u8> {
    let mut issuer = fare_credential::testkit::TestIssuer::new(7);
    let device = issuer.next_key();
    let cred = issuer.credential(
        &device,
        fare_credential::CredentialId([9; 16]),
        fare_credential::Profile::Adult,
        NOW,
        86_400,
    );
    let code = fare_credential::RideCode::sign_v1(&cred, NOW as u32, 1, &device)
        .as_bytes()
        .to_vec();
    Batch {
        reader_id: 16,
        prev_hash: genesis_hash(16),
        records: vec![RideRecord {
            reader_id: 16,
            reader_seq: 1,
            reader_time_unix_s: reader_time,
            vehicle: "bus-16".into(),
            route: "C1".into(),
            stop: None,
            code,
            prev_hash: genesis_hash(16),
        }],
    }
    .sign_v1(key)
    .unwrap()
}

#[test]
fn a_reader_two_hours_ahead_has_its_own_batch_stored_after_request_stale() {
    let tmp = tempfile::tempdir().unwrap();
    let (s, mut reader, key) = settlement_and_reader(tmp.path());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let rnow = NOW + JUMP_S;
    let body = one_record_batch(&key, rnow);
    // What the simulator did: the request signed at the reader's jumped
    // clock is refused before ingest, and nothing is stored.
    let auth = fare_credential::RequestAuth::sign_v1(
        &key,
        16,
        rnow,
        1,
        "POST",
        fare_validator::sync::BATCH_TARGET,
        &body,
    )
    .unwrap()
    .to_header();
    assert_eq!(
        post_raw(&rt, Transport::of(&s), body.clone(), rnow, auth).unwrap(),
        (401, Some("request_stale".into()))
    );
    assert_eq!(s.ride_count().unwrap(), 0);
    // As the reader sends its batches: re-signed at settlement's clock
    // after the `request_stale`, stored.
    assert_eq!(
        post_as_reader(&rt, &mut reader, Transport::of(&s), body, rnow).unwrap(),
        (200, None)
    );
    assert_eq!(s.ride_count().unwrap(), 1);
}

#[test]
fn demo_seed_11_compromised_reader_with_a_jumped_clock_mounts_its_attack() {
    let opts = RunOptions {
        seed: 11,
        ..RunOptions::default()
    };
    let o = fare_simulator::run(Scenario::preset("demo").unwrap(), "demo", &opts, None).unwrap();
    let r = &o.report;
    assert!(o.ok, "{:#?}", r.failures);
    assert_eq!(r.queue.lost, 0);
    assert!(r.queue.withheld_by_compromised_reader > 0);
    let a = &r.attacks["compromised_reader"];
    assert!(a.attempted > 0 && a.caught == a.attempted, "{a:?}");
}
