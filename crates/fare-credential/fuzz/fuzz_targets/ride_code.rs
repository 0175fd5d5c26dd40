//! Fuzz the ride code and credential parsers and the whole verification path.
#![no_main]
use fare_credential::*;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Credential::from_bytes(data);
    if let Ok(code) = RideCode::from_bytes(data) {
        // A parsed code re-encodes to exactly the received bytes.
        assert_eq!(code.as_bytes().as_slice(), data);
    }
    let trust = TrustList::default();
    let _ = verify_ride_code(
        data,
        &trust,
        &DenyList::default(),
        &Policy::default(),
        1_800_000_000,
        None,
    );
});
