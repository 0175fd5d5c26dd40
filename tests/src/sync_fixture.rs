//! The reader side of the sync tests and benchmarks (issue #9), in one
//! place: a rider with a credential from settlement's issuer keys, a
//! reader registered over HTTP and provisioned from settlement's root key
//! and bundle. Used by `tests/it/validator_sync.rs`, `tests/it/sync_network.rs`
//! and `benches/benches/sync.rs`.

use fare_credential::{Credential, Profile, RideCode, SigningKey};
use fare_keys::IssueRequest;
use fare_settlement::App;
use fare_validator::{Reader, ReaderConfig, ReaderIdentityConfig};
use rand_chacha::ChaCha20Rng;
use std::path::Path;

/// A phone: a device key and a credential settlement's issuer signed.
pub struct Rider {
    device: SigningKey,
    credential: Credential,
    next_seq: u32,
}

impl Rider {
    /// An adult credential valid from `from` for `valid_for_s`, for a fresh device key.
    ///
    /// # Panics
    /// When settlement's issuer refuses (a test's mistake).
    pub fn issue(app: &App, rng: &mut ChaCha20Rng, from: u64, valid_for_s: u64) -> Rider {
        let device = fare_credential::keys::generate_signing_key(rng);
        let request = IssueRequest {
            device_public_key: device.verifying_key().to_bytes(),
            profile: Profile::Adult,
            valid_from_unix_s: from,
            valid_for_s,
        };
        let keys = app.keys.lock().expect("keys lock");
        let credential = keys
            .issue_credential(&request, from, rng)
            .expect("issue a test credential");
        Rider {
            device,
            credential,
            next_seq: 1,
        }
    }

    /// The next ride code, issued at `at`.
    pub fn code(&mut self, at: u64) -> Vec<u8> {
        let c = RideCode::sign_v1(&self.credential, at as u32, self.next_seq, &self.device);
        self.next_seq += 1;
        c.as_bytes().to_vec()
    }
}

/// Configuration of reader `reader_id` of operator `city-bus` on route 7.
pub fn reader_config(reader_id: u32) -> ReaderConfig {
    ReaderConfig::new(ReaderIdentityConfig {
        reader_id,
        operator: "city-bus".into(),
        vehicle: format!("bus-{reader_id}"),
        route: "7".into(),
        stop: None,
    })
}

/// Registers reader `reader_id` with key `key` at settlement `url` (operator `token`).
///
/// # Panics
/// When settlement does not answer 2xx.
pub async fn register_reader(url: &str, token: &str, reader_id: u32, key: &SigningKey) {
    let r = reqwest::Client::new()
        .post(format!("{url}/v1/readers"))
        .bearer_auth(token)
        .json(&serde_json::json!({
            "reader_id": reader_id,
            "public_key": hex::encode(key.verifying_key().as_bytes()),
            "operator": "city-bus", "vehicle": format!("bus-{reader_id}"), "route": "7",
        }))
        .send()
        .await
        .expect("settlement answers");
    assert!(
        r.status().is_success(),
        "register reader {reader_id}: {}",
        r.status()
    );
}

/// A fresh reader key registered at `url`, and the reader provisioned in
/// `dir` with `cfg`, settlement's root key and its current bundle, at `now`.
///
/// # Panics
/// When registration or provisioning fails.
pub async fn provision_reader(
    app: &App,
    url: &str,
    token: &str,
    dir: &Path,
    cfg: ReaderConfig,
    rng: &mut ChaCha20Rng,
    now: u64,
) -> Reader {
    let key = fare_credential::keys::generate_signing_key(rng);
    register_reader(url, token, cfg.reader.reader_id, &key).await;
    let root = app.keys.lock().expect("keys lock").root_public_key();
    let bundle = app.bundle(None).expect("settlement's bundle");
    Reader::provision(dir, cfg, root, key, &bundle, now).expect("provision the reader")
}
