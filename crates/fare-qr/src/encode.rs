//! Rendering payloads as QR symbols (byte mode, version 10-M preferred).

use image::{GrayImage, Luma};
use qrcode::bits::Bits;
use qrcode::{Color, EcLevel, QrCode, Version};

use crate::QrError;

/// The symbol version used for ride codes (57×57 modules).
pub const RIDE_CODE_VERSION: i16 = 10;

/// Byte-mode capacity of version 10 at error-correction level M.
pub const RIDE_CODE_VERSION_CAPACITY_BYTES: usize = 213;

/// Largest payload accepted by the renderers (the ride-record limit of
/// `fare-credential`, far below what a version-40 symbol holds).
pub const MAX_PAYLOAD_BYTES: usize = fare_credential::code::MAX_RIDE_CODE_BYTES;

/// Largest accepted `module_px` (a version-10 code at 64 px/module is already
/// 4,160 px wide with its quiet zone).
pub const MAX_MODULE_PX: u32 = 64;

/// Largest accepted `quiet_zone_modules` (the standard asks for 4).
pub const MAX_QUIET_ZONE_MODULES: u32 = 16;

/// Quiet zone used by [`render_png`] and [`render_terminal`], modules (the
/// minimum the QR standard asks for).
pub const STANDARD_QUIET_ZONE_MODULES: u32 = 4;

/// Builds the QR symbol for `payload`: byte mode, EC level M, version 10 when
/// the payload fits, else the smallest version that holds it.
///
/// Byte mode is forced (rather than the encoder's optimal segmentation)
/// because ride codes are binary; one segment keeps the bit budget exact and
/// predictable.
pub fn encode_symbol(payload: &[u8]) -> Result<QrCode, QrError> {
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(QrError::PayloadTooLarge {
            len: payload.len(),
            max: MAX_PAYLOAD_BYTES,
        });
    }
    let mut last_err = None;
    for version in RIDE_CODE_VERSION..=40 {
        let mut bits = Bits::new(Version::Normal(version));
        let attempt = bits
            .push_byte_data(payload)
            .and_then(|()| bits.push_terminator(EcLevel::M))
            .and_then(|()| QrCode::with_bits(bits, EcLevel::M));
        match attempt {
            Ok(code) => return Ok(code),
            Err(qrcode::types::QrError::DataTooLong) => {
                last_err = Some(qrcode::types::QrError::DataTooLong)
            }
            Err(e) => return Err(QrError::Encode(format!("version {version}: {e}"))),
        }
    }
    Err(QrError::Encode(format!(
        "payload of {} bytes does not fit any version at EC level M: {last_err:?}",
        payload.len()
    )))
}

/// Module matrix of the symbol, row-major, `true` = dark.
fn modules(code: &QrCode) -> (usize, Vec<bool>) {
    let width = code.width();
    let dark = code
        .to_colors()
        .into_iter()
        .map(|c| c == Color::Dark)
        .collect();
    (width, dark)
}

/// Renders `payload` as a greyscale image: dark modules 0, light 255,
/// `module_px` pixels per module, `quiet_zone_modules` light modules around.
///
/// Errors: [`QrError::PayloadTooLarge`] above [`MAX_PAYLOAD_BYTES`],
/// [`QrError::InvalidRenderParameter`] for `module_px` outside
/// 1..=[`MAX_MODULE_PX`] or a quiet zone above [`MAX_QUIET_ZONE_MODULES`].
pub fn render_luma(
    payload: &[u8],
    module_px: u32,
    quiet_zone_modules: u32,
) -> Result<GrayImage, QrError> {
    if !(1..=MAX_MODULE_PX).contains(&module_px) {
        return Err(QrError::InvalidRenderParameter {
            name: "module_px",
            value: module_px,
            expected: "1..=64",
        });
    }
    if quiet_zone_modules > MAX_QUIET_ZONE_MODULES {
        return Err(QrError::InvalidRenderParameter {
            name: "quiet_zone_modules",
            value: quiet_zone_modules,
            expected: "0..=16",
        });
    }
    let code = encode_symbol(payload)?;
    let (width, dark) = modules(&code);
    // Bounded: width <= 177, quiet zone <= 16, module_px <= 64 → < 14,000 px.
    let side_modules = width as u32 + 2 * quiet_zone_modules;
    let side_px = side_modules * module_px;
    let mut img = GrayImage::from_pixel(side_px, side_px, Luma([255]));
    for (i, _) in dark.iter().enumerate().filter(|(_, d)| **d) {
        let mx = (i % width) as u32 + quiet_zone_modules;
        let my = (i / width) as u32 + quiet_zone_modules;
        for y in my * module_px..(my + 1) * module_px {
            for x in mx * module_px..(mx + 1) * module_px {
                img.put_pixel(x, y, Luma([0]));
            }
        }
    }
    Ok(img)
}

/// Renders `payload` as PNG bytes with the standard 4-module quiet zone.
pub fn render_png(payload: &[u8], module_px: u32) -> Result<Vec<u8>, QrError> {
    let img = render_luma(payload, module_px, STANDARD_QUIET_ZONE_MODULES)?;
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .map_err(|e| QrError::Encode(format!("PNG encoding: {e}")))?;
    Ok(out.into_inner())
}

/// ANSI SGR sequence: pure black foreground on pure white background
/// (256-colour palette entries 16 and 231).
const ANSI_BLACK_ON_WHITE: &str = "\x1b[38;5;16;48;5;231m";
/// ANSI SGR reset.
const ANSI_RESET: &str = "\x1b[0m";

/// Renders `payload` for a live terminal view: Unicode half blocks, two
/// module rows per text line, one module per column, 4-module quiet zone.
///
/// Every line sets black-on-white colours explicitly and resets them at its
/// end, so the symbol has the right polarity on dark and light terminal
/// themes alike (cameras and rqrr need dark modules on a light background).
/// Lines are separated by `\n`; there is no trailing newline.
pub fn render_terminal(payload: &[u8]) -> Result<String, QrError> {
    let code = encode_symbol(payload)?;
    let (width, dark) = modules(&code);
    let q = STANDARD_QUIET_ZONE_MODULES as usize;
    let side = width + 2 * q;
    let is_dark = |x: usize, y: usize| -> bool {
        x >= q && y >= q && x < q + width && y < q + width && dark[(y - q) * width + (x - q)]
    };
    let mut out = String::with_capacity(side.div_ceil(2) * (side * 3 + 32));
    for row in 0..side.div_ceil(2) {
        if row > 0 {
            out.push('\n');
        }
        out.push_str(ANSI_BLACK_ON_WHITE);
        for x in 0..side {
            let top = is_dark(x, 2 * row);
            let bottom = 2 * row + 1 < side && is_dark(x, 2 * row + 1);
            out.push(match (top, bottom) {
                (true, true) => '█',
                (true, false) => '▀',
                (false, true) => '▄',
                (false, false) => ' ',
            });
        }
        out.push_str(ANSI_RESET);
    }
    Ok(out)
}
