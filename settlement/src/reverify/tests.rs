//! Agreement with the strict single verifier, batch splitting, the strict routing of `R`.

use super::batch::*;
use super::*;
use crate::model::RMark;
use ed25519_dalek::Signature;
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
    use curve25519_dalek::constants::EIGHT_TORSION;
    for (n, p) in prime_order_points(64, 21).into_iter().enumerate() {
        let point = p + EIGHT_TORSION[n % 8];
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

/// `n` points of the prime-order subgroup, from a seeded generator.
fn prime_order_points(n: usize, seed: u64) -> Vec<curve25519_dalek::edwards::EdwardsPoint> {
    use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
    use curve25519_dalek::scalar::Scalar;
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let mut wide = [0u8; 64];
            rand_chacha::rand_core::RngCore::fill_bytes(&mut rng, &mut wide);
            ED25519_BASEPOINT_POINT * Scalar::from_bytes_mod_order_wide(&wide)
        })
        .collect()
}

/// The group test passes prime-order points and fails a set with a
/// small-order component of any order anywhere, on one core and on all,
/// including components that cancel in the plain sum of all points (two
/// of order 2, or `T` and `−T`): a fixed combination would miss those.
#[test]
fn group_test_catches_a_small_order_component_of_any_order_anywhere() {
    use super::subgroup::group_in_prime_subgroup;
    use curve25519_dalek::constants::EIGHT_TORSION;
    let points = prime_order_points(GROUP_TEST_MIN_POINTS + 45, 31);
    let n = points.len();
    for all_cores in [false, true] {
        assert!(group_in_prime_subgroup(&points, all_cores));
        for (k, t) in EIGHT_TORSION.iter().enumerate().skip(1) {
            for at in [0, k * 37 % n, n - 1] {
                let mut bad = points.clone();
                bad[at] += t;
                assert!(!group_in_prime_subgroup(&bad, all_cores), "T{k} at {at}");
            }
            let mut cancelling = points.clone();
            cancelling[k] += t;
            cancelling[n - k] += EIGHT_TORSION[8 - k];
            let plain_sum: curve25519_dalek::edwards::EdwardsPoint = cancelling.iter().sum();
            assert!(
                plain_sum.is_torsion_free(),
                "the plain sum misses T{k}, -T{k}"
            );
            assert!(
                !group_in_prime_subgroup(&cancelling, all_cores),
                "T{k}, -T{k}"
            );
        }
    }
}

/// A batch's marks from the group test equal each code's own check: honest
/// codes, mixed-order `R` of every order, small-order and non-canonical
/// `R`, an `R` that is not a point, a code that does not parse; above and
/// below `GROUP_TEST_MIN_POINTS`, on one core and on all.
#[test]
fn batch_marks_equal_each_codes_own_check() {
    let (_, codes, _, devices) = setup(GROUP_TEST_MIN_POINTS + 20);
    fn refs(c: &[Vec<u8>]) -> Vec<&[u8]> {
        c.iter().map(Vec::as_slice).collect()
    }
    let one_by_one = |c: &[Vec<u8>]| c.iter().map(|c| code_needs_strict(c)).collect::<Vec<_>>();
    for all_cores in [false, true] {
        let honest = codes_need_strict(&refs(&codes), all_cores);
        assert!(honest.iter().all(|m| !m), "no honest code is marked");
    }
    let mut rng = ChaCha20Rng::seed_from_u64(32);
    let mut bad = codes.clone();
    for (n, i) in [3usize, 50, 51, 120, 200, 260, 270].into_iter().enumerate() {
        bad[i] = fare_credential::testkit::resign_with_mixed_order_r(
            &codes[i],
            &devices[i],
            1 + n % 7,
            &mut rng,
        );
    }
    let r_at = |code: &mut Vec<u8>, r: [u8; 32]| {
        let n = code.len();
        code[n - 64..n - 32].copy_from_slice(&r);
    };
    let small = curve25519_dalek::constants::EIGHT_TORSION[2]
        .compress()
        .to_bytes();
    r_at(&mut bad[7], small);
    let mut non_canonical = [0xffu8; 32];
    non_canonical[0] = 0xee;
    non_canonical[31] = 0x7f;
    r_at(&mut bad[8], non_canonical);
    let mut not_a_point = [0u8; 32];
    not_a_point[0] = 2;
    r_at(&mut bad[9], not_a_point);
    bad[10].truncate(40);
    // Without the mixed-order codes the group test passes: the other kinds
    // are marked around it.
    let mut no_mixed = codes.clone();
    no_mixed[7..=10].clone_from_slice(&bad[7..=10]);
    let want = one_by_one(&no_mixed);
    assert_eq!(want.iter().filter(|m| **m).count(), 3);
    for all_cores in [false, true] {
        assert_eq!(codes_need_strict(&refs(&no_mixed), all_cores), want);
    }
    let want = one_by_one(&bad);
    assert_eq!(want.iter().filter(|m| **m).count(), 10);
    assert!(!want[10], "a code that does not parse is not marked");
    for all_cores in [false, true] {
        assert_eq!(codes_need_strict(&refs(&bad), all_cores), want);
        let few = &bad[..40];
        assert_eq!(codes_need_strict(&refs(few), all_cores), one_by_one(few));
        // Ingest: the group test's answers for a large upload; for a small
        // one the cheap checks, the rest left to the run, whose check then
        // gives each code's own answer.
        let as_mark = |s: bool| if s { RMark::Strict } else { RMark::Batchable };
        let want_marks: Vec<RMark> = want.iter().map(|&s| as_mark(s)).collect();
        assert_eq!(ingest_marks(&refs(&bad), all_cores), want_marks);
        let marks = ingest_marks(&refs(few), all_cores);
        assert_eq!(marks[3], RMark::Unchecked, "mixed order: left for the run");
        assert_eq!(marks[7], RMark::Strict, "small order: a cheap check");
        assert_eq!(marks[10], RMark::Batchable, "a code that does not parse");
        let resolved: Vec<bool> = marks
            .iter()
            .zip(few)
            .map(|(m, c)| match m {
                RMark::Unchecked => code_needs_strict(c),
                m => *m == RMark::Strict,
            })
            .collect();
        assert_eq!(resolved, one_by_one(few));
    }
}

/// The run's groups (here of 266 `R`: two group tests and 30 checked
/// alone) give each code's own answer, a bad `R` in each group or none.
#[test]
fn run_groups_mark_like_each_codes_own_check() {
    let group = GROUP_TEST_MIN_POINTS + 10;
    let (_, codes, _, devices) = setup(2 * group + 30);
    let mut rng = ChaCha20Rng::seed_from_u64(33);
    let mut bad = codes.clone();
    for (n, i) in [5usize, 300, 540].into_iter().enumerate() {
        bad[i] = fare_credential::testkit::resign_with_mixed_order_r(
            &codes[i],
            &devices[i],
            1 + n,
            &mut rng,
        );
    }
    for set in [&codes, &bad] {
        let refs: Vec<&[u8]> = set.iter().map(Vec::as_slice).collect();
        let want: Vec<bool> = set.iter().map(|c| code_needs_strict(c)).collect();
        assert_eq!(codes_need_strict_grouped(&refs, group), want);
    }
    let marked = [5usize, 300, 540];
    let want: Vec<bool> = (0..bad.len()).map(|i| marked.contains(&i)).collect();
    let refs: Vec<&[u8]> = bad.iter().map(Vec::as_slice).collect();
    assert_eq!(codes_need_strict_grouped(&refs, group), want);
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
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
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

/// Wycheproof's Ed25519 vectors (the shared corpus) through the ingest
/// check and the re-verification maths: the `R` check agrees with dalek's
/// own constant-time `is_torsion_free` on every signature (undecodable,
/// small-order, mixed-order and prime-order `R` all occur), the vectors
/// whose `R` has a small-order component are marked, and `verify_chunk`
/// with the marks ingest would store gives Wycheproof's verdict on each.
#[test]
fn wycheproof_vectors_through_the_r_check_and_verify_chunk() {
    use curve25519_dalek::edwards::CompressedEdwardsY;
    let path = fare_credential::testkit::corpus_path("ed25519/wycheproof-ed25519.json");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path).expect("corpus file")).expect("json");
    let unhex = |v: &serde_json::Value| hex::decode(v.as_str().expect("hex string")).expect("hex");
    let (mut items, mut marks, mut expected) = (Vec::new(), Vec::new(), Vec::new());
    let mut mixed = Vec::new();
    for group in json["testGroups"].as_array().expect("groups") {
        let pk: [u8; 32] = unhex(&group["publicKey"]["pk"])
            .try_into()
            .expect("32 bytes");
        let vk = VerifyingKey::from_bytes(&pk).expect("Wycheproof keys decode");
        for t in group["tests"].as_array().expect("tests") {
            let Ok(sig) = <[u8; 64]>::try_from(unhex(&t["sig"])) else {
                continue; // wrong length: refused before any maths
            };
            let r: [u8; 32] = sig[..32].try_into().expect("32 bytes");
            let point = CompressedEdwardsY(r).decompress();
            let outside = point.is_none_or(|p| !p.is_torsion_free());
            assert_eq!(r_outside_prime_subgroup(&r), outside, "tcId {}", t["tcId"]);
            if point.is_some_and(|p| !p.is_small_order() && !p.is_torsion_free()) {
                mixed.push(t["tcId"].as_u64().expect("tcId"));
            }
            marks.push(r_needs_strict(&r) || r_outside_prime_subgroup(&r));
            expected.push(t["result"] == "valid");
            items.push((unhex(&t["msg"]), sig, vk));
        }
    }
    // The vectors that change a bit of `R` (or all of them) and keep a
    // decodable point, and 61 (`y ≥ p`, which dalek reduces): mixed order,
    // so they must be marked.
    assert_eq!(mixed, [42, 47, 49, 51, 52, 53, 57, 61, 62]);
    // The same answers from the group test, with enough honest points
    // beside them for it to run (and fail, then check each).
    let rs: Vec<[u8; 32]> = items
        .iter()
        .map(|(_, sig, _)| sig[..32].try_into().expect("32 bytes"))
        .chain(
            prime_order_points(GROUP_TEST_MIN_POINTS, 33)
                .iter()
                .map(|p| p.compress().to_bytes()),
        )
        .collect();
    let one_by_one: Vec<bool> = rs.iter().map(r_outside_prime_subgroup).collect();
    assert_eq!(
        super::subgroup::rs_outside_prime_subgroup(&rs, true),
        one_by_one
    );
    let refs: Vec<&SigItem> = items.iter().collect();
    let got = verify_chunk(&refs, |n| marks[n]);
    for (n, (ok, want)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(ok, want, "vector {n} (64-byte signatures in file order)");
    }
    assert!(expected.iter().any(|v| *v) && expected.iter().any(|v| !*v));
}

#[test]
fn cached_credentials_give_the_same_verdicts_and_follow_the_issuer_key() {
    let (trust, mut codes, times, devices) = setup(12);
    // A second ride of the first credential, and a tampered credential.
    let issuer = TestIssuer::new(7);
    let cred = fare_credential::RideCode::from_bytes(&codes[0])
        .unwrap()
        .credential()
        .clone();
    codes.push(
        fare_credential::RideCode::sign_v1(&cred, 5_001, 99, &devices[0])
            .as_bytes()
            .to_vec(),
    );
    codes[5][30] ^= 0x40;
    let times: Vec<u64> = times.iter().copied().chain([5_011]).collect();
    let input = to_verify(&codes, &times, |_| false);
    let plain = reverify(&input, &trust, &Policy::default());
    let cache = CredentialCache::default();
    let first = reverify_cached(&input, &trust, &Policy::default(), &cache);
    // Accepted credentials only: 12 distinct, one tampered.
    assert_eq!(cache.len(), 11);
    let second = reverify_cached(&input, &trust, &Policy::default(), &cache);
    let codes_of = |v: &[Verdict]| -> Vec<Result<VerifiedRide, &'static str>> {
        v.iter()
            .map(|r| r.as_ref().cloned().map_err(|(e, _)| e.code()))
            .collect()
    };
    assert_eq!(codes_of(&first), codes_of(&plain));
    assert_eq!(codes_of(&second), codes_of(&plain));
    assert_eq!(
        second[5].as_ref().unwrap_err().0.code(),
        "bad_issuer_signature"
    );
    // The same key id now names another issuer key: nothing cached applies.
    let other = TestIssuer::new(8);
    assert_eq!(
        other.trust.keys()[0].key_id,
        issuer.trust.keys()[0].key_id,
        "the test needs the same key id"
    );
    let moved = reverify_cached(&input, &other.trust, &Policy::default(), &cache);
    assert!(moved
        .iter()
        .all(|v| v.as_ref().unwrap_err().0.code() == "bad_issuer_signature"));
}
