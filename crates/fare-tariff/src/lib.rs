//! Fare rules and rating for the offline QR fare system (DESIGN.md §5).
//!
//! A [`Tariff`] holds flat fares per operator and route, concession discounts per
//! [`Profile`](fare_credential::Profile), a transfer discount within a window after a paid
//! ride, a daily cap per *service day* (a configurable local start time, e.g. 04:30, in an
//! IANA time zone), a rolling 7-day cap (by amount and/or by number of paid rides) and
//! promotions. It is read from JSON ([`Tariff::from_json`], unknown fields refused, every
//! value checked) and travels to readers inside the reader bundle.
//!
//! [`rate_day`] turns one account's rides of one service day into fares. The crate is pure:
//! no I/O, no clock, no randomness. Time zones come from the IANA database compiled into
//! the binary (jiff's bundled tzdb), so rating never depends on the host's
//! `/usr/share/zoneinfo`.
//!
//! # Invariant: rating is a pure function
//!
//! DESIGN invariant 4: *rating is a pure function of (tariff, the account's rides of the
//! service day); a late batch re-rates its day and posts the difference as an adjustment.*
//! [`rate_day`] sorts the rides by `(at_unix_s, ride_key)` itself, so replays and
//! reordering give identical fares. Settlement compares the new fares with what the ledger
//! already holds and posts only the differences (`fare-ledger`'s `reconcile_ride`).
//!
//! With a rolling 7-day cap one day's rating also depends on the totals of the 6 days
//! before it ([`PriorDay`]). A late ride on day *D* can therefore change days *D* ..
//! *D*+6: settlement re-rates them **in order** ([`Tariff::days_affected_by`]), feeding
//! each day's new [`DayRating::prior_day`] into the next ([`rate_days`] does exactly
//! that; [`Tariff::prior_days_needed`] names the earlier days whose totals it needs).
//! Without a rolling cap only *D* changes. Within a day, a ride's fare depends only on the
//! rides before it in `(at_unix_s, ride_key)` order, so a late ride changes later rides
//! only (a property test checks this).
//!
//! # Order of application and rounding
//!
//! For each ride, in `(at_unix_s, ride_key)` order:
//!
//! 1. **Base fare**: the route's fare, else the operator's default, else the tariff's
//!    default (a ride that happened is always rated).
//! 2. **Concession**: the profile's percent off (seniors 100 % = free).
//! 3. **Promotion**: the largest percent off among promotions matching the *service day*
//!    (weekday or date), the operator and the profile.
//! 4. **Transfer**: a ride that still costs something, boarded at most `window_s` seconds
//!    after the last *paid* ride (inclusive), gets the transfer percent off. Each paid ride
//!    allows `max_transfers` transfers (`null` = unlimited within its window, TfL Hopper
//!    style; `1` = OMNY style); the window is measured from the paid ride, never extended
//!    by a transfer; a ride that is not a transfer and costs something opens a new window.
//!    Unless `allow_same_route`, boarding the same operator's same route again is not a
//!    transfer. Windows do not carry over into the next service day.
//! 5. **Daily cap**: the fare is cut so the day's total does not pass the cap (the ride
//!    that reaches the cap pays the remainder — a partial fare — and later rides are free).
//! 6. **Rolling 7-day cap**: likewise for the total of this day and the 6 before it; with
//!    `paid_rides: N`, once N rides with a fare above zero fall in the window, later rides
//!    are free (OMNY).
//!
//! Percentages use integer math and round the fare **down** (in the rider's favour):
//! `fare * (100 - percent) / 100`, so 175 at 50 % off costs 87 ([`apply_discount`]).
//! Therefore `0 <= fare_minor <= base_fare_minor` always, and a day's total never passes
//! the daily cap.
//!
//! The [`RideOutcome`] is the last rule that reduced the fare (`capped` > `transfer` >
//! `promotion` > `free`); a partial concession alone still gives `charged`.
//!
//! # Example
//!
//! ```
//! use fare_credential::Profile;
//! use fare_tariff::{rate_day, RideOutcome, RideToRate, Tariff};
//!
//! let tariff = Tariff::demo(); // Asia/Shanghai, day starts 04:30, bus 2.00, cap 6.00
//! // 2026-03-10 08:00 in Shanghai (UTC+8) is 00:00 UTC.
//! let t0 = 1_773_100_800;
//! let day = tariff.service_day(t0).unwrap();
//! assert_eq!(day.to_string(), "2026-03-10");
//! // 01:00 local the next night still belongs to the same service day.
//! assert_eq!(tariff.service_day(t0 + 17 * 3600).unwrap(), day);
//!
//! let ride = |key: &str, at: u64, route: &str| RideToRate {
//!     ride_key: key.into(),
//!     at_unix_s: at,
//!     operator: "city-bus".into(),
//!     route: route.into(),
//!     profile: Profile::Adult,
//! };
//! let rides = [
//!     ride("1:1", t0, "1"),                   // 200 charged, opens a transfer window
//!     ride("2:1", t0 + 1_800, "7"),           // within 90 min, other route: free transfer
//!     ride("1:2", t0 + 4 * 3600, "1"),        // 200 charged
//!     ride("1:3", t0 + 6 * 3600, "15"),       // window of 1:2 passed: 200, total 600
//!     ride("1:4", t0 + 9 * 3600, "1"),        // daily cap of 600 reached: free
//! ];
//! let rated = rate_day(&tariff, day, &rides, &[]).unwrap();
//! let fares: Vec<i64> = rated.rides.iter().map(|r| r.fare_minor).collect();
//! assert_eq!(fares, [200, 0, 200, 200, 0]);
//! assert_eq!(rated.rides[1].outcome, RideOutcome::Transfer);
//! assert_eq!(rated.rides[4].outcome.code(), "capped");
//! assert_eq!(rated.charged_minor, 600);
//! // The same rides in another order rate identically.
//! let mut reversed = rides.to_vec();
//! reversed.reverse();
//! assert_eq!(rate_day(&tariff, day, &reversed, &[]).unwrap(), rated);
//! ```
//!
//! # Tariff JSON
//!
//! ```json
//! {
//!   "version": 1, "name": "Demo City 2026", "currency": "CNY",
//!   "time_zone": "Asia/Shanghai", "service_day_start": "04:30",
//!   "default_fare_minor": 200,
//!   "operators": [{"id": "city-bus", "default_fare_minor": 200,
//!                  "routes": [{"id": "1", "fare_minor": 200}]}],
//!   "concessions": [{"profile": "senior", "discount_percent": 100}],
//!   "transfer": {"window_s": 5400, "discount_percent": 100, "max_transfers": 1,
//!                "allow_same_route": false},
//!   "daily_cap_minor": 600,
//!   "rolling_7_day_cap": {"amount_minor": 2400},
//!   "promotions": [{"name": "World Car-Free Day", "dates": ["2026-09-22"],
//!                   "discount_percent": 100}]
//! }
//! ```

mod error;
mod rate;
mod spec;
mod tariff;

pub use error::{RateError, TariffError};
pub use rate::{
    apply_discount, rate_day, rate_days, CapKind, DayRating, PriorDay, RatedRide, Reductions,
    RideOutcome, RideToRate,
};
pub use spec::{
    ConcessionSpec, OperatorSpec, PromotionSpec, RollingCapSpec, RouteSpec, TariffSpec,
    TransferSpec, Weekday,
};
pub use tariff::{
    Tariff, MAX_ENTRIES, MAX_ID_BYTES, MAX_MONEY_MINOR, MAX_TARIFF_JSON_BYTES,
    MAX_TRANSFER_WINDOW_S, ROLLING_WINDOW_DAYS,
};

/// Re-exported so users name the same date type as the API ([`Tariff::service_day`]).
pub use jiff::civil::Date;
