//! The one place bincode (2.x) is used: internal storage values that are
//! not signed wire formats (sled values, local state). Signed formats are
//! hand-encoded in their own modules so their bytes are specified exactly.

use serde::{de::DeserializeOwned, Serialize};

/// Largest value this codec will decode, so a corrupt length never makes it
/// allocate without bound.
pub const MAX_CODEC_BYTES: usize = 16 << 20;

fn config() -> impl bincode::config::Config {
    bincode::config::standard()
        .with_big_endian()
        .with_fixed_int_encoding()
        .with_limit::<MAX_CODEC_BYTES>()
}

/// Why a stored value could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// Encoding failed.
    #[error("encode {what}: {source}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// The bincode error.
        source: bincode::error::EncodeError,
    },
    /// Decoding failed (corrupt or foreign bytes).
    #[error("decode {what}: {source}")]
    Decode {
        /// What was being decoded.
        what: &'static str,
        /// The bincode error.
        source: bincode::error::DecodeError,
    },
    /// Bytes were left after the value.
    #[error("decode {what}: {extra} trailing byte(s)")]
    Trailing {
        /// What was being decoded.
        what: &'static str,
        /// Extra bytes.
        extra: usize,
    },
}

/// Encodes a value.
pub fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, CodecError> {
    bincode::serde::encode_to_vec(value, config())
        .map_err(|source| CodecError::Encode { what, source })
}

/// Decodes a value; trailing bytes are an error.
pub fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, CodecError> {
    let (v, used) = bincode::serde::decode_from_slice(bytes, config())
        .map_err(|source| CodecError::Decode { what, source })?;
    if used != bytes.len() {
        return Err(CodecError::Trailing {
            what,
            extra: bytes.len() - used,
        });
    }
    Ok(v)
}
