//! A reader's contact with settlement: the answer to a batch and to a
//! bundle request, shared by the HTTP routes (`crate::http`) and by callers
//! that serve readers in process (the fleet simulator), so both run the
//! same checks in the same order.

use crate::app::App;
use crate::error::{ApiError, ErrorCode};
use crate::readers::{check_signed_request, SignedRequest};
use crate::store::WriteSet;
pub use fare_credential::request::BundleQuery;

/// The path a batch is posted to (part of what a reader signs).
pub const BATCH_TARGET: &str = fare_credential::request::BATCH_TARGET;

/// Who asks for a reader's bundle.
#[derive(Clone, Copy, Debug)]
pub enum BundleCaller<'a> {
    /// An operator whose bearer token was checked already.
    Operator,
    /// The reader: its `X-Reader-Auth` header, if it sent one.
    Reader(Option<&'a str>),
}

/// Ingests a batch and signs the answer (`POST /v1/batches`). `auth` is the
/// reader's request signature (`X-Reader-Auth`, SPEC §9), required: the
/// body carries the reader's signature already, the request signature adds
/// freshness and replay protection (a batch captured on the wire cannot be
/// posted again as a new request) and must name the same reader as the
/// batch. Every refusal comes before anything is stored.
pub fn answer_batch(
    app: &App,
    bytes: &[u8],
    auth: Option<&str>,
    reader_time_unix_s: Option<u64>,
) -> Result<serde_json::Value, ApiError> {
    // The CPU work first, outside the write lock: the request and batch
    // signatures and the records' strict marks (`ingest::check_batch`), so
    // that some batches are checked while another one's writes commit. It
    // reads only readers' registered keys, which never change (their
    // retirement is checked again under the lock). The marks' group test
    // takes all cores only for a batch alone in the service from its check
    // to its commit (`cores`, held to the end: one reader uploading a
    // backlog); with others under way, a core each keeps checks and
    // commits running side by side.
    check_batch_signature(app, bytes, auth, app.now())?;
    let cores = app.core_users.enter();
    let checked = crate::ingest::check_batch(&app.db, bytes, cores.alone());
    let _w = app.write_lock.lock().unwrap_or_else(|p| p.into_inner());
    let now = app.now();
    let result =
        checked.and_then(|c| crate::ingest::store_batch(&app.db, c, now, Some(reader_time_unix_s)));
    crate::acks::answer(&app.db, &app.acks, bytes, reader_time_unix_s, now, result)
}

/// The request signature of a batch: present, by a provisioned reader's
/// registered key, fresh, never seen, and by the reader the batch names.
fn check_batch_signature(
    app: &App,
    bytes: &[u8],
    auth: Option<&str>,
    now: u64,
) -> Result<(), ApiError> {
    let Some(auth) = auth else {
        return Err(ApiError::of(
            ErrorCode::RequestUnsigned,
            format!(
                "POST {BATCH_TARGET}: sign the request with the reader key (X-Reader-Auth, SPEC §9)"
            ),
        ));
    };
    // A signer settlement does not know is the batch's own refusal
    // (`unknown_reader`), as it was before requests were signed.
    if let Ok(parsed) = fare_credential::RequestAuth::parse_header(auth) {
        if app.db.reader(parsed.reader_id)?.is_none() {
            return Err(ApiError::of(
                ErrorCode::UnknownReader,
                format!(
                    "reader {} is not provisioned: register it (POST /v1/readers) first",
                    parsed.reader_id
                ),
            ));
        }
    }
    let request = SignedRequest {
        header: auth,
        route_reader: None,
        method: "POST",
        target: BATCH_TARGET,
        body: bytes,
    };
    let signer = check_signed_request(&app.db, &app.recent_requests, request, now)?;
    // A body that does not parse is refused by ingest with its own error.
    let named = fare_credential::batch::SignedBatch::parse_v1(bytes).map(|b| b.reader_id());
    if let Some(named) = named.ok().filter(|&id| id != signer) {
        return Err(ApiError::of(
            ErrorCode::RequestBadSignature,
            format!("request signed by reader {signer} for reader {named}'s batch"),
        ));
    }
    Ok(())
}

/// The signed bundle the query names: for its reader at deny version
/// `since`, holding a tariff of digest `tariff_held` (`GET
/// /v1/readers/{id}/bundle`, `target` being that path and query as sent).
/// A bundle holds the reader's deny list: only the reader (a request signed
/// with its registered key) or an operator may read it.
pub fn answer_bundle(
    app: &App,
    query: BundleQuery,
    caller: BundleCaller<'_>,
    target: &str,
    reader_time_unix_s: Option<u64>,
) -> Result<Vec<u8>, ApiError> {
    let BundleQuery {
        reader_id,
        since,
        tariff_held,
    } = query;
    if let BundleCaller::Reader(auth) = caller {
        check_bundle_signature(app, reader_id, auth, target)?;
    }
    match app.db.reader(reader_id)? {
        Some(r) if !r.retired => {}
        Some(_) => {
            return Err(ApiError::of(
                ErrorCode::ReaderRetired,
                format!("reader {reader_id} was retired"),
            ))
        }
        None => {
            return Err(ApiError::of(
                ErrorCode::NoSuchReader,
                format!("reader {reader_id} is not provisioned"),
            ))
        }
    }
    let bytes = app
        .bundle_for(since, tariff_held)
        .map_err(|e| ApiError::of(ErrorCode::BundleFailed, e.to_string()))?;
    note_bundle_contact(app, reader_id, since, caller, &bytes, reader_time_unix_s)?;
    Ok(bytes)
}

/// Records the contact and, when the reader signed the request (so `since`
/// is what it holds), the bundle it was served: one commit, under the write
/// lock because both records are read, changed and written back. Not
/// waited for on the device: a crash loses at most when a reader last
/// fetched and what it holds, which its next contact writes again, and
/// every reader fetches at every contact (half of the contact commits).
fn note_bundle_contact(
    app: &App,
    reader_id: u32,
    since: Option<u64>,
    caller: BundleCaller<'_>,
    bytes: &[u8],
    reader_time_unix_s: Option<u64>,
) -> Result<(), ApiError> {
    let served = match caller {
        BundleCaller::Reader(_) => served_version(bytes),
        BundleCaller::Operator => None,
    };
    let now = app.now();
    let _w = app.write_lock.lock().unwrap_or_else(|p| p.into_inner());
    let mut w = WriteSet::default();
    let contact =
        crate::acks::queue_contact(&app.db, &mut w, reader_id, reader_time_unix_s, now, 0)?;
    let held = served
        .map(|v| crate::readers::queue_bundle_fetch(&app.db, &mut w, reader_id, since, v, now))
        .transpose()?;
    app.db.commit_unsynced(w)?;
    crate::acks::contact_gauges(reader_id, &contact, now);
    if let Some(h) = held {
        h.set_gauges(reader_id);
    }
    Ok(())
}

/// The `bundle_version` of a v2 or v3 bundle (SPEC §4.1, §4.2: after the
/// version byte and the publisher id), read from the bytes served rather
/// than from the deny head, which may have moved on meanwhile (and is
/// costly to decode).
fn served_version(bundle: &[u8]) -> Option<u64> {
    use fare_credential::bundle::{BUNDLE_V2, BUNDLE_V3};
    const AT: usize = 1 + fare_credential::bundle::PUBLISHER_ID_LEN;
    let b = bundle.get(AT..AT + 8)?;
    matches!(bundle[0], BUNDLE_V2 | BUNDLE_V3)
        .then(|| u64::from_be_bytes(b.try_into().expect("8 bytes")))
}

fn check_bundle_signature(
    app: &App,
    reader_id: u32,
    auth: Option<&str>,
    target: &str,
) -> Result<(), ApiError> {
    let Some(auth) = auth else {
        return Err(ApiError::of(
            ErrorCode::RequestUnsigned,
            format!(
                "reader {reader_id}'s bundle: sign the request with the reader key (X-Reader-Auth) \
                 or send the operator token"
            ),
        ));
    };
    let request = SignedRequest {
        header: auth,
        route_reader: Some(reader_id),
        method: "GET",
        target,
        body: b"",
    };
    check_signed_request(&app.db, &app.recent_requests, request, app.now()).map(|_| ())
}
