//! Decodes one frame repeatedly and prints the time per decode; for
//! profiling (`valgrind --tool=callgrind`, `perf record`) and quick checks.
//!
//! ```sh
//! cargo run --release -p fare-qr --example decode_frame -- [IMAGE|clean640|clean1280|textured640|textured1280|textured4096] [N] [locator]
//! ```
//!
//! `clean640` (the default) is a 199-byte ride code with 4 px modules
//! centred in a 640×480 frame with mild noise, as in the benchmarks.
//! `locator` decodes with the first stage only.

use std::time::{Duration, Instant};

use fare_qr::{DecodeOptions, GrayImage};

fn synthetic(w: u32, h: u32, code: bool) -> GrayImage {
    // Deterministic noise without an RNG dependency.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut frame = GrayImage::from_fn(w, h, |x, y| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let base = if code {
            190
        } else {
            ((x / 37 + y / 23) % 3) as u8 * 60 + 20
        };
        image::Luma([base.saturating_add((state % 21) as u8)])
    });
    if code {
        let payload: Vec<u8> = (0..199u32).map(|i| (i * 73 + 11) as u8).collect();
        let sym = fare_qr::render_luma(&payload, 4, 4).expect("renders");
        let (x0, y0) = ((w - sym.width()) / 2, (h - sym.height()) / 2);
        for (x, y, p) in sym.enumerate_pixels() {
            let v = if p.0[0] == 0 { 20 } else { 235 };
            frame.put_pixel(x0 + x, y0 + y, image::Luma([v]));
        }
    }
    frame
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let what = args.first().map(String::as_str).unwrap_or("clean640");
    let n: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(100);
    let frame = match what {
        "clean640" => synthetic(640, 480, true),
        "clean1280" => synthetic(1280, 720, true),
        "textured640" => synthetic(640, 480, false),
        "textured1280" => synthetic(1280, 720, false),
        "textured4096" => synthetic(4096, 4096, false),
        path => fare_qr::load_frame(path).expect("readable image"),
    };
    let opts = if args.get(2).map(String::as_str) == Some("locator") {
        DecodeOptions::with_attempts(Duration::from_secs(10), Vec::new()).with_locator(true)
    } else {
        DecodeOptions::default()
    };
    let mut times = Vec::with_capacity(n);
    let mut ok = 0;
    for _ in 0..n {
        let t = Instant::now();
        ok += usize::from(fare_qr::decode_luma_with(&frame, &opts).is_ok());
        times.push(t.elapsed());
    }
    times.sort();
    println!(
        "{what}: read {ok}/{n}; p50 {:?} p99 {:?} max {:?}",
        times[n / 2],
        times[(n * 99 / 100).min(n - 1)],
        times[n - 1]
    );
}
