//! Reader ↔ settlement over real HTTP on loopback: the reader uploads its
//! signed, hash-chained batches with `fare_validator::sync::sync` until
//! acknowledged, then fetches and installs the bundle settlement signs.

use fare_credential::ManualClock;
use fare_e2e::sync_fixture::{self, Rider};
use fare_settlement::{App, Config};
use fare_validator::Reader;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use std::sync::Arc;

const NOW: u64 = 1_800_000_000;
/// The reader of the test that reads `/metrics`; no other test here uses it.
const METRICS_READER: u32 = 77;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_uploads_until_acknowledged_and_installs_a_newer_bundle() {
    let tmp = tempfile::tempdir().unwrap();
    let config = Config {
        operator_token: "op-token".into(),
        ..Config::default()
    };
    let clock = Arc::new(ManualClock::new(NOW));
    let app = Arc::new(
        App::open(
            &tmp.path().join("settlement"),
            config,
            clock.clone(),
            Some(3),
        )
        .unwrap(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(fare_settlement::serve(listener, app.clone(), async {
        let _ = stop_rx.await;
    }));

    let mut rng = ChaCha20Rng::seed_from_u64(9);
    let root_vk = app.keys.lock().unwrap().root_public_key();
    let bundle = app.bundle(None).unwrap();
    let reader_key = fare_credential::keys::generate_signing_key(&mut rng);
    // /metrics is one recorder per process and the other tests of this
    // binary run beside this one with readers 7 and 8: a reader id of its
    // own keeps their gauges out of the lines checked below.
    let mut cfg = sync_fixture::reader_config(METRICS_READER);
    cfg.storage.batch_max_records = 4; // several batches for 10 rides
    let dir = tmp.path().join("reader");
    sync_fixture::register_reader(&url, "op-token", METRICS_READER, &reader_key).await;
    let mut reader = Reader::provision(&dir, cfg, root_vk, reader_key, &bundle, NOW).unwrap();
    let first_bundle = reader.bundle_version();
    let http = reqwest::Client::new();

    // Ten rides from one phone.
    let mut rider = Rider::issue(&app, &mut rng, NOW, 86_400);
    for _ in 1..=10 {
        let d = reader.decide_payload(&rider.code(NOW), NOW);
        assert!(d.is_accept(), "{}", d.message());
    }

    let report = fare_validator::sync::sync(&mut reader, &url, NOW)
        .await
        .unwrap();
    assert_eq!(report.acked_up_to, 10);
    assert_eq!(report.batches_sent, 3, "10 rides in batches of 4");
    assert_eq!(reader.state().acked_up_to, 10);
    assert!(reader.next_batch(100).unwrap().is_none());
    assert!(report.bundle_version >= first_bundle);

    // The fleet gauges for this reader on /metrics.
    let metrics = http
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let r = METRICS_READER;
    for line in [
        format!(r#"settlement_reader_acked_seq{{reader="{r}"}} 10"#),
        format!(r#"settlement_reader_last_contact_unix_s{{reader="{r}"}} {NOW}"#),
        format!(r#"settlement_reader_clock_offset_s{{reader="{r}"}} 0"#),
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} missing from /metrics:\n{metrics}"
        );
    }

    // Sync again: nothing to send; acknowledgement persisted across a restart.
    drop(reader);
    let mut reader = Reader::open(&dir, NOW).unwrap();
    assert_eq!(reader.state().acked_up_to, 10);
    let again = fare_validator::sync::sync(&mut reader, &url, NOW)
        .await
        .unwrap();
    assert_eq!(again.batches_sent, 0);

    let _ = stop_tx.send(());
    server.await.unwrap().unwrap();
}

/// A reader whose clock runs two hours ahead of settlement's: its first
/// signed request is refused as `request_stale`; the agent signs it again
/// by settlement's clock (from the answer's date header), once, and every
/// later request of the contact goes out stamped right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_clock_hours_off_signs_once_more_by_settlements_clock() {
    let (tmp, url, app, [key, _], stop) = served_with_two_readers().await;
    let mut rng = ChaCha20Rng::seed_from_u64(12);
    let root_vk = app.keys.lock().unwrap().root_public_key();
    let bundle = app.bundle(None).unwrap();
    let mut cfg = sync_fixture::reader_config(7);
    cfg.storage.batch_max_records = 4;
    let dir = tmp.path().join("reader");
    let mut reader = Reader::provision(&dir, cfg, root_vk, key, &bundle, NOW).unwrap();
    let mut rider = Rider::issue(&app, &mut rng, NOW, 86_400);
    for _ in 1..=10 {
        assert!(reader.decide_payload(&rider.code(NOW), NOW).is_accept());
    }
    let ahead_s = 2 * 3600;
    let report = fare_validator::sync::sync(&mut reader, &url, NOW + ahead_s)
        .await
        .unwrap();
    assert_eq!(report.acked_up_to, 10);
    assert_eq!(
        report.batches_sent, 4,
        "3 batches of at most 4 rides, the first sent twice (refused as stale, then re-signed)"
    );
    assert_eq!(report.clock_offset_s, Some(ahead_s as i64));
    assert_eq!(reader.sync_state().batches_sent, 4);
    let _ = stop.send(());
}

/// A settlement service on loopback with readers 7 and 8 registered; their keys.
async fn served_with_two_readers() -> (
    tempfile::TempDir,
    String,
    Arc<App>,
    [fare_credential::SigningKey; 2],
    tokio::sync::oneshot::Sender<()>,
) {
    let tmp = tempfile::tempdir().unwrap();
    let config = Config {
        operator_token: "op-token".into(),
        ..Config::default()
    };
    let clock = Arc::new(ManualClock::new(NOW));
    let app = Arc::new(App::open(&tmp.path().join("s"), config, clock, Some(3)).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(fare_settlement::serve(listener, app.clone(), async {
        let _ = stop_rx.await;
    }));
    let mut rng = ChaCha20Rng::seed_from_u64(11);
    let keys = [
        fare_credential::keys::generate_signing_key(&mut rng),
        fare_credential::keys::generate_signing_key(&mut rng),
    ];
    for (id, key) in [(7u32, &keys[0]), (8, &keys[1])] {
        sync_fixture::register_reader(&url, "op-token", id, key).await;
    }
    (tmp, url, app, keys, stop_tx)
}

/// GETs `target` with `X-Reader-Auth: auth` (if any): status and error code.
async fn get_signed(url: &str, target: &str, auth: Option<String>) -> (u16, String) {
    let mut req = reqwest::Client::new().get(format!("{url}{target}"));
    if let Some(a) = auth {
        req = req.header(fare_credential::request::REQUEST_AUTH_HEADER, a);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.bytes().await.unwrap();
    let code = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_default();
    (status, code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_reader_itself_or_an_operator_reads_its_bundle() {
    use fare_credential::RequestAuth;
    let (_tmp, url, _app, [k7, k8], stop) = served_with_two_readers().await;
    let target = "/v1/readers/7/bundle?since=0";
    let sign = |key, id, t, nonce| {
        Some(
            RequestAuth::sign_v1(key, id, t, nonce, "GET", target, b"")
                .unwrap()
                .to_header(),
        )
    };
    // No signature, no operator token.
    assert_eq!(
        get_signed(&url, target, None).await,
        (401, "request_unsigned".into())
    );
    // Reader 8's key claiming to be reader 7.
    assert_eq!(
        get_signed(&url, target, sign(&k8, 7, NOW, 1)).await,
        (401, "request_bad_signature".into())
    );
    // Reader 8, honestly signed, asking for reader 7's bundle.
    assert_eq!(
        get_signed(&url, target, sign(&k8, 8, NOW, 2)).await,
        (401, "request_bad_signature".into())
    );
    // Reader 7's key, but signed for another target (since=1).
    let other = RequestAuth::sign_v1(&k7, 7, NOW, 3, "GET", "/v1/readers/7/bundle?since=1", b"")
        .unwrap()
        .to_header();
    assert_eq!(
        get_signed(&url, target, Some(other)).await,
        (401, "request_bad_signature".into())
    );
    // Reader 7's key, outside the time window either way.
    let skew = fare_settlement::readers::REQUEST_SKEW_S;
    for t in [NOW - skew - 1, NOW + skew + 1] {
        assert_eq!(
            get_signed(&url, target, sign(&k7, 7, t, 4)).await,
            (401, "request_stale".into()),
            "{t}"
        );
    }
    // Reader 7 itself, at the window's edge: the bundle.
    let good = sign(&k7, 7, NOW - skew, 5);
    let (status, _) = get_signed(&url, target, good.clone()).await;
    assert_eq!(status, 200);
    // The same signed request again: a replay.
    assert_eq!(
        get_signed(&url, target, good).await,
        (401, "request_replayed".into())
    );
    // A header that does not parse.
    assert_eq!(
        get_signed(&url, target, Some("00ff".into())).await,
        (401, "request_bad_signature".into())
    );
    // The operator token still reads any reader's bundle.
    let resp = reqwest::Client::new()
        .get(format!("{url}{target}"))
        .bearer_auth("op-token")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let _ = stop.send(());
}

/// A bundle request names the tariff the reader holds (SPEC §4.2), and
/// settlement then sends its digest alone; asked without it, or for
/// another tariff, it sends the bytes; a malformed digest is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tariff_goes_by_digest_to_a_reader_that_holds_it() {
    use fare_credential::bundle::{tariff_digest, PublishedBundle};
    let (tmp, url, app, [key, _], stop) = served_with_two_readers().await;
    let root = app.keys.lock().unwrap().root_public_key();
    assert_eq!(app.tariff_digest, tariff_digest(&app.tariff_json));
    let verify = |body: &[u8]| PublishedBundle::verify(body, &root).expect("a bundle");
    // The agent's request, over HTTP: it names the tariff it holds.
    let mut reader = Reader::provision(
        &tmp.path().join("reader"),
        sync_fixture::reader_config(7),
        root,
        key,
        &app.bundle(None).unwrap(),
        NOW,
    )
    .unwrap();
    let link = Recording {
        http: fare_validator::sync::HttpLink::new(&url, std::time::Duration::from_secs(10))
            .unwrap(),
        bundles: Default::default(),
    };
    let access = std::sync::Mutex::new(&mut reader);
    let mut in_flight = fare_validator::sync::InFlight::default();
    fare_validator::sync::contact(&access, &link, &mut in_flight, &|| NOW)
        .await
        .unwrap();
    let seen = link.bundles.lock().unwrap().clone();
    let [(query, body)] = seen.as_slice() else {
        panic!("one bundle request, not {}", seen.len())
    };
    assert_eq!(query.tariff_held, Some(app.tariff_digest));
    let b = verify(body);
    assert_eq!(b.tariff_by_digest, Some(app.tariff_digest));
    assert!(b.bundle.tariff.is_empty());
    assert_eq!(reader.tariff(), Some(app.tariff_json.as_slice()));
    // By hand, with the operator token: without a digest or with another
    // tariff's, the bytes follow.
    let get = |query: String| {
        let url = format!("{url}/v1/readers/7/bundle?since=0{query}");
        async move {
            let r = reqwest::Client::new()
                .get(url)
                .bearer_auth("op-token")
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
        }
    };
    let other = hex::encode(tariff_digest(b"{}"));
    for q in [String::new(), format!("&tariff={other}")] {
        let (status, body) = get(q.clone()).await;
        assert_eq!(status, 200, "{q}");
        let b = verify(&body);
        assert_eq!(b.tariff_by_digest, None, "{q}");
        assert_eq!(b.bundle.tariff, app.tariff_json, "{q}");
    }
    let (status, body) = get("&tariff=zz".into()).await;
    let error: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (status, error["error"].as_str()),
        (400, Some("invalid_query"))
    );
    let _ = stop.send(());
}

/// Settlement over HTTP, recording each bundle request and its answer.
struct Recording {
    http: fare_validator::sync::HttpLink,
    bundles: std::sync::Mutex<Vec<(fare_validator::sync::BundleQuery, Vec<u8>)>>,
}

impl fare_validator::sync::Link for Recording {
    async fn post_batch(
        &self,
        body: Vec<u8>,
        reader_time_unix_s: u64,
        auth: String,
    ) -> Result<fare_validator::sync::Reply, fare_validator::sync::LinkError> {
        self.http.post_batch(body, reader_time_unix_s, auth).await
    }
    async fn get_bundle(
        &self,
        query: fare_validator::sync::BundleQuery,
        reader_time_unix_s: u64,
        auth: String,
    ) -> Result<fare_validator::sync::Reply, fare_validator::sync::LinkError> {
        let reply = self
            .http
            .get_bundle(query, reader_time_unix_s, auth)
            .await?;
        let body = reply.body.clone();
        self.bundles.lock().unwrap().push((query, body));
        Ok(reply)
    }
    fn describe(&self) -> String {
        self.http.describe()
    }
}

/// Two real ride codes' records of reader 7, chained from its genesis and
/// signed with `key`: a batch settlement would store.
fn batch_of_reader_7(app: &App, key: &fare_credential::SigningKey) -> Vec<u8> {
    let mut rng = ChaCha20Rng::seed_from_u64(12);
    let mut rider = Rider::issue(app, &mut rng, NOW, 86_400);
    let codes: Vec<(u64, Vec<u8>)> = (1..=2).map(|_| (NOW, rider.code(NOW))).collect();
    let genesis = fare_credential::record::genesis_hash(7);
    let (records, _) = fare_credential::testkit::chain_records(7, 1, genesis, "bus-7", "7", &codes);
    fare_credential::Batch {
        reader_id: 7,
        prev_hash: genesis,
        records,
    }
    .sign_v1(key)
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_foreign_and_replayed_batch_requests_are_refused_and_store_nothing() {
    use fare_credential::RequestAuth;
    let (_tmp, url, app, [k7, k8], stop) = served_with_two_readers().await;
    let body = batch_of_reader_7(&app, &k7);
    let post = |auth: Option<String>| {
        let mut req = reqwest::Client::new()
            .post(format!("{url}/v1/batches"))
            .body(body.clone());
        if let Some(a) = auth {
            req = req.header(fare_credential::request::REQUEST_AUTH_HEADER, a);
        }
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let v: serde_json::Value = resp.json().await.unwrap();
            (status, v["error"].as_str().unwrap_or("").to_string())
        }
    };
    let sign = |key, id, nonce| {
        Some(
            RequestAuth::sign_v1(key, id, NOW, nonce, "POST", "/v1/batches", &body)
                .unwrap()
                .to_header(),
        )
    };
    let held = || {
        let (state, _) = app.db.reader_state(7).unwrap();
        (state.acked_seq, app.db.ride_bytes(7, 1, 2).unwrap().len())
    };
    // A genuine, reader-signed batch without a request signature.
    assert_eq!(post(None).await, (401, "request_unsigned".into()));
    // Reader 8 signing reader 7's batch request, as 7 or as itself.
    assert_eq!(
        post(sign(&k8, 7, 1)).await,
        (401, "request_bad_signature".into())
    );
    assert_eq!(
        post(sign(&k8, 8, 2)).await,
        (401, "request_bad_signature".into())
    );
    assert_eq!(held(), (0, 0), "a refused request stored nothing");
    // Reader 7: answered, and its request not accepted twice.
    let good = sign(&k7, 7, 3);
    assert_eq!(post(good.clone()).await, (200, String::new()));
    assert_eq!(held(), (2, 2));
    assert_eq!(post(good).await, (401, "request_replayed".into()));
    assert_eq!(held(), (2, 2), "the replay changed nothing");
    let _ = stop.send(());
}
