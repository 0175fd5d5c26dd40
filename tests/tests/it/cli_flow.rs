//! The foundation's acceptance flow through the real binaries:
//! `fare-keys init` → `fare-keys issue` → `fare-wallet init/install/code --png`
//! → `fare-validator decode --raw` gives back the exact ride-code bytes, an
//! independent decoder (zbarimg) reads the same PNG, and a provisioned
//! reader accepts the code once and then answers `already_used`.

use fare_e2e::{cmd, run_ok, stdout_ok};
use std::path::Path;
use std::process::Command;

const T0: u64 = fare_credential::testkit::TEST_NOW;

struct Flow {
    _tmp: tempfile::TempDir,
    keys: std::path::PathBuf,
    wallet: std::path::PathBuf,
    root: std::path::PathBuf,
}

fn setup() -> Flow {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let keys = root.join("keys");
    let wallet = root.join("wallet");
    run_ok(
        cmd("fare-keys")
            .args(["init", "--at", &T0.to_string(), "--dir"])
            .arg(&keys),
    );
    let device_key = stdout_ok(cmd("fare-wallet").arg("init").arg("--dir").arg(&wallet));
    assert_eq!(device_key.len(), 64, "device key is 64 hex characters");
    let cred = root.join("cred.bin");
    let cred_id = stdout_ok(
        cmd("fare-keys")
            .args([
                "issue",
                "--account",
                "acct-42",
                "--profile",
                "adult",
                "--valid-for",
                "72h",
            ])
            .args([
                "--at",
                &T0.to_string(),
                "--device-key",
                &device_key,
                "--dir",
            ])
            .arg(&keys)
            .arg("--out")
            .arg(&cred),
    );
    assert_eq!(cred_id.len(), 32);
    run_ok(
        cmd("fare-wallet")
            .args(["install", "--dir"])
            .arg(&wallet)
            .arg("--credential")
            .arg(&cred),
    );
    Flow {
        _tmp: tmp,
        keys,
        wallet,
        root,
    }
}

fn code_png(f: &Flow, at: u64, module_px: u32, name: &str) -> (Vec<u8>, std::path::PathBuf) {
    let png = f.root.join(name);
    let hex_code = stdout_ok(
        cmd("fare-wallet")
            .args([
                "code",
                "--hex",
                "--at",
                &at.to_string(),
                "--module-px",
                &module_px.to_string(),
            ])
            .arg("--png")
            .arg(&png)
            .arg("--dir")
            .arg(&f.wallet),
    );
    (hex::decode(hex_code).unwrap(), png)
}

fn decode_raw(png: &Path) -> Vec<u8> {
    run_ok(
        cmd("fare-validator")
            .args(["decode", "--raw", "--image"])
            .arg(png),
    )
    .stdout
}

#[test]
fn wallet_png_decodes_to_the_exact_bytes_at_several_module_sizes() {
    let f = setup();
    for (i, px) in [2u32, 3, 4, 6, 10].into_iter().enumerate() {
        let (bytes, png) = code_png(&f, T0 + 10 * i as u64, px, &format!("code{px}.png"));
        assert_eq!(bytes.len(), 199);
        assert_eq!(decode_raw(&png), bytes, "module size {px} px");
    }
    // No code in a blank image: exit 1, nothing on stdout.
    let blank = f.root.join("blank.png");
    image::GrayImage::from_pixel(200, 200, image::Luma([255]))
        .save(&blank)
        .unwrap();
    let out = cmd("fare-validator")
        .args(["decode", "--raw", "--image"])
        .arg(&blank)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
}

/// An independent decoder reads our PNG (Debian's zbar-tools). `.ci/run`
/// installs zbar-tools and sets FARE_REQUIRE_ZBAR=1, so in CI this cannot skip.
#[test]
fn zbarimg_reads_the_same_bytes() {
    let have_zbar = Command::new("zbarimg").arg("--version").output().is_ok();
    if !have_zbar {
        assert!(
            std::env::var_os("FARE_REQUIRE_ZBAR").is_none(),
            "FARE_REQUIRE_ZBAR is set but zbarimg is missing: apt-get install zbar-tools"
        );
        eprintln!("SKIPPED: zbarimg not installed (apt-get install zbar-tools)");
        return;
    }
    let f = setup();
    let (bytes, png) = code_png(&f, T0, 4, "zbar.png");
    // -Sbinary: hand back the payload bytes without charset conversion.
    let out = run_ok(
        Command::new("zbarimg")
            .args(["--raw", "-q", "-Sbinary"])
            .arg(&png),
    )
    .stdout;
    // zbarimg ends its output with a newline, except (seen with
    // -Sbinary) when the payload itself ends in one: compare both ways, as
    // a payload whose last byte is 0x0a is 1 in 256.
    let got = if out.as_slice() == bytes.as_slice() {
        &out[..]
    } else {
        out.strip_suffix(b"\n").unwrap_or(&out)
    };
    assert_eq!(got, bytes.as_slice(), "zbarimg decoded different bytes");
}

#[test]
fn reader_accepts_a_fresh_code_once_then_already_used() {
    let f = setup();
    let bundle = f.root.join("bundle.bin");
    run_ok(
        cmd("fare-keys")
            .args(["bundle", "--at", &T0.to_string(), "--dir"])
            .arg(&f.keys)
            .arg("--out")
            .arg(&bundle),
    );
    let reader = f.root.join("reader");
    run_ok(
        cmd("fare-validator")
            .args([
                "provision",
                "--reader-id",
                "7",
                "--vehicle",
                "BUS-1",
                "--route",
                "R1",
            ])
            .args(["--at", &T0.to_string(), "--dir"])
            .arg(&reader)
            .arg("--bundle")
            .arg(&bundle)
            .arg("--root-key")
            .arg(f.keys.join("root.pub")),
    );
    let (_, png) = code_png(&f, T0 + 5, 4, "ride.png");
    let scan = |at: u64| {
        let out = cmd("fare-validator")
            .args(["scan", "--json", "--at", &at.to_string(), "--dir"])
            .arg(&reader)
            .arg("--image")
            .arg(&png)
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "scan --json printed no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
        (out.status.code(), v)
    };
    let (code, v) = scan(T0 + 10);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["decision"], "accept", "{v}");
    assert!(!v["ride_id"].is_null(), "accept carries a ride id: {v}");
    assert!(v["latency_us"].is_u64(), "{v}");
    let (code, v) = scan(T0 + 12);
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(v["decision"], "reject");
    assert_eq!(v["reason"], "already_used", "{v}");
    // Much later the same screenshot is simply expired.
    let (_, v) = scan(T0 + 600);
    assert_eq!(v["reason"], "code_expired", "{v}");
}
