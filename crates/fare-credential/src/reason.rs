//! The one reject-reason enum every part of the system reports with.
//!
//! Each variant has a stable snake_case [`RejectReason::code`] that machines
//! read (CLI `--json`, settlement reports, metrics labels) and a human
//! message, via `Display`, that names the cause with numbers and says which
//! clock looks wrong when the failure is about time rather than forgery.

use crate::error::FormatError;
use std::fmt;

/// Why a ride code (or the reader itself) refused a ride.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RejectReason {
    /// The bytes are not a well-formed ride code.
    Malformed(FormatError),
    /// A version byte this build does not speak.
    UnsupportedVersion {
        /// `ride_code` or `credential`.
        object: &'static str,
        /// Version found.
        found: u8,
        /// Version supported.
        supported: u8,
    },
    /// The credential names an issuer key the reader's trust list lacks.
    UnknownIssuerKey {
        /// The key id in the credential.
        key_id: u32,
    },
    /// The issuer key exists but is outside its validity window (retired or not yet active).
    IssuerKeyNotValid {
        /// Key id.
        key_id: u32,
        /// Reader time.
        now_unix_s: u64,
        /// Start of the key's window.
        valid_from_unix_s: u64,
        /// End of the key's window.
        valid_until_unix_s: u64,
    },
    /// The issuer signature over the credential does not verify.
    BadIssuerSignature {
        /// Key id the credential claims.
        key_id: u32,
    },
    /// The device key inside a validly signed credential is unusable.
    BadDeviceKey,
    /// The credential's validity window ended.
    CredentialExpired {
        /// Reader time.
        now_unix_s: u64,
        /// End of validity.
        valid_until_unix_s: u64,
        /// Tolerance applied.
        skew_s: u64,
    },
    /// The credential's validity window has not started.
    CredentialNotYetValid {
        /// Reader time.
        now_unix_s: u64,
        /// Start of validity.
        valid_from_unix_s: u64,
        /// Tolerance applied.
        skew_s: u64,
    },
    /// The device signature over the code does not verify.
    BadDeviceSignature,
    /// The code is older than its validity plus the skew tolerance.
    CodeExpired {
        /// Reader time.
        now_unix_s: u64,
        /// When the phone issued the code.
        issued_at_unix_s: u64,
        /// Code validity.
        validity_s: u64,
        /// Tolerance applied.
        skew_s: u64,
    },
    /// The code was issued further in the future than the skew tolerance.
    CodeFromFuture {
        /// Reader time.
        now_unix_s: u64,
        /// When the phone claims it issued the code.
        issued_at_unix_s: u64,
        /// Tolerance applied.
        skew_s: u64,
    },
    /// The credential is on the deny list.
    Revoked {
        /// The credential id (hex in messages).
        credential_id: [u8; 16],
    },
    /// This reader already accepted this exact code.
    AlreadyUsed {
        /// Sequence of the ride that accepted it.
        first_ride_seq: u64,
        /// When it was accepted (reader time).
        first_seen_unix_s: u64,
    },
    /// The reader's trust material is too old for its policy.
    TrustStale {
        /// Age of the installed bundle (reader time minus bundle server time).
        bundle_age_s: u64,
        /// The configured limit.
        max_age_s: u64,
    },
    /// The reader has no trust material at all.
    NotProvisioned,
    /// The ride log is at its size limit; rides are refused rather than lost.
    StorageFull {
        /// Bytes of unacknowledged log held.
        used_bytes: u64,
        /// The configured limit.
        limit_bytes: u64,
    },
    /// A camera frame held no readable QR code.
    NoCodeFound,
}

impl RejectReason {
    /// The stable machine-readable code. Never renamed once shipped.
    pub fn code(&self) -> &'static str {
        match self {
            RejectReason::Malformed(_) => "malformed",
            RejectReason::UnsupportedVersion { .. } => "unsupported_version",
            RejectReason::UnknownIssuerKey { .. } => "unknown_issuer_key",
            RejectReason::IssuerKeyNotValid { .. } => "issuer_key_not_valid",
            RejectReason::BadIssuerSignature { .. } => "bad_issuer_signature",
            RejectReason::BadDeviceKey => "bad_device_key",
            RejectReason::CredentialExpired { .. } => "credential_expired",
            RejectReason::CredentialNotYetValid { .. } => "credential_not_yet_valid",
            RejectReason::BadDeviceSignature => "bad_device_signature",
            RejectReason::CodeExpired { .. } => "code_expired",
            RejectReason::CodeFromFuture { .. } => "code_from_future",
            RejectReason::Revoked { .. } => "revoked",
            RejectReason::AlreadyUsed { .. } => "already_used",
            RejectReason::TrustStale { .. } => "trust_stale",
            RejectReason::NotProvisioned => "not_provisioned",
            RejectReason::StorageFull { .. } => "storage_full",
            RejectReason::NoCodeFound => "no_code_found",
        }
    }

    /// Every code this build can produce, for docs and exhaustive tests.
    pub const ALL_CODES: &'static [&'static str] = &[
        "malformed",
        "unsupported_version",
        "unknown_issuer_key",
        "issuer_key_not_valid",
        "bad_issuer_signature",
        "bad_device_key",
        "credential_expired",
        "credential_not_yet_valid",
        "bad_device_signature",
        "code_expired",
        "code_from_future",
        "revoked",
        "already_used",
        "trust_stale",
        "not_provisioned",
        "storage_full",
        "no_code_found",
    ];

    /// The class of the failure. An exhaustive `match` (no wildcard), so a
    /// new reason must be classified here; callers outside this crate, where
    /// the non-exhaustive `RejectReason` cannot be matched exhaustively,
    /// match on the class instead.
    pub fn class(&self) -> RejectClass {
        match self {
            RejectReason::Malformed(_) | RejectReason::UnsupportedVersion { .. } => {
                RejectClass::Format
            }
            RejectReason::UnknownIssuerKey { .. }
            | RejectReason::BadIssuerSignature { .. }
            | RejectReason::BadDeviceKey
            | RejectReason::BadDeviceSignature => RejectClass::Forgery,
            RejectReason::IssuerKeyNotValid { .. }
            | RejectReason::CredentialExpired { .. }
            | RejectReason::CredentialNotYetValid { .. }
            | RejectReason::CodeExpired { .. }
            | RejectReason::CodeFromFuture { .. } => RejectClass::Clock,
            RejectReason::Revoked { .. } => RejectClass::Revoked,
            RejectReason::AlreadyUsed { .. } => RejectClass::Replay,
            RejectReason::TrustStale { .. }
            | RejectReason::NotProvisioned
            | RejectReason::StorageFull { .. }
            | RejectReason::NoCodeFound => RejectClass::Reader,
        }
    }

    /// True when the likely cause is a clock (phone's or reader's), not forgery.
    pub fn is_clock_related(&self) -> bool {
        self.class() == RejectClass::Clock
    }

    /// True when the bytes were tampered with or forged.
    pub fn is_forgery(&self) -> bool {
        self.class() == RejectClass::Forgery
    }
}

/// What kind of failure a [`RejectReason`] is ([`RejectReason::class`]).
/// Not `#[non_exhaustive]`: a new class makes every `match` on it a compile
/// error until it decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RejectClass {
    /// Not a well-formed ride code of a supported version.
    Format,
    /// A signature or key that does not verify, or an issuer key not trusted:
    /// the bytes are not what an issuer and a phone signed.
    Forgery,
    /// A genuine code outside a time window (a clock problem, not forgery).
    Clock,
    /// The credential is on the deny list.
    Revoked,
    /// The code was already used at this reader.
    Replay,
    /// The reader's own state (no trust material, stale, disk full, no code in view).
    Reader,
}

impl From<FormatError> for RejectReason {
    fn from(e: FormatError) -> Self {
        match e {
            FormatError::UnsupportedVersion {
                object,
                found,
                supported,
            } => RejectReason::UnsupportedVersion {
                object,
                found,
                supported,
            },
            other => RejectReason::Malformed(other),
        }
    }
}

/// "75 s", "3 min 5 s", "2 h 4 min", "3 d 2 h": short and exact enough for a driver's screen.
pub fn human_duration(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min {} s", s / 60, s % 60),
        s if s < 172_800 => format!("{} h {} min", s / 3600, (s % 3600) / 60),
        s => format!("{} d {} h", s / 86_400, (s % 86_400) / 3600),
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RejectReason::Malformed(e) => write!(f, "not a ride code: {e}"),
            RejectReason::UnsupportedVersion { object, found, supported } => write!(
                f,
                "{object} format version {found} is not supported (this reader speaks {supported}): \
                 update the reader or the wallet app"
            ),
            RejectReason::UnknownIssuerKey { key_id } => write!(
                f,
                "credential signed by issuer key {key_id}, which is not in this reader's trust list: \
                 a forgery, or the reader missed a bundle update"
            ),
            RejectReason::IssuerKeyNotValid { key_id, now_unix_s, valid_from_unix_s, valid_until_unix_s } => {
                if now_unix_s > valid_until_unix_s {
                    write!(
                        f,
                        "issuer key {key_id} was retired {} ago (valid until {valid_until_unix_s}): \
                         the phone must renew its credential; if this is sudden, is the reader's clock ahead?",
                        human_duration(now_unix_s - valid_until_unix_s)
                    )
                } else {
                    write!(
                        f,
                        "issuer key {key_id} is not valid until {valid_from_unix_s} (in {}): \
                         is the reader's clock behind?",
                        human_duration(valid_from_unix_s.saturating_sub(*now_unix_s))
                    )
                }
            }
            RejectReason::BadIssuerSignature { key_id } => write!(
                f,
                "issuer signature (key {key_id}) does not verify: the credential was forged or altered"
            ),
            RejectReason::BadDeviceKey => write!(
                f,
                "the device key in the credential is invalid or weak: the issuer must never sign such a key"
            ),
            RejectReason::CredentialExpired { now_unix_s, valid_until_unix_s, skew_s } => write!(
                f,
                "credential expired {} ago (valid until {valid_until_unix_s}, skew tolerance {skew_s} s): \
                 the phone must go online to renew it; if it was just renewed, is the reader's clock ahead?",
                human_duration(now_unix_s.saturating_sub(*valid_until_unix_s))
            ),
            RejectReason::CredentialNotYetValid { now_unix_s, valid_from_unix_s, skew_s } => write!(
                f,
                "credential not valid until {valid_from_unix_s}, {} from now (skew tolerance {skew_s} s): \
                 is the reader's clock behind?",
                human_duration(valid_from_unix_s.saturating_sub(*now_unix_s))
            ),
            RejectReason::BadDeviceSignature => write!(
                f,
                "device signature does not verify: the code was altered, or made by a device \
                 other than the one the credential names"
            ),
            RejectReason::CodeExpired { now_unix_s, issued_at_unix_s, validity_s, skew_s } => write!(
                f,
                "code expired {} ago: valid {validity_s} s, skew tolerance {skew_s} s \
                 (issued {} ago): a screenshot, or the phone's clock is behind",
                human_duration(now_unix_s.saturating_sub(issued_at_unix_s + validity_s + skew_s)),
                human_duration(now_unix_s.saturating_sub(*issued_at_unix_s)),
            ),
            RejectReason::CodeFromFuture { now_unix_s, issued_at_unix_s, skew_s } => write!(
                f,
                "code issued {} in the future (skew tolerance {skew_s} s): \
                 the phone's clock is ahead, or the reader's is behind",
                human_duration(issued_at_unix_s.saturating_sub(*now_unix_s)),
            ),
            RejectReason::Revoked { credential_id } => write!(
                f,
                "credential {} is on the deny list (account blocked or phone reported stolen)",
                hex::encode(credential_id)
            ),
            RejectReason::AlreadyUsed { first_ride_seq, first_seen_unix_s } => write!(
                f,
                "this exact code was already accepted here (ride {first_ride_seq} at {first_seen_unix_s}): \
                 show a fresh code"
            ),
            RejectReason::TrustStale { bundle_age_s, max_age_s } => write!(
                f,
                "reader trust material is {} old, over the {} limit: the reader must sync \
                 (or its clock is ahead)",
                human_duration(*bundle_age_s),
                human_duration(*max_age_s)
            ),
            RejectReason::NotProvisioned => write!(f, "reader has no trust bundle installed: provision it"),
            RejectReason::StorageFull { used_bytes, limit_bytes } => write!(
                f,
                "ride log full ({used_bytes} of {limit_bytes} bytes unacknowledged): \
                 rides are refused until the reader uploads to settlement"
            ),
            RejectReason::NoCodeFound => write!(f, "no QR code found in the frame"),
        }
    }
}

impl std::error::Error for RejectReason {}
