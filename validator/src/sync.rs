//! Upload to settlement and bundle refresh: one contact
//! ([`contact`]), the acknowledgement rules ([`apply_reply`]), the upload
//! state kept in the log ([`SyncState`]) and the transport behind a small
//! trait ([`Link`]: reqwest in production, anything in a simulator).
//! `fare-validator sync` is one contact; the background agent
//! ([`crate::agent`]) repeats contacts with backoff.
//!
//! Contract: `POST /v1/batches` with batch v1 bytes (header `X-Reader-Time`:
//! the reader clock) answers JSON; a success, a 409 `sequence_gap` and a 409
//! `chain_fork` all carry `ack`, the hex of a signed acknowledgement
//! (crates/fare-credential/SPEC.md §8). `GET /v1/readers/{id}/bundle?since=VER`
//! answers root-signed bundle bytes.
//!
//! The rules (DESIGN §2, §4.7):
//! * The acknowledged sequence moves only on a verified acknowledgement for
//!   this reader and these exact batch bytes whose chain hash equals this
//!   log's at that sequence. Anything else is refused, counted in
//!   [`SyncState::refused_acks`], and the same batch is sent again.
//! * A fork (settlement holds other records, or more records than this log
//!   has) is persisted as [`SyncState::forked`]: uploads stop, nothing is
//!   compacted, `status` shows `forked`, `sync` exits non-zero.
//! * Settlement holding less than it acknowledged (restored from backup):
//!   the reader rewinds and re-sends what it still has, or names the range
//!   it no longer has ([`SyncState::settlement_behind`]).
//! * The bundle is fetched on every contact, whatever the upload did.

use crate::error::{BundleError, ValidatorError};
use crate::reader::Reader;
use fare_credential::ack::{request_digest, Ack, AckKind};
use fare_credential::bundle::PublishedBundle;
use fare_credential::request::REQUEST_AUTH_HEADER;
use fare_credential::FormatError;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Longest JSON answer to a batch the reader reads.
pub const MAX_ACK_REPLY_BYTES: usize = 64 << 10;
/// Largest bundle the reader downloads (or installs from a file): a
/// 2-million-entry deny-list snapshot, so the reader stays within its
/// 64 MiB memory budget (the bundle bytes, the parsed list and the deny
/// file writer at once). Larger answers are refused before they are read.
pub const MAX_FETCHED_BUNDLE_BYTES: usize = 32 << 20;
/// Header carrying the reader's clock (unix s) on each batch.
pub const READER_TIME_HEADER: &str = "x-reader-time";
/// Header with settlement's clock on its answers (unsigned).
pub const SERVER_TIME_HEADER: &str = "x-server-time";
/// Path of batch uploads (signed as the request target).
pub const BATCH_TARGET: &str = fare_credential::request::BATCH_TARGET;

/// What a bundle request names (shared with settlement, which parses it).
pub use fare_credential::request::BundleQuery;

/// A fork recorded by the reader.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ForkInfo {
    /// Sequence where the chains disagree, or settlement's head when it
    /// holds more than this log.
    pub at_seq: u64,
    /// What settlement holds for this reader.
    pub settlement_seq: u64,
    /// What was seen.
    pub why: String,
    /// Reader time when detected.
    pub detected_unix_s: u64,
}

/// Settlement holds less than this reader had acknowledged, and this
/// reader no longer holds `missing_from..=missing_to`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Behind {
    /// What settlement holds.
    pub settlement_holds: u64,
    /// First record neither side holds.
    pub missing_from: u64,
    /// Last record neither side holds.
    pub missing_to: u64,
}

/// Upload state, persisted in the log's `meta` tree.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SyncState {
    /// Set when the chain forked from settlement's: loud until re-provisioned.
    pub forked: Option<ForkInfo>,
    /// Set when settlement lost records this reader compacted.
    pub settlement_behind: Option<Behind>,
    /// Reader time of the last answer from settlement (any answer).
    pub last_contact_unix_s: Option<u64>,
    /// Reader time of the last contact that uploaded everything and fetched the bundle.
    pub last_success_unix_s: Option<u64>,
    /// The last contact's error, if it failed.
    pub last_error: Option<String>,
    /// Its stable code.
    pub last_error_code: Option<String>,
    /// Reader clock minus settlement clock at the last signed answer (s).
    pub clock_offset_s: Option<i64>,
    /// Acknowledgements refused (unsigned, bad signature, mismatch), ever.
    pub refused_acks: u64,
    /// Batches sent, ever (re-sends included).
    pub batches_sent: u64,
}

/// An answer from settlement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Settlement's clock from the answer's [`SERVER_TIME_HEADER`], if any
    /// (unsigned: used only to time-stamp signed requests, see [`note_stale`]).
    pub date_unix_s: Option<u64>,
    /// Body (read within the limit of the request).
    pub body: Vec<u8>,
}

/// Why a request got no answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// Connect, send, timeout or a body cut short: the request may or may
    /// not have been processed.
    #[error("transport: {0}")]
    Transport(String),
    /// The answer was larger than allowed and was not read.
    #[error("answer over the {limit}-byte limit")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
}

/// The transport to settlement. Production: [`HttpLink`]; a simulator may
/// serve these in-process.
pub trait Link: Send + Sync {
    /// Posts a batch to [`BATCH_TARGET`]; `reader_time_unix_s` goes in
    /// [`READER_TIME_HEADER`], `auth` (the request signed by the reader,
    /// [`Reader::sign_request`]) in `X-Reader-Auth`.
    fn post_batch(
        &self,
        body: Vec<u8>,
        reader_time_unix_s: u64,
        auth: String,
    ) -> impl Future<Output = Result<Reply, LinkError>> + Send;
    /// Fetches [`BundleQuery::target`], headers as for a batch.
    fn get_bundle(
        &self,
        query: BundleQuery,
        reader_time_unix_s: u64,
        auth: String,
    ) -> impl Future<Output = Result<Reply, LinkError>> + Send;
    /// Where it talks to (for messages).
    fn describe(&self) -> String;
}

/// [`Link`] over HTTP (reqwest, rustls).
#[derive(Clone, Debug)]
pub struct HttpLink {
    base: String,
    client: reqwest::Client,
}

impl HttpLink {
    /// A link to `base_url` with a per-request time limit.
    pub fn new(base_url: &str, timeout: Duration) -> Result<HttpLink, ValidatorError> {
        let base = base_url.trim_end_matches('/').to_string();
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| ValidatorError::Sync {
                url: base.clone(),
                why: e.to_string(),
            })?;
        Ok(HttpLink { base, client })
    }
}

async fn read_limited(mut resp: reqwest::Response, limit: usize) -> Result<Reply, LinkError> {
    let status = resp.status().as_u16();
    let date_unix_s = resp
        .headers()
        .get(SERVER_TIME_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok());
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(LinkError::TooLarge { limit });
    }
    let mut out = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| LinkError::Transport(format!("reading the answer: {e}")))?
    {
        if out.len() + chunk.len() > limit {
            return Err(LinkError::TooLarge { limit });
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Reply {
        status,
        date_unix_s,
        body: out,
    })
}

fn transport(e: reqwest::Error) -> LinkError {
    // reqwest's Display hides the cause (connection refused, reset...).
    let mut s = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    LinkError::Transport(s)
}

impl Link for HttpLink {
    async fn post_batch(
        &self,
        body: Vec<u8>,
        reader_time_unix_s: u64,
        auth: String,
    ) -> Result<Reply, LinkError> {
        let resp = self
            .client
            .post(format!("{}{BATCH_TARGET}", self.base))
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .header(READER_TIME_HEADER, reader_time_unix_s.to_string())
            .header(REQUEST_AUTH_HEADER, auth)
            .body(body)
            .send()
            .await
            .map_err(transport)?;
        read_limited(resp, MAX_ACK_REPLY_BYTES).await
    }

    async fn get_bundle(
        &self,
        query: BundleQuery,
        reader_time_unix_s: u64,
        auth: String,
    ) -> Result<Reply, LinkError> {
        let resp = self
            .client
            .get(format!("{}{}", self.base, query.target()))
            .header(READER_TIME_HEADER, reader_time_unix_s.to_string())
            .header(REQUEST_AUTH_HEADER, auth)
            .send()
            .await
            .map_err(transport)?;
        read_limited(resp, MAX_FETCHED_BUNDLE_BYTES).await
    }

    fn describe(&self) -> String {
        self.base.clone()
    }
}

/// When settlement refused a signed request as `request_stale` (this
/// reader's clock is far from settlement's and no signed answer measured
/// the offset yet), takes settlement's clock from the answer's
/// [`SERVER_TIME_HEADER`] for time-stamping requests and returns true: the caller signs
/// the request again, once. The header is unsigned; a forger can only get
/// requests refused, which it could anyway. The reader's own clock, its
/// decisions and the offset `status` shows are unchanged.
pub fn note_stale(reader: &mut Reader, reply: &Reply, sent_at_unix_s: u64) -> bool {
    let stale = reply.status == 401
        && serde_json::from_slice::<serde_json::Value>(&reply.body)
            .is_ok_and(|v| v["error"] == "request_stale");
    match reply.date_unix_s {
        Some(server) if stale => {
            let offset = sent_at_unix_s as i64 - server as i64;
            tracing::warn!(
                clock_offset_s = offset,
                "settlement refused a request as stale: time-stamping requests by its clock"
            );
            reader.set_request_clock_offset(offset);
            true
        }
        _ => false,
    }
}

/// Signs a request with the reader's key ([`Reader::sign_request`]), sends
/// it with `send(time_stamp, auth)`, and when settlement refuses it as
/// `request_stale` ([`note_stale`]) signs it again by settlement's clock
/// and sends it once more. Every signed request of the agent (and of the
/// simulator's compromised reader) goes through here. `sends` counts each
/// send, answered or not; `url` names the target in errors.
#[allow(clippy::too_many_arguments)] // the request's parts, its clock, its counter and its transport
pub async fn send_signed<A, F, Fut>(
    reader: &A,
    method: &str,
    target: &str,
    body: &[u8],
    url: &str,
    now: &(dyn Fn() -> u64 + Send + Sync),
    sends: &mut u32,
    mut send: F,
) -> Result<Reply, ValidatorError>
where
    A: ReaderAccess,
    F: FnMut(u64, String) -> Fut,
    Fut: Future<Output = Result<Reply, LinkError>>,
{
    let mut restamped = false;
    loop {
        let t = now();
        let auth = reader.with(|r| r.sign_request(method, target, body, t))?;
        *sends += 1;
        let reply = send(t, auth).await.map_err(|e| ValidatorError::Sync {
            url: url.to_string(),
            why: e.to_string(),
        })?;
        if restamped || !reader.with(|r| note_stale(r, &reply, t)) {
            return Ok(reply);
        }
        restamped = true;
    }
}

/// What a verified answer did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckOutcome {
    /// The acknowledged sequence moved up to this.
    Advanced(u64),
    /// Settlement held less than acknowledged: rewound to this, re-sending.
    Rewound(u64),
    /// Verified, nothing changed.
    Unchanged,
}

fn refuse(reader: &mut Reader, code: &'static str, why: String) -> ValidatorError {
    let mut s = reader.sync_state().clone();
    s.refused_acks += 1;
    if let Err(e) = reader.set_sync_state(s, false) {
        tracing::warn!(error = %e, "could not count a refused acknowledgement");
    }
    tracing::warn!(code, why = %why, "acknowledgement refused");
    ValidatorError::AckRefused { code, why }
}

fn record_fork(
    reader: &mut Reader,
    at_seq: u64,
    settlement_seq: u64,
    why: String,
    now: u64,
) -> ValidatorError {
    let mut s = reader.sync_state().clone();
    if s.forked.is_none() {
        s.forked = Some(ForkInfo {
            at_seq,
            settlement_seq,
            why: why.clone(),
            detected_unix_s: now,
        });
        if let Err(e) = reader.set_sync_state(s, true) {
            tracing::error!(error = %e, "could not persist the fork state");
        }
    }
    tracing::error!(at_seq, settlement_seq, why = %why, "chain forked from settlement");
    ValidatorError::Forked { at: at_seq, why }
}

/// Applies settlement's answer to the batch `sent` (sequences
/// `first..=last`), verifying its acknowledgement as the module doc says.
/// Returns the verified acknowledgement's settlement time with the outcome.
pub fn apply_reply(
    reader: &mut Reader,
    sent: &[u8],
    first: u64,
    reply: &Reply,
    now_unix_s: u64,
) -> Result<(AckOutcome, u64), ValidatorError> {
    let ack = verified_ack(reader, sent, reply)?;
    apply_ack(reader, &ack, first, now_unix_s)
}

/// The answer's acknowledgement, verified under the root (through its
/// certificate), naming this reader and the exact batch `sent`; anything
/// else is refused and counted.
fn verified_ack(reader: &mut Reader, sent: &[u8], reply: &Reply) -> Result<Ack, ValidatorError> {
    let text = || String::from_utf8_lossy(&reply.body[..reply.body.len().min(512)]).into_owned();
    if reply.status != 200 && reply.status != 409 {
        return Err(ValidatorError::Sync {
            url: "POST /v1/batches".into(),
            why: format!("HTTP {}: {}", reply.status, text()),
        });
    }
    let json: serde_json::Value = match serde_json::from_slice(&reply.body) {
        Ok(v) => v,
        Err(e) => {
            return Err(refuse(
                reader,
                "ack_unsigned",
                format!("answer is not JSON ({e}): {}", text()),
            ))
        }
    };
    let Some(hex_ack) = json.get("ack").and_then(|v| v.as_str()) else {
        return Err(refuse(
            reader,
            "ack_unsigned",
            format!(
                "HTTP {} answer carries no signed `ack`: {}",
                reply.status,
                text()
            ),
        ));
    };
    let bytes = hex::decode(hex_ack)
        .map_err(|e| refuse(reader, "ack_unsigned", format!("`ack` is not hex: {e}")))?;
    let ack = match reader.verify_ack(&bytes) {
        Ok(a) => a,
        Err(e @ FormatError::BadSignature { .. }) => {
            return Err(refuse(reader, "ack_bad_signature", e.to_string()))
        }
        Err(e) => return Err(refuse(reader, "ack_bad_signature", e.to_string())),
    };
    if ack.reader_id != reader.reader_id() {
        return Err(refuse(
            reader,
            "ack_mismatch",
            format!(
                "acknowledges reader {}, this is {}",
                ack.reader_id,
                reader.reader_id()
            ),
        ));
    }
    if ack.request_digest != request_digest(sent) {
        return Err(refuse(
            reader,
            "ack_mismatch",
            "acknowledges another request than the batch sent (replayed answer?)".into(),
        ));
    }
    Ok(ack)
}

/// Applies a verified acknowledgement: a fork if its chain hash differs
/// from this log's (or it names more than this log holds), else the
/// acknowledged sequence moves up, or back (settlement restored).
// Longer than a screen: the acknowledgement rules of the module doc, in order.
fn apply_ack(
    reader: &mut Reader,
    ack: &Ack,
    first: u64,
    now_unix_s: u64,
) -> Result<(AckOutcome, u64), ValidatorError> {
    let s = ack.acked_seq;
    let last_written = reader.state().next_seq - 1;
    if s > last_written {
        return Err(record_fork(
            reader,
            last_written + 1,
            s,
            format!(
                "settlement holds this reader up to {s} but this log ends at {last_written}: \
                 the reader was restored from an older backup or lost its log"
            ),
            now_unix_s,
        ));
    }
    if let Some(own) = reader.chain_hash_at(s)? {
        if own != ack.chain_hash {
            return Err(record_fork(
                reader,
                s,
                s,
                format!("settlement's record {s} differs from this log's"),
                now_unix_s,
            ));
        }
    }
    let before = reader.state().acked_up_to;
    let outcome = match ack.kind {
        AckKind::ChainFork => {
            return Err(record_fork(
                reader,
                first,
                s,
                format!(
                    "settlement refused the batch from {first} as a chain fork (it holds up to {s})"
                ),
                now_unix_s,
            ))
        }
        AckKind::Held if s >= before => {
            reader.acknowledge(s)?;
            if s > before {
                AckOutcome::Advanced(s)
            } else {
                AckOutcome::Unchanged
            }
        }
        AckKind::Held | AckKind::SequenceGap => rewind(reader, s, before)?,
    };
    Ok((outcome, ack.server_time_unix_s))
}

/// Settlement holds only up to `s` (< `before`, what this reader had
/// acknowledged): re-send from there, or, when this log compacted part of
/// that range, persist the loud `settlement_behind` state.
fn rewind(reader: &mut Reader, s: u64, before: u64) -> Result<AckOutcome, ValidatorError> {
    match reader.rewind_acknowledged(s) {
        Ok(()) if s < before => Ok(AckOutcome::Rewound(s)),
        Ok(()) => Ok(AckOutcome::Unchanged),
        Err(ValidatorError::SettlementBehind {
            settlement_holds,
            missing_from,
            missing_to,
        }) => {
            let mut st = reader.sync_state().clone();
            st.settlement_behind = Some(Behind {
                settlement_holds,
                missing_from,
                missing_to,
            });
            reader.set_sync_state(st, true)?;
            Err(ValidatorError::SettlementBehind {
                settlement_holds,
                missing_from,
                missing_to,
            })
        }
        Err(e) => Err(e),
    }
}

/// What one contact did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SyncReport {
    /// Batches posted (including re-sends).
    pub batches_sent: u32,
    /// Acknowledged sequence after the upload.
    pub acked_up_to: u64,
    /// Records still unacknowledged.
    pub pending: u64,
    /// Bundle version installed, if a newer one came.
    pub bundle_installed: Option<u64>,
    /// Bundle version held after the sync.
    pub bundle_version: u64,
    /// Reader clock minus settlement clock, from the last signed answer.
    pub clock_offset_s: Option<i64>,
    /// The upload's error (the bundle is fetched anyway), stable code first.
    pub upload_error: Option<String>,
}

/// A reader shared between the decision loop and the sync agent. The agent
/// holds the lock only to build a batch from the log, to apply an answer
/// (one flush) or to install a bundle; never across network I/O.
pub type SharedReader = Arc<Mutex<Reader>>;

/// Short exclusive access to a reader (a shared one, or one borrowed for a
/// one-shot sync).
pub trait ReaderAccess: Send + Sync {
    /// Runs `f` with the reader.
    fn with<T>(&self, f: impl FnOnce(&mut Reader) -> T) -> T;
}

impl ReaderAccess for Mutex<Reader> {
    fn with<T>(&self, f: impl FnOnce(&mut Reader) -> T) -> T {
        f(&mut self.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl ReaderAccess for Mutex<&mut Reader> {
    fn with<T>(&self, f: impl FnOnce(&mut Reader) -> T) -> T {
        f(&mut self.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// A contact that failed: what it did before, and why.
#[derive(Debug)]
pub struct ContactFailure {
    /// What the contact did (batches sent, bundle installed, ...).
    pub report: SyncReport,
    /// The upload's error, else the bundle's.
    pub error: ValidatorError,
}

/// The batch the agent keeps sending until it is acknowledged.
#[derive(Clone, Debug, Default)]
pub struct InFlight {
    batch: Option<(Vec<u8>, u64, u64)>,
}

/// One contact: uploads every unacknowledged record (the batch in
/// `in_flight` first, byte for byte, if a previous attempt left one), then
/// fetches and installs the bundle whatever the upload did. Errors of the
/// upload are reported in [`SyncReport::upload_error`] and returned as
/// `Err` only after the bundle step; the upload state is saved either way.
pub async fn contact<A: ReaderAccess, L: Link>(
    reader: &A,
    link: &L,
    in_flight: &mut InFlight,
    now: &(dyn Fn() -> u64 + Send + Sync),
) -> Result<SyncReport, Box<ContactFailure>> {
    let mut report = SyncReport::default();
    let mut offset: Option<i64> = None;
    let mut contacted = false;
    let upload = upload_all(
        reader,
        link,
        in_flight,
        now,
        &mut report,
        &mut offset,
        &mut contacted,
    )
    .await;
    let bundle = fetch_bundle(reader, link, now, &mut report, &mut offset, &mut contacted).await;
    reader.with(|r| {
        finish_contact(
            r,
            now(),
            upload.err().or(bundle.err()),
            report,
            offset,
            contacted,
        )
    })
}

fn finish_contact(
    r: &mut Reader,
    t: u64,
    err: Option<ValidatorError>,
    mut report: SyncReport,
    offset: Option<i64>,
    contacted: bool,
) -> Result<SyncReport, Box<ContactFailure>> {
    let mut st = r.sync_state().clone();
    if contacted {
        st.last_contact_unix_s = Some(t);
    }
    if offset.is_some() {
        st.clock_offset_s = offset;
    }
    st.batches_sent += u64::from(report.batches_sent);
    match &err {
        None => {
            st.last_success_unix_s = Some(t);
            st.last_error = None;
            st.last_error_code = None;
        }
        Some(e) => {
            st.last_error = Some(e.to_string());
            st.last_error_code = Some(e.code().to_string());
            report.upload_error = Some(format!("{}: {e}", e.code()));
        }
    }
    let clock_warn = r.config().sync.clock_warn_s;
    if let Some(off) = offset {
        if off.unsigned_abs() > clock_warn {
            tracing::warn!(
                clock_offset_s = off,
                threshold_s = clock_warn,
                "reader clock disagrees with settlement's; fix the reader clock"
            );
        }
    }
    if let Err(e) = r.set_sync_state(st, false) {
        tracing::warn!(error = %e, "could not save the upload state");
    }
    report.acked_up_to = r.state().acked_up_to;
    report.pending = r.state().next_seq - 1 - r.state().acked_up_to;
    report.bundle_version = r.bundle_version();
    report.clock_offset_s = offset;
    match err {
        None => Ok(report),
        Some(error) => Err(Box::new(ContactFailure { report, error })),
    }
}

// Longer than a screen: the one-batch-in-flight loop and its exits (fork, behind, no progress) read as one state machine.
async fn upload_all<A: ReaderAccess, L: Link>(
    reader: &A,
    link: &L,
    in_flight: &mut InFlight,
    now: &(dyn Fn() -> u64 + Send + Sync),
    report: &mut SyncReport,
    offset: &mut Option<i64>,
    contacted: &mut bool,
) -> Result<(), ValidatorError> {
    reader.with(|r| {
        if let Some(e) = r.log_damage() {
            tracing::warn!(error = %e, "uploading what the damaged log still holds");
        }
        if let Some(f) = &r.sync_state().forked {
            return Err(ValidatorError::Forked {
                at: f.at_seq,
                why: f.why.clone(),
            });
        }
        if let Some(b) = &r.sync_state().settlement_behind {
            return Err(ValidatorError::SettlementBehind {
                settlement_holds: b.settlement_holds,
                missing_from: b.missing_from,
                missing_to: b.missing_to,
            });
        }
        Ok(())
    })?;
    // Each answer must move something; a server that keeps answering
    // without progress is left for the next contact.
    let mut idle_rounds = 0;
    let url = format!("{}{BATCH_TARGET}", link.describe());
    loop {
        let (bytes, first, last) = match &in_flight.batch {
            Some(b) => b.clone(),
            None => {
                let next = reader.with(|r| r.next_batch(r.config().storage.batch_max_records))?;
                match next {
                    Some(b) => {
                        in_flight.batch = Some(b.clone());
                        b
                    }
                    None => return Ok(()),
                }
            }
        };
        let sends = &mut report.batches_sent;
        let reply = send_signed(
            reader,
            "POST",
            BATCH_TARGET,
            &bytes,
            &url,
            now,
            sends,
            |t, a| link.post_batch(bytes.clone(), t, a),
        )
        .await?;
        *contacted = true;
        let applied = reader.with(|r| {
            apply_reply(r, &bytes, first, &reply, now()).map(|(o, t)| (o, t, r.state().acked_up_to))
        });
        let (outcome, server_time, acked) = match applied {
            Ok(v) => v,
            Err(ValidatorError::Forked { at, why }) => {
                in_flight.batch = None;
                show_fork(reader, link, at, now).await;
                return Err(ValidatorError::Forked { at, why });
            }
            Err(e) => return Err(e),
        };
        *offset = Some(now() as i64 - server_time as i64);
        // A verified answer settles this batch: the next one is built anew
        // from the acknowledged sequence.
        in_flight.batch = None;
        tracing::debug!(first, last, ?outcome, "batch answered");
        match outcome {
            AckOutcome::Advanced(_) | AckOutcome::Rewound(_) => idle_rounds = 0,
            AckOutcome::Unchanged => {
                idle_rounds += 1;
                if idle_rounds > 1 {
                    return Err(ValidatorError::Sync {
                        url,
                        why: format!("no progress: settlement keeps acknowledging {acked}"),
                    });
                }
            }
        }
    }
}

/// Sends settlement the records from `at` (where this reader found its
/// chain to differ) so that settlement records the fork as an incident
/// too; its answer changes nothing here.
async fn show_fork<A: ReaderAccess, L: Link>(
    reader: &A,
    link: &L,
    at: u64,
    now: &(dyn Fn() -> u64 + Send + Sync),
) {
    let batch = reader.with(|r| r.batch_from(at.max(1), r.config().storage.batch_max_records));
    if let Ok(Some((bytes, _, _))) = batch {
        let t = now();
        let Ok(auth) = reader.with(|r| r.sign_request("POST", BATCH_TARGET, &bytes, t)) else {
            return;
        };
        if let Err(e) = link.post_batch(bytes, t, auth).await {
            tracing::warn!(error = %e, "could not show settlement the forked records");
        }
    }
}

async fn fetch_bundle<A: ReaderAccess, L: Link>(
    reader: &A,
    link: &L,
    now: &(dyn Fn() -> u64 + Send + Sync),
    report: &mut SyncReport,
    offset: &mut Option<i64>,
    contacted: &mut bool,
) -> Result<(), ValidatorError> {
    let held = reader.with(|r| BundleQuery {
        reader_id: r.reader_id(),
        since: Some(r.bundle_version()),
        tariff_held: r.tariff_digest(),
    });
    match fetch_and_install(reader, link, held, now, report, offset, contacted).await {
        // A delta this reader cannot apply (another publisher's line, or a
        // base it does not hold exactly), or a tariff named by a digest it
        // does not hold: ask for the whole list and the tariff's bytes.
        Err(ValidatorError::Bundle(
            BundleError::DeltaBase { .. }
            | BundleError::DeltaBaseHash { .. }
            | BundleError::OtherPublisher { .. }
            | BundleError::TariffNotHeld { .. },
        )) if held.since != Some(0) || held.tariff_held.is_some() => {
            let whole = BundleQuery {
                since: Some(0),
                tariff_held: None,
                ..held
            };
            fetch_and_install(reader, link, whole, now, report, offset, contacted).await
        }
        other => other,
    }
}

/// One bundle request, and its install.
async fn fetch_and_install<A: ReaderAccess, L: Link>(
    reader: &A,
    link: &L,
    query: BundleQuery,
    now: &(dyn Fn() -> u64 + Send + Sync),
    report: &mut SyncReport,
    offset: &mut Option<i64>,
    contacted: &mut bool,
) -> Result<(), ValidatorError> {
    let target = query.target();
    let url = format!("{}{target}", link.describe());
    let mut sends = 0;
    let reply = send_signed(
        reader,
        "GET",
        &target,
        b"",
        &url,
        now,
        &mut sends,
        |t, a| link.get_bundle(query, t, a),
    )
    .await?;
    *contacted = true;
    if reply.status != 200 {
        return Err(ValidatorError::Sync {
            url,
            why: format!(
                "HTTP {}: {}",
                reply.status,
                String::from_utf8_lossy(&reply.body[..reply.body.len().min(512)])
            ),
        });
    }
    let t = now();
    reader.with(|r| {
        // The signed server time, whether or not the bundle is newer.
        let published =
            PublishedBundle::verify(&reply.body, r.root_key()).map_err(BundleError::from)?;
        *offset = Some(t as i64 - published.bundle.server_time_unix_s as i64);
        match r.install_verified(published, t) {
            Ok(v) => report.bundle_installed = Some(v),
            Err(ValidatorError::Bundle(BundleError::NotNewer { .. })) => {}
            Err(e) => return Err(e),
        }
        Ok(())
    })
}

/// One-shot sync (`fare-validator sync`): one contact over HTTP, then
/// compaction of what was acknowledged. Fails (non-zero exit) on any upload
/// error, a fork or a refused acknowledgement.
pub async fn sync(
    reader: &mut Reader,
    server_url: &str,
    now_unix_s: u64,
) -> Result<SyncReport, ValidatorError> {
    let timeout = Duration::from_millis(reader.config().sync.request_timeout_ms);
    let link = HttpLink::new(server_url, timeout)?;
    let mut in_flight = InFlight::default();
    let res = {
        let access = Mutex::new(&mut *reader);
        contact(&access, &link, &mut in_flight, &move || now_unix_s).await
    };
    match res {
        Ok(report) => {
            let _ = reader.compact(now_unix_s)?;
            Ok(report)
        }
        Err(f) => Err(f.error),
    }
}
