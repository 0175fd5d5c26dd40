//! Re-verification at settlement: forged or altered rides are never charged
//! and are reported against their reader; the same ride code on two readers
//! is a fraud event, charged once.

use crate::common::*;
use fare_credential::{Profile, RideCode};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use std::collections::HashMap;

/// Long by design: one scenario told in order, whose steps share the
/// service, readers and phones it builds; each assertion reads as the next
/// line of the story (split, the state would travel through many arguments).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_stale_and_duplicate_rides_are_never_charged_and_are_reported() {
    forged_stale_and_duplicate(Backend::Sled).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_stale_and_duplicate_rides_are_never_charged_and_are_reported_postgres() {
    forged_stale_and_duplicate(Backend::Postgres).await
}

async fn forged_stale_and_duplicate(backend: Backend) {
    let Some(db) = TestDb::new(backend) else {
        return;
    };
    let srv = Server::start_on(&db).await;
    let mut r1 = srv.provisioned_reader(1, "city-bus", "1").await;
    let mut r2 = srv.provisioned_reader(2, "city-bus", "7").await;
    let mut alice = srv.adult_rider("alice", 1).await;

    // 1/1 genuine, 200.
    r1.accept(alice.code(at(8, 0)), at(8, 0));
    // 2/1 the same code bytes seen again on reader 2 a minute later (a
    //     screenshot passed on): duplicate, never charged.
    let first = r1.log[0].code.clone();
    r2.accept(first, at(8, 1));
    // 1/2 a code whose device signature was altered (a compromised reader
    //     inventing a ride from a captured credential): forged.
    let mut altered = alice.code(at(9, 0));
    altered[150] ^= 1;
    r1.accept(altered, at(9, 0));
    // 1/3 a credential from a key this deployment never trusted: forged.
    let fake_issuer = fare_credential::testkit::seeded_key(77);
    let dev = fare_credential::testkit::seeded_key(78);
    let fake = fare_credential::testkit::issue(
        &fake_issuer,
        1,
        &dev,
        alice.cred.id(),
        Profile::Adult,
        at(0, 0),
        at(23, 0),
    );
    r1.accept(
        RideCode::sign_v1(&fake, at(10, 0) as u32 - 5, 1, &dev)
            .as_bytes()
            .to_vec(),
        at(10, 0),
    );
    // 2/2 a genuine code recorded 10 minutes after it was shown: the reader
    //     should have refused it (code expired at its own clock).
    let stale = alice.code(at(11, 0));
    r2.accept(stale, at(11, 10));
    // 2/3 a genuine code of a credential settlement never issued (signed by
    //     the real issuer key, e.g. offline with `fare-keys issue`): not charged.
    let offline = {
        let keys = srv.app.keys.lock().unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(79);
        keys.issue_credential(
            &fare_keys::IssueRequest {
                device_public_key: dev.verifying_key().to_bytes(),
                profile: Profile::Adult,
                valid_from_unix_s: at(0, 0),
                valid_for_s: 86_400,
            },
            at(0, 0),
            &mut rng,
        )
        .unwrap()
    };
    r2.accept(
        RideCode::sign_v1(&offline, at(12, 0) as u32 - 5, 1, &dev)
            .as_bytes()
            .to_vec(),
        at(12, 0),
    );
    // 2/4 genuine, 3 h later: 200.
    r2.accept(alice.code(at(15, 0)), at(15, 0));

    srv.upload_all(&[&r1, &r2]).await;
    srv.settle().await;
    let results: HashMap<(u64, u64), (String, Option<String>, i64)> = srv
        .rides_of_day("2026-03-10")
        .await
        .iter()
        .map(|r| {
            (
                (
                    r["ride"]["reader_id"].as_u64().unwrap(),
                    r["ride"]["reader_seq"].as_u64().unwrap(),
                ),
                (
                    r["result"].as_str().unwrap().to_string(),
                    r["reason"].as_str().map(String::from),
                    r["amount_minor"].as_i64().unwrap(),
                ),
            )
        })
        .collect();
    let want = |k: (u64, u64), result: &str, reason: Option<&str>, amount: i64| {
        let got = &results[&k];
        assert_eq!(
            (got.0.as_str(), got.1.as_deref(), got.2),
            (result, reason, amount),
            "ride {k:?}"
        );
    };
    want((1, 1), "charged", None, 200);
    want((2, 1), "duplicate", Some("duplicate_code"), 0);
    want((1, 2), "forged", Some("bad_device_signature"), 0);
    want((1, 3), "forged", Some("bad_issuer_signature"), 0);
    want((2, 2), "invalid_time", Some("code_expired"), 0);
    want((2, 3), "unknown_credential", Some("unknown_credential"), 0);
    want((2, 4), "charged", None, 200);
    assert_eq!(srv.balance("alice").await, -400);

    let (_, fraud) = srv.get("/v1/reports/fraud").await;
    let fraud = fraud.as_array().unwrap();
    assert_eq!(fraud.len(), 1);
    assert_eq!(fraud[0]["credential_id"], alice.cred.id().to_hex());
    assert_eq!(fraud[0]["charged_ride"]["reader_id"], 1);
    assert_eq!(fraud[0]["duplicate_ride"]["reader_id"], 2);
    assert_eq!(fraud[0]["account_id"], "alice");
    let (_, inc) = srv.get("/v1/reports/incidents").await;
    let mut inc: Vec<(u64, String, u64)> = inc
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["reader_id"].as_u64().unwrap(),
                i["kind"].as_str().unwrap().to_string(),
                i["seq"].as_u64().unwrap(),
            )
        })
        .collect();
    inc.sort();
    assert_eq!(
        inc,
        [
            (1, "disputed_code".to_string(), 1),
            (1, "forged_ride".to_string(), 2),
            (1, "forged_ride".to_string(), 3),
            (2, "disputed_code".to_string(), 1),
            (2, "invalid_time_ride".to_string(), 2)
        ]
    );

    // The duplicate policy holds in the other order too: a later upload of
    // the same code on a third reader is a duplicate of the settled ride.
    let mut r3 = srv.provisioned_reader(3, "metro", "L1").await;
    r3.accept(r1.log[0].code.clone(), at(8, 1));
    let (s, v) = srv.upload(r3.all()).await;
    assert_eq!(s, 200, "{v}");
    let run = srv.settle().await;
    assert_eq!(run["rides"], 1, "{run}");
    let (_, r3res) = srv.get("/v1/reports/rides").await;
    let r3res: Vec<_> = r3res
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["ride"]["reader_id"] == 3)
        .collect();
    assert_eq!(r3res[0]["result"], "duplicate", "{:?}", r3res);
    let (_, fraud) = srv.get("/v1/reports/fraud").await;
    assert_eq!(fraud.as_array().unwrap().len(), 2);
    assert_eq!(srv.balance("alice").await, -400);
    srv.stop().await;
}

/// A rider colluding with a compromised reader: codes signed with the rider's
/// own device key but a nonce point `R` of mixed order. The reader's
/// `verify_strict` refuses them; a batch verification alone would accept
/// each with probability 1/ord(T). Settlement checks each `R` (ingest in one
/// group test for a large upload, else the run for its whole chunk: this
/// upload of 42 is small) and verifies the bad ones strictly, so every one
/// is refused as forged, after a restart too.
///
/// Long by design: one scenario told in order, whose steps share the
/// service, readers and phones it builds; each assertion reads as the next
/// line of the story (split, the state would travel through many arguments).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_order_signatures_from_a_colluding_reader_are_always_refused() {
    mixed_order_signatures(Backend::Sled).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_order_signatures_from_a_colluding_reader_are_always_refused_postgres() {
    mixed_order_signatures(Backend::Postgres).await
}

async fn mixed_order_signatures(backend: Backend) {
    let Some(db) = TestDb::new(backend) else {
        return;
    };
    let srv = Server::start_on(&db).await;
    let mut r1 = srv.provisioned_reader(1, "city-bus", "1").await;
    let mut phone = srv.adult_rider("mallory", 5).await;
    let mut rng = ChaCha20Rng::seed_from_u64(80);
    let mut marked = Vec::new();
    // 40 such rides, every small-order component, in one batch with two
    // genuine rides (a batch holding them all would pass with probability
    // up to 1/2 without the marks).
    r1.accept(phone.code(at(7, 0)), at(7, 0));
    for n in 0..40u64 {
        let t = at(8, 0) + n * 60;
        let code = fare_credential::testkit::resign_with_mixed_order_r(
            &phone.code(t),
            &phone.device,
            1 + (n % 7) as usize,
            &mut rng,
        );
        marked.push(r1.accept(code, t));
    }
    r1.accept(phone.code(at(12, 0)), at(12, 0));
    let (s, v) = srv.upload(r1.all()).await;
    assert_eq!(s, 200, "{v}");
    // Too few for ingest's group test: every `R` is left for the run.
    let unchecked = fare_settlement::model::RMark::Unchecked;
    let all: Vec<u64> = (1..=42).collect();
    assert_eq!(srv.app.db.rides_marked(1, 1, 42, unchecked).unwrap(), all);

    // The marks are stored with the rides: a restart keeps them.
    srv.stop().await;
    let srv = Server::start_on(&db).await;
    srv.settle().await;
    let rides = srv.rides_of_day("2026-03-10").await;
    assert_eq!(rides.len(), 42);
    for r in &rides {
        let seq = r["ride"]["reader_seq"].as_u64().unwrap();
        if marked.contains(&seq) {
            assert_eq!(r["result"], "forged", "ride {seq}: {r}");
            assert_eq!(r["reason"], "bad_device_signature", "ride {seq}: {r}");
            assert_eq!(r["amount_minor"], 0, "ride {seq}: {r}");
        } else {
            assert_eq!(r["result"], "charged", "ride {seq}: {r}");
        }
    }
    assert_eq!(srv.balance("mallory").await, -400);
    let (_, inc) = srv.get("/v1/reports/incidents").await;
    let forged = inc
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["kind"] == "forged_ride")
        .count();
    assert_eq!(forged, 40);
    // Purging the ride history after the retention takes the marks too.
    srv.clock.set(at(21, 0) + 91 * 86_400);
    let (s, p) = srv
        .post("/v1/settlement/purge", serde_json::json!({}))
        .await;
    assert_eq!((s, p["rides"].as_u64()), (200, Some(42)), "{p}");
    assert!(srv
        .app
        .db
        .rides_marked(1, 1, 42, unchecked)
        .unwrap()
        .is_empty());
    srv.stop().await;
}
