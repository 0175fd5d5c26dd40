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
        if self.trust.len() > MAX_TRUST_KEYS {
            return Err(too_large("trust_count", MAX_TRUST_KEYS, self.trust.len()));
        }
        if self.tariff.len() > MAX_TARIFF_BYTES {
            return Err(too_large("tariff_len", MAX_TARIFF_BYTES, self.tariff.len()));
        }
        let mut out = Vec::new();
        out.push(BUNDLE_V1);
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
        match &self.deny {
            DenyUpdate::Snapshot(ids) => {
                out.push(0);
                out.extend_from_slice(&0u64.to_be_bytes());
                put_ids(&mut out, "deny_add_count", ids)?;
                put_ids(&mut out, "deny_remove_count", &[])?;
            }
            DenyUpdate::Delta {
                base_version,
                add,
                remove,
            } => {
                out.push(1);
                out.extend_from_slice(&base_version.to_be_bytes());
                put_ids(&mut out, "deny_add_count", add)?;
                put_ids(&mut out, "deny_remove_count", remove)?;
            }
        }
        out.extend_from_slice(&(self.tariff.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.tariff);
        let sig = sign_domain(root, BUNDLE_DOMAIN_V1, &out);
        out.extend_from_slice(&sig);
        Ok(out)
    }

    /// Verifies the root signature over the received bytes, then parses.
    pub fn verify_v1(bytes: &[u8], root: &VerifyingKey) -> Result<ReaderBundle, FormatError> {
        if bytes.len() > MAX_BUNDLE_BYTES {
            return Err(too_large("length", MAX_BUNDLE_BYTES, bytes.len()));
        }
        if bytes.is_empty() {
            return Err(FormatError::Truncated {
                object: "bundle",
                field: "version",
                needed: 1,
                remaining: 0,
            });
        }
        if bytes[0] != BUNDLE_V1 {
            return Err(FormatError::UnsupportedVersion {
                object: "bundle",
                found: bytes[0],
                supported: BUNDLE_V1,
            });
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
        if !verify_domain(root, BUNDLE_DOMAIN_V1, body, sig) {
            return Err(FormatError::BadSignature { object: "bundle" });
        }
        Self::parse_body(body)
    }

    fn parse_body(body: &[u8]) -> Result<ReaderBundle, FormatError> {
        let mut r = Reader::new("bundle", body);
        let _version = r.u8("version")?;
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
        let ids = |r: &mut Reader<'_>, field| -> Result<Vec<CredentialId>, FormatError> {
            let n = r.count(field, MAX_DENY_ENTRIES)?;
            // Check the bytes are there before allocating for them.
            let raw = r.bytes(field, n * 16)?;
            Ok(raw
                .chunks_exact(16)
                .map(|c| CredentialId(c.try_into().expect("chunk of 16")))
                .collect())
        };
        let add = ids(&mut r, "deny_add_count")?;
        let remove = ids(&mut r, "deny_remove_count")?;
        let deny = match kind {
            0 => {
                if base_version != 0 || !remove.is_empty() {
                    return Err(FormatError::Invalid {
                        object: "bundle",
                        field: "deny_kind",
                        why: "a snapshot has base version 0 and no removals".into(),
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
        r.finish()?;
        Ok(ReaderBundle {
            bundle_version,
            server_time_unix_s,
            trust,
            deny,
            tariff,
        })
    }
}
