//! Reader bundle, wire version 1: root-signed trust list, deny list
//! (snapshot or delta), tariff and server time. See SPEC.md §4.

use crate::credential::CredentialId;
use crate::error::FormatError;
use crate::keys::{sign_domain, verify_domain, SIGNATURE_LEN};
use crate::trust::IssuerKey;
use crate::wire::Reader;
use ed25519_dalek::{SigningKey, VerifyingKey};

/// Version byte of bundle format v1.
pub const BUNDLE_V1: u8 = 1;
/// Domain-separation tag prefixed to the root-signed bytes.
pub const BUNDLE_DOMAIN_V1: &[u8] = b"FARE-BUNDLE\0v1";
/// At most this many issuer keys in a trust list.
pub const MAX_TRUST_KEYS: usize = 256;
/// At most this many ids in each deny-list section (adds, removes).
pub const MAX_DENY_ENTRIES: usize = 4_000_000;
/// At most this many tariff bytes.
pub const MAX_TARIFF_BYTES: usize = 1 << 20;
/// Largest encoded bundle this build accepts (derived from the limits).
pub const MAX_BUNDLE_BYTES: usize =
    64 + MAX_TRUST_KEYS * 52 + 2 * MAX_DENY_ENTRIES * 16 + MAX_TARIFF_BYTES + SIGNATURE_LEN;

/// The deny list part of a bundle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DenyUpdate {
    /// The whole list.
    Snapshot(Vec<CredentialId>),
    /// Changes since `base_version`: only applies to a reader holding that version.
    Delta {
        /// The bundle version the delta starts from.
        base_version: u64,
        /// Ids to add.
        add: Vec<CredentialId>,
        /// Ids to remove.
        remove: Vec<CredentialId>,
    },
}

/// A reader bundle's content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReaderBundle {
    /// Monotonic version; readers refuse to go back.
    pub bundle_version: u64,
    /// Settlement's clock when it signed, so readers can measure drift and staleness.
    pub server_time_unix_s: u64,
    /// Trusted issuer keys.
    pub trust: Vec<IssuerKey>,
    /// Deny list snapshot or delta.
    pub deny: DenyUpdate,
    /// The tariff, as bytes whose format the tariff crate defines (UTF-8 JSON today).
    pub tariff: Vec<u8>,
}

fn too_large(field: &'static str, limit: usize, found: usize) -> FormatError {
    FormatError::TooLarge {
        object: "bundle",
        field,
        limit,
        found,
    }
}

impl ReaderBundle {
    /// Encodes and signs with the deployment root key.
    pub fn sign_v1(&self, root: &SigningKey) -> Result<Vec<u8>, FormatError> {
        let mut out = Vec::with_capacity(self.signed_len_hint());
        out.push(BUNDLE_V1);
        self.encode_fields(&mut out, None)?;
        let sig = sign_domain(root, BUNDLE_DOMAIN_V1, &out);
        out.extend_from_slice(&sig);
        Ok(out)
    }

    /// At least the length of the signed bytes in either version (within
    /// [`MAX_BUNDLE_BYTES`] and v2's extra fields), so that the encoder
    /// allocates once: a city's bundle (a 32 KB tariff) grew by doubling,
    /// a dozen copies, at every fetch of every reader.
    fn signed_len_hint(&self) -> usize {
        let ids = match &self.deny {
            DenyUpdate::Snapshot(ids) => ids.len(),
            DenyUpdate::Delta { add, remove, .. } => add.len() + remove.len(),
        };
        let fixed = 1 + PUBLISHER_ID_LEN + 8 + 8 + 4 + 1 + 8 + 32 + 8 + 4 + SIGNATURE_LEN;
        let n = fixed + self.trust.len() * 52 + ids * 16 + self.tariff.len();
        n.min(MAX_BUNDLE_BYTES + PUBLISHER_ID_LEN + 32)
    }

    /// Everything after the version byte (and, in v2, the publisher) up to
    /// the signature. `base_hash`: v2's `deny_base_hash` (zeros for a snapshot).
    fn encode_fields(
        &self,
        out: &mut Vec<u8>,
        base_hash: Option<[u8; 32]>,
    ) -> Result<(), FormatError> {
        if self.trust.len() > MAX_TRUST_KEYS {
            return Err(too_large("trust_count", MAX_TRUST_KEYS, self.trust.len()));
        }
        if self.tariff.len() > MAX_TARIFF_BYTES {
            return Err(too_large("tariff_len", MAX_TARIFF_BYTES, self.tariff.len()));
        }
        out.extend_from_slice(&self.bundle_version.to_be_bytes());
        out.extend_from_slice(&self.server_time_unix_s.to_be_bytes());
        out.extend_from_slice(&(self.trust.len() as u32).to_be_bytes());
        for k in &self.trust {
            out.extend_from_slice(&k.key_id.to_be_bytes());
            out.extend_from_slice(&k.public_key);
            out.extend_from_slice(&k.valid_from_unix_s.to_be_bytes());
            out.extend_from_slice(&k.valid_until_unix_s.to_be_bytes());
        }
        let put_ids = |out: &mut Vec<u8>, field, ids: &[CredentialId]| {
            if ids.len() > MAX_DENY_ENTRIES {
                return Err(too_large(field, MAX_DENY_ENTRIES, ids.len()));
            }
            out.extend_from_slice(&(ids.len() as u32).to_be_bytes());
            for id in ids {
                out.extend_from_slice(&id.0);
            }
            Ok(())
        };
        let (kind, base, add, remove): (u8, u64, &[CredentialId], &[CredentialId]) =
            match &self.deny {
                DenyUpdate::Snapshot(ids) => (0, 0, ids, &[]),
                DenyUpdate::Delta {
                    base_version,
                    add,
                    remove,
                } => (1, *base_version, add, remove),
            };
        out.push(kind);
        out.extend_from_slice(&base.to_be_bytes());
        if let Some(h) = base_hash {
            out.extend_from_slice(&h);
        }
        put_ids(out, "deny_add_count", add)?;
        put_ids(out, "deny_remove_count", remove)?;
        out.extend_from_slice(&(self.tariff.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.tariff);
        Ok(())
    }

    /// Verifies the root signature over the received bytes, then parses.
    pub fn verify_v1(bytes: &[u8], root: &VerifyingKey) -> Result<ReaderBundle, FormatError> {
        let body = signed_body(bytes, root, MAX_BUNDLE_BYTES, BUNDLE_V1, BUNDLE_DOMAIN_V1)?;
        let mut r = Reader::new("bundle", body);
        let _version = r.u8("version")?;
        let (bundle, _) = Self::parse_fields(&mut r, false)?;
        r.finish()?;
        Ok(bundle)
    }

    /// Parses from `bundle_version` to the tariff; in v2 (`with_base_hash`)
    /// also `deny_base_hash`, returned beside the bundle.
    fn parse_fields(
        r: &mut Reader<'_>,
        with_base_hash: bool,
    ) -> Result<(ReaderBundle, [u8; 32]), FormatError> {
        let bundle_version = r.u64("bundle_version")?;
        let server_time_unix_s = r.u64("server_time_unix_s")?;
        let n = r.count("trust_count", MAX_TRUST_KEYS)?;
        let mut trust = Vec::with_capacity(n);
        for _ in 0..n {
            trust.push(IssuerKey {
                key_id: r.u32("trust.key_id")?,
                public_key: r.array("trust.public_key")?,
                valid_from_unix_s: r.u64("trust.valid_from_unix_s")?,
                valid_until_unix_s: r.u64("trust.valid_until_unix_s")?,
            });
        }
        let kind = r.u8("deny_kind")?;
        let base_version = r.u64("deny_base_version")?;
        let base_hash: [u8; 32] = if with_base_hash {
            r.array("deny_base_hash")?
        } else {
            [0; 32]
        };
        let ids = |r: &mut Reader<'_>, field| -> Result<Vec<CredentialId>, FormatError> {
            let n = r.count(field, MAX_DENY_ENTRIES)?;
            // Check the bytes are there before allocating for them.
            let raw = r.bytes(field, n * 16)?;
            Ok(raw
                .chunks_exact(16)
                .map(|c| CredentialId(c.try_into().expect("chunk of 16")))
                .collect())
        };
        let add = ids(r, "deny_add_count")?;
        let remove = ids(r, "deny_remove_count")?;
        let deny = match kind {
            0 => {
                if base_version != 0 || base_hash != [0; 32] || !remove.is_empty() {
                    return Err(FormatError::Invalid {
                        object: "bundle",
                        field: "deny_kind",
                        why: "a snapshot has base version 0, no base hash and no removals".into(),
                    });
                }
                DenyUpdate::Snapshot(add)
            }
            1 => DenyUpdate::Delta {
                base_version,
                add,
                remove,
            },
            k => {
                return Err(FormatError::Invalid {
                    object: "bundle",
                    field: "deny_kind",
                    why: format!("{k}: expected 0 (snapshot) or 1 (delta)"),
                })
            }
        };
        let tlen = r.count("tariff_len", MAX_TARIFF_BYTES)?;
        let tariff = r.bytes("tariff", tlen)?.to_vec();
        let bundle = ReaderBundle {
            bundle_version,
            server_time_unix_s,
            trust,
            deny,
            tariff,
        };
        Ok((bundle, base_hash))
    }
}

/// Version byte of bundle format v2 (SPEC.md §4.1).
pub const BUNDLE_V2: u8 = 2;
/// Domain-separation tag of v2's root-signed bytes.
pub const BUNDLE_DOMAIN_V2: &[u8] = b"FARE-BUNDLE\0v2";
/// Length of a publisher id.
pub const PUBLISHER_ID_LEN: usize = 16;
/// The publisher every v1 bundle belongs to: the offline line
/// (`fare-keys bundle`). A v2 publisher id is never all zeros.
pub const V1_PUBLISHER: [u8; PUBLISHER_ID_LEN] = [0; PUBLISHER_ID_LEN];

/// The digest a v2 delta names its base by: BLAKE3 of the base deny
/// list's ids, ascending, without duplicates, 16 bytes each, concatenated.
pub fn deny_digest<'a>(sorted_unique_ids: impl IntoIterator<Item = &'a CredentialId>) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    for id in sorted_unique_ids {
        h.update(&id.0);
    }
    *h.finalize().as_bytes()
}

/// A bundle with the line it belongs to: who published it and, for a
/// delta, the exact deny list it was computed from. Bundle versions are
/// comparable only within one publisher.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishedBundle {
    /// The publishing line ([`V1_PUBLISHER`] for a v1 bundle).
    pub publisher: [u8; PUBLISHER_ID_LEN],
    /// For a v2 delta, [`deny_digest`] of its base; `None` for a snapshot
    /// and for a v1 delta (which names its base by version alone).
    pub deny_base_hash: Option<[u8; 32]>,
    /// The content.
    pub bundle: ReaderBundle,
}

impl PublishedBundle {
    /// Encodes as v2 and signs with the deployment root key. A delta
    /// needs `deny_base_hash`; a snapshot must not have one; the publisher
    /// must not be [`V1_PUBLISHER`].
    pub fn sign_v2(&self, root: &SigningKey) -> Result<Vec<u8>, FormatError> {
        let invalid = |field, why: &str| FormatError::Invalid {
            object: "bundle",
            field,
            why: why.into(),
        };
        if self.publisher == V1_PUBLISHER {
            return Err(invalid("publisher", "all zeros is the v1 (offline) line"));
        }
        let base_hash = match (&self.bundle.deny, self.deny_base_hash) {
            (DenyUpdate::Snapshot(_), None) => [0; 32],
            (DenyUpdate::Delta { .. }, Some(h)) => h,
            _ => {
                return Err(invalid(
                    "deny_base_hash",
                    "a delta names its base hash, a snapshot none",
                ))
            }
        };
        let mut out = Vec::with_capacity(self.bundle.signed_len_hint());
        out.push(BUNDLE_V2);
        out.extend_from_slice(&self.publisher);
        self.bundle.encode_fields(&mut out, Some(base_hash))?;
        let sig = sign_domain(root, BUNDLE_DOMAIN_V2, &out);
        out.extend_from_slice(&sig);
        Ok(out)
    }

    /// Verifies a v2 bundle's root signature over the received bytes, then parses.
    pub fn verify_v2(bytes: &[u8], root: &VerifyingKey) -> Result<PublishedBundle, FormatError> {
        let max_len = MAX_BUNDLE_BYTES + PUBLISHER_ID_LEN + 32;
        let body = signed_body(bytes, root, max_len, BUNDLE_V2, BUNDLE_DOMAIN_V2)?;
        let mut r = Reader::new("bundle", body);
        let _version = r.u8("version")?;
        let publisher: [u8; PUBLISHER_ID_LEN] = r.array("publisher")?;
        if publisher == V1_PUBLISHER {
            return Err(FormatError::Invalid {
                object: "bundle",
                field: "publisher",
                why: "all zeros is reserved for the v1 (offline) line".into(),
            });
        }
        let (bundle, hash) = ReaderBundle::parse_fields(&mut r, true)?;
        r.finish()?;
        let deny_base_hash = matches!(bundle.deny, DenyUpdate::Delta { .. }).then_some(hash);
        Ok(PublishedBundle {
            publisher,
            deny_base_hash,
            bundle,
        })
    }

    /// Verifies a bundle of either version: v1 belongs to [`V1_PUBLISHER`].
    pub fn verify(bytes: &[u8], root: &VerifyingKey) -> Result<PublishedBundle, FormatError> {
        match bytes.first() {
            Some(&BUNDLE_V2) => Self::verify_v2(bytes, root),
            _ => Ok(PublishedBundle {
                publisher: V1_PUBLISHER,
                deny_base_hash: None,
                bundle: ReaderBundle::verify_v1(bytes, root)?,
            }),
        }
    }
}

/// Checks length, version byte and the root signature (over `domain ||
/// body`, before any parsing); returns the signed body.
fn signed_body<'a>(
    bytes: &'a [u8],
    root: &VerifyingKey,
    max_len: usize,
    version: u8,
    domain: &[u8],
) -> Result<&'a [u8], FormatError> {
    if bytes.len() > max_len {
        return Err(too_large("length", max_len, bytes.len()));
    }
    match bytes.first() {
        None => {
            return Err(FormatError::Truncated {
                object: "bundle",
                field: "version",
                needed: 1,
                remaining: 0,
            })
        }
        Some(&v) if v != version => {
            return Err(FormatError::UnsupportedVersion {
                object: "bundle",
                found: v,
                supported: version,
            })
        }
        Some(_) => {}
    }
    if bytes.len() < SIGNATURE_LEN + 1 {
        return Err(FormatError::Truncated {
            object: "bundle",
            field: "root_signature",
            needed: SIGNATURE_LEN + 1,
            remaining: bytes.len(),
        });
    }
    let (body, sig) = bytes.split_at(bytes.len() - SIGNATURE_LEN);
    if !verify_domain(root, domain, body, sig) {
        return Err(FormatError::BadSignature { object: "bundle" });
    }
    Ok(body)
}
