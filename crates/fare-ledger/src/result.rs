//! Per-ride result codes and the credit limit rule.

use fare_tariff::RideOutcome;
use serde::{Deserialize, Serialize};

/// What settlement did with a ride, as reported per ride. Stable snake_case codes
/// ([`RideResult::code`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RideResult {
    /// Charged its fare.
    Charged,
    /// The same ride (same ride id, or the same ride code seen by another reader) was
    /// already settled: not charged again.
    Duplicate,
    /// The ride code failed re-verification: never charged, reported against its reader.
    Forged,
    /// Reduced by the daily or rolling 7-day cap.
    Capped,
    /// Free by concession.
    Free,
    /// Discounted as a transfer.
    Transfer,
    /// Reduced by a promotion.
    Promotion,
    /// Charged, and the account's debt is now past its credit limit (it goes on the next
    /// deny list). The ride still posts: it has happened.
    OverCreditLimit,
    /// A re-rating after a late batch changed the ride's fare; the difference was posted.
    Adjusted,
}

impl RideResult {
    /// `charged`, `duplicate`, `forged`, `capped`, `free`, `transfer`, `promotion`,
    /// `over_credit_limit` or `adjusted`.
    pub fn code(self) -> &'static str {
        match self {
            RideResult::Charged => "charged",
            RideResult::Duplicate => "duplicate",
            RideResult::Forged => "forged",
            RideResult::Capped => "capped",
            RideResult::Free => "free",
            RideResult::Transfer => "transfer",
            RideResult::Promotion => "promotion",
            RideResult::OverCreditLimit => "over_credit_limit",
            RideResult::Adjusted => "adjusted",
        }
    }

    /// Every result, for reports that list all codes.
    pub const ALL: [RideResult; 9] = [
        RideResult::Charged,
        RideResult::Duplicate,
        RideResult::Forged,
        RideResult::Capped,
        RideResult::Free,
        RideResult::Transfer,
        RideResult::Promotion,
        RideResult::OverCreditLimit,
        RideResult::Adjusted,
    ];
}

impl From<RideOutcome> for RideResult {
    /// The tariff's reason for a fare, as a ride result.
    fn from(o: RideOutcome) -> RideResult {
        match o {
            RideOutcome::Transfer => RideResult::Transfer,
            RideOutcome::Capped => RideResult::Capped,
            RideOutcome::Free => RideResult::Free,
            RideOutcome::Promotion => RideResult::Promotion,
            // `RideOutcome` is non-exhaustive: a future reason reads as a plain charge.
            _ => RideResult::Charged,
        }
    }
}

/// The debt a balance represents: `-balance` when negative, else 0.
pub fn debt_minor(balance_minor: i64) -> i64 {
    balance_minor.checked_neg().unwrap_or(i64::MAX).max(0)
}

/// Whether an account with this balance is past its credit limit: its debt is strictly
/// greater than the limit (a debt exactly at the limit is still allowed). Such an account
/// goes on the next deny list and gets no new credential; a payment that brings the debt
/// back to the limit or below takes it off. A limit of 0 denies any debt; a negative limit
/// counts as 0.
pub fn over_credit_limit(balance_minor: i64, credit_limit_minor: i64) -> bool {
    debt_minor(balance_minor) > credit_limit_minor.max(0)
}
