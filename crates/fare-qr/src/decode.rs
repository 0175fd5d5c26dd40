//! Reading QR payloads from greyscale camera frames with rqrr, bounded and
//! panic-contained.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::time::{Duration, Instant};

use image::GrayImage;

use crate::enhance::{self, Gray};
use crate::frame::{check_frame_size, load_frame};
use crate::QrError;

/// How one decode attempt prepares the frame before rqrr's detector runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Threshold {
    /// rqrr's own binarization (row-wise running average).
    Rqrr,
    /// Adaptive threshold against the mean of a square window (integral
    /// image): dark = below local mean minus `bias`.
    LocalMean {
        /// Window side, pixels of the (scaled) view.
        window_px: u16,
        /// Margin below the local mean, grey levels.
        bias: u8,
    },
    /// zxing-style block threshold (8×8 blocks averaged over 5×5 blocks).
    Hybrid,
    /// One global Otsu threshold.
    Otsu,
}

/// One decode attempt: resample, optionally smooth and stretch contrast,
/// binarize, then run rqrr's detector and decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Attempt {
    /// Scale of the view in percent of the frame: 50 (2×2 average), 100, or
    /// an upscale (bilinear) such as 150 / 200. Views over
    /// [`MAX_VIEW_PIXELS`] are skipped.
    pub scale_percent: u16,
    /// 3×3 box blur before binarization (noise, JPEG speckle).
    pub blur: bool,
    /// Stretch the 1st–99th percentile grey range to full range.
    pub stretch: bool,
    /// Binarization.
    pub threshold: Threshold,
}

impl Attempt {
    /// An attempt with the given parts.
    pub const fn new(scale_percent: u16, blur: bool, stretch: bool, threshold: Threshold) -> Self {
        Attempt {
            scale_percent,
            blur,
            stretch,
            threshold,
        }
    }

    /// The plain attempt: the frame as given, rqrr's own binarization.
    pub const PLAIN: Attempt = Attempt::new(100, false, false, Threshold::Rqrr);
}

/// Largest view (after scaling) an attempt may build, pixels; bounds memory
/// and time of upscaled attempts.
pub const MAX_VIEW_PIXELS: usize = 4 * 1024 * 1024;

/// The default attempts of [`decode_luma`], in order, measured on the public
/// corpus and the synthetic phone-screen set (see the crate README): after
/// the plain attempt, each entry is the one that reads the most frames the
/// previous ones miss per millisecond it costs.
///
/// The plain attempt comes first although it is not the best single one:
/// it is the cheapest and reads every clean frame, the common case at a
/// gate. Upscaling (150 %, 200 %) is what most of the rest buys: rqrr's
/// finder checks compare whole-pixel run lengths, which fail on rotated
/// codes with 2–4 px modules.
pub const DEFAULT_ATTEMPTS: &[Attempt] = &[
    Attempt::PLAIN,
    Attempt::new(150, false, false, Threshold::Otsu),
    Attempt::new(
        150,
        false,
        false,
        Threshold::LocalMean {
            window_px: 63,
            bias: 2,
        },
    ),
    Attempt::new(
        100,
        true,
        false,
        Threshold::LocalMean {
            window_px: 31,
            bias: 4,
        },
    ),
    Attempt::new(
        100,
        false,
        false,
        Threshold::LocalMean {
            window_px: 63,
            bias: 2,
        },
    ),
    Attempt::new(
        150,
        false,
        false,
        Threshold::LocalMean {
            window_px: 15,
            bias: 6,
        },
    ),
    Attempt::new(150, false, false, Threshold::Rqrr),
    Attempt::new(100, true, false, Threshold::Hybrid),
    Attempt::new(100, true, false, Threshold::Rqrr),
    Attempt::new(150, true, false, Threshold::Hybrid),
    Attempt::new(200, false, false, Threshold::Otsu),
    Attempt::new(
        200,
        true,
        false,
        Threshold::LocalMean {
            window_px: 31,
            bias: 4,
        },
    ),
];

/// Options of [`decode_luma_with`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DecodeOptions {
    /// Give-up budget for one frame. The first attempt always runs; a later
    /// attempt starts only if its predicted cost (the worst cost per pixel
    /// observed so far on this frame, times its view's pixel count) fits in
    /// what is left, so the budget is overrun by at most one misprediction.
    pub budget: Duration,
    /// Attempts in order; decoding stops at the first attempt that yields a
    /// payload.
    pub attempts: Vec<Attempt>,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions {
            budget: DEFAULT_DECODE_BUDGET,
            attempts: DEFAULT_ATTEMPTS.to_vec(),
        }
    }
}

impl DecodeOptions {
    /// Default attempts with the given budget.
    pub fn with_budget(budget: Duration) -> Self {
        DecodeOptions {
            budget,
            ..DecodeOptions::default()
        }
    }

    /// The given attempts, in order, with the given budget.
    pub fn with_attempts(budget: Duration, attempts: Vec<Attempt>) -> Self {
        DecodeOptions { budget, attempts }
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
fn rqrr_decode_view(width: usize, height: usize, view: View<'_>) -> Vec<Vec<u8>> {
    if width == 0 || height == 0 {
        return Vec::new();
    }
    let result = crate::quiet::in_decoder(|| {
        catch_unwind(AssertUnwindSafe(|| {
            let mut prepared = match view {
                View::Grey(pixels) => {
                    rqrr::PreparedImage::prepare_from_greyscale(width, height, |x, y| {
                        pixels[y * width + x]
                    })
                }
                View::Bits(bits) => {
                    rqrr::PreparedImage::prepare_from_bitmap(width, height, |x, y| {
                        bits[y * width + x]
                    })
                }
            };
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

/// What rqrr is given: grey levels (it binarizes) or a ready bitmap
/// (`true` = dark).
#[derive(Clone, Copy)]
enum View<'a> {
    Grey(&'a [u8]),
    Bits(&'a [bool]),
}

/// Builds the view of one attempt (cached by resample/blur/stretch, which
/// several attempts share) and runs rqrr on it.
fn run_attempt(frame: &Gray, attempt: &Attempt, cache: &mut Vec<(GreyKey, Gray)>) -> Vec<Vec<u8>> {
    let key = GreyKey {
        scale_percent: attempt.scale_percent,
        blur: attempt.blur,
        stretch: attempt.stretch,
    };
    let idx = match cache.iter().position(|(k, _)| *k == key) {
        Some(i) => i,
        None => {
            let Some(grey) = build_grey(frame, &key) else {
                return Vec::new();
            };
            cache.push((key, grey));
            cache.len() - 1
        }
    };
    let grey = &cache[idx].1;
    match attempt.threshold {
        Threshold::Rqrr => rqrr_decode_view(grey.w, grey.h, View::Grey(&grey.px)),
        Threshold::LocalMean { window_px, bias } => {
            let bits = enhance::binarize_local_mean(grey, usize::from(window_px), bias);
            rqrr_decode_view(grey.w, grey.h, View::Bits(&bits))
        }
        Threshold::Hybrid => {
            let bits = enhance::binarize_hybrid(grey);
            rqrr_decode_view(grey.w, grey.h, View::Bits(&bits))
        }
        Threshold::Otsu => {
            let bits = enhance::binarize_otsu(grey);
            rqrr_decode_view(grey.w, grey.h, View::Bits(&bits))
        }
    }
}

/// The grey-level preparation of an attempt (shared between thresholds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct GreyKey {
    scale_percent: u16,
    blur: bool,
    stretch: bool,
}

fn build_grey(frame: &Gray, key: &GreyKey) -> Option<Gray> {
    let mut g = match key.scale_percent {
        100 => frame.clone(),
        50 => enhance::downscale2(frame),
        0 => return None,
        p => {
            let w = frame.w * usize::from(p) / 100;
            let h = frame.h * usize::from(p) / 100;
            if w.checked_mul(h)? > MAX_VIEW_PIXELS {
                tracing::trace!(w, h, "upscaled view too large; attempt skipped");
                return None;
            }
            enhance::resize_bilinear(frame, w, h)
        }
    };
    if key.stretch {
        g = enhance::stretch_contrast(&g);
    }
    if key.blur {
        g = enhance::blur3(&g);
    }
    Some(g)
}

/// Decodes every QR payload in `img` with the given options.
///
/// Returns the payloads of the first view (plain frame, then enhanced
/// variants) in which any code decoded, without duplicates.
fn decode_inner(img: &GrayImage, opts: &DecodeOptions) -> Result<Vec<Vec<u8>>, QrError> {
    check_frame_size(img.width(), img.height())?;
    let start = Instant::now();
    let frame = Gray {
        w: img.width() as usize,
        h: img.height() as usize,
        px: img.as_raw().clone(),
    };
    let mut cache = Vec::new();
    // Cost of one full-size attempt, measured on the first one.
    let mut unit_cost: Option<Duration> = None;
    for (i, attempt) in opts.attempts.iter().enumerate() {
        let area = (f64::from(attempt.scale_percent).powi(2) / 10_000.0).max(0.25);
        if let Some(unit) = unit_cost {
            if start.elapsed() + unit.mul_f64(area) > opts.budget {
                tracing::debug!(
                    attempt = i,
                    budget_ms = opts.budget.as_millis() as u64,
                    "attempt skipped: would overrun the decode budget"
                );
                continue;
            }
        }
        let t = Instant::now();
        let mut payloads = run_attempt(&frame, attempt, &mut cache);
        // Keep the worst observed cost per full-frame area: noisy binarized
        // views cost more than the plain one.
        let observed = t.elapsed().div_f64(area);
        unit_cost = Some(unit_cost.map_or(observed, |u| u.max(observed)));
        if i == 0 && payloads.is_empty() && is_flat(&frame) {
            // Nothing but a few grey levels: no code can be in view, and
            // binarizing sensor noise would only burn the budget.
            tracing::trace!("flat frame; enhanced attempts skipped");
            break;
        }
        if !payloads.is_empty() {
            dedup(&mut payloads);
            tracing::trace!(attempt = i, ?attempt, "decoded");
            return Ok(payloads);
        }
    }
    Ok(Vec::new())
}

/// Contrast range (1st to 99th percentile, grey levels) below which a frame
/// is treated as holding no code. A printed or displayed QR code spans far
/// more even when washed out.
const FLAT_FRAME_RANGE: u8 = 24;

/// True when the 1st–99th percentile grey range is under
/// [`FLAT_FRAME_RANGE`].
fn is_flat(frame: &Gray) -> bool {
    let mut hist = [0usize; 256];
    for &p in &frame.px {
        hist[usize::from(p)] += 1;
    }
    let cut = frame.px.len() / 100;
    let mut acc = 0;
    let lo = hist
        .iter()
        .position(|&c| {
            acc += c;
            acc > cut
        })
        .unwrap_or(0);
    let mut acc = 0;
    let hi = 255
        - hist
            .iter()
            .rev()
            .position(|&c| {
                acc += c;
                acc > cut
            })
            .unwrap_or(0);
    hi < lo + usize::from(FLAT_FRAME_RANGE)
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
    decode_all_with(img, &DecodeOptions::default())
}

/// Like [`decode_all`] with explicit options: the payloads of the first
/// attempt that reads any code.
pub fn decode_all_with(img: &GrayImage, opts: &DecodeOptions) -> Vec<Vec<u8>> {
    decode_inner(img, opts).unwrap_or_default()
}

/// Loads an image file with [`load_frame`] and decodes its first payload.
pub fn decode_file(path: impl AsRef<Path>) -> Result<Vec<u8>, QrError> {
    decode_luma(&load_frame(path)?)
}
