//! Signed reader requests, version 1 (SPEC.md §9): a reader authenticates
//! an HTTP request to settlement with its own key, so only the reader (or
//! an operator) can fetch its bundle and deny list.
//!
//! The header value is the lower-case hex of
//! `version u8 | reader_id u32 | time_unix_s u64 | nonce u64 | signature [64]`;
//! the signature is over `FARE-REQ\0v1 || version | reader_id | time | nonce
//! | method_len u8 | method | target_len u16 | target | BLAKE3(body)`, where
//! `target` is the request's path and query as sent (`/v1/readers/7/bundle?since=3`).
//! Freshness (a time window) and replay (a seen nonce) are the verifier's.

use crate::error::FormatError;
use crate::keys::{sign_domain, verify_domain, SIGNATURE_LEN};
use crate::wire::Reader;
use ed25519_dalek::{SigningKey, VerifyingKey};

/// Version byte of signed request v1.
pub const REQUEST_V1: u8 = 1;
/// Domain-separation tag of the signed request bytes.
pub const REQUEST_DOMAIN_V1: &[u8] = b"FARE-REQ\0v1";
/// Length of the decoded header value.
pub const REQUEST_AUTH_LEN: usize = 1 + 4 + 8 + 8 + SIGNATURE_LEN;
/// Longest method name signed.
pub const MAX_REQUEST_METHOD_BYTES: usize = 16;
/// Longest path-and-query signed.
pub const MAX_REQUEST_TARGET_BYTES: usize = 2048;
/// The HTTP header carrying the hex of a [`RequestAuth`].
pub const REQUEST_AUTH_HEADER: &str = "x-reader-auth";
/// The path a reader posts its batches to: the `target` its request
/// signature covers (settlement requires the signature on every batch).
pub const BATCH_TARGET: &str = "/v1/batches";

/// What a bundle request names (`GET /v1/readers/{id}/bundle?since=&tariff=`):
/// one type for the reader that builds the request and signs its
/// [`BundleQuery::target`], and for settlement, which parses it back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BundleQuery {
    /// The reader whose bundle is asked for (the path's `{id}`).
    pub reader_id: u32,
    /// `since`: the bundle version the reader holds (0: none); `None`
    /// (no `since` at all, as an operator may ask): a snapshot.
    pub since: Option<u64>,
    /// `tariff`: the digest of the tariff the reader holds (SPEC §4.2);
    /// settlement leaves the tariff's bytes out when it is the current one's.
    pub tariff_held: Option<[u8; 32]>,
}

impl BundleQuery {
    /// Path and query as a reader sends them, the `target` its request
    /// signature covers: `/v1/readers/7/bundle?since=3&tariff=<64 hex>`.
    pub fn target(&self) -> String {
        let mut target = format!("/v1/readers/{}/bundle", self.reader_id);
        let mut sep = '?';
        if let Some(since) = self.since {
            target.push_str(&format!("{sep}since={since}"));
            sep = '&';
        }
        if let Some(d) = self.tariff_held {
            target.push_str(&format!("{sep}tariff={}", hex::encode(d)));
        }
        target
    }
}

/// A parsed request signature header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestAuth {
    /// The reader claiming the request.
    pub reader_id: u32,
    /// The reader's clock (corrected by its last measured offset) when signing.
    pub time_unix_s: u64,
    /// Distinguishes requests signed in the same second (replay detection).
    pub nonce: u64,
    /// ed25519 signature by the reader key.
    pub signature: [u8; SIGNATURE_LEN],
}

fn message(
    reader_id: u32,
    time_unix_s: u64,
    nonce: u64,
    method: &str,
    target: &str,
    body: &[u8],
) -> Result<Vec<u8>, FormatError> {
    let too_large = |field, limit, found| FormatError::TooLarge {
        object: "request",
        field,
        limit,
        found,
    };
    if method.len() > MAX_REQUEST_METHOD_BYTES {
        return Err(too_large("method", MAX_REQUEST_METHOD_BYTES, method.len()));
    }
    if target.len() > MAX_REQUEST_TARGET_BYTES {
        return Err(too_large("target", MAX_REQUEST_TARGET_BYTES, target.len()));
    }
    let mut m = Vec::with_capacity(64 + method.len() + target.len());
    m.push(REQUEST_V1);
    m.extend_from_slice(&reader_id.to_be_bytes());
    m.extend_from_slice(&time_unix_s.to_be_bytes());
    m.extend_from_slice(&nonce.to_be_bytes());
    m.push(method.len() as u8);
    m.extend_from_slice(method.as_bytes());
    m.extend_from_slice(&(target.len() as u16).to_be_bytes());
    m.extend_from_slice(target.as_bytes());
    m.extend_from_slice(blake3::hash(body).as_bytes());
    Ok(m)
}

impl RequestAuth {
    /// Signs a request with the reader key.
    pub fn sign_v1(
        key: &SigningKey,
        reader_id: u32,
        time_unix_s: u64,
        nonce: u64,
        method: &str,
        target: &str,
        body: &[u8],
    ) -> Result<RequestAuth, FormatError> {
        let m = message(reader_id, time_unix_s, nonce, method, target, body)?;
        Ok(RequestAuth {
            reader_id,
            time_unix_s,
            nonce,
            signature: sign_domain(key, REQUEST_DOMAIN_V1, &m),
        })
    }

    /// The header value (lower-case hex of the 85 bytes).
    pub fn to_header(&self) -> String {
        let mut b = Vec::with_capacity(REQUEST_AUTH_LEN);
        b.push(REQUEST_V1);
        b.extend_from_slice(&self.reader_id.to_be_bytes());
        b.extend_from_slice(&self.time_unix_s.to_be_bytes());
        b.extend_from_slice(&self.nonce.to_be_bytes());
        b.extend_from_slice(&self.signature);
        hex::encode(b)
    }

    /// Parses a header value (strict: exact length, version 1).
    pub fn parse_header(value: &str) -> Result<RequestAuth, FormatError> {
        let bytes = hex::decode(value.trim()).map_err(|e| FormatError::Invalid {
            object: "request",
            field: "header",
            why: format!("expected {} hex characters: {e}", 2 * REQUEST_AUTH_LEN),
        })?;
        let mut r = Reader::new("request", &bytes);
        let version = r.u8("version")?;
        if version != REQUEST_V1 {
            return Err(FormatError::UnsupportedVersion {
                object: "request",
                found: version,
                supported: REQUEST_V1,
            });
        }
        let auth = RequestAuth {
            reader_id: r.u32("reader_id")?,
            time_unix_s: r.u64("time_unix_s")?,
            nonce: r.u64("nonce")?,
            signature: r.array("signature")?,
        };
        r.finish()?;
        Ok(auth)
    }

    /// Verifies the signature with `key` over this exact request.
    pub fn verify_v1(
        &self,
        key: &VerifyingKey,
        method: &str,
        target: &str,
        body: &[u8],
    ) -> Result<(), FormatError> {
        let m = message(
            self.reader_id,
            self.time_unix_s,
            self.nonce,
            method,
            target,
            body,
        )?;
        if verify_domain(key, REQUEST_DOMAIN_V1, &m, &self.signature) {
            Ok(())
        } else {
            Err(FormatError::BadSignature { object: "request" })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_query_target_is_the_path_and_query_a_reader_signs() {
        let q = |since, tariff_held| BundleQuery {
            reader_id: 7,
            since,
            tariff_held,
        };
        assert_eq!(q(Some(0), None).target(), "/v1/readers/7/bundle?since=0");
        assert_eq!(q(Some(3), None).target(), "/v1/readers/7/bundle?since=3");
        let d = [0xab; 32];
        let hex64 = "ab".repeat(32);
        assert_eq!(
            q(Some(3), Some(d)).target(),
            format!("/v1/readers/7/bundle?since=3&tariff={hex64}")
        );
        assert_eq!(q(None, None).target(), "/v1/readers/7/bundle");
        assert_eq!(
            q(None, Some(d)).target(),
            format!("/v1/readers/7/bundle?tariff={hex64}")
        );
    }

    #[test]
    fn signs_and_verifies_only_the_exact_request() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let other = SigningKey::from_bytes(&[8; 32]);
        let target = "/v1/readers/7/bundle?since=3";
        let a = RequestAuth::sign_v1(&key, 7, 1_000, 1, "GET", target, b"").unwrap();
        let parsed = RequestAuth::parse_header(&a.to_header()).unwrap();
        assert_eq!(parsed, a);
        assert_eq!(a.to_header().len(), 2 * REQUEST_AUTH_LEN);
        let vk = key.verifying_key();
        parsed.verify_v1(&vk, "GET", target, b"").unwrap();
        for (m, t, b) in [
            ("POST", target, &b""[..]),
            ("GET", "/v1/readers/8/bundle?since=3", b""),
            ("GET", "/v1/readers/7/bundle?since=4", b""),
            ("GET", target, b"x"),
        ] {
            assert!(parsed.verify_v1(&vk, m, t, b).is_err(), "{m} {t}");
        }
        assert!(parsed
            .verify_v1(&other.verifying_key(), "GET", target, b"")
            .is_err());
        let mut moved = parsed;
        moved.time_unix_s += 1;
        assert!(moved.verify_v1(&vk, "GET", target, b"").is_err());
        let mut h = a.to_header();
        h.replace_range(0..2, "02");
        assert!(matches!(
            RequestAuth::parse_header(&h),
            Err(FormatError::UnsupportedVersion { .. })
        ));
        assert!(RequestAuth::parse_header(&h[..20]).is_err());
        assert!(RequestAuth::parse_header("zz").is_err());
    }
}
