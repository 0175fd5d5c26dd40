//! The error type of this crate.

/// Everything that can go wrong while rendering or reading a QR code.
///
/// Each variant has a stable snake_case [`QrError::code`] for machines and a
/// message that says the likely cause for humans.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QrError {
    /// The frame was read, but no QR symbol in it could be detected and
    /// error-corrected (includes frames that made the detector fail
    /// internally: those are contained and reported as "not found").
    #[error("no readable QR code found in the frame (code not in view, too blurred, too small, or damaged beyond error correction)")]
    NoCodeFound,
    /// The frame is larger than the decoder accepts; refused before any
    /// pixel buffer is allocated for it.
    #[error("frame of {width}x{height} px is too large: at most {max_side} px per side and {max_pixels} pixels are accepted (downscale the camera output)")]
    FrameTooLarge {
        /// Width of the refused frame, pixels.
        width: u32,
        /// Height of the refused frame, pixels.
        height: u32,
        /// Largest accepted width or height, pixels.
        max_side: u32,
        /// Largest accepted width × height.
        max_pixels: u64,
    },
    /// The frame file is larger than the decoder reads.
    #[error("frame file is {len} bytes, more than the {max} bytes accepted (not a camera frame?)")]
    FileTooLarge {
        /// Size of the refused file, bytes.
        len: u64,
        /// Largest accepted file, bytes.
        max: u64,
    },
    /// The image file could not be opened or decoded (missing, unreadable,
    /// unsupported format, or corrupt).
    #[error("cannot read image: {0}")]
    Image(String),
    /// The payload does not fit the largest QR symbol this crate renders.
    #[error("payload of {len} bytes is too large to render: at most {max} bytes are accepted")]
    PayloadTooLarge {
        /// Length of the refused payload, bytes.
        len: usize,
        /// Largest accepted payload, bytes.
        max: usize,
    },
    /// A render parameter is outside its accepted range.
    #[error("invalid render parameter {name} = {value}: expected {expected}")]
    InvalidRenderParameter {
        /// Which parameter.
        name: &'static str,
        /// The value given.
        value: u32,
        /// The accepted range, in words.
        expected: &'static str,
    },
    /// The QR encoder refused the payload (should not happen for payloads
    /// within the size limit; reported rather than panicking).
    #[error("QR encoding failed: {0}")]
    Encode(String),
}

impl QrError {
    /// Stable snake_case reason code for logs, JSON and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            QrError::NoCodeFound => "no_code_found",
            QrError::FrameTooLarge { .. } => "frame_too_large",
            QrError::FileTooLarge { .. } => "file_too_large",
            QrError::Image(_) => "image_unreadable",
            QrError::PayloadTooLarge { .. } => "payload_too_large",
            QrError::InvalidRenderParameter { .. } => "invalid_render_parameter",
            QrError::Encode(_) => "encode_failed",
        }
    }
}
