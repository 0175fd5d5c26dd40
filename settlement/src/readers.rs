//! The fleet as settlement sees it (`GET /v1/readers`) and the operator's
//! side of reader incidents (`POST /v1/incidents/resolve`).
//!
//! A `sequence_gap` or `chain_fork` incident stays **open** until an
//! operator resolves it; resolutions are kept beside the incidents (meta
//! values `incident_resolved/<reader>/<kind>/<seq>`), so the incident log
//! itself is never rewritten. Recovery of a forked reader is documented in
//! settlement/README.md ("Forked reader").

use crate::acks::{self, ReaderContact};
use crate::error::{ApiError, ErrorCode, StoreError};
use crate::model::Incident;
use crate::store::{Db, WriteSet};

/// Incident kinds that stay open until an operator resolves them.
pub const OPEN_UNTIL_RESOLVED: &[&str] = &["sequence_gap", "chain_fork"];
/// Longest resolution note, bytes.
pub const MAX_NOTE_BYTES: usize = 1024;

/// An operator's resolution of an incident.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resolve {
    /// Reader.
    pub reader_id: u32,
    /// Incident kind (`sequence_gap`, `chain_fork`).
    pub kind: String,
    /// Incident sequence.
    pub seq: u64,
    /// What was done (e.g. "re-provisioned as reader 1007; tail reviewed").
    pub note: String,
}

/// A stored resolution.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Resolution {
    /// What was done.
    pub note: String,
    /// Settlement time of the resolution.
    pub at_unix_s: u64,
}

fn resolution_name(reader_id: u32, kind: &str, seq: u64) -> String {
    format!("incident_resolved/{reader_id}/{kind}/{seq}")
}

/// Open incidents of a reader (unresolved gaps and forks), oldest first.
pub fn open_incidents(db: &Db, reader_id: u32) -> Result<Vec<Incident>, StoreError> {
    let mut out = Vec::new();
    for i in db.incidents()? {
        if i.reader_id != reader_id || !OPEN_UNTIL_RESOLVED.contains(&i.kind.as_str()) {
            continue;
        }
        let r: Option<Resolution> = db.meta(&resolution_name(i.reader_id, &i.kind, i.seq))?;
        if r.is_none() {
            out.push(i);
        }
    }
    Ok(out)
}

/// Resolves an incident. Refused (`unknown_incident`) when no such incident
/// exists; resolving twice keeps the first resolution.
pub fn resolve(db: &Db, req: &Resolve, now_unix_s: u64) -> Result<(Resolution, bool), ApiError> {
    if req.note.len() > MAX_NOTE_BYTES {
        return Err(ApiError::of(
            ErrorCode::InvalidNote,
            format!("note is {} bytes, at most {MAX_NOTE_BYTES}", req.note.len()),
        ));
    }
    if req.kind == "disputed_code" {
        // Closing it here would leave the fare in suspense for ever: a
        // dispute is resolved by awarding its fare.
        return Err(ApiError::of(
            ErrorCode::InvalidField,
            "a disputed_code incident is resolved with POST /v1/disputes/{reader_id}/{reader_seq}/resolve (it awards the held fare)".to_string(),
        ));
    }
    let exists = db
        .incidents()?
        .iter()
        .any(|i| i.reader_id == req.reader_id && i.kind == req.kind && i.seq == req.seq);
    if !exists {
        return Err(ApiError::of(
            ErrorCode::UnknownIncident,
            format!(
                "no {} incident at sequence {} for reader {}: see GET /v1/reports/incidents",
                req.kind, req.seq, req.reader_id
            ),
        ));
    }
    let name = resolution_name(req.reader_id, &req.kind, req.seq);
    if let Some(r) = db.meta::<Resolution>(&name)? {
        return Ok((r, false));
    }
    let r = Resolution {
        note: req.note.clone(),
        at_unix_s: now_unix_s,
    };
    let mut w = WriteSet::default();
    Db::put_meta(&mut w, &name, &r);
    db.commit(w)?;
    Ok((r, true))
}

/// The bundle a reader holds, as its own signed bundle fetches tell
/// (`since` is the version it holds), and the last one served to it.
/// Only a fetch the reader signed is recorded: an operator fetching a
/// reader's bundle says nothing about what is installed on the reader.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HeldBundle {
    /// Bundle version the reader said it holds (`since` of its last signed
    /// fetch; 0: none installed).
    pub held_version: u64,
    /// When it said so (settlement time, unix s).
    pub reported_unix_s: u64,
    /// Server time of the bundle it holds: when settlement first served
    /// that version to this reader (a reader installs only newer versions,
    /// so that first copy is the one it kept). `None` when settlement did
    /// not serve it this version (installed from a file, or served before
    /// this was recorded): its age is then unknown.
    pub held_served_unix_s: Option<u64>,
    /// Bundle version last served to it.
    pub served_version: u64,
    /// When that version was first served to it.
    pub served_first_unix_s: u64,
}

impl HeldBundle {
    /// What is known after a signed fetch at `since` answered with version
    /// `served` at `now`.
    pub fn after_fetch(&self, since: u64, served: u64, now: u64) -> HeldBundle {
        let held_served_unix_s = if since != 0 && since == self.served_version {
            Some(self.served_first_unix_s)
        } else if since != 0 && since == self.held_version {
            self.held_served_unix_s
        } else {
            None
        };
        let (served_version, served_first_unix_s) = if served == self.served_version {
            (served, self.served_first_unix_s)
        } else {
            (served, now)
        };
        HeldBundle {
            held_version: since,
            reported_unix_s: now,
            held_served_unix_s,
            served_version,
            served_first_unix_s,
        }
    }

    pub(crate) fn set_gauges(&self, reader_id: u32) {
        let id = reader_id.to_string();
        metrics::gauge!("settlement_reader_bundle_version", "reader" => id.clone())
            .set(self.held_version as f64);
        if let Some(t) = self.held_served_unix_s {
            metrics::gauge!("settlement_reader_bundle_served_unix_s", "reader" => id).set(t as f64);
        }
    }
}

fn held_bundle_name(reader_id: u32) -> String {
    format!("reader_bundle/{reader_id}")
}

/// What reader `reader_id` last reported holding, if it ever signed a fetch.
pub fn held_bundle(db: &Db, reader_id: u32) -> Result<Option<HeldBundle>, StoreError> {
    db.meta(&held_bundle_name(reader_id))
}

/// Queues on `w` a bundle fetch the reader signed: it holds `since`
/// (`None`: 0) and was served version `served` at `now`. Returns the record
/// as committed with `w`, for its gauges. The caller holds the write lock.
pub fn queue_bundle_fetch(
    db: &Db,
    w: &mut WriteSet,
    reader_id: u32,
    since: Option<u64>,
    served: u64,
    now: u64,
) -> Result<HeldBundle, StoreError> {
    let before = held_bundle(db, reader_id)?.unwrap_or_default();
    let after = before.after_fetch(since.unwrap_or(0), served, now);
    Db::put_meta(w, &held_bundle_name(reader_id), &after);
    Ok(after)
}

/// One reader's line in `GET /v1/readers`.
pub fn overview(db: &Db, reader: &crate::model::Reader) -> Result<serde_json::Value, StoreError> {
    let (s, _) = db.reader_state(reader.reader_id)?;
    let contact: Option<ReaderContact> = acks::contact(db, reader.reader_id)?;
    let open = open_incidents(db, reader.reader_id)?;
    let bundle = held_bundle(db, reader.reader_id)?;
    if let Some(b) = &bundle {
        b.set_gauges(reader.reader_id);
    }
    let id = reader.reader_id.to_string();
    metrics::gauge!("settlement_reader_acked_seq", "reader" => id.clone()).set(s.acked_seq as f64);
    metrics::gauge!("settlement_reader_open_incidents", "reader" => id).set(open.len() as f64);
    Ok(serde_json::json!({
        "reader": reader,
        "acked_seq": s.acked_seq,
        "settled_seq": s.settled_seq,
        "head_hash": hex::encode(s.head_hash),
        "last_contact_unix_s": contact.as_ref().map(|c| c.last_contact_unix_s),
        "clock_offset_s": contact.as_ref().and_then(|c| c.clock_offset_s),
        "open_incident": open.first(),
        "open_incidents": open.len(),
        "bundle": bundle,
    }))
}

/// How far a signed request's time may be from settlement's clock (s).
/// Readers correct their clock by the offset measured on their last
/// signed answer, so only a reader that never reached settlement and whose
/// clock is far off is refused (`request_stale`, its status names it).
pub const REQUEST_SKEW_S: u64 = 300;
/// Requests remembered per reader for replay detection (those within
/// [`REQUEST_SKEW_S`]); past this a reader is refused with
/// `request_replayed` until older ones age out: about 3 requests a second,
/// sustained for the whole window, far above a reader's one batch in flight.
pub const MAX_RECENT_REQUESTS_PER_READER: usize = 1024;

/// The signed requests each reader made within the time window, so a
/// captured one cannot be played again. In memory: after a restart a
/// request signed before it could be replayed once inside the window; it
/// reads (a bundle any replayer already saw) or re-sends an idempotent batch.
#[derive(Debug, Default)]
pub struct RecentRequests {
    seen: std::sync::Mutex<std::collections::HashMap<u32, std::collections::BTreeSet<(u64, u64)>>>,
}

/// A request as a reader signed it (SPEC §9).
#[derive(Clone, Copy, Debug)]
pub struct SignedRequest<'a> {
    /// The `X-Reader-Auth` header's value.
    pub header: &'a str,
    /// The reader the route is about (a bundle's id), if any.
    pub route_reader: Option<u32>,
    /// HTTP method.
    pub method: &'a str,
    /// Path and query as received.
    pub target: &'a str,
    /// Body as received.
    pub body: &'a [u8],
}

/// Checks a request's `X-Reader-Auth` against the registered key of the
/// reader it names (signature first), settlement's clock and the requests
/// already seen. Returns the signing reader.
pub fn check_signed_request(
    db: &Db,
    recent: &RecentRequests,
    req: SignedRequest<'_>,
    now_unix_s: u64,
) -> Result<u32, ApiError> {
    let SignedRequest {
        header,
        route_reader,
        method,
        target,
        body,
    } = req;
    let bad = |m: String| ApiError::of(ErrorCode::RequestBadSignature, m);
    let auth =
        fare_credential::RequestAuth::parse_header(header).map_err(|e| bad(e.to_string()))?;
    if let Some(id) = route_reader.filter(|&id| id != auth.reader_id) {
        return Err(bad(format!(
            "signed by reader {} for reader {id}'s route",
            auth.reader_id
        )));
    }
    let reader = match db.reader(auth.reader_id)? {
        Some(r) => r,
        None => return Err(bad(format!("reader {} is not provisioned", auth.reader_id))),
    };
    let key = fare_credential::keys::parse_public_key(&reader.public_key).map_err(|e| {
        bad(format!(
            "registered key of reader {}: {e}",
            reader.reader_id
        ))
    })?;
    auth.verify_v1(&key, method, target, body).map_err(|_| {
        bad(format!(
            "signature does not verify with reader {}'s registered key",
            reader.reader_id
        ))
    })?;
    if auth.time_unix_s.abs_diff(now_unix_s) > REQUEST_SKEW_S {
        return Err(ApiError::of(
            ErrorCode::RequestStale,
            format!(
                "signed at {} but settlement's clock is {now_unix_s} (window ±{REQUEST_SKEW_S} s): fix the reader clock",
                auth.time_unix_s
            ),
        ));
    }
    recent.admit(auth.reader_id, auth.time_unix_s, auth.nonce, now_unix_s)?;
    Ok(auth.reader_id)
}

impl RecentRequests {
    /// Records `(time, nonce)` for `reader`, refusing one seen before.
    fn admit(&self, reader: u32, time: u64, nonce: u64, now: u64) -> Result<(), ApiError> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let set = seen.entry(reader).or_default();
        let oldest = now.saturating_sub(REQUEST_SKEW_S);
        while set.first().is_some_and(|&(t, _)| t < oldest) {
            set.pop_first();
        }
        let replayed = |m: String| ApiError::of(ErrorCode::RequestReplayed, m);
        if set.contains(&(time, nonce)) {
            return Err(replayed(format!(
                "request (time {time}, nonce {nonce}) of reader {reader} was already accepted"
            )));
        }
        if set.len() >= MAX_RECENT_REQUESTS_PER_READER {
            return Err(replayed(format!(
                "reader {reader} sent over {MAX_RECENT_REQUESTS_PER_READER} requests within {REQUEST_SKEW_S} s"
            )));
        }
        set.insert((time, nonce));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::HeldBundle;

    #[test]
    fn the_held_bundle_is_dated_by_its_first_serving() {
        // First fetch: nothing held, version 5 served at 100.
        let b = HeldBundle::default().after_fetch(0, 5, 100);
        assert_eq!((b.held_version, b.held_served_unix_s), (0, None));
        assert_eq!((b.served_version, b.served_first_unix_s), (5, 100));
        // It installed 5: dated by the serving at 100, not by this fetch.
        let b = b.after_fetch(5, 5, 400);
        assert_eq!((b.held_version, b.held_served_unix_s), (5, Some(100)));
        assert_eq!((b.reported_unix_s, b.served_first_unix_s), (400, 100));
        // 6 is served but not installed: still 5, still dated 100.
        let b = b.after_fetch(5, 6, 500).after_fetch(5, 6, 600);
        assert_eq!((b.held_version, b.held_served_unix_s), (5, Some(100)));
        assert_eq!((b.served_version, b.served_first_unix_s), (6, 500));
        let b = b.after_fetch(6, 6, 700);
        assert_eq!((b.held_version, b.held_served_unix_s), (6, Some(500)));
        // A version settlement never served it: age unknown.
        let b = b.after_fetch(3, 6, 800);
        assert_eq!((b.held_version, b.held_served_unix_s), (3, None));
    }
}
