//! The records settlement stores. Values are encoded with
//! `fare_credential::codec` (bincode); JSON shapes are the API's.

use fare_credential::{CredentialId, Profile};
use serde::{Deserialize, Serialize};

/// Longest account id.
pub const MAX_ACCOUNT_ID_BYTES: usize = 64;

/// A passenger account. The id is a pseudonym (no name, no card number).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// Pseudonymous id (`[A-Za-z0-9_-]`, ≤ 64 bytes).
    pub account_id: String,
    /// Concession profile written into its credentials.
    pub profile: Profile,
    /// Debt allowed before the account is deny-listed (minor units, ≥ 0).
    pub credit_limit_minor: i64,
    /// Frozen by the operator: deny-listed, no new credentials.
    pub frozen: bool,
    /// Creation time.
    pub created_unix_s: u64,
}

/// The credential → account map (the only place it exists).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialRecord {
    /// The credential's random id.
    pub credential_id: CredentialId,
    /// Whose it is.
    pub account_id: String,
    /// Profile it carries.
    pub profile: Profile,
    /// Validity start.
    pub valid_from_unix_s: u64,
    /// Validity end, inclusive.
    pub valid_until_unix_s: u64,
    /// When it was issued.
    pub issued_unix_s: u64,
}

/// A provisioned reader.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reader {
    /// Reader id (ride ids are `(reader_id, reader_seq)`).
    pub reader_id: u32,
    /// Its ed25519 public key (hex in JSON).
    #[serde(with = "fare_credential::trust::hex32")]
    pub public_key: [u8; 32],
    /// Operator whose revenue account its rides credit.
    pub operator: String,
    /// Vehicle it is installed in.
    pub vehicle: String,
    /// Route it was provisioned for (rides carry their own route).
    pub route: String,
    /// Retired readers' batches are refused.
    pub retired: bool,
    /// Provisioning time.
    pub provisioned_unix_s: u64,
}

/// Ingest and settlement cursors of a reader.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReaderState {
    /// Highest contiguous sequence held.
    pub acked_seq: u64,
    /// Chain hash after record `acked_seq` (genesis when 0).
    pub head_hash: [u8; 32],
    /// Highest sequence settled (≤ acked_seq).
    pub settled_seq: u64,
}

/// Ride id: `(reader_id, reader_seq)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RideId {
    /// Reader.
    pub reader_id: u32,
    /// Reader sequence.
    pub reader_seq: u64,
}

impl RideId {
    /// 12-byte big-endian storage key (sorts by reader, then sequence).
    pub fn key(&self) -> [u8; 12] {
        let mut k = [0u8; 12];
        k[..4].copy_from_slice(&self.reader_id.to_be_bytes());
        k[4..].copy_from_slice(&self.reader_seq.to_be_bytes());
        k
    }
    /// Inverse of [`RideId::key`].
    pub fn from_key(k: &[u8]) -> Option<RideId> {
        if k.len() != 12 {
            return None;
        }
        Some(RideId {
            reader_id: u32::from_be_bytes(k[..4].try_into().ok()?),
            reader_seq: u64::from_be_bytes(k[4..].try_into().ok()?),
        })
    }
}

impl std::fmt::Display for RideId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.reader_id, self.reader_seq)
    }
}

/// What ingest found of a stored ride code's device-signature `R`
/// (`reverify::ingest_marks`): may re-verification batch the signature?
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RMark {
    /// Canonical, of large order, in the prime-order subgroup: batchable.
    Batchable,
    /// Verify with `verify_strict` alone, never in a batch (`R` is
    /// non-canonical, small-order or has a small-order component).
    Strict,
    /// Not tested for a small-order component at ingest: its batch was
    /// below `reverify::GROUP_TEST_MIN_POINTS`, where the test costs a
    /// scalar multiplication per ride; the settlement run tests it with the
    /// rest of its chunk's, in group tests of up to
    /// `reverify::RUN_GROUP_MAX_POINTS`.
    Unchecked,
}

/// What settlement decided for one ride: the one ride-outcome vocabulary,
/// `fare_ledger::RideResult` (rating → ledger → reports), under its
/// settlement name.
pub use fare_ledger::RideResult as Outcome;

/// The settled result of one ride (updated when its service day is re-rated).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RideResult {
    /// The ride.
    pub ride: RideId,
    /// What rating (or re-verification) made of the ride; never
    /// [`Outcome::OverCreditLimit`].
    pub outcome: Outcome,
    /// What is reported: `outcome`, or [`Outcome::OverCreditLimit`] when
    /// this ride's charge left the account beyond its credit limit (kept
    /// across re-ratings).
    pub result: Outcome,
    /// The re-verification reject code for forged / invalid_time rides.
    pub reason: Option<String>,
    /// Account charged, if any.
    pub account_id: Option<String>,
    /// Credential the code carried (when it parsed).
    pub credential_id: Option<CredentialId>,
    /// Device sequence of the code (when it parsed).
    pub device_seq: Option<u32>,
    /// Service day, `YYYY-MM-DD`.
    pub service_day: String,
    /// Operator credited.
    pub operator: String,
    /// Route of the ride.
    pub route: String,
    /// Current rated fare (minor units; 0 when not charged).
    pub amount_minor: i64,
    /// Reader clock at acceptance.
    pub reader_time_unix_s: u64,
}

/// A reader incident: something its uploads or rides show is wrong.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incident {
    /// Reader.
    pub reader_id: u32,
    /// `sequence_gap`, `chain_fork`, `forged_ride`, `invalid_time_ride`.
    pub kind: String,
    /// First sequence concerned.
    pub seq: u64,
    /// Human detail.
    pub detail: String,
    /// When settlement saw it.
    pub at_unix_s: u64,
}

impl Incident {
    /// Storage key: idempotent per (reader, kind, seq) so replays do not grow the log.
    pub fn key(&self) -> Vec<u8> {
        let mut k = self.reader_id.to_be_bytes().to_vec();
        k.extend_from_slice(self.kind.as_bytes());
        k.push(0);
        k.extend_from_slice(&self.seq.to_be_bytes());
        k
    }
}

/// The same ride code (credential, device sequence) on more than one ride.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FraudEvent {
    /// `duplicate_code`.
    pub kind: String,
    /// The credential.
    pub credential_id: CredentialId,
    /// Account behind it, if known.
    pub account_id: Option<String>,
    /// Device sequence of the code.
    pub device_seq: u32,
    /// The ride that was charged (first by reader time among those settled together; an already settled ride keeps its charge).
    pub charged_ride: RideId,
    /// The ride refused as a duplicate.
    pub duplicate_ride: RideId,
    /// Reader clocks of both.
    pub charged_reader_time_unix_s: u64,
    /// Reader clock of the duplicate.
    pub duplicate_reader_time_unix_s: u64,
}

/// The same genuine ride code on two (or more) readers: which reader, and
/// so which operator and route, earned the fare is in doubt, so no reader
/// wins it by racing (DESIGN §4 invariant 8).
///
/// **Rule.** The passenger is charged once, for the first sighting by
/// reader time (as for any duplicate). The fare credited for it is moved to
/// the `suspense` ledger account (posting `hold/R:S`, R:S the charged
/// ride) and stays there until an operator resolves the dispute by naming
/// the reader whose ride was genuine (`POST /v1/disputes/R/S/resolve`): one
/// `release/R:S` posting moves it to that reader's operator. A dispute is
/// held and released at most once (the posting ids are derived from the
/// charged ride); further sightings join it. The same code twice on one
/// reader is a plain duplicate (nothing to divert).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dispute {
    /// The ride the passenger was charged for (first by reader time).
    pub charged_ride: RideId,
    /// Every sighting of the code: ride, its reader's operator (charged ride first).
    pub sightings: Vec<(RideId, String)>,
    /// The credential.
    pub credential_id: CredentialId,
    /// Device sequence of the code.
    pub device_seq: u32,
    /// Account charged.
    pub account_id: Option<String>,
    /// Service day of the charged ride.
    pub service_day: String,
    /// Operator the fare was taken from (the charged ride's reader's).
    pub held_from: String,
    /// Amount held in suspense, or released once resolved: the charged
    /// ride's current fare (a re-rating of the ride moves the hold with it,
    /// in `hold/R:S/rN` and `release/R:S/rN` postings).
    pub held_minor: i64,
    /// When settlement opened it.
    pub opened_unix_s: u64,
    /// How it was resolved, once it is.
    pub resolution: Option<DisputeResolution>,
}

/// The operator's decision on a [`Dispute`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisputeResolution {
    /// The reader whose ride was judged genuine.
    pub award_reader_id: u32,
    /// Its operator, credited with the held fare.
    pub operator: String,
    /// When.
    pub at_unix_s: u64,
}

pub use fare_ledger::{AccountRef, Posting, PostingKind};

/// A recorded payment (for idempotency on the client's id).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRecord {
    /// Client-given id.
    pub payment_id: String,
    /// Account credited.
    pub account_id: String,
    /// Amount.
    pub amount_minor: i64,
    /// Posting made (`payment/{account}/{payment_id}`).
    pub posting_id: String,
    /// When.
    pub at_unix_s: u64,
}

/// One rated ride of an account's service day.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayRide {
    /// The ride.
    pub ride: RideId,
    /// Reader clock.
    pub reader_time_unix_s: u64,
    /// Route.
    pub route: String,
    /// Operator credited.
    pub operator: String,
    /// Concession profile of the credential the code carried.
    pub profile: Profile,
    /// Sum of what is posted for it so far.
    pub posted_minor: i64,
    /// Number of postings for it so far (the next is `revisions + 1`).
    pub revisions: u32,
}

/// An account's rides of one service day (what rating is a function of).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct DayState {
    /// Rides, kept sorted by (reader time, ride id).
    pub rides: Vec<DayRide>,
}

/// One deny list version: what changed from the previous one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DenyVersion {
    /// Version (a bundle version number).
    pub version: u64,
    /// Previous version (0 for the first).
    pub previous: u64,
    /// Ids added.
    pub add: Vec<CredentialId>,
    /// Ids removed.
    pub remove: Vec<CredentialId>,
}
