//! The phone side: a device key, an installed credential, and ride codes
//! made fully offline.
//!
//! [`DeviceWallet`] is the pure, in-memory core (the simulator drives
//! thousands of them); [`Wallet`] persists it in a directory for the CLI.
//! A code is `credential + issued_at + device_seq`, signed by the device
//! key. `issued_at` is the phone's clock corrected by the offset measured at
//! its last online contact; `device_seq` strictly increases and is persisted
//! *before* a code is shown, so two codes never share a sequence number even
//! across a crash.
#![forbid(unsafe_code)]

pub mod online;

use ed25519_dalek::SigningKey;
use fare_credential::reason::human_duration;
use fare_credential::{Credential, RideCode};
use fare_keys::files::{create_private_dir, read_hex, write_atomic};
use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// How often the wallet shows a new code (DESIGN: every ~30 s).
pub const CODE_REFRESH_S: u64 = 30;
/// `code` and `show` warn when the credential ends within this (or within
/// a third of its lifetime, when that is shorter).
pub const RENEW_WARNING_S: u64 = 24 * 3600;
/// Length of a credential in its binary encoding (the `fare-keys issue` file).
pub const CREDENTIAL_BYTES: usize = 126;
/// Device keys remembered as used (a renewal a day for 27 years).
pub const MAX_USED_KEYS: usize = 10_000;

/// Why the wallet cannot make a code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WalletError {
    /// No credential installed yet.
    #[error("no credential installed: ask the back office for one (`fare-keys issue`) and `fare-wallet install` it")]
    NoCredential,
    /// The credential names another device key.
    #[error("credential was issued for device key {credential_key}, but this wallet's key is {wallet_key}")]
    CredentialForOtherDevice {
        /// Key in the credential.
        credential_key: String,
        /// This wallet's key.
        wallet_key: String,
    },
    /// The credential is expired by the wallet's corrected clock.
    #[error("credential expired {} ago: go online to renew it", human_duration(*.ago_s))]
    CredentialExpired {
        /// How long ago.
        ago_s: u64,
    },
    /// Not a credential.
    #[error("not a credential: {0}")]
    BadCredential(#[from] fare_credential::FormatError),
    /// The corrected time does not fit the wire format.
    #[error("device time {0} is outside the wire format's range (1970..2106): is the phone's clock broken?")]
    TimeOutOfRange(i64),
    /// 2^32 codes made with one credential: renew.
    #[error("device sequence exhausted for this credential: renew it")]
    SequenceExhausted,
    /// `init` on a wallet that already has a key.
    #[error("{0} already holds a device key; use --rotate to make a new one (needed at each credential renewal)")]
    AlreadyInitialised(PathBuf),
    /// File trouble.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A credential for a device key that already had one: every
    /// credential gets a fresh key, so codes of two credentials cannot be linked.
    #[error("refusing a second credential for device key {key}: this wallet already used it for credential {previous}; a renewal needs a fresh key (`fare-wallet renew`)")]
    KeyAlreadyUsed {
        /// The key (hex).
        key: String,
        /// The credential it had (hex id), when still known.
        previous: String,
    },
    /// The credential file is in neither accepted encoding.
    #[error("{0}")]
    CredentialEncoding(String),
    /// The installed credential belongs to an earlier device key (a renewal was interrupted).
    #[error("the installed credential is for an earlier device key (a renewal was interrupted): run `fare-wallet renew`")]
    StaleCredential,
    /// A state file is corrupt.
    #[error("{path}: {why}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
}

/// The in-memory wallet core.
#[derive(Debug)]
pub struct DeviceWallet {
    key: SigningKey,
    credential: Option<Credential>,
    next_seq: u32,
    clock_offset_s: i64,
}

impl DeviceWallet {
    /// A wallet with a fresh device key from `rng`.
    pub fn generate(rng: &mut impl CryptoRngCore) -> DeviceWallet {
        DeviceWallet::from_key(SigningKey::generate(rng))
    }
    /// A wallet around an existing key.
    pub fn from_key(key: SigningKey) -> DeviceWallet {
        DeviceWallet {
            key,
            credential: None,
            next_seq: 1,
            clock_offset_s: 0,
        }
    }
    /// The device public key to register with the back office.
    pub fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }
    /// The installed credential.
    pub fn credential(&self) -> Option<&Credential> {
        self.credential.as_ref()
    }
    /// The next sequence number.
    pub fn next_seq(&self) -> u32 {
        self.next_seq
    }
    /// Seconds to add to the phone clock to get server time.
    pub fn clock_offset_s(&self) -> i64 {
        self.clock_offset_s
    }

    /// Installs a credential, which must name this wallet's device key.
    pub fn install(&mut self, credential: Credential) -> Result<(), WalletError> {
        if credential.body().device_public_key != self.public_key() {
            return Err(WalletError::CredentialForOtherDevice {
                credential_key: hex::encode(credential.body().device_public_key),
                wallet_key: hex::encode(self.public_key()),
            });
        }
        self.credential = Some(credential);
        Ok(())
    }

    /// Records the server's time seen at an online contact, so offline codes
    /// carry corrected time even if the phone's clock drifts.
    pub fn observe_server_time(&mut self, server_now_unix_s: u64, device_now_unix_s: u64) {
        self.clock_offset_s = server_now_unix_s as i64 - device_now_unix_s as i64;
    }

    /// Makes the next ride code at the phone's clock reading `device_now_unix_s`.
    pub fn make_code(&mut self, device_now_unix_s: u64) -> Result<RideCode, WalletError> {
        let cred = self.credential.as_ref().ok_or(WalletError::NoCredential)?;
        let corrected = device_now_unix_s as i64 + self.clock_offset_s;
        let issued_at =
            u32::try_from(corrected).map_err(|_| WalletError::TimeOutOfRange(corrected))?;
        let until = cred.body().valid_until_unix_s;
        if issued_at > until {
            return Err(WalletError::CredentialExpired {
                ago_s: (issued_at - until) as u64,
            });
        }
        let seq = self.next_seq;
        self.next_seq = seq.checked_add(1).ok_or(WalletError::SequenceExhausted)?;
        Ok(RideCode::sign_v1(cred, issued_at, seq, &self.key))
    }
}

#[derive(Serialize, Deserialize)]
struct State {
    next_seq: u32,
    clock_offset_s: i64,
    /// Device public keys (hex) that had a credential installed, with that
    /// credential's id: never given a second one.
    #[serde(default)]
    used_keys: Vec<(String, String)>,
}

/// Reads a credential file in either accepted encoding: the 126-byte binary
/// (`fare-keys issue --out`) or its 252 hex characters (the `credential`
/// field of `POST /v1/accounts/{id}/devices`; whitespace around is ignored).
pub fn decode_credential_file(bytes: &[u8]) -> Result<Vec<u8>, WalletError> {
    if bytes.len() == CREDENTIAL_BYTES && bytes[0] == 1 {
        return Ok(bytes.to_vec());
    }
    let text = std::str::from_utf8(bytes).map(str::trim).unwrap_or("");
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        let raw = hex::decode(text).map_err(|e| {
            WalletError::CredentialEncoding(format!(
                "credential file is hex but not whole bytes: {e}"
            ))
        })?;
        if raw.len() == CREDENTIAL_BYTES {
            return Ok(raw);
        }
        return Err(WalletError::CredentialEncoding(format!(
            "credential file holds {} hex characters: expected {} (a {CREDENTIAL_BYTES}-byte credential)",
            text.len(),
            2 * CREDENTIAL_BYTES
        )));
    }
    Err(WalletError::CredentialEncoding(format!(
        "credential file of {} bytes is neither encoding accepted: the {CREDENTIAL_BYTES}-byte binary \
         (`fare-keys issue --out`) or its {} hex characters (the `credential` field settlement answers)",
        bytes.len(),
        2 * CREDENTIAL_BYTES
    )))
}

/// A wallet stored in a directory: `device.key` (0600), `device.pub`,
/// `credential.bin`, `state.json` (next sequence, clock offset, device keys
/// already used), and once enrolled `passenger.json` (0600, [`online`]).
#[derive(Debug)]
pub struct Wallet {
    dir: PathBuf,
    core: DeviceWallet,
    used_keys: Vec<(String, String)>,
    /// `credential.bin` names an earlier key (a renewal cut short).
    stale_credential: bool,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> WalletError + '_ {
    move |source| WalletError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Wallet {
    /// Creates a wallet with a new device key. With `rotate`, replaces an
    /// existing key (and drops its credential: codes from different keys
    /// cannot be linked, which is the point of rotating).
    pub fn init(
        dir: &Path,
        rotate: bool,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Wallet, WalletError> {
        let kp = dir.join("device.key");
        if kp.exists() && !rotate {
            return Err(WalletError::AlreadyInitialised(dir.to_path_buf()));
        }
        create_private_dir(dir).map_err(io(dir))?;
        let core = DeviceWallet::generate(rng);
        write_atomic(&kp, hex::encode(core.key.to_bytes()).as_bytes(), true).map_err(io(&kp))?;
        let pp = dir.join("device.pub");
        write_atomic(
            &pp,
            format!("{}\n", hex::encode(core.public_key())).as_bytes(),
            false,
        )
        .map_err(io(&pp))?;
        let cp = dir.join("credential.bin");
        if cp.exists() {
            std::fs::remove_file(&cp).map_err(io(&cp))?;
        }
        // Keys used before stay remembered across a rotation.
        let used_keys = match Wallet::read_state(dir) {
            Ok(st) => st.used_keys,
            Err(_) => Vec::new(),
        };
        let w = Wallet {
            dir: dir.to_path_buf(),
            core,
            used_keys,
            stale_credential: false,
        };
        w.save_state()?;
        Ok(w)
    }

    /// Opens a wallet directory.
    pub fn open(dir: &Path) -> Result<Wallet, WalletError> {
        let kp = dir.join("device.key");
        let seed: [u8; 32] =
            read_hex(&kp)
                .map_err(io(&kp))?
                .try_into()
                .map_err(|_| WalletError::Corrupt {
                    path: kp.clone(),
                    why: "expected a 32-byte key seed (64 hex characters)".into(),
                })?;
        let mut core = DeviceWallet::from_key(SigningKey::from_bytes(&seed));
        let st = Wallet::read_state(dir)?;
        core.next_seq = st.next_seq;
        core.clock_offset_s = st.clock_offset_s;
        let cp = dir.join("credential.bin");
        let mut stale_credential = false;
        if cp.exists() {
            let bytes = std::fs::read(&cp).map_err(io(&cp))?;
            match core.install(Credential::from_bytes(&bytes)?) {
                Ok(()) => {}
                // The new key was written, its credential not yet: renew again.
                Err(WalletError::CredentialForOtherDevice { .. }) => stale_credential = true,
                Err(e) => return Err(e),
            }
        }
        Ok(Wallet {
            dir: dir.to_path_buf(),
            core,
            used_keys: st.used_keys,
            stale_credential,
        })
    }

    fn read_state(dir: &Path) -> Result<State, WalletError> {
        let sp = dir.join("state.json");
        let text = std::fs::read_to_string(&sp).map_err(io(&sp))?;
        serde_json::from_str(&text).map_err(|e| WalletError::Corrupt {
            path: sp.clone(),
            why: e.to_string(),
        })
    }

    /// The wallet directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Refuses a credential whose device key already had another one here.
    fn check_key_unused(&self, cred: &Credential) -> Result<(), WalletError> {
        let key = hex::encode(cred.body().device_public_key);
        match self.used_keys.iter().find(|(k, _)| *k == key) {
            Some((_, prev)) if *prev != cred.id().to_hex() => Err(WalletError::KeyAlreadyUsed {
                key,
                previous: prev.clone(),
            }),
            _ => Ok(()),
        }
    }

    fn remember_key(&mut self, cred: &Credential) {
        let key = hex::encode(cred.body().device_public_key);
        if !self.used_keys.iter().any(|(k, _)| *k == key) {
            self.used_keys.push((key, cred.id().to_hex()));
        }
        if self.used_keys.len() > MAX_USED_KEYS {
            let drop = self.used_keys.len() - MAX_USED_KEYS;
            self.used_keys.drain(..drop);
        }
    }

    /// A warning when the credential ends soon by the corrected clock
    /// (within [`RENEW_WARNING_S`], or a third of its lifetime if shorter).
    pub fn expiry_warning(&self, device_now_unix_s: u64) -> Option<String> {
        let c = self.core.credential()?;
        let now = device_now_unix_s as i64 + self.core.clock_offset_s;
        let (from, until) = (
            c.body().valid_from_unix_s as i64,
            c.body().valid_until_unix_s as i64,
        );
        let window = (RENEW_WARNING_S as i64).min((until - from) / 3);
        let left = until - now;
        (left >= 0 && left < window).then(|| {
            format!(
                "credential expires in {}: go online and run `fare-wallet renew`",
                human_duration(left as u64)
            )
        })
    }

    fn save_state(&self) -> Result<(), WalletError> {
        let sp = self.dir.join("state.json");
        let st = State {
            next_seq: self.core.next_seq,
            clock_offset_s: self.core.clock_offset_s,
            used_keys: self.used_keys.clone(),
        };
        write_atomic(
            &sp,
            serde_json::to_string(&st)
                .expect("state serialises")
                .as_bytes(),
            false,
        )
        .map_err(io(&sp))
    }

    /// The in-memory core.
    pub fn core(&self) -> &DeviceWallet {
        &self.core
    }

    /// Installs credential bytes (binary or hex, [`decode_credential_file`]);
    /// `server_time` = (server clock, phone clock) seen now. Refuses a
    /// credential for another key, or a second one for a key already used.
    pub fn install(
        &mut self,
        credential_bytes: &[u8],
        server_time: Option<(u64, u64)>,
    ) -> Result<(), WalletError> {
        let credential_bytes = decode_credential_file(credential_bytes)?;
        let cred = Credential::from_bytes(&credential_bytes)?;
        self.check_key_unused(&cred)?;
        self.core.install(cred.clone())?;
        self.stale_credential = false;
        self.remember_key(&cred);
        if let Some((server, device)) = server_time {
            self.core.observe_server_time(server, device);
        }
        // State (with the key marked used) first: a crash before the
        // credential lands must not let the key take another credential.
        self.save_state()?;
        let cp = self.dir.join("credential.bin");
        write_atomic(&cp, &credential_bytes, false).map_err(io(&cp))
    }

    /// Installs a renewal: `key` is the fresh device key the credential was
    /// requested for; it replaces the wallet's key, the sequence restarts
    /// at 1 (nothing links it to the old key's codes) and the clock offset
    /// comes from the server time seen at this contact.
    pub fn install_renewal(
        &mut self,
        key: SigningKey,
        credential_bytes: &[u8],
        server_time: (u64, u64),
    ) -> Result<(), WalletError> {
        let cred = Credential::from_bytes(credential_bytes)?;
        self.check_key_unused(&cred)?;
        let offset = self.core.clock_offset_s;
        let mut core = DeviceWallet::from_key(key);
        core.clock_offset_s = offset;
        core.install(cred.clone())?;
        core.observe_server_time(server_time.0, server_time.1);
        self.core = core;
        self.remember_key(&cred);
        // Order: the new key, then the state (key marked used, sequence 1),
        // then its credential. A crash in between leaves the old credential
        // beside the new key: refused as stale (renew again), so the old
        // credential never signs with a restarted sequence.
        let kp = self.dir.join("device.key");
        let written = write_atomic(&kp, hex::encode(self.core.key.to_bytes()).as_bytes(), true)
            .map_err(io(&kp))
            .and_then(|()| self.save_state())
            .and_then(|()| {
                let pp = self.dir.join("device.pub");
                write_atomic(
                    &pp,
                    format!("{}\n", hex::encode(self.core.public_key())).as_bytes(),
                    false,
                )
                .map_err(io(&pp))?;
                let cp = self.dir.join("credential.bin");
                write_atomic(&cp, credential_bytes, false).map_err(io(&cp))
            });
        // After a failed write only a reopen knows what is on disk.
        self.stale_credential = written.is_err();
        written
    }

    /// Device public keys (hex) this wallet has had credentials for.
    pub fn used_keys(&self) -> impl Iterator<Item = &str> {
        self.used_keys.iter().map(|(k, _)| k.as_str())
    }

    /// Makes the next code; the new sequence number is on disk before the
    /// code is returned, so a crash can never make the wallet reuse it.
    pub fn next_code(&mut self, device_now_unix_s: u64) -> Result<RideCode, WalletError> {
        if self.stale_credential {
            return Err(WalletError::StaleCredential);
        }
        let code = self.core.make_code(device_now_unix_s)?;
        self.save_state()?;
        Ok(code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fare_credential::verify::{verify_ride_code, Policy};
    use fare_credential::{CredentialBody, CredentialId, DenyList, IssuerKey, Profile, TrustList};
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    const T0: u64 = 1_800_000_000;

    fn issuer(rng: &mut ChaCha20Rng) -> (SigningKey, TrustList) {
        let sk = SigningKey::generate(rng);
        let trust = TrustList::new([IssuerKey {
            key_id: 9,
            public_key: sk.verifying_key().to_bytes(),
            valid_from_unix_s: 0,
            valid_until_unix_s: u64::MAX,
        }])
        .unwrap();
        (sk, trust)
    }

    fn cred_for(pk: [u8; 32], issuer: &SigningKey) -> Credential {
        Credential::issue_v1(
            CredentialBody {
                issuer_key_id: 9,
                credential_id: CredentialId([7; 16]),
                device_public_key: pk,
                profile: Profile::Student,
                valid_from_unix_s: T0 as u32,
                valid_until_unix_s: (T0 + 3 * 86_400) as u32,
            },
            issuer,
        )
    }

    #[test]
    fn codes_verify_and_sequence_survives_reopen() {
        let mut rng = ChaCha20Rng::seed_from_u64(11);
        let (isk, trust) = issuer(&mut rng);
        let d = tempfile::tempdir().unwrap();
        let mut w = Wallet::init(d.path(), false, &mut rng).unwrap();
        let cred = cred_for(w.core().public_key(), &isk);
        // Phone clock 100 s behind the server.
        w.install(cred.as_bytes(), Some((T0 + 200, T0 + 100)))
            .unwrap();
        let c1 = w.next_code(T0 + 100).unwrap();
        assert_eq!(
            c1.issued_at_unix_s() as u64,
            T0 + 200,
            "corrected by the offset"
        );
        let c2 = w.next_code(T0 + 130).unwrap();
        assert_eq!((c1.device_seq(), c2.device_seq()), (1, 2));
        drop(w);
        let mut w = Wallet::open(d.path()).unwrap();
        let c3 = w.next_code(T0 + 160).unwrap();
        assert_eq!(c3.device_seq(), 3, "sequence persisted across reopen");
        for c in [&c1, &c2, &c3] {
            verify_ride_code(
                c.as_bytes(),
                &trust,
                &DenyList::default(),
                &Policy::default(),
                T0 + 260,
                None,
            )
            .unwrap();
        }
        assert!(matches!(
            Wallet::init(d.path(), false, &mut rng),
            Err(WalletError::AlreadyInitialised(_))
        ));
    }

    #[test]
    fn refuses_foreign_credential_and_expired() {
        let mut rng = ChaCha20Rng::seed_from_u64(12);
        let (isk, _) = issuer(&mut rng);
        let mut w = DeviceWallet::generate(&mut rng);
        let other = DeviceWallet::generate(&mut rng);
        let err = w.install(cred_for(other.public_key(), &isk)).unwrap_err();
        assert!(matches!(err, WalletError::CredentialForOtherDevice { .. }));
        assert!(matches!(w.make_code(T0), Err(WalletError::NoCredential)));
        w.install(cred_for(w.public_key(), &isk)).unwrap();
        let err = w.make_code(T0 + 4 * 86_400).unwrap_err();
        assert!(err.to_string().contains("expired 24 h 0 min ago"), "{err}");
    }

    #[test]
    fn credential_files_in_binary_or_hex_and_a_clear_error_otherwise() {
        let mut rng = ChaCha20Rng::seed_from_u64(14);
        let (isk, _) = issuer(&mut rng);
        let d = tempfile::tempdir().unwrap();
        let mut w = Wallet::init(d.path(), false, &mut rng).unwrap();
        let cred = cred_for(w.core().public_key(), &isk);
        let hex_text = format!("  {}\n", hex::encode(cred.as_bytes()));
        assert_eq!(
            decode_credential_file(cred.as_bytes()).unwrap(),
            cred.as_bytes()
        );
        assert_eq!(
            decode_credential_file(hex_text.as_bytes()).unwrap(),
            cred.as_bytes()
        );
        for bad in [&b"\x01\x02"[..], b"abcd", b"not a credential at all"] {
            let e = decode_credential_file(bad).unwrap_err().to_string();
            assert!(e.contains("126") && e.contains("252"), "{e}");
        }
        // The hex form installs, and the same credential again is a no-op.
        w.install(hex_text.as_bytes(), None).unwrap();
        w.install(cred.as_bytes(), None).unwrap();
        assert_eq!(w.core().credential().unwrap().id(), cred.id());
    }

    #[test]
    fn a_second_credential_for_a_used_key_is_refused_even_after_reopen() {
        let mut rng = ChaCha20Rng::seed_from_u64(15);
        let (isk, _) = issuer(&mut rng);
        let d = tempfile::tempdir().unwrap();
        let mut w = Wallet::init(d.path(), false, &mut rng).unwrap();
        let first = cred_for(w.core().public_key(), &isk);
        w.install(first.as_bytes(), None).unwrap();
        let mut second_body = first.body().clone();
        second_body.credential_id = CredentialId([8; 16]);
        let second = Credential::issue_v1(second_body, &isk);
        let err = w.install(second.as_bytes(), None).unwrap_err();
        assert!(matches!(err, WalletError::KeyAlreadyUsed { .. }), "{err}");
        let mut w = Wallet::open(d.path()).unwrap();
        assert!(matches!(
            w.install(second.as_bytes(), None),
            Err(WalletError::KeyAlreadyUsed { .. })
        ));
        // A renewal for a fresh key restarts the sequence and sets the offset.
        w.next_code(T0).unwrap();
        let fresh = SigningKey::generate(&mut rng);
        let renewed = cred_for(fresh.verifying_key().to_bytes(), &isk);
        w.install_renewal(fresh, renewed.as_bytes(), (T0 + 600, T0))
            .unwrap();
        let w = Wallet::open(d.path()).unwrap();
        assert_eq!(w.core().next_seq(), 1);
        assert_eq!(w.core().clock_offset_s(), 600);
        assert_eq!(w.used_keys().count(), 2);
    }

    #[test]
    fn warns_near_expiry_by_the_corrected_clock() {
        let mut rng = ChaCha20Rng::seed_from_u64(16);
        let (isk, _) = issuer(&mut rng);
        let d = tempfile::tempdir().unwrap();
        let mut w = Wallet::init(d.path(), false, &mut rng).unwrap();
        // Valid T0 .. T0 + 3 days; the phone is an hour slow.
        let cred = cred_for(w.core().public_key(), &isk);
        w.install(cred.as_bytes(), Some((T0, T0 - 3600))).unwrap();
        assert_eq!(w.expiry_warning(T0), None);
        let end = T0 + 3 * 86_400;
        let warning = w.expiry_warning(end - 3600 - 5 * 3600).unwrap();
        assert!(
            warning.contains("5 h") && warning.contains("renew"),
            "{warning}"
        );
        assert_eq!(
            w.expiry_warning(end + 10),
            None,
            "expired: the code itself fails"
        );
    }

    #[test]
    fn rotation_makes_unlinkable_key() {
        let mut rng = ChaCha20Rng::seed_from_u64(13);
        let d = tempfile::tempdir().unwrap();
        let w1 = Wallet::init(d.path(), false, &mut rng).unwrap();
        let w2 = Wallet::init(d.path(), true, &mut rng).unwrap();
        assert_ne!(w1.core().public_key(), w2.core().public_key());
        assert!(!d.path().join("credential.bin").exists());
    }
}
