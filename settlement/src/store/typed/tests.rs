//! Round trips across block boundaries, exactly-once refusals, stale blocks.

use super::blocks::*;
use super::keys::*;
use super::*;
use crate::store::SledStore;

fn result(reader_id: u32, reader_seq: u64, amount_minor: i64) -> RideResult {
    RideResult {
        ride: RideId {
            reader_id,
            reader_seq,
        },
        outcome: Outcome::Charged,
        result: Outcome::Charged,
        reason: None,
        account_id: Some("acc".into()),
        credential_id: None,
        device_seq: None,
        service_day: "2026-03-10".into(),
        operator: "op".into(),
        route: "1".into(),
        amount_minor,
        reader_time_unix_s: reader_seq,
    }
}

fn open() -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(&dir.path().join("db")).unwrap();
    (dir, Db::new(Arc::new(store)))
}

/// Results stored in blocks read back per ride and in ride order across
/// block and reader boundaries; changes and removals keep the other rides.
#[test]
fn result_blocks_round_trip_across_block_boundaries() {
    let (_dir, db) = open();
    let seqs = [
        1,
        2,
        RESULT_BLOCK_RIDES - 1,
        RESULT_BLOCK_RIDES,
        3 * RESULT_BLOCK_RIDES + 7,
    ];
    let mut blocks = ResultBlocks::default();
    // Inserted out of order, two readers.
    for &s in seqs.iter().rev() {
        blocks.upsert(&db, result(2, s, s as i64)).unwrap();
        blocks.upsert(&db, result(1, s, 10 * s as i64)).unwrap();
    }
    let mut w = WriteSet::default();
    blocks.write(&mut w);
    db.commit(w).unwrap();
    let all = db.results().unwrap();
    let ids: Vec<(u32, u64)> = all
        .iter()
        .map(|r| (r.ride.reader_id, r.ride.reader_seq))
        .collect();
    let mut want: Vec<(u32, u64)> = seqs.iter().flat_map(|&s| [(1, s), (2, s)]).collect();
    want.sort();
    assert_eq!(ids, want);
    let ride = |seq| RideId {
        reader_id: 1,
        reader_seq: seq,
    };
    assert_eq!(
        db.result(ride(RESULT_BLOCK_RIDES))
            .unwrap()
            .unwrap()
            .amount_minor,
        10 * RESULT_BLOCK_RIDES as i64
    );
    assert_eq!(db.result(ride(3)).unwrap(), None);

    // A later chunk changes one ride, adds one to a stored block, removes one.
    let mut blocks = ResultBlocks::default();
    blocks.get_mut(&db, ride(2)).unwrap().unwrap().amount_minor = -5;
    blocks.upsert(&db, result(1, 3, 33)).unwrap();
    assert!(blocks.remove(&db, ride(1)).unwrap());
    assert!(!blocks.remove(&db, ride(4)).unwrap());
    let mut w = WriteSet::default();
    blocks.write(&mut w);
    db.commit(w).unwrap();
    assert_eq!(db.result(ride(2)).unwrap().unwrap().amount_minor, -5);
    assert_eq!(db.result(ride(3)).unwrap().unwrap().amount_minor, 33);
    assert_eq!(db.result(ride(1)).unwrap(), None);
    assert_eq!(
        db.result(ride(RESULT_BLOCK_RIDES - 1))
            .unwrap()
            .unwrap()
            .amount_minor,
        10 * (RESULT_BLOCK_RIDES as i64 - 1)
    );
    assert_eq!(db.results().unwrap().len(), want.len());
}

/// A credential's sightings survive encoding; an emptied record is deleted;
/// a corrupt record is an error, not a panic.
#[test]
fn code_sightings_round_trip() {
    let (_dir, db) = open();
    let cred = CredentialId([7; 16]);
    let list = vec![
        CodeSighting {
            device_seq: 1,
            ride: RideId {
                reader_id: 3,
                reader_seq: 9,
            },
        },
        CodeSighting {
            device_seq: u32::MAX,
            ride: RideId {
                reader_id: u32::MAX,
                reader_seq: u64::MAX,
            },
        },
    ];
    let mut w = WriteSet::default();
    Db::put_code_sightings(&mut w, &cred, &list);
    db.commit(w).unwrap();
    assert_eq!(db.code_sightings(&cred).unwrap(), list);
    assert_eq!(db.code_seen(&cred, 1).unwrap(), Some(list[0].ride));
    assert_eq!(db.code_seen(&cred, 2).unwrap(), None);
    let mut w = WriteSet::default();
    Db::put_code_sightings(&mut w, &cred, &[]);
    db.commit(w).unwrap();
    assert_eq!(db.store().get(Space::Codes, &cred.0).unwrap(), None);
    let mut w = WriteSet::default();
    w.put(Space::Codes, cred.0.to_vec(), vec![1, 2, 3]);
    db.commit(w).unwrap();
    assert!(matches!(
        db.code_sightings(&cred),
        Err(StoreError::Corrupt { .. })
    ));
}

fn ride_posting(reader_seq: u64, rev: u32, account: &str, amount_minor: i64) -> Posting {
    Posting {
        posting_id: fare_ledger::ride_posting_id(&format!("3:{reader_seq}"), rev),
        debit: AccountRef::passenger(account),
        credit: AccountRef::operator("op"),
        amount_minor,
        kind: if rev == 1 {
            PostingKind::RideCharge
        } else {
            PostingKind::RideAdjustment
        },
        ride_key: Some(format!("3:{reader_seq}")),
        service_day: Some("2026-03-10".parse().unwrap()),
    }
}

/// Ride postings live in blocks and in one index record per account and
/// chunk, payments one per id; lookups by id, in bulk and per account
/// see all of them; a posting id is never written twice, and a block
/// changed since it was read makes the commit fail.
///
/// Longer than a screen: one store state built step by step, each step
/// checked against the one before; split, the state would travel between
/// functions.
#[test]
fn ride_posting_blocks_are_exactly_once() {
    let (_dir, db) = open();
    assert_eq!(
        ride_of_posting_id("ride/3:700/r12"),
        Some(RideId {
            reader_id: 3,
            reader_seq: 700
        })
    );
    assert_eq!(ride_of_posting_id("payment/acc/ride/3:700/r1"), None);
    assert_eq!(ride_of_posting_id("ride/3:700"), None);

    let mut balances = HashMap::new();
    let mut w = WriteSet::default();
    let chunk1 = [
        ride_posting(1, 1, "a", 250),
        ride_posting(RESULT_BLOCK_RIDES + 1, 1, "a", 100),
        ride_posting(2, 1, "b", 300),
    ];
    db.put_ride_postings(&mut w, &chunk1, &mut balances, 1)
        .unwrap();
    let payment = fare_ledger::payment_posting("a", "pay-1", 500).unwrap();
    Db::put_postings(&mut w, std::slice::from_ref(&payment), &mut balances);
    db.commit(w).unwrap();
    assert_eq!(balances["passenger:a"], 500 - 350);
    assert_eq!(balances["operator:op"], 650);

    // A later chunk adjusts ride 3:1 (revision 2).
    let adj = ride_posting(1, 2, "a", 50);
    let mut w = WriteSet::default();
    db.put_ride_postings(&mut w, std::slice::from_ref(&adj), &mut balances, 2)
        .unwrap();
    db.commit(w).unwrap();

    for p in chunk1.iter().chain([&payment, &adj]) {
        assert_eq!(db.posting(&p.posting_id).unwrap().as_ref(), Some(p));
    }
    assert_eq!(db.posting("ride/3:5/r1").unwrap(), None);
    let all = db.postings().unwrap();
    assert_eq!(all.len(), 5);
    assert!(all.windows(2).all(|p| p[0].posting_id < p[1].posting_id));
    let of_a: Vec<String> = db
        .postings_of("passenger:a")
        .unwrap()
        .into_iter()
        .map(|p| p.posting_id)
        .collect();
    assert_eq!(
        of_a,
        [
            payment.posting_id.as_str(),
            "ride/3:1/r1",
            "ride/3:1/r2",
            "ride/3:257/r1"
        ]
    );
    assert_eq!(
        db.postings_of("passenger:b").unwrap(),
        vec![chunk1[2].clone()]
    );

    // The same posting id again is refused before anything is written.
    let mut w = WriteSet::default();
    assert!(matches!(
        db.put_ride_postings(&mut w, std::slice::from_ref(&adj), &mut balances, 3),
        Err(StoreError::Conflict { .. })
    ));
    // A block read for a write set and changed before its commit: the
    // commit fails and writes nothing.
    let mut w = WriteSet::default();
    db.put_ride_postings(&mut w, &[ride_posting(3, 1, "b", 10)], &mut balances, 3)
        .unwrap();
    let mut other = WriteSet::default();
    db.put_ride_postings(&mut other, &[ride_posting(4, 1, "b", 10)], &mut balances, 4)
        .unwrap();
    db.commit(other).unwrap();
    assert!(matches!(db.commit(w), Err(StoreError::Conflict { .. })));
    assert_eq!(db.posting("ride/3:3/r1").unwrap(), None);
    assert_eq!(db.postings().unwrap().len(), 6);
}

/// Rides stored in blocks read back for any range, across block and
/// reader boundaries; removals keep the other rides; a block changed
/// since it was read makes the commit fail.
///
/// Longer than a screen: one store state built step by step, each step
/// checked against the one before; split, the state would travel between
/// functions.
#[test]
fn ride_blocks_round_trip_across_block_boundaries() {
    let (_dir, db) = open();
    let b = RIDE_BLOCK_RIDES;
    let rec = |reader: u32, seq: u64| format!("ride {reader}:{seq}").into_bytes();
    let id = |reader_id, reader_seq| RideId {
        reader_id,
        reader_seq,
    };
    let mark = |seq: u64| match seq % 7 {
        0 => RMark::Strict,
        3 => RMark::Unchecked,
        _ => RMark::Batchable,
    };
    let mut blocks = RideBlocks::default();
    for reader in [1u32, 2] {
        for seq in (1..=3 * b + 5).rev() {
            blocks
                .put(&db, id(reader, seq), rec(reader, seq), mark(seq))
                .unwrap();
        }
    }
    let mut w = WriteSet::default();
    blocks.write(&mut w);
    db.commit(w).unwrap();
    assert_eq!(db.ride_count().unwrap(), 2 * (3 * b + 5));
    for (from, to) in [
        (1, 1),
        (1, b),
        (b - 1, b + 1),
        (b, 2 * b),
        (5, 3 * b + 5),
        (3 * b, 10 * b),
    ] {
        let want: Vec<Vec<u8>> = (from..=to.min(3 * b + 5)).map(|s| rec(2, s)).collect();
        assert_eq!(db.ride_bytes(2, from, to).unwrap(), want, "{from}..={to}");
    }
    // The marks come back with their rides.
    for m in [RMark::Strict, RMark::Unchecked, RMark::Batchable] {
        let marked: Vec<u64> = (b - 1..=2 * b).filter(|&s| mark(s) == m).collect();
        assert_eq!(
            db.rides_marked(2, b - 1, 2 * b, m).unwrap(),
            marked,
            "{m:?}"
        );
    }
    assert!(db.ride_bytes(2, 5, 4).unwrap().is_empty());
    assert!(db.ride_bytes(3, 1, 10).unwrap().is_empty());

    // Remove one ride and a whole block's worth.
    let mut blocks = RideBlocks::default();
    assert!(blocks.remove(&db, id(1, 2)).unwrap());
    assert!(!blocks.remove(&db, id(1, 10 * b)).unwrap());
    for seq in b..2 * b {
        assert!(blocks.remove(&db, id(1, seq)).unwrap());
    }
    let mut w = WriteSet::default();
    blocks.write(&mut w);
    db.commit(w).unwrap();
    let got = db.ride_bytes(1, 1, 3 * b + 5).unwrap();
    let want: Vec<Vec<u8>> = (1..=3 * b + 5)
        .filter(|s| *s != 2 && !(b..2 * b).contains(s))
        .map(|s| rec(1, s))
        .collect();
    assert_eq!(got, want);

    // Stale read: the commit fails and changes nothing.
    let mut stale = RideBlocks::default();
    stale
        .put(&db, id(1, 2), b"stale".to_vec(), RMark::Batchable)
        .unwrap();
    let mut fresh = RideBlocks::default();
    fresh
        .put(&db, id(1, 3), b"fresh".to_vec(), RMark::Batchable)
        .unwrap();
    let mut w = WriteSet::default();
    fresh.write(&mut w);
    db.commit(w).unwrap();
    let mut w = WriteSet::default();
    stale.write(&mut w);
    assert!(matches!(db.commit(w), Err(StoreError::Conflict { .. })));
    assert_eq!(db.ride_bytes(1, 2, 3).unwrap(), vec![b"fresh".to_vec()]);
}
