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
