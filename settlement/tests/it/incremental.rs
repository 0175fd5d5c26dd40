//! Repeated settlement runs of one day (the simulator runs settlement every
//! hour, operators several times a day): the same rides settled in several
//! runs as they arrive end exactly where one run over all of them ends —
//! the same ride results, balances, ride nets, day states, code sightings'
//! outcomes (fraud events, disputes) and deny list — on sled and on
//! PostgreSQL. A later run does work for what arrived since the last one
//! (the `settle_million --arrivals` example measures it); this test holds
//! that it still decides the same.

use crate::common::*;
use fare_credential::ManualClock;
use fare_ledger::{AccountRef, Ledger};
use fare_settlement::model::{DayState, RideResult};
use fare_settlement::{ingest, App, Config};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Accounts of the day: (id, profile, credit limit). `p5`'s small limit
/// puts it on the deny list during the day.
const ACCOUNTS: [(&str, &str, i64); 6] = [
    ("p0", "adult", 5_000),
    ("p1", "student", 5_000),
    ("p2", "senior", 5_000),
    ("p3", "adult", 5_000),
    ("p4", "child", 5_000),
    ("p5", "adult", 300),
];
const READERS: [(u32, &str, &str); 3] = [
    (1, "city-bus", "1"),
    (2, "city-bus", "7"),
    (3, "metro", "L1"),
];
/// Rides of the day (plus one code shown on two readers).
const RIDES: usize = 90;
/// Settlement runs the incremental side makes (one after each arrival).
const ARRIVALS: usize = 7;

fn open(db: &TestDb) -> App {
    let cfg = db.config(Config {
        operator_token: TOKEN.into(),
        // Several chunks per run, and chunks that split an account's day.
        settle_chunk_rides: 7,
        ..Config::default()
    });
    App::open(
        db.path(),
        cfg,
        Arc::new(ManualClock::new(T0 - 86_400)),
        Some(3),
    )
    .unwrap()
}

/// Accounts, phones and readers, identical in every app (same seeds).
fn setup(app: &App) -> Vec<Phone> {
    for (id, op, route) in READERS {
        provision_in_process(app, &FakeReader::new(id, op, route));
    }
    let mut rng = ChaCha20Rng::seed_from_u64(17);
    ACCOUNTS
        .iter()
        .map(|(id, profile, limit)| phone_in_process(app, id, profile, *limit, &mut rng))
        .collect()
}

/// The readers' logs: seeded rides over the day (transfers, daily caps,
/// a rider over the credit limit), each reader's log in its clock's order,
/// and one code accepted on two readers (a dispute).
fn day_logs(phones: &mut [Phone]) -> Vec<FakeReader> {
    let mut rng = ChaCha20Rng::seed_from_u64(23);
    let mut rides: Vec<(usize, usize, u64)> = (0..RIDES)
        .map(|_| {
            let account = rng.next_u32() as usize % ACCOUNTS.len();
            let reader = rng.next_u32() as usize % READERS.len();
            // 06:00 to 22:00, so rides cluster into transfers and caps.
            let minute = u64::from(rng.next_u32()) % (16 * 60);
            (account, reader, minute)
        })
        .collect();
    rides.sort_by_key(|r| (r.2, r.0, r.1));
    let mut readers: Vec<FakeReader> = READERS
        .iter()
        .map(|(id, op, route)| FakeReader::new(*id, op, route))
        .collect();
    let mut copy = None;
    for (i, (account, reader, minute)) in rides.into_iter().enumerate() {
        let t = at(6, 0) + minute * 60 + account as u64;
        let code = phones[account].code(t);
        if copy.is_none() && i >= RIDES / 2 && reader + 1 < READERS.len() {
            copy = Some((READERS.len() - 1, code.clone(), t + 30));
        }
        readers[reader].accept(code, t);
    }
    // A screenshot of that code shown on another bus 30 s later, uploaded
    // last by the last reader. (Which sighting is charged depends on which
    // was settled first: a ride settled in an earlier run or chunk keeps
    // its charge, by design, and a chunk takes readers in id order; so a
    // copy settled before its original would make the runs differ. The
    // dispute holds the fare in suspense either way.)
    let (other, code, t) = copy.expect("the day has rides");
    readers[other].accept(code, t);
    readers
}

/// Everything a settlement decides, read back from the store.
#[derive(Debug, PartialEq)]
struct Settled {
    results: Vec<RideResult>,
    balances: BTreeMap<String, i64>,
    ride_nets: BTreeMap<String, i64>,
    days: BTreeMap<String, DayState>,
    revoked: Vec<String>,
    deny_list: Vec<[u8; 16]>,
    fraud: Vec<String>,
    disputes: Vec<String>,
}

fn settled(app: &App) -> Settled {
    let postings = app.db.postings().unwrap();
    let ledger = Ledger::from_postings(postings).unwrap();
    ledger.check_consistent().unwrap();
    let balances: BTreeMap<String, i64> = app.db.balances().unwrap().into_iter().collect();
    for (acc, bal) in &balances {
        let r: AccountRef = acc.parse().unwrap();
        assert_eq!(ledger.balance_minor(&r), *bal, "stored balance of {acc}");
    }
    let results = app.db.results().unwrap();
    let ride_nets = results
        .iter()
        .map(|r| {
            let key = format!("{}:{}", r.ride.reader_id, r.ride.reader_seq);
            let net = ledger.ride_state(&key).net_minor;
            assert_eq!(net, r.amount_minor, "ride {key} nets to its fare");
            (key, net)
        })
        .collect();
    let mut days = BTreeMap::new();
    for (id, _, _) in ACCOUNTS {
        for (day, mut st) in app.db.days(id, "19700101", "99991231").unwrap() {
            // How many postings a ride took to reach its fare is history
            // (charged, then adjusted when a late earlier ride arrived), like
            // the postings themselves; what they sum to is compared.
            for r in &mut st.rides {
                r.revisions = 0;
            }
            days.insert(format!("{id}/{day}"), st);
        }
    }
    let deny = app.refresh_deny().unwrap();
    Settled {
        results,
        balances: balances.into_iter().filter(|(_, v)| *v != 0).collect(),
        ride_nets,
        days,
        revoked: app.db.revoked_accounts().unwrap(),
        deny_list: deny.credential_ids.iter().map(|c| c.0).collect(),
        fraud: app
            .db
            .fraud_events()
            .unwrap()
            .iter()
            .map(|f| format!("{f:?}"))
            .collect(),
        disputes: app
            .db
            .disputes()
            .unwrap()
            .iter()
            .map(|d| format!("{:?} {:?} {}", d.charged_ride, d.sightings, d.held_minor))
            .collect(),
    }
}

fn runs_as_rides_arrive_equal_one_run(backend: Backend) {
    let Some(ref_db) = TestDb::new(backend) else {
        return;
    };
    let db = ref_db.sibling();
    let (ref_app, app) = (open(&ref_db), open(&db));
    let mut phones = setup(&ref_app);
    setup(&app);
    let readers = day_logs(&mut phones);

    // One run over the whole day.
    for r in &readers {
        ingest::ingest_batch(&ref_app.db, &r.all(), 0).unwrap();
    }
    let one = ref_app.settle().unwrap();
    assert_eq!(one.rides as usize, RIDES + 1);
    let expected = settled(&ref_app);
    assert!(
        !expected.revoked.is_empty(),
        "the day puts p5 on the deny list"
    );
    assert!(!expected.disputes.is_empty(), "the day holds a dispute");

    // The same rides arriving in parts, a run after each.
    let mut settled_rides = 0;
    for part in 0..ARRIVALS {
        for r in &readers {
            let n = r.log.len();
            let (from, to) = (n * part / ARRIVALS + 1, n * (part + 1) / ARRIVALS);
            if from <= to {
                ingest::ingest_batch(&app.db, &r.batch(from as u64, to as u64), 0).unwrap();
            }
        }
        settled_rides += app.settle().unwrap().rides;
    }
    assert_eq!(settled_rides as usize, RIDES + 1, "each ride settled once");
    assert_same(&settled(&app), &expected);
    // And a run with nothing new changes nothing.
    assert_eq!(app.settle().unwrap().rides, 0);
    assert_same(&settled(&app), &expected);
}

/// `got == expected`, naming the first ride or field that differs.
fn assert_same(got: &Settled, expected: &Settled) {
    assert_eq!(got.results.len(), expected.results.len(), "ride results");
    for (g, e) in got.results.iter().zip(&expected.results) {
        assert_eq!(g, e, "result of ride {}", e.ride);
    }
    assert_eq!(got.balances, expected.balances, "balances");
    assert_eq!(got.ride_nets, expected.ride_nets, "ride nets");
    assert_eq!(got.days, expected.days, "day states");
    assert_eq!(got.revoked, expected.revoked, "revoked accounts");
    assert_eq!(got.deny_list, expected.deny_list, "deny list");
    assert_eq!(got.fraud, expected.fraud, "fraud events");
    assert_eq!(got.disputes, expected.disputes, "disputes");
    assert_eq!(got, expected);
}

#[test]
fn runs_as_rides_arrive_end_where_one_run_ends() {
    runs_as_rides_arrive_equal_one_run(Backend::Sled)
}

#[test]
fn runs_as_rides_arrive_end_where_one_run_ends_postgres() {
    runs_as_rides_arrive_equal_one_run(Backend::Postgres)
}
