//! The oracle: from its own record of the day (what readers answered, which
//! scans were attacks, which faults were injected) it computes what every
//! account must be charged and every operator credited (rating with
//! fare-tariff's pure `rate_day`, the tariff's specification), which attacks
//! must be caught, and checks DESIGN.md §4's invariants against settlement.

use crate::adapters::SettledRide;
use crate::sim::{CodeKey, Expect, Rider, World};
use fare_tariff::{rate_day, RideToRate, Tariff};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// Accounts whose ledger postings are re-added one by one (all when fewer).
pub const LEDGER_SAMPLE_ACCOUNTS: usize = 2_000;
/// Differences listed in a failure message, at most.
pub const MAX_LISTED: usize = 10;

/// Jepsen's queue checker's counters, for rides.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct QueueCounts {
    /// Rides readers answered accept for.
    pub acknowledged: u64,
    /// Of those, held by settlement with the same code.
    pub delivered: u64,
    /// Acknowledged, expected at settlement, never delivered.
    pub lost: u64,
    /// Codes rated more than once.
    pub duplicated: u64,
    /// Rides at settlement no reader accepted (and no declared attack made).
    pub unexpected: u64,
    /// Delivered although an upload of them timed out.
    pub recovered: u64,
    /// Erased by a restore from an old backup (the injected fault's loss).
    pub lost_to_restore: u64,
    /// Withheld by a declared compromised reader.
    pub withheld_by_compromised_reader: u64,
}

/// Attempted vs caught.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct AttackCount {
    /// Attempts.
    pub attempted: u64,
    /// Caught (refused at the reader or at settlement).
    pub caught: u64,
    /// Attempts no invariant requires caught: a stolen phone rides until
    /// its owner's report reaches the bus's deny list.
    pub need_not_be_caught: u64,
}

/// The oracle's verdict.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Verdict {
    /// Invariant → held.
    pub invariants: BTreeMap<String, bool>,
    /// Why each failed invariant failed.
    pub failures: Vec<String>,
    /// Queue counters.
    pub queue: QueueCounts,
    /// Attacks by kind.
    pub attacks: BTreeMap<String, AttackCount>,
    /// Revenue by operator: the oracle's.
    pub expected_revenue: BTreeMap<String, i64>,
    /// Revenue by operator: settlement's daily report.
    pub settled_revenue: BTreeMap<String, i64>,
    /// Accounts on the deny list at the end.
    pub deny_listed: Vec<String>,
    /// Total debt at the end.
    pub total_debt_minor: i64,
    /// Accounts in debt.
    pub accounts_in_debt: u64,
    /// Rides settled by outcome.
    pub settled_by_outcome: BTreeMap<String, u64>,
    /// Fraud events (same code on two rides).
    pub fraud_events: u64,
    /// Incidents by kind.
    pub incidents: BTreeMap<String, u64>,
}

struct RideInfo {
    reader: u32,
    seq: u64,
    reader_time: u64,
    operator: String,
    route: String,
}

fn fail(v: &mut Verdict, name: &str, why: String) {
    v.invariants.insert(name.to_string(), false);
    v.failures.push(format!("{name}: {why}"));
}

fn hold(v: &mut Verdict, name: &str) {
    v.invariants.entry(name.to_string()).or_insert(true);
}

/// What the oracle reads of settlement's reports and ledger, none of which
/// depends on the oracle's own figures: read on a second thread while the
/// oracle works those out (on a city's day each side takes seconds).
struct Reports {
    /// Revenue by operator, from the daily report.
    revenue: BTreeMap<String, i64>,
    /// `(sum of all balances, posting count, operator balances)`.
    ledger: (i64, u64, BTreeMap<String, i64>),
    revoked: BTreeSet<String>,
    exposure: BTreeMap<String, (i64, Option<i64>)>,
    /// Each of `enrolled`'s balances, in its order, and for every `step`-th
    /// the sum of its postings.
    balances: Vec<(i64, Option<i64>)>,
}

impl Reports {
    fn read(w: &World, enrolled: &[&Rider]) -> Result<Reports, String> {
        let s = &w.settlement;
        let step = (enrolled.len() / LEDGER_SAMPLE_ACCOUNTS).max(1);
        let balances = enrolled
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let sum = (i % step == 0)
                    .then(|| s.postings_sum(&r.account))
                    .transpose()?;
                Ok((s.balance(&r.account)?, sum))
            })
            .collect::<Result<_, String>>()?;
        Ok(Reports {
            revenue: s.revenue_by_operator()?,
            ledger: s.ledger()?,
            revoked: s.revoked_accounts()?.into_iter().collect(),
            exposure: s.exposure()?,
            balances,
        })
    }
}

/// Checks the run.
pub fn check(w: &World) -> Result<Verdict, String> {
    // The riders settlement knows (enrolled at setup), in the riders'
    // order: the reports' balances come in this order.
    let enrolled: Vec<&Rider> = w.riders.iter().filter(|r| r.phone.is_some()).collect();
    std::thread::scope(|scope| {
        let reports = scope.spawn(|| Reports::read(w, &enrolled));
        judge(w, &enrolled, || {
            reports
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    })
}

/// The oracle's figures against settlement's; `reports` gives settlement's
/// reports (read for `enrolled`) when they are first needed.
fn judge(
    w: &World,
    enrolled: &[&Rider],
    reports: impl FnOnce() -> Result<Reports, String>,
) -> Result<Verdict, String> {
    let mut v = Verdict::default();
    for name in [
        "accepted_rides_durable",
        "exactly_once_delivery",
        "genuine_charged_once",
        "ledger_balances",
        "charges_match_oracle",
        "deny_list_matches_debt",
        "deny_list_enforced",
        "no_forgery_accepted",
        "no_genuine_refused_as_forgery",
        "exposure_bound_held",
        "attacks_caught",
        "reader_chains_valid",
        "forks_and_gaps_loud",
        "duplicates_held_charged_once",
        "reports_match_ledger",
        "bad_input_changes_nothing",
    ] {
        hold(&mut v, name);
    }
    for (name, why) in &w.violations {
        fail(&mut v, name, why.clone());
    }
    let s = &w.settlement;
    let results = s.results()?;
    let by_ride: BTreeMap<(u32, u64), &SettledRide> =
        results.iter().map(|r| ((r.reader_id, r.seq), r)).collect();
    for r in &results {
        *v.settled_by_outcome.entry(r.outcome.clone()).or_insert(0) += 1;
    }
    let incidents = s.incidents()?;
    for (_, kind, _) in &incidents {
        *v.incidents.entry(kind.clone()).or_insert(0) += 1;
    }
    let fraud = s.fraud_events()?;
    v.fraud_events = fraud.len() as u64;
    let rider_of: BTreeMap<[u8; 16], usize> = w
        .riders
        .iter()
        .enumerate()
        .filter(|(_, r)| r.phone.is_some())
        .flat_map(|(i, r)| r.credentials.iter().map(move |c| (*c, i)))
        .collect();

    // ---- the ride universe: what readers accepted, plus declared fakes.
    let compromised: BTreeMap<u32, &crate::sim::Compromise> = w
        .compromises
        .iter()
        .filter(|c| c.declared)
        .map(|c| (c.reader, c))
        .collect();
    let restored: BTreeMap<u32, &crate::sim::Restore> =
        w.restores.iter().map(|r| (r.reader, r)).collect();
    let mut expected_at: BTreeSet<(u32, u64)> = BTreeSet::new();
    let mut universe: BTreeMap<(u32, u64), (RideInfo, Option<CodeKey>, bool)> = BTreeMap::new();
    let mut lost = Vec::new();
    v.queue.acknowledged = w.journal.len() as u64;
    let mut failed: BTreeMap<u32, Vec<(u64, u64)>> = BTreeMap::new();
    for (bus, first, last) in &w.failed_uploads {
        failed.entry(*bus).or_default().push((*first, *last));
    }
    let upload_failed = |bus: u32, seq: u64| {
        failed
            .get(&bus)
            .is_some_and(|l| l.iter().any(|(a, b)| (*a..=*b).contains(&seq)))
    };
    for a in &w.journal {
        let bus = &w.buses[a.bus as usize];
        let rid = bus.ident.reader_id;
        let info = RideInfo {
            reader: rid,
            seq: a.seq,
            reader_time: a.reader_time,
            operator: bus.ident.operator.clone(),
            route: bus.ident.route.clone(),
        };
        let held = by_ride
            .get(&(rid, a.seq))
            .is_some_and(|r| r.code_key.is_some() && r.code_key == a.code);
        if let Some(c) = compromised.get(&rid) {
            if a.seq > c.honest_to {
                v.queue.withheld_by_compromised_reader += 1;
                continue;
            }
            if Some(a.seq) == c.altered {
                expected_at.insert((rid, a.seq));
                continue;
            }
        }
        if let Some(r) = restored.get(&rid) {
            if a.seq > r.backup_last {
                if held {
                    v.queue.delivered += 1;
                    expected_at.insert((rid, a.seq));
                    universe.insert((rid, a.seq), (info, a.code, a.genuine));
                } else {
                    v.queue.lost_to_restore += 1;
                }
                continue;
            }
        }
        expected_at.insert((rid, a.seq));
        if held {
            v.queue.delivered += 1;
            if upload_failed(a.bus, a.seq) {
                v.queue.recovered += 1;
            }
            universe.insert((rid, a.seq), (info, a.code, a.genuine));
        } else {
            v.queue.lost += 1;
            if lost.len() < MAX_LISTED {
                lost.push(format!("{rid}/{} ({})", a.seq, a.tag));
            }
        }
    }
    for c in compromised.values() {
        for (seq, rt, key, genuine) in &c.fake_rides {
            expected_at.insert((c.reader, *seq));
            let bus = &w.buses[c.reader as usize - 1];
            universe.insert(
                (c.reader, *seq),
                (
                    RideInfo {
                        reader: c.reader,
                        seq: *seq,
                        reader_time: *rt,
                        operator: bus.ident.operator.clone(),
                        route: bus.ident.route.clone(),
                    },
                    *key,
                    *genuine,
                ),
            );
        }
    }
    let unexpected: Vec<String> = results
        .iter()
        .filter(|r| !expected_at.contains(&(r.reader_id, r.seq)))
        .map(|r| format!("{}/{} ({})", r.reader_id, r.seq, r.outcome))
        .collect();
    v.queue.unexpected = unexpected.len() as u64;

    // ---- exactly one rated ride per genuine code.
    let mut rated_by_code: BTreeMap<CodeKey, Vec<(u32, u64)>> = BTreeMap::new();
    for r in results.iter().filter(|r| r.rated) {
        if let Some(k) = r.code_key {
            rated_by_code
                .entry(k)
                .or_default()
                .push((r.reader_id, r.seq));
        }
    }
    let dups: Vec<String> = rated_by_code
        .iter()
        .filter(|(_, l)| l.len() > 1)
        .map(|(_, l)| format!("{l:?}"))
        .collect();
    v.queue.duplicated = dups.len() as u64;
    if v.queue.lost > 0 || v.queue.unexpected > 0 || v.queue.duplicated > 0 {
        let why = format!(
            "lost {} {:?}, unexpected {} {:?}, duplicated {} {:?}",
            v.queue.lost,
            lost,
            v.queue.unexpected,
            unexpected.iter().take(MAX_LISTED).collect::<Vec<_>>(),
            v.queue.duplicated,
            dups.iter().take(MAX_LISTED).collect::<Vec<_>>()
        );
        fail(&mut v, "exactly_once_delivery", why);
    }
    let mut genuine_codes: BTreeSet<CodeKey> = BTreeSet::new();
    for ((rid, seq), (_, key, genuine)) in &universe {
        match (key, genuine) {
            (Some(k), true) => {
                genuine_codes.insert(*k);
            }
            _ => {
                if by_ride.get(&(*rid, *seq)).is_some_and(|r| r.rated) {
                    fail(
                        &mut v,
                        "genuine_charged_once",
                        format!("non-genuine ride {rid}/{seq} was rated"),
                    );
                }
            }
        }
    }
    for k in &genuine_codes {
        let n = rated_by_code.get(k).map_or(0, Vec::len);
        if n != 1 {
            fail(
                &mut v,
                "genuine_charged_once",
                format!("a genuine code delivered to settlement is rated {n} times"),
            );
        }
    }

    // ---- the oracle's rating.
    let tariff = Tariff::from_spec(w.scenario.tariff_spec()).map_err(|e| e.to_string())?;
    let mut per_account: BTreeMap<String, Vec<RideToRate>> = BTreeMap::new();
    for (k, rides) in &rated_by_code {
        let Some(&(rid, seq)) = rides.first() else {
            continue;
        };
        let Some((info, _, true)) = universe.get(&(rid, seq)) else {
            continue;
        };
        let Some(&ri) = rider_of.get(&k.0) else {
            continue;
        };
        let rider = &w.riders[ri];
        per_account
            .entry(rider.account.clone())
            .or_default()
            .push(RideToRate {
                ride_key: format!("{}:{}", info.reader, info.seq),
                at_unix_s: info.reader_time,
                operator: info.operator.clone(),
                route: info.route.clone(),
                profile: rider.profile,
            });
    }
    let mut expected_charge: BTreeMap<String, i64> = BTreeMap::new();
    let mut expected_fare: BTreeMap<(u32, u64), i64> = BTreeMap::new();
    for (acct, rides) in &per_account {
        // Rides may fall on more than one service day (a jumped reader clock): rate each.
        let mut days: BTreeMap<fare_tariff::Date, Vec<RideToRate>> = BTreeMap::new();
        for r in rides {
            let d = tariff.service_day(r.at_unix_s).map_err(|e| e.to_string())?;
            days.entry(d).or_default().push(r.clone());
        }
        let mut prior = Vec::new();
        for (d, list) in days {
            let rated = rate_day(&tariff, d, &list, &prior).map_err(|e| e.to_string())?;
            prior.push(rated.prior_day());
            *expected_charge.entry(acct.clone()).or_insert(0) += rated.charged_minor;
            for rr in &rated.rides {
                let (a, b) = rr.ride_key.split_once(':').unwrap_or(("0", "0"));
                expected_fare.insert(
                    (a.parse().unwrap_or(0), b.parse().unwrap_or(0)),
                    rr.fare_minor,
                );
                let op = &list
                    .iter()
                    .find(|x| x.ride_key == rr.ride_key)
                    .map(|x| x.operator.clone())
                    .unwrap_or_default();
                *v.expected_revenue.entry(op.clone()).or_insert(0) += rr.fare_minor;
            }
        }
    }
    // Disputed fares (DESIGN §4.8): a genuine code seen on two or more
    // readers is charged once, but its fare is held in suspense, not
    // credited to the charged ride's operator (nobody resolves disputes
    // during a simulated day).
    let mut readers_by_code: BTreeMap<CodeKey, BTreeSet<u32>> = BTreeMap::new();
    for ((rid, _), (_, key, genuine)) in &universe {
        if let (Some(k), true) = (key, genuine) {
            readers_by_code.entry(*k).or_default().insert(*rid);
        }
    }
    for (k, readers) in &readers_by_code {
        if readers.len() < 2 {
            continue;
        }
        let Some(&(rid, seq)) = rated_by_code.get(k).and_then(|l| l.first()) else {
            continue;
        };
        let (Some(fare), Some((info, _, _))) =
            (expected_fare.get(&(rid, seq)), universe.get(&(rid, seq)))
        else {
            continue;
        };
        *v.expected_revenue.entry(info.operator.clone()).or_insert(0) -= fare;
    }
    let mut fare_diffs = Vec::new();
    for r in results.iter().filter(|r| r.rated) {
        let want = expected_fare
            .get(&(r.reader_id, r.seq))
            .copied()
            .unwrap_or(0);
        if want != r.amount_minor && fare_diffs.len() < MAX_LISTED {
            fare_diffs.push(format!(
                "{}/{}: settlement {} oracle {want}",
                r.reader_id, r.seq, r.amount_minor
            ));
        }
    }
    if !fare_diffs.is_empty() {
        fail(
            &mut v,
            "charges_match_oracle",
            format!("ride fares differ: {fare_diffs:?}"),
        );
    }
    let reports = reports()?;
    v.settled_revenue = reports.revenue;
    let exp_rev: BTreeMap<String, i64> = v
        .expected_revenue
        .iter()
        .filter(|(_, x)| **x != 0)
        .map(|(k, x)| (k.clone(), *x))
        .collect();
    let got_rev: BTreeMap<String, i64> = v
        .settled_revenue
        .iter()
        .filter(|(_, x)| **x != 0)
        .map(|(k, x)| (k.clone(), *x))
        .collect();
    if exp_rev != got_rev {
        // Name the disputes whose held amount is not the charged ride's fare now.
        let held_diffs: Vec<String> = s
            .disputes()?
            .into_iter()
            .filter_map(|((rid, seq), op, held)| {
                let fare = results
                    .iter()
                    .find(|r| r.reader_id == rid && r.seq == seq)
                    .map(|r| r.amount_minor)?;
                (fare != held).then(|| format!("{rid}/{seq} ({op}): held {held}, fare now {fare}"))
            })
            .take(MAX_LISTED)
            .collect();
        fail(
            &mut v,
            "charges_match_oracle",
            format!(
                "revenue by operator: settlement {got_rev:?}, oracle {exp_rev:?}; \
                 disputes holding another amount than the ride's fare: {held_diffs:?}"
            ),
        );
    }
    let (sum, _, op_balances) = reports.ledger;
    if sum != 0 {
        fail(
            &mut v,
            "ledger_balances",
            format!("sum of all balances is {sum}"),
        );
    }
    let op_bal: BTreeMap<String, i64> = op_balances.into_iter().filter(|(_, x)| *x != 0).collect();
    if op_bal != got_rev {
        fail(
            &mut v,
            "reports_match_ledger",
            format!("operator revenue balances {op_bal:?} vs daily report {got_rev:?}"),
        );
    }

    // ---- accounts: charges, ledger, deny list, exposure.
    let mut charge_diffs = Vec::new();
    let mut expected_revoked = BTreeSet::new();
    let (revoked, exposure) = (reports.revoked, reports.exposure);
    for (r, (bal, postings_sum)) in enrolled.iter().zip(reports.balances) {
        let paid = w.payments.get(&r.account).copied().unwrap_or(0);
        let charged = paid - bal;
        let want = expected_charge.get(&r.account).copied().unwrap_or(0);
        if charged != want && charge_diffs.len() < MAX_LISTED {
            charge_diffs.push(format!(
                "{}: settlement charged {charged}, oracle {want}",
                r.account
            ));
        }
        if let Some(sum) = postings_sum {
            if sum != bal {
                fail(
                    &mut v,
                    "ledger_balances",
                    format!("{}: balance {bal} but postings sum to {sum}", r.account),
                );
            }
        }
        let debt = (want - paid).max(0);
        if bal < 0 {
            v.accounts_in_debt += 1;
            v.total_debt_minor += -bal;
        }
        if w.frozen.contains(&r.account) || debt > r.credit_limit.max(0) {
            expected_revoked.insert(r.account.clone());
        }
        if let Some((d, Some(bound))) = exposure.get(&r.account) {
            if d > bound {
                fail(
                    &mut v,
                    "exposure_bound_held",
                    format!("{}: debt {d} above the exposure bound {bound}", r.account),
                );
            }
        }
    }
    if !charge_diffs.is_empty() {
        fail(
            &mut v,
            "charges_match_oracle",
            format!("account charges differ: {charge_diffs:?}"),
        );
    }
    if expected_revoked != revoked {
        let missing: Vec<_> = expected_revoked
            .difference(&revoked)
            .take(MAX_LISTED)
            .collect();
        let extra: Vec<_> = revoked
            .difference(&expected_revoked)
            .take(MAX_LISTED)
            .collect();
        fail(
            &mut v,
            "deny_list_matches_debt",
            format!(
                "should be denied but are not: {missing:?}; denied but should not be: {extra:?}"
            ),
        );
    }
    v.deny_listed = revoked.into_iter().collect();

    // ---- attacks.
    let incident_set: BTreeSet<(u32, String)> =
        incidents.iter().map(|(r, k, _)| (*r, k.clone())).collect();
    // Accounts on a deny list settlement published during the day. An
    // over-limit rider is caught when its debt put it there, even when a
    // late batch re-rated its day to within the limit by the end (an earlier
    // ride from an offline bus turning the charged ride into a transfer);
    // `deny_list_matches_debt` checks the final list against the final debt.
    let denied_during_day: BTreeSet<&str> = w
        .deny_versions
        .iter()
        .flat_map(|(_, _, ids)| ids)
        .filter_map(|id| rider_of.get(id))
        .map(|&i| w.riders[i].account.as_str())
        .collect();
    let mut missed = Vec::new();
    for a in &w.attempts {
        let caught = match &a.expect {
            Expect::ReaderRefuses | Expect::RefusedIfDenied => a.reader_refused == Some(true),
            Expect::RefusedOrOneRated(k) => {
                a.reader_refused == Some(true) || rated_by_code.get(k).map_or(0, Vec::len) == 1
            }
            Expect::Outcome {
                reader,
                seq,
                outcomes,
            } => by_ride
                .get(&(*reader, *seq))
                .is_some_and(|r| outcomes.contains(&r.outcome.as_str())),
            Expect::Incident { reader, kind } => {
                incident_set.contains(&(*reader, kind.to_string()))
            }
            Expect::Revoked(acct) => {
                v.deny_listed.contains(acct)
                    || denied_during_day.contains(acct.as_str())
                    || w.payments.contains_key(acct)
                    || a.kind == "deny_listed"
            }
        };
        let e = v.attacks.entry(a.kind.to_string()).or_default();
        e.attempted += 1;
        e.need_not_be_caught += u64::from(!a.must_catch);
        if caught {
            e.caught += 1;
        } else if a.must_catch && missed.len() < MAX_LISTED {
            missed.push(format!("{} ({:?})", a.kind, a.expect));
        }
    }
    if !missed.is_empty() {
        fail(&mut v, "attacks_caught", format!("not caught: {missed:?}"));
    }
    // §4.8: a code accepted on two readers shows as a fraud event.
    let shared_twice = w
        .attempts
        .iter()
        .filter(|a| a.kind == "screenshot_shared" && a.reader_refused == Some(false))
        .count();
    if shared_twice > 0 && fraud.is_empty() {
        fail(
            &mut v,
            "duplicates_held_charged_once",
            format!("{shared_twice} shared screenshots accepted twice but no fraud event"),
        );
    }
    // §4.7: forks and gaps are loud.
    for c in &w.compromises {
        if !incidents
            .iter()
            .any(|(r, k, _)| *r == c.reader && (k == "sequence_gap" || k == "chain_fork"))
        {
            fail(
                &mut v,
                "forks_and_gaps_loud",
                format!(
                    "reader {} uploaded around a gap without an incident",
                    c.reader
                ),
            );
        }
    }
    for r in &w.restores {
        let settlement_ahead = results
            .iter()
            .any(|x| x.reader_id == r.reader && x.seq > r.backup_last);
        let loud = r.ack_beyond_log
            || incidents
                .iter()
                .any(|(i, k, _)| *i == r.reader && k == "chain_fork");
        let reader_went_on = w
            .journal
            .iter()
            .any(|a| a.bus + 1 == r.reader && a.seq > r.backup_last && a.true_time >= r.at);
        if settlement_ahead && reader_went_on && !loud {
            fail(
                &mut v,
                "forks_and_gaps_loud",
                format!(
                    "restored reader {} rewrote acknowledged history silently",
                    r.reader
                ),
            );
        }
    }
    Ok(v)
}
