//! Kill test of large commits on sled (the way sled's own crash tests
//! work): this test re-runs itself as a child process that commits, one
//! after another, write sets of `KEYS` puts and `FLIPPED` deletes or puts,
//! every value stamped with the commit's generation, and prints each
//! generation once `commit` returned. The parent kills the child
//! (SIGKILL) at a random instant, reopens the store and checks that the
//! last commit is there whole or not at all: every key holds one
//! generation, at least the last one printed (acknowledged) and at most the
//! next. Settlement's chunks are such write sets, and sled inserts a batch
//! this large on several threads (crates/sled/PATCHED.md, item 5).
//!
//! 8 cycles by default; `BATCH_CRASH_CYCLES=N` for more,
//! `BATCH_CRASH_SEED=S` to replay (every failure prints both).

use crate::common::env_u64;
use fare_settlement::store::{SledStore, Space, Store, WriteSet, MAX_KEYS_PER_READ};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Keys every commit puts (far above sled's parallel batch threshold of
/// 4,096 writes).
const KEYS: u32 = 12_000;
/// Keys every commit puts on even generations and deletes on odd ones.
const FLIPPED: u32 = 1_000;
/// Bytes of each value after its generation (so a commit spans several of
/// sled's log buffers).
const FILLER_BYTES: usize = 200;
/// The child's data directory, when this process is the child.
const CHILD_ENV: &str = "FARE_BATCH_CRASH_CHILD_DIR";
/// The longest the parent lets a child run before killing it.
const MAX_KILL_DELAY_MS: u64 = 1_500;

fn key(i: u32) -> Vec<u8> {
    i.to_be_bytes().to_vec()
}

fn value(generation: u64) -> Vec<u8> {
    let mut v = generation.to_le_bytes().to_vec();
    v.resize(8 + FILLER_BYTES, generation as u8);
    v
}

fn generation_of(v: &[u8]) -> u64 {
    u64::from_le_bytes(v[..8].try_into().expect("8-byte generation"))
}

/// The child: commits generation after generation until killed.
fn child(dir: &Path) -> ! {
    let store = SledStore::open(dir).expect("child opens the store");
    let mut generation = store
        .get(Space::Meta, &key(0))
        .unwrap()
        .map_or(0, |v| generation_of(&v));
    let mut out = std::io::stdout();
    loop {
        generation += 1;
        let mut w = WriteSet::default();
        for i in 0..KEYS {
            w.put(Space::Meta, key(i), value(generation));
        }
        for i in KEYS..KEYS + FLIPPED {
            if generation.is_multiple_of(2) {
                w.put(Space::Meta, key(i), value(generation));
            } else {
                w.delete(Space::Meta, key(i));
            }
        }
        store.commit(w).expect("child commits");
        writeln!(out, "{generation}").unwrap();
        out.flush().unwrap();
    }
}

/// The generation the store holds, `Err` unless every key agrees on it
/// (generation 0, before any commit: every key absent).
fn stored_generation(dir: &Path) -> Result<u64, String> {
    let store = SledStore::open(dir).map_err(|e| format!("reopen: {e}"))?;
    let keys: Vec<Vec<u8>> = (0..KEYS + FLIPPED).map(key).collect();
    let mut values = Vec::new();
    for part in keys.chunks(MAX_KEYS_PER_READ) {
        values.extend(store.get_many(Space::Meta, part).unwrap());
    }
    let g = values[0].as_deref().map_or(0, generation_of);
    for (i, v) in values.iter().enumerate() {
        let absent = g == 0 || (i as u32 >= KEYS && g % 2 == 1);
        match (v, absent) {
            (None, true) => {}
            (Some(v), false) if generation_of(v) == g && v == &value(g) => {}
            _ => {
                return Err(format!(
                    "key {i}: {:?} in a store at generation {g} (a torn commit)",
                    v.as_ref().map(|v| generation_of(v))
                ))
            }
        }
    }
    Ok(g)
}

#[test]
fn killed_large_commits_are_whole_or_absent() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        child(Path::new(&dir));
    }
    let seed = env_u64("BATCH_CRASH_SEED", 7);
    let cycles = env_u64("BATCH_CRASH_CYCLES", 8);
    let replay = format!(
        "seed {seed} (replay: BATCH_CRASH_SEED={seed} BATCH_CRASH_CYCLES={cycles} cargo test \
         -p fare-settlement --test it -- --exact batch_crash::killed_large_commits_are_whole_or_absent)"
    );
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let exe = std::env::current_exe().unwrap();
    let (mut acknowledged, mut at_acknowledged) = (0u64, 0u64);
    for cycle in 1..=cycles {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "batch_crash::killed_large_commits_are_whole_or_absent",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let lines = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .filter_map(|l| l.trim().parse::<u64>().ok())
                .collect::<Vec<u64>>()
        });
        let delay_ms = rng.next_u64() % MAX_KILL_DELAY_MS;
        std::thread::sleep(Duration::from_millis(delay_ms));
        assert!(
            child.try_wait().unwrap().is_none(),
            "cycle {cycle}: the child exited before it was killed; {replay}"
        );
        child.kill().unwrap();
        child.wait().unwrap();
        let printed = lines.join().unwrap();
        if let Some(last) = printed.last() {
            acknowledged = *last;
        }
        let stored = stored_generation(&dir).unwrap_or_else(|e| {
            panic!("cycle {cycle} (killed after {delay_ms} ms): {e}; {replay}")
        });
        assert!(
            stored == acknowledged || stored == acknowledged + 1,
            "cycle {cycle} (killed after {delay_ms} ms): the store holds generation {stored}, \
             the child acknowledged {acknowledged}; {replay}"
        );
        at_acknowledged += u64::from(stored == acknowledged);
        acknowledged = stored;
    }
    assert!(
        acknowledged > cycles,
        "the children committed only {acknowledged} generations in {cycles} cycles: the kills \
         landed before any commit, so nothing was tested; {replay}"
    );
    eprintln!(
        "{cycles} cycles, {acknowledged} generations committed; {at_acknowledged} kills left the \
         store at the last acknowledged generation (killed between commits or inside one, \
         which recovery dropped whole), the others one further ({replay})"
    );
}
