//! Double-entry ledger of the fare system: postings between passenger accounts, operator
//! revenue accounts and payments clearing, with deterministic posting ids so that any
//! replay of settlement is a no-op.
//!
//! Pure: no I/O, no clock. The settlement service stores the [`Posting`]s (keyed by
//! `posting_id`) and keeps a [`Ledger`] in memory, rebuilt with
//! [`Ledger::from_postings`].
//!
//! # Money moves
//!
//! * A ride's charge: debit the passenger, credit the operator's revenue
//!   ([`PostingKind::RideCharge`]).
//! * A re-rating (a late batch re-rated the service day, DESIGN invariant 4): the
//!   difference, either way ([`PostingKind::RideAdjustment`]) — never a second charge.
//! * A payment: debit payments clearing, credit the passenger ([`PostingKind::Payment`]).
//!
//! Amounts are always positive; the direction carries the sign. A balance is credits
//! minus debits, so a passenger's debt is a negative balance, and all balances sum to zero
//! (invariant 3).
//!
//! # Posting ids: exactly once under replay
//!
//! * Ride postings: `ride/{ride_key}/r{n}` ([`ride_posting_id`]), n = 1 for the charge, 2,
//!   3, … for each adjustment. [`reconcile_ride`] takes the ride's current [`RideState`]
//!   (net charged, postings so far) and the new fare, and returns the one posting that
//!   closes the gap, numbered `revisions + 1`, or nothing. So a re-run of settlement over
//!   the same state yields the same posting (applying it again is
//!   [`PostResult::Exists`], a no-op) or nothing at all, and two racing runs that disagree
//!   produce one id with two contents: the second is [`PostResult::Conflict`] and refused.
//!   Either way a ride's net charge ends equal to its latest fare, once.
//! * Payments: `payment/{account_id}/{payment_id}` ([`payment_posting_id`]): idempotent
//!   on the client's payment id.
//!
//! `/` and `%` inside keys are percent-escaped so ids never collide.
//!
//! # Credit limit
//!
//! A ride always posts (it has happened), even past the credit limit. An account whose
//! debt passes its limit ([`over_credit_limit`]) goes on the next deny list, and the
//! ride's result is [`RideResult::OverCreditLimit`]; a payment that brings the debt back to
//! the limit takes it off.
//!
//! # Example
//!
//! ```
//! use fare_ledger::{over_credit_limit, payment_posting, AccountRef, Ledger, PostResult, RideParties};
//!
//! let day = "2026-03-10".parse().unwrap();
//! let ride = RideParties {
//!     ride_key: "7:1042".into(),
//!     account_id: "acc-1".into(),
//!     operator: "city-bus".into(),
//!     service_day: day,
//! };
//! let mut ledger = Ledger::new();
//!
//! // Rated at 200: the first posting charges it.
//! let charge = ledger.reconcile(&ride, 200).unwrap().unwrap();
//! assert_eq!(charge.posting_id, "ride/7:1042/r1");
//! assert_eq!(ledger.apply(charge.clone()).unwrap(), PostResult::Created);
//! // A replay of the same posting is a no-op, and re-running settlement finds nothing to do.
//! assert_eq!(ledger.apply(charge).unwrap(), PostResult::Exists);
//! assert_eq!(ledger.reconcile(&ride, 200).unwrap(), None);
//!
//! // A late batch re-rates the day: the daily cap now makes this ride cost 50.
//! let adj = ledger.post_ride_fare(&ride, 50).unwrap().unwrap();
//! assert_eq!(adj.posting_id, "ride/7:1042/r2");
//! assert_eq!(adj.debit, AccountRef::operator("city-bus")); // 150 back to the rider
//! assert_eq!(ledger.passenger_balance_minor("acc-1"), -50);
//! assert_eq!(ledger.balance_minor(&AccountRef::operator("city-bus")), 50);
//!
//! // Past a credit limit of 0 the account is denied; paying clears it.
//! assert!(over_credit_limit(ledger.passenger_balance_minor("acc-1"), 0));
//! ledger.apply(payment_posting("acc-1", "pay-0001", 50).unwrap()).unwrap();
//! assert!(!over_credit_limit(ledger.passenger_balance_minor("acc-1"), 0));
//! ledger.check_consistent().unwrap();
//! ```

mod error;
mod ledger;
mod posting;
mod result;

pub use error::LedgerError;
pub use ledger::{Ledger, PostResult};
pub use posting::{
    dispute_adjustment, dispute_adjustment_id, dispute_hold, dispute_hold_id, dispute_release,
    dispute_release_id, payment_posting, payment_posting_id, reconcile_ride, ride_posting_id,
    AccountRef, DisputeSide, Posting, PostingKind, RideParties, RideState, MAX_KEY_BYTES,
    MAX_POSTING_ID_BYTES, MAX_POSTING_MINOR, SUSPENSE,
};
pub use result::{debt_minor, over_credit_limit, RideResult};
