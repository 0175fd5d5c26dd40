//! Are many points in the prime-order subgroup? One randomized group test
//! for all of them instead of one scalar multiplication each
//! ([`keys::in_prime_subgroup`]): issuance checks a batch of device keys
//! with it ([`keys::device_keys_for_issuance`]), settlement the `R` of many
//! ride codes (settlement/src/reverify/subgroup.rs, which runs the same
//! sums on every core).
//!
//! The test: the group is `Z/ℓ × Z/8`; let `Tᵢ` be point `i`'s `Z/8`
//! part. Draw [`GROUP_TEST_ROUNDS`] secret random subsets `S` of the
//! points and check `[ℓ](Σ_{i∈S} Pᵢ) = 0`, i.e. `Σ_{i∈S} Tᵢ = 0`. If some
//! `Tⱼ ≠ 0`, then whatever the other draws, at most one of "`j ∈ S`" and
//! "`j ∉ S`" makes the sum zero, so each subset passes with probability
//! ≤ 1/2 and all of them with ≤ 2⁻¹²⁸. The subsets must come from a
//! generator whoever chose the points cannot see or predict.
//!
//! [`keys::in_prime_subgroup`]: crate::keys::in_prime_subgroup
//! [`keys::device_keys_for_issuance`]: crate::keys::device_keys_for_issuance

use crate::keys::in_prime_subgroup;
use curve25519_dalek::edwards::EdwardsPoint;
use curve25519_dalek::traits::Identity;
use rand_core::{CryptoRng, RngCore};

/// Subset sums a group test draws: each one that is zero in `Z/8` while
/// some point is not halves the chance of missing it, so 128 give the
/// 2⁻¹²⁸ of a 128-bit batch verification.
pub const GROUP_TEST_ROUNDS: usize = 128;

/// Fewest points worth a group test: below, each point is checked alone.
/// The test costs `GROUP_TEST_ROUNDS` checks of one point plus about 31
/// point additions per point; one check costs about 230 additions, so the
/// test is cheaper from about 150 points (measured: 256 points 58 µs per
/// point against 85 µs alone, 1,024 points 29 µs; settlement/README.md).
pub const GROUP_TEST_MIN_POINTS: usize = 256;

/// Points per window of the subset sums: each window's `2^W` partial sums
/// are tabled once and every round adds one of them (`2^W − W − 1` table
/// additions and at most `GROUP_TEST_ROUNDS` round additions per window;
/// 6 is the cheapest per point for 128 rounds).
pub const WINDOW: usize = 6;

/// Which subsets each of `n` points joins: bit `k` of the result's item
/// `i` puts point `i` in subset `k`.
pub fn draw_memberships(n: usize, rng: &mut (impl RngCore + CryptoRng)) -> Vec<u128> {
    (0..n)
        .map(|_| {
            let mut b = [0u8; 16];
            rng.fill_bytes(&mut b);
            u128::from_le_bytes(b)
        })
        .collect()
}

/// The [`GROUP_TEST_ROUNDS`] subset sums of `points` (`memberships` from
/// [`draw_memberships`], one per point), a window of [`WINDOW`] points at
/// a time. Sums of parts of the points add round by round into the sums
/// of the whole (how settlement spreads them over its cores).
///
/// The sums and the table live on the heap (20 KB and 10 KB of points):
/// as arrays they were moved by value through rayon's joins, whose nested
/// frames overflowed a 2 MiB worker stack in a debug build when two group
/// tests ran at once.
pub fn subset_sums(points: &[EdwardsPoint], memberships: &[u128]) -> Vec<EdwardsPoint> {
    assert_eq!(points.len(), memberships.len(), "one membership per point");
    let mut sums = vec![EdwardsPoint::identity(); GROUP_TEST_ROUNDS];
    let mut table = vec![EdwardsPoint::identity(); 1 << WINDOW];
    for (window, members) in points.chunks(WINDOW).zip(memberships.chunks(WINDOW)) {
        // table[set] = Σ of the window's points in `set` (a bit per point).
        for set in 1usize..(1 << window.len()) {
            let lowest = set.trailing_zeros() as usize;
            let others = set & (set - 1);
            table[set] = if others == 0 {
                window[lowest]
            } else {
                table[others] + window[lowest]
            };
        }
        for (round, sum) in sums.iter_mut().enumerate() {
            let set = members.iter().enumerate().fold(0usize, |set, (k, m)| {
                set | ((((m >> round) & 1) as usize) << k)
            });
            if set != 0 {
                *sum += table[set];
            }
        }
    }
    sums
}

/// True when every one of `points` is in the prime-order subgroup (wrong
/// with probability ≤ 2⁻¹²⁸), false when some is not. On one core; the
/// subsets drawn from `rng`, which whoever chose the points must not see.
pub fn all_in_prime_subgroup(
    points: &[EdwardsPoint],
    rng: &mut (impl RngCore + CryptoRng),
) -> bool {
    let memberships = draw_memberships(points.len(), rng);
    subset_sums(points, &memberships)
        .iter()
        .all(in_prime_subgroup)
}
