//! Fuzz the reader bundle decoders, every wire version. The signature is
//! checked before any parsing, so bytes as they come reach only that check;
//! half the inputs are therefore signed by the root first (the input's first
//! byte picks the wire version), which puts the parser behind it in reach.
//! Whatever parses must survive its own encoding unchanged.
#![no_main]
use fare_credential::bundle::*;
use fare_credential::keys::sign_domain;
use fare_credential::*;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let root = SigningKey::from_bytes(&[7; 32]);
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        let _ = PublishedBundle::verify(rest, &root.verifying_key());
        return;
    }
    let (version, domain) = match (mode >> 1) & 3 {
        0 => (BUNDLE_V1, BUNDLE_DOMAIN_V1),
        1 => (BUNDLE_V2, BUNDLE_DOMAIN_V2),
        _ => (BUNDLE_V3, BUNDLE_DOMAIN_V3),
    };
    let mut bytes = vec![version];
    bytes.extend_from_slice(rest);
    let sig = sign_domain(&root, domain, &bytes);
    bytes.extend_from_slice(&sig);
    match PublishedBundle::verify(&bytes, &root.verifying_key()) {
        Err(e) => assert!(!matches!(e, FormatError::BadSignature { .. }), "{e}"),
        Ok(b) => {
            let again = match version {
                BUNDLE_V1 => b.bundle.sign_v1(&root),
                BUNDLE_V2 => b.sign_v2(&root),
                _ => b.sign_v3(&root),
            };
            let again = again.expect("a parsed bundle encodes");
            assert_eq!(
                PublishedBundle::verify(&again, &root.verifying_key()).unwrap(),
                b
            );
        }
    }
});
