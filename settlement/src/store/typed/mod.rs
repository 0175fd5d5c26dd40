//! Typed access over a [`Store`], in four parts:
//!
//! * [`keys`]: how each space's keys are built (block keys, day keys,
//!   payment and code keys, the ride of a posting id);
//! * [`blocks`]: the block codec: rides, results and ride postings stored
//!   as blocks of many items ([`BlockCache`], read once and written once per
//!   write set, with a compare-and-swap on the bytes read), code sightings;
//! * `db`: the [`Db`] accessors (one typed read or queued write per kind);
//! * `tests`: round trips across block boundaries, exactly-once refusals,
//!   stale blocks failing their commit.
//!
//! Every scan a request or a run makes is paged by [`PAGE`] or bounded by
//! a named constant.

use super::{Entries, Space, Store, WriteSet, MAX_KEYS_PER_READ};
use crate::error::StoreError;
use crate::model::*;
use fare_credential::codec;
use fare_credential::record::genesis_hash;
use fare_credential::{CredentialId, RideRecord};
use rayon::prelude::*;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

mod blocks;
mod db;
mod keys;
#[cfg(test)]
mod tests;

pub use blocks::*;
pub use keys::*;

/// Ledger accounts with this prefix are not in [`Space::AccountPostings`].
const OPERATOR_PREFIX: &str = "operator:";

/// Page size of internal scans: a scan reads at most this many entries per
/// store call (a full listing pages through).
pub const PAGE: usize = 4096;

/// A batched read of more than [`MAX_KEYS_PER_READ`] keys or ranges runs
/// at most this many store calls at once (on plain threads: they wait for
/// the database, not the CPU).
pub const READ_THREADS: usize = 4;

/// The published deny list: its version and ids (sorted).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DenyState {
    /// Bundle version that published it (0: never published).
    pub version: u64,
    /// Sorted ids.
    pub ids: Vec<CredentialId>,
    /// Hash of the trust list and tariff it was published with (a change bumps the version).
    pub material_hash: [u8; 32],
    /// When this version was published (server time in bundles must stay fresh).
    pub published_unix_s: u64,
}

/// Typed database over any [`Store`].
#[derive(Clone)]
pub struct Db {
    store: Arc<dyn Store>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").finish_non_exhaustive()
    }
}

/// Encodes a value for storage.
pub fn enc<T: Serialize>(what: &'static str, v: &T) -> Vec<u8> {
    // Encoding our own plain structs cannot fail short of a bug; the limit is 16 MiB.
    codec::encode(what, v).unwrap_or_else(|e| panic!("encoding {what} failed: {e}"))
}

fn dec<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    codec::decode(what, bytes).map_err(|e| StoreError::Corrupt {
        what,
        why: e.to_string(),
    })
}
