//! The deny list (versioned, with deltas) and the root-signed reader bundle.
//!
//! Deny list = every unexpired credential (valid until + skew tolerance ≥
//! now) of every revoked account (frozen, or debt above its credit limit).
//! Each change is a new bundle version (numbers taken from the KEYS
//! directory's counter, so they stay above any bundle `fare-keys bundle`
//! made) stored with its additions and removals, so a reader at version V
//! gets a delta from V; when V is unknown or too old, a snapshot.

use crate::error::StoreError;
use crate::model::DenyVersion;
use crate::store::{Db, DenyState, WriteLock, WriteSet};
use fare_credential::bundle::{DenyUpdate, PublishedBundle, ReaderBundle};
use fare_credential::{CredentialId, IssuerKey};
use fare_keys::KeyStore;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

/// Longest chain of versions composed into one delta.
pub const MAX_DELTA_STEPS: usize = 1000;
/// Most deltas kept composed beside one deny head ([`CachedHead`]): one
/// per version a reader may still hold, far more than the versions of a
/// few days.
pub const MAX_CACHED_DELTAS: usize = 256;
/// Most credential ids those deltas hold in all (16 bytes each: 16 MiB);
/// a delta that would pass it is composed for each request instead.
pub const MAX_CACHED_DELTA_IDS: usize = 1 << 20;

/// Hash of the trust list and the tariff (by its `tariff_digest`).
pub fn material_hash(trust: &[IssuerKey], tariff_digest: &[u8; 32]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"FARE-BUNDLE-MATERIAL\0v1");
    for k in trust {
        h.update(&k.key_id.to_be_bytes());
        h.update(&k.public_key);
        h.update(&k.valid_from_unix_s.to_be_bytes());
        h.update(&k.valid_until_unix_s.to_be_bytes());
    }
    h.update(tariff_digest);
    *h.finalize().as_bytes()
}

/// Why a bundle could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// Storage.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The KEYS directory.
    #[error("keys: {0}")]
    Keys(#[from] fare_keys::KeysError),
    /// The bundle could not be encoded (a limit).
    #[error("bundle: {0}")]
    Format(#[from] fare_credential::FormatError),
}

/// The deny list as it should be now.
pub fn desired_deny(
    db: &Db,
    now_unix_s: u64,
    skew_s: u64,
) -> Result<Vec<CredentialId>, StoreError> {
    let mut ids = BTreeSet::new();
    for acc in db.revoked_accounts()? {
        for c in db.credentials_of(&acc)? {
            if c.valid_until_unix_s.saturating_add(skew_s) >= now_unix_s {
                ids.insert(c.credential_id);
            }
        }
    }
    // A lost or stolen phone's credentials (crate::passengers).
    for (id, until) in crate::passengers::denied_credentials(db)? {
        if until.saturating_add(skew_s) >= now_unix_s {
            ids.insert(id);
        }
    }
    Ok(ids.into_iter().collect())
}

/// Publishes a new deny list version if the desired list or the bundle
/// material changed, or (when `max_age_s` is given) the head is older than
/// that: readers install only newer versions, and their trust freshness is
/// measured from the installed bundle's server time, so a quiet deny list
/// must still be re-published now and then. Returns the current head.
pub fn refresh(
    db: &Db,
    keys: &Mutex<KeyStore>,
    material: [u8; 32],
    now_unix_s: u64,
    skew_s: u64,
    max_age_s: Option<u64>,
) -> Result<DenyState, BundleError> {
    let desired = desired_deny(db, now_unix_s, skew_s)?;
    let (head, raw) = db.deny_state()?;
    let fresh = max_age_s.is_none_or(|m| now_unix_s < head.published_unix_s.saturating_add(m));
    if raw.is_some() && head.ids == desired && head.material_hash == material && fresh {
        return Ok(head);
    }
    let old: BTreeSet<CredentialId> = head.ids.iter().copied().collect();
    let new: BTreeSet<CredentialId> = desired.iter().copied().collect();
    let version = keys
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .next_bundle_version()?;
    let change = DenyVersion {
        version,
        previous: head.version,
        add: new.difference(&old).copied().collect(),
        remove: old.difference(&new).copied().collect(),
    };
    let state = DenyState {
        version,
        ids: desired,
        material_hash: material,
        published_unix_s: now_unix_s,
    };
    let mut w = WriteSet::default();
    Db::put_deny(&mut w, raw, &state, &change);
    db.commit(w)?;
    metrics::gauge!("settlement_deny_list_entries").set(state.ids.len() as f64);
    Ok(state)
}

/// The deny list head as last read from the store, kept decoded with the
/// digest of its list: every reader's bundle fetch reads the head, and
/// decoding its thousands of ids (and hashing them for a delta's base) at
/// each fetch was about a fifth of the answer's cost at city scale (a
/// mid-morning profile of the full `wuhan` day). Compared with
/// the stored bytes on every use, so a head another writer published (an
/// instance beside this one on PostgreSQL) is never served stale.
#[derive(Default)]
pub struct HeadCache(Mutex<Option<Arc<CachedHead>>>);

/// A decoded deny head and what it was decoded from.
pub struct CachedHead {
    raw: Vec<u8>,
    /// The head.
    pub head: DenyState,
    /// `deny_digest` of `head.ids`.
    pub digest: [u8; 32],
    /// Deltas to this head already composed, by the version they start
    /// from ([`deny_answer`]).
    deltas: Mutex<Deltas>,
}

/// The deltas a [`CachedHead`] keeps, within [`MAX_CACHED_DELTAS`] and
/// [`MAX_CACHED_DELTA_IDS`].
#[derive(Default)]
struct Deltas {
    by_since: std::collections::HashMap<u64, Arc<DenyAnswer>>,
    ids: usize,
}

/// What a bundle carries of the deny list for a reader at some version:
/// the update, and the digest of the list a delta applies to (`None` for
/// a snapshot).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DenyAnswer {
    /// Snapshot or delta.
    pub update: DenyUpdate,
    /// `deny_digest` of the list a delta was computed from.
    pub base_digest: Option<[u8; 32]>,
}

/// The deny part of a bundle for a reader at `since`. A delta is composed
/// once per head and starting version, then served from `cached`: at a
/// city's scale thousands of readers ask for the same few deltas, and
/// composing one reads and decodes every version in between and hashes
/// the whole list (a sixth of a bundle answer's cost in the full `wuhan`
/// day's profile). Deny versions are written once and never changed, and
/// the cache goes with its head, so a cached delta is the one
/// [`deny_update`] would compose now. Snapshots are not kept (each is the
/// whole list).
pub fn deny_answer(
    db: &Db,
    cached: &CachedHead,
    since: Option<u64>,
) -> Result<Arc<DenyAnswer>, StoreError> {
    let lock = || cached.deltas.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(hit) = since.and_then(|v| lock().by_since.get(&v).cloned()) {
        return Ok(hit);
    }
    let head = &cached.head;
    let update = deny_update(db, head, since)?;
    let base_digest = match &update {
        DenyUpdate::Snapshot(_) => None,
        DenyUpdate::Delta { add, remove, .. } if add.is_empty() && remove.is_empty() => {
            Some(cached.digest)
        }
        DenyUpdate::Delta { add, remove, .. } => Some(delta_base_digest(&head.ids, add, remove)),
    };
    let answer = Arc::new(DenyAnswer {
        update,
        base_digest,
    });
    if let (Some(since), DenyUpdate::Delta { add, remove, .. }) = (since, &answer.update) {
        let mut deltas = lock();
        let ids = add.len() + remove.len();
        // Two requests that missed at once compose the same delta: the
        // first kept stays, and its ids are counted once.
        let room =
            deltas.by_since.len() < MAX_CACHED_DELTAS && deltas.ids + ids <= MAX_CACHED_DELTA_IDS;
        if room && !deltas.by_since.contains_key(&since) {
            deltas.ids += ids;
            deltas.by_since.insert(since, answer.clone());
        }
    }
    Ok(answer)
}

impl HeadCache {
    /// The head stored now (`None` before the first publication), decoded
    /// once per distinct stored value.
    fn read(&self, db: &Db) -> Result<Option<Arc<CachedHead>>, StoreError> {
        let Some(raw) = db.deny_head_raw()? else {
            return Ok(None);
        };
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = slot.as_ref().filter(|c| c.raw == raw) {
            return Ok(Some(c.clone()));
        }
        let head = Db::decode_deny_state(&raw)?;
        // As `delta_base_digest` computes it for an empty delta.
        let digest = delta_base_digest(&head.ids, &[], &[]);
        let c = Arc::new(CachedHead {
            raw,
            head,
            digest,
            deltas: Mutex::default(),
        });
        *slot = Some(c.clone());
        Ok(Some(c))
    }
}

/// The deny list head a reader's bundle carries: the published head while
/// it is younger than `max_age_s` and made from the same trust list and
/// tariff, else [`refresh`]. Whoever changes who is revoked publishes at
/// once (`App::refresh_deny` after a settlement run, a freeze, a payment, a
/// lost phone), so a bundle answer need not rebuild the list from every
/// revoked account's credentials: that made each answer cost O(revoked
/// accounts), and every reader fetches a bundle at every contact. What the
/// head cannot know without a rebuild (credentials that expired since) is
/// picked up within `max_age_s`.
pub fn head_for_bundle(
    db: &Db,
    cache: &HeadCache,
    keys: &Mutex<KeyStore>,
    material: [u8; 32],
    now_unix_s: u64,
    skew_s: u64,
    max_age_s: u64,
) -> Result<Arc<CachedHead>, BundleError> {
    if let Some(c) = cache.read(db)? {
        let fresh = now_unix_s < c.head.published_unix_s.saturating_add(max_age_s);
        if c.head.material_hash == material && fresh {
            return Ok(c);
        }
    }
    refresh(db, keys, material, now_unix_s, skew_s, Some(max_age_s))?;
    // `refresh` returns only once a head is stored, and no one deletes it:
    // its absence here means the store lost a committed write.
    cache.read(db)?.ok_or_else(|| {
        BundleError::Store(StoreError::Corrupt {
            what: "deny list head",
            why: "absent right after it was published".into(),
        })
    })
}

/// The deny update for a reader at version `since` (snapshot when unknown).
pub fn deny_update(
    db: &Db,
    head: &DenyState,
    since: Option<u64>,
) -> Result<DenyUpdate, StoreError> {
    let Some(since) = since else {
        return Ok(DenyUpdate::Snapshot(head.ids.clone()));
    };
    if since == head.version {
        return Ok(DenyUpdate::Delta {
            base_version: since,
            add: vec![],
            remove: vec![],
        });
    }
    if since > head.version || since == 0 {
        return Ok(DenyUpdate::Snapshot(head.ids.clone()));
    }
    // Walk back from the head to `since`, then compose forward.
    let mut chain = Vec::new();
    let mut v = head.version;
    while v > since && chain.len() < MAX_DELTA_STEPS {
        let Some(c) = db.deny_version(v)? else {
            return Ok(DenyUpdate::Snapshot(head.ids.clone()));
        };
        v = c.previous;
        chain.push(c);
    }
    if v != since {
        return Ok(DenyUpdate::Snapshot(head.ids.clone()));
    }
    let mut add: BTreeSet<CredentialId> = BTreeSet::new();
    let mut remove: BTreeSet<CredentialId> = BTreeSet::new();
    for c in chain.iter().rev() {
        for id in &c.add {
            if !remove.remove(id) {
                add.insert(*id);
            }
        }
        for id in &c.remove {
            if !add.remove(id) {
                remove.insert(*id);
            }
        }
    }
    Ok(DenyUpdate::Delta {
        base_version: since,
        add: add.into_iter().collect(),
        remove: remove.into_iter().collect(),
    })
}

/// The digest (`deny_digest`) of the deny list a delta from `head` was
/// computed from: the head without what the delta adds, with what it removes.
pub fn delta_base_digest(
    head: &[CredentialId],
    add: &[CredentialId],
    remove: &[CredentialId],
) -> [u8; 32] {
    let mut base: BTreeSet<CredentialId> = head.iter().copied().collect();
    for id in add {
        base.remove(id);
    }
    base.extend(remove.iter().copied());
    fare_credential::bundle::deny_digest(&base)
}

/// This service's publisher id (bundle v2): derived from its
/// acknowledgement-key certificate, which the service makes once for its
/// KEYS directory, so it differs from the offline line of `fare-keys
/// bundle` (v1, [`fare_credential::bundle::V1_PUBLISHER`]) and from any
/// other service with its own KEYS directory.
pub fn publisher_id(ack_key_cert: &[u8]) -> [u8; fare_credential::bundle::PUBLISHER_ID_LEN] {
    let h = blake3::Hasher::new()
        .update(b"FARE-PUBLISHER\0v1")
        .update(ack_key_cert)
        .finalize();
    let mut id = [0; fare_credential::bundle::PUBLISHER_ID_LEN];
    id.copy_from_slice(&h.as_bytes()[..fare_credential::bundle::PUBLISHER_ID_LEN]);
    id
}

/// Builds and root-signs (bundle v3, as `publisher`) the bundle for a
/// reader at deny version `since`; a delta names its base's digest, the
/// tariff goes by its digest alone when the reader holds it. Takes
/// `write_lock` only to publish a new head when one is due.
#[allow(clippy::too_many_arguments)] // the service's settings, passed through flat
pub fn reader_bundle(
    publisher: [u8; fare_credential::bundle::PUBLISHER_ID_LEN],
    db: &Db,
    write_lock: &WriteLock,
    cache: &HeadCache,
    keys: &Mutex<KeyStore>,
    tariff: TariffToSend<'_>,
    since: Option<u64>,
    now_unix_s: u64,
    skew_s: u64,
    max_age_s: u64,
) -> Result<Vec<u8>, BundleError> {
    let trust = keys.lock().unwrap_or_else(|p| p.into_inner()).trust_list();
    let material = material_hash(&trust, &tariff.digest);
    // Publishing a head reads, decides and writes: under the write lock.
    // The rest only reads deny versions at or below the head, which are
    // written once and never changed (one missing makes a snapshot), so
    // the delta, the encoding and the signature over the whole bundle
    // (tens of KB, at every contact) run outside it, on every core.
    let cached = {
        let _w = write_lock.lock().unwrap_or_else(|p| p.into_inner());
        head_for_bundle(db, cache, keys, material, now_unix_s, skew_s, max_age_s)?
    };
    let deny = deny_answer(db, &cached, since)?;
    let bundle = ReaderBundle {
        bundle_version: cached.head.version,
        server_time_unix_s: now_unix_s,
        trust,
        deny: deny.update.clone(),
        tariff: match tariff.reader_holds_it {
            true => Vec::new(),
            false => tariff.json.to_vec(),
        },
    };
    let deny_base_hash = deny.base_digest;
    let published = PublishedBundle {
        publisher,
        deny_base_hash,
        tariff_by_digest: tariff.reader_holds_it.then_some(tariff.digest),
        bundle,
    };
    // A copy of the key, so that concurrent answers sign at once.
    let root = keys
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .root_signing_key()
        .clone();
    Ok(published.sign_v3(&root)?)
}

/// The tariff a bundle answer carries: its bytes, or (v3) its digest alone
/// when the reader holds it already, which is nearly every contact: the
/// bytes are most of a bundle and change a few times a year.
#[derive(Clone, Copy)]
pub struct TariffToSend<'a> {
    /// The tariff's bytes.
    pub json: &'a [u8],
    /// Their `tariff_digest`.
    pub digest: [u8; 32],
    /// The reader named this digest in its request.
    pub reader_holds_it: bool,
}

/// The deny list as reported.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DenyStateSummary {
    /// Bundle version that published it.
    pub version: u64,
    /// Credential ids.
    pub credential_ids: Vec<CredentialId>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{SledStore, WriteSet};
    use std::sync::Arc;

    fn id(b: u8) -> CredentialId {
        CredentialId([b; 16])
    }

    /// A revoked account with one credential valid until `until`, written
    /// directly (as a settlement run or a freeze does, before it publishes).
    fn revoke(db: &Db, account: &str, cred: CredentialId, until: u64) {
        let mut w = WriteSet::default();
        Db::put_credential(
            &mut w,
            &crate::model::CredentialRecord {
                credential_id: cred,
                account_id: account.into(),
                profile: fare_credential::Profile::Adult,
                valid_from_unix_s: 0,
                valid_until_unix_s: until,
                issued_unix_s: 0,
            },
        );
        w.put(
            crate::store::Space::Revoked,
            account.as_bytes().to_vec(),
            Vec::new(),
        );
        db.commit(w).unwrap();
    }

    /// A store and a KEYS directory, as the service has them (the
    /// directory lives as long as the first value).
    fn service() -> (tempfile::TempDir, Db, Mutex<KeyStore>) {
        use rand_chacha::rand_core::SeedableRng;
        let dir = tempfile::tempdir().unwrap();
        let db = Db::new(Arc::new(SledStore::open(&dir.path().join("db")).unwrap()));
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
        let keys = Mutex::new(KeyStore::init(&dir.path().join("keys"), 1_000, &mut rng).unwrap());
        (dir, db, keys)
    }

    #[test]
    fn bundles_serve_the_published_head_until_it_ages_or_the_material_changes() {
        let (_dir, db, keys) = service();
        let (t0, max_age) = (1_000u64, 300u64);
        let first = refresh(&db, &keys, [1; 32], t0, 0, None).unwrap();
        assert!(first.ids.is_empty());
        // A revocation nobody published yet: the head is served as it is.
        revoke(&db, "acct-a", id(9), t0 + 10_000);
        let cache = HeadCache::default();
        let served = head_for_bundle(&db, &cache, &keys, [1; 32], t0 + 10, 0, max_age).unwrap();
        assert_eq!(served.head, first);
        // Published (what `App::refresh_deny` does after the writer): served.
        let published = refresh(&db, &keys, [1; 32], t0 + 20, 0, None).unwrap();
        assert_eq!(published.ids, vec![id(9)]);
        assert!(published.version > first.version);
        // (The cache holds the head read at t0 + 10: it must see the new one.)
        let served = head_for_bundle(&db, &cache, &keys, [1; 32], t0 + 30, 0, max_age).unwrap();
        assert_eq!(served.head, published);
        let digest = delta_base_digest(&published.ids, &[], &[]);
        assert_eq!(served.digest, digest);
        // Another revocation: picked up once the head is older than max_age ...
        revoke(&db, "acct-b", id(8), t0 + 10_000);
        let aged =
            head_for_bundle(&db, &cache, &keys, [1; 32], t0 + 20 + max_age, 0, max_age).unwrap();
        assert_eq!(aged.head.ids, vec![id(8), id(9)]);
        // ... or at once when the trust list or tariff changed.
        revoke(&db, "acct-c", id(7), t0 + 10_000);
        let now = t0 + 21 + max_age;
        let moved = head_for_bundle(&db, &cache, &keys, [2; 32], now, 0, max_age).unwrap();
        assert_eq!(moved.head.ids, vec![id(7), id(8), id(9)]);
        assert_eq!(moved.head.material_hash, [2; 32]);
    }

    /// Longer than a screen: one sequence of bundle versions, each delta
    /// checked against the list the one before left.
    #[test]
    fn deltas_compose_across_versions_and_fall_back_to_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::new(Arc::new(SledStore::open(dir.path()).unwrap()));
        // Versions 3 → 5 → 8: +a +b, then -a +c, then +a.
        let mut raw = None;
        let mut prev = 0;
        let mut ids: Vec<CredentialId> = Vec::new();
        for (v, add, remove) in [
            (3u64, vec![id(1), id(2)], vec![]),
            (5, vec![id(3)], vec![id(1)]),
            (8, vec![id(1)], vec![]),
        ] {
            ids.retain(|x| !remove.contains(x));
            ids.extend(add.iter().copied());
            ids.sort();
            let state = DenyState {
                version: v,
                ids: ids.clone(),
                material_hash: [0; 32],
                published_unix_s: 0,
            };
            let mut w = WriteSet::default();
            Db::put_deny(
                &mut w,
                raw.clone(),
                &state,
                &DenyVersion {
                    version: v,
                    previous: prev,
                    add,
                    remove,
                },
            );
            db.commit(w).unwrap();
            raw = db.deny_state().unwrap().1;
            prev = v;
        }
        let (head, _) = db.deny_state().unwrap();
        assert_eq!(head.ids, vec![id(1), id(2), id(3)]);
        // From 3: a was removed then re-added (net nothing), c added.
        assert_eq!(
            deny_update(&db, &head, Some(3)).unwrap(),
            DenyUpdate::Delta {
                base_version: 3,
                add: vec![id(3)],
                remove: vec![]
            }
        );
        // From 5: a added back.
        assert_eq!(
            deny_update(&db, &head, Some(5)).unwrap(),
            DenyUpdate::Delta {
                base_version: 5,
                add: vec![id(1)],
                remove: vec![]
            }
        );
        assert_eq!(
            deny_update(&db, &head, Some(8)).unwrap(),
            DenyUpdate::Delta {
                base_version: 8,
                add: vec![],
                remove: vec![]
            }
        );
        // Unknown, future or absent versions: a snapshot.
        for since in [Some(4), Some(9), Some(0), None] {
            assert_eq!(
                deny_update(&db, &head, since).unwrap(),
                DenyUpdate::Snapshot(head.ids.clone()),
                "{since:?}"
            );
        }
    }

    /// Deltas served from a head's cache are the ones composed afresh, and
    /// a new head starts its own: a reader at an old version then gets the
    /// delta to the new head, never the cached one to the old.
    #[test]
    fn cached_deltas_equal_fresh_ones_and_follow_the_head() {
        let (_dir, db, keys) = service();
        let (t0, max_age) = (1_000u64, 1_000_000u64);
        let v1 = refresh(&db, &keys, [1; 32], t0, 0, None).unwrap().version;
        revoke(&db, "acct-a", id(9), t0 + 10_000);
        let v2 = refresh(&db, &keys, [1; 32], t0 + 1, 0, None)
            .unwrap()
            .version;
        let cache = HeadCache::default();
        let head = head_for_bundle(&db, &cache, &keys, [1; 32], t0 + 2, 0, max_age).unwrap();
        for since in [Some(v1), Some(v2), Some(v1), Some(0), None, Some(v2 + 5)] {
            let answer = deny_answer(&db, &head, since).unwrap();
            assert_eq!(answer.update, deny_update(&db, &head.head, since).unwrap());
            let base = match &answer.update {
                DenyUpdate::Snapshot(_) => None,
                DenyUpdate::Delta { add, remove, .. } => {
                    Some(delta_base_digest(&head.head.ids, add, remove))
                }
            };
            assert_eq!(answer.base_digest, base, "{since:?}");
        }
        // Two deltas kept (from v1 and v2), no snapshot.
        assert_eq!(head.deltas.lock().unwrap().by_since.len(), 2);
        let from_v1 = deny_answer(&db, &head, Some(v1)).unwrap();
        assert_eq!(
            from_v1.update,
            DenyUpdate::Delta {
                base_version: v1,
                add: vec![id(9)],
                remove: vec![]
            }
        );
        // A new head: the reader at v1 now also gets b's credential.
        revoke(&db, "acct-b", id(8), t0 + 10_000);
        refresh(&db, &keys, [1; 32], t0 + 3, 0, None).unwrap();
        let next = head_for_bundle(&db, &cache, &keys, [1; 32], t0 + 4, 0, max_age).unwrap();
        assert!(next.head.version > head.head.version);
        assert_eq!(
            deny_answer(&db, &next, Some(v1)).unwrap().update,
            DenyUpdate::Delta {
                base_version: v1,
                add: vec![id(8), id(9)],
                remove: vec![]
            }
        );
    }
}
