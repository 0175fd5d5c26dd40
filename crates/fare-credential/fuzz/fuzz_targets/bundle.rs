//! Fuzz the reader bundle decoders, every wire version (signature check
//! first, then parse).
#![no_main]
use fare_credential::*;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let root = SigningKey::from_bytes(&[7; 32]);
    let _ = bundle::PublishedBundle::verify(data, &root.verifying_key());
});
