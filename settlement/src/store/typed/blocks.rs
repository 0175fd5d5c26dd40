//! The block codec: many items per stored record, read and written once per write set.

use super::keys::*;
use super::*;

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
pub(super) struct LoadedBlock<T> {
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
    /// Reads the blocks at `keys` not read yet, with one batched read
    /// ([`Db::get_many_raw`]) instead of one round trip per block on first
    /// use. Nothing is marked changed.
    pub fn prefetch(
        &mut self,
        db: &Db,
        keys: impl IntoIterator<Item = Vec<u8>>,
    ) -> Result<(), StoreError> {
        let mut missing: Vec<Vec<u8>> = keys
            .into_iter()
            .filter(|k| !self.blocks.contains_key(k))
            .collect();
        missing.sort_unstable();
        missing.dedup();
        if missing.is_empty() {
            return Ok(());
        }
        let raws = db.get_many_raw(K::SPACE, &missing)?;
        let decoded: Vec<LoadedBlock<K::Item>> = raws
            .into_par_iter()
            .map(|raw| {
                let items = match &raw {
                    Some(v) => K::decode(v)?,
                    None => Vec::new(),
                };
                let raw = if K::CHECKED { raw } else { None };
                Ok(LoadedBlock { raw, items })
            })
            .collect::<Result<_, StoreError>>()?;
        self.blocks.extend(missing.into_iter().zip(decoded));
        Ok(())
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

/// Blocks of raw ride records: value (reader seq BE (8) ‖ mark (1) ‖
/// length BE (4) ‖ encoded ride record v1) × n, sorted by seq. Mark: what
/// ingest found of the code's `R` ([`RMark`], `reverify::ingest_marks`):
/// 0 batchable, 1 strict re-verification, 2 not checked (the run checks
/// it). Checked: ingest extends them.
#[derive(Debug)]
pub struct RideBlock;

/// One ride of a ride block (the record owned, or borrowed from the block
/// bytes while reading).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockRide<R = Vec<u8>> {
    /// Reader sequence.
    pub seq: u64,
    /// Ingest's mark: may its device signature be batch-verified?
    pub mark: RMark,
    /// The encoded ride record v1, exactly as the reader signed it.
    pub record: R,
}

/// Bytes before a ride block entry's record: seq (8), flags (1), length (4).
pub(super) const RIDE_ENTRY_HEADER: usize = 13;
/// A ride block entry's mark byte.
fn mark_byte(mark: RMark) -> u8 {
    match mark {
        RMark::Batchable => 0,
        RMark::Strict => 1,
        RMark::Unchecked => 2,
    }
}

impl BlockKind for RideBlock {
    type Item = BlockRide;
    const SPACE: Space = Space::Rides;
    const CHECKED: bool = true;
    fn decode(v: &[u8]) -> Result<Vec<BlockRide>, StoreError> {
        Ok(ride_block_entries(v)?
            .into_iter()
            .map(|r| BlockRide {
                seq: r.seq,
                mark: r.mark,
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
            v.push(mark_byte(r.mark));
            v.extend_from_slice(&(r.record.len() as u32).to_be_bytes());
            v.extend_from_slice(&r.record);
        }
        v
    }
}

/// The entries of a ride block, records borrowed from `v`.
pub(super) fn ride_block_entries(mut v: &[u8]) -> Result<Vec<BlockRide<&[u8]>>, StoreError> {
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
        let mark = match v[8] {
            0 => RMark::Batchable,
            1 => RMark::Strict,
            2 => RMark::Unchecked,
            m => return Err(corrupt(&format!("unknown mark {m:#04x} at seq {seq}"))),
        };
        let len = u32::from_be_bytes(v[9..13].try_into().expect("4 bytes")) as usize;
        let body = v
            .get(RIDE_ENTRY_HEADER..RIDE_ENTRY_HEADER + len)
            .ok_or_else(|| corrupt("truncated entry"))?;
        out.push(BlockRide {
            seq,
            mark,
            record: body,
        });
        v = &v[RIDE_ENTRY_HEADER + len..];
    }
    Ok(out)
}

/// Ride blocks of one write set (ingest, purge).
pub type RideBlocks = BlockCache<RideBlock>;

impl BlockCache<RideBlock> {
    /// Stores a ride's encoded record and its mark (replacing any held
    /// one).
    pub fn put(
        &mut self,
        db: &Db,
        ride: RideId,
        record: Vec<u8>,
        mark: RMark,
    ) -> Result<(), StoreError> {
        let key = ride_block_key(ride);
        let rides = self.block(db, &key)?;
        let entry = BlockRide {
            seq: ride.reader_seq,
            mark,
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

/// Blocks of [`RideResult`]s, sorted by ride id. Checked: a settlement
/// chunk, a re-rating and purge each read-modify-write them; the in-process
/// write lock serialises those, and the compare-and-swap keeps them correct
/// without it (two processes, or a future backend with parallel writers):
/// the second writer's commit fails instead of overwriting.
#[derive(Debug)]
pub struct ResultBlock;

impl BlockKind for ResultBlock {
    type Item = RideResult;
    const SPACE: Space = Space::Results;
    const CHECKED: bool = true;
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
    /// The stored (or already changed) result of a ride, from a block
    /// already read ([`BlockCache::prefetch`]); `None` when its block was
    /// not read or holds no result for it. Marks nothing changed.
    pub fn get(&self, ride: RideId) -> Option<&RideResult> {
        let block = self.blocks.get(&result_block_key(ride))?;
        let i = block.items.binary_search_by_key(&ride, |r| r.ride).ok()?;
        Some(&block.items[i])
    }
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
pub(super) const SIGHTING_BYTES: usize = 16;

/// Fixed-width encoding (16 bytes per sighting, no length prefix): this
/// record is rewritten for every chunk that touches the credential, so it is
/// kept as small and cheap to (de)code as possible.
pub(super) fn encode_sightings(list: &[CodeSighting]) -> Vec<u8> {
    let mut v = Vec::with_capacity(list.len() * SIGHTING_BYTES);
    for s in list {
        v.extend_from_slice(&s.device_seq.to_be_bytes());
        v.extend_from_slice(&s.ride.key());
    }
    v
}

pub(super) fn decode_sightings(v: &[u8]) -> Result<Vec<CodeSighting>, StoreError> {
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

/// Byte that starts the suffix of a [`Space::AccountPostings`] key holding a
/// chunk's list of ride posting ids (never the first byte of a UTF-8 posting id).
pub(super) const CHUNK_LIST_TAG: u8 = 0xff;

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
pub(super) fn book_posting(
    p: &Posting,
    balances: &mut HashMap<String, i64>,
    mut index: impl FnMut(&str),
) {
    let (debit, credit) = (p.debit.to_string(), p.credit.to_string());
    for acc in [&debit, &credit] {
        if !acc.starts_with(OPERATOR_PREFIX) {
            index(acc);
        }
    }
    *balances.entry(debit).or_insert(0) -= p.amount_minor;
    *balances.entry(credit).or_insert(0) += p.amount_minor;
}
