//! A whole deployment's keys for tests: a root that signs reader bundles
//! beside a [`TestIssuer`], the bundles it publishes (v1 and v2, snapshots
//! and deltas), wallets (device key + credential) and their ride codes,
//! and the check of a bundle a settlement service served.

use super::TestIssuer;
use crate::bundle::{deny_digest, PublishedBundle, PUBLISHER_ID_LEN};
use crate::credential::{Credential, CredentialId, Profile};
use crate::trust::IssuerKey;
use crate::{DenyList, DenyUpdate, ReaderBundle, RideCode};
use ed25519_dalek::{SigningKey, VerifyingKey};
use rand_chacha::rand_core::RngCore;

/// The tariff bytes test bundles carry unless a test sets
/// [`TestDeployment::tariff`] (readers carry, never read them).
pub const TEST_BUNDLE_TARIFF: &[u8] = br#"{"note":"test"}"#;

/// A deployment: the root key (signs bundles) and the issuer (signs
/// credentials), both seeded.
pub struct TestDeployment {
    /// The deployment root key.
    pub root: SigningKey,
    /// The credential issuer, key id [`TestIssuer::KEY_ID`]; its RNG also
    /// makes the deployment's further keys and credential ids.
    pub issuer: TestIssuer,
    /// The tariff bytes its bundles carry ([`TEST_BUNDLE_TARIFF`] unless
    /// a test sets another).
    pub tariff: Vec<u8>,
}

impl TestDeployment {
    /// A deployment from `seed` whose issuer key is trusted from
    /// `valid_from_unix_s` to `valid_until_unix_s`.
    pub fn new(seed: u64, valid_from_unix_s: u64, valid_until_unix_s: u64) -> TestDeployment {
        let mut issuer = TestIssuer::with_validity(seed, valid_from_unix_s, valid_until_unix_s);
        let root = issuer.next_key();
        TestDeployment {
            root,
            issuer,
            tariff: TEST_BUNDLE_TARIFF.to_vec(),
        }
    }

    /// Another seeded key (a reader, a forger, a thief...).
    pub fn next_key(&mut self) -> SigningKey {
        self.issuer.next_key()
    }

    /// The trust list bundles carry: the issuer's one key.
    pub fn trust(&self) -> Vec<IssuerKey> {
        self.issuer.trust.keys()
    }

    fn content(&self, version: u64, server_time_unix_s: u64, deny: DenyUpdate) -> ReaderBundle {
        ReaderBundle {
            bundle_version: version,
            server_time_unix_s,
            trust: self.trust(),
            deny,
            tariff: self.tariff.clone(),
        }
    }

    /// A root-signed bundle v1 (the offline line).
    ///
    /// # Panics
    /// When the bundle is over its size limit (a test's own mistake).
    pub fn bundle_v1(&self, version: u64, server_time_unix_s: u64, deny: DenyUpdate) -> Vec<u8> {
        self.content(version, server_time_unix_s, deny)
            .sign_v1(&self.root)
            .expect("a test bundle encodes")
    }

    /// A root-signed bundle v2 of `publisher`; a delta names the digest
    /// of `base` (the deny list it applies to; `None` for a snapshot).
    ///
    /// # Panics
    /// When the bundle is over its size limit (a test's own mistake).
    pub fn bundle_v2(
        &self,
        publisher: [u8; PUBLISHER_ID_LEN],
        version: u64,
        server_time_unix_s: u64,
        deny: DenyUpdate,
        base: Option<&[CredentialId]>,
    ) -> Vec<u8> {
        self.published(publisher, version, server_time_unix_s, deny, base)
            .sign_v2(&self.root)
            .expect("a test bundle encodes")
    }

    /// The content of [`Self::bundle_v2`], before signing.
    fn published(
        &self,
        publisher: [u8; PUBLISHER_ID_LEN],
        version: u64,
        server_time_unix_s: u64,
        deny: DenyUpdate,
        base: Option<&[CredentialId]>,
    ) -> PublishedBundle {
        let deny_base_hash = base.map(|ids| deny_digest(DenyList::from_ids(ids.to_vec()).ids()));
        PublishedBundle {
            publisher,
            deny_base_hash,
            tariff_by_digest: None,
            bundle: self.content(version, server_time_unix_s, deny),
        }
    }

    /// A root-signed bundle v3 of `publisher` naming its tariff by
    /// `tariff_digest` alone (no bytes); `base` as for [`Self::bundle_v2`].
    ///
    /// # Panics
    /// When the bundle is over its size limit (a test's own mistake).
    pub fn bundle_v3_by_digest(
        &self,
        publisher: [u8; PUBLISHER_ID_LEN],
        version: u64,
        server_time_unix_s: u64,
        deny: DenyUpdate,
        base: Option<&[CredentialId]>,
        tariff_digest: [u8; 32],
    ) -> Vec<u8> {
        let mut p = self.published(publisher, version, server_time_unix_s, deny, base);
        p.bundle.tariff.clear();
        p.tariff_by_digest = Some(tariff_digest);
        p.sign_v3(&self.root).expect("a test bundle encodes")
    }

    /// An adult wallet with a random credential id, valid from
    /// `valid_from_unix_s` to `valid_until_unix_s`, signed by `signer`
    /// (the issuer when `None`) under key id `key_id`.
    pub fn wallet_with(
        &mut self,
        key_id: u32,
        signer: Option<&SigningKey>,
        valid_from_unix_s: u64,
        valid_until_unix_s: u64,
    ) -> TestWallet {
        let device = self.next_key();
        let mut id = [0u8; 16];
        self.issuer.rng.fill_bytes(&mut id);
        let credential = super::issue(
            signer.unwrap_or(&self.issuer.key),
            key_id,
            &device,
            CredentialId(id),
            Profile::Adult,
            valid_from_unix_s,
            valid_until_unix_s,
        );
        TestWallet { device, credential }
    }

    /// A genuine adult wallet valid from `valid_from_unix_s` to `valid_until_unix_s`.
    pub fn wallet_between(
        &mut self,
        valid_from_unix_s: u64,
        valid_until_unix_s: u64,
    ) -> TestWallet {
        self.wallet_with(
            TestIssuer::KEY_ID,
            None,
            valid_from_unix_s,
            valid_until_unix_s,
        )
    }
}

/// `n` credential ids no test wallet holds (wallets draw random ids): the
/// filler of a deny list of a given size, for load and memory measurements.
pub fn deny_filler(n: u32) -> Vec<CredentialId> {
    (0..n)
        .map(|i| {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&i.to_be_bytes());
            b[4] = 0xEE;
            CredentialId(b)
        })
        .collect()
}

/// A phone: its device key and the credential certifying it.
pub struct TestWallet {
    /// The device key.
    pub device: SigningKey,
    /// The credential.
    pub credential: Credential,
}

impl TestWallet {
    /// The credential id.
    pub fn id(&self) -> CredentialId {
        self.credential.id()
    }

    /// A ride code issued at `issued_at_unix_s` with device sequence `seq`.
    ///
    /// # Panics
    /// When the time does not fit 32 bits (a test's own mistake).
    pub fn code(&self, issued_at_unix_s: u64, seq: u32) -> Vec<u8> {
        let t = u32::try_from(issued_at_unix_s).expect("a code time fits 32 bits");
        RideCode::sign_v1(&self.credential, t, seq, &self.device)
            .as_bytes()
            .to_vec()
    }
}

/// What a settlement service answered a bundle request with, verified
/// under the deployment's `root` (any version).
///
/// # Panics
/// With the service's answer when it is not a bundle (a JSON refusal) or
/// does not verify.
pub fn verified_bundle(answer: &[u8], root: &VerifyingKey) -> PublishedBundle {
    assert!(
        answer.first() != Some(&b'{'),
        "the bundle request was refused: {}",
        String::from_utf8_lossy(answer)
    );
    PublishedBundle::verify(answer, root)
        .unwrap_or_else(|e| panic!("the served bundle does not verify under the root key: {e}"))
}

/// The ids of a snapshot bundle's deny list.
///
/// # Panics
/// When the bundle carries a delta.
pub fn deny_snapshot(bundle: &ReaderBundle) -> Vec<CredentialId> {
    match &bundle.deny {
        DenyUpdate::Snapshot(ids) => ids.clone(),
        d => panic!("expected a deny-list snapshot, got {d:?}"),
    }
}
