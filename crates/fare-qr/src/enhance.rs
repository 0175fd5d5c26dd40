//! Image passes that turn a camera frame into views rqrr reads more easily:
//! resampling (scale pyramid), smoothing, contrast stretch and local
//! (adaptive) binarization. All work on plain `u8` buffers, row-major.

/// A greyscale view: width, height, row-major pixels.
#[derive(Debug, Clone)]
pub(crate) struct Gray {
    pub w: usize,
    pub h: usize,
    pub px: Vec<u8>,
}

impl Gray {
    #[inline]
    fn at(&self, x: usize, y: usize) -> u8 {
        self.px[y * self.w + x]
    }
}

/// Resizes with bilinear interpolation (pixel centres aligned). Used to
/// upscale small codes: rqrr's finder checks work on whole-pixel run lengths,
/// so a 2.5 px module is read better as 5 px.
pub(crate) fn resize_bilinear(src: &Gray, w: usize, h: usize) -> Gray {
    let mut px = Vec::with_capacity(w * h);
    if src.w == 0 || src.h == 0 || w == 0 || h == 0 {
        return Gray {
            w,
            h,
            px: vec![255; w * h],
        };
    }
    let sx = src.w as f32 / w as f32;
    let sy = src.h as f32 / h as f32;
    let max_x = (src.w - 1) as f32;
    let max_y = (src.h - 1) as f32;
    // Precompute the horizontal taps once per column.
    let cols: Vec<(usize, usize, f32)> = (0..w)
        .map(|x| {
            let fx = ((x as f32 + 0.5) * sx - 0.5).clamp(0.0, max_x);
            let x0 = fx.floor() as usize;
            let x1 = (x0 + 1).min(src.w - 1);
            (x0, x1, fx - x0 as f32)
        })
        .collect();
    for y in 0..h {
        let fy = ((y as f32 + 0.5) * sy - 0.5).clamp(0.0, max_y);
        let y0 = fy.floor() as usize;
        let y1 = (y0 + 1).min(src.h - 1);
        let ty = fy - y0 as f32;
        let r0 = &src.px[y0 * src.w..(y0 + 1) * src.w];
        let r1 = &src.px[y1 * src.w..(y1 + 1) * src.w];
        for &(x0, x1, tx) in &cols {
            let top = f32::from(r0[x0]) * (1.0 - tx) + f32::from(r0[x1]) * tx;
            let bottom = f32::from(r1[x0]) * (1.0 - tx) + f32::from(r1[x1]) * tx;
            px.push((top * (1.0 - ty) + bottom * ty + 0.5) as u8);
        }
    }
    Gray { w, h, px }
}

/// Halves both sides by averaging 2×2 blocks (cheap low-pass + downscale for
/// large or noisy frames).
pub(crate) fn downscale2(src: &Gray) -> Gray {
    let (w, h) = (src.w / 2, src.h / 2);
    let mut px = Vec::with_capacity(w * h);
    for y in 0..h {
        for x in 0..w {
            let s = u16::from(src.at(2 * x, 2 * y))
                + u16::from(src.at(2 * x + 1, 2 * y))
                + u16::from(src.at(2 * x, 2 * y + 1))
                + u16::from(src.at(2 * x + 1, 2 * y + 1));
            px.push(((s + 2) / 4) as u8);
        }
    }
    Gray { w, h, px }
}

/// 3×3 box blur (edges clamped): removes sensor noise and JPEG speckle that
/// break the finder's run-length pattern.
pub(crate) fn blur3(src: &Gray) -> Gray {
    let (w, h) = (src.w, src.h);
    if w < 3 || h < 3 {
        return src.clone();
    }
    // Horizontal pass into u16 sums, then vertical.
    let mut hs = vec![0u16; w * h];
    for y in 0..h {
        let row = &src.px[y * w..(y + 1) * w];
        for x in 0..w {
            let l = row[x.saturating_sub(1)];
            let r = row[(x + 1).min(w - 1)];
            hs[y * w + x] = u16::from(l) + u16::from(row[x]) + u16::from(r);
        }
    }
    let mut px = vec![0u8; w * h];
    for y in 0..h {
        let up = y.saturating_sub(1) * w;
        let mid = y * w;
        let down = (y + 1).min(h - 1) * w;
        for x in 0..w {
            let s = hs[up + x] + hs[mid + x] + hs[down + x];
            px[mid + x] = ((s + 4) / 9) as u8;
        }
    }
    Gray { w, h, px }
}

/// Stretches the 1st..99th percentile range to 0..255 (washed-out or dim
/// frames: low-contrast screens, glare).
pub(crate) fn stretch_contrast(src: &Gray) -> Gray {
    let mut hist = [0usize; 256];
    for &p in &src.px {
        hist[usize::from(p)] += 1;
    }
    let n = src.px.len();
    let cut = n / 100;
    let (mut lo, mut acc) = (0usize, 0usize);
    for (v, &c) in hist.iter().enumerate() {
        acc += c;
        if acc > cut {
            lo = v;
            break;
        }
    }
    let (mut hi, mut acc) = (255usize, 0usize);
    for (v, &c) in hist.iter().enumerate().rev() {
        acc += c;
        if acc > cut {
            hi = v;
            break;
        }
    }
    if hi <= lo + 8 {
        return src.clone();
    }
    let span = (hi - lo) as u32;
    let lut: Vec<u8> = (0..256usize)
        .map(|v| {
            let v = v.clamp(lo, hi) - lo;
            ((v as u32 * 255 + span / 2) / span) as u8
        })
        .collect();
    Gray {
        w: src.w,
        h: src.h,
        px: src.px.iter().map(|&p| lut[usize::from(p)]).collect(),
    }
}

/// Adaptive threshold against the mean of a `window`×`window` neighbourhood
/// (integral image, O(1) per pixel): dark = pixel below the local mean
/// minus `bias`. Handles uneven light and glare gradients that rqrr's
/// row-wise running average does not.
pub(crate) fn binarize_local_mean(src: &Gray, window: usize, bias: u8) -> Vec<bool> {
    let (w, h) = (src.w, src.h);
    let stride = w + 1;
    let mut integral = vec![0u32; stride * (h + 1)];
    for y in 0..h {
        let mut row_sum = 0u32;
        for x in 0..w {
            row_sum += u32::from(src.px[y * w + x]);
            integral[(y + 1) * stride + x + 1] = integral[y * stride + x + 1] + row_sum;
        }
    }
    let r = (window / 2).max(1);
    let mut out = Vec::with_capacity(w * h);
    for y in 0..h {
        let y0 = y.saturating_sub(r);
        let y1 = (y + r + 1).min(h);
        for x in 0..w {
            let x0 = x.saturating_sub(r);
            let x1 = (x + r + 1).min(w);
            let sum = integral[y1 * stride + x1] + integral[y0 * stride + x0]
                - integral[y0 * stride + x1]
                - integral[y1 * stride + x0];
            let count = ((y1 - y0) * (x1 - x0)) as u32;
            let p = u32::from(src.px[y * w + x]) + u32::from(bias);
            out.push(p * count < sum);
        }
    }
    out
}

/// Block-based hybrid threshold in the style of zxing's HybridBinarizer:
/// 8×8 blocks, each with a threshold from its own mean (or, for flat blocks,
/// from darker neighbours), averaged over 5×5 blocks. Robust to noise and
/// uneven light, and cheap.
pub(crate) fn hybrid_thresholds(src: &Gray) -> BlockThresholds {
    const B: usize = 8;
    const MIN_RANGE: u32 = 24;
    let (w, h) = (src.w, src.h);
    if w == 0 || h == 0 {
        return BlockThresholds {
            bw: 0,
            thr: Vec::new(),
        };
    }
    let bw = w.div_ceil(B);
    let bh = h.div_ceil(B);
    // Per block: sum, count, min, max, gathered row by row over 8-pixel
    // chunks (no per-pixel division or bounds checks).
    let mut sum = vec![0u32; bw * bh];
    let mut cnt = vec![0u32; bw * bh];
    let mut mn = vec![255u8; bw * bh];
    let mut mx = vec![0u8; bw * bh];
    for (y, row) in src.px.chunks_exact(w).enumerate() {
        let base = (y / B) * bw;
        for (bx, chunk) in row.chunks(B).enumerate() {
            let i = base + bx;
            let (mut s, mut lo, mut hi) = (0u32, mn[i], mx[i]);
            for &p in chunk {
                s += u32::from(p);
                lo = lo.min(p);
                hi = hi.max(p);
            }
            sum[i] += s;
            cnt[i] += chunk.len() as u32;
            mn[i] = lo;
            mx[i] = hi;
        }
    }
    let mut avg = vec![0u32; bw * bh];
    for by in 0..bh {
        for bx in 0..bw {
            let i = by * bw + bx;
            let (lo, hi) = (u32::from(mn[i]), u32::from(mx[i]));
            let mut a = sum[i] / cnt[i].max(1);
            if hi - lo <= MIN_RANGE {
                // Flat block: assume background (light) unless darker
                // neighbours say we are inside a dark area.
                a = lo / 2;
                if by > 0 && bx > 0 {
                    let nb = (avg[i - bw] + 2 * avg[i - 1] + avg[i - bw - 1]) / 4;
                    if lo < nb {
                        a = nb;
                    }
                }
            }
            avg[i] = a;
        }
    }
    // Threshold per block: mean of the 5×5 block neighbourhood.
    let mut thr = vec![0u8; bw * bh];
    for by in 0..bh {
        let (y0, y1) = (by.saturating_sub(2), (by + 3).min(bh));
        for bx in 0..bw {
            let (x0, x1) = (bx.saturating_sub(2), (bx + 3).min(bw));
            let mut s = 0u32;
            for ny in y0..y1 {
                s += avg[ny * bw + x0..ny * bw + x1].iter().sum::<u32>();
            }
            let n = ((y1 - y0) * (x1 - x0)) as u32;
            thr[by * bw + bx] = (s / n).min(255) as u8;
        }
    }
    BlockThresholds { bw, thr }
}

/// Per-block thresholds of [`hybrid_thresholds`] (8×8 blocks, row-major).
pub(crate) struct BlockThresholds {
    bw: usize,
    thr: Vec<u8>,
}

impl BlockThresholds {
    /// Threshold of the block holding pixel (x, y).
    #[inline]
    pub(crate) fn at(&self, x: usize, y: usize) -> u8 {
        self.thr[(y / 8) * self.bw + x / 8]
    }

    /// Thresholds of the blocks along pixel row `y`.
    #[inline]
    fn row(&self, y: usize) -> &[u8] {
        &self.thr[(y / 8) * self.bw..(y / 8 + 1) * self.bw]
    }

    /// Binarizes pixel row `y` (`pixels`, the frame's whole row) into `out`
    /// (same length): `true` = dark, at or below its block's threshold.
    /// Shared by [`binarize_hybrid`] and the locator's on-demand rows, so
    /// both read the same bits. Walks 8-pixel chunks beside their block's
    /// threshold: no per-pixel division or bounds check.
    #[inline]
    pub(crate) fn binarize_row(&self, y: usize, pixels: &[u8], out: &mut [bool]) {
        for ((o, p), &t) in out.chunks_mut(8).zip(pixels.chunks(8)).zip(self.row(y)) {
            for (o, &p) in o.iter_mut().zip(p) {
                *o = p <= t;
            }
        }
    }
}

/// [`hybrid_thresholds`] applied: `true` = dark (at or below the block's
/// threshold).
pub(crate) fn binarize_hybrid(src: &Gray) -> Vec<bool> {
    let thr = hybrid_thresholds(src);
    let mut out = Vec::with_capacity(src.px.len());
    if src.w == 0 {
        return out;
    }
    out.resize(src.px.len(), false);
    for (y, (orow, row)) in out
        .chunks_exact_mut(src.w)
        .zip(src.px.chunks_exact(src.w))
        .enumerate()
    {
        thr.binarize_row(y, row, orow);
    }
    out
}

/// Global Otsu threshold (dark = below): a clean fallback for frames with
/// one dominant light level and one dark level.
pub(crate) fn binarize_otsu(src: &Gray) -> Vec<bool> {
    let mut hist = [0u64; 256];
    for &p in &src.px {
        hist[usize::from(p)] += 1;
    }
    let total: u64 = hist.iter().sum();
    let sum_all: u64 = hist.iter().enumerate().map(|(v, &c)| v as u64 * c).sum();
    let (mut w_b, mut sum_b, mut best, mut best_t) = (0u64, 0u64, 0f64, 127usize);
    for (t, &c) in hist.iter().enumerate() {
        w_b += c;
        if w_b == 0 {
            continue;
        }
        let w_f = total - w_b;
        if w_f == 0 {
            break;
        }
        sum_b += t as u64 * c;
        let m_b = sum_b as f64 / w_b as f64;
        let m_f = (sum_all - sum_b) as f64 / w_f as f64;
        let between = w_b as f64 * w_f as f64 * (m_b - m_f) * (m_b - m_f);
        if between > best {
            best = between;
            best_t = t;
        }
    }
    src.px.iter().map(|&p| usize::from(p) <= best_t).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gray(w: usize, h: usize, f: impl Fn(usize, usize) -> u8) -> Gray {
        let mut px = Vec::with_capacity(w * h);
        for y in 0..h {
            for x in 0..w {
                px.push(f(x, y));
            }
        }
        Gray { w, h, px }
    }

    #[test]
    fn resize_keeps_flat_images_flat_and_sizes_right() {
        let g = gray(7, 5, |_, _| 77);
        let r = resize_bilinear(&g, 14, 10);
        assert_eq!((r.w, r.h, r.px.len()), (14, 10, 140));
        assert!(r.px.iter().all(|&p| p == 77));
        // Degenerate sizes do not panic.
        assert_eq!(resize_bilinear(&gray(1, 1, |_, _| 9), 3, 2).px, vec![9; 6]);
        assert_eq!(resize_bilinear(&gray(0, 0, |_, _| 0), 2, 2).px.len(), 4);
    }

    #[test]
    fn downscale_averages_blocks() {
        let g = gray(4, 2, |x, _| if x < 2 { 0 } else { 200 });
        let d = downscale2(&g);
        assert_eq!((d.w, d.h), (2, 1));
        assert_eq!(d.px, vec![0, 200]);
        assert_eq!(downscale2(&gray(1, 1, |_, _| 5)).px.len(), 0);
    }

    #[test]
    fn blur_smooths_a_step_and_keeps_flat_areas() {
        let g = gray(6, 3, |x, _| if x < 3 { 0 } else { 90 });
        let b = blur3(&g);
        assert_eq!(b.px[0], 0);
        assert_eq!(b.px[5], 90);
        assert_eq!(b.px[2], 30, "edge pixel mixes one bright column in three");
    }

    #[test]
    fn thresholds_split_dark_from_light_under_a_gradient() {
        // Dark squares on a background that brightens left to right: a
        // global threshold at the mid-level would eat the dark squares on
        // the bright side, local ones must not.
        let g = gray(120, 40, |x, y| {
            let bg = 120 + (x as u32 * 100 / 120) as u8;
            if (x / 10) % 2 == 0 && (10..30).contains(&y) {
                bg - 90
            } else {
                bg
            }
        });
        let truth: Vec<bool> = (0..40)
            .flat_map(|y| (0..120).map(move |x| (x / 10) % 2 == 0 && (10..30).contains(&y)))
            .collect();
        for (name, bits) in [
            ("local mean", binarize_local_mean(&g, 31, 4)),
            ("hybrid", binarize_hybrid(&g)),
        ] {
            let wrong = bits.iter().zip(&truth).filter(|(a, b)| a != b).count();
            assert!(
                wrong * 20 < truth.len(),
                "{name}: {wrong} of {} wrong",
                truth.len()
            );
        }
    }

    #[test]
    fn otsu_splits_a_bimodal_frame() {
        let g = gray(64, 8, |x, y| {
            if (x + y) % 3 == 0 {
                40 + (x % 7) as u8
            } else {
                180 - (y % 5) as u8
            }
        });
        let bits = binarize_otsu(&g);
        for (i, &b) in bits.iter().enumerate() {
            let (x, y) = (i % 64, i / 64);
            assert_eq!(b, (x + y) % 3 == 0, "pixel {x},{y}");
        }
    }

    #[test]
    fn contrast_stretch_spans_full_range() {
        let g = gray(100, 1, |x, _| 100 + (x as u8 % 50));
        let s = stretch_contrast(&g);
        assert_eq!(*s.px.iter().min().unwrap(), 0);
        assert_eq!(*s.px.iter().max().unwrap(), 255);
        // A flat frame is left alone.
        assert_eq!(stretch_contrast(&gray(4, 4, |_, _| 50)).px, vec![50; 16]);
    }
}
