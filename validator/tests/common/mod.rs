//! Shared test fixture: a deployment (root + issuer keys), bundles, wallets
//! and ride codes made with the real formats and seeded keys.
#![allow(dead_code)]

use fare_credential::keys::generate_signing_key;
use fare_credential::trust::IssuerKey;
use fare_credential::{
    Credential, CredentialBody, CredentialId, DenyUpdate, Profile, ReaderBundle, RideCode,
    SigningKey,
};
use fare_validator::{Reader, ReaderConfig, ReaderIdentityConfig};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// Reader clock for most tests (fits the u32 time fields).
pub const NOW: u64 = 1_800_000_000;
pub const ISSUER_KEY_ID: u32 = 1;
pub const READER_ID: u32 = 7;

pub struct Deployment {
    pub root: SigningKey,
    pub issuer: SigningKey,
    pub rng: ChaCha20Rng,
}

pub struct Wallet {
    pub device: SigningKey,
    pub credential: Credential,
}

impl Wallet {
    pub fn id(&self) -> CredentialId {
        self.credential.id()
    }
    /// A ride code issued at `issued_at` with device sequence `seq`.
    pub fn code(&self, issued_at: u64, seq: u32) -> Vec<u8> {
        RideCode::sign_v1(&self.credential, issued_at as u32, seq, &self.device)
            .as_bytes()
            .to_vec()
    }
}

impl Deployment {
    pub fn new(seed: u64) -> Deployment {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let root = generate_signing_key(&mut rng);
        let issuer = generate_signing_key(&mut rng);
        Deployment { root, issuer, rng }
    }

    pub fn trust(&self) -> Vec<IssuerKey> {
        vec![IssuerKey {
            key_id: ISSUER_KEY_ID,
            public_key: self.issuer.verifying_key().to_bytes(),
            valid_from_unix_s: NOW - 30 * 86_400,
            valid_until_unix_s: NOW + 365 * 86_400,
        }]
    }

    pub fn bundle(&self, version: u64, server_time: u64, deny: DenyUpdate) -> Vec<u8> {
        ReaderBundle {
            bundle_version: version,
            server_time_unix_s: server_time,
            trust: self.trust(),
            deny,
            tariff: br#"{"note":"test"}"#.to_vec(),
        }
        .sign_v1(&self.root)
        .unwrap()
    }

    /// A bundle v2 of `publisher`; a delta names `base`'s digest (the
    /// deny list it applies to; `None` for a snapshot).
    pub fn bundle_v2(
        &self,
        publisher: u8,
        version: u64,
        server_time: u64,
        deny: DenyUpdate,
        base: Option<&[CredentialId]>,
    ) -> Vec<u8> {
        let deny_base_hash = base.map(|ids| {
            let list = fare_credential::DenyList::from_ids(ids.to_vec());
            fare_credential::bundle::deny_digest(list.ids())
        });
        fare_credential::bundle::PublishedBundle {
            publisher: [publisher; 16],
            deny_base_hash,
            bundle: ReaderBundle {
                bundle_version: version,
                server_time_unix_s: server_time,
                trust: self.trust(),
                deny,
                tariff: br#"{"note":"test"}"#.to_vec(),
            },
        }
        .sign_v2(&self.root)
        .unwrap()
    }

    pub fn snapshot(&self, version: u64, deny: Vec<CredentialId>) -> Vec<u8> {
        self.bundle(version, NOW, DenyUpdate::Snapshot(deny))
    }

    /// A credential valid [from, until] signed by `signer` claiming `key_id`.
    pub fn wallet_with(
        &mut self,
        key_id: u32,
        signer: Option<&SigningKey>,
        from: u64,
        until: u64,
    ) -> Wallet {
        let device = generate_signing_key(&mut self.rng);
        let mut id = [0u8; 16];
        self.rng.fill_bytes(&mut id);
        let body = CredentialBody {
            issuer_key_id: key_id,
            credential_id: CredentialId(id),
            device_public_key: device.verifying_key().to_bytes(),
            profile: Profile::Adult,
            valid_from_unix_s: from as u32,
            valid_until_unix_s: until as u32,
        };
        let credential = Credential::issue_v1(body, signer.unwrap_or(&self.issuer));
        Wallet { device, credential }
    }

    /// A genuine credential valid for a day around NOW.
    pub fn wallet(&mut self) -> Wallet {
        self.wallet_with(ISSUER_KEY_ID, None, NOW - 3600, NOW + 86_400)
    }

    pub fn other_key(&mut self) -> SigningKey {
        generate_signing_key(&mut self.rng)
    }

    pub fn reader_key(&mut self) -> SigningKey {
        generate_signing_key(&mut self.rng)
    }

    /// Writes `root.pub` and `bundle.bin` into `dir` for the CLI.
    pub fn write_files(&self, dir: &Path, bundle: &[u8]) -> (PathBuf, PathBuf) {
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

    /// Provisions a reader through the library (seeded reader key).
    pub fn provision_lib(&mut self, dir: &Path, bundle: &[u8]) -> Reader {
        let key = self.reader_key();
        Reader::provision(dir, config(), self.root.verifying_key(), key, bundle, NOW).unwrap()
    }
}

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

/// Runs the CLI, returns (exit code, stdout, stderr).
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

pub fn cli(args: &[&str]) -> (i32, String, String) {
    let out: Output = bin().args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Provisions `base/reader` through the CLI; returns the reader dir.
pub fn provision_cli(dep: &Deployment, base: &Path, bundle: &[u8]) -> PathBuf {
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
