//! A day of rides from several readers settles to hand-worked amounts, over
//! HTTP on loopback, with real keys, credentials, ride codes and batches.
//!
//! Demo tariff (fare-tariff `Tariff::demo()`): city-bus routes 1 and 7 cost
//! 200, metro L1 and L2 cost 300; seniors free, students 50 % off; one free
//! transfer within 90 min of a paid ride (not on the same route); daily cap
//! 600; service day from 04:30 Asia/Shanghai.

use crate::common::day::DayCast;
use crate::common::*;
use fare_credential::bundle::DenyUpdate;
use fare_credential::SigningKey;
use serde_json::{json, Value};
use std::collections::HashMap;

fn by_ride(rides: &[Value]) -> HashMap<(u64, u64), (i64, String)> {
    rides
        .iter()
        .map(|r| {
            (
                (
                    r["ride"]["reader_id"].as_u64().unwrap(),
                    r["ride"]["reader_seq"].as_u64().unwrap(),
                ),
                (
                    r["amount_minor"].as_i64().unwrap(),
                    r["result"].as_str().unwrap().to_string(),
                ),
            )
        })
        .collect()
}

fn expect(got: &HashMap<(u64, u64), (i64, String)>, ride: (u64, u64), amount: i64, result: &str) {
    let g = got
        .get(&ride)
        .unwrap_or_else(|| panic!("ride {ride:?} not settled"));
    assert_eq!(
        (g.0, g.1.as_str()),
        (amount, result),
        "ride {}/{}",
        ride.0,
        ride.1
    );
}

/// Carol asks for a credential (an hour's) for device key `device`: her
/// attempts to ride again, before and after she pays.
async fn carol_asks_credential(srv: &Server, device: &SigningKey) -> (u16, Value) {
    let key = hex::encode(device.verifying_key().to_bytes());
    let body = json!({"device_public_key": key, "valid_for_s": 3600});
    srv.post("/v1/accounts/carol/devices", body).await
}

/// Carol's payment `payment_id` of `amount_minor`.
async fn carol_pays(srv: &Server, payment_id: &str, amount_minor: i64) -> (u16, Value) {
    let body = json!({"payment_id": payment_id, "amount_minor": amount_minor});
    srv.post("/v1/accounts/carol/payments", body).await
}

/// Long by design: one scenario told in order, whose steps share the
/// service, readers and phones it builds; each assertion reads as the next
/// line of the story (split, the state would travel through many arguments).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_of_rides_settles_to_the_hand_worked_amounts() {
    a_day_of_rides(Backend::Sled).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_of_rides_settles_to_the_hand_worked_amounts_postgres() {
    a_day_of_rides(Backend::Postgres).await
}

async fn a_day_of_rides(backend: Backend) {
    let Some(db) = TestDb::new(backend) else {
        return;
    };
    let srv = Server::start_on(&db).await;
    let DayCast {
        readers: [mut r1, mut r2, mut r3, mut r4],
        mut alice,
        mut bob,
        mut carol,
    } = DayCast::on(&srv).await;

    // The day, in time order. Ride ids are (reader, seq).
    r2.accept(carol.code(at(7, 0)), at(7, 0)); //    2/1 carol 200 × 50 % = 100
    r1.accept(carol.code(at(7, 20)), at(7, 20)); //  1/1 carol transfer (20 min, other route): 0
    r1.accept(alice.code(at(8, 0)), at(8, 0)); //    1/2 alice 200, opens a window
    r3.accept(alice.code(at(8, 30)), at(8, 30)); //  3/1 alice transfer: 0
    r1.accept(bob.code(at(9, 0)), at(9, 0)); //      1/3 bob senior: free
    r3.accept(bob.code(at(10, 0)), at(10, 0)); //    3/2 bob senior: free
    r3.accept(alice.code(at(12, 0)), at(12, 0)); //  3/3 alice 300 (total 500)
    r1.accept(alice.code(at(12, 30)), at(12, 30)); // 1/4 alice transfer: 0
    r3.accept(carol.code(at(15, 0)), at(15, 0)); //  3/4 carol 300 × 50 % = 150: debt 250 > limit 100
    r2.accept(alice.code(at(18, 0)), at(18, 0)); //  2/2 alice 200 cut to 100 by the cap of 600
    r1.accept(alice.code(at(20, 0)), at(20, 0)); //  1/5 alice capped: 0
    srv.clock.set(at(21, 0));
    for r in [&r1, &r2, &r3] {
        let (s, v) = srv.upload(r.all()).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["result"], "created");
        assert_eq!(v["acked_seq"].as_u64().unwrap(), r.log.len() as u64);
    }
    let run = srv.settle().await;
    assert_eq!(run["rides"], 11, "{run}");

    let got = by_ride(&srv.rides_of_day("2026-03-10").await);
    expect(&got, (2, 1), 100, "charged");
    expect(&got, (1, 1), 0, "transfer");
    expect(&got, (1, 2), 200, "charged");
    expect(&got, (3, 1), 0, "transfer");
    expect(&got, (1, 3), 0, "free");
    expect(&got, (3, 2), 0, "free");
    expect(&got, (3, 3), 300, "charged");
    expect(&got, (1, 4), 0, "transfer");
    expect(&got, (3, 4), 150, "over_credit_limit");
    expect(&got, (2, 2), 100, "capped");
    expect(&got, (1, 5), 0, "capped");
    assert_eq!(srv.balance("alice").await, -600); // 200 + 300 + 100
    assert_eq!(srv.balance("bob").await, 0);
    assert_eq!(srv.balance("carol").await, -250); // 100 + 150

    // Revenue per operator and route: city-bus/1 = 200 (alice 8:00),
    // city-bus/7 = 100 + 100, metro/L1 = 300 + 150.
    let (s, daily) = srv.get("/v1/reports/daily?day=2026-03-10").await;
    assert_eq!(s, 200);
    let lines: Vec<(String, String, u64, i64)> = daily
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["operator"].as_str().unwrap().into(),
                l["route"].as_str().unwrap().into(),
                l["rides"].as_u64().unwrap(),
                l["revenue_minor"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        lines,
        vec![
            ("city-bus".into(), "1".into(), 5, 200),
            ("city-bus".into(), "7".into(), 2, 200),
            ("metro".into(), "L1".into(), 4, 450),
        ]
    );

    // Carol passed her credit limit: on the deny list, no new credential.
    let bundle = srv.operator_bundle(1, None).await.bundle;
    assert_eq!(bundle.deny, DenyUpdate::Snapshot(vec![carol.cred.id()]));
    assert_eq!(bundle.server_time_unix_s, at(21, 0));
    fare_tariff::Tariff::from_json_bytes(&bundle.tariff).unwrap();
    let (s, v) = carol_asks_credential(&srv, &carol.device).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (403, Some("over_credit_limit")),
        "{v}"
    );

    // A late batch: alice rode metro L2 at 06:50. Her day re-rates:
    //   4/1 06:50 300 (opens a window)    was —    → +300 charge
    //   1/2 08:00 transfer (70 min): 0    was 200  → −200 adjustment
    //   3/1 08:30 300 (window over): 600  was 0    → +300 charge
    //   3/3 12:00 capped 0                was 300  → −300 adjustment
    //             (it cost 300 before the cap, so it opens a transfer window)
    //   1/4 12:30 transfer 0              was 0 (transfer)
    //   2/2 18:00 capped 0                was 100  → −100 adjustment
    //   1/5 20:00 capped 0                was 0
    // Her total stays at the cap, 600; the money moves from city-bus to metro.
    r4.accept(alice.code(at(6, 50)), at(6, 50));
    let (s, v) = srv.upload(r4.all()).await;
    assert_eq!(s, 200, "{v}");
    srv.settle().await;
    let got = by_ride(&srv.rides_of_day("2026-03-10").await);
    expect(&got, (4, 1), 300, "charged");
    expect(&got, (1, 2), 0, "transfer");
    expect(&got, (3, 1), 300, "charged");
    expect(&got, (3, 3), 0, "capped");
    expect(&got, (1, 4), 0, "transfer");
    expect(&got, (2, 2), 0, "capped");
    expect(&got, (1, 5), 0, "capped");
    assert_eq!(srv.balance("alice").await, -600);
    // Each ride's postings (ids `ride/R:S/r1`, `r2`, ... in order; how many
    // depends on how the rides fell into settlement chunks) net to its fare.
    let (_, stmt) = srv.get("/v1/accounts/alice").await;
    let mut net: std::collections::BTreeMap<String, (i64, Vec<String>)> = Default::default();
    for p in stmt["postings"].as_array().unwrap() {
        let key = p["ride_key"].as_str().unwrap().to_string();
        let amount = p["amount_minor"].as_i64().unwrap();
        let signed = if p["debit"]["passenger"] == "alice" {
            amount
        } else {
            -amount
        };
        let e = net.entry(key).or_default();
        e.0 += signed;
        e.1.push(p["posting_id"].as_str().unwrap().to_string());
    }
    for (key, (_, ids)) in net.iter_mut() {
        ids.sort();
        let want: Vec<String> = (1..=ids.len())
            .map(|n| format!("ride/{key}/r{n}"))
            .collect();
        assert_eq!(*ids, want);
    }
    let nets: Vec<(&str, i64)> = net
        .iter()
        .map(|(k, v)| (k.as_str(), v.0))
        .filter(|(_, n)| *n != 0)
        .collect();
    assert_eq!(nets, [("3:1", 300), ("4:1", 300)]);
    let (_, ledger) = srv.get("/v1/reports/ledger").await;
    assert_eq!(ledger["sum_minor"], 0);
    assert_eq!(ledger["balances"]["operator:city-bus"], 100); // carol's 07:00 ride
    assert_eq!(ledger["balances"]["operator:metro"], 750); // alice 300 + 300, carol 150
    let (_, csv) = srv.get("/v1/reports/daily?day=2026-03-10&format=csv").await;
    assert_eq!(
        csv.as_str().unwrap(),
        "service_day,operator,route,rides,revenue_minor,refused_rides\n\
         2026-03-10,city-bus,1,5,0,0\n\
         2026-03-10,city-bus,7,2,100,0\n\
         2026-03-10,metro,L1,4,450,0\n\
         2026-03-10,metro,L2,1,300,0\n"
    );

    // Settling again changes nothing.
    let again = srv.settle().await;
    assert_eq!(again["rides"], 0);
    assert_eq!(again["postings"], 0);
    let (_, ledger2) = srv.get("/v1/reports/ledger").await;
    assert_eq!(ledger, ledger2);

    // Carol pays 250: off the deny list (a delta from the version she was
    // added in); the same payment again is a no-op; another amount under the
    // same id is refused.
    let v_before = bundle.bundle_version;
    let (s, v) = carol_pays(&srv, "pay-1", 250).await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = carol_pays(&srv, "pay-1", 250).await;
    assert_eq!((s, v["result"].as_str()), (200, Some("exists")));
    let (s, v) = carol_pays(&srv, "pay-1", 99).await;
    assert_eq!((s, v["error"].as_str()), (409, Some("payment_id_reused")));
    assert_eq!(srv.balance("carol").await, 0);
    let b2 = srv.operator_bundle(1, Some(v_before)).await.bundle;
    assert!(b2.bundle_version > v_before);
    assert_eq!(
        b2.deny,
        DenyUpdate::Delta {
            base_version: v_before,
            add: vec![],
            remove: vec![carol.cred.id()]
        }
    );
    // Paid up: a new credential, for a fresh device key (a key certified
    // once is never certified again: device_key_reused).
    let (s, v) = carol_asks_credential(&srv, &carol.device).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (409, Some("device_key_reused")),
        "{v}"
    );
    let fresh = SigningKey::from_bytes(&[0x5a; 32]);
    let (s, _) = carol_asks_credential(&srv, &fresh).await;
    assert_eq!(s, 201);
    let (_, ledger) = srv.get("/v1/reports/ledger").await;
    assert_eq!(ledger["sum_minor"], 0);
    assert_eq!(ledger["balances"]["payments_clearing"], -250);

    // Exposure report: every account bounded (the demo tariff has caps).
    let (s, exp) = srv.get("/v1/reports/exposure").await;
    assert_eq!(s, 200);
    let alice_row = exp
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["account_id"] == "alice")
        .unwrap();
    assert_eq!(alice_row["debt_minor"], 600);
    assert!(alice_row["exposure_bound_minor"].as_i64().unwrap() >= 10_000);

    // Privacy: within the retention nothing is purged; after it, the ride
    // history goes and the money stays.
    let (s, p) = srv.post("/v1/settlement/purge", json!({})).await;
    assert_eq!((s, p["rides"].as_u64()), (200, Some(0)), "{p}");
    srv.clock.set(at(21, 0) + 91 * 86_400);
    let (s, p) = srv.post("/v1/settlement/purge", json!({})).await;
    assert_eq!(
        (s, p["rides"].as_u64(), p["days"].as_u64()),
        (200, Some(12), Some(3)),
        "{p}"
    );
    assert!(srv.rides_of_day("2026-03-10").await.is_empty());
    assert_eq!(srv.app.db.ride_count().unwrap(), 0);
    let (_, after) = srv.get("/v1/reports/ledger").await;
    assert_eq!(after, ledger);
    srv.stop().await;
}
