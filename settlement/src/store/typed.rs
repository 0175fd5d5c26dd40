//! Typed access over a [`Store`].

use super::{Space, Store, WriteSet};
use crate::error::StoreError;
use crate::model::*;
use fare_credential::codec;
use fare_credential::record::genesis_hash;
use fare_credential::{CredentialId, RideRecord};
use rayon::prelude::*;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Ledger accounts with this prefix are not in [`Space::AccountPostings`].
const OPERATOR_PREFIX: &str = "operator:";

/// Page size of internal scans.
const PAGE: usize = 4096;

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

/// Key of an account's day: `account ‖ 0 ‖ YYYYMMDD`.
pub fn day_key(account_id: &str, day: &str) -> Vec<u8> {
    let mut k = account_id.as_bytes().to_vec();
    k.push(0);
    k.extend(day.bytes().filter(|b| *b != b'-'));
    k
}

/// Rides per stored block of results (aligned on the reader sequence).
/// Results are written and read in bulk (a settlement chunk, reports,
/// purge), so one record per block instead of one per ride cuts the sled
/// writes of a chunk by ~40 %; 256 results (~30 KB) keep a record well
/// below sled's large-value threshold.
pub const RESULT_BLOCK_RIDES: u64 = 256;

/// Rides per stored block of raw ride records ([`Space::Rides`], aligned on
/// the reader sequence). Settlement reads rides only in bulk (a chunk reads
/// each reader's unsettled range once), and sled's cost is per record read
/// or written, not per byte: one record per 64 rides (~20 KB) instead of one
/// per ride cuts a 1M-ride run's reads from 1M records to ~16k.
pub const RIDE_BLOCK_RIDES: u64 = 64;

/// Key of the ride block holding `ride`: reader id BE ‖ (seq / block) BE.
pub fn ride_block_key(ride: RideId) -> Vec<u8> {
    block_key(ride.reader_id, ride.reader_seq / RIDE_BLOCK_RIDES)
}

/// Key of a per-reader block (rides, results): reader id BE ‖ block number BE.
fn block_key(reader_id: u32, block_no: u64) -> Vec<u8> {
    let mut k = reader_id.to_be_bytes().to_vec();
    k.extend_from_slice(&block_no.to_be_bytes());
    k
}

/// How one kind of block ([`Space::Rides`], [`Space::Results`],
/// [`Space::RidePostings`]) is stored.
pub trait BlockKind {
    /// What a block holds, sorted.
    type Item: Send + Sync + std::fmt::Debug;
    /// Where the blocks live.
    const SPACE: Space;
    /// Whether each written block carries a compare-and-swap precondition on
    /// the bytes read (blocks that concurrent writers could both extend).
    const CHECKED: bool;
    /// Decodes a stored block.
    fn decode(v: &[u8]) -> Result<Vec<Self::Item>, StoreError>;
    /// Encodes a block.
    fn encode(items: &[Self::Item]) -> Vec<u8>;
}

/// Read-modify-write access to blocks of one kind within one [`WriteSet`]:
/// each block is read at most once and written once by
/// [`BlockCache::write`], however many of its items change.
#[derive(Debug)]
pub struct BlockCache<K: BlockKind> {
    blocks: HashMap<Vec<u8>, LoadedBlock<K::Item>>,
    dirty: HashSet<Vec<u8>>,
}

/// A block as read.
#[derive(Debug)]
struct LoadedBlock<T> {
    /// The stored bytes, kept for the commit's precondition when the kind is
    /// checked.
    raw: Option<Vec<u8>>,
    items: Vec<T>,
}

impl<K: BlockKind> Default for BlockCache<K> {
    fn default() -> Self {
        BlockCache {
            blocks: HashMap::new(),
            dirty: HashSet::new(),
        }
    }
}

impl<K: BlockKind> BlockCache<K> {
    /// The block at `key` (read on first use). Callers that change it
    /// insert `key` into `dirty`.
    fn block(&mut self, db: &Db, key: &[u8]) -> Result<&mut Vec<K::Item>, StoreError> {
        if !self.blocks.contains_key(key) {
            let raw = db.store.get(K::SPACE, key)?;
            let items = match &raw {
                Some(v) => K::decode(v)?,
                None => Vec::new(),
            };
            let raw = if K::CHECKED { raw } else { None };
            self.blocks.insert(key.to_vec(), LoadedBlock { raw, items });
        }
        Ok(&mut self.blocks.get_mut(key).expect("just loaded").items)
    }
    /// Removes the items `keep` refuses from the block at `key`; true when
    /// one was removed (only then is the block rewritten).
    fn remove_where(
        &mut self,
        db: &Db,
        key: Vec<u8>,
        keep: impl FnMut(&K::Item) -> bool,
    ) -> Result<bool, StoreError> {
        let items = self.block(db, &key)?;
        let before = items.len();
        items.retain(keep);
        let removed = items.len() != before;
        if removed {
            self.dirty.insert(key);
        }
        Ok(removed)
    }
    /// Queues every changed block (with its precondition when `K::CHECKED`;
    /// an emptied block is deleted). Encoding runs on all cores: a
    /// settlement chunk writes thousands of blocks.
    pub fn write(self, w: &mut WriteSet) {
        let encoded: Vec<(Vec<u8>, Option<Vec<u8>>)> = self
            .dirty
            .into_par_iter()
            .map(|key| {
                let items = &self.blocks[&key].items;
                let v = (!items.is_empty()).then(|| K::encode(items));
                (key, v)
            })
            .collect();
        for (key, v) in encoded {
            if K::CHECKED {
                w.check(K::SPACE, key.clone(), self.blocks[&key].raw.clone());
            }
            match v {
                Some(v) => w.put(K::SPACE, key, v),
                None => w.delete(K::SPACE, key),
            }
        }
    }
}

/// Blocks of raw ride records: value (reader seq BE (8) ‖ flags (1) ‖
/// length BE (4) ‖ encoded ride record v1) × n, sorted by seq. Flag bit 0:
/// ingest marked the ride for strict re-verification
/// (`reverify::code_needs_strict`). Checked: ingest extends them.
#[derive(Debug)]
pub struct RideBlock;

/// One ride of a ride block (the record owned, or borrowed from the block
/// bytes while reading).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockRide<R = Vec<u8>> {
    /// Reader sequence.
    pub seq: u64,
    /// Marked at ingest: its device signature must be checked with
    /// `verify_strict` alone, never in a batch.
    pub strict: bool,
    /// The encoded ride record v1, exactly as the reader signed it.
    pub record: R,
}

/// Bytes before a ride block entry's record: seq (8), flags (1), length (4).
const RIDE_ENTRY_HEADER: usize = 13;
/// Ride block entry flag: marked for strict re-verification.
const RIDE_FLAG_STRICT: u8 = 1;

impl BlockKind for RideBlock {
    type Item = BlockRide;
    const SPACE: Space = Space::Rides;
    const CHECKED: bool = true;
    fn decode(v: &[u8]) -> Result<Vec<BlockRide>, StoreError> {
        Ok(ride_block_entries(v)?
            .into_iter()
            .map(|r| BlockRide {
                seq: r.seq,
                strict: r.strict,
                record: r.record.to_vec(),
            })
            .collect())
    }
    fn encode(rides: &[BlockRide]) -> Vec<u8> {
        let mut v = Vec::with_capacity(
            rides
                .iter()
                .map(|r| RIDE_ENTRY_HEADER + r.record.len())
                .sum(),
        );
        for r in rides {
            v.extend_from_slice(&r.seq.to_be_bytes());
            v.push(if r.strict { RIDE_FLAG_STRICT } else { 0 });
            v.extend_from_slice(&(r.record.len() as u32).to_be_bytes());
            v.extend_from_slice(&r.record);
        }
        v
    }
}

/// The entries of a ride block, records borrowed from `v`.
fn ride_block_entries(mut v: &[u8]) -> Result<Vec<BlockRide<&[u8]>>, StoreError> {
    let corrupt = |why: &str| StoreError::Corrupt {
        what: "ride_block",
        why: why.into(),
    };
    let mut out = Vec::new();
    while !v.is_empty() {
        if v.len() < RIDE_ENTRY_HEADER {
            return Err(corrupt("truncated entry"));
        }
        let seq = u64::from_be_bytes(v[..8].try_into().expect("8 bytes"));
        let flags = v[8];
        if flags & !RIDE_FLAG_STRICT != 0 {
            return Err(corrupt(&format!("unknown flags {flags:#04x} at seq {seq}")));
        }
        let len = u32::from_be_bytes(v[9..13].try_into().expect("4 bytes")) as usize;
        let body = v
            .get(RIDE_ENTRY_HEADER..RIDE_ENTRY_HEADER + len)
            .ok_or_else(|| corrupt("truncated entry"))?;
        out.push(BlockRide {
            seq,
            strict: flags & RIDE_FLAG_STRICT != 0,
            record: body,
        });
        v = &v[RIDE_ENTRY_HEADER + len..];
    }
    Ok(out)
}

/// Ride blocks of one write set (ingest, purge).
pub type RideBlocks = BlockCache<RideBlock>;

impl BlockCache<RideBlock> {
    /// Stores a ride's encoded record and its strict mark (replacing any
    /// held one).
    pub fn put(
        &mut self,
        db: &Db,
        ride: RideId,
        record: Vec<u8>,
        strict: bool,
    ) -> Result<(), StoreError> {
        let key = ride_block_key(ride);
        let rides = self.block(db, &key)?;
        let entry = BlockRide {
            seq: ride.reader_seq,
            strict,
            record,
        };
        match rides.binary_search_by_key(&ride.reader_seq, |r| r.seq) {
            Ok(i) => rides[i] = entry,
            Err(i) => rides.insert(i, entry),
        }
        self.dirty.insert(key);
        Ok(())
    }
    /// Removes a ride's record; true when there was one.
    pub fn remove(&mut self, db: &Db, ride: RideId) -> Result<bool, StoreError> {
        self.remove_where(db, ride_block_key(ride), |r| r.seq != ride.reader_seq)
    }
}

/// Key of the results block holding `ride`: reader id BE ‖ (seq / block) BE.
pub fn result_block_key(ride: RideId) -> Vec<u8> {
    block_key(ride.reader_id, ride.reader_seq / RESULT_BLOCK_RIDES)
}

/// Blocks of [`RideResult`]s, sorted by ride id. Unchecked: only the
/// settling thread (under the write lock) and purge write them.
#[derive(Debug)]
pub struct ResultBlock;

impl BlockKind for ResultBlock {
    type Item = RideResult;
    const SPACE: Space = Space::Results;
    const CHECKED: bool = false;
    fn decode(v: &[u8]) -> Result<Vec<RideResult>, StoreError> {
        dec("ride_results", v)
    }
    fn encode(items: &[RideResult]) -> Vec<u8> {
        enc("ride_results", &items)
    }
}

/// Result blocks of one write set (a settlement chunk, a re-rating, purge).
pub type ResultBlocks = BlockCache<ResultBlock>;

impl BlockCache<ResultBlock> {
    /// The stored (or already changed) result of a ride, for changing it.
    pub fn get_mut(
        &mut self,
        db: &Db,
        ride: RideId,
    ) -> Result<Option<&mut RideResult>, StoreError> {
        let key = result_block_key(ride);
        self.dirty.insert(key.clone());
        Ok(self.block(db, &key)?.iter_mut().find(|r| r.ride == ride))
    }
    /// Sets a ride's result (replacing any stored one).
    pub fn upsert(&mut self, db: &Db, r: RideResult) -> Result<(), StoreError> {
        let key = result_block_key(r.ride);
        let b = self.block(db, &key)?;
        match b.binary_search_by_key(&r.ride, |x| x.ride) {
            Ok(i) => b[i] = r,
            Err(i) => b.insert(i, r),
        }
        self.dirty.insert(key);
        Ok(())
    }
    /// Removes a ride's result; true when there was one.
    pub fn remove(&mut self, db: &Db, ride: RideId) -> Result<bool, StoreError> {
        self.remove_where(db, result_block_key(ride), |r| r.ride != ride)
    }
}

/// One settled ride code: its device sequence and the first ride that held it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CodeSighting {
    /// Device sequence of the code.
    pub device_seq: u32,
    /// First ride that carried it (the charged one).
    pub ride: RideId,
}

/// Bytes per sighting in a [`Space::Codes`] value: device seq (4, BE) ‖ ride key (12).
const SIGHTING_BYTES: usize = 16;

/// Fixed-width encoding (16 bytes per sighting, no length prefix): this
/// record is rewritten for every chunk that touches the credential, so it is
/// kept as small and cheap to (de)code as possible.
fn encode_sightings(list: &[CodeSighting]) -> Vec<u8> {
    let mut v = Vec::with_capacity(list.len() * SIGHTING_BYTES);
    for s in list {
        v.extend_from_slice(&s.device_seq.to_be_bytes());
        v.extend_from_slice(&s.ride.key());
    }
    v
}

fn decode_sightings(v: &[u8]) -> Result<Vec<CodeSighting>, StoreError> {
    if !v.len().is_multiple_of(SIGHTING_BYTES) {
        return Err(StoreError::Corrupt {
            what: "code_sightings",
            why: format!("length {} is not a multiple of {SIGHTING_BYTES}", v.len()),
        });
    }
    Ok(v.chunks_exact(SIGHTING_BYTES)
        .map(|c| CodeSighting {
            device_seq: u32::from_be_bytes([c[0], c[1], c[2], c[3]]),
            ride: RideId::from_key(&c[4..]).expect("12-byte slice"),
        })
        .collect())
}

/// Key of a ride code: credential id ‖ device seq (fraud event keys).
pub fn code_key(cred: &CredentialId, device_seq: u32) -> Vec<u8> {
    let mut k = cred.0.to_vec();
    k.extend_from_slice(&device_seq.to_be_bytes());
    k
}

/// The ride of a ride posting id (`ride/R:S/rN`), or `None` for any other id.
pub fn ride_of_posting_id(posting_id: &str) -> Option<RideId> {
    let rest = posting_id.strip_prefix("ride/")?;
    let (ride, rev) = rest.split_once('/')?;
    rev.strip_prefix('r')?.parse::<u32>().ok()?;
    let (r, q) = ride.split_once(':')?;
    Some(RideId {
        reader_id: r.parse().ok()?,
        reader_seq: q.parse().ok()?,
    })
}

/// Byte that starts the suffix of a [`Space::AccountPostings`] key holding a
/// chunk's list of ride posting ids (never the first byte of a UTF-8 posting id).
const CHUNK_LIST_TAG: u8 = 0xff;

/// Blocks of ride postings ([`Space::RidePostings`]), sorted by posting id.
/// Checked: exactly once rests on it (see [`PostingBlocks`]).
#[derive(Debug)]
pub struct PostingBlock;

impl BlockKind for PostingBlock {
    type Item = Posting;
    const SPACE: Space = Space::RidePostings;
    const CHECKED: bool = true;
    fn decode(v: &[u8]) -> Result<Vec<Posting>, StoreError> {
        dec("ride_postings", v)
    }
    fn encode(items: &[Posting]) -> Vec<u8> {
        enc("ride_postings", &items)
    }
}

/// Ride posting blocks of one write set. Exactly once: adding a posting id
/// the block already holds is refused, and every written block carries a
/// compare-and-swap check against the bytes read, so the commit fails rather
/// than post twice.
pub type PostingBlocks = BlockCache<PostingBlock>;

impl BlockCache<PostingBlock> {
    /// Adds a ride posting (`ride/R:S/rN`) to its block.
    pub fn add(&mut self, db: &Db, p: Posting) -> Result<(), StoreError> {
        let ride = ride_of_posting_id(&p.posting_id).ok_or(StoreError::Corrupt {
            what: "ride_posting_id",
            why: format!("`{}` is not a ride posting id", p.posting_id),
        })?;
        let key = result_block_key(ride);
        let list = self.block(db, &key)?;
        match list.binary_search_by(|x| x.posting_id.as_str().cmp(&p.posting_id)) {
            Ok(_) => {
                return Err(StoreError::Conflict {
                    what: "posting already exists",
                })
            }
            Err(i) => list.insert(i, p),
        }
        self.dirty.insert(key);
        Ok(())
    }
}

/// Applies a posting to `balances` and calls `index` with each of its
/// ledger accounts whose posting index lists it: passenger and clearing
/// accounts only. Operator accounts are credited by nearly every ride: their
/// index would be as large as the postings themselves and nothing reads it
/// (operators are reported from the postings in bulk).
fn book_posting(p: &Posting, balances: &mut HashMap<String, i64>, mut index: impl FnMut(&str)) {
    let (debit, credit) = (p.debit.to_string(), p.credit.to_string());
    for acc in [&debit, &credit] {
        if !acc.starts_with(OPERATOR_PREFIX) {
            index(acc);
        }
    }
    *balances.entry(debit).or_insert(0) -= p.amount_minor;
    *balances.entry(credit).or_insert(0) += p.amount_minor;
}

/// Key of a payment: account ‖ 0 ‖ client payment id.
pub fn payment_key(account_id: &str, payment_id: &str) -> Vec<u8> {
    pair_key(account_id.as_bytes(), payment_id.as_bytes())
}

fn pair_key(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut k = a.to_vec();
    k.push(0);
    k.extend_from_slice(b);
    k
}

impl Db {
    /// Wraps a store.
    pub fn new(store: Arc<dyn Store>) -> Db {
        Db { store }
    }
    /// The raw store.
    pub fn store(&self) -> &dyn Store {
        &*self.store
    }
    /// Commits a write set.
    pub fn commit(&self, w: WriteSet) -> Result<(), StoreError> {
        if w.is_empty() && w.checks.is_empty() {
            return Ok(());
        }
        self.store.commit(w)
    }

    fn get<T: DeserializeOwned>(
        &self,
        what: &'static str,
        space: Space,
        key: &[u8],
    ) -> Result<Option<T>, StoreError> {
        match self.store.get(space, key)? {
            Some(v) => Ok(Some(dec(what, &v)?)),
            None => Ok(None),
        }
    }

    fn scan_all<T: DeserializeOwned>(
        &self,
        what: &'static str,
        space: Space,
        prefix: &[u8],
    ) -> Result<Vec<(Vec<u8>, T)>, StoreError> {
        let mut out = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = self.store.scan(space, prefix, after.as_deref(), PAGE)?;
            let n = page.len();
            for (k, v) in page {
                let t = dec(what, &v)?;
                after = Some(k.clone());
                out.push((k, t));
            }
            if n < PAGE {
                return Ok(out);
            }
        }
    }

    /// An account.
    pub fn account(&self, id: &str) -> Result<Option<Account>, StoreError> {
        self.get("account", Space::Accounts, id.as_bytes())
    }
    /// All accounts.
    pub fn accounts(&self) -> Result<Vec<Account>, StoreError> {
        Ok(self
            .scan_all("account", Space::Accounts, b"")?
            .into_iter()
            .map(|(_, a)| a)
            .collect())
    }
    /// Queues an account write.
    pub fn put_account(w: &mut WriteSet, a: &Account) {
        w.put(Space::Accounts, a.account_id.as_bytes(), enc("account", a));
    }

    /// A credential's record.
    pub fn credential(&self, id: &CredentialId) -> Result<Option<CredentialRecord>, StoreError> {
        self.get("credential", Space::Credentials, &id.0)
    }
    /// Credentials issued to an account.
    pub fn credentials_of(&self, account_id: &str) -> Result<Vec<CredentialRecord>, StoreError> {
        let mut prefix = account_id.as_bytes().to_vec();
        prefix.push(0);
        let keys = self
            .store
            .scan(Space::AccountCredentials, &prefix, None, usize::MAX)?;
        let mut out = Vec::new();
        for (k, _) in keys {
            let id: [u8; 16] = k[prefix.len()..]
                .try_into()
                .map_err(|_| StoreError::Corrupt {
                    what: "account_credentials",
                    why: "bad key length".into(),
                })?;
            if let Some(c) = self.credential(&CredentialId(id))? {
                out.push(c);
            }
        }
        Ok(out)
    }
    /// Queues a credential record and its account index entry.
    pub fn put_credential(w: &mut WriteSet, c: &CredentialRecord) {
        w.put(
            Space::Credentials,
            c.credential_id.0.to_vec(),
            enc("credential", c),
        );
        w.put(
            Space::AccountCredentials,
            pair_key(c.account_id.as_bytes(), &c.credential_id.0),
            Vec::new(),
        );
    }

    /// A reader.
    pub fn reader(&self, id: u32) -> Result<Option<Reader>, StoreError> {
        self.get("reader", Space::Readers, &id.to_be_bytes())
    }
    /// All readers.
    pub fn readers(&self) -> Result<Vec<Reader>, StoreError> {
        Ok(self
            .scan_all("reader", Space::Readers, b"")?
            .into_iter()
            .map(|(_, r)| r)
            .collect())
    }
    /// Queues a reader write.
    pub fn put_reader(w: &mut WriteSet, r: &Reader) {
        w.put(
            Space::Readers,
            r.reader_id.to_be_bytes().to_vec(),
            enc("reader", r),
        );
    }
    /// A reader's cursors, with the stored bytes (for compare-and-swap).
    pub fn reader_state(&self, id: u32) -> Result<(ReaderState, Option<Vec<u8>>), StoreError> {
        match self.store.get(Space::ReaderStates, &id.to_be_bytes())? {
            Some(raw) => Ok((dec("reader_state", &raw)?, Some(raw))),
            None => Ok((
                ReaderState {
                    acked_seq: 0,
                    head_hash: genesis_hash(id),
                    settled_seq: 0,
                },
                None,
            )),
        }
    }
    /// Queues a reader state write, checked against the state read before.
    pub fn put_reader_state(
        w: &mut WriteSet,
        id: u32,
        expected_raw: Option<Vec<u8>>,
        s: &ReaderState,
    ) {
        w.check(Space::ReaderStates, id.to_be_bytes().to_vec(), expected_raw);
        w.put(
            Space::ReaderStates,
            id.to_be_bytes().to_vec(),
            enc("reader_state", s),
        );
    }

    /// Calls `f` with each held ride `from..=to` of a reader, in sequence
    /// order.
    fn each_ride(
        &self,
        reader_id: u32,
        from: u64,
        to: u64,
        mut f: impl FnMut(BlockRide<&[u8]>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        if to < from {
            return Ok(());
        }
        let start = block_key(reader_id, from / RIDE_BLOCK_RIDES);
        // Just past the block holding `to`.
        let end = block_key(reader_id, to / RIDE_BLOCK_RIDES + 1);
        for (_, v) in self.store.range(Space::Rides, &start, &end, usize::MAX)? {
            for r in ride_block_entries(&v)? {
                if (from..=to).contains(&r.seq) {
                    f(r)?;
                }
            }
        }
        Ok(())
    }
    /// Encoded rides `from..=to` of a reader (those held), in sequence order.
    pub fn ride_bytes(
        &self,
        reader_id: u32,
        from: u64,
        to: u64,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut out = Vec::new();
        self.each_ride(reader_id, from, to, |r| {
            out.push(r.record.to_vec());
            Ok(())
        })?;
        Ok(out)
    }
    /// Number of raw ride records held (all readers).
    pub fn ride_count(&self) -> Result<u64, StoreError> {
        let mut n = 0;
        for (_, v) in self.store.scan(Space::Rides, b"", None, usize::MAX)? {
            n += ride_block_entries(&v)?.len() as u64;
        }
        Ok(n)
    }
    /// Parsed rides `from..=to` of a reader, each with its strict mark
    /// (set at ingest: verify its device signature strictly, never in a batch).
    pub fn rides(
        &self,
        reader_id: u32,
        from: u64,
        to: u64,
    ) -> Result<Vec<(RideRecord, bool)>, StoreError> {
        let mut out = Vec::new();
        self.each_ride(reader_id, from, to, |r| {
            let ride = RideRecord::decode_v1(r.record).map_err(|e| StoreError::Corrupt {
                what: "ride",
                why: e.to_string(),
            })?;
            out.push((ride, r.strict));
            Ok(())
        })?;
        Ok(out)
    }
    /// The sequence numbers of a reader's rides in `from..=to` that ingest
    /// marked for strict re-verification.
    pub fn strict_rides(&self, reader_id: u32, from: u64, to: u64) -> Result<Vec<u64>, StoreError> {
        let mut seqs = Vec::new();
        self.each_ride(reader_id, from, to, |r| {
            if r.strict {
                seqs.push(r.seq);
            }
            Ok(())
        })?;
        Ok(seqs)
    }

    /// A ride's result.
    pub fn result(&self, ride: RideId) -> Result<Option<RideResult>, StoreError> {
        let block = self.read_block::<ResultBlock>(&result_block_key(ride))?;
        Ok(block.into_iter().find(|r| r.ride == ride))
    }
    /// All ride results, in ride id order.
    pub fn results(&self) -> Result<Vec<RideResult>, StoreError> {
        self.scan_blocks::<ResultBlock>()
    }
    /// The items of one stored block (none when it is absent).
    fn read_block<K: BlockKind>(&self, key: &[u8]) -> Result<Vec<K::Item>, StoreError> {
        match self.store.get(K::SPACE, key)? {
            Some(v) => K::decode(&v),
            None => Ok(Vec::new()),
        }
    }
    /// The items of every stored block of a kind, in key order.
    fn scan_blocks<K: BlockKind>(&self) -> Result<Vec<K::Item>, StoreError> {
        let mut out = Vec::new();
        for (_, v) in self.store.scan(K::SPACE, b"", None, usize::MAX)? {
            out.extend(K::decode(&v)?);
        }
        Ok(out)
    }
    /// All incidents.
    pub fn incidents(&self) -> Result<Vec<Incident>, StoreError> {
        Ok(self
            .scan_all("incident", Space::Incidents, b"")?
            .into_iter()
            .map(|(_, r)| r)
            .collect())
    }
    /// Queues an incident (idempotent key).
    pub fn put_incident(w: &mut WriteSet, i: &Incident) {
        w.put(Space::Incidents, i.key(), enc("incident", i));
    }
    /// All fraud events.
    pub fn fraud_events(&self) -> Result<Vec<FraudEvent>, StoreError> {
        Ok(self
            .scan_all("fraud_event", Space::Fraud, b"")?
            .into_iter()
            .map(|(_, r)| r)
            .collect())
    }

    /// A ledger account's balance (credits minus debits).
    pub fn balance(&self, ledger_account: &str) -> Result<i64, StoreError> {
        Ok(self
            .get::<i64>("balance", Space::Balances, ledger_account.as_bytes())?
            .unwrap_or(0))
    }
    /// All balances.
    pub fn balances(&self) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(self
            .scan_all::<i64>("balance", Space::Balances, b"")?
            .into_iter()
            .map(|(k, v)| (String::from_utf8_lossy(&k).into_owned(), v))
            .collect())
    }
    /// A posting.
    pub fn posting(&self, id: &str) -> Result<Option<Posting>, StoreError> {
        self.posting_via(id, &mut HashMap::new())
    }
    /// A posting: a ride posting from its block (read once into `blocks`,
    /// for callers looking up many), any other from [`Space::Postings`].
    fn posting_via(
        &self,
        id: &str,
        blocks: &mut HashMap<Vec<u8>, Vec<Posting>>,
    ) -> Result<Option<Posting>, StoreError> {
        let Some(ride) = ride_of_posting_id(id) else {
            return self.get("posting", Space::Postings, id.as_bytes());
        };
        let key = result_block_key(ride);
        if !blocks.contains_key(&key) {
            let b = self.read_block::<PostingBlock>(&key)?;
            blocks.insert(key.clone(), b);
        }
        Ok(blocks[&key].iter().find(|p| p.posting_id == id).cloned())
    }
    /// Number of postings held (ride postings and payments).
    pub fn posting_count(&self) -> Result<u64, StoreError> {
        let payments = self
            .store
            .scan(Space::Postings, b"", None, usize::MAX)?
            .len();
        Ok((payments + self.scan_blocks::<PostingBlock>()?.len()) as u64)
    }
    /// All postings, sorted by posting id.
    pub fn postings(&self) -> Result<Vec<Posting>, StoreError> {
        let mut out: Vec<Posting> = self
            .scan_all("posting", Space::Postings, b"")?
            .into_iter()
            .map(|(_, p)| p)
            .collect();
        out.extend(self.scan_blocks::<PostingBlock>()?);
        out.sort_by(|a, b| a.posting_id.cmp(&b.posting_id));
        Ok(out)
    }
    /// Postings touching one passenger or clearing ledger account (operator
    /// accounts are not indexed: use [`Db::postings`] for them), sorted by
    /// posting id.
    pub fn postings_of(&self, ledger_account: &str) -> Result<Vec<Posting>, StoreError> {
        let mut prefix = ledger_account.as_bytes().to_vec();
        prefix.push(0);
        let entries = self
            .store
            .scan(Space::AccountPostings, &prefix, None, usize::MAX)?;
        let mut ids: Vec<String> = Vec::new();
        for (k, v) in entries {
            let suffix = &k[prefix.len()..];
            if suffix.first() == Some(&CHUNK_LIST_TAG) {
                ids.extend(dec::<Vec<String>>("chunk_posting_ids", &v)?);
            } else {
                ids.push(String::from_utf8_lossy(suffix).into_owned());
            }
        }
        ids.sort();
        ids.dedup();
        let mut blocks = HashMap::new();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.extend(self.posting_via(&id, &mut blocks)?);
        }
        Ok(out)
    }
    /// Queues a settlement chunk's ride postings (into their blocks, see
    /// [`PostingBlocks`]), one index record per passenger or clearing
    /// account listing the ids (`chunk_no` numbers the chunk: unique per
    /// committed chunk), and the balance changes they imply, given the
    /// balances they start from (`balances` is updated in place).
    pub fn put_ride_postings(
        &self,
        w: &mut WriteSet,
        postings: &[Posting],
        balances: &mut std::collections::HashMap<String, i64>,
        chunk_no: u64,
    ) -> Result<(), StoreError> {
        let mut blocks = PostingBlocks::default();
        let mut index: HashMap<String, Vec<String>> = HashMap::new();
        for p in postings {
            blocks.add(self, p.clone())?;
            book_posting(p, balances, |acc| {
                index
                    .entry(acc.to_string())
                    .or_default()
                    .push(p.posting_id.clone())
            });
        }
        blocks.write(w);
        for (acc, ids) in index {
            let mut k = acc.into_bytes();
            k.push(0);
            k.push(CHUNK_LIST_TAG);
            k.extend_from_slice(&chunk_no.to_be_bytes());
            w.put(Space::AccountPostings, k, enc("chunk_posting_ids", &ids));
        }
        Ok(())
    }
    /// Queues single postings (payments; ride postings go through
    /// [`Db::put_ride_postings`]) and the balance changes they imply, given
    /// the balances they start from (`balances` is updated in place).
    pub fn put_postings(
        w: &mut WriteSet,
        postings: &[Posting],
        balances: &mut std::collections::HashMap<String, i64>,
    ) {
        for p in postings {
            debug_assert!(ride_of_posting_id(&p.posting_id).is_none());
            let id = p.posting_id.as_bytes();
            // Exactly once: a posting id is written only if absent.
            w.check(Space::Postings, id.to_vec(), None);
            w.put(Space::Postings, id.to_vec(), enc("posting", p));
            book_posting(p, balances, |acc| {
                w.put(
                    Space::AccountPostings,
                    pair_key(acc.as_bytes(), id),
                    Vec::new(),
                )
            });
        }
    }
    /// Queues balance values.
    pub fn put_balances(w: &mut WriteSet, balances: &std::collections::HashMap<String, i64>) {
        for (k, v) in balances {
            w.put(Space::Balances, k.as_bytes().to_vec(), enc("balance", v));
        }
    }

    /// An account's day states from `from_day` to `to_day` inclusive (`YYYY-MM-DD`).
    pub fn days(
        &self,
        account_id: &str,
        from_day: &str,
        to_day: &str,
    ) -> Result<Vec<(String, DayState)>, StoreError> {
        let start = day_key(account_id, from_day);
        let mut end = day_key(account_id, to_day);
        end.push(0xff);
        let mut out = Vec::new();
        let prefix_len = account_id.len() + 1;
        for (k, v) in self.store.range(Space::Days, &start, &end, usize::MAX)? {
            let d = String::from_utf8_lossy(&k[prefix_len..]).into_owned();
            let day = if d.len() == 8 {
                format!("{}-{}-{}", &d[..4], &d[4..6], &d[6..])
            } else {
                d
            };
            out.push((day, dec("day_state", &v)?));
        }
        Ok(out)
    }
    /// Queues a day state.
    pub fn put_day(w: &mut WriteSet, account_id: &str, day: &str, s: &DayState) {
        w.put(Space::Days, day_key(account_id, day), enc("day_state", s));
    }

    /// The first ride holding this code, if settled already.
    pub fn code_seen(
        &self,
        cred: &CredentialId,
        device_seq: u32,
    ) -> Result<Option<RideId>, StoreError> {
        Ok(self
            .code_sightings(cred)?
            .iter()
            .find(|s| s.device_seq == device_seq)
            .map(|s| s.ride))
    }
    /// Every settled code of a credential (sorted by device sequence): one
    /// record per credential, so a settlement chunk reads and writes it once
    /// per credential instead of once per ride.
    pub fn code_sightings(&self, cred: &CredentialId) -> Result<Vec<CodeSighting>, StoreError> {
        match self.store.get(Space::Codes, &cred.0)? {
            Some(v) => decode_sightings(&v),
            None => Ok(Vec::new()),
        }
    }
    /// Queues a credential's code sightings (sorted by device sequence;
    /// removes the record when empty).
    pub fn put_code_sightings(w: &mut WriteSet, cred: &CredentialId, list: &[CodeSighting]) {
        if list.is_empty() {
            w.delete(Space::Codes, cred.0.to_vec());
        } else {
            w.put(Space::Codes, cred.0.to_vec(), encode_sightings(list));
        }
    }

    /// A payment record.
    pub fn payment(
        &self,
        account_id: &str,
        payment_id: &str,
    ) -> Result<Option<PaymentRecord>, StoreError> {
        self.get(
            "payment",
            Space::Payments,
            &payment_key(account_id, payment_id),
        )
    }

    /// The published deny list.
    pub fn deny_state(&self) -> Result<(DenyState, Option<Vec<u8>>), StoreError> {
        match self.store.get(Space::Meta, b"deny_head")? {
            Some(raw) => Ok((dec("deny_state", &raw)?, Some(raw))),
            None => Ok((DenyState::default(), None)),
        }
    }
    /// One deny list version record.
    pub fn deny_version(&self, v: u64) -> Result<Option<DenyVersion>, StoreError> {
        self.get("deny_version", Space::DenyVersions, &v.to_be_bytes())
    }
    /// Queues a new deny list version (checked against the head read before).
    pub fn put_deny(
        w: &mut WriteSet,
        expected_raw: Option<Vec<u8>>,
        state: &DenyState,
        change: &DenyVersion,
    ) {
        w.check(Space::Meta, b"deny_head".to_vec(), expected_raw);
        w.put(Space::Meta, b"deny_head".to_vec(), enc("deny_state", state));
        w.put(
            Space::DenyVersions,
            change.version.to_be_bytes().to_vec(),
            enc("deny_version", change),
        );
    }
    /// Account ids currently revoked (frozen or over their credit limit).
    pub fn revoked_accounts(&self) -> Result<Vec<String>, StoreError> {
        Ok(self
            .store
            .scan(Space::Revoked, b"", None, usize::MAX)?
            .into_iter()
            .map(|(k, _)| String::from_utf8_lossy(&k).into_owned())
            .collect())
    }
    /// A small named meta value.
    pub fn meta<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, StoreError> {
        self.get("meta", Space::Meta, name.as_bytes())
    }
    /// Queues a meta value.
    pub fn put_meta<T: Serialize>(w: &mut WriteSet, name: &str, v: &T) {
        w.put(Space::Meta, name.as_bytes().to_vec(), enc("meta", v));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SledStore;

    fn result(reader_id: u32, reader_seq: u64, amount_minor: i64) -> RideResult {
        RideResult {
            ride: RideId {
                reader_id,
                reader_seq,
            },
            outcome: Outcome::Charged,
            result: "charged".into(),
            reason: None,
            account_id: Some("acc".into()),
            credential_id: None,
            device_seq: None,
            service_day: "2026-03-10".into(),
            operator: "op".into(),
            route: "1".into(),
            amount_minor,
            reader_time_unix_s: reader_seq,
        }
    }

    fn open() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(&dir.path().join("db")).unwrap();
        (dir, Db::new(Arc::new(store)))
    }

    /// Results stored in blocks read back per ride and in ride order across
    /// block and reader boundaries; changes and removals keep the other rides.
    #[test]
    fn result_blocks_round_trip_across_block_boundaries() {
        let (_dir, db) = open();
        let seqs = [
            1,
            2,
            RESULT_BLOCK_RIDES - 1,
            RESULT_BLOCK_RIDES,
            3 * RESULT_BLOCK_RIDES + 7,
        ];
        let mut blocks = ResultBlocks::default();
        // Inserted out of order, two readers.
        for &s in seqs.iter().rev() {
            blocks.upsert(&db, result(2, s, s as i64)).unwrap();
            blocks.upsert(&db, result(1, s, 10 * s as i64)).unwrap();
        }
        let mut w = WriteSet::default();
        blocks.write(&mut w);
        db.commit(w).unwrap();
        let all = db.results().unwrap();
        let ids: Vec<(u32, u64)> = all
            .iter()
            .map(|r| (r.ride.reader_id, r.ride.reader_seq))
            .collect();
        let mut want: Vec<(u32, u64)> = seqs.iter().flat_map(|&s| [(1, s), (2, s)]).collect();
        want.sort();
        assert_eq!(ids, want);
        let ride = |seq| RideId {
            reader_id: 1,
            reader_seq: seq,
        };
        assert_eq!(
            db.result(ride(RESULT_BLOCK_RIDES))
                .unwrap()
                .unwrap()
                .amount_minor,
            10 * RESULT_BLOCK_RIDES as i64
        );
        assert_eq!(db.result(ride(3)).unwrap(), None);

        // A later chunk changes one ride, adds one to a stored block, removes one.
        let mut blocks = ResultBlocks::default();
        blocks.get_mut(&db, ride(2)).unwrap().unwrap().amount_minor = -5;
        blocks.upsert(&db, result(1, 3, 33)).unwrap();
        assert!(blocks.remove(&db, ride(1)).unwrap());
        assert!(!blocks.remove(&db, ride(4)).unwrap());
        let mut w = WriteSet::default();
        blocks.write(&mut w);
        db.commit(w).unwrap();
        assert_eq!(db.result(ride(2)).unwrap().unwrap().amount_minor, -5);
        assert_eq!(db.result(ride(3)).unwrap().unwrap().amount_minor, 33);
        assert_eq!(db.result(ride(1)).unwrap(), None);
        assert_eq!(
            db.result(ride(RESULT_BLOCK_RIDES - 1))
                .unwrap()
                .unwrap()
                .amount_minor,
            10 * (RESULT_BLOCK_RIDES as i64 - 1)
        );
        assert_eq!(db.results().unwrap().len(), want.len());
    }

    /// A credential's sightings survive encoding; an emptied record is deleted;
    /// a corrupt record is an error, not a panic.
    #[test]
    fn code_sightings_round_trip() {
        let (_dir, db) = open();
        let cred = CredentialId([7; 16]);
        let list = vec![
            CodeSighting {
                device_seq: 1,
                ride: RideId {
                    reader_id: 3,
                    reader_seq: 9,
                },
            },
            CodeSighting {
                device_seq: u32::MAX,
                ride: RideId {
                    reader_id: u32::MAX,
                    reader_seq: u64::MAX,
                },
            },
        ];
        let mut w = WriteSet::default();
        Db::put_code_sightings(&mut w, &cred, &list);
        db.commit(w).unwrap();
        assert_eq!(db.code_sightings(&cred).unwrap(), list);
        assert_eq!(db.code_seen(&cred, 1).unwrap(), Some(list[0].ride));
        assert_eq!(db.code_seen(&cred, 2).unwrap(), None);
        let mut w = WriteSet::default();
        Db::put_code_sightings(&mut w, &cred, &[]);
        db.commit(w).unwrap();
        assert_eq!(db.store().get(Space::Codes, &cred.0).unwrap(), None);
        let mut w = WriteSet::default();
        w.put(Space::Codes, cred.0.to_vec(), vec![1, 2, 3]);
        db.commit(w).unwrap();
        assert!(matches!(
            db.code_sightings(&cred),
            Err(StoreError::Corrupt { .. })
        ));
    }

    fn ride_posting(reader_seq: u64, rev: u32, account: &str, amount_minor: i64) -> Posting {
        Posting {
            posting_id: fare_ledger::ride_posting_id(&format!("3:{reader_seq}"), rev),
            debit: AccountRef::passenger(account),
            credit: AccountRef::operator("op"),
            amount_minor,
            kind: if rev == 1 {
                PostingKind::RideCharge
            } else {
                PostingKind::RideAdjustment
            },
            ride_key: Some(format!("3:{reader_seq}")),
            service_day: Some("2026-03-10".parse().unwrap()),
        }
    }

    /// Ride postings live in blocks and in one index record per account and
    /// chunk, payments one per id; lookups by id, in bulk and per account
    /// see all of them; a posting id is never written twice, and a block
    /// changed since it was read makes the commit fail.
    #[test]
    fn ride_posting_blocks_are_exactly_once() {
        let (_dir, db) = open();
        assert_eq!(
            ride_of_posting_id("ride/3:700/r12"),
            Some(RideId {
                reader_id: 3,
                reader_seq: 700
            })
        );
        assert_eq!(ride_of_posting_id("payment/acc/ride/3:700/r1"), None);
        assert_eq!(ride_of_posting_id("ride/3:700"), None);

        let mut balances = HashMap::new();
        let mut w = WriteSet::default();
        let chunk1 = [
            ride_posting(1, 1, "a", 250),
            ride_posting(RESULT_BLOCK_RIDES + 1, 1, "a", 100),
            ride_posting(2, 1, "b", 300),
        ];
        db.put_ride_postings(&mut w, &chunk1, &mut balances, 1)
            .unwrap();
        let payment = fare_ledger::payment_posting("a", "pay-1", 500).unwrap();
        Db::put_postings(&mut w, std::slice::from_ref(&payment), &mut balances);
        db.commit(w).unwrap();
        assert_eq!(balances["passenger:a"], 500 - 350);
        assert_eq!(balances["operator:op"], 650);

        // A later chunk adjusts ride 3:1 (revision 2).
        let adj = ride_posting(1, 2, "a", 50);
        let mut w = WriteSet::default();
        db.put_ride_postings(&mut w, std::slice::from_ref(&adj), &mut balances, 2)
            .unwrap();
        db.commit(w).unwrap();

        for p in chunk1.iter().chain([&payment, &adj]) {
            assert_eq!(db.posting(&p.posting_id).unwrap().as_ref(), Some(p));
        }
        assert_eq!(db.posting("ride/3:5/r1").unwrap(), None);
        let all = db.postings().unwrap();
        assert_eq!(all.len(), 5);
        assert!(all.windows(2).all(|p| p[0].posting_id < p[1].posting_id));
        let of_a: Vec<String> = db
            .postings_of("passenger:a")
            .unwrap()
            .into_iter()
            .map(|p| p.posting_id)
            .collect();
        assert_eq!(
            of_a,
            [
                payment.posting_id.as_str(),
                "ride/3:1/r1",
                "ride/3:1/r2",
                "ride/3:257/r1"
            ]
        );
        assert_eq!(
            db.postings_of("passenger:b").unwrap(),
            vec![chunk1[2].clone()]
        );

        // The same posting id again is refused before anything is written.
        let mut w = WriteSet::default();
        assert!(matches!(
            db.put_ride_postings(&mut w, std::slice::from_ref(&adj), &mut balances, 3),
            Err(StoreError::Conflict { .. })
        ));
        // A block read for a write set and changed before its commit: the
        // commit fails and writes nothing.
        let mut w = WriteSet::default();
        db.put_ride_postings(&mut w, &[ride_posting(3, 1, "b", 10)], &mut balances, 3)
            .unwrap();
        let mut other = WriteSet::default();
        db.put_ride_postings(&mut other, &[ride_posting(4, 1, "b", 10)], &mut balances, 4)
            .unwrap();
        db.commit(other).unwrap();
        assert!(matches!(db.commit(w), Err(StoreError::Conflict { .. })));
        assert_eq!(db.posting("ride/3:3/r1").unwrap(), None);
        assert_eq!(db.postings().unwrap().len(), 6);
    }

    /// Rides stored in blocks read back for any range, across block and
    /// reader boundaries; removals keep the other rides; a block changed
    /// since it was read makes the commit fail.
    #[test]
    fn ride_blocks_round_trip_across_block_boundaries() {
        let (_dir, db) = open();
        let b = RIDE_BLOCK_RIDES;
        let rec = |reader: u32, seq: u64| format!("ride {reader}:{seq}").into_bytes();
        let id = |reader_id, reader_seq| RideId {
            reader_id,
            reader_seq,
        };
        let mut blocks = RideBlocks::default();
        for reader in [1u32, 2] {
            for seq in (1..=3 * b + 5).rev() {
                blocks
                    .put(&db, id(reader, seq), rec(reader, seq), seq % 7 == 0)
                    .unwrap();
            }
        }
        let mut w = WriteSet::default();
        blocks.write(&mut w);
        db.commit(w).unwrap();
        assert_eq!(db.ride_count().unwrap(), 2 * (3 * b + 5));
        for (from, to) in [
            (1, 1),
            (1, b),
            (b - 1, b + 1),
            (b, 2 * b),
            (5, 3 * b + 5),
            (3 * b, 10 * b),
        ] {
            let want: Vec<Vec<u8>> = (from..=to.min(3 * b + 5)).map(|s| rec(2, s)).collect();
            assert_eq!(db.ride_bytes(2, from, to).unwrap(), want, "{from}..={to}");
        }
        // The strict marks come back with their rides.
        let marked: Vec<u64> = (b - 1..=2 * b).filter(|s| s % 7 == 0).collect();
        assert_eq!(db.strict_rides(2, b - 1, 2 * b).unwrap(), marked);
        assert!(db.ride_bytes(2, 5, 4).unwrap().is_empty());
        assert!(db.ride_bytes(3, 1, 10).unwrap().is_empty());

        // Remove one ride and a whole block's worth.
        let mut blocks = RideBlocks::default();
        assert!(blocks.remove(&db, id(1, 2)).unwrap());
        assert!(!blocks.remove(&db, id(1, 10 * b)).unwrap());
        for seq in b..2 * b {
            assert!(blocks.remove(&db, id(1, seq)).unwrap());
        }
        let mut w = WriteSet::default();
        blocks.write(&mut w);
        db.commit(w).unwrap();
        let got = db.ride_bytes(1, 1, 3 * b + 5).unwrap();
        let want: Vec<Vec<u8>> = (1..=3 * b + 5)
            .filter(|s| *s != 2 && !(b..2 * b).contains(s))
            .map(|s| rec(1, s))
            .collect();
        assert_eq!(got, want);

        // Stale read: the commit fails and changes nothing.
        let mut stale = RideBlocks::default();
        stale.put(&db, id(1, 2), b"stale".to_vec(), false).unwrap();
        let mut fresh = RideBlocks::default();
        fresh.put(&db, id(1, 3), b"fresh".to_vec(), false).unwrap();
        let mut w = WriteSet::default();
        fresh.write(&mut w);
        db.commit(w).unwrap();
        let mut w = WriteSet::default();
        stale.write(&mut w);
        assert!(matches!(db.commit(w), Err(StoreError::Conflict { .. })));
        assert_eq!(db.ride_bytes(1, 2, 3).unwrap(), vec![b"fresh".to_vec()]);
    }
}
