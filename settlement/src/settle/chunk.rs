//! One chunk's write set, in short steps: load the facts the pure core
//! needs, run it, then turn its output into writes (results, disputes,
//! postings and balances, day states, sightings, fraud events, incidents,
//! revocations, cursors). Everything is read after the previous chunk's
//! commit and under the write lock, and committed in one atomic write set.

use super::{CursorUpdate, PhaseTimes, Prepared, RunSummary, SettleContext, POSTING_CHUNK_META};
use crate::core::{
    days_to_load, passenger_account, ride_key_str, service_day, settle_chunk, DisputedSighting,
    Facts, Output, RideIn,
};
use crate::error::StoreError;
use crate::model::*;
use crate::reverify::Verdict;
use crate::store::{
    typed::{code_key, enc, result_block_key, CodeSighting},
    Db, ResultBlocks, Space, WriteSet,
};
use fare_credential::CredentialId;
use fare_ledger::DisputeSide;
use fare_tariff::{Date, Tariff};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

/// The stored facts of a chunk, owned ([`Facts`] borrows them).
#[derive(Default)]
struct Loaded {
    credentials: HashMap<CredentialId, CredentialRecord>,
    /// Codes already settled: the first ride holding each.
    seen_codes: HashMap<(CredentialId, u32), RideId>,
    /// Each credential's stored sightings (new ones are merged in).
    sightings: HashMap<CredentialId, Vec<CodeSighting>>,
    accounts: HashMap<String, Account>,
    /// Passenger balances by account id, before the chunk.
    balances: HashMap<String, i64>,
    days: HashMap<(String, Date), DayState>,
    operators: HashMap<u32, String>,
}

impl Loaded {
    fn facts<'a>(&'a self, tariff: &'a Tariff, now_unix_s: u64) -> Facts<'a> {
        Facts {
            tariff,
            now_unix_s,
            credentials: &self.credentials,
            accounts: &self.accounts,
            balances: &self.balances,
            seen_codes: &self.seen_codes,
            days: &self.days,
            operators: &self.operators,
        }
    }
}

/// Settles a prepared chunk: loads the facts, runs the pure core and
/// returns the chunk's whole write set (cursors included).
pub(super) fn build_chunk(
    db: &Db,
    ctx: &SettleContext<'_>,
    now: u64,
    prepared: &Prepared,
    cursor_updates: Vec<CursorUpdate>,
    times: &mut PhaseTimes,
) -> Result<(WriteSet, RunSummary), StoreError> {
    let mut t = Instant::now();
    let mut lap = |slot: &mut Duration| {
        let now = Instant::now();
        *slot += now - t;
        t = now;
    };
    let Prepared {
        verdicts,
        rides,
        cred_ids,
        ..
    } = prepared;
    let mut loaded = load_credentials(db, cred_ids)?;
    load_accounts(db, ctx.tariff, verdicts, rides, &mut loaded)?;
    loaded.operators = db
        .readers()?
        .into_iter()
        .map(|r| (r.reader_id, r.operator))
        .collect();
    lap(&mut times.load_facts);

    let mut out = settle_chunk(rides, verdicts, &loaded.facts(ctx.tariff, now));
    lap(&mut times.core);

    let mut w = WriteSet::default();
    let mut stats = RunSummary {
        rides: rides.len() as u64,
        chunks: 1,
        postings: out.postings.len() as u64,
        fraud_events: out.fraud.len() as u64,
        incidents: out.incidents.len() as u64,
        ..RunSummary::default()
    };
    let holds = write_results(db, &mut w, &mut out, now, &mut stats)?;
    let ledger_balances = write_postings(db, &mut w, &out.postings, &holds, &loaded.balances)?;
    write_days(&mut w, &out);
    write_sightings(&mut w, &out, &mut loaded.sightings);
    write_fraud_and_incidents(&mut w, &out);
    write_revocations(db, &mut w, &loaded, &ledger_balances)?;
    for (id, raw, st) in cursor_updates {
        Db::put_reader_state(&mut w, id, raw, &st);
    }
    lap(&mut times.build_writes);
    Ok((w, stats))
}

/// Each distinct credential's record and sightings: one batched read of
/// each kind for the whole chunk ([`Db::credentials_many`],
/// [`Db::code_sightings_many`]), not one per credential or ride.
fn load_credentials(db: &Db, cred_ids: &[CredentialId]) -> Result<Loaded, StoreError> {
    // Two statements at once, on plain threads (they wait for the
    // database; the rayon pool is busy re-verifying the next chunk).
    let (creds, sightings) = std::thread::scope(|s| {
        let creds = s.spawn(|| db.credentials_many(cred_ids));
        let sightings = db.code_sightings_many(cred_ids);
        (join(creds), sightings)
    });
    let mut loaded = Loaded::default();
    for ((id, c), list) in cred_ids.iter().zip(creds?).zip(sightings?) {
        let Some(c) = c else { continue };
        loaded.credentials.insert(*id, c);
        for s in &list {
            loaded.seen_codes.insert((*id, s.device_seq), s.ride);
        }
        loaded.sightings.insert(*id, list);
    }
    Ok(loaded)
}

/// The result of a scoped reading thread (its panic goes on here).
fn join<T>(h: std::thread::ScopedJoinHandle<'_, T>) -> T {
    h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
}

/// The range of service days each account of the chunk needs (the days its
/// rides can change and the 6 before them).
fn account_day_ranges(
    tariff: &Tariff,
    verdicts: &[Verdict],
    rides: &[RideIn],
    credentials: &HashMap<CredentialId, CredentialRecord>,
) -> HashMap<String, (Date, Date)> {
    let mut account_days: HashMap<String, (Date, Date)> = HashMap::new();
    let mut day_ranges: HashMap<Date, (Date, Date)> = HashMap::new();
    for (v, ride) in verdicts.iter().zip(rides) {
        let Ok(vr) = v else { continue };
        let Some(c) = credentials.get(&vr.credential_id) else {
            continue;
        };
        let day = service_day(tariff, ride.reader_time_unix_s);
        // A chunk spans few service days: their ranges are computed once.
        let (lo, hi) = *day_ranges.entry(day).or_insert_with(|| {
            let need = days_to_load(tariff, day);
            (need[0], need[need.len() - 1])
        });
        match account_days.get_mut(c.account_id.as_str()) {
            Some((a, b)) => {
                *a = (*a).min(lo);
                *b = (*b).max(hi);
            }
            None => {
                account_days.insert(c.account_id.clone(), (lo, hi));
            }
        }
    }
    account_days
}

/// Each account's record, balance and day states: one batched read of each
/// kind for the whole chunk (the three in parallel).
fn load_accounts(
    db: &Db,
    tariff: &Tariff,
    verdicts: &[Verdict],
    rides: &[RideIn],
    loaded: &mut Loaded,
) -> Result<(), StoreError> {
    let ranges: Vec<(String, (Date, Date))> =
        account_day_ranges(tariff, verdicts, rides, &loaded.credentials)
            .into_iter()
            .collect();
    let ids: Vec<String> = ranges.iter().map(|(acc, _)| acc.clone()).collect();
    let ledger: Vec<String> = ids.iter().map(|acc| passenger_account(acc)).collect();
    let wanted: Vec<(String, String, String)> = ranges
        .iter()
        .map(|(acc, (lo, hi))| (acc.clone(), lo.to_string(), hi.to_string()))
        .collect();
    // Three statements at once, on plain threads (see `load_credentials`).
    let (accounts, balances, days) = std::thread::scope(|s| {
        let accounts = s.spawn(|| db.accounts_many(&ids));
        let balances = s.spawn(|| db.balances_many(&ledger));
        let days = db.days_many(&wanted);
        (join(accounts), join(balances), days)
    });
    for (((acc, a), bal), d) in ids.into_iter().zip(accounts?).zip(balances?).zip(days?) {
        if let Some(a) = a {
            loaded.accounts.insert(acc.clone(), a);
        }
        for (d, st) in d {
            if let Ok(date) = d.parse::<Date>() {
                loaded.days.insert((acc.clone(), date), st);
            }
        }
        loaded.balances.insert(acc, bal);
    }
    Ok(())
}

/// Ride results: re-rated rides of earlier chunks first (as stored), then
/// this chunk's; every touched block is read once and written once. Opens
/// the chunk's disputes, whose holds (postings) it returns.
fn write_results(
    db: &Db,
    w: &mut WriteSet,
    out: &mut Output,
    now: u64,
    stats: &mut RunSummary,
) -> Result<Vec<Posting>, StoreError> {
    let mut blocks = ResultBlocks::default();
    // Every block the chunk touches, in one batched read: re-rated and new
    // rides, and the charged rides of disputes (maybe of earlier chunks).
    let touched = out
        .result_updates
        .iter()
        .map(|u| u.ride)
        .chain(out.results.iter().map(|r| r.ride))
        .chain(out.disputes.iter().map(|d| d.charged_ride))
        .map(result_block_key);
    blocks.prefetch(db, touched)?;
    // Re-rated rides whose fare changed, with their posting revision: a
    // disputed one's hold must follow its fare.
    let mut rerated: BTreeMap<RideId, u32> = BTreeMap::new();
    for u in &out.result_updates {
        // Most re-rated rides keep their result: their block is read
        // (prefetched above) but rewritten only when one of them changes.
        let unchanged = |r: &RideResult| {
            (r.outcome, r.amount_minor, r.result) == (u.outcome, u.amount_minor, u.result)
        };
        if blocks.get(u.ride).is_none_or(unchanged) {
            continue;
        }
        if let Some(r) = blocks.get_mut(db, u.ride)? {
            if r.amount_minor != u.amount_minor {
                rerated.insert(u.ride, u.revision);
            }
            r.outcome = u.outcome;
            r.amount_minor = u.amount_minor;
            r.result = u.result;
        }
    }
    for r in std::mem::take(&mut out.results) {
        *stats.outcomes.entry(r.result).or_insert(0) += 1;
        blocks.upsert(db, r)?;
    }
    // Disputed fares (a code on two readers): held in suspense.
    let holds = open_disputes(db, w, &mut blocks, &out.disputes, &rerated, now)?;
    blocks.write(w);
    Ok(holds)
}

/// Ride postings (in blocks, indexed per account and chunk), dispute holds
/// and the balances they move. Returns the new balances by ledger account.
fn write_postings(
    db: &Db,
    w: &mut WriteSet,
    postings: &[Posting],
    holds: &[Posting],
    passenger_balances: &HashMap<String, i64>,
) -> Result<HashMap<String, i64>, StoreError> {
    // Balances of the accounts the postings touch: passengers' were loaded
    // with the facts (nothing else writes while the write lock is held).
    let mut balances: HashMap<String, i64> = HashMap::new();
    // The others (operators, suspense, …): one batched read.
    let mut others: BTreeSet<String> = BTreeSet::new();
    for p in postings.iter().chain(holds) {
        for acc in [&p.debit, &p.credit] {
            if let Some(id) = acc.passenger_id() {
                if let Some(b) = passenger_balances.get(id) {
                    balances.entry(acc.to_string()).or_insert(*b);
                    continue;
                }
            }
            others.insert(acc.to_string());
        }
    }
    let others: Vec<String> = others
        .into_iter()
        .filter(|acc| !balances.contains_key(acc))
        .collect();
    let read = db.balances_many(&others)?;
    balances.extend(others.into_iter().zip(read));
    // Chunks are numbered (for the per-account posting index records).
    let chunk_no = db.meta::<u64>(POSTING_CHUNK_META)?.unwrap_or(0) + 1;
    Db::put_meta(w, POSTING_CHUNK_META, &chunk_no);
    db.put_ride_postings(w, postings, &mut balances, chunk_no)?;
    Db::put_postings(w, holds, &mut balances);
    Db::put_balances(w, &balances);
    Ok(balances)
}

/// Changed account day states.
fn write_days(w: &mut WriteSet, out: &Output) {
    for (acc, day, st) in &out.days {
        Db::put_day(w, acc, &day.to_string(), st);
    }
}

/// New first sightings merged into each credential's record (the core only
/// reports codes not seen before, so nothing is replaced).
fn write_sightings(
    w: &mut WriteSet,
    out: &Output,
    sightings: &mut HashMap<CredentialId, Vec<CodeSighting>>,
) {
    let mut touched: HashSet<CredentialId> = HashSet::new();
    for ((cred, seq), ride) in &out.codes {
        sightings.entry(*cred).or_default().push(CodeSighting {
            device_seq: *seq,
            ride: *ride,
        });
        touched.insert(*cred);
    }
    for cred in touched {
        let list = sightings.get_mut(&cred).expect("just inserted");
        list.sort_by_key(|s| s.device_seq);
        list.dedup_by_key(|s| s.device_seq);
        Db::put_code_sightings(w, &cred, list);
    }
}

/// Fraud events (keyed by code and duplicate ride) and reader incidents
/// (idempotent keys).
fn write_fraud_and_incidents(w: &mut WriteSet, out: &Output) {
    for f in &out.fraud {
        let mut k = code_key(&f.credential_id, f.device_seq);
        k.extend_from_slice(&f.duplicate_ride.key());
        w.put(Space::Fraud, k, enc("fraud_event", f));
    }
    for i in &out.incidents {
        Db::put_incident(w, i);
    }
}

/// Revocation status of the chunk's accounts: written only where it changes
/// (the flags are read in one scan).
fn write_revocations(
    db: &Db,
    w: &mut WriteSet,
    loaded: &Loaded,
    ledger_balances: &HashMap<String, i64>,
) -> Result<(), StoreError> {
    let revoked: HashSet<String> = db.revoked_accounts()?.into_iter().collect();
    for (acc, a) in &loaded.accounts {
        let bal = ledger_balances
            .get(&passenger_account(acc))
            .copied()
            .unwrap_or(loaded.balances[acc]);
        if is_revoked(a, bal) != revoked.contains(acc) {
            set_revoked(w, a, bal);
        }
    }
    Ok(())
}

/// Opens (or extends) the disputes of a chunk's cross-reader duplicate
/// sightings: one [`Dispute`] per charged ride; a new one holds the
/// charged ride's current fare in suspense (returned as postings to book).
/// An existing dispute whose charged ride was re-rated (`rerated`: ride →
/// posting revision) has its hold, and its release once resolved, brought
/// to the new fare. `blocks` must already hold the chunk's results (the
/// charged ride's fare is read there).
fn open_disputes(
    db: &Db,
    w: &mut WriteSet,
    blocks: &mut ResultBlocks,
    sightings: &[DisputedSighting],
    rerated: &BTreeMap<RideId, u32>,
    now: u64,
) -> Result<Vec<Posting>, StoreError> {
    let mut by_charged: BTreeMap<RideId, Vec<&DisputedSighting>> = BTreeMap::new();
    for s in sightings {
        by_charged.entry(s.charged_ride).or_default().push(s);
    }
    for ride in rerated.keys() {
        by_charged.entry(*ride).or_default();
    }
    let charged_rides: Vec<RideId> = by_charged.keys().copied().collect();
    let stored = db.disputes_many(&charged_rides)?;
    let mut holds = Vec::new();
    for ((charged, list), stored) in by_charged.into_iter().zip(stored) {
        let (mut d, raw) = match (stored, list.first()) {
            (Some((d, raw)), _) => (d, Some(raw)),
            (None, Some(first)) => (new_dispute(db, blocks, first, now, &mut holds)?, None),
            // Re-rated, never disputed: nothing held.
            (None, None) => continue,
        };
        let mut changed = !list.is_empty();
        if let (Some(revision), Some(_)) = (rerated.get(&charged), &raw) {
            changed |= follow_fare(db, blocks, &mut d, *revision, &mut holds)?;
        }
        for s in list {
            if d.sightings.iter().all(|(r, _)| *r != s.duplicate_ride) {
                d.sightings
                    .push((s.duplicate_ride, s.duplicate_operator.clone()));
            }
        }
        if changed {
            Db::put_dispute(w, &d, raw);
            metrics::counter!("settlement_disputes_total").increment(1);
        }
    }
    Ok(holds)
}

/// Brings an existing dispute's hold (and its release, once resolved) from
/// `d.held_minor` to the charged ride's re-rated fare: the ride adjustment
/// already moved the difference between the passenger and the charged
/// ride's operator, so without this the operator would be short (or long)
/// by it. Returns whether the dispute changed.
fn follow_fare(
    db: &Db,
    blocks: &mut ResultBlocks,
    d: &mut Dispute,
    revision: u32,
    holds: &mut Vec<Posting>,
) -> Result<bool, StoreError> {
    let Some(fare) = blocks.get_mut(db, d.charged_ride)?.map(|r| r.amount_minor) else {
        return Ok(false);
    };
    if fare == d.held_minor {
        return Ok(false);
    }
    let day = match d.service_day.parse::<Date>() {
        Ok(day) => day,
        // Only for a charged ride that was never rated, which has no fare
        // to follow; keep the hold as it is.
        Err(e) => {
            tracing::error!(ride = %d.charged_ride, error = %e, "dispute without a service day");
            return Ok(false);
        }
    };
    let key = ride_key_str(d.charged_ride);
    let mut sides = vec![(DisputeSide::Hold, d.held_from.as_str())];
    if let Some(res) = &d.resolution {
        sides.push((DisputeSide::Release, res.operator.as_str()));
    }
    let mut moved = Vec::new();
    for (side, operator) in sides {
        let (from, to) = (d.held_minor, fare);
        match fare_ledger::dispute_adjustment(side, &key, operator, from, to, revision, day) {
            Ok(p) => moved.extend(p),
            // Only for out-of-range keys or amounts, which validation
            // upstream excludes; keep the hold as it is rather than half-move it.
            Err(e) => {
                tracing::error!(ride = %d.charged_ride, error = %e, "dispute hold adjustment refused");
                return Ok(false);
            }
        }
    }
    holds.extend(moved);
    d.held_minor = fare;
    Ok(true)
}

/// A new dispute over `first.charged_ride`, holding its current fare in
/// suspense (the hold posting is pushed on `holds`).
fn new_dispute(
    db: &Db,
    blocks: &mut ResultBlocks,
    first: &DisputedSighting,
    now: u64,
    holds: &mut Vec<Posting>,
) -> Result<Dispute, StoreError> {
    let charged = first.charged_ride;
    let (amount, day) = match blocks.get_mut(db, charged)? {
        Some(r) => (r.amount_minor, r.service_day.clone()),
        None => (0, String::new()),
    };
    let mut held_minor = 0;
    if amount > 0 {
        let key = ride_key_str(charged);
        let hold = day
            .parse::<Date>()
            .map_err(|e| e.to_string())
            .and_then(|date| {
                fare_ledger::dispute_hold(&key, &first.charged_operator, amount, date)
                    .map_err(|e| e.to_string())
            });
        match hold {
            Ok(p) => {
                holds.push(p);
                held_minor = amount;
            }
            // Only for out-of-range keys or amounts, which
            // validation upstream excludes.
            Err(e) => {
                tracing::error!(ride = %charged, error = %e, "dispute hold refused")
            }
        }
    }
    Ok(Dispute {
        charged_ride: charged,
        sightings: vec![(charged, first.charged_operator.clone())],
        credential_id: first.credential_id,
        device_seq: first.device_seq,
        account_id: Some(first.account_id.clone()),
        service_day: day,
        held_from: first.charged_operator.clone(),
        held_minor,
        opened_unix_s: now,
        resolution: None,
    })
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
