//! Fuzz the signed-request header (SPEC §9), which settlement parses from
//! any client before it knows who is asking: as text, and (half the
//! inputs) as the hex of the bytes, which reaches the fields. Whatever
//! parses re-encodes to the same header (up to case and surrounding
//! space) and never verifies for a key that did not sign it.
#![no_main]
use fare_credential::testkit::seeded_key;
use fare_credential::*;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let header = if mode & 1 == 0 {
        String::from_utf8_lossy(rest).into_owned()
    } else {
        rest.iter().map(|b| format!("{b:02x}")).collect()
    };
    let Ok(auth) = RequestAuth::parse_header(&header) else {
        return;
    };
    assert_eq!(auth.to_header(), header.trim().to_ascii_lowercase());
    let key = seeded_key(7).verifying_key();
    assert!(auth.verify_v1(&key, "GET", "/v1/batches", rest).is_err());
});
