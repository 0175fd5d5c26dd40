//! Settlement runs: load a chunk of unsettled rides, re-verify, run the pure
//! core, commit the chunk's writes and cursor advance atomically, repeat.
//! Resumable (a crash loses at most the chunk in flight, which is redone)
//! and idempotent (a second run finds nothing to settle and changes nothing).
//!
//! * this file: the pipeline (plan, read and re-verify a chunk ahead, settle
//!   and commit the previous one);
//! * `runs`: the registry of runs started over HTTP ([`RunRegistry`]);
//! * `chunk`: one chunk's write set, in short steps (load facts, results,
//!   disputes, postings and balances, sightings, revocations);
//! * `purge`: dropping ride history past retention ([`purge()`]).

use crate::core::RideIn;
use crate::error::StoreError;
use crate::model::*;
use crate::reverify::Verdict;
use crate::reverify::{
    codes_need_strict_grouped, reverify_cached, CodeToVerify, CredentialCache, RUN_GROUP_MAX_POINTS,
};
use crate::store::{Db, WriteLock};
use fare_credential::{CredentialId, Policy, RideRecord, TrustList};
use fare_tariff::Tariff;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

mod chunk;
mod purge;
mod runs;

pub use chunk::{is_revoked, set_revoked};
pub use purge::{purge, PurgeSummary};
pub use runs::{RunRegistry, RunStatus, MAX_RUNS_KEPT};

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
    pub outcomes: BTreeMap<Outcome, u64>,
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
    /// Serialises writers (ingest, accounts, settlement): of this process,
    /// and on PostgreSQL of every instance (`store::WriteLock`).
    pub write_lock: &'a WriteLock,
    /// Credentials accepted by earlier runs of this process.
    pub checked_credentials: &'a CredentialCache,
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

impl PhaseTimes {
    /// Each phase in run order: its key (for machine-read reports, such as
    /// the simulator's `settlement_run_<key>`), its label (for people) and
    /// its wall time.
    pub fn phases(&self) -> [(&'static str, &'static str, Duration); 6] {
        [
            ("read_rides", "read rides", self.read_rides),
            ("reverify", "re-verify", self.reverify),
            ("load_facts", "load facts", self.load_facts),
            ("core", "core", self.core),
            ("build_writes", "build writes", self.build_writes),
            ("commit", "commit", self.commit),
        ]
    }
}

impl std::fmt::Display for PhaseTimes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (_, label, wall)) in self.phases().into_iter().enumerate() {
            let sep = if i == 0 { "" } else { " | " };
            write!(f, "{sep}{label} {:.2} s", wall.as_secs_f64())?;
        }
        Ok(())
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
            let (w, chunk) = chunk::build_chunk(db, ctx, now_unix_s, &prepared, cursors, times)?;
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
pub(crate) struct ReaderPlan {
    reader_id: u32,
    from: u64,
    to: u64,
}

/// A chunk read and re-verified, not yet settled.
pub(crate) struct Prepared {
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
    let (plan, operators) = plan_chunk(db, ctx.chunk_rides, settled)?;
    // Every planned reader's rides in one batched read.
    let wanted: Vec<(u32, u64, u64)> = plan.iter().map(|p| (p.reader_id, p.from, p.to)).collect();
    let per_reader: Vec<Vec<(RideRecord, RMark)>> = db.rides_many(&wanted)?;
    let records: Vec<(RideRecord, RMark)> = per_reader.into_iter().flatten().collect();
    times.read_rides += t.elapsed();

    let t = Instant::now();
    let strict = strict_marks(&records);
    let codes: Vec<CodeToVerify<'_>> = records
        .iter()
        .zip(strict)
        .map(|((r, _), strict)| CodeToVerify {
            code: &r.code,
            reader_time_unix_s: r.reader_time_unix_s,
            strict,
        })
        .collect();
    let verdicts = reverify_cached(&codes, ctx.trust, &ctx.policy, ctx.checked_credentials);
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

/// For each of `records`: must its device signature be verified alone?
/// Ingest's mark, and for the rides ingest left unchecked (small uploads)
/// the subgroup test of their `R`, the chunk's in group tests of at most
/// `RUN_GROUP_MAX_POINTS` on all cores.
fn strict_marks(records: &[(RideRecord, RMark)]) -> Vec<bool> {
    let mut strict: Vec<bool> = records.iter().map(|(_, m)| *m == RMark::Strict).collect();
    let unchecked: Vec<usize> = (0..records.len())
        .filter(|&i| records[i].1 == RMark::Unchecked)
        .collect();
    let codes: Vec<&[u8]> = unchecked
        .iter()
        .map(|&i| records[i].0.code.as_slice())
        .collect();
    let found = codes_need_strict_grouped(&codes, RUN_GROUP_MAX_POINTS);
    for (i, s) in unchecked.into_iter().zip(found) {
        if s {
            metrics::counter!("settlement_strict_rides_total").increment(1);
        }
        strict[i] = s;
    }
    strict
}

/// Up to `chunk_rides` unsettled rides, reader by reader (each reader's
/// range from its settled cursor, or `settled`'s when further), and the
/// operator of each planned reader.
fn plan_chunk(
    db: &Db,
    chunk_rides: usize,
    settled: &HashMap<u32, u64>,
) -> Result<(Vec<ReaderPlan>, HashMap<u32, String>), StoreError> {
    let mut plan: Vec<ReaderPlan> = Vec::new();
    let mut operators: HashMap<u32, String> = HashMap::new();
    let mut n = 0usize;
    let readers = db.readers()?;
    // Every reader's cursors in one batched read.
    let ids: Vec<u32> = readers.iter().map(|r| r.reader_id).collect();
    let states = db.reader_states(&ids)?;
    for (reader, (state, _)) in readers.into_iter().zip(states) {
        if n >= chunk_rides {
            break;
        }
        let settled_seq = settled
            .get(&reader.reader_id)
            .copied()
            .unwrap_or(0)
            .max(state.settled_seq);
        if settled_seq >= state.acked_seq {
            continue;
        }
        let room = (chunk_rides - n) as u64;
        let to = state.acked_seq.min(settled_seq + room);
        n += (to - settled_seq) as usize;
        plan.push(ReaderPlan {
            reader_id: reader.reader_id,
            from: settled_seq + 1,
            to,
        });
        operators.insert(reader.reader_id, reader.operator.clone());
    }
    Ok((plan, operators))
}

/// A reader's new state, with the stored bytes it replaces (compare-and-swap).
pub(crate) type CursorUpdate = (u32, Option<Vec<u8>>, ReaderState);

/// The readers' states with their cursors advanced by the plan, or `None`
/// when a cursor moved since the plan was made.
fn current_cursors(db: &Db, plan: &[ReaderPlan]) -> Result<Option<Vec<CursorUpdate>>, StoreError> {
    let mut out = Vec::with_capacity(plan.len());
    let ids: Vec<u32> = plan.iter().map(|p| p.reader_id).collect();
    for (p, (state, raw)) in plan.iter().zip(db.reader_states(&ids)?) {
        if state.settled_seq + 1 != p.from || p.to > state.acked_seq {
            return Ok(None);
        }
        let mut new_state = state;
        new_state.settled_seq = p.to;
        out.push((p.reader_id, raw, new_state));
    }
    Ok(Some(out))
}
