//! Camera frames: loading and QR decoding, via `fare-qr` (bounded frame
//! sizes, decoder panics contained and reported as no code found).

use std::path::Path;
use std::time::Duration;

/// Decodes the first QR payload of a grayscale frame within `budget` (see
/// `camera.decode_budget_ms`); `Err` says why none was read.
pub fn decode_frame(frame: &image::GrayImage, budget: Duration) -> Result<Vec<u8>, String> {
    fare_qr::decode_luma_with(frame, &fare_qr::DecodeOptions::with_budget(budget))
        .map_err(|e| e.to_string())
}

/// Loads an image file as a grayscale frame (size-checked before decoding pixels).
pub fn load_frame(path: &Path) -> Result<image::GrayImage, String> {
    fare_qr::load_frame(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Loads an image file and decodes its first QR payload within `budget`.
pub fn decode_file(path: &Path, budget: Duration) -> Result<Vec<u8>, String> {
    load_frame(path).and_then(|f| decode_frame(&f, budget))
}
