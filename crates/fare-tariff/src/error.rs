//! Errors of tariff loading and rating.

use jiff::civil::Date;

/// A tariff could not be loaded or used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TariffError {
    /// The JSON text is larger than [`crate::MAX_TARIFF_JSON_BYTES`].
    #[error("tariff JSON is {len} bytes, more than the limit of {max} bytes: is this really a tariff file?")]
    TooLarge {
        /// Size of the input in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The text is not valid tariff JSON (syntax error, unknown or missing field, wrong type).
    #[error("tariff JSON is malformed at line {line}, column {column}: {message}")]
    Json {
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// serde_json's description (names the unknown or missing field).
        message: String,
    },
    /// A field has a value outside its allowed range or format.
    #[error("tariff field `{field}` is invalid: expected {expected}, found {found}")]
    InvalidField {
        /// Path of the field, e.g. `operators[1].routes[0].fare_minor`.
        field: String,
        /// What the field must hold.
        expected: &'static str,
        /// What it held.
        found: String,
    },
    /// Two entries of a list share an id that must be unique.
    #[error("tariff field `{field}` lists `{id}` twice: ids must be unique")]
    Duplicate {
        /// Path of the list, e.g. `operators[0].routes`.
        field: String,
        /// The repeated id.
        id: String,
    },
    /// The time zone is not in the bundled IANA time zone database.
    #[error("tariff time zone `{name}` is not a known IANA time zone name (expected e.g. `Europe/London`, `Asia/Shanghai`): {message}")]
    UnknownTimeZone {
        /// The name given.
        name: String,
        /// jiff's description.
        message: String,
    },
    /// A timestamp is outside the range the calendar supports (years -9999..=9999).
    #[error("timestamp {unix_s} s is outside the supported calendar range: the reader's clock or the record is corrupt")]
    TimestampOutOfRange {
        /// The timestamp, unix seconds.
        unix_s: u64,
    },
    /// A date is too close to the ends of the supported calendar to compute its service day bounds.
    #[error("service day {day} is outside the supported calendar range")]
    DateOutOfRange {
        /// The date.
        day: Date,
    },
}

/// The rides given to [`crate::rate_day`] are not one account's rides of one service day.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RateError {
    /// A ride's time falls in another service day than the one being rated.
    #[error("ride `{ride_key}` belongs to service day {ride_day}, not to the day being rated ({day}): the caller grouped rides by calendar date or with another tariff's day start")]
    RideOutsideServiceDay {
        /// The ride.
        ride_key: String,
        /// The service day of its timestamp.
        ride_day: Date,
        /// The day being rated.
        day: Date,
    },
    /// Two rides share a ride key, so their charges could not be told apart in the ledger.
    #[error("ride key `{ride_key}` appears twice in the rides to rate: duplicates must be removed before rating")]
    DuplicateRideKey {
        /// The repeated key.
        ride_key: String,
    },
    /// Two `prior_days` entries name the same day, so the rolling cap cannot tell which holds.
    #[error("prior service day {day} is given twice: pass each earlier day's totals once")]
    DuplicatePriorDay {
        /// The repeated day.
        day: Date,
    },
    /// A ride's timestamp could not be placed in the calendar.
    #[error("ride `{ride_key}`: {source}")]
    Time {
        /// The ride.
        ride_key: String,
        /// Why.
        source: TariffError,
    },
}
