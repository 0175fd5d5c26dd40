//! Settlement runs: load a chunk of unsettled rides, re-verify, run the pure
//! core, commit the chunk's writes and cursor advance atomically, repeat.
//! Resumable (a crash loses at most the chunk in flight, which is redone)
//! and idempotent (a second run finds nothing to settle and changes nothing).

use crate::core::{days_to_load, passenger_account, service_day, settle_chunk, Facts, RideIn};
use crate::error::StoreError;
use crate::model::*;
use crate::reverify::Verdict;
use crate::reverify::{reverify, CodeToVerify};
use crate::store::{
    typed::{code_key, CodeSighting},
    Db, ResultBlocks, RideBlocks, Space, WriteSet,
};
use fare_credential::{CredentialId, Policy, RideRecord, TrustList};
use fare_tariff::{Date, Tariff};
use rayon::prelude::*;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Meta value: number of the last committed settlement chunk.
const POSTING_CHUNK_META: &str = "settle_chunk_no";

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

impl RunSummary {
    /// Adds another summary (a committed chunk's) to this one.
    pub fn add(&mut self, other: RunSummary) {
        self.rides += other.rides;
        self.chunks += other.chunks;
        self.postings += other.postings;
        self.fraud_events += other.fraud_events;
        self.incidents += other.incidents;
        for (k, v) in other.outcomes {
            *self.outcomes.entry(k).or_insert(0) += v;
        }
    }
}

/// Runs started over HTTP that a registry keeps (the most recent ones).
pub const MAX_RUNS_KEPT: usize = 100;

/// A settlement run started over HTTP (`GET /v1/settlement/runs/{id}`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RunStatus {
    /// Run id (per service process, from 1).
    pub run_id: u64,
    /// `running`, `done` or `failed`.
    pub status: &'static str,
    /// Server time at the start.
    pub started_unix_s: u64,
    /// Server time at the end.
    pub finished_unix_s: Option<u64>,
    /// What the run did, once done.
    pub summary: Option<RunSummary>,
    /// Why it failed (chunks committed before the failure stay committed;
    /// a new run resumes).
    pub error: Option<String>,
}

/// The service's runs by id (in memory: a restarted service forgets them;
/// their effects are in the database).
#[derive(Debug, Default)]
pub struct RunRegistry {
    next_id: u64,
    runs: BTreeMap<u64, RunStatus>,
}

impl RunRegistry {
    /// Registers a running run; returns its id.
    pub fn start(&mut self, now_unix_s: u64) -> u64 {
        self.next_id += 1;
        let run_id = self.next_id;
        self.runs.insert(
            run_id,
            RunStatus {
                run_id,
                status: "running",
                started_unix_s: now_unix_s,
                finished_unix_s: None,
                summary: None,
                error: None,
            },
        );
        while self.runs.len() > MAX_RUNS_KEPT {
            self.runs.pop_first();
        }
        run_id
    }
    /// Records a run's end.
    pub fn finish(&mut self, run_id: u64, result: Result<RunSummary, String>, now_unix_s: u64) {
        if let Some(r) = self.runs.get_mut(&run_id) {
            r.finished_unix_s = Some(now_unix_s);
            match result {
                Ok(s) => {
                    r.status = "done";
                    r.summary = Some(s);
                }
                Err(e) => {
                    r.status = "failed";
                    r.error = Some(e);
                }
            }
        }
    }
    /// A run's status.
    pub fn get(&self, run_id: u64) -> Option<RunStatus> {
        self.runs.get(&run_id).cloned()
    }
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

/// Wall time spent per phase of a run, summed over its chunks (for
/// measurements: the example and benches print it; nothing depends on it).
#[derive(Clone, Debug, Default)]
pub struct PhaseTimes {
    /// Reading reader cursors and ride records, decoding them.
    pub read_rides: Duration,
    /// Re-verification (all cores).
    pub reverify: Duration,
    /// Loading credentials, code sightings, accounts, balances, day states.
    pub load_facts: Duration,
    /// The pure core: duplicates, rating, postings.
    pub core: Duration,
    /// Building the write set (result blocks, balances, encodings).
    pub build_writes: Duration,
    /// `Store::commit` (checks, apply, flush).
    pub commit: Duration,
}

impl std::fmt::Display for PhaseTimes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "read rides {:.2} s | re-verify {:.2} s | load facts {:.2} s | core {:.2} s | build writes {:.2} s | commit {:.2} s",
            self.read_rides.as_secs_f64(),
            self.reverify.as_secs_f64(),
            self.load_facts.as_secs_f64(),
            self.core.as_secs_f64(),
            self.build_writes.as_secs_f64(),
            self.commit.as_secs_f64()
        )
    }
}

/// Settles everything ingested so far, adding the wall time of each phase
/// to `times`.
///
/// Pipelined: a producer thread reads and re-verifies chunk after chunk
/// (one ahead), which depends only on ride records (immutable once
/// ingested), while this thread settles and commits the previous one (sled's
/// apply and flush use one core; re-verification all of them).
/// Everything that reads settled state (cursors, credentials, sightings,
/// days, balances, result and posting blocks) happens here, after the
/// previous chunk's commit returned and under the write lock; each chunk
/// still commits atomically with its readers' `settled_seq`, so a crash
/// redoes at most the chunk in flight. A prefetched chunk whose cursors
/// moved meanwhile (another run) is dropped and the producer restarted.
pub fn run_timed(
    db: &Db,
    ctx: &SettleContext<'_>,
    now_unix_s: u64,
    times: &mut PhaseTimes,
) -> Result<RunSummary, StoreError> {
    let mut summary = RunSummary::default();
    while pipelined_pass(db, ctx, now_unix_s, times, &mut summary)? {}
    Ok(summary)
}

/// One producer / settler pass; true when it must be restarted (stale plan).
fn pipelined_pass(
    db: &Db,
    ctx: &SettleContext<'_>,
    now_unix_s: u64,
    times: &mut PhaseTimes,
    summary: &mut RunSummary,
) -> Result<bool, StoreError> {
    type Msg = Result<(Prepared, PhaseTimes), StoreError>;
    std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Msg>(1);
        s.spawn(move || {
            // Cursors as the chunks planned so far leave them.
            let mut settled: HashMap<u32, u64> = HashMap::new();
            loop {
                let mut t = PhaseTimes::default();
                let p = prepare(db, ctx, &settled, &mut t);
                let last = match &p {
                    Ok(p) => {
                        settled.extend(p.plan.iter().map(|r| (r.reader_id, r.to)));
                        p.rides.is_empty()
                    }
                    Err(_) => true,
                };
                // A closed channel: the settler stopped (done or failed).
                if tx.send(p.map(|p| (p, t))).is_err() || last {
                    return;
                }
            }
        });
        for msg in rx.iter() {
            let (prepared, t) = msg?;
            times.read_rides += t.read_rides;
            times.reverify += t.reverify;
            if prepared.rides.is_empty() {
                return Ok(false);
            }
            let _w = ctx.write_lock.lock().unwrap_or_else(|p| p.into_inner());
            let Some(cursors) = current_cursors(db, &prepared.plan)? else {
                return Ok(true);
            };
            let (w, chunk) = build_chunk(db, ctx, now_unix_s, &prepared, cursors, times)?;
            let t = Instant::now();
            db.commit(w)?;
            times.commit += t.elapsed();
            metrics::counter!("settlement_settled_rides_total").increment(chunk.rides);
            summary.add(chunk);
            // Large buffers are freed off the critical path.
            s.spawn(move || drop(prepared));
        }
        Ok(false)
    })
}

/// The rides of one reader a chunk takes: `from..=to`.
#[derive(Clone, Copy, Debug)]
struct ReaderPlan {
    reader_id: u32,
    from: u64,
    to: u64,
}

/// A chunk read and re-verified, not yet settled.
struct Prepared {
    plan: Vec<ReaderPlan>,
    verdicts: Vec<Verdict>,
    /// The core's view of the rides (built here, off the settling thread).
    rides: Vec<RideIn>,
    /// Distinct credentials of the verified rides, sorted.
    cred_ids: Vec<CredentialId>,
}

/// Picks up to `chunk_rides` unsettled rides reader by reader, reads them
/// (readers in parallel) and re-verifies them. `settled` overrides stored
/// cursors that a commit still in flight is advancing. Reads only ride
/// records (immutable once ingested), reader states and readers.
fn prepare(
    db: &Db,
    ctx: &SettleContext<'_>,
    settled: &HashMap<u32, u64>,
    times: &mut PhaseTimes,
) -> Result<Prepared, StoreError> {
    let t = Instant::now();
    let mut plan: Vec<ReaderPlan> = Vec::new();
    let mut operators: HashMap<u32, String> = HashMap::new();
    let mut n = 0usize;
    for reader in db.readers()? {
        if n >= ctx.chunk_rides {
            break;
        }
        let (state, _) = db.reader_state(reader.reader_id)?;
        let settled_seq = settled
            .get(&reader.reader_id)
            .copied()
            .unwrap_or(0)
            .max(state.settled_seq);
        if settled_seq >= state.acked_seq {
            continue;
        }
        let room = (ctx.chunk_rides - n) as u64;
        let to = state.acked_seq.min(settled_seq + room);
        n += (to - settled_seq) as usize;
        plan.push(ReaderPlan {
            reader_id: reader.reader_id,
            from: settled_seq + 1,
            to,
        });
        operators.insert(reader.reader_id, reader.operator.clone());
    }
    let per_reader: Vec<Vec<(RideRecord, bool)>> = plan
        .par_iter()
        .map(|p| db.rides(p.reader_id, p.from, p.to))
        .collect::<Result<_, _>>()?;
    let records: Vec<(RideRecord, bool)> = per_reader.into_iter().flatten().collect();
    times.read_rides += t.elapsed();

    let t = Instant::now();
    let codes: Vec<CodeToVerify<'_>> = records
        .iter()
        .map(|(r, strict)| CodeToVerify {
            code: &r.code,
            reader_time_unix_s: r.reader_time_unix_s,
            strict: *strict,
        })
        .collect();
    let verdicts = reverify(&codes, ctx.trust, &ctx.policy);
    // The records end here: the core needs only this view of them.
    let rides: Vec<RideIn> = records
        .into_iter()
        .map(|(r, _)| RideIn {
            ride: RideId {
                reader_id: r.reader_id,
                reader_seq: r.reader_seq,
            },
            reader_time_unix_s: r.reader_time_unix_s,
            operator: operators.get(&r.reader_id).cloned().unwrap_or_default(),
            route: r.route,
        })
        .collect();
    let mut cred_ids: Vec<CredentialId> = verdicts
        .iter()
        .filter_map(|v| v.as_ref().ok().map(|vr| vr.credential_id))
        .collect();
    cred_ids.sort_unstable();
    cred_ids.dedup();
    times.reverify += t.elapsed();
    Ok(Prepared {
        plan,
        verdicts,
        rides,
        cred_ids,
    })
}

/// A reader's new state, with the stored bytes it replaces (compare-and-swap).
type CursorUpdate = (u32, Option<Vec<u8>>, ReaderState);

/// The readers' states with their cursors advanced by the plan, or `None`
/// when a cursor moved since the plan was made.
fn current_cursors(db: &Db, plan: &[ReaderPlan]) -> Result<Option<Vec<CursorUpdate>>, StoreError> {
    let mut out = Vec::with_capacity(plan.len());
    for p in plan {
        let (state, raw) = db.reader_state(p.reader_id)?;
        if state.settled_seq + 1 != p.from || p.to > state.acked_seq {
            return Ok(None);
        }
        let mut new_state = state;
        new_state.settled_seq = p.to;
        out.push((p.reader_id, raw, new_state));
    }
    Ok(Some(out))
}

/// Settles a prepared chunk: loads the facts, runs the pure core and
/// returns the chunk's whole write set (cursors included).
fn build_chunk(
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
    let mut stats = RunSummary {
        rides: prepared.rides.len() as u64,
        chunks: 1,
        ..RunSummary::default()
    };
    let Prepared {
        verdicts,
        rides,
        cred_ids,
        ..
    } = prepared;

    // 3. Load the facts the core needs: each distinct credential (its record
    //    and its sightings: one read each, not one per ride), then each
    //    account (record, balance, day states); point reads in parallel.
    type CredFacts = (CredentialId, Option<CredentialRecord>, Vec<CodeSighting>);
    let loaded: Vec<CredFacts> = cred_ids
        .par_iter()
        .with_min_len(64)
        .map(|id| {
            let c = db.credential(id)?;
            let list = match c {
                Some(_) => db.code_sightings(id)?,
                None => Vec::new(),
            };
            Ok((*id, c, list))
        })
        .collect::<Result<_, StoreError>>()?;
    let mut credentials: HashMap<CredentialId, CredentialRecord> = HashMap::new();
    let mut seen_codes = HashMap::new();
    let mut sightings: HashMap<CredentialId, Vec<CodeSighting>> = HashMap::new();
    for (id, c, list) in loaded {
        let Some(c) = c else { continue };
        credentials.insert(id, c);
        for s in &list {
            seen_codes.insert((id, s.device_seq), s.ride);
        }
        sightings.insert(id, list);
    }
    let mut account_days: HashMap<String, (Date, Date)> = HashMap::new();
    let mut day_ranges: HashMap<Date, (Date, Date)> = HashMap::new();
    for (v, ride) in verdicts.iter().zip(rides) {
        let Ok(vr) = v else { continue };
        let Some(c) = credentials.get(&vr.credential_id) else {
            continue;
        };
        let day = service_day(ctx.tariff, ride.reader_time_unix_s);
        // A chunk spans few service days: their ranges are computed once.
        let (lo, hi) = *day_ranges.entry(day).or_insert_with(|| {
            let need = days_to_load(ctx.tariff, day);
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
    type AccountFacts = (String, Option<Account>, i64, Vec<(String, DayState)>);
    let account_days: Vec<(String, (Date, Date))> = account_days.into_iter().collect();
    let loaded: Vec<AccountFacts> = account_days
        .into_par_iter()
        .with_min_len(64)
        .map(|(acc, (lo, hi))| {
            let a = db.account(&acc)?;
            let bal = db.balance(&passenger_account(&acc))?;
            let d = db.days(&acc, &lo.to_string(), &hi.to_string())?;
            Ok((acc, a, bal, d))
        })
        .collect::<Result<_, StoreError>>()?;
    let mut accounts = HashMap::new();
    let mut balances = HashMap::new();
    let mut days = HashMap::new();
    for (acc, a, bal, d) in loaded {
        if let Some(a) = a {
            accounts.insert(acc.clone(), a);
        }
        for (d, st) in d {
            if let Ok(date) = d.parse::<Date>() {
                days.insert((acc.clone(), date), st);
            }
        }
        balances.insert(acc, bal);
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

    lap(&mut times.load_facts);

    // 4. The pure core.
    let out = settle_chunk(rides, verdicts, &facts);
    lap(&mut times.core);

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
        *stats.outcomes.entry(r.result.clone()).or_insert(0) += 1;
        blocks.upsert(db, r)?;
    }
    blocks.write(&mut w);
    // Balances of the accounts the postings touch: passengers' were loaded
    // above (and nothing else writes while the write lock is held).
    let mut ledger_balances: HashMap<String, i64> = HashMap::new();
    for p in &out.postings {
        for acc in [&p.debit, &p.credit] {
            if let Some(id) = acc.passenger_id() {
                if let Some(b) = balances.get(id) {
                    ledger_balances.entry(acc.to_string()).or_insert(*b);
                    continue;
                }
            }
            if let std::collections::hash_map::Entry::Vacant(e) =
                ledger_balances.entry(acc.to_string())
            {
                let b = db.balance(e.key())?;
                e.insert(b);
            }
        }
    }
    // Chunks are numbered (for the per-account posting index records).
    let chunk_no = db.meta::<u64>(POSTING_CHUNK_META)?.unwrap_or(0) + 1;
    Db::put_meta(&mut w, POSTING_CHUNK_META, &chunk_no);
    db.put_ride_postings(&mut w, &out.postings, &mut ledger_balances, chunk_no)?;
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
    // Revocation status of the accounts whose balance moved: written only
    // where it changes (the flags are read in one scan).
    let revoked: HashSet<String> = db.revoked_accounts()?.into_iter().collect();
    for (acc, a) in &accounts {
        let bal = ledger_balances
            .get(&passenger_account(acc))
            .copied()
            .unwrap_or(balances[acc]);
        if is_revoked(a, bal) != revoked.contains(acc) {
            set_revoked(&mut w, a, bal);
        }
    }
    for (id, raw, st) in cursor_updates {
        Db::put_reader_state(&mut w, id, raw, &st);
    }
    lap(&mut times.build_writes);
    stats.postings = out.postings.len() as u64;
    stats.fraud_events = out.fraud.len() as u64;
    stats.incidents = out.incidents.len() as u64;
    Ok((w, stats))
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
