//! Crash test in the style of sled's: a child `fare-validator run` process
//! decides a stream of codes and is killed with SIGKILL at a random moment;
//! the parent reopens the log and checks that every ride the child reported
//! as accepted is there, the chain verifies, no sequence is reused and no
//! code is logged twice. 100 cycles by default; `CRASH_CYCLES=N` for more.

mod common;
use common::*;
use fare_validator::Reader;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::process::Stdio;

#[test]
fn sigkill_never_loses_an_accepted_ride() {
    let cycles: u64 = std::env::var("CRASH_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let mut dep = Deployment::new(42);
    // Kept on failure so the damaged log can be inspected; removed on success.
    let base = tempfile::tempdir().unwrap().keep();
    let dir = base.join("reader");
    drop(dep.provision_lib(&dir, &dep.snapshot(1, vec![])));
    let wallets: Vec<Wallet> = (0..8).map(|_| dep.wallet()).collect();
    let mut next_dev_seq = vec![1u32; wallets.len()];
    let mut rng = ChaCha20Rng::seed_from_u64(7);

    // `reported`: seq -> code bytes of every ride a child reported accepted.
    let (mut killed_mid_stream, mut total_accepts) = (0, 0);

    // Calibrate the kill window: time one uninterrupted run of 40 fresh
    // codes, so kills land mid-stream on fast and slow machines alike.
    let calib: String = (0..40)
        .map(|i| {
            let w = i % wallets.len();
            let c = wallets[w].code(NOW, next_dev_seq[w]);
            next_dev_seq[w] += 1;
            format!("{}\n", hex::encode(c))
        })
        .collect();
    let t = std::time::Instant::now();
    let mut child = run_stream(&dir).stderr(Stdio::null()).spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(calib.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let window_ms = (t.elapsed().as_millis() as u64).max(5);
    let mut reported: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut accepted_codes: Vec<Vec<u8>> = Vec::new();
    for (l, code) in String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .zip(calib.lines())
    {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert_eq!(v["decision"], "accept", "calibration run: {v}");
        let bytes = hex::decode(code).unwrap();
        reported.insert(v["ride_id"]["seq"].as_u64().unwrap(), bytes.clone());
        accepted_codes.push(bytes);
    }
    assert_eq!(reported.len(), 40);
    let mut last_seq_on_disk = 40u64;

    for cycle in 0..cycles {
        // 40 lines: mostly fresh codes, some replays of earlier accepts.
        let mut lines: Vec<Vec<u8>> = Vec::new();
        for _ in 0..40 {
            if !accepted_codes.is_empty() && rng.next_u32() % 5 == 0 {
                let i = rng.next_u32() as usize % accepted_codes.len();
                lines.push(accepted_codes[i].clone());
            } else {
                let w = rng.next_u32() as usize % wallets.len();
                lines.push(wallets[w].code(NOW, next_dev_seq[w]));
                next_dev_seq[w] += 1;
            }
        }
        let delay_ms = rng.next_u64() % window_ms;
        let (out, mid) = run_and_kill(&dir, &lines, delay_ms);
        killed_mid_stream += u64::from(mid);

        // What the child acknowledged, line by line (the last line may be
        // torn by the kill; only complete JSON lines count as answers).
        let mut cycle_seqs = Vec::new();
        for (i, l) in out.iter().enumerate() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(l) else {
                assert_eq!(i, out.len() - 1, "only the last line can be torn: {l}");
                continue;
            };
            let input = &lines[i];
            if v["decision"] == "accept" {
                let seq = v["ride_id"]["seq"].as_u64().unwrap();
                assert!(
                    !accepted_codes.contains(input),
                    "cycle {cycle}: a code accepted before was accepted again as ride {seq}"
                );
                assert!(
                    reported.insert(seq, input.clone()).is_none(),
                    "sequence {seq} reported twice"
                );
                cycle_seqs.push(seq);
                accepted_codes.push(input.clone());
                total_accepts += 1;
            } else {
                assert_eq!(v["reason"], "already_used", "cycle {cycle} line {i}: {v}");
            }
        }
        assert!(
            cycle_seqs.windows(2).all(|w| w[0] < w[1])
                && cycle_seqs.first().is_none_or(|&s| s > last_seq_on_disk),
            "cycle {cycle}: sequences {cycle_seqs:?} reuse or go back from {last_seq_on_disk}"
        );

        // Reopen as the next boot would and check everything.
        let r = Reader::open(&dir, NOW).unwrap_or_else(|e| {
            panic!(
                "cycle {cycle}: reopen failed: {e} (log kept in {})",
                dir.display()
            )
        });
        let n = r
            .verify_chain()
            .unwrap_or_else(|e| panic!("cycle {cycle}: chain broken: {e}"));
        let on_disk: BTreeMap<u64, Vec<u8>> = r
            .records()
            .map(|x| x.unwrap())
            .map(|x| (x.reader_seq, x.code))
            .collect();
        assert_eq!(on_disk.len() as u64, n);
        for (seq, code) in &reported {
            assert_eq!(
                on_disk.get(seq),
                Some(code),
                "cycle {cycle}: accepted ride {seq} missing or altered after SIGKILL"
            );
        }
        let distinct: HashSet<&Vec<u8>> = on_disk.values().collect();
        assert_eq!(
            distinct.len(),
            on_disk.len(),
            "cycle {cycle}: a code is logged twice"
        );
        last_seq_on_disk = r.state().next_seq - 1;
        // A ride that reached the disk but whose answer was cut off is
        // still spent: its code must never be accepted again.
        for (seq, code) in &on_disk {
            if !reported.contains_key(seq) {
                accepted_codes.push(code.clone());
                reported.insert(*seq, code.clone());
            }
        }
    }
    eprintln!(
        "{cycles} cycles (kill window {window_ms} ms), {killed_mid_stream} killed mid-stream, {total_accepts} accepts reported, {last_seq_on_disk} rides on disk"
    );
    assert!(
        killed_mid_stream >= cycles / 4,
        "too few kills landed mid-stream ({killed_mid_stream})"
    );
    assert!(total_accepts > 0);
    let _ = std::fs::remove_dir_all(&base);
}
