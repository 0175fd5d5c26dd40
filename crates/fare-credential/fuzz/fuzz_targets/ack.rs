//! Fuzz the batch acknowledgement and its key certificate (SPEC §8). Both
//! signatures are checked before any parsing, so bytes as they come reach
//! only those checks; half the inputs are therefore built into an
//! acknowledgement whose signatures check (`testkit::signed_ack_from`),
//! which puts the parser and the window check behind them in reach, and
//! the result must be exactly what the input says (`check_signed_ack`).
#![no_main]
use fare_credential::testkit::{check_signed_ack, seeded_key, SIGNED_ACK_ROOT_SEED};
use fare_credential::*;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        let root = seeded_key(SIGNED_ACK_ROOT_SEED).verifying_key();
        let _ = Ack::verify_v1(rest, &root);
        let _ = AckKeyCert::verify_v1(rest, &root);
        return;
    }
    if let Err(why) = check_signed_ack(rest) {
        panic!("{why}");
    }
});
