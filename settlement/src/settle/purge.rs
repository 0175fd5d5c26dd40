//! Privacy: dropping the ride history of settled rides past retention.

use crate::error::StoreError;
use crate::model::*;
use crate::store::typed::{BlockKind, CodeSighting, ResultBlock, RideBlock};
use crate::store::{Db, ResultBlocks, RideBlocks, Space, WriteLock, WriteSet};
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
    let cutoff_key: String = cutoff_day.chars().filter(|c| *c != '-').collect();
    if db.store().history_days(Space::Rides)?.is_some() {
        return purge_day_partitions(db, write_lock, cutoff_unix_s, &cutoff_key);
    }
    let mut summary = PurgeSummary::default();
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
    drop_sightings(db, &purged_codes, &mut w)?;
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

/// Rewrites each credential's sightings record once, without the
/// sightings of purged rides.
fn drop_sightings(
    db: &Db,
    purged: &HashMap<CredentialId, HashSet<RideId>>,
    w: &mut WriteSet,
) -> Result<(), StoreError> {
    for (cred, rides) in purged {
        let list = db.code_sightings(cred)?;
        let kept: Vec<CodeSighting> = list
            .iter()
            .filter(|s| !rides.contains(&s.ride))
            .copied()
            .collect();
        if kept.len() != list.len() {
            Db::put_code_sightings(w, cred, &kept);
        }
    }
    Ok(())
}

/// The purge on a backend with day partitions (PostgreSQL): whole days
/// are dropped, no row is deleted one by one. A ride or result block lives
/// in the partition of the UTC day of its newest ride, so a partition of a
/// day that ended before `cutoff_unix_s` holds only rides older than the
/// retention (rides of the cutoff's own UTC day wait for the next day's
/// purge); a ride partition still holding an unsettled ride is kept. Day
/// states go by their service day (before `cutoff_key`, `YYYYMMDD`). The
/// code sightings of the dropped results are rewritten and the partitions
/// dropped in one transaction.
fn purge_day_partitions(
    db: &Db,
    write_lock: &WriteLock,
    cutoff_unix_s: u64,
    cutoff_key: &str,
) -> Result<PurgeSummary, StoreError> {
    let store = db.store();
    let block_cutoff = crate::store::postgres::utc_day(cutoff_unix_s);
    let day_cutoff: i32 = cutoff_key.parse().unwrap_or(0);
    let old = |space: Space, cutoff: i32| -> Result<Vec<i32>, StoreError> {
        Ok(store
            .history_days(space)?
            .unwrap_or_default()
            .into_iter()
            .filter(|d| *d != crate::store::postgres::UNDATED && *d < cutoff)
            .collect())
    };
    let _w = write_lock.lock().unwrap_or_else(|p| p.into_inner());
    let mut summary = PurgeSummary::default();
    let mut drops = Vec::new();
    let mut settled: HashMap<u32, u64> = HashMap::new();
    for day in old(Space::Rides, block_cutoff)? {
        if all_settled(
            db,
            &store.history_day_entries(Space::Rides, day)?,
            &mut settled,
        )? {
            drops.push((Space::Rides, day));
        } else {
            tracing::warn!(day, "purge: ride partition kept, it holds unsettled rides");
        }
    }
    let mut purged_codes: HashMap<CredentialId, HashSet<RideId>> = HashMap::new();
    for day in old(Space::Results, block_cutoff)? {
        for (_, v) in store.history_day_entries(Space::Results, day)? {
            for r in ResultBlock::decode(&v)? {
                if let (Some(c), Some(_)) = (r.credential_id, r.device_seq) {
                    purged_codes.entry(c).or_default().insert(r.ride);
                }
                summary.rides += 1;
            }
        }
        drops.push((Space::Results, day));
    }
    for day in old(Space::Days, day_cutoff)? {
        summary.days += store.history_day_entries(Space::Days, day)?.len() as u64;
        drops.push((Space::Days, day));
    }
    let mut w = WriteSet::default();
    drop_sightings(db, &purged_codes, &mut w)?;
    store.commit_dropping_days(w, &drops)?;
    Ok(summary)
}

/// Whether every ride of these ride blocks is settled.
fn all_settled(
    db: &Db,
    blocks: &[(Vec<u8>, Vec<u8>)],
    settled: &mut HashMap<u32, u64>,
) -> Result<bool, StoreError> {
    for (k, v) in blocks {
        let Some(reader) = k.get(..4).and_then(|b| b.try_into().ok()) else {
            return Ok(false);
        };
        let reader = u32::from_be_bytes(reader);
        let newest = RideBlock::decode(v)?.iter().map(|r| r.seq).max();
        let seq = match settled.get(&reader) {
            Some(s) => *s,
            None => {
                let s = db.reader_state(reader)?.0.settled_seq;
                settled.insert(reader, s);
                s
            }
        };
        if newest.is_some_and(|n| n > seq) {
            return Ok(false);
        }
    }
    Ok(true)
}
