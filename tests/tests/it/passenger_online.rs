//! A passenger and an operator through the real binaries (issue #11):
//! `fare-wallet enroll/renew/code/install`, `fare-settlement admin`,
//! `fare-keys` beside a running settlement service (in-process, real HTTP
//! on loopback, a manual clock) and a real reader (`fare-validator`'s
//! `Reader`, syncing over HTTP) deciding every code.

use crate::svc::{Svc, TOKEN};
use fare_credential::{Credential, RideCode, SigningKey};
use fare_e2e::cmd;
use fare_validator::{sync, Reader};
use serde_json::{json, Value};
use std::path::Path;
use std::process::Output;

/// 2026-03-10 08:00 Asia/Shanghai.
const T0: u64 = fare_credential::testkit::DEMO_DAY_T0;
/// The phone's clock is 10 minutes slow.
const PHONE_SLOW_S: u64 = 600;

/// Runs a workspace binary off the async workers.
async fn run(name: &'static str, args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || cmd(name).args(&args).output().unwrap())
        .await
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

fn dir_arg(p: &Path) -> String {
    p.display().to_string()
}

/// The phone's clock now (slow by [`PHONE_SLOW_S`]).
fn phone_now(svc: &Svc) -> String {
    (svc.app.now() - PHONE_SLOW_S).to_string()
}

/// `fare-wallet code --hex` at the phone's clock.
async fn code_output(svc: &Svc, wallet: &Path) -> Output {
    let at = phone_now(svc);
    let a = ["code", "--hex", "--dir", &dir_arg(wallet), "--at", &at];
    run("fare-wallet", args(&a)).await
}

/// One ride code from the wallet CLI, at the phone's clock.
async fn code(svc: &Svc, wallet: &Path) -> Vec<u8> {
    hex::decode(ok(&code_output(svc, wallet).await)).unwrap()
}

/// `fare-wallet enroll` of `wallet` for `account` with the passenger
/// `token`, at the phone's clock.
async fn enroll(svc: &Svc, wallet: &Path, account: &str, token: &str) -> Output {
    let (dir, at) = (dir_arg(wallet), phone_now(svc));
    let a = [
        "enroll",
        "--dir",
        &dir,
        "--server",
        &svc.url,
        "--account",
        account,
        "--token",
        token,
        "--at",
        &at,
    ];
    run("fare-wallet", args(&a)).await
}

/// `fare-wallet renew` of `wallet` (its own server, or `server`), at the phone's clock.
async fn renew(svc: &Svc, wallet: &Path, server: Option<&str>) -> Output {
    let (dir, at) = (dir_arg(wallet), phone_now(svc));
    let mut a = vec!["renew", "--dir", &dir];
    if let Some(url) = server {
        a.extend(["--server", url]);
    }
    a.extend(["--at", &at]);
    run("fare-wallet", args(&a)).await
}

/// `fare-wallet install` of the credential file `cred` into `wallet`.
async fn install(wallet: &Path, cred: &Path) -> Output {
    let a = [
        "install",
        "--dir",
        &dir_arg(wallet),
        "--credential",
        &dir_arg(cred),
    ];
    run("fare-wallet", args(&a)).await
}

/// Byte ranges of a ride code that identify its credential or phone:
/// credential id, device key, issuer signature, device signature (SPEC §2, §3).
const IDENTIFYING: [std::ops::Range<usize>; 4] = [6..22, 22..54, 63..127, 135..199];

/// Codes of two credentials share no run of 4 identifying bytes anywhere,
/// and agree position by position outside the fields every rider of the
/// profile shares (versions, issuer key id, profile, times, sequence) no
/// more than chance allows.
fn assert_unlinkable(a: &[u8], b: &[u8]) {
    for r in IDENTIFYING {
        for w in a[r.clone()].windows(4) {
            assert!(
                !b.windows(4).any(|x| x == w),
                "bytes {w:02x?} of range {r:?} reappear in another credential's code"
            );
        }
    }
    let same: usize = IDENTIFYING
        .iter()
        .flat_map(|r| r.clone())
        .filter(|&i| a[i] == b[i])
        .count();
    // 176 random bytes: 0.69 equal positions expected; 7 or more: p < 1e-5.
    assert!(same < 7, "{same} identifying positions equal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewals_make_fresh_unlinkable_credentials_a_reader_accepts_on_a_slow_phone() {
    let svc = Svc::start(T0, None).await;
    let rdir = tempfile::tempdir().unwrap();
    let mut reader = svc.reader(rdir.path(), 1).await;
    let token = svc.account_and_token("alice").await;
    let w = tempfile::tempdir().unwrap();
    let wallet = w.path().join("wallet");

    let out = enroll(&svc, &wallet, "alice", &token).await;
    let mut ids = vec![ok(&out)];
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("phone clock offset 600 s"), "{stderr}");
    // The operator's copy of the token was exchanged: it no longer works.
    let r = svc
        .client
        .get(format!("{}/v1/accounts/alice", svc.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);

    // Every code is decided by the reader (synced first) when it is shown.
    let mut codes = Vec::new();
    let mut keys = Vec::new();
    for renewal in 0..4 {
        if renewal > 0 {
            svc.clock.advance(3600);
            let out = renew(&svc, &wallet, Some(&svc.url)).await;
            ids.push(ok(&out));
        }
        keys.push(std::fs::read_to_string(wallet.join("device.pub")).unwrap());
        let c = code(&svc, &wallet).await;
        sync::sync(&mut reader, &svc.url, svc.app.now())
            .await
            .unwrap();
        // Accepted at server time although the phone is 10 minutes slow.
        let d = reader.decide_payload(&c, svc.app.now() + 2);
        assert!(d.is_accept(), "credential {renewal}: {}", d.message());
        assert_eq!(
            RideCode::from_bytes(&c).unwrap().issued_at_unix_s() as u64,
            svc.app.now(),
            "stamped with corrected time"
        );
        codes.push(c);
    }
    // Four credentials (enrolment + three renewals): distinct ids and keys.
    let distinct = |v: &Vec<String>| v.iter().collect::<std::collections::BTreeSet<_>>().len();
    assert_eq!(
        (distinct(&ids), distinct(&keys)),
        (4, 4),
        "{ids:?} {keys:?}"
    );
    for (i, c) in codes.iter().enumerate() {
        let parsed = RideCode::from_bytes(c).unwrap();
        assert_eq!(parsed.credential().id().to_hex(), ids[i]);
        assert_eq!(
            parsed.device_seq(),
            1,
            "the sequence restarts with each key"
        );
        for d in &codes[..i] {
            assert_unlinkable(c, d);
            assert_unlinkable(d, c);
        }
    }
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_phone_is_refused_until_it_renews_online_and_reused_keys_are_refused_everywhere() {
    let svc = Svc::start(T0, None).await;
    let rdir = tempfile::tempdir().unwrap();
    let mut reader = svc.reader(rdir.path(), 2).await;
    let token = svc.account_and_token("bob").await;
    let (s, v) = svc.op("/v1/accounts", json!({"account_id": "carol"})).await;
    assert_eq!(s, 201, "{v}");
    let w = tempfile::tempdir().unwrap();
    let wallet = w.path().join("wallet");

    // Offline path: the operator registers the wallet's key, the passenger
    // installs the hex credential the API answered with, no server time.
    let device_pub = ok(&run("fare-wallet", args(&["init", "--dir", &dir_arg(&wallet)])).await);
    let (s, v) = svc
        .op(
            "/v1/accounts/bob/devices",
            json!({"device_public_key": device_pub, "valid_for_s": 86_400}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let hex_file = w.path().join("cred.hex");
    std::fs::write(
        &hex_file,
        format!("{}\n", v["credential"].as_str().unwrap()),
    )
    .unwrap();
    ok(&install(&wallet, &hex_file).await);
    let c = code(&svc, &wallet).await;
    let d = reader.decide_payload(&c, svc.app.now());
    assert_eq!(
        d.reason_code(),
        Some("code_expired"),
        "10 minutes slow: {}",
        d.message()
    );

    // The same device key again: settlement refuses it for bob and for carol.
    for account in ["bob", "carol"] {
        let (s, v) = svc
            .op(
                &format!("/v1/accounts/{account}/devices"),
                json!({"device_public_key": device_pub, "valid_for_s": 86_400}),
            )
            .await;
        assert_eq!(
            (s, v["error"].as_str()),
            (409, Some("device_key_reused")),
            "{account}: {v}"
        );
    }
    // A second credential for the key made offline beside the service
    // (`fare-keys issue` knows nothing of settlement's records): the wallet refuses it.
    let second = w.path().join("second.bin");
    ok(&run(
        "fare-keys",
        args(&[
            "issue",
            "--dir",
            &dir_arg(&svc.keys_dir()),
            "--account",
            "carol",
            "--device-key",
            &device_pub,
            "--valid-for",
            "24h",
            "--out",
            &dir_arg(&second),
            "--at",
            &svc.app.now().to_string(),
        ]),
    )
    .await);
    let out = install(&wallet, &second).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing a second credential"));
    // A file in neither encoding: the error names both.
    let junk = w.path().join("junk");
    std::fs::write(&junk, b"{\"credential\": 1}").unwrap();
    let out = install(&wallet, &junk).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("126-byte binary") && err.contains("252 hex"),
        "{err}"
    );

    // Online: enrol on the same phone, renew with a fresh key; the offset is
    // measured from the answer and the reader accepts.
    ok(&enroll(&svc, &wallet, "bob", &token).await);
    let new_pub = std::fs::read_to_string(wallet.join("device.pub")).unwrap();
    assert_ne!(new_pub.trim(), device_pub);
    let c = code(&svc, &wallet).await;
    let d = reader.decide_payload(&c, svc.app.now() + 1);
    assert!(d.is_accept(), "{}", d.message());
    sync::sync(&mut reader, &svc.url, svc.app.now())
        .await
        .unwrap();

    // Near its end, `code` warns.
    svc.clock.advance(60 * 3600);
    let out = code_output(&svc, &wallet).await;
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("credential expires in"));
    svc.stop().await;
}

fn phone(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

/// A credential for dora's phone `seed`, issued by the operator.
async fn issue(svc: &Svc, seed: u8) -> Credential {
    let key = hex::encode(phone(seed).verifying_key().to_bytes());
    let (s, v) = svc
        .op(
            "/v1/accounts/dora/devices",
            json!({"device_public_key": key, "valid_for_s": 86_400}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    Credential::from_bytes(&hex::decode(v["credential"].as_str().unwrap()).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuer_keys_rotate_and_retire_on_a_running_service_and_readers_follow() {
    let svc = Svc::start(T0, None).await;
    let rdir = tempfile::tempdir().unwrap();
    let mut reader = svc.reader(rdir.path(), 3).await;
    let admin = |a: &[&str]| {
        let mut v = args(&["admin", "--server", &svc.url, "--operator-token", TOKEN]);
        v.extend(args(a));
        v
    };
    let (s, v) = svc.op("/v1/accounts", json!({"account_id": "dora"})).await;
    assert_eq!(s, 201, "{v}");
    let ride = |reader: &mut Reader, cred: &Credential, seed: u8, seq: u32, t: u64| {
        let code = RideCode::sign_v1(cred, t as u32, seq, &phone(seed));
        reader.decide_payload(code.as_bytes(), t)
    };
    let old = issue(&svc, 50).await;
    assert_eq!(old.body().issuer_key_id, 1);

    // Rotate through the CLI: key 2 issues, key 1 stays valid.
    let out: Value =
        serde_json::from_str(&ok(&run("fare-settlement", admin(&["rotate-issuer"])).await))
            .unwrap();
    assert_eq!(out["issuing_key_id"], 2, "{out}");
    let new = issue(&svc, 51).await;
    assert_eq!(new.body().issuer_key_id, 2);
    // The reader does not know key 2 until it syncs.
    let t = svc.app.now();
    assert_eq!(
        ride(&mut reader, &new, 51, 1, t).reason_code(),
        Some("unknown_issuer_key")
    );
    sync::sync(&mut reader, &svc.url, t).await.unwrap();
    assert!(ride(&mut reader, &new, 51, 2, t + 1).is_accept());
    assert!(ride(&mut reader, &old, 50, 1, t + 1).is_accept());

    // Retire key 1 an hour from now; the reader learns the end at its next sync.
    let end = svc.app.now() + 3600;
    let out: Value = serde_json::from_str(&ok(&run(
        "fare-settlement",
        admin(&["retire-issuer", "--key-id", "1", "--at", &end.to_string()]),
    )
    .await))
    .unwrap();
    assert_eq!(out["keys"][0]["valid_until_unix_s"], end, "{out}");
    svc.clock.advance(1800);
    sync::sync(&mut reader, &svc.url, svc.app.now())
        .await
        .unwrap();
    let t = svc.app.now();
    assert!(
        ride(&mut reader, &old, 50, 2, t).is_accept(),
        "before its end"
    );
    svc.clock.advance(1801);
    sync::sync(&mut reader, &svc.url, svc.app.now())
        .await
        .unwrap();
    let t = svc.app.now();
    let d = ride(&mut reader, &old, 50, 3, t);
    assert_eq!(
        d.reason_code(),
        Some("issuer_key_not_valid"),
        "{}",
        d.message()
    );
    assert!(ride(&mut reader, &new, 51, 3, t).is_accept());

    // Key 2 is the only one valid now: retiring it is refused; unknown keys are 404.
    let out = run(
        "fare-settlement",
        admin(&["retire-issuer", "--key-id", "2"]),
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("last_issuer_key"));
    let out = run(
        "fare-settlement",
        admin(&["retire-issuer", "--key-id", "9"]),
    )
    .await;
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown_issuer_key"));

    // `fare-keys rotate-issuer` beside the running service: the service's
    // next bundle publishes key 3 and does not undo it.
    ok(&run(
        "fare-keys",
        args(&[
            "rotate-issuer",
            "--dir",
            &dir_arg(&svc.keys_dir()),
            "--at",
            &svc.app.now().to_string(),
        ]),
    )
    .await);
    let (s, _) = svc
        .op(
            "/v1/accounts/dora/payments",
            json!({"payment_id": "p1", "amount_minor": 100}),
        )
        .await;
    assert_eq!(s, 201, "a payment re-publishes the deny list");
    sync::sync(&mut reader, &svc.url, svc.app.now())
        .await
        .unwrap();
    let listed: Value =
        serde_json::from_str(&ok(&run("fare-settlement", admin(&["issuer-keys"])).await)).unwrap();
    let ids: Vec<u64> = listed["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["key_id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![1, 2, 3], "{listed}");
    assert_eq!(listed["issuing_key_id"], 3);
    let on_disk = std::fs::read_to_string(svc.keys_dir().join("keys.json")).unwrap();
    assert_eq!(on_disk.matches("\"key_id\"").count(), 3, "{on_disk}");
    let third = issue(&svc, 52).await;
    assert_eq!(third.body().issuer_key_id, 3);
    assert!(
        ride(&mut reader, &third, 52, 1, svc.app.now()).is_accept(),
        "the reader learnt key 3"
    );

    // Settlement re-verifies each ride at its reader time against the same
    // windows: the five accepted rides (two under key 1 before its end) are
    // all genuine, none is reported as fraud.
    sync::sync(&mut reader, &svc.url, svc.app.now())
        .await
        .unwrap();
    let (s, run) = svc.op("/v1/settlement/runs", json!({})).await;
    assert_eq!((s, run["rides"].as_u64()), (200, Some(5)), "{run}");
    let fraud = svc.get("/v1/reports/fraud").await;
    assert_eq!(fraud, json!([]));
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stolen_phone_is_revoked_from_the_passengers_other_phone_and_readers_refuse_it() {
    let svc = Svc::start(T0, None).await;
    let rdir = tempfile::tempdir().unwrap();
    let mut reader = svc.reader(rdir.path(), 4).await;
    let token_a = svc.account_and_token("erin").await;
    let (s, v) = svc
        .op("/v1/accounts/erin/tokens", json!({"label": "tablet"}))
        .await;
    assert_eq!(s, 201, "{v}");
    let token_b = v["token"].as_str().unwrap().to_string();
    let w = tempfile::tempdir().unwrap();
    let (phone_a, phone_b) = (w.path().join("a"), w.path().join("b"));
    for (dir, token) in [(&phone_a, &token_a), (&phone_b, &token_b)] {
        ok(&enroll(&svc, dir, "erin", token).await);
    }
    let stolen_code = code(&svc, &phone_a).await;
    assert!(reader
        .decide_payload(&stolen_code, svc.app.now())
        .is_accept());

    // Phone A is stolen. From phone B: list the phones, revoke the other one.
    let phones: Value = serde_json::from_str(&ok(&run(
        "fare-wallet",
        args(&["phones", "--dir", &dir_arg(&phone_b)]),
    )
    .await))
    .unwrap();
    let list = phones.as_array().unwrap();
    assert_eq!(list.len(), 2, "{phones}");
    let a_id = list
        .iter()
        .find(|p| p["this_phone"] == false && p["revoked_unix_s"].is_null())
        .unwrap()["token_id"]
        .as_str()
        .unwrap()
        .to_string();
    let out: Value = serde_json::from_str(&ok(&run(
        "fare-wallet",
        args(&[
            "revoke-phone",
            "--dir",
            &dir_arg(&phone_b),
            "--token-id",
            &a_id,
        ]),
    )
    .await))
    .unwrap();
    assert_eq!(
        out["credentials_denied"].as_array().unwrap().len(),
        1,
        "{out}"
    );

    // The reader's next sync brings the deny list: the thief's next code is refused.
    svc.clock.advance(120);
    sync::sync(&mut reader, &svc.url, svc.app.now())
        .await
        .unwrap();
    let thief = code(&svc, &phone_a).await;
    let d = reader.decide_payload(&thief, svc.app.now());
    assert_eq!(d.reason_code(), Some("revoked"), "{}", d.message());
    // The thief cannot renew; phone B still rides.
    let out = renew(&svc, &phone_a, None).await;
    assert!(String::from_utf8_lossy(&out.stderr).contains("token_revoked"));
    let mine = code(&svc, &phone_b).await;
    assert!(reader.decide_payload(&mine, svc.app.now()).is_accept());
    svc.stop().await;
}
