//! The read-only pages: overview, reports (and their CSV), accounts,
//! readers, incidents. Each gathers its numbers with the functions the
//! JSON API uses, filtered by the session's scope, then renders them.

use super::session::Scope;
use super::view::{self, ago, money, page, table, utc};
use super::{blocking, chart, html_response, Staff, Ui, UiError, UiResult};
use crate::app::App;
use crate::error::{ApiError, ErrorCode};
use crate::model::{Incident, Reader};
use crate::{readers, reports};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use maud::{html, Markup};
use std::collections::{BTreeMap, HashMap};

/// A reader heard from within this long is "in contact".
pub const CONTACT_RECENT_S: u64 = 15 * 60;
/// A reader heard from within this long (but not recently) is "silent";
/// beyond it, or never, "stale".
pub const CONTACT_SILENT_S: u64 = 24 * 3600;
/// Rows shown on the accounts search page.
pub const MAX_ACCOUNT_ROWS: usize = 200;
/// Longest account search text.
pub const MAX_SEARCH_BYTES: usize = 64;

type Q = Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>;

fn query(q: Q) -> Result<HashMap<String, String>, UiError> {
    q.map(|Query(m)| m)
        .map_err(|e| UiError::BadRequest(format!("query string: {}", e.body_text())))
}

fn internal(m: impl std::fmt::Display) -> UiError {
    UiError::Api(ApiError::of(ErrorCode::Internal, m.to_string()))
}

/// The service day the clock is in now (`YYYY-MM-DD`).
pub fn today(app: &App) -> Result<String, UiError> {
    app.tariff
        .service_day(app.now())
        .map(|d| d.to_string())
        .map_err(internal)
}

/// How recently a reader was heard from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Contact {
    /// Within [`CONTACT_RECENT_S`].
    Recent,
    /// Within [`CONTACT_SILENT_S`].
    Silent,
    /// Longer, or never.
    Stale,
}

impl Contact {
    fn of(last: Option<u64>, now: u64) -> Contact {
        match last.map(|t| now.saturating_sub(t)) {
            Some(s) if s <= CONTACT_RECENT_S => Contact::Recent,
            Some(s) if s <= CONTACT_SILENT_S => Contact::Silent,
            _ => Contact::Stale,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Contact::Recent => "in contact",
            Contact::Silent => "silent",
            Contact::Stale => "stale",
        }
    }
}

/// One reader as the readers page and the overview see it: the JSON
/// API's `GET /v1/readers` line, plus what the page derives from it.
pub struct ReaderRow {
    reader: Reader,
    /// `readers::overview` (the API's line, unchanged).
    api: serde_json::Value,
    contact: Contact,
    backlog: u64,
    forks: usize,
    gaps: usize,
}

fn reader_rows(app: &App, scope: &Scope) -> Result<Vec<ReaderRow>, UiError> {
    let now = app.now();
    let incidents = app.db.incidents()?;
    let mut out = Vec::new();
    for r in app.db.readers()? {
        if !scope.sees(&r.operator) {
            continue;
        }
        let api = readers::overview(&app.db, &r)?;
        let n = |k: &str| {
            incidents
                .iter()
                .filter(|i| i.reader_id == r.reader_id && i.kind == k)
                .count()
        };
        let acked = api["acked_seq"].as_u64().unwrap_or(0);
        let settled = api["settled_seq"].as_u64().unwrap_or(0);
        out.push(ReaderRow {
            contact: Contact::of(api["last_contact_unix_s"].as_u64(), now),
            backlog: acked.saturating_sub(settled),
            forks: n("chain_fork"),
            gaps: n("sequence_gap"),
            reader: r,
            api,
        });
    }
    Ok(out)
}

/// The overview's numbers.
pub struct Overview {
    day: String,
    rides: u64,
    revenue_minor: i64,
    refused: u64,
    rejects: BTreeMap<String, u64>,
    contact: [u64; 3],
    upload_lag_s: Option<u64>,
    backlog: u64,
    open_incidents: u64,
    open_disputes: u64,
}

fn outcome_name(o: &crate::model::Outcome) -> String {
    serde_json::to_value(o)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{o:?}"))
}

fn overview_data(app: &App, scope: &Scope, day: Option<String>) -> Result<Overview, UiError> {
    let day = match day {
        Some(d) => d,
        None => today(app)?,
    };
    let lines: Vec<_> = reports::daily(&app.db, Some(&day))?
        .into_iter()
        .filter(|l| scope.sees(&l.operator))
        .collect();
    let mut rejects = BTreeMap::new();
    for r in app.db.results()? {
        if r.service_day == day && scope.sees(&r.operator) && !r.outcome.is_rated() {
            let why = r.reason.clone().unwrap_or_else(|| outcome_name(&r.outcome));
            *rejects.entry(why).or_insert(0) += 1;
        }
    }
    let now = app.now();
    let rows = reader_rows(app, scope)?;
    let active: Vec<&ReaderRow> = rows.iter().filter(|r| !r.reader.retired).collect();
    let mut contact = [0u64; 3];
    for r in &active {
        contact[r.contact as usize] += 1;
    }
    Ok(Overview {
        rides: lines.iter().map(|l| l.rides).sum(),
        revenue_minor: lines.iter().map(|l| l.revenue_minor).sum(),
        refused: lines.iter().map(|l| l.refused_rides).sum(),
        rejects,
        contact,
        // The longest any active reader has gone without uploading.
        upload_lag_s: active
            .iter()
            .filter_map(|r| r.api["last_contact_unix_s"].as_u64())
            .map(|t| now.saturating_sub(t))
            .max(),
        backlog: active.iter().map(|r| r.backlog).sum(),
        open_incidents: rows
            .iter()
            .map(|r| r.api["open_incidents"].as_u64().unwrap_or(0))
            .sum(),
        open_disputes: app
            .db
            .disputes()?
            .iter()
            .filter(|d| d.resolution.is_none())
            .filter(|d| d.sightings.iter().any(|(_, op)| scope.sees(op)))
            .count() as u64,
        day,
    })
}

fn stat(id: &str, label: &str, value: Markup) -> Markup {
    html! { div.stat { div.label { (label) } div.value id=(id) { (value) } } }
}

/// `GET /ui[?day=YYYY-MM-DD]`: how today (or the given service day) is
/// going. Reader contact, upload lag and backlog are always as of now.
pub async fn overview(State(ui): State<Ui>, staff: Staff, q: Q) -> UiResult {
    let day = day_param(&query(q)?, "day")?;
    let app = ui.app.clone();
    let scope = staff.0.scope.clone();
    let o = blocking(move || overview_data(&app, &scope, day)).await?;
    let body = html! {
        p { "Service day " strong #service-day { (o.day) } " (the tariff's time zone)." }
        form.inline method="get" action="/ui" {
            label { "Another day" input type="date" name="day" value=(o.day); }
            button type="submit" { "Show" }
        }
        section.stats {
            (stat("rides-today", "Rides", html! { (o.rides) }))
            (stat("revenue-today", "Revenue", money(o.revenue_minor)))
            (stat("refused-today", "Refused at settlement", html! { (o.refused) }))
            (stat("open-incidents", "Open incidents", html! { (o.open_incidents) }))
            (stat("open-disputes", "Open disputes", html! { (o.open_disputes) }))
            (stat("upload-lag", "Upload lag (longest)", html! {
                @match o.upload_lag_s { Some(s) => (ago(s)), None => "no upload yet" }
            }))
            (stat("backlog", "Uploaded, not settled", html! { (o.backlog) }))
        }
        h2 { "Readers" }
        section.stats {
            (stat("readers-contact", "In contact (≤ 15 min)", html! { (o.contact[0]) }))
            (stat("readers-silent", "Silent (≤ 24 h)", html! { (o.contact[1]) }))
            (stat("readers-stale", "Stale (longer or never)", html! { (o.contact[2]) }))
        }
        h2 { "Refused that day, by reason" }
        @if o.rejects.is_empty() { p { "None." } } @else {
            (table("rejects", &["reason", "rides"], html! {
                @for (why, n) in &o.rejects { tr { td { code { (why) } } td.num { (n) } } }
            }))
        }
        p.note { "Readers upload accepted rides only; a refusal here is settlement's (forged, invalid time, unknown credential)." }
    };
    Ok(html_response(
        StatusCode::OK,
        page(&staff.0, "Overview", body).into_string(),
    ))
}

/// The service day in query parameter `key` (`YYYY-MM-DD`), if given.
fn day_param(q: &HashMap<String, String>, key: &str) -> Result<Option<String>, UiError> {
    match q.get(key).map(|s| s.trim()).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => s
            .parse::<fare_tariff::Date>()
            .map(|d| Some(d.to_string()))
            .map_err(|_| UiError::BadRequest(format!("{key} `{s}`: expected YYYY-MM-DD"))),
    }
}

/// A date range from `from` / `to` (`YYYY-MM-DD`, both optional).
fn range(q: &HashMap<String, String>) -> Result<(Option<String>, Option<String>), UiError> {
    Ok((day_param(q, "from")?, day_param(q, "to")?))
}

fn in_range(day: &str, r: &(Option<String>, Option<String>)) -> bool {
    r.0.as_deref().is_none_or(|f| day >= f) && r.1.as_deref().is_none_or(|t| day <= t)
}

fn report_lines(
    app: &App,
    scope: &Scope,
    r: &(Option<String>, Option<String>),
) -> Result<Vec<reports::DailyLine>, UiError> {
    Ok(reports::daily(&app.db, None)?
        .into_iter()
        .filter(|l| scope.sees(&l.operator) && in_range(&l.service_day, r))
        .collect())
}

/// Rated rides per local hour (the tariff's time zone), as the report counts them.
fn hours(
    app: &App,
    scope: &Scope,
    r: &(Option<String>, Option<String>),
) -> Result<[u64; 24], UiError> {
    let mut c = [0u64; 24];
    for x in app.db.results()? {
        if x.outcome.is_rated() && scope.sees(&x.operator) && in_range(&x.service_day, r) {
            let t = jiff::Timestamp::from_second(x.reader_time_unix_s as i64).map_err(internal)?;
            c[t.to_zoned(app.tariff.time_zone().clone()).hour() as usize] += 1;
        }
    }
    Ok(c)
}

/// `GET /ui/reports?from=&to=`: revenue and rides per day, operator, route.
pub async fn reports(State(ui): State<Ui>, staff: Staff, q: Q) -> UiResult {
    let q = query(q)?;
    let r = range(&q)?;
    let (app, scope, r2) = (ui.app.clone(), staff.0.scope.clone(), r.clone());
    let (lines, hours) =
        blocking(move || Ok((report_lines(&app, &scope, &r2)?, hours(&app, &scope, &r2)?))).await?;
    let csv_href = format!(
        "/ui/reports.csv?from={}&to={}",
        r.0.as_deref().unwrap_or(""),
        r.1.as_deref().unwrap_or("")
    );
    let body = html! {
        form.inline method="get" action="/ui/reports" {
            label { "From " input type="date" name="from" value=[r.0.as_deref()]; }
            label { "To " input type="date" name="to" value=[r.1.as_deref()]; }
            button type="submit" { "Show" }
            a #csv-download href=(csv_href) download="daily.csv" { "Download CSV" }
        }
        section.stats {
            (stat("report-rides", "Rides", html! { (lines.iter().map(|l| l.rides).sum::<u64>()) }))
            (stat("report-revenue", "Revenue", money(lines.iter().map(|l| l.revenue_minor).sum())))
            (stat("report-refused", "Refused", html! { (lines.iter().map(|l| l.refused_rides).sum::<u64>()) }))
        }
        h2 { "Rides per hour" }
        (chart::rides_per_hour(&hours))
        h2 { "Per service day, operator and route" }
        (table("daily", &["service day", "operator", "route", "rides", "revenue", "refused"], html! {
            @for l in &lines {
                tr { td { (l.service_day) } td { (l.operator) } td { (l.route) }
                     td.num { (l.rides) } td.num { (money(l.revenue_minor)) } td.num { (l.refused_rides) } }
            }
        }))
    };
    Ok(html_response(
        StatusCode::OK,
        page(&staff.0, "Reports", body).into_string(),
    ))
}

/// `GET /ui/reports.csv?from=&to=`: the report's rows as the API's CSV.
pub async fn reports_csv(State(ui): State<Ui>, staff: Staff, q: Q) -> UiResult {
    let r = range(&query(q)?)?;
    let (app, scope) = (ui.app.clone(), staff.0.scope.clone());
    let lines = blocking(move || report_lines(&app, &scope, &r)).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"daily.csv\"",
            ),
            (header::CACHE_CONTROL, "no-store"),
        ],
        reports::daily_csv(&lines),
    )
        .into_response())
}

/// `GET /ui/accounts?q=`: accounts by id, largest debt first.
pub async fn accounts(State(ui): State<Ui>, staff: Staff, q: Q) -> UiResult {
    staff.require_all("the accounts page")?;
    let q = query(q)?;
    let search = q.get("q").map(|s| s.trim().to_string()).unwrap_or_default();
    if search.len() > MAX_SEARCH_BYTES {
        return Err(UiError::BadRequest(format!(
            "q: at most {MAX_SEARCH_BYTES} bytes"
        )));
    }
    let app = ui.app.clone();
    let s2 = search.clone();
    let (rows, total) = blocking(move || {
        let all = reports::exposure(&app.db, &app.tariff, app.now(), app.config.skew_tolerance_s)?;
        let hits: Vec<_> = all
            .into_iter()
            .filter(|a| a.account_id.contains(&s2))
            .collect();
        let n = hits.len();
        Ok((
            hits.into_iter().take(MAX_ACCOUNT_ROWS).collect::<Vec<_>>(),
            n,
        ))
    })
    .await?;
    let body = html! {
        form.inline method="get" action="/ui/accounts" {
            label { "Account id " input type="search" name="q" value=(search) maxlength=(MAX_SEARCH_BYTES); }
            button type="submit" { "Search" }
        }
        p { (total) " accounts" @if total > rows.len() { ", the first " (rows.len()) " shown" } "." }
        (table("accounts", &["account", "balance", "debt", "credit limit", "deny list", "exposure bound"], html! {
            @for a in &rows {
                tr { td { a href={"/ui/accounts/" (a.account_id)} { (a.account_id) } }
                     td.num { (money(a.balance_minor)) } td.num { (money(a.debt_minor)) }
                     td.num { (money(a.credit_limit_minor)) }
                     td { @if a.revoked { strong { "denied" } } @else { "—" } }
                     td.num { @match a.exposure_bound_minor { Some(b) => (money(b)), None => "unbounded by caps" } } }
            }
        }))
    };
    Ok(html_response(
        StatusCode::OK,
        page(&staff.0, "Accounts", body).into_string(),
    ))
}

/// A fresh payment id for the payment form (`ui-` and 16 random hex digits).
fn suggested_payment_id(ui: &Ui) -> String {
    let mut rng = ui.app.rng.lock().unwrap_or_else(|p| p.into_inner());
    format!("ui-{}", &super::session::random_hex(&mut *rng)[..16])
}

/// `GET /ui/accounts/{id}`: statement, debt, deny-list state, exposure,
/// and the payment and freeze forms.
///
/// Longer than a screen: one page's markup, read top to bottom as the page
/// shows it (stats, forms, statement, credentials); its parts are already
/// helpers (`stat`, `table`), and split further the page would be read in
/// pieces out of order.
pub async fn account(State(ui): State<Ui>, staff: Staff, Path(id): Path<String>) -> UiResult {
    staff.require_all("an account")?;
    let app = ui.app.clone();
    let id2 = id.clone();
    let (st, exp) = blocking(move || {
        let st = crate::ops::statement(&app.db, &id2)?;
        let exp = reports::exposure(&app.db, &app.tariff, app.now(), app.config.skew_tolerance_s)?
            .into_iter()
            .find(|a| a.account_id == id2);
        Ok((st, exp))
    })
    .await?;
    let suggested_payment_id = suggested_payment_id(&ui);
    let s = &staff.0;
    let passenger = crate::core::passenger_account(&id);
    let body = html! {
        section.stats {
            (stat("balance", "Balance", money(st.balance_minor)))
            (stat("debt", "Debt", money(st.debt_minor)))
            (stat("credit-limit", "Credit limit", money(st.account.credit_limit_minor)))
            (stat("deny-state", "Deny list", html! { @if st.revoked { "denied" } @else { "allowed" } }))
            (stat("frozen", "Frozen", html! { @if st.account.frozen { "yes" } @else { "no" } }))
            (stat("exposure", "Exposure bound", html! {
                @match exp.and_then(|e| e.exposure_bound_minor) { Some(b) => (money(b)), None => "unbounded by caps" }
            }))
        }
        div.forms {
            form #pay-form method="post" action={"/ui/accounts/" (id) "/payments"} {
                h2 { "Record a payment" }
                (view::csrf_field(s))
                label { "Payment id " input name="payment_id" value=(suggested_payment_id) required maxlength=(crate::ops::MAX_PAYMENT_ID_BYTES); }
                label { "Amount (minor units) " input #amount name="amount_minor" type="number" min="1" value=(st.debt_minor.max(1)) required; }
                button type="submit" { "Record payment" }
            }
            form #freeze-form method="post" action={"/ui/accounts/" (id) "/freeze"} {
                h2 { "Freeze" }
                (view::csrf_field(s))
                input type="hidden" name="frozen" value=(if st.account.frozen { "false" } else { "true" });
                button type="submit" { @if st.account.frozen { "Unfreeze" } @else { "Freeze account" } }
            }
        }
        h2 { "Statement" }
        p.note { "Every posting on the passenger's ledger account; + is money in (a payment), − a charge." }
        (table("postings", &["posting", "day", "kind", "debit", "credit", "for the passenger"], html! {
            @for p in &st.postings {
                @let kind = serde_json::to_value(p.kind).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
                @let mine = p.credit.to_string() == passenger;
                tr { td { code { (p.posting_id) } }
                     td { @if let Some(d) = p.service_day { (d) } }
                     td { (kind) } td { (p.debit) } td { (p.credit) }
                     td.num { (money(if mine { p.amount_minor } else { -p.amount_minor })) } }
            }
        }))
        h2 { "Credentials" }
        (table("credentials", &["credential", "profile", "valid from", "valid until"], html! {
            @for c in &st.credentials {
                tr { td { code { (c.credential_id.to_hex()) } } td { (format!("{:?}", c.profile)) }
                     td { (utc(c.valid_from_unix_s)) } td { (utc(c.valid_until_unix_s)) } }
            }
        }))
    };
    Ok(html_response(
        StatusCode::OK,
        page(s, &format!("Account {id}"), body).into_string(),
    ))
}

/// `GET /ui/readers`: the fleet.
pub async fn readers(State(ui): State<Ui>, staff: Staff) -> UiResult {
    let (app, scope) = (ui.app.clone(), staff.0.scope.clone());
    let (rows, deny) =
        blocking(move || Ok((reader_rows(&app, &scope)?, app.db.deny_state()?.0))).await?;
    let now = ui.app.now();
    let s = &staff.0;
    let body = html! {
        p #bundle { "Published bundle: version " strong #bundle-version { (deny.version) }
            @if deny.version > 0 { ", " (ago(now.saturating_sub(deny.published_unix_s))) " old" } "." }
        p.note { "A reader's bundle is the version it said it holds when it last fetched one (signed with its key), \
                  aged from when settlement first served it that version; \"behind\" when older than the published one." }
        (table("readers", &["reader", "operator", "route · vehicle", "contact", "last contact", "backlog", "acked seq", "clock", "bundle", "bundle age", "forks", "gaps", "open", ""], html! {
            @for r in &rows {
                tr data-reader=(r.reader.reader_id) {
                    td { (r.reader.reader_id) } td { (r.reader.operator) } td { (r.reader.route) " · " (r.reader.vehicle) }
                    td { @if r.reader.retired { "retired" } @else { (r.contact.name()) } }
                    td { @match r.api["last_contact_unix_s"].as_u64() { Some(t) => { (ago(now.saturating_sub(t))) " ago" }, None => "never" } }
                    td.num.backlog { (r.backlog) }
                    td.num.acked { (r.api["acked_seq"]) }
                    td.num { @match r.api["clock_offset_s"].as_i64() { Some(o) => { (o) " s" }, None => "—" } }
                    (held_bundle_cells(&r.api["bundle"], deny.version, now))
                    td.num { (r.forks) } td.num { (r.gaps) }
                    td.num.open { (r.api["open_incidents"]) }
                    td { @if !r.reader.retired {
                        form method="post" action={"/ui/readers/" (r.reader.reader_id) "/retire"} {
                            (view::csrf_field(s)) button type="submit" { "Retire" } } } }
                }
            }
        }))
    };
    Ok(html_response(
        StatusCode::OK,
        page(s, "Readers", body).into_string(),
    ))
}

/// The bundle and bundle-age cells of a reader (`bundle`: the API's
/// `readers::HeldBundle`, or null when the reader never signed a fetch).
fn held_bundle_cells(bundle: &serde_json::Value, published: u64, now: u64) -> Markup {
    let held = bundle["held_version"].as_u64();
    let served = bundle["held_served_unix_s"].as_u64();
    html! {
        td.num.bundle-version data-version=[held] {
            @match held {
                None => "never fetched",
                Some(0) => "none",
                Some(v) => { (v) @if v < published { " " span.behind { "behind" } } },
            }
        }
        td.num.bundle-age data-age-s=[served.map(|t| now.saturating_sub(t))] {
            @match (held, served) {
                (Some(v), Some(t)) if v > 0 => (ago(now.saturating_sub(t))),
                _ => "—",
            }
        }
    }
}

/// A stored acknowledgement of an incident (who, when).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Ack {
    /// Who acknowledged it.
    pub by: String,
    /// Settlement time.
    pub at_unix_s: u64,
}

/// Meta name of an incident's acknowledgement.
pub fn ack_name(i: &Incident) -> String {
    format!("ui_incident_ack/{}/{}/{}", i.reader_id, i.kind, i.seq)
}

fn incident_row(app: &App, s: &super::session::Session, i: &Incident) -> Result<Markup, UiError> {
    let res: Option<readers::Resolution> = app.db.meta(&format!(
        "incident_resolved/{}/{}/{}",
        i.reader_id, i.kind, i.seq
    ))?;
    let ack: Option<Ack> = app.db.meta(&ack_name(i))?;
    let resolvable = readers::OPEN_UNTIL_RESOLVED.contains(&i.kind.as_str());
    let hidden = html! {
        (view::csrf_field(s))
        input type="hidden" name="reader_id" value=(i.reader_id);
        input type="hidden" name="kind" value=(i.kind);
        input type="hidden" name="seq" value=(i.seq);
    };
    Ok(html! {
        tr data-incident={(i.reader_id) "/" (i.kind) "/" (i.seq)} {
            td { (i.reader_id) } td { code { (i.kind) } } td.num { (i.seq) } td { (utc(i.at_unix_s)) } td.wrap { (i.detail) }
            td.state.wrap {
                @if let Some(r) = &res { "resolved: " (r.note) }
                @else if resolvable { strong { "open" } } @else { "logged" }
                @if i.kind == "disputed_code" { br; a href="#disputes-title" { "its fare: Disputed fares" } }
                @if let Some(a) = &ack { br; "acknowledged by " (a.by) }
            }
            td {
                @if ack.is_none() {
                    form method="post" action="/ui/incidents/acknowledge" { (hidden) button type="submit" { "Acknowledge" } }
                }
                @if resolvable && res.is_none() {
                    form method="post" action="/ui/incidents/resolve" {
                        (hidden)
                        input name="note" placeholder="what was done" required maxlength="512";
                        button type="submit" { "Resolve" }
                    }
                }
            }
        }
    })
}

/// Meta name of who awarded a dispute from the dashboard (kept beside the
/// dispute, as incident acknowledgements are).
pub fn award_name(charged: crate::model::RideId) -> String {
    format!(
        "ui_dispute_award/{}/{}",
        charged.reader_id, charged.reader_seq
    )
}

fn dispute_row(
    app: &App,
    s: &super::session::Session,
    d: &crate::model::Dispute,
) -> Result<Markup, UiError> {
    let by: Option<Ack> = app.db.meta(&award_name(d.charged_ride))?;
    let mut readers: Vec<(u32, &str)> = Vec::new();
    for (ride, op) in &d.sightings {
        if !readers.iter().any(|(r, _)| *r == ride.reader_id) {
            readers.push((ride.reader_id, op));
        }
    }
    // The rule (model::Dispute): the charged ride is the first sighting by reader time.
    let rule = d.charged_ride.reader_id;
    let action = format!(
        "/ui/disputes/{}/{}/award",
        d.charged_ride.reader_id, d.charged_ride.reader_seq
    );
    Ok(html! {
        tr data-dispute=(d.charged_ride) {
            td { (d.charged_ride) } td { (d.account_id.as_deref().unwrap_or("—")) }
            td.num { (money(d.held_minor)) }
            td.wrap { @for (ride, op) in &d.sightings { (ride) " (" (op) ")" br; } }
            td { (utc(d.opened_unix_s)) }
            td.state.wrap {
                @match &d.resolution {
                    Some(r) => { "awarded to reader " (r.award_reader_id) " (" (r.operator) ") at " (utc(r.at_unix_s)) br;
                        "by " @match &by { Some(a) => (a.by), None => "the JSON API (operator token)" } }
                    None => strong { "open" },
                }
            }
            td { @if d.resolution.is_none() && s.scope == Scope::All {
                form.award method="post" action=(action) {
                    (view::csrf_field(s))
                    label { "Award to "
                        select name="award_reader_id" {
                            @for (r, op) in &readers {
                                option value=(r) selected[*r == rule] {
                                    "reader " (r) " (" (op) ")" @if *r == rule { " — the rule's choice" }
                                }
                            }
                        }
                    }
                    button type="submit" { "Award held fare" }
                }
            } }
        }
    })
}

/// `GET /ui/incidents`: forged rides, duplicates across readers, gaps, forks.
pub async fn incidents(State(ui): State<Ui>, staff: Staff) -> UiResult {
    let app = ui.app.clone();
    let s = staff.0.clone();
    let body = blocking(move || {
        let ops: HashMap<u32, String> =
            app.db.readers()?.into_iter().map(|r| (r.reader_id, r.operator)).collect();
        let sees = |id: u32| ops.get(&id).is_some_and(|o| s.scope.sees(o));
        let mut rows = Vec::new();
        for i in app.db.incidents()?.iter().filter(|i| sees(i.reader_id)) {
            rows.push(incident_row(&app, &s, i)?);
        }
        let fraud: Vec<_> = app
            .db
            .fraud_events()?
            .into_iter()
            .filter(|f| sees(f.charged_ride.reader_id) || sees(f.duplicate_ride.reader_id))
            .collect();
        let mut disputes = Vec::new();
        for d in app.db.disputes()?.iter().filter(|d| d.sightings.iter().any(|(r, _)| sees(r.reader_id))) {
            disputes.push(dispute_row(&app, &s, d)?);
        }
        Ok(html! {
            h2 #disputes-title { "Disputed fares (held in suspense)" }
            p.note { "The same ride code on two readers: the passenger was charged once, for the first sighting by reader time, \
                      and that fare is held in suspense until an operator awards it to the reader whose ride was genuine. \
                      The rule's choice (pre-selected) is that first sighting's reader (the charged ride's). Only the deployment's operator token awards \
                      (it moves money between operators)." }
            (table("disputes", &["charged ride", "account", "held", "sightings (reader/seq, operator)", "opened", "state", ""], html! { @for d in &disputes { (d) } }))
            h2 { "Reader incidents" }
            (table("incidents", &["reader", "kind", "seq", "at", "detail", "state", ""], html! { @for r in &rows { (r) } }))
            h2 { "Duplicates across readers (fraud events)" }
            (table("fraud", &["kind", "account", "device seq", "charged ride", "duplicate ride"], html! {
                @for f in &fraud {
                    tr { td { code { (f.kind) } } td { (f.account_id.as_deref().unwrap_or("—")) }
                         td.num { (f.device_seq) } td { (f.charged_ride) } td { (f.duplicate_ride) } }
                }
            }))
        })
    })
    .await?;
    Ok(html_response(
        StatusCode::OK,
        page(&staff.0, "Incidents", body).into_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contact_classes_follow_the_named_bounds() {
        let now = 100_000;
        assert_eq!(
            Contact::of(Some(now - CONTACT_RECENT_S), now),
            Contact::Recent
        );
        assert_eq!(
            Contact::of(Some(now - CONTACT_RECENT_S - 1), now),
            Contact::Silent
        );
        assert_eq!(
            Contact::of(Some(now - CONTACT_SILENT_S), now),
            Contact::Silent
        );
        assert_eq!(
            Contact::of(Some(now - CONTACT_SILENT_S - 1), now),
            Contact::Stale
        );
        assert_eq!(Contact::of(None, now), Contact::Stale);
    }

    #[test]
    fn ranges_are_inclusive_and_checked() {
        let mut q = HashMap::new();
        q.insert("from".to_string(), "2026-03-10".to_string());
        let r = range(&q).unwrap();
        assert!(
            in_range("2026-03-10", &r) && in_range("2026-04-01", &r) && !in_range("2026-03-09", &r)
        );
        q.insert("to".to_string(), "10/03/2026".to_string());
        assert!(matches!(range(&q), Err(UiError::BadRequest(m)) if m.contains("to `10/03/2026`")));
    }
}
