//! QR benchmarks: rendering a ride code (symbol matrix, PNG) and decoding
//! 640×480 camera-sized frames (clean code, no code).
//!
//! Run: `cargo bench -p fare-benches --bench qr`.

// criterion_group! generates an undocumented `pub fn benches`.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use fare_credential::code::RIDE_CODE_V1_LEN;
use fare_qr::{Attempt, DecodeOptions};
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

/// 640×480 light frame with mild seeded sensor noise.
fn blank_frame(rng: &mut ChaCha20Rng) -> GrayImage {
    let mut frame = GrayImage::new(640, 480);
    for p in frame.pixels_mut() {
        p.0[0] = 190 + (rng.next_u32() % 21) as u8;
    }
    frame
}

/// The ride code at `module_px` per module, centred in a 640×480 frame.
fn frame_with_code(payload: &[u8], module_px: u32) -> GrayImage {
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let mut frame = blank_frame(&mut rng);
    let code = fare_qr::render_luma(payload, module_px, 4).expect("ride code renders");
    let (x0, y0) = ((640 - code.width()) / 2, (480 - code.height()) / 2);
    for (x, y, p) in code.enumerate_pixels() {
        frame.put_pixel(x0 + x, y0 + y, Luma([if p.0[0] == 0 { 20 } else { 235 }]));
    }
    frame
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
    let payload = ride_code_bytes();
    for module_px in [4u32, 5] {
        let frame = frame_with_code(&payload, module_px);
        assert_eq!(fare_qr::decode_luma(&frame).unwrap(), payload);
        c.bench_function(&format!("qr/decode_640x480_clean_{module_px}px"), |b| {
            b.iter(|| fare_qr::decode_luma(black_box(&frame)).unwrap())
        });
        // rqrr alone (the plain attempt), the baseline the attempt list
        // builds on.
        let plain = DecodeOptions::with_attempts(Duration::from_secs(10), vec![Attempt::PLAIN]);
        c.bench_function(
            &format!("qr/decode_640x480_clean_{module_px}px_plain"),
            |b| b.iter(|| fare_qr::decode_luma_with(black_box(&frame), &plain).unwrap()),
        );
    }
    let mut rng = ChaCha20Rng::seed_from_u64(8);
    let empty = blank_frame(&mut rng);
    assert!(fare_qr::decode_luma(&empty).is_err());
    c.bench_function("qr/decode_640x480_empty", |b| {
        b.iter(|| fare_qr::decode_luma(black_box(&empty)).unwrap_err())
    });
    // A frame with texture but no code: every attempt runs until the default
    // budget stops them (the worst case per frame).
    let mut textured = blank_frame(&mut rng);
    for (x, y, p) in textured.enumerate_pixels_mut() {
        // Stripes and blocks of a bus interior, no finder patterns.
        let v = ((x / 37 + y / 23) % 3) as u8 * 60 + 20;
        p.0[0] = v.saturating_add(p.0[0] / 4);
    }
    assert!(fare_qr::decode_luma(&textured).is_err());
    c.bench_function("qr/decode_640x480_textured_no_code", |b| {
        b.iter(|| fare_qr::decode_luma(black_box(&textured)).unwrap_err())
    });
}

criterion_group!(benches, bench_render, bench_decode);
criterion_main!(benches);
