//! Deployment key management for the fare system (the back office's side).
//!
//! A KEYS directory holds:
//!
//! | file | content | mode |
//! |---|---|---|
//! | `root.key` | deployment root signing key seed (hex) | 0600 |
//! | `root.pub` | root public key (hex): provisioned into every reader | 0644 |
//! | `issuer-<id>.key` | issuer signing key seed (hex) | 0600 |
//! | `keys.json` | manifest: issuer key ids, public keys, validity windows, next bundle version | 0644 |
//! | `issued.jsonl` | one line per credential issued offline by the CLI: id → account | 0600 |
//! | `keys.lock` | empty; an exclusive `flock` on it serialises changes to `keys.json` | 0644 |
//!
//! Several processes may change one KEYS directory (a running settlement
//! service publishing bundles, `fare-keys rotate-issuer` beside it). Every
//! change takes the lock, re-reads `keys.json`, applies itself and writes it
//! back, so no process overwrites a change another one made.
//!
//! The root key signs reader bundles (trust list, deny list, tariff); issuer
//! keys sign credentials and rotate without touching readers: a rotation adds
//! a new key and the old one stays valid until the end of its window.
#![forbid(unsafe_code)]

pub mod files;

use ed25519_dalek::{SigningKey, VerifyingKey};
use fare_credential::bundle::ReaderBundle;
use fare_credential::keys::{parse_device_key_for_issuance, IssuableKey};
use fare_credential::{Credential, CredentialBody, CredentialId, IssuerKey, Profile};
use files::{create_private_dir, read_hex, write_atomic};
use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Default validity window of a new issuer key.
pub const DEFAULT_ISSUER_VALIDITY_S: u64 = 400 * 86_400;
/// Longest credential lifetime the issuer will sign (credentials are the
/// revocation lever: short lives bound the exposure of a stolen phone).
pub const MAX_CREDENTIAL_VALIDITY_S: u64 = 31 * 86_400;

/// Why a key operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeysError {
    /// File system trouble, with the path.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// `init` on a directory that already holds keys.
    #[error("{0} already holds a key store (root.key exists); refusing to overwrite keys")]
    AlreadyInitialised(PathBuf),
    /// A file has unexpected content.
    #[error("{path}: {why}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// No issuer key is valid at the requested time.
    #[error("no issuer key is valid at {now_unix_s}: run `fare-keys rotate-issuer`")]
    NoValidIssuer {
        /// The time asked about.
        now_unix_s: u64,
    },
    /// The device key cannot be trusted.
    #[error("device public key refused: {0}")]
    BadDeviceKey(#[from] fare_credential::keys::KeyError),
    /// A request value is out of range.
    #[error("{field}: {why}")]
    Invalid {
        /// Which field.
        field: &'static str,
        /// What was expected.
        why: String,
    },
    /// A bundle could not be encoded.
    #[error("bundle: {0}")]
    Bundle(#[from] fare_credential::FormatError),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> KeysError + '_ {
    move |source| KeysError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Serialize, Deserialize, Clone, Debug)]
struct Manifest {
    format: u32,
    #[serde(with = "fare_credential::trust::hex32")]
    root_public_key: [u8; 32],
    issuers: Vec<IssuerKey>,
    next_bundle_version: u64,
}

/// A credential request.
#[derive(Clone, Debug)]
pub struct IssueRequest {
    /// The phone's device public key.
    pub device_public_key: [u8; 32],
    /// Concession profile.
    pub profile: Profile,
    /// Start of validity (normally "now" by the server's clock).
    pub valid_from_unix_s: u64,
    /// Lifetime; at most [`MAX_CREDENTIAL_VALIDITY_S`].
    pub valid_for_s: u64,
}

/// An opened KEYS directory.
pub struct KeyStore {
    dir: PathBuf,
    root: SigningKey,
    /// Issuer keys with their windows; `keys.json` is written from these.
    issuers: Vec<(IssuerKey, SigningKey)>,
    next_bundle_version: u64,
    /// `keys.json` as last read or written: a different file means another
    /// process changed the keys ([`KeyStore::reload_if_changed`]).
    manifest_text: String,
}

/// File whose exclusive lock serialises changes to a KEYS directory.
pub const LOCK_FILE: &str = "keys.lock";

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStore")
            .field("dir", &self.dir)
            .field("issuers", &self.trust_list())
            .finish_non_exhaustive()
    }
}

fn key_file(dir: &Path, key_id: u32) -> PathBuf {
    dir.join(format!("issuer-{key_id}.key"))
}

fn read_signing_key(path: &Path) -> Result<SigningKey, KeysError> {
    let bytes = read_hex(path).map_err(io_err(path))?;
    let seed: [u8; 32] = bytes.try_into().map_err(|v: Vec<u8>| KeysError::Corrupt {
        path: path.to_path_buf(),
        why: format!(
            "expected a 32-byte key seed (64 hex characters), got {} bytes",
            v.len()
        ),
    })?;
    Ok(SigningKey::from_bytes(&seed))
}

/// A fresh random credential id: the one draw [`KeyStore::issue_credential`]
/// makes from its RNG, for callers of [`KeyStore::issue_credential_with_id`].
pub fn draw_credential_id(rng: &mut impl CryptoRngCore) -> CredentialId {
    let mut id = [0u8; 16];
    rng.fill_bytes(&mut id);
    CredentialId(id)
}

impl KeyStore {
    /// Creates a new deployment: root key and first issuer key, valid from
    /// `now_unix_s` for [`DEFAULT_ISSUER_VALIDITY_S`].
    pub fn init(
        dir: &Path,
        now_unix_s: u64,
        rng: &mut impl CryptoRngCore,
    ) -> Result<KeyStore, KeysError> {
        if dir.join("root.key").exists() {
            return Err(KeysError::AlreadyInitialised(dir.to_path_buf()));
        }
        create_private_dir(dir).map_err(io_err(dir))?;
        let root = SigningKey::generate(rng);
        let issuer = SigningKey::generate(rng);
        let issuer_entry = IssuerKey {
            key_id: 1,
            public_key: issuer.verifying_key().to_bytes(),
            valid_from_unix_s: now_unix_s,
            valid_until_unix_s: now_unix_s + DEFAULT_ISSUER_VALIDITY_S,
        };
        let p = key_file(dir, 1);
        write_atomic(&p, hex::encode(issuer.to_bytes()).as_bytes(), true).map_err(io_err(&p))?;
        let p = dir.join("root.pub");
        write_atomic(
            &p,
            format!("{}\n", hex::encode(root.verifying_key().to_bytes())).as_bytes(),
            false,
        )
        .map_err(io_err(&p))?;
        let store = KeyStore {
            dir: dir.to_path_buf(),
            root,
            issuers: vec![(issuer_entry, issuer)],
            next_bundle_version: 1,
            manifest_text: String::new(),
        };
        let mut store = store;
        store.save_manifest()?;
        // The root key last: its presence marks a complete store.
        let p = dir.join("root.key");
        write_atomic(&p, hex::encode(store.root.to_bytes()).as_bytes(), true)
            .map_err(io_err(&p))?;
        Ok(store)
    }

    /// Opens an existing KEYS directory, checking every file agrees with the manifest.
    pub fn open(dir: &Path) -> Result<KeyStore, KeysError> {
        let mp = dir.join("keys.json");
        let text = std::fs::read_to_string(&mp).map_err(io_err(&mp))?;
        let manifest: Manifest = serde_json::from_str(&text).map_err(|e| KeysError::Corrupt {
            path: mp.clone(),
            why: e.to_string(),
        })?;
        let rp = dir.join("root.key");
        let root = read_signing_key(&rp)?;
        if root.verifying_key().to_bytes() != manifest.root_public_key {
            return Err(KeysError::Corrupt {
                path: rp,
                why: "root key does not match root_public_key in keys.json".into(),
            });
        }
        let mut issuers = Vec::new();
        for k in &manifest.issuers {
            let p = key_file(dir, k.key_id);
            let sk = read_signing_key(&p)?;
            if sk.verifying_key().to_bytes() != k.public_key {
                return Err(KeysError::Corrupt {
                    path: p,
                    why: format!("issuer key {} does not match keys.json", k.key_id),
                });
            }
            issuers.push((k.clone(), sk));
        }
        Ok(KeyStore {
            dir: dir.to_path_buf(),
            root,
            issuers,
            next_bundle_version: manifest.next_bundle_version,
            manifest_text: text,
        })
    }

    /// Runs `change` holding the directory's lock ([`LOCK_FILE`]) on the
    /// keys as they are on disk now: a change another process made since
    /// this store was read (a rotation beside a running service) is
    /// loaded first, never overwritten.
    fn locked<T>(
        &mut self,
        change: impl FnOnce(&mut KeyStore) -> Result<T, KeysError>,
    ) -> Result<T, KeysError> {
        let p = self.dir.join(LOCK_FILE);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(io_err(&p))?;
        fs2::FileExt::lock_exclusive(&file).map_err(io_err(&p))?;
        self.reload()?;
        let out = change(self);
        // Closing the file releases the lock.
        drop(file);
        out
    }

    /// Re-reads the directory (another process may have rotated or retired
    /// a key, or published bundles). The root key must be the same.
    pub fn reload(&mut self) -> Result<(), KeysError> {
        let fresh = KeyStore::open(&self.dir)?;
        if fresh.root.verifying_key() != self.root.verifying_key() {
            return Err(KeysError::Corrupt {
                path: self.dir.join("root.key"),
                why: "the root key changed under a running process".into(),
            });
        }
        self.issuers = fresh.issuers;
        self.next_bundle_version = self.next_bundle_version.max(fresh.next_bundle_version);
        self.manifest_text = fresh.manifest_text;
        Ok(())
    }

    /// Re-reads the directory when `keys.json` differs from what this store
    /// last read or wrote; returns whether it did. Cheap (one small file
    /// read), so a service calls it before every bundle it builds.
    pub fn reload_if_changed(&mut self) -> Result<bool, KeysError> {
        let mp = self.dir.join("keys.json");
        let text = std::fs::read_to_string(&mp).map_err(io_err(&mp))?;
        if text == self.manifest_text {
            return Ok(false);
        }
        self.reload()?;
        Ok(true)
    }

    fn save_manifest(&mut self) -> Result<(), KeysError> {
        let p = self.dir.join("keys.json");
        let manifest = Manifest {
            format: 1,
            root_public_key: self.root.verifying_key().to_bytes(),
            issuers: self.trust_list(),
            next_bundle_version: self.next_bundle_version,
        };
        let text = serde_json::to_string_pretty(&manifest).expect("manifest serialises");
        write_atomic(&p, text.as_bytes(), false).map_err(io_err(&p))?;
        self.manifest_text = text;
        Ok(())
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Adds a new issuer key valid from `now_unix_s`. Older keys keep their
    /// windows, so credentials they signed keep working until they expire.
    pub fn rotate_issuer(
        &mut self,
        now_unix_s: u64,
        rng: &mut impl CryptoRngCore,
    ) -> Result<u32, KeysError> {
        self.locked(|ks| ks.rotate_issuer_unlocked(now_unix_s, rng))
    }

    fn rotate_issuer_unlocked(
        &mut self,
        now_unix_s: u64,
        rng: &mut impl CryptoRngCore,
    ) -> Result<u32, KeysError> {
        let key_id = self
            .issuers
            .iter()
            .map(|(k, _)| k.key_id)
            .max()
            .unwrap_or(0)
            + 1;
        let sk = SigningKey::generate(rng);
        let entry = IssuerKey {
            key_id,
            public_key: sk.verifying_key().to_bytes(),
            valid_from_unix_s: now_unix_s,
            valid_until_unix_s: now_unix_s + DEFAULT_ISSUER_VALIDITY_S,
        };
        // Key file first: a manifest naming a missing key would be corrupt.
        let p = key_file(&self.dir, key_id);
        write_atomic(&p, hex::encode(sk.to_bytes()).as_bytes(), true).map_err(io_err(&p))?;
        self.issuers.push((entry, sk));
        self.save_manifest()?;
        Ok(key_id)
    }

    /// Retires an issuer key early (e.g. suspected compromise): its window
    /// ends at `at_unix_s`. Readers refuse its credentials after their next bundle.
    pub fn retire_issuer(&mut self, key_id: u32, at_unix_s: u64) -> Result<(), KeysError> {
        self.locked(|ks| ks.retire_issuer_unlocked(key_id, at_unix_s))
    }

    fn retire_issuer_unlocked(&mut self, key_id: u32, at_unix_s: u64) -> Result<(), KeysError> {
        let (k, _) = self
            .issuers
            .iter_mut()
            .find(|(k, _)| k.key_id == key_id)
            .ok_or_else(|| KeysError::Invalid {
                field: "key_id",
                why: format!("no issuer key {key_id}"),
            })?;
        k.valid_until_unix_s = k.valid_until_unix_s.min(at_unix_s);
        self.save_manifest()
    }

    /// The root signing key (signs bundles).
    pub fn root_signing_key(&self) -> &SigningKey {
        &self.root
    }
    /// The root public key every reader is provisioned with.
    pub fn root_public_key(&self) -> VerifyingKey {
        self.root.verifying_key()
    }
    /// Every issuer key with its window: the trust list readers get.
    pub fn trust_list(&self) -> Vec<IssuerKey> {
        self.issuers.iter().map(|(k, _)| k.clone()).collect()
    }

    /// The newest issuer key valid at `now_unix_s`.
    pub fn current_issuer(&self, now_unix_s: u64) -> Result<(&IssuerKey, &SigningKey), KeysError> {
        self.issuers
            .iter()
            .filter(|(k, _)| {
                k.valid_from_unix_s <= now_unix_s && now_unix_s <= k.valid_until_unix_s
            })
            .max_by_key(|(k, _)| k.key_id)
            .map(|(k, s)| (k, s))
            .ok_or(KeysError::NoValidIssuer { now_unix_s })
    }

    /// Issues a credential with a fresh random id, signed by the current
    /// issuer key. Refuses invalid, weak or mixed-order device keys and lifetimes over
    /// [`MAX_CREDENTIAL_VALIDITY_S`]; the end is clamped to the issuer key's window.
    pub fn issue_credential(
        &self,
        req: &IssueRequest,
        now_unix_s: u64,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Credential, KeysError> {
        self.issue(req, now_unix_s, || draw_credential_id(rng))
    }

    /// [`KeyStore::issue_credential`] with an id the caller drew with
    /// [`draw_credential_id`] (a repeated id would make two credentials
    /// one in the deny list), so that a batch can be issued on several
    /// threads while its ids are drawn in order: the same credentials as
    /// one at a time, for a seeded RNG. The checks are the same.
    pub fn issue_credential_with_id(
        &self,
        req: &IssueRequest,
        now_unix_s: u64,
        id: CredentialId,
    ) -> Result<Credential, KeysError> {
        self.issue(req, now_unix_s, || id)
    }

    /// [`KeyStore::issue_credential_with_id`] for a device key already
    /// checked (`key`, which must be `req.device_public_key`): a batch's
    /// keys are checked together with
    /// [`fare_credential::keys::device_keys_for_issuance`], for about a
    /// third of what checking each costs. The other checks are the same.
    pub fn issue_credential_for_key(
        &self,
        req: &IssueRequest,
        key: &IssuableKey,
        now_unix_s: u64,
        id: CredentialId,
    ) -> Result<Credential, KeysError> {
        self.issue_checked(req, key, now_unix_s, || id)
    }

    /// The device key's checks, then [`KeyStore::issue_checked`].
    fn issue(
        &self,
        req: &IssueRequest,
        now_unix_s: u64,
        draw_id: impl FnOnce() -> CredentialId,
    ) -> Result<Credential, KeysError> {
        let key = parse_device_key_for_issuance(&req.device_public_key)?;
        self.issue_checked(req, &key, now_unix_s, draw_id)
    }

    /// The request's checks, then the id drawn (not for a refused
    /// request), then the signature.
    fn issue_checked(
        &self,
        req: &IssueRequest,
        key: &IssuableKey,
        now_unix_s: u64,
        draw_id: impl FnOnce() -> CredentialId,
    ) -> Result<Credential, KeysError> {
        if key.to_bytes() != req.device_public_key {
            return Err(KeysError::Invalid {
                field: "device_public_key",
                why: "not the key checked for issuance".into(),
            });
        }
        if req.valid_for_s == 0 || req.valid_for_s > MAX_CREDENTIAL_VALIDITY_S {
            return Err(KeysError::Invalid {
                field: "valid_for_s",
                why: format!(
                    "{} s: expected 1..={MAX_CREDENTIAL_VALIDITY_S} s (31 days)",
                    req.valid_for_s
                ),
            });
        }
        let (issuer, sk) = self.current_issuer(now_unix_s)?;
        let until = (req.valid_from_unix_s + req.valid_for_s).min(issuer.valid_until_unix_s);
        let to_u32 = |field, v: u64| {
            u32::try_from(v).map_err(|_| KeysError::Invalid {
                field,
                why: format!("{v} does not fit the wire format (unix seconds up to 2106)"),
            })
        };
        let body = CredentialBody {
            issuer_key_id: issuer.key_id,
            credential_id: draw_id(),
            device_public_key: req.device_public_key,
            profile: req.profile,
            valid_from_unix_s: to_u32("valid_from_unix_s", req.valid_from_unix_s)?,
            valid_until_unix_s: to_u32("valid_until_unix_s", until)?,
        };
        Ok(Credential::issue_v1(body, sk))
    }

    /// Signs a bundle with the root key.
    pub fn sign_bundle(&self, bundle: &ReaderBundle) -> Result<Vec<u8>, KeysError> {
        Ok(bundle.sign_v1(&self.root)?)
    }

    /// Takes the next bundle version number (persisted, strictly increasing).
    pub fn next_bundle_version(&mut self) -> Result<u64, KeysError> {
        self.locked(|ks| {
            let v = ks.next_bundle_version;
            ks.next_bundle_version += 1;
            ks.save_manifest()?;
            Ok(v)
        })
    }

    /// Records an offline issuance (CLI use): credential id → account.
    pub fn record_issued(&self, cred: &Credential, account: &str) -> Result<(), KeysError> {
        use std::io::Write;
        let p = self.dir.join("issued.jsonl");
        let line = serde_json::json!({
            "credential_id": cred.id().to_hex(),
            "account": account,
            "profile": cred.body().profile,
            "valid_from_unix_s": cred.body().valid_from_unix_s,
            "valid_until_unix_s": cred.body().valid_until_unix_s,
        });
        let mut opts = std::fs::OpenOptions::new();
        opts.create(true).append(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&p).map_err(io_err(&p))?;
        writeln!(f, "{line}").map_err(io_err(&p))?;
        f.sync_all().map_err(io_err(&p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fare_credential::verify::{verify_ride_code, Policy};
    use fare_credential::{DenyList, RideCode, TrustList};
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    const T0: u64 = 1_800_000_000;

    #[test]
    fn init_open_issue_rotate() {
        let d = tempfile::tempdir().unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let mut ks = KeyStore::init(d.path(), T0, &mut rng).unwrap();
        assert!(matches!(
            KeyStore::init(d.path(), T0, &mut rng),
            Err(KeysError::AlreadyInitialised(_))
        ));
        let device = SigningKey::generate(&mut rng);
        let req = IssueRequest {
            device_public_key: device.verifying_key().to_bytes(),
            profile: Profile::Senior,
            valid_from_unix_s: T0,
            valid_for_s: 72 * 3600,
        };
        let c1 = ks.issue_credential(&req, T0, &mut rng).unwrap();
        assert_eq!(c1.body().issuer_key_id, 1);
        let k2 = ks.rotate_issuer(T0 + 10, &mut rng).unwrap();
        assert_eq!(k2, 2);
        let c2 = ks.issue_credential(&req, T0 + 20, &mut rng).unwrap();
        assert_eq!(c2.body().issuer_key_id, 2);
        assert_ne!(c1.id(), c2.id());

        // Reopen: same keys; both credentials verify against the trust list.
        let ks2 = KeyStore::open(d.path()).unwrap();
        assert_eq!(ks2.trust_list(), ks.trust_list());
        let trust = TrustList::new(ks2.trust_list()).unwrap();
        for c in [&c1, &c2] {
            let code = RideCode::sign_v1(c, (T0 + 30) as u32, 1, &device);
            verify_ride_code(
                code.as_bytes(),
                &trust,
                &DenyList::default(),
                &Policy::default(),
                T0 + 40,
                None,
            )
            .unwrap();
        }
        // Retiring key 1 makes its credentials fail with issuer_key_not_valid.
        ks.retire_issuer(1, T0 + 35).unwrap();
        let trust = TrustList::new(KeyStore::open(d.path()).unwrap().trust_list()).unwrap();
        let code = RideCode::sign_v1(&c1, (T0 + 30) as u32, 2, &device);
        let err = verify_ride_code(
            code.as_bytes(),
            &trust,
            &DenyList::default(),
            &Policy::default(),
            T0 + 40,
            None,
        )
        .unwrap_err();
        assert_eq!(err.code(), "issuer_key_not_valid");
    }

    #[test]
    fn refuses_weak_device_key_and_long_lifetimes() {
        let d = tempfile::tempdir().unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let ks = KeyStore::init(d.path(), T0, &mut rng).unwrap();
        // The identity point (y = 1): small order, must never be certified.
        let mut weak = [0u8; 32];
        weak[0] = 1;
        let req = IssueRequest {
            device_public_key: weak,
            profile: Profile::Adult,
            valid_from_unix_s: T0,
            valid_for_s: 3600,
        };
        assert!(matches!(
            ks.issue_credential(&req, T0, &mut rng),
            Err(KeysError::BadDeviceKey(_))
        ));
        // A large-order point with a small-order component (a·B + T₈): a
        // valid key to `parse_public_key`, never made by an honest device.
        let mixed = fare_credential::testkit::mixed_order_public_key();
        assert!(fare_credential::keys::parse_public_key(&mixed).is_ok());
        let err = ks
            .issue_credential(
                &IssueRequest {
                    device_public_key: mixed,
                    ..req
                },
                T0,
                &mut rng,
            )
            .unwrap_err();
        assert!(
            matches!(
                err,
                KeysError::BadDeviceKey(fare_credential::keys::KeyError::MixedOrder)
            ),
            "{err}"
        );
        let good = SigningKey::generate(&mut rng).verifying_key().to_bytes();
        let req = IssueRequest {
            device_public_key: good,
            valid_for_s: 90 * 86_400,
            ..req
        };
        assert!(matches!(
            ks.issue_credential(&req, T0, &mut rng),
            Err(KeysError::Invalid {
                field: "valid_for_s",
                ..
            })
        ));
    }

    /// Ids drawn in order and credentials issued with them are the
    /// credentials issued one at a time from the same seeded RNG, byte for
    /// byte; a refused request is refused the same way and, one at a time,
    /// draws no id.
    #[test]
    fn issuing_with_drawn_ids_gives_the_same_credentials() {
        let d = tempfile::tempdir().unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let ks = KeyStore::init(d.path(), T0, &mut rng).unwrap();
        let req = |i: u64| IssueRequest {
            device_public_key: SigningKey::generate(&mut ChaCha20Rng::seed_from_u64(100 + i))
                .verifying_key()
                .to_bytes(),
            profile: Profile::Adult,
            valid_from_unix_s: T0,
            valid_for_s: 3600 * (i + 1),
        };
        let one_by_one: Vec<Credential> = {
            let mut rng = ChaCha20Rng::seed_from_u64(6);
            (0..4)
                .map(|i| ks.issue_credential(&req(i), T0, &mut rng).unwrap())
                .collect()
        };
        let mut rng = ChaCha20Rng::seed_from_u64(6);
        for (i, expected) in one_by_one.iter().enumerate() {
            let id = draw_credential_id(&mut rng);
            let c = ks.issue_credential_with_id(&req(i as u64), T0, id).unwrap();
            assert_eq!(c.as_bytes(), expected.as_bytes());
        }
        // A weak key: refused with its id as without, and no id drawn.
        let mut weak = req(9);
        weak.device_public_key = [0u8; 32];
        weak.device_public_key[0] = 1;
        assert!(matches!(
            ks.issue_credential_with_id(&weak, T0, CredentialId([7; 16])),
            Err(KeysError::BadDeviceKey(_))
        ));
        let mut a = ChaCha20Rng::seed_from_u64(8);
        let b = ChaCha20Rng::seed_from_u64(8);
        assert!(ks.issue_credential(&weak, T0, &mut a).is_err());
        assert_eq!(
            a.get_word_pos(),
            b.get_word_pos(),
            "a refused request drew an id"
        );
    }

    /// A credential issued for a key checked beforehand is the credential
    /// `issue_credential_with_id` issues, byte for byte; a checked key
    /// that is not the request's is refused.
    #[test]
    fn issuing_for_a_checked_key_gives_the_same_credential() {
        let d = tempfile::tempdir().unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let ks = KeyStore::init(d.path(), T0, &mut rng).unwrap();
        let key = |seed| {
            SigningKey::generate(&mut ChaCha20Rng::seed_from_u64(seed))
                .verifying_key()
                .to_bytes()
        };
        let req = IssueRequest {
            device_public_key: key(100),
            profile: Profile::Adult,
            valid_from_unix_s: T0,
            valid_for_s: 3600,
        };
        let id = CredentialId([3; 16]);
        let checked = parse_device_key_for_issuance(&req.device_public_key).unwrap();
        let c = ks.issue_credential_for_key(&req, &checked, T0, id).unwrap();
        let expected = ks.issue_credential_with_id(&req, T0, id).unwrap();
        assert_eq!(c.as_bytes(), expected.as_bytes());
        let other = parse_device_key_for_issuance(&key(101)).unwrap();
        assert!(matches!(
            ks.issue_credential_for_key(&req, &other, T0, id),
            Err(KeysError::Invalid {
                field: "device_public_key",
                ..
            })
        ));
    }

    /// A rotation made by another process (the CLI beside a running
    /// service) survives the service's next bundle version, and the
    /// service's store sees the new key after `reload_if_changed`.
    #[test]
    fn a_change_made_beside_an_open_store_is_never_overwritten() {
        let d = tempfile::tempdir().unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(4);
        let mut service = KeyStore::init(d.path(), T0, &mut rng).unwrap();
        assert_eq!(service.next_bundle_version().unwrap(), 1);
        let mut cli = KeyStore::open(d.path()).unwrap();
        assert_eq!(cli.rotate_issuer(T0 + 5, &mut rng).unwrap(), 2);
        cli.retire_issuer(1, T0 + 50).unwrap();
        // The service publishes a bundle with its stale view in memory.
        assert_eq!(service.next_bundle_version().unwrap(), 2);
        let on_disk = KeyStore::open(d.path()).unwrap().trust_list();
        assert_eq!(on_disk.len(), 2, "the rotation survived");
        assert_eq!(
            on_disk[0].valid_until_unix_s,
            T0 + 50,
            "the retirement survived"
        );
        assert_eq!(
            service.trust_list(),
            on_disk,
            "the service reloaded under the lock"
        );
        // The CLI's own bundle counter continues after the service's.
        assert_eq!(cli.next_bundle_version().unwrap(), 3);
        assert!(service.reload_if_changed().unwrap());
        assert!(!service.reload_if_changed().unwrap());
        assert_eq!(service.next_bundle_version().unwrap(), 4);
    }

    #[test]
    fn tampered_manifest_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        KeyStore::init(d.path(), T0, &mut rng).unwrap();
        let p = d.path().join("keys.json");
        let text = std::fs::read_to_string(&p).unwrap();
        let other = hex::encode(SigningKey::generate(&mut rng).verifying_key().to_bytes());
        let mut m: serde_json::Value = serde_json::from_str(&text).unwrap();
        m["issuers"][0]["public_key"] = serde_json::Value::String(other);
        std::fs::write(&p, m.to_string()).unwrap();
        let err = KeyStore::open(d.path()).unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");
    }
}
