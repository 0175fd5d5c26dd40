//! The `demo` preset end to end, determinism, and the oracle catching planted bugs.

use fare_simulator::report::WALL_CLOCK_KEYS;
use fare_simulator::{RunOptions, Scenario};

fn opts(seed: u64) -> RunOptions {
    RunOptions {
        seed,
        ..RunOptions::default()
    }
}

fn without_wall_clock(json: &str) -> serde_json::Value {
    let mut v: serde_json::Value = serde_json::from_str(json).expect("report.json is JSON");
    let m = v.as_object_mut().expect("an object");
    for k in WALL_CLOCK_KEYS {
        assert!(m.remove(k).is_some(), "report.json lacks {k}");
    }
    v
}

#[test]
fn demo_with_faults_and_adversaries_passes() {
    let out = tempfile::tempdir().unwrap();
    let o = fare_simulator::run(
        Scenario::preset("demo").unwrap(),
        "demo",
        &opts(1),
        Some(out.path()),
    )
    .unwrap();
    let r = &o.report;
    assert!(
        o.ok,
        "invariants failed: {:#?}\n{}",
        r.failures,
        fare_simulator::report::summary(r)
    );
    // Every attack was tried and every fault happened.
    for kind in [
        "screenshot_later",
        "replay_same_reader",
        "screenshot_shared",
        "forged",
        "tampered",
        "expired_credential",
        "deny_listed",
        "stolen_phone",
        "over_credit_limit",
        "compromised_reader",
        "forged_ack",
    ] {
        assert!(
            r.attacks.get(kind).is_some_and(|a| a.attempted > 0),
            "no {kind} attempt: {:?}",
            r.attacks
        );
    }
    assert!(
        r.faults.power_cuts > 0
            && r.faults.settlement_restarts > 0
            && !r.faults.restores.is_empty()
    );
    assert!(
        r.uploads.link.dropped
            + r.uploads.link.lost_replies
            + r.uploads.link.reordered
            + r.uploads.link.duplicated
            > 0
    );
    assert!(r.rides.via_camera_frames > 0 && r.rides.via_payloads > 0);
    // Wallets went online: enrolled with a passenger token, renewed, and
    // rode on the renewed credentials (charged to the same account: the
    // oracle's amounts above hold).
    let n = &r.renewals;
    assert!(
        n.enrolled > 0 && n.renewed > 0 && n.accepted_rides_renewed > 0,
        "{n:?}"
    );
    assert!(
        r.rides.rejected_by_reason.contains_key("storage_full"),
        "{:?}",
        r.rides.rejected_by_reason
    );
    assert!(r.queue.delivered > 0 && r.queue.lost == 0);
    // The report and the charts are there.
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("report.json")).unwrap()).unwrap();
    for k in [
        "seed",
        "invariants",
        "rides",
        "latency_us",
        "uploads",
        "attacks",
        "wall_s",
    ] {
        assert!(json.get(k).is_some(), "report.json lacks {k}");
    }
    for k in ["scanned", "accepted", "rejected_by_reason"] {
        assert!(json["rides"].get(k).is_some());
    }
    for k in ["p50", "p99", "max"] {
        assert!(json["latency_us"].get(k).is_some());
    }
    // Each input's latencies apart; the overall max is one of theirs.
    let by_input = &r.latency_us_by_input;
    assert_eq!(
        by_input.keys().map(String::as_str).collect::<Vec<_>>(),
        ["camera_frame", "payload"]
    );
    for (input, l) in by_input {
        assert!(l.p50 <= l.p99 && l.p99 <= l.max, "{input}: {l:?}");
    }
    assert_eq!(
        r.latency_us.max,
        by_input.values().map(|l| l.max).max().unwrap()
    );
    for c in [
        "decision_latency",
        "rides_per_hour",
        "rejects_by_reason",
        "deny_list_propagation",
        "upload_backlog",
    ] {
        for ext in ["png", "svg"] {
            let p = out.path().join(format!("{c}.{ext}"));
            assert!(
                std::fs::metadata(&p)
                    .map(|m| m.len() > 1000)
                    .unwrap_or(false),
                "{} missing or empty",
                p.display()
            );
        }
    }
}

/// `--network`: the readers' real sync code over reqwest to
/// `fare-settlement serve` on loopback, with the same injected faults; the
/// day comes out exactly as in process. Over HTTP the contacts that fall
/// on the same second run one at a time, in process on every core: this
/// also checks that running them together changes nothing.
#[test]
fn demo_over_loopback_http_passes_and_matches_in_process() {
    let mut net = opts(1);
    net.network = true;
    let n = fare_simulator::run(Scenario::preset("demo").unwrap(), "demo", &net, None).unwrap();
    assert!(
        n.ok,
        "invariants failed over HTTP: {:#?}\n{}",
        n.report.failures,
        fare_simulator::report::summary(&n.report)
    );
    assert_eq!(n.report.transport, "loopback_http");
    assert!(
        n.report.replay.ends_with("--network"),
        "{}",
        n.report.replay
    );
    let l = &n.report.uploads.link;
    assert!(l.dropped > 0 && l.lost_replies > 0 && l.reordered > 0 && l.duplicated > 0);
    let p = fare_simulator::run(Scenario::preset("demo").unwrap(), "demo", &opts(1), None).unwrap();
    let (mut a, mut b) = (without_wall_clock(&n.json), without_wall_clock(&p.json));
    for v in [&mut a, &mut b] {
        let m = v.as_object_mut().unwrap();
        m.remove("replay");
        m.remove("transport");
    }
    assert_eq!(a, b, "the same day over HTTP differs from in process");
}

/// The same seed gives the same `report.json` (apart from the wall-clock
/// keys) and the same charts, byte for byte (apart from the decision
/// latency histogram, which is wall-clock time).
#[test]
fn same_seed_same_report() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let [a, b] = [&dirs[0], &dirs[1]].map(|d| {
        fare_simulator::run(
            Scenario::preset("demo").unwrap(),
            "demo",
            &opts(7),
            Some(d.path()),
        )
        .unwrap()
    });
    assert_eq!(without_wall_clock(&a.json), without_wall_clock(&b.json));
    assert!(a.ok, "{:#?}", a.report.failures);
    for chart in [
        "rides_per_hour",
        "rejects_by_reason",
        "deny_list_propagation",
        "upload_backlog",
    ] {
        for ext in ["svg", "png"] {
            let file = format!("{chart}.{ext}");
            let [x, y] = [&dirs[0], &dirs[1]].map(|d| std::fs::read(d.path().join(&file)).unwrap());
            assert!(x == y, "{file} differs between two runs of seed 7");
        }
    }
}

#[test]
fn oracle_catches_settlement_charging_a_ride_twice() {
    let mut s = Scenario::preset("demo").unwrap();
    s.execution.planted_double_charge = true;
    let o = fare_simulator::run(s, "demo", &opts(3), None).unwrap();
    assert!(!o.ok, "the planted double charge went unnoticed");
    assert!(
        !o.report.invariants["charges_match_oracle"],
        "{:#?}",
        o.report.failures
    );
    // The planted posting is balanced: only the oracle's amounts show it.
    assert!(o.report.invariants["ledger_balances"]);
}

#[test]
fn oracle_catches_a_reader_dropping_a_flushed_ride() {
    let mut s = Scenario::preset("demo").unwrap();
    s.attacks.undeclared_reader_drop = true;
    let o = fare_simulator::run(s, "demo", &opts(5), None).unwrap();
    assert!(!o.ok, "the dropped ride went unnoticed");
    assert!(
        !o.report.invariants["exactly_once_delivery"],
        "{:#?}",
        o.report.failures
    );
    assert!(o.report.queue.lost > 0);
}

/// `--keep-data DIR`: the run's settlement data stay, with a configuration
/// that opens them in `fare-settlement serve` (the dashboard after the main
/// job); the day's report there is the run's revenue. A second run into the
/// same directory is refused rather than mixed in.
#[test]
fn kept_data_open_in_settlement_with_the_runs_revenue() {
    let keep = tempfile::tempdir().unwrap();
    let dir = keep.path().join("demo-data");
    let scenario = Scenario::preset("demo").unwrap();
    let day = scenario.day.clone();
    let o = fare_simulator::run(
        scenario,
        "demo",
        &RunOptions {
            keep_data: Some(dir.clone()),
            ..opts(3)
        },
        None,
    )
    .unwrap();
    assert!(o.ok, "{:#?}", o.report.failures);
    let note = fare_simulator::sim::keep_note(&dir, &day).unwrap();
    assert!(
        note.contains("--data") && note.contains(&format!("/ui?day={day}")),
        "{note}"
    );
    let config =
        fare_settlement::Config::load(&dir.join(fare_simulator::sim::KEPT_CONFIG_FILE)).unwrap();
    let app = fare_settlement::App::open(
        &dir.join("settlement"),
        config,
        std::sync::Arc::new(fare_credential::SystemClock),
        None,
    )
    .unwrap();
    assert!(
        app.operator_token.len() >= 16,
        "a token made at first start"
    );
    assert!(dir.join("settlement/operator-token").is_file());
    let lines = fare_settlement::reports::daily(&app.db, Some(&day)).unwrap();
    let mut revenue = std::collections::BTreeMap::<String, i64>::new();
    for l in &lines {
        *revenue.entry(l.operator.clone()).or_default() += l.revenue_minor;
    }
    assert!(lines.iter().map(|l| l.rides).sum::<u64>() > 0);
    revenue.retain(|_, v| *v != 0);
    let mut expected = o.report.revenue_by_operator.clone();
    expected.retain(|_, v| *v != 0);
    assert_eq!(
        revenue, expected,
        "the kept day's report is the run's revenue"
    );
    drop(app);
    let again = fare_simulator::run(
        Scenario::preset("demo").unwrap(),
        "demo",
        &RunOptions {
            keep_data: Some(dir.clone()),
            ..opts(3)
        },
        None,
    );
    let Err(e) = again else {
        panic!("a non-empty --keep-data directory must be refused");
    };
    assert!(e.contains("not empty"), "{e}");
}

/// Readers closed for idleness (at most two logs open at once) and reopened
/// through the validator's `Reader::open` on their next scan or contact keep
/// every ride: every invariant holds and the day comes out exactly as with
/// every reader open all day.
#[test]
fn readers_closed_for_idleness_and_reopened_keep_every_ride() {
    let all_open =
        fare_simulator::run(Scenario::preset("demo").unwrap(), "demo", &opts(7), None).unwrap();
    let mut s = Scenario::preset("demo").unwrap();
    s.execution.max_open_readers = 2;
    let lru = fare_simulator::run(s, "demo", &opts(7), None).unwrap();
    assert!(lru.ok, "{:#?}", lru.report.failures);
    assert!(all_open.ok, "{:#?}", all_open.report.failures);
    let o = &lru.report.open_readers;
    assert_eq!(o.max_open, 2);
    assert!(o.open_max <= 2, "{o:?}");
    assert!(o.idle_closes > 0 && o.idle_reopens > 0, "{o:?}");
    assert_eq!(all_open.report.open_readers.idle_closes, 0);
    assert_eq!(lru.report.queue.lost, 0);
    assert!(lru.report.invariants["accepted_rides_durable"]);
    assert!(lru.report.invariants["exactly_once_delivery"]);
    let strip = |json: &str| {
        let mut v = without_wall_clock(json);
        v.as_object_mut().unwrap().remove("open_readers");
        v
    };
    assert_eq!(strip(&lru.json), strip(&all_open.json));
}
