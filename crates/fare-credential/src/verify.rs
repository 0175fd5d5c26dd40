//! Offline verification of a ride code: pure, no I/O, no clock (the caller
//! passes `now_unix_s`). The validator calls the stages one by one to time
//! them; [`verify_ride_code`] runs them all.
//!
//! Order matters for the reason reported: structure, then signatures, then
//! time, then the deny list. A flipped bit in a time field therefore reads as
//! forgery (`bad_*_signature`), never as a clock problem.

use crate::code::RideCode;
use crate::credential::{Credential, CredentialId, Profile};
use crate::keys::{parse_public_key, verify_domain};
use crate::reason::RejectReason;
use crate::trust::{DenyList, TrustList};
use ed25519_dalek::VerifyingKey;
use std::collections::{HashMap, VecDeque};

/// Freshness policy. Defaults from DESIGN.md §3.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// How long a code is valid after its issue time.
    pub code_validity_s: u64,
    /// Tolerated disagreement between the phone's and the reader's clocks,
    /// applied to both ends of every window.
    pub skew_tolerance_s: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            code_validity_s: 60,
            skew_tolerance_s: 30,
        }
    }
}

/// What a successful verification established.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedRide {
    /// The rider's pseudonym.
    pub credential_id: CredentialId,
    /// Concession profile.
    pub profile: Profile,
    /// Issuer key that signed the credential.
    pub issuer_key_id: u32,
    /// Phone-side issue time.
    pub issued_at_unix_s: u32,
    /// Phone-side sequence number.
    pub device_seq: u32,
    /// Digest of the exact code bytes.
    pub code_digest: [u8; 32],
}

/// Remembers credentials whose issuer signature already verified, so a
/// returning rider costs one signature check instead of two. Bounded: the
/// oldest entry is evicted at capacity. Entries keep only what was proven
/// (issuer signature over these exact bytes); key windows, credential
/// windows and the deny list are still checked on every decision, so a
/// bundle update takes effect at once.
#[derive(Debug)]
pub struct CredentialCache {
    map: HashMap<[u8; 32], VerifyingKey>,
    order: VecDeque<[u8; 32]>,
    capacity: usize,
}

impl CredentialCache {
    /// A cache holding at most `capacity` credentials. It grows as riders
    /// come (no table sized for `capacity` up front): a preallocated table
    /// of 4,096 entries spreads a few hundred riders over as many memory
    /// pages, about 0.5 MB per reader; growing costs at most
    /// log₂(`capacity`) rehashes in a reader's life.
    pub fn new(capacity: usize) -> Self {
        CredentialCache {
            map: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }
    /// Number of cached credentials.
    pub fn len(&self) -> usize {
        self.map.len()
    }
    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
    /// Forgets everything (e.g. after a trust list change that removed a key).
    pub fn clear(&mut self) {
        self.map.clear();
        self.order.clear();
    }
    fn get(&self, digest: &[u8; 32]) -> Option<VerifyingKey> {
        self.map.get(digest).copied()
    }
    fn insert(&mut self, digest: [u8; 32], key: VerifyingKey) {
        if self.map.len() >= self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
        if self.map.insert(digest, key).is_none() {
            self.order.push_back(digest);
        }
    }
}

/// Stage 1: parse the bytes.
pub fn parse_stage(bytes: &[u8]) -> Result<RideCode, RejectReason> {
    RideCode::from_bytes(bytes).map_err(RejectReason::from)
}

/// Stage 2: the credential's issuer key and signature. Returns the device
/// key. With a cache, a credential seen before skips the issuer signature.
pub fn credential_stage(
    cred: &Credential,
    trust: &TrustList,
    now_unix_s: u64,
    cache: Option<&mut CredentialCache>,
) -> Result<VerifyingKey, RejectReason> {
    let body = cred.body();
    let (issuer, issuer_vk) =
        trust
            .get(body.issuer_key_id)
            .ok_or(RejectReason::UnknownIssuerKey {
                key_id: body.issuer_key_id,
            })?;
    // The signature (or the cache, which holds only credentials whose
    // signature verified) before the key's window: a tampered credential
    // under a key outside its window reads as forgery, not as a clock problem.
    let window = || {
        if now_unix_s < issuer.valid_from_unix_s || now_unix_s > issuer.valid_until_unix_s {
            return Err(RejectReason::IssuerKeyNotValid {
                key_id: issuer.key_id,
                now_unix_s,
                valid_from_unix_s: issuer.valid_from_unix_s,
                valid_until_unix_s: issuer.valid_until_unix_s,
            });
        }
        Ok(())
    };
    let digest = cred.digest();
    if let Some(cache) = &cache {
        if let Some(vk) = cache.get(&digest) {
            window()?;
            return Ok(vk);
        }
    }
    if !verify_domain(
        issuer_vk,
        crate::credential::CREDENTIAL_DOMAIN_V1,
        cred.signed_bytes(),
        cred.issuer_signature(),
    ) {
        return Err(RejectReason::BadIssuerSignature {
            key_id: body.issuer_key_id,
        });
    }
    let device_vk =
        parse_public_key(&body.device_public_key).map_err(|_| RejectReason::BadDeviceKey)?;
    if let Some(cache) = cache {
        cache.insert(digest, device_vk);
    }
    window()?;
    Ok(device_vk)
}

/// Stage 3: the device signature over the code.
pub fn device_stage(code: &RideCode, device_key: &VerifyingKey) -> Result<(), RejectReason> {
    if verify_domain(
        device_key,
        crate::code::RIDE_CODE_DOMAIN_V1,
        code.signed_bytes(),
        code.device_signature(),
    ) {
        Ok(())
    } else {
        Err(RejectReason::BadDeviceSignature)
    }
}

/// Stage 4: time windows (credential validity, code freshness) with skew.
pub fn time_stage(code: &RideCode, policy: &Policy, now_unix_s: u64) -> Result<(), RejectReason> {
    let skew_s = policy.skew_tolerance_s;
    let body = code.credential().body();
    let from = body.valid_from_unix_s as u64;
    let until = body.valid_until_unix_s as u64;
    if now_unix_s.saturating_add(skew_s) < from {
        return Err(RejectReason::CredentialNotYetValid {
            now_unix_s,
            valid_from_unix_s: from,
            skew_s,
        });
    }
    if now_unix_s > until.saturating_add(skew_s) {
        return Err(RejectReason::CredentialExpired {
            now_unix_s,
            valid_until_unix_s: until,
            skew_s,
        });
    }
    let issued = code.issued_at_unix_s() as u64;
    if issued > now_unix_s.saturating_add(skew_s) {
        return Err(RejectReason::CodeFromFuture {
            now_unix_s,
            issued_at_unix_s: issued,
            skew_s,
        });
    }
    if now_unix_s > issued + policy.code_validity_s + skew_s {
        return Err(RejectReason::CodeExpired {
            now_unix_s,
            issued_at_unix_s: issued,
            validity_s: policy.code_validity_s,
            skew_s,
        });
    }
    Ok(())
}

/// Stage 5: the deny list.
pub fn deny_stage(code: &RideCode, deny: &DenyList) -> Result<(), RejectReason> {
    let id = code.credential().id();
    if deny.contains(&id) {
        return Err(RejectReason::Revoked {
            credential_id: id.0,
        });
    }
    Ok(())
}

/// All stages in order. Replay ("already used") is the reader's business:
/// it needs the reader's state, so it is not checked here.
pub fn verify_ride_code(
    bytes: &[u8],
    trust: &TrustList,
    deny: &DenyList,
    policy: &Policy,
    now_unix_s: u64,
    cache: Option<&mut CredentialCache>,
) -> Result<VerifiedRide, RejectReason> {
    let code = parse_stage(bytes)?;
    let device_key = credential_stage(code.credential(), trust, now_unix_s, cache)?;
    device_stage(&code, &device_key)?;
    time_stage(&code, policy, now_unix_s)?;
    deny_stage(&code, deny)?;
    Ok(verified(&code))
}

/// The summary of a code that passed every stage.
pub fn verified(code: &RideCode) -> VerifiedRide {
    let body = code.credential().body();
    VerifiedRide {
        credential_id: body.credential_id,
        profile: body.profile,
        issuer_key_id: body.issuer_key_id,
        issued_at_unix_s: code.issued_at_unix_s(),
        device_seq: code.device_seq(),
        code_digest: code.digest(),
    }
}
