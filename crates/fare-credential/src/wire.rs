//! Strict little helpers for the hand-written binary formats.
//!
//! Every format in this crate is big-endian, fixed-order, and parsed with
//! exact lengths: a short read or trailing bytes are errors, never ignored.

use crate::error::FormatError;

/// A cursor over received bytes that names the object and field on every error.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    object: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(object: &'static str, buf: &'a [u8]) -> Self {
        Reader {
            buf,
            pos: 0,
            object,
        }
    }

    pub(crate) fn bytes(&mut self, field: &'static str, n: usize) -> Result<&'a [u8], FormatError> {
        let remaining = self.buf.len() - self.pos;
        if remaining < n {
            return Err(FormatError::Truncated {
                object: self.object,
                field,
                needed: n,
                remaining,
            });
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub(crate) fn array<const N: usize>(
        &mut self,
        field: &'static str,
    ) -> Result<[u8; N], FormatError> {
        let b = self.bytes(field, N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(b);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, FormatError> {
        Ok(self.array::<1>(field)?[0])
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, FormatError> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, FormatError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, FormatError> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }

    /// A u8-length-prefixed UTF-8 string of at most `max` bytes.
    pub(crate) fn short_str(
        &mut self,
        field: &'static str,
        max: usize,
    ) -> Result<String, FormatError> {
        let len = self.u8(field)? as usize;
        if len > max {
            return Err(FormatError::TooLarge {
                object: self.object,
                field,
                limit: max,
                found: len,
            });
        }
        let b = self.bytes(field, len)?;
        String::from_utf8(b.to_vec()).map_err(|_| FormatError::Invalid {
            object: self.object,
            field,
            why: "not valid UTF-8".into(),
        })
    }

    /// A u32 count, refused above `limit` before anything is allocated for it.
    pub(crate) fn count(
        &mut self,
        field: &'static str,
        limit: usize,
    ) -> Result<usize, FormatError> {
        let n = self.u32(field)? as usize;
        if n > limit {
            return Err(FormatError::TooLarge {
                object: self.object,
                field,
                limit,
                found: n,
            });
        }
        Ok(n)
    }

    pub(crate) fn finish(self) -> Result<(), FormatError> {
        let extra = self.buf.len() - self.pos;
        if extra != 0 {
            return Err(FormatError::TrailingBytes {
                object: self.object,
                extra,
            });
        }
        Ok(())
    }
}

/// Writes a u8-length-prefixed string; callers validate the length first.
pub(crate) fn put_short_str(out: &mut Vec<u8>, s: &str) {
    debug_assert!(s.len() <= u8::MAX as usize);
    out.push(s.len() as u8);
    out.extend_from_slice(s.as_bytes());
}
