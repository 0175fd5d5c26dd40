//! Reading QR payloads from greyscale camera frames with rqrr, bounded and
//! panic-contained.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::time::{Duration, Instant};

use image::GrayImage;

use crate::enhance::{self, Gray};
use crate::frame::{check_frame_size, load_frame};
use crate::locate;
use crate::sample;
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
    /// Give-up budget for one frame. The flat-frame check, the first
    /// locator scan and the first sampled grid always run (or, without the
    /// locator, the first attempt); every later step starts only if its predicted cost (the
    /// worst cost observed so far on this frame for that kind of step,
    /// ×1.25) fits in what is left, so the budget is overrun by at most one
    /// misprediction.
    pub budget: Duration,
    /// Whole-frame attempts in order, after the locator stage; decoding
    /// stops at the first attempt that yields a payload.
    pub attempts: Vec<Attempt>,
    /// Run the finder-pattern locator first: find the code's finder
    /// patterns with a cheap run-length scan, sample each likely symbol's
    /// grid directly, and let rqrr read an upright
    /// crop resampled around them, before any whole-frame attempt.
    pub locator: bool,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions {
            budget: DEFAULT_DECODE_BUDGET,
            attempts: DEFAULT_ATTEMPTS.to_vec(),
            locator: true,
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

    /// The given whole-frame attempts, in order, with the given budget, and
    /// no locator stage (see [`DecodeOptions::with_locator`]).
    pub fn with_attempts(budget: Duration, attempts: Vec<Attempt>) -> Self {
        DecodeOptions {
            budget,
            attempts,
            locator: false,
        }
    }

    /// These options with the locator stage switched on or off.
    pub fn with_locator(mut self, on: bool) -> Self {
        self.locator = on;
        self
    }
}

/// Default per-frame budget of [`decode_luma`]: the flat-frame check, the
/// first locator scan and the first sampled grid always run (about 1–2 ms
/// for 640×480 here, so a clean frame reads however loaded the machine
/// is); every later step starts only if its predicted cost fits in what is
/// left.
pub const DEFAULT_DECODE_BUDGET: Duration = Duration::from_millis(20);

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

/// Decodes a sampled `dim`×`dim` bit grid (`true` = dark, row-major) with
/// rqrr's decoder (format check, Reed–Solomon correction), panics
/// contained.
fn decode_bit_grid(dim: usize, bits: &[bool]) -> Option<Vec<u8>> {
    if bits.len() != dim * dim {
        return None;
    }
    let result = crate::quiet::in_decoder(|| {
        catch_unwind(AssertUnwindSafe(|| {
            let grid = rqrr::Grid::new(rqrr::SimpleGrid::from_func(dim, |x, y| bits[y * dim + x]));
            let mut buf = Vec::new();
            grid.decode_to(&mut buf).ok().map(|_| buf)
        }))
    });
    result.ok().flatten()
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
    rqrr_with_threshold(&cache[idx].1, attempt.threshold)
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

/// Largest frame the locator scans at full resolution, pixels; larger
/// frames are scanned at half resolution (repeatedly) so the scan stays
/// a few milliseconds.
pub const MAX_LOCATOR_SCAN_PIXELS: usize = 1_400_000;

/// Views rqrr reads for each located symbol, in order: pixels per module
/// of the upright crop, and its binarization.
const LOCATED_VIEWS: &[(f32, Threshold)] = &[
    (4.0, Threshold::Rqrr),
    (
        4.0,
        Threshold::LocalMean {
            window_px: 29,
            bias: 2,
        },
    ),
];

/// Sharpening strengths tried on each sampled grid (0 = none), see
/// `sample::grid_bits`.
const SAMPLE_SHARPEN: [f32; 3] = [0.0, 1.0, 2.0];

/// Frames whose longer side is under this many pixels are located at
/// twice their size.
const SMALL_FRAME_SIDE_PX: usize = 160;

/// Window of the second locator pass's local-mean binarization, pixels:
/// keeps the thin light ring of small blurred finders (2–3 px modules)
/// that the block threshold of the first pass closes.
const SECOND_PASS_WINDOW_PX: usize = 15;

/// Largest estimated symbol size (modules per side, version 21) given an
/// upright crop for rqrr.
const MAX_LOCATED_VIEW_DIM: usize = 101;

/// Quiet margin around a located symbol's upright crop, modules.
const LOCATED_QUIET_MODULES: f32 = 3.0;

/// Prior for rqrr's cost per pixel before any rqrr run on this frame was
/// timed: this many times the first locator scan's cost per scanned pixel
/// (measured here: plain rqrr ≈ 10× on 640×480 frames); the floor of every
/// rqrr prediction.
const RQRR_COST_OVER_SCAN: f64 = 12.0;

/// Predicted costs are multiplied by this before checking them against
/// what is left of the budget (run-to-run jitter on a shared machine).
const PREDICTION_MARGIN: f64 = 1.25;

/// Per-frame time accounting: predicts an rqrr run's cost from the worst
/// cost per pixel seen so far on this frame (the prior from the locator
/// scan, then every timed rqrr run) and refuses runs that would not fit.
struct Clock {
    start: Instant,
    budget: Duration,
    /// Worst rqrr cost per pixel so far, seconds: the locator's prior and
    /// the observed runs. Keeping the maximum makes the prior a floor (crops
    /// can cost less per pixel than a whole noisy frame).
    per_px: Option<f64>,
}

impl Clock {
    /// True when an rqrr run over `pixels` is predicted to end within the
    /// budget. Without any prior or observation (no locator scan, nothing
    /// run yet: the first whole-frame attempt), it fits whatever the budget.
    fn fits(&self, pixels: usize) -> bool {
        let Some(per_px) = self.per_px else {
            return true;
        };
        self.fits_cost(Duration::from_secs_f64(per_px * pixels as f64))
    }

    /// True when a step predicted to take `cost` ends within the budget.
    fn fits_cost(&self, cost: Duration) -> bool {
        self.start.elapsed() + cost.mul_f64(PREDICTION_MARGIN) <= self.budget
    }

    fn record(&mut self, pixels: usize, took: Duration) {
        self.raise_per_px(took.as_secs_f64() / pixels.max(1) as f64);
    }

    /// Raises the cost per pixel to `per_px` if that is higher.
    fn raise_per_px(&mut self, per_px: f64) {
        self.per_px = Some(self.per_px.map_or(per_px, |p| p.max(per_px)));
    }
}

/// Runs rqrr on a greyscale view with the given binarization.
fn rqrr_with_threshold(grey: &Gray, threshold: Threshold) -> Vec<Vec<u8>> {
    match threshold {
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

/// One locator scan: finder candidates and the triples not in `seen` (each
/// with its estimated dimension, see [`locate::triples`]).
fn scan_pass<B: locate::Binary>(
    bits: &B,
    seen: &[locate::Triple],
) -> (Vec<locate::Finder>, Vec<locate::Triple>) {
    let finders = locate::find_finders(bits);
    let triples = locate::triples(bits, &finders)
        .into_iter()
        .filter(|t| !seen.iter().any(|s| s.same_place(t)))
        .collect();
    (finders, triples)
}

/// The locator stage: finder patterns on a block-thresholded (and, for
/// big frames, downscaled) frame, then for each likely symbol direct grid
/// sampling and, failing that, rqrr on an upright crop. A second pass
/// binarizes with a small local-mean window (small blurred modules, glare,
/// low contrast) and tries the triples the first did not. Returns the
/// payloads read (all symbols when `all`, else the first) and the number of
/// confirmed finder candidates (seen on two rows or more) over both passes.
fn locate_and_read(frame: &Gray, clock: &mut Clock, all: bool) -> (Vec<Vec<u8>>, usize) {
    let mut scan = None::<Gray>;
    let mut factor = 1.0f32;
    while scan.as_ref().unwrap_or(frame).px.len() > MAX_LOCATOR_SCAN_PIXELS {
        scan = Some(enhance::downscale2(scan.as_ref().unwrap_or(frame)));
        factor *= 2.0;
    }
    let view = scan.as_ref().unwrap_or(frame);
    let mut out = Vec::new();
    let mut seen: Vec<locate::Triple> = Vec::new();
    let mut finders_seen = 0;
    let mut scan_cost = None::<Duration>;
    // Best-ranked triple of each pass, for rqrr on an upright crop.
    let mut crops: Vec<locate::Triple> = Vec::new();
    // Worst observed cost of one sampled grid and its decodes.
    let mut sample_cost = Duration::ZERO;
    let mut sampled_any = false;
    for second in [false, true] {
        if let Some(cost) = scan_cost {
            if !clock.fits_cost(cost) {
                tracing::debug!("second locator pass skipped: would overrun the decode budget");
                break;
            }
        }
        let pass_start = Instant::now();
        let v = view;
        let (finders, triples) = if second {
            let px = enhance::binarize_local_mean(v, SECOND_PASS_WINDOW_PX, 0);
            scan_pass(
                &locate::BoolBits {
                    w: v.w,
                    h: v.h,
                    px: &px,
                },
                &seen,
            )
        } else {
            let thr = enhance::hybrid_thresholds(v);
            scan_pass(&locate::BlockBits { grey: v, thr: &thr }, &seen)
        };
        finders_seen += finders.iter().filter(|f| f.hits >= 2).count();
        let took = pass_start.elapsed();
        if scan_cost.is_none() {
            scan_cost = Some(took);
            let scanned_px = v.px.len() / locate::row_step(v.w, v.h);
            clock.raise_per_px(took.as_secs_f64() / scanned_px.max(1) as f64 * RQRR_COST_OVER_SCAN);
        }
        tracing::trace!(
            second,
            finders = finders.len(),
            triples = triples.len(),
            scan_us = took.as_micros() as u64,
            "locator scan"
        );
        'triples: for (rank, t) in triples.iter().enumerate() {
            seen.push(*t);
            let t = t.scaled(factor);
            // Direct sampling first: a few thousand samples per try.
            let dim_est = t.dim;
            // The first try sampled through the finders' affine map (no
            // alignment pattern found, or version 1 has none).
            let mut first_was_affine = false;
            for (dim, align) in [
                (dim_est, true),
                (dim_est + 4, true),
                (dim_est.saturating_sub(4), true),
                (dim_est, false),
            ] {
                // The affine fallback would then read the very same greys
                // as the first try, whose decodes already failed: skipping
                // it changes no result, only saves the time.
                if !align && first_was_affine {
                    continue;
                }
                // The first sampled grid always runs (like the first scan):
                // a clean frame is read however loaded the machine is.
                if sampled_any && !clock.fits_cost(sample_cost) {
                    tracing::debug!("grid sampling stopped: would overrun the decode budget");
                    return (out, finders_seen);
                }
                sampled_any = true;
                let sample_start = Instant::now();
                let Some(sampled) = sample::sample_grid(frame, &t, dim, align) else {
                    continue;
                };
                if dim == dim_est && align {
                    first_was_affine = sampled.affine;
                }
                let Some(grey) = sampled.grey else {
                    continue;
                };
                for sharpen in SAMPLE_SHARPEN {
                    let grid = sample::grid_bits(&grey, dim, sharpen);
                    if !sample::timing_plausible(&grid, dim) {
                        continue;
                    }
                    let payload = decode_bit_grid(dim, &grid);
                    sample_cost = sample_cost.max(sample_start.elapsed());
                    if let Some(payload) = payload {
                        tracing::trace!(dim, align, second, sharpen, "decoded a sampled grid");
                        out.push(payload);
                        if !all {
                            return (out, finders_seen);
                        }
                        continue 'triples;
                    }
                }
            }
            // rqrr on a crop costs about as much as a few hundred sampled
            // grids: kept for the best-ranked triple of each pass, after
            // every pass's sampling.
            if rank == 0 && dim_est <= MAX_LOCATED_VIEW_DIM {
                crops.push(t);
            }
        }
        if !out.is_empty() {
            return (out, finders_seen);
        }
    }
    for t in &crops {
        let mut rect: Option<(f32, Gray)> = None;
        for &(module_px, threshold) in LOCATED_VIEWS {
            let side = ((t.dim as f32 + 2.0 * LOCATED_QUIET_MODULES) * module_px).round() as usize;
            if !clock.fits(side * side) {
                tracing::debug!("located view skipped: would overrun the decode budget");
                continue;
            }
            if rect.as_ref().is_none_or(|(m, _)| *m != module_px) {
                rect = locate::rectify(frame, t, module_px, LOCATED_QUIET_MODULES, MAX_VIEW_PIXELS)
                    .map(|g| (module_px, g));
            }
            let Some((_, grey)) = rect.as_ref() else {
                continue;
            };
            let run = Instant::now();
            let payloads = rqrr_with_threshold(grey, threshold);
            clock.record(grey.px.len(), run.elapsed());
            if !payloads.is_empty() {
                tracing::trace!(module_px, ?threshold, "decoded a located symbol");
                out.extend(payloads);
                if !all {
                    return (out, finders_seen);
                }
                break;
            }
        }
    }
    (out, finders_seen)
}

/// Decodes QR payloads in `img` with the given options: the locator stage,
/// then the whole-frame attempts, all under the budget. Returns the first
/// payload found, or with `all` every payload of the locator stage and of
/// the first whole-frame attempt that reads any, without duplicates.
fn decode_inner(img: &GrayImage, opts: &DecodeOptions, all: bool) -> Result<Vec<Vec<u8>>, QrError> {
    check_frame_size(img.width(), img.height())?;
    let mut clock = Clock {
        start: Instant::now(),
        budget: opts.budget,
        per_px: None,
    };
    let frame = Gray {
        w: img.width() as usize,
        h: img.height() as usize,
        px: img.as_raw().clone(),
    };
    let pixels = frame.px.len();
    if is_flat(&frame) {
        // Nothing but a few grey levels: no code can be in view.
        tracing::trace!("flat frame; nothing to decode");
        return Ok(Vec::new());
    }
    // Payloads found so far. `all` (decode_all) also runs the whole-frame
    // attempts after a successful locator stage, up to the first that
    // reads anything, and merges: the locator may miss one of several
    // codes.
    let mut found = Vec::new();
    if opts.locator {
        // Small frames (thumbnails, distant codes with 1–2 px modules) are
        // located and sampled at twice their size.
        let upscaled;
        let located = if frame.w.max(frame.h) < SMALL_FRAME_SIDE_PX && frame.w.min(frame.h) >= 8 {
            upscaled = enhance::resize_bilinear(&frame, frame.w * 2, frame.h * 2);
            &upscaled
        } else {
            &frame
        };
        // The locator is this crate's own code, but a reader must not crash
        // on a frame whatever happens: a panic here counts as "not read by
        // the locator" and the whole-frame attempts still run.
        let located_result = crate::quiet::in_decoder(|| {
            catch_unwind(AssertUnwindSafe(|| {
                locate_and_read(located, &mut clock, all)
            }))
        });
        let (payloads, confirmed_finders) = located_result.unwrap_or_else(|_| {
            tracing::debug!("locator panicked on a frame; whole-frame attempts follow");
            (Vec::new(), 1)
        });
        found = payloads;
        if !found.is_empty() && !all {
            return Ok(found);
        }
        if confirmed_finders == 0 {
            // Not one finder pattern in view under either binarization:
            // rqrr, which needs three, would only burn the budget.
            tracing::trace!("no finder candidates; whole-frame attempts skipped");
            return Ok(found);
        }
    }
    let mut cache = Vec::new();
    for (i, attempt) in opts.attempts.iter().enumerate() {
        let area = (f64::from(attempt.scale_percent).powi(2) / 10_000.0).max(0.25);
        let view_px = (pixels as f64 * area) as usize;
        // Without the locator nothing has been timed before the first
        // attempt, so it always fits: it runs whatever the budget.
        if !clock.fits(view_px) {
            tracing::debug!(
                attempt = i,
                budget_ms = opts.budget.as_millis() as u64,
                "attempt skipped: would overrun the decode budget"
            );
            continue;
        }
        let t = Instant::now();
        let mut payloads = run_attempt(&frame, attempt, &mut cache);
        // Keep the worst observed cost per pixel: noisy binarized views
        // cost more than the plain one.
        clock.record(view_px, t.elapsed());
        if !payloads.is_empty() {
            tracing::trace!(attempt = i, ?attempt, "decoded");
            found.append(&mut payloads);
            break;
        }
    }
    dedup(&mut found);
    Ok(found)
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
    decode_inner(img, opts, false)?
        .into_iter()
        .next()
        .ok_or(QrError::NoCodeFound)
}

/// Decodes every QR payload found in `img` (empty when none, or when the frame
/// is too large).
pub fn decode_all(img: &GrayImage) -> Vec<Vec<u8>> {
    decode_all_with(img, &DecodeOptions::default())
}

/// Like [`decode_all`] with explicit options: the payloads of the locator
/// stage and of the first whole-frame attempt that reads any code, merged.
pub fn decode_all_with(img: &GrayImage, opts: &DecodeOptions) -> Vec<Vec<u8>> {
    decode_inner(img, opts, true).unwrap_or_default()
}

/// Loads an image file with [`load_frame`] and decodes its first payload.
pub fn decode_file(path: impl AsRef<Path>) -> Result<Vec<u8>, QrError> {
    decode_luma(&load_frame(path)?)
}
