//! The in-memory ledger state machine.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::error::LedgerError;
use crate::posting::{reconcile_ride, AccountRef, Posting, RideParties, RideState};

/// What [`Ledger::apply`] did. Stable snake_case codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PostResult {
    /// New posting, balances moved.
    Created,
    /// The same posting (same id, same content) is already held: a replay, nothing moved.
    Exists,
    /// Another posting with this id is already held: refused, nothing moved. A stale
    /// settlement run; re-read the ride's state and reconcile again.
    Conflict,
}

impl PostResult {
    /// `created`, `exists` or `conflict`.
    pub fn code(self) -> &'static str {
        match self {
            PostResult::Created => "created",
            PostResult::Exists => "exists",
            PostResult::Conflict => "conflict",
        }
    }
}

/// A double-entry ledger in memory: postings by id, balances per account, net charge per
/// ride. Pure state machine; the settlement service persists the postings and rebuilds
/// the ledger with [`Ledger::from_postings`].
///
/// Invariants (checked by [`Ledger::check_consistent`] and the property tests): balances
/// sum to zero; each balance equals the credits minus the debits of its postings; each
/// ride's [`RideState`] equals the sum of its postings. Applying postings is commutative,
/// so any order of the same set of postings gives the same ledger.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ledger {
    postings: HashMap<String, Posting>,
    balances: HashMap<AccountRef, i64>,
    rides: HashMap<String, RideState>,
}

impl Ledger {
    /// An empty ledger.
    pub fn new() -> Ledger {
        Ledger::default()
    }

    /// Rebuilds a ledger from stored postings, in any order. Exact duplicates are skipped;
    /// two different postings under one id are an error.
    pub fn from_postings<I: IntoIterator<Item = Posting>>(
        postings: I,
    ) -> Result<Ledger, LedgerError> {
        let mut l = Ledger::new();
        for p in postings {
            let id = p.posting_id.clone();
            if l.apply(p)? == PostResult::Conflict {
                return Err(LedgerError::Conflict { posting_id: id });
            }
        }
        Ok(l)
    }

    /// Applies a posting: `Created` moves the balances, `Exists` (identical replay) and
    /// `Conflict` (same id, other content) change nothing. An invalid posting or a balance
    /// overflow is an error, and also changes nothing.
    pub fn apply(&mut self, posting: Posting) -> Result<PostResult, LedgerError> {
        posting.validate()?;
        if let Some(held) = self.postings.get(&posting.posting_id) {
            return Ok(if *held == posting {
                PostResult::Exists
            } else {
                PostResult::Conflict
            });
        }
        let overflow = |acc: &AccountRef| LedgerError::BalanceOverflow {
            posting_id: posting.posting_id.clone(),
            account: acc.to_string(),
        };
        let amount = posting.amount_minor;
        let debit_after = self
            .balance_minor(&posting.debit)
            .checked_sub(amount)
            .ok_or_else(|| overflow(&posting.debit))?;
        let credit_after = self
            .balance_minor(&posting.credit)
            .checked_add(amount)
            .ok_or_else(|| overflow(&posting.credit))?;
        let ride_after = match posting.ride_money_key() {
            Some(key) => {
                let s = self.ride_state(key);
                let net_minor = s
                    .net_minor
                    .checked_add(posting.ride_net_minor())
                    .ok_or_else(|| overflow(&posting.debit))?;
                let revisions =
                    s.revisions
                        .checked_add(1)
                        .ok_or_else(|| LedgerError::TooManyRevisions {
                            ride_key: key.clone(),
                        })?;
                Some((
                    key.clone(),
                    RideState {
                        net_minor,
                        revisions,
                    },
                ))
            }
            None => None,
        };
        // All checks passed: mutate.
        self.balances.insert(posting.debit.clone(), debit_after);
        self.balances.insert(posting.credit.clone(), credit_after);
        if let Some((key, state)) = ride_after {
            self.rides.insert(key, state);
        }
        self.postings.insert(posting.posting_id.clone(), posting);
        Ok(PostResult::Created)
    }

    /// Balance of an account (credits minus debits); 0 for an account never posted to.
    pub fn balance_minor(&self, account: &AccountRef) -> i64 {
        self.balances.get(account).copied().unwrap_or(0)
    }

    /// Balance of a passenger account; negative is a debt.
    pub fn passenger_balance_minor(&self, account_id: &str) -> i64 {
        self.balance_minor(&AccountRef::passenger(account_id))
    }

    /// What the ledger holds for a ride (zero state for a ride never posted).
    pub fn ride_state(&self, ride_key: &str) -> RideState {
        self.rides.get(ride_key).copied().unwrap_or_default()
    }

    /// [`reconcile_ride`] against this ledger's state of the ride: the posting that makes
    /// the ride's net charge `fare_minor`, or `None` when it already is.
    pub fn reconcile(
        &self,
        ride: &RideParties,
        fare_minor: i64,
    ) -> Result<Option<Posting>, LedgerError> {
        reconcile_ride(ride, self.ride_state(&ride.ride_key), fare_minor)
    }

    /// Reconciles and applies in one step; returns the posting created, if any (to persist).
    pub fn post_ride_fare(
        &mut self,
        ride: &RideParties,
        fare_minor: i64,
    ) -> Result<Option<Posting>, LedgerError> {
        let Some(p) = self.reconcile(ride, fare_minor)? else {
            return Ok(None);
        };
        match self.apply(p.clone())? {
            PostResult::Created => Ok(Some(p)),
            // Unreachable from a consistent state (the id is the next revision), but never
            // silently drop a fare change.
            PostResult::Exists | PostResult::Conflict => Err(LedgerError::Conflict {
                posting_id: p.posting_id,
            }),
        }
    }

    /// The posting with this id.
    pub fn get(&self, posting_id: &str) -> Option<&Posting> {
        self.postings.get(posting_id)
    }

    /// All postings, in no particular order (sort by `posting_id` for a stable listing).
    pub fn postings(&self) -> impl Iterator<Item = &Posting> {
        self.postings.values()
    }

    /// Every account posted to, with its balance (unordered).
    pub fn balances(&self) -> impl Iterator<Item = (&AccountRef, i64)> {
        self.balances.iter().map(|(a, b)| (a, *b))
    }

    /// Number of postings.
    pub fn len(&self) -> usize {
        self.postings.len()
    }

    /// Whether no posting is held.
    pub fn is_empty(&self) -> bool {
        self.postings.is_empty()
    }

    /// Recomputes everything from the postings and compares (O(n)): the balances sum to
    /// zero, each balance equals its postings' credits minus debits, each ride's state
    /// equals the sum and count of its postings.
    pub fn check_consistent(&self) -> Result<(), LedgerError> {
        let mut balances: HashMap<&AccountRef, i128> = HashMap::new();
        let mut rides: HashMap<&str, (i128, u64)> = HashMap::new();
        for p in self.postings.values() {
            *balances.entry(&p.debit).or_default() -= i128::from(p.amount_minor);
            *balances.entry(&p.credit).or_default() += i128::from(p.amount_minor);
            if let Some(k) = p.ride_money_key() {
                let e = rides.entry(k).or_default();
                e.0 += i128::from(p.ride_net_minor());
                e.1 += 1;
            }
        }
        let total: i128 = self.balances.values().map(|b| i128::from(*b)).sum();
        if total != 0 {
            return Err(LedgerError::Inconsistent {
                what: format!("balances sum to {total}, not 0"),
            });
        }
        let nonzero = balances.values().filter(|b| **b != 0).count();
        if self.balances.values().filter(|b| **b != 0).count() != nonzero {
            return Err(LedgerError::Inconsistent {
                what: "the set of non-zero balances differs from the postings".into(),
            });
        }
        for (acc, b) in &balances {
            if i128::from(self.balance_minor(acc)) != *b {
                return Err(LedgerError::Inconsistent {
                    what: format!(
                        "balance of {acc} is {}, its postings sum to {b}",
                        self.balance_minor(acc)
                    ),
                });
            }
        }
        if rides.len() != self.rides.len() {
            return Err(LedgerError::Inconsistent {
                what: "ride states differ from the postings".into(),
            });
        }
        for (k, (net, n)) in rides {
            let s = self.ride_state(k);
            if i128::from(s.net_minor) != net || u64::from(s.revisions) != n {
                return Err(LedgerError::Inconsistent {
                    what: format!(
                        "ride `{k}` state {s:?} but its postings sum to {net} in {n} postings"
                    ),
                });
            }
        }
        Ok(())
    }
}
