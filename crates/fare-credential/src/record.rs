//! Ride record, wire version 1, and the per-reader hash chain. See SPEC.md §5.

use crate::code::MAX_RIDE_CODE_BYTES;
use crate::error::FormatError;
use crate::wire::{put_short_str, Reader};

/// Version byte of ride record format v1.
pub const RIDE_RECORD_V1: u8 = 1;
/// Domain tag of a record's chain hash.
pub const RECORD_HASH_DOMAIN_V1: &[u8] = b"FARE-RIDE\0v1";
/// Domain tag of a reader's genesis chain hash.
pub const CHAIN_GENESIS_DOMAIN_V1: &[u8] = b"FARE-CHAIN\0v1";
/// Longest vehicle or route name.
pub const MAX_NAME_BYTES: usize = 32;
/// Largest encoded record.
pub const MAX_RECORD_BYTES: usize =
    1 + 4 + 8 + 8 + 2 * (1 + MAX_NAME_BYTES) + 5 + 2 + MAX_RIDE_CODE_BYTES + 32;

/// A ride the reader accepted. Ride id = (reader_id, reader_seq).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RideRecord {
    /// The reader that accepted it.
    pub reader_id: u32,
    /// The reader's sequence number: 1, 2, 3... without gaps.
    pub reader_seq: u64,
    /// Reader clock at acceptance.
    pub reader_time_unix_s: u64,
    /// Vehicle name (≤ 32 bytes UTF-8).
    pub vehicle: String,
    /// Route name (≤ 32 bytes UTF-8).
    pub route: String,
    /// Stop, if the reader knows it.
    pub stop: Option<u32>,
    /// The exact ride code bytes scanned.
    #[serde(with = "hex_bytes")]
    pub code: Vec<u8>,
    /// Chain hash of the previous record (or the reader's genesis hash).
    #[serde(with = "crate::trust::hex32")]
    pub prev_hash: [u8; 32],
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        hex::decode(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// The chain hash before a reader's first record.
pub fn genesis_hash(reader_id: u32) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(CHAIN_GENESIS_DOMAIN_V1);
    h.update(&reader_id.to_be_bytes());
    *h.finalize().as_bytes()
}

/// The chain hash of an encoded record.
pub fn record_hash(encoded: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(RECORD_HASH_DOMAIN_V1);
    h.update(encoded);
    *h.finalize().as_bytes()
}

fn invalid(field: &'static str, why: String) -> FormatError {
    FormatError::Invalid {
        object: "ride_record",
        field,
        why,
    }
}

impl RideRecord {
    /// Encodes; refuses over-long names or code.
    pub fn encode_v1(&self) -> Result<Vec<u8>, FormatError> {
        for (field, s) in [("vehicle", &self.vehicle), ("route", &self.route)] {
            if s.len() > MAX_NAME_BYTES {
                return Err(FormatError::TooLarge {
                    object: "ride_record",
                    field,
                    limit: MAX_NAME_BYTES,
                    found: s.len(),
                });
            }
        }
        if self.code.len() > MAX_RIDE_CODE_BYTES {
            return Err(FormatError::TooLarge {
                object: "ride_record",
                field: "code",
                limit: MAX_RIDE_CODE_BYTES,
                found: self.code.len(),
            });
        }
        if self.reader_seq == 0 {
            return Err(invalid("reader_seq", "sequence numbers start at 1".into()));
        }
        let mut out = Vec::with_capacity(96 + self.code.len());
        out.push(RIDE_RECORD_V1);
        out.extend_from_slice(&self.reader_id.to_be_bytes());
        out.extend_from_slice(&self.reader_seq.to_be_bytes());
        out.extend_from_slice(&self.reader_time_unix_s.to_be_bytes());
        put_short_str(&mut out, &self.vehicle);
        put_short_str(&mut out, &self.route);
        match self.stop {
            None => out.push(0),
            Some(s) => {
                out.push(1);
                out.extend_from_slice(&s.to_be_bytes());
            }
        }
        out.extend_from_slice(&(self.code.len() as u16).to_be_bytes());
        out.extend_from_slice(&self.code);
        out.extend_from_slice(&self.prev_hash);
        Ok(out)
    }

    /// Parses exactly one v1 record.
    pub fn decode_v1(bytes: &[u8]) -> Result<RideRecord, FormatError> {
        if bytes.len() > MAX_RECORD_BYTES {
            return Err(FormatError::TooLarge {
                object: "ride_record",
                field: "length",
                limit: MAX_RECORD_BYTES,
                found: bytes.len(),
            });
        }
        let mut r = Reader::new("ride_record", bytes);
        let version = r.u8("version")?;
        if version != RIDE_RECORD_V1 {
            return Err(FormatError::UnsupportedVersion {
                object: "ride_record",
                found: version,
                supported: RIDE_RECORD_V1,
            });
        }
        let reader_id = r.u32("reader_id")?;
        let reader_seq = r.u64("reader_seq")?;
        if reader_seq == 0 {
            return Err(invalid("reader_seq", "sequence numbers start at 1".into()));
        }
        let reader_time_unix_s = r.u64("reader_time_unix_s")?;
        let vehicle = r.short_str("vehicle", MAX_NAME_BYTES)?;
        let route = r.short_str("route", MAX_NAME_BYTES)?;
        let stop = match r.u8("stop_flag")? {
            0 => None,
            1 => Some(r.u32("stop")?),
            f => return Err(invalid("stop_flag", format!("{f}: expected 0 or 1"))),
        };
        let code_len = r.u16("code_len")? as usize;
        if code_len > MAX_RIDE_CODE_BYTES {
            return Err(FormatError::TooLarge {
                object: "ride_record",
                field: "code_len",
                limit: MAX_RIDE_CODE_BYTES,
                found: code_len,
            });
        }
        let code = r.bytes("code", code_len)?.to_vec();
        let prev_hash = r.array("prev_hash")?;
        r.finish()?;
        Ok(RideRecord {
            reader_id,
            reader_seq,
            reader_time_unix_s,
            vehicle,
            route,
            stop,
            code,
            prev_hash,
        })
    }

    /// This record's chain hash (hash of its encoding).
    pub fn hash(&self) -> Result<[u8; 32], FormatError> {
        Ok(record_hash(&self.encode_v1()?))
    }
}
