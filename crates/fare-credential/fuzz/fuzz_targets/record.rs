//! Fuzz the ride record decoder: whatever decodes re-encodes identically.
#![no_main]
use fare_credential::*;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = RideRecord::decode_v1(data) {
        assert_eq!(r.encode_v1().expect("a decoded record encodes"), data);
    }
});
