//! A settlement service in process (real HTTP on loopback, a manual clock)
//! for the end-to-end tests that put real readers and phones beside it
//! (`passenger_online.rs`, `settlement_validator.rs`).
#![allow(dead_code)]

use fare_credential::testkit::{seeded_key, verified_bundle};
use fare_credential::ManualClock;
use fare_settlement::{App, Config};
use fare_validator::{Reader, ReaderConfig};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The operator token of the service.
pub const TOKEN: &str = "e2e-operator-token";

/// A running service and its data directory.
pub struct Svc {
    pub url: String,
    pub app: Arc<App>,
    pub clock: ManualClock,
    pub client: reqwest::Client,
    pub data: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Svc {
    /// Starts a service with a clock at `now_unix_s` (`rng_seed` as for `App::open`).
    pub async fn start(now_unix_s: u64, rng_seed: Option<u64>) -> Svc {
        let data = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(now_unix_s);
        let cfg = Config {
            operator_token: TOKEN.into(),
            ..Config::default()
        };
        let app = Arc::new(App::open(data.path(), cfg, Arc::new(clock.clone()), rng_seed).unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(fare_settlement::serve(listener, app.clone(), async {
            let _ = rx.await;
        }));
        Svc {
            url,
            app,
            clock,
            client: reqwest::Client::new(),
            data,
            stop: Some(tx),
            handle: Some(handle),
        }
    }

    /// `POST path` with the operator token: (status, JSON answer).
    pub async fn op(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .client
            .post(format!("{}{path}", self.url))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    /// `GET path` with the operator token: the JSON answer.
    pub async fn get(&self, path: &str) -> Value {
        self.client
            .get(format!("{}{path}", self.url))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// An account and a passenger token for one phone.
    pub async fn account_and_token(&self, account: &str) -> String {
        let (s, v) = self
            .op("/v1/accounts", json!({"account_id": account}))
            .await;
        assert_eq!(s, 201, "{v}");
        let (s, v) = self
            .op(
                &format!("/v1/accounts/{account}/tokens"),
                json!({"label": "phone"}),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        v["token"].as_str().unwrap().to_string()
    }

    /// Reader `id` (key `seeded_key(id)`, city-bus, bus-1, route 1)
    /// registered with the service and provisioned in `dir` with the bundle
    /// the operator fetches for it.
    pub async fn reader(&self, dir: &Path, id: u32) -> Reader {
        let key = seeded_key(u64::from(id));
        let (s, v) = self
            .op(
                "/v1/readers",
                json!({"reader_id": id, "public_key": hex::encode(key.verifying_key().to_bytes()),
                       "operator": "city-bus", "vehicle": "bus-1", "route": "1"}),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        let bundle = self
            .client
            .get(format!("{}/v1/readers/{id}/bundle", self.url))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let root = self.app.keys.lock().unwrap().root_public_key();
        verified_bundle(&bundle, &root);
        let cfg: ReaderConfig = serde_json::from_value(
            json!({"reader": {"reader_id": id, "operator": "city-bus", "vehicle": "bus-1", "route": "1"}}),
        )
        .unwrap();
        Reader::provision(dir, cfg, root, key, &bundle, self.app.now()).unwrap()
    }

    /// The service's key directory.
    pub fn keys_dir(&self) -> PathBuf {
        self.data.path().join("keys")
    }

    /// Graceful shutdown.
    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.handle.take().unwrap().await.unwrap().unwrap();
    }
}
