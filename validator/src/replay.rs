//! The replay cache ("one use per reader while valid"), held in memory.
//!
//! Why in memory: the durable ride log already holds every accepted code, so
//! the cache is rebuilt from the log's tail at open instead of being written
//! beside each ride. That keeps the accept path to one sled insert and one
//! `flush()` (the latency budget), while a crash still cannot let a replay
//! through: a ride that reached the disk is found again at the next open.
//!
//! Two keys per accepted code: the code's digest, and (credential id, device
//! sequence). The second catches a code with the same credential and
//! sequence but different bytes (a phone re-signing a sequence with another
//! time), which the digest alone would let through.
//!
//! The cache is bounded by physics rather than a constant: entries live from
//! the ride until the code could no longer pass anyway (issue + validity +
//! skew + `replay_grace_s`, about 1.5 h by default), i.e. a few hundred to a
//! few thousand boardings on one bus; the log's size limit bounds it
//! absolutely.

use fare_credential::RideCode;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Key prefix of a digest entry in the spill tree.
pub(crate) const KEY_DIGEST: u8 = b'D';
/// Key prefix of a (credential id, device sequence) entry in the spill tree.
pub(crate) const KEY_SEQ: u8 = b'S';

/// What the cache remembers of an accepted code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ReplayEntry {
    /// Reader sequence of the ride that used the code.
    pub seq: u64,
    /// Reader time of that ride.
    pub seen_unix_s: u64,
    /// After this reader time the code fails its time checks anyway.
    pub prune_after_unix_s: u64,
}

/// The two lookup keys of one code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ReplayKeys {
    pub digest: [u8; 32],
    pub seq: ([u8; 16], u32),
}

impl ReplayKeys {
    /// The keys of a parsed code.
    pub fn of(code: &RideCode) -> ReplayKeys {
        ReplayKeys {
            digest: code.digest(),
            seq: (code.credential().body().credential_id.0, code.device_seq()),
        }
    }

    /// Spill-tree key of the digest entry: `D` ‖ digest.
    pub fn digest_key(&self) -> [u8; 33] {
        let mut k = [0u8; 33];
        k[0] = KEY_DIGEST;
        k[1..].copy_from_slice(&self.digest);
        k
    }

    /// Spill-tree key of the sequence entry: `S` ‖ credential id ‖ device seq (BE).
    pub fn seq_key(&self) -> [u8; 21] {
        let mut k = [0u8; 21];
        k[0] = KEY_SEQ;
        k[1..17].copy_from_slice(&self.seq.0);
        k[17..].copy_from_slice(&self.seq.1.to_be_bytes());
        k
    }
}

/// In-memory replay cache.
#[derive(Debug, Default)]
pub(crate) struct ReplayCache {
    by_digest: HashMap<[u8; 32], ReplayEntry>,
    by_seq: HashMap<([u8; 16], u32), ReplayEntry>,
}

impl ReplayCache {
    /// The entry of an earlier use of this code, if any.
    pub fn lookup(&self, keys: &ReplayKeys) -> Option<ReplayEntry> {
        self.by_digest
            .get(&keys.digest)
            .or_else(|| self.by_seq.get(&keys.seq))
            .copied()
    }

    /// Remembers a use; an existing entry for a key is kept if it names an
    /// earlier ride (the first use is the one reported).
    pub fn insert(&mut self, keys: &ReplayKeys, entry: ReplayEntry) {
        let keep_first = |slot: &mut ReplayEntry| {
            if entry.seq < slot.seq {
                *slot = entry;
            }
        };
        self.by_digest
            .entry(keys.digest)
            .and_modify(keep_first)
            .or_insert(entry);
        self.by_seq
            .entry(keys.seq)
            .and_modify(keep_first)
            .or_insert(entry);
    }

    /// Inserts one entry read back from the spill tree by its key.
    /// Returns false for a key of unknown shape.
    pub fn insert_spilled(&mut self, key: &[u8], entry: ReplayEntry) -> bool {
        match (key.first(), key.len()) {
            (Some(&KEY_DIGEST), 33) => {
                let mut d = [0u8; 32];
                d.copy_from_slice(&key[1..]);
                self.by_digest.entry(d).or_insert(entry);
                true
            }
            (Some(&KEY_SEQ), 21) => {
                let mut id = [0u8; 16];
                id.copy_from_slice(&key[1..17]);
                let mut s = [0u8; 4];
                s.copy_from_slice(&key[17..]);
                self.by_seq
                    .entry((id, u32::from_be_bytes(s)))
                    .or_insert(entry);
                true
            }
            _ => false,
        }
    }

    /// Drops entries whose code can no longer pass at `now`. Returns how many.
    pub fn prune(&mut self, now_unix_s: u64) -> usize {
        let before = self.len();
        self.by_digest
            .retain(|_, e| now_unix_s <= e.prune_after_unix_s);
        self.by_seq
            .retain(|_, e| now_unix_s <= e.prune_after_unix_s);
        before - self.len()
    }

    /// Number of entries (two per live code).
    pub fn len(&self) -> usize {
        self.by_digest.len() + self.by_seq.len()
    }
}
