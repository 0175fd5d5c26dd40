//! Deterministic issuers and credentials for tests, benchmarks and
//! simulations: one seeded issuer key, its one-key trust list, and
//! credentials it signs. Never for production keys (the seed is public).

use crate::credential::{Credential, CredentialBody, CredentialId, Profile};
use crate::trust::{IssuerKey, TrustList};
use ed25519_dalek::SigningKey;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

/// A seeded issuer with key id 1, trusted forever.
pub struct TestIssuer {
    /// The issuer signing key.
    pub key: SigningKey,
    /// A trust list holding only this key.
    pub trust: TrustList,
    /// The RNG the key came from, for further seeded keys.
    pub rng: ChaCha20Rng,
}

impl TestIssuer {
    /// The issuer key id.
    pub const KEY_ID: u32 = 1;

    /// An issuer whose key (and later keys from `rng`) derive from `seed`.
    pub fn new(seed: u64) -> TestIssuer {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let key = SigningKey::generate(&mut rng);
        let trust = TrustList::new([IssuerKey {
            key_id: Self::KEY_ID,
            public_key: key.verifying_key().to_bytes(),
            valid_from_unix_s: 0,
            valid_until_unix_s: u64::MAX,
        }])
        .expect("a fresh key is a valid trust list");
        TestIssuer { key, trust, rng }
    }

    /// Another seeded key (a device, a reader, a root...).
    pub fn next_key(&mut self) -> SigningKey {
        SigningKey::generate(&mut self.rng)
    }

    /// A credential for `device`, valid `now ± window_s`.
    pub fn credential(
        &self,
        device: &SigningKey,
        id: CredentialId,
        profile: Profile,
        now_unix_s: u64,
        window_s: u64,
    ) -> Credential {
        Credential::issue_v1(
            CredentialBody {
                issuer_key_id: Self::KEY_ID,
                credential_id: id,
                device_public_key: device.verifying_key().to_bytes(),
                profile,
                valid_from_unix_s: (now_unix_s - window_s) as u32,
                valid_until_unix_s: (now_unix_s + window_s) as u32,
            },
            &self.key,
        )
    }
}
