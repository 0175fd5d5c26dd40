//! Per-ride result codes and the credit limit rule.

use fare_tariff::RideOutcome;
use serde::{Deserialize, Serialize};

/// What happened to a ride: the one vocabulary from rating to ledger to
/// reports (one explicit result per ride, like TigerBeetle's
/// `CreateTransferStatus`), with stable snake_case codes
/// ([`RideResult::code`]). Deliberately not `#[non_exhaustive]`: every
/// `match` on it is exhaustive, so a new result makes the compiler list each
/// place that must decide what it means.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RideResult {
    /// Charged its fare (possibly reduced by a partial concession).
    Charged,
    /// Discounted as a transfer.
    Transfer,
    /// Reduced (possibly to nothing) by the daily or rolling 7-day cap.
    Capped,
    /// Free by concession.
    Free,
    /// Reduced by a promotion.
    Promotion,
    /// Charged, and this charge took the account's debt past its credit limit
    /// (it goes on the next deny list). The ride still posts: it has happened.
    OverCreditLimit,
    /// The same ride code was already settled from another ride: never
    /// charged; a fraud event.
    Duplicate,
    /// The ride code failed re-verification (signature, issuer, format):
    /// never charged, reported against its reader.
    Forged,
    /// A genuine code outside its validity at the reader's recorded time:
    /// never charged, reported against its reader.
    InvalidTime,
    /// A genuine code of a credential settlement never issued (no account):
    /// not charged.
    UnknownCredential,
}

impl RideResult {
    /// The stable code: `charged`, `transfer`, `capped`, `free`, `promotion`,
    /// `over_credit_limit`, `duplicate`, `forged`, `invalid_time` or
    /// `unknown_credential`.
    pub fn code(self) -> &'static str {
        match self {
            RideResult::Charged => "charged",
            RideResult::Transfer => "transfer",
            RideResult::Capped => "capped",
            RideResult::Free => "free",
            RideResult::Promotion => "promotion",
            RideResult::OverCreditLimit => "over_credit_limit",
            RideResult::Duplicate => "duplicate",
            RideResult::Forged => "forged",
            RideResult::InvalidTime => "invalid_time",
            RideResult::UnknownCredential => "unknown_credential",
        }
    }

    /// True for results that were rated and posted to the ledger.
    pub fn is_rated(self) -> bool {
        match self {
            RideResult::Charged
            | RideResult::Transfer
            | RideResult::Capped
            | RideResult::Free
            | RideResult::Promotion
            | RideResult::OverCreditLimit => true,
            RideResult::Duplicate
            | RideResult::Forged
            | RideResult::InvalidTime
            | RideResult::UnknownCredential => false,
        }
    }

    /// Every result, for reports that list all codes.
    pub const ALL: [RideResult; 10] = [
        RideResult::Charged,
        RideResult::Transfer,
        RideResult::Capped,
        RideResult::Free,
        RideResult::Promotion,
        RideResult::OverCreditLimit,
        RideResult::Duplicate,
        RideResult::Forged,
        RideResult::InvalidTime,
        RideResult::UnknownCredential,
    ];
}

impl From<RideOutcome> for RideResult {
    /// The tariff's reason for a fare, as a ride result.
    fn from(o: RideOutcome) -> RideResult {
        match o {
            RideOutcome::Charged => RideResult::Charged,
            RideOutcome::Transfer => RideResult::Transfer,
            RideOutcome::Capped => RideResult::Capped,
            RideOutcome::Free => RideResult::Free,
            RideOutcome::Promotion => RideResult::Promotion,
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
