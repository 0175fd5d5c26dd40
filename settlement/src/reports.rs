//! Reports (JSON and CSV): revenue and rides per operator / route / service
//! day, outstanding debt, deny list, fraud events, reader incidents and the
//! exposure bound per account (DESIGN.md §2).

use crate::core::passenger_account;
use crate::error::StoreError;
use crate::model::*;
use crate::store::Db;
use fare_tariff::Tariff;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// One line of the daily report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DailyLine {
    /// Service day.
    pub service_day: String,
    /// Operator.
    pub operator: String,
    /// Route.
    pub route: String,
    /// Rides rated (charged, transfer, capped, free, promotion).
    pub rides: u64,
    /// Revenue (sum of current fares).
    pub revenue_minor: i64,
    /// Rides refused at settlement (forged, invalid time, duplicate, unknown credential).
    pub refused_rides: u64,
}

/// Daily revenue and rides per operator and route, for one day or all.
pub fn daily(db: &Db, day: Option<&str>) -> Result<Vec<DailyLine>, StoreError> {
    let mut map: BTreeMap<(String, String, String), DailyLine> = BTreeMap::new();
    // Disputed fares are held in suspense, not revenue (DESIGN §4.8): the
    // charged ride's line gives up the held amount, and the line of the ride
    // a resolution awarded it to gains it. (reader id, seq) → amount ± .
    let mut moves: BTreeMap<(u32, u64), i64> = BTreeMap::new();
    for d in db.disputes()? {
        let charged = (d.charged_ride.reader_id, d.charged_ride.reader_seq);
        *moves.entry(charged).or_default() -= d.held_minor;
        if let Some(res) = &d.resolution {
            let awarded = d
                .sightings
                .iter()
                .find(|(ride, _)| ride.reader_id == res.award_reader_id)
                .map(|(ride, _)| (ride.reader_id, ride.reader_seq));
            if let Some(a) = awarded {
                *moves.entry(a).or_default() += d.held_minor;
            }
        }
    }
    for r in db.results()? {
        if day.is_some_and(|d| d != r.service_day) {
            continue;
        }
        let line = map
            .entry((r.service_day.clone(), r.operator.clone(), r.route.clone()))
            .or_insert_with(|| DailyLine {
                service_day: r.service_day.clone(),
                operator: r.operator.clone(),
                route: r.route.clone(),
                rides: 0,
                revenue_minor: 0,
                refused_rides: 0,
            });
        if r.outcome.is_rated() {
            line.rides += 1;
            line.revenue_minor += r.amount_minor;
        } else {
            line.refused_rides += 1;
        }
        if let Some(m) = moves.get(&(r.ride.reader_id, r.ride.reader_seq)) {
            line.revenue_minor += m;
        }
    }
    Ok(map.into_values().collect())
}

/// CSV of the daily report.
pub fn daily_csv(lines: &[DailyLine]) -> String {
    let mut s = String::from("service_day,operator,route,rides,revenue_minor,refused_rides\n");
    for l in lines {
        let _ = writeln!(
            s,
            "{},{},{},{},{},{}",
            csv_field(&l.service_day),
            csv_field(&l.operator),
            csv_field(&l.route),
            l.rides,
            l.revenue_minor,
            l.refused_rides
        );
    }
    s
}

/// Quotes a CSV field when needed (and neutralises spreadsheet formulas).
pub fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@']) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// An account's debt and exposure.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountExposure {
    /// Account.
    pub account_id: String,
    /// Balance (negative: debt).
    pub balance_minor: i64,
    /// Debt now.
    pub debt_minor: i64,
    /// Credit limit.
    pub credit_limit_minor: i64,
    /// On the deny list.
    pub revoked: bool,
    /// Latest validity end of its credentials (0: none).
    pub latest_credential_until_unix_s: u64,
    /// Upper bound of unpaid riding: the credit limit plus what it can ride
    /// before its last credential expires on readers that have not seen the
    /// deny list: `daily cap × service days touched until expiry (+ skew)`,
    /// further bounded by the rolling 7-day cap. `None` when the tariff has
    /// no cap (then only credential lifetime bounds the number of rides).
    pub exposure_bound_minor: Option<i64>,
}

/// Debt and exposure of every account (sorted by debt, largest first).
pub fn exposure(
    db: &Db,
    tariff: &Tariff,
    now: u64,
    skew_s: u64,
) -> Result<Vec<AccountExposure>, StoreError> {
    let revoked: std::collections::HashSet<String> = db.revoked_accounts()?.into_iter().collect();
    let spec = tariff.spec();
    let mut out = Vec::new();
    for a in db.accounts()? {
        let bal = db.balance(&passenger_account(&a.account_id))?;
        let latest = db
            .credentials_of(&a.account_id)?
            .iter()
            .map(|c| c.valid_until_unix_s)
            .max()
            .unwrap_or(0);
        let remaining_s = (latest + skew_s).saturating_sub(now);
        // Service days a span of `remaining_s` can touch: ceil(days) + 1.
        let days = if latest == 0 || remaining_s == 0 {
            0
        } else {
            remaining_s.div_ceil(86_400) as i64 + 1
        };
        let by_daily = spec.daily_cap_minor.map(|c| c * days);
        let by_rolling = spec
            .rolling_7_day_cap
            .as_ref()
            .and_then(|r| r.amount_minor)
            .map(|c| c * ((days + 6) / 7).max(if days > 0 { 1 } else { 0 }));
        let ride_bound = match (by_daily, by_rolling) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let ride_bound = if days == 0 { Some(0) } else { ride_bound };
        out.push(AccountExposure {
            debt_minor: (-bal).max(0),
            balance_minor: bal,
            credit_limit_minor: a.credit_limit_minor,
            revoked: revoked.contains(&a.account_id),
            latest_credential_until_unix_s: latest,
            exposure_bound_minor: ride_bound.map(|b| a.credit_limit_minor + b),
            account_id: a.account_id,
        });
    }
    out.sort_by(|x, y| {
        y.debt_minor
            .cmp(&x.debt_minor)
            .then(x.account_id.cmp(&y.account_id))
    });
    Ok(out)
}

/// CSV of the exposure report.
pub fn exposure_csv(rows: &[AccountExposure]) -> String {
    let mut s = String::from(
        "account_id,balance_minor,debt_minor,credit_limit_minor,revoked,latest_credential_until_unix_s,exposure_bound_minor\n",
    );
    for r in rows {
        let _ = writeln!(
            s,
            "{},{},{},{},{},{},{}",
            csv_field(&r.account_id),
            r.balance_minor,
            r.debt_minor,
            r.credit_limit_minor,
            r.revoked,
            r.latest_credential_until_unix_s,
            r.exposure_bound_minor
                .map(|v| v.to_string())
                .unwrap_or_default()
        );
    }
    s
}

/// CSV of incidents.
pub fn incidents_csv(rows: &[Incident]) -> String {
    let mut s = String::from("reader_id,kind,seq,at_unix_s,detail\n");
    for r in rows {
        let _ = writeln!(
            s,
            "{},{},{},{},{}",
            r.reader_id,
            r.kind,
            r.seq,
            r.at_unix_s,
            csv_field(&r.detail)
        );
    }
    s
}

/// CSV of fraud events.
pub fn fraud_csv(rows: &[FraudEvent]) -> String {
    let mut s =
        String::from("kind,credential_id,account_id,device_seq,charged_ride,duplicate_ride\n");
    for r in rows {
        let _ = writeln!(
            s,
            "{},{},{},{},{},{}",
            r.kind,
            r.credential_id,
            csv_field(r.account_id.as_deref().unwrap_or("")),
            r.device_seq,
            r.charged_ride,
            r.duplicate_ride
        );
    }
    s
}

/// Ledger totals: every balance and their sum (zero when the ledger balances).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerReport {
    /// Balances by ledger account.
    pub balances: BTreeMap<String, i64>,
    /// Sum of all balances (always 0).
    pub sum_minor: i64,
    /// Postings.
    pub postings: u64,
}

/// The ledger report.
pub fn ledger(db: &Db) -> Result<LedgerReport, StoreError> {
    let balances: BTreeMap<String, i64> = db.balances()?.into_iter().collect();
    Ok(LedgerReport {
        sum_minor: balances.values().sum(),
        postings: db.posting_count()?,
        balances,
    })
}
