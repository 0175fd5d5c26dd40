//! Direct grid sampling of a located symbol (zxing's approach): module size
//! measured along the finder axes, dimension from the finder spacing, the
//! bottom-right alignment pattern found by template matching, a projective
//! map from grid to frame through four points, one grey sample per module
//! centre, a local threshold, and rqrr's decoder (format check and
//! Reed–Solomon correction) on the resulting bit grid.
//!
//! Sampling module centres directly tolerates what defeats rqrr's own
//! detector (blur that joins a finder's stone to its ring, rotated modules
//! that are not a whole number of pixels) and costs a few thousand samples
//! instead of a pass over the frame.

use crate::enhance::Gray;
use crate::locate::{dist, Binary, Triple};

/// A 3×3 projective map (row-major, `m[2][2]` normalised to 1).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Homography([[f64; 3]; 3]);

impl Homography {
    /// The map taking each `src[i]` to `dst[i]`; `None` when degenerate.
    pub(crate) fn from_points(src: &[(f64, f64); 4], dst: &[(f64, f64); 4]) -> Option<Self> {
        Self::fit(src, dst)
    }

    /// Least-squares map taking `src[i]` near `dst[i]` (at least 4 pairs,
    /// coordinates normalised for conditioning); `None` when degenerate
    /// (fewer than 4 points, or too many collinear).
    pub(crate) fn fit(src: &[(f64, f64)], dst: &[(f64, f64)]) -> Option<Self> {
        let n = src.len();
        if n < 4 || dst.len() != n {
            return None;
        }
        let norm = |pts: &[(f64, f64)]| {
            let (cx, cy) = pts.iter().fold((0.0, 0.0), |a, p| (a.0 + p.0, a.1 + p.1));
            let (cx, cy) = (cx / n as f64, cy / n as f64);
            let d = pts
                .iter()
                .map(|p| ((p.0 - cx).powi(2) + (p.1 - cy).powi(2)).sqrt())
                .sum::<f64>()
                / n as f64;
            (cx, cy, if d > 1e-9 { 1.0 / d } else { 1.0 })
        };
        let (scx, scy, ss) = norm(src);
        let (dcx, dcy, ds) = norm(dst);
        // Normal equations AᵀA h = Aᵀb of the DLT with h22 = 1.
        let mut m = [[0f64; 9]; 8];
        for (p, q) in src.iter().zip(dst) {
            let (x, y) = ((p.0 - scx) * ss, (p.1 - scy) * ss);
            let (u, v) = ((q.0 - dcx) * ds, (q.1 - dcy) * ds);
            for (row, rhs) in [
                ([x, y, 1.0, 0.0, 0.0, 0.0, -u * x, -u * y], u),
                ([0.0, 0.0, 0.0, x, y, 1.0, -v * x, -v * y], v),
            ] {
                for i in 0..8 {
                    for j in 0..8 {
                        m[i][j] += row[i] * row[j];
                    }
                    m[i][8] += row[i] * rhs;
                }
            }
        }
        for col in 0..8 {
            let pivot = (col..8).max_by(|&p, &q| m[p][col].abs().total_cmp(&m[q][col].abs()))?;
            if m[pivot][col].abs() < 1e-9 {
                return None;
            }
            m.swap(col, pivot);
            let pivot_row = m[col];
            for (row, r) in m.iter_mut().enumerate() {
                if row != col {
                    let f = r[col] / pivot_row[col];
                    if f != 0.0 {
                        for (v, p) in r[col..].iter_mut().zip(&pivot_row[col..]) {
                            *v -= f * p;
                        }
                    }
                }
            }
        }
        let h: Vec<f64> = (0..8).map(|i| m[i][8] / m[i][i]).collect();
        // H = Tdst⁻¹ · H' · Tsrc.
        let hp = [[h[0], h[1], h[2]], [h[3], h[4], h[5]], [h[6], h[7], 1.0]];
        let tsrc = [[ss, 0.0, -scx * ss], [0.0, ss, -scy * ss], [0.0, 0.0, 1.0]];
        let tdst_inv = [[1.0 / ds, 0.0, dcx], [0.0, 1.0 / ds, dcy], [0.0, 0.0, 1.0]];
        let mul = |a: &[[f64; 3]; 3], b: &[[f64; 3]; 3]| {
            let mut r = [[0f64; 3]; 3];
            for i in 0..3 {
                for j in 0..3 {
                    r[i][j] = (0..3).map(|k| a[i][k] * b[k][j]).sum();
                }
            }
            r
        };
        let mut r = mul(&tdst_inv, &mul(&hp, &tsrc));
        let z = r[2][2];
        if z.abs() < 1e-12 || r.iter().flatten().any(|v| !v.is_finite()) {
            return None;
        }
        for row in r.iter_mut() {
            for v in row.iter_mut() {
                *v /= z;
            }
        }
        Some(Homography(r))
    }

    #[inline]
    pub(crate) fn map(&self, x: f64, y: f64) -> (f64, f64) {
        let m = &self.0;
        let w = m[2][0] * x + m[2][1] * y + m[2][2];
        (
            (m[0][0] * x + m[0][1] * y + m[0][2]) / w,
            (m[1][0] * x + m[1][1] * y + m[1][2]) / w,
        )
    }
}

/// Bilinear grey sample at a continuous point (pixel centres at +0.5);
/// `None` outside the frame.
#[inline]
fn sample(frame: &Gray, x: f64, y: f64) -> Option<f32> {
    let (x, y) = (x - 0.5, y - 0.5);
    if !(x >= 0.0 && y >= 0.0) {
        return None;
    }
    let (x0, y0) = (x as usize, y as usize);
    if x0 + 1 >= frame.w || y0 + 1 >= frame.h {
        return None;
    }
    let (tx, ty) = ((x - x0 as f64) as f32, (y - y0 as f64) as f32);
    let i = y0 * frame.w + x0;
    let p = |k: usize| f32::from(frame.px[k]);
    let top = p(i) + (p(i + 1) - p(i)) * tx;
    let bottom = p(i + frame.w) + (p(i + frame.w + 1) - p(i + frame.w)) * tx;
    Some(top + (bottom - top) * ty)
}

/// Walks from `from` towards `to` through the binarized frame and returns
/// the distance at which the dark–light–dark runs of a finder (from its
/// centre: stone, light ring, dark ring) end, or `None`.
fn finder_half_width<B: Binary>(
    bits: &B,
    from: (f32, f32),
    to: (f32, f32),
    max_len: f32,
) -> Option<f32> {
    let (dx, dy) = (to.0 - from.0, to.1 - from.1);
    let len = (dx * dx + dy * dy).sqrt();
    if len < 1.0 {
        return None;
    }
    let (sx, sy) = (dx / len * 0.5, dy / len * 0.5);
    let mut state = 0u8; // 0 stone (dark), 1 light ring, 2 dark ring
    let mut steps = 0u32;
    let max_steps = (max_len * 2.0) as u32;
    while steps < max_steps {
        steps += 1;
        let (x, y) = (from.0 + sx * steps as f32, from.1 + sy * steps as f32);
        if x < 0.0 || y < 0.0 || x as usize >= bits.width() || y as usize >= bits.height() {
            return None;
        }
        let dark = bits.dark(x as usize, y as usize);
        state = match (state, dark) {
            (0, false) => 1,
            (1, true) => 2,
            (2, false) => return Some(steps as f32 * 0.5),
            (s, _) => s,
        };
    }
    None
}

/// Module size along the axis from finder `a` to finder `b`: both finders'
/// half widths, both ways, over 7 modules. Falls back to `fallback`.
fn module_along<B: Binary>(bits: &B, a: (f32, f32), b: (f32, f32), fallback: f32) -> f32 {
    let max = fallback * 8.0;
    let away = |p: (f32, f32), q: (f32, f32)| (2.0 * p.0 - q.0, 2.0 * p.1 - q.1);
    let mut sum = 0.0;
    let mut n = 0;
    for (p, q) in [(a, b), (b, a)] {
        if let (Some(f), Some(g)) = (
            finder_half_width(bits, p, q, max),
            finder_half_width(bits, p, away(p, q), max),
        ) {
            sum += (f + g) / 7.0;
            n += 1;
        }
    }
    if n == 0 {
        fallback
    } else {
        sum / n as f32
    }
}

/// Dimension (17 + 4·version) estimated zxing-style from the finder spacing
/// and the per-axis module sizes, snapped to the nearest valid size:
/// finders centred at `tl`, `tr`, `bl` in `bits`, `module` (pixels) the
/// fallback module size where a finder's runs cannot be measured.
pub(crate) fn estimate_dimension<B: Binary>(
    bits: &B,
    tl: (f32, f32),
    tr: (f32, f32),
    bl: (f32, f32),
    module: f32,
) -> usize {
    let m1 = module_along(bits, tl, tr, module);
    let m2 = module_along(bits, tl, bl, module);
    let modules = (dist(tl, tr) / m1 + dist(tl, bl) / m2) / 2.0 + 7.0;
    let version = ((modules - 17.0) / 4.0).round().clamp(1.0, 40.0);
    17 + 4 * version as usize
}

/// Score of an alignment pattern centred at `c` with module vectors `u`,
/// `v`: light ring at one module minus the mean of the dark centre and dark
/// ring at two modules (higher = better).
fn alignment_score(frame: &Gray, c: (f64, f64), u: (f64, f64), v: (f64, f64)) -> Option<f32> {
    let at = |a: f64, b: f64| sample(frame, c.0 + a * u.0 + b * v.0, c.1 + a * u.1 + b * v.1);
    let mut dark = at(0.0, 0.0)?;
    let mut light = 0.0;
    for (a, b) in [
        (-1.0, -1.0),
        (0.0, -1.0),
        (1.0, -1.0),
        (1.0, 0.0),
        (1.0, 1.0),
        (0.0, 1.0),
        (-1.0, 1.0),
        (-1.0, 0.0),
    ] {
        light += at(a, b)?;
        dark += at(2.0 * a, 2.0 * b)?;
    }
    Some(light / 8.0 - dark / 9.0)
}

/// Searches an alignment pattern around its estimated centre (within
/// ±`radius` modules); returns its centre when its contrast is at least a
/// quarter of `contrast`.
fn find_alignment(
    frame: &Gray,
    estimate: (f64, f64),
    u: (f64, f64),
    v: (f64, f64),
    radius: f64,
    contrast: f32,
) -> Option<(f64, f64)> {
    let module = ((u.0 * u.0 + u.1 * u.1).sqrt() + (v.0 * v.0 + v.1 * v.1).sqrt()) / 2.0;
    if !module.is_finite() || module < 0.5 {
        return None;
    }
    let r = radius * module;
    // Coarse grid of at most 41×41 positions (a third of a module apart or
    // closer), then a half-pixel refinement around the best one.
    let coarse = (module / 3.0).max(0.5).max(2.0 * r / 40.0);
    let scored = |c: (f64, f64)| {
        alignment_score(frame, c, u, v).map(|s| {
            // Prefer positions near the estimate on ties.
            let dd = ((c.0 - estimate.0).powi(2) + (c.1 - estimate.1).powi(2)).sqrt();
            s - (dd / module) as f32 * 0.5
        })
    };
    let mut best: Option<(f32, (f64, f64))> = None;
    let consider = |c: (f64, f64), best: &mut Option<(f32, (f64, f64))>| {
        if let Some(s) = scored(c) {
            if best.is_none_or(|(b, _)| s > b) {
                *best = Some((s, c));
            }
        }
    };
    let n = (2.0 * r / coarse).ceil() as i64;
    for j in 0..=n {
        for i in 0..=n {
            let c = (
                estimate.0 - r + i as f64 * coarse,
                estimate.1 - r + j as f64 * coarse,
            );
            consider(c, &mut best);
        }
    }
    let (_, centre) = best?;
    let k = (coarse / 0.5).ceil() as i64;
    for j in -k..=k {
        for i in -k..=k {
            consider(
                (centre.0 + i as f64 * 0.5, centre.1 + j as f64 * 0.5),
                &mut best,
            );
        }
    }
    let (s, c) = best?;
    (s >= contrast * 0.25).then_some(c)
}

/// Alignment pattern centre positions (module indices) of a version
/// (ISO/IEC 18004 Annex E; empty for version 1).
pub(crate) fn alignment_positions(version: usize) -> Vec<usize> {
    if !(2..=40).contains(&version) {
        return Vec::new();
    }
    let num = version / 7 + 2;
    let last = 4 * version + 10;
    let step = if version == 32 {
        26
    } else {
        (version * 8 + num * 3 + 5) / (num * 4 - 4) * 2
    };
    let mut out = vec![6];
    for i in (0..num - 1).rev() {
        out.push(last - i * step);
    }
    out
}

/// Where `h` puts grid point `p`, and its local module vectors there (the
/// frame step of one module along the grid's x and y). The origin comes
/// with the vectors because the alignment search needs both and they share
/// its mapping.
fn module_vectors(h: &Homography, p: (f64, f64)) -> ((f64, f64), (f64, f64), (f64, f64)) {
    let o = h.map(p.0, p.1);
    let a = h.map(p.0 + 1.0, p.1);
    let b = h.map(p.0, p.1 + 1.0);
    (o, (a.0 - o.0, a.1 - o.1), (b.0 - o.0, b.1 - o.1))
}

/// The grid-to-frame map of the symbol of `t`: through the three finder
/// centres and, for versions 2+ when `align`, the bottom-right alignment
/// pattern, found in two steps (a middle alignment pattern first, when the
/// version has one, which corrects most of the perspective; then the
/// bottom-right one near where the corrected map puts it). Without
/// alignment patterns the map is affine. The flag is true when the map
/// returned is that affine map (no alignment pattern refined it).
fn grid_map(frame: &Gray, t: &Triple, dim: usize, align: bool) -> Option<(Homography, bool)> {
    let f = |p: (f32, f32)| (f64::from(p.0), f64::from(p.1));
    let (tl, tr, bl) = (f(t.tl), f(t.tr), f(t.bl));
    let far = dim as f64 - 3.5;
    let mut src = vec![(3.5, 3.5), (far, 3.5), (3.5, far)];
    let mut dst = vec![tl, tr, bl];
    // Affine: the fourth corner of the parallelogram of centres.
    let mut h = Homography::from_points(
        &[src[0], src[1], src[2], (far, far)],
        &[tl, tr, bl, (tr.0 + bl.0 - tl.0, tr.1 + bl.1 - tl.1)],
    )?;
    let positions = alignment_positions((dim.saturating_sub(17)) / 4);
    if !align || positions.len() < 2 {
        return Some((h, true));
    }
    // Finder contrast: centre vs light ring (2 modules out).
    let (_, u, _) = module_vectors(&h, (3.5, 3.5));
    let contrast = sample(frame, tl.0 + 2.0 * u.0, tl.1 + 2.0 * u.1)? - sample(frame, tl.0, tl.1)?;
    // Alignment patterns nearest the finders first (their affine estimate
    // is best), each found one refining the map that predicts the next.
    let mut todo: Vec<(usize, usize)> = Vec::new();
    for &py in &positions {
        for &px in &positions {
            // Three corners hold finder patterns, not alignment patterns.
            let finder = [(6, 6), (6, dim - 7), (dim - 7, 6)].contains(&(px, py));
            if !finder {
                todo.push((px, py));
            }
        }
    }
    todo.sort_by_key(|&(x, y)| x.max(y) * 1000 + x.min(y));
    todo.truncate(MAX_ALIGNMENT_SEARCHES);
    let mut affine = true;
    for &(px, py) in &todo {
        let p = (px as f64 + 0.5, py as f64 + 0.5);
        let (o, u, v) = module_vectors(&h, p);
        // Near the prediction first (a clean, flat symbol), then wider
        // while no alignment pattern has corrected the map yet.
        let radius = if src.len() < 4 { 5.0 } else { 3.0 };
        let near = find_alignment(frame, o, u, v, 1.5, contrast * 2.0);
        if let Some(c) = near.or_else(|| find_alignment(frame, o, u, v, radius, contrast)) {
            src.push(p);
            dst.push(c);
            if let Some(refit) = Homography::fit(&src, &dst) {
                h = refit;
                affine = false;
            }
        }
    }
    Some((h, affine))
}

/// Most alignment patterns searched per symbol (bounds the work on large
/// versions; the nearest ones fix the perspective).
const MAX_ALIGNMENT_SEARCHES: usize = 8;

/// Samples the symbol of `t` as a `dim`×`dim` grid of grey levels (one per
/// module centre) through the given frame, or `None` when the geometry is
/// degenerate or the symbol leaves the frame. `align` selects whether
/// alignment patterns are searched (versions 2+) or the affine map of the
/// finders is used. [`grid_bits`] thresholds the result.
pub(crate) fn sample_grid(frame: &Gray, t: &Triple, dim: usize, align: bool) -> Option<Sampled> {
    if !(21..=177).contains(&dim) {
        return None;
    }
    let (hmap, affine) = grid_map(frame, t, dim, align)?;
    let greys = || {
        if !timing_lines_alternate(frame, &hmap, dim)? {
            return None;
        }
        let mut grey = Vec::with_capacity(dim * dim);
        for y in 0..dim {
            for x in 0..dim {
                let (px, py) = hmap.map(x as f64 + 0.5, y as f64 + 0.5);
                grey.push(sample(frame, px, py)?);
            }
        }
        Some(grey)
    };
    Some(Sampled {
        grey: greys(),
        affine,
    })
}

/// What [`sample_grid`] read through a grid map.
pub(crate) struct Sampled {
    /// One grey per module, row by row; `None` when the timing lines do not
    /// alternate or a module centre falls outside the frame.
    pub grey: Option<Vec<f32>>,
    /// The map was the finders' affine one: sampling the same `dim`
    /// without alignment would read exactly the same greys.
    pub affine: bool,
}

/// Thresholds sampled module greys (`true` = dark). `sharpen` > 0 first
/// subtracts that fraction of the difference between the 4-neighbour mean
/// and each module (undoes part of the blur that bleeds neighbours into a
/// small module's centre).
pub(crate) fn grid_bits(grey: &[f32], dim: usize, sharpen: f32) -> Vec<bool> {
    if sharpen <= 0.0 || dim < 3 {
        return threshold_local(grey, dim);
    }
    let mut sharp = grey.to_vec();
    for y in 0..dim {
        for x in 0..dim {
            let g = |xx: usize, yy: usize| grey[yy * dim + xx];
            let c = g(x, y);
            let n = [
                g(x.saturating_sub(1), y),
                g((x + 1).min(dim - 1), y),
                g(x, y.saturating_sub(1)),
                g(x, (y + 1).min(dim - 1)),
            ];
            let mean = n.iter().sum::<f32>() / 4.0;
            sharp[y * dim + x] = c + sharpen * (c - mean);
        }
    }
    threshold_local(&sharp, dim)
}

/// Pre-check before sampling the whole grid: along the two timing lines
/// (row and column 6 between the finders) each module should be darker
/// than the mean of its two neighbours where it is dark and lighter where
/// it is light; true when 70 % or more agree (a comparison with the
/// neighbours, so blur that flattens contrast does not defeat it). `None`
/// when a line leaves the frame.
fn timing_lines_alternate(frame: &Gray, h: &Homography, dim: usize) -> Option<bool> {
    let mut agree = 0;
    let mut total = 0;
    for vertical in [false, true] {
        let at = |i: usize| {
            let (x, y) = if vertical {
                (6.5, i as f64 + 0.5)
            } else {
                (i as f64 + 0.5, 6.5)
            };
            let (px, py) = h.map(x, y);
            sample(frame, px, py)
        };
        let line: Vec<f32> = (7..dim - 7).map(at).collect::<Option<_>>()?;
        for k in 1..line.len() - 1 {
            let i = k + 7;
            let dark = line[k] < (line[k - 1] + line[k + 1]) / 2.0;
            agree += usize::from(dark == (i % 2 == 0));
            total += 1;
        }
    }
    Some(agree * 10 >= total * 7)
}

/// True when the timing patterns (row and column 6 between the finders,
/// alternating dark and light) agree with the grid at 70 % of their
/// modules or more: a cheap test that the geometry and dimension are right
/// before running the decoder.
pub(crate) fn timing_plausible(bits: &[bool], dim: usize) -> bool {
    if dim < 21 || bits.len() != dim * dim {
        return false;
    }
    let mut agree = 0;
    let mut total = 0;
    for i in 8..dim - 8 {
        let want = i % 2 == 0;
        agree += usize::from(bits[6 * dim + i] == want) + usize::from(bits[i * dim + 6] == want);
        total += 2;
    }
    agree * 10 >= total * 7
}

/// Thresholds module samples against the mean of a 9×9-module window
/// (summed-area table): uneven light and glare move the threshold with
/// them.
fn threshold_local(grey: &[f32], dim: usize) -> Vec<bool> {
    let stride = dim + 1;
    let mut sat = vec![0f64; stride * stride];
    for y in 0..dim {
        let mut row = 0f64;
        for x in 0..dim {
            row += f64::from(grey[y * dim + x]);
            sat[(y + 1) * stride + x + 1] = sat[y * stride + x + 1] + row;
        }
    }
    const R: usize = 4;
    let mut out = Vec::with_capacity(dim * dim);
    for y in 0..dim {
        let (y0, y1) = (y.saturating_sub(R), (y + R + 1).min(dim));
        for x in 0..dim {
            let (x0, x1) = (x.saturating_sub(R), (x + R + 1).min(dim));
            let sum = sat[y1 * stride + x1] + sat[y0 * stride + x0]
                - sat[y0 * stride + x1]
                - sat[y1 * stride + x0];
            let mean = sum / ((y1 - y0) * (x1 - x0)) as f64;
            out.push(f64::from(grey[y * dim + x]) < mean);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alignment_positions_match_the_standard_table() {
        assert!(alignment_positions(1).is_empty());
        assert_eq!(alignment_positions(2), vec![6, 18]);
        assert_eq!(alignment_positions(7), vec![6, 22, 38]);
        assert_eq!(alignment_positions(10), vec![6, 28, 50]);
        assert_eq!(alignment_positions(32), vec![6, 34, 60, 86, 112, 138]);
        assert_eq!(alignment_positions(40), vec![6, 30, 58, 86, 114, 142, 170]);
    }

    #[test]
    fn timing_check_needs_alternating_row_and_column_six() {
        let dim = 21;
        let mut bits = vec![false; dim * dim];
        assert!(!timing_plausible(&bits, dim));
        for i in 8..dim - 8 {
            bits[6 * dim + i] = i % 2 == 0;
            bits[i * dim + 6] = i % 2 == 0;
        }
        assert!(timing_plausible(&bits, dim));
        assert!(!timing_plausible(&bits, 25), "wrong size");
    }

    #[test]
    fn homography_maps_its_points() {
        let src = [(0.0, 0.0), (10.0, 0.0), (0.0, 10.0), (10.0, 10.0)];
        let dst = [(5.0, 7.0), (25.0, 9.0), (3.0, 30.0), (27.0, 33.0)];
        let h = Homography::from_points(&src, &dst).unwrap();
        for (s, d) in src.iter().zip(&dst) {
            let (x, y) = h.map(s.0, s.1);
            assert!((x - d.0).abs() < 1e-6 && (y - d.1).abs() < 1e-6);
        }
        let collapsed = [(0.0, 0.0); 4];
        assert!(Homography::from_points(&collapsed, &dst).is_none());
    }

    #[test]
    fn local_threshold_splits_under_a_gradient() {
        let dim = 21;
        let grey: Vec<f32> = (0..dim * dim)
            .map(|i| {
                let (x, y) = (i % dim, i / dim);
                let bg = 100.0 + 6.0 * x as f32;
                if (x + y) % 2 == 0 {
                    bg - 60.0
                } else {
                    bg
                }
            })
            .collect();
        let bits = threshold_local(&grey, dim);
        for (i, b) in bits.iter().enumerate() {
            assert_eq!(*b, (i % dim + i / dim) % 2 == 0, "module {i}");
        }
    }
}
