//! The wallet's online contacts with settlement: enrolment and renewal.
//!
//! * **Enrol** (`fare-wallet enroll`): the passenger got a passenger token
//!   from the operator (`fare-settlement admin enrol`). The wallet exchanges
//!   it at once for a fresh one only the phone knows
//!   (`POST /v1/accounts/{id}/tokens/rotate`), keeps that in
//!   `passenger.json` (owner-only), then renews.
//! * **Renew** (`fare-wallet renew`): a fresh device key for every
//!   credential (DESIGN §2: codes of different credentials cannot be
//!   linked), `POST /v1/accounts/{id}/devices` with the passenger token, the
//!   credential installed for the new key, the sequence restarted, and the
//!   clock offset set from the answer's `server_time_unix_s`.
//!
//! Blocking (a current-thread tokio runtime per call): call it from a
//! thread that is not inside an async runtime.

use crate::{Wallet, WalletError};
use ed25519_dalek::SigningKey;
use fare_keys::files::write_atomic;
use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

/// The passenger link file in the wallet directory (mode 0600: it holds the token).
pub const PASSENGER_FILE: &str = "passenger.json";
/// Time allowed for one request to settlement.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// Credential lifetime asked for by default (settlement caps it).
pub const DEFAULT_VALID_FOR_S: u64 = 72 * 3600;
/// Largest answer read from settlement.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// What the wallet keeps to go online as its passenger.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassengerLink {
    /// Settlement's base URL.
    pub server: String,
    /// The account.
    pub account_id: String,
    /// The passenger token (`fpt_…`), known only to this phone after enrolment.
    pub token: String,
}

/// Why an online step failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OnlineError {
    /// The wallet itself.
    #[error(transparent)]
    Wallet(#[from] WalletError),
    /// No passenger link yet.
    #[error("this wallet is not enrolled: run `fare-wallet enroll --server URL --account ID --token TOKEN` with the token the operator gave you")]
    NotEnrolled,
    /// The network.
    #[error("{url}: {message} (is the phone online and the server URL right?)")]
    Network {
        /// What was asked.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// Settlement said no.
    #[error("settlement refused ({status} {code}): {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// Its stable code (e.g. `device_key_reused`, `token_revoked`).
        code: String,
        /// Its message.
        message: String,
    },
    /// The answer is not what settlement sends.
    #[error("settlement's answer: {0}")]
    BadAnswer(String),
}

/// What a renewal installed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Renewed {
    /// The new credential's id (hex).
    pub credential_id: String,
    /// Its end.
    pub valid_until_unix_s: u64,
    /// The new device public key (hex).
    pub device_public_key: String,
    /// Seconds added to the phone clock to get server time, as measured now.
    pub clock_offset_s: i64,
}

/// The passenger link, if enrolled.
pub fn load_link(dir: &Path) -> Result<Option<PassengerLink>, WalletError> {
    let p = dir.join(PASSENGER_FILE);
    if !p.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&p).map_err(|source| WalletError::Io {
        path: p.clone(),
        source,
    })?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| WalletError::Corrupt {
            path: p,
            why: e.to_string(),
        })
}

fn save_link(dir: &Path, link: &PassengerLink) -> Result<(), WalletError> {
    let p = dir.join(PASSENGER_FILE);
    let text = serde_json::to_string_pretty(link).expect("link serialises");
    write_atomic(&p, text.as_bytes(), true).map_err(|source| WalletError::Io { path: p, source })
}

/// One POST (or, with `body` `None`, GET) with the passenger token; the
/// answer's JSON, or the refusal.
fn post(server: &str, path: &str, token: &str, body: Option<Value>) -> Result<Value, OnlineError> {
    let url = format!("{}{path}", server.trim_end_matches('/'));
    let net = |m: String| OnlineError::Network {
        url: url.clone(),
        message: m,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| net(format!("tokio runtime: {e}")))?;
    let (status, bytes) = rt.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(HTTP_TIMEOUT)
            .build()
            .map_err(|e| net(e.to_string()))?;
        let rq = match &body {
            Some(b) => client.post(&url).json(b),
            None => client.get(&url),
        };
        let resp = rq
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| net(e.to_string()))?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| net(e.to_string()))?;
        Ok::<_, OnlineError>((status, bytes))
    })?;
    if bytes.len() > MAX_ANSWER_BYTES {
        return Err(OnlineError::BadAnswer(format!(
            "{} bytes, over {MAX_ANSWER_BYTES}",
            bytes.len()
        )));
    }
    let v: Value = serde_json::from_slice(&bytes)
        .map_err(|e| OnlineError::BadAnswer(format!("{status}: not JSON: {e}")))?;
    if (200..300).contains(&status) {
        return Ok(v);
    }
    Err(OnlineError::Refused {
        status,
        code: v["error"].as_str().unwrap_or("?").into(),
        message: v["message"].as_str().unwrap_or("").into(),
    })
}

fn field<'a>(v: &'a Value, name: &str) -> Result<&'a Value, OnlineError> {
    v.get(name)
        .ok_or_else(|| OnlineError::BadAnswer(format!("no `{name}` in {v}")))
}

/// Renews: a fresh device key, a credential for it, installed, with the
/// clock offset from the answer's server time. `device_now` reads the
/// phone's clock (after the answer arrives). The old credential stays
/// installed if anything fails before the install.
pub fn renew(
    wallet: &mut Wallet,
    server: Option<&str>,
    valid_for_s: u64,
    device_now: &dyn Fn() -> u64,
    rng: &mut impl CryptoRngCore,
) -> Result<Renewed, OnlineError> {
    let mut link = load_link(wallet.dir())?.ok_or(OnlineError::NotEnrolled)?;
    if let Some(s) = server {
        link.server = s.to_string();
    }
    // A fresh key every time (never one this wallet used: 2^-256 otherwise).
    let key = SigningKey::generate(rng);
    let public = hex::encode(key.verifying_key().to_bytes());
    let answer = post(
        &link.server,
        &format!("/v1/accounts/{}/devices", link.account_id),
        &link.token,
        Some(json!({"device_public_key": public, "valid_for_s": valid_for_s})),
    )?;
    let now = device_now();
    let server_time = field(&answer, "server_time_unix_s")?
        .as_u64()
        .ok_or_else(|| {
            OnlineError::BadAnswer("server_time_unix_s: expected unix seconds".into())
        })?;
    let cred_hex = field(&answer, "credential")?
        .as_str()
        .ok_or_else(|| OnlineError::BadAnswer("credential: expected hex".into()))?;
    let bytes = crate::decode_credential_file(cred_hex.as_bytes())?;
    wallet.install_renewal(key, &bytes, (server_time, now))?;
    let c = wallet.core().credential().expect("just installed");
    Ok(Renewed {
        credential_id: c.id().to_hex(),
        valid_until_unix_s: c.body().valid_until_unix_s as u64,
        device_public_key: public,
        clock_offset_s: wallet.core().clock_offset_s(),
    })
}

/// Enrols this phone: creates the wallet if needed, exchanges the
/// operator-given `token` for one only this phone knows, keeps it, renews.
pub fn enroll(
    dir: &Path,
    server: &str,
    account_id: &str,
    token: &str,
    valid_for_s: u64,
    device_now: &dyn Fn() -> u64,
    rng: &mut impl CryptoRngCore,
) -> Result<Renewed, OnlineError> {
    let mut wallet = if dir.join("device.key").exists() {
        Wallet::open(dir)?
    } else {
        Wallet::init(dir, false, rng)?
    };
    let answer = post(
        server,
        &format!("/v1/accounts/{account_id}/tokens/rotate"),
        token.trim(),
        Some(json!({})),
    )?;
    let fresh = field(&answer, "token")?
        .as_str()
        .ok_or_else(|| OnlineError::BadAnswer("token: expected a string".into()))?;
    save_link(
        dir,
        &PassengerLink {
            server: server.to_string(),
            account_id: account_id.to_string(),
            token: fresh.to_string(),
        },
    )?;
    renew(&mut wallet, None, valid_for_s, device_now, rng)
}

/// The account's enrolled phones: its active passenger tokens as
/// settlement lists them (token ids, labels), this phone's marked
/// `"this_phone": true`.
pub fn phones(wallet: &Wallet) -> Result<Value, OnlineError> {
    let link = load_link(wallet.dir())?.ok_or(OnlineError::NotEnrolled)?;
    let mut v = post(
        &link.server,
        &format!("/v1/accounts/{}/tokens", link.account_id),
        &link.token,
        None,
    )?;
    let own = link.token.get(4..36).unwrap_or_default().to_string();
    if let Some(list) = v.as_array_mut() {
        // Tokens rotated away or revoked are history, not phones.
        list.retain(|t| t["revoked_unix_s"].is_null());
        for t in list {
            let mine = t["token_id"].as_str() == Some(own.as_str());
            t["this_phone"] = mine.into();
        }
    }
    Ok(v)
}

/// A lost or stolen phone of the same account, revoked from this one: its
/// token dies and its credentials go on the deny list.
pub fn revoke_phone(wallet: &Wallet, token_id: &str) -> Result<Value, OnlineError> {
    let link = load_link(wallet.dir())?.ok_or(OnlineError::NotEnrolled)?;
    post(
        &link.server,
        &format!(
            "/v1/accounts/{}/tokens/{}/revoke",
            link.account_id,
            token_id.trim()
        ),
        &link.token,
        Some(json!({})),
    )
}
