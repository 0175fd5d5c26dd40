//! Fuzz target: arbitrary greyscale frames through the QR decoder.
//!
//! Input layout: width (u16 LE), height (u16 LE), then pixels row-major. The
//! sides are bounded to 1..=384 so one input stays fast; missing pixels are
//! filled by repeating the given ones (so short inputs still make frames with
//! structure), none given → mid grey. The decoder must return without
//! panicking (its rqrr panics are contained) and never exceed the frame size
//! checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

const MAX_SIDE: u32 = 384;

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let w = u32::from(u16::from_le_bytes([data[0], data[1]])) % MAX_SIDE + 1;
    let h = u32::from(u16::from_le_bytes([data[2], data[3]])) % MAX_SIDE + 1;
    let pixels = &data[4..];
    let n = (w * h) as usize;
    let buf: Vec<u8> = if pixels.is_empty() {
        vec![128; n]
    } else {
        pixels.iter().copied().cycle().take(n).collect()
    };
    let Some(img) = image::GrayImage::from_raw(w, h, buf) else {
        return;
    };
    let first = fare_qr::decode_luma(&img);
    let all = fare_qr::decode_all(&img);
    // The first payload, when there is one, is one of all payloads.
    if let Ok(p) = &first {
        assert!(all.contains(p));
    }
});
