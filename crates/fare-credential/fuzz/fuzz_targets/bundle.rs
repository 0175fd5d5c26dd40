//! Fuzz the reader bundle decoder (signature check first, then parse).
#![no_main]
use fare_credential::*;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let root = SigningKey::from_bytes(&[7; 32]);
    let _ = ReaderBundle::verify_v1(data, &root.verifying_key());
});
