//! Loading camera frames from files, bounded before any pixel is decoded.

use std::io::{Cursor, Read};
use std::path::Path;

use image::GrayImage;

use crate::QrError;

/// Largest accepted frame width or height, pixels.
pub const MAX_FRAME_SIDE_PX: u32 = 4096;

/// Largest accepted frame area, pixels (16 Mpx: a 4096×4096 frame).
pub const MAX_FRAME_PIXELS: u64 = 16 * 1024 * 1024;

/// Largest accepted image file, bytes (a 16 Mpx PNG can be large; anything
/// bigger is not a camera frame).
pub const MAX_FRAME_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// Refuses frame dimensions over [`MAX_FRAME_SIDE_PX`] / [`MAX_FRAME_PIXELS`].
pub fn check_frame_size(width: u32, height: u32) -> Result<(), QrError> {
    if width > MAX_FRAME_SIDE_PX
        || height > MAX_FRAME_SIDE_PX
        || u64::from(width) * u64::from(height) > MAX_FRAME_PIXELS
    {
        return Err(QrError::FrameTooLarge {
            width,
            height,
            max_side: MAX_FRAME_SIDE_PX,
            max_pixels: MAX_FRAME_PIXELS,
        });
    }
    Ok(())
}

/// Reads an image file (PNG, JPEG or GIF) as an 8-bit greyscale frame.
///
/// The file size is bounded by [`MAX_FRAME_FILE_BYTES`] and the dimensions,
/// read from the header before decoding any pixel, by [`check_frame_size`],
/// so a hostile or corrupt file cannot make the reader allocate gigabytes.
pub fn load_frame(path: impl AsRef<Path>) -> Result<GrayImage, QrError> {
    let path = path.as_ref();
    let shown = path.display();
    let file = std::fs::File::open(path).map_err(|e| QrError::Image(format!("{shown}: {e}")))?;
    let mut bytes = Vec::new();
    // Read one byte more than the limit to detect oversized files without
    // trusting metadata (the file may grow or be a pipe).
    file.take(MAX_FRAME_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| QrError::Image(format!("{shown}: {e}")))?;
    if bytes.len() as u64 > MAX_FRAME_FILE_BYTES {
        return Err(QrError::FileTooLarge {
            len: bytes.len() as u64,
            max: MAX_FRAME_FILE_BYTES,
        });
    }
    decode_image_bytes(&bytes).map_err(|e| match e {
        QrError::Image(msg) => QrError::Image(format!("{shown}: {msg}")),
        other => other,
    })
}

/// Decodes image file bytes (PNG, JPEG or GIF) into a bounded greyscale frame.
pub fn decode_image_bytes(bytes: &[u8]) -> Result<GrayImage, QrError> {
    if bytes.len() as u64 > MAX_FRAME_FILE_BYTES {
        return Err(QrError::FileTooLarge {
            len: bytes.len() as u64,
            max: MAX_FRAME_FILE_BYTES,
        });
    }
    let reader = || {
        image::ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| QrError::Image(format!("format detection: {e}")))
    };
    let (width, height) = reader()?
        .into_dimensions()
        .map_err(|e| QrError::Image(format!("header: {e}")))?;
    check_frame_size(width, height)?;
    let mut limited = reader()?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_FRAME_SIDE_PX);
    limits.max_image_height = Some(MAX_FRAME_SIDE_PX);
    // RGBA at 16 bits per channel is the widest buffer a decoder makes, plus
    // room for the grey conversion.
    limits.max_alloc = Some(MAX_FRAME_PIXELS * 8 + MAX_FRAME_PIXELS);
    limited.limits(limits);
    // Image decoders are not expected to panic, but a reader must survive a
    // hostile file: contain it like the QR detector.
    let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| limited.decode()))
        .map_err(|_| QrError::Image("image decoder panicked on this file".to_owned()))?
        .map_err(|e| QrError::Image(format!("pixels: {e}")))?;
    let gray = decoded.into_luma8();
    check_frame_size(gray.width(), gray.height())?;
    Ok(gray)
}
