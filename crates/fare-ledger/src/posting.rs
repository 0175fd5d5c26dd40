//! Accounts, postings and the deterministic posting-id scheme.

use std::fmt;

use jiff::civil::Date;
use serde::{Deserialize, Serialize};

use crate::error::LedgerError;

/// Longest posting id, in bytes.
pub const MAX_POSTING_ID_BYTES: usize = 512;
/// Longest account id, operator id, ride key or payment id, in bytes.
pub const MAX_KEY_BYTES: usize = 128;
/// Largest single posting, in minor units (10 billion major units): far from `i64`
/// overflow however many postings an account holds in practice, and overflow is still
/// checked.
pub const MAX_POSTING_MINOR: i64 = 1_000_000_000_000;

/// A ledger account.
///
/// Balances are *credits minus debits*: a passenger who rode and has not paid has a
/// negative balance (a debt), an operator's revenue account grows positive, the payments
/// clearing account (money received from riders' payment methods) goes negative by what
/// was paid in.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountRef {
    /// A rider's account, by account id.
    Passenger(String),
    /// An operator's fare revenue, by operator id.
    OperatorRevenue(String),
    /// Money received from riders (card, bank); the other side of every payment.
    PaymentsClearing,
    /// Fares held while it is disputed which operator earned them (the same
    /// ride code on readers of two operators): [`dispute_hold`] moves a
    /// ride's fare here from the operator first credited, [`dispute_release`]
    /// to the operator the dispute awards it to.
    Suspense,
}

impl AccountRef {
    /// A passenger account.
    pub fn passenger(account_id: impl Into<String>) -> AccountRef {
        AccountRef::Passenger(account_id.into())
    }
    /// An operator's revenue account.
    pub fn operator(operator_id: impl Into<String>) -> AccountRef {
        AccountRef::OperatorRevenue(operator_id.into())
    }
    /// The passenger account id, if this is a passenger account.
    pub fn passenger_id(&self) -> Option<&str> {
        match self {
            AccountRef::Passenger(id) => Some(id),
            _ => None,
        }
    }
}

impl fmt::Display for AccountRef {
    /// `passenger:ID`, `operator:ID` or `payments_clearing`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AccountRef::Passenger(id) => write!(f, "passenger:{id}"),
            AccountRef::OperatorRevenue(id) => write!(f, "operator:{id}"),
            AccountRef::PaymentsClearing => f.write_str("payments_clearing"),
            AccountRef::Suspense => f.write_str(SUSPENSE),
        }
    }
}

impl std::str::FromStr for AccountRef {
    type Err = LedgerError;
    /// Parses the [`Display`](fmt::Display) form.
    fn from_str(s: &str) -> Result<AccountRef, LedgerError> {
        let bad = || LedgerError::InvalidAccount {
            text: s.chars().take(MAX_KEY_BYTES + 16).collect(),
            expected: "passenger:ID, operator:ID, payments_clearing or suspense",
        };
        if s == "payments_clearing" {
            return Ok(AccountRef::PaymentsClearing);
        }
        if s == SUSPENSE {
            return Ok(AccountRef::Suspense);
        }
        let (kind, id) = s.split_once(':').ok_or_else(bad)?;
        check_key("account id", id).map_err(|_| bad())?;
        match kind {
            "passenger" => Ok(AccountRef::Passenger(id.into())),
            "operator" => Ok(AccountRef::OperatorRevenue(id.into())),
            _ => Err(bad()),
        }
    }
}

/// The [`AccountRef::Suspense`] account's name.
pub const SUSPENSE: &str = "suspense";

/// What a posting is for. Stable snake_case codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum PostingKind {
    /// First money posting of a ride (passenger → operator revenue).
    RideCharge,
    /// A later change of a ride's fare after re-rating, either direction.
    RideAdjustment,
    /// A rider's payment (payments clearing → passenger).
    Payment,
    /// A disputed ride's fare held: operator revenue → suspense ([`dispute_hold`]).
    DisputeHold,
    /// A held fare released to the operator the dispute awards it to:
    /// suspense → operator revenue ([`dispute_release`]).
    DisputeRelease,
}

impl PostingKind {
    /// `ride_charge`, `ride_adjustment` or `payment`.
    pub fn code(self) -> &'static str {
        match self {
            PostingKind::RideCharge => "ride_charge",
            PostingKind::RideAdjustment => "ride_adjustment",
            PostingKind::Payment => "payment",
            PostingKind::DisputeHold => "dispute_hold",
            PostingKind::DisputeRelease => "dispute_release",
        }
    }
}

/// One double-entry posting: `amount_minor` moves from the `debit` account to the
/// `credit` account. The amount is always positive; the direction carries the sign.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Posting {
    /// Deterministic id ([`ride_posting_id`], [`payment_posting_id`]); the ledger holds at
    /// most one posting per id.
    pub posting_id: String,
    /// Account whose balance goes down.
    pub debit: AccountRef,
    /// Account whose balance goes up.
    pub credit: AccountRef,
    /// 1..=[`MAX_POSTING_MINOR`].
    pub amount_minor: i64,
    /// What it is for.
    pub kind: PostingKind,
    /// The ride, for ride postings.
    pub ride_key: Option<String>,
    /// The ride's service day, for ride postings.
    pub service_day: Option<Date>,
}

impl Posting {
    /// Checks the posting's shape: id and keys bounded, amount positive and bounded, two
    /// different accounts, ride postings between a passenger and an operator with a ride
    /// key and service day, payments from payments clearing to a passenger without one.
    pub fn validate(&self) -> Result<(), LedgerError> {
        let bad = |why: &'static str| LedgerError::InvalidPosting {
            posting_id: self.posting_id.chars().take(MAX_POSTING_ID_BYTES).collect(),
            why,
        };
        if self.posting_id.is_empty()
            || self.posting_id.len() > MAX_POSTING_ID_BYTES
            || self.posting_id.chars().any(char::is_control)
        {
            return Err(bad(
                "posting id must be 1 to 512 bytes without control characters",
            ));
        }
        if !(1..=MAX_POSTING_MINOR).contains(&self.amount_minor) {
            return Err(bad(
                "amount_minor must be from 1 to 1000000000000 (the direction carries the sign)",
            ));
        }
        if self.debit == self.credit {
            return Err(bad("debit and credit must be different accounts"));
        }
        for acc in [&self.debit, &self.credit] {
            if let AccountRef::Passenger(id) | AccountRef::OperatorRevenue(id) = acc {
                check_key("account id", id).map_err(|_| {
                    bad("account ids must be 1 to 128 bytes without control characters")
                })?;
            }
        }
        match self.kind {
            PostingKind::RideCharge | PostingKind::RideAdjustment => {
                let Some(key) = &self.ride_key else {
                    return Err(bad("a ride posting needs a ride_key"));
                };
                check_key("ride key", key).map_err(|_| {
                    bad("ride keys must be 1 to 128 bytes without control characters")
                })?;
                if self.service_day.is_none() {
                    return Err(bad("a ride posting needs a service_day"));
                }
                let pair = (&self.debit, &self.credit);
                let ok = matches!(
                    pair,
                    (AccountRef::Passenger(_), AccountRef::OperatorRevenue(_))
                        | (AccountRef::OperatorRevenue(_), AccountRef::Passenger(_))
                );
                if !ok {
                    return Err(bad(
                        "a ride posting moves money between a passenger and an operator's revenue",
                    ));
                }
                if self.kind == PostingKind::RideCharge
                    && !matches!(self.debit, AccountRef::Passenger(_))
                {
                    return Err(bad("a ride charge debits the passenger"));
                }
            }
            PostingKind::DisputeHold | PostingKind::DisputeRelease => {
                let Some(key) = &self.ride_key else {
                    return Err(bad("a dispute posting needs the disputed ride's key"));
                };
                check_key("ride key", key).map_err(|_| {
                    bad("ride keys must be 1 to 128 bytes without control characters")
                })?;
                let hold = self.kind == PostingKind::DisputeHold;
                let ok = match (&self.debit, &self.credit) {
                    (AccountRef::OperatorRevenue(_), AccountRef::Suspense) => hold,
                    (AccountRef::Suspense, AccountRef::OperatorRevenue(_)) => !hold,
                    _ => false,
                };
                if !ok {
                    return Err(bad(
                        "a dispute hold moves an operator's revenue to suspense, a release moves it back to an operator",
                    ));
                }
            }
            PostingKind::Payment => {
                if self.ride_key.is_some() || self.service_day.is_some() {
                    return Err(bad("a payment has no ride_key or service_day"));
                }
                if self.debit != AccountRef::PaymentsClearing
                    || !matches!(self.credit, AccountRef::Passenger(_))
                {
                    return Err(bad(
                        "a payment debits payments_clearing and credits a passenger",
                    ));
                }
            }
        }
        Ok(())
    }

    /// The ride whose passenger charge this posting changes: its ride key
    /// for ride charges and adjustments (which count as the ride's
    /// revisions), `None` for payments and dispute holds and releases.
    pub fn ride_money_key(&self) -> Option<&String> {
        match self.kind {
            PostingKind::RideCharge | PostingKind::RideAdjustment => self.ride_key.as_ref(),
            PostingKind::Payment | PostingKind::DisputeHold | PostingKind::DisputeRelease => None,
        }
    }

    /// What this posting adds to its ride's net charge: `+amount` when it debits the
    /// passenger, `-amount` when it credits them; 0 for other postings
    /// (payments, dispute holds and releases, which move no passenger money).
    pub fn ride_net_minor(&self) -> i64 {
        match (self.kind, &self.debit) {
            (PostingKind::RideCharge | PostingKind::RideAdjustment, AccountRef::Passenger(_)) => {
                self.amount_minor
            }
            (PostingKind::RideCharge | PostingKind::RideAdjustment, _) => -self.amount_minor,
            (PostingKind::Payment | PostingKind::DisputeHold | PostingKind::DisputeRelease, _) => 0,
        }
    }
}

pub(crate) fn check_key(what: &'static str, key: &str) -> Result<(), LedgerError> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES || key.chars().any(char::is_control) {
        Err(LedgerError::InvalidKey {
            what,
            key: key.chars().take(MAX_KEY_BYTES + 16).collect(),
        })
    } else {
        Ok(())
    }
}

/// Escapes `/` and `%` so that the `/`-separated parts of a posting id are unambiguous
/// whatever characters ride keys and account ids contain.
fn escape(part: &str) -> String {
    let mut out = String::with_capacity(part.len());
    for c in part.chars() {
        match c {
            '%' => out.push_str("%25"),
            '/' => out.push_str("%2F"),
            c => out.push(c),
        }
    }
    out
}

/// Id of a ride's `revision`-th posting (1-based): `ride/{ride_key}/r{revision}`, with `/`
/// and `%` in the key percent-escaped. E.g. `ride/7:1042/r1` for the first charge of
/// reader 7's ride 1042, `ride/7:1042/r2` for its first adjustment.
pub fn ride_posting_id(ride_key: &str, revision: u32) -> String {
    format!("ride/{}/r{revision}", escape(ride_key))
}

/// Id of a payment: `payment/{account_id}/{payment_id}` (escaped like
/// [`ride_posting_id`]). The client's payment id is scoped by account, so two riders'
/// apps choosing the same payment id never collide.
pub fn payment_posting_id(account_id: &str, payment_id: &str) -> String {
    format!("payment/{}/{}", escape(account_id), escape(payment_id))
}

/// The posting of a rider's payment of `amount_minor` (1..=[`MAX_POSTING_MINOR`]),
/// idempotent on `(account_id, payment_id)`: posting it again is a no-op
/// ([`crate::PostResult::Exists`]); the same payment id with another amount is a
/// [`crate::PostResult::Conflict`].
pub fn payment_posting(
    account_id: &str,
    payment_id: &str,
    amount_minor: i64,
) -> Result<Posting, LedgerError> {
    check_key("account id", account_id)?;
    check_key("payment id", payment_id)?;
    let p = Posting {
        posting_id: payment_posting_id(account_id, payment_id),
        debit: AccountRef::PaymentsClearing,
        credit: AccountRef::passenger(account_id),
        amount_minor,
        kind: PostingKind::Payment,
        ride_key: None,
        service_day: None,
    };
    p.validate()?;
    Ok(p)
}

/// Id of the hold of a disputed ride's fare: `hold/{ride_key}` (escaped
/// like [`ride_posting_id`]); one per ride, so a dispute holds once.
pub fn dispute_hold_id(ride_key: &str) -> String {
    format!("hold/{}", escape(ride_key))
}

/// Id of the release of a disputed ride's held fare: `release/{ride_key}`.
pub fn dispute_release_id(ride_key: &str) -> String {
    format!("release/{}", escape(ride_key))
}

/// Holds `amount_minor` of the fare credited to `operator` for the ride
/// `ride_key`: operator revenue → suspense. The passenger's charge is
/// untouched (they rode once and pay once); only who earned it is in doubt.
pub fn dispute_hold(
    ride_key: &str,
    operator: &str,
    amount_minor: i64,
    service_day: Date,
) -> Result<Posting, LedgerError> {
    check_key("ride key", ride_key)?;
    check_key("operator id", operator)?;
    let p = Posting {
        posting_id: dispute_hold_id(ride_key),
        debit: AccountRef::operator(operator),
        credit: AccountRef::Suspense,
        amount_minor,
        kind: PostingKind::DisputeHold,
        ride_key: Some(ride_key.into()),
        service_day: Some(service_day),
    };
    p.validate()?;
    Ok(p)
}

/// Releases a held fare to the operator the dispute awards it to:
/// suspense → `operator`'s revenue.
pub fn dispute_release(
    ride_key: &str,
    operator: &str,
    amount_minor: i64,
    service_day: Date,
) -> Result<Posting, LedgerError> {
    check_key("ride key", ride_key)?;
    check_key("operator id", operator)?;
    let p = Posting {
        posting_id: dispute_release_id(ride_key),
        debit: AccountRef::Suspense,
        credit: AccountRef::operator(operator),
        amount_minor,
        kind: PostingKind::DisputeRelease,
        ride_key: Some(ride_key.into()),
        service_day: Some(service_day),
    };
    p.validate()?;
    Ok(p)
}

/// Which side of a dispute a re-rating moves: the hold (the charged ride's
/// operator ↔ suspense) or, once resolved, the release (suspense ↔ the
/// awarded operator).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DisputeSide {
    /// Operator revenue → suspense when the fare grows.
    Hold,
    /// Suspense → operator revenue when the fare grows.
    Release,
}

/// Id of the change to a dispute's `side` made when its ride's fare was
/// re-rated at ride posting `revision`: `hold/{ride_key}/r{revision}` or
/// `release/{ride_key}/r{revision}`. One per ride revision, so a re-run of
/// the same settlement posts it once.
pub fn dispute_adjustment_id(side: DisputeSide, ride_key: &str, revision: u32) -> String {
    let base = match side {
        DisputeSide::Hold => dispute_hold_id(ride_key),
        DisputeSide::Release => dispute_release_id(ride_key),
    };
    format!("{base}/r{revision}")
}

/// The posting that brings a dispute's `side` from `from_minor` to `to_minor`
/// after its ride was re-rated (a late earlier ride made it a transfer, a
/// cap was reached): without it the charged ride's operator would give up
/// the old fare to suspense while its ride adjustment already gave back the
/// difference, and be short by it. `None` when the amounts are equal.
///
/// Hold: a bigger fare moves operator → suspense ([`PostingKind::DisputeHold`]),
/// a smaller one suspense → operator ([`PostingKind::DisputeRelease`]). Release
/// (after a resolution): the opposite, between suspense and the awarded operator.
pub fn dispute_adjustment(
    side: DisputeSide,
    ride_key: &str,
    operator: &str,
    from_minor: i64,
    to_minor: i64,
    revision: u32,
    service_day: Date,
) -> Result<Option<Posting>, LedgerError> {
    check_key("ride key", ride_key)?;
    check_key("operator id", operator)?;
    let diff = to_minor.saturating_sub(from_minor);
    if diff == 0 {
        return Ok(None);
    }
    // Money into suspense when the hold grows or the release shrinks.
    let into_suspense = (diff > 0) == (side == DisputeSide::Hold);
    let op = AccountRef::operator(operator);
    let (debit, credit, kind) = if into_suspense {
        (op, AccountRef::Suspense, PostingKind::DisputeHold)
    } else {
        (AccountRef::Suspense, op, PostingKind::DisputeRelease)
    };
    let p = Posting {
        posting_id: dispute_adjustment_id(side, ride_key, revision),
        debit,
        credit,
        amount_minor: diff.saturating_abs(),
        kind,
        ride_key: Some(ride_key.into()),
        service_day: Some(service_day),
    };
    p.validate()?;
    Ok(Some(p))
}

/// Who a ride's money moves between.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RideParties {
    /// The ride (e.g. `"7:1042"`): the same key the tariff rated.
    pub ride_key: String,
    /// The passenger account the ride's credential maps to.
    pub account_id: String,
    /// The operator of the reader; receives the fare.
    pub operator: String,
    /// The ride's service day.
    pub service_day: Date,
}

/// What the ledger holds for one ride.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RideState {
    /// Net amount charged to the passenger for the ride so far.
    pub net_minor: i64,
    /// Number of postings for the ride so far (the next one is `revisions + 1`).
    pub revisions: u32,
}

/// The posting that brings a ride's net charge from `state.net_minor` to `fare_minor`, or
/// `None` when they are already equal (the common case on a replay or re-run).
///
/// Its id is [`ride_posting_id`]`(ride_key, state.revisions + 1)`: a function of the
/// ledger's state, so re-running settlement over the same state produces the same posting
/// (a no-op when applied again), and two runs racing from the same state over different
/// fares produce the same id with different content, which the ledger refuses
/// ([`crate::PostResult::Conflict`]) instead of charging twice. The first posting is a
/// [`PostingKind::RideCharge`], later ones [`PostingKind::RideAdjustment`]s (a late batch
/// re-rated the day). A free ride needs no posting until a re-rating gives it a fare.
pub fn reconcile_ride(
    ride: &RideParties,
    state: RideState,
    fare_minor: i64,
) -> Result<Option<Posting>, LedgerError> {
    check_key("ride key", &ride.ride_key)?;
    check_key("account id", &ride.account_id)?;
    check_key("operator id", &ride.operator)?;
    if !(0..=MAX_POSTING_MINOR).contains(&fare_minor) {
        return Err(LedgerError::InvalidFare {
            ride_key: ride.ride_key.clone(),
            fare_minor,
        });
    }
    let diff = fare_minor
        .checked_sub(state.net_minor)
        .ok_or(LedgerError::InvalidFare {
            ride_key: ride.ride_key.clone(),
            fare_minor,
        })?;
    if diff == 0 {
        return Ok(None);
    }
    let revision = state
        .revisions
        .checked_add(1)
        .ok_or(LedgerError::TooManyRevisions {
            ride_key: ride.ride_key.clone(),
        })?;
    let passenger = AccountRef::passenger(ride.account_id.as_str());
    let operator = AccountRef::operator(ride.operator.as_str());
    let (debit, credit) = if diff > 0 {
        (passenger, operator)
    } else {
        (operator, passenger)
    };
    let p = Posting {
        posting_id: ride_posting_id(&ride.ride_key, revision),
        debit,
        credit,
        amount_minor: diff.checked_abs().unwrap_or(i64::MAX),
        kind: if state.revisions == 0 {
            PostingKind::RideCharge
        } else {
            PostingKind::RideAdjustment
        },
        ride_key: Some(ride.ride_key.clone()),
        service_day: Some(ride.service_day),
    };
    p.validate()?;
    Ok(Some(p))
}
