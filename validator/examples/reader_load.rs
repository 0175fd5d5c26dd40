//! Load driver for machine-independent and memory measurements.
//!
//! ```text
//! reader_load decisions N cold|repeat   # N durable accepts in a temp reader (run under callgrind)
//! reader_load frames N                  # N 640x480 frame → durable accept decisions
//! reader_load fill DIR RIDES DENY       # provision DIR with DENY deny-list entries, log RIDES rides
//! reader_load measure DIR N             # open DIR, make N more decisions, print peak RSS (VmHWM)
//! ```
//!
//! callgrind: `valgrind --tool=callgrind --collect-atstart=no
//! --toggle-collect='*Reader*decide_payload*' reader_load decisions 200 cold`
//! counts only the decisions (key and code generation excluded).

use fare_credential::keys::generate_signing_key;
use fare_credential::trust::IssuerKey;
use fare_credential::{
    Credential, CredentialBody, CredentialId, DenyUpdate, Profile, ReaderBundle, RideCode,
    SigningKey,
};
use fare_validator::{Reader, ReaderConfig, ReaderIdentityConfig};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use std::path::Path;
use std::time::Instant;

const NOW: u64 = 1_800_000_000;

fn keys() -> (SigningKey, SigningKey, ChaCha20Rng) {
    let mut rng = ChaCha20Rng::seed_from_u64(11);
    let root = generate_signing_key(&mut rng);
    let issuer = generate_signing_key(&mut rng);
    (root, issuer, rng)
}

fn credential(issuer: &SigningKey, rng: &mut ChaCha20Rng) -> (SigningKey, Credential) {
    let device = generate_signing_key(rng);
    let mut id = [0u8; 16];
    rng.fill_bytes(&mut id);
    let cred = Credential::issue_v1(
        CredentialBody {
            issuer_key_id: 1,
            credential_id: CredentialId(id),
            device_public_key: device.verifying_key().to_bytes(),
            profile: Profile::Adult,
            valid_from_unix_s: (NOW - 60) as u32,
            valid_until_unix_s: (NOW + 86_400) as u32,
        },
        issuer,
    );
    (device, cred)
}

fn provision(dir: &Path, deny: u32) -> Reader {
    let (root, issuer, mut rng) = keys();
    let ids: Vec<CredentialId> = (0..deny)
        .map(|i| {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&i.to_be_bytes());
            b[4] = 0xEE;
            CredentialId(b)
        })
        .collect();
    let bundle = ReaderBundle {
        bundle_version: 1,
        server_time_unix_s: NOW,
        trust: vec![IssuerKey {
            key_id: 1,
            public_key: issuer.verifying_key().to_bytes(),
            valid_from_unix_s: NOW - 86_400,
            valid_until_unix_s: NOW + 86_400,
        }],
        deny: DenyUpdate::Snapshot(ids),
        tariff: Vec::new(),
    }
    .sign_v1(&root)
    .unwrap();
    let mut cfg = ReaderConfig::new(ReaderIdentityConfig {
        reader_id: 1,
        operator: "load".into(),
        vehicle: "bus-1".into(),
        route: "R1".into(),
        stop: None,
    });
    cfg.storage.max_log_bytes = 1 << 40;
    let key = generate_signing_key(&mut rng);
    Reader::provision(dir, cfg, root.verifying_key(), key, &bundle, NOW).unwrap()
}

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// Codes from `riders` credentials, round-robin, `n` in all, with device
/// sequences starting after `seq_base`.
fn codes(n: usize, riders: usize, seq_base: u32, seed: u64) -> Vec<Vec<u8>> {
    let (_, issuer, _) = keys();
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let creds: Vec<_> = (0..riders.max(1))
        .map(|_| credential(&issuer, &mut rng))
        .collect();
    (0..n)
        .map(|i| {
            let (dev, cred) = &creds[i % creds.len()];
            let seq = seq_base + (i / creds.len()) as u32 + 1;
            RideCode::sign_v1(cred, NOW as u32, seq, dev)
                .as_bytes()
                .to_vec()
        })
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    match arg(0).as_str() {
        "decisions" => {
            let n: usize = arg(1).parse().unwrap_or(200);
            let tmp = tempfile::tempdir().unwrap();
            let mut reader = provision(&tmp.path().join("r"), 1000);
            let riders = if arg(2) == "repeat" { 1 } else { n };
            let codes = codes(n, riders, 0, 5);
            let t = Instant::now();
            for c in &codes {
                let d = reader.decide_payload(c, NOW);
                assert!(d.is_accept(), "{}", d.message());
            }
            eprintln!("{n} decisions in {:?}", t.elapsed());
        }
        "frames" => {
            // 640x480 frames, code at 7 px per module, centred on white.
            let n: usize = arg(1).parse().unwrap_or(20);
            let tmp = tempfile::tempdir().unwrap();
            let mut reader = provision(&tmp.path().join("r"), 1000);
            let frames: Vec<image::GrayImage> = codes(n, 1, 0, 5)
                .iter()
                .map(|c| {
                    let sym = fare_qr::render_luma(c, 7, 4).unwrap();
                    let mut canvas = image::GrayImage::from_pixel(640, 480, image::Luma([255u8]));
                    let (x, y) = (
                        (640 - sym.width() as i64) / 2,
                        (480 - sym.height() as i64) / 2,
                    );
                    image::imageops::overlay(&mut canvas, &sym, x, y);
                    canvas
                })
                .collect();
            let t = Instant::now();
            for f in &frames {
                let d = reader.decide_frame(f, NOW);
                assert!(d.is_accept(), "{}", d.message());
            }
            eprintln!("{n} frame decisions in {:?}", t.elapsed());
        }
        "fill" => {
            let dir = Path::new(&args[1]);
            let rides: usize = arg(2).parse().unwrap();
            let deny: u32 = arg(3).parse().unwrap();
            let mut reader = provision(dir, deny);
            // 1000 riders, each riding rides/1000 times: the issuer
            // signature is cached, as on a real bus.
            let t = Instant::now();
            let chunk = 100_000;
            let mut done = 0;
            while done < rides {
                let n = chunk.min(rides - done);
                let base = (done / 1000) as u32;
                for c in codes(n, 1000, base, 9) {
                    let d = reader.decide_payload(&c, NOW);
                    assert!(d.is_accept(), "{}", d.message());
                }
                done += n;
                eprintln!(
                    "{done} rides logged, {:?}, VmHWM {} KiB",
                    t.elapsed(),
                    vm_hwm_kib()
                );
            }
            println!(
                "fill: {rides} rides, {deny} deny entries, peak RSS (VmHWM) {} KiB",
                vm_hwm_kib()
            );
        }
        "measure" => {
            let dir = Path::new(&args[1]);
            let n: usize = arg(2).parse().unwrap_or(1000);
            let t = Instant::now();
            let mut reader = Reader::open(dir, NOW).unwrap();
            let opened = t.elapsed();
            let s = reader.status(NOW);
            let codes = codes(n, n, 1_000_000, 77);
            for c in &codes {
                assert!(reader.decide_payload(c, NOW).is_accept());
            }
            println!(
                "measure: opened in {opened:?} with {} rides and {} deny entries; {n} more decisions; \
                 peak RSS (VmHWM) {} KiB",
                s.rides_total,
                s.deny_entries,
                vm_hwm_kib()
            );
        }
        _ => {
            eprintln!(
                "usage: reader_load decisions N cold|repeat | fill DIR RIDES DENY | measure DIR N"
            );
            std::process::exit(2);
        }
    }
}
