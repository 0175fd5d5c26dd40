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
//!   reader colluding with that rider. Every stored ride code's `R` is
//!   checked once ([`codes_need_strict`]: `[ℓ]R = 0`, by a randomized
//!   group test of many `R` at once with the 2⁻¹²⁸ bound of a batch
//!   verification, or one variable-base scalar multiplication per `R`)
//!   and the rides that fail are marked; re-verification checks marked
//!   rides ([`CodeToVerify::strict`]) with `verify_strict` alone, never in
//!   a batch. The check sits at ingest, once per ride as it arrives, for an
//!   upload large enough for the group test ([`ingest_marks`]); a smaller
//!   one (a bus's few rides of one contact, where the test costs a scalar
//!   multiplication per ride) is marked unchecked and the settlement run
//!   tests it with the rest of its chunk's, in group tests of at most
//!   [`RUN_GROUP_MAX_POINTS`] (a bad `R` makes its group's each checked
//!   alone: the group bounds what one costs).
//!
//! When a batch fails, its halves are batch-verified again, down to batches
//! of fewer than 32 whose items are checked one by one with `verify_strict`
//! to find the bad ones.

//!
//! Layout: `batch` holds the signature maths (batch equation, splitting,
//! the strict routing checks), `subgroup` the prime-order subgroup check
//! of `R` that ingest runs; this file the orchestration, in steps:
//! parse, credentials (issuer signatures batched, once per distinct
//! credential), issuer key windows, device signatures, time windows.

use ed25519_dalek::VerifyingKey;
use fare_credential::keys::parse_public_key;
use fare_credential::verify::{time_stage, verified};
use fare_credential::{Policy, RejectReason, RideCode, TrustList, VerifiedRide};
use rayon::prelude::*;
use std::collections::HashMap;

mod batch;
mod cache;
mod subgroup;
#[cfg(test)]
mod tests;

pub use cache::{CredentialCache, MAX_CACHED_CREDENTIALS};

pub use batch::{r_needs_strict, verify_batch_merged, verify_chunk, SigItem};
pub use subgroup::{
    code_needs_strict, codes_need_strict, codes_need_strict_grouped, ingest_marks,
    r_outside_prime_subgroup, GROUP_TEST_MIN_POINTS, GROUP_TEST_ROUNDS, RUN_GROUP_MAX_POINTS,
};

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

/// A parsed credential's bytes (the key of per-credential results).
type CredBytes<'p> = &'p [u8; 126];

/// Each distinct credential's check: its device key, or why it is refused.
type CredChecks<'p> = HashMap<CredBytes<'p>, Result<VerifyingKey, RejectReason>>;

/// Re-verifies `codes` (any number) on all cores. The output has one verdict
/// per input, in order. Same order of checks as the reader: structure,
/// issuer key (existence, signature, device key, then its window), device
/// signature, time windows.
pub fn reverify(codes: &[CodeToVerify<'_>], trust: &TrustList, policy: &Policy) -> Vec<Verdict> {
    reverify_cached(codes, trust, policy, &CredentialCache::default())
}

/// [`reverify`], taking the credentials `cache` holds as checked (their
/// issuer signature and device key are not checked again) and adding the
/// ones it checks and accepts: a settlement run takes a rider's second ride
/// of the day without re-checking the credential the first run checked.
/// The verdicts are the same as [`reverify`]'s.
pub fn reverify_cached(
    codes: &[CodeToVerify<'_>],
    trust: &TrustList,
    policy: &Policy,
    cache: &CredentialCache,
) -> Vec<Verdict> {
    let parsed = parse_all(codes);
    let creds = check_credentials(&parsed, trust, cache);
    let (mut verdicts, pending) = issuer_stage(codes, &parsed, &creds, trust);
    let sig_ok = device_signatures(codes, &parsed, pending);
    for (i, ok) in sig_ok {
        verdicts[i] = Some(time_verdict(&codes[i], &parsed[i], ok, policy));
    }
    verdicts
        .into_iter()
        .map(|v| v.expect("every code gets a verdict"))
        .collect()
}

/// 1. Parse every code.
fn parse_all(codes: &[CodeToVerify<'_>]) -> Vec<Result<RideCode, RejectReason>> {
    codes
        .par_iter()
        .with_min_len(256)
        .map(|c| fare_credential::verify::parse_stage(c.code))
        .collect()
}

/// The parsed code at `i` (only called for indices known to have parsed).
fn parsed_at(parsed: &[Result<RideCode, RejectReason>], i: usize) -> &RideCode {
    parsed[i].as_ref().expect("only parsed codes are listed")
}

/// 2. Each distinct credential once: issuer signature (batched like the
///    device signatures) and device key.
fn check_credentials<'p>(
    parsed: &'p [Result<RideCode, RejectReason>],
    trust: &TrustList,
    cache: &CredentialCache,
) -> CredChecks<'p> {
    let mut distinct: HashMap<CredBytes<'p>, usize> = HashMap::new();
    for (i, p) in parsed.iter().enumerate() {
        if let Ok(code) = p {
            distinct.entry(code.credential().as_bytes()).or_insert(i);
        }
    }
    let issuer_of = |i: usize| {
        let key_id = parsed_at(parsed, i).credential().body().issuer_key_id;
        trust.get(key_id).map(|(_, vk)| vk.to_bytes())
    };
    // Credentials checked by an earlier run (same bytes, same issuer key).
    let (known, cred_list) = cache.split(distinct, issuer_of);
    let checked = check_new_credentials(parsed, &cred_list, trust);
    cache.insert(&checked, issuer_of);
    let checked = checked.into_iter().map(|(k, _, c)| (k, c));
    known
        .into_iter()
        .map(|(k, vk)| (k, Ok(vk)))
        .chain(checked)
        .collect()
}

/// The issuer signature and device key of credentials not checked before
/// (`(credential bytes, index of a code carrying it)`).
fn check_new_credentials<'p>(
    parsed: &'p [Result<RideCode, RejectReason>],
    cred_list: &[(CredBytes<'p>, usize)],
    trust: &TrustList,
) -> Vec<(CredBytes<'p>, usize, Result<VerifyingKey, RejectReason>)> {
    let issuer_sig = issuer_signatures(parsed, cred_list, trust);
    let checks: Vec<Result<VerifyingKey, RejectReason>> = cred_list
        .par_iter()
        .zip(issuer_sig.par_iter())
        .with_min_len(256)
        .map(|((_, i), sig_ok)| {
            let body = parsed_at(parsed, *i).credential().body();
            match sig_ok {
                None => Err(RejectReason::UnknownIssuerKey {
                    key_id: body.issuer_key_id,
                }),
                Some(false) => Err(RejectReason::BadIssuerSignature {
                    key_id: body.issuer_key_id,
                }),
                // parse_public_key refuses invalid and small-order (weak) keys.
                Some(true) => parse_public_key(&body.device_public_key)
                    .map_err(|_| RejectReason::BadDeviceKey),
            }
        })
        .collect();
    cred_list
        .iter()
        .zip(checks)
        .map(|((k, i), c)| (*k, *i, c))
        .collect()
}

/// Issuer signatures of the listed credentials, batched on all cores:
/// `None` when the trust list lacks the issuer key.
fn issuer_signatures(
    parsed: &[Result<RideCode, RejectReason>],
    cred_list: &[(CredBytes<'_>, usize)],
    trust: &TrustList,
) -> Vec<Option<bool>> {
    let issuer_items: Vec<Option<SigItem>> = cred_list
        .par_iter()
        .with_min_len(256)
        .map(|(_, i)| {
            let cred = parsed_at(parsed, *i).credential();
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
    issuer_sig
}

/// The issuer key's window at the reader's time `now`.
fn issuer_window(trust: &TrustList, key_id: u32, now: u64) -> Result<(), RejectReason> {
    match trust.get(key_id) {
        Some((k, _)) if now < k.valid_from_unix_s || now > k.valid_until_unix_s => {
            Err(RejectReason::IssuerKeyNotValid {
                key_id,
                now_unix_s: now,
                valid_from_unix_s: k.valid_from_unix_s,
                valid_until_unix_s: k.valid_until_unix_s,
            })
        }
        _ => Ok(()),
    }
}

/// Verdicts so far (refused codes) and the device signatures still to check.
type IssuerStage = (Vec<Option<Verdict>>, Vec<(usize, VerifyingKey)>);

/// 3. Per ride: the credential's check, then the issuer key window at the
///    reader's time (signatures before windows); collects the device
///    signatures still to check.
fn issuer_stage(
    codes: &[CodeToVerify<'_>],
    parsed: &[Result<RideCode, RejectReason>],
    creds: &CredChecks<'_>,
    trust: &TrustList,
) -> IssuerStage {
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
        let window = || {
            issuer_window(
                trust,
                cred.body().issuer_key_id,
                codes[i].reader_time_unix_s,
            )
        };
        let first_err = match &creds[cred.as_bytes()] {
            Err(e) => Some(e.clone()),
            Ok(device_vk) => match window() {
                Err(w) => Some(w),
                Ok(()) => {
                    pending.push((i, *device_vk));
                    None
                }
            },
        };
        verdicts.push(first_err.map(|e| Err((e, Some(Box::new(code.clone()))))));
    }
    (verdicts, pending)
}

/// 4. Device signatures: batches on all cores, strict fallback (and
///    `verify_strict` alone for rides marked at ingest); sorted by device
///    key so a phone's rides share a batch (merged terms).
fn device_signatures(
    codes: &[CodeToVerify<'_>],
    parsed: &[Result<RideCode, RejectReason>],
    mut pending: Vec<(usize, VerifyingKey)>,
) -> Vec<(usize, bool)> {
    pending.sort_unstable_by(|a, b| a.1.as_bytes().cmp(b.1.as_bytes()));
    pending
        .par_chunks(CHUNK)
        .flat_map_iter(|chunk| {
            let items: Vec<SigItem> = chunk
                .iter()
                .map(|(i, vk)| {
                    let code = parsed_at(parsed, *i);
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
        .collect()
}

/// 5. The verdict of a code whose device signature was checked: refused as
///    forged, or its time windows at the reader's clock.
fn time_verdict(
    c: &CodeToVerify<'_>,
    parsed: &Result<RideCode, RejectReason>,
    sig_ok: bool,
    policy: &Policy,
) -> Verdict {
    let code = parsed.as_ref().expect("pending codes parsed");
    if !sig_ok {
        return Err((
            RejectReason::BadDeviceSignature,
            Some(Box::new(code.clone())),
        ));
    }
    match time_stage(code, policy, c.reader_time_unix_s) {
        Ok(()) => Ok(verified(code)),
        Err(e) => Err((e, Some(Box::new(code.clone())))),
    }
}
