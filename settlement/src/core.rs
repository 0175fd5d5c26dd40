//! The settlement core: pure (no I/O, no clock). Takes the rides of a chunk,
//! their re-verification verdicts and every stored fact it needs, and returns
//! what to write: ride results, postings, day states, code sightings, fraud
//! events and reader incidents. [`crate::settle`] loads the inputs and commits
//! the output atomically.
//!
//! # Policies
//! * **Forged** (any signature, issuer or format failure) and **invalid time**
//!   (genuine code outside its validity at the reader's recorded time) rides
//!   are never charged and are reported as incidents against their reader.
//!   The deny list is not re-applied: a reader with an older list rightly
//!   accepted the ride, which happened and is charged.
//! * **Duplicate codes**: the same `(credential id, device sequence)` on more
//!   than one ride is a fraud event. The first by reader time (ties: lower
//!   ride id) among the rides settled together is charged; a ride settled in
//!   an earlier run always keeps its charge; every other sighting is
//!   `duplicate`, never charged. When a sighting is on another reader than
//!   the charged ride's, which reader (and operator) earned the fare is
//!   disputed (DESIGN §4 invariant 8) ([`DisputedSighting`], [`crate::model::Dispute`]): the caller
//!   holds the fare in suspense until the dispute is resolved, so no reader
//!   wins a fare for its operator by uploading first or back-dating a copy.
//! * **Rating**: per account and service day with `fare_tariff::rate_day`;
//!   a ride added to a day already rated re-rates that day (and, with a
//!   rolling cap, the days after it) and posts the differences as
//!   adjustments. Posting ids derive from ride ids, so nothing posts twice.
//! * **Credit limit**: a ride always posts (it happened). A ride whose charge
//!   leaves the account's debt above its credit limit gets the result
//!   `over_credit_limit`, and the account goes on the next deny list.

use crate::model::*;
use crate::reverify::Verdict;
use fare_credential::{CredentialId, RejectClass, RejectReason, RideCode};
use fare_ledger::AccountRef;
use fare_ledger::{over_credit_limit, reconcile_ride, RideParties, RideState};
use fare_tariff::{rate_day, Date, PriorDay, RideOutcome, RideToRate, Tariff};
use rayon::prelude::*;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Ledger account key of a passenger (`passenger:ID`).
pub fn passenger_account(account_id: &str) -> String {
    AccountRef::passenger(account_id).to_string()
}

/// One ride of the chunk, as stored.
#[derive(Clone, Debug)]
pub struct RideIn {
    /// The ride.
    pub ride: RideId,
    /// Reader clock.
    pub reader_time_unix_s: u64,
    /// Operator of the reader.
    pub operator: String,
    /// Route from the record.
    pub route: String,
}

/// What the core reads besides the rides (loaded by the caller).
#[derive(Debug)]
pub struct Facts<'a> {
    /// Tariff.
    pub tariff: &'a Tariff,
    /// Settlement time (stamped on postings).
    pub now_unix_s: u64,
    /// Credential records of the credentials in the chunk.
    pub credentials: &'a HashMap<CredentialId, CredentialRecord>,
    /// Accounts behind them.
    pub accounts: &'a HashMap<String, Account>,
    /// Passenger balances (by account id) before this chunk.
    pub balances: &'a HashMap<String, i64>,
    /// Codes of the chunk already settled earlier: first ride holding each.
    pub seen_codes: &'a HashMap<(CredentialId, u32), RideId>,
    /// Stored day states of the accounts concerned, for every day the chunk
    /// can change and the 6 days before (see [`days_to_load`]).
    pub days: &'a HashMap<(String, Date), DayState>,
    /// Operator of every reader (the charged ride of a duplicate may be
    /// from an earlier run, on a reader with no ride in this chunk).
    pub operators: &'a HashMap<u32, String>,
}

/// A duplicate sighting on another reader than the charged ride's: which
/// reader earned the fare is disputed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DisputedSighting {
    /// The ride charged to the passenger.
    pub charged_ride: RideId,
    /// Its reader's operator (credited so far).
    pub charged_operator: String,
    /// The other sighting.
    pub duplicate_ride: RideId,
    /// Its reader's operator.
    pub duplicate_operator: String,
    /// The credential.
    pub credential_id: CredentialId,
    /// Device sequence of the code.
    pub device_seq: u32,
    /// Account charged.
    pub account_id: String,
}

/// A ride settled earlier, as its day's re-rating leaves it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResultUpdate {
    /// The ride.
    pub ride: RideId,
    /// The tariff's outcome.
    pub outcome: Outcome,
    /// Its fare.
    pub amount_minor: i64,
    /// Its posting revision after the re-rating (the ids of a disputed
    /// ride's hold adjustments derive from it).
    pub revision: u32,
    /// Its result: the outcome, or `over_credit_limit` when replaying the
    /// day's fares in time order puts the account past its limit at this
    /// ride (decided the same way as for a new ride, so the result does not
    /// depend on how the day's rides were split into runs and chunks).
    pub result: Outcome,
}

/// What to write.
#[derive(Debug, Default)]
pub struct Output {
    /// Results of the chunk's rides.
    pub results: Vec<RideResult>,
    /// Rides settled earlier whose day was re-rated: [`ResultUpdate`]s (the
    /// caller writes only those that differ from the stored result).
    pub result_updates: Vec<ResultUpdate>,
    /// New postings.
    pub postings: Vec<Posting>,
    /// Changed day states.
    pub days: Vec<(String, Date, DayState)>,
    /// First sightings of codes.
    pub codes: Vec<((CredentialId, u32), RideId)>,
    /// Fraud events.
    pub fraud: Vec<FraudEvent>,
    /// Reader incidents.
    pub incidents: Vec<Incident>,
    /// Duplicate sightings across readers (each also a fraud event).
    pub disputes: Vec<DisputedSighting>,
}

/// The service day of a moment (rides too far in time fall back to 1970-01-01,
/// which the tariff rates like any other day).
pub fn service_day(tariff: &Tariff, unix_s: u64) -> Date {
    tariff
        .service_day(unix_s)
        .unwrap_or_else(|_| Date::new(1970, 1, 1).expect("valid date"))
}

/// The days whose stored states [`settle_chunk`] needs for rides on `day`:
/// the days it can change and the 6 before them (rolling cap).
pub fn days_to_load(tariff: &Tariff, day: Date) -> Vec<Date> {
    let mut out: BTreeSet<Date> = tariff.prior_days_needed(day).into_iter().collect();
    for d in tariff.days_affected_by(day) {
        out.insert(d);
        out.extend(tariff.prior_days_needed(d));
    }
    out.into_iter().collect()
}

/// The ledger's key of a ride: `R:S` (reader id, reader sequence).
pub(crate) fn ride_key_str(r: RideId) -> String {
    format!("{}:{}", r.reader_id, r.reader_seq)
}

fn outcome_of(o: RideOutcome) -> Outcome {
    Outcome::from(o)
}

/// The outcome of a ride refused by re-verification, and the kind of the
/// incident filed against its reader.
fn reject_outcome(r: &RejectReason) -> (Outcome, &'static str) {
    match r.class() {
        RejectClass::Format | RejectClass::Forgery => (Outcome::Forged, "forged_ride"),
        RejectClass::Clock => (Outcome::InvalidTime, "invalid_time_ride"),
        // Re-verification never reports these (the deny list is not
        // re-applied, replay is the reader's business); a code settlement
        // cannot show genuine is not charged.
        RejectClass::Revoked | RejectClass::Replay | RejectClass::Reader => {
            (Outcome::Forged, "forged_ride")
        }
    }
}

/// The incidents of a disputed sighting: one against each reader, each
/// naming the other (idempotent per reader, kind and sequence).
fn dispute_incidents(d: &DisputedSighting, now_unix_s: u64) -> [Incident; 2] {
    let detail = format!(
        "the same ride code (credential {}, device seq {}) on ride {} (operator {}, charged) and ride {} (operator {}): fare held in suspense until the dispute is resolved",
        d.credential_id.to_hex(),
        d.device_seq,
        d.charged_ride,
        d.charged_operator,
        d.duplicate_ride,
        d.duplicate_operator
    );
    [d.charged_ride, d.duplicate_ride].map(|ride| Incident {
        reader_id: ride.reader_id,
        kind: "disputed_code".into(),
        seq: ride.reader_seq,
        detail: detail.clone(),
        at_unix_s: now_unix_s,
    })
}

/// Settles one chunk. `rides[i]` has verdict `verdicts[i]`.
pub fn settle_chunk(rides: &[RideIn], verdicts: &[Verdict], facts: &Facts<'_>) -> Output {
    assert_eq!(rides.len(), verdicts.len(), "one verdict per ride");
    let mut pass = Pass {
        rides,
        verdicts,
        facts,
        results: vec![None; rides.len()],
        out: Output::default(),
    };
    // 1. Refused codes, unknown credentials; candidates for charging.
    let candidates = pass.refuse_unverified();
    // 2. Duplicates: first by reader time wins; earlier runs always win.
    let chargeable = pass.set_duplicates_aside(candidates);
    // 3. Add chargeable rides to their account's service days.
    let (per_account, new_ride_index) = pass.add_to_service_days(&chargeable);
    // 4. Re-rate every affected day of each account, in date order, and post
    //    differences. Accounts are independent: all cores, merged in account order.
    let rated: Vec<AccountOut> = per_account
        .into_par_iter()
        .map(|(account_id, work)| rate_account(&account_id, work, facts, &new_ride_index))
        .collect();
    pass.apply_ratings(rated);
    let mut out = pass.out;
    out.results = pass
        .results
        .into_iter()
        .map(|r| r.expect("every ride has a result"))
        .collect();
    out
}

/// One chunk on its way through [`settle_chunk`]: the results by ride index
/// (rated ones are filled in last) and what to write.
struct Pass<'a, 'f> {
    rides: &'a [RideIn],
    verdicts: &'a [Verdict],
    facts: &'a Facts<'f>,
    results: Vec<Option<RideResult>>,
    out: Output,
}

impl Pass<'_, '_> {
    /// The result of ride `i` with `outcome` and nothing else known yet.
    fn base(&self, i: usize, outcome: Outcome) -> RideResult {
        let ride = &self.rides[i];
        RideResult {
            ride: ride.ride,
            outcome,
            result: outcome,
            reason: None,
            account_id: None,
            credential_id: None,
            device_seq: None,
            service_day: service_day(self.facts.tariff, ride.reader_time_unix_s).to_string(),
            operator: ride.operator.clone(),
            route: ride.route.clone(),
            amount_minor: 0,
            reader_time_unix_s: ride.reader_time_unix_s,
        }
    }

    /// Files refused codes (with an incident against their reader) and codes
    /// of credentials settlement never issued; returns the other rides.
    fn refuse_unverified(&mut self) -> Vec<usize> {
        let mut candidates = Vec::new();
        for i in 0..self.rides.len() {
            match &self.verdicts[i] {
                Err((reason, code)) => self.refuse(i, reason, code.as_deref()),
                Ok(vr) if self.facts.credentials.contains_key(&vr.credential_id) => {
                    candidates.push(i)
                }
                Ok(vr) => {
                    let mut r = self.base(i, Outcome::UnknownCredential);
                    r.credential_id = Some(vr.credential_id);
                    r.device_seq = Some(vr.device_seq);
                    r.reason = Some("unknown_credential".into());
                    self.results[i] = Some(r);
                }
            }
        }
        candidates
    }

    /// Files ride `i`, refused by re-verification for `reason`.
    fn refuse(&mut self, i: usize, reason: &RejectReason, code: Option<&RideCode>) {
        let (outcome, kind) = reject_outcome(reason);
        let mut r = self.base(i, outcome);
        r.reason = Some(reason.code().into());
        if let Some(c) = code {
            r.credential_id = Some(c.credential().id());
            r.device_seq = Some(c.device_seq());
        }
        self.out.incidents.push(Incident {
            reader_id: self.rides[i].ride.reader_id,
            kind: kind.into(),
            seq: self.rides[i].ride.reader_seq,
            detail: reason.to_string(),
            at_unix_s: self.facts.now_unix_s,
        });
        self.results[i] = Some(r);
    }

    /// Sorts the candidates by reader time and files every later sighting of
    /// a code as a duplicate; returns the rides to charge.
    fn set_duplicates_aside(&mut self, mut candidates: Vec<usize>) -> Vec<usize> {
        let rides = self.rides;
        candidates.sort_by_key(|&i| (rides[i].reader_time_unix_s, rides[i].ride));
        let mut first_seen: HashMap<(CredentialId, u32), usize> = HashMap::new();
        let mut chargeable: Vec<usize> = Vec::new();
        for i in candidates {
            let vr = self.verdicts[i].as_ref().expect("candidates verified");
            let key = (vr.credential_id, vr.device_seq);
            match self.facts.seen_codes.get(&key) {
                // Settled in an earlier run: that ride keeps its charge.
                Some(&charged_ride) => {
                    let operator = self.facts.operators.get(&charged_ride.reader_id);
                    let charged = (charged_ride, None, operator.cloned().unwrap_or_default());
                    self.duplicate(i, charged);
                }
                None => match first_seen.get(&key) {
                    Some(&j) => {
                        let first = &rides[j];
                        let charged = (
                            first.ride,
                            Some(first.reader_time_unix_s),
                            first.operator.clone(),
                        );
                        self.duplicate(i, charged);
                    }
                    None => {
                        first_seen.insert(key, i);
                        self.out.codes.push((key, rides[i].ride));
                        chargeable.push(i);
                    }
                },
            }
        }
        chargeable
    }

    /// Files ride `i` as a duplicate of `(charged ride, its reader time when
    /// settled in this chunk, its operator)`: a fraud event, and a dispute
    /// when the two are on different readers.
    fn duplicate(
        &mut self,
        i: usize,
        (charged_ride, charged_time, charged_operator): (RideId, Option<u64>, String),
    ) {
        let vr = self.verdicts[i].as_ref().expect("candidates verified");
        let ride = &self.rides[i];
        let account_id = self.facts.credentials[&vr.credential_id].account_id.clone();
        let mut r = self.base(i, Outcome::Duplicate);
        r.account_id = Some(account_id.clone());
        r.credential_id = Some(vr.credential_id);
        r.device_seq = Some(vr.device_seq);
        r.reason = Some("duplicate_code".into());
        self.results[i] = Some(r);
        if charged_ride.reader_id != ride.ride.reader_id {
            let d = DisputedSighting {
                charged_ride,
                charged_operator,
                duplicate_ride: ride.ride,
                duplicate_operator: ride.operator.clone(),
                credential_id: vr.credential_id,
                device_seq: vr.device_seq,
                account_id: account_id.clone(),
            };
            self.out
                .incidents
                .extend(dispute_incidents(&d, self.facts.now_unix_s));
            self.out.disputes.push(d);
        }
        self.out.fraud.push(FraudEvent {
            kind: "duplicate_code".into(),
            credential_id: vr.credential_id,
            account_id: Some(account_id),
            device_seq: vr.device_seq,
            charged_ride,
            duplicate_ride: ride.ride,
            charged_reader_time_unix_s: charged_time.unwrap_or(0),
            duplicate_reader_time_unix_s: ride.reader_time_unix_s,
        });
    }

    /// Adds each chargeable ride to its account's service day (loading the
    /// stored day state); returns the work per account and the chunk index
    /// of each new ride.
    fn add_to_service_days(
        &mut self,
        chargeable: &[usize],
    ) -> (BTreeMap<String, AccountWork>, HashMap<RideId, usize>) {
        let (rides, facts) = (self.rides, self.facts);
        let mut per_account: BTreeMap<String, AccountWork> = BTreeMap::new();
        let mut new_ride_index: HashMap<RideId, usize> = HashMap::new();
        for &i in chargeable {
            let vr = self.verdicts[i].as_ref().expect("verified");
            let account_id = &facts.credentials[&vr.credential_id].account_id;
            let day = service_day(facts.tariff, rides[i].reader_time_unix_s);
            let work = per_account.entry(account_id.clone()).or_default();
            let st = work.day_states.entry(day).or_insert_with(|| {
                facts
                    .days
                    .get(&(account_id.clone(), day))
                    .cloned()
                    .unwrap_or_default()
            });
            if st.rides.iter().all(|r| r.ride != rides[i].ride) {
                st.rides.push(DayRide {
                    ride: rides[i].ride,
                    reader_time_unix_s: rides[i].reader_time_unix_s,
                    route: rides[i].route.clone(),
                    operator: rides[i].operator.clone(),
                    profile: vr.profile,
                    posted_minor: 0,
                    revisions: 0,
                });
            }
            new_ride_index.insert(rides[i].ride, i);
            work.touched.insert(day);
            let mut r = self.base(i, Outcome::Charged);
            r.account_id = Some(account_id.clone());
            r.credential_id = Some(vr.credential_id);
            r.device_seq = Some(vr.device_seq);
            self.results[i] = Some(r);
        }
        (per_account, new_ride_index)
    }

    /// Merges the accounts' ratings (in account order) into the output and
    /// the new rides' results.
    fn apply_ratings(&mut self, rated: Vec<AccountOut>) {
        for a in rated {
            self.out.postings.extend(a.postings);
            self.out.days.extend(a.days);
            self.out.result_updates.extend(a.result_updates);
            for (i, outcome, amount, day, result) in a.new_results {
                let r = self.results[i].as_mut().expect("chargeable result set");
                r.outcome = outcome;
                r.amount_minor = amount;
                r.service_day = day;
                r.result = result;
            }
        }
    }
}

/// One account's share of a chunk, before rating.
#[derive(Default)]
struct AccountWork {
    touched: BTreeSet<Date>,
    day_states: HashMap<Date, DayState>,
}

/// What rating one account produced.
#[derive(Default)]
struct AccountOut {
    postings: Vec<fare_ledger::Posting>,
    days: Vec<(String, Date, DayState)>,
    result_updates: Vec<ResultUpdate>,
    /// (ride index in the chunk, outcome, fare, service day, result code)
    new_results: Vec<(usize, Outcome, i64, String, Outcome)>,
}

fn rate_account(
    account_id: &str,
    mut work: AccountWork,
    facts: &Facts<'_>,
    new_ride_index: &HashMap<RideId, usize>,
) -> AccountOut {
    let mut rating = AccountRating {
        account_id,
        facts,
        new_ride_index,
        out: AccountOut::default(),
        totals: HashMap::new(),
        running_balance: facts.balances.get(account_id).copied().unwrap_or(0),
        limit: facts
            .accounts
            .get(account_id)
            .map(|a| a.credit_limit_minor)
            .unwrap_or(0),
    };
    for day in days_to_rate(account_id, &work, facts) {
        let st = work
            .day_states
            .remove(&day)
            .or_else(|| facts.days.get(&(account_id.to_string(), day)).cloned())
            .unwrap_or_default();
        rating.rate(day, st);
    }
    rating.out
}

/// The days a chunk's new rides can change: each touched day and, with a
/// rolling cap, the days after it that hold rides.
fn days_to_rate(account_id: &str, work: &AccountWork, facts: &Facts<'_>) -> BTreeSet<Date> {
    let mut to_rate = BTreeSet::new();
    for d in &work.touched {
        for a in facts.tariff.days_affected_by(*d) {
            if work.day_states.contains_key(&a)
                || facts.days.contains_key(&(account_id.to_string(), a))
            {
                to_rate.insert(a);
            }
        }
    }
    to_rate
}

/// The totals of a rated day, as the rolling cap of later days needs them.
fn prior_of(day: Date, st: &DayState) -> PriorDay {
    PriorDay {
        day,
        charged_minor: st.rides.iter().map(|r| r.posted_minor).sum(),
        paid_rides: st.rides.iter().filter(|r| r.posted_minor > 0).count() as u32,
    }
}

/// One account's days being rated in date order.
struct AccountRating<'a, 'f> {
    account_id: &'a str,
    facts: &'a Facts<'f>,
    new_ride_index: &'a HashMap<RideId, usize>,
    out: AccountOut,
    /// Totals of the days rated so far (they win over the stored ones).
    totals: HashMap<Date, PriorDay>,
    /// The passenger balance as the rides posted so far leave it.
    running_balance: i64,
    limit: i64,
}

impl AccountRating<'_, '_> {
    /// Rates `day` (state `st`) and posts each ride's difference.
    fn rate(&mut self, day: Date, mut st: DayState) {
        let tariff = self.facts.tariff;
        let prior: Vec<PriorDay> = tariff
            .prior_days_needed(day)
            .into_iter()
            .filter_map(|p| {
                self.totals.get(&p).copied().or_else(|| {
                    let stored = self.facts.days.get(&(self.account_id.to_string(), p));
                    stored.map(|s| prior_of(p, s))
                })
            })
            .collect();
        let to_rate: Vec<RideToRate> = st
            .rides
            .iter()
            .map(|r| RideToRate {
                ride_key: ride_key_str(r.ride),
                at_unix_s: r.reader_time_unix_s,
                operator: r.operator.clone(),
                route: r.route.clone(),
                profile: r.profile,
            })
            .collect();
        let rating = match rate_day(tariff, day, &to_rate, &prior) {
            Ok(r) => r,
            // Unreachable with rides grouped by service_day and unique ride
            // ids; keep what was posted rather than guess.
            Err(e) => {
                tracing::error!(account = %self.account_id, %day, error = %e, "rating failed; day left as posted");
                self.totals.insert(day, prior_of(day, &st));
                self.out.days.push((self.account_id.to_string(), day, st));
                return;
            }
        };
        let by_key: HashMap<&str, &fare_tariff::RatedRide> = rating
            .rides
            .iter()
            .map(|r| (r.ride_key.as_str(), r))
            .collect();
        // Post in time order so `over_credit_limit` marks the ride that crossed
        // the limit: replay the day's fares (not the adjustments, whose order
        // depends on upload order) on top of the balance without this day.
        st.rides.sort_by_key(|r| (r.reader_time_unix_s, r.ride));
        self.running_balance += st.rides.iter().map(|r| r.posted_minor).sum::<i64>();
        for dr in st.rides.iter_mut() {
            self.post(day, dr, by_key[ride_key_str(dr.ride).as_str()]);
        }
        self.totals.insert(day, rating.prior_day());
        self.out.days.push((self.account_id.to_string(), day, st));
    }

    /// Posts the difference between what ride `dr` has posted and its new
    /// fare, and files its result (new ride) or result update (earlier ride).
    fn post(&mut self, day: Date, dr: &mut DayRide, rated: &fare_tariff::RatedRide) {
        let parties = RideParties {
            ride_key: ride_key_str(dr.ride),
            account_id: self.account_id.to_string(),
            operator: dr.operator.clone(),
            service_day: day,
        };
        let state = RideState {
            net_minor: dr.posted_minor,
            revisions: dr.revisions,
        };
        match reconcile_ride(&parties, state, rated.fare_minor) {
            Ok(Some(p)) => {
                self.out.postings.push(p);
                dr.posted_minor = rated.fare_minor;
                dr.revisions += 1;
            }
            Ok(None) => {}
            // Only for out-of-range keys or fares, which validation upstream
            // excludes; leave the ride as posted rather than guess.
            Err(e) => {
                tracing::error!(ride = %dr.ride, error = %e, "ride posting refused by the ledger")
            }
        }
        self.running_balance -= dr.posted_minor;
        let outcome = outcome_of(rated.outcome);
        let result = if rated.fare_minor > 0 && over_credit_limit(self.running_balance, self.limit)
        {
            Outcome::OverCreditLimit
        } else {
            outcome
        };
        match self.new_ride_index.get(&dr.ride) {
            Some(&i) => {
                self.out
                    .new_results
                    .push((i, outcome, rated.fare_minor, day.to_string(), result));
            }
            None => self.out.result_updates.push(ResultUpdate {
                ride: dr.ride,
                outcome,
                amount_minor: rated.fare_minor,
                revision: dr.revisions,
                result,
            }),
        }
    }
}
