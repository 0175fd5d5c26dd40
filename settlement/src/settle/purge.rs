//! Privacy: dropping the ride history of settled rides past retention.

use crate::error::StoreError;
use crate::model::*;
use crate::store::{typed::CodeSighting, Db, ResultBlocks, RideBlocks, Space, WriteLock, WriteSet};
use fare_credential::CredentialId;
use std::collections::{HashMap, HashSet};

/// What a purge removed.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PurgeSummary {
    /// Rides (raw records, results and code sightings) removed.
    pub rides: u64,
    /// Account day states removed.
    pub days: u64,
}

/// Privacy: deletes the ride history of settled rides whose reader time is
/// before `cutoff_unix_s` (raw ride records with their codes, results,
/// code sightings) and account day states of service days before
/// `cutoff_day`. Ledger postings (ride ids and amounts), fraud events and
/// incidents are kept. A late ride for a purged day is rated without the
/// purged rides, which is why the retention must exceed any upload delay.
pub fn purge(
    db: &Db,
    write_lock: &WriteLock,
    cutoff_unix_s: u64,
    cutoff_day: &str,
) -> Result<PurgeSummary, StoreError> {
    let mut summary = PurgeSummary::default();
    let cutoff_key: String = cutoff_day.chars().filter(|c| *c != '-').collect();
    let _w = write_lock.lock().unwrap_or_else(|p| p.into_inner());
    let mut w = WriteSet::default();
    let mut purged_codes: HashMap<CredentialId, HashSet<RideId>> = HashMap::new();
    let mut blocks = ResultBlocks::default();
    let mut ride_blocks = RideBlocks::default();
    for r in db.results()? {
        if r.reader_time_unix_s >= cutoff_unix_s {
            continue;
        }
        let (state, _) = db.reader_state(r.ride.reader_id)?;
        if r.ride.reader_seq > state.settled_seq {
            continue;
        }
        ride_blocks.remove(db, r.ride)?;
        blocks.remove(db, r.ride)?;
        if let (Some(c), Some(_)) = (r.credential_id, r.device_seq) {
            purged_codes.entry(c).or_default().insert(r.ride);
        }
        summary.rides += 1;
    }
    blocks.write(&mut w);
    ride_blocks.write(&mut w);
    // Each credential's sightings record is rewritten once, without the
    // sightings of purged rides.
    for (cred, rides) in &purged_codes {
        let list = db.code_sightings(cred)?;
        let kept: Vec<CodeSighting> = list
            .iter()
            .filter(|s| !rides.contains(&s.ride))
            .copied()
            .collect();
        if kept.len() != list.len() {
            Db::put_code_sightings(&mut w, cred, &kept);
        }
    }
    for (k, _) in db.scan_paged(Space::Days, b"")? {
        let day = k.rsplit(|b| *b == 0).next().unwrap_or(&[]);
        if day.len() == 8 && day < cutoff_key.as_bytes() {
            w.delete(Space::Days, k.clone());
            summary.days += 1;
        }
    }
    db.commit(w)?;
    Ok(summary)
}
