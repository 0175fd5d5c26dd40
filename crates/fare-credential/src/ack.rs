//! Batch acknowledgement v1 and the root-signed acknowledgement-key
//! certificate. See SPEC.md §8.
//!
//! Settlement answers every batch (accepted, already held, sequence gap,
//! chain fork) with a signed acknowledgement naming the reader, what it
//! holds (highest contiguous sequence and the chain hash at it), its clock,
//! and the digest of the exact batch bytes answered. The signing key is an
//! online acknowledgement key; the deployment root certifies it, and the
//! certificate travels inside every acknowledgement, so a reader needs
//! nothing but its root key to check one.

use crate::error::FormatError;
use crate::keys::{parse_public_key, sign_domain, verify_domain, SIGNATURE_LEN};
use crate::wire::Reader;
use ed25519_dalek::{SigningKey, VerifyingKey};

/// Version byte of the acknowledgement-key certificate v1.
pub const ACK_KEY_CERT_V1: u8 = 1;
/// Domain tag of the root's signature over an acknowledgement-key certificate.
pub const ACK_KEY_CERT_DOMAIN_V1: &[u8] = b"FARE-ACKKEY\0v1";
/// Encoded length of an acknowledgement-key certificate v1.
pub const ACK_KEY_CERT_LEN: usize = 1 + 32 + 8 + 8 + SIGNATURE_LEN;
/// Version byte of the acknowledgement v1.
pub const ACK_V1: u8 = 1;
/// Domain tag of the acknowledgement key's signature over an acknowledgement.
pub const ACK_DOMAIN_V1: &[u8] = b"FARE-ACK\0v1";
/// Encoded length of an acknowledgement v1 (certificate included).
pub const ACK_LEN: usize = 1 + 1 + 4 + 8 + 32 + 8 + 32 + ACK_KEY_CERT_LEN + SIGNATURE_LEN;
/// Domain tag of the digest of the answered request body.
pub const ACK_REQUEST_DIGEST_DOMAIN_V1: &[u8] = b"FARE-ACK-REQ\0v1";

/// The digest an acknowledgement carries of the batch bytes it answers:
/// `BLAKE3(FARE-ACK-REQ\0v1 || body)`.
pub fn request_digest(body: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(ACK_REQUEST_DIGEST_DOMAIN_V1);
    h.update(body);
    *h.finalize().as_bytes()
}

/// What settlement did with the answered batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AckKind {
    /// Stored, or already held: settlement holds the reader's chain up to `acked_seq`.
    Held = 0,
    /// Refused: the batch starts after `acked_seq + 1` (settlement holds less
    /// than the reader believed acknowledged).
    SequenceGap = 1,
    /// Refused: the batch disagrees with the chain settlement holds.
    ChainFork = 2,
}

impl AckKind {
    fn from_u8(b: u8) -> Result<AckKind, FormatError> {
        match b {
            0 => Ok(AckKind::Held),
            1 => Ok(AckKind::SequenceGap),
            2 => Ok(AckKind::ChainFork),
            other => Err(FormatError::Invalid {
                object: "ack",
                field: "kind",
                why: format!("unknown kind {other} (expected 0, 1 or 2)"),
            }),
        }
    }
    /// Stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            AckKind::Held => "held",
            AckKind::SequenceGap => "sequence_gap",
            AckKind::ChainFork => "chain_fork",
        }
    }
}

/// The root's statement that `public_key` may sign acknowledgements while
/// settlement time is inside `[valid_from, valid_until]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AckKeyCert {
    /// The acknowledgement key.
    pub public_key: [u8; 32],
    /// First settlement time (unix s) it may sign at.
    pub valid_from_unix_s: u64,
    /// Last settlement time (unix s) it may sign at, inclusive.
    pub valid_until_unix_s: u64,
}

impl AckKeyCert {
    /// Encodes and signs with the deployment root key ([`ACK_KEY_CERT_LEN`] bytes).
    pub fn sign_v1(&self, root: &SigningKey) -> Vec<u8> {
        let mut out = Vec::with_capacity(ACK_KEY_CERT_LEN);
        out.push(ACK_KEY_CERT_V1);
        out.extend_from_slice(&self.public_key);
        out.extend_from_slice(&self.valid_from_unix_s.to_be_bytes());
        out.extend_from_slice(&self.valid_until_unix_s.to_be_bytes());
        let sig = sign_domain(root, ACK_KEY_CERT_DOMAIN_V1, &out);
        out.extend_from_slice(&sig);
        out
    }

    /// Checks the root signature over the received bytes, then parses.
    pub fn verify_v1(
        bytes: &[u8],
        root: &VerifyingKey,
    ) -> Result<(AckKeyCert, VerifyingKey), FormatError> {
        if bytes.len() != ACK_KEY_CERT_LEN {
            return Err(FormatError::Invalid {
                object: "ack_key_cert",
                field: "length",
                why: format!("{} bytes, expected {ACK_KEY_CERT_LEN}", bytes.len()),
            });
        }
        if bytes[0] != ACK_KEY_CERT_V1 {
            return Err(FormatError::UnsupportedVersion {
                object: "ack_key_cert",
                found: bytes[0],
                supported: ACK_KEY_CERT_V1,
            });
        }
        let (body, sig) = bytes.split_at(ACK_KEY_CERT_LEN - SIGNATURE_LEN);
        if !verify_domain(root, ACK_KEY_CERT_DOMAIN_V1, body, sig) {
            return Err(FormatError::BadSignature {
                object: "ack_key_cert",
            });
        }
        let mut r = Reader::new("ack_key_cert", body);
        r.u8("version")?;
        let public_key: [u8; 32] = r.array("public_key")?;
        let valid_from_unix_s = r.u64("valid_from_unix_s")?;
        let valid_until_unix_s = r.u64("valid_until_unix_s")?;
        r.finish()?;
        let vk = parse_public_key(&public_key).map_err(|e| FormatError::Invalid {
            object: "ack_key_cert",
            field: "ack_public_key",
            why: e.to_string(),
        })?;
        Ok((
            AckKeyCert {
                public_key,
                valid_from_unix_s,
                valid_until_unix_s,
            },
            vk,
        ))
    }
}

/// The last acknowledgement-key certificate whose root signature checked,
/// with the root it checked under (see [`Ack::verify_v1_cached`]).
#[derive(Clone, Debug, Default)]
pub struct AckKeyCertCache {
    last: Option<CachedCert>,
}

#[derive(Clone, Debug)]
struct CachedCert {
    bytes: [u8; ACK_KEY_CERT_LEN],
    root: [u8; 32],
    cert: AckKeyCert,
    key: VerifyingKey,
}

impl AckKeyCertCache {
    /// [`AckKeyCert::verify_v1`], answered from the cache when `bytes` and
    /// `root` are exactly those last verified; a success replaces it.
    fn verify(
        &mut self,
        bytes: &[u8],
        root: &VerifyingKey,
    ) -> Result<(AckKeyCert, VerifyingKey), FormatError> {
        let root_bytes = root.to_bytes();
        if let Some(c) = &self.last {
            if c.bytes[..] == *bytes && c.root == root_bytes {
                return Ok((c.cert.clone(), c.key));
            }
        }
        let (cert, key) = AckKeyCert::verify_v1(bytes, root)?;
        self.last = Some(CachedCert {
            bytes: bytes.try_into().expect("verify_v1 checked the length"),
            root: root_bytes,
            cert: cert.clone(),
            key,
        });
        Ok((cert, key))
    }
}

/// A batch acknowledgement's content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ack {
    /// What happened to the batch.
    pub kind: AckKind,
    /// The reader.
    pub reader_id: u32,
    /// Highest contiguous sequence settlement holds for the reader (0: none).
    pub acked_seq: u64,
    /// Chain hash of record `acked_seq` as settlement holds it (the
    /// reader's genesis hash when `acked_seq` is 0).
    pub chain_hash: [u8; 32],
    /// Settlement's clock when it answered (unix s).
    pub server_time_unix_s: u64,
    /// [`request_digest`] of the batch bytes answered.
    pub request_digest: [u8; 32],
}

impl Ack {
    /// Encodes and signs with the acknowledgement key, embedding its
    /// root-signed certificate `cert` ([`ACK_LEN`] bytes).
    pub fn sign_v1(&self, cert: &[u8], key: &SigningKey) -> Result<Vec<u8>, FormatError> {
        if cert.len() != ACK_KEY_CERT_LEN {
            return Err(FormatError::Invalid {
                object: "ack",
                field: "ack_key_cert",
                why: format!("{} bytes, expected {ACK_KEY_CERT_LEN}", cert.len()),
            });
        }
        if cert[1..33] != key.verifying_key().to_bytes() {
            return Err(FormatError::Invalid {
                object: "ack",
                field: "ack_key_cert",
                why: "certifies another key than the signing key".into(),
            });
        }
        let mut out = Vec::with_capacity(ACK_LEN);
        out.push(ACK_V1);
        out.push(self.kind as u8);
        out.extend_from_slice(&self.reader_id.to_be_bytes());
        out.extend_from_slice(&self.acked_seq.to_be_bytes());
        out.extend_from_slice(&self.chain_hash);
        out.extend_from_slice(&self.server_time_unix_s.to_be_bytes());
        out.extend_from_slice(&self.request_digest);
        out.extend_from_slice(cert);
        let sig = sign_domain(key, ACK_DOMAIN_V1, &out);
        out.extend_from_slice(&sig);
        Ok(out)
    }

    /// Verifies an acknowledgement with the deployment root key: the
    /// embedded certificate's root signature, the acknowledgement key's
    /// signature over the received bytes, then that the settlement time lies
    /// inside the certificate's window.
    pub fn verify_v1(bytes: &[u8], root: &VerifyingKey) -> Result<Ack, FormatError> {
        Self::verify_v1_cached(bytes, root, &mut AckKeyCertCache::default())
    }

    /// [`Ack::verify_v1`], checking the certificate's root signature only
    /// when `cache` does not hold that certificate verified under `root`
    /// already: a service answers every acknowledgement with one
    /// certificate for months, and a reader checked its root signature (a
    /// whole signature check, half the cost of verifying an
    /// acknowledgement) at every one.
    pub fn verify_v1_cached(
        bytes: &[u8],
        root: &VerifyingKey,
        cache: &mut AckKeyCertCache,
    ) -> Result<Ack, FormatError> {
        if bytes.len() != ACK_LEN {
            return Err(FormatError::Invalid {
                object: "ack",
                field: "length",
                why: format!("{} bytes, expected {ACK_LEN}", bytes.len()),
            });
        }
        if bytes[0] != ACK_V1 {
            return Err(FormatError::UnsupportedVersion {
                object: "ack",
                found: bytes[0],
                supported: ACK_V1,
            });
        }
        let (body, sig) = bytes.split_at(ACK_LEN - SIGNATURE_LEN);
        let cert_bytes = &body[body.len() - ACK_KEY_CERT_LEN..];
        let (cert, ack_key) = cache.verify(cert_bytes, root)?;
        if !verify_domain(&ack_key, ACK_DOMAIN_V1, body, sig) {
            return Err(FormatError::BadSignature { object: "ack" });
        }
        let mut r = Reader::new("ack", &body[..body.len() - ACK_KEY_CERT_LEN]);
        r.u8("version")?;
        let kind = AckKind::from_u8(r.u8("kind")?)?;
        let reader_id = r.u32("reader_id")?;
        let acked_seq = r.u64("acked_seq")?;
        let chain_hash = r.array("chain_hash")?;
        let server_time_unix_s = r.u64("server_time_unix_s")?;
        let request_digest = r.array("request_digest")?;
        r.finish()?;
        if server_time_unix_s < cert.valid_from_unix_s
            || server_time_unix_s > cert.valid_until_unix_s
        {
            return Err(FormatError::Invalid {
                object: "ack",
                field: "server_time_unix_s",
                why: format!(
                    "{server_time_unix_s} is outside the acknowledgement key's window {}..={}",
                    cert.valid_from_unix_s, cert.valid_until_unix_s
                ),
            });
        }
        Ok(Ack {
            kind,
            reader_id,
            acked_seq,
            chain_hash,
            server_time_unix_s,
            request_digest,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    fn sample() -> (SigningKey, SigningKey, Vec<u8>, Ack) {
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let root = SigningKey::generate(&mut rng);
        let ack_key = SigningKey::generate(&mut rng);
        let cert = AckKeyCert {
            public_key: ack_key.verifying_key().to_bytes(),
            valid_from_unix_s: 100,
            valid_until_unix_s: 1_000,
        }
        .sign_v1(&root);
        let ack = Ack {
            kind: AckKind::Held,
            reader_id: 7,
            acked_seq: 42,
            chain_hash: [9; 32],
            server_time_unix_s: 500,
            request_digest: request_digest(b"batch"),
        };
        (root, ack_key, cert, ack)
    }

    /// The cache spares the certificate's root signature check, never a
    /// check: every flipped byte is still refused with a warm cache, and a
    /// certificate cached under one root is checked again under another.
    #[test]
    fn a_cached_certificate_changes_no_verdict() {
        let (root, key, cert, ack) = sample();
        let bytes = ack.sign_v1(&cert, &key).unwrap();
        let mut cache = AckKeyCertCache::default();
        let vk = root.verifying_key();
        assert_eq!(Ack::verify_v1_cached(&bytes, &vk, &mut cache).unwrap(), ack);
        for i in 0..bytes.len() {
            let mut t = bytes.clone();
            t[i] ^= 0x01;
            assert!(
                Ack::verify_v1_cached(&t, &vk, &mut cache).is_err(),
                "byte {i}"
            );
            // Refusals leave the verified certificate cached.
            assert_eq!(Ack::verify_v1_cached(&bytes, &vk, &mut cache).unwrap(), ack);
        }
        let other = SigningKey::from_bytes(&[3; 32]).verifying_key();
        assert!(matches!(
            Ack::verify_v1_cached(&bytes, &other, &mut cache),
            Err(FormatError::BadSignature {
                object: "ack_key_cert"
            })
        ));
    }

    #[test]
    fn round_trips_and_every_byte_is_covered() {
        let (root, key, cert, ack) = sample();
        let bytes = ack.sign_v1(&cert, &key).unwrap();
        assert_eq!(bytes.len(), ACK_LEN);
        assert_eq!(Ack::verify_v1(&bytes, &root.verifying_key()).unwrap(), ack);
        for i in 0..bytes.len() {
            let mut t = bytes.clone();
            t[i] ^= 0x01;
            assert!(
                Ack::verify_v1(&t, &root.verifying_key()).is_err(),
                "byte {i}"
            );
        }
    }

    #[test]
    fn refuses_a_key_the_root_did_not_certify_and_times_outside_the_window() {
        let (root, key, _, ack) = sample();
        let mut rng = ChaCha20Rng::seed_from_u64(6);
        let other_root = SigningKey::generate(&mut rng);
        let forged_cert = AckKeyCert {
            public_key: key.verifying_key().to_bytes(),
            valid_from_unix_s: 0,
            valid_until_unix_s: u64::MAX,
        }
        .sign_v1(&other_root);
        let bytes = ack.sign_v1(&forged_cert, &key).unwrap();
        assert!(matches!(
            Ack::verify_v1(&bytes, &root.verifying_key()),
            Err(FormatError::BadSignature {
                object: "ack_key_cert"
            })
        ));
        let cert = AckKeyCert {
            public_key: key.verifying_key().to_bytes(),
            valid_from_unix_s: 600,
            valid_until_unix_s: 700,
        }
        .sign_v1(&root);
        let bytes = ack.sign_v1(&cert, &key).unwrap();
        assert!(Ack::verify_v1(&bytes, &root.verifying_key()).is_err());
    }
}
