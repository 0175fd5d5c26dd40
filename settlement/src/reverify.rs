//! Re-verification of ride codes at scale (pure: no I/O, no clock).
//!
//! Every ride code a reader uploads is verified again, because a compromised
//! reader must not be able to invent or alter rides. The result must equal
//! what `fare_credential::verify` (with `verify_strict`) would decide at the
//! reader's recorded time — except the deny list, which settlement does not
//! re-apply (a reader holding an older deny list rightly accepted the ride;
//! it happened and is charged).
//!
//! Cost model: the issuer signature is checked once per distinct credential,
//! not once per ride; device signatures are checked with ed25519 batch
//! verification in chunks of [`CHUNK`] across all cores (rayon).
//!
//! Batch verification is more permissive than `verify_strict` in these
//! cases:
//! * small-order (weak) device key: refused per credential (`is_weak`, and
//!   issuance refuses such keys);
//! * device key with a small-order component (mixed order): refused at
//!   issuance (`parse_device_key_for_issuance`), so no credential binds one;
//! * small-order or non-canonically encoded `R`: such signatures are routed
//!   to `verify_strict` one by one (an honest signer never produces them, so
//!   this costs nothing in practice);
//! * non-canonical `s`: refused by both;
//! * `R` of large order with a small-order component (mixed order):
//!   cofactorless batch verification with random `zᵢ` accepts such a
//!   signature, which `verify_strict` refuses, with probability 1/ord(T)
//!   (≤ 1/2) per batch. Only the holder of the device's private key can make
//!   one and readers refuse it, so it reaches settlement only through a
//!   reader colluding with that rider. Ingest checks the `R` of every ride
//!   code it stores ([`code_needs_strict`]: `[ℓ]R = 0`, exact, one
//!   variable-base scalar multiplication) and marks the rides that fail;
//!   re-verification checks marked rides ([`CodeToVerify::strict`]) with
//!   `verify_strict` alone, never in a batch. The check sits at ingest, once
//!   per ride as it arrives, because in the run it would add about half
//!   again to re-verification's CPU time.
//!
//! When a batch fails, its halves are batch-verified again, down to batches
//! of fewer than 32 whose items are checked one by one with `verify_strict`
//! to find the bad ones.

use ed25519_dalek::{Signature, VerifyingKey};
use fare_credential::keys::parse_public_key;
use fare_credential::verify::{time_stage, verified};
use fare_credential::{Policy, RejectReason, RideCode, TrustList, VerifiedRide};
use rayon::prelude::*;
use std::collections::HashMap;
use std::sync::OnceLock;

/// Signatures per batch verification.
pub const CHUNK: usize = 4096;

/// One ride code to re-verify, with the reader's clock at acceptance.
#[derive(Clone, Copy, Debug)]
pub struct CodeToVerify<'a> {
    /// The exact code bytes from the ride record.
    pub code: &'a [u8],
    /// Reader time of the ride: the "now" of every time check.
    pub reader_time_unix_s: u64,
    /// Check the device signature with `verify_strict` alone, never in a
    /// batch: set for rides whose `R` failed [`code_needs_strict`] at ingest.
    pub strict: bool,
}

/// The verdict for one ride code: the verified ride, or why it is refused
/// (with the parsed code when it parsed, so the refusal can name the credential).
pub type Verdict = Result<VerifiedRide, (RejectReason, Option<Box<RideCode>>)>;

/// Canonical encodings (sign bit cleared) of the eight small-order points.
fn small_order_encodings() -> &'static [[u8; 32]; 8] {
    static ENC: OnceLock<[[u8; 32]; 8]> = OnceLock::new();
    ENC.get_or_init(|| {
        let mut out = [[0u8; 32]; 8];
        for (o, p) in out
            .iter_mut()
            .zip(curve25519_dalek::constants::EIGHT_TORSION.iter())
        {
            *o = p.compress().to_bytes();
            o[31] &= 0x7f;
        }
        out
    })
}

/// True when `R` (the first 32 bytes of a signature) is a small-order point or
/// a non-canonical encoding: cases where batch verification could accept what
/// `verify_strict` refuses.
pub fn r_needs_strict(r: &[u8; 32]) -> bool {
    let mut y = *r;
    y[31] &= 0x7f;
    // y >= p = 2^255 - 19: non-canonical field element.
    let non_canonical = y[0] >= 0xed && y[1..31].iter().all(|b| *b == 0xff) && y[31] == 0x7f;
    non_canonical || small_order_encodings().contains(&y)
}

/// `l − 2²⁵²` (125 bits), little-endian: `[ℓ]P = [2²⁵²]P + [l − 2²⁵²]P`.
const L_MINUS_2_POW_252: u128 = 0x14de_f9de_a2f7_9cd6_5812_631a_5cf5_d3ed;

/// True when `R` is not a point of the prime-order subgroup: it does not
/// decode, or `[ℓ]R ≠ 0` (a small-order component). Exact, and
/// variable-time because `R` is public: one multiscalar multiplication
/// `[2²⁵²]R + [ℓ − 2²⁵²]R` (a `Scalar` cannot hold `ℓ` itself). dalek's
/// `EdwardsPoint::is_torsion_free` computes the same constant-time and
/// took ≈ 30 % longer here (41 vs 31 µs under load); ingest pays this once
/// per ride, and a test checks the two agree.
pub fn r_outside_prime_subgroup(r: &[u8; 32]) -> bool {
    use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
    use curve25519_dalek::scalar::Scalar;
    use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
    let Some(point) = CompressedEdwardsY(*r).decompress() else {
        return true;
    };
    let mut low = [0u8; 32];
    low[..16].copy_from_slice(&L_MINUS_2_POW_252.to_le_bytes());
    let mut high = [0u8; 32];
    high[31] = 0x10;
    let l_times_r = EdwardsPoint::vartime_multiscalar_mul(
        [
            Scalar::from_bytes_mod_order(low),
            Scalar::from_bytes_mod_order(high),
        ],
        [point, point],
    );
    !l_times_r.is_identity()
}

/// True when a ride code's device signature must be checked with
/// `verify_strict` alone: its `R` is non-canonical, small-order or has a
/// small-order component, cases where a batch could accept what the reader
/// refuses. Ingest computes this once per stored ride. A code that does not
/// parse is `false` (re-verification refuses it as malformed anyway).
pub fn code_needs_strict(code: &[u8]) -> bool {
    let Ok(parsed) = fare_credential::verify::parse_stage(code) else {
        return false;
    };
    let r: [u8; 32] = parsed.device_signature()[..32]
        .try_into()
        .expect("a parsed code has a 64-byte device signature");
    r_needs_strict(&r) || r_outside_prime_subgroup(&r)
}

/// One signature to check: the exact signed message (domain tag included),
/// the signature bytes and the public key.
pub type SigItem = (Vec<u8>, [u8; 64], VerifyingKey);

/// Verifies `(message, signature, key)` triples with exactly the result
/// `verify_strict` would give each: one batch verification for the items
/// where batch and strict agree, `verify_strict` for the rest (suspicious `R`,
/// and the items `strict(n)` names: rides ingest marked); a failing batch is
/// split in halves until the bad items are found (`verify_strict` on the
/// last few).
pub fn verify_chunk(items: &[&SigItem], strict: impl Fn(usize) -> bool) -> Vec<bool> {
    let mut out = vec![false; items.len()];
    let mut idx = Vec::with_capacity(items.len());
    for (n, (msg, sig, vk)) in items.iter().enumerate() {
        let r: [u8; 32] = sig[..32].try_into().expect("32 bytes");
        if strict(n) || r_needs_strict(&r) {
            out[n] = vk.verify_strict(msg, &Signature::from_bytes(sig)).is_ok();
        } else {
            idx.push(n);
        }
    }
    if idx.is_empty() {
        return out;
    }
    let msgs: Vec<&[u8]> = idx.iter().map(|n| items[*n].0.as_slice()).collect();
    let sigs: Vec<Signature> = idx
        .iter()
        .map(|n| Signature::from_bytes(&items[*n].1))
        .collect();
    let keys: Vec<VerifyingKey> = idx.iter().map(|n| items[*n].2).collect();
    let mut oks = vec![false; idx.len()];
    batch_or_split(&msgs, &sigs, &keys, &mut oks);
    for (k, n) in idx.iter().enumerate() {
        out[*n] = oks[k];
    }
    out
}

/// Batch verification of ed25519 signatures: the equation of
/// `ed25519_dalek::verify_batch` (`-(Σ zᵢsᵢ)·B + Σ zᵢ·Rᵢ + Σ (zᵢhᵢ)·Aᵢ = 0`
/// with random 128-bit `zᵢ`, `hᵢ = SHA-512(Rᵢ ‖ Aᵢ ‖ Mᵢ)`, no cofactor),
/// with the terms of a public key that occurs several times merged into one
/// (`(Σ zᵢhᵢ)·A`): a phone's rides share its device key, so a batch sorted
/// by key has far fewer points in its multiscalar multiplication. The `zᵢ`
/// come from a generator seeded by the OS. A non-canonical `s` or an
/// undecodable `R` fails the batch (the items are then checked strictly).
/// Callers route small-order / non-canonical `R` and weak keys elsewhere, as
/// for `verify_batch`.
pub fn verify_batch_merged(msgs: &[&[u8]], sigs: &[Signature], keys: &[VerifyingKey]) -> bool {
    use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
    use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
    use curve25519_dalek::scalar::Scalar;
    use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
    use rand_chacha::rand_core::{RngCore, SeedableRng};
    use sha2::{Digest, Sha512};

    assert!(msgs.len() == sigs.len() && sigs.len() == keys.len());
    let mut rng = rand_chacha::ChaCha20Rng::from_entropy();
    let mut b_coefficient = Scalar::ZERO;
    let mut r_points = Vec::with_capacity(msgs.len());
    let mut r_coefficients = Vec::with_capacity(msgs.len());
    let mut a_slot: HashMap<[u8; 32], usize> = HashMap::new();
    let mut a_points: Vec<EdwardsPoint> = Vec::new();
    let mut a_coefficients: Vec<Scalar> = Vec::new();
    for ((msg, sig), key) in msgs.iter().zip(sigs).zip(keys) {
        let Some(s) = Option::<Scalar>::from(Scalar::from_canonical_bytes(*sig.s_bytes())) else {
            return false;
        };
        let Some(r) = CompressedEdwardsY(*sig.r_bytes()).decompress() else {
            return false;
        };
        let h = Scalar::from_hash(
            Sha512::new()
                .chain_update(sig.r_bytes())
                .chain_update(key.as_bytes())
                .chain_update(msg),
        );
        let mut zb = [0u8; 32];
        rng.fill_bytes(&mut zb[..16]);
        let z = Scalar::from_bytes_mod_order(zb);
        b_coefficient += z * s;
        r_points.push(r);
        r_coefficients.push(z);
        let zh = z * h;
        match a_slot.entry(key.to_bytes()) {
            std::collections::hash_map::Entry::Occupied(e) => a_coefficients[*e.get()] += zh,
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(a_points.len());
                a_points.push(key.to_edwards());
                a_coefficients.push(zh);
            }
        }
    }
    let sum = EdwardsPoint::vartime_multiscalar_mul(
        std::iter::once(-b_coefficient)
            .chain(r_coefficients)
            .chain(a_coefficients),
        std::iter::once(ED25519_BASEPOINT_POINT)
            .chain(r_points)
            .chain(a_points),
    );
    sum.is_identity()
}

/// Below this many signatures a failing batch is checked item by item.
const STRICT_BELOW: usize = 32;

/// One batch verification; when it fails, each half again (a few bad
/// signatures in a large batch cost a few more batches, not a strict check
/// of every item), down to [`STRICT_BELOW`] items checked with
/// `verify_strict` one by one.
fn batch_or_split(msgs: &[&[u8]], sigs: &[Signature], keys: &[VerifyingKey], out: &mut [bool]) {
    if msgs.is_empty() {
        return;
    }
    if verify_batch_merged(msgs, sigs, keys) {
        out.fill(true);
        return;
    }
    if msgs.len() < STRICT_BELOW {
        for (k, o) in out.iter_mut().enumerate() {
            *o = keys[k].verify_strict(msgs[k], &sigs[k]).is_ok();
        }
        return;
    }
    let h = msgs.len() / 2;
    let (o1, o2) = out.split_at_mut(h);
    batch_or_split(&msgs[..h], &sigs[..h], &keys[..h], o1);
    batch_or_split(&msgs[h..], &sigs[h..], &keys[h..], o2);
}

struct CredOk {
    device_vk: VerifyingKey,
}

/// Re-verifies `codes` (any number) on all cores. The output has one verdict
/// per input, in order.
pub fn reverify(codes: &[CodeToVerify<'_>], trust: &TrustList, policy: &Policy) -> Vec<Verdict> {
    // 1. Parse.
    let parsed: Vec<Result<RideCode, RejectReason>> = codes
        .par_iter()
        .with_min_len(256)
        .map(|c| fare_credential::verify::parse_stage(c.code))
        .collect();

    // 2. Each distinct credential once: issuer signature and device key.
    let mut distinct: HashMap<&[u8; 126], usize> = HashMap::new();
    for (i, p) in parsed.iter().enumerate() {
        if let Ok(code) = p {
            distinct.entry(code.credential().as_bytes()).or_insert(i);
        }
    }
    let cred_list: Vec<(&[u8; 126], usize)> = distinct.into_iter().collect();
    // Issuer signatures: batched like the device signatures below.
    let issuer_items: Vec<Option<SigItem>> = cred_list
        .par_iter()
        .with_min_len(256)
        .map(|(_, i)| {
            let cred = parsed[*i]
                .as_ref()
                .expect("only parsed codes are listed")
                .credential();
            let (_, issuer_vk) = trust.get(cred.body().issuer_key_id)?;
            let sig: [u8; 64] = cred
                .issuer_signature()
                .try_into()
                .expect("64-byte signature");
            Some((cred.issuer_message(), sig, *issuer_vk))
        })
        .collect();
    let known: Vec<usize> = (0..issuer_items.len())
        .filter(|k| issuer_items[*k].is_some())
        .collect();
    let issuer_ok: Vec<bool> = known
        .par_chunks(CHUNK)
        .flat_map_iter(|chunk| {
            let items: Vec<&SigItem> = chunk
                .iter()
                .map(|k| issuer_items[*k].as_ref().expect("known"))
                .collect();
            verify_chunk(&items, |_| false)
        })
        .collect();
    let mut issuer_sig: Vec<Option<bool>> = vec![None; cred_list.len()];
    for (k, ok) in known.iter().zip(issuer_ok) {
        issuer_sig[*k] = Some(ok);
    }
    let cred_checks: Vec<Result<CredOk, RejectReason>> = cred_list
        .par_iter()
        .zip(issuer_sig.par_iter())
        .with_min_len(256)
        .map(|((_, i), sig_ok)| {
            let body = parsed[*i]
                .as_ref()
                .expect("only parsed codes are listed")
                .credential()
                .body();
            match sig_ok {
                None => {
                    return Err(RejectReason::UnknownIssuerKey {
                        key_id: body.issuer_key_id,
                    })
                }
                Some(false) => {
                    return Err(RejectReason::BadIssuerSignature {
                        key_id: body.issuer_key_id,
                    })
                }
                Some(true) => {}
            }
            // parse_public_key refuses invalid and small-order (weak) keys.
            let device_vk = parse_public_key(&body.device_public_key)
                .map_err(|_| RejectReason::BadDeviceKey)?;
            Ok(CredOk { device_vk })
        })
        .collect();
    let cred_index: HashMap<&[u8; 126], &Result<CredOk, RejectReason>> = cred_list
        .iter()
        .map(|(k, _)| *k)
        .zip(cred_checks.iter())
        .collect();

    // 3. Per ride: issuer key window at the reader's time, then collect the
    //    device signatures still to check.
    let mut verdicts: Vec<Option<Verdict>> = Vec::with_capacity(codes.len());
    let mut pending: Vec<(usize, VerifyingKey)> = Vec::with_capacity(codes.len());
    for (i, p) in parsed.iter().enumerate() {
        let code = match p {
            Err(e) => {
                verdicts.push(Some(Err((e.clone(), None))));
                continue;
            }
            Ok(c) => c,
        };
        let cred = code.credential();
        let check = cred_index[cred.as_bytes()];
        let now = codes[i].reader_time_unix_s;
        let key_id = cred.body().issuer_key_id;
        let window = match trust.get(key_id) {
            Some((k, _)) if now < k.valid_from_unix_s || now > k.valid_until_unix_s => {
                Err(RejectReason::IssuerKeyNotValid {
                    key_id,
                    now_unix_s: now,
                    valid_from_unix_s: k.valid_from_unix_s,
                    valid_until_unix_s: k.valid_until_unix_s,
                })
            }
            _ => Ok(()),
        };
        // Same order of checks as the reader: issuer key (existence, window,
        // signature, device key), then the device signature, then time.
        let first_err = match (check, window) {
            (Err(e @ RejectReason::UnknownIssuerKey { .. }), _) => Some(e.clone()),
            (_, Err(w)) => Some(w),
            (Err(e), _) => Some(e.clone()),
            (Ok(ok), Ok(())) => {
                pending.push((i, ok.device_vk));
                None
            }
        };
        verdicts.push(first_err.map(|e| Err((e, Some(Box::new(code.clone()))))));
    }

    // 4. Device signatures: batches on all cores, strict fallback (and
    //    `verify_strict` alone for rides marked at ingest); sorted by device
    //    key so a phone's rides share a batch (merged terms).
    pending.sort_unstable_by(|a, b| a.1.as_bytes().cmp(b.1.as_bytes()));
    let sig_ok: Vec<(usize, bool)> = pending
        .par_chunks(CHUNK)
        .flat_map_iter(|chunk| {
            let items: Vec<SigItem> = chunk
                .iter()
                .map(|(i, vk)| {
                    let code = parsed[*i].as_ref().expect("pending codes parsed");
                    let sig: [u8; 64] = code
                        .device_signature()
                        .try_into()
                        .expect("64-byte signature");
                    (code.device_message(), sig, *vk)
                })
                .collect();
            let refs: Vec<&SigItem> = items.iter().collect();
            let oks = verify_chunk(&refs, |n| codes[chunk[n].0].strict);
            chunk.iter().map(|(i, _)| *i).zip(oks).collect::<Vec<_>>()
        })
        .collect();

    // 5. Time checks at the reader's clock.
    for (i, ok) in sig_ok {
        let code = parsed[i].as_ref().expect("pending codes parsed");
        let v = if !ok {
            Err((
                RejectReason::BadDeviceSignature,
                Some(Box::new(code.clone())),
            ))
        } else {
            match time_stage(code, policy, codes[i].reader_time_unix_s) {
                Ok(()) => Ok(verified(code)),
                Err(e) => Err((e, Some(Box::new(code.clone())))),
            }
        };
        verdicts[i] = Some(v);
    }
    verdicts
        .into_iter()
        .map(|v| v.expect("every code gets a verdict"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use fare_credential::code::RIDE_CODE_DOMAIN_V1;
    use fare_credential::testkit::TestIssuer;
    use fare_credential::verify::verify_ride_code;
    use fare_credential::{CredentialId, DenyList, Profile, SigningKey};
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    /// `codes[i]` at `times[i]`, strict where `strict` says so.
    fn to_verify<'a>(
        codes: &'a [Vec<u8>],
        times: &[u64],
        strict: impl Fn(&[u8]) -> bool,
    ) -> Vec<CodeToVerify<'a>> {
        codes
            .iter()
            .zip(times)
            .map(|(c, t)| CodeToVerify {
                code: c,
                reader_time_unix_s: *t,
                strict: strict(c),
            })
            .collect()
    }

    /// `n` genuine codes shown at 5,000 s and read 10 s later, each from its
    /// own device and credential (valid 1,000..100,000 s).
    fn setup(n: usize) -> (TrustList, Vec<Vec<u8>>, Vec<u64>, Vec<SigningKey>) {
        let mut issuer = TestIssuer::new(7);
        let mut codes = Vec::new();
        let mut devices = Vec::new();
        for i in 0..n {
            let dev = issuer.next_key();
            let id = CredentialId([i as u8; 16]);
            let cred = issuer.credential(&dev, id, Profile::Adult, 50_500, 49_500);
            let code = fare_credential::RideCode::sign_v1(&cred, 5_000, i as u32, &dev);
            codes.push(code.as_bytes().to_vec());
            devices.push(dev);
        }
        (issuer.trust, codes, vec![5_010; n], devices)
    }

    #[test]
    fn agrees_with_the_strict_single_verifier_on_tampered_codes() {
        let (trust, mut codes, mut times, _) = setup(40);
        // Tamper: a byte of the device signature, a byte of the credential,
        // the issue time (signed), and clock trouble.
        codes[3][190] ^= 1;
        codes[5][30] ^= 0x40;
        codes[7][130] ^= 1;
        times[9] = 200_000; // credential expired at reader time
        times[11] = 4_000; // code from the future
        codes[13].truncate(100);
        let input = to_verify(&codes, &times, |_| false);
        let got = reverify(&input, &trust, &Policy::default());
        for (i, v) in got.iter().enumerate() {
            let single = verify_ride_code(
                &codes[i],
                &trust,
                &DenyList::default(),
                &Policy::default(),
                times[i],
                None,
            );
            match (v, single) {
                (Ok(a), Ok(b)) => assert_eq!(a, &b, "ride {i}"),
                (Err((a, _)), Err(b)) => assert_eq!(a.code(), b.code(), "ride {i}"),
                (a, b) => panic!("ride {i}: batch {a:?} vs single {b:?}"),
            }
        }
        assert!(got[0].is_ok());
        assert_eq!(
            got[3].as_ref().unwrap_err().0.code(),
            "bad_device_signature"
        );
        assert_eq!(got[9].as_ref().unwrap_err().0.code(), "credential_expired");
        assert_eq!(got[13].as_ref().unwrap_err().0.code(), "malformed");
    }

    #[test]
    fn small_order_r_signature_is_refused_like_verify_strict() {
        // A device owner knows its secret scalar a and can make a signature
        // with R = identity: s = H(R‖A‖M)·a. It satisfies the cofactorless
        // equation sB = R + kA, so a plain batch check would accept it;
        // verify_strict refuses small-order R, and so must settlement.
        use curve25519_dalek::scalar::Scalar;
        use sha2::{Digest, Sha512};
        let (trust, codes, times, devices) = setup(4);
        let mut forged = codes[1].clone();
        let dev = &devices[1];
        let r_bytes = curve25519_dalek::edwards::EdwardsPoint::default()
            .compress()
            .to_bytes();
        let signed_len = forged.len() - 64;
        let mut msg = RIDE_CODE_DOMAIN_V1.to_vec();
        msg.extend_from_slice(&forged[..signed_len]);
        let mut h = Sha512::new();
        h.update(r_bytes);
        h.update(dev.verifying_key().as_bytes());
        h.update(&msg);
        let k = Scalar::from_hash(h);
        let s = k * dev.to_scalar();
        forged[signed_len..signed_len + 32].copy_from_slice(&r_bytes);
        forged[signed_len + 32..].copy_from_slice(&s.to_bytes());
        // The lax batch equation holds for it...
        let sig = Signature::from_bytes(&forged[signed_len..].try_into().unwrap());
        assert!(ed25519_dalek::verify_batch(&[&msg], &[sig], &[dev.verifying_key()]).is_ok());
        // ...but settlement refuses it, as verify_strict does.
        assert!(r_needs_strict(&r_bytes));
        let mut all = codes.clone();
        all[1] = forged;
        let input = to_verify(&all, &times, |_| false);
        let got = reverify(&input, &trust, &Policy::default());
        assert_eq!(
            got[1].as_ref().unwrap_err().0.code(),
            "bad_device_signature"
        );
        assert!(got[0].is_ok() && got[2].is_ok() && got[3].is_ok());
    }

    #[test]
    fn prime_subgroup_check_agrees_with_dalek() {
        use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
        use curve25519_dalek::scalar::Scalar;
        let mut rng = ChaCha20Rng::seed_from_u64(21);
        for n in 0..64u64 {
            let mut wide = [0u8; 64];
            rand_chacha::rand_core::RngCore::fill_bytes(&mut rng, &mut wide);
            let p = ED25519_BASEPOINT_POINT * Scalar::from_bytes_mod_order_wide(&wide);
            let point = p + EIGHT_TORSION[(n % 8) as usize];
            let enc = point.compress().to_bytes();
            assert_eq!(
                r_outside_prime_subgroup(&enc),
                !point.is_torsion_free(),
                "point {n}"
            );
            assert_eq!(r_outside_prime_subgroup(&enc), n % 8 != 0, "point {n}");
        }
        for t in EIGHT_TORSION.iter().skip(1) {
            assert!(r_outside_prime_subgroup(&t.compress().to_bytes()));
        }
        // Identity is in the subgroup (r_needs_strict catches it as small order).
        assert!(!r_outside_prime_subgroup(
            &EIGHT_TORSION[0].compress().to_bytes()
        ));
        // Not a point: y with no x on the curve.
        let mut bad = [0u8; 32];
        bad[0] = 2;
        assert!(curve25519_dalek::edwards::CompressedEdwardsY(bad)
            .decompress()
            .is_none());
        assert!(r_outside_prime_subgroup(&bad));
    }

    /// Rides marked at ingest (`code_needs_strict`) are refused like the
    /// reader refuses them, whatever the batch randomness; unmarked, the
    /// same codes can slip through a batch (which is why ingest marks them).
    #[test]
    fn mixed_order_r_marked_at_ingest_is_always_refused() {
        let (trust, codes, times, devices) = setup(64);
        let mut rng = ChaCha20Rng::seed_from_u64(22);
        let mut all = codes.clone();
        for i in (0..64).filter(|i| i % 2 == 1) {
            all[i] = fare_credential::testkit::resign_with_mixed_order_r(
                &codes[i],
                &devices[i],
                1 + i % 7,
                &mut rng,
            );
        }
        let input = to_verify(&all, &times, code_needs_strict);
        for (i, c) in input.iter().enumerate() {
            assert_eq!(c.strict, i % 2 == 1, "code {i}");
        }
        let got = reverify(&input, &trust, &Policy::default());
        for (i, v) in got.iter().enumerate() {
            if i % 2 == 1 {
                assert_eq!(v.as_ref().unwrap_err().0.code(), "bad_device_signature");
            } else {
                assert!(v.is_ok(), "code {i}");
            }
        }
        // Unmarked, one by one: order-2 components (torsion index 4) pass a
        // batch half the time; 32 such codes all refused would have
        // probability 2^-32.
        let mut slipped = 0;
        for (i, code) in codes.iter().enumerate().take(32) {
            let bad =
                fare_credential::testkit::resign_with_mixed_order_r(code, &devices[i], 4, &mut rng);
            let one = [CodeToVerify {
                code: &bad,
                reader_time_unix_s: times[i],
                strict: false,
            }];
            if reverify(&one, &trust, &Policy::default())[0].is_ok() {
                slipped += 1;
            }
        }
        assert!(slipped > 0);
    }

    proptest::proptest! {
        /// Ingest runs `code_needs_strict` on whatever a reader uploaded:
        /// any bytes, or a genuine code with bytes changed, give an answer
        /// and no panic; a change outside `R` never marks a code.
        #[test]
        fn code_needs_strict_takes_any_bytes(
            junk in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            at in 0usize..400,
            byte in proptest::prelude::any::<u8>(),
        ) {
            let _ = code_needs_strict(&junk);
            let (_, codes, _, _) = setup(1);
            let mut code = codes[0].clone();
            proptest::prop_assert!(!code_needs_strict(&code));
            let n = code.len();
            code[at % n] = byte;
            let r_changed = at % n >= n - 64 && at % n < n - 32;
            if !r_changed {
                // Unparseable, or parsed with the same genuine `R`.
                proptest::prop_assert!(!code_needs_strict(&code));
            }
        }
    }

    #[test]
    fn non_canonical_r_is_flagged() {
        let mut r = [0xffu8; 32];
        r[0] = 0xee;
        r[31] = 0x7f;
        assert!(r_needs_strict(&r));
        let mut ok = [0x11u8; 32];
        ok[31] = 0x22;
        assert!(!r_needs_strict(&ok));
    }

    /// Bad signatures anywhere in a large chunk (alone, in a run, at the
    /// ends) are found by splitting the batch; every verdict equals
    /// `verify_strict`'s.
    #[test]
    fn split_batches_agree_with_verify_strict() {
        use ed25519_dalek::Signer;
        let mut rng = ChaCha20Rng::seed_from_u64(11);
        let keys: Vec<SigningKey> = (0..40).map(|_| SigningKey::generate(&mut rng)).collect();
        let n = 700;
        let bad: Vec<usize> = [0, 1, 333, n - 1].into_iter().chain(400..450).collect();
        let items: Vec<SigItem> = (0..n)
            .map(|i| {
                let k = &keys[i % keys.len()];
                let msg = format!("message {i}").into_bytes();
                let mut sig = k.sign(&msg).to_bytes();
                if bad.contains(&i) {
                    // Alternately a wrong message and a flipped `s` bit.
                    if i % 2 == 0 {
                        sig = k.sign(b"another message").to_bytes();
                    } else {
                        sig[40] ^= 1;
                    }
                }
                (msg, sig, k.verifying_key())
            })
            .collect();
        let refs: Vec<&SigItem> = items.iter().collect();
        let got = verify_chunk(&refs, |_| false);
        for (i, (msg, sig, vk)) in items.iter().enumerate() {
            let strict = vk.verify_strict(msg, &Signature::from_bytes(sig)).is_ok();
            assert_eq!(got[i], strict, "item {i}");
            assert_eq!(got[i], !bad.contains(&i), "item {i}");
        }
        // All good, and all bad.
        let good: Vec<&SigItem> = refs
            .iter()
            .copied()
            .filter(|it| !bad.iter().any(|b| it.0 == items[*b].0))
            .collect();
        assert!(verify_chunk(&good, |_| false).into_iter().all(|ok| ok));
        let all_bad: Vec<&SigItem> = bad.iter().map(|b| &items[*b]).collect();
        assert!(verify_chunk(&all_bad, |_| false).into_iter().all(|ok| !ok));
    }

    /// The merged-key batch equation accepts exactly the batches
    /// `ed25519_dalek::verify_batch` accepts: all genuine (keys repeated or
    /// not), one forged among many signatures of the same key, a signature
    /// moved to another key, a non-canonical `s`.
    #[test]
    fn merged_batches_agree_with_dalek_verify_batch() {
        use ed25519_dalek::Signer;
        let mut rng = ChaCha20Rng::seed_from_u64(12);
        let keys: Vec<SigningKey> = (0..5).map(|_| SigningKey::generate(&mut rng)).collect();
        let msgs: Vec<Vec<u8>> = (0..60).map(|i| format!("ride {i}").into_bytes()).collect();
        let signer = |i: usize| &keys[i % 3 + usize::from(i > 50) * 2];
        let good: Vec<(Vec<u8>, Signature, VerifyingKey)> = msgs
            .iter()
            .enumerate()
            .map(|(i, m)| (m.clone(), signer(i).sign(m), signer(i).verifying_key()))
            .collect();
        let check = |items: &[(Vec<u8>, Signature, VerifyingKey)]| {
            let m: Vec<&[u8]> = items.iter().map(|x| x.0.as_slice()).collect();
            let s: Vec<Signature> = items.iter().map(|x| x.1).collect();
            let k: Vec<VerifyingKey> = items.iter().map(|x| x.2).collect();
            let ours = verify_batch_merged(&m, &s, &k);
            assert_eq!(ours, ed25519_dalek::verify_batch(&m, &s, &k).is_ok());
            ours
        };
        assert!(check(&good));
        assert!(check(&good[..1]));
        assert!(check(&[]));
        // One forged signature among many of the same key.
        let mut forged = good.clone();
        forged[30].1 = signer(30).sign(b"something else");
        assert!(!check(&forged));
        // A genuine signature presented with another key (same message).
        let mut moved = good.clone();
        moved[7].2 = keys[4].verifying_key();
        assert!(!check(&moved));
        // Two signatures swapped between messages of the same key.
        let mut swapped = good.clone();
        let (a, b) = (swapped[3].1, swapped[6].1);
        swapped[3].1 = b;
        swapped[6].1 = a;
        assert!(!check(&swapped));
        // Non-canonical s (s + l): refused.
        let mut bytes = good[10].1.to_bytes();
        // The group order l, little-endian.
        let l: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
            0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let mut carry = 0u16;
        for k in 0..32 {
            let v = bytes[32 + k] as u16 + l[k] as u16 + carry;
            bytes[32 + k] = v as u8;
            carry = v >> 8;
        }
        let mut noncanon = good.clone();
        noncanon[10].1 = Signature::from_bytes(&bytes);
        assert!(!verify_batch_merged(
            &noncanon.iter().map(|x| x.0.as_slice()).collect::<Vec<_>>(),
            &noncanon.iter().map(|x| x.1).collect::<Vec<_>>(),
            &noncanon.iter().map(|x| x.2).collect::<Vec<_>>(),
        ));
    }
}
