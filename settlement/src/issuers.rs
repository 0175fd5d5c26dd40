//! Issuer keys on a live service: list, rotate and retire through the
//! operator API (`fare-settlement admin` is the CLI over it).
//!
//! The keys live in the KEYS directory, which `fare-keys` may change beside
//! the running service: every change here goes through `fare_keys::KeyStore`,
//! which takes the directory's lock and re-reads `keys.json` first, and the
//! service re-reads it before each bundle (`App::bundle`), so neither side
//! undoes the other. A rotation or retirement changes the trust list, so
//! the next bundle is a new version and every reader learns it at its next
//! contact; a retired key's credentials are refused after the key's end (by
//! readers through the trust list's window, by settlement's re-verification
//! likewise).

use crate::app::App;
use crate::error::{ApiError, ErrorCode};
use fare_credential::IssuerKey;
use serde::{Deserialize, Serialize};

/// One issuer key as the API shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IssuerKeyView {
    /// Key id (in every credential it signs).
    pub key_id: u32,
    /// Public key, hex.
    pub public_key: String,
    /// Window start.
    pub valid_from_unix_s: u64,
    /// Window end, inclusive (a retirement moves it earlier).
    pub valid_until_unix_s: u64,
    /// `issuing` (the key new credentials get), `valid`, `retiring`
    /// (ends within `MAX_CREDENTIAL_VALIDITY_S`), `expired` or `future`.
    pub state: String,
}

/// The trust list with each key's state at `now`, and the server time.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IssuerKeys {
    /// Every key.
    pub keys: Vec<IssuerKeyView>,
    /// The key new credentials are signed with (none: issuance is down).
    pub issuing_key_id: Option<u32>,
    /// Server time of this answer.
    pub server_time_unix_s: u64,
}

fn view(k: &IssuerKey, issuing: Option<u32>, now: u64) -> IssuerKeyView {
    let state = if now > k.valid_until_unix_s {
        "expired"
    } else if now < k.valid_from_unix_s {
        "future"
    } else if Some(k.key_id) == issuing {
        "issuing"
    } else if k.valid_until_unix_s < now.saturating_add(fare_keys::MAX_CREDENTIAL_VALIDITY_S) {
        "retiring"
    } else {
        "valid"
    };
    IssuerKeyView {
        key_id: k.key_id,
        public_key: hex::encode(k.public_key),
        valid_from_unix_s: k.valid_from_unix_s,
        valid_until_unix_s: k.valid_until_unix_s,
        state: state.into(),
    }
}

fn failed(e: fare_keys::KeysError) -> ApiError {
    ApiError::of(ErrorCode::IssuerKeysFailed, e.to_string())
}

/// The issuer keys as the KEYS directory holds them now.
pub fn list(app: &App) -> Result<IssuerKeys, ApiError> {
    let now = app.now();
    let mut keys = app.keys.lock().unwrap_or_else(|p| p.into_inner());
    keys.reload_if_changed().map_err(failed)?;
    let issuing = keys.current_issuer(now).ok().map(|(k, _)| k.key_id);
    Ok(IssuerKeys {
        keys: keys
            .trust_list()
            .iter()
            .map(|k| view(k, issuing, now))
            .collect(),
        issuing_key_id: issuing,
        server_time_unix_s: now,
    })
}

/// Adds a new issuer key valid from now; new credentials are signed with
/// it, older keys stay valid until their end. Publishes a new bundle.
pub fn rotate(app: &App) -> Result<IssuerKeys, ApiError> {
    {
        let _w = app.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut rng = app.rng.lock().unwrap_or_else(|p| p.into_inner());
        let now = app.now();
        app.keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .rotate_issuer(now, &mut *rng)
            .map_err(failed)?;
    }
    publish(app)?;
    list(app)
}

/// `POST /v1/issuer-keys/{id}/retire` body.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retire {
    /// End of the key's window (default: now). Never in the past: rides
    /// already taken under the key must still re-verify at settlement.
    #[serde(default)]
    pub at_unix_s: Option<u64>,
}

/// Ends issuer key `key_id`'s window at `req.at_unix_s` (default now), as
/// long as another key is valid now to issue with. Publishes a new bundle.
pub fn retire(app: &App, key_id: u32, req: &Retire) -> Result<IssuerKeys, ApiError> {
    {
        let _w = app.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let now = app.now();
        let at = req.at_unix_s.unwrap_or(now);
        if at < now {
            return Err(ApiError::of(
                ErrorCode::InvalidField,
                format!("at_unix_s = {at}: expected now ({now}) or later; a retirement in the past would refuse rides already taken"),
            ));
        }
        let mut keys = app.keys.lock().unwrap_or_else(|p| p.into_inner());
        keys.reload_if_changed().map_err(failed)?;
        let trust = keys.trust_list();
        if !trust.iter().any(|k| k.key_id == key_id) {
            return Err(ApiError::of(
                ErrorCode::UnknownIssuerKey,
                format!("no issuer key {key_id} (GET /v1/issuer-keys lists them)"),
            ));
        }
        let other_valid = trust.iter().any(|k| {
            k.key_id != key_id && k.valid_from_unix_s <= now && now <= k.valid_until_unix_s
        });
        if !other_valid {
            return Err(ApiError::of(
                ErrorCode::LastIssuerKey,
                format!("issuer key {key_id} is the only key valid now: rotate first (POST /v1/issuer-keys/rotate), then retire it"),
            ));
        }
        keys.retire_issuer(key_id, at).map_err(failed)?;
    }
    publish(app)?;
    list(app)
}

/// Publishes a bundle version with the new trust list now, so readers
/// learn it at their next contact.
fn publish(app: &App) -> Result<(), ApiError> {
    app.refresh_deny()
        .map_err(|e| ApiError::of(ErrorCode::DenyRefreshFailed, e.to_string()))?;
    Ok(())
}

/// `/v1/issuer-keys` routes (operator only).
pub mod http {
    use super::*;
    use crate::http::{
        authorize_operator, blocking, json, json_body, ApiPath, ApiResult, AppState,
    };
    use axum::body::Body;
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::{get, post};
    use axum::Router;

    /// The routes, merged into [`crate::http::router`].
    pub fn routes() -> Router<AppState> {
        Router::new()
            .route("/v1/issuer-keys", get(get_keys))
            .route("/v1/issuer-keys/rotate", post(post_rotate))
            .route("/v1/issuer-keys/{id}/retire", post(post_retire))
    }

    async fn get_keys(State(app): State<AppState>, headers: HeaderMap) -> ApiResult {
        authorize_operator(&app.operator_token, &headers)?;
        let v = blocking(move || list(&app)).await?;
        Ok(json(StatusCode::OK, &v))
    }

    async fn post_rotate(State(app): State<AppState>, headers: HeaderMap) -> ApiResult {
        authorize_operator(&app.operator_token, &headers)?;
        let v = blocking(move || rotate(&app)).await?;
        Ok(json(StatusCode::CREATED, &v))
    }

    async fn post_retire(
        State(app): State<AppState>,
        headers: HeaderMap,
        ApiPath(id): ApiPath<String>,
        body: Body,
    ) -> ApiResult {
        authorize_operator(&app.operator_token, &headers)?;
        let key_id = id.parse::<u32>().map_err(|_| {
            ApiError::of(
                ErrorCode::InvalidPath,
                format!("issuer key id `{id}`: expected an integer"),
            )
        })?;
        let req: Retire = json_body(&app, &headers, body).await?;
        let v = blocking(move || retire(&app, key_id, &req)).await?;
        Ok(json(StatusCode::OK, &v))
    }
}
