//! Render → decode round trips on real images, and robustness of the decoder
//! against hostile or degenerate frames.

use fare_credential::code::{MAX_RIDE_CODE_BYTES, RIDE_CODE_V1_LEN};
use fare_qr::{
    decode_all, decode_image_bytes, decode_luma, encode_symbol, render_luma, render_png,
    render_terminal, GrayImage, QrError, MAX_FRAME_PIXELS, MAX_FRAME_SIDE_PX,
};
use image::Luma;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use std::path::PathBuf;

fn random_payload(rng: &mut ChaCha20Rng, len: usize) -> Vec<u8> {
    let mut p = vec![0u8; len];
    rng.fill_bytes(&mut p);
    p
}

fn corpus_dir() -> PathBuf {
    fare_credential::testkit::corpus_path("")
}

#[test]
fn ride_code_uses_version_10_m() {
    let code = encode_symbol(&[0xA5; RIDE_CODE_V1_LEN]).unwrap();
    assert_eq!(code.version(), qrcode::Version::Normal(10));
    assert_eq!(code.error_correction_level(), qrcode::EcLevel::M);
    assert_eq!(code.width(), 57);
    // Small payloads are still forced to version 10 (constant on-screen size).
    assert_eq!(
        encode_symbol(b"x").unwrap().version(),
        qrcode::Version::Normal(10)
    );
    // Larger payloads fall back to the smallest version at level M.
    let big = encode_symbol(&[7u8; 300]).unwrap();
    assert_eq!(big.error_correction_level(), qrcode::EcLevel::M);
    assert_eq!(big.version(), qrcode::Version::Normal(13));
}

#[test]
fn binary_round_trip_at_every_module_size() {
    let mut rng = ChaCha20Rng::seed_from_u64(0x5eed_0001);
    for module_px in [2u32, 3, 4, 6, 8] {
        for _ in 0..3 {
            let payload = random_payload(&mut rng, RIDE_CODE_V1_LEN);
            let img = render_luma(&payload, module_px, 4).unwrap();
            assert_eq!(img.width(), (57 + 8) * module_px);
            assert_eq!(decode_luma(&img).unwrap(), payload, "module_px {module_px}");
        }
    }
}

#[test]
fn binary_edge_payloads_round_trip() {
    // All-zero, all-0xFF, invalid UTF-8 and every byte value survive exactly.
    let all_bytes: Vec<u8> = (0..=255u8).collect();
    let payloads: Vec<Vec<u8>> = vec![
        vec![0u8; RIDE_CODE_V1_LEN],
        vec![0xFF; RIDE_CODE_V1_LEN],
        vec![0xC3, 0x28, 0xA0, 0xA1, 0xF0, 0x28, 0x8C, 0xBC],
        all_bytes[..RIDE_CODE_V1_LEN].to_vec(),
        all_bytes.clone(),
        vec![],
    ];
    for payload in payloads {
        let img = render_luma(&payload, 3, 4).unwrap();
        assert_eq!(decode_luma(&img).unwrap(), payload, "len {}", payload.len());
    }
    // The largest accepted payload renders and reads back.
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let max = random_payload(&mut rng, MAX_RIDE_CODE_BYTES);
    let img = render_luma(&max, 3, 4).unwrap();
    assert_eq!(decode_luma(&img).unwrap(), max);
}

#[test]
fn oversized_payload_refused() {
    let err = render_luma(&vec![1u8; MAX_RIDE_CODE_BYTES + 1], 3, 4).unwrap_err();
    assert_eq!(
        err,
        QrError::PayloadTooLarge {
            len: MAX_RIDE_CODE_BYTES + 1,
            max: MAX_RIDE_CODE_BYTES
        }
    );
    assert_eq!(err.code(), "payload_too_large");
    assert!(render_png(&[0u8; 600], 2).is_err());
    assert!(render_terminal(&[0u8; 600]).is_err());
}

#[test]
fn bad_render_parameters_refused() {
    let e = render_luma(b"x", 0, 4).unwrap_err();
    assert_eq!(e.code(), "invalid_render_parameter");
    assert!(e.to_string().contains("module_px"), "{e}");
    assert!(render_luma(b"x", 65, 4).is_err());
    assert!(render_luma(b"x", 2, 17).is_err());
}

#[test]
fn png_round_trip() {
    let mut rng = ChaCha20Rng::seed_from_u64(0x5eed_0002);
    let payload = random_payload(&mut rng, RIDE_CODE_V1_LEN);
    let png = render_png(&payload, 4).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let img = image::load_from_memory_with_format(&png, image::ImageFormat::Png)
        .unwrap()
        .into_luma8();
    assert_eq!(img.width(), 65 * 4);
    assert_eq!(decode_luma(&img).unwrap(), payload);
    // The same through the bounded loader, and from a file.
    assert_eq!(
        decode_luma(&decode_image_bytes(&png).unwrap()).unwrap(),
        payload
    );
    let dir = std::env::temp_dir().join(format!("fare-qr-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("code.png");
    std::fs::write(&path, &png).unwrap();
    assert_eq!(fare_qr::decode_file(&path).unwrap(), payload);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Parses the terminal rendering back into modules (stripping ANSI escapes)
/// and decodes it: proves the half blocks are placed right.
#[test]
fn terminal_rendering_decodes() {
    let mut rng = ChaCha20Rng::seed_from_u64(0x5eed_0003);
    let payload = random_payload(&mut rng, RIDE_CODE_V1_LEN);
    let text = render_terminal(&payload).unwrap();
    let side: usize = 57 + 8;
    let lines: Vec<&str> = text.split('\n').collect();
    assert_eq!(lines.len(), side.div_ceil(2));
    let mut img = GrayImage::from_pixel(side as u32 * 4, (lines.len() * 2) as u32 * 4, Luma([255]));
    for (row, line) in lines.iter().enumerate() {
        assert!(
            line.starts_with("\x1b[") && line.ends_with("\x1b[0m"),
            "colours set per line"
        );
        let body: String = strip_ansi(line);
        let chars: Vec<char> = body.chars().collect();
        assert_eq!(chars.len(), side, "one column per module");
        for (x, c) in chars.iter().enumerate() {
            let (top, bottom) = match c {
                '█' => (true, true),
                '▀' => (true, false),
                '▄' => (false, true),
                ' ' => (false, false),
                other => panic!("unexpected char {other:?}"),
            };
            for (dy, dark) in [(0, top), (1, bottom)] {
                if dark {
                    for py in 0..4 {
                        for px in 0..4 {
                            img.put_pixel(
                                x as u32 * 4 + px,
                                (row * 2 + dy) as u32 * 4 + py,
                                Luma([0]),
                            );
                        }
                    }
                }
            }
        }
    }
    assert_eq!(decode_luma(&img).unwrap(), payload);
    // A human look at the symbol (visible with --nocapture).
    println!("{}", render_terminal(b"fare-qr terminal check").unwrap());
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c2 in chars.by_ref() {
                if c2 == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn rqrr_panic_images_are_contained() {
    let base = corpus_dir().join("qr-photos/qrcode-6");
    let img7 = fare_qr::load_frame(base.join("7.png")).unwrap();
    // Must return (any result), not unwind.
    let r = decode_luma(&img7);
    assert!(r.is_ok() || r == Err(QrError::NoCodeFound), "{r:?}");
    if let Ok(p) = r {
        assert_eq!(p, b"1234567890");
    }
    let img12 = fare_qr::load_frame(base.join("12.png")).unwrap();
    let rotated = image::imageops::rotate270(&img12);
    let r = decode_luma(&rotated);
    if let Ok(p) = r {
        assert_eq!(p, b"1234567890");
    } else {
        assert_eq!(r, Err(QrError::NoCodeFound));
    }
    let _ = decode_all(&rotated);
}

#[test]
fn random_and_degenerate_frames_never_panic() {
    let mut rng = ChaCha20Rng::seed_from_u64(0x5eed_0004);
    for (w, h) in [
        (0u32, 0u32),
        (0, 10),
        (10, 0),
        (1, 1),
        (2, 3),
        (7, 7),
        (21, 21),
        (64, 48),
        (320, 240),
    ] {
        let mut img = GrayImage::new(w, h);
        for p in img.pixels_mut() {
            p.0[0] = (rng.next_u32() & 0xFF) as u8;
        }
        assert_eq!(decode_luma(&img), Err(QrError::NoCodeFound), "{w}x{h}");
        assert!(decode_all(&img).is_empty());
    }
    // Blocky noise (module-sized blobs look more like finder patterns).
    for _ in 0..20 {
        let mut img = GrayImage::new(200, 150);
        let block = 2 + rng.next_u32() % 6;
        for y in 0..150 {
            for x in 0..200 {
                let cell = (x / block) * 1000 + y / block;
                let v = (cell.wrapping_mul(2_654_435_761) ^ (rng.next_u32() % 2)) & 1;
                img.put_pixel(x, y, Luma([if v == 1 { 0 } else { 255 }]));
            }
        }
        let _ = decode_luma(&img);
    }
    // Random bytes as image files: refused or decoded, never a panic.
    for len in [0usize, 1, 8, 100, 5000] {
        let bytes = random_payload(&mut rng, len);
        assert_eq!(
            decode_image_bytes(&bytes).unwrap_err().code(),
            "image_unreadable"
        );
    }
    // A PNG signature followed by garbage.
    let mut fake = b"\x89PNG\r\n\x1a\n".to_vec();
    fake.extend(random_payload(&mut rng, 300));
    assert!(decode_image_bytes(&fake).is_err());
}

#[test]
fn oversized_frames_refused_with_specific_error() {
    let wide = GrayImage::new(MAX_FRAME_SIDE_PX + 1, 1);
    let err = decode_luma(&wide).unwrap_err();
    assert_eq!(
        err,
        QrError::FrameTooLarge {
            width: MAX_FRAME_SIDE_PX + 1,
            height: 1,
            max_side: MAX_FRAME_SIDE_PX,
            max_pixels: MAX_FRAME_PIXELS,
        }
    );
    assert_eq!(err.code(), "frame_too_large");
    assert!(decode_all(&wide).is_empty());
    // A file whose header claims a huge image is refused before pixels are
    // decoded: a 1x1 PNG with its IHDR rewritten to 20000x20000.
    let mut png = Vec::new();
    GrayImage::new(1, 1)
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    png[16..20].copy_from_slice(&20000u32.to_be_bytes());
    png[20..24].copy_from_slice(&20000u32.to_be_bytes());
    // Keep the chunk valid: CRC-32 over the chunk type and data.
    let crc = crc32(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    let err = decode_image_bytes(&png).unwrap_err();
    assert_eq!(err.code(), "frame_too_large", "{err}");
}

#[test]
fn missing_file_is_image_error() {
    let err = fare_qr::decode_file("/nonexistent/frame.png").unwrap_err();
    assert_eq!(err.code(), "image_unreadable");
    assert!(err.to_string().contains("/nonexistent/frame.png"), "{err}");
}

/// CRC-32 (IEEE) as PNG uses it.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Codes cut by the frame edge, painted over, or drawn several times at odd
/// offsets (finder triples from different symbols, symbols leaving the
/// frame) exercise the locator's geometry: the result is the payload or no
/// code, never another payload and never a panic.
#[test]
fn damaged_and_cut_codes_read_right_or_not_at_all() {
    fare_qr::install_quiet_panic_hook();
    let mut rng = ChaCha20Rng::seed_from_u64(0x5eed_0005);
    let payload = random_payload(&mut rng, 199);
    let code = fare_qr::render_luma(&payload, 3, 4).unwrap();
    let budget = fare_qr::DecodeOptions::with_budget(std::time::Duration::from_secs(60));
    let mut read = 0;
    for i in 0..40u32 {
        let (w, h) = (320u32, 240u32);
        let mut img = GrayImage::from_pixel(w, h, Luma([200]));
        let copies = 1 + i % 3;
        for _ in 0..copies {
            // Offsets may put part of the symbol outside the frame.
            let ox = (rng.next_u32() % (w + 100)) as i64 - 100;
            let oy = (rng.next_u32() % (h + 100)) as i64 - 100;
            for (x, y, p) in code.enumerate_pixels() {
                let (fx, fy) = (ox + i64::from(x), oy + i64::from(y));
                if (0..i64::from(w)).contains(&fx) && (0..i64::from(h)).contains(&fy) {
                    img.put_pixel(fx as u32, fy as u32, *p);
                }
            }
        }
        // A painted-over rectangle.
        let (rx, ry) = (rng.next_u32() % w, rng.next_u32() % h);
        let (rw, rh) = (rng.next_u32() % 60, rng.next_u32() % 60);
        for y in ry..(ry + rh).min(h) {
            for x in rx..(rx + rw).min(w) {
                img.put_pixel(x, y, Luma([(rng.next_u32() & 0xFF) as u8]));
            }
        }
        match fare_qr::decode_luma_with(&img, &budget) {
            Ok(got) => {
                assert_eq!(got, payload, "frame {i}: wrong payload");
                read += 1;
            }
            Err(QrError::NoCodeFound) => {}
            Err(e) => panic!("frame {i}: {e}"),
        }
        for got in fare_qr::decode_all_with(&img, &budget) {
            assert_eq!(got, payload, "frame {i}: wrong payload among all");
        }
    }
    assert!(read > 0, "some intact copies must be read");
}
