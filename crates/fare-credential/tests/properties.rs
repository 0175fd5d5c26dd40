//! Property tests: every single-bit flip and every truncation of a valid
//! ride code is rejected with the right class of reason; random bytes never
//! panic any decoder; signed objects round-trip and refuse tampering.

use fare_credential::batch::{Batch, SignedBatch};
use fare_credential::bundle::{DenyUpdate, ReaderBundle};
use fare_credential::record::genesis_hash;
use fare_credential::testkit::TestIssuer;
use fare_credential::testvectors::CODE_FIELDS;
use fare_credential::*;
use proptest::prelude::*;

const NOW: u64 = fare_credential::testkit::TEST_NOW;

struct Fixture {
    trust: TrustList,
    code: RideCode,
    root: SigningKey,
    reader: SigningKey,
}

fn fixture() -> &'static Fixture {
    static F: std::sync::OnceLock<Fixture> = std::sync::OnceLock::new();
    F.get_or_init(make_fixture)
}

fn make_fixture() -> Fixture {
    let mut issuer = TestIssuer::new(5);
    let device = issuer.next_key();
    let cred = issuer.credential(&device, CredentialId([3; 16]), Profile::Adult, NOW, 3600);
    let code = RideCode::sign_v1(&cred, NOW as u32, 42, &device);
    Fixture {
        trust: issuer.trust.clone(),
        code,
        root: issuer.next_key(),
        reader: issuer.next_key(),
    }
}

/// The fixture's trust list, an empty deny list, the default policy, at `NOW`.
fn verify_plain(f: &Fixture, bytes: &[u8]) -> Result<VerifiedRide, RejectReason> {
    verify_ride_code(
        bytes,
        &f.trust,
        &DenyList::default(),
        &Policy::default(),
        NOW,
        None,
    )
}

fn field_of(byte: usize) -> (&'static str, &'static str) {
    CODE_FIELDS
        .iter()
        .find(|(s, e, _, _)| (*s..*e).contains(&byte))
        .map(|(_, _, f, r)| (*f, *r))
        .expect("every byte belongs to a field")
}

/// Exhaustive, not sampled: all 199 × 8 single-bit flips.
#[test]
fn every_single_bit_flip_is_rejected_with_its_field_class() {
    let f = fixture();
    let deny = DenyList::default();
    let policy = Policy::default();
    verify_ride_code(f.code.as_bytes(), &f.trust, &deny, &policy, NOW, None)
        .expect("the original is valid");
    let mut count = 0;
    for byte in 0..f.code.as_bytes().len() {
        for bit in 0..8 {
            let mut b = f.code.as_bytes().to_vec();
            b[byte] ^= 1 << bit;
            let err = verify_ride_code(&b, &f.trust, &deny, &policy, NOW, None)
                .expect_err("a flipped bit must never be accepted");
            let (field, classes) = field_of(byte);
            assert!(
                classes.split('|').any(|c| c == err.code()),
                "bit {bit} of byte {byte} ({field}): got {} ({err}), expected {classes}",
                err.code()
            );
            // Forgery is never reported as a clock problem.
            assert!(
                !err.is_clock_related(),
                "byte {byte} ({field}) reported as clock: {err}"
            );
            count += 1;
        }
    }
    assert_eq!(count, 199 * 8);
}

#[test]
fn every_truncation_and_extension_is_malformed() {
    let f = fixture();
    let b = f.code.as_bytes();
    for len in 0..b.len() {
        let err = verify_plain(f, &b[..len]).unwrap_err();
        assert_eq!(err.code(), "malformed", "truncated to {len}: {err}");
    }
    for extra in 1..8 {
        let mut v = b.to_vec();
        v.extend(std::iter::repeat_n(0xAB, extra));
        let err = verify_plain(f, &v).unwrap_err();
        assert_eq!(err.code(), "malformed");
        assert!(err.to_string().contains("trailing"), "{err}");
    }
}

#[test]
fn cache_gives_same_verdicts_and_skips_nothing_that_matters() {
    let f = fixture();
    let mut cache = CredentialCache::new(4);
    let policy = Policy::default();
    let deny = DenyList::default();
    verify_ride_code(
        f.code.as_bytes(),
        &f.trust,
        &deny,
        &policy,
        NOW,
        Some(&mut cache),
    )
    .unwrap();
    assert_eq!(cache.len(), 1);
    // A cached credential still gets its time window and deny list checked.
    let err = verify_ride_code(
        f.code.as_bytes(),
        &f.trust,
        &deny,
        &policy,
        NOW + 7200,
        Some(&mut cache),
    )
    .unwrap_err();
    assert_eq!(err.code(), "credential_expired");
    let deny = DenyList::from_ids([CredentialId([3; 16])]);
    let err = verify_ride_code(
        f.code.as_bytes(),
        &f.trust,
        &deny,
        &policy,
        NOW,
        Some(&mut cache),
    )
    .unwrap_err();
    assert_eq!(err.code(), "revoked");
    // And a tampered device signature still fails with a warm cache.
    let mut b = f.code.as_bytes().to_vec();
    b[198] ^= 1;
    let err = verify_ride_code(
        &b,
        &f.trust,
        &DenyList::default(),
        &policy,
        NOW,
        Some(&mut cache),
    )
    .unwrap_err();
    assert_eq!(err.code(), "bad_device_signature");
}

fn sample_batch(f: &Fixture, n: u64) -> Batch {
    let mut prev = genesis_hash(7);
    let mut records = Vec::new();
    for seq in 1..=n {
        let r = RideRecord {
            reader_id: 7,
            reader_seq: seq,
            reader_time_unix_s: NOW + seq,
            vehicle: "BUS-0042".into(),
            route: "R12".into(),
            stop: if seq % 2 == 0 { Some(seq as u32) } else { None },
            code: f.code.as_bytes().to_vec(),
            prev_hash: prev,
        };
        prev = r.hash().unwrap();
        records.push(r);
    }
    Batch {
        reader_id: 7,
        prev_hash: genesis_hash(7),
        records,
    }
}

#[test]
fn batch_round_trip_and_tamper() {
    let f = fixture();
    let batch = sample_batch(f, 5);
    let bytes = batch.sign_v1(&f.reader).unwrap();
    let parsed = SignedBatch::parse_v1(&bytes).unwrap();
    assert_eq!(parsed.reader_id(), 7);
    assert_eq!(parsed.seq_range(), (1, 5));
    assert_eq!(parsed.verify(&f.reader.verifying_key()).unwrap(), batch);
    // Any flipped byte: refused at parse or at signature, never accepted.
    for i in 0..bytes.len() {
        let mut b = bytes.clone();
        b[i] ^= 0x10;
        let ok = SignedBatch::parse_v1(&b).and_then(|s| s.verify(&f.reader.verifying_key()));
        assert!(ok.is_err(), "flipped byte {i} accepted");
    }
    // Another reader's key: bad signature.
    let err = SignedBatch::parse_v1(&bytes)
        .unwrap()
        .verify(&f.root.verifying_key())
        .unwrap_err();
    assert!(matches!(err, FormatError::BadSignature { object: "batch" }));
    // A batch whose chain is broken cannot even be signed.
    let mut broken = sample_batch(f, 3);
    broken.records[2].prev_hash = [0; 32];
    assert!(broken.sign_v1(&f.reader).is_err());
}

#[test]
fn bundle_round_trip_and_tamper() {
    let f = fixture();
    let b = ReaderBundle {
        bundle_version: 9,
        server_time_unix_s: NOW,
        trust: f.trust.keys(),
        deny: DenyUpdate::Delta {
            base_version: 8,
            add: vec![CredentialId([1; 16]), CredentialId([2; 16])],
            remove: vec![CredentialId([5; 16])],
        },
        tariff: br#"{"currency":"CNY"}"#.to_vec(),
    };
    let bytes = b.sign_v1(&f.root).unwrap();
    assert_eq!(
        ReaderBundle::verify_v1(&bytes, &f.root.verifying_key()).unwrap(),
        b
    );
    for i in 0..bytes.len() {
        let mut t = bytes.clone();
        t[i] ^= 0x01;
        assert!(
            ReaderBundle::verify_v1(&t, &f.root.verifying_key()).is_err(),
            "flipped byte {i} accepted"
        );
    }
    let err = ReaderBundle::verify_v1(&bytes, &f.reader.verifying_key()).unwrap_err();
    assert!(matches!(err, FormatError::BadSignature { .. }));
}

/// A published delta bundle with the fixture's trust keys and `tariff`'s
/// bytes (version 9 on base 8, one id added, one removed).
fn delta_bundle(f: &Fixture, tariff: &[u8]) -> fare_credential::bundle::PublishedBundle {
    fare_credential::bundle::PublishedBundle {
        publisher: [7; 16],
        deny_base_hash: Some([3; 32]),
        tariff_by_digest: None,
        bundle: ReaderBundle {
            bundle_version: 9,
            server_time_unix_s: NOW,
            trust: f.trust.keys(),
            deny: DenyUpdate::Delta {
                base_version: 8,
                add: vec![CredentialId([1; 16])],
                remove: vec![CredentialId([5; 16])],
            },
            tariff: tariff.to_vec(),
        },
    }
}

/// v3 (SPEC §4.2), the tariff whole and by digest: each round-trips, every
/// flipped byte is refused, and the signing rules hold.
#[test]
fn bundle_v3_round_trip_and_tamper() {
    use fare_credential::bundle::{tariff_digest, PublishedBundle};
    let f = fixture();
    let tariff = br#"{"currency":"CNY"}"#.to_vec();
    let whole = delta_bundle(f, &tariff);
    let mut by_digest = whole.clone();
    by_digest.tariff_by_digest = Some(tariff_digest(&tariff));
    by_digest.bundle.tariff.clear();
    let root = f.root.verifying_key();
    for b in [&whole, &by_digest] {
        let bytes = b.sign_v3(&f.root).unwrap();
        assert_eq!(&PublishedBundle::verify(&bytes, &root).unwrap(), b);
        for i in 0..bytes.len() {
            let mut t = bytes.clone();
            t[i] ^= 0x01;
            assert!(
                PublishedBundle::verify(&t, &root).is_err(),
                "flipped byte {i} accepted"
            );
        }
    }
    // Sent by digest, the bundle is the tariff's length shorter (and more).
    let (a, b) = (
        whole.sign_v3(&f.root).unwrap(),
        by_digest.sign_v3(&f.root).unwrap(),
    );
    assert_eq!(a.len() - b.len(), 4 + tariff.len());
    // A digest with bytes beside it, or v2 by digest, is refused.
    let mut both = whole.clone();
    both.tariff_by_digest = Some([0; 32]);
    assert!(matches!(
        both.sign_v3(&f.root),
        Err(FormatError::Invalid {
            field: "tariff",
            ..
        })
    ));
    assert!(matches!(
        by_digest.sign_v2(&f.root),
        Err(FormatError::Invalid {
            field: "tariff",
            ..
        })
    ));
}

#[test]
fn deny_list_delta_semantics() {
    let mut d = DenyList::from_ids([
        CredentialId([3; 16]),
        CredentialId([1; 16]),
        CredentialId([3; 16]),
    ]);
    assert_eq!(d.len(), 2);
    d.apply_delta(&[CredentialId([9; 16])], &[CredentialId([1; 16])]);
    assert!(d.contains(&CredentialId([9; 16])));
    assert!(d.contains(&CredentialId([3; 16])));
    assert!(!d.contains(&CredentialId([1; 16])));
}

/// `body` (version byte first) with a valid root signature of its wire
/// version, so that a decoder gets past the signature to the parser.
fn signed_bundle(root: &SigningKey, body: &[u8]) -> Vec<u8> {
    use fare_credential::bundle::*;
    let domain = match body.first() {
        Some(&BUNDLE_V2) => BUNDLE_DOMAIN_V2,
        Some(&BUNDLE_V3) => BUNDLE_DOMAIN_V3,
        _ => BUNDLE_DOMAIN_V1,
    };
    let mut out = body.to_vec();
    out.extend_from_slice(&fare_credential::keys::sign_domain(root, domain, body));
    out
}

/// The bodies (signature cut off) of a valid bundle of each wire version:
/// a delta with trust keys and the tariff's bytes (v1, v2, v3), a
/// snapshot and the tariff by digest (v3).
fn valid_bundle_bodies(f: &Fixture) -> Vec<Vec<u8>> {
    use fare_credential::bundle::tariff_digest;
    let tariff = br#"{"currency":"CNY","fares":[200,300]}"#.to_vec();
    let delta = delta_bundle(f, &tariff);
    let mut snapshot = delta.clone();
    snapshot.deny_base_hash = None;
    snapshot.bundle.deny = DenyUpdate::Snapshot(vec![CredentialId([4; 16])]);
    snapshot.tariff_by_digest = Some(tariff_digest(&tariff));
    snapshot.bundle.tariff.clear();
    let mut v1 = delta.bundle.clone();
    v1.deny = DenyUpdate::Snapshot(vec![CredentialId([6; 16])]);
    let signed = [
        v1.sign_v1(&f.root).unwrap(),
        delta.sign_v2(&f.root).unwrap(),
        delta.sign_v3(&f.root).unwrap(),
        snapshot.sign_v3(&f.root).unwrap(),
    ];
    signed
        .iter()
        .map(|b| b[..b.len() - fare_credential::keys::SIGNATURE_LEN].to_vec())
        .collect()
}

/// What a bundle that got past its signature must give: a parse, or a
/// refusal by the parser (never `BadSignature`: the signature was good);
/// and a parsed bundle survives its own encoding unchanged.
fn check_signed_bundle(f: &Fixture, bytes: &[u8]) -> Result<(), TestCaseError> {
    use fare_credential::bundle::{PublishedBundle, BUNDLE_V2, BUNDLE_V3};
    let root = f.root.verifying_key();
    match PublishedBundle::verify(bytes, &root) {
        Err(e) => prop_assert!(
            !matches!(e, FormatError::BadSignature { .. }),
            "a well-signed body refused as {e}"
        ),
        Ok(b) => {
            let again = match bytes[0] {
                BUNDLE_V2 => b.sign_v2(&f.root),
                BUNDLE_V3 => b.sign_v3(&f.root),
                _ => b.bundle.sign_v1(&f.root),
            };
            let again = again.expect("a parsed bundle encodes");
            prop_assert_eq!(PublishedBundle::verify(&again, &root).unwrap(), b);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Random bodies under a good signature reach the bundle parser (the
    /// fuzz target `bundle` does the same): it parses or refuses them,
    /// never panics or allocates past its limits.
    #[test]
    fn signed_random_bundle_bodies_parse_or_refuse(version in 1u8..=3, tail in proptest::collection::vec(any::<u8>(), 0..3000)) {
        let f = fixture();
        let mut body = vec![version];
        body.extend_from_slice(&tail);
        check_signed_bundle(f, &signed_bundle(&f.root, &body))?;
    }

    /// Valid bundles of every wire version with one byte changed, one
    /// inserted, or cut short, signed again: the parser sees a structure
    /// that is nearly right in every field.
    #[test]
    fn signed_mutated_bundles_parse_or_refuse(which in 0usize..4, at in any::<prop::sample::Index>(), byte in any::<u8>(), how in 0u8..3) {
        let f = fixture();
        let mut body = valid_bundle_bodies(f).swap_remove(which);
        let i = at.index(body.len());
        match how {
            0 => body[i] = byte,
            1 => body.insert(i, byte),
            _ => body.truncate(i.max(1)),
        }
        check_signed_bundle(f, &signed_bundle(&f.root, &body))?;
    }

    #[test]
    fn random_bytes_never_panic_any_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let f = fixture();
        let _ = RideCode::from_bytes(&bytes);
        let _ = Credential::from_bytes(&bytes);
        let _ = RideRecord::decode_v1(&bytes);
        let _ = ReaderBundle::verify_v1(&bytes, &f.root.verifying_key());
        let _ = fare_credential::bundle::PublishedBundle::verify(&bytes, &f.root.verifying_key());
        if let Ok(sb) = SignedBatch::parse_v1(&bytes) {
            let _ = sb.verify(&f.reader.verifying_key());
        }
        let _ = verify_plain(f, &bytes);
        let _ = Ack::verify_v1(&bytes, &f.root.verifying_key());
        let _ = AckKeyCert::verify_v1(&bytes, &f.root.verifying_key());
        let _ = RequestAuth::parse_header(&String::from_utf8_lossy(&bytes));
        if let Ok(auth) = RequestAuth::parse_header(&hex::encode(&bytes)) {
            prop_assert_eq!(RequestAuth::parse_header(&auth.to_header()).unwrap(), auth);
            prop_assert!(auth.verify_v1(&f.reader.verifying_key(), "GET", "/", &bytes).is_err());
        }
    }

    /// Request signature headers (SPEC §9, parsed from any client): any 84
    /// bytes after version 1 parse and re-encode to the same header; a
    /// signed request with any byte of its header changed is refused, as an
    /// unsupported version (the first byte) or a bad signature.
    #[test]
    fn request_headers_round_trip_and_refuse_tampering(rest in proptest::collection::vec(any::<u8>(), 84), at in 0usize..85, flip in 1u8..) {
        let mut raw = vec![fare_credential::request::REQUEST_V1];
        raw.extend_from_slice(&rest);
        let header = hex::encode(&raw);
        prop_assert_eq!(RequestAuth::parse_header(&header).unwrap().to_header(), header);
        let f = fixture();
        let target = "/v1/readers/7/bundle?since=3";
        let signed = RequestAuth::sign_v1(&f.reader, 7, NOW, 1, "GET", target, b"").unwrap();
        let mut raw = hex::decode(signed.to_header()).unwrap();
        raw[at] ^= flip;
        match RequestAuth::parse_header(&hex::encode(&raw)) {
            Err(FormatError::UnsupportedVersion { .. }) => prop_assert_eq!(at, 0),
            Err(e) => prop_assert!(false, "byte {} changed: {}", at, e),
            Ok(t) => prop_assert!(t.verify_v1(&f.reader.verifying_key(), "GET", target, b"").is_err()),
        }
    }

    /// Acknowledgements whose two signatures check, with any content: the
    /// parser and the window check behind the signatures (which random
    /// bytes never reach) refuse exactly what they must and keep the rest.
    #[test]
    fn signed_acks_with_any_content_parse_or_refuse(mut input in proptest::collection::vec(any::<u8>(), 0..120), kind in prop_oneof![0u8..=3, any::<u8>()]) {
        // Valid kinds half the time (random bytes give one in 85).
        if let Some(k) = input.get_mut(16) {
            *k = kind;
        }
        let r = fare_credential::testkit::check_signed_ack(&input);
        prop_assert!(r.is_ok(), "{}", r.unwrap_err());
    }

    #[test]
    fn random_bytes_with_valid_prefix_never_accepted(tail in proptest::collection::vec(any::<u8>(), 0..199), cut in 0usize..199) {
        // Keep a valid prefix, replace the rest with random bytes of the same length.
        let f = fixture();
        let mut b = f.code.as_bytes()[..cut].to_vec();
        b.extend(tail.iter().take(199 - cut));
        if b.as_slice() != f.code.as_bytes().as_slice() {
            prop_assert!(verify_plain(f, &b).is_err());
        }
    }

    #[test]
    fn record_round_trips(seq in 1u64.., t in any::<u64>(), stop in proptest::option::of(any::<u32>()),
                          vehicle in "[A-Z0-9-]{0,32}", route in "[A-Za-z0-9 ]{0,32}",
                          code in proptest::collection::vec(any::<u8>(), 0..512)) {
        let r = RideRecord { reader_id: 3, reader_seq: seq, reader_time_unix_s: t, vehicle, route, stop, code, prev_hash: [4; 32] };
        let enc = r.encode_v1().unwrap();
        prop_assert_eq!(RideRecord::decode_v1(&enc).unwrap(), r);
    }
}

/// ARCHITECTURE.md: signatures are checked before time windows. A tampered
/// credential under an issuer key outside its window is a forgery
/// (`bad_issuer_signature`), not `issuer_key_not_valid`; the untampered one
/// at the same moment is refused for the window; with a cache the verdicts
/// are the same.
#[test]
fn issuer_signature_is_checked_before_the_issuer_key_window() {
    let f = fixture();
    let key = f
        .trust
        .get(TestIssuer::KEY_ID)
        .expect("fixture key")
        .0
        .clone();
    // The fixture's issuer key, valid only until just before NOW.
    let expired = TrustList::new([IssuerKey {
        valid_until_unix_s: NOW - 10_000,
        ..key
    }])
    .unwrap();
    let mut tampered = f.code.as_bytes().to_vec();
    // A byte of the credential the issuer signed (its id).
    let (start, _, _, _) = CODE_FIELDS
        .iter()
        .find(|(_, _, field, _)| *field == "credential_id")
        .copied()
        .expect("a credential validity field");
    tampered[start] ^= 0x01;
    for cached in [false, true] {
        let mut cache = CredentialCache::new(8);
        let run = |bytes: &[u8], cache: &mut CredentialCache| {
            verify_ride_code(
                bytes,
                &expired,
                &DenyList::default(),
                &Policy::default(),
                NOW,
                cached.then_some(cache),
            )
        };
        let genuine = run(f.code.as_bytes(), &mut cache).unwrap_err();
        assert_eq!(genuine.code(), "issuer_key_not_valid", "{genuine}");
        // Again (the cache now holds it when `cached`): same verdict.
        let genuine = run(f.code.as_bytes(), &mut cache).unwrap_err();
        assert_eq!(genuine.code(), "issuer_key_not_valid", "{genuine}");
        let forged = run(&tampered, &mut cache).unwrap_err();
        assert_eq!(forged.code(), "bad_issuer_signature", "{forged}");
    }
}

proptest! {
    /// `keys::in_prime_subgroup` (variable-time, issuance's device-key
    /// check) agrees with dalek's constant-time `is_torsion_free` on
    /// `[a]B + T` for every small-order `T`: inside exactly when `T = 0`.
    #[test]
    fn prime_subgroup_check_agrees_with_dalek(a in any::<[u8; 32]>(), t in 0usize..8) {
        use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
        use curve25519_dalek::scalar::Scalar;
        let point = ED25519_BASEPOINT_POINT * Scalar::from_bytes_mod_order(a) + EIGHT_TORSION[t];
        let inside = fare_credential::keys::in_prime_subgroup(&point);
        prop_assert_eq!(inside, point.is_torsion_free());
        prop_assert_eq!(inside, t == 0);
    }
}

/// Device keys checked together for issuance answer exactly as each checked
/// alone: a whole batch of good keys passes through one group test; a
/// mixed-order key of any small order anywhere fails the group and is then
/// found alone; weak keys and non-points are refused as alone; below the
/// group's minimum every key is checked alone.
#[test]
fn device_keys_checked_together_answer_as_one_by_one() {
    use curve25519_dalek::constants::EIGHT_TORSION;
    use curve25519_dalek::edwards::CompressedEdwardsY;
    use fare_credential::keys::{device_keys_for_issuance, parse_device_key_for_issuance};
    use fare_credential::subgroup::GROUP_TEST_MIN_POINTS;
    use rand_chacha::rand_core::SeedableRng;
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(41);
    let good: Vec<[u8; 32]> = (0..GROUP_TEST_MIN_POINTS + 20)
        .map(|_| {
            ed25519_dalek::SigningKey::generate(&mut rng)
                .verifying_key()
                .to_bytes()
        })
        .collect();
    let n = good.len();
    let mixed = |k: &[u8; 32], t: usize| {
        let point = CompressedEdwardsY(*k).decompress().expect("a good key");
        (point + EIGHT_TORSION[t]).compress().to_bytes()
    };
    let not_a_point = (0u8..=255)
        .map(|y| [y; 32])
        .find(|b| CompressedEdwardsY(*b).decompress().is_none())
        .expect("some y off the curve");
    let with = |changes: &[(usize, [u8; 32])]| {
        let mut keys = good.clone();
        for (at, key) in changes {
            keys[*at] = *key;
        }
        keys
    };
    let mut cases = vec![good.clone()];
    for t in 1..8 {
        cases.push(with(&[(t * 37 % n, mixed(&good[t * 37 % n], t))]));
    }
    cases.push(with(&[
        (0, mixed(&good[0], 4)),
        (n - 1, mixed(&good[n - 1], 4)),
    ]));
    cases.push(with(&[
        (3, EIGHT_TORSION[2].compress().to_bytes()),
        (9, not_a_point),
    ]));
    cases.push(vec![good[0], mixed(&good[1], 1), not_a_point]);
    for keys in &cases {
        let alone: Vec<_> = keys
            .iter()
            .map(|k| parse_device_key_for_issuance(k))
            .collect();
        assert!(alone.iter().any(Result::is_ok));
        assert_eq!(device_keys_for_issuance(keys, &mut rng), alone);
    }
    assert!(device_keys_for_issuance(&good, &mut rng)
        .iter()
        .all(Result::is_ok));
}
