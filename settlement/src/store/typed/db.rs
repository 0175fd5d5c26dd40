//! The [`Db`] accessors: typed reads and queued writes, space by space.

use super::blocks::*;
use super::keys::*;
use super::*;

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

    /// [`Store::commit_unsynced`]: for records whose loss in a crash costs
    /// only freshness (a reader's last contact), never rides or money.
    pub fn commit_unsynced(&self, w: WriteSet) -> Result<(), StoreError> {
        if w.is_empty() && w.checks.is_empty() {
            return Ok(());
        }
        self.store.commit_unsynced(w)
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

    /// [`Store::get_many`] over any number of keys: a list longer than
    /// [`MAX_KEYS_PER_READ`] is read in slices of that many,
    /// [`READ_THREADS`] at a time.
    pub fn get_many_raw(
        &self,
        space: Space,
        keys: &[Vec<u8>],
    ) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        if keys.len() <= MAX_KEYS_PER_READ {
            return self.store.get_many(space, keys);
        }
        let parts = in_slices(keys, |part| self.store.get_many(space, part))?;
        Ok(parts.into_iter().flatten().collect())
    }

    /// [`Db::get_many_raw`], decoded.
    fn get_many<T: DeserializeOwned>(
        &self,
        what: &'static str,
        space: Space,
        keys: &[Vec<u8>],
    ) -> Result<Vec<Option<T>>, StoreError> {
        self.get_many_raw(space, keys)?
            .into_iter()
            .map(|v| v.map(|v| dec(what, &v)).transpose())
            .collect()
    }

    /// [`Store::range_many`] over any number of ranges, each read whole
    /// (in pages of [`PAGE`] entries when it holds more): one list per
    /// range, in the order given.
    pub fn range_many_paged(
        &self,
        space: Space,
        bounds: &[(Vec<u8>, Vec<u8>)],
    ) -> Result<Vec<Entries>, StoreError> {
        let parts = in_slices(bounds, |part| self.store.range_many(space, part, PAGE))?;
        let mut out: Vec<Entries> = parts.into_iter().flatten().collect();
        for (entries, (_, end)) in out.iter_mut().zip(bounds) {
            if entries.len() >= PAGE {
                // A long range: the rest page by page.
                let mut from = entries.last().expect("PAGE ≥ 1 entries").0.clone();
                from.push(0);
                entries.extend(self.range_paged(space, &from, end)?);
            }
        }
        Ok(out)
    }

    /// Every entry of `space` under `prefix`, in key order, read in pages
    /// of [`PAGE`] entries (no store call reads without a limit).
    pub fn scan_paged(&self, space: Space, prefix: &[u8]) -> Result<Entries, StoreError> {
        let mut out = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = self.store.scan(space, prefix, after.as_deref(), PAGE)?;
            let n = page.len();
            after = page.last().map(|(k, _)| k.clone());
            out.extend(page);
            if n < PAGE {
                return Ok(out);
            }
        }
    }

    /// Every entry of `space` with `start <= key < end`, in key order, read
    /// in pages of [`PAGE`] entries.
    pub fn range_paged(
        &self,
        space: Space,
        start: &[u8],
        end: &[u8],
    ) -> Result<Entries, StoreError> {
        let mut out = Vec::new();
        let mut from = start.to_vec();
        loop {
            let page = self.store.range(space, &from, end, PAGE)?;
            let n = page.len();
            if let Some((k, _)) = page.last() {
                // The smallest key after `k`.
                from = k.clone();
                from.push(0);
            }
            out.extend(page);
            if n < PAGE {
                return Ok(out);
            }
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
    /// Many credentials' records (one batched read), in the order given.
    pub fn credentials_many(
        &self,
        ids: &[CredentialId],
    ) -> Result<Vec<Option<CredentialRecord>>, StoreError> {
        let keys: Vec<Vec<u8>> = ids.iter().map(|id| id.0.to_vec()).collect();
        self.get_many("credential", Space::Credentials, &keys)
    }
    /// Many accounts (one batched read), in the order given.
    pub fn accounts_many(&self, ids: &[String]) -> Result<Vec<Option<Account>>, StoreError> {
        let keys: Vec<Vec<u8>> = ids.iter().map(|id| id.as_bytes().to_vec()).collect();
        self.get_many("account", Space::Accounts, &keys)
    }
    /// Credentials issued to an account.
    pub fn credentials_of(&self, account_id: &str) -> Result<Vec<CredentialRecord>, StoreError> {
        let mut prefix = account_id.as_bytes().to_vec();
        prefix.push(0);
        let keys = self.scan_paged(Space::AccountCredentials, &prefix)?;
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
        reader_state_of(id, self.store.get(Space::ReaderStates, &id.to_be_bytes())?)
    }
    /// Many readers' cursors with their stored bytes (one batched read),
    /// in the order given.
    pub fn reader_states(&self, ids: &[u32]) -> Result<Vec<StateRead>, StoreError> {
        let keys: Vec<Vec<u8>> = ids.iter().map(|id| id.to_be_bytes().to_vec()).collect();
        let raw = self.get_many_raw(Space::ReaderStates, &keys)?;
        ids.iter()
            .zip(raw)
            .map(|(id, raw)| reader_state_of(*id, raw))
            .collect()
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
        let (start, end) = ride_bounds(reader_id, from, to);
        for (_, v) in self.range_paged(Space::Rides, &start, &end)? {
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
        for (_, v) in self.scan_paged(Space::Rides, b"")? {
            n += ride_block_entries(&v)?.len() as u64;
        }
        Ok(n)
    }
    /// Parsed rides `from..=to` of a reader, each with ingest's mark (may
    /// its device signature be batch-verified?).
    pub fn rides(
        &self,
        reader_id: u32,
        from: u64,
        to: u64,
    ) -> Result<Vec<(RideRecord, RMark)>, StoreError> {
        let mut out = Vec::new();
        self.each_ride(reader_id, from, to, |r| {
            let ride = RideRecord::decode_v1(r.record).map_err(|e| StoreError::Corrupt {
                what: "ride",
                why: e.to_string(),
            })?;
            out.push((ride, r.mark));
            Ok(())
        })?;
        Ok(out)
    }
    /// [`Db::rides`] of many `(reader, from, to)` ranges (one batched read
    /// for all of them; decoded in parallel), in the order given.
    pub fn rides_many(
        &self,
        wanted: &[(u32, u64, u64)],
    ) -> Result<Vec<Vec<(RideRecord, RMark)>>, StoreError> {
        let bounds: Vec<(Vec<u8>, Vec<u8>)> = wanted
            .iter()
            .map(|&(reader_id, from, to)| {
                if to < from {
                    // Nothing wanted: an empty range.
                    let k = block_key(reader_id, 0);
                    (k.clone(), k)
                } else {
                    ride_bounds(reader_id, from, to)
                }
            })
            .collect();
        let blocks = self.range_many_paged(Space::Rides, &bounds)?;
        wanted
            .par_iter()
            .zip(blocks)
            .map(|(&(_, from, to), entries)| {
                let mut out = Vec::new();
                for (_, v) in entries {
                    for r in ride_block_entries(&v)? {
                        if (from..=to).contains(&r.seq) {
                            let ride = RideRecord::decode_v1(r.record).map_err(|e| {
                                StoreError::Corrupt {
                                    what: "ride",
                                    why: e.to_string(),
                                }
                            })?;
                            out.push((ride, r.mark));
                        }
                    }
                }
                Ok(out)
            })
            .collect()
    }
    /// The sequence numbers of a reader's rides in `from..=to` that ingest
    /// marked `mark`.
    pub fn rides_marked(
        &self,
        reader_id: u32,
        from: u64,
        to: u64,
        mark: RMark,
    ) -> Result<Vec<u64>, StoreError> {
        let mut seqs = Vec::new();
        self.each_ride(reader_id, from, to, |r| {
            if r.mark == mark {
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
        for (_, v) in self.scan_paged(K::SPACE, b"")? {
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

    /// The dispute over a charged ride, with its stored bytes (for a
    /// compare-and-swap on update).
    pub fn dispute(&self, charged: RideId) -> Result<Option<(Dispute, Vec<u8>)>, StoreError> {
        match self.store.get(Space::Disputes, &charged.key())? {
            Some(v) => Ok(Some((dec("dispute", &v)?, v))),
            None => Ok(None),
        }
    }
    /// The disputes over many charged rides, with their stored bytes (one
    /// batched read), in the order given.
    pub fn disputes_many(
        &self,
        charged: &[RideId],
    ) -> Result<Vec<Option<DisputeRead>>, StoreError> {
        let keys: Vec<Vec<u8>> = charged.iter().map(|r| r.key().to_vec()).collect();
        self.get_many_raw(Space::Disputes, &keys)?
            .into_iter()
            .map(|v| v.map(|v| Ok((dec("dispute", &v)?, v))).transpose())
            .collect()
    }
    /// All disputes, by charged ride.
    pub fn disputes(&self) -> Result<Vec<Dispute>, StoreError> {
        Ok(self
            .scan_all("dispute", Space::Disputes, b"")?
            .into_iter()
            .map(|(_, d)| d)
            .collect())
    }
    /// Queues a dispute, checked against the bytes it replaces (`None`: new).
    pub fn put_dispute(w: &mut WriteSet, d: &Dispute, replaces: Option<Vec<u8>>) {
        let key = d.charged_ride.key().to_vec();
        w.check(Space::Disputes, key.clone(), replaces);
        w.put(Space::Disputes, key, enc("dispute", d));
    }

    /// A ledger account's balance (credits minus debits).
    pub fn balance(&self, ledger_account: &str) -> Result<i64, StoreError> {
        Ok(self
            .get::<i64>("balance", Space::Balances, ledger_account.as_bytes())?
            .unwrap_or(0))
    }
    /// Many ledger accounts' balances (one batched read), in the order given.
    pub fn balances_many(&self, ledger_accounts: &[String]) -> Result<Vec<i64>, StoreError> {
        let keys: Vec<Vec<u8>> = ledger_accounts
            .iter()
            .map(|a| a.as_bytes().to_vec())
            .collect();
        Ok(self
            .get_many::<i64>("balance", Space::Balances, &keys)?
            .into_iter()
            .map(|b| b.unwrap_or(0))
            .collect())
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
        let payments = self.scan_paged(Space::Postings, b"")?.len();
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
        let entries = self.scan_paged(Space::AccountPostings, &prefix)?;
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
        // Every block the postings go to, in one batched read.
        blocks.prefetch(
            self,
            postings
                .iter()
                .filter_map(|p| ride_of_posting_id(&p.posting_id))
                .map(result_block_key),
        )?;
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
        let (start, end) = days_bounds(account_id, from_day, to_day);
        decode_days(account_id, self.range_paged(Space::Days, &start, &end)?)
    }
    /// [`Db::days`] of many `(account, from_day, to_day)` (one batched
    /// read), in the order given.
    pub fn days_many(
        &self,
        wanted: &[(String, String, String)],
    ) -> Result<Vec<Vec<(String, DayState)>>, StoreError> {
        let bounds: Vec<(Vec<u8>, Vec<u8>)> = wanted
            .iter()
            .map(|(acc, from, to)| days_bounds(acc, from, to))
            .collect();
        let ranges = self.range_many_paged(Space::Days, &bounds)?;
        wanted
            .iter()
            .zip(ranges)
            .map(|((acc, _, _), entries)| decode_days(acc, entries))
            .collect()
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
    /// [`Db::code_sightings`] of many credentials (one batched read), in
    /// the order given.
    pub fn code_sightings_many(
        &self,
        creds: &[CredentialId],
    ) -> Result<Vec<Vec<CodeSighting>>, StoreError> {
        let keys: Vec<Vec<u8>> = creds.iter().map(|c| c.0.to_vec()).collect();
        self.get_many_raw(Space::Codes, &keys)?
            .into_iter()
            .map(|v| v.map_or(Ok(Vec::new()), |v| decode_sightings(&v)))
            .collect()
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
        match self.deny_head_raw()? {
            Some(raw) => Ok((Self::decode_deny_state(&raw)?, Some(raw))),
            None => Ok((DenyState::default(), None)),
        }
    }
    /// The deny list head's stored bytes (`None` before the first
    /// publication), for a caller that keeps it decoded
    /// (`bundle::HeadCache`).
    pub fn deny_head_raw(&self) -> Result<Option<Vec<u8>>, StoreError> {
        self.store.get(Space::Meta, b"deny_head")
    }
    /// Decodes a deny list head read with [`Db::deny_head_raw`].
    pub fn decode_deny_state(raw: &[u8]) -> Result<DenyState, StoreError> {
        dec("deny_state", raw)
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
            .scan_paged(Space::Revoked, b"")?
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

/// A reader's state and the stored bytes it was read from (`None`: absent).
pub type StateRead = (ReaderState, Option<Vec<u8>>);
/// A dispute and the stored bytes it was read from.
pub type DisputeRead = (Dispute, Vec<u8>);

/// A reader's state from its stored bytes (the genesis state when absent).
fn reader_state_of(
    id: u32,
    raw: Option<Vec<u8>>,
) -> Result<(ReaderState, Option<Vec<u8>>), StoreError> {
    match raw {
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

/// The key range of the ride blocks holding a reader's rides `from..=to`
/// (`from <= to`): from the block of `from` to just past the block of `to`.
fn ride_bounds(reader_id: u32, from: u64, to: u64) -> (Vec<u8>, Vec<u8>) {
    (
        block_key(reader_id, from / RIDE_BLOCK_RIDES),
        block_key(reader_id, to / RIDE_BLOCK_RIDES + 1),
    )
}

/// The key range of an account's day states `from_day..=to_day` (`YYYY-MM-DD`).
fn days_bounds(account_id: &str, from_day: &str, to_day: &str) -> (Vec<u8>, Vec<u8>) {
    let start = day_key(account_id, from_day);
    let mut end = day_key(account_id, to_day);
    end.push(0xff);
    (start, end)
}

/// Day-state entries of one account, as `(YYYY-MM-DD, state)`.
fn decode_days(account_id: &str, entries: Entries) -> Result<Vec<(String, DayState)>, StoreError> {
    let prefix_len = account_id.len() + 1;
    let mut out = Vec::with_capacity(entries.len());
    for (k, v) in entries {
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

/// `read` over `items` in slices of [`MAX_KEYS_PER_READ`], up to
/// [`READ_THREADS`] slices at once; the answers in slice order.
fn in_slices<I: Sync, T: Send>(
    items: &[I],
    read: impl Fn(&[I]) -> Result<T, StoreError> + Sync,
) -> Result<Vec<T>, StoreError> {
    let slices: Vec<&[I]> = items.chunks(MAX_KEYS_PER_READ).collect();
    let mut out = Vec::with_capacity(slices.len());
    for group in slices.chunks(READ_THREADS) {
        let read = &read;
        let answers: Vec<Result<T, StoreError>> = std::thread::scope(|s| {
            let handles: Vec<_> = group
                .iter()
                .map(|part| s.spawn(move || read(part)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        });
        for a in answers {
            out.push(a?);
        }
    }
    Ok(out)
}
