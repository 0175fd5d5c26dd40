//! Property tests of the ledger invariants over the real pipeline (sled
//! store, real signatures, ingest, settlement):
//! * postings sum to zero; stored balances equal the fold of the postings
//!   (rebuilt with `fare_ledger::Ledger::from_postings`);
//! * each ride's postings net to its rated fare;
//! * exactly once: any replay / reorder / interleaving of uploads and
//!   settlement runs ends in the same balances and fares as one in-order pass.

use crate::common::*;
use fare_credential::ManualClock;
use fare_ledger::{AccountRef, Ledger};
use fare_settlement::{ingest, App, Config};
use proptest::prelude::*;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use std::collections::BTreeMap;
use std::sync::Arc;

const ACCOUNTS: usize = 4;
const PROFILES: [&str; ACCOUNTS] = ["adult", "student", "senior", "adult"];
const READERS: [(u32, &str, &str); 3] = [
    (1, "city-bus", "1"),
    (2, "city-bus", "7"),
    (3, "metro", "L1"),
];

fn open(dir: &std::path::Path) -> App {
    let cfg = Config {
        operator_token: TOKEN.into(),
        settle_chunk_rides: 4,
        ..Config::default()
    };
    App::open(dir, cfg, Arc::new(ManualClock::new(T0 - 86_400)), Some(3)).unwrap()
}

/// Accounts, devices and readers, identical in every app (same seeds).
fn setup(app: &App) -> Vec<Phone> {
    for (id, op, route) in READERS {
        provision_in_process(app, &FakeReader::new(id, op, route));
    }
    let mut rng = ChaCha20Rng::seed_from_u64(11);
    (0..ACCOUNTS)
        .map(|a| phone_in_process(app, &format!("p{a}"), PROFILES[a], 300, &mut rng))
        .collect()
}

#[derive(Debug, Clone)]
enum Step {
    Upload {
        reader: usize,
        from: usize,
        len: usize,
    },
    Settle,
}

fn outcome(app: &App) -> (BTreeMap<String, i64>, BTreeMap<String, i64>) {
    let balances: BTreeMap<String, i64> = app
        .db
        .balances()
        .unwrap()
        .into_iter()
        .filter(|(_, v)| *v != 0)
        .collect();
    let fares: BTreeMap<String, i64> = app
        .db
        .results()
        .unwrap()
        .into_iter()
        .map(|r| (r.ride.to_string(), r.amount_minor))
        .collect();
    (balances, fares)
}

fn check_invariants(app: &App) {
    let postings = app.db.postings().unwrap();
    let ledger = Ledger::from_postings(postings.clone()).unwrap();
    ledger.check_consistent().unwrap();
    let stored: BTreeMap<String, i64> = app.db.balances().unwrap().into_iter().collect();
    let mut sum = 0;
    for (acc, bal) in &stored {
        let r: AccountRef = acc.parse().unwrap();
        assert_eq!(
            ledger.balance_minor(&r),
            *bal,
            "balance of {acc} differs from its postings"
        );
        sum += bal;
    }
    assert_eq!(sum, 0, "postings do not sum to zero");
    for res in app.db.results().unwrap() {
        let key = format!("{}:{}", res.ride.reader_id, res.ride.reader_seq);
        assert_eq!(
            ledger.ride_state(&key).net_minor,
            res.amount_minor,
            "ride {key}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    #[test]
    fn exactly_once_under_any_replay_and_reorder(
        rides in prop::collection::vec((0..ACCOUNTS, 0..READERS.len(), 0u64..1100), 1..24),
        steps in prop::collection::vec(
            prop_oneof![
                4 => (0..READERS.len(), 0usize..24, 1usize..8).prop_map(|(reader, from, len)| Step::Upload { reader, from, len }),
                1 => Just(Step::Settle),
            ],
            0..20,
        ),
    ) {
        let ref_dir = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ref_app = open(ref_dir.path());
        let app = open(dir.path());
        let mut phones = setup(&ref_app);
        setup(&app);
        // The readers' logs: each ride at 05:00 + minutes, on one day.
        let mut readers: Vec<FakeReader> = READERS.iter().map(|(id, op, r)| FakeReader::new(*id, op, r)).collect();
        let mut sorted = rides.clone();
        sorted.sort_by_key(|r| r.2);
        for (a, r, minute) in sorted {
            let t = at(5, 0) + minute * 60 + a as u64;
            let code = phones[a].code(t);
            readers[r].accept(code, t);
        }
        // Reference: everything once, in order.
        for r in readers.iter().filter(|r| !r.log.is_empty()) {
            ingest::ingest_batch(&ref_app.db, &r.all(), 0).unwrap();
        }
        ref_app.settle().unwrap();
        check_invariants(&ref_app);
        let expected = outcome(&ref_app);

        // Any interleaving of (possibly replayed, overlapping, gapped) uploads
        // and settlement runs; refused uploads change nothing.
        for step in steps {
            match step {
                Step::Upload { reader, from, len } => {
                    let r = &readers[reader];
                    let n = r.log.len();
                    if n == 0 { continue; }
                    let from = from % n + 1;
                    let to = (from + len - 1).min(n);
                    let _ = ingest::ingest_batch(&app.db, &r.batch(from as u64, to as u64), 0);
                }
                Step::Settle => {
                    app.settle().unwrap();
                    check_invariants(&app);
                }
            }
        }
        for r in readers.iter().filter(|r| !r.log.is_empty()) {
            ingest::ingest_batch(&app.db, &r.all(), 0).unwrap();
        }
        app.settle().unwrap();
        check_invariants(&app);
        prop_assert_eq!(outcome(&app), expected);
        // And once more changes nothing.
        prop_assert_eq!(app.settle().unwrap().rides, 0);
        prop_assert_eq!(outcome(&app), outcome(&ref_app));
    }
}
