//! The forms: login / logout, record a payment, freeze, retire a reader,
//! acknowledge / resolve an incident, award a disputed fare. Each checks
//! the session's CSRF token and scope, calls the operation the JSON API
//! calls (through [`act`]: on the blocking pool, under the write lock), and
//! redirects (post/redirect/get) to the page that shows the result.

use super::pages::{ack_name, award_name, Ack};
use super::session::{self, Scope, Session, LOGIN_COOKIE, SESSION_COOKIE};
use super::view::bare_page;
use super::{blocking, html_response, Staff, Ui, UiError, UiResult};
use crate::app::App;
use crate::error::{ApiError, ErrorCode};
use axum::extract::rejection::FormRejection;
use axum::extract::{Form, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;

/// Lifetime of the login form's double-submit cookie, seconds.
pub const LOGIN_FORM_S: u64 = 600;
/// Longest resolution note typed on the incidents page (the "by ..." suffix
/// must still fit [`crate::readers::MAX_NOTE_BYTES`]).
pub const MAX_UI_NOTE_BYTES: usize = 512;

fn form<T>(f: Result<Form<T>, FormRejection>) -> Result<T, UiError> {
    f.map(|Form(v)| v)
        .map_err(|e| UiError::BadRequest(format!("form: {}", e.body_text())))
}

fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

fn login_form(csrf: &str, error: Option<&str>) -> String {
    bare_page(
        "Log in",
        html! {
            @if let Some(e) = error { p.error #login-error { (e) } }
            form #login method="post" action="/ui/login" {
                input type="hidden" name="csrf" value=(csrf);
                label { "Your name (recorded beside what you do) "
                    input name="name" required maxlength=(session::MAX_NAME_BYTES) autocomplete="username"; }
                label { "Operator token "
                    input name="token" type="password" required autocomplete="current-password"; }
                button type="submit" { "Log in" }
            }
        },
    )
    .into_string()
}

/// `GET /ui/login`: the form, with a fresh double-submit CSRF cookie.
pub async fn login_page(State(ui): State<Ui>) -> Response {
    let csrf = session::random_hex(&mut *ui.app.rng.lock().unwrap_or_else(|p| p.into_inner()));
    let mut r = html_response(StatusCode::OK, login_form(&csrf, None));
    set_cookie(
        &mut r,
        &session::set_cookie(LOGIN_COOKIE, &csrf, LOGIN_FORM_S),
    );
    r
}

fn set_cookie(r: &mut Response, v: &str) {
    if let Ok(v) = HeaderValue::from_str(v) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// `POST /ui/login` fields.
#[derive(Deserialize)]
pub struct Login {
    csrf: String,
    name: String,
    token: String,
}

/// `POST /ui/login`: a token of the deployment or of `ui_staff` opens a
/// session. The token is never echoed, logged or put in a URL.
pub async fn login(
    State(ui): State<Ui>,
    headers: HeaderMap,
    f: Result<Form<Login>, FormRejection>,
) -> UiResult {
    let f = form(f)?;
    let expected = session::cookie_value(&headers, LOGIN_COOKIE).unwrap_or_default();
    if expected.is_empty() || blake3::hash(expected.as_bytes()) != blake3::hash(f.csrf.as_bytes()) {
        return Err(UiError::Csrf);
    }
    let name = f.name.trim().to_string();
    if name.is_empty()
        || name.len() > session::MAX_NAME_BYTES
        || name.chars().any(|c| c.is_control())
    {
        return Err(UiError::BadRequest(format!(
            "name: expected 1..={} bytes without control characters",
            session::MAX_NAME_BYTES
        )));
    }
    let app = &ui.app;
    let Some(scope) = session::scope_of_token(&app.config, &app.operator_token, &f.token) else {
        tracing::warn!("dashboard login refused: wrong token");
        let mut r = html_response(
            ErrorCode::Unauthorized.status(),
            login_form(&expected, Some("Wrong token.")),
        );
        set_cookie(
            &mut r,
            &session::set_cookie(LOGIN_COOKIE, &expected, LOGIN_FORM_S),
        );
        return Ok(r);
    };
    tracing::info!(name = %name, scope = %scope.label(), "dashboard login");
    let now = app.now();
    let cookie = {
        let mut rng = app.rng.lock().unwrap_or_else(|p| p.into_inner());
        ui.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .open(name, scope, now, &mut *rng)
    };
    let mut r = see_other("/ui");
    set_cookie(
        &mut r,
        &session::set_cookie(SESSION_COOKIE, &cookie, session::SESSION_MAX_S),
    );
    set_cookie(&mut r, &session::set_cookie(LOGIN_COOKIE, "", 0));
    Ok(r)
}

/// A form that carries the session's CSRF token.
pub trait CsrfForm {
    /// The token the form was rendered with.
    fn csrf(&self) -> &str;
}

/// The form, once parsed and its CSRF token checked against the session.
pub fn checked<T: CsrfForm>(
    staff: &Staff,
    f: Result<Form<T>, FormRejection>,
) -> Result<T, UiError> {
    let f = form(f)?;
    staff.check_csrf(f.csrf())?;
    Ok(f)
}

/// Whether an action changes what the deny list holds.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Deny {
    /// Re-publish it afterwards (as the JSON API's account routes do).
    Refresh,
    /// Leave it.
    Keep,
}

/// Runs a form's operation `op` on the blocking pool under the write lock
/// (with the app and the session: scope and "who"), re-publishes the deny
/// list when `deny` says so, then redirects to `to`.
async fn act(
    ui: &Ui,
    staff: &Staff,
    deny: Deny,
    to: String,
    op: impl FnOnce(&App, &Session) -> Result<(), UiError> + Send + 'static,
) -> UiResult {
    let (app, s) = (ui.app.clone(), staff.0.clone());
    blocking(move || {
        {
            let _w = app.write_lock.lock().unwrap_or_else(|p| p.into_inner());
            op(&app, &s)?;
        }
        // After the lock: a refresh takes it itself.
        match deny {
            Deny::Refresh => refresh_deny(&app),
            Deny::Keep => Ok(()),
        }
    })
    .await?;
    Ok(see_other(&to))
}

fn refresh_deny(app: &App) -> Result<(), UiError> {
    app.refresh_deny()
        .map(|_| ())
        .map_err(|e| UiError::Api(ApiError::of(ErrorCode::DenyRefreshFailed, e.to_string())))
}

/// Implements [`CsrfForm`] for forms with a `csrf` field.
macro_rules! csrf_form {
    ($($t:ty),*) => { $(impl CsrfForm for $t { fn csrf(&self) -> &str { &self.csrf } })* };
}
csrf_form!(CsrfOnly, Pay, Freeze, IncidentForm, Award);

/// A form with only the CSRF token.
#[derive(Deserialize)]
pub struct CsrfOnly {
    csrf: String,
}

/// `POST /ui/logout`.
pub async fn logout(
    State(ui): State<Ui>,
    staff: Staff,
    headers: HeaderMap,
    f: Result<Form<CsrfOnly>, FormRejection>,
) -> UiResult {
    checked(&staff, f)?;
    if let Some(c) = session::cookie_value(&headers, SESSION_COOKIE) {
        ui.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .close(&c);
    }
    let mut r = see_other("/ui/login");
    set_cookie(&mut r, &session::set_cookie(SESSION_COOKIE, "", 0));
    Ok(r)
}

/// `POST /ui/accounts/{id}/payments` fields.
#[derive(Deserialize)]
pub struct Pay {
    csrf: String,
    payment_id: String,
    amount_minor: String,
}

/// Records a payment (`ops::pay`, then the deny list is re-published, as
/// `POST /v1/accounts/{id}/payments` does).
pub async fn pay(
    State(ui): State<Ui>,
    staff: Staff,
    Path(id): Path<String>,
    f: Result<Form<Pay>, FormRejection>,
) -> UiResult {
    staff.require_all("recording a payment")?;
    let f = checked(&staff, f)?;
    let amount = f.amount_minor.trim().parse::<i64>().map_err(|_| {
        UiError::BadRequest(format!(
            "amount_minor `{}`: expected a whole number of minor units",
            f.amount_minor
        ))
    })?;
    let req = crate::ops::MakePayment {
        payment_id: f.payment_id.trim().to_string(),
        amount_minor: amount,
    };
    let to = format!("/ui/accounts/{id}");
    act(&ui, &staff, Deny::Refresh, to, move |app, s| {
        crate::ops::pay(&app.db, &id, &req, app.now())?;
        tracing::info!(account = %id, amount, by = %s.who(), "payment recorded from the dashboard");
        Ok(())
    })
    .await
}

/// `POST /ui/accounts/{id}/freeze` fields.
#[derive(Deserialize)]
pub struct Freeze {
    csrf: String,
    frozen: String,
}

/// Freezes or unfreezes an account (`ops::set_frozen`, then the deny list).
pub async fn freeze(
    State(ui): State<Ui>,
    staff: Staff,
    Path(id): Path<String>,
    f: Result<Form<Freeze>, FormRejection>,
) -> UiResult {
    staff.require_all("freezing an account")?;
    let f = checked(&staff, f)?;
    let frozen = match f.frozen.as_str() {
        "true" => true,
        "false" => false,
        v => {
            return Err(UiError::BadRequest(format!(
                "frozen `{v}`: expected true or false"
            )))
        }
    };
    let to = format!("/ui/accounts/{id}");
    act(&ui, &staff, Deny::Refresh, to, move |app, s| {
        crate::ops::set_frozen(&app.db, &id, frozen)?;
        tracing::info!(account = %id, frozen, by = %s.who(), "account freeze set from the dashboard");
        Ok(())
    })
    .await
}

/// A path or form field that must be an integer of type `T`.
fn int<T: std::str::FromStr>(field: &str, v: &str) -> Result<T, UiError> {
    v.trim()
        .parse::<T>()
        .map_err(|_| UiError::BadRequest(format!("{field} `{v}`: expected an integer")))
}

/// Refuses unless reader `reader_id` exists and belongs to the scope.
fn own_reader(app: &App, scope: &Scope, reader_id: u32) -> Result<(), UiError> {
    match app.db.reader(reader_id)? {
        Some(r) if scope.sees(&r.operator) => Ok(()),
        Some(r) => Err(UiError::Forbidden(format!(
            "reader {reader_id} belongs to operator {}, not yours",
            r.operator
        ))),
        None => Err(UiError::Api(ApiError::of(
            ErrorCode::NoSuchReader,
            format!("reader {reader_id} is not provisioned"),
        ))),
    }
}

/// Retires a reader (`ops::retire_reader`); staff only their operator's.
pub async fn retire(
    State(ui): State<Ui>,
    staff: Staff,
    Path(id): Path<String>,
    f: Result<Form<CsrfOnly>, FormRejection>,
) -> UiResult {
    checked(&staff, f)?;
    let reader_id: u32 = int("reader id", &id)?;
    act(
        &ui,
        &staff,
        Deny::Keep,
        "/ui/readers".into(),
        move |app, s| {
            own_reader(app, &s.scope, reader_id)?;
            crate::ops::retire_reader(&app.db, reader_id)?;
            tracing::info!(reader_id, by = %s.who(), "reader retired from the dashboard");
            Ok(())
        },
    )
    .await
}

/// The incident forms' fields.
#[derive(Deserialize)]
pub struct IncidentForm {
    csrf: String,
    reader_id: u32,
    kind: String,
    seq: u64,
    #[serde(default)]
    note: String,
}

fn find_incident(app: &App, f: &IncidentForm) -> Result<crate::model::Incident, UiError> {
    app.db
        .incidents()?
        .into_iter()
        .find(|i| i.reader_id == f.reader_id && i.kind == f.kind && i.seq == f.seq)
        .ok_or_else(|| {
            UiError::Api(ApiError::of(
                ErrorCode::UnknownIncident,
                format!(
                    "no {} incident at sequence {} for reader {}",
                    f.kind, f.seq, f.reader_id
                ),
            ))
        })
}

/// Acknowledges an incident: "seen, being looked at", with who and when
/// (kept beside the incident; the incident log is not rewritten). The
/// first acknowledgement stays.
pub async fn acknowledge(
    State(ui): State<Ui>,
    staff: Staff,
    f: Result<Form<IncidentForm>, FormRejection>,
) -> UiResult {
    let f = checked(&staff, f)?;
    incident_act(&ui, &staff, f.reader_id, move |app, s| {
        let i = find_incident(app, &f)?;
        if app.db.meta::<Ack>(&ack_name(&i))?.is_none() {
            put_who(app, &ack_name(&i), s)?;
        }
        Ok(())
    })
    .await
}

/// [`act`] for a form about reader `reader_id`'s incident: refused unless
/// the reader is the session's to see; back to the incidents page.
async fn incident_act(
    ui: &Ui,
    staff: &Staff,
    reader_id: u32,
    op: impl FnOnce(&App, &Session) -> Result<(), UiError> + Send + 'static,
) -> UiResult {
    act(
        ui,
        staff,
        Deny::Keep,
        "/ui/incidents".into(),
        move |app, s| {
            own_reader(app, &s.scope, reader_id)?;
            op(app, s)
        },
    )
    .await
}

/// Records who did something, and when, under meta `name`.
fn put_who(app: &App, name: &str, s: &Session) -> Result<(), UiError> {
    let mut w = crate::store::WriteSet::default();
    let who = Ack {
        by: s.who(),
        at_unix_s: app.now(),
    };
    crate::store::Db::put_meta(&mut w, name, &who);
    app.db.commit(w)?;
    Ok(())
}

/// Resolves a gap or fork (`readers::resolve`), the note ending with who did it.
pub async fn resolve(
    State(ui): State<Ui>,
    staff: Staff,
    f: Result<Form<IncidentForm>, FormRejection>,
) -> UiResult {
    let f = checked(&staff, f)?;
    let note = f.note.trim();
    if note.is_empty() || note.len() > MAX_UI_NOTE_BYTES {
        return Err(UiError::BadRequest(format!(
            "note: expected 1..={MAX_UI_NOTE_BYTES} bytes saying what was done"
        )));
    }
    let req = crate::readers::Resolve {
        reader_id: f.reader_id,
        kind: f.kind.clone(),
        seq: f.seq,
        note: format!("{note} (by {})", staff.0.who()),
    };
    incident_act(&ui, &staff, req.reader_id, move |app, _| {
        crate::readers::resolve(&app.db, &req, app.now())?;
        Ok(())
    })
    .await
}

/// `POST /ui/disputes/{reader_id}/{reader_seq}/award` fields.
#[derive(Deserialize)]
pub struct Award {
    csrf: String,
    award_reader_id: String,
}

/// Awards the fare held by the dispute over charged ride
/// `{reader_id}/{reader_seq}` to reader `award_reader_id`'s operator
/// (`ops::resolve_dispute`, as `POST /v1/disputes/R/S/resolve` does), and
/// records who did it beside the dispute. Deployment scope only: it moves
/// money between operators, so one operator's staff may not decide it.
pub async fn award(
    State(ui): State<Ui>,
    staff: Staff,
    Path((reader, seq)): Path<(String, String)>,
    f: Result<Form<Award>, FormRejection>,
) -> UiResult {
    staff.require_all("awarding a disputed fare")?;
    let f = checked(&staff, f)?;
    let award_reader_id = int("award_reader_id", &f.award_reader_id)?;
    let charged = crate::model::RideId {
        reader_id: int("reader id", &reader)?,
        reader_seq: int("reader sequence", &seq)?,
    };
    let req = crate::ops::ResolveDispute { award_reader_id };
    act(&ui, &staff, Deny::Keep, "/ui/incidents".into(), move |app, s| {
        let (d, new) = crate::ops::resolve_dispute(&app.db, charged, &req, app.now())?;
        if new {
            // Its own commit after the award's: a crash between leaves the
            // award without its "who" (the page then says the API did it).
            put_who(app, &award_name(charged), s)?;
            tracing::info!(ride = %charged, award_reader_id, held_minor = d.held_minor, by = %s.who(), "disputed fare awarded from the dashboard");
        }
        Ok(())
    })
    .await
}
