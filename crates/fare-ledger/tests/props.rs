//! Property tests: for any sequence of ratings, re-ratings, payments, replays, stale
//! settlement runs and reorderings, the ledger balances, every balance equals the sum of
//! its postings, and each ride's net charge equals its latest fare — exactly once.

use std::collections::{BTreeMap, HashMap};

use fare_ledger::{
    payment_posting, reconcile_ride, AccountRef, Ledger, PostResult, Posting, RideParties,
    RideState,
};
use proptest::prelude::*;

const ACCOUNTS: [&str; 3] = ["acc-1", "acc/2", "acc:3"];
const OPERATORS: [&str; 2] = ["bus", "metro"];
const RIDES: usize = 8;

#[derive(Clone, Debug)]
enum Op {
    /// Settlement rates ride `ride` at `fare` (first rating or a re-rating).
    Rate { ride: usize, fare: i64 },
    /// A rider pays; ids repeat so replays and conflicting retries happen.
    Pay {
        account: usize,
        payment: u8,
        amount: i64,
    },
    /// A stored posting is applied again (replayed upload, crash recovery).
    Replay { index: usize },
    /// A stale settlement run posts from an older state of the ride.
    Stale { ride: usize, back: usize, fare: i64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..RIDES, 0i64..1_000).prop_map(|(ride, fare)| Op::Rate { ride, fare }),
        1 => (0..ACCOUNTS.len(), 0u8..4, 1i64..2_000).prop_map(|(account, payment, amount)| Op::Pay { account, payment, amount }),
        2 => any::<usize>().prop_map(|index| Op::Replay { index }),
        1 => (0..RIDES, any::<usize>(), 0i64..1_000).prop_map(|(ride, back, fare)| Op::Stale { ride, back, fare }),
    ]
}

fn parties(i: usize) -> RideParties {
    RideParties {
        ride_key: format!("{}:{}", i % 3, i),
        account_id: ACCOUNTS[i % ACCOUNTS.len()].into(),
        operator: OPERATORS[i % OPERATORS.len()].into(),
        service_day: "2026-03-10".parse().unwrap(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn exactly_once_under_replay_and_reorder(ops in proptest::collection::vec(op(), 0..80), seed in any::<u64>()) {
        let mut ledger = Ledger::new();
        // What settlement persisted, in order.
        let mut store: Vec<Posting> = Vec::new();
        // Model: latest fare per ride, payments by (account, id).
        let mut latest: BTreeMap<usize, i64> = BTreeMap::new();
        let mut payments: HashMap<(usize, u8), i64> = HashMap::new();
        // Every state each ride has been in, for stale runs.
        let mut history: HashMap<usize, Vec<RideState>> = HashMap::new();

        for op in ops {
            match op {
                Op::Rate { ride, fare } => {
                    let p = parties(ride);
                    history.entry(ride).or_default().push(ledger.ride_state(&p.ride_key));
                    if let Some(posting) = ledger.reconcile(&p, fare).unwrap() {
                        prop_assert_eq!(ledger.apply(posting.clone()).unwrap(), PostResult::Created);
                        store.push(posting);
                    }
                    latest.insert(ride, fare);
                    // Re-running settlement at once finds nothing more to do.
                    prop_assert_eq!(ledger.reconcile(&p, fare).unwrap(), None);
                }
                Op::Pay { account, payment, amount } => {
                    let posting = payment_posting(ACCOUNTS[account], &format!("pay-{payment}"), amount).unwrap();
                    let got = ledger.apply(posting.clone()).unwrap();
                    let want = match payments.get(&(account, payment)) {
                        None => PostResult::Created,
                        Some(a) if *a == amount => PostResult::Exists,
                        Some(_) => PostResult::Conflict,
                    };
                    prop_assert_eq!(got, want);
                    if got == PostResult::Created {
                        payments.insert((account, payment), amount);
                        store.push(posting);
                    }
                }
                Op::Replay { index } => {
                    if !store.is_empty() {
                        let before = ledger.clone();
                        let p = store[index % store.len()].clone();
                        prop_assert_eq!(ledger.apply(p).unwrap(), PostResult::Exists);
                        prop_assert_eq!(&ledger, &before);
                    }
                }
                Op::Stale { ride, back, fare } => {
                    let p = parties(ride);
                    let current = ledger.ride_state(&p.ride_key);
                    let old: Vec<RideState> = history.get(&ride).map(|h| h.iter().copied().filter(|s| s.revisions < current.revisions).collect()).unwrap_or_default();
                    if !old.is_empty() {
                        let state = old[back % old.len()];
                        let before = ledger.clone();
                        if let Some(posting) = reconcile_ride(&p, state, fare).unwrap() {
                            let got = ledger.apply(posting).unwrap();
                            // Its id is taken: either the very same posting or a refusal.
                            prop_assert!(got == PostResult::Exists || got == PostResult::Conflict, "{:?}", got);
                            prop_assert_eq!(&ledger, &before);
                        }
                    }
                }
            }
        }

        // Each ride's net charge is its latest fare, once.
        for (ride, fare) in &latest {
            prop_assert_eq!(ledger.ride_state(&parties(*ride).ride_key).net_minor, *fare);
        }
        // Balances from the model.
        for (a, account) in ACCOUNTS.iter().enumerate() {
            let rides: i64 = latest.iter().filter(|(r, _)| *r % ACCOUNTS.len() == a).map(|(_, f)| f).sum();
            let paid: i64 = payments.iter().filter(|((acc, _), _)| *acc == a).map(|(_, amt)| amt).sum();
            prop_assert_eq!(ledger.passenger_balance_minor(account), paid - rides);
        }
        for (o, op) in OPERATORS.iter().enumerate() {
            let revenue: i64 = latest.iter().filter(|(r, _)| *r % OPERATORS.len() == o).map(|(_, f)| f).sum();
            prop_assert_eq!(ledger.balance_minor(&AccountRef::operator(*op)), revenue);
        }
        let paid: i64 = payments.values().sum();
        prop_assert_eq!(ledger.balance_minor(&AccountRef::PaymentsClearing), -paid);
        // Double entry: everything sums to zero, balances equal their postings.
        prop_assert_eq!(ledger.balances().map(|(_, b)| b).sum::<i64>(), 0);
        ledger.check_consistent().unwrap();

        // Rebuilding from the store in any order, with every posting twice, gives the
        // same ledger; and applying everything again changes nothing.
        let mut shuffled: Vec<Posting> = store.iter().chain(store.iter()).cloned().collect();
        let mut x = seed | 1;
        for i in (1..shuffled.len()).rev() {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            shuffled.swap(i, (x % (i as u64 + 1)) as usize);
        }
        prop_assert_eq!(&Ledger::from_postings(shuffled).unwrap(), &ledger);
        let before = ledger.clone();
        for p in store {
            prop_assert_eq!(ledger.apply(p).unwrap(), PostResult::Exists);
        }
        prop_assert_eq!(ledger, before);
    }
}
