//! The ride ring (`log.ring`, `fare_validator::hwm`): an accept's one
//! device flush is the ring entry carrying its record; sled's data file is
//! device-synced lazily. These tests make the crash points by hand, without
//! FUSE: sled's log as it was before the last rides (a copy of `log/`
//! taken then, which is what a power cut leaves when sled's copy of those
//! rides never reached the device) beside the ring as it is after them.
//! `powercut.rs` does the same with real power cuts.

use crate::common::{deployment, tear_ring_entry, DeploymentExt, TestWallet, NOW};
use fare_credential::testkit::copy_dir;
use fare_validator::hwm::RING_SLOTS;
use fare_validator::{Reader, ValidatorError};
use std::collections::BTreeMap;

fn records(r: &Reader) -> BTreeMap<u64, Vec<u8>> {
    r.records()
        .map(|x| x.unwrap())
        .map(|x| (x.reader_seq, x.encode_v1().unwrap()))
        .collect()
}

/// What [`sled_behind_ring`] returns.
type SledBehindRing = (
    tempfile::TempDir,
    TestWallet,
    Vec<Vec<u8>>,
    BTreeMap<u64, Vec<u8>>,
);

/// A reader with rides 1..=3 whose sled log is then put back to what it
/// held after ride 3, while rides 4..=6 were accepted and are in the ring
/// only: the state a power cut leaves after ride 6's ring `fdatasync` when
/// sled's data for 4..=6 never reached the device. Returns the directory,
/// the wallet, the codes of rides 1..=6 and the records as accepted.
fn sled_behind_ring(seed: u64) -> SledBehindRing {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("reader");
    let mut dep = deployment(seed);
    let bundle = dep.snapshot(1, vec![]);
    let mut reader = dep.provision_lib(&dir, &bundle);
    let wallet = dep.wallet();
    let codes: Vec<Vec<u8>> = (1..=6).map(|s| wallet.code(NOW, s)).collect();
    for c in &codes[..3] {
        assert!(reader.decide_payload(c, NOW).is_accept());
    }
    drop(reader);
    let saved_log = tmp.path().join("log-after-3");
    copy_dir(&dir.join("log"), &saved_log);
    let mut reader = Reader::open(&dir, NOW).unwrap();
    for (i, c) in codes[3..].iter().enumerate() {
        let d = reader.decide_payload(c, NOW);
        assert!(d.is_accept(), "{}", d.message());
        assert_eq!(d.ride_id().unwrap().seq, 4 + i as u64);
    }
    let accepted = records(&reader);
    assert_eq!(accepted.len(), 6);
    drop(reader);
    std::fs::remove_dir_all(dir.join("log")).unwrap();
    copy_dir(&saved_log, &dir.join("log"));
    (tmp, wallet, codes, accepted)
}

#[test]
fn rides_sled_lost_after_their_ring_sync_are_reinserted_at_open() {
    let (tmp, wallet, codes, accepted) = sled_behind_ring(101);
    let dir = tmp.path().join("reader");
    let mut reader = Reader::open(&dir, NOW).unwrap();
    assert!(
        reader.log_damage().is_none(),
        "the open must repair from the ring, not report damage: {:?}",
        reader.log_damage()
    );
    assert_eq!(reader.repaired_from_ring(), 3);
    assert_eq!(reader.state().next_seq, 7);
    assert_eq!(reader.verify_chain().unwrap(), 6);
    // Same sequences, same bytes.
    assert_eq!(records(&reader), accepted);
    // The codes are spent, under their original rides.
    for (i, c) in codes.iter().enumerate().skip(3) {
        let d = reader.decide_payload(c, NOW);
        assert_eq!(d.reason_code(), Some("already_used"), "{}", d.message());
        assert!(
            d.message().contains(&format!("ride {}", i + 1)),
            "{}",
            d.message()
        );
    }
    // The next ride continues the chain.
    let d = reader.decide_payload(&wallet.code(NOW, 7), NOW);
    assert_eq!(d.ride_id().unwrap().seq, 7);
    drop(reader);
    // The repair was made durable in sled: a second open has nothing to do.
    let reader = Reader::open(&dir, NOW).unwrap();
    assert_eq!(reader.repaired_from_ring(), 0);
    assert_eq!(reader.verify_chain().unwrap(), 7);
}

#[test]
fn a_torn_ring_entry_is_a_ride_never_acknowledged() {
    // The cut tore ride 6's ring entry while it was written: its fdatasync
    // had not returned, so ride 6 was never answered. Rides 4 and 5 come
    // back from the ring; 6 is gone and its sequence is free again.
    let (tmp, wallet, codes, accepted) = sled_behind_ring(102);
    let dir = tmp.path().join("reader");
    tear_ring_entry(&dir, 6);
    let mut reader = Reader::open(&dir, NOW).unwrap();
    assert!(reader.log_damage().is_none(), "{:?}", reader.log_damage());
    assert_eq!(reader.repaired_from_ring(), 2);
    assert_eq!(reader.state().next_seq, 6);
    let held = records(&reader);
    assert_eq!(held.len(), 5);
    for (seq, rec) in &held {
        assert_eq!(Some(rec), accepted.get(seq), "ride {seq}");
    }
    assert_eq!(
        reader.decide_payload(&codes[4], NOW).reason_code(),
        Some("already_used")
    );
    let d = reader.decide_payload(&wallet.code(NOW, 8), NOW);
    assert_eq!(d.ride_id().unwrap().seq, 6, "{}", d.message());
}

#[test]
fn a_ride_missing_from_both_sled_and_the_ring_is_damage() {
    // Ride 5's ring entry is damaged and sled lost 4..=6: the ring gives 4
    // back, cannot bridge 5, and its mark is 6: rides 5..=6 are named
    // missing and the reader refuses to decide.
    let (tmp, wallet, codes, _) = sled_behind_ring(103);
    let dir = tmp.path().join("reader");
    tear_ring_entry(&dir, 5);
    let mut reader = Reader::open(&dir, NOW).unwrap();
    match reader.log_damage() {
        Some(ValidatorError::LogBehind {
            missing_from,
            missing_to,
            ..
        }) => assert_eq!((*missing_from, *missing_to), (5, 6)),
        other => panic!("expected LogBehind 5..=6, got {other:?}"),
    }
    assert_eq!(reader.repaired_from_ring(), 1);
    for c in [&codes[4], &codes[5], &wallet.code(NOW, 9)] {
        let d = reader.decide_payload(c, NOW);
        assert_eq!(d.reason_code(), Some("storage_error"), "{}", d.message());
    }
}

#[test]
fn many_accepts_wrap_the_ring_and_sled_is_synced_lazily_before_it_could_overwrite() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("reader");
    let mut dep = deployment(104);
    let bundle = dep.snapshot(1, vec![]);
    let mut reader = dep.provision_lib(&dir, &bundle);
    let wallet = dep.wallet();
    let n = 2 * RING_SLOTS + RING_SLOTS / 2;
    let mut max_lag = 0;
    let mut lazy_syncs = 0;
    let mut through = reader.sled_durable_through();
    for s in 1..=n {
        let d = reader.decide_payload(&wallet.code(NOW, s as u32), NOW);
        assert_eq!(d.ride_id().map(|r| r.seq), Some(s), "{}", d.message());
        let now_through = reader.sled_durable_through();
        lazy_syncs += u64::from(now_through != through);
        through = now_through;
        // Invariant I2: every ride the ring does not hold any more is
        // durable in sled.
        let lag = s - through;
        assert!(
            lag < RING_SLOTS,
            "ride {s}: sled durable only through {through}"
        );
        max_lag = max_lag.max(lag);
    }
    // The lazy path ran: sled lagged the ring by many rides, and was
    // synced only every RING_SLOTS accepts (not per accept).
    assert_eq!(max_lag, RING_SLOTS - 1);
    assert_eq!(lazy_syncs, n / RING_SLOTS);
    // Every ride is durable in sled (through `through`) or in the ring:
    // the ring holds the last RING_SLOTS rides byte for byte.
    let accepted = records(&reader);
    drop(reader);
    let (_, ring) = fare_validator::hwm::RideRing::open(&dir, true).unwrap();
    assert_eq!(ring.entries.len() as u64, RING_SLOTS);
    for e in &ring.entries {
        assert!(e.seq > n - RING_SLOTS);
        assert_eq!(Some(&e.record), accepted.get(&e.seq), "ride {}", e.seq);
    }
}
