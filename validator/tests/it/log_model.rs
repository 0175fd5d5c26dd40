//! The ride log against a simple in-memory model, with restarts,
//! acknowledgements, compaction and uploads; plus library-level checks of
//! batches and state that survive a restart.

use crate::common::*;
use fare_credential::SignedBatch;
use fare_validator::{Reader, ReaderConfig};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Fresh(usize),
    Replay(usize),
    Restart,
    Ack(u64),
    Advance(u64),
    Upload(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..3usize).prop_map(Op::Fresh),
        2 => any::<usize>().prop_map(Op::Replay),
        2 => Just(Op::Restart),
        2 => (0..20u64).prop_map(Op::Ack),
        2 => (0..150u64).prop_map(Op::Advance),
        1 => (1..5usize).prop_map(Op::Upload),
    ]
}

struct ModelRide {
    seq: u64,
    time: u64,
    code: Vec<u8>,
    issued: u64,
}

const RETENTION_S: u64 = 100;

fn open_with_retention(dep: &mut TestDeployment, dir: &std::path::Path) -> Reader {
    let mut cfg: ReaderConfig = config();
    cfg.storage.retention_s = RETENTION_S;
    let key = dep.next_key();
    Reader::provision(
        dir,
        cfg,
        dep.root.verifying_key(),
        key,
        &dep.snapshot(1, vec![]),
        NOW,
    )
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn log_matches_model(ops in prop::collection::vec(op(), 1..40), seed in 0u64..1000) {
        let mut dep = deployment(seed);
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("r");
        let mut reader = open_with_retention(&mut dep, &dir);
        let vk = reader.public_key();
        let wallets: Vec<TestWallet> = (0..3).map(|_| dep.wallet()).collect();
        let mut dev_seq = [1u32; 3];
        let mut model: Vec<ModelRide> = Vec::new();
        let (mut acked, mut oldest, mut now) = (0u64, 1u64, NOW);

        for op in ops {
            match op.clone() {
                Op::Fresh(w) => {
                    let code = wallets[w].code(now, dev_seq[w]);
                    dev_seq[w] += 1;
                    let d = reader.decide_payload(&code, now);
                    prop_assert!(d.is_accept(), "{:?}", d);
                    let seq = model.len() as u64 + 1;
                    prop_assert_eq!(d.ride_id().unwrap().seq, seq);
                    model.push(ModelRide { seq, time: now, code, issued: now });
                }
                Op::Replay(i) => {
                    if model.is_empty() { continue; }
                    let r = &model[i % model.len()];
                    let d = reader.decide_payload(&r.code, now);
                    let expect = if now > r.issued + 90 { "code_expired" } else { "already_used" };
                    prop_assert_eq!(d.reason_code(), Some(expect));
                }
                Op::Restart => {
                    drop(reader);
                    reader = Reader::open(&dir, now).unwrap();
                }
                Op::Ack(k) => {
                    let k = k.min(model.len() as u64);
                    reader.acknowledge(k).unwrap();
                    acked = acked.max(k);
                }
                Op::Advance(s) => {
                    now += s;
                    reader.maintenance(now).unwrap();
                }
                Op::Upload(n) => {
                    match reader.next_batch(n).unwrap() {
                        None => prop_assert_eq!(acked, model.len() as u64),
                        Some((bytes, first, last)) => {
                            prop_assert_eq!(first, acked + 1);
                            prop_assert_eq!(last, (acked + n as u64).min(model.len() as u64));
                            let batch = SignedBatch::parse_v1(&bytes).unwrap().verify(&vk).unwrap();
                            for rec in &batch.records {
                                prop_assert_eq!(&rec.code, &model[rec.reader_seq as usize - 1].code);
                            }
                        }
                    }
                }
            }
            // Model compaction: maintenance (on Advance) and every open (on
            // Restart) drop acknowledged rides older than the retention,
            // oldest first.
            if matches!(op, Op::Advance(_) | Op::Restart) {
                while oldest <= acked && model[oldest as usize - 1].time + RETENTION_S <= now {
                    oldest += 1;
                }
            }
            let st = reader.state().clone();
            prop_assert_eq!(st.next_seq, model.len() as u64 + 1);
            prop_assert_eq!(st.acked_up_to, acked);
            prop_assert_eq!(st.oldest_seq, oldest);
            prop_assert_eq!(reader.verify_chain().unwrap(), model.len() as u64 + 1 - oldest);
            prop_assert_eq!(st.used_bytes, logged_bytes(&reader));
        }
        // Final restart: everything not compacted is there, byte for byte.
        drop(reader);
        let reader = Reader::open(&dir, now).unwrap();
        let recs: Vec<_> = reader.records().map(|r| r.unwrap()).collect();
        let first = reader.state().oldest_seq;
        prop_assert_eq!(recs.len() as u64, model.len() as u64 + 1 - first);
        for rec in recs {
            let m = &model[rec.reader_seq as usize - 1];
            prop_assert_eq!(rec.reader_seq, m.seq);
            prop_assert_eq!(rec.reader_time_unix_s, m.time);
            prop_assert_eq!(&rec.code, &m.code);
        }
    }
}

/// Sum of the encoded sizes of the records the reader holds.
fn logged_bytes(r: &Reader) -> u64 {
    r.records()
        .map(|x| x.unwrap().encode_v1().unwrap().len() as u64)
        .sum()
}

/// A provisioned reader with `n` accepted rides from four wallets, closed
/// without a final state save (as a power cut would leave it).
fn reader_with_rides(
    seed: u64,
    n: u32,
) -> (
    tempfile::TempDir,
    std::path::PathBuf,
    Vec<Vec<u8>>,
    TestWallet,
) {
    let mut dep = deployment(seed);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("r");
    let mut r = dep.provision_lib(&dir, &dep.snapshot(1, vec![]));
    let wallets: Vec<TestWallet> = (0..4).map(|_| dep.wallet()).collect();
    let mut codes = Vec::new();
    for i in 0..n {
        let code = wallets[i as usize % 4].code(NOW, i / 4 + 1);
        assert!(r.decide_payload(&code, NOW).is_accept());
        codes.push(code);
    }
    let next = dep.wallet();
    (tmp, dir, codes, next)
}

#[test]
fn state_rolls_forward_over_rides_after_the_last_save() {
    // The state is saved every STATE_SAVE_EVERY rides, not with each ride:
    // an open derives it from the log's tail. 300 rides leave 44 after the
    // last save (at 256); the reopened reader must agree with the one that
    // wrote them, and refuse every one of their codes again.
    assert_eq!(fare_validator::reader::STATE_SAVE_EVERY, 256);
    let (_tmp, dir, codes, w) = reader_with_rides(11, 300);
    let mut r = Reader::open(&dir, NOW).unwrap();
    r.acknowledge(10).unwrap();
    let before = r.state().clone();
    assert_eq!(before.next_seq, 301);
    assert_eq!(before.used_bytes, logged_bytes(&r));
    drop(r);
    let mut r = Reader::open(&dir, NOW + 5).unwrap();
    assert_eq!(r.state(), &before);
    assert_eq!(r.status(NOW + 5).replay_entries, 600);
    for (i, code) in codes.iter().enumerate().step_by(7) {
        let d = r.decide_payload(code, NOW + 5);
        assert_eq!(d.reason_code(), Some("already_used"), "ride {}", i + 1);
    }
    // The next ride continues the sequence and the chain.
    let d = r.decide_payload(&w.code(NOW + 5, 1), NOW + 5);
    assert_eq!(d.ride_id().unwrap().seq, 301);
    assert_eq!(r.verify_chain().unwrap(), 301);
}

#[test]
fn compaction_of_many_records_goes_in_chunks_and_stops_at_the_retention_edge() {
    // 2,500 rides one second apart, all acknowledged: compaction removes
    // those past the retention in several transactions of at most
    // COMPACT_CHUNK_RECORDS, and the state stays exact across a restart.
    assert_eq!(fare_validator::reader::COMPACT_CHUNK_RECORDS, 1024);
    let mut dep = deployment(14);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("r");
    let mut r = dep.provision_lib(&dir, &dep.snapshot(1, vec![]));
    let wallets: Vec<TestWallet> = (0..4).map(|_| dep.wallet()).collect();
    for i in 0..2500u64 {
        let code = wallets[i as usize % 4].code(NOW + i, i as u32 / 4 + 1);
        assert!(r.decide_payload(&code, NOW + i).is_accept());
    }
    r.acknowledge(2500).unwrap();
    let retention = r.config().storage.retention_s;
    // Rides at NOW + 0 ..= NOW + 1500 are past the retention: 1,501 of them.
    let removed = r.compact(NOW + 1500 + retention).unwrap();
    assert_eq!(removed, 1501);
    assert_eq!(r.state().oldest_seq, 1502);
    assert_eq!(r.state().used_bytes, logged_bytes(&r));
    assert_eq!(r.verify_chain().unwrap(), 999);
    let before = r.state().clone();
    drop(r);
    let r = Reader::open(&dir, NOW + 1500 + retention).unwrap();
    assert_eq!(r.state(), &before);
}

#[test]
fn a_record_altered_after_the_last_save_is_found_at_open() {
    let (_tmp, dir, _, _) = reader_with_rides(13, 300);
    {
        let db = open_log(&dir);
        let rides = db.open_tree("rides").unwrap();
        let key = 280u64.to_be_bytes();
        let mut v = rides.get(key).unwrap().unwrap().to_vec();
        let mid = v.len() / 2; // inside the code bytes: 281's prev_hash no longer matches
        v[mid] ^= 1;
        rides.insert(key, v).unwrap();
        db.flush().unwrap();
    }
    let err = Reader::open(&dir, NOW).unwrap_err();
    assert!(
        err.to_string().contains("281") && err.to_string().contains("chain"),
        "{err}"
    );
}

#[test]
fn a_code_compacted_early_from_a_full_log_stays_used_after_restart() {
    // With the log full, acknowledged rides are dropped early, even while
    // their codes could still pass; their replay entries then move to the
    // spill tree in the same write, so a restart still refuses them.
    let mut dep = deployment(12);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("r");
    let mut r = dep.provision_lib(&dir, &dep.snapshot(1, vec![]));
    let w = dep.wallet();
    let first = w.code(NOW, 1);
    assert!(r.decide_payload(&first, NOW).is_accept());
    let one = r.state().used_bytes;
    drop(r);
    set_config(&dir, "max_log_bytes", &(2 * one).to_string());
    let mut r = Reader::open(&dir, NOW).unwrap();
    assert!(r.decide_payload(&w.code(NOW, 2), NOW).is_accept());
    assert_eq!(
        r.decide_payload(&w.code(NOW, 3), NOW).reason_code(),
        Some("storage_full")
    );
    r.acknowledge(1).unwrap();
    assert!(r.decide_payload(&w.code(NOW, 3), NOW + 1).is_accept());
    assert_eq!(r.state().oldest_seq, 2, "ride 1 was dropped early");
    drop(r);
    let mut r = Reader::open(&dir, NOW + 2).unwrap();
    let d = r.decide_payload(&first, NOW + 2);
    assert_eq!(d.reason_code(), Some("already_used"), "{}", d.message());
    // Once the code could no longer pass, the spilled entries go too.
    let later = NOW + 60 + 30 + 3600 + 61;
    r.maintenance(later).unwrap();
    assert_eq!(r.status(later).replay_entries, 0);
    drop(r);
    let r = Reader::open(&dir, later).unwrap();
    assert_eq!(r.status(later).replay_entries, 0);
}

#[test]
fn state_survives_restart_and_ack_beyond_log_is_refused() {
    let mut dep = deployment(5);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("r");
    let mut r = dep.provision_lib(&dir, &dep.snapshot(3, vec![]));
    let w = dep.wallet();
    for s in 1..=5 {
        assert!(r.decide_payload(&w.code(NOW, s), NOW).is_accept());
    }
    r.acknowledge(2).unwrap();
    let err = r.acknowledge(9).unwrap_err();
    assert!(err.to_string().contains("acknowledged up to 9"), "{err}");
    let head = r.state().chain_head;
    drop(r);
    let mut r = Reader::open(&dir, NOW).unwrap();
    assert_eq!(r.state().next_seq, 6);
    assert_eq!(r.state().acked_up_to, 2);
    assert_eq!(r.state().chain_head, head);
    assert_eq!(r.bundle_version(), 3);
    // Replay cache survived too.
    assert_eq!(
        r.decide_payload(&w.code(NOW, 5), NOW).reason_code(),
        Some("already_used")
    );
    // Batches: 3..=5, verified with the reader key, chained from record 2.
    let (bytes, first, last) = r.next_batch(100).unwrap().unwrap();
    assert_eq!((first, last), (3, 5));
    let b = SignedBatch::parse_v1(&bytes)
        .unwrap()
        .verify(&r.public_key())
        .unwrap();
    assert_eq!(b.records.len(), 3);
    let rec2 = r.records().nth(1).unwrap().unwrap();
    assert_eq!(b.prev_hash, rec2.hash().unwrap());
    // A batch is refused under another reader's key.
    let other = dep.next_key();
    assert!(SignedBatch::parse_v1(&bytes)
        .unwrap()
        .verify(&other.verifying_key())
        .is_err());
    r.acknowledge(5).unwrap();
    assert!(r.next_batch(100).unwrap().is_none());
    // Replay entries are pruned once the code can no longer pass anyway.
    let later = NOW + 60 + 30 + 3600 + 61;
    r.maintenance(later).unwrap();
    assert_eq!(r.status(later).replay_entries, 0);
    // Reopen with a different reader id in the config: refused.
    drop(r);
    let cfg = std::fs::read_to_string(dir.join("reader.toml")).unwrap();
    std::fs::write(
        dir.join("reader.toml"),
        cfg.replace("reader_id = 7", "reader_id = 8"),
    )
    .unwrap();
    let err = Reader::open(&dir, NOW).unwrap_err();
    assert!(err.to_string().contains("belongs to reader 7"), "{err}");
}

#[test]
fn reader_key_file_is_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let mut dep = deployment(6);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("r");
    drop(dep.provision_lib(&dir, &dep.snapshot(1, vec![])));
    let mode = std::fs::metadata(dir.join("reader.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // Provisioning twice is refused and keeps the key.
    let before = std::fs::read(dir.join("reader.key")).unwrap();
    let err = Reader::provision(
        &dir,
        config(),
        dep.root.verifying_key(),
        dep.next_key(),
        &dep.snapshot(1, vec![]),
        NOW,
    )
    .unwrap_err();
    assert!(err.to_string().contains("already provisioned"), "{err}");
    assert_eq!(std::fs::read(dir.join("reader.key")).unwrap(), before);
}

#[test]
fn large_deny_list_installs_and_survives_restart() {
    let mut dep = deployment(8);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("r");
    let victim = dep.wallet();
    let mut ids: Vec<fare_credential::CredentialId> = (0u32..100_000)
        .map(|i| {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&i.to_be_bytes());
            b[4] = 0xAB;
            fare_credential::CredentialId(b)
        })
        .collect();
    ids.push(victim.id());
    drop(dep.provision_lib(&dir, &dep.snapshot(1, ids)));
    let mut r = Reader::open(&dir, NOW).unwrap();
    assert_eq!(r.deny_len(), 100_001);
    assert_eq!(
        r.decide_payload(&victim.code(NOW, 1), NOW).reason_code(),
        Some("revoked")
    );
    // A corrupted deny-list file is detected at open, not silently trusted.
    drop(r);
    let f = dir.join("deny-1.bin");
    let mut bytes = std::fs::read(&f).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&f, bytes).unwrap();
    let err = Reader::open(&dir, NOW).unwrap_err();
    assert!(
        err.to_string().contains("does not match its recorded hash"),
        "{err}"
    );
}

#[test]
fn torn_sled_snapshot_from_a_crash_is_ignored() {
    // sled 0.34.7 reads a half-written `snap.*.generating` file left by a
    // kill during snapshot writing and then refuses to open (see
    // `remove_torn_snapshots`). The reader must still open with its rides.
    let mut dep = deployment(9);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("r");
    let mut r = dep.provision_lib(&dir, &dep.snapshot(1, vec![]));
    let w = dep.wallet();
    assert!(r.decide_payload(&w.code(NOW, 1), NOW).is_accept());
    drop(r);
    std::fs::write(
        dir.join("log").join("snap.FFFFFFFFFFFFFFFF.generating"),
        b"torn",
    )
    .unwrap();
    let r = Reader::open(&dir, NOW).unwrap();
    assert_eq!(r.verify_chain().unwrap(), 1);
}
