//! QR benchmarks: rendering a ride code, and decoding camera frames
//! (crates/fare-qr/README.md has the numbers).
//!
//! criterion groups (`qr/...`):
//! - render: `encode_symbol`, `render_png`, `render_terminal`;
//! - clean frames holding a 199-byte ride code (v10-M) at 640×480 (4 and
//!   5 px modules) and 1280×720 (5 px): the default pipeline, its first
//!   stage alone (the finder locator and grid sampling) and plain rqrr;
//! - a phone-like frame (rotated 33°, 2.9 px modules, blurred, noisy);
//! - no-code frames (blank; textured, where every step runs until the
//!   default 20 ms budget stops them: the worst case with retries) at
//!   640×480 and 1280×720;
//! - the public photo corpus (112 images × 4 rotations) with the default
//!   options, one iteration = all 448 frames.
//!
//! Then a latency report (hdrhistogram p50/p99/max per frame) for the same
//! cases, printed with the load average. `QR_BENCH_SAMPLES` sets the
//! report's samples per synthetic case (default 1000).
//!
//! Run: `cargo bench -p fare-benches --bench qr` (filter `report` for the
//! report alone).

// criterion_group! generates an undocumented `pub fn benches`.
#![allow(missing_docs)]

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion};
use fare_credential::code::RIDE_CODE_V1_LEN;
use fare_qr::{Attempt, DecodeOptions};
use hdrhistogram::Histogram;
use image::{GrayImage, Luma};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

/// A 199-byte binary payload standing in for a signed ride code (the QR layer
/// does not look inside; random bytes are the worst case for compression-free
/// byte mode anyway).
fn ride_code_bytes() -> Vec<u8> {
    let mut rng = ChaCha20Rng::seed_from_u64(0x0b5e_55ed);
    let mut payload = vec![0u8; RIDE_CODE_V1_LEN];
    rng.fill_bytes(&mut payload);
    payload
}

/// A light frame with mild seeded sensor noise.
fn blank_frame(w: u32, h: u32, rng: &mut ChaCha20Rng) -> GrayImage {
    let mut frame = GrayImage::new(w, h);
    for p in frame.pixels_mut() {
        p.0[0] = 190 + (rng.next_u32() % 21) as u8;
    }
    frame
}

/// The ride code at `module_px` per module, centred in a `w`×`h` frame.
fn frame_with_code(payload: &[u8], w: u32, h: u32, module_px: u32) -> GrayImage {
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let mut frame = blank_frame(w, h, &mut rng);
    let code = fare_qr::render_luma(payload, module_px, 4).expect("ride code renders");
    let (x0, y0) = ((w - code.width()) / 2, (h - code.height()) / 2);
    for (x, y, p) in code.enumerate_pixels() {
        frame.put_pixel(x0 + x, y0 + y, Luma([if p.0[0] == 0 { 20 } else { 235 }]));
    }
    frame
}

/// A phone-like 640×480 frame: the code rotated by 33° with 2.9 px
/// modules (not a whole number), a 3×3 blur, lower contrast and noise.
fn phone_like_frame(payload: &[u8]) -> GrayImage {
    let code = fare_qr::render_luma(payload, 1, 4).expect("ride code renders");
    let side = code.width() as f64;
    let module = 2.9;
    let (s, c) = 33f64.to_radians().sin_cos();
    let mut rng = ChaCha20Rng::seed_from_u64(9);
    let mut sharp = vec![0f64; 640 * 480];
    for y in 0..480 {
        for x in 0..640 {
            let (dx, dy) = (x as f64 + 0.5 - 320.0, y as f64 + 0.5 - 240.0);
            // Inverse rotation into code coordinates (modules).
            let u = (dx * c + dy * s) / module + side / 2.0;
            let v = (-dx * s + dy * c) / module + side / 2.0;
            let inside = u >= 0.0 && v >= 0.0 && u < side && v < side;
            sharp[y * 640 + x] = if inside && code.get_pixel(u as u32, v as u32).0[0] == 0 {
                60.0
            } else if inside {
                200.0
            } else {
                90.0
            };
        }
    }
    let mut frame = GrayImage::new(640, 480);
    for y in 0..480usize {
        for x in 0..640usize {
            let mut acc = 0.0;
            for (ox, oy) in (0..9).map(|k| (k % 3, k / 3)) {
                let xx = (x + ox).saturating_sub(1).min(639);
                let yy = (y + oy).saturating_sub(1).min(479);
                acc += sharp[yy * 640 + xx];
            }
            let noise = (rng.next_u32() % 13) as f64 - 6.0;
            frame.put_pixel(x as u32, y as u32, Luma([(acc / 9.0 + noise) as u8]));
        }
    }
    frame
}

/// A frame with texture but no code (stripes and blocks of a bus
/// interior, no finder patterns): every step runs until the budget.
fn textured_frame(w: u32, h: u32) -> GrayImage {
    let mut rng = ChaCha20Rng::seed_from_u64(8);
    let mut frame = blank_frame(w, h, &mut rng);
    for (x, y, p) in frame.enumerate_pixels_mut() {
        let v = ((x / 37 + y / 23) % 3) as u8 * 60 + 20;
        p.0[0] = v.saturating_add(p.0[0] / 4);
    }
    frame
}

/// `<workspace>/../shared/corpus/qr-photos`: every set's PNGs at 0/90/180/270°.
fn corpus_frames() -> Vec<GrayImage> {
    let root = fare_credential::testkit::corpus_path("qr-photos");
    let mut frames = Vec::new();
    for set in ["qrcode-1", "qrcode-2", "qrcode-3", "qrcode-6"] {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(root.join(set))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "png"))
            .collect();
        paths.sort();
        for path in paths {
            let img = fare_qr::load_frame(&path).unwrap();
            frames.push(image::imageops::rotate90(&img));
            frames.push(image::imageops::rotate180(&img));
            frames.push(image::imageops::rotate270(&img));
            frames.push(img);
        }
    }
    frames
}

/// The first stage alone: finder locator and grid sampling, no rqrr
/// fallbacks, unbounded budget.
fn locator_only() -> DecodeOptions {
    DecodeOptions::with_attempts(Duration::from_secs(10), Vec::new()).with_locator(true)
}

/// rqrr alone on the frame as given.
fn plain_rqrr() -> DecodeOptions {
    DecodeOptions::with_attempts(Duration::from_secs(10), vec![Attempt::PLAIN])
}

struct Cases {
    payload: Vec<u8>,
    clean_640_4: GrayImage,
    clean_640_5: GrayImage,
    clean_1280_5: GrayImage,
    phone_like: GrayImage,
    blank_640: GrayImage,
    textured_640: GrayImage,
    textured_1280: GrayImage,
}

/// The synthetic cases, built (and checked) once: the criterion benchmarks
/// and the latency report share them, and each build renders every frame
/// and decodes it with the default options.
static CASES: LazyLock<Cases> = LazyLock::new(cases);

/// The corpus frames, loaded once for the same reason (112 PNGs read and
/// decoded, each kept at 4 rotations).
static CORPUS: LazyLock<Vec<GrayImage>> = LazyLock::new(corpus_frames);

fn cases() -> Cases {
    let payload = ride_code_bytes();
    let mut rng = ChaCha20Rng::seed_from_u64(8);
    let cases = Cases {
        clean_640_4: frame_with_code(&payload, 640, 480, 4),
        clean_640_5: frame_with_code(&payload, 640, 480, 5),
        clean_1280_5: frame_with_code(&payload, 1280, 720, 5),
        phone_like: phone_like_frame(&payload),
        blank_640: blank_frame(640, 480, &mut rng),
        textured_640: textured_frame(640, 480),
        textured_1280: textured_frame(1280, 720),
        payload,
    };
    for frame in [
        &cases.clean_640_4,
        &cases.clean_640_5,
        &cases.clean_1280_5,
        &cases.phone_like,
    ] {
        assert_eq!(fare_qr::decode_luma(frame).unwrap(), cases.payload);
    }
    for frame in [&cases.blank_640, &cases.textured_640, &cases.textured_1280] {
        assert!(fare_qr::decode_luma(frame).is_err());
    }
    cases
}

fn bench_render(c: &mut Criterion) {
    let payload = ride_code_bytes();
    c.bench_function("qr/encode_symbol_199B_v10M", |b| {
        b.iter(|| fare_qr::encode_symbol(black_box(&payload)).unwrap())
    });
    c.bench_function("qr/render_png_199B_4px", |b| {
        b.iter(|| fare_qr::render_png(black_box(&payload), 4).unwrap())
    });
    c.bench_function("qr/render_terminal_199B", |b| {
        b.iter(|| fare_qr::render_terminal(black_box(&payload)).unwrap())
    });
}

fn bench_decode(c: &mut Criterion) {
    let k = &*CASES;
    let default = DecodeOptions::default();
    for (name, frame) in [
        ("640x480_clean_4px", &k.clean_640_4),
        ("640x480_clean_5px", &k.clean_640_5),
        ("1280x720_clean_5px", &k.clean_1280_5),
        ("640x480_phone_like", &k.phone_like),
    ] {
        for (variant, opts) in [
            ("", &default),
            ("_locator_only", &locator_only()),
            ("_plain_rqrr", &plain_rqrr()),
        ] {
            // Plain rqrr misses the phone-like frame: its time to give up
            // is measured then.
            c.bench_function(&format!("qr/decode_{name}{variant}"), |b| {
                b.iter(|| fare_qr::decode_luma_with(black_box(frame), opts).ok())
            });
        }
    }
    for (name, frame) in [
        ("640x480_blank", &k.blank_640),
        ("640x480_textured_no_code", &k.textured_640),
        ("1280x720_textured_no_code", &k.textured_1280),
    ] {
        c.bench_function(&format!("qr/decode_{name}"), |b| {
            b.iter(|| fare_qr::decode_luma_with(black_box(frame), &default).unwrap_err())
        });
    }
    let corpus = &*CORPUS;
    let mut group = c.benchmark_group("qr/corpus");
    group.sample_size(10);
    group.bench_function(format!("decode_all_{}_frames_default", corpus.len()), |b| {
        b.iter(|| {
            corpus
                .iter()
                .filter(|f| fare_qr::decode_luma_with(black_box(f), &default).is_ok())
                .count()
        })
    });
    group.finish();
}

fn percentiles(h: &Histogram<u64>) -> String {
    let ms = |v: u64| v as f64 / 1000.0;
    format!(
        "p50 {:>7.3} ms  p99 {:>7.3} ms  max {:>7.3} ms  (n {})",
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.99)),
        ms(h.max()),
        h.len()
    )
}

fn time_us(frame: &GrayImage, opts: &DecodeOptions) -> u64 {
    let t = Instant::now();
    let _ = black_box(fare_qr::decode_luma_with(black_box(frame), opts));
    t.elapsed().as_micros().max(1) as u64
}

/// Per-frame latency percentiles (hdrhistogram, µs resolution).
fn report() {
    let samples: usize = fare_benches::env_setting("QR_BENCH_SAMPLES", 1000);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("\nqr decode latency report (load average {})", load.trim());
    let k = &*CASES;
    let default = DecodeOptions::default();
    for (name, frame, opts) in [
        (
            "640x480 clean 4 px, default",
            &k.clean_640_4,
            default.clone(),
        ),
        (
            "640x480 clean 4 px, locator only",
            &k.clean_640_4,
            locator_only(),
        ),
        (
            "640x480 clean 4 px, plain rqrr",
            &k.clean_640_4,
            plain_rqrr(),
        ),
        (
            "640x480 clean 5 px, default",
            &k.clean_640_5,
            default.clone(),
        ),
        (
            "1280x720 clean 5 px, default",
            &k.clean_1280_5,
            default.clone(),
        ),
        (
            "640x480 phone-like, default",
            &k.phone_like,
            default.clone(),
        ),
        ("640x480 blank, default", &k.blank_640, default.clone()),
        (
            "640x480 textured no code, default",
            &k.textured_640,
            default.clone(),
        ),
        (
            "1280x720 textured no code, default",
            &k.textured_1280,
            default.clone(),
        ),
    ] {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        for _ in 0..samples.min(50) {
            time_us(frame, &opts); // warm-up
        }
        for _ in 0..samples {
            h.record(time_us(frame, &opts)).unwrap();
        }
        println!("  {name:<38} {}", percentiles(&h));
    }
    let corpus = &*CORPUS;
    for (name, opts) in [
        ("default (20 ms budget)", default.clone()),
        ("locator only", locator_only()),
    ] {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        let mut read = 0;
        for _ in 0..3 {
            read = 0;
            for f in corpus {
                let t = Instant::now();
                read += usize::from(fare_qr::decode_luma_with(f, &opts).is_ok());
                h.record(t.elapsed().as_micros().max(1) as u64).unwrap();
            }
        }
        println!(
            "  corpus {} frames, {name:<22} read {read}/{}  {}",
            corpus.len(),
            corpus.len(),
            percentiles(&h)
        );
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average after: {}", load.trim());
}

criterion_group!(benches, bench_render, bench_decode);

fn main() {
    // `cargo bench -- <filter>`: the criterion groups see the filter; the
    // report runs unfiltered or when the filter is "report".
    let filter = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-') && a.parse::<f64>().is_err());
    if filter.as_deref() != Some("report") {
        benches();
        Criterion::default().configure_from_args().final_summary();
    }
    if filter.is_none() || filter.as_deref() == Some("report") {
        report();
    }
}
