//! Credentials that re-verification already checked, kept between the
//! runs of one process: a rider's credential is checked (issuer signature,
//! device key) by the first run that sees one of its rides, not again by
//! every later run of the day that sees another.
//!
//! Exact: an entry is the credential's full bytes with the issuer public
//! key its key id named when it was checked, and the check is a function of
//! those alone (the issuer key's validity window is checked per ride, at
//! the reader's time, outside the cache). Only accepted credentials are
//! kept; a refused one is checked again each time. Bounded: at most
//! [`MAX_CACHED_CREDENTIALS`] entries in two generations (the older one is
//! dropped when the newer fills; a hit in the older one moves it up).

use ed25519_dalek::VerifyingKey;
use fare_credential::RejectReason;
use std::collections::HashMap;
use std::sync::Mutex;

/// Most credentials a [`CredentialCache`] holds (≈ 350 bytes each: the
/// credential, the issuer key and the decompressed device key, so ≈ 140 MB
/// when full); a day's riders beyond it are checked again by later runs.
pub const MAX_CACHED_CREDENTIALS: usize = 400_000;

/// A credential's bytes and the issuer public key that checked it.
type Key = ([u8; 126], [u8; 32]);

/// Credentials accepted by re-verification (see the module docs).
#[derive(Debug, Default)]
pub struct CredentialCache {
    inner: Mutex<Generations>,
}

#[derive(Debug, Default)]
struct Generations {
    current: HashMap<Key, VerifyingKey>,
    previous: HashMap<Key, VerifyingKey>,
}

impl Generations {
    fn get(&mut self, k: &Key) -> Option<VerifyingKey> {
        if let Some(vk) = self.current.get(k) {
            return Some(*vk);
        }
        let vk = self.previous.remove(k)?;
        self.put(*k, vk);
        Some(vk)
    }
    fn put(&mut self, k: Key, vk: VerifyingKey) {
        if self.current.len() >= MAX_CACHED_CREDENTIALS / 2 {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(k, vk);
    }
}

/// Known credentials with their device key, and the others with the
/// index of a code carrying each.
type Split<'p> = (
    Vec<(&'p [u8; 126], VerifyingKey)>,
    Vec<(&'p [u8; 126], usize)>,
);

impl CredentialCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Generations> {
        // The maps stay consistent whatever panicked while the lock was held.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
    /// Number of credentials held.
    pub fn len(&self) -> usize {
        let g = self.lock();
        g.current.len() + g.previous.len()
    }
    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Splits `distinct` (credential → index of a code carrying it) into
    /// the credentials held (checked before with the issuer key that
    /// `issuer_of(index)` gives now) and the others.
    pub(super) fn split<'p>(
        &self,
        distinct: HashMap<&'p [u8; 126], usize>,
        issuer_of: impl Fn(usize) -> Option<[u8; 32]>,
    ) -> Split<'p> {
        let mut g = self.lock();
        let (mut known, mut new) = (Vec::new(), Vec::with_capacity(distinct.len()));
        for (cred, i) in distinct {
            match issuer_of(i).and_then(|pk| g.get(&(*cred, pk))) {
                Some(vk) => known.push((cred, vk)),
                None => new.push((cred, i)),
            }
        }
        (known, new)
    }
    /// Keeps the accepted credentials of `checked` (credential, index of a
    /// code carrying it, result), with the issuer key that checked each.
    pub(super) fn insert(
        &self,
        checked: &[(&[u8; 126], usize, Result<VerifyingKey, RejectReason>)],
        issuer_of: impl Fn(usize) -> Option<[u8; 32]>,
    ) {
        let mut g = self.lock();
        for (cred, i, result) in checked {
            if let (Ok(vk), Some(pk)) = (result, issuer_of(*i)) {
                g.put((**cred, pk), *vk);
            }
        }
    }
}
