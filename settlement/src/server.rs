//! The connection loop: HTTP/1.1 on hyper with the limits `axum::serve`
//! lacks, so slow or numerous clients cannot take the service down.
//!
//! * **Header-read timeout** (`header_read_timeout_ms`): a request's headers
//!   must arrive within it, counted from when the connection is ready for
//!   them, so it also bounds how long a keep-alive connection idles between
//!   requests; past it hyper closes the connection. A client sending its
//!   headers a byte at a time holds a connection for at most this long.
//! * **Request timeout** (`request_timeout_ms`, the router's layer): from the
//!   headers to the answer, body reading included (`408 request_timeout`).
//! * **Connection cap** (`max_connections`): connections past it are answered
//!   `503 too_many_connections` with `Retry-After` and closed; at most
//!   [`MAX_REFUSING_CONNECTIONS`] such answers are in progress at once, and a
//!   connection beyond those is closed unanswered. Either way nothing hangs
//!   and the descriptors in use stay bounded: see "Connections and open
//!   files" in the README for the open-file limit this needs.
//!
//! HTTP/2 is not served (readers and operators use HTTP/1.1; an h2
//! connection would multiplex around the per-connection limits).

use crate::app::App;
use crate::error::{ApiError, ErrorCode};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Connections past `max_connections` being answered `503` at the same time;
/// past these a new connection is closed without an answer.
pub const MAX_REFUSING_CONNECTIONS: usize = 64;
/// How long a connection past the cap has to send its request headers
/// before it is closed without the `503`.
pub const REFUSING_HEADER_TIMEOUT: Duration = Duration::from_secs(1);
/// `Retry-After` (seconds) of a `503 too_many_connections`.
pub const RETRY_AFTER_S: u64 = 1;
/// Pause after an `accept` failure that is not the peer's (e.g. out of file
/// descriptors), so the loop does not spin while the condition lasts.
pub const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// The answer to a connection past the cap.
fn too_many_connections(max: usize) -> Response {
    let mut resp = ApiError::of(
        ErrorCode::TooManyConnections,
        format!("all {max} connection slots are in use: retry after {RETRY_AFTER_S} s"),
    )
    .into_response();
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_S));
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// `accept` errors that concern one peer only (it went away): retry at once.
fn is_peer_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

/// Answers a connection past the cap with `503` if few such answers are
/// under way, else closes it at once (dropping the stream).
fn refuse_connection(
    refuse: &hyper::server::conn::http1::Builder,
    graceful: &GracefulShutdown,
    refusing: &Arc<Semaphore>,
    io: TokioIo<tokio::net::TcpStream>,
    max: usize,
) {
    metrics::counter!("settlement_http_connections_refused_total").increment(1);
    let Ok(permit) = refusing.clone().try_acquire_owned() else {
        return;
    };
    let answer = hyper::service::service_fn(move |_req| async move {
        Ok::<_, Infallible>(too_many_connections(max))
    });
    let conn = graceful.watch(refuse.serve_connection(io, answer));
    tokio::spawn(async move {
        let _ = conn.await;
        drop(permit);
    });
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops
/// accepting, lets in-flight requests finish and returns.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let max = app.config.max_connections;
    let header_timeout = Duration::from_millis(app.config.header_read_timeout_ms);
    let router = crate::http::router(app);
    let slots = Arc::new(Semaphore::new(max));
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING_CONNECTIONS));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let mut refuse = http.clone();
    refuse
        .keep_alive(false)
        .header_read_timeout(REFUSING_HEADER_TIMEOUT);
    let mut shutdown = std::pin::pin!(shutdown);
    tracing::info!(
        addr = ?listener.local_addr().ok(),
        max_connections = max,
        header_read_timeout_ms = header_timeout.as_millis() as u64,
        "fare-settlement listening"
    );
    loop {
        let stream = tokio::select! {
            biased;
            () = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok((stream, _peer)) => stream,
                Err(e) if is_peer_error(&e) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "accept failed (out of file descriptors? see the README's open-file needs)");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            },
        };
        let io = TokioIo::new(stream);
        match slots.clone().try_acquire_owned() {
            Ok(slot) => {
                let service = TowerToHyperService::new(router.clone());
                let conn = graceful.watch(http.serve_connection(io, service));
                metrics::gauge!("settlement_http_connections").increment(1.0);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    drop(slot);
                    metrics::gauge!("settlement_http_connections").decrement(1.0);
                });
            }
            Err(_) => refuse_connection(&refuse, &graceful, &refusing, io, max),
        }
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
