//! Wycheproof Ed25519 vectors (shared corpus, not written by this team)
//! through this crate's own key and signature parsing and `verify_strict`.
//! Every `valid` must verify and every `invalid` must be refused.

use fare_credential::keys::{parse_public_key, verify_domain};
use std::path::PathBuf;

fn corpus() -> PathBuf {
    fare_credential::testkit::corpus_path("ed25519/wycheproof-ed25519.json")
}

#[test]
fn every_wycheproof_verdict_matches() {
    let text = std::fs::read_to_string(corpus()).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut checked = 0;
    let mut mismatches = Vec::new();
    for group in doc["testGroups"].as_array().unwrap() {
        let pk = hex::decode(group["publicKey"]["pk"].as_str().unwrap()).unwrap();
        for t in group["tests"].as_array().unwrap() {
            let msg = hex::decode(t["msg"].as_str().unwrap()).unwrap();
            let sig = hex::decode(t["sig"].as_str().unwrap()).unwrap();
            let expected_valid = match t["result"].as_str().unwrap() {
                "valid" => true,
                "invalid" => false,
                other => panic!("unexpected result {other}"),
            };
            // Our verdict: the key must parse (valid point, not weak) and the
            // signature must verify strictly. Empty domain = the raw message.
            let ours = match parse_public_key(&pk) {
                Ok(vk) => verify_domain(&vk, b"", &msg, &sig),
                Err(_) => false,
            };
            if ours != expected_valid {
                mismatches.push(format!(
                    "tcId {} ({:?}): expected {}, got {}",
                    t["tcId"], t["flags"], expected_valid, ours
                ));
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 151, "the corpus README says 151 tests");
    assert!(
        mismatches.is_empty(),
        "verdict mismatches:\n{}",
        mismatches.join("\n")
    );
}
