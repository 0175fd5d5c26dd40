//! Passengers on their own, over real HTTP on loopback (issue #11): a
//! passenger token renews and reads only its own account (every other
//! route 401/403), device keys are certified once for any account, a lost
//! phone is revoked (by the operator or from the passenger's other phone)
//! and its credentials reach the deny list of the reader bundle, and the
//! operator token survives restarts in DATA/operator-token.

use crate::common::*;
use fare_credential::{CredentialId, SigningKey};
use reqwest::Method;
use serde_json::{json, Value};

async fn call(
    srv: &Server,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut rq = srv
        .http
        .request(method, format!("{}{path}", srv.url))
        .bearer_auth(token);
    if let Some(b) = body {
        rq = rq.json(&b);
    }
    let resp = rq.send().await.unwrap();
    let s = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        s,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn key(seed: u8) -> String {
    hex::encode(
        SigningKey::from_bytes(&[seed; 32])
            .verifying_key()
            .to_bytes(),
    )
}

async fn enrol(srv: &Server, account: &str) -> (String, String) {
    let (s, v) = srv
        .post(
            &format!("/v1/accounts/{account}/tokens"),
            json!({"label": "phone"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    (
        v["token"].as_str().unwrap().to_string(),
        v["token_id"].as_str().unwrap().to_string(),
    )
}

async fn renew(srv: &Server, account: &str, token: &str, seed: u8) -> (u16, Value) {
    call(
        srv,
        Method::POST,
        &format!("/v1/accounts/{account}/devices"),
        token,
        Some(json!({"device_public_key": key(seed), "valid_for_s": 86_400})),
    )
    .await
}

async fn deny_list(srv: &Server) -> Vec<CredentialId> {
    fare_credential::testkit::deny_snapshot(&srv.operator_bundle(1, None).await.bundle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passenger_token_renews_and_reads_only_its_own_account() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), test_config()).await;
    srv.create_account("alice", "adult", 2000).await;
    srv.create_account("bob", "senior", 2000).await;
    srv.provision(&FakeReader::new(1, "metro", "L1")).await;
    let (alice, _) = enrol(&srv, "alice").await;
    assert!(alice.starts_with("fpt_"));

    // Allowed: its own statement and a renewal, which carries server time.
    let (s, v) = call(&srv, Method::GET, "/v1/accounts/alice", &alice, None).await;
    assert_eq!(
        (s, v["account"]["account_id"].as_str()),
        (200, Some("alice")),
        "{v}"
    );
    let (s, v) = renew(&srv, "alice", &alice, 1).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["server_time_unix_s"], srv.app.now());
    let (s, v) = call(&srv, Method::GET, "/v1/accounts/alice/tokens", &alice, None).await;
    assert_eq!(
        (s, v.as_array().map(Vec::len)),
        (200, Some(1)),
        "its phones: {v}"
    );

    // Everything else: 401 or 403, and nothing changes.
    let denied: &[(Method, &str, Option<Value>)] = &[
        (Method::GET, "/v1/accounts/bob", None),
        (
            Method::POST,
            "/v1/accounts/bob/devices",
            Some(json!({"device_public_key": key(2), "valid_for_s": 60})),
        ),
        (Method::POST, "/v1/accounts/bob/tokens/rotate", None),
        (Method::POST, "/v1/accounts/bob/tokens/all/revoke", None),
        (
            Method::POST,
            "/v1/accounts",
            Some(json!({"account_id": "mallory"})),
        ),
        (
            Method::POST,
            "/v1/accounts/alice/payments",
            Some(json!({"payment_id": "p1", "amount_minor": 100})),
        ),
        (
            Method::POST,
            "/v1/accounts/alice/freeze",
            Some(json!({"frozen": false})),
        ),
        (Method::POST, "/v1/accounts/alice/tokens", Some(json!({}))),
        (Method::GET, "/v1/accounts/bob/tokens", None),
        (Method::GET, "/v1/accounts/alice/payments", None),
        (Method::POST, "/v1/readers", Some(json!({}))),
        (Method::GET, "/v1/readers", None),
        (Method::GET, "/v1/readers/1/bundle", None),
        (Method::POST, "/v1/readers/1/retire", None),
        (Method::POST, "/v1/batches", None),
        (Method::POST, "/v1/incidents/resolve", Some(json!({}))),
        (Method::POST, "/v1/settlement/runs", None),
        (Method::GET, "/v1/settlement/runs/1", None),
        (Method::POST, "/v1/settlement/purge", None),
        (Method::POST, "/v1/disputes/1/1/resolve", Some(json!({}))),
        (Method::GET, "/v1/reports/daily", None),
        (Method::GET, "/v1/reports/deny", None),
        (Method::GET, "/v1/reports/ledger", None),
        (Method::GET, "/v1/issuer-keys", None),
        (Method::POST, "/v1/issuer-keys/rotate", None),
        (Method::POST, "/v1/issuer-keys/1/retire", Some(json!({}))),
        (Method::GET, "/healthz", None),
        (Method::GET, "/metrics", None),
        (Method::GET, "/no/such/route", None),
    ];
    for (m, path, body) in denied {
        let (s, v) = call(&srv, m.clone(), path, &alice, body.clone()).await;
        assert!(s == 401 || s == 403, "{m} {path}: {s} {v}");
        let code = v["error"].as_str().unwrap_or_default();
        assert!(
            ["operator_only", "other_account"].contains(&code),
            "{m} {path}: {v}"
        );
    }
    assert_eq!(srv.get("/v1/accounts/mallory").await.0, 404);
    assert_eq!(
        srv.get("/v1/accounts/bob").await.1["credentials"],
        json!([])
    );
    assert_eq!(
        srv.get("/v1/issuer-keys").await.1["keys"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // A wrong secret or a made-up token: 401; the operator cannot rotate a passenger token.
    let forged = format!("{}{}", &alice[..alice.len() - 2], "00");
    assert_eq!(
        call(&srv, Method::GET, "/v1/accounts/alice", &forged, None)
            .await
            .0,
        401
    );
    let (s, v) = call(&srv, Method::GET, "/v1/accounts/alice", "fpt_zz", None).await;
    assert_eq!((s, v["error"].as_str()), (401, Some("unauthorized")), "{v}");
    let (s, v) = srv
        .post("/v1/accounts/alice/tokens/rotate", json!({}))
        .await;
    assert_eq!(
        (s, v["error"].as_str()),
        (403, Some("passenger_only")),
        "{v}"
    );

    // Rotation: the new token works, the old one is refused as revoked.
    let (s, v) = call(
        &srv,
        Method::POST,
        "/v1/accounts/alice/tokens/rotate",
        &alice,
        None,
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let fresh = v["token"].as_str().unwrap().to_string();
    let (s, v) = call(&srv, Method::GET, "/v1/accounts/alice", &alice, None).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (401, Some("token_revoked")),
        "{v}"
    );
    assert_eq!(renew(&srv, "alice", &fresh, 3).await.0, 201);
    // The store keeps only the secret's hash.
    let tokens = srv.get("/v1/accounts/alice/tokens").await.1;
    assert!(!tokens.to_string().contains(&fresh[36..]), "{tokens}");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_key_is_certified_once_for_any_account() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), test_config()).await;
    srv.create_account("alice", "adult", 2000).await;
    srv.create_account("bob", "adult", 2000).await;
    let (alice, _) = enrol(&srv, "alice").await;
    let (bob, _) = enrol(&srv, "bob").await;
    assert_eq!(renew(&srv, "alice", &alice, 7).await.0, 201);
    // Same key again: same account, another account, passenger or operator.
    for (account, token) in [
        ("alice", alice.as_str()),
        ("bob", bob.as_str()),
        ("bob", TOKEN),
    ] {
        let (s, v) = renew(&srv, account, token, 7).await;
        assert_eq!(
            (s, v["error"].as_str()),
            (409, Some("device_key_reused")),
            "{account}: {v}"
        );
        assert!(
            !v["message"].as_str().unwrap().contains("alice"),
            "no other account named: {v}"
        );
    }
    let (_, stmt) = srv.get("/v1/accounts/bob").await;
    assert_eq!(stmt["credentials"], json!([]), "nothing issued to bob");
    // The record survives a restart.
    srv.stop().await;
    let srv = Server::start(dir.path(), test_config()).await;
    assert_eq!(renew(&srv, "bob", &bob, 7).await.0, 409);
    assert_eq!(renew(&srv, "bob", &bob, 8).await.0, 201);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stolen_phone_is_revoked_and_its_credentials_denied() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), test_config()).await;
    srv.create_account("alice", "adult", 2000).await;
    srv.provision(&FakeReader::new(1, "metro", "L1")).await;
    let (phone_a, a_id) = enrol(&srv, "alice").await;
    let (phone_b, _) = enrol(&srv, "alice").await;
    let mut a_creds = Vec::new();
    for seed in [10, 11] {
        let (s, v) = renew(&srv, "alice", &phone_a, seed).await;
        assert_eq!(s, 201, "{v}");
        a_creds.push(CredentialId::from_hex(v["credential_id"].as_str().unwrap()).unwrap());
    }
    let (_, v) = renew(&srv, "alice", &phone_b, 12).await;
    let b_cred = CredentialId::from_hex(v["credential_id"].as_str().unwrap()).unwrap();
    // Phone A rotated its token once (as the wallet does at enrolment): the
    // enrolment keeps its identity.
    let (_, v) = call(
        &srv,
        Method::POST,
        "/v1/accounts/alice/tokens/rotate",
        &phone_a,
        None,
    )
    .await;
    let phone_a2 = v["token"].as_str().unwrap().to_string();
    assert_eq!(deny_list(&srv).await, vec![]);

    // Phone A is stolen; alice revokes it from phone B (naming A's first token id).
    let (s, v) = call(
        &srv,
        Method::POST,
        &format!("/v1/accounts/alice/tokens/{a_id}/revoke"),
        &phone_b,
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let mut denied: Vec<CredentialId> =
        serde_json::from_value(v["credentials_denied"].clone()).unwrap();
    denied.sort();
    a_creds.sort();
    assert_eq!(denied, a_creds);
    assert_eq!(
        v["tokens_revoked"].as_array().unwrap().len(),
        1,
        "the rotated token: {v}"
    );
    assert_eq!(
        deny_list(&srv).await,
        a_creds,
        "readers learn it at their next bundle"
    );
    let (s, v) = renew(&srv, "alice", &phone_a2, 13).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (401, Some("token_revoked")),
        "{v}"
    );
    assert_eq!(
        renew(&srv, "alice", &phone_b, 14).await.0,
        201,
        "phone B goes on"
    );

    // The operator: every phone and every credential of the account.
    let (s, v) = srv
        .post("/v1/accounts/alice/tokens/all/revoke", json!({}))
        .await;
    assert_eq!(s, 200, "{v}");
    let list = deny_list(&srv).await;
    assert!(
        list.contains(&b_cred) && a_creds.iter().all(|c| list.contains(c)),
        "{list:?}"
    );
    assert_eq!(
        call(&srv, Method::GET, "/v1/accounts/alice", &phone_b, None)
            .await
            .0,
        401
    );
    // An unknown token id: a specific 404.
    let (s, v) = srv
        .post(
            &format!("/v1/accounts/alice/tokens/{}/revoke", "ab".repeat(16)),
            json!({}),
        )
        .await;
    assert_eq!(
        (s, v["error"].as_str()),
        (404, Some("unknown_token")),
        "{v}"
    );

    // A denied credential leaves the list after its end (plus skew).
    srv.clock.set(srv.app.now() + 2 * 86_400);
    assert_eq!(deny_list(&srv).await, vec![]);
    // ... and the purge deletes its record.
    let stored = |srv: &Server| {
        srv.app
            .db
            .scan_paged(fare_settlement::store::Space::DeniedCredentials, b"")
            .unwrap()
            .len()
    };
    assert_eq!(stored(&srv), 4);
    assert_eq!(srv.post("/v1/settlement/purge", json!({})).await.0, 200);
    assert_eq!(stored(&srv), 0);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_token_is_made_once_and_kept_in_the_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = fare_settlement::Config {
        operator_token: String::new(),
        ..test_config()
    };
    let srv = Server::start(dir.path(), cfg.clone()).await;
    let path = dir
        .path()
        .join(fare_settlement::config::OPERATOR_TOKEN_FILE);
    let token = std::fs::read_to_string(&path).unwrap().trim().to_string();
    assert!(srv
        .app
        .operator_token_source
        .contains(&path.display().to_string()));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let (s, _) = call(&srv, Method::GET, "/v1/issuer-keys", &token, None).await;
    assert_eq!(s, 200);
    srv.stop().await;
    // The same token after a restart.
    let srv = Server::start(dir.path(), cfg).await;
    assert_eq!(srv.app.operator_token, token);
    srv.stop().await;
    // The example configuration in the repository loads.
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("settlement.example.toml");
    let c = fare_settlement::Config::load(&example).unwrap();
    assert!(
        c.operator_token.is_empty(),
        "the example does not ship a token"
    );
}
