//! Credential, wire version 1: the issuer's statement "this device key may
//! ride, with this concession profile, in this window". See SPEC.md §2.

use crate::error::FormatError;
use crate::keys::{sign_domain, SIGNATURE_LEN};
use crate::wire::Reader;
use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Version byte of credential format v1.
pub const CREDENTIAL_V1: u8 = 1;
/// Exact encoded length of a v1 credential.
pub const CREDENTIAL_V1_LEN: usize = 126;
/// Length of the signed part of a v1 credential (everything before the signature).
pub const CREDENTIAL_V1_SIGNED_LEN: usize = CREDENTIAL_V1_LEN - SIGNATURE_LEN;
/// Domain-separation tag prefixed to the issuer-signed bytes.
pub const CREDENTIAL_DOMAIN_V1: &[u8] = b"FARE-CRED\0v1";

/// A credential id: 16 random bytes, the rider's pseudonym for the life of
/// one credential. Only the back office maps it to an account.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct CredentialId(pub [u8; 16]);

impl CredentialId {
    /// Parses 32 hex characters.
    pub fn from_hex(s: &str) -> Result<Self, FormatError> {
        let v = hex::decode(s.trim()).map_err(|e| FormatError::Invalid {
            object: "credential_id",
            field: "hex",
            why: format!("expected 32 hex characters: {e}"),
        })?;
        let arr: [u8; 16] = v.try_into().map_err(|v: Vec<u8>| FormatError::Invalid {
            object: "credential_id",
            field: "hex",
            why: format!("expected 16 bytes (32 hex characters), got {}", v.len()),
        })?;
        Ok(CredentialId(arr))
    }
    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for CredentialId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for CredentialId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CredentialId({})", self.to_hex())
    }
}

impl Serialize for CredentialId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for CredentialId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        CredentialId::from_hex(&s).map_err(serde::de::Error::custom)
    }
}

/// Concession profile, rated by the tariff (adult full fare, seniors free, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum Profile {
    /// Full fare.
    Adult = 0,
    /// Senior concession.
    Senior = 1,
    /// Student concession.
    Student = 2,
    /// Child concession.
    Child = 3,
}

impl Profile {
    /// All profiles, in wire order.
    pub const ALL: [Profile; 4] = [
        Profile::Adult,
        Profile::Senior,
        Profile::Student,
        Profile::Child,
    ];

    /// The wire byte.
    pub fn to_byte(self) -> u8 {
        self as u8
    }
    /// From the wire byte; `None` for unknown values.
    pub fn from_byte(b: u8) -> Option<Profile> {
        Profile::ALL.get(b as usize).copied()
    }
    /// The snake_case name (`adult`, `senior`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Profile::Adult => "adult",
            Profile::Senior => "senior",
            Profile::Student => "student",
            Profile::Child => "child",
        }
    }
}

impl std::str::FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Profile::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                format!("unknown profile `{s}`: expected adult, senior, student or child")
            })
    }
}

/// The fields of a credential, before signing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredentialBody {
    /// Which issuer key signs it (looked up in the trust list).
    pub issuer_key_id: u32,
    /// Random pseudonym.
    pub credential_id: CredentialId,
    /// The phone's ed25519 public key.
    pub device_public_key: [u8; 32],
    /// Concession profile.
    pub profile: Profile,
    /// Start of validity, unix seconds (u32 on the wire: good until 2106).
    pub valid_from_unix_s: u32,
    /// End of validity, unix seconds, inclusive.
    pub valid_until_unix_s: u32,
}

/// A parsed v1 credential. Holds the exact received bytes: signatures are
/// checked over those, never over a re-serialisation.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    raw: [u8; CREDENTIAL_V1_LEN],
    body: CredentialBody,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("body", &self.body)
            .finish_non_exhaustive()
    }
}

impl Credential {
    /// Signs `body` with the issuer key: the only way to make a credential.
    pub fn issue_v1(body: CredentialBody, issuer: &SigningKey) -> Credential {
        let mut raw = [0u8; CREDENTIAL_V1_LEN];
        raw[0] = CREDENTIAL_V1;
        raw[1..5].copy_from_slice(&body.issuer_key_id.to_be_bytes());
        raw[5..21].copy_from_slice(&body.credential_id.0);
        raw[21..53].copy_from_slice(&body.device_public_key);
        raw[53] = body.profile.to_byte();
        raw[54..58].copy_from_slice(&body.valid_from_unix_s.to_be_bytes());
        raw[58..62].copy_from_slice(&body.valid_until_unix_s.to_be_bytes());
        let sig = sign_domain(
            issuer,
            CREDENTIAL_DOMAIN_V1,
            &raw[..CREDENTIAL_V1_SIGNED_LEN],
        );
        raw[CREDENTIAL_V1_SIGNED_LEN..].copy_from_slice(&sig);
        Credential { raw, body }
    }

    /// Parses exactly one v1 credential: wrong length, unknown version or
    /// unknown profile are errors. Signatures are *not* checked here.
    pub fn from_bytes(bytes: &[u8]) -> Result<Credential, FormatError> {
        let mut r = Reader::new("credential", bytes);
        let version = r.u8("version")?;
        if version != CREDENTIAL_V1 {
            return Err(FormatError::UnsupportedVersion {
                object: "credential",
                found: version,
                supported: CREDENTIAL_V1,
            });
        }
        let issuer_key_id = r.u32("issuer_key_id")?;
        let credential_id = CredentialId(r.array("credential_id")?);
        let device_public_key = r.array("device_public_key")?;
        let profile_byte = r.u8("profile")?;
        let profile = Profile::from_byte(profile_byte).ok_or_else(|| FormatError::Invalid {
            object: "credential",
            field: "profile",
            why: format!("unknown profile {profile_byte}: expected 0..=3"),
        })?;
        let valid_from_unix_s = r.u32("valid_from_unix_s")?;
        let valid_until_unix_s = r.u32("valid_until_unix_s")?;
        let _sig: [u8; SIGNATURE_LEN] = r.array("issuer_signature")?;
        r.finish()?;
        let mut raw = [0u8; CREDENTIAL_V1_LEN];
        raw.copy_from_slice(bytes);
        Ok(Credential {
            raw,
            body: CredentialBody {
                issuer_key_id,
                credential_id,
                device_public_key,
                profile,
                valid_from_unix_s,
                valid_until_unix_s,
            },
        })
    }

    /// The exact bytes.
    pub fn as_bytes(&self) -> &[u8; CREDENTIAL_V1_LEN] {
        &self.raw
    }
    /// The parsed fields.
    pub fn body(&self) -> &CredentialBody {
        &self.body
    }
    /// The signed part (without the domain tag).
    pub fn signed_bytes(&self) -> &[u8] {
        &self.raw[..CREDENTIAL_V1_SIGNED_LEN]
    }
    /// Domain tag followed by the signed part: the exact message the issuer signed.
    pub fn issuer_message(&self) -> Vec<u8> {
        [CREDENTIAL_DOMAIN_V1, self.signed_bytes()].concat()
    }
    /// The issuer signature bytes.
    pub fn issuer_signature(&self) -> &[u8] {
        &self.raw[CREDENTIAL_V1_SIGNED_LEN..]
    }
    /// Shortcut for the credential id.
    pub fn id(&self) -> CredentialId {
        self.body.credential_id
    }
    /// A 32-byte digest identifying these exact bytes (for caches).
    pub fn digest(&self) -> [u8; 32] {
        *blake3::hash(&self.raw).as_bytes()
    }
}
