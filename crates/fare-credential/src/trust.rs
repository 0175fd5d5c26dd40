//! Trust list (issuer keys with validity windows) and deny list.

use crate::credential::CredentialId;
use crate::keys::{parse_public_key, KeyError};
use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// One issuer key the deployment root vouches for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuerKey {
    /// Id that credentials name.
    pub key_id: u32,
    /// Public key, 32 bytes.
    #[serde(with = "hex32")]
    pub public_key: [u8; 32],
    /// Credentials signed by it are accepted from this time...
    pub valid_from_unix_s: u64,
    /// ...until this time, inclusive (the key is retired after it).
    pub valid_until_unix_s: u64,
}

/// Serde helper: 32 bytes as 64 hex characters.
pub mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer};
    /// Serialize as hex.
    pub fn serialize<S: Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }
    /// Deserialize from hex.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        let v = hex::decode(&s).map_err(serde::de::Error::custom)?;
        v.try_into().map_err(|v: Vec<u8>| {
            serde::de::Error::custom(format!("expected 32 bytes, got {}", v.len()))
        })
    }
}

/// The issuer keys a reader trusts, with their parsed public keys.
#[derive(Clone, Debug, Default)]
pub struct TrustList {
    keys: HashMap<u32, (IssuerKey, VerifyingKey)>,
}

impl TrustList {
    /// Builds a trust list, refusing invalid or weak keys and duplicate ids.
    pub fn new(keys: impl IntoIterator<Item = IssuerKey>) -> Result<TrustList, TrustError> {
        let mut map = HashMap::new();
        for k in keys {
            let vk = parse_public_key(&k.public_key).map_err(|e| TrustError::BadKey {
                key_id: k.key_id,
                error: e,
            })?;
            if k.valid_until_unix_s < k.valid_from_unix_s {
                return Err(TrustError::EmptyWindow { key_id: k.key_id });
            }
            if map.insert(k.key_id, (k.clone(), vk)).is_some() {
                return Err(TrustError::DuplicateKeyId { key_id: k.key_id });
            }
        }
        Ok(TrustList { keys: map })
    }
    /// Looks up a key by id.
    pub fn get(&self, key_id: u32) -> Option<&(IssuerKey, VerifyingKey)> {
        self.keys.get(&key_id)
    }
    /// The keys, sorted by id.
    pub fn keys(&self) -> Vec<IssuerKey> {
        let mut v: Vec<_> = self.keys.values().map(|(k, _)| k.clone()).collect();
        v.sort_by_key(|k| k.key_id);
        v
    }
    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }
    /// True when no key is trusted.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Why a trust list could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TrustError {
    /// A public key is unusable.
    #[error("issuer key {key_id}: {error}")]
    BadKey {
        /// The key id.
        key_id: u32,
        /// What is wrong with it.
        error: KeyError,
    },
    /// Two entries share an id.
    #[error("issuer key id {key_id} appears twice in the trust list")]
    DuplicateKeyId {
        /// The key id.
        key_id: u32,
    },
    /// valid_until before valid_from.
    #[error("issuer key {key_id}: validity window ends before it starts")]
    EmptyWindow {
        /// The key id.
        key_id: u32,
    },
}

/// The set of revoked credential ids. A sorted vector: 16 bytes per entry
/// (1M entries = 16 MiB) and ~20 comparisons per lookup.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DenyList {
    sorted: Vec<CredentialId>,
}

impl DenyList {
    /// Builds from any ids (sorted and de-duplicated here).
    pub fn from_ids(ids: impl IntoIterator<Item = CredentialId>) -> DenyList {
        let mut sorted: Vec<_> = ids.into_iter().collect();
        sorted.sort_unstable();
        sorted.dedup();
        DenyList { sorted }
    }
    /// True when the id is revoked.
    pub fn contains(&self, id: &CredentialId) -> bool {
        self.sorted.binary_search(id).is_ok()
    }
    /// Applies a delta: adds then removes.
    pub fn apply_delta(&mut self, add: &[CredentialId], remove: &[CredentialId]) {
        let mut remove_sorted = remove.to_vec();
        remove_sorted.sort_unstable();
        let mut merged = Vec::with_capacity(self.sorted.len() + add.len());
        merged.extend(
            self.sorted
                .iter()
                .copied()
                .filter(|id| remove_sorted.binary_search(id).is_err()),
        );
        merged.extend(
            add.iter()
                .copied()
                .filter(|id| remove_sorted.binary_search(id).is_err()),
        );
        merged.sort_unstable();
        merged.dedup();
        self.sorted = merged;
    }
    /// Number of revoked ids.
    pub fn len(&self) -> usize {
        self.sorted.len()
    }
    /// True when nothing is revoked.
    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }
    /// The ids, sorted.
    pub fn ids(&self) -> &[CredentialId] {
        &self.sorted
    }
}
