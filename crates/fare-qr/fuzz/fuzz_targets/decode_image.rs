//! Fuzz target: arbitrary bytes as an image file (PNG/JPEG/GIF) through the
//! bounded loader and the decoder. Must return an error or a frame, never
//! panic or allocate beyond the frame limits.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(img) = fare_qr::decode_image_bytes(data) {
        assert!(img.width() <= fare_qr::MAX_FRAME_SIDE_PX);
        assert!(img.height() <= fare_qr::MAX_FRAME_SIDE_PX);
        let _ = fare_qr::decode_luma(&img);
    }
});
