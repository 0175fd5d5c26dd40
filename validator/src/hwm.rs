//! The ride log's high-water mark: the last accepted sequence and its
//! chain hash, kept in a file beside the sled log (`log.hwm`), outside the
//! database it protects.
//!
//! sled recovers a damaged log tail by dropping it: flip a byte in the last
//! records and the database opens without them, so the reader would hand
//! out their sequence numbers again and forget the codes they used. The
//! high-water mark is written after each accept's durability point and made
//! durable before the answer; at open a log ending below it, or holding a
//! different record at it, is detected and the reader refuses to decide
//! ([`HwmCheck`]) instead of going backwards.
//!
//! Layout: two 80-byte slots (offsets 0 and 80), slot `seq % 2` written in
//! place with `pwrite` then `fdatasync`: `magic "FAREHWM1" (8) | seq u64 BE
//! (8) | chain hash (32) | BLAKE3(first 48 bytes) (32)`. A write torn by a
//! power cut breaks only the slot being written; the other slot still holds
//! the previous sequence, which the log then must reach (it does: the ride
//! being marked was made durable first).
//!
//! Ordering: the mark for ride N is written only after ride N is durable in
//! sled, so the mark is never ahead of what the device holds; it may lag by
//! the one ride whose mark a power cut interrupted.

use crate::error::ValidatorError;
use crate::reader::io;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// File name of the high-water mark in the reader directory.
pub const HWM_FILE: &str = "log.hwm";
/// Magic bytes at the start of each slot.
pub const HWM_MAGIC: &[u8; 8] = b"FAREHWM1";
/// Bytes per slot.
pub const HWM_SLOT_LEN: usize = 80;

/// The high-water mark file, open for writing.
#[derive(Debug)]
pub struct HighWaterMark {
    path: PathBuf,
    file: File,
    /// Whether writes are followed by `fdatasync` (`storage.device_sync`).
    sync: bool,
}

/// A mark read back: the highest sequence recorded and its chain hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mark {
    /// Last accepted sequence (0: none).
    pub seq: u64,
    /// Chain hash of that record.
    pub chain_hash: [u8; 32],
}

fn encode(m: &Mark) -> [u8; HWM_SLOT_LEN] {
    let mut b = [0u8; HWM_SLOT_LEN];
    b[..8].copy_from_slice(HWM_MAGIC);
    b[8..16].copy_from_slice(&m.seq.to_be_bytes());
    b[16..48].copy_from_slice(&m.chain_hash);
    let h = blake3::hash(&b[..48]);
    b[48..].copy_from_slice(h.as_bytes());
    b
}

fn decode(b: &[u8]) -> Option<Mark> {
    if b.len() != HWM_SLOT_LEN
        || &b[..8] != HWM_MAGIC
        || blake3::hash(&b[..48]).as_bytes() != &b[48..]
    {
        return None;
    }
    Some(Mark {
        seq: u64::from_be_bytes(b[8..16].try_into().ok()?),
        chain_hash: b[16..48].try_into().ok()?,
    })
}

impl HighWaterMark {
    /// Opens (or creates, then syncs the directory) the mark file in `dir`
    /// and reads the highest valid slot (`None`: a new file, or no slot valid).
    pub fn open(dir: &Path, sync: bool) -> Result<(HighWaterMark, Option<Mark>), ValidatorError> {
        let path = dir.join(HWM_FILE);
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io("open high-water mark", &path))?;
        if !existed {
            file.set_len(2 * HWM_SLOT_LEN as u64)
                .map_err(io("size high-water mark", &path))?;
            file.sync_all().map_err(io("sync high-water mark", &path))?;
            fare_durable::sync_dir(dir)?;
        }
        let mut buf = [0u8; 2 * HWM_SLOT_LEN];
        let n = file
            .read_at(&mut buf, 0)
            .map_err(io("read high-water mark", &path))?;
        let mark = [&buf[..HWM_SLOT_LEN.min(n)], &buf[HWM_SLOT_LEN.min(n)..n]]
            .iter()
            .filter_map(|s| decode(s))
            .max_by_key(|m| m.seq);
        Ok((HighWaterMark { path, file, sync }, mark))
    }

    /// Records `mark` durably (slot `seq % 2`, then `fdatasync`).
    pub fn record(&self, mark: &Mark) -> Result<(), ValidatorError> {
        let off = (mark.seq % 2) * HWM_SLOT_LEN as u64;
        self.file
            .write_all_at(&encode(mark), off)
            .map_err(io("write high-water mark", &self.path))?;
        if self.sync {
            self.file
                .sync_data()
                .map_err(io("sync high-water mark", &self.path))?;
        }
        Ok(())
    }

    /// Records `mark` in both slots (first use, or after a restore).
    pub fn reset(&self, mark: &Mark) -> Result<(), ValidatorError> {
        let b = encode(mark);
        for off in [0, HWM_SLOT_LEN as u64] {
            self.file
                .write_all_at(&b, off)
                .map_err(io("write high-water mark", &self.path))?;
        }
        self.file
            .sync_data()
            .map_err(io("sync high-water mark", &self.path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn highest_valid_slot_wins_and_a_torn_slot_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let (h, m) = HighWaterMark::open(dir.path(), true).unwrap();
        assert_eq!(m, None);
        for seq in 1..=5 {
            h.record(&Mark {
                seq,
                chain_hash: [seq as u8; 32],
            })
            .unwrap();
        }
        drop(h);
        let (_, m) = HighWaterMark::open(dir.path(), true).unwrap();
        assert_eq!(m.unwrap().seq, 5);
        // Tear slot 1 (seq 5): seq 4 remains.
        let f = OpenOptions::new()
            .write(true)
            .open(dir.path().join(HWM_FILE))
            .unwrap();
        f.write_all_at(&[0xff; 10], HWM_SLOT_LEN as u64 + 20)
            .unwrap();
        let (_, m) = HighWaterMark::open(dir.path(), true).unwrap();
        assert_eq!(m.unwrap().seq, 4);
    }
}
