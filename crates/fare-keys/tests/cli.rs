//! The `fare-keys` binary: init, issue, rotate, bundle, and its errors.

use fare_credential::{Credential, ReaderBundle, VerifyingKey};
use std::process::Command;

const AT: &str = "1800000000";

fn keys() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fare-keys"))
}

use fare_credential::testkit::run_stdout as ok;

#[test]
fn init_issue_rotate_bundle() {
    let d = tempfile::tempdir().unwrap();
    let k = d.path().join("keys");
    ok(keys().args(["init", "--at", AT, "--dir"]).arg(&k));
    // Refuses to overwrite a deployment.
    let out = keys().args(["init", "--dir"]).arg(&k).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing to overwrite"));

    let device = "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c";
    let cred_path = d.path().join("cred.bin");
    let id = ok(keys()
        .args([
            "issue",
            "--account",
            "acct-1",
            "--profile",
            "senior",
            "--valid-for",
            "72h",
            "--at",
            AT,
        ])
        .args(["--device-key", device, "--dir"])
        .arg(&k)
        .arg("--out")
        .arg(&cred_path));
    let cred = Credential::from_bytes(&std::fs::read(&cred_path).unwrap()).unwrap();
    assert_eq!(id.trim(), cred.id().to_hex());
    assert_eq!(
        cred.body().valid_until_unix_s as u64,
        1_800_000_000 + 72 * 3600
    );
    let issued = std::fs::read_to_string(k.join("issued.jsonl")).unwrap();
    assert!(issued.contains("acct-1") && issued.contains(id.trim()));

    ok(keys()
        .args(["rotate-issuer", "--at", "1800000100", "--dir"])
        .arg(&k));
    let bundle_path = d.path().join("bundle.bin");
    ok(keys()
        .args(["bundle", "--at", "1800000200", "--deny"])
        .arg(id.trim())
        .arg("--dir")
        .arg(&k)
        .arg("--out")
        .arg(&bundle_path));
    let root_hex = std::fs::read_to_string(k.join("root.pub")).unwrap();
    let root: [u8; 32] = hex::decode(root_hex.trim()).unwrap().try_into().unwrap();
    let b = ReaderBundle::verify_v1(
        &std::fs::read(&bundle_path).unwrap(),
        &VerifyingKey::from_bytes(&root).unwrap(),
    )
    .unwrap();
    assert_eq!(b.trust.len(), 2);
    assert_eq!(b.server_time_unix_s, 1_800_000_200);
    // Bundle versions increase.
    ok(keys()
        .args(["bundle", "--dir"])
        .arg(&k)
        .arg("--out")
        .arg(&bundle_path));
    let b2 = ReaderBundle::verify_v1(
        &std::fs::read(&bundle_path).unwrap(),
        &VerifyingKey::from_bytes(&root).unwrap(),
    )
    .unwrap();
    assert!(b2.bundle_version > b.bundle_version);
}

#[test]
fn bad_input_is_a_clear_usage_error() {
    let d = tempfile::tempdir().unwrap();
    let k = d.path().join("keys");
    ok(keys().args(["init", "--dir"]).arg(&k));
    for (args, needle) in [
        (vec!["--device-key", "abcd"], "expected 32 bytes"),
        (vec!["--device-key", "zz"], "expected 64 hex"),
        (
            vec![
                "--device-key",
                "0100000000000000000000000000000000000000000000000000000000000000",
            ],
            "small order",
        ),
        (
            vec![
                "--device-key",
                "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
                "--valid-for",
                "90d",
            ],
            "valid_for_s",
        ),
    ] {
        let out = keys()
            .args(["issue", "--account", "a"])
            .args(&args)
            .arg("--dir")
            .arg(&k)
            .arg("--out")
            .arg(d.path().join("c"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let out = keys()
        .args(["show", "--dir"])
        .arg(d.path().join("nope"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("keys.json"));
}
