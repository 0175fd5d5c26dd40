//! Is a signature's `R` in the prime-order subgroup? The check every
//! stored ride gets once (at ingest for a large upload, [`ingest_marks`],
//! else in the settlement run), so that re-verification may batch the rest.
//!
//! One `R` alone: [`r_outside_prime_subgroup`], `[ℓ]R = 0`, one
//! variable-base scalar multiplication (≈ 252 doublings). Many `R` at
//! once: [`codes_need_strict`], a randomized group test
//! that costs about a third of that per ride for 1,024 rides and gives the
//! same marks except with probability at most 2⁻¹²⁸ (the bound of the
//! batch verification the marks protect); when the group fails, each `R`
//! is checked alone.

use super::batch::r_needs_strict;
use crate::model::RMark;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::traits::Identity;
use fare_credential::subgroup::{draw_memberships, subset_sums, WINDOW};
pub use fare_credential::subgroup::{GROUP_TEST_MIN_POINTS, GROUP_TEST_ROUNDS};
use rand_chacha::rand_core::SeedableRng;
use rayon::prelude::*;

/// True when `R` is not a point of the prime-order subgroup: it does not
/// decode, or `[ℓ]R ≠ 0` (a small-order component). Exact, and
/// variable-time because `R` is public: one multiscalar multiplication
/// (`fare_credential::keys::in_prime_subgroup`). dalek's
/// `EdwardsPoint::is_torsion_free` computes the same constant-time and
/// took ≈ 30 % longer here (41 vs 31 µs under load); a test checks the two
/// agree.
///
/// Why no cheaper test of one `R` (issue #13, measured in
/// settlement/README.md, "Numbers"): the group is cyclic of order `8ℓ`, so
/// `R` is in the prime-order subgroup iff its component in `Z/8` is zero.
/// Reading that component costs either a multiplication by a multiple of
/// `ℓ` (≥ 252 doublings: this one, variable-time on dalek's AVX2 backend)
/// or three successive point halvings (Pornin, eprint 2022/1164: four
/// square roots and a Legendre symbol, about as many field operations as
/// the doublings here, and dalek does not expose its field). The
/// Tate-pairing test (Koshelev, eprint 2022/037) needs `8 | p − 1`; here
/// `p ≡ 5 (mod 8)`, so a pairing over `F_p` sees only `Z/4`. Nor does the
/// batch equation make it free: cofactorless *per signature*,
/// `R = [s]B − [h]A` is torsion-free when `A` and `B` are, but the batch
/// checks `Σ zᵢ(…) = 0`, whose torsion part `Σ zᵢTᵢ` vanishes for some
/// `zᵢ` although `Tᵢ ≠ 0` (with probability up to 1/2). Many `R` at once
/// are cheaper: [`codes_need_strict`].
pub fn r_outside_prime_subgroup(r: &[u8; 32]) -> bool {
    match CompressedEdwardsY(*r).decompress() {
        Some(point) => outside_prime_subgroup(&point),
        None => true,
    }
}

/// `[ℓ]P ≠ 0` (fare-credential's check, the one issuance uses).
fn outside_prime_subgroup(point: &EdwardsPoint) -> bool {
    !fare_credential::keys::in_prime_subgroup(point)
}

/// True when a ride code's device signature must be checked with
/// `verify_strict` alone: its `R` is non-canonical, small-order or has a
/// small-order component, cases where a batch could accept what the reader
/// refuses. A code that does not parse is `false` (re-verification refuses
/// it as malformed anyway). For the codes of a whole batch,
/// [`codes_need_strict`] gives the same answers for less.
pub fn code_needs_strict(code: &[u8]) -> bool {
    match code_r(code) {
        Some(r) => r_needs_strict(&r) || r_outside_prime_subgroup(&r),
        None => false,
    }
}

/// The `R` of a ride code's device signature, when the code parses.
fn code_r(code: &[u8]) -> Option<[u8; 32]> {
    let parsed = fare_credential::verify::parse_stage(code).ok()?;
    parsed.device_signature()[..32].try_into().ok()
}

/// What ingest stores for each of `codes`, in order: [`codes_need_strict`]'s
/// answers when the codes hold at least [`GROUP_TEST_MIN_POINTS`] `R` for
/// the group test; below, only the cheap checks (non-canonical or
/// small-order `R`: [`RMark::Strict`]) and the rest
/// [`RMark::Unchecked`], for the settlement run to test in groups with its
/// chunk's ([`codes_need_strict_grouped`]; a bus uploads a few rides at a time, and one check alone
/// costs what the group test costs for three or four rides).
pub fn ingest_marks(codes: &[&[u8]], all_cores: bool) -> Vec<RMark> {
    let (strict, at, rest) = cheap_marks(codes);
    let mut marks: Vec<RMark> = strict
        .into_iter()
        .map(|s| if s { RMark::Strict } else { RMark::Batchable })
        .collect();
    if rest.len() < GROUP_TEST_MIN_POINTS {
        for i in at {
            marks[i] = RMark::Unchecked;
        }
        return marks;
    }
    for (i, outside) in at
        .into_iter()
        .zip(rs_outside_prime_subgroup(&rest, all_cores))
    {
        if outside {
            marks[i] = RMark::Strict;
        }
    }
    marks
}

/// Most `R` the settlement run tests in one group ([`codes_need_strict_grouped`]).
/// A bad `R` (only a colluding reader can upload one) fails its group's
/// test and makes each of the group's `R` checked alone: the group bounds
/// what one costs (2,048 checks, about 0.2 s here, where a whole chunk
/// would be 100,000), while the test still costs between a third and a
/// quarter of a check per ride at this size (measured at 1,024 and 4,096
/// points: settlement/README.md, "Numbers").
pub const RUN_GROUP_MAX_POINTS: usize = 2048;

/// [`codes_need_strict`] for the `R` ingest left unchecked, in groups of at
/// most `group_points` tested in parallel (each on one core); a batch of
/// no more than that is one group on all cores. The same answers.
pub fn codes_need_strict_grouped(codes: &[&[u8]], group_points: usize) -> Vec<bool> {
    if codes.len() <= group_points {
        return codes_need_strict(codes, true);
    }
    codes
        .par_chunks(group_points)
        .flat_map_iter(|group| codes_need_strict(group, false))
        .collect()
}

/// The cheap part of [`code_needs_strict`] for each of `codes`: `true`
/// for a non-canonical or small-order `R`; and the places and `R` of the
/// codes that still need the subgroup test (a code that does not parse
/// needs nothing: re-verification refuses it as malformed).
fn cheap_marks(codes: &[&[u8]]) -> (Vec<bool>, Vec<usize>, Vec<[u8; 32]>) {
    let mut marks = vec![false; codes.len()];
    let (mut at, mut rest) = (Vec::new(), Vec::new());
    for (i, code) in codes.iter().enumerate() {
        match code_r(code) {
            Some(r) if r_needs_strict(&r) => marks[i] = true,
            Some(r) => {
                at.push(i);
                rest.push(r);
            }
            None => {}
        }
    }
    (marks, at, rest)
}

/// [`code_needs_strict`] for each of `codes`, in order: the same answers
/// except with probability ≤ 2⁻¹²⁸ (a bad `R` passing unmarked), computed
/// with one group test of all their `R` when there are at least
/// [`GROUP_TEST_MIN_POINTS`], on all cores when `all_cores`.
///
/// The group test ([`fare_credential::subgroup`], which says why it
/// holds): its subsets come from an OS-seeded generator the uploader
/// cannot see, as the batch equation's `zᵢ`. A failed group test means
/// some `R` is bad: every `R` is then checked alone (an uploader who sends
/// one costs what the per-ride check always cost).
pub fn codes_need_strict(codes: &[&[u8]], all_cores: bool) -> Vec<bool> {
    // The rest: parsed codes with a canonical `R` of large order, if it
    // decodes, for the group test (`at`: their places in `codes`).
    let (mut marks, at, rest) = cheap_marks(codes);
    for (i, out) in at
        .into_iter()
        .zip(rs_outside_prime_subgroup(&rest, all_cores))
    {
        marks[i] = out;
    }
    marks
}

/// [`r_outside_prime_subgroup`] of each of `rs`, in order.
pub(super) fn rs_outside_prime_subgroup(rs: &[[u8; 32]], all_cores: bool) -> Vec<bool> {
    let decompress = |r: &[u8; 32]| CompressedEdwardsY(*r).decompress();
    let points: Vec<Option<EdwardsPoint>> = if all_cores {
        rs.par_iter().with_min_len(64).map(decompress).collect()
    } else {
        rs.iter().map(decompress).collect()
    };
    let decoded: Vec<EdwardsPoint> = points.iter().flatten().copied().collect();
    if decoded.len() >= GROUP_TEST_MIN_POINTS && group_in_prime_subgroup(&decoded, all_cores) {
        return points.iter().map(Option::is_none).collect();
    }
    let one = |p: &Option<EdwardsPoint>| p.as_ref().is_none_or(outside_prime_subgroup);
    if all_cores {
        points.par_iter().with_min_len(16).map(one).collect()
    } else {
        points.iter().map(one).collect()
    }
}

/// The group test of [`codes_need_strict`]: true when all of `points` are
/// in the prime-order subgroup (wrong with probability ≤ 2⁻¹²⁸), false
/// when some is not.
pub(super) fn group_in_prime_subgroup(points: &[EdwardsPoint], all_cores: bool) -> bool {
    let mut rng = rand_chacha::ChaCha20Rng::from_entropy();
    if !all_cores {
        return fare_credential::subgroup::all_in_prime_subgroup(points, &mut rng);
    }
    let memberships = draw_memberships(points.len(), &mut rng);
    // One part of the points per core, whole windows each; the parts'
    // sums added round by round are the sums of all the points.
    let part = points
        .len()
        .div_ceil(rayon::current_num_threads())
        .max(WINDOW)
        .next_multiple_of(WINDOW);
    let sums = points
        .par_chunks(part)
        .zip(memberships.par_chunks(part))
        .map(|(p, m)| subset_sums(p, m))
        .reduce(
            || vec![EdwardsPoint::identity(); GROUP_TEST_ROUNDS],
            add_sums,
        );
    sums.par_iter().all(|s| !outside_prime_subgroup(s))
}

/// Round by round sum of two partial results.
fn add_sums(mut a: Vec<EdwardsPoint>, b: Vec<EdwardsPoint>) -> Vec<EdwardsPoint> {
    for (x, y) in a.iter_mut().zip(b) {
        *x += y;
    }
    a
}
