//! Passengers on their own (DESIGN §2): a passenger token per phone, a
//! device key certified once only, and a lost or stolen phone revoked.
//!
//! * **Passenger token** (`fpt_<token id, 32 hex>_<secret, 64 hex>`): made by
//!   the operator at enrolment (`POST /v1/accounts/{id}/tokens`), exchanged by
//!   the wallet at once for one only the phone knows
//!   (`POST /v1/accounts/{id}/tokens/rotate`). Settlement stores only the
//!   SHA-256 of the secret. A token belongs to one *device enrolment* (a
//!   random id kept across rotations); it may renew credentials and read its
//!   own account's statement, list its account's phones and revoke a lost
//!   one, nothing else ([`passenger_scope`]).
//! * **Device keys are used once**: every key settlement ever certified is
//!   remembered ([`Space::DeviceKeys`]), for any account; a second request
//!   for it is refused `device_key_reused`, so one phone key never rides on
//!   two credentials (codes of different credentials cannot be linked).
//! * **Lost phone**: revoking a token (operator, or the passenger from
//!   another enrolled device) revokes every token of that enrolment and puts
//!   every credential it requested on the deny list ([`Space::DeniedCredentials`],
//!   read by `bundle::desired_deny`); `all` does so for every enrolment and
//!   every credential of the account.

use crate::error::{ApiError, ErrorCode, OpsError, StoreError};
use crate::model::CredentialRecord;
use crate::store::{Db, Space, WriteSet};
use axum::extract::Request;
use axum::http::{header, HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use fare_credential::{codec, CredentialId};
use rand_core::{CryptoRng, RngCore};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Prefix of every passenger token (an operator token may not start with it).
pub const TOKEN_PREFIX: &str = "fpt_";
/// Bytes of a token id (its public half).
pub const TOKEN_ID_BYTES: usize = 16;
/// Bytes of a token secret.
pub const TOKEN_SECRET_BYTES: usize = 32;
/// Active (unrevoked) tokens an account may hold at once: one per phone.
pub const MAX_ACTIVE_TOKENS: usize = 8;
/// Longest token label (e.g. "alice's phone").
pub const MAX_LABEL_BYTES: usize = 64;
/// Tokens listed per account, revoked ones included (older ones are not shown).
pub const MAX_LISTED_TOKENS: usize = 256;

/// A stored passenger token (the secret only as its hash).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Public id.
    pub token_id: [u8; TOKEN_ID_BYTES],
    /// The device enrolment it belongs to (kept across rotations).
    pub device_id: [u8; TOKEN_ID_BYTES],
    /// Whose.
    pub account_id: String,
    /// SHA-256 of `"FARE-PASSENGER-TOKEN\0v1"` ‖ secret.
    pub secret_hash: [u8; 32],
    /// Free text for the operator.
    pub label: String,
    /// Issue time.
    pub created_unix_s: u64,
    /// When revoked (rotated away or lost), if so.
    pub revoked_unix_s: Option<u64>,
}

/// A token as the API shows it (never the secret).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TokenInfo {
    /// Public id (hex).
    pub token_id: String,
    /// Device enrolment (hex).
    pub device_id: String,
    /// Label.
    pub label: String,
    /// Issue time.
    pub created_unix_s: u64,
    /// Revocation time.
    pub revoked_unix_s: Option<u64>,
}

impl From<&TokenRecord> for TokenInfo {
    fn from(r: &TokenRecord) -> Self {
        TokenInfo {
            token_id: hex::encode(r.token_id),
            device_id: hex::encode(r.device_id),
            label: r.label.clone(),
            created_unix_s: r.created_unix_s,
            revoked_unix_s: r.revoked_unix_s,
        }
    }
}

/// A token just made: the only answer that ever carries its secret.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NewToken {
    /// Account.
    pub account_id: String,
    /// The bearer token (`fpt_…`): give it to the passenger's wallet.
    pub token: String,
    /// Its public part.
    #[serde(flatten)]
    pub info: TokenInfo,
}

/// Remembered for every device key settlement certified.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceKeyRecord {
    /// The account it was certified for.
    pub account_id: String,
    /// The credential.
    pub credential_id: CredentialId,
    /// The enrolment that asked (none: the operator asked).
    pub device_id: Option<[u8; TOKEN_ID_BYTES]>,
    /// When.
    pub issued_unix_s: u64,
}

/// A credential on the deny list because its phone was lost.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeniedCredential {
    /// Whose.
    pub account_id: String,
    /// Its end: it leaves the deny list after it (plus skew tolerance).
    pub valid_until_unix_s: u64,
    /// When it was denied.
    pub denied_unix_s: u64,
}

/// Who is calling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// The operator token.
    Operator,
    /// A passenger token of this account.
    Passenger {
        /// The account.
        account_id: String,
        /// The token used.
        token_id: [u8; TOKEN_ID_BYTES],
        /// Its enrolment.
        device_id: [u8; TOKEN_ID_BYTES],
    },
}

impl Caller {
    /// The enrolment of a passenger caller.
    pub fn device_id(&self) -> Option<[u8; TOKEN_ID_BYTES]> {
        match self {
            Caller::Operator => None,
            Caller::Passenger { device_id, .. } => Some(*device_id),
        }
    }
}

fn dec<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    codec::decode(what, bytes).map_err(|e| StoreError::Corrupt {
        what,
        why: e.to_string(),
    })
}

fn enc<T: Serialize>(what: &'static str, v: &T) -> Vec<u8> {
    crate::store::typed::enc(what, v)
}

fn pair(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut k = a.to_vec();
    k.push(0);
    k.extend_from_slice(b);
    k
}

fn secret_hash(secret: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"FARE-PASSENGER-TOKEN\0v1");
    h.update(secret);
    h.finalize().into()
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// True when the request carries a passenger token.
pub fn has_passenger_token(headers: &HeaderMap) -> bool {
    bearer(headers).is_some_and(|t| t.starts_with(TOKEN_PREFIX))
}

fn parse_token(token: &str) -> Option<([u8; TOKEN_ID_BYTES], Vec<u8>)> {
    let rest = token.strip_prefix(TOKEN_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let id: [u8; TOKEN_ID_BYTES] = hex::decode(id).ok()?.try_into().ok()?;
    let secret = hex::decode(secret).ok()?;
    (secret.len() == TOKEN_SECRET_BYTES).then_some((id, secret))
}

/// A token's record.
pub fn token(db: &Db, id: &[u8; TOKEN_ID_BYTES]) -> Result<Option<TokenRecord>, StoreError> {
    match db.store().get(Space::PassengerTokens, id)? {
        Some(v) => Ok(Some(dec("passenger_token", &v)?)),
        None => Ok(None),
    }
}

/// Authenticates a passenger token (`Bearer fpt_…`).
pub fn authenticate(db: &Db, token_text: &str) -> Result<Caller, ApiError> {
    let unauthorized = |m: &str| ApiError::of(ErrorCode::Unauthorized, m.to_string());
    let (id, secret) = parse_token(token_text).ok_or_else(|| {
        unauthorized("passenger token: expected `fpt_<32 hex>_<64 hex>` as the wallet stores it")
    })?;
    let rec = token(db, &id)?.ok_or_else(|| unauthorized("unknown passenger token"))?;
    // Digests are compared, so the time taken does not depend on the secret.
    if rec.secret_hash != secret_hash(&secret) {
        return Err(unauthorized("wrong passenger token"));
    }
    if let Some(t) = rec.revoked_unix_s {
        return Err(ApiError::of(
            ErrorCode::TokenRevoked,
            format!("passenger token revoked at {t} (rotated or reported lost): ask the operator for a new enrolment token"),
        ));
    }
    Ok(Caller::Passenger {
        account_id: rec.account_id,
        token_id: rec.token_id,
        device_id: rec.device_id,
    })
}

/// The caller of an account route: the operator, or a passenger token of
/// `account_id` itself (another account's token: 403 `other_account`).
pub fn account_caller(
    db: &Db,
    operator_token: &str,
    headers: &HeaderMap,
    account_id: &str,
) -> Result<Caller, ApiError> {
    if !has_passenger_token(headers) {
        crate::http::authorize_operator(operator_token, headers)?;
        return Ok(Caller::Operator);
    }
    let caller = authenticate(db, bearer(headers).unwrap_or_default())?;
    match &caller {
        Caller::Passenger { account_id: a, .. } if a == account_id => Ok(caller),
        _ => Err(ApiError::of(
            ErrorCode::OtherAccount,
            "a passenger token reads and renews only its own account",
        )),
    }
}

/// The routes a passenger token may call (method, path pattern with `*`
/// for one segment). Everything else answers 403 `operator_only` to it.
pub const PASSENGER_ROUTES: &[(&str, &str)] = &[
    ("GET", "/v1/accounts/*"),
    ("POST", "/v1/accounts/*/devices"),
    ("GET", "/v1/accounts/*/tokens"),
    ("POST", "/v1/accounts/*/tokens/rotate"),
    ("POST", "/v1/accounts/*/tokens/*/revoke"),
];

fn matches(pattern: &str, path: &str) -> bool {
    let (p, s): (Vec<&str>, Vec<&str>) = (pattern.split('/').collect(), path.split('/').collect());
    p.len() == s.len() && p.iter().zip(&s).all(|(a, b)| *a == "*" || a == b)
}

/// Middleware: a request with a passenger token reaches only
/// [`PASSENGER_ROUTES`] (whose handlers then check the account).
pub async fn passenger_scope(req: Request, next: Next) -> Response {
    if has_passenger_token(req.headers()) {
        let m = req.method().clone();
        let path = req.uri().path().to_string();
        let allowed = PASSENGER_ROUTES.iter().any(|(pm, pp)| {
            Method::from_bytes(pm.as_bytes()).is_ok_and(|pm| pm == m) && matches(pp, &path)
        });
        if !allowed {
            return ApiError::of(
                ErrorCode::OperatorOnly,
                format!("{m} {path} needs the operator token: a passenger token may only renew credentials and read its own account"),
            )
            .into_response();
        }
    }
    next.run(req).await
}

fn check_label(label: &str) -> Result<(), ApiError> {
    if label.len() > MAX_LABEL_BYTES || label.chars().any(char::is_control) {
        return Err(ApiError::of(
            ErrorCode::InvalidField,
            format!("label: expected at most {MAX_LABEL_BYTES} bytes without control characters"),
        ));
    }
    Ok(())
}

/// Every token of an account (at most [`MAX_LISTED_TOKENS`]).
pub fn tokens_of(db: &Db, account_id: &str) -> Result<Vec<TokenRecord>, StoreError> {
    let prefix = pair(account_id.as_bytes(), &[]);
    let keys = db
        .store()
        .scan(Space::AccountTokens, &prefix, None, MAX_LISTED_TOKENS)?;
    let mut out = Vec::new();
    for (k, _) in keys {
        let id: [u8; TOKEN_ID_BYTES] =
            k[prefix.len()..]
                .try_into()
                .map_err(|_| StoreError::Corrupt {
                    what: "account_tokens",
                    why: "bad key length".into(),
                })?;
        if let Some(t) = token(db, &id)? {
            out.push(t);
        }
    }
    Ok(out)
}

fn put_token(w: &mut WriteSet, t: &TokenRecord) {
    w.put(
        Space::PassengerTokens,
        t.token_id.to_vec(),
        enc("passenger_token", t),
    );
    w.put(
        Space::AccountTokens,
        pair(t.account_id.as_bytes(), &t.token_id),
        Vec::new(),
    );
}

fn new_token(
    account_id: &str,
    device_id: Option<[u8; TOKEN_ID_BYTES]>,
    label: &str,
    now: u64,
    rng: &mut (impl RngCore + CryptoRng),
) -> (TokenRecord, String) {
    let mut id = [0u8; TOKEN_ID_BYTES];
    rng.fill_bytes(&mut id);
    let mut secret = [0u8; TOKEN_SECRET_BYTES];
    rng.fill_bytes(&mut secret);
    let device_id = device_id.unwrap_or_else(|| {
        let mut d = [0u8; TOKEN_ID_BYTES];
        rng.fill_bytes(&mut d);
        d
    });
    let rec = TokenRecord {
        token_id: id,
        device_id,
        account_id: account_id.into(),
        secret_hash: secret_hash(&secret),
        label: label.into(),
        created_unix_s: now,
        revoked_unix_s: None,
    };
    let text = format!("{TOKEN_PREFIX}{}_{}", hex::encode(id), hex::encode(secret));
    (rec, text)
}

/// `POST /v1/accounts/{id}/tokens` body (operator: a new enrolment).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssueToken {
    /// Free text, e.g. "alice's phone".
    #[serde(default)]
    pub label: String,
}

/// Issues a passenger token for a new device enrolment of `account_id`.
pub fn issue_token(
    db: &Db,
    account_id: &str,
    req: &IssueToken,
    now: u64,
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<NewToken, ApiError> {
    check_label(&req.label)?;
    crate::ops::account_or_404(db, account_id)?;
    let active = tokens_of(db, account_id)?
        .iter()
        .filter(|t| t.revoked_unix_s.is_none())
        .count();
    if active >= MAX_ACTIVE_TOKENS {
        return Err(ApiError::of(
            ErrorCode::TooManyTokens,
            format!("account `{account_id}` has {active} active passenger tokens (at most {MAX_ACTIVE_TOKENS}): revoke one first"),
        ));
    }
    let (rec, text) = new_token(account_id, None, &req.label, now, rng);
    let mut w = WriteSet::default();
    w.check(Space::PassengerTokens, rec.token_id.to_vec(), None);
    put_token(&mut w, &rec);
    db.commit(w)?;
    Ok(NewToken {
        account_id: account_id.into(),
        token: text,
        info: TokenInfo::from(&rec),
    })
}

/// Replaces the caller's token by a new one of the same enrolment (the
/// wallet does this at enrolment, so only the phone knows its secret).
pub fn rotate_token(
    db: &Db,
    caller: &Caller,
    now: u64,
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<NewToken, ApiError> {
    let Caller::Passenger {
        account_id,
        token_id,
        device_id,
    } = caller
    else {
        return Err(ApiError::of(
            ErrorCode::PassengerOnly,
            "rotate is called with the passenger token to replace (the operator issues new ones with POST /v1/accounts/{id}/tokens)",
        ));
    };
    let (old_raw, mut old) = match db.store().get(Space::PassengerTokens, token_id)? {
        Some(raw) => {
            let t: TokenRecord = dec("passenger_token", &raw)?;
            (raw, t)
        }
        None => {
            return Err(ApiError::of(
                ErrorCode::Unauthorized,
                "unknown passenger token",
            ))
        }
    };
    old.revoked_unix_s = Some(now);
    let (rec, text) = new_token(account_id, Some(*device_id), &old.label, now, rng);
    let mut w = WriteSet::default();
    // Two rotations racing with one token: only one wins.
    w.check(Space::PassengerTokens, token_id.to_vec(), Some(old_raw));
    put_token(&mut w, &old);
    put_token(&mut w, &rec);
    db.commit(w)?;
    Ok(NewToken {
        account_id: account_id.clone(),
        token: text,
        info: TokenInfo::from(&rec),
    })
}

/// What a revocation did.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Revoked {
    /// Tokens revoked now (hex ids).
    pub tokens_revoked: Vec<String>,
    /// Credentials put on the deny list now (hex ids).
    pub credentials_denied: Vec<CredentialId>,
    /// Deny list version that carries them (readers learn it at their next bundle).
    pub deny_version: u64,
}

/// The credential ids an enrolment requested.
fn credentials_of_device(
    db: &Db,
    device_id: &[u8; TOKEN_ID_BYTES],
) -> Result<Vec<CredentialId>, StoreError> {
    let prefix = pair(device_id, &[]);
    db.scan_paged(Space::DeviceCredentials, &prefix)?
        .into_iter()
        .map(|(k, _)| {
            k[prefix.len()..]
                .try_into()
                .map(CredentialId)
                .map_err(|_| StoreError::Corrupt {
                    what: "device_credentials",
                    why: "bad key length".into(),
                })
        })
        .collect()
}

/// The tokens and credentials a revocation of `target` (a token id in hex,
/// or `all`) covers: every token of that token's enrolment and the
/// credentials it requested; `all`: every token and credential of the account.
fn revocation_scope(
    db: &Db,
    account_id: &str,
    target: &str,
) -> Result<(Vec<TokenRecord>, Vec<CredentialRecord>), ApiError> {
    let tokens = tokens_of(db, account_id)?;
    if target == "all" {
        return Ok((tokens, db.credentials_of(account_id)?));
    }
    let id: [u8; TOKEN_ID_BYTES] = hex::decode(target)
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| {
            ApiError::of(
                ErrorCode::InvalidPath,
                format!("token `{target}`: expected a token id (32 hex characters) or `all`"),
            )
        })?;
    let device = tokens
        .iter()
        .find(|t| t.token_id == id)
        .map(|t| t.device_id)
        .ok_or_else(|| {
            ApiError::of(
                ErrorCode::UnknownToken,
                format!("account `{account_id}` has no passenger token {target}"),
            )
        })?;
    let mut creds = Vec::new();
    for c in credentials_of_device(db, &device)? {
        if let Some(r) = db.credential(&c)? {
            creds.push(r);
        }
    }
    let tokens = tokens
        .into_iter()
        .filter(|t| t.device_id == device)
        .collect();
    Ok((tokens, creds))
}

/// Revokes the enrolment of token `target` (hex id, or `all`) of
/// `account_id` and deny-lists the unexpired credentials it requested
/// ([`revocation_scope`]). The caller re-publishes the deny list and fills
/// in its version.
pub fn revoke_device(
    db: &Db,
    account_id: &str,
    target: &str,
    now: u64,
) -> Result<Revoked, ApiError> {
    crate::ops::account_or_404(db, account_id)?;
    let (tokens, creds) = revocation_scope(db, account_id, target)?;
    let mut w = WriteSet::default();
    let mut out = Revoked {
        tokens_revoked: Vec::new(),
        credentials_denied: Vec::new(),
        deny_version: 0,
    };
    for mut t in tokens.into_iter().filter(|t| t.revoked_unix_s.is_none()) {
        t.revoked_unix_s = Some(now);
        out.tokens_revoked.push(hex::encode(t.token_id));
        put_token(&mut w, &t);
    }
    for c in creds.iter().filter(|c| c.valid_until_unix_s >= now) {
        if db
            .store()
            .get(Space::DeniedCredentials, &c.credential_id.0)?
            .is_some()
        {
            continue;
        }
        let d = DeniedCredential {
            account_id: account_id.into(),
            valid_until_unix_s: c.valid_until_unix_s,
            denied_unix_s: now,
        };
        w.put(
            Space::DeniedCredentials,
            c.credential_id.0.to_vec(),
            enc("denied_credential", &d),
        );
        out.credentials_denied.push(c.credential_id);
    }
    db.commit(w)?;
    Ok(out)
}

/// Deletes the denied credentials that ended before `cutoff_unix_s` (they
/// left the deny list already; `App::purge` passes now minus the skew
/// tolerance). Returns how many.
pub fn purge_denied(db: &Db, cutoff_unix_s: u64) -> Result<usize, StoreError> {
    let mut w = WriteSet::default();
    let mut n = 0;
    for (id, until) in denied_credentials(db)? {
        if until < cutoff_unix_s {
            w.delete(Space::DeniedCredentials, id.0.to_vec());
            n += 1;
        }
    }
    db.commit(w)?;
    Ok(n)
}

/// Credentials denied because their phone was lost: `(id, valid until)`.
pub fn denied_credentials(db: &Db) -> Result<Vec<(CredentialId, u64)>, StoreError> {
    db.scan_paged(Space::DeniedCredentials, b"")?
        .into_iter()
        .map(|(k, v)| {
            let id: [u8; 16] = k.as_slice().try_into().map_err(|_| StoreError::Corrupt {
                what: "denied_credential",
                why: "bad key length".into(),
            })?;
            let d: DeniedCredential = dec("denied_credential", &v)?;
            Ok((CredentialId(id), d.valid_until_unix_s))
        })
        .collect()
}

/// Refuses a device key settlement certified before, for any account.
pub fn check_device_key_unused(db: &Db, key: &[u8; 32]) -> Result<(), OpsError> {
    if db.store().get(Space::DeviceKeys, key)?.is_some() {
        return Err(OpsError::DeviceKeyReused);
    }
    Ok(())
}

/// Queues the record of a newly certified device key (checked absent at
/// commit) and the link from the requesting enrolment to the credential.
pub fn record_device_key(w: &mut WriteSet, key: &[u8; 32], rec: &DeviceKeyRecord) {
    w.check(Space::DeviceKeys, key.to_vec(), None);
    w.put(Space::DeviceKeys, key.to_vec(), enc("device_key", rec));
    if let Some(d) = rec.device_id {
        w.put(
            Space::DeviceCredentials,
            pair(&d, &rec.credential_id.0),
            Vec::new(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_patterns_match_one_segment_per_star() {
        assert!(matches("/v1/accounts/*", "/v1/accounts/alice"));
        assert!(!matches("/v1/accounts/*", "/v1/accounts/alice/payments"));
        assert!(matches(
            "/v1/accounts/*/tokens/*/revoke",
            "/v1/accounts/a/tokens/all/revoke"
        ));
        assert!(!matches("/v1/accounts/*/devices", "/v1/accounts/a/freeze"));
    }

    #[test]
    fn tokens_parse_only_in_their_exact_shape() {
        let id = "00".repeat(16);
        let secret = "ab".repeat(32);
        assert!(parse_token(&format!("fpt_{id}_{secret}")).is_some());
        assert!(parse_token(&format!("fpt_{id}_{}", "ab".repeat(31))).is_none());
        assert!(parse_token(&format!("fpx_{id}_{secret}")).is_none());
        assert!(parse_token(&format!("fpt_{id}{secret}")).is_none());
    }
}

/// The passenger routes (operator: enrol, list, revoke; passenger: rotate,
/// revoke from another enrolled phone).
pub mod http {
    use super::*;
    use crate::http::{blocking, json, json_body, refresh_deny, ApiPath, ApiResult, AppState};
    use axum::body::Body;
    use axum::extract::State;
    use axum::http::StatusCode;
    use axum::routing::post;
    use axum::Router;

    /// The routes, merged into [`crate::http::router`].
    pub fn routes() -> Router<AppState> {
        Router::new()
            .route("/v1/accounts/{id}/tokens", post(issue).get(list))
            .route("/v1/accounts/{id}/tokens/rotate", post(rotate))
            .route("/v1/accounts/{id}/tokens/{token}/revoke", post(revoke))
    }

    async fn issue(
        State(app): State<AppState>,
        headers: HeaderMap,
        ApiPath(id): ApiPath<String>,
        body: Body,
    ) -> ApiResult {
        crate::http::authorize_operator(&app.operator_token, &headers)?;
        let req: IssueToken = json_body(&app, &headers, body).await?;
        let t = blocking(move || {
            let _w = app.write_lock.lock().unwrap_or_else(|p| p.into_inner());
            let mut rng = app.rng.lock().unwrap_or_else(|p| p.into_inner());
            issue_token(&app.db, &id, &req, app.now(), &mut *rng)
        })
        .await?;
        Ok(json(StatusCode::CREATED, &t))
    }

    async fn list(
        State(app): State<AppState>,
        headers: HeaderMap,
        ApiPath(id): ApiPath<String>,
    ) -> ApiResult {
        let v = blocking(move || {
            // A passenger sees its account's phones, to revoke a lost one.
            account_caller(&app.db, &app.operator_token, &headers, &id)?;
            crate::ops::account_or_404(&app.db, &id)?;
            Ok(tokens_of(&app.db, &id)?
                .iter()
                .map(TokenInfo::from)
                .collect::<Vec<_>>())
        })
        .await?;
        Ok(json(StatusCode::OK, &v))
    }

    async fn rotate(
        State(app): State<AppState>,
        headers: HeaderMap,
        ApiPath(id): ApiPath<String>,
    ) -> ApiResult {
        let t = blocking(move || {
            let caller = account_caller(&app.db, &app.operator_token, &headers, &id)?;
            let _w = app.write_lock.lock().unwrap_or_else(|p| p.into_inner());
            let mut rng = app.rng.lock().unwrap_or_else(|p| p.into_inner());
            rotate_token(&app.db, &caller, app.now(), &mut *rng)
        })
        .await?;
        Ok(json(StatusCode::CREATED, &t))
    }

    async fn revoke(
        State(app): State<AppState>,
        headers: HeaderMap,
        ApiPath((id, target)): ApiPath<(String, String)>,
    ) -> ApiResult {
        let r = blocking(move || {
            account_caller(&app.db, &app.operator_token, &headers, &id)?;
            let mut r = {
                let _w = app.write_lock.lock().unwrap_or_else(|p| p.into_inner());
                revoke_device(&app.db, &id, &target, app.now())?
            };
            r.deny_version = refresh_deny(&app)?.version;
            Ok(r)
        })
        .await?;
        Ok(json(StatusCode::OK, &r))
    }
}
