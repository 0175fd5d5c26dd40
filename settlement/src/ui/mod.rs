//! The operator's web dashboard under `/ui`: server-rendered HTML (maud),
//! charts drawn on the server as SVG, a little vendored htmx (only to poll
//! a running settlement run; every read-only page reads the same without
//! JavaScript), login into a server-side session (see [`session`] for the
//! scope rule), a CSRF token on every form.
//!
//! Every number comes from the functions the JSON API answers with
//! (`reports::daily`, `reports::exposure`, `ops::statement`,
//! `readers::overview`, ...), so a page and the API agree.

mod actions;
mod chart;
mod pages;
mod runs;
pub mod session;
mod view;

use crate::app::App;
use crate::error::{ApiError, ErrorCode};
use axum::extract::{DefaultBodyLimit, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use session::{Session, Sessions};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tower_http::timeout::TimeoutLayer;

/// Largest form body accepted, bytes.
pub const MAX_FORM_BYTES: usize = 16 * 1024;

/// The vendored htmx (see settlement/assets/README.md for version and licence).
const HTMX_JS: &str = include_str!("../../assets/htmx.min.js");
/// The stylesheet.
const UI_CSS: &str = include_str!("../../assets/ui.css");

/// What the dashboard's handlers share.
pub struct UiState {
    /// The application (the same one the JSON API serves).
    pub app: Arc<App>,
    /// Logged-in sessions.
    pub sessions: Mutex<Sessions>,
}

type Ui = Arc<UiState>;

/// Why a dashboard request failed; rendered as an HTML page.
#[derive(Debug)]
pub enum UiError {
    /// No live session: go to the login page.
    Login,
    /// Logged in, but this scope may not see or do it.
    Forbidden(String),
    /// A form or query field is wrong (which, and what was expected).
    BadRequest(String),
    /// The form's CSRF token is missing or wrong.
    Csrf,
    /// An error of the operation underneath (its code and message).
    Api(ApiError),
}

impl From<ApiError> for UiError {
    fn from(e: ApiError) -> Self {
        UiError::Api(e)
    }
}

impl From<crate::error::OpsError> for UiError {
    fn from(e: crate::error::OpsError) -> Self {
        UiError::Api(e.into())
    }
}

impl From<crate::error::StoreError> for UiError {
    fn from(e: crate::error::StoreError) -> Self {
        UiError::Api(e.into())
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let e = match self {
            UiError::Login => return Redirect::to("/ui/login").into_response(),
            UiError::Forbidden(m) => ApiError::of(ErrorCode::OutOfScope, m),
            UiError::BadRequest(m) => ApiError::of(ErrorCode::InvalidField, m),
            UiError::Csrf => ApiError::of(
                ErrorCode::CsrfRejected,
                "the form's CSRF token is missing or out of date: reload the page and try again",
            ),
            UiError::Api(e) => e,
        };
        let (status, code, message) = (e.status, e.code, e.message);
        let body = view::error_page(status, code, &message);
        html_response(status, body.into_string())
    }
}

/// Reads a dashboard request's body before its handler: a form over
/// `MAX_FORM_BYTES` gets the 413 `body_too_large` page, as the JSON API
/// answers, after the rest of it is drained (`crate::http::limited_body`).
/// axum's `Form` alone answered 400 `invalid_field` with most of the body
/// unread, the case in which a client still sending can see the connection
/// reset instead of the page (what the JSON API's bodies did under load).
async fn form_body(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let (parts, body) = req.into_parts();
    match crate::http::limited_body(&parts.headers, body, MAX_FORM_BYTES).await {
        Ok(bytes) => {
            let req = axum::extract::Request::from_parts(parts, axum::body::Body::from(bytes));
            next.run(req).await
        }
        Err(e) => UiError::Api(e).into_response(),
    }
}

/// Result of a dashboard handler.
pub type UiResult = Result<Response, UiError>;

/// An HTML answer with the dashboard's headers: never cached (pages show
/// money and sessions), never framed, scripts and styles only from /ui.
pub fn html_response(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    secure_headers(h);
    r
}

fn secure_headers(h: &mut axum::http::HeaderMap) {
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

/// A logged-in request: its session (the extractor refuses, with a
/// redirect to the login page, a request without a live one).
pub struct Staff(pub Session);

impl FromRequestParts<Ui> for Staff {
    type Rejection = UiError;
    async fn from_request_parts(parts: &mut Parts, ui: &Ui) -> Result<Self, UiError> {
        let cookie =
            session::cookie_value(&parts.headers, session::SESSION_COOKIE).ok_or(UiError::Login)?;
        let now = ui.app.now();
        let s = ui
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .touch(&cookie, now)
            .ok_or(UiError::Login)?;
        Ok(Staff(s))
    }
}

impl Staff {
    /// Refuses unless the session sees every operator.
    pub fn require_all(&self, what: &str) -> Result<(), UiError> {
        match &self.0.scope {
            session::Scope::All => Ok(()),
            session::Scope::Operator(o) => Err(UiError::Forbidden(format!(
                "{what} spans every operator: staff of operator {o} may not see it (log in with the deployment's operator token)"
            ))),
        }
    }
    /// Refuses a form whose CSRF token is not this session's.
    pub fn check_csrf(&self, token: &str) -> Result<(), UiError> {
        if self.0.csrf_ok(token) {
            Ok(())
        } else {
            Err(UiError::Csrf)
        }
    }
}

/// Runs `f` on the blocking pool (storage reads, settlement runs).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, UiError> + Send + 'static,
) -> Result<T, UiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        UiError::Api(ApiError::of(
            ErrorCode::Internal,
            format!("task failed: {e}"),
        ))
    })?
}

async fn htmx_js() -> Response {
    asset("application/javascript; charset=utf-8", HTMX_JS)
}

async fn ui_css() -> Response {
    asset("text/css; charset=utf-8", UI_CSS)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

async fn not_found() -> UiError {
    UiError::Api(ApiError::of(
        ErrorCode::NotFound,
        "no such dashboard page: start at /ui",
    ))
}

/// The dashboard's routes, for [`crate::http::router`] to merge (they are
/// outside the JSON API's error layer: a dashboard error is a page).
pub fn router<S: Clone + Send + Sync + 'static>(app: Arc<App>) -> Router<S> {
    let timeout = Duration::from_millis(app.config.request_timeout_ms);
    let ui = Arc::new(UiState {
        app,
        sessions: Mutex::new(Sessions::default()),
    });
    Router::new()
        .route("/ui", get(pages::overview))
        .route("/ui/", get(pages::overview))
        .route("/ui/login", get(actions::login_page).post(actions::login))
        .route("/ui/logout", post(actions::logout))
        .route("/ui/reports", get(pages::reports))
        .route("/ui/reports.csv", get(pages::reports_csv))
        .route("/ui/accounts", get(pages::accounts))
        .route("/ui/accounts/{id}", get(pages::account))
        .route("/ui/accounts/{id}/payments", post(actions::pay))
        .route("/ui/accounts/{id}/freeze", post(actions::freeze))
        .route("/ui/readers", get(pages::readers))
        .route("/ui/readers/{id}/retire", post(actions::retire))
        .route("/ui/incidents", get(pages::incidents))
        .route("/ui/incidents/acknowledge", post(actions::acknowledge))
        .route("/ui/incidents/resolve", post(actions::resolve))
        .route(
            "/ui/disputes/{reader_id}/{reader_seq}/award",
            post(actions::award),
        )
        .route("/ui/runs", get(runs::list).post(runs::start))
        .route("/ui/runs/{id}", get(runs::show))
        .route("/ui/runs/{id}/status", get(runs::status_fragment))
        .route("/ui/assets/htmx.min.js", get(htmx_js))
        .route("/ui/assets/ui.css", get(ui_css))
        .route("/ui/{*rest}", get(not_found).post(not_found))
        .layer(axum::middleware::from_fn(form_body))
        .layer(DefaultBodyLimit::max(MAX_FORM_BYTES))
        .layer(TimeoutLayer::with_status_code(
            ErrorCode::RequestTimeout.status(),
            timeout,
        ))
        .with_state(ui)
}
