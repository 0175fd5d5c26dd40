//! Every reject reason, end to end through the `fare-validator` binary.

use crate::common::*;
use fare_credential::{CredentialId, DenyUpdate, RideCode};
use rand_chacha::rand_core::SeedableRng;
use std::path::Path;

fn setup(seed: u64) -> (TestDeployment, tempfile::TempDir, std::path::PathBuf) {
    let dep = deployment(seed);
    let tmp = tempfile::tempdir().unwrap();
    let bundle = dep.snapshot(1, vec![]);
    let dir = provision_cli(&dep, tmp.path(), &bundle);
    (dep, tmp, dir)
}

/// `fare-validator CMD --dir DIR ARGS.. --at AT`: a command on the reader
/// in `dir` with its clock pinned, as (exit code, stdout, stderr).
fn cli_at(cmd: &str, dir: &Path, args: &[&str], at: u64) -> (i32, String, String) {
    let at = at.to_string();
    let mut all = vec![cmd, "--dir", dir.to_str().unwrap()];
    all.extend_from_slice(args);
    all.extend(["--at", &at]);
    cli(&all)
}

/// Parses CLI output that prints one JSON value a line (`export`, `run`).
fn json_lines(out: &str) -> Vec<serde_json::Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Each decision's `reason`, `accept` for an accept (which has none).
fn reasons(decisions: &[serde_json::Value]) -> Vec<String> {
    decisions
        .iter()
        .map(|d| d["reason"].as_str().unwrap_or("accept").to_string())
        .collect()
}

/// `export --dir DIR`: the logged rides' records; the export must succeed.
fn export_records(dir: &Path) -> Vec<serde_json::Value> {
    let (code, out, err) = cli(&["export", "--dir", dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    json_lines(&out)
}

/// `status --dir DIR --json --at T`: (exit code, status JSON).
fn status_json(dir: &Path, at: u64) -> (i32, serde_json::Value) {
    let (code, out, _) = cli_at("status", dir, &["--json"], at);
    (code, serde_json::from_str(&out).unwrap())
}

/// Writes `bundle` to `file` and offers it to the reader in `dir` with
/// `install-bundle --at NOW`: (exit code, stdout, stderr).
fn install_bundle(dir: &Path, file: &Path, bundle: &[u8]) -> (i32, String, String) {
    std::fs::write(file, bundle).unwrap();
    cli_at(
        "install-bundle",
        dir,
        &["--bundle", file.to_str().unwrap()],
        NOW,
    )
}

/// `decode --image FILE --raw`: the process output (raw bytes on stdout).
fn decode_raw(image: &Path) -> std::process::Output {
    bin()
        .args(["decode", "--image", image.to_str().unwrap(), "--raw"])
        .output()
        .unwrap()
}

/// `scan --image FILE --at NOW --json`: (exit code, decision JSON).
fn scan_image(dir: &Path, image: &Path) -> (i32, serde_json::Value) {
    let image = image.to_str().unwrap();
    let (code, out, err) = cli_at("scan", dir, &["--image", image, "--json"], NOW);
    let v = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("scan output not JSON ({e}): {out} / {err}"));
    (code, v)
}

#[test]
fn fresh_code_accepts_then_already_used_and_companion_ride_is_new() {
    let (mut dep, _tmp, dir) = setup(1);
    let w = dep.wallet();
    let code = w.code(NOW, 1);
    assert_eq!(assert_accept(&dir, &code, NOW), 1);
    let v = assert_reject(&dir, &code, NOW + 5, "already_used");
    assert!(v["message"].as_str().unwrap().contains("ride 1"), "{v}");
    // Companion: the same phone shows its next code (higher sequence).
    assert_eq!(assert_accept(&dir, &w.code(NOW + 1, 2), NOW + 6), 2);
    // A re-signed code with a used sequence but another time is still a replay.
    assert_reject(&dir, &w.code(NOW + 2, 2), NOW + 7, "already_used");
    // A different rider.
    let w2 = dep.wallet();
    assert_eq!(assert_accept(&dir, &w2.code(NOW, 1), NOW + 8), 3);
    // The log holds exactly the three rides, chained.
    let recs = export_records(&dir);
    assert_eq!(recs.len(), 3);
    assert_eq!(recs[0]["code"], hex::encode(code_bytes(&w, NOW, 1)));
    assert_eq!(recs[2]["reader_seq"], 3);
    assert_eq!(recs[1]["vehicle"], "bus-1");
}

fn code_bytes(w: &TestWallet, t: u64, seq: u32) -> Vec<u8> {
    w.code(t, seq)
}

#[test]
fn decision_json_has_stage_timings_and_latency() {
    let (mut dep, _tmp, dir) = setup(2);
    let w = dep.wallet();
    let (_, v) = scan(&dir, &w.code(NOW, 1), NOW);
    for stage in [
        "parse",
        "credential",
        "device",
        "time",
        "deny",
        "replay",
        "append",
    ] {
        assert!(v["stages_ns"][stage].is_u64(), "missing stage {stage}: {v}");
    }
    assert!(v["latency_us"].is_u64());
    assert_eq!(v["at_unix_s"], NOW);
    assert_eq!(v["profile"], "adult");
    assert_eq!(v["credential_id"], w.id().to_hex());
}

#[test]
fn time_reasons_expired_future_and_credential_windows() {
    let (mut dep, _tmp, dir) = setup(3);
    let w = dep.wallet();
    // Default policy: 60 s validity + 30 s skew.
    let v = assert_reject(&dir, &w.code(NOW - 91, 1), NOW, "code_expired");
    assert_eq!(v["clock_related"], true);
    assert_eq!(v["forgery"], false);
    assert_eq!(
        assert_accept(&dir, &w.code(NOW - 90, 2), NOW),
        1,
        "edge of the window accepts"
    );
    assert_reject(&dir, &w.code(NOW + 31, 3), NOW, "code_from_future");
    assert_eq!(
        assert_accept(&dir, &w.code(NOW + 30, 4), NOW),
        2,
        "skew tolerance accepts"
    );

    let old = dep.wallet_with(TestIssuer::KEY_ID, None, NOW - 7200, NOW - 3600);
    assert_reject(&dir, &old.code(NOW, 1), NOW, "credential_expired");
    let early = dep.wallet_with(TestIssuer::KEY_ID, None, NOW + 3600, NOW + 7200);
    assert_reject(&dir, &early.code(NOW, 1), NOW, "credential_not_yet_valid");
}

#[test]
fn skew_tolerance_is_configurable() {
    let (mut dep, _tmp, dir) = setup(4);
    set_config(&dir, "skew_tolerance_s", "0");
    let w = dep.wallet();
    assert_reject(&dir, &w.code(NOW - 61, 1), NOW, "code_expired");
    assert_reject(&dir, &w.code(NOW + 1, 2), NOW, "code_from_future");
    assert_accept(&dir, &w.code(NOW - 60, 3), NOW);
}

#[test]
fn forgeries_are_refused_as_forgeries() {
    let (mut dep, _tmp, dir) = setup(5);
    // Credential signed by a key that is not the issuer's, claiming key 1.
    let forger = dep.next_key();
    let forged = dep.wallet_with(TestIssuer::KEY_ID, Some(&forger), NOW - 10, NOW + 3600);
    let v = assert_reject(&dir, &forged.code(NOW, 1), NOW, "bad_issuer_signature");
    assert_eq!(v["forgery"], true);
    // Genuine credential, code signed by another device.
    let w = dep.wallet();
    let thief = dep.next_key();
    let code = RideCode::sign_v1(&w.credential, NOW as u32, 1, &thief);
    assert_reject(&dir, code.as_bytes(), NOW, "bad_device_signature");
    // A tampered time field reads as forgery, not as a clock problem.
    let mut bytes = w.code(NOW, 2);
    let time_at = 1 + 126;
    bytes[time_at + 3] ^= 1;
    assert_reject(&dir, &bytes, NOW, "bad_device_signature");
    // The rider's own device key, with a nonce point R of mixed order (each
    // small-order component): a batch verifier could accept it, the reader
    // must not.
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(5);
    for (n, torsion) in (1..=7).enumerate() {
        let bytes = fare_credential::testkit::resign_with_mixed_order_r(
            &w.code(NOW, 10 + n as u32),
            &w.device,
            torsion,
            &mut rng,
        );
        assert_reject(&dir, &bytes, NOW, "bad_device_signature");
    }
    // Unknown issuer key id.
    let unknown = dep.wallet_with(99, None, NOW - 10, NOW + 3600);
    assert_reject(&dir, &unknown.code(NOW, 1), NOW, "unknown_issuer_key");
    // Garbage and a future format version.
    assert_reject(&dir, &[1u8, 0, 2, 3], NOW, "malformed");
    let mut v2 = w.code(NOW, 3);
    v2[0] = 2;
    assert_reject(&dir, &v2, NOW, "unsupported_version");
    // Nothing above was logged as a ride.
    assert_accept(&dir, &w.code(NOW, 4), NOW);
}

#[test]
fn issuer_key_outside_its_window() {
    let (mut dep, _tmp, dir) = setup(6);
    let w = dep.wallet_with(
        TestIssuer::KEY_ID,
        None,
        NOW + 300 * 86_400,
        NOW + 400 * 86_400,
    );
    // Reader time past the key's end (trust stays fresh: reject_after 0).
    set_config(&dir, "reject_after_s", "0");
    let t = NOW + 366 * 86_400;
    assert_reject(&dir, &w.code(t, 1), t, "issuer_key_not_valid");
}

#[test]
fn revoked_by_snapshot_and_by_delta() {
    let mut dep = deployment(7);
    let tmp = tempfile::tempdir().unwrap();
    let victim = dep.wallet();
    let later = dep.wallet();
    let mut deny: Vec<CredentialId> = (0..1000u32)
        .map(|i| CredentialId([(i % 251) as u8; 16]))
        .collect();
    deny.push(victim.id());
    let first = dep.bundle_v2([1; 16], 1, NOW, DenyUpdate::Snapshot(deny.clone()), None);
    let dir = provision_cli(&dep, tmp.path(), &first);
    let v = assert_reject(&dir, &victim.code(NOW, 1), NOW, "revoked");
    assert!(v["message"]
        .as_str()
        .unwrap()
        .contains(&victim.id().to_hex()));
    assert_accept(&dir, &later.code(NOW, 1), NOW);
    // Delta from version 1 (and its exact list): revoke `later`, lift `victim`.
    let delta = dep.bundle_v2(
        [1; 16],
        2,
        NOW,
        DenyUpdate::Delta {
            base_version: 1,
            add: vec![later.id()],
            remove: vec![victim.id()],
        },
        Some(&deny),
    );
    let (code, _, err) = install_bundle(&dir, &tmp.path().join("delta.bin"), &delta);
    assert_eq!(code, 0, "{err}");
    assert_reject(&dir, &later.code(NOW, 2), NOW, "revoked");
    assert_accept(&dir, &victim.code(NOW, 2), NOW);
}

#[test]
fn bundle_rollback_bad_signature_and_wrong_delta_base_are_refused() {
    let mut dep = deployment(8);
    let tmp = tempfile::tempdir().unwrap();
    let dir = provision_cli(&dep, tmp.path(), &dep.snapshot(5, vec![]));
    let offer = tmp.path().join("offer.bin");
    let install = |bytes: &[u8]| install_bundle(&dir, &offer, bytes);
    let (code, _, err) = install(&dep.snapshot(4, vec![]));
    assert_eq!(code, 2);
    assert!(err.contains("rollback refused"), "{err}");
    let (code, _, err) = install(&dep.snapshot(5, vec![]));
    assert_eq!(code, 2);
    assert!(err.contains("already installed"), "{err}");
    // Signed by someone else's root.
    let evil = deployment(99);
    let (code, _, err) = install(&evil.snapshot(6, vec![]));
    assert_eq!(code, 2);
    assert!(err.contains("bundle refused"), "{err}");
    // One flipped byte.
    let mut tampered = dep.snapshot(6, vec![]);
    tampered[20] ^= 0x40;
    let (code, _, _) = install(&tampered);
    assert_eq!(code, 2);
    // Delta from a version this reader does not hold.
    let delta = dep.bundle_v1(
        6,
        NOW,
        DenyUpdate::Delta {
            base_version: 3,
            add: vec![],
            remove: vec![],
        },
    );
    let (code, _, err) = install(&delta);
    assert_eq!(code, 2);
    assert!(err.contains("delta from version 3"), "{err}");
    // Still on version 5 and working.
    let (code, s) = status_json(&dir, NOW);
    assert_eq!(code, 0);
    assert_eq!(s["bundle_version"], 5);
    assert_accept(&dir, &dep.wallet().code(NOW, 1), NOW);
    // A bad bundle at provisioning leaves nothing behind.
    let other = tmp.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let (root, b) = evil.write_files(&other, &evil.snapshot(1, vec![]));
    std::fs::write(
        &root,
        format!("{}\n", hex::encode(dep.root.verifying_key().as_bytes())),
    )
    .unwrap();
    let rdir = other.join("r");
    let (code, _, err) = cli(&[
        "provision",
        "--dir",
        rdir.to_str().unwrap(),
        "--reader-id",
        "9",
        "--vehicle",
        "v",
        "--route",
        "r",
        "--bundle",
        b.to_str().unwrap(),
        "--root-key",
        root.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(!rdir.exists());
}

#[test]
fn stale_trust_material_follows_the_policy() {
    let (mut dep, _tmp, dir) = setup(9);
    let w = dep.wallet_with(TestIssuer::KEY_ID, None, NOW - 3600, NOW + 30 * 86_400);
    // Defaults: warn after 2 days, refuse after 7 days (bundle server time = NOW).
    let t = NOW + 3 * 86_400;
    let (code, v) = scan(&dir, &w.code(t, 1), t);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["warnings"][0], "trust_aging");
    let t = NOW + 7 * 86_400 + 1;
    let v = assert_reject(&dir, &w.code(t, 2), t, "trust_stale");
    assert!(v["message"].as_str().unwrap().contains("must sync"), "{v}");
    // An operator who prefers to keep riding on old material can say so.
    set_config(&dir, "reject_after_s", "0");
    let (code, v) = scan(&dir, &w.code(t, 3), t);
    assert_eq!(code, 0, "{v}");
    // A tighter policy refuses sooner.
    set_config(&dir, "reject_after_s", "3600");
    let t = NOW + 3601;
    assert_reject(&dir, &w.code(t, 4), t, "trust_stale");
    let (_, s) = status_json(&dir, t);
    assert_eq!(s["trust_state"], "stale");
}

#[test]
fn storage_full_refuses_rides_and_keeps_the_log() {
    let (mut dep, _tmp, dir) = setup(10);
    let w = dep.wallet();
    assert_accept(&dir, &w.code(NOW, 1), NOW);
    let (_, s) = status_json(&dir, NOW);
    let used = s["used_bytes"].as_u64().unwrap();
    // Room for exactly two records.
    set_config(&dir, "max_log_bytes", &(2 * used).to_string());
    assert_accept(&dir, &w.code(NOW, 2), NOW);
    let v = assert_reject(&dir, &w.code(NOW, 3), NOW, "storage_full");
    assert!(v["message"].as_str().unwrap().contains("uploads"), "{v}");
    // The refused code was not spent: once space frees up it is accepted.
    {
        let mut r = fare_validator::Reader::open(&dir, NOW).unwrap();
        r.acknowledge(1).unwrap();
    }
    assert_eq!(assert_accept(&dir, &w.code(NOW, 3), NOW), 3);
    let seqs: Vec<u64> = export_records(&dir)
        .iter()
        .map(|r| r["reader_seq"].as_u64().unwrap())
        .collect();
    assert_eq!(
        seqs,
        vec![2, 3],
        "acknowledged ride 1 was compacted early to make room"
    );
}

#[test]
fn usage_errors_exit_2() {
    let (_dep, tmp, dir) = setup(11);
    let (code, _, err) = cli(&[
        "scan",
        "--dir",
        dir.to_str().unwrap(),
        "--payload",
        "zz",
        "--json",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("not hex"), "{err}");
    let (code, _, err) = cli(&[
        "scan",
        "--dir",
        tmp.path().join("nope").to_str().unwrap(),
        "--payload",
        "00",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("not a provisioned reader"), "{err}");
    let (code, _, _) = cli(&["scan", "--dir", dir.to_str().unwrap()]);
    assert_eq!(code, 2);
    // A config value out of range names its key and the expected range.
    set_config(&dir, "decode_budget_ms", "0");
    let (code, _, err) = cli(&["scan", "--dir", dir.to_str().unwrap(), "--payload", "00"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("camera.decode_budget_ms") && err.contains("1..=1000"),
        "{err}"
    );
}

#[test]
fn run_streams_one_json_decision_per_line() {
    let (mut dep, _tmp, dir) = setup(12);
    let w = dep.wallet();
    let a = hex::encode(w.code(NOW, 1));
    let long = "a".repeat(3000);
    let input = format!(
        "{a}\n# comment\n\n{a}\nnot-hex\n{long}\n{}\n",
        hex::encode(w.code(NOW, 2))
    );
    let out = feed_and_wait(run_stream(&dir).spawn().unwrap(), &input);
    assert!(out.status.success());
    let lines = json_lines(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(
        reasons(&lines),
        ["accept", "already_used", "malformed", "malformed", "accept"]
    );
    assert!(
        lines[3]["message"].as_str().unwrap().contains("line limit"),
        "{}",
        lines[3]
    );
    assert_eq!(lines[4]["ride_id"]["seq"], 2);
    // Rejected scans went to the analytics log.
    let (_, out, _) = cli(&["export", "--dir", dir.to_str().unwrap(), "--rejected"]);
    assert!(out.contains("already_used"), "{out}");
}

#[test]
fn qr_images_scan_decode_and_no_code_found() {
    let (mut dep, tmp, dir) = setup(13);
    let w = dep.wallet();
    let code = w.code(NOW, 1);
    let png = tmp.path().join("code.png");
    std::fs::write(&png, fare_qr::render_png(&code, 4).unwrap()).unwrap();
    // decode --raw: the exact bytes.
    let out = decode_raw(&png);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(out.stdout, code);
    // scan --image: accept, with a decode stage timing.
    let (c, v) = scan_image(&dir, &png);
    assert_eq!(c, 0, "{v}");
    assert_eq!(v["decision"], "accept");
    assert!(v["stages_ns"]["decode"].is_u64());
    // A blank frame: no code.
    let blank = tmp.path().join("blank.png");
    image::GrayImage::from_pixel(640, 480, image::Luma([255u8]))
        .save(&blank)
        .unwrap();
    let out = decode_raw(&blank);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let (c, v) = scan_image(&dir, &blank);
    assert_eq!(c, 1);
    assert_eq!(v["reason"], "no_code_found");
    // run over a directory of frames, sorted by name.
    let frames = tmp.path().join("frames");
    std::fs::create_dir(&frames).unwrap();
    std::fs::copy(&png, frames.join("1.png")).unwrap();
    std::fs::copy(&blank, frames.join("2.png")).unwrap();
    std::fs::write(
        frames.join("3.png"),
        fare_qr::render_png(&w.code(NOW, 2), 4).unwrap(),
    )
    .unwrap();
    let (c, outp, err) = cli_at("run", &dir, &["--frames", frames.to_str().unwrap()], NOW);
    assert_eq!(c, 0, "{err}");
    assert_eq!(
        reasons(&json_lines(&outp)),
        ["already_used", "no_code_found", "accept"]
    );
}
