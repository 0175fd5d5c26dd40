//! Golden vectors: regenerated from the seed and compared byte for byte
//! with the committed file, then each is checked against its expected reason.

use fare_credential::testvectors::{generate, to_json, SEED};
use fare_credential::{verify_ride_code, DenyList, TrustList};
use std::path::PathBuf;

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testvectors/ride_codes_v1.json")
}

#[test]
fn committed_vectors_match_the_generator() {
    let fresh = to_json(&generate(SEED));
    let committed = std::fs::read_to_string(committed_path())
        .expect("testvectors/ride_codes_v1.json is committed");
    if fresh != committed {
        let line = fresh
            .lines()
            .zip(committed.lines())
            .position(|(a, b)| a != b)
            .map_or("(length differs)".to_string(), |i| {
                format!("first difference at line {}", i + 1)
            });
        panic!(
            "test vectors differ from the generator, {line}. If the format change is intended, run \
             `cargo run -p fare-credential --example gen_vectors` and commit the result."
        );
    }
}

#[test]
fn every_vector_gets_its_expected_reason() {
    let file = generate(SEED);
    let trust = TrustList::new(file.trust.clone()).unwrap();
    let deny = DenyList::from_ids(file.deny.clone());
    let mut negatives = 0;
    for v in &file.vectors {
        let code = hex::decode(&v.code_hex).unwrap();
        let got = match verify_ride_code(&code, &trust, &deny, &file.policy, v.now_unix_s, None) {
            Ok(_) => "accept".to_string(),
            Err(r) => {
                // Every reason has a non-empty human message.
                assert!(!r.to_string().is_empty());
                r.code().to_string()
            }
        };
        assert_eq!(got, v.expect, "vector {}: {}", v.name, v.description);
        if v.expect != "accept" {
            negatives += 1;
        }
    }
    assert!(negatives >= 25, "negative classes present: {negatives}");
}

#[test]
fn committed_ack_vectors_match_the_generator_and_verify_as_expected() {
    use fare_credential::testvectors::{acks_to_json, generate_acks};
    use fare_credential::{Ack, FormatError};
    let file = generate_acks(SEED);
    let committed = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testvectors/acks_v1.json"),
    )
    .expect("testvectors/acks_v1.json is committed");
    assert!(
        acks_to_json(&file) == committed,
        "ack vectors differ from the generator: run `cargo run -p fare-credential --example gen_vectors`"
    );
    let root =
        fare_credential::keys::parse_public_key(&hex::decode(&file.root_public_key).unwrap())
            .unwrap();
    for v in &file.vectors {
        let got = match Ack::verify_v1(&hex::decode(&v.ack_hex).unwrap(), &root) {
            Ok(_) => "ok",
            Err(FormatError::BadSignature { object: "ack" }) => "bad_signature",
            Err(FormatError::BadSignature { .. }) => "bad_cert_signature",
            Err(_) => "invalid",
        };
        assert_eq!(got, v.expect, "vector {}", v.name);
    }
}

#[test]
fn committed_bundle_v2_vectors_match_the_generator_and_verify_as_expected() {
    use fare_credential::testvectors::generate_bundles_v2;
    check_bundle_vectors(&generate_bundles_v2(SEED), "bundles_v2.json");
}

#[test]
fn committed_bundle_v3_vectors_match_the_generator_and_verify_as_expected() {
    use fare_credential::testvectors::generate_bundles_v3;
    check_bundle_vectors(&generate_bundles_v3(SEED), "bundles_v3.json");
}

fn check_bundle_vectors(file: &fare_credential::testvectors::BundleVectorFile, name: &str) {
    use fare_credential::bundle::PublishedBundle;
    use fare_credential::testvectors::bundles_to_json;
    use fare_credential::FormatError;
    let committed = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("testvectors")
            .join(name),
    )
    .unwrap_or_else(|e| panic!("testvectors/{name} is committed: {e}"));
    assert!(
        bundles_to_json(file) == committed,
        "bundle vectors differ from the generator: run `cargo run -p fare-credential --example gen_vectors`"
    );
    let root =
        fare_credential::keys::parse_public_key(&hex::decode(&file.root_public_key).unwrap())
            .unwrap();
    for v in &file.vectors {
        let got = PublishedBundle::verify(&hex::decode(&v.bundle_hex).unwrap(), &root);
        let code = match &got {
            Ok(_) => "ok",
            Err(FormatError::BadSignature { .. }) => "bad_signature",
            Err(FormatError::UnsupportedVersion { .. }) => "unsupported_version",
            Err(FormatError::Invalid { .. }) => "invalid",
            Err(_) => "malformed",
        };
        assert_eq!(code, v.expect, "vector {}: {got:?}", v.name);
        if let Ok(b) = got {
            assert_eq!(Some(hex::encode(b.publisher)), v.publisher, "{}", v.name);
            assert_eq!(
                b.deny_base_hash.map(hex::encode),
                v.deny_base_hash,
                "{}",
                v.name
            );
            assert_eq!(
                b.tariff_by_digest.map(hex::encode),
                v.tariff_by_digest,
                "{}",
                v.name
            );
            // The tariff travels whole exactly when it is not named by digest.
            assert_eq!(
                b.bundle.tariff.is_empty(),
                b.tariff_by_digest.is_some(),
                "{}",
                v.name
            );
        }
    }
}
