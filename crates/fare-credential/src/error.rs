//! Structural decode / encode errors shared by every format.

use thiserror::Error;

/// Why bytes could not be parsed (or a value could not be encoded) as one
/// of this crate's formats. Carries the object and field so an operator can
/// tell *which* byte range is wrong.
///
/// Not `#[non_exhaustive]`: callers in other crates (settlement's ingest)
/// map each variant to a stable error code with an exhaustive `match`, so a
/// new variant makes the compiler list every place that must decide.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FormatError {
    /// The input ended inside a field.
    #[error(
        "{object}: truncated in field `{field}`: needed {needed} more byte(s), {remaining} left"
    )]
    Truncated {
        /// The object being parsed (`credential`, `ride_code`, ...).
        object: &'static str,
        /// The field the input ended in.
        field: &'static str,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes that were left.
        remaining: usize,
    },
    /// Bytes followed a complete object.
    #[error("{object}: {extra} trailing byte(s) after the end of the object")]
    TrailingBytes {
        /// The object being parsed.
        object: &'static str,
        /// How many bytes were left over.
        extra: usize,
    },
    /// The version byte names a format this build does not speak.
    #[error(
        "{object}: unsupported format version {found} (this build speaks version {supported})"
    )]
    UnsupportedVersion {
        /// The object being parsed.
        object: &'static str,
        /// The version byte found.
        found: u8,
        /// The version this build supports.
        supported: u8,
    },
    /// A length or count exceeds its explicit limit.
    #[error("{object}: field `{field}` is {found}, over the limit of {limit}")]
    TooLarge {
        /// The object being parsed or encoded.
        object: &'static str,
        /// The field over its limit.
        field: &'static str,
        /// The limit.
        limit: usize,
        /// The value found.
        found: usize,
    },
    /// A field holds a value outside its domain.
    #[error("{object}: field `{field}` is invalid: {why}")]
    Invalid {
        /// The object being parsed or encoded.
        object: &'static str,
        /// The field.
        field: &'static str,
        /// What was expected.
        why: String,
    },
    /// A signature over the object did not verify.
    #[error("{object}: signature does not verify (tampered bytes, or signed by another key)")]
    BadSignature {
        /// The object whose signature failed.
        object: &'static str,
    },
}
