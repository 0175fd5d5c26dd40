//! The `fare-wallet` binary against a real key store: codes as hex and PNG.

use fare_credential::{verify_ride_code, DenyList, Policy, TrustList};
use fare_keys::KeyStore;
use std::process::Command;

use fare_credential::testkit::run_stdout as run;

#[test]
fn init_install_code_hex_and_png() {
    let d = tempfile::tempdir().unwrap();
    let w = d.path().join("wallet");
    let wallet = || Command::new(env!("CARGO_BIN_EXE_fare-wallet"));
    let pk_hex = run(wallet().arg("init").arg("--dir").arg(&w));
    let pk: [u8; 32] = hex::decode(pk_hex.trim()).unwrap().try_into().unwrap();

    let t0 = 1_800_000_000u64;
    let ks = KeyStore::init(&d.path().join("keys"), t0, &mut rand_core::OsRng).unwrap();
    let cred = ks
        .issue_credential(
            &fare_keys::IssueRequest {
                device_public_key: pk,
                profile: fare_credential::Profile::Student,
                valid_from_unix_s: t0,
                valid_for_s: 86_400,
            },
            t0,
            &mut rand_core::OsRng,
        )
        .unwrap();
    let cp = d.path().join("cred.bin");
    std::fs::write(&cp, cred.as_bytes()).unwrap();
    // The phone's clock is 40 s behind the server at install.
    run(wallet()
        .args([
            "install",
            "--server-time",
            "1800000040",
            "--at",
            "1800000000",
            "--dir",
        ])
        .arg(&w)
        .arg("--credential")
        .arg(&cp));

    let trust = TrustList::new(ks.trust_list()).unwrap();
    let mut seqs = Vec::new();
    for i in 0..3u64 {
        let hex_code = run(wallet()
            .args(["code", "--hex", "--at"])
            .arg((t0 + 30 * i).to_string())
            .arg("--dir")
            .arg(&w));
        let bytes = hex::decode(hex_code.trim()).unwrap();
        assert_eq!(bytes.len(), 199);
        let v = verify_ride_code(
            &bytes,
            &trust,
            &DenyList::default(),
            &Policy::default(),
            t0 + 40 + 30 * i,
            None,
        )
        .unwrap();
        assert_eq!(
            v.issued_at_unix_s as u64,
            t0 + 40 + 30 * i,
            "clock offset applied"
        );
        seqs.push(v.device_seq);
    }
    assert_eq!(seqs, vec![1, 2, 3]);

    // PNG: decodes back to a code that verifies.
    let png = d.path().join("code.png");
    run(wallet()
        .args(["code", "--at", "1800000100", "--png"])
        .arg(&png)
        .arg("--dir")
        .arg(&w));
    let bytes = fare_qr::decode_file(&png).unwrap();
    let v = verify_ride_code(
        &bytes,
        &trust,
        &DenyList::default(),
        &Policy::default(),
        t0 + 140,
        None,
    )
    .unwrap();
    assert_eq!(v.device_seq, 4);

    // A credential for another device is refused with both keys named.
    let other = run(wallet().arg("init").arg("--dir").arg(d.path().join("w2")));
    let out = wallet()
        .arg("install")
        .arg("--dir")
        .arg(d.path().join("w2"))
        .arg("--credential")
        .arg(&cp)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(other.trim()) && err.contains(pk_hex.trim()),
        "{err}"
    );
}

#[test]
fn terminal_view_and_missing_credential() {
    let d = tempfile::tempdir().unwrap();
    let w = d.path().join("wallet");
    let wallet = || Command::new(env!("CARGO_BIN_EXE_fare-wallet"));
    run(wallet().arg("init").arg("--dir").arg(&w));
    let out = wallet().arg("code").arg("--dir").arg(&w).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no credential installed"));
}
