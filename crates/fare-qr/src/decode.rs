//! Reading QR payloads from greyscale camera frames with rqrr, bounded and
//! panic-contained.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::time::{Duration, Instant};

use image::GrayImage;

use crate::frame::{check_frame_size, load_frame};
use crate::QrError;

/// Options of [`decode_luma_with`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DecodeOptions {
    /// Give-up budget for one frame: no new decode attempt starts once it is
    /// spent (an attempt already running finishes). The first, plain attempt
    /// always runs.
    pub budget: Duration,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions {
            budget: DEFAULT_DECODE_BUDGET,
        }
    }
}

impl DecodeOptions {
    /// Default options with the given budget.
    pub fn with_budget(budget: Duration) -> Self {
        DecodeOptions { budget }
    }
}

/// Default per-frame budget of [`decode_luma`].
pub const DEFAULT_DECODE_BUDGET: Duration = Duration::from_millis(60);

/// Runs rqrr's detector and decoder on one greyscale view, returning every
/// payload that passed error correction (raw bytes, not text).
///
/// rqrr 0.11 panics inside `detect_grids` on some real photos (upstream
/// issue WanzenBug/rqrr#54: a float-to-int assertion in its perspective
/// code). A reader must not crash on a frame, so the panic is contained and
/// the frame counts as "no code found". The default panic hook still prints
/// the message to stderr unless the binary installed
/// [`crate::install_quiet_panic_hook`].
fn rqrr_decode_view(width: usize, height: usize, pixels: &[u8]) -> Vec<Vec<u8>> {
    if width == 0 || height == 0 {
        return Vec::new();
    }
    let result = crate::quiet::in_decoder(|| {
        catch_unwind(AssertUnwindSafe(|| {
            let mut prepared =
                rqrr::PreparedImage::prepare_from_greyscale(width, height, |x, y| {
                    pixels[y * width + x]
                });
            let grids = prepared.detect_grids();
            let mut out = Vec::new();
            for grid in grids {
                // A fresh buffer per grid: decode_to may write a partial
                // payload before failing.
                let mut buf = Vec::new();
                match grid.decode_to(&mut buf) {
                    Ok(_meta) => out.push(buf),
                    Err(e) => tracing::trace!(error = ?e, "grid found but not decodable"),
                }
            }
            out
        }))
    });
    match result {
        Ok(payloads) => payloads,
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic".to_owned());
            tracing::debug!(panic = %msg, width, height, "rqrr panicked on a frame; treated as no code found");
            Vec::new()
        }
    }
}

/// Decodes every QR payload in `img` with the given options.
///
/// Returns the payloads of the first view (plain frame, then enhanced
/// variants) in which any code decoded, without duplicates.
fn decode_inner(img: &GrayImage, opts: &DecodeOptions) -> Result<Vec<Vec<u8>>, QrError> {
    check_frame_size(img.width(), img.height())?;
    let _deadline = Instant::now() + opts.budget;
    let mut payloads = rqrr_decode_view(img.width() as usize, img.height() as usize, img.as_raw());
    dedup(&mut payloads);
    Ok(payloads)
}

/// Removes repeated payloads, keeping first occurrences in order.
fn dedup(payloads: &mut Vec<Vec<u8>>) {
    let mut seen: Vec<Vec<u8>> = Vec::with_capacity(payloads.len());
    payloads.retain(|p| {
        if seen.contains(p) {
            false
        } else {
            seen.push(p.clone());
            true
        }
    });
}

/// Decodes the first QR payload found in `img` (raw bytes: binary payloads
/// survive exactly), with [`DecodeOptions::default`].
///
/// Errors: [`QrError::FrameTooLarge`] (checked before any work),
/// [`QrError::NoCodeFound`].
pub fn decode_luma(img: &GrayImage) -> Result<Vec<u8>, QrError> {
    decode_luma_with(img, &DecodeOptions::default())
}

/// Like [`decode_luma`] with explicit options (time budget).
pub fn decode_luma_with(img: &GrayImage, opts: &DecodeOptions) -> Result<Vec<u8>, QrError> {
    decode_inner(img, opts)?
        .into_iter()
        .next()
        .ok_or(QrError::NoCodeFound)
}

/// Decodes every QR payload found in `img` (empty when none, or when the frame
/// is too large).
pub fn decode_all(img: &GrayImage) -> Vec<Vec<u8>> {
    decode_inner(img, &DecodeOptions::default()).unwrap_or_default()
}

/// Loads an image file with [`load_frame`] and decodes its first payload.
pub fn decode_file(path: impl AsRef<Path>) -> Result<Vec<u8>, QrError> {
    decode_luma(&load_frame(path)?)
}
