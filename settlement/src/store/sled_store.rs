//! The sled 0.34 backend: one tree, keys prefixed by the [`Space`] byte.

use super::{Space, Store, WriteSet};
use crate::error::StoreError;
use std::path::Path;
use std::sync::Mutex;

/// sled-backed [`Store`].
#[derive(Debug)]
pub struct SledStore {
    db: sled::Db,
    /// The sync after `flush()` that reaches the device (sled 0.34's flush
    /// ends in `sync_file_range`, which a power cut can undo).
    device: fare_durable::DeviceSync,
    tree: sled::Tree,
    // Commits check-then-apply; the mutex makes that sequence atomic with
    // respect to other commits of this process (sled's own transactions would
    // also work, but one batch is faster and simpler to reason about).
    commit_lock: Mutex<()>,
}

/// sled's page cache when none is configured (`sled_cache_mb`).
pub const DEFAULT_CACHE_BYTES: u64 = 256 << 20;

/// How long [`SledStore::open`] waits for a lock this process just released.
pub const LOCK_WAIT_MS: u64 = 5_000;

fn key(space: Space, k: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(1 + k.len());
    v.push(space as u8);
    v.extend_from_slice(k);
    v
}

impl SledStore {
    /// Opens (or creates) the database in `dir`.
    ///
    /// The directory's lock may still be held for a moment after this
    /// process dropped its last handle (sled 0.34's background I/O threads
    /// hold the file until their write ends), so a lock conflict is retried
    /// for up to [`LOCK_WAIT_MS`]; another process holding it still fails.
    /// Its page cache is [`DEFAULT_CACHE_BYTES`] ([`SledStore::open_sized`]
    /// sets it).
    pub fn open(dir: &Path) -> Result<SledStore, StoreError> {
        SledStore::open_sized(dir, DEFAULT_CACHE_BYTES)
    }

    /// As [`SledStore::open`], with a page cache of `cache_bytes`: what
    /// does not fit is read back from the log file (and decoded) at each
    /// use, which a settlement run does for every account and reader it
    /// touches.
    pub fn open_sized(dir: &Path, cache_bytes: u64) -> Result<SledStore, StoreError> {
        let config = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            // Settlement chunks are large write batches: favour write speed
            // over disk space.
            .mode(sled::Mode::HighThroughput)
            // Durability comes from the explicit `flush()` of every commit; a
            // background flusher would only compete with large chunk commits.
            .flush_every_ms(None);
        let wait = std::time::Duration::from_millis(LOCK_WAIT_MS);
        let db = fare_durable::open_waiting_for_lock(&config, wait)
            .map_err(|e| StoreError::Backend(format!("open {}: {e}", dir.display())))?;
        let tree = db.open_tree("settlement")?;
        let device = fare_durable::DeviceSync::open_watching_blobs(dir)
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        Ok(SledStore {
            db,
            device,
            tree,
            commit_lock: Mutex::new(()),
        })
    }
    /// Checks the preconditions and applies the write set as one sled
    /// batch (not flushed), under the caller's `commit_lock`.
    fn apply(&self, writes: WriteSet) -> Result<(), StoreError> {
        for (space, k, expected) in &writes.checks {
            let cur = self.tree.get(key(*space, k))?;
            if cur.as_deref() != expected.as_deref() {
                return Err(StoreError::Conflict {
                    what: "precondition",
                });
            }
        }
        let mut batch = sled::Batch::default();
        for (space, k) in &writes.deletes {
            batch.remove(key(*space, k));
        }
        for (space, k, v) in writes.puts {
            batch.insert(key(space, &k), v);
        }
        self.tree.apply_batch(batch)?;
        Ok(())
    }

    /// Flushes everything to the device (commits already do).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        self.device
            .sync()
            .map_err(|e| StoreError::Backend(e.to_string()))
    }
}

impl Store for SledStore {
    fn get(&self, space: Space, k: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.tree.get(key(space, k))?.map(|v| v.to_vec()))
    }

    fn get_many(&self, space: Space, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        super::check_read_len("get_many", keys.len())?;
        // In memory (sled's page cache): a loop is as good as a batch.
        keys.iter().map(|k| self.get(space, k)).collect()
    }

    fn range_many(
        &self,
        space: Space,
        bounds: &[(Vec<u8>, Vec<u8>)],
        limit_each: usize,
    ) -> Result<Vec<super::Entries>, StoreError> {
        super::check_read_len("range_many", bounds.len())?;
        bounds
            .iter()
            .map(|(start, end)| self.range(space, start, end, limit_each))
            .collect()
    }

    fn scan(
        &self,
        space: Space,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<super::Entries, StoreError> {
        let p = key(space, prefix);
        let mut out = Vec::new();
        let iter = match after {
            Some(a) => {
                let start = key(space, a);
                self.tree
                    .range((std::ops::Bound::Excluded(start), std::ops::Bound::Unbounded))
            }
            None => self.tree.range(p.clone()..),
        };
        for item in iter {
            let (k, v) = item?;
            if !k.starts_with(&p) || out.len() >= limit {
                break;
            }
            out.push((k[1..].to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    fn range(
        &self,
        space: Space,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<super::Entries, StoreError> {
        let mut out = Vec::new();
        for item in self.tree.range(key(space, start)..key(space, end)) {
            if out.len() >= limit {
                break;
            }
            let (k, v) = item?;
            out.push((k[1..].to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    fn commit(&self, writes: WriteSet) -> Result<(), StoreError> {
        let _guard = self.commit_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.apply(writes)?;
        // The durability point: nothing is acknowledged before this returns,
        // and it reaches the device (`fdatasync`), not only the page cache.
        self.flush()
    }

    fn commit_unsynced(&self, writes: WriteSet) -> Result<(), StoreError> {
        let _guard = self.commit_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.apply(writes)
    }
}
