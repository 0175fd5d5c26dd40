//! Settlement runs: load a chunk of unsettled rides, re-verify, run the pure
//! core, commit the chunk's writes and cursor advance atomically, repeat.
//! Resumable (a crash loses at most the chunk in flight, which is redone)
//! and idempotent (a second run finds nothing to settle and changes nothing).

use crate::core::{days_to_load, passenger_account, service_day, settle_chunk, Facts, RideIn};
use crate::error::StoreError;
use crate::model::*;
use crate::reverify::{reverify, CodeToVerify};
use crate::store::{
    typed::{code_key, CodeSighting},
    Db, ResultBlocks, Space, WriteSet,
};
use fare_credential::{CredentialId, Policy, RideRecord, TrustList};
use fare_tariff::{Date, Tariff};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

/// What a run did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RunSummary {
    /// Rides settled in this run.
    pub rides: u64,
    /// Chunks committed.
    pub chunks: u64,
    /// Rides per outcome code.
    pub outcomes: BTreeMap<String, u64>,
    /// Postings made.
    pub postings: u64,
    /// Fraud events found.
    pub fraud_events: u64,
    /// Reader incidents found.
    pub incidents: u64,
}

/// Inputs of a run that are not in the database.
#[derive(Debug)]
pub struct SettleContext<'a> {
    /// Tariff.
    pub tariff: &'a Tariff,
    /// Issuer keys (all, with their windows).
    pub trust: &'a TrustList,
    /// Ride code policy.
    pub policy: Policy,
    /// Rides per chunk.
    pub chunk_rides: usize,
    /// Serialises writers of this process (ingest, accounts, settlement).
    pub write_lock: &'a Mutex<()>,
}

/// Settles everything ingested so far.
pub fn run(db: &Db, ctx: &SettleContext<'_>, now_unix_s: u64) -> Result<RunSummary, StoreError> {
    let mut summary = RunSummary::default();
    loop {
        let _w = ctx.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let n = settle_one_chunk(db, ctx, now_unix_s, &mut summary)?;
        if n == 0 {
            return Ok(summary);
        }
        summary.chunks += 1;
    }
}

fn decode(b: &[u8]) -> Result<RideRecord, StoreError> {
    RideRecord::decode_v1(b).map_err(|e| StoreError::Corrupt {
        what: "ride",
        why: e.to_string(),
    })
}

fn settle_one_chunk(
    db: &Db,
    ctx: &SettleContext<'_>,
    now: u64,
    summary: &mut RunSummary,
) -> Result<u64, StoreError> {
    // 1. Collect up to chunk_rides unsettled rides, reader by reader.
    let mut records: Vec<RideRecord> = Vec::new();
    let mut operators: HashMap<u32, String> = HashMap::new();
    let mut cursor_updates: Vec<(u32, Option<Vec<u8>>, ReaderState)> = Vec::new();
    for reader in db.readers()? {
        if records.len() >= ctx.chunk_rides {
            break;
        }
        let (state, raw) = db.reader_state(reader.reader_id)?;
        if state.settled_seq >= state.acked_seq {
            continue;
        }
        let room = (ctx.chunk_rides - records.len()) as u64;
        let to = state.acked_seq.min(state.settled_seq + room);
        for b in db.ride_bytes(reader.reader_id, state.settled_seq + 1, to)? {
            records.push(decode(&b)?);
        }
        operators.insert(reader.reader_id, reader.operator.clone());
        let mut new_state = state.clone();
        new_state.settled_seq = to;
        cursor_updates.push((reader.reader_id, raw, new_state));
    }
    if records.is_empty() {
        return Ok(0);
    }

    // 2. Re-verify (all cores).
    let codes: Vec<CodeToVerify<'_>> = records
        .iter()
        .map(|r| CodeToVerify {
            code: &r.code,
            reader_time_unix_s: r.reader_time_unix_s,
        })
        .collect();
    let verdicts = reverify(&codes, ctx.trust, &ctx.policy);
    let rides: Vec<RideIn> = records
        .iter()
        .map(|r| RideIn {
            ride: RideId {
                reader_id: r.reader_id,
                reader_seq: r.reader_seq,
            },
            reader_time_unix_s: r.reader_time_unix_s,
            operator: operators.get(&r.reader_id).cloned().unwrap_or_default(),
            route: r.route.clone(),
        })
        .collect();

    // 3. Load the facts the core needs.
    let mut credentials: HashMap<CredentialId, CredentialRecord> = HashMap::new();
    let mut seen_codes = HashMap::new();
    let mut sightings: HashMap<CredentialId, Vec<CodeSighting>> = HashMap::new();
    let mut account_days: HashMap<String, (Date, Date)> = HashMap::new();
    for (v, ride) in verdicts.iter().zip(&rides) {
        let Ok(vr) = v else { continue };
        if let std::collections::hash_map::Entry::Vacant(e) = credentials.entry(vr.credential_id) {
            if let Some(c) = db.credential(&vr.credential_id)? {
                e.insert(c);
            }
        }
        let Some(c) = credentials.get(&vr.credential_id) else {
            continue;
        };
        // One read per credential (its sightings record), not one per ride.
        if let std::collections::hash_map::Entry::Vacant(e) = sightings.entry(vr.credential_id) {
            let list = db.code_sightings(&vr.credential_id)?;
            for s in &list {
                seen_codes.insert((vr.credential_id, s.device_seq), s.ride);
            }
            e.insert(list);
        }
        let day = service_day(ctx.tariff, ride.reader_time_unix_s);
        let need = days_to_load(ctx.tariff, day);
        let (lo, hi) = (need[0], need[need.len() - 1]);
        account_days
            .entry(c.account_id.clone())
            .and_modify(|(a, b)| {
                *a = (*a).min(lo);
                *b = (*b).max(hi);
            })
            .or_insert((lo, hi));
    }
    let mut accounts = HashMap::new();
    let mut balances = HashMap::new();
    let mut days = HashMap::new();
    for (acc, (lo, hi)) in &account_days {
        if let Some(a) = db.account(acc)? {
            accounts.insert(acc.clone(), a);
        }
        balances.insert(acc.clone(), db.balance(&passenger_account(acc))?);
        for (d, st) in db.days(acc, &lo.to_string(), &hi.to_string())? {
            if let Ok(date) = d.parse::<Date>() {
                days.insert((acc.clone(), date), st);
            }
        }
    }
    let facts = Facts {
        tariff: ctx.tariff,
        now_unix_s: now,
        credentials: &credentials,
        accounts: &accounts,
        balances: &balances,
        seen_codes: &seen_codes,
        days: &days,
    };

    // 4. The pure core.
    let out = settle_chunk(&rides, &verdicts, &facts);

    // 5. One atomic write set.
    let mut w = WriteSet::default();
    // Re-rated rides of earlier chunks first (as stored), then this chunk's
    // results; every touched block is written once.
    let mut blocks = ResultBlocks::default();
    for (ride, outcome, amount) in &out.result_updates {
        if let Some(r) = blocks.get_mut(db, *ride)? {
            if r.outcome == *outcome && r.amount_minor == *amount {
                continue;
            }
            r.outcome = *outcome;
            r.amount_minor = *amount;
            if r.result != "over_credit_limit" {
                r.result = outcome.code().into();
            }
        }
    }
    for r in out.results {
        *summary.outcomes.entry(r.result.clone()).or_insert(0) += 1;
        blocks.upsert(db, r)?;
    }
    blocks.write(&mut w);
    let mut ledger_balances: HashMap<String, i64> = HashMap::new();
    let touched: HashSet<String> = out
        .postings
        .iter()
        .flat_map(|p| [p.debit.to_string(), p.credit.to_string()])
        .collect();
    for acc in touched {
        let b = db.balance(&acc)?;
        ledger_balances.insert(acc, b);
    }
    Db::put_postings(&mut w, &out.postings, &mut ledger_balances);
    Db::put_balances(&mut w, &ledger_balances);
    for (acc, day, st) in &out.days {
        Db::put_day(&mut w, acc, &day.to_string(), st);
    }
    // New first sightings merged into each credential's record (the core
    // only reports codes not seen before, so nothing is replaced).
    let mut touched_creds: HashSet<CredentialId> = HashSet::new();
    for ((cred, seq), ride) in &out.codes {
        sightings.entry(*cred).or_default().push(CodeSighting {
            device_seq: *seq,
            ride: *ride,
        });
        touched_creds.insert(*cred);
    }
    for cred in touched_creds {
        let list = sightings.get_mut(&cred).expect("just inserted");
        list.sort_by_key(|s| s.device_seq);
        list.dedup_by_key(|s| s.device_seq);
        Db::put_code_sightings(&mut w, &cred, list);
    }
    for f in &out.fraud {
        let mut k = code_key(&f.credential_id, f.device_seq);
        k.extend_from_slice(&f.duplicate_ride.key());
        w.put(Space::Fraud, k, crate::store::typed::enc("fraud_event", f));
    }
    for i in &out.incidents {
        Db::put_incident(&mut w, i);
    }
    // Revocation status of the accounts whose balance moved.
    for (acc, a) in &accounts {
        let bal = ledger_balances
            .get(&passenger_account(acc))
            .copied()
            .unwrap_or(balances[acc]);
        set_revoked(&mut w, a, bal);
    }
    for (id, raw, st) in cursor_updates {
        Db::put_reader_state(&mut w, id, raw, &st);
    }
    db.commit(w)?;
    summary.rides += records.len() as u64;
    summary.postings += out.postings.len() as u64;
    summary.fraud_events += out.fraud.len() as u64;
    summary.incidents += out.incidents.len() as u64;
    metrics::counter!("settlement_settled_rides_total").increment(records.len() as u64);
    Ok(records.len() as u64)
}

/// True when the account must be deny-listed: frozen, or debt above its limit.
pub fn is_revoked(a: &Account, balance_minor: i64) -> bool {
    a.frozen || fare_ledger::over_credit_limit(balance_minor, a.credit_limit_minor)
}

/// Queues the account's revocation flag.
pub fn set_revoked(w: &mut WriteSet, a: &Account, balance_minor: i64) {
    if is_revoked(a, balance_minor) {
        w.put(Space::Revoked, a.account_id.as_bytes().to_vec(), Vec::new());
    } else {
        w.delete(Space::Revoked, a.account_id.as_bytes().to_vec());
    }
}

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
    write_lock: &Mutex<()>,
    cutoff_unix_s: u64,
    cutoff_day: &str,
) -> Result<PurgeSummary, StoreError> {
    let mut summary = PurgeSummary::default();
    let cutoff_key: String = cutoff_day.chars().filter(|c| *c != '-').collect();
    let _w = write_lock.lock().unwrap_or_else(|p| p.into_inner());
    let mut w = WriteSet::default();
    let mut purged_codes: HashMap<CredentialId, HashSet<RideId>> = HashMap::new();
    let mut blocks = ResultBlocks::default();
    for r in db.results()? {
        if r.reader_time_unix_s >= cutoff_unix_s {
            continue;
        }
        let (state, _) = db.reader_state(r.ride.reader_id)?;
        if r.ride.reader_seq > state.settled_seq {
            continue;
        }
        w.delete(Space::Rides, r.ride.key().to_vec());
        blocks.remove(db, r.ride)?;
        if let (Some(c), Some(_)) = (r.credential_id, r.device_seq) {
            purged_codes.entry(c).or_default().insert(r.ride);
        }
        summary.rides += 1;
    }
    blocks.write(&mut w);
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
    for (k, _) in db.store().scan(Space::Days, b"", None, usize::MAX)? {
        let day = k.rsplit(|b| *b == 0).next().unwrap_or(&[]);
        if day.len() == 8 && day < cutoff_key.as_bytes() {
            w.delete(Space::Days, k.clone());
            summary.days += 1;
        }
    }
    db.commit(w)?;
    Ok(summary)
}
