//! Rating: the fares of one account's rides in one service day.

use std::collections::{BTreeSet, HashSet};

use fare_credential::Profile;
use jiff::civil::Date;
use jiff::ToSpan;
use serde::{Deserialize, Serialize};

use crate::error::RateError;
use crate::tariff::{Tariff, ROLLING_WINDOW_DAYS};

/// A ride to rate: what settlement knows about one verified ride of the account.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RideToRate {
    /// Unique id of the ride (e.g. `"7:1042"` for reader 7, sequence 1042); ties in time
    /// are broken by it, and the ledger derives posting ids from it.
    pub ride_key: String,
    /// Boarding time (reader clock), unix seconds.
    pub at_unix_s: u64,
    /// Operator id of the reader.
    pub operator: String,
    /// Route id of the reader.
    pub route: String,
    /// Concession profile from the ride code's credential.
    pub profile: Profile,
}

/// What the rolling 7-day cap needs from one earlier service day of the account.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PriorDay {
    /// The service day.
    pub day: Date,
    /// Total charged that day (sum of `fare_minor`), minor units.
    pub charged_minor: i64,
    /// Rides with a fare above zero that day.
    pub paid_rides: u32,
}

/// Why a ride costs what it costs. Stable snake_case codes ([`RideOutcome::code`]).
/// Not `#[non_exhaustive]`: settlement maps it onto `fare_ledger::RideResult`
/// with an exhaustive `match`, so a new outcome is a compile error there
/// instead of silently reading as a charge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RideOutcome {
    /// Charged its fare (full, or reduced only by a partial concession such as a student
    /// discount).
    Charged,
    /// Discounted because boarded within the transfer window of a paid ride.
    Transfer,
    /// Reduced, fully or partly, by the daily or rolling 7-day cap (see
    /// [`RatedRide::capped_by`]).
    Capped,
    /// Free because of a concession (e.g. seniors).
    Free,
    /// Reduced by a promotion (e.g. a car-free day).
    Promotion,
}

impl RideOutcome {
    /// Stable snake_case code: `charged`, `transfer`, `capped`, `free`, `promotion`.
    pub fn code(self) -> &'static str {
        match self {
            RideOutcome::Charged => "charged",
            RideOutcome::Transfer => "transfer",
            RideOutcome::Capped => "capped",
            RideOutcome::Free => "free",
            RideOutcome::Promotion => "promotion",
        }
    }
}

/// Which cap reduced a ride.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CapKind {
    /// The daily cap of the service day.
    Daily,
    /// The rolling cap over the service day and the 6 before it.
    Rolling7Day,
}

impl CapKind {
    /// Stable snake_case code: `daily`, `rolling_7_day`.
    pub fn code(self) -> &'static str {
        match self {
            CapKind::Daily => "daily",
            CapKind::Rolling7Day => "rolling_7_day",
        }
    }
}

/// How much each rule took off a ride's base fare, in application order. They sum to
/// `base_fare_minor - fare_minor`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Reductions {
    /// By the profile's concession.
    pub concession_minor: i64,
    /// By a promotion.
    pub promotion_minor: i64,
    /// By the transfer discount.
    pub transfer_minor: i64,
    /// By the daily cap.
    pub daily_cap_minor: i64,
    /// By the rolling 7-day cap.
    pub rolling_cap_minor: i64,
}

impl Reductions {
    /// Sum of all reductions.
    pub fn total_minor(&self) -> i64 {
        self.concession_minor
            + self.promotion_minor
            + self.transfer_minor
            + self.daily_cap_minor
            + self.rolling_cap_minor
    }
}

/// A rated ride.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RatedRide {
    /// The ride.
    pub ride_key: String,
    /// Boarding time, unix seconds.
    pub at_unix_s: u64,
    /// Full adult fare of the route ([`Tariff::base_fare_minor`]).
    pub base_fare_minor: i64,
    /// What the account is charged for this ride; `0 <= fare_minor <= base_fare_minor`.
    pub fare_minor: i64,
    /// The main reason for the fare: the last rule, in application order, that reduced it
    /// (a partial concession alone gives `charged`, a full one `free`).
    pub outcome: RideOutcome,
    /// The last cap that reduced the fare, if any.
    pub capped_by: Option<CapKind>,
    /// For a transfer: the paid ride whose window it used.
    pub transfer_from: Option<String>,
    /// For a promotion: its name.
    pub promotion: Option<String>,
    /// What each rule took off.
    pub reductions: Reductions,
}

/// The rating of one account's service day.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DayRating {
    /// The service day.
    pub day: Date,
    /// The rides, in rating order: by `(at_unix_s, ride_key)`.
    pub rides: Vec<RatedRide>,
    /// Sum of the fares.
    pub charged_minor: i64,
    /// Rides with a fare above zero.
    pub paid_rides: u32,
}

impl DayRating {
    /// This day's totals, as the rolling cap of the following days needs them.
    pub fn prior_day(&self) -> PriorDay {
        PriorDay {
            day: self.day,
            charged_minor: self.charged_minor,
            paid_rides: self.paid_rides,
        }
    }

    /// The rated ride with this key.
    pub fn ride(&self, ride_key: &str) -> Option<&RatedRide> {
        self.rides.iter().find(|r| r.ride_key == ride_key)
    }
}

/// `fare` less `percent` %, rounded down to the minor unit (in the rider's favour):
/// 175 at 50 % off is 87. Inputs are bounded by validation, so the product fits in `i64`.
pub fn apply_discount(fare_minor: i64, percent: i64) -> i64 {
    fare_minor * (100 - percent) / 100
}

/// The transfer window currently open: the last paid ride and how many transfers it gave.
struct Window<'a> {
    ride: &'a RideToRate,
    transfers: u32,
}

/// Rates one account's rides of one service day. Pure and deterministic.
///
/// * `day`: the service day; every ride must belong to it ([`Tariff::service_day`]).
/// * `rides`: all the account's rides of that day, in any order, ride keys unique. They
///   are rated in `(at_unix_s, ride_key)` order, so any permutation gives the same result.
/// * `prior_days`: totals of earlier service days ([`DayRating::prior_day`]); only the 6
///   days before `day` are used, missing days count as zero, others are ignored. Unused
///   without a rolling cap.
///
/// Rules, in this order for each ride (see the crate docs for the worked examples):
/// 1. base fare of the route; 2. concession percent off; 3. the best matching promotion
///    percent off; 4. transfer percent off if within the window of the last paid ride;
///    5. daily cap; 6. rolling 7-day cap (amount, then paid-ride count).
///
/// Errors: a ride of another service day, a repeated ride key, a timestamp out of range,
/// or two `prior_days` entries for the same day.
pub fn rate_day(
    tariff: &Tariff,
    day: Date,
    rides: &[RideToRate],
    prior_days: &[PriorDay],
) -> Result<DayRating, RateError> {
    let mut keys = HashSet::with_capacity(rides.len());
    for r in rides {
        if !keys.insert(r.ride_key.as_str()) {
            return Err(RateError::DuplicateRideKey {
                ride_key: r.ride_key.clone(),
            });
        }
        let ride_day = tariff
            .service_day(r.at_unix_s)
            .map_err(|source| RateError::Time {
                ride_key: r.ride_key.clone(),
                source,
            })?;
        if ride_day != day {
            return Err(RateError::RideOutsideServiceDay {
                ride_key: r.ride_key.clone(),
                ride_day,
                day,
            });
        }
    }

    // Rolling window: the 6 service days before `day`.
    let (mut prior_charged, mut prior_paid) = (0i64, 0u64);
    let oldest = day.checked_sub((ROLLING_WINDOW_DAYS - 1).days()).ok();
    let mut seen = BTreeSet::new();
    for p in prior_days {
        if p.day >= day || oldest.is_some_and(|o| p.day < o) {
            continue;
        }
        if !seen.insert(p.day) {
            return Err(RateError::DuplicatePriorDay { day: p.day });
        }
        prior_charged = prior_charged.saturating_add(p.charged_minor.max(0));
        prior_paid += u64::from(p.paid_rides);
    }

    let mut order: Vec<&RideToRate> = rides.iter().collect();
    order.sort_by(|a, b| (a.at_unix_s, &a.ride_key).cmp(&(b.at_unix_s, &b.ride_key)));

    let spec = tariff.spec();
    let weekday = day.weekday();
    let rolling = spec.rolling_7_day_cap.as_ref();
    let mut window: Option<Window<'_>> = None;
    let (mut day_charged, mut day_paid) = (0i64, 0u32);
    let mut out = Vec::with_capacity(order.len());

    for ride in order {
        let base = tariff.base_fare_minor(&ride.operator, &ride.route);
        let mut red = Reductions::default();
        let mut fare = base;

        // 1. Concession.
        let f = apply_discount(fare, tariff.concession_percent(ride.profile));
        red.concession_minor = fare - f;
        fare = f;

        // 2. Promotion: the largest discount among those that match the service day,
        //    the operator and the profile (the first listed wins a tie).
        let mut promotion = None;
        let mut best = 0;
        for (p, ps) in tariff.promotions.iter().zip(&spec.promotions) {
            let on_day = p.weekdays.contains(&weekday) || p.dates.contains(&day);
            let for_operator = p.operators.is_empty() || p.operators.contains(&ride.operator);
            let for_profile = p.profiles.is_empty() || p.profiles.contains(&ride.profile);
            if on_day && for_operator && for_profile && p.discount_percent > best {
                best = p.discount_percent;
                promotion = Some(ps.name.clone());
            }
        }
        let f = apply_discount(fare, best);
        red.promotion_minor = fare - f;
        fare = f;

        // 3. Transfer. Only a ride that still costs something uses or opens a window, so
        //    free rides never consume a transfer.
        let mut transfer_from = None;
        if fare > 0 {
            let mut is_transfer = false;
            if let (Some(t), Some(w)) = (&spec.transfer, window.as_mut()) {
                let within = ride.at_unix_s - w.ride.at_unix_s <= t.window_s;
                let has_left = t.max_transfers.is_none_or(|m| w.transfers < m);
                let other_route = t.allow_same_route
                    || (w.ride.operator != ride.operator || w.ride.route != ride.route);
                if within && has_left && other_route {
                    is_transfer = true;
                    w.transfers += 1;
                    transfer_from = Some(w.ride.ride_key.clone());
                    let f = apply_discount(fare, t.discount_percent);
                    red.transfer_minor = fare - f;
                    fare = f;
                }
            }
            if !is_transfer && spec.transfer.is_some() {
                // A paid ride opens a new window, replacing the previous one.
                window = Some(Window { ride, transfers: 0 });
            }
        }

        // 4. Daily cap.
        if let Some(cap) = spec.daily_cap_minor {
            let f = fare.min((cap - day_charged).max(0));
            red.daily_cap_minor = fare - f;
            fare = f;
        }

        // 5. Rolling 7-day cap, by amount and by paid rides.
        if let Some(rc) = rolling {
            let mut f = fare;
            if let Some(cap) = rc.amount_minor {
                f = f.min(
                    cap.saturating_sub(prior_charged)
                        .saturating_sub(day_charged)
                        .max(0),
                );
            }
            if let Some(n) = rc.paid_rides {
                if prior_paid + u64::from(day_paid) >= u64::from(n) {
                    f = 0;
                }
            }
            red.rolling_cap_minor = fare - f;
            fare = f;
        }

        let capped_by = if red.rolling_cap_minor > 0 {
            Some(CapKind::Rolling7Day)
        } else if red.daily_cap_minor > 0 {
            Some(CapKind::Daily)
        } else {
            None
        };
        let outcome = if capped_by.is_some() {
            RideOutcome::Capped
        } else if red.transfer_minor > 0 {
            RideOutcome::Transfer
        } else if red.promotion_minor > 0 {
            RideOutcome::Promotion
        } else if red.concession_minor > 0 && fare == 0 {
            RideOutcome::Free
        } else {
            RideOutcome::Charged
        };

        day_charged += fare;
        if fare > 0 {
            day_paid += 1;
        }
        out.push(RatedRide {
            ride_key: ride.ride_key.clone(),
            at_unix_s: ride.at_unix_s,
            base_fare_minor: base,
            fare_minor: fare,
            outcome,
            capped_by,
            transfer_from,
            promotion: if red.promotion_minor > 0 {
                promotion
            } else {
                None
            },
            reductions: red,
        });
    }

    Ok(DayRating {
        day,
        rides: out,
        charged_minor: day_charged,
        paid_rides: day_paid,
    })
}

/// Rates several service days of one account in date order, each day's rolling cap seeing
/// the days rated before it: what settlement runs after a late batch for days *D* ..
/// *D*+6 ([`Tariff::days_affected_by`]).
///
/// * `rides`: the account's rides of the days to rate, any order; grouped by
///   [`Tariff::service_day`]. Days without rides get no [`DayRating`].
/// * `earlier`: totals of days before them (at least the 6 before the first day, when the
///   tariff has a rolling cap); an entry for a day that is rated here is replaced by the
///   new rating.
///
/// Returns one [`DayRating`] per day that has rides, oldest first.
pub fn rate_days(
    tariff: &Tariff,
    rides: &[RideToRate],
    earlier: &[PriorDay],
) -> Result<Vec<DayRating>, RateError> {
    let mut keys = HashSet::with_capacity(rides.len());
    let mut by_day: std::collections::BTreeMap<Date, Vec<RideToRate>> = Default::default();
    for r in rides {
        if !keys.insert(r.ride_key.as_str()) {
            return Err(RateError::DuplicateRideKey {
                ride_key: r.ride_key.clone(),
            });
        }
        let day = tariff
            .service_day(r.at_unix_s)
            .map_err(|source| RateError::Time {
                ride_key: r.ride_key.clone(),
                source,
            })?;
        by_day.entry(day).or_default().push(r.clone());
    }
    let mut prior: std::collections::BTreeMap<Date, PriorDay> = Default::default();
    for p in earlier {
        if prior.insert(p.day, *p).is_some() {
            return Err(RateError::DuplicatePriorDay { day: p.day });
        }
    }
    let mut out = Vec::with_capacity(by_day.len());
    for (day, day_rides) in by_day {
        let window: Vec<PriorDay> = prior
            .range(..day)
            .rev()
            .take(ROLLING_WINDOW_DAYS as usize)
            .map(|(_, p)| *p)
            .collect();
        let rating = rate_day(tariff, day, &day_rides, &window)?;
        prior.insert(day, rating.prior_day());
        out.push(rating);
    }
    Ok(out)
}
