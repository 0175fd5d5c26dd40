//! Worked examples of the ledger: ids, replays, adjustments, payments, credit limits.

use fare_ledger::{
    debt_minor, over_credit_limit, payment_posting, payment_posting_id, reconcile_ride,
    ride_posting_id, AccountRef, Ledger, LedgerError, PostResult, Posting, PostingKind,
    RideParties, RideResult, RideState,
};
use fare_tariff::RideOutcome;

fn ride(key: &str, account: &str, operator: &str) -> RideParties {
    RideParties {
        ride_key: key.into(),
        account_id: account.into(),
        operator: operator.into(),
        service_day: "2026-03-10".parse().unwrap(),
    }
}

#[test]
fn fare_changes_post_differences_with_fresh_ids() {
    // A ride rated 200, re-rated to 0 (a late batch put it under the daily cap), then
    // back to 200 (the late ride turned out to be forged and was removed): three postings,
    // never one id reused for another content.
    let r = ride("7:1042", "acc-1", "city-bus");
    let mut l = Ledger::new();
    let steps = [
        (200, "ride/7:1042/r1", 200, PostingKind::RideCharge),
        (0, "ride/7:1042/r2", 200, PostingKind::RideAdjustment),
        (200, "ride/7:1042/r3", 200, PostingKind::RideAdjustment),
    ];
    for (fare, id, amount, kind) in steps {
        let p = l.post_ride_fare(&r, fare).unwrap().unwrap();
        assert_eq!(
            (p.posting_id.as_str(), p.amount_minor, p.kind),
            (id, amount, kind)
        );
        assert_eq!(l.ride_state("7:1042").net_minor, fare);
        assert_eq!(l.passenger_balance_minor("acc-1"), -fare);
        assert_eq!(l.balance_minor(&AccountRef::operator("city-bus")), fare);
        // Re-running settlement with the same fare finds nothing to post.
        assert_eq!(l.reconcile(&r, fare).unwrap(), None);
    }
    assert_eq!(
        l.ride_state("7:1042"),
        RideState {
            net_minor: 200,
            revisions: 3
        }
    );
    // The refund went operator -> passenger.
    let r2 = l.get("ride/7:1042/r2").unwrap();
    assert_eq!(
        (&r2.debit, &r2.credit),
        (
            &AccountRef::operator("city-bus"),
            &AccountRef::passenger("acc-1")
        )
    );
    l.check_consistent().unwrap();
}

#[test]
fn free_ride_posts_nothing_until_it_costs() {
    let r = ride("3:5", "acc-2", "metro");
    let mut l = Ledger::new();
    assert_eq!(l.post_ride_fare(&r, 0).unwrap(), None);
    assert!(l.is_empty());
    let p = l.post_ride_fare(&r, 150).unwrap().unwrap();
    assert_eq!(
        (p.posting_id.as_str(), p.kind),
        ("ride/3:5/r1", PostingKind::RideCharge)
    );
}

#[test]
fn replays_and_stale_runs() {
    let r = ride("1:1", "acc-1", "bus");
    let mut l = Ledger::new();
    let first = reconcile_ride(&r, RideState::default(), 200)
        .unwrap()
        .unwrap();
    assert_eq!(l.apply(first.clone()).unwrap(), PostResult::Created);
    let snapshot = l.clone();
    // Identical replay: no-op.
    assert_eq!(l.apply(first.clone()).unwrap(), PostResult::Exists);
    assert_eq!(l, snapshot);
    // A stale settlement run that saw the empty ledger and rated the ride 100: same id,
    // other content: refused, nothing moves.
    let stale = reconcile_ride(&r, RideState::default(), 100)
        .unwrap()
        .unwrap();
    assert_eq!(stale.posting_id, first.posting_id);
    assert_eq!(l.apply(stale).unwrap(), PostResult::Conflict);
    assert_eq!(l, snapshot);
    assert_eq!(PostResult::Conflict.code(), "conflict");
}

#[test]
fn payments_are_idempotent_per_account() {
    let mut l = Ledger::new();
    l.post_ride_fare(&ride("1:1", "acc-1", "bus"), 500).unwrap();
    let pay = payment_posting("acc-1", "app-7f3a", 300).unwrap();
    assert_eq!(pay.posting_id, "payment/acc-1/app-7f3a");
    assert_eq!(l.apply(pay.clone()).unwrap(), PostResult::Created);
    assert_eq!(l.apply(pay).unwrap(), PostResult::Exists);
    assert_eq!(
        l.apply(payment_posting("acc-1", "app-7f3a", 301).unwrap())
            .unwrap(),
        PostResult::Conflict
    );
    // Another account may use the same client payment id.
    assert_eq!(
        l.apply(payment_posting("acc-2", "app-7f3a", 300).unwrap())
            .unwrap(),
        PostResult::Created
    );
    assert_eq!(l.passenger_balance_minor("acc-1"), -200);
    assert_eq!(l.passenger_balance_minor("acc-2"), 300);
    assert_eq!(l.balance_minor(&AccountRef::PaymentsClearing), -600);
    l.check_consistent().unwrap();
    let total: i64 = l.balances().map(|(_, b)| b).sum();
    assert_eq!(total, 0);
}

#[test]
fn ids_are_unambiguous() {
    assert_eq!(ride_posting_id("7:1042", 1), "ride/7:1042/r1");
    assert_eq!(ride_posting_id("a/r1", 2), "ride/a%2Fr1/r2");
    assert_eq!(ride_posting_id("50%", 1), "ride/50%25/r1");
    // Without escaping these two would both be "payment/a/b/c".
    assert_ne!(
        payment_posting_id("a/b", "c"),
        payment_posting_id("a", "b/c")
    );
    assert_eq!(payment_posting_id("a/b", "c"), "payment/a%2Fb/c");
}

#[test]
fn invalid_postings_are_refused_and_change_nothing() {
    let good = reconcile_ride(&ride("1:1", "acc-1", "bus"), RideState::default(), 200)
        .unwrap()
        .unwrap();
    let mut l = Ledger::new();
    type Edit = Box<dyn Fn(&mut Posting)>;
    let edits: Vec<(&str, Edit)> = vec![
        ("amount_minor", Box::new(|p| p.amount_minor = 0)),
        ("amount_minor", Box::new(|p| p.amount_minor = -200)),
        ("amount_minor", Box::new(|p| p.amount_minor = i64::MAX)),
        (
            "different accounts",
            Box::new(|p| p.credit = p.debit.clone()),
        ),
        ("posting id", Box::new(|p| p.posting_id = String::new())),
        ("posting id", Box::new(|p| p.posting_id = "x\n".into())),
        ("ride_key", Box::new(|p| p.ride_key = None)),
        ("service_day", Box::new(|p| p.service_day = None)),
        (
            "between a passenger and an operator",
            Box::new(|p| p.credit = AccountRef::PaymentsClearing),
        ),
        (
            "debits the passenger",
            Box::new(|p| std::mem::swap(&mut p.debit, &mut p.credit)),
        ),
        (
            "account ids",
            Box::new(|p| p.debit = AccountRef::passenger("")),
        ),
        (
            "payment has no ride_key",
            Box::new(|p| p.kind = PostingKind::Payment),
        ),
    ];
    for (want, edit) in edits {
        let mut p = good.clone();
        edit(&mut p);
        let err = l.apply(p).unwrap_err();
        assert!(matches!(err, LedgerError::InvalidPosting { .. }), "{err}");
        assert!(err.to_string().contains(want), "{want}: {err}");
        assert!(l.is_empty());
    }
    assert!(payment_posting("acc-1", "p1", 0).is_err());
    assert!(payment_posting("", "p1", 10).is_err());
    assert!(payment_posting("acc-1", &"p".repeat(129), 10).is_err());
    let r = ride("1:1", "acc-1", "bus");
    assert!(matches!(
        reconcile_ride(&r, RideState::default(), -1),
        Err(LedgerError::InvalidFare { .. })
    ));
    assert!(matches!(
        reconcile_ride(&ride("", "a", "b"), RideState::default(), 1),
        Err(LedgerError::InvalidKey { .. })
    ));
}

#[test]
fn rebuild_in_any_order_and_detect_corruption() {
    let mut l = Ledger::new();
    for i in 0..12 {
        let r = ride(
            &format!("1:{i}"),
            &format!("acc-{}", i % 3),
            if i % 2 == 0 { "bus" } else { "metro" },
        );
        l.post_ride_fare(&r, 100 + i).unwrap();
        l.post_ride_fare(&r, 50).unwrap();
    }
    l.apply(payment_posting("acc-0", "p", 75).unwrap()).unwrap();
    let mut all: Vec<Posting> = l.postings().cloned().collect();
    all.reverse();
    let doubled = all.iter().chain(all.iter()).cloned();
    assert_eq!(Ledger::from_postings(doubled).unwrap(), l);
    let mut bad = all[3].clone();
    bad.amount_minor += 1;
    all.push(bad);
    assert!(matches!(
        Ledger::from_postings(all),
        Err(LedgerError::Conflict { .. })
    ));
}

#[test]
fn credit_limit_rule() {
    // (balance, limit, over?) — over when the debt is strictly above the limit.
    let cases = [
        (0, 0, false),
        (-1, 0, true),
        (100, 0, false),
        (-500, 500, false),
        (-501, 500, true),
        (-501, -10, true),
        (i64::MIN, i64::MAX, false),
        (i64::MIN, 0, true),
    ];
    for (balance, limit, over) in cases {
        assert_eq!(over_credit_limit(balance, limit), over, "{balance} {limit}");
    }
    assert_eq!(
        (debt_minor(-300), debt_minor(300), debt_minor(i64::MIN)),
        (300, 0, i64::MAX)
    );

    // A ride always posts, even past the limit; a payment clears it.
    let mut l = Ledger::new();
    let limit = 500;
    l.post_ride_fare(&ride("1:1", "acc-1", "bus"), 400).unwrap();
    assert!(!over_credit_limit(
        l.passenger_balance_minor("acc-1"),
        limit
    ));
    l.post_ride_fare(&ride("1:2", "acc-1", "bus"), 200).unwrap();
    assert!(over_credit_limit(l.passenger_balance_minor("acc-1"), limit)); // debt 600
    l.apply(payment_posting("acc-1", "p1", 100).unwrap())
        .unwrap();
    assert!(!over_credit_limit(
        l.passenger_balance_minor("acc-1"),
        limit
    )); // debt 500
}

#[test]
fn result_codes_are_stable() {
    let codes: Vec<&str> = RideResult::ALL.iter().map(|r| r.code()).collect();
    assert_eq!(
        codes,
        [
            "charged",
            "transfer",
            "capped",
            "free",
            "promotion",
            "over_credit_limit",
            "duplicate",
            "forged",
            "invalid_time",
            "unknown_credential"
        ]
    );
    for r in RideResult::ALL {
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            format!("\"{}\"", r.code())
        );
    }
    let mapped = [
        RideOutcome::Charged,
        RideOutcome::Transfer,
        RideOutcome::Capped,
        RideOutcome::Free,
        RideOutcome::Promotion,
    ]
    .map(RideResult::from);
    assert_eq!(
        mapped,
        [
            RideResult::Charged,
            RideResult::Transfer,
            RideResult::Capped,
            RideResult::Free,
            RideResult::Promotion
        ]
    );
    assert_eq!(
        [
            PostingKind::RideCharge,
            PostingKind::RideAdjustment,
            PostingKind::Payment
        ]
        .map(|k| k.code()),
        ["ride_charge", "ride_adjustment", "payment"]
    );
}

#[test]
fn accounts_and_postings_serialise() {
    for a in [
        AccountRef::passenger("acc:1"),
        AccountRef::operator("city-bus"),
        AccountRef::PaymentsClearing,
    ] {
        assert_eq!(a.to_string().parse::<AccountRef>().unwrap(), a);
    }
    assert_eq!(
        AccountRef::passenger("acc:1").to_string(),
        "passenger:acc:1"
    );
    for bad in ["", "passenger", "passenger:", "bank:x", "payments"] {
        assert!(
            matches!(
                bad.parse::<AccountRef>(),
                Err(LedgerError::InvalidAccount { .. })
            ),
            "{bad:?}"
        );
    }
    let p = reconcile_ride(&ride("7:1", "acc-1", "bus"), RideState::default(), 200)
        .unwrap()
        .unwrap();
    // JSON (HTTP statements) and the workspace's bincode codec (sled values).
    let json = serde_json::to_string(&p).unwrap();
    assert!(json.contains("\"service_day\":\"2026-03-10\""), "{json}");
    assert_eq!(serde_json::from_str::<Posting>(&json).unwrap(), p);
    let bytes = fare_credential::codec::encode("posting", &p).unwrap();
    assert_eq!(
        fare_credential::codec::decode::<Posting>("posting", &bytes).unwrap(),
        p
    );
}

/// A disputed ride re-rated from 200 to 0 and back: the hold follows the
/// fare (suspense gives back what the ride adjustment took from the
/// operator), and after a resolution so does the awarded operator's release;
/// through every step the operators end exactly where the fare says.
#[test]
fn dispute_holds_and_releases_follow_a_re_rated_fare() {
    use fare_ledger::{dispute_adjustment, dispute_hold, dispute_release, DisputeSide};
    let day = "2026-03-10".parse().unwrap();
    let r = ride("7:1042", "acc-1", "city-bus");
    let mut l = Ledger::new();
    let charge = reconcile_ride(&r, RideState::default(), 200)
        .unwrap()
        .unwrap();
    l.apply(charge).unwrap();
    l.apply(dispute_hold("7:1042", "city-bus", 200, day).unwrap())
        .unwrap();
    // Re-rated to 0 at ride revision 2: the ride adjustment refunds the
    // passenger from city-bus, the hold adjustment gives city-bus the 200
    // back from suspense.
    let state = RideState {
        net_minor: 200,
        revisions: 1,
    };
    l.apply(reconcile_ride(&r, state, 0).unwrap().unwrap())
        .unwrap();
    let back = dispute_adjustment(DisputeSide::Hold, "7:1042", "city-bus", 200, 0, 2, day)
        .unwrap()
        .unwrap();
    assert_eq!(back.posting_id, "hold/7:1042/r2");
    assert_eq!(back.kind, PostingKind::DisputeRelease);
    assert_eq!(
        (back.debit.clone(), back.credit.clone()),
        (AccountRef::Suspense, AccountRef::operator("city-bus"))
    );
    l.apply(back).unwrap();
    assert_eq!(l.balance_minor(&AccountRef::operator("city-bus")), 0);
    assert_eq!(l.balance_minor(&AccountRef::Suspense), 0);
    assert_eq!(l.balance_minor(&AccountRef::passenger("acc-1")), 0);
    // Equal amounts: nothing to post.
    assert_eq!(
        dispute_adjustment(DisputeSide::Hold, "7:1042", "city-bus", 0, 0, 3, day).unwrap(),
        None
    );
    // Resolved (awarded to metro) at 200, then re-rated down to 50: both
    // sides move, metro keeps 50, city-bus nothing, suspense empty.
    let mut l = Ledger::new();
    l.apply(
        reconcile_ride(&r, RideState::default(), 200)
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    l.apply(dispute_hold("7:1042", "city-bus", 200, day).unwrap())
        .unwrap();
    l.apply(dispute_release("7:1042", "metro", 200, day).unwrap())
        .unwrap();
    let state = RideState {
        net_minor: 200,
        revisions: 1,
    };
    l.apply(reconcile_ride(&r, state, 50).unwrap().unwrap())
        .unwrap();
    for (side, op) in [
        (DisputeSide::Hold, "city-bus"),
        (DisputeSide::Release, "metro"),
    ] {
        let p = dispute_adjustment(side, "7:1042", op, 200, 50, 2, day)
            .unwrap()
            .unwrap();
        assert_eq!(p.amount_minor, 150);
        l.apply(p).unwrap();
    }
    assert_eq!(l.balance_minor(&AccountRef::operator("metro")), 50);
    assert_eq!(l.balance_minor(&AccountRef::operator("city-bus")), 0);
    assert_eq!(l.balance_minor(&AccountRef::Suspense), 0);
    assert_eq!(l.balance_minor(&AccountRef::passenger("acc-1")), -50);
}
