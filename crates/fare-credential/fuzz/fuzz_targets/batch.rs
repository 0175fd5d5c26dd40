//! Fuzz the batch decoder and chain check.
#![no_main]
use fare_credential::*;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = SigningKey::from_bytes(&[9; 32]);
    if let Ok(sb) = SignedBatch::parse_v1(data) {
        let _ = sb.reader_id();
        let _ = sb.verify(&key.verifying_key());
    }
});
