//! How a [`Space`]'s keys and values map onto the columns of its table
//! (migration 0003): the **distribution key** `d` (the column a distributed
//! PostgreSQL shards on, first in every primary key) and, for ride history,
//! the **day** of the partition a row lives in.
//!
//! `d` is always a prefix of the key `k`, cut by a rule that is monotone in
//! `k` (a fixed length, or up to the first 0 byte). So ordering rows by
//! `(d, k)` is ordering them by `k`, and sled's ordered scans and ranges
//! become row-comparison ranges on the primary key `(d, k)`.

use super::super::typed::{BlockKind, ResultBlock, RideBlock};
use super::Space;
use crate::error::StoreError;
use fare_credential::RideRecord;

/// Day number of rows whose day cannot be read (a value that is not a
/// block, a day key without a date): their own partition, never dropped
/// by the purge.
pub const UNDATED: i32 = 0;

/// How the distribution key is cut from the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dist {
    /// The first `n` bytes (a reader id: 4; a credential or device id: 16).
    Fixed(usize),
    /// Up to the first 0 byte (an account id or a ledger account name,
    /// which never contain one).
    UpToZero,
    /// The whole key (global or single-id tables).
    Whole,
}

/// The distribution rule of a space: the reader for ride intake, the
/// account (or ledger account) for ledger and settlement data, the
/// credential for code sightings and fraud events.
pub fn dist(space: Space) -> Dist {
    match space {
        Space::Readers
        | Space::ReaderStates
        | Space::Rides
        | Space::Results
        | Space::RidePostings
        | Space::Incidents
        | Space::Disputes => Dist::Fixed(4),
        Space::Accounts
        | Space::AccountCredentials
        | Space::Days
        | Space::Payments
        | Space::Revoked
        | Space::AccountTokens
        | Space::Balances
        | Space::AccountPostings => Dist::UpToZero,
        Space::Credentials
        | Space::Codes
        | Space::Fraud
        | Space::DeniedCredentials
        | Space::DeviceCredentials => Dist::Fixed(16),
        Space::Postings
        | Space::DenyVersions
        | Space::Meta
        | Space::PassengerTokens
        | Space::DeviceKeys => Dist::Whole,
    }
}

/// The distribution key of `k` in `space` (also of a scan bound: the rule
/// is monotone, so bounds keep their order).
pub fn dist_key(space: Space, k: &[u8]) -> &[u8] {
    match dist(space) {
        Dist::Fixed(n) => &k[..n.min(k.len())],
        Dist::UpToZero => match k.iter().position(|b| *b == 0) {
            Some(i) => &k[..i],
            None => k,
        },
        Dist::Whole => k,
    }
}

/// Whether a space's table is partitioned by day (ride history: what the
/// retention purge removes).
pub fn partitioned(space: Space) -> bool {
    matches!(space, Space::Rides | Space::Results | Space::Days)
}

/// Every space (one table each).
pub const ALL_SPACES: [Space; 25] = [
    Space::Accounts,
    Space::Credentials,
    Space::AccountCredentials,
    Space::Readers,
    Space::ReaderStates,
    Space::Rides,
    Space::Results,
    Space::Incidents,
    Space::Postings,
    Space::RidePostings,
    Space::Balances,
    Space::AccountPostings,
    Space::Days,
    Space::Codes,
    Space::Fraud,
    Space::Payments,
    Space::DenyVersions,
    Space::Revoked,
    Space::Meta,
    Space::Disputes,
    Space::PassengerTokens,
    Space::AccountTokens,
    Space::DeviceKeys,
    Space::DeviceCredentials,
    Space::DeniedCredentials,
];

/// The spaces partitioned by day.
pub const PARTITIONED: [Space; 3] = [Space::Rides, Space::Results, Space::Days];

/// The day (`YYYYMMDD`) of a row of a partitioned space: for ride and
/// result blocks the UTC date of the block's newest reader time (so a
/// partition holds only rides before its day's end and is dropped whole
/// once that is past the retention); for day states the service day in
/// the key. [`UNDATED`] when it cannot be read.
pub fn row_day(space: Space, k: &[u8], v: &[u8]) -> i32 {
    let newest = match space {
        Space::Rides => RideBlock::decode(v).ok().and_then(|rides| {
            rides
                .iter()
                .filter_map(|r| RideRecord::decode_v1(&r.record).ok())
                .map(|r| r.reader_time_unix_s)
                .max()
        }),
        Space::Results => ResultBlock::decode(v)
            .ok()
            .and_then(|rs| rs.iter().map(|r| r.reader_time_unix_s).max()),
        Space::Days => return key_day(k),
        _ => return UNDATED,
    };
    newest.map_or(UNDATED, utc_day)
}

/// The `YYYYMMDD` after the last 0 byte of a day-state key.
fn key_day(k: &[u8]) -> i32 {
    let day = k.rsplit(|b| *b == 0).next().unwrap_or(&[]);
    match std::str::from_utf8(day)
        .ok()
        .and_then(|s| s.parse::<i32>().ok())
    {
        Some(d) if day.len() == 8 && d > 0 => d,
        _ => UNDATED,
    }
}

/// The UTC date of a unix time as `YYYYMMDD`.
pub fn utc_day(unix_s: u64) -> i32 {
    let Ok(t) = jiff::Timestamp::from_second(i64::try_from(unix_s).unwrap_or(i64::MAX)) else {
        return UNDATED;
    };
    let d = t.to_zoned(jiff::tz::TimeZone::UTC).date();
    i32::from(d.year()) * 10_000 + i32::from(d.month()) * 100 + i32::from(d.day())
}

/// The day after `YYYYMMDD` (a partition's exclusive upper bound).
pub fn next_day(day: i32) -> Result<i32, StoreError> {
    if day == UNDATED {
        return Ok(UNDATED + 1);
    }
    let bad = |e: jiff::Error| StoreError::Internal(format!("partition day {day}: {e}"));
    let d = jiff::civil::Date::new(
        i16::try_from(day / 10_000).unwrap_or(i16::MAX),
        (day / 100 % 100) as i8,
        (day % 100) as i8,
    )
    .map_err(bad)?;
    let n = d.tomorrow().map_err(bad)?;
    Ok(i32::from(n.year()) * 10_000 + i32::from(n.month()) * 100 + i32::from(n.day()))
}

/// The partition of `table` for `day`.
pub fn partition_name(table: &str, day: i32) -> String {
    if day == UNDATED {
        format!("{table}_undated")
    } else {
        format!("{table}_d{day}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distribution_keys_keep_key_order() {
        let keys: [&[u8]; 7] = [b"", b"a", b"a\0z", b"a\x01", b"ab", b"ab\0c", b"b"];
        for space in [Space::Accounts, Space::Rides, Space::Codes, Space::Meta] {
            for x in keys {
                for y in keys {
                    let (dx, dy) = (dist_key(space, x), dist_key(space, y));
                    assert_eq!((dx, x).cmp(&(dy, y)), x.cmp(y), "{space:?} {x:?} {y:?}");
                }
            }
        }
        assert_eq!(
            dist_key(Space::AccountCredentials, b"alice\0cred"),
            b"alice"
        );
        assert_eq!(dist_key(Space::Rides, &[0, 0, 0, 7, 0, 1]), &[0, 0, 0, 7]);
    }

    #[test]
    fn days_of_keys_and_times() {
        assert_eq!(key_day(b"alice\x0020260310"), 20260310);
        assert_eq!(key_day(b"d"), UNDATED);
        assert_eq!(utc_day(0), 19700101);
        assert_eq!(utc_day(1_773_100_800), 20260310);
        assert_eq!(next_day(20261231).unwrap(), 20270101);
        assert_eq!(next_day(20240228).unwrap(), 20240229);
        assert_eq!(row_day(Space::Rides, b"k", b"not a block"), UNDATED);
    }
}
