//! Ride code, wire version 1: what the QR carries. The phone signs the
//! credential plus an issue time and a sequence number with its device key.
//! See SPEC.md §3.

use crate::credential::{Credential, CREDENTIAL_V1_LEN};
use crate::error::FormatError;
use crate::keys::{sign_domain, SIGNATURE_LEN};
use crate::wire::Reader;
use ed25519_dalek::SigningKey;
use std::fmt;

/// Version byte of ride code format v1.
pub const RIDE_CODE_V1: u8 = 1;
/// Exact encoded length of a v1 ride code (≤ 200 so the QR stays version 10).
pub const RIDE_CODE_V1_LEN: usize = 1 + CREDENTIAL_V1_LEN + 4 + 4 + SIGNATURE_LEN;
/// Length of the device-signed part.
pub const RIDE_CODE_V1_SIGNED_LEN: usize = RIDE_CODE_V1_LEN - SIGNATURE_LEN;
/// Domain-separation tag prefixed to the device-signed bytes.
pub const RIDE_CODE_DOMAIN_V1: &[u8] = b"FARE-CODE\0v1";
/// The largest payload any decoder in this system accepts as a ride code
/// candidate; larger QR payloads are refused before parsing.
pub const MAX_RIDE_CODE_BYTES: usize = 512;

const _: () = assert!(RIDE_CODE_V1_LEN <= 200);

/// A parsed v1 ride code, holding its exact bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct RideCode {
    raw: [u8; RIDE_CODE_V1_LEN],
    credential: Credential,
    issued_at_unix_s: u32,
    device_seq: u32,
}

impl fmt::Debug for RideCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RideCode")
            .field("credential", &self.credential)
            .field("issued_at_unix_s", &self.issued_at_unix_s)
            .field("device_seq", &self.device_seq)
            .finish_non_exhaustive()
    }
}

impl RideCode {
    /// Makes and signs a v1 ride code with the device key.
    pub fn sign_v1(
        credential: &Credential,
        issued_at_unix_s: u32,
        device_seq: u32,
        device: &SigningKey,
    ) -> RideCode {
        let mut raw = [0u8; RIDE_CODE_V1_LEN];
        raw[0] = RIDE_CODE_V1;
        raw[1..1 + CREDENTIAL_V1_LEN].copy_from_slice(credential.as_bytes());
        let o = 1 + CREDENTIAL_V1_LEN;
        raw[o..o + 4].copy_from_slice(&issued_at_unix_s.to_be_bytes());
        raw[o + 4..o + 8].copy_from_slice(&device_seq.to_be_bytes());
        let sig = sign_domain(device, RIDE_CODE_DOMAIN_V1, &raw[..RIDE_CODE_V1_SIGNED_LEN]);
        raw[RIDE_CODE_V1_SIGNED_LEN..].copy_from_slice(&sig);
        RideCode {
            raw,
            credential: credential.clone(),
            issued_at_unix_s,
            device_seq,
        }
    }

    /// Parses exactly one v1 ride code. Signatures are *not* checked here.
    pub fn from_bytes(bytes: &[u8]) -> Result<RideCode, FormatError> {
        if bytes.len() > MAX_RIDE_CODE_BYTES {
            return Err(FormatError::TooLarge {
                object: "ride_code",
                field: "length",
                limit: MAX_RIDE_CODE_BYTES,
                found: bytes.len(),
            });
        }
        let mut r = Reader::new("ride_code", bytes);
        let version = r.u8("version")?;
        if version != RIDE_CODE_V1 {
            return Err(FormatError::UnsupportedVersion {
                object: "ride_code",
                found: version,
                supported: RIDE_CODE_V1,
            });
        }
        let cred_bytes = r.bytes("credential", CREDENTIAL_V1_LEN)?;
        let credential = Credential::from_bytes(cred_bytes)?;
        let issued_at_unix_s = r.u32("issued_at_unix_s")?;
        let device_seq = r.u32("device_seq")?;
        let _sig: [u8; SIGNATURE_LEN] = r.array("device_signature")?;
        r.finish()?;
        let mut raw = [0u8; RIDE_CODE_V1_LEN];
        raw.copy_from_slice(bytes);
        Ok(RideCode {
            raw,
            credential,
            issued_at_unix_s,
            device_seq,
        })
    }

    /// The exact bytes (the QR payload).
    pub fn as_bytes(&self) -> &[u8; RIDE_CODE_V1_LEN] {
        &self.raw
    }
    /// The embedded credential.
    pub fn credential(&self) -> &Credential {
        &self.credential
    }
    /// When the phone issued the code (its corrected clock).
    pub fn issued_at_unix_s(&self) -> u32 {
        self.issued_at_unix_s
    }
    /// The phone's sequence number (strictly increasing per device).
    pub fn device_seq(&self) -> u32 {
        self.device_seq
    }
    /// The device-signed part (without domain tag).
    pub fn signed_bytes(&self) -> &[u8] {
        &self.raw[..RIDE_CODE_V1_SIGNED_LEN]
    }
    /// Domain tag followed by the signed part: the exact message the device signed.
    pub fn device_message(&self) -> Vec<u8> {
        [RIDE_CODE_DOMAIN_V1, self.signed_bytes()].concat()
    }
    /// The device signature bytes.
    pub fn device_signature(&self) -> &[u8] {
        &self.raw[RIDE_CODE_V1_SIGNED_LEN..]
    }
    /// A digest of the exact code bytes (replay-cache key).
    pub fn digest(&self) -> [u8; 32] {
        *blake3::hash(&self.raw).as_bytes()
    }
}
