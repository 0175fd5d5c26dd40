//! Ledger errors.

/// A posting or ledger operation was refused; the ledger is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// The posting's shape is wrong (the message says which rule).
    #[error("posting `{posting_id}` refused: {why}")]
    InvalidPosting {
        /// The posting id (truncated).
        posting_id: String,
        /// The rule it breaks.
        why: &'static str,
    },
    /// An id is empty, too long or holds control characters.
    #[error("{what} {key:?} is invalid: expected 1 to 128 bytes without control characters")]
    InvalidKey {
        /// Which id.
        what: &'static str,
        /// The id (truncated).
        key: String,
    },
    /// Text that should name an account does not.
    #[error("account {text:?} is invalid: expected {expected}")]
    InvalidAccount {
        /// The text (truncated).
        text: String,
        /// The accepted forms.
        expected: &'static str,
    },
    /// A fare given to [`crate::reconcile_ride`] is negative or absurdly large: a rating bug.
    #[error("fare {fare_minor} for ride `{ride_key}` is outside 0..=1000000000000 minor units: the rating that produced it is wrong")]
    InvalidFare {
        /// The ride.
        ride_key: String,
        /// The fare.
        fare_minor: i64,
    },
    /// A ride was re-rated more than `u32::MAX` times.
    #[error("ride `{ride_key}` has too many postings")]
    TooManyRevisions {
        /// The ride.
        ride_key: String,
    },
    /// Applying the posting would overflow an account balance.
    #[error(
        "posting `{posting_id}` would overflow the balance of {account}: the amounts are corrupt"
    )]
    BalanceOverflow {
        /// The posting.
        posting_id: String,
        /// The account (display form).
        account: String,
    },
    /// Rebuilding a ledger met two different postings with one id.
    #[error("posting id `{posting_id}` is stored twice with different content: the store is corrupt or two settlement runs raced")]
    Conflict {
        /// The id.
        posting_id: String,
    },
    /// An internal consistency check failed (a bug; the message says which sum).
    #[error("ledger is inconsistent: {what}")]
    Inconsistent {
        /// Which check.
        what: String,
    },
}
