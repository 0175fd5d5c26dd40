//! The HTTP service (axum on tokio). See README.md for the API reference.

use crate::app::App;
use crate::error::{ApiError, ErrorCode, IngestError};
use crate::ops;
use crate::reports;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

pub(crate) type AppState = Arc<App>;
pub(crate) type ApiResult = Result<Response, ApiError>;

/// The process-wide Prometheus handle. The recorder is installed once per
/// process (several services in one test process share it).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!(
                    "a metrics recorder was already installed; /metrics shows only what it records"
                );
            }
            handle
        })
        .clone()
}

/// Runs `f` on the blocking pool (storage flushes and signature checks must
/// not stall the async workers).
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::of(ErrorCode::Internal, format!("task failed: {e}")))?
}

/// Re-publishes the deny list after an account change; a failure here is a
/// server fault (the account change itself is already durable).
pub(crate) fn refresh_deny(app: &App) -> Result<crate::bundle::DenyStateSummary, ApiError> {
    app.refresh_deny()
        .map_err(|e| ApiError::of(ErrorCode::DenyRefreshFailed, e.to_string()))
}

fn authorize(app: &App, headers: &HeaderMap) -> Result<(), ApiError> {
    authorize_operator(&app.operator_token, headers)
}

/// Checks the operator bearer token; a passenger token is refused 403
/// `operator_only` (it is known, but not allowed here).
pub(crate) fn authorize_operator(
    operator_token: &str,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    if crate::passengers::has_passenger_token(headers) {
        return Err(ApiError::of(
            ErrorCode::OperatorOnly,
            "this endpoint needs the operator token: a passenger token may only renew credentials and read its own account",
        ));
    }
    let unauthorized = |m: &str| ApiError::of(ErrorCode::Unauthorized, m.to_string());
    let h = headers.get(header::AUTHORIZATION).ok_or_else(|| {
        unauthorized("operator endpoint: send `Authorization: Bearer <operator_token>`")
    })?;
    let token = h
        .to_str()
        .ok()
        .and_then(|s| s.strip_prefix("Bearer "))
        .ok_or_else(|| unauthorized("Authorization header must be `Bearer <operator_token>`"))?;
    // Compare digests so the comparison time does not depend on the token.
    if blake3::hash(token.trim().as_bytes()) != blake3::hash(operator_token.as_bytes()) {
        return Err(unauthorized("wrong operator token"));
    }
    Ok(())
}

/// axum's `Path`, refusing with `invalid_path` (JSON) instead of axum's
/// plain-text rejection (e.g. a segment that is not UTF-8).
pub(crate) struct ApiPath<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(v)) => Ok(ApiPath(v)),
            Err(e) if e.status().is_server_error() => {
                Err(ApiError::of(ErrorCode::Internal, e.body_text()))
            }
            Err(e) => Err(ApiError::of(
                ErrorCode::InvalidPath,
                format!("request path: {}", e.body_text()),
            )),
        }
    }
}

/// axum's `Query`, refusing with `invalid_query` (JSON).
struct ApiQuery<T>(T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| ApiQuery(v))
            .map_err(|e| {
                ApiError::of(
                    ErrorCode::InvalidQuery,
                    format!("query string: {}", e.body_text()),
                )
            })
    }
}

/// How much of a body past its limit is read and dropped before the 413 is
/// sent. hyper closes a connection whose request body was left unread; a
/// client still writing it then sees the connection reset (a broken pipe)
/// instead of the answer that says why. Past this much, the reset is the
/// answer: reading on would let any client make the service read without
/// end (the request timeout bounds the time as well).
pub const OVERSIZE_DRAIN_BYTES: usize = 1 << 20;

/// The body, at most `limit` bytes; a longer one is refused with
/// `body_too_large` after up to `OVERSIZE_DRAIN_BYTES` more are drained.
async fn read_body(mut body: Body, limit: usize) -> Result<Bytes, ApiError> {
    use axum::body::HttpBody;
    let mut kept =
        Vec::with_capacity(usize::try_from(body.size_hint().lower()).map_or(0, |n| n.min(limit)));
    let mut total_bytes = 0usize;
    while let Some(frame) =
        std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await
    {
        let frame = frame.map_err(|e| {
            ApiError::of(
                ErrorCode::BodyTooLarge,
                format!("request body unreadable after {total_bytes} bytes (limit {limit}): {e}"),
            )
        })?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        total_bytes = total_bytes.saturating_add(data.len());
        if total_bytes <= limit {
            kept.extend_from_slice(&data);
        } else if total_bytes > limit.saturating_add(OVERSIZE_DRAIN_BYTES) {
            break;
        } else {
            kept = Vec::new();
        }
    }
    if total_bytes > limit {
        return Err(too_large(total_bytes, limit));
    }
    Ok(Bytes::from(kept))
}

fn too_large(len: usize, limit: usize) -> ApiError {
    ApiError::of(
        ErrorCode::BodyTooLarge,
        format!("request body of {len} bytes or more over the limit of {limit} bytes"),
    )
}

/// A request's body of at most `limit` bytes, or `body_too_large`: refused
/// unread when its Content-Length is past the limit by more than
/// `OVERSIZE_DRAIN_BYTES` (the client sees the answer or a reset), drained
/// and answered when it is just over (see `read_body`).
pub(crate) async fn limited_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Bytes, ApiError> {
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
    {
        if len > limit.saturating_add(OVERSIZE_DRAIN_BYTES) {
            return Err(too_large(len, limit));
        }
    }
    read_body(body, limit).await
}

pub(crate) async fn json_body<T: DeserializeOwned>(
    app: &App,
    headers: &HeaderMap,
    body: Body,
) -> Result<T, ApiError> {
    let bytes = limited_body(headers, body, app.config.json_body_limit_bytes).await?;
    // Only an object: serde's derived structs also accept the sequence form
    // (`["pay-1", 500]` as a payment), which no client means.
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {}
        None => {
            return Err(ApiError::of(
                ErrorCode::InvalidJson,
                "empty body: expected a JSON object",
            ))
        }
        Some(_) => return Err(ApiError::of(
            ErrorCode::JsonNotObject,
            "request body: expected a JSON object `{...}` (arrays and other values are refused)",
        )),
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::of(ErrorCode::InvalidJson, format!("request body: {e}")))
}

pub(crate) fn json<T: serde::Serialize>(status: StatusCode, v: &T) -> Response {
    (status, Json(v)).into_response()
}

fn created(new: bool) -> StatusCode {
    if new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    }
}

fn parse_reader_id(s: &str) -> Result<u32, ApiError> {
    s.parse::<u32>().map_err(|_| {
        ApiError::of(
            ErrorCode::InvalidPath,
            format!("reader id `{s}`: expected an integer 1..=4294967295"),
        )
    })
}

fn format_of(q: &HashMap<String, String>) -> Result<bool, ApiError> {
    match q.get("format").map(String::as_str) {
        None | Some("json") => Ok(false),
        Some("csv") => Ok(true),
        Some(f) => Err(ApiError::of(
            ErrorCode::InvalidQuery,
            format!("format `{f}`: expected json or csv"),
        )),
    }
}

fn csv(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response()
}

/// `{"status":"ok","database":"sled"|"postgres"}`; `storage_error` when the
/// database does not answer (a load balancer stops sending work here).
async fn healthz(State(app): State<AppState>) -> ApiResult {
    let backend = app.db.store().backend();
    blocking(move || {
        app.db
            .store()
            .health()
            .map_err(|e| ApiError::of(e.code(), format!("database ({backend}): {e}")))
    })
    .await?;
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({"status": "ok", "database": backend}),
    ))
}

async fn metrics_endpoint() -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics_handle().render(),
    )
        .into_response()
}

async fn post_batch(State(app): State<AppState>, headers: HeaderMap, body: Body) -> ApiResult {
    let limit = fare_credential::batch::MAX_BATCH_BYTES;
    let bytes = read_body(body, limit)
        .await
        .map_err(|_| IngestError::BodyTooLarge { limit })?;
    let reader_time = crate::acks::reader_time_header(&headers);
    let auth = reader_auth(&headers)?;
    let started = Instant::now();
    let ack =
        blocking(move || crate::intake::answer_batch(&app, &bytes, auth.as_deref(), reader_time))
            .await?;
    metrics::histogram!("settlement_ingest_seconds").record(started.elapsed().as_secs_f64());
    Ok(json(StatusCode::OK, &ack))
}

/// Header with settlement's clock (unix s) on every answer: a reader whose
/// signed request was refused as `request_stale` time-stamps the next one by it.
pub const SERVER_TIME_HEADER: &str = "x-server-time";

async fn server_time(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    if let Ok(v) = axum::http::HeaderValue::from_str(&app.now().to_string()) {
        resp.headers_mut().insert(SERVER_TIME_HEADER, v);
    }
    resp
}

/// The `X-Reader-Auth` header's value, if sent.
fn reader_auth(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    match headers.get(fare_credential::request::REQUEST_AUTH_HEADER) {
        None => Ok(None),
        Some(v) => v.to_str().map(|s| Some(s.to_string())).map_err(|_| {
            ApiError::of(
                ErrorCode::RequestBadSignature,
                "X-Reader-Auth is not ASCII hex".to_string(),
            )
        }),
    }
}

async fn get_bundle(
    State(app): State<AppState>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<HashMap<String, String>>,
) -> ApiResult {
    let reader_id = parse_reader_id(&id)?;
    let since = match q.get("since") {
        None => None,
        Some(s) => Some(s.parse::<u64>().map_err(|_| {
            ApiError::of(
                ErrorCode::InvalidQuery,
                format!("since `{s}`: expected a bundle version (integer)"),
            )
        })?),
    };
    let tariff_held = match q.get("tariff") {
        None => None,
        Some(s) => Some(parse_digest(s).ok_or_else(|| {
            ApiError::of(
                ErrorCode::InvalidQuery,
                format!("tariff `{s}`: expected the 64 hex digits of a tariff digest"),
            )
        })?),
    };
    let query = fare_credential::request::BundleQuery {
        reader_id,
        since,
        tariff_held,
    };
    let target = uri
        .path_and_query()
        .map_or_else(|| uri.path().to_string(), |pq| pq.as_str().to_string());
    let bytes = blocking(move || {
        let operator = headers.contains_key(header::AUTHORIZATION);
        if operator {
            authorize(&app, &headers)?;
        }
        let auth = reader_auth(&headers)?;
        let caller = match operator {
            true => crate::intake::BundleCaller::Operator,
            false => crate::intake::BundleCaller::Reader(auth.as_deref()),
        };
        let reader_time = crate::acks::reader_time_header(&headers);
        crate::intake::answer_bundle(&app, query, caller, &target, reader_time)
    })
    .await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

/// 32 bytes from 64 hex digits.
fn parse_digest(s: &str) -> Option<[u8; 32]> {
    let mut d = [0u8; 32];
    hex::decode_to_slice(s, &mut d).ok()?;
    Some(d)
}

async fn post_reader(State(app): State<AppState>, headers: HeaderMap, body: Body) -> ApiResult {
    authorize(&app, &headers)?;
    let req: ops::ProvisionReader = json_body(&app, &headers, body).await?;
    let (reader, new) = blocking(move || {
        let _w = app.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        Ok(ops::provision_reader(&app.db, &req, app.now())?)
    })
    .await?;
    Ok(json(created(new), &reader))
}

async fn list_readers(State(app): State<AppState>, headers: HeaderMap) -> ApiResult {
    authorize(&app, &headers)?;
    let v = blocking(move || {
        let mut out = Vec::new();
        for r in app.db.readers()? {
            out.push(crate::readers::overview(&app.db, &r)?);
        }
        Ok(out)
    })
    .await?;
    Ok(json(StatusCode::OK, &v))
}

async fn resolve_incident(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    authorize(&app, &headers)?;
    let req: crate::readers::Resolve = json_body(&app, &headers, body).await?;
    let (r, new) = blocking(move || {
        let _w = app.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        crate::readers::resolve(&app.db, &req, app.now())
    })
    .await?;
    Ok(json(created(new), &r))
}

async fn retire_reader(
    State(app): State<AppState>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
) -> ApiResult {
    authorize(&app, &headers)?;
    let reader_id = parse_reader_id(&id)?;
    let r = blocking(move || {
        let _w = app.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        Ok(ops::retire_reader(&app.db, reader_id)?)
    })
    .await?;
    Ok(json(StatusCode::OK, &r))
}

async fn post_account(State(app): State<AppState>, headers: HeaderMap, body: Body) -> ApiResult {
    authorize(&app, &headers)?;
    let req: ops::CreateAccount = json_body(&app, &headers, body).await?;
    let (a, new) = blocking(move || {
        let _w = app.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut rng = app.rng.lock().unwrap_or_else(|p| p.into_inner());
        Ok(ops::create_account(
            &app.db,
            &req,
            app.config.default_credit_limit_minor,
            app.now(),
            &mut *rng,
        )?)
    })
    .await?;
    Ok(json(created(new), &a))
}

async fn get_account(
    State(app): State<AppState>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
) -> ApiResult {
    let s = blocking(move || {
        crate::passengers::account_caller(&app.db, &app.operator_token, &headers, &id)?;
        Ok(ops::statement(&app.db, &id)?)
    })
    .await?;
    Ok(json(StatusCode::OK, &s))
}

async fn post_device(
    State(app): State<AppState>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
    body: Body,
) -> ApiResult {
    let req: ops::RegisterDevice = json_body(&app, &headers, body).await?;
    let c = blocking(move || {
        // The operator, or this account's own passenger token.
        let caller =
            crate::passengers::account_caller(&app.db, &app.operator_token, &headers, &id)?;
        drop(
            app.reload_keys()
                .map_err(|e| ApiError::of(ErrorCode::IssuerUnavailable, e.to_string()))?,
        );
        let _w = app.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut rng = app.rng.lock().unwrap_or_else(|p| p.into_inner());
        let c = ops::register_device_via(
            &app.db,
            &app.keys,
            &id,
            &req,
            caller.device_id(),
            app.config.max_credential_validity_s,
            app.now(),
            &mut *rng,
        )?;
        // The wallet sets its clock offset from this (DESIGN §2, clocks).
        let mut v = serde_json::to_value(&c)
            .map_err(|e| ApiError::of(ErrorCode::Internal, e.to_string()))?;
        v["server_time_unix_s"] = app.now().into();
        Ok(v)
    })
    .await?;
    Ok(json(StatusCode::CREATED, &c))
}

async fn post_payment(
    State(app): State<AppState>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
    body: Body,
) -> ApiResult {
    authorize(&app, &headers)?;
    let req: ops::MakePayment = json_body(&app, &headers, body).await?;
    let (p, new) = blocking(move || {
        let r = {
            let _w = app.write_lock.lock().unwrap_or_else(|p| p.into_inner());
            ops::pay(&app.db, &id, &req, app.now())?
        };
        refresh_deny(&app)?;
        Ok(r)
    })
    .await?;
    Ok(json(
        created(new),
        &serde_json::json!({"payment": p, "result": if new {"created"} else {"exists"}}),
    ))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FreezeReq {
    frozen: bool,
}

async fn post_freeze(
    State(app): State<AppState>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
    body: Body,
) -> ApiResult {
    authorize(&app, &headers)?;
    let req: FreezeReq = json_body(&app, &headers, body).await?;
    let a = blocking(move || {
        let a = {
            let _w = app.write_lock.lock().unwrap_or_else(|p| p.into_inner());
            ops::set_frozen(&app.db, &id, req.frozen)?
        };
        refresh_deny(&app)?;
        Ok(a)
    })
    .await?;
    Ok(json(StatusCode::OK, &a))
}

/// Runs settlement in the background and waits up to `run_wait_ms` (at most
/// 4/5 of the request timeout): the summary when it finished by then (200),
/// else `202 Accepted` with the run's id and status URL while it goes on.
async fn post_run(State(app): State<AppState>, headers: HeaderMap) -> ApiResult {
    authorize(&app, &headers)?;
    let run_id = app
        .runs
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .start(app.now());
    let wait = Duration::from_millis(
        app.config
            .run_wait_ms
            .min(app.config.request_timeout_ms / 5 * 4),
    );
    let task = blocking(move || {
        app.settle_as_run(run_id)
            .map_err(|e| ApiError::of(ErrorCode::SettlementFailed, e))
    });
    // On a timeout the blocking task is detached, not cancelled: it goes on.
    match tokio::time::timeout(wait, task).await {
        Ok(r) => r.map(|summary| json(StatusCode::OK, &summary)),
        // Still running: the task goes on without this request.
        Err(_) => Ok(json(
            StatusCode::ACCEPTED,
            &serde_json::json!({
                "run_id": run_id,
                "status": "running",
                "status_url": format!("/v1/settlement/runs/{run_id}"),
            }),
        )),
    }
}

async fn get_run(
    State(app): State<AppState>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
) -> ApiResult {
    authorize(&app, &headers)?;
    let run_id = id.parse::<u64>().map_err(|_| {
        ApiError::of(
            ErrorCode::InvalidPath,
            format!("run id `{id}`: expected an integer"),
        )
    })?;
    let status = app
        .runs
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(run_id)
        .ok_or_else(|| {
            ApiError::of(
                ErrorCode::UnknownRun,
                format!("no run {run_id} (runs are kept in memory, the last 100)"),
            )
        })?;
    Ok(json(StatusCode::OK, &status))
}

async fn resolve_dispute(
    State(app): State<AppState>,
    headers: HeaderMap,
    ApiPath((reader, seq)): ApiPath<(String, String)>,
    body: Body,
) -> ApiResult {
    authorize(&app, &headers)?;
    let ride = crate::model::RideId {
        reader_id: parse_reader_id(&reader)?,
        reader_seq: seq.parse::<u64>().map_err(|_| {
            ApiError::of(
                ErrorCode::InvalidPath,
                format!("reader sequence `{seq}`: expected an integer"),
            )
        })?,
    };
    let req: ops::ResolveDispute = json_body(&app, &headers, body).await?;
    let (d, new) = blocking(move || {
        let _w = app.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        Ok(ops::resolve_dispute(&app.db, ride, &req, app.now())?)
    })
    .await?;
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({
            "result": if new { "resolved" } else { "exists" },
            "dispute": d,
        }),
    ))
}

async fn post_purge(State(app): State<AppState>, headers: HeaderMap) -> ApiResult {
    authorize(&app, &headers)?;
    let s = blocking(move || {
        app.purge()
            .map_err(|e| ApiError::of(ErrorCode::PurgeFailed, e.to_string()))
    })
    .await?;
    Ok(json(StatusCode::OK, &s))
}

async fn report(
    State(app): State<AppState>,
    headers: HeaderMap,
    ApiPath(kind): ApiPath<String>,
    ApiQuery(q): ApiQuery<HashMap<String, String>>,
) -> ApiResult {
    authorize(&app, &headers)?;
    let as_csv = format_of(&q)?;
    if let Some(d) = q.get("day") {
        d.parse::<fare_tariff::Date>().map_err(|_| {
            ApiError::of(
                ErrorCode::InvalidQuery,
                format!("day `{d}`: expected YYYY-MM-DD"),
            )
        })?;
    }
    blocking(move || report_answer(&app, &kind, &q, as_csv)).await
}

/// Rows as JSON, or as CSV made by `to_csv`.
fn rows_as<T: serde::Serialize + ?Sized>(
    as_csv: bool,
    rows: &T,
    to_csv: impl FnOnce(&T) -> String,
) -> Response {
    if as_csv {
        csv(to_csv(rows))
    } else {
        json(StatusCode::OK, &rows)
    }
}

/// The answer to `GET /v1/reports/{kind}` (`day` checked by the caller).
fn report_answer(app: &App, kind: &str, q: &HashMap<String, String>, as_csv: bool) -> ApiResult {
    let db = &app.db;
    let day = q.get("day");
    Ok(match kind {
        "daily" => rows_as(
            as_csv,
            &reports::daily(db, day.map(String::as_str))?[..],
            reports::daily_csv,
        ),
        "exposure" | "debt" => {
            let mut rows =
                reports::exposure(db, &app.tariff, app.now(), app.config.skew_tolerance_s)?;
            if kind == "debt" {
                rows.retain(|r| r.debt_minor > 0);
            }
            rows_as(as_csv, &rows[..], reports::exposure_csv)
        }
        "fraud" => rows_as(as_csv, &db.fraud_events()?[..], reports::fraud_csv),
        "incidents" => rows_as(as_csv, &db.incidents()?[..], reports::incidents_csv),
        "deny" => rows_as(as_csv, &refresh_deny(app)?, |d| {
            let mut s = String::from("credential_id\n");
            for id in &d.credential_ids {
                s.push_str(&id.to_hex());
                s.push('\n');
            }
            s
        }),
        "ledger" => json(StatusCode::OK, &reports::ledger(db)?),
        "disputes" => json(StatusCode::OK, &db.disputes()?),
        "rides" => {
            let mut r = db.results()?;
            if let Some(d) = day {
                r.retain(|x| &x.service_day == d);
            }
            json(StatusCode::OK, &r)
        }
        other => {
            return Err(ApiError::of(ErrorCode::UnknownReport,
                format!("report `{other}`: expected daily, exposure, debt, fraud, incidents, disputes, deny, ledger or rides"),
            ))
        }
    })
}

async fn fallback() -> ApiError {
    ApiError::of(
        ErrorCode::NotFound,
        "no such endpoint: see the API reference in settlement/README.md",
    )
}

/// The most bytes of a lower layer's error body kept as the message.
const MAX_PASSED_ERROR_TEXT: usize = 1024;

/// Gives every error answer a JSON body `{"error","message"}`: answers
/// made below the handlers with only a status or a text body (axum's 405
/// for a wrong method, the timeout layer's 408, any extractor rejection
/// not already mapped) get the code [`ErrorCode::for_status`] names; their
/// other headers (`Allow` on a 405) are kept.
async fn json_errors(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, MAX_PASSED_ERROR_TEXT)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let code = ErrorCode::for_status(status);
    let message = if !text.is_empty() {
        text
    } else {
        match code {
            ErrorCode::MethodNotAllowed => {
                "method not allowed on this endpoint (see the `Allow` header)".to_string()
            }
            ErrorCode::RequestTimeout => {
                "the request took longer than request_timeout_ms".to_string()
            }
            _ => status.canonical_reason().unwrap_or("error").to_string(),
        }
    };
    let err = ApiError::of(code, message).into_response();
    parts.status = err.status();
    parts.headers.remove(header::CONTENT_LENGTH);
    let (err_parts, err_body) = err.into_parts();
    for (k, v) in err_parts.headers.iter() {
        parts.headers.insert(k, v.clone());
    }
    Response::from_parts(parts, err_body)
}

async fn track(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let resp = next.run(req).await;
    let status = resp.status();
    metrics::counter!("settlement_http_requests_total", "status" => status.as_u16().to_string())
        .increment(1);
    metrics::histogram!("settlement_http_request_seconds").record(started.elapsed().as_secs_f64());
    if status.is_server_error() {
        tracing::error!(%status, "request failed with a server error");
    }
    resp
}

/// The router with every route and layer.
pub fn router(app: Arc<App>) -> Router {
    let timeout = Duration::from_millis(app.config.request_timeout_ms);
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_endpoint))
        .route("/v1/batches", post(post_batch))
        .route("/v1/readers", post(post_reader).get(list_readers))
        .route("/v1/readers/{id}/bundle", get(get_bundle))
        .route("/v1/readers/{id}/retire", post(retire_reader))
        .route("/v1/incidents/resolve", post(resolve_incident))
        .route("/v1/accounts", post(post_account))
        .route("/v1/accounts/{id}", get(get_account))
        .route("/v1/accounts/{id}/devices", post(post_device))
        .route("/v1/accounts/{id}/payments", post(post_payment))
        .route("/v1/accounts/{id}/freeze", post(post_freeze))
        .route("/v1/settlement/runs", post(post_run))
        .route("/v1/settlement/runs/{id}", get(get_run))
        .route("/v1/settlement/purge", post(post_purge))
        .route(
            "/v1/disputes/{reader_id}/{reader_seq}/resolve",
            post(resolve_dispute),
        )
        .route("/v1/reports/{kind}", get(report))
        .merge(crate::passengers::http::routes())
        .merge(crate::issuers::http::routes())
        .fallback(fallback)
        .layer(middleware::from_fn(crate::passengers::passenger_scope))
        .layer(middleware::from_fn_with_state(app.clone(), server_time))
        .layer(middleware::from_fn(track))
        .layer(TimeoutLayer::with_status_code(
            ErrorCode::RequestTimeout.status(),
            timeout,
        ))
        .layer(middleware::from_fn(json_errors))
        // The dashboard (/ui): outside the JSON error layer, its errors are pages.
        .merge(crate::ui::router(app.clone()))
        .layer(TraceLayer::new_for_http())
        .with_state(app)
}

/// Serves until `shutdown` resolves, then finishes in-flight requests
/// (with the connection limits of [`crate::server`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    metrics_handle();
    crate::server::serve(listener, app, shutdown).await
}
