//! A damaged ride-log tail is detected at open (issue #9 c): flip a byte
//! in a ride's bytes in sled's data file and sled drops that ride (and the
//! rest of the log after it) at recovery; without a high-water mark the
//! reader then reuses its sequence number and accepts its code again.
//! The ride ring (`log.ring`: the mark, carrying the last rides' records)
//! repairs a sled tail it still holds; when the ring cannot (its entry for
//! a missing ride is damaged too) the reader names the missing range and
//! refuses every ride.

use crate::common::{deployment, tear_ring_entry, DeploymentExt, TestWallet, NOW};
use fare_validator::hwm::RING_FILE;
use fare_validator::{Outcome, Reader, ValidatorError};
use std::path::Path;

fn last_occurrence(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).rposition(|w| w == needle)
}

/// Flips a byte of `code` where sled's data file holds it (the last
/// occurrence: sled appends).
fn damage_sled_at(dir: &Path, code: &[u8]) {
    let db = dir.join("log").join("db");
    let mut bytes = std::fs::read(&db).unwrap();
    let at = last_occurrence(&bytes, code).expect("the ride's code is in the log");
    assert!(bytes.len() - at < 64 << 10, "the ride is in the log's tail");
    bytes[at + 100] ^= 0x5a;
    std::fs::write(&db, &bytes).unwrap();
}

/// The setup every test here damages: a reader provisioned in `dir` from
/// deployment `seed` that has accepted rides 1..=`rides` of one wallet.
/// Returns the reader (still open), the wallet and the rides' codes.
fn reader_with_rides(dir: &Path, seed: u64, rides: u32) -> (Reader, TestWallet, Vec<Vec<u8>>) {
    let mut dep = deployment(seed);
    let bundle = dep.snapshot(1, vec![]);
    let mut reader = dep.provision_lib(dir, &bundle);
    let wallet = dep.wallet();
    let codes: Vec<Vec<u8>> = (1..=rides).map(|s| wallet.code(NOW, s)).collect();
    for c in &codes {
        assert!(reader.decide_payload(c, NOW).is_accept());
    }
    (reader, wallet, codes)
}

#[test]
fn a_damaged_sled_tail_is_repaired_from_the_ring() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("reader");
    let (reader, wallet, codes) = reader_with_rides(&dir, 93, 5);
    drop(reader);
    damage_sled_at(&dir, &codes[4]);
    let mut reader = Reader::open(&dir, NOW).unwrap();
    assert!(reader.log_damage().is_none(), "{:?}", reader.log_damage());
    assert_eq!(reader.repaired_from_ring(), 1);
    assert_eq!(reader.state().next_seq, 6);
    reader.verify_chain().unwrap();
    let d = reader.decide_payload(&codes[4], NOW);
    assert_eq!(d.reason_code(), Some("already_used"), "{}", d.message());
    assert!(d.message().contains("ride 5"), "{}", d.message());
    assert!(reader.decide_payload(&wallet.code(NOW, 6), NOW).is_accept());
    assert_eq!(reader.state().next_seq, 7);
}

#[test]
fn a_damaged_log_tail_is_detected_and_the_reader_refuses_to_decide() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("reader");
    let (reader, wallet, codes) = reader_with_rides(&dir, 91, 5);
    assert_eq!(reader.state().next_seq, 6);
    drop(reader);

    // Damage the last ride where sled keeps it (its code's bytes in the
    // data file) and its copy in the ring: neither can give it back.
    // (Ride 5's ring entry torn alone is a write that was never
    // acknowledged; here the ring's entry for ride 4 is damaged and ride
    // 5's is intact, so the mark names 5 and the log ends at 3 or 4.)
    damage_sled_at(&dir, &codes[3]);
    tear_ring_entry(&dir, 4);

    let mut reader = match Reader::open(&dir, NOW) {
        Ok(r) => r,
        // sled refusing to open at all is loud too; the mark is what makes
        // the silent case loud.
        Err(e) => panic!("open failed instead of naming the missing range: {e}"),
    };
    let damage = reader
        .log_damage()
        .expect("the log's end is below its high-water mark");
    match damage {
        ValidatorError::LogBehind {
            missing_from,
            missing_to,
            ..
        } => {
            assert_eq!((*missing_from, *missing_to), (4, 5), "{damage}");
        }
        other => panic!("unexpected damage report {other}"),
    }
    assert_eq!(damage.code(), "log_behind_high_water_mark");
    // The reader refuses to decide: no sequence 4 or 5 reused, the lost ride's
    // code not accepted again, no new ride either.
    for c in [&codes[3], &codes[4], &wallet.code(NOW, 6)] {
        let d = reader.decide_payload(c, NOW);
        assert!(
            matches!(d.outcome, Outcome::StorageError { .. }),
            "expected a refusal, got {}",
            d.message()
        );
    }
    let st = reader.status(NOW);
    assert_eq!(st.sync_state, "log_damaged");
    assert!(st.refusing.unwrap().contains("4..=5"));
    // Still refusing after another open: the mark is not moved back.
    drop(reader);
    let reader = Reader::open(&dir, NOW).unwrap();
    assert!(reader.log_damage().is_some());
}

#[test]
fn a_power_cut_between_the_ride_and_its_mark_is_not_damage() {
    // The ring's entry for ride 3 torn (the cut came while it was written,
    // before its answer) while sled kept ride 3: the mark is ride 2, the
    // log one past it; the open keeps ride 3 and catches the mark up.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("reader");
    let (reader, wallet, _) = reader_with_rides(&dir, 92, 3);
    drop(reader);
    let ring_before = std::fs::read(dir.join(RING_FILE)).unwrap();
    tear_ring_entry(&dir, 3);
    assert_ne!(std::fs::read(dir.join(RING_FILE)).unwrap(), ring_before);
    let mut reader = Reader::open(&dir, NOW).unwrap();
    assert!(reader.log_damage().is_none());
    assert_eq!(reader.repaired_from_ring(), 0);
    assert!(reader.decide_payload(&wallet.code(NOW, 4), NOW).is_accept());
    assert_eq!(reader.state().next_seq, 5);
    drop(reader);
    // And again: the bare mark written at the last open names ride 3.
    let reader = Reader::open(&dir, NOW).unwrap();
    assert!(reader.log_damage().is_none());
}
