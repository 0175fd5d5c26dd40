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

use ed25519_dalek::SigningKey;
use fare_credential::reason::human_duration;
use fare_credential::{Credential, RideCode};
use fare_keys::files::{create_private_dir, read_hex, write_atomic};
use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// How often the wallet shows a new code (DESIGN: every ~30 s).
pub const CODE_REFRESH_S: u64 = 30;

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
}

/// A wallet stored in a directory: `device.key` (0600), `device.pub`,
/// `credential.bin`, `state.json` (next sequence, clock offset).
#[derive(Debug)]
pub struct Wallet {
    dir: PathBuf,
    core: DeviceWallet,
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
        let w = Wallet {
            dir: dir.to_path_buf(),
            core,
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
        let sp = dir.join("state.json");
        let text = std::fs::read_to_string(&sp).map_err(io(&sp))?;
        let st: State = serde_json::from_str(&text).map_err(|e| WalletError::Corrupt {
            path: sp.clone(),
            why: e.to_string(),
        })?;
        core.next_seq = st.next_seq;
        core.clock_offset_s = st.clock_offset_s;
        let cp = dir.join("credential.bin");
        if cp.exists() {
            let bytes = std::fs::read(&cp).map_err(io(&cp))?;
            core.install(Credential::from_bytes(&bytes)?)?;
        }
        Ok(Wallet {
            dir: dir.to_path_buf(),
            core,
        })
    }

    fn save_state(&self) -> Result<(), WalletError> {
        let sp = self.dir.join("state.json");
        let st = State {
            next_seq: self.core.next_seq,
            clock_offset_s: self.core.clock_offset_s,
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

    /// Installs credential bytes; `server_time` = (server clock, phone clock) seen now.
    pub fn install(
        &mut self,
        credential_bytes: &[u8],
        server_time: Option<(u64, u64)>,
    ) -> Result<(), WalletError> {
        let cred = Credential::from_bytes(credential_bytes)?;
        self.core.install(cred)?;
        if let Some((server, device)) = server_time {
            self.core.observe_server_time(server, device);
        }
        let cp = self.dir.join("credential.bin");
        write_atomic(&cp, credential_bytes, false).map_err(io(&cp))?;
        self.save_state()
    }

    /// Makes the next code; the new sequence number is on disk before the
    /// code is returned, so a crash can never make the wallet reuse it.
    pub fn next_code(&mut self, device_now_unix_s: u64) -> Result<RideCode, WalletError> {
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
    fn rotation_makes_unlinkable_key() {
        let mut rng = ChaCha20Rng::seed_from_u64(13);
        let d = tempfile::tempdir().unwrap();
        let w1 = Wallet::init(d.path(), false, &mut rng).unwrap();
        let w2 = Wallet::init(d.path(), true, &mut rng).unwrap();
        assert_ne!(w1.core().public_key(), w2.core().public_key());
        assert!(!d.path().join("credential.bin").exists());
    }
}
