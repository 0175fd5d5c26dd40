//! The ed25519 maths of re-verification: batch verification with the
//! terms of a repeated key merged, splitting a failing batch, and the
//! check that routes a signature to `verify_strict` alone (small-order or
//! non-canonical `R`; `R` outside the prime-order subgroup is `subgroup`'s).

use ed25519_dalek::{Signature, VerifyingKey};
use std::collections::HashMap;
use std::sync::OnceLock;

/// Canonical encodings (sign bit cleared) of the eight small-order points.
pub(super) fn small_order_encodings() -> &'static [[u8; 32]; 8] {
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
pub(super) const STRICT_BELOW: usize = 32;

/// One batch verification; when it fails, each half again (a few bad
/// signatures in a large batch cost a few more batches, not a strict check
/// of every item), down to [`STRICT_BELOW`] items checked with
/// `verify_strict` one by one.
pub(super) fn batch_or_split(
    msgs: &[&[u8]],
    sigs: &[Signature],
    keys: &[VerifyingKey],
    out: &mut [bool],
) {
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
