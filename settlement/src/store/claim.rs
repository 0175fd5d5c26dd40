//! The service's write lock: a process mutex and the store's cluster-wide
//! writer claim taken together.
//!
//! Every read-decide-write section (ingest of a batch, an account change,
//! a settlement chunk, a purge, a deny-list refresh) runs under it. With
//! sled one process owns the database and the mutex is the whole story.
//! With PostgreSQL several instances share the database: the claim (an
//! advisory lock on a connection that also carries the section's commits,
//! see `store::postgres`) is what excludes the other instances; the mutex
//! only keeps this process's threads from claiming twice.

use super::Store;
use std::sync::{Arc, LockResult, Mutex, MutexGuard, PoisonError};

/// The write lock (see the module docs).
pub struct WriteLock {
    local: Mutex<()>,
    store: Arc<dyn Store>,
}

impl std::fmt::Debug for WriteLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteLock")
            .field("backend", &self.store.backend())
            .finish_non_exhaustive()
    }
}

/// Held while a section runs; releases the claim, then the mutex.
pub struct WriteGuard<'a> {
    store: &'a dyn Store,
    _local: MutexGuard<'a, ()>,
}

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        // Fields drop after this: the claim goes before the mutex.
        self.store.release_writer();
    }
}

impl WriteLock {
    /// A write lock over `store`'s claim.
    pub fn new(store: Arc<dyn Store>) -> WriteLock {
        WriteLock {
            local: Mutex::new(()),
            store,
        }
    }

    /// The store whose claim this lock takes.
    pub fn store(&self) -> &dyn Store {
        &*self.store
    }

    /// Waits for the mutex, then for the store's claim. Like
    /// [`Mutex::lock`], a panic of an earlier holder shows as `Err` holding
    /// the guard (callers go on: every section commits atomically or not at
    /// all). A claim that cannot be taken makes the section's commits fail.
    pub fn lock(&self) -> LockResult<WriteGuard<'_>> {
        let (local, poisoned) = match self.local.lock() {
            Ok(g) => (g, false),
            Err(p) => (p.into_inner(), true),
        };
        self.store.claim_writer();
        let guard = WriteGuard {
            store: &*self.store,
            _local: local,
        };
        if poisoned {
            Err(PoisonError::new(guard))
        } else {
            Ok(guard)
        }
    }
}
