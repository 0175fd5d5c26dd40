//! Settlement runs: start one, follow it, history. Runs go into the same
//! registry as `POST /v1/settlement/runs` (so `GET /v1/settlement/runs/{id}`
//! shows a run started here, and the other way round).

use super::actions::{checked, CsrfOnly};
use super::view::{csrf_field, page, table, utc};
use super::{html_response, Staff, Ui, UiError, UiResult};
use crate::error::{ApiError, ErrorCode};
use crate::settle::RunStatus;
use axum::extract::rejection::FormRejection;
use axum::extract::{Form, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use maud::{html, Markup};

/// Seconds between two polls of a running run's status (htmx).
pub const POLL_EVERY_S: u64 = 1;

fn run_id(id: &str) -> Result<u64, UiError> {
    id.parse::<u64>()
        .map_err(|_| UiError::BadRequest(format!("run id `{id}`: expected an integer")))
}

fn get_run(ui: &Ui, id: u64) -> Result<RunStatus, UiError> {
    ui.app
        .runs
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(id)
        .ok_or_else(|| {
            UiError::Api(ApiError::of(
                ErrorCode::UnknownRun,
                format!("no run {id} (runs are kept in memory, the last 100)"),
            ))
        })
}

/// A run's status block. While the run goes on, htmx replaces it every
/// [`POLL_EVERY_S`]; without JavaScript the page's reload link does.
fn status_block(r: &RunStatus) -> Markup {
    let running = r.status == "running";
    html! {
        section #run-status data-status=(r.status)
            hx-get=[running.then(|| format!("/ui/runs/{}/status", r.run_id))]
            hx-trigger=[running.then(|| format!("every {POLL_EVERY_S}s"))]
            hx-swap=[running.then_some("outerHTML")] {
            p { "Run " strong { (r.run_id) } ": " strong.status { (r.status) }
                ", started " (utc(r.started_unix_s))
                @if let Some(f) = r.finished_unix_s { ", finished " (utc(f)) } "." }
            @if running { p.note { "Still running. " a href={"/ui/runs/" (r.run_id)} { "Reload" } } }
            @if let Some(s) = &r.summary {
                dl.summary {
                    dt { "Rides settled" } dd #run-rides { (s.rides) }
                    dt { "Chunks committed" } dd { (s.chunks) }
                    dt { "Postings" } dd { (s.postings) }
                    dt { "Fraud events" } dd { (s.fraud_events) }
                    dt { "Incidents" } dd { (s.incidents) }
                }
            }
            @if let Some(e) = &r.error { p.error { (e) } }
        }
    }
}

/// `GET /ui/runs`: start form and history.
pub async fn list(State(ui): State<Ui>, staff: Staff) -> UiResult {
    staff.require_all("settlement runs")?;
    let runs = ui.app.runs.lock().unwrap_or_else(|p| p.into_inner()).list();
    let body = html! {
        form #start-run method="post" action="/ui/runs" {
            (csrf_field(&staff.0))
            button type="submit" { "Start a settlement run" }
        }
        p.note { "A run settles every uploaded ride of every operator." }
        h2 { "History (since the service started)" }
        (table("runs", &["run", "status", "started", "finished", "rides"], html! {
            @for r in &runs {
                tr { td { a href={"/ui/runs/" (r.run_id)} { (r.run_id) } } td { (r.status) }
                     td { (utc(r.started_unix_s)) }
                     td { @if let Some(f) = r.finished_unix_s { (utc(f)) } }
                     td.num { @if let Some(s) = &r.summary { (s.rides) } } }
            }
        }))
    };
    Ok(html_response(
        StatusCode::OK,
        page(&staff.0, "Settlement runs", body).into_string(),
    ))
}

/// `POST /ui/runs`: starts a run in the background (as the API does) and
/// redirects to its page.
pub async fn start(
    State(ui): State<Ui>,
    staff: Staff,
    f: Result<Form<CsrfOnly>, FormRejection>,
) -> UiResult {
    staff.require_all("a settlement run")?;
    checked(&staff, f)?;
    let app = ui.app.clone();
    let id = app
        .runs
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .start(app.now());
    tracing::info!(run_id = id, by = %staff.0.who(), "settlement run started from the dashboard");
    // Detached: the run goes on whatever happens to this request.
    tokio::task::spawn_blocking(move || app.settle_as_run(id));
    Ok(Redirect::to(&format!("/ui/runs/{id}")).into_response())
}

/// `GET /ui/runs/{id}`: one run, followed while it runs.
pub async fn show(State(ui): State<Ui>, staff: Staff, Path(id): Path<String>) -> UiResult {
    staff.require_all("settlement runs")?;
    let r = get_run(&ui, run_id(&id)?)?;
    let body = html! { (status_block(&r)) p { a href="/ui/runs" { "All runs" } } };
    Ok(html_response(
        StatusCode::OK,
        page(&staff.0, &format!("Settlement run {}", r.run_id), body).into_string(),
    ))
}

/// `GET /ui/runs/{id}/status`: the status block alone (htmx polls it).
pub async fn status_fragment(
    State(ui): State<Ui>,
    staff: Staff,
    Path(id): Path<String>,
) -> UiResult {
    staff.require_all("settlement runs")?;
    let r = get_run(&ui, run_id(&id)?)?;
    Ok(html_response(
        StatusCode::OK,
        status_block(&r).into_string(),
    ))
}
