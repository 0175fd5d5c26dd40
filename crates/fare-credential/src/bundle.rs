//! Reader bundle: root-signed trust list, deny list (snapshot or delta),
//! tariff and server time. Wire versions 1 (SPEC.md §4), 2 (§4.1: the
//! publisher and exact-base deltas) and 3 (§4.2: the tariff by digest).

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

/// What [`ReaderBundle::parse_fields`] read.
struct ParsedFields {
    bundle: ReaderBundle,
    /// From v2: `deny_base_hash` (zeros for a snapshot).
    base_hash: [u8; 32],
    /// v3: the tariff digest when the bytes did not follow.
    tariff_by_digest: Option<[u8; 32]>,
}

/// How an encoding carries the tariff.
#[derive(Clone, Copy)]
enum TariffField {
    /// v1, v2: `tariff_len` and the bytes.
    Bytes,
    /// v3: the digest, then `tariff_kind` (1: the bytes follow, 0: not).
    Digest {
        digest: [u8; 32],
        bytes_follow: bool,
    },
}

/// The tariff of wire version `wire`: its bytes, or (v3, kind 0) nothing
/// and the digest the reader must already hold.
fn parse_tariff(r: &mut Reader<'_>, wire: u8) -> Result<(Vec<u8>, Option<[u8; 32]>), FormatError> {
    let mut claimed = None;
    if wire >= BUNDLE_V3 {
        let digest: [u8; 32] = r.array("tariff_digest")?;
        match r.u8("tariff_kind")? {
            0 => return Ok((Vec::new(), Some(digest))),
            1 => claimed = Some(digest),
            k => {
                let why = format!("{k}: expected 0 (by digest alone) or 1 (the bytes follow)");
                return Err(invalid("tariff_kind", &why));
            }
        }
    }
    let tlen = r.count("tariff_len", MAX_TARIFF_BYTES)?;
    let tariff = r.bytes("tariff", tlen)?.to_vec();
    if claimed.is_some_and(|d| d != tariff_digest(&tariff)) {
        let why = "the tariff bytes that follow do not hash to it";
        return Err(invalid("tariff_digest", why));
    }
    Ok((tariff, None))
}

impl ReaderBundle {
    /// Encodes and signs with the deployment root key.
    pub fn sign_v1(&self, root: &SigningKey) -> Result<Vec<u8>, FormatError> {
        let mut out = Vec::with_capacity(self.signed_len_hint());
        out.push(BUNDLE_V1);
        self.encode_fields(&mut out, None, TariffField::Bytes)?;
        let sig = sign_domain(root, BUNDLE_DOMAIN_V1, &out);
        out.extend_from_slice(&sig);
        Ok(out)
    }

    /// At least the length of the signed bytes in any version (within
    /// [`MAX_BUNDLE_V3_BYTES`]), so that the encoder allocates once: a
    /// city's bundle (a 32 KB tariff) grew by doubling, a dozen copies, at
    /// every fetch of every reader.
    fn signed_len_hint(&self) -> usize {
        let ids = match &self.deny {
            DenyUpdate::Snapshot(ids) => ids.len(),
            DenyUpdate::Delta { add, remove, .. } => add.len() + remove.len(),
        };
        let fixed = 1 + PUBLISHER_ID_LEN + 8 + 8 + 4 + 1 + 8 + 32 + 8 + 32 + 1 + 4 + SIGNATURE_LEN;
        let n = fixed + self.trust.len() * 52 + ids * 16 + self.tariff.len();
        n.min(MAX_BUNDLE_V3_BYTES)
    }

    /// Everything after the version byte (and, from v2, the publisher) up
    /// to the signature. `base_hash`: from v2, `deny_base_hash` (zeros for
    /// a snapshot). `tariff`: how the tariff goes.
    fn encode_fields(
        &self,
        out: &mut Vec<u8>,
        base_hash: Option<[u8; 32]>,
        tariff: TariffField,
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
        let bytes_follow = match tariff {
            TariffField::Bytes => true,
            TariffField::Digest {
                digest,
                bytes_follow,
            } => {
                out.extend_from_slice(&digest);
                out.push(u8::from(bytes_follow));
                bytes_follow
            }
        };
        if bytes_follow {
            out.extend_from_slice(&(self.tariff.len() as u32).to_be_bytes());
            out.extend_from_slice(&self.tariff);
        }
        Ok(())
    }

    /// Verifies the root signature over the received bytes, then parses.
    pub fn verify_v1(bytes: &[u8], root: &VerifyingKey) -> Result<ReaderBundle, FormatError> {
        let body = signed_body(bytes, root, MAX_BUNDLE_BYTES, BUNDLE_V1, BUNDLE_DOMAIN_V1)?;
        let mut r = Reader::new("bundle", body);
        let _version = r.u8("version")?;
        let bundle = Self::parse_fields(&mut r, BUNDLE_V1)?.bundle;
        r.finish()?;
        Ok(bundle)
    }

    /// Parses from `bundle_version` to the tariff of wire version `wire`.
    fn parse_fields(r: &mut Reader<'_>, wire: u8) -> Result<ParsedFields, FormatError> {
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
        let base_hash: [u8; 32] = if wire >= BUNDLE_V2 {
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
        let (tariff, tariff_by_digest) = parse_tariff(r, wire)?;
        let bundle = ReaderBundle {
            bundle_version,
            server_time_unix_s,
            trust,
            deny,
            tariff,
        };
        Ok(ParsedFields {
            bundle,
            base_hash,
            tariff_by_digest,
        })
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

/// Version byte of bundle format v3 (SPEC.md §4.2).
pub const BUNDLE_V3: u8 = 3;
/// Domain-separation tag of v3's root-signed bytes.
pub const BUNDLE_DOMAIN_V3: &[u8] = b"FARE-BUNDLE\0v3";
/// Domain-separation tag of [`tariff_digest`].
pub const TARIFF_DIGEST_DOMAIN: &[u8] = b"FARE-TARIFF\0v1";
/// Largest v2 bundle this build accepts.
pub const MAX_BUNDLE_V2_BYTES: usize = MAX_BUNDLE_BYTES + PUBLISHER_ID_LEN + 32;
/// Largest v3 bundle this build accepts (v2's fields, the tariff digest
/// and its kind byte).
pub const MAX_BUNDLE_V3_BYTES: usize = MAX_BUNDLE_V2_BYTES + 32 + 1;

/// The digest a v3 bundle names its tariff by: BLAKE3 of
/// [`TARIFF_DIGEST_DOMAIN`] and the tariff bytes.
pub fn tariff_digest(tariff: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(TARIFF_DIGEST_DOMAIN);
    h.update(tariff);
    *h.finalize().as_bytes()
}

/// A bundle with the line it belongs to: who published it and, for a
/// delta, the exact deny list it was computed from. Bundle versions are
/// comparable only within one publisher.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishedBundle {
    /// The publishing line ([`V1_PUBLISHER`] for a v1 bundle).
    pub publisher: [u8; PUBLISHER_ID_LEN],
    /// For a v2 or v3 delta, [`deny_digest`] of its base; `None` for a
    /// snapshot and for a v1 delta (which names its base by version alone).
    pub deny_base_hash: Option<[u8; 32]>,
    /// v3 only: the tariff goes by its [`tariff_digest`] alone, the one the
    /// reader said it holds; `bundle.tariff` is then empty and the reader
    /// installs the tariff it holds, once it checked the digest. `None`:
    /// `bundle.tariff` holds the bytes.
    pub tariff_by_digest: Option<[u8; 32]>,
    /// The content.
    pub bundle: ReaderBundle,
}

impl PublishedBundle {
    /// Encodes as v2 and signs with the deployment root key. A delta
    /// needs `deny_base_hash`; a snapshot must not have one; the publisher
    /// must not be [`V1_PUBLISHER`]; v2 always carries the tariff's bytes.
    pub fn sign_v2(&self, root: &SigningKey) -> Result<Vec<u8>, FormatError> {
        if self.tariff_by_digest.is_some() {
            return Err(invalid(
                "tariff",
                "v2 carries the tariff's bytes: sign as v3",
            ));
        }
        self.sign_with(root, BUNDLE_V2, BUNDLE_DOMAIN_V2, TariffField::Bytes)
    }

    /// Encodes as v3 and signs with the deployment root key: as v2, with
    /// the tariff named by its digest and its bytes left out when
    /// `tariff_by_digest` is set (then `bundle.tariff` must be empty).
    pub fn sign_v3(&self, root: &SigningKey) -> Result<Vec<u8>, FormatError> {
        let tariff = match self.tariff_by_digest {
            Some(_) if !self.bundle.tariff.is_empty() => {
                return Err(invalid(
                    "tariff",
                    "a bundle that names its tariff by digest carries no tariff bytes",
                ))
            }
            Some(digest) => TariffField::Digest {
                digest,
                bytes_follow: false,
            },
            None => TariffField::Digest {
                digest: tariff_digest(&self.bundle.tariff),
                bytes_follow: true,
            },
        };
        self.sign_with(root, BUNDLE_V3, BUNDLE_DOMAIN_V3, tariff)
    }

    /// v2 and v3: version, publisher, the fields, the root signature.
    fn sign_with(
        &self,
        root: &SigningKey,
        version: u8,
        domain: &[u8],
        tariff: TariffField,
    ) -> Result<Vec<u8>, FormatError> {
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
        out.push(version);
        out.extend_from_slice(&self.publisher);
        self.bundle
            .encode_fields(&mut out, Some(base_hash), tariff)?;
        let sig = sign_domain(root, domain, &out);
        out.extend_from_slice(&sig);
        Ok(out)
    }

    /// Verifies a v2 bundle's root signature over the received bytes, then parses.
    pub fn verify_v2(bytes: &[u8], root: &VerifyingKey) -> Result<PublishedBundle, FormatError> {
        let body = signed_body(
            bytes,
            root,
            MAX_BUNDLE_V2_BYTES,
            BUNDLE_V2,
            BUNDLE_DOMAIN_V2,
        )?;
        Self::parse_published(body, BUNDLE_V2)
    }

    /// Verifies a v3 bundle's root signature over the received bytes, then
    /// parses; tariff bytes that follow must hash to the signed digest.
    pub fn verify_v3(bytes: &[u8], root: &VerifyingKey) -> Result<PublishedBundle, FormatError> {
        let body = signed_body(
            bytes,
            root,
            MAX_BUNDLE_V3_BYTES,
            BUNDLE_V3,
            BUNDLE_DOMAIN_V3,
        )?;
        Self::parse_published(body, BUNDLE_V3)
    }

    /// Parses a v2 or v3 body whose signature was checked.
    fn parse_published(body: &[u8], wire: u8) -> Result<PublishedBundle, FormatError> {
        let mut r = Reader::new("bundle", body);
        let _version = r.u8("version")?;
        let publisher: [u8; PUBLISHER_ID_LEN] = r.array("publisher")?;
        if publisher == V1_PUBLISHER {
            return Err(invalid(
                "publisher",
                "all zeros is reserved for the v1 (offline) line",
            ));
        }
        let ParsedFields {
            bundle,
            base_hash,
            tariff_by_digest,
        } = ReaderBundle::parse_fields(&mut r, wire)?;
        r.finish()?;
        let deny_base_hash = matches!(bundle.deny, DenyUpdate::Delta { .. }).then_some(base_hash);
        Ok(PublishedBundle {
            publisher,
            deny_base_hash,
            tariff_by_digest,
            bundle,
        })
    }

    /// Verifies a bundle of any version: v1 belongs to [`V1_PUBLISHER`].
    pub fn verify(bytes: &[u8], root: &VerifyingKey) -> Result<PublishedBundle, FormatError> {
        match bytes.first() {
            Some(&BUNDLE_V2) => Self::verify_v2(bytes, root),
            Some(&BUNDLE_V3) => Self::verify_v3(bytes, root),
            _ => Ok(PublishedBundle {
                publisher: V1_PUBLISHER,
                deny_base_hash: None,
                tariff_by_digest: None,
                bundle: ReaderBundle::verify_v1(bytes, root)?,
            }),
        }
    }
}

fn invalid(field: &'static str, why: &str) -> FormatError {
    FormatError::Invalid {
        object: "bundle",
        field,
        why: why.into(),
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
