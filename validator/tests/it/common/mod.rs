//! Shared test fixture: a deployment (root + issuer keys), bundles, wallets
//! and ride codes made with the real formats and seeded keys.
#![allow(dead_code)]

use fare_credential::testkit::TEST_NOW;
use fare_credential::{CredentialId, DenyUpdate};
use fare_validator::{Reader, ReaderConfig, ReaderIdentityConfig};
use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// Reader clock for most tests (fits the u32 time fields).
pub const NOW: u64 = TEST_NOW;
pub const READER_ID: u32 = 7;

/// The deployment of seed `seed` the reader tests use
/// ([`fare_credential::testkit::TestDeployment`]): its issuer key trusted
/// from 30 days before [`NOW`] to 365 days after.
pub fn deployment(seed: u64) -> TestDeployment {
    TestDeployment::new(seed, NOW - 30 * 86_400, NOW + 365 * 86_400)
}

/// What the reader tests do with a deployment beyond the kit: bundles at
/// [`NOW`], wallets valid around it, readers provisioned from it.
pub trait DeploymentExt {
    /// A v1 snapshot bundle of `version` made at [`NOW`].
    fn snapshot(&self, version: u64, deny: Vec<CredentialId>) -> Vec<u8>;
    /// A genuine credential valid from an hour before [`NOW`] to a day after.
    fn wallet(&mut self) -> TestWallet;
    /// Writes `root.pub` and `bundle.bin` into `dir` for the CLI.
    fn write_files(&self, dir: &Path, bundle: &[u8]) -> (PathBuf, PathBuf);
    /// Provisions a reader through the library (seeded reader key).
    fn provision_lib(&mut self, dir: &Path, bundle: &[u8]) -> Reader;
}

impl DeploymentExt for TestDeployment {
    fn snapshot(&self, version: u64, deny: Vec<CredentialId>) -> Vec<u8> {
        self.bundle_v1(version, NOW, DenyUpdate::Snapshot(deny))
    }

    fn wallet(&mut self) -> TestWallet {
        self.wallet_between(NOW - 3600, NOW + 86_400)
    }

    fn write_files(&self, dir: &Path, bundle: &[u8]) -> (PathBuf, PathBuf) {
        let root = dir.join("root.pub");
        std::fs::write(
            &root,
            format!("{}\n", hex::encode(self.root.verifying_key().as_bytes())),
        )
        .unwrap();
        let b = dir.join("bundle.bin");
        std::fs::write(&b, bundle).unwrap();
        (root, b)
    }

    fn provision_lib(&mut self, dir: &Path, bundle: &[u8]) -> Reader {
        let key = self.next_key();
        Reader::provision(dir, config(), self.root.verifying_key(), key, bundle, NOW).unwrap()
    }
}

#[allow(unused_imports)]
pub use fare_credential::testkit::{TestDeployment, TestIssuer, TestWallet};

pub fn config() -> ReaderConfig {
    ReaderConfig::new(ReaderIdentityConfig {
        reader_id: READER_ID,
        operator: "metro".into(),
        vehicle: "bus-1".into(),
        route: "R12".into(),
        stop: None,
    })
}

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fare-validator"))
}

/// `fare-validator run --frames - --at NOW` on `dir`, stdin and stdout piped:
/// the stream mode the simulator and drills use.
pub fn run_stream(dir: &Path) -> Command {
    let mut cmd = bin();
    cmd.args(["run", "--dir"])
        .arg(dir)
        .args(["--frames", "-", "--at", &NOW.to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    cmd
}

/// Writes all of `input` to a spawned child's piped stdin, closes it and
/// waits: the one-shot way to feed a `run --frames -` child.
pub fn feed_and_wait(mut child: std::process::Child, input: &str) -> Output {
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Runs the CLI, returns (exit code, stdout, stderr).
pub fn cli(args: &[&str]) -> (i32, String, String) {
    let out: Output = bin().args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Provisions `base/reader` through the CLI; returns the reader dir.
pub fn provision_cli(dep: &TestDeployment, base: &Path, bundle: &[u8]) -> PathBuf {
    let (root, b) = dep.write_files(base, bundle);
    let dir = base.join("reader");
    let (code, out, err) = cli(&[
        "provision",
        "--dir",
        dir.to_str().unwrap(),
        "--reader-id",
        &READER_ID.to_string(),
        "--vehicle",
        "bus-1",
        "--route",
        "R12",
        "--bundle",
        b.to_str().unwrap(),
        "--root-key",
        root.to_str().unwrap(),
        "--at",
        &NOW.to_string(),
    ]);
    assert_eq!(code, 0, "provision failed: {err}");
    assert_eq!(
        out.trim().len(),
        64,
        "provision prints the reader public key hex: {out}"
    );
    dir
}

/// `scan --json --payload HEX --at T`: (exit code, decision JSON).
pub fn scan(dir: &Path, payload: &[u8], at: u64) -> (i32, serde_json::Value) {
    let (code, out, err) = cli(&[
        "scan",
        "--dir",
        dir.to_str().unwrap(),
        "--payload",
        &hex::encode(payload),
        "--at",
        &at.to_string(),
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("scan output not JSON ({e}): {out} / {err}"));
    (code, v)
}

/// Asserts a rejection with `reason` and exit status 1.
pub fn assert_reject(dir: &Path, payload: &[u8], at: u64, reason: &str) -> serde_json::Value {
    let (code, v) = scan(dir, payload, at);
    assert_eq!(v["decision"], "reject", "{v}");
    assert_eq!(v["reason"], reason, "{v}");
    assert_eq!(code, 1, "{v}");
    assert!(v["ride_id"].is_null());
    assert!(!v["message"].as_str().unwrap().is_empty());
    v
}

/// Asserts an accept (exit 0) and returns the ride sequence.
pub fn assert_accept(dir: &Path, payload: &[u8], at: u64) -> u64 {
    let (code, v) = scan(dir, payload, at);
    assert_eq!(v["decision"], "accept", "{v}");
    assert_eq!(code, 0);
    assert!(v["reason"].is_null());
    assert_eq!(v["ride_id"]["reader_id"], READER_ID);
    v["ride_id"]["seq"].as_u64().unwrap()
}

/// Rewrites one `key = value` line of reader.toml.
pub fn set_config(dir: &Path, key: &str, value: &str) {
    let path = dir.join("reader.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut found = false;
    let new: Vec<String> = text
        .lines()
        .map(|l| {
            if l.trim_start().starts_with(&format!("{key} =")) {
                found = true;
                format!("{key} = {value}")
            } else {
                l.to_string()
            }
        })
        .collect();
    assert!(found, "no `{key}` in reader.toml:\n{text}");
    std::fs::write(&path, new.join("\n")).unwrap();
}

/// One child run: streams `lines`, kills the child after `delay_ms`.
/// Returns (the child's complete output lines, killed mid-stream).
pub fn run_and_kill(dir: &Path, lines: &[Vec<u8>], delay_ms: u64) -> (Vec<String>, bool) {
    let mut child = run_stream(dir).stderr(Stdio::null()).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input: String = lines
        .iter()
        .map(|l| format!("{}\n", hex::encode(l)))
        .collect();
    let writer = std::thread::spawn(move || {
        // The child may die mid-write: a broken pipe is expected.
        let _ = stdin.write_all(input.as_bytes());
    });
    let stdout = child.stdout.take().unwrap();
    let reader_thread = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<String>>()
    });
    std::thread::sleep(Duration::from_millis(delay_ms));
    let finished_before_kill = matches!(child.try_wait(), Ok(Some(_)));
    let _ = child.kill(); // SIGKILL on Unix
    let _ = child.wait();
    writer.join().unwrap();
    let out = reader_thread.join().unwrap();
    let mid = !finished_before_kill && out.len() < lines.len();
    (out, mid)
}

/// Fresh ride codes from a few wallets, each with its own device sequence.
pub struct Riders {
    wallets: Vec<TestWallet>,
    next_dev_seq: Vec<u32>,
}

impl Riders {
    /// `n` wallets of `dep`.
    pub fn new(dep: &mut TestDeployment, n: usize) -> Riders {
        Riders {
            wallets: (0..n).map(|_| dep.wallet()).collect(),
            next_dev_seq: vec![1; n],
        }
    }

    /// A code never shown before, issued at [`NOW`] by a wallet `rng` picks.
    pub fn fresh(&mut self, rng: &mut dyn rand_core::RngCore) -> Vec<u8> {
        let w = rng.next_u32() as usize % self.wallets.len();
        let c = self.wallets[w].code(NOW, self.next_dev_seq[w]);
        self.next_dev_seq[w] += 1;
        c
    }
}

/// What the `run --frames -` children of a kill test answered, cycle after
/// cycle: every ride reported accepted and every code spent, checked
/// against the reader's log after each kill (`crash.rs`, `powercut.rs`).
#[derive(Default)]
pub struct KillLedger {
    /// Sequence → code of every ride a child reported accepted (or that
    /// reached the log with its answer cut off).
    pub reported: BTreeMap<u64, Vec<u8>>,
    /// Every code accepted so far: never to be accepted again.
    pub accepted_codes: Vec<Vec<u8>>,
    /// Rides the reopens re-inserted from the ride ring (`log.ring`): sled
    /// had lost them to a power cut after their ring entry was durable.
    pub repaired_from_ring: u64,
    /// Reopens that re-inserted at least one ride from the ring.
    pub reopens_repaired: u64,
}

impl KillLedger {
    /// One uninterrupted child run deciding `codes` (all fresh): every
    /// answer must be an accept. Returns the ledger and the run's duration
    /// in milliseconds (at least 5), the window kills are drawn from so
    /// they land mid-stream on fast and slow machines alike.
    pub fn calibrate(dir: &Path, codes: &[Vec<u8>]) -> (KillLedger, u64) {
        let input: String = codes
            .iter()
            .map(|l| format!("{}\n", hex::encode(l)))
            .collect();
        let t = std::time::Instant::now();
        let child = run_stream(dir).stderr(Stdio::null()).spawn().unwrap();
        let out = feed_and_wait(child, &input);
        let window_ms = (t.elapsed().as_millis() as u64).max(5);
        let mut ledger = KillLedger::default();
        for (l, code) in String::from_utf8(out.stdout).unwrap().lines().zip(codes) {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["decision"], "accept", "calibration run: {v}");
            let seq = v["ride_id"]["seq"].as_u64().unwrap();
            ledger.reported.insert(seq, code.clone());
            ledger.accepted_codes.push(code.clone());
        }
        assert_eq!(ledger.reported.len(), codes.len(), "calibration run");
        (ledger, window_ms)
    }

    /// `n` lines for a cycle: mostly fresh codes, one in five (when there
    /// are any) a replay of an accepted one.
    pub fn cycle_lines(
        &self,
        n: usize,
        rng: &mut impl rand_core::RngCore,
        mut fresh: impl FnMut(&mut dyn rand_core::RngCore) -> Vec<u8>,
    ) -> Vec<Vec<u8>> {
        (0..n)
            .map(|_| {
                if !self.accepted_codes.is_empty() && rng.next_u32().is_multiple_of(5) {
                    let i = rng.next_u32() as usize % self.accepted_codes.len();
                    self.accepted_codes[i].clone()
                } else {
                    fresh(rng)
                }
            })
            .collect()
    }

    /// Takes a killed child's answers `out` to `lines` (the last line may
    /// be torn by the kill; only complete JSON lines count): an accept
    /// must be of a code never accepted, under a sequence never reported
    /// and above `last_seq_on_disk`, in increasing order; anything else
    /// must be `already_used`. Returns how many accepts it took.
    pub fn take_answers(
        &mut self,
        ctx: &dyn std::fmt::Display,
        out: &[String],
        lines: &[Vec<u8>],
        last_seq_on_disk: u64,
    ) -> u64 {
        let mut cycle_seqs = Vec::new();
        for (i, l) in out.iter().enumerate() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(l) else {
                assert_eq!(
                    i,
                    out.len() - 1,
                    "{ctx}: only the last line can be torn: {l}"
                );
                continue;
            };
            let input = &lines[i];
            if v["decision"] != "accept" {
                assert_eq!(v["reason"], "already_used", "{ctx}: line {i}: {v}");
                continue;
            }
            let seq = v["ride_id"]["seq"].as_u64().unwrap();
            assert!(
                !self.accepted_codes.contains(input),
                "{ctx}: a code accepted before was accepted again as ride {seq}"
            );
            assert!(
                self.reported.insert(seq, input.clone()).is_none(),
                "{ctx}: sequence {seq} reported twice"
            );
            cycle_seqs.push(seq);
            self.accepted_codes.push(input.clone());
        }
        assert!(
            cycle_seqs.windows(2).all(|w| w[0] < w[1])
                && cycle_seqs.first().is_none_or(|&s| s > last_seq_on_disk),
            "{ctx}: sequences {cycle_seqs:?} reuse or go back from {last_seq_on_disk}"
        );
        cycle_seqs.len() as u64
    }

    /// Reopens the reader in `dir` as the next boot would and checks it:
    /// the chain verifies, no code is logged twice, and every reported ride
    /// is there byte for byte (`strict`: a missing one fails at once;
    /// otherwise the missing sequences are returned). A ride that reached
    /// the log with its answer cut off is added to the ledger: its code is
    /// spent. Returns the missing rides and the last sequence on disk.
    pub fn reopen_and_check(
        &mut self,
        dir: &Path,
        ctx: &dyn std::fmt::Display,
        strict: bool,
    ) -> (Vec<u64>, u64) {
        let r = Reader::open(dir, NOW).unwrap_or_else(|e| {
            panic!("{ctx}: reopen failed: {e} (log kept in {})", dir.display())
        });
        self.repaired_from_ring += r.repaired_from_ring();
        self.reopens_repaired += u64::from(r.repaired_from_ring() > 0);
        // (Without the device sync a torn cut can keep a later ring entry
        // and lose an earlier one: the damage the mark exists to report.)
        assert!(
            !strict || r.log_damage().is_none(),
            "{ctx}: reopened reader reports a damaged log: {:?}",
            r.log_damage()
        );
        let n = r
            .verify_chain()
            .unwrap_or_else(|e| panic!("{ctx}: chain broken: {e}"));
        let on_disk: BTreeMap<u64, Vec<u8>> = r
            .records()
            .map(|x| x.unwrap_or_else(|e| panic!("{ctx}: unreadable record: {e}")))
            .map(|x| (x.reader_seq, x.code))
            .collect();
        assert_eq!(on_disk.len() as u64, n, "{ctx}: chain length vs records");
        let mut missing = Vec::new();
        for (seq, code) in &self.reported {
            match on_disk.get(seq) {
                Some(c) if c == code => {}
                Some(_) => panic!("{ctx}: accepted ride {seq} altered"),
                None if strict => panic!("{ctx}: accepted ride {seq} lost"),
                None => missing.push(*seq),
            }
        }
        let distinct: HashSet<&Vec<u8>> = on_disk.values().collect();
        assert_eq!(
            distinct.len(),
            on_disk.len(),
            "{ctx}: a code is logged twice"
        );
        for (seq, code) in &on_disk {
            if !self.reported.contains_key(seq) {
                self.accepted_codes.push(code.clone());
                self.reported.insert(*seq, code.clone());
            }
        }
        (missing, r.state().next_seq - 1)
    }
}

/// Tears ride `seq`'s entry in the reader's ride ring (`log.ring`): its
/// checksum then fails, as after a power cut in the middle of its write.
pub fn tear_ring_entry(dir: &Path, seq: u64) {
    use fare_validator::hwm::{RING_FILE, RING_SLOTS, RING_SLOT_LEN};
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join(RING_FILE))
        .unwrap();
    let off = (1 + seq % RING_SLOTS) * RING_SLOT_LEN as u64 + 40;
    f.write_all_at(&[0xa5; 16], off).unwrap();
}

/// Opens a reader's sled log directly (`dir` the reader's directory),
/// waiting for its lock as `Reader::open` does: the reader's sled I/O
/// threads may hold it a moment after the reader is dropped.
pub fn open_log(dir: &Path) -> sled::Db {
    let config = sled::Config::new().path(dir.join("log"));
    let wait = std::time::Duration::from_millis(fare_validator::reader::LOG_LOCK_WAIT_MS);
    fare_durable::open_waiting_for_lock(&config, wait)
        .unwrap_or_else(|e| panic!("open the reader's log: {e}"))
}
