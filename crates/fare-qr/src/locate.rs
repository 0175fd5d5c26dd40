//! A cheap finder-pattern locator (zxing-style run-length scan) and the
//! rectified crop it lets rqrr work on.
//!
//! rqrr's cost grows with the pixels it scans and the regions it floods, and
//! its finder check fails on rotated codes whose modules are not a whole
//! number of pixels. The locator finds candidate finder patterns in O(pixels)
//! with simple operations (a 1:1:3:1:1 run-length test along rows, confirmed
//! along the column and the row through the candidate's centre), groups them
//! into (top-left, top-right, bottom-left) triples, and [`rectify`] resamples
//! the symbol through the affine map those three centres define: an upright
//! crop with a chosen number of pixels per module, which rqrr reads quickly
//! and reliably. A frame without any finder candidate costs only the scan.

use crate::enhance::Gray;

/// Most finder candidates kept per frame (bounds the grouping work on
/// textured frames).
pub(crate) const MAX_FINDERS: usize = 256;

/// Frames of at least this many pixels have every second row scanned (a
/// finder's stone spans 3 modules, so a symbol with 1.4 px modules or more
/// is still hit on two rows); smaller ones every row.
const ROW_SKIP_MIN_PIXELS: usize = 200_000;

/// Candidates considered when grouping triples (the most-confirmed ones).
const MAX_GROUPING_FINDERS: usize = 16;

/// Most triples returned per frame.
pub(crate) const MAX_TRIPLES: usize = 4;

/// A candidate finder pattern: centre (pixels), module size estimate
/// (pixels) and the number of scan lines that confirmed it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Finder {
    pub x: f32,
    pub y: f32,
    pub module: f32,
    pub hits: u32,
}

/// Three finder centres of one likely symbol.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Triple {
    pub tl: (f32, f32),
    pub tr: (f32, f32),
    pub bl: (f32, f32),
    /// Mean module size of the three, pixels.
    pub module: f32,
    /// Estimated modules per side (17 + 4·version): the finder spacing over
    /// module sizes measured along each axis
    /// ([`crate::sample::estimate_dimension`]), set once by [`triples`]
    /// and used as is by grid sampling and [`rectify`].
    pub dim: usize,
}

impl Triple {
    /// The same triple in a frame `factor` times larger.
    pub(crate) fn scaled(&self, factor: f32) -> Triple {
        let s = |p: (f32, f32)| (p.0 * factor, p.1 * factor);
        Triple {
            tl: s(self.tl),
            tr: s(self.tr),
            bl: s(self.bl),
            module: self.module * factor,
            dim: self.dim,
        }
    }

    /// True when both triples put each finder within two modules of the
    /// other's.
    pub(crate) fn same_place(&self, other: &Triple) -> bool {
        let tol = 2.0 * self.module.max(other.module);
        dist(self.tl, other.tl) <= tol
            && dist(self.tr, other.tr) <= tol
            && dist(self.bl, other.bl) <= tol
    }
}

/// Ratio test of zxing's `foundPatternCross`: runs dark, light, dark, light,
/// dark in proportion 1:1:3:1:1, each within half a module.
fn is_finder_ratio(c: &[u32; 5]) -> bool {
    let total: u32 = c.iter().sum();
    if total < 7 || c.contains(&0) {
        return false;
    }
    let m = total as f32 / 7.0;
    let v = m * 0.7;
    (m - c[0] as f32).abs() < v
        && (m - c[1] as f32).abs() < v
        && (3.0 * m - c[2] as f32).abs() < 1.5 * m
        && (m - c[3] as f32).abs() < v
        && (m - c[4] as f32).abs() < v
}

/// A binarized frame: which pixels are dark. Implemented by a plain bit
/// buffer and by a grey frame with per-block thresholds (no bit buffer is
/// built: pixels are compared on demand).
pub(crate) trait Binary {
    /// Width, pixels.
    fn width(&self) -> usize;
    /// Height, pixels.
    fn height(&self) -> usize;
    /// True when pixel (x, y) is dark; both must be in range.
    fn dark(&self, x: usize, y: usize) -> bool;
    /// Writes row `y` into `out` (cleared first).
    fn row(&self, y: usize, out: &mut Vec<bool>);
}

/// A bit buffer (`true` = dark), row-major.
pub(crate) struct BoolBits<'a> {
    pub w: usize,
    pub h: usize,
    pub px: &'a [bool],
}

impl Binary for BoolBits<'_> {
    fn width(&self) -> usize {
        self.w
    }
    fn height(&self) -> usize {
        self.h
    }
    #[inline]
    fn dark(&self, x: usize, y: usize) -> bool {
        self.px[y * self.w + x]
    }
    fn row(&self, y: usize, out: &mut Vec<bool>) {
        out.clear();
        out.extend_from_slice(&self.px[y * self.w..(y + 1) * self.w]);
    }
}

/// A grey frame thresholded per 8×8 block (see
/// [`crate::enhance::BlockThresholds`]): dark = at or below the block's
/// threshold.
pub(crate) struct BlockBits<'a> {
    pub grey: &'a Gray,
    pub thr: &'a crate::enhance::BlockThresholds,
}

impl Binary for BlockBits<'_> {
    fn width(&self) -> usize {
        self.grey.w
    }
    fn height(&self) -> usize {
        self.grey.h
    }
    #[inline]
    fn dark(&self, x: usize, y: usize) -> bool {
        self.grey.px[y * self.grey.w + x] <= self.thr.at(x, y)
    }
    fn row(&self, y: usize, out: &mut Vec<bool>) {
        let w = self.grey.w;
        out.clear();
        out.resize(w, false);
        self.thr
            .binarize_row(y, &self.grey.px[y * w..(y + 1) * w], out);
    }
}

/// Scans through (x, y) along a direction (`vertical` or horizontal), the
/// outer runs limited to `max_outer`. Returns the centre coordinate along
/// the scan and the run total, or `None` when the 1:1:3:1:1 pattern is not
/// there (or leaves the frame).
fn cross_check<B: Binary>(
    bits: &B,
    x: usize,
    y: usize,
    vertical: bool,
    max_outer: u32,
    orig_total: u32,
) -> Option<(f32, u32)> {
    let (len, pos) = if vertical {
        (bits.height(), y)
    } else {
        (bits.width(), x)
    };
    let at = |i: usize| {
        if vertical {
            bits.dark(x, i)
        } else {
            bits.dark(i, y)
        }
    };
    if !at(pos) {
        return None;
    }
    let mut c = [0u32; 5];
    // Backwards from the centre: stone, light ring, dark ring.
    let mut i = pos as isize;
    while i >= 0 && at(i as usize) {
        c[2] += 1;
        i -= 1;
    }
    if i < 0 {
        return None;
    }
    while i >= 0 && !at(i as usize) && c[1] <= max_outer {
        c[1] += 1;
        i -= 1;
    }
    if i < 0 || c[1] > max_outer {
        return None;
    }
    while i >= 0 && at(i as usize) && c[0] <= max_outer {
        c[0] += 1;
        i -= 1;
    }
    if c[0] > max_outer {
        return None;
    }
    // Forwards.
    let mut j = pos + 1;
    while j < len && at(j) {
        c[2] += 1;
        j += 1;
    }
    if j == len {
        return None;
    }
    while j < len && !at(j) && c[3] < max_outer {
        c[3] += 1;
        j += 1;
    }
    if j == len || c[3] >= max_outer {
        return None;
    }
    while j < len && at(j) && c[4] < max_outer {
        c[4] += 1;
        j += 1;
    }
    if c[4] >= max_outer {
        return None;
    }
    let total: u32 = c.iter().sum();
    if 5 * total.abs_diff(orig_total) >= 2 * orig_total || !is_finder_ratio(&c) {
        return None;
    }
    let centre = j as f32 - c[4] as f32 - c[3] as f32 - c[2] as f32 / 2.0;
    Some((centre, total))
}

/// Rows between scanned rows for a `w`×`h` frame: 2 from
/// [`ROW_SKIP_MIN_PIXELS`] up, else 1.
pub(crate) fn row_step(w: usize, h: usize) -> usize {
    if w.saturating_mul(h) >= ROW_SKIP_MIN_PIXELS {
        2
    } else {
        1
    }
}

/// Finds candidate finder patterns in a binarized frame. At most
/// [`MAX_FINDERS`] are kept; every row is scanned, or every second one on
/// frames of [`ROW_SKIP_MIN_PIXELS`] or more.
pub(crate) fn find_finders<B: Binary>(bits: &B) -> Vec<Finder> {
    let (w, h) = (bits.width(), bits.height());
    let mut found: Vec<Finder> = Vec::new();
    if w < 7 || h < 7 {
        return found;
    }
    let mut row = Vec::with_capacity(w);
    for y in (0..h).step_by(row_step(w, h)) {
        bits.row(y, &mut row);
        let mut c = [0u32; 5];
        let mut cur = 0usize;
        for (x, &dark) in row.iter().enumerate() {
            if dark {
                if cur & 1 == 1 {
                    cur += 1;
                }
                c[cur] += 1;
            } else if cur & 1 == 0 {
                if cur == 4 {
                    if is_finder_ratio(&c) && consider(bits, &c, x, y, &mut found) {
                        c = [0; 5];
                        cur = 0;
                    } else {
                        c = [c[2], c[3], c[4], 1, 0];
                        cur = 3;
                    }
                } else {
                    cur += 1;
                    c[cur] += 1;
                }
            } else {
                c[cur] += 1;
            }
        }
        if cur == 4 && is_finder_ratio(&c) {
            consider(bits, &c, w, y, &mut found);
        }
    }
    found
}

/// Confirms a row hit at (`end_x` = first pixel after the pattern, `y`)
/// across the column and the row through its centre; merges it into a
/// nearby candidate or records a new one. True when confirmed.
fn consider<B: Binary>(
    bits: &B,
    c: &[u32; 5],
    end_x: usize,
    y: usize,
    found: &mut Vec<Finder>,
) -> bool {
    let total: u32 = c.iter().sum();
    let cx = end_x as f32 - c[4] as f32 - c[3] as f32 - c[2] as f32 / 2.0;
    let Some((cy, vtotal)) = cross_check(bits, cx as usize, y, true, c[2], total) else {
        return false;
    };
    let Some((cx, htotal)) = cross_check(bits, cx as usize, cy as usize, false, c[2], total) else {
        return false;
    };
    let module = (vtotal + htotal) as f32 / 14.0;
    for f in found.iter_mut() {
        if (f.x - cx).abs() <= module
            && (f.y - cy).abs() <= module
            && (f.module - module).abs() <= f.module.max(1.0)
        {
            let n = f.hits as f32;
            f.x = (f.x * n + cx) / (n + 1.0);
            f.y = (f.y * n + cy) / (n + 1.0);
            f.module = (f.module * n + module) / (n + 1.0);
            f.hits += 1;
            return true;
        }
    }
    if found.len() < MAX_FINDERS {
        found.push(Finder {
            x: cx,
            y: cy,
            module,
            hits: 1,
        });
    }
    true
}

/// Euclidean distance between two points, pixels.
pub(crate) fn dist(a: (f32, f32), b: (f32, f32)) -> f32 {
    ((a.0 - b.0).powi(2) + (a.1 - b.1).powi(2)).sqrt()
}

/// Groups candidates into likely symbols, best first (at most
/// [`MAX_TRIPLES`]): similar module sizes, a near-right angle at the
/// top-left one, near-equal arms of at least 9 (estimated) modules. Orientation comes
/// from the cross product (mirrored symbols are not supported). Each kept
/// triple's dimension is measured in `bits`, the binarized frame the
/// finders were found in.
pub(crate) fn triples<B: Binary>(bits: &B, finders: &[Finder]) -> Vec<Triple> {
    // A finder's stone spans 3 modules, so a real one is confirmed on at
    // least two rows; single hits are noise.
    let mut f: Vec<Finder> = finders.iter().copied().filter(|f| f.hits >= 2).collect();
    f.sort_by_key(|f| std::cmp::Reverse(f.hits));
    f.truncate(MAX_GROUPING_FINDERS);
    let mut scored: Vec<Scored> = Vec::new();
    for i in 0..f.len() {
        for j in i + 1..f.len() {
            for k in j + 1..f.len() {
                let (a, b, c) = (f[i], f[j], f[k]);
                let mmax = a.module.max(b.module).max(c.module);
                let mmin = a.module.min(b.module).min(c.module);
                if mmax > 1.6 * mmin {
                    continue;
                }
                let pa = (a.x, a.y);
                let pb = (b.x, b.y);
                let pc = (c.x, c.y);
                // The corner opposite the longest side is the top-left.
                let (dab, dbc, dca) = (dist(pa, pb), dist(pb, pc), dist(pc, pa));
                let (tl, p1, p2, hyp, arm1, arm2) = if dbc >= dab && dbc >= dca {
                    (pa, pb, pc, dbc, dab, dca)
                } else if dca >= dab && dca >= dbc {
                    (pb, pa, pc, dca, dab, dbc)
                } else {
                    (pc, pa, pb, dab, dca, dbc)
                };
                let module = (a.module + b.module + c.module) / 3.0;
                let (short, long) = (arm1.min(arm2), arm1.max(arm2));
                // Centres of a version-1 symbol are 14 modules apart; the
                // row-run module estimate is up to √2 too large on a
                // rotated symbol.
                if short < 9.0 * module || long > 1.6 * short {
                    continue;
                }
                let pyth = hyp * hyp / (arm1 * arm1 + arm2 * arm2);
                if !(0.7..=1.3).contains(&pyth) {
                    continue;
                }
                // Finder spacing beyond version 40 with the row-run module:
                // not one symbol. (The dimension kept is measured later,
                // with module sizes along each axis.)
                let modules_between = (arm1 + arm2) / 2.0 / module;
                let version = ((modules_between + 7.0 - 17.0) / 4.0).round();
                if version > 40.0 {
                    continue;
                }
                let cross = (p1.0 - tl.0) * (p2.1 - tl.1) - (p1.1 - tl.1) * (p2.0 - tl.0);
                let (tr, bl) = if cross > 0.0 { (p1, p2) } else { (p2, p1) };
                let score = (long / short - 1.0) + (pyth - 1.0).abs() + (mmax / mmin - 1.0);
                scored.push(Scored {
                    score,
                    tl,
                    tr,
                    bl,
                    module,
                });
            }
        }
    }
    scored.sort_by(|a, b| a.score.total_cmp(&b.score));
    scored
        .into_iter()
        .take(MAX_TRIPLES)
        .map(|c| Triple {
            tl: c.tl,
            tr: c.tr,
            bl: c.bl,
            module: c.module,
            dim: crate::sample::estimate_dimension(bits, c.tl, c.tr, c.bl, c.module),
        })
        .collect()
}

/// A grouping of [`triples`] before ranking: its score (lower = better)
/// and geometry. The dimension is measured only for the ones kept.
struct Scored {
    score: f32,
    tl: (f32, f32),
    tr: (f32, f32),
    bl: (f32, f32),
    module: f32,
}

/// Resamples the symbol of `t` (`t.dim` modules per side) upright
/// (bilinear, through the affine map of its three finder centres) with
/// `module_px` pixels per module and a `quiet` module margin on each side.
/// Points outside the frame take the nearest edge pixel. `None` when the
/// view would exceed `max_pixels`.
pub(crate) fn rectify(
    frame: &Gray,
    t: &Triple,
    module_px: f32,
    quiet: f32,
    max_pixels: usize,
) -> Option<Gray> {
    let dim = t.dim;
    if frame.w == 0 || frame.h == 0 || dim < 8 {
        return None;
    }
    let side_modules = dim as f32 + 2.0 * quiet;
    let side = (side_modules * module_px).round() as usize;
    if side == 0 || side.checked_mul(side)? > max_pixels {
        return None;
    }
    let span = (dim - 7) as f32;
    // Per output pixel: the grid advances 1/module_px modules.
    let ux = ((t.tr.0 - t.tl.0) / span, (t.tr.1 - t.tl.1) / span);
    let vy = ((t.bl.0 - t.tl.0) / span, (t.bl.1 - t.tl.1) / span);
    let step = 1.0 / module_px;
    let max_x = (frame.w - 1) as f32;
    let max_y = (frame.h - 1) as f32;
    let mut px = Vec::with_capacity(side * side);
    for v in 0..side {
        let gy = (v as f32 + 0.5) * step - quiet - 3.5;
        let row_x = t.tl.0 + gy * vy.0;
        let row_y = t.tl.1 + gy * vy.1;
        for u in 0..side {
            let gx = (u as f32 + 0.5) * step - quiet - 3.5;
            // Pixel centres are at integer + 0.5.
            let x = (row_x + gx * ux.0 - 0.5).clamp(0.0, max_x);
            let y = (row_y + gx * ux.1 - 0.5).clamp(0.0, max_y);
            let (x0, y0) = (x as usize, y as usize);
            let (x1, y1) = ((x0 + 1).min(frame.w - 1), (y0 + 1).min(frame.h - 1));
            let (tx, ty) = (x - x0 as f32, y - y0 as f32);
            let p = |xx: usize, yy: usize| f32::from(frame.px[yy * frame.w + xx]);
            let top = p(x0, y0) + (p(x1, y0) - p(x0, y0)) * tx;
            let bottom = p(x0, y1) + (p(x1, y1) - p(x0, y1)) * tx;
            px.push((top + (bottom - top) * ty + 0.5) as u8);
        }
    }
    Some(Gray {
        w: side,
        h: side,
        px,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_test_accepts_finder_runs_only() {
        assert!(is_finder_ratio(&[3, 3, 9, 3, 3]));
        assert!(is_finder_ratio(&[2, 3, 7, 2, 3]));
        assert!(!is_finder_ratio(&[3, 3, 3, 3, 3]));
        assert!(!is_finder_ratio(&[0, 3, 9, 3, 3]));
        assert!(!is_finder_ratio(&[1, 1, 1, 1, 1]));
    }

    /// A synthetic 7×7-module finder at `module` px per module, its
    /// top-left corner at (ox, oy).
    fn draw_finder(bits: &mut [bool], w: usize, ox: usize, oy: usize, module: usize) {
        for my in 0..7 {
            for mx in 0..7 {
                let ring = mx == 0 || my == 0 || mx == 6 || my == 6;
                let stone = (2..5).contains(&mx) && (2..5).contains(&my);
                if ring || stone {
                    for y in 0..module {
                        for x in 0..module {
                            bits[(oy + my * module + y) * w + ox + mx * module + x] = true;
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn finds_three_finders_and_orients_them() {
        let (w, h, m) = (200, 160, 4);
        let mut bits = vec![false; w * h];
        draw_finder(&mut bits, w, 20, 20, m);
        draw_finder(&mut bits, w, 120, 20, m);
        draw_finder(&mut bits, w, 20, 120, m);
        let frame = BoolBits { w, h, px: &bits };
        let f = find_finders(&frame);
        assert_eq!(f.len(), 3, "{f:?}");
        for x in &f {
            assert!((x.module - 4.0).abs() < 0.5, "{x:?}");
        }
        let t = triples(&frame, &f);
        assert!(!t.is_empty());
        let t = t[0];
        let near = |p: (f32, f32), q: (f32, f32)| dist(p, q) < 1.5;
        assert!(near(t.tl, (34.0, 34.0)), "{t:?}");
        assert!(near(t.tr, (134.0, 34.0)), "{t:?}");
        assert!(near(t.bl, (34.0, 134.0)), "{t:?}");
        // 100 px between centres at 4 px/module: 25 modules + 7 = 32 → v4 (33).
        assert_eq!(t.dim, 33);
    }

    #[test]
    fn empty_and_tiny_frames_have_no_finders() {
        let none = |w, h, px: &[bool]| find_finders(&BoolBits { w, h, px }).is_empty();
        assert!(none(0, 0, &[]));
        assert!(none(5, 5, &[true; 25]));
        assert!(none(64, 64, &[false; 64 * 64]));
        let empty = BoolBits {
            w: 0,
            h: 0,
            px: &[],
        };
        assert!(triples(&empty, &[]).is_empty());
    }
}
