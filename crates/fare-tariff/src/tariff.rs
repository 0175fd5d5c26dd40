//! The validated tariff: fare lookup and service days.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use fare_credential::Profile;
use jiff::civil::{Date, DateTime};
use jiff::tz::{AmbiguousOffset, TimeZone, TimeZoneDatabase};
use jiff::{SignedDuration, Timestamp, ToSpan};
use serde::{Deserialize, Serialize};

use crate::error::TariffError;
use crate::spec::{
    ConcessionSpec, OperatorSpec, PromotionSpec, RollingCapSpec, RouteSpec, TariffSpec,
    TransferSpec, Weekday,
};

/// Largest tariff JSON accepted, in bytes (the reader bundle's tariff limit).
pub const MAX_TARIFF_JSON_BYTES: usize = 1 << 20;
/// Largest fare or cap, in minor units (10 million major units). Keeps every product of a
/// fare and a percentage, and every sum of a day's fares, far from `i64` overflow.
pub const MAX_MONEY_MINOR: i64 = 1_000_000_000;
/// Longest id or name in a tariff, in bytes.
pub const MAX_ID_BYTES: usize = 64;
/// Most operators, routes in total, or promotions in a tariff.
pub const MAX_ENTRIES: usize = 100_000;
/// Longest transfer window, in seconds (one day).
pub const MAX_TRANSFER_WINDOW_S: u64 = 86_400;
/// Number of service days in the rolling cap's window (the rated day and the 6 before it).
pub const ROLLING_WINDOW_DAYS: i64 = 7;

/// The IANA database compiled into the binary. Using it instead of the host's
/// `/usr/share/zoneinfo` keeps rating free of I/O and identical on every machine.
fn tz_database() -> &'static TimeZoneDatabase {
    static DB: OnceLock<TimeZoneDatabase> = OnceLock::new();
    DB.get_or_init(TimeZoneDatabase::bundled)
}

/// A promotion, compiled for matching.
#[derive(Clone, Debug)]
pub(crate) struct Promotion {
    pub(crate) weekdays: Vec<jiff::civil::Weekday>,
    pub(crate) dates: Vec<Date>,
    pub(crate) discount_percent: i64,
    pub(crate) operators: HashSet<String>,
    pub(crate) profiles: Vec<Profile>,
}

#[derive(Clone, Debug)]
struct OperatorFares {
    default_fare_minor: Option<i64>,
    routes: HashMap<String, i64>,
}

/// A validated tariff: every money amount, percentage, id, date and the time zone checked.
///
/// Build it with [`Tariff::from_json`], [`Tariff::from_spec`] or [`Tariff::demo`]; it
/// serialises (serde) as its [`TariffSpec`] JSON, and deserialising validates.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(try_from = "TariffSpec", into = "TariffSpec")]
pub struct Tariff {
    spec: TariffSpec,
    tz: TimeZone,
    /// Offset of the service-day start from local midnight.
    day_start: SignedDuration,
    operators: HashMap<String, OperatorFares>,
    concessions: HashMap<Profile, i64>,
    pub(crate) promotions: Vec<Promotion>,
}

impl PartialEq for Tariff {
    /// Tariffs are equal when their specs are (everything else is derived from it).
    fn eq(&self, other: &Self) -> bool {
        self.spec == other.spec
    }
}
impl Eq for Tariff {}

impl TryFrom<TariffSpec> for Tariff {
    type Error = TariffError;
    fn try_from(spec: TariffSpec) -> Result<Self, TariffError> {
        Tariff::from_spec(spec)
    }
}

impl From<Tariff> for TariffSpec {
    fn from(t: Tariff) -> TariffSpec {
        t.spec
    }
}

fn invalid(field: impl Into<String>, expected: &'static str, found: impl ToString) -> TariffError {
    TariffError::InvalidField {
        field: field.into(),
        expected,
        found: found.to_string(),
    }
}

fn check_money(field: impl Into<String>, v: i64) -> Result<i64, TariffError> {
    if (0..=MAX_MONEY_MINOR).contains(&v) {
        Ok(v)
    } else {
        Err(invalid(
            field,
            "an amount in minor units from 0 to 1000000000",
            v,
        ))
    }
}

fn check_percent(field: impl Into<String>, v: i64) -> Result<i64, TariffError> {
    if (0..=100).contains(&v) {
        Ok(v)
    } else {
        Err(invalid(field, "a percentage from 0 to 100", v))
    }
}

fn check_id(field: impl Into<String>, v: &str) -> Result<(), TariffError> {
    if v.is_empty() || v.len() > MAX_ID_BYTES || v.chars().any(char::is_control) {
        Err(invalid(
            field,
            "1 to 64 bytes of text without control characters",
            format!("{v:?}"),
        ))
    } else {
        Ok(())
    }
}

fn check_count(field: &str, n: usize) -> Result<(), TariffError> {
    if n > MAX_ENTRIES {
        Err(invalid(field, "at most 100000 entries", n))
    } else {
        Ok(())
    }
}

/// Parses `"HH:MM"` (00:00..=23:59) into the offset from midnight.
fn parse_day_start(s: &str) -> Result<SignedDuration, TariffError> {
    let bad = || {
        invalid(
            "service_day_start",
            "a local time \"HH:MM\" from 00:00 to 23:59",
            format!("{s:?}"),
        )
    };
    let b = s.as_bytes();
    if b.len() != 5 || b[2] != b':' || ![b[0], b[1], b[3], b[4]].iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    let h = i64::from((b[0] - b'0') * 10 + (b[1] - b'0'));
    let m = i64::from((b[3] - b'0') * 10 + (b[4] - b'0'));
    if h > 23 || m > 59 {
        return Err(bad());
    }
    Ok(SignedDuration::from_secs(h * 3600 + m * 60))
}

impl Tariff {
    /// Parses and validates tariff JSON (the format of [`TariffSpec`]; unknown fields are
    /// refused). Errors name the offending field.
    pub fn from_json(json: &str) -> Result<Tariff, TariffError> {
        if json.len() > MAX_TARIFF_JSON_BYTES {
            return Err(TariffError::TooLarge {
                len: json.len(),
                max: MAX_TARIFF_JSON_BYTES,
            });
        }
        let spec: TariffSpec = serde_json::from_str(json).map_err(|e| TariffError::Json {
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })?;
        Tariff::from_spec(spec)
    }

    /// Parses tariff JSON given as bytes (the reader bundle's `tariff` field).
    pub fn from_json_bytes(bytes: &[u8]) -> Result<Tariff, TariffError> {
        if bytes.len() > MAX_TARIFF_JSON_BYTES {
            return Err(TariffError::TooLarge {
                len: bytes.len(),
                max: MAX_TARIFF_JSON_BYTES,
            });
        }
        let text = std::str::from_utf8(bytes).map_err(|e| {
            invalid(
                "(whole tariff)",
                "UTF-8 JSON text",
                format!("invalid UTF-8 at byte {}", e.valid_up_to()),
            )
        })?;
        Tariff::from_json(text)
    }

    /// The tariff as pretty-printed JSON; [`Tariff::from_json`] reads it back equal.
    pub fn to_json(&self) -> String {
        // Cannot fail: the spec holds only strings, integers, options and vectors.
        serde_json::to_string_pretty(&self.spec).expect("tariff spec serialises to JSON")
    }

    /// Validates a spec: money 0..=[`MAX_MONEY_MINOR`], percentages 0..=100, ids non-empty
    /// and unique, a known IANA time zone, `service_day_start` as `HH:MM`, promotion dates as
    /// `YYYY-MM-DD`, caps positive.
    pub fn from_spec(spec: TariffSpec) -> Result<Tariff, TariffError> {
        if spec.version != 1 {
            return Err(invalid("version", "1", spec.version));
        }
        check_id("name", &spec.name)?;
        if spec.currency.len() != 3 || !spec.currency.bytes().all(|c| c.is_ascii_uppercase()) {
            return Err(invalid(
                "currency",
                "an ISO 4217 code of three upper-case letters, e.g. \"CNY\"",
                format!("{:?}", spec.currency),
            ));
        }
        check_id("time_zone", &spec.time_zone)?;
        let tz = tz_database()
            .get(&spec.time_zone)
            .map_err(|e| TariffError::UnknownTimeZone {
                name: spec.time_zone.clone(),
                message: e.to_string(),
            })?;
        let day_start = parse_day_start(&spec.service_day_start)?;
        check_money("default_fare_minor", spec.default_fare_minor)?;

        check_count("operators", spec.operators.len())?;
        let mut operators = HashMap::with_capacity(spec.operators.len());
        let mut total_routes = 0usize;
        for (i, op) in spec.operators.iter().enumerate() {
            let OperatorSpec {
                id,
                default_fare_minor,
                routes,
            } = op;
            check_id(format!("operators[{i}].id"), id)?;
            if let Some(f) = default_fare_minor {
                check_money(format!("operators[{i}].default_fare_minor"), *f)?;
            }
            total_routes += routes.len();
            check_count("operators[].routes", total_routes)?;
            let mut fares = HashMap::with_capacity(routes.len());
            for (
                j,
                RouteSpec {
                    id: rid,
                    fare_minor,
                },
            ) in routes.iter().enumerate()
            {
                check_id(format!("operators[{i}].routes[{j}].id"), rid)?;
                check_money(
                    format!("operators[{i}].routes[{j}].fare_minor"),
                    *fare_minor,
                )?;
                if fares.insert(rid.clone(), *fare_minor).is_some() {
                    return Err(TariffError::Duplicate {
                        field: format!("operators[{i}].routes"),
                        id: rid.clone(),
                    });
                }
            }
            let prev = operators.insert(
                id.clone(),
                OperatorFares {
                    default_fare_minor: *default_fare_minor,
                    routes: fares,
                },
            );
            if prev.is_some() {
                return Err(TariffError::Duplicate {
                    field: "operators".into(),
                    id: id.clone(),
                });
            }
        }

        let mut concessions = HashMap::new();
        for (
            i,
            ConcessionSpec {
                profile,
                discount_percent,
            },
        ) in spec.concessions.iter().enumerate()
        {
            check_percent(
                format!("concessions[{i}].discount_percent"),
                *discount_percent,
            )?;
            if concessions.insert(*profile, *discount_percent).is_some() {
                return Err(TariffError::Duplicate {
                    field: "concessions".into(),
                    id: profile.name().into(),
                });
            }
        }

        if let Some(TransferSpec {
            window_s,
            discount_percent,
            max_transfers,
            allow_same_route: _,
        }) = &spec.transfer
        {
            if !(1..=MAX_TRANSFER_WINDOW_S).contains(window_s) {
                return Err(invalid(
                    "transfer.window_s",
                    "seconds from 1 to 86400",
                    window_s,
                ));
            }
            check_percent("transfer.discount_percent", *discount_percent)?;
            if *max_transfers == Some(0) {
                return Err(invalid(
                    "transfer.max_transfers",
                    "at least 1, or null for unlimited (omit `transfer` to disable transfers)",
                    0,
                ));
            }
        }

        if let Some(cap) = spec.daily_cap_minor {
            check_money("daily_cap_minor", cap)?;
            if cap == 0 {
                return Err(invalid(
                    "daily_cap_minor",
                    "a positive cap (omit the field for no cap)",
                    0,
                ));
            }
        }
        if let Some(RollingCapSpec {
            amount_minor,
            paid_rides,
        }) = &spec.rolling_7_day_cap
        {
            if amount_minor.is_none() && paid_rides.is_none() {
                return Err(invalid(
                    "rolling_7_day_cap",
                    "`amount_minor` or `paid_rides` (omit the cap to disable it)",
                    "neither",
                ));
            }
            if let Some(a) = amount_minor {
                check_money("rolling_7_day_cap.amount_minor", *a)?;
                if *a == 0 {
                    return Err(invalid(
                        "rolling_7_day_cap.amount_minor",
                        "a positive cap",
                        0,
                    ));
                }
            }
            if *paid_rides == Some(0) {
                return Err(invalid(
                    "rolling_7_day_cap.paid_rides",
                    "at least 1 paid ride",
                    0,
                ));
            }
        }

        check_count("promotions", spec.promotions.len())?;
        let mut promotions = Vec::with_capacity(spec.promotions.len());
        for (i, p) in spec.promotions.iter().enumerate() {
            let PromotionSpec {
                name,
                weekdays,
                dates,
                discount_percent,
                operators: ops,
                profiles,
            } = p;
            check_id(format!("promotions[{i}].name"), name)?;
            check_percent(
                format!("promotions[{i}].discount_percent"),
                *discount_percent,
            )?;
            if weekdays.is_empty() && dates.is_empty() {
                return Err(invalid(
                    format!("promotions[{i}]"),
                    "at least one entry in `weekdays` or `dates`",
                    "none",
                ));
            }
            check_count("promotions[].dates", dates.len())?;
            let mut parsed = Vec::with_capacity(dates.len());
            for (j, d) in dates.iter().enumerate() {
                let date: Date = d.parse().ok().filter(|_| d.len() == 10).ok_or_else(|| {
                    invalid(
                        format!("promotions[{i}].dates[{j}]"),
                        "a date \"YYYY-MM-DD\"",
                        format!("{d:?}"),
                    )
                })?;
                parsed.push(date);
            }
            check_count("promotions[].operators", ops.len())?;
            for (j, o) in ops.iter().enumerate() {
                check_id(format!("promotions[{i}].operators[{j}]"), o)?;
            }
            promotions.push(Promotion {
                weekdays: weekdays.iter().map(|w: &Weekday| w.to_jiff()).collect(),
                dates: parsed,
                discount_percent: *discount_percent,
                operators: ops.iter().cloned().collect(),
                profiles: profiles.clone(),
            });
        }

        Ok(Tariff {
            spec,
            tz,
            day_start,
            operators,
            concessions,
            promotions,
        })
    }

    /// The spec this tariff was built from.
    pub fn spec(&self) -> &TariffSpec {
        &self.spec
    }

    /// The currency code (e.g. `"CNY"`).
    pub fn currency(&self) -> &str {
        &self.spec.currency
    }

    /// The time zone of service days.
    pub fn time_zone(&self) -> &TimeZone {
        &self.tz
    }

    /// Full adult fare of a ride on `operator`'s `route`: the route's fare, else the
    /// operator's default, else the tariff's default.
    pub fn base_fare_minor(&self, operator: &str, route: &str) -> i64 {
        match self.operators.get(operator) {
            Some(op) => op
                .routes
                .get(route)
                .copied()
                .or(op.default_fare_minor)
                .unwrap_or(self.spec.default_fare_minor),
            None => self.spec.default_fare_minor,
        }
    }

    /// Whether the tariff lists this operator's route (otherwise a default fare applies;
    /// settlement may want to report such rides).
    pub fn knows_route(&self, operator: &str, route: &str) -> bool {
        self.operators
            .get(operator)
            .is_some_and(|op| op.routes.contains_key(route))
    }

    /// Concession discount of a profile, percent (0 when the tariff lists none).
    pub fn concession_percent(&self, profile: Profile) -> i64 {
        self.concessions.get(&profile).copied().unwrap_or(0)
    }

    /// The service day a moment belongs to: the local date (in the tariff's time zone) of
    /// the wall-clock time `service_day_start` earlier. With a 04:30 start, 02:00 local on
    /// 2026-03-10 belongs to service day 2026-03-09. On DST days the boundary is still 04:30
    /// local wall-clock time, so such a service day lasts 23 or 25 hours.
    pub fn service_day(&self, unix_s: u64) -> Result<Date, TariffError> {
        let secs =
            i64::try_from(unix_s).map_err(|_| TariffError::TimestampOutOfRange { unix_s })?;
        let ts = Timestamp::from_second(secs)
            .map_err(|_| TariffError::TimestampOutOfRange { unix_s })?;
        let local: DateTime = self.tz.to_datetime(ts);
        local
            .checked_sub(self.day_start)
            .map(|dt| dt.date())
            .map_err(|_| TariffError::TimestampOutOfRange { unix_s })
    }

    /// First second of a service day, unix seconds: the instant local wall-clock time reaches
    /// `service_day_start` on that date (if a DST gap skips that wall time, the instant of
    /// the jump).
    ///
    /// With a 04:30 start this partitions time exactly: `service_day(t) == day` iff
    /// `start(day) <= t < start(day + 1)`. Clocks change between 00:00 and 04:00 local in
    /// practice; a start *inside* a repeated hour (e.g. 01:30 in New York) makes the first
    /// pass through that half hour belong to the new day and the second pass to the old
    /// one again, and this function returns the second pass. Choose a start outside the
    /// DST change hours.
    pub fn service_day_start_unix_s(&self, day: Date) -> Result<i64, TariffError> {
        let out_of_range = || TariffError::DateOutOfRange { day };
        let dt = day
            .to_datetime(jiff::civil::Time::midnight())
            .checked_add(self.day_start)
            .map_err(|_| out_of_range())?;
        let amb = self.tz.to_ambiguous_timestamp(dt);
        let ts = match amb.offset() {
            // The wall time is skipped (DST starts): the day starts at the jump, the first
            // instant whose wall time is past the start, which is what `service_day` uses.
            AmbiguousOffset::Gap { .. } => {
                let before_gap = amb.earlier().map_err(|_| out_of_range())?;
                self.tz
                    .following(before_gap)
                    .next()
                    .map(|t| t.timestamp())
                    .ok_or_else(out_of_range)?
            }
            // The wall time repeats (DST ends): `service_day` reaches this date for good
            // only at the second pass.
            AmbiguousOffset::Fold { .. } => amb.later().map_err(|_| out_of_range())?,
            AmbiguousOffset::Unambiguous { .. } => amb.compatible().map_err(|_| out_of_range())?,
        };
        Ok(ts.as_second())
    }

    /// The service day as a half-open range of unix seconds `[start, end)`; its length is
    /// 23 or 25 hours on DST change days.
    pub fn service_day_bounds(&self, day: Date) -> Result<(i64, i64), TariffError> {
        let next = day
            .tomorrow()
            .map_err(|_| TariffError::DateOutOfRange { day })?;
        Ok((
            self.service_day_start_unix_s(day)?,
            self.service_day_start_unix_s(next)?,
        ))
    }

    /// Whether the tariff has a rolling 7-day cap (then a change on one day re-rates the 6
    /// following days too).
    pub fn has_rolling_cap(&self) -> bool {
        self.spec.rolling_7_day_cap.is_some()
    }

    /// The service days whose rating can change when the rides of `day` change, in the
    /// order settlement must re-rate them: `day` alone, or with a rolling 7-day cap `day`
    /// and the 6 days after it (each day's rating needs the totals of the days before it).
    /// Days past the end of the calendar are left out.
    pub fn days_affected_by(&self, day: Date) -> Vec<Date> {
        let n = if self.has_rolling_cap() {
            ROLLING_WINDOW_DAYS
        } else {
            1
        };
        (0..n)
            .filter_map(|i| day.checked_add(i.days()).ok())
            .collect()
    }

    /// The 6 service days before `day` whose totals the rolling cap needs (oldest first);
    /// empty without a rolling cap.
    pub fn prior_days_needed(&self, day: Date) -> Vec<Date> {
        if !self.has_rolling_cap() {
            return Vec::new();
        }
        (1..ROLLING_WINDOW_DAYS)
            .rev()
            .filter_map(|i| day.checked_sub(i.days()).ok())
            .collect()
    }

    /// A realistic tariff used by the demo and the simulator: a Chinese city
    /// (`Asia/Shanghai`, CNY, service day from 04:30) with two operators — `city-bus`
    /// (routes 1, 2, 7 and 15 at 2.00, express route 901 at 3.00, other routes 2.00) and
    /// `metro` (lines L1, L2 at 3.00, other lines 3.00) — seniors free, students and
    /// children 50 % off, one free transfer within 90 minutes of a paid ride (not back on
    /// the same route), a daily cap of 6.00, a rolling 7-day cap of 24.00, and free rides on
    /// 2026-09-22 (World Car-Free Day).
    pub fn demo() -> Tariff {
        let route = |id: &str, fare_minor: i64| RouteSpec {
            id: id.into(),
            fare_minor,
        };
        let spec = TariffSpec {
            version: 1,
            name: "Demo City 2026".into(),
            currency: "CNY".into(),
            time_zone: "Asia/Shanghai".into(),
            service_day_start: "04:30".into(),
            default_fare_minor: 200,
            operators: vec![
                OperatorSpec {
                    id: "city-bus".into(),
                    default_fare_minor: Some(200),
                    routes: vec![
                        route("1", 200),
                        route("2", 200),
                        route("7", 200),
                        route("15", 200),
                        route("901", 300),
                    ],
                },
                OperatorSpec {
                    id: "metro".into(),
                    default_fare_minor: Some(300),
                    routes: vec![route("L1", 300), route("L2", 300)],
                },
            ],
            concessions: vec![
                ConcessionSpec {
                    profile: Profile::Senior,
                    discount_percent: 100,
                },
                ConcessionSpec {
                    profile: Profile::Student,
                    discount_percent: 50,
                },
                ConcessionSpec {
                    profile: Profile::Child,
                    discount_percent: 50,
                },
            ],
            transfer: Some(TransferSpec {
                window_s: 90 * 60,
                discount_percent: 100,
                max_transfers: Some(1),
                allow_same_route: false,
            }),
            daily_cap_minor: Some(600),
            rolling_7_day_cap: Some(RollingCapSpec {
                amount_minor: Some(2400),
                paid_rides: None,
            }),
            promotions: vec![PromotionSpec {
                name: "World Car-Free Day".into(),
                weekdays: vec![],
                dates: vec!["2026-09-22".into()],
                discount_percent: 100,
                operators: vec![],
                profiles: vec![],
            }],
        };
        // The demo spec is a constant checked by the unit test below.
        Tariff::from_spec(spec).expect("the demo tariff is valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_is_valid_and_round_trips() {
        let t = Tariff::demo();
        let back = Tariff::from_json(&t.to_json()).unwrap();
        assert_eq!(t, back);
        assert_eq!(t.base_fare_minor("city-bus", "901"), 300);
        assert_eq!(t.base_fare_minor("city-bus", "99"), 200);
        assert_eq!(t.base_fare_minor("metro", "L9"), 300);
        assert_eq!(t.base_fare_minor("ferry", "F1"), 200);
    }

    #[test]
    fn day_start_parsing() {
        assert_eq!(
            parse_day_start("04:30").unwrap(),
            SignedDuration::from_secs(16_200)
        );
        assert_eq!(parse_day_start("00:00").unwrap(), SignedDuration::ZERO);
        assert_eq!(
            parse_day_start("23:59").unwrap(),
            SignedDuration::from_secs(86_340)
        );
        for bad in [
            "4:30", "24:00", "04:60", "04-30", "0430", "", "04:30 ", "+4:30", "０4:30",
        ] {
            assert!(parse_day_start(bad).is_err(), "{bad:?} accepted");
        }
    }
}
