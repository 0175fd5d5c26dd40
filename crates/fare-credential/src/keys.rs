//! Key and signature parsing shared by every format. All verification goes
//! through [`verify_strict`], which rejects non-canonical and small-order
//! encodings (see the Wycheproof test).

use crate::subgroup::{all_in_prime_subgroup, GROUP_TEST_MIN_POINTS};
use curve25519_dalek::edwards::EdwardsPoint;
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use rand_core::{CryptoRng, RngCore};

/// Length of an ed25519 public key.
pub const PUBLIC_KEY_LEN: usize = 32;
/// Length of an ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

/// Why a key could not be used.
///
/// Not `#[non_exhaustive]`: settlement maps each variant to a stable error
/// code with an exhaustive `match`, so a new variant makes the compiler list
/// every place that must decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The 32 bytes are not a valid compressed Edwards point.
    #[error("public key is not a valid ed25519 point encoding")]
    NotAPoint,
    /// The key has small order: any signature "verifies" against it in lax verifiers.
    #[error("public key has small order (a weak key that must never be trusted)")]
    Weak,
    /// The key is a valid point of large order but has a small-order
    /// (torsion) component: an honest ed25519 key generator never makes one,
    /// and signatures under it can verify differently in cofactorless single
    /// and batch verification, so the issuer refuses to bind it.
    #[error("public key has a small-order component (not in the prime-order subgroup); an honest device never generates one")]
    MixedOrder,
    /// Wrong number of bytes.
    #[error("expected {expected} bytes, got {found}")]
    Length {
        /// Expected length.
        expected: usize,
        /// Found length.
        found: usize,
    },
}

/// Parses a public key, refusing invalid and small-order points.
pub fn parse_public_key(bytes: &[u8]) -> Result<VerifyingKey, KeyError> {
    let arr: [u8; PUBLIC_KEY_LEN] = bytes.try_into().map_err(|_| KeyError::Length {
        expected: PUBLIC_KEY_LEN,
        found: bytes.len(),
    })?;
    let key = VerifyingKey::from_bytes(&arr).map_err(|_| KeyError::NotAPoint)?;
    if key.is_weak() {
        return Err(KeyError::Weak);
    }
    Ok(key)
}

/// Parses a device key offered for a credential: as [`parse_public_key`],
/// and also refuses a key outside the prime-order subgroup
/// ([`KeyError::MixedOrder`]). Checked once at issuance (it costs a scalar
/// multiplication, [`in_prime_subgroup`]), so that every credential's device
/// key is torsion-free and settlement's batch verification cannot disagree
/// with `verify_strict` over the key.
/// For a batch of keys, [`device_keys_for_issuance`] does the same for
/// less.
pub fn parse_device_key_for_issuance(bytes: &[u8]) -> Result<IssuableKey, KeyError> {
    issuable_alone(parse_public_key(bytes)?)
}

/// A parsed key checked alone for a small-order component.
fn issuable_alone(key: VerifyingKey) -> Result<IssuableKey, KeyError> {
    if !in_prime_subgroup(&key.to_edwards()) {
        return Err(KeyError::MixedOrder);
    }
    Ok(IssuableKey(key))
}

/// A device key that passed issuance's checks: a valid point of large
/// order in the prime-order subgroup. Only [`parse_device_key_for_issuance`]
/// and [`device_keys_for_issuance`] make one, so an issuer given one need
/// not check again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IssuableKey(VerifyingKey);

impl IssuableKey {
    /// The key.
    pub fn key(&self) -> &VerifyingKey {
        &self.0
    }
    /// Its 32 bytes.
    pub fn to_bytes(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.0.to_bytes()
    }
}

/// [`parse_device_key_for_issuance`] of each of `keys`, in order: the same
/// answers except with probability at most 2⁻¹²⁸ (a mixed-order key
/// accepted), for about a third of the cost from a few hundred keys on:
/// one group test of every key that parses ([`crate::subgroup`]; from
/// [`GROUP_TEST_MIN_POINTS`] keys), and only when it fails, each key
/// alone. `rng` draws the test's subsets: never a generator the keys'
/// senders can see or predict.
pub fn device_keys_for_issuance(
    keys: &[[u8; PUBLIC_KEY_LEN]],
    rng: &mut (impl RngCore + CryptoRng),
) -> Vec<Result<IssuableKey, KeyError>> {
    let parsed: Vec<Result<VerifyingKey, KeyError>> =
        keys.iter().map(|k| parse_public_key(k)).collect();
    let points: Vec<EdwardsPoint> = parsed.iter().flatten().map(|k| k.to_edwards()).collect();
    let all_inside = points.len() >= GROUP_TEST_MIN_POINTS && all_in_prime_subgroup(&points, rng);
    parsed
        .into_iter()
        .map(|key| {
            let key = key?;
            if all_inside {
                Ok(IssuableKey(key))
            } else {
                issuable_alone(key)
            }
        })
        .collect()
}

/// `l − 2²⁵²` (125 bits), little-endian: `[ℓ]P = [2²⁵²]P + [l − 2²⁵²]P`.
const L_MINUS_2_POW_252: u128 = 0x14de_f9de_a2f7_9cd6_5812_631a_5cf5_d3ed;

/// True when `point` is in the prime-order subgroup: `[ℓ]P = 0`, exact.
/// Variable-time, for public points only (device keys, signatures' `R`):
/// one multiscalar multiplication `[2²⁵²]P + [ℓ − 2²⁵²]P` (a `Scalar`
/// cannot hold `ℓ` itself). dalek's `EdwardsPoint::is_torsion_free`
/// computes the same in constant time and takes about 30 % longer
/// (settlement/README.md, "Numbers"); a test checks the two agree.
pub fn in_prime_subgroup(point: &EdwardsPoint) -> bool {
    let mut low = [0u8; 32];
    low[..16].copy_from_slice(&L_MINUS_2_POW_252.to_le_bytes());
    let mut high = [0u8; 32];
    high[31] = 0x10;
    let l_times_p = EdwardsPoint::vartime_multiscalar_mul(
        [
            Scalar::from_bytes_mod_order(low),
            Scalar::from_bytes_mod_order(high),
        ],
        [point, point],
    );
    l_times_p.is_identity()
}

/// Parses a signature of exactly 64 bytes. (Range checks on `s` happen in
/// `verify_strict`, so that a bad `s` is a bad signature, not a parse error.)
pub fn parse_signature(bytes: &[u8]) -> Result<Signature, KeyError> {
    let arr: [u8; SIGNATURE_LEN] = bytes.try_into().map_err(|_| KeyError::Length {
        expected: SIGNATURE_LEN,
        found: bytes.len(),
    })?;
    Ok(Signature::from_bytes(&arr))
}

/// `verify_strict` over `domain || message`, assembled into one buffer.
/// Returns false for any failure; callers map it to their reason.
pub fn verify_domain(key: &VerifyingKey, domain: &[u8], message: &[u8], sig: &[u8]) -> bool {
    let Ok(sig) = parse_signature(sig) else {
        return false;
    };
    let mut buf = Vec::with_capacity(domain.len() + message.len());
    buf.extend_from_slice(domain);
    buf.extend_from_slice(message);
    key.verify_strict(&buf, &sig).is_ok()
}

/// Signs `domain || message`.
pub fn sign_domain(key: &SigningKey, domain: &[u8], message: &[u8]) -> [u8; SIGNATURE_LEN] {
    let mut buf = Vec::with_capacity(domain.len() + message.len());
    buf.extend_from_slice(domain);
    buf.extend_from_slice(message);
    key.sign(&buf).to_bytes()
}

/// A fresh signing key from a caller-supplied RNG (seeded in tests).
pub fn generate_signing_key<R: RngCore + CryptoRng>(rng: &mut R) -> SigningKey {
    SigningKey::generate(rng)
}

/// A fresh signing key from the operating system's RNG.
pub fn generate_signing_key_os() -> SigningKey {
    SigningKey::generate(&mut rand_core::OsRng)
}
