//! A hostile registered reader cannot divert fares: the same genuine code
//! on two readers is a dispute (DESIGN §4 invariant 8). The passenger pays once; the
//! fare is held in `suspense` (neither operator keeps it, whoever uploaded
//! first or back-dated its copy), the incident names both readers, and the
//! operator's resolution releases it once to the awarded reader's operator.

use crate::common::*;
use serde_json::{json, Value};
use std::path::Path;

/// Starts a service in `dir` with `readers` (operator, route) provisioned as
/// readers 1, 2, … in that order, and alice (adult) on phone 1: the cast of
/// each dispute below.
async fn start_with<const N: usize>(
    dir: &Path,
    readers: [(&str, &str); N],
) -> (Server, [FakeReader; N], Phone) {
    let srv = Server::start(dir, test_config()).await;
    let readers: [FakeReader; N] = std::array::from_fn(|i| {
        let (operator, route) = readers[i];
        FakeReader::new(i as u32 + 1, operator, route)
    });
    for r in &readers {
        srv.provision(r).await;
    }
    let alice = srv.adult_rider("alice", 1).await;
    (srv, readers, alice)
}

/// Posts the operator's award of the dispute over charged ride `ride`
/// (`"reader/seq"`) to reader `award`.
async fn resolve(srv: &Server, ride: &str, award: u32) -> (u16, Value) {
    let path = format!("/v1/disputes/{ride}/resolve");
    srv.post(&path, json!({ "award_reader_id": award })).await
}

async fn balances(srv: &Server) -> Value {
    let (s, v) = srv.get("/v1/reports/ledger").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["sum_minor"], 0, "the ledger balances: {v}");
    v["balances"].clone()
}

fn bal(b: &Value, acc: &str) -> i64 {
    b[acc].as_i64().unwrap_or(0)
}

async fn disputes(srv: &Server) -> Vec<Value> {
    let (s, v) = srv.get("/v1/reports/disputes").await;
    assert_eq!(s, 200, "{v}");
    v.as_array().unwrap().clone()
}

async fn incident_readers(srv: &Server) -> Vec<(u64, u64)> {
    let (_, inc) = srv.get("/v1/reports/incidents").await;
    let mut v: Vec<(u64, u64)> = inc
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["kind"] == "disputed_code")
        .map(|i| (i["reader_id"].as_u64().unwrap(), i["seq"].as_u64().unwrap()))
        .collect();
    v.sort();
    v
}

/// The hostile reader (metro) uploads first and back-dates its copy inside
/// the skew tolerance, in a run of its own; the honest reader's ride comes
/// later. Neither operator keeps the fare; resolution pays it out once.
///
/// Long by design: one scenario told in order, whose steps share the
/// service, readers and phones it builds; each assertion reads as the next
/// line of the story (split, the state would travel through many arguments).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backdated_copy_uploaded_first_wins_no_fare() {
    let dir = tempfile::tempdir().unwrap();
    let (srv, [mut honest, mut hostile], mut alice) =
        start_with(dir.path(), [("city-bus", "1"), ("metro", "L1")]).await;

    let code = alice.code(at(8, 0));
    honest.accept(code.clone(), at(8, 0));
    // The copy, stamped 20 s earlier (inside the 30 s skew tolerance).
    hostile.accept(code, at(8, 0) - 20);

    let (s, v) = srv.upload(hostile.all()).await;
    assert_eq!(s, 200, "{v}");
    srv.settle().await;
    // Alone, the hostile reader's ride is charged and credited to metro.
    let b = balances(&srv).await;
    let fare = bal(&b, "operator:metro");
    assert!(fare > 0, "{b}");
    assert_eq!(bal(&b, "passenger:alice"), -fare, "{b}");

    let (s, v) = srv.upload(honest.all()).await;
    assert_eq!(s, 200, "{v}");
    srv.settle().await;
    // The honest sighting opens the dispute: the fare goes to suspense.
    let b = balances(&srv).await;
    assert_eq!(bal(&b, "passenger:alice"), -fare, "paid once: {b}");
    assert_eq!(bal(&b, "operator:metro"), 0, "{b}");
    assert_eq!(bal(&b, "operator:city-bus"), 0, "{b}");
    assert_eq!(bal(&b, "suspense"), fare, "{b}");
    let d = disputes(&srv).await;
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(
        d[0]["charged_ride"],
        json!({"reader_id": 2, "reader_seq": 1})
    );
    assert_eq!(d[0]["held_minor"], fare);
    assert_eq!(d[0]["held_from"], "metro");
    assert!(d[0]["resolution"].is_null());
    let readers: Vec<u64> = d[0]["sightings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s[0]["reader_id"].as_u64().unwrap())
        .collect();
    assert_eq!(readers, [2, 1]);
    assert_eq!(incident_readers(&srv).await, [(1, 1), (2, 1)]);

    // A settle run again changes nothing (held once).
    let run = srv.settle().await;
    assert_eq!(run["rides"], 0, "{run}");
    assert_eq!(bal(&balances(&srv).await, "suspense"), fare);

    // Resolution: refused for a reader not in the dispute, for no dispute.
    let (s, v) = resolve(&srv, "2/1", 9).await;
    assert_eq!((s, &v["error"]), (400, &json!("invalid_field")), "{v}");
    let (s, v) = resolve(&srv, "1/1", 1).await;
    assert_eq!((s, &v["error"]), (404, &json!("unknown_dispute")), "{v}");
    let (s, v) = srv.post("/v1/disputes/2/1/resolve", json!([1])).await;
    assert_eq!((s, &v["error"]), (400, &json!("json_not_object")), "{v}");
    // Awarded to the honest reader: city-bus is paid once.
    let (s, v) = resolve(&srv, "2/1", 1).await;
    assert_eq!((s, &v["result"]), (200, &json!("resolved")), "{v}");
    let (s, v) = resolve(&srv, "2/1", 1).await;
    assert_eq!((s, &v["result"]), (200, &json!("exists")), "{v}");
    let (s, v) = resolve(&srv, "2/1", 2).await;
    assert_eq!((s, &v["error"]), (409, &json!("dispute_resolved")), "{v}");
    let b = balances(&srv).await;
    assert_eq!(bal(&b, "operator:city-bus"), fare, "{b}");
    assert_eq!(bal(&b, "operator:metro"), 0, "{b}");
    assert_eq!(bal(&b, "suspense"), 0, "{b}");
    assert_eq!(bal(&b, "passenger:alice"), -fare, "{b}");
    let d = disputes(&srv).await;
    assert_eq!(d[0]["resolution"]["award_reader_id"], 1, "{d:?}");
    assert_eq!(d[0]["resolution"]["operator"], "city-bus", "{d:?}");
    srv.stop().await;
}

/// Three sightings settled in one run (a second reader of the charged
/// ride's own operator among them: the route, and the reader, are in doubt
/// too): one dispute with every sighting, one hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_readers_in_one_run_hold_the_fare_once() {
    let dir = tempfile::tempdir().unwrap();
    let readers = [("city-bus", "1"), ("metro", "L1"), ("city-bus", "7")];
    let (srv, [mut r1, mut r2, mut r3], mut alice) = start_with(dir.path(), readers).await;
    let code = alice.code(at(9, 0));
    r1.accept(code.clone(), at(9, 0));
    r2.accept(code.clone(), at(9, 0) + 5);
    r3.accept(code, at(9, 0) + 10);
    // An undisputed ride of the same day still credits its operator.
    r1.accept(alice.code(at(15, 0)), at(15, 0));
    srv.upload_all(&[&r2, &r3, &r1]).await;
    srv.settle().await;
    let b = balances(&srv).await;
    assert_eq!(bal(&b, "passenger:alice"), -400, "{b}");
    assert_eq!(bal(&b, "operator:city-bus"), 200, "{b}");
    assert_eq!(bal(&b, "operator:metro"), 0, "{b}");
    assert_eq!(bal(&b, "suspense"), 200, "{b}");
    let d = disputes(&srv).await;
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0]["charged_ride"]["reader_id"], 1);
    assert_eq!(d[0]["sightings"].as_array().unwrap().len(), 3, "{d:?}");
    assert_eq!(incident_readers(&srv).await, [(1, 1), (2, 1), (3, 1)]);
    let (_, fraud) = srv.get("/v1/reports/fraud").await;
    assert_eq!(fraud.as_array().unwrap().len(), 2, "{fraud}");
    let (s, v) = resolve(&srv, "1/1", 2).await;
    assert_eq!((s, &v["result"]), (200, &json!("resolved")), "{v}");
    let b = balances(&srv).await;
    assert_eq!(bal(&b, "operator:metro"), 200, "{b}");
    assert_eq!(bal(&b, "suspense"), 0, "{b}");
    assert_eq!(bal(&b, "passenger:alice"), -400, "{b}");
    srv.stop().await;
}

/// The charged ride of a dispute is re-rated later (a late upload shows an
/// earlier ride on another route, so it becomes a free transfer): the hold
/// follows the fare, so the charged ride's operator is never short by the
/// difference, before or after a resolution.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_re_rated_disputed_ride_moves_its_hold() {
    for resolve_first in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let readers = [("city-bus", "1"), ("metro", "L1"), ("tram", "7")];
        let (srv, [mut r1, mut r2, mut r3], mut alice) = start_with(dir.path(), readers).await;
        let early = alice.code(at(8, 30));
        r3.accept(early, at(8, 30));
        let code = alice.code(at(9, 0));
        r1.accept(code.clone(), at(9, 0));
        r2.accept(code, at(9, 0) + 5);
        srv.upload_all(&[&r1, &r2]).await;
        srv.settle().await;
        let b = balances(&srv).await;
        assert_eq!(bal(&b, "suspense"), 200, "held: {b}");
        assert_eq!(bal(&b, "operator:city-bus"), 0, "{b}");
        if resolve_first {
            let (s, v) = resolve(&srv, "1/1", 2).await;
            assert_eq!((s, &v["result"]), (200, &json!("resolved")), "{v}");
            let b = balances(&srv).await;
            assert_eq!(bal(&b, "operator:metro"), 200, "{b}");
        }
        // The tram ride half an hour earlier arrives late: the disputed
        // 9:00 ride becomes a free transfer.
        let (s, v) = srv.upload(r3.all()).await;
        assert_eq!(s, 200, "{v}");
        srv.settle().await;
        let b = balances(&srv).await;
        assert_eq!(bal(&b, "passenger:alice"), -200, "one paid ride: {b}");
        assert_eq!(bal(&b, "operator:tram"), 200, "{b}");
        assert_eq!(bal(&b, "operator:city-bus"), 0, "not short: {b}");
        assert_eq!(bal(&b, "operator:metro"), 0, "{b}");
        assert_eq!(bal(&b, "suspense"), 0, "{b}");
        let d = disputes(&srv).await;
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0]["held_minor"], 0, "{d:?}");
        // The daily report agrees with the ledger, operator by operator.
        let (s, daily) = srv.get("/v1/reports/daily").await;
        assert_eq!(s, 200, "{daily}");
        for (op, want) in [("tram", 200), ("city-bus", 0), ("metro", 0)] {
            let got: i64 = daily
                .as_array()
                .unwrap()
                .iter()
                .filter(|l| l["operator"] == op)
                .map(|l| l["revenue_minor"].as_i64().unwrap())
                .sum();
            assert_eq!(got, want, "{op} in {daily}");
        }
        // Settling again moves nothing.
        let run = srv.settle().await;
        assert_eq!(run["rides"], 0, "{run}");
        assert_eq!(bal(&balances(&srv).await, "suspense"), 0);
        srv.stop().await;
    }
}
