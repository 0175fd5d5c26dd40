//! Key encodings of the stored spaces.

use super::*;

/// Key of an account's day: `account ‖ 0 ‖ YYYYMMDD`.
pub fn day_key(account_id: &str, day: &str) -> Vec<u8> {
    let mut k = account_id.as_bytes().to_vec();
    k.push(0);
    k.extend(day.bytes().filter(|b| *b != b'-'));
    k
}

/// Rides per stored block of results (aligned on the reader sequence).
/// Results are written and read in bulk (a settlement chunk, reports,
/// purge), so one record per block instead of one per ride cuts the sled
/// writes of a chunk by ~40 %; 256 results (~30 KB) keep a record well
/// below sled's large-value threshold.
pub const RESULT_BLOCK_RIDES: u64 = 256;

/// Rides per stored block of raw ride records ([`Space::Rides`], aligned on
/// the reader sequence). Settlement reads rides only in bulk (a chunk reads
/// each reader's unsettled range once), and sled's cost is per record read
/// or written, not per byte: one record per 64 rides (~20 KB) instead of one
/// per ride cuts a 1M-ride run's reads from 1M records to ~16k.
pub const RIDE_BLOCK_RIDES: u64 = 64;

/// Key of the ride block holding `ride`: reader id BE ‖ (seq / block) BE.
pub fn ride_block_key(ride: RideId) -> Vec<u8> {
    block_key(ride.reader_id, ride.reader_seq / RIDE_BLOCK_RIDES)
}

/// Key of a per-reader block (rides, results): reader id BE ‖ block number BE.
pub(super) fn block_key(reader_id: u32, block_no: u64) -> Vec<u8> {
    let mut k = reader_id.to_be_bytes().to_vec();
    k.extend_from_slice(&block_no.to_be_bytes());
    k
}

/// Key of the results block holding `ride`: reader id BE ‖ (seq / block) BE.
pub fn result_block_key(ride: RideId) -> Vec<u8> {
    block_key(ride.reader_id, ride.reader_seq / RESULT_BLOCK_RIDES)
}

/// Key of a ride code: credential id ‖ device seq (fraud event keys).
pub fn code_key(cred: &CredentialId, device_seq: u32) -> Vec<u8> {
    let mut k = cred.0.to_vec();
    k.extend_from_slice(&device_seq.to_be_bytes());
    k
}

/// The ride of a ride posting id (`ride/R:S/rN`), or `None` for any other id.
pub fn ride_of_posting_id(posting_id: &str) -> Option<RideId> {
    let rest = posting_id.strip_prefix("ride/")?;
    let (ride, rev) = rest.split_once('/')?;
    rev.strip_prefix('r')?.parse::<u32>().ok()?;
    let (r, q) = ride.split_once(':')?;
    Some(RideId {
        reader_id: r.parse().ok()?,
        reader_seq: q.parse().ok()?,
    })
}

/// Key of a payment: account ‖ 0 ‖ client payment id.
pub fn payment_key(account_id: &str, payment_id: &str) -> Vec<u8> {
    pair_key(account_id.as_bytes(), payment_id.as_bytes())
}

pub(super) fn pair_key(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut k = a.to_vec();
    k.push(0);
    k.extend_from_slice(b);
    k
}
