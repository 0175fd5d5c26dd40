//! A damaged ride-log tail is detected at open (issue #9 c): flip a byte
//! in the last ride's bytes in sled's data file and sled drops that ride at
//! recovery; without the high-water mark the reader then reuses its
//! sequence number and accepts its code again. With it the reader names
//! the missing range and refuses every ride.

mod common;

use common::{deployment, DeploymentExt, NOW};
use fare_validator::{Outcome, Reader, ValidatorError};

fn last_occurrence(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).rposition(|w| w == needle)
}

#[test]
fn a_damaged_log_tail_is_detected_and_the_reader_refuses_to_decide() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("reader");
    let mut dep = deployment(91);
    let bundle = dep.snapshot(1, vec![]);
    let mut reader = dep.provision_lib(&dir, &bundle);
    let wallet = dep.wallet();
    let codes: Vec<Vec<u8>> = (1..=5).map(|s| wallet.code(NOW, s)).collect();
    for c in &codes {
        assert!(reader.decide_payload(c, NOW).is_accept());
    }
    assert_eq!(reader.state().next_seq, 6);
    drop(reader);

    // Damage the last ride where sled keeps it: its code's bytes in the
    // data file (the last occurrence: sled appends).
    let db = dir.join("log").join("db");
    let mut bytes = std::fs::read(&db).unwrap();
    let at = last_occurrence(&bytes, &codes[4]).expect("the last ride's code is in the log");
    assert!(
        bytes.len() - at < 64 << 10,
        "the last ride is in the log's tail"
    );
    bytes[at + 100] ^= 0x5a;
    std::fs::write(&db, &bytes).unwrap();

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
            assert_eq!((*missing_from, *missing_to), (5, 5), "{damage}");
        }
        other => panic!("unexpected damage report {other}"),
    }
    assert_eq!(damage.code(), "log_behind_high_water_mark");
    // The reader refuses to decide: no sequence 5 reused, the lost ride's
    // code not accepted again, no new ride either.
    for c in [&codes[4], &wallet.code(NOW, 6)] {
        let d = reader.decide_payload(c, NOW);
        assert!(
            matches!(d.outcome, Outcome::StorageError { .. }),
            "expected a refusal, got {}",
            d.message()
        );
    }
    let st = reader.status(NOW);
    assert_eq!(st.sync_state, "log_damaged");
    assert!(st.refusing.unwrap().contains("5..=5"));
    // Still refusing after another open: the mark is not moved back.
    drop(reader);
    let reader = Reader::open(&dir, NOW).unwrap();
    assert!(reader.log_damage().is_some());
}

#[test]
fn a_power_cut_between_the_ride_and_its_mark_is_not_damage() {
    // The mark lags the log by one ride when the cut came after the ride's
    // durability point and before its mark: the open catches the mark up.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("reader");
    let mut dep = deployment(92);
    let bundle = dep.snapshot(1, vec![]);
    let mut reader = dep.provision_lib(&dir, &bundle);
    let wallet = dep.wallet();
    for s in 1..=3 {
        assert!(reader.decide_payload(&wallet.code(NOW, s), NOW).is_accept());
    }
    drop(reader);
    // Put the mark back to ride 2 (both slots), as if ride 3's mark never landed.
    let hwm_before = std::fs::read(dir.join("log.hwm")).unwrap();
    let reader = Reader::open(&dir, NOW).unwrap();
    let head2 = reader.chain_hash_at(2).unwrap().unwrap();
    drop(reader);
    let (h, _) = fare_validator::hwm::HighWaterMark::open(&dir, true).unwrap();
    h.reset(&fare_validator::hwm::Mark {
        seq: 2,
        chain_hash: head2,
    })
    .unwrap();
    drop(h);
    assert_ne!(std::fs::read(dir.join("log.hwm")).unwrap(), hwm_before);
    let mut reader = Reader::open(&dir, NOW).unwrap();
    assert!(reader.log_damage().is_none());
    assert!(reader.decide_payload(&wallet.code(NOW, 4), NOW).is_accept());
    assert_eq!(reader.state().next_seq, 5);
}
