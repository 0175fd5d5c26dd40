//! The ride log's high-water mark and write-ahead ring (`log.ring`): the
//! last [`RING_SLOTS`] accepted ride records, each in its own checksummed
//! slot, kept in a file beside the sled log, outside the database it
//! protects. One `pwrite` + one `fdatasync` of this file is an accept's
//! only device flush.
//!
//! # Why
//!
//! An accept must be on the device before its answer. sled 0.34's `flush()`
//! is not a device flush (`sync_file_range`), so an accept used to pay two
//! `fdatasync`s in sequence: sled's data file, then the high-water mark
//! (which detects a damaged sled tail, since sled silently drops one). Now
//! the mark carries the ride record itself, and sled's data file is
//! device-synced lazily.
//!
//! # Invariants
//!
//! * **I1 (write-ahead)**: when an accept is answered, its record is in the
//!   ring on the device (slot `1 + seq % RING_SLOTS`, `fdatasync` returned),
//!   and inserted in sled, in memory only: sled is flushed with its lazy
//!   device sync (I2), not per accept. A crash of the process and a power
//!   cut are then the same case: sled lost the rides since its last sync
//!   and the ring holds them.
//! * **I2 (no overwrite of an undurable record)**: slot `seq % RING_SLOTS`
//!   last held record `seq − RING_SLOTS`. It is overwritten only when sled's
//!   data file was device-synced after that record's insert
//!   (`seq − sled_durable_through ≤ RING_SLOTS`); [`RideRing::record`]
//!   refuses otherwise ([`ValidatorError::RingOverrun`]), and the reader
//!   syncs sled before that can happen (every [`RING_SLOTS`] accepts at the
//!   latest, and at every other durability point: acknowledgement,
//!   compaction, bundle, clean shutdown). So every acknowledged record is
//!   on the device in sled, or in the ring, or both.
//! * **I3 (mark)**: the mark is the highest valid entry (or the bare mark in
//!   slot 0, written when a ring is started for an existing log): the last
//!   acknowledged ride, or the one after it whose write happened to land
//!   before its answer.
//!
//! # What each crash point leaves, and what open does
//!
//! Open (`Reader::open`) first re-inserts, into sled, every valid ring
//! entry the log lacks (same sequence, same bytes), ascending, each only if
//! it chains to the record before it (from the log, the ring, or the saved
//! state's head), then makes sled durable; only then are the state rolled
//! forward and the mark checked.
//!
//! * Cut before the ring's `pwrite` reached the device: the ride was not
//!   answered; sled may or may not hold it (either is fine: an unanswered
//!   ride kept is harmless, settlement holds the code once).
//! * The ring entry torn (its checksum fails): the write was not
//!   acknowledged (its `fdatasync` had not returned); the slot's previous
//!   record is `seq − RING_SLOTS`, durable in sled by I2. The mark is the
//!   ride before; if sled kept the torn ride, the log is one past the mark
//!   and the mark catches up. Nothing acknowledged is lost.
//! * Crash or cut after the ring's `pwrite` (a crash) or `fdatasync` (a
//!   cut), sled's copy not on the device (the lazy window, up to
//!   [`RING_SLOTS`] rides): open re-inserts those rides
//!   from the ring (repair); the log then reaches the mark.
//! * Real damage (sled's tail lost *and* a ring entry missing or altered
//!   between it and the mark, e.g. bit rot): the repair stops at the hole,
//!   the log ends below the mark, and the reader refuses to decide, naming
//!   the missing range, as before.
//!
//! # Layout
//!
//! `1 + RING_SLOTS` slots of [`RING_SLOT_LEN`] bytes (a slot never spans a
//! 4 KiB page), preallocated with zeros at creation (written, not sparse:
//! an accept's `fdatasync` then writes data only, no block allocation).
//! Slot 0, the bare mark: `"FAREMRK1" | seq u64 BE | chain hash (32) |
//! BLAKE3(first 48 bytes) (32)`. Slot `1 + seq % RING_SLOTS`, an entry:
//! `"FARERNG1" | seq u64 BE | len u16 BE | record (len) | BLAKE3(first
//! 18 + len bytes) (32)`.
//!
//! Readers made before the ring kept a two-slot mark in `log.hwm`; open
//! moves that mark into slot 0 of a new ring, then removes `log.hwm`.

use crate::error::ValidatorError;
use crate::reader::io;
use fare_credential::record::{record_hash, MAX_RECORD_BYTES};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// File name of the ring in the reader directory.
pub const RING_FILE: &str = "log.ring";
/// Temporary name while a new ring is filled (renamed when durable).
pub const RING_TMP_FILE: &str = "log.ring.tmp";
/// File name of the high-water mark of readers made before the ring.
pub const LEGACY_HWM_FILE: &str = "log.hwm";
/// Ride records the ring holds: also the most accepts sled's data file may
/// go without a device sync.
pub const RING_SLOTS: u64 = 256;
/// Bytes per slot.
pub const RING_SLOT_LEN: usize = 1024;
/// Magic bytes of an entry slot.
pub const RING_MAGIC: &[u8; 8] = b"FARERNG1";
/// Magic bytes of the bare mark (slot 0).
pub const MARK_MAGIC: &[u8; 8] = b"FAREMRK1";
/// Magic, sequence, record length.
const ENTRY_HEADER_LEN: usize = 8 + 8 + 2;
const CHECKSUM_LEN: usize = 32;
/// Largest record an entry holds.
pub const RING_RECORD_CAPACITY: usize = RING_SLOT_LEN - ENTRY_HEADER_LEN - CHECKSUM_LEN;
/// Size of the ring file.
pub const RING_FILE_LEN: u64 = (1 + RING_SLOTS) * RING_SLOT_LEN as u64;
const _: () = assert!(RING_RECORD_CAPACITY >= MAX_RECORD_BYTES);
const _: () = assert!(4096 % RING_SLOT_LEN == 0);
const _: () = assert!(RING_SLOTS >= 2);

/// Legacy `log.hwm` slot: magic, seq, hash, BLAKE3.
const LEGACY_MAGIC: &[u8; 8] = b"FAREHWM1";
const MARK_LEN: usize = 80;

/// A mark: a sequence and its chain hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mark {
    /// Last accepted sequence (0: none).
    pub seq: u64,
    /// Chain hash of that record.
    pub chain_hash: [u8; 32],
}

/// One valid ring entry: an accepted ride record, byte for byte.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RingEntry {
    /// Its sequence.
    pub seq: u64,
    /// `RideRecord::encode_v1` bytes, as inserted into sled.
    pub record: Vec<u8>,
}

/// What a ring held at open.
#[derive(Clone, Debug, Default)]
pub struct RingContents {
    /// The bare mark of slot 0, if valid.
    pub bare_mark: Option<Mark>,
    /// Valid entries, ascending by sequence.
    pub entries: Vec<RingEntry>,
    /// Entry slots that are neither empty (zeros) nor valid: torn writes
    /// (at most one after a power cut) or damage.
    pub invalid_slots: usize,
}

impl RingContents {
    /// The high-water mark: the highest valid entry, or the bare mark if higher.
    pub fn mark(&self) -> Option<Mark> {
        let top = self.entries.last().map(|e| Mark {
            seq: e.seq,
            chain_hash: record_hash(&e.record),
        });
        match (top, self.bare_mark) {
            (Some(t), Some(b)) if b.seq > t.seq => Some(b),
            (Some(t), _) => Some(t),
            (None, b) => b,
        }
    }
}

fn encode_mark(magic: &[u8; 8], m: &Mark) -> [u8; MARK_LEN] {
    let mut b = [0u8; MARK_LEN];
    b[..8].copy_from_slice(magic);
    b[8..16].copy_from_slice(&m.seq.to_be_bytes());
    b[16..48].copy_from_slice(&m.chain_hash);
    let h = blake3::hash(&b[..48]);
    b[48..].copy_from_slice(h.as_bytes());
    b
}

fn decode_mark(magic: &[u8; 8], b: &[u8]) -> Option<Mark> {
    if b.len() < MARK_LEN
        || &b[..8] != magic
        || blake3::hash(&b[..48]).as_bytes() != &b[48..MARK_LEN]
    {
        return None;
    }
    Some(Mark {
        seq: u64::from_be_bytes(b[8..16].try_into().ok()?),
        chain_hash: b[16..48].try_into().ok()?,
    })
}

/// The bytes of entry `seq` holding `record` (`None`: the record does not fit).
fn encode_entry(seq: u64, record: &[u8]) -> Option<Vec<u8>> {
    if record.len() > RING_RECORD_CAPACITY {
        return None;
    }
    let mut b = Vec::with_capacity(ENTRY_HEADER_LEN + record.len() + CHECKSUM_LEN);
    b.extend_from_slice(RING_MAGIC);
    b.extend_from_slice(&seq.to_be_bytes());
    b.extend_from_slice(&(record.len() as u16).to_be_bytes());
    b.extend_from_slice(record);
    let h = blake3::hash(&b);
    b.extend_from_slice(h.as_bytes());
    Some(b)
}

/// A slot's entry: `Ok(None)` for an empty (all-zero) slot, `Err(())` for
/// one that is neither empty nor valid.
fn decode_entry(slot: &[u8]) -> Result<Option<RingEntry>, ()> {
    if slot.iter().all(|b| *b == 0) {
        return Ok(None);
    }
    if slot.len() != RING_SLOT_LEN || &slot[..8] != RING_MAGIC {
        return Err(());
    }
    let seq = u64::from_be_bytes(slot[8..16].try_into().map_err(|_| ())?);
    let len = u16::from_be_bytes(slot[16..18].try_into().map_err(|_| ())?) as usize;
    if len > RING_RECORD_CAPACITY {
        return Err(());
    }
    let end = ENTRY_HEADER_LEN + len;
    if blake3::hash(&slot[..end]).as_bytes() != &slot[end..end + CHECKSUM_LEN] {
        return Err(());
    }
    Ok(Some(RingEntry {
        seq,
        record: slot[ENTRY_HEADER_LEN..end].to_vec(),
    }))
}

/// Offset of the entry slot of `seq`.
fn entry_offset(seq: u64) -> u64 {
    (1 + seq % RING_SLOTS) * RING_SLOT_LEN as u64
}

/// The ring file, open for writing.
#[derive(Debug)]
pub struct RideRing {
    path: PathBuf,
    file: File,
    /// Whether writes are followed by `fdatasync` (`storage.device_sync`).
    sync: bool,
}

impl RideRing {
    /// Opens the ring in `dir`, creating it (durably: filled, synced,
    /// renamed, directory synced) when missing, with the legacy `log.hwm`
    /// mark moved into its slot 0. Returns the ring and what it holds.
    pub fn open(dir: &Path, sync: bool) -> Result<(RideRing, RingContents), ValidatorError> {
        let path = dir.join(RING_FILE);
        // A ring just created holds what `create` wrote: not read back (a
        // fleet's provisioning would read 257 KB per reader for nothing).
        let created = match path.exists() {
            true => None,
            false => Some(Self::create(dir)?),
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io("open ride ring", &path))?;
        let contents = match created {
            Some(c) => c,
            None => Self::read(&file, &path)?,
        };
        Ok((RideRing { path, file, sync }, contents))
    }

    /// Creates the ring: zeros (allocated now, so an accept's write never
    /// allocates), with the legacy high-water mark if there is one. Its
    /// contents as [`RideRing::read`] would find them.
    fn create(dir: &Path) -> Result<RingContents, ValidatorError> {
        let tmp = dir.join(RING_TMP_FILE);
        let legacy_path = dir.join(LEGACY_HWM_FILE);
        let legacy = match std::fs::read(&legacy_path) {
            Ok(b) => b
                .chunks(MARK_LEN)
                .filter_map(|s| decode_mark(LEGACY_MAGIC, s))
                .max_by_key(|m| m.seq),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io("read legacy high-water mark", &legacy_path)(e)),
        };
        let mut bytes = vec![0u8; RING_FILE_LEN as usize];
        if let Some(m) = legacy {
            bytes[..MARK_LEN].copy_from_slice(&encode_mark(MARK_MAGIC, &m));
        }
        let f = File::create(&tmp).map_err(io("create ride ring", &tmp))?;
        f.write_all_at(&bytes, 0)
            .map_err(io("fill ride ring", &tmp))?;
        f.sync_all().map_err(io("sync ride ring", &tmp))?;
        drop(f);
        let path = dir.join(RING_FILE);
        std::fs::rename(&tmp, &path).map_err(io("rename ride ring", &path))?;
        fare_durable::sync_dir(dir)?;
        if legacy_path.exists() {
            // Its mark is in the ring, durably: the old file goes.
            std::fs::remove_file(&legacy_path)
                .map_err(io("remove legacy high-water mark", &legacy_path))?;
            fare_durable::sync_dir(dir)?;
        }
        Ok(RingContents {
            bare_mark: legacy,
            ..RingContents::default()
        })
    }

    fn read(file: &File, path: &Path) -> Result<RingContents, ValidatorError> {
        let mut buf = vec![0u8; RING_FILE_LEN as usize];
        let mut n = 0;
        while n < buf.len() {
            match file.read_at(&mut buf[n..], n as u64) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io("read ride ring", path)(e)),
            }
        }
        // A short file (truncated by damage) reads as zeros past its end.
        let mut c = RingContents {
            bare_mark: decode_mark(MARK_MAGIC, &buf[..RING_SLOT_LEN]),
            ..RingContents::default()
        };
        for slot in buf[RING_SLOT_LEN..].chunks(RING_SLOT_LEN) {
            match decode_entry(slot) {
                Ok(Some(e)) => c.entries.push(e),
                Ok(None) => {}
                Err(()) => c.invalid_slots += 1,
            }
        }
        c.entries.sort_by_key(|e| e.seq);
        Ok(c)
    }

    /// Writes ride `seq`'s `record` into its slot and makes it durable: the
    /// accept's one device flush. `sled_durable_through` is the highest
    /// sequence whose sled record is known to be on the device: the slot's
    /// previous record (`seq − RING_SLOTS`) must be among them (invariant
    /// I2), else nothing is written and [`ValidatorError::RingOverrun`] is
    /// returned.
    pub fn record(
        &self,
        seq: u64,
        record: &[u8],
        sled_durable_through: u64,
    ) -> Result<(), ValidatorError> {
        if seq.saturating_sub(sled_durable_through) > RING_SLOTS {
            return Err(ValidatorError::RingOverrun {
                seq,
                sled_durable_through,
                slots: RING_SLOTS,
            });
        }
        let bytes = encode_entry(seq, record).ok_or_else(|| ValidatorError::Corrupt {
            seq,
            why: format!(
                "record of {} bytes exceeds the ring slot's {RING_RECORD_CAPACITY}",
                record.len()
            ),
        })?;
        self.file
            .write_all_at(&bytes, entry_offset(seq))
            .map_err(io("write ride ring", &self.path))?;
        if self.sync {
            self.file
                .sync_data()
                .map_err(io("sync ride ring", &self.path))?;
        }
        Ok(())
    }

    /// Records a bare mark in slot 0, durably (a ring started for an
    /// existing log, or the log found past the ring's mark at open).
    pub fn reset(&self, mark: &Mark) -> Result<(), ValidatorError> {
        self.file
            .write_all_at(&encode_mark(MARK_MAGIC, mark), 0)
            .map_err(io("write ride ring mark", &self.path))?;
        self.file
            .sync_data()
            .map_err(io("sync ride ring", &self.path))
    }

    /// Path of the ring file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(seq: u64) -> Vec<u8> {
        format!("record {seq}").into_bytes()
    }

    #[test]
    fn highest_valid_entry_is_the_mark_and_a_torn_entry_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let (r, c) = RideRing::open(dir.path(), true).unwrap();
        assert_eq!(c.mark(), None);
        for seq in 1..=5 {
            r.record(seq, &rec(seq), 0).unwrap();
        }
        drop(r);
        let (_, c) = RideRing::open(dir.path(), true).unwrap();
        assert_eq!(c.mark().unwrap().seq, 5);
        assert_eq!(c.entries.len(), 5);
        assert_eq!(c.entries[4].record, rec(5));
        // Tear entry 5: 4 is the mark, the torn slot is counted.
        let f = OpenOptions::new()
            .write(true)
            .open(dir.path().join(RING_FILE))
            .unwrap();
        f.write_all_at(&[0xff; 10], entry_offset(5) + 20).unwrap();
        let (_, c) = RideRing::open(dir.path(), true).unwrap();
        assert_eq!(c.mark().unwrap().seq, 4);
        assert_eq!(c.invalid_slots, 1);
    }

    #[test]
    fn the_ring_refuses_to_overwrite_a_record_sled_has_not_made_durable() {
        let dir = tempfile::tempdir().unwrap();
        let (r, _) = RideRing::open(dir.path(), true).unwrap();
        // Slots 1..=RING_SLOTS hold rides sled has not synced (durable through 0).
        for seq in 1..=RING_SLOTS {
            r.record(seq, &rec(seq), 0).unwrap();
        }
        // Ride RING_SLOTS + 1 would overwrite ride 1: refused.
        let e = r
            .record(RING_SLOTS + 1, &rec(RING_SLOTS + 1), 0)
            .unwrap_err();
        assert!(matches!(e, ValidatorError::RingOverrun { .. }), "{e}");
        assert_eq!(e.code(), "ride_ring_overrun");
        // Ride 1 is intact.
        drop(r);
        let (r, c) = RideRing::open(dir.path(), true).unwrap();
        assert_eq!(c.entries.first().unwrap().record, rec(1));
        // Once sled is durable through 1, ride RING_SLOTS + 1 may take its slot.
        r.record(RING_SLOTS + 1, &rec(RING_SLOTS + 1), 1).unwrap();
    }

    #[test]
    fn a_legacy_mark_moves_into_the_ring() {
        let dir = tempfile::tempdir().unwrap();
        let m = Mark {
            seq: 7,
            chain_hash: [7; 32],
        };
        let mut legacy = vec![0u8; 2 * MARK_LEN];
        legacy[MARK_LEN..].copy_from_slice(&encode_mark(LEGACY_MAGIC, &m));
        std::fs::write(dir.path().join(LEGACY_HWM_FILE), legacy).unwrap();
        let (_, c) = RideRing::open(dir.path(), true).unwrap();
        assert_eq!(c.mark(), Some(m));
        assert!(!dir.path().join(LEGACY_HWM_FILE).exists());
        let (_, c) = RideRing::open(dir.path(), true).unwrap();
        assert_eq!(c.mark(), Some(m));
    }
}
