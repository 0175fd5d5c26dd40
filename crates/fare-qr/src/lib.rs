//! QR encode/decode for ride codes.
//!
//! The phone shows its ride code (199 bytes, binary, see
//! [`fare_credential::code::RIDE_CODE_V1_LEN`]) as a QR symbol; the bus
//! reader decodes it from a camera frame. This crate does both ends.
//!
//! # Symbol choice: version 10, error correction M, byte mode
//!
//! - A 199-byte binary payload needs byte mode (it is not text). Version 10
//!   at EC level M holds 213 bytes in byte mode (57×57 modules), so a ride
//!   code fits with room for a few bytes of format growth.
//! - Level M restores about 15 % damaged codewords: enough for a cracked or
//!   glary phone screen, while keeping modules as large as possible on a
//!   given screen (large modules are what a fixed-focus bus camera needs).
//!   Level L would allow version 9 (53×53, 4 modules smaller) but recovers
//!   only ~7 %; Q and H need version 12+ (65×65 and larger), i.e. smaller
//!   modules on the same screen.
//! - The version is forced to 10 for every payload that fits, so every ride
//!   code looks the same size on screen whatever its content; larger payloads
//!   (other uses) get the smallest version that holds them at level M, and
//!   payloads over [`MAX_PAYLOAD_BYTES`] are refused with
//!   [`QrError::PayloadTooLarge`].
//!
//! # Decoding
//!
//! [`decode_luma`] returns raw bytes (never a lossy UTF-8 conversion). It
//! first locates finder patterns with a cheap run-length scan and samples
//! each likely symbol's module grid directly (through a homography fitted
//! to the finders and alignment patterns), decoding the bits with `rqrr`'s
//! decoder; rqrr's own detector on an upright crop and a list of whole-frame
//! [`Attempt`]s ([`DEFAULT_ATTEMPTS`]: upscaling, blur, Otsu / local-mean /
//! block thresholds) are the fallbacks. Everything after the first scan runs
//! under a per-frame time budget ([`DecodeOptions`],
//! [`DEFAULT_DECODE_BUDGET`] = 20 ms). Frames are size-checked before any
//! work ([`MAX_FRAME_SIDE_PX`], [`MAX_FRAME_PIXELS`]; files additionally by
//! [`MAX_FRAME_FILE_BYTES`] and by their header dimensions before pixels are
//! decoded). rqrr panics on some real photos; those panics are contained and
//! reported as [`QrError::NoCodeFound`]. Only payloads that pass the QR
//! Reed–Solomon error correction are returned.
#![forbid(unsafe_code)]

mod decode;
mod encode;
mod enhance;
mod error;
mod frame;
mod locate;
mod quiet;
mod sample;

pub use decode::{
    decode_all, decode_all_with, decode_file, decode_luma, decode_luma_with, Attempt,
    DecodeOptions, Threshold, DEFAULT_ATTEMPTS, DEFAULT_DECODE_BUDGET, MAX_LOCATOR_SCAN_PIXELS,
    MAX_VIEW_PIXELS,
};
pub use encode::{
    encode_symbol, render_luma, render_png, render_terminal, MAX_MODULE_PX, MAX_PAYLOAD_BYTES,
    MAX_QUIET_ZONE_MODULES, RIDE_CODE_VERSION, RIDE_CODE_VERSION_CAPACITY_BYTES,
    STANDARD_QUIET_ZONE_MODULES,
};
pub use error::QrError;
pub use frame::{
    check_frame_size, decode_image_bytes, load_frame, MAX_FRAME_FILE_BYTES, MAX_FRAME_PIXELS,
    MAX_FRAME_SIDE_PX,
};
pub use quiet::install_quiet_panic_hook;

// Compile-time proof that a ride code fits the forced version.
const _: () = assert!(fare_credential::code::RIDE_CODE_V1_LEN <= RIDE_CODE_VERSION_CAPACITY_BYTES);

/// Re-export of the image type frames are passed in.
pub use image::GrayImage;
