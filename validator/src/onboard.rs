//! Online provisioning (`fare-validator provision --server URL
//! --operator-token T`): register the new reader key with settlement
//! (`POST /v1/readers`, operator token), then fetch the reader's first
//! bundle. The caller installs it with [`crate::Reader::provision`], which
//! verifies it against the root key given out of band (`--root-key`): the
//! network is never trusted for the trust anchor.

use crate::config::ReaderConfig;
use crate::error::ValidatorError;
use crate::sync::{BundleQuery, HttpLink, Link, MAX_FETCHED_BUNDLE_BYTES};
use fare_credential::{RequestAuth, SigningKey};
use std::time::Duration;

/// Time limit of each onboarding request.
pub const ONBOARD_TIMEOUT: Duration = Duration::from_secs(30);

/// Registers `key`'s public half as reader `config.reader.reader_id` and
/// returns the bundle settlement serves it (not yet verified: provisioning
/// does), fetched with a request signed by `key` (which also shows the
/// registration took). `now_unix_s` is the reader clock, reported to settlement.
pub async fn register_and_fetch(
    server_url: &str,
    operator_token: &str,
    config: &ReaderConfig,
    key: &SigningKey,
    now_unix_s: u64,
) -> Result<Vec<u8>, ValidatorError> {
    let base = server_url.trim_end_matches('/');
    register(base, operator_token, config, key).await?;
    fetch_first_bundle(base, config, key, now_unix_s).await
}

fn sync_error(url: &str, why: String) -> ValidatorError {
    ValidatorError::Sync {
        url: url.to_string(),
        why,
    }
}

/// `POST /v1/readers` with the operator token: the reader's id, key,
/// operator, vehicle and route.
async fn register(
    base: &str,
    operator_token: &str,
    config: &ReaderConfig,
    key: &SigningKey,
) -> Result<(), ValidatorError> {
    let client = reqwest::Client::builder()
        .timeout(ONBOARD_TIMEOUT)
        .build()
        .map_err(|e| sync_error(base, e.to_string()))?;
    let url = format!("{base}/v1/readers");
    let r = &config.reader;
    let resp = client
        .post(&url)
        .bearer_auth(operator_token)
        .json(&serde_json::json!({
            "reader_id": r.reader_id,
            "public_key": hex::encode(key.verifying_key().as_bytes()),
            "operator": r.operator,
            "vehicle": r.vehicle,
            "route": r.route,
        }))
        .send()
        .await
        .map_err(|e| sync_error(&url, e.to_string()))?;
    let status = resp.status();
    if !status.is_success() {
        let body = resp.text().await.unwrap_or_default();
        return Err(sync_error(
            &url,
            format!(
                "registration refused: HTTP {status}: {}",
                &body[..body.len().min(512)]
            ),
        ));
    }
    Ok(())
}

/// The reader's first bundle, fetched with a request signed by `key`.
async fn fetch_first_bundle(
    base: &str,
    config: &ReaderConfig,
    key: &SigningKey,
    now_unix_s: u64,
) -> Result<Vec<u8>, ValidatorError> {
    let r = &config.reader;
    let link = HttpLink::new(base, ONBOARD_TIMEOUT)?;
    let query = BundleQuery {
        reader_id: r.reader_id,
        since: Some(0),
        tariff_held: None,
    };
    let target = query.target();
    let nonce = rand_core::RngCore::next_u64(&mut rand_core::OsRng);
    let auth = RequestAuth::sign_v1(key, r.reader_id, now_unix_s, nonce, "GET", &target, b"")
        .map_err(|e| sync_error(&target, e.to_string()))?;
    let reply = link
        .get_bundle(query, now_unix_s, auth.to_header())
        .await
        .map_err(|e| sync_error(&link.describe(), e.to_string()))?;
    if reply.status != 200 {
        return Err(sync_error(
            &link.describe(),
            format!(
                "bundle: HTTP {}: {}",
                reply.status,
                String::from_utf8_lossy(&reply.body[..reply.body.len().min(512)])
            ),
        ));
    }
    debug_assert!(reply.body.len() <= MAX_FETCHED_BUNDLE_BYTES);
    Ok(reply.body)
}
