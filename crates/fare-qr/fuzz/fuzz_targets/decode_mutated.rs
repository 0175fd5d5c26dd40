//! Fuzz target: a real ride-code-sized QR frame, damaged by the input.
//!
//! Random frames almost never hold a finder pattern, so they stop in the
//! locator. This target starts from a rendered 199-byte code (version 10,
//! the reader's case) and lets the input pick the module size and quiet
//! zone, then overwrite runs of pixels (offset u16 LE, length u8, value u8
//! per 4-byte patch), so the finder scan, grid sampling, alignment search
//! and rqrr's decoder all see nearly-valid, damaged and misleading
//! structure. The decoder must return without panicking, and a payload it
//! returns must be the rendered one: QR error correction makes reading a
//! different payload from patched pixels practically impossible, so one
//! would be a decoder bug (a wrong payload is worse than none).
#![no_main]

use libfuzzer_sys::fuzz_target;

const PAYLOAD: [u8; 199] = {
    let mut p = [0u8; 199];
    let mut i = 0;
    while i < 199 {
        p[i] = (i as u8).wrapping_mul(37).wrapping_add(11);
        i += 1;
    }
    p
};

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let module_px = u32::from(data[0] % 4) + 2; // 2..=5 px per module
    let quiet = u32::from(data[1] % 5); // 0..=4 modules of quiet zone
    let Ok(mut img) = fare_qr::render_luma(&PAYLOAD, module_px, quiet) else {
        return;
    };
    let (w, h) = img.dimensions();
    let n = (w * h) as usize;
    let buf: &mut [u8] = &mut img;
    for patch in data[2..].chunks_exact(4) {
        let at = usize::from(u16::from_le_bytes([patch[0], patch[1]])) * n / 65_536;
        let len = usize::from(patch[2]);
        for px in buf.iter_mut().skip(at).take(len) {
            *px = patch[3];
        }
    }
    let opts = fare_qr::DecodeOptions::with_budget(std::time::Duration::from_secs(5));
    if let Ok(p) = fare_qr::decode_luma_with(&img, &opts) {
        assert_eq!(p, PAYLOAD, "decoded a payload that was not rendered");
    }
});
