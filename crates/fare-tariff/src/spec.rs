//! The tariff's JSON format: plain data, checked by [`crate::Tariff::from_spec`].
//!
//! Every struct refuses unknown fields so that a misspelt rule (`"dialy_cap_minor"`) is an
//! error instead of a silently missing cap.

use fare_credential::Profile;
use serde::{Deserialize, Serialize};

/// The tariff as configured by operators; see the crate docs for an example.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TariffSpec {
    /// Format version; must be 1.
    pub version: u32,
    /// Human name of the tariff (e.g. `"Demo City 2026"`).
    pub name: String,
    /// ISO 4217 currency code, three upper-case letters (e.g. `"CNY"`); all money is in its
    /// minor unit.
    pub currency: String,
    /// IANA time zone of the service area (e.g. `"Asia/Shanghai"`).
    pub time_zone: String,
    /// Local wall-clock time at which a service day starts, `"HH:MM"` (e.g. `"04:30"`): a
    /// ride at 02:00 belongs to the previous service day.
    pub service_day_start: String,
    /// Fare of a ride on an operator or route the tariff does not list. A ride that
    /// happened is always rated, so an unknown route never makes rating fail.
    pub default_fare_minor: i64,
    /// Operators and their route fares.
    pub operators: Vec<OperatorSpec>,
    /// Concession discounts by profile; a profile not listed pays full fare.
    #[serde(default)]
    pub concessions: Vec<ConcessionSpec>,
    /// Transfer discount after a paid ride; `None`: no transfers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer: Option<TransferSpec>,
    /// Most an account pays in one service day; `None`: no daily cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_cap_minor: Option<i64>,
    /// Cap over the service day and the 6 before it; `None`: no such cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolling_7_day_cap: Option<RollingCapSpec>,
    /// Promotions (e.g. free rides on a car-free day).
    #[serde(default)]
    pub promotions: Vec<PromotionSpec>,
}

/// One operator's fares.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorSpec {
    /// Operator id as readers report it (e.g. `"city-bus"`).
    pub id: String,
    /// Fare of this operator's routes not listed below; `None`: the tariff's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_fare_minor: Option<i64>,
    /// Flat fare per route.
    pub routes: Vec<RouteSpec>,
}

/// A route's flat fare.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// Route id as readers report it (e.g. `"15"`).
    pub id: String,
    /// Full adult fare of one ride.
    pub fare_minor: i64,
}

/// A concession: a percentage off every fare for riders of one profile.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConcessionSpec {
    /// The profile (from the rider's credential).
    pub profile: Profile,
    /// 0..=100; 100 means the profile rides free.
    pub discount_percent: i64,
}

/// Transfer rule: rides soon after a paid ride are discounted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferSpec {
    /// A ride boarded at most this many seconds after the paid ride that opened the window
    /// is a transfer (inclusive; 1..=86400).
    pub window_s: u64,
    /// 0..=100; 100 means transfers are free.
    pub discount_percent: i64,
    /// How many transfers one paid ride allows; `None`: unlimited within the window
    /// (TfL Hopper style). `Some(1)`: one transfer (OMNY style).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_transfers: Option<u32>,
    /// Whether boarding the same operator's same route again counts as a transfer
    /// (`false` stops a return trip on one route from riding free).
    #[serde(default)]
    pub allow_same_route: bool,
}

/// Cap over the rolling window of the rated service day and the 6 service days before it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollingCapSpec {
    /// Most an account pays in the window; `None`: no amount cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount_minor: Option<i64>,
    /// After this many paid rides in the window the rest are free (OMNY: 12);
    /// `None`: no ride-count cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paid_rides: Option<u32>,
}

/// A promotion: a percentage off on some service days, optionally only for some operators
/// or profiles.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromotionSpec {
    /// Name shown in reports (e.g. `"car-free day"`).
    pub name: String,
    /// Service-day weekdays on which it applies.
    #[serde(default)]
    pub weekdays: Vec<Weekday>,
    /// Service days (`"YYYY-MM-DD"`) on which it applies.
    #[serde(default)]
    pub dates: Vec<String>,
    /// 0..=100; 100 means the rides are free.
    pub discount_percent: i64,
    /// Operators it applies to; empty: all.
    #[serde(default)]
    pub operators: Vec<String>,
    /// Profiles it applies to; empty: all.
    #[serde(default)]
    pub profiles: Vec<Profile>,
}

/// Day of the week, as written in tariff JSON (`"monday"` ... `"sunday"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)] // the variants are the days of the week
pub enum Weekday {
    Monday,
    Tuesday,
    Wednesday,
    Thursday,
    Friday,
    Saturday,
    Sunday,
}

impl Weekday {
    /// jiff's weekday.
    pub fn to_jiff(self) -> jiff::civil::Weekday {
        use jiff::civil::Weekday as J;
        match self {
            Weekday::Monday => J::Monday,
            Weekday::Tuesday => J::Tuesday,
            Weekday::Wednesday => J::Wednesday,
            Weekday::Thursday => J::Thursday,
            Weekday::Friday => J::Friday,
            Weekday::Saturday => J::Saturday,
            Weekday::Sunday => J::Sunday,
        }
    }
}
