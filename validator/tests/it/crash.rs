//! Crash test in the style of sled's: a child `fare-validator run` process
//! decides a stream of codes and is killed with SIGKILL at a random moment;
//! the parent reopens the log and checks that every ride the child reported
//! as accepted is there, the chain verifies, no sequence is reused and no
//! code is logged twice. 100 cycles by default; `CRASH_CYCLES=N` for more.
//! The child loop and the checks are `common::KillLedger`'s, shared with
//! the power-cut test.

use crate::common::*;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

const CODES_PER_CYCLE: usize = 40;

#[test]
fn sigkill_never_loses_an_accepted_ride() {
    let cycles: u64 = std::env::var("CRASH_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let mut dep = deployment(42);
    // Kept on failure so the damaged log can be inspected; removed on success.
    let base = tempfile::tempdir().unwrap().keep();
    let dir = base.join("reader");
    drop(dep.provision_lib(&dir, &dep.snapshot(1, vec![])));
    let mut riders = Riders::new(&mut dep, 8);
    let mut rng = ChaCha20Rng::seed_from_u64(7);

    let calib: Vec<Vec<u8>> = (0..CODES_PER_CYCLE)
        .map(|_| riders.fresh(&mut rng))
        .collect();
    let (mut ledger, window_ms) = KillLedger::calibrate(&dir, &calib);
    let mut last_seq_on_disk = CODES_PER_CYCLE as u64;
    let (mut killed_mid_stream, mut total_accepts) = (0, 0);

    for cycle in 0..cycles {
        let ctx = format!("cycle {cycle} (SIGKILL)");
        let lines = ledger.cycle_lines(CODES_PER_CYCLE, &mut rng, |r| riders.fresh(r));
        let delay_ms = rng.next_u64() % window_ms;
        let (out, mid) = run_and_kill(&dir, &lines, delay_ms);
        killed_mid_stream += u64::from(mid);
        total_accepts += ledger.take_answers(&ctx, &out, &lines, last_seq_on_disk);
        let (_, last) = ledger.reopen_and_check(&dir, &ctx, true);
        last_seq_on_disk = last;
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
