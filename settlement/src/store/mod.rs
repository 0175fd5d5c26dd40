//! Storage: one narrow key-value interface ([`Store`]) that any backend
//! implements (sled is the embedded default; [`PostgresStore`] maps each
//! [`Space`] to a table of `(k bytea primary key, v bytea)` and
//! [`Store::commit`] to one transaction), and a typed layer ([`Db`]) above it
//! that encodes values with `fare_credential::codec`.
//!
//! Everything a request or a settlement chunk changes goes into one
//! [`WriteSet`] committed atomically and durably (sled: one batch, then
//! `flush()`), so a crash leaves either all of it or none of it.

mod claim;
pub mod postgres;
mod sled_store;
pub mod typed;

pub use claim::{WriteGuard, WriteLock};
pub use postgres::{PoolOptions, PostgresStore};
pub use sled_store::{SledStore, DEFAULT_CACHE_BYTES as SLED_DEFAULT_CACHE_BYTES};
pub use typed::{Db, DenyState, PostingBlocks, ResultBlocks, RideBlocks};

use crate::error::StoreError;

/// The key spaces (tables). The byte is the key prefix in the sled tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
#[non_exhaustive]
pub enum Space {
    /// account id → [`crate::model::Account`]
    Accounts = b'a',
    /// credential id → [`crate::model::CredentialRecord`]
    Credentials = b'c',
    /// account id ‖ 0 ‖ credential id → () (credentials of an account)
    AccountCredentials = b'C',
    /// reader id (BE) → [`crate::model::Reader`]
    Readers = b'r',
    /// reader id (BE) → [`crate::model::ReaderState`]
    ReaderStates = b's',
    /// reader id BE ‖ (reader seq / `typed::RIDE_BLOCK_RIDES`) BE → the
    /// block's encoded ride records v1, each with its strict mark (see
    /// `typed::RideBlock`)
    Rides = b'R',
    /// reader id BE ‖ (reader seq / `typed::RESULT_BLOCK_RIDES`) BE → the
    /// block's [`crate::model::RideResult`]s, sorted by ride id
    Results = b'o',
    /// incident key → [`crate::model::Incident`]
    Incidents = b'i',
    /// posting id (`payment/ACC/ID`) → [`crate::model::Posting`]: every
    /// posting that is not a ride's (ride postings are in [`Space::RidePostings`])
    Postings = b'p',
    /// reader id BE ‖ (reader seq / `typed::RESULT_BLOCK_RIDES`) BE → the
    /// postings (`ride/R:S/rN`) of the block's rides, sorted by posting id
    RidePostings = b'q',
    /// ledger account (`passenger:ID`, `operator:ID`, `payments_clearing`) → balance i64
    Balances = b'b',
    /// Postings of a passenger or clearing account (operator accounts are
    /// not indexed): ledger account name ‖ 0 ‖ posting id → () for single
    /// postings (payments), and ledger account name ‖ 0 ‖ 0xff ‖ settlement
    /// chunk number BE → the ids of the ride postings that chunk made on the
    /// account (one record per account and chunk; see `typed::ChunkPostingIds`)
    AccountPostings = b'P',
    /// account id ‖ 0 ‖ day (YYYYMMDD) → [`crate::model::DayState`]
    Days = b'd',
    /// credential id → its settled codes: (device seq BE ‖ ride key of the
    /// first sighting) × n, sorted by device seq (see `typed::CodeSighting`)
    Codes = b'k',
    /// fraud event key → [`crate::model::FraudEvent`]
    Fraud = b'f',
    /// account id ‖ 0 ‖ client payment id → [`crate::model::PaymentRecord`]
    Payments = b'y',
    /// deny list version (BE) → [`crate::model::DenyVersion`]
    DenyVersions = b'v',
    /// account id → () while the account is revoked (frozen or over its credit limit)
    Revoked = b'x',
    /// small named values (deny list head, settlement run counter)
    Meta = b'm',
    /// charged ride key (12 bytes) → [`crate::model::Dispute`]
    Disputes = b'D',
    /// passenger token id (16 bytes) → [`crate::passengers::TokenRecord`]
    PassengerTokens = b't',
    /// account id ‖ 0 ‖ passenger token id → () (tokens of an account)
    AccountTokens = b'u',
    /// device public key (32 bytes) → [`crate::passengers::DeviceKeyRecord`]:
    /// every device key ever certified, for any account (used once only)
    DeviceKeys = b'e',
    /// passenger enrolment (device) id ‖ 0 ‖ credential id → () (the
    /// credentials an enrolment requested: deny-listed if its phone is lost)
    DeviceCredentials = b'T',
    /// credential id → [`crate::passengers::DeniedCredential`] (a lost
    /// phone's credentials, on the deny list until they expire)
    DeniedCredentials = b'n',
}

/// One atomic unit of writes, with compare-and-swap preconditions.
#[derive(Debug, Default)]
pub struct WriteSet {
    /// `(space, key, expected current value)`: the commit fails with
    /// [`StoreError::Conflict`] unless each holds.
    pub checks: Vec<(Space, Vec<u8>, Option<Vec<u8>>)>,
    /// Values to set.
    pub puts: Vec<(Space, Vec<u8>, Vec<u8>)>,
    /// Keys to remove.
    pub deletes: Vec<(Space, Vec<u8>)>,
}

impl WriteSet {
    /// Queues a put.
    pub fn put(&mut self, space: Space, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.puts.push((space, key.into(), value.into()));
    }
    /// Queues a delete.
    pub fn delete(&mut self, space: Space, key: impl Into<Vec<u8>>) {
        self.deletes.push((space, key.into()));
    }
    /// Adds a precondition.
    pub fn check(&mut self, space: Space, key: impl Into<Vec<u8>>, expected: Option<Vec<u8>>) {
        self.checks.push((space, key.into(), expected));
    }
    /// True when nothing would be written.
    pub fn is_empty(&self) -> bool {
        self.puts.is_empty() && self.deletes.is_empty()
    }
}

/// Key-value pairs, in key order.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// Most keys one [`Store::get_many`] call, or ranges one
/// [`Store::range_many`] call, takes (more is refused with
/// [`StoreError::Internal`]); [`Db`] splits longer lists. On PostgreSQL it
/// is the length of the statement's `UNNEST` arrays.
pub const MAX_KEYS_PER_READ: usize = 10_000;

/// `Err` when a batched read asks for more than [`MAX_KEYS_PER_READ`].
fn check_read_len(what: &str, n: usize) -> Result<(), StoreError> {
    if n > MAX_KEYS_PER_READ {
        return Err(StoreError::Internal(format!(
            "{what}: {n} keys in one read, at most {MAX_KEYS_PER_READ} (split the list)"
        )));
    }
    Ok(())
}

/// The narrow storage interface. Implementations must make [`Store::commit`]
/// atomic and durable before it returns.
pub trait Store: Send + Sync + 'static {
    /// One value.
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// The values of many keys, one per key in the order given (`None`
    /// where absent; a key may repeat), at most [`MAX_KEYS_PER_READ`] keys.
    /// The same answer as [`Store::get`] per key; PostgreSQL reads them
    /// with one statement (a join with `UNNEST` of the keys) instead of a
    /// round trip each. Like [`Store::get`], no snapshot across keys is
    /// promised (callers that need one read under the write lock).
    fn get_many(&self, space: Space, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StoreError>;
    /// Up to `limit` entries whose key starts with `prefix`, in key order,
    /// starting strictly after `after` when given.
    fn scan(
        &self,
        space: Space,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StoreError>;
    /// Entries with `start <= key < end`, in key order, at most `limit`.
    fn range(
        &self,
        space: Space,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Entries, StoreError>;
    /// Many [`Store::range`] reads at once: for each `(start, end)`, the
    /// entries with `start <= key < end` in key order, at most `limit_each`
    /// of them (a caller seeing `limit_each` entries pages on with
    /// [`Store::range`]); one list per range in the order given, at most
    /// [`MAX_KEYS_PER_READ`] ranges. PostgreSQL: one statement (a
    /// `LATERAL` range scan per `UNNEST`ed bound pair).
    fn range_many(
        &self,
        space: Space,
        bounds: &[(Vec<u8>, Vec<u8>)],
        limit_each: usize,
    ) -> Result<Vec<Entries>, StoreError>;
    /// Applies the write set atomically and durably, or nothing (checks failed / error).
    fn commit(&self, writes: WriteSet) -> Result<(), StoreError>;
    /// [`Store::commit`] without waiting for the device, for records whose
    /// loss in a crash costs only freshness (when a reader last called,
    /// which bundle it was served: the next contact writes them again), so
    /// that the busiest answers (a bundle fetch at every contact of every
    /// reader) do not each wait for a flush. Atomic and checked like
    /// `commit`; durable with the next `commit` (sled recovers its log in
    /// order, so a crash never keeps a later commit without an earlier
    /// one). Never for rides, money or anything acknowledged to a caller as
    /// stored. Default: a durable commit.
    fn commit_unsynced(&self, writes: WriteSet) -> Result<(), StoreError> {
        self.commit(writes)
    }
    /// Takes the cluster-wide writer claim for the calling thread, held
    /// until [`Store::release_writer`] (called by [`WriteLock`] only, under
    /// the process's own lock). The commits of the calling thread in between
    /// are made under the claim; when it cannot be taken they fail and
    /// nothing is written. Default: nothing to do (sled locks its directory,
    /// so one process owns the database).
    fn claim_writer(&self) {}
    /// Releases the claim taken by [`Store::claim_writer`].
    fn release_writer(&self) {}
    /// The day partitions of a ride history space (`Rides`, `Results`,
    /// `Days`), oldest first (`YYYYMMDD`); `None` when the backend keeps no
    /// day partitions (sled: the purge deletes rows).
    fn history_days(&self, _space: Space) -> Result<Option<Vec<i32>>, StoreError> {
        Ok(None)
    }
    /// Every row of one day partition, in key order.
    fn history_day_entries(&self, space: Space, day: i32) -> Result<Entries, StoreError> {
        Err(StoreError::Internal(format!(
            "{space:?} day {day}: this backend has no day partitions"
        )))
    }
    /// Commits `writes` and drops the given day partitions in one
    /// transaction (the retention purge).
    fn commit_dropping_days(
        &self,
        _writes: WriteSet,
        _days: &[(Space, i32)],
    ) -> Result<(), StoreError> {
        Err(StoreError::Internal(
            "this backend has no day partitions".into(),
        ))
    }
    /// Whether the database answers (`/healthz`).
    fn health(&self) -> Result<(), StoreError> {
        Ok(())
    }
    /// The backend's name (`/healthz`, logs).
    fn backend(&self) -> &'static str {
        "sled"
    }
}
