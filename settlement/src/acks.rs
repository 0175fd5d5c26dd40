//! Signed batch acknowledgements (SPEC.md §8) and what settlement learns
//! about each reader when it answers one (last contact, reported clock
//! offset), kept for `GET /v1/readers` and `/metrics`.
//!
//! The acknowledgement key is an online ed25519 key in the KEYS directory
//! (`ack.key`, owner-only) with a root-signed certificate (`ack.cert`),
//! both made the first time the service starts on that directory. Every
//! answer to a batch that names a registered reader and verifies carries
//! `ack`: the hex of an acknowledgement naming the reader, the highest
//! contiguous sequence held, the chain hash at it, settlement's clock and
//! the digest of the exact batch bytes answered, whether the batch was
//! stored, already held, or refused as a sequence gap or a chain fork.

use crate::error::{ApiError, ErrorCode, IngestError, StoreError};
use crate::ingest::Stored;
use crate::model::ReaderState;
use crate::store::{Db, WriteSet};
use fare_credential::ack::{request_digest, Ack, AckKeyCert, AckKind, ACK_KEY_CERT_LEN};
use fare_credential::{SignedBatch, SigningKey};
use fare_keys::files::{read_hex, write_atomic};
use fare_keys::KeyStore;
use rand_core::CryptoRngCore;
use std::path::{Path, PathBuf};

/// File name of the acknowledgement key in the KEYS directory.
pub const ACK_KEY_FILE: &str = "ack.key";
/// File name of its root-signed certificate in the KEYS directory.
pub const ACK_CERT_FILE: &str = "ack.cert";
/// How long a new acknowledgement-key certificate is valid (10 years).
pub const ACK_CERT_VALIDITY_S: u64 = 10 * 365 * 86_400;
/// How far before its creation a new certificate's window starts, so a
/// settlement clock stepped back a little still signs inside it (1 day).
pub const ACK_CERT_BACKDATE_S: u64 = 86_400;

/// Why the acknowledgement key could not be loaded or made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AckKeyError {
    /// A file could not be read or written.
    #[error("acknowledgement key file {path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A file holds something else than expected.
    #[error("acknowledgement key file {path}: {why}")]
    Corrupt {
        /// File.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
}

/// The online acknowledgement key and its root-signed certificate.
pub struct AckSigner {
    key: SigningKey,
    cert: Vec<u8>,
}

impl std::fmt::Debug for AckSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AckSigner")
            .field(
                "public_key",
                &hex::encode(self.key.verifying_key().as_bytes()),
            )
            .finish_non_exhaustive()
    }
}

fn io_err<'a>(path: &'a Path) -> impl FnOnce(std::io::Error) -> AckKeyError + 'a {
    move |source| AckKeyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl AckSigner {
    /// The service's bundle publisher id ([`crate::bundle::publisher_id`]).
    pub fn publisher_id(&self) -> [u8; fare_credential::bundle::PUBLISHER_ID_LEN] {
        crate::bundle::publisher_id(&self.cert)
    }

    /// Loads `ack.key` and `ack.cert` from the KEYS directory, or makes them
    /// (key from `rng`, certificate signed by the root key) when absent. The
    /// certificate must be the root's and name the key.
    pub fn open_or_create(
        keys: &KeyStore,
        now_unix_s: u64,
        rng: &mut impl CryptoRngCore,
    ) -> Result<AckSigner, AckKeyError> {
        let kp = keys.dir().join(ACK_KEY_FILE);
        let cp = keys.dir().join(ACK_CERT_FILE);
        if !kp.exists() {
            let key = SigningKey::generate(rng);
            let cert = AckKeyCert {
                public_key: key.verifying_key().to_bytes(),
                valid_from_unix_s: now_unix_s.saturating_sub(ACK_CERT_BACKDATE_S),
                valid_until_unix_s: now_unix_s.saturating_add(ACK_CERT_VALIDITY_S),
            }
            .sign_v1(keys.root_signing_key());
            // Certificate first: a key file marks a complete pair.
            write_atomic(&cp, hex::encode(&cert).as_bytes(), false).map_err(io_err(&cp))?;
            write_atomic(&kp, hex::encode(key.to_bytes()).as_bytes(), true).map_err(io_err(&kp))?;
            tracing::info!(public_key = %hex::encode(key.verifying_key().as_bytes()), "acknowledgement key made and certified by the root key");
            return Ok(AckSigner { key, cert });
        }
        let seed: [u8; 32] =
            read_hex(&kp)
                .map_err(io_err(&kp))?
                .try_into()
                .map_err(|v: Vec<u8>| AckKeyError::Corrupt {
                    path: kp.clone(),
                    why: format!("expected a 32-byte seed, found {} bytes", v.len()),
                })?;
        let key = SigningKey::from_bytes(&seed);
        let cert = read_hex(&cp).map_err(io_err(&cp))?;
        let corrupt = |why: String| AckKeyError::Corrupt {
            path: cp.clone(),
            why,
        };
        if cert.len() != ACK_KEY_CERT_LEN {
            return Err(corrupt(format!(
                "{} bytes, expected {ACK_KEY_CERT_LEN}",
                cert.len()
            )));
        }
        let (c, _) = AckKeyCert::verify_v1(&cert, &keys.root_public_key())
            .map_err(|e| corrupt(e.to_string()))?;
        if c.public_key != key.verifying_key().to_bytes() {
            return Err(corrupt("certifies another key than ack.key".into()));
        }
        Ok(AckSigner { key, cert })
    }

    /// A signed acknowledgement (hex) of `body` for `reader_id`, stating
    /// what settlement now holds for it.
    pub fn sign(
        &self,
        db: &Db,
        kind: AckKind,
        reader_id: u32,
        body: &[u8],
        now_unix_s: u64,
    ) -> Result<String, StoreError> {
        let (state, _) = db.reader_state(reader_id)?;
        Ok(self.sign_state(kind, reader_id, &state, body, now_unix_s))
    }

    /// A signed acknowledgement (hex) of `body` for `reader_id` stating
    /// `state` (what settlement holds for it, as just read or written).
    pub fn sign_state(
        &self,
        kind: AckKind,
        reader_id: u32,
        state: &ReaderState,
        body: &[u8],
        now_unix_s: u64,
    ) -> String {
        let ack = Ack {
            kind,
            reader_id,
            acked_seq: state.acked_seq,
            chain_hash: state.head_hash,
            server_time_unix_s: now_unix_s,
            request_digest: request_digest(body),
        };
        let bytes = ack
            .sign_v1(&self.cert, &self.key)
            .expect("the certificate was checked against the key at open");
        hex::encode(bytes)
    }
}

/// What settlement last heard from a reader.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReaderContact {
    /// Settlement time of the last authenticated batch (unix s).
    pub last_contact_unix_s: u64,
    /// Reader clock minus settlement clock at that batch, as the reader
    /// reported it (`X-Reader-Time` header); `None` when it did not say.
    pub clock_offset_s: Option<i64>,
    /// Batches answered.
    pub batches: u64,
}

fn contact_meta_name(reader_id: u32) -> String {
    format!("reader_contact/{reader_id}")
}

/// The last contact recorded for a reader.
pub fn contact(db: &Db, reader_id: u32) -> Result<Option<ReaderContact>, StoreError> {
    db.meta(&contact_meta_name(reader_id))
}

/// Records that a reader was heard from (a batch, or a bundle fetch of a
/// registered reader), with the clock it reported, and updates the gauges.
pub fn note_contact(
    db: &Db,
    reader_id: u32,
    reader_time_unix_s: Option<u64>,
    now_unix_s: u64,
    batches: u64,
) -> Result<(), StoreError> {
    let mut w = WriteSet::default();
    let c = queue_contact(
        db,
        &mut w,
        reader_id,
        reader_time_unix_s,
        now_unix_s,
        batches,
    )?;
    db.commit(w)?;
    contact_gauges(reader_id, &c, now_unix_s);
    Ok(())
}

/// Queues on `w` the reader's contact record after this contact (read
/// first: call it under the write lock) and returns it; the gauges are
/// set by [`note_contact`] or [`answer`] once `w` is committed.
pub fn queue_contact(
    db: &Db,
    w: &mut WriteSet,
    reader_id: u32,
    reader_time_unix_s: Option<u64>,
    now_unix_s: u64,
    batches: u64,
) -> Result<ReaderContact, StoreError> {
    let name = contact_meta_name(reader_id);
    let mut c: ReaderContact = db.meta(&name)?.unwrap_or_default();
    c.last_contact_unix_s = now_unix_s;
    if let Some(t) = reader_time_unix_s {
        c.clock_offset_s = Some(t as i64 - now_unix_s as i64);
    }
    c.batches += batches;
    Db::put_meta(w, &name, &c);
    Ok(c)
}

/// Sets the reader's contact gauges once its contact record is committed.
pub(crate) fn contact_gauges(reader_id: u32, c: &ReaderContact, now_unix_s: u64) {
    metrics::gauge!("settlement_reader_last_contact_unix_s", "reader" => reader_id.to_string())
        .set(now_unix_s as f64);
    if let Some(off) = c.clock_offset_s {
        metrics::gauge!("settlement_reader_clock_offset_s", "reader" => reader_id.to_string())
            .set(off as f64);
    }
}

/// Signs the answer to a batch and records the contact. `result` is what
/// ingest decided; the acknowledgement is added to a success, a
/// `sequence_gap` or a `chain_fork` (each names a registered reader whose
/// signature verified); other refusals are returned unchanged. A success
/// carries the reader's state it acknowledges, and its contact record when
/// that was committed with the records already.
pub fn answer(
    db: &Db,
    signer: &AckSigner,
    body: &[u8],
    reader_time_unix_s: Option<u64>,
    now_unix_s: u64,
    result: Result<Stored, IngestError>,
) -> Result<serde_json::Value, ApiError> {
    let kind = match &result {
        Ok(_) => AckKind::Held,
        Err(IngestError::SequenceGap { .. }) => AckKind::SequenceGap,
        Err(IngestError::ChainFork { .. }) => AckKind::ChainFork,
        Err(_) => {
            return result
                .map(|s| serde_json::to_value(s.ack).expect("ack serialises"))
                .map_err(ApiError::from)
        }
    };
    let reader_id = SignedBatch::parse_v1(body)
        .map(|b| b.reader_id())
        .map_err(|e| ApiError::of(ErrorCode::MalformedBatch, e.to_string()))?;
    let (state, contact) = match &result {
        Ok(s) => (s.state.clone(), s.contact.clone()),
        Err(_) => (db.reader_state(reader_id)?.0, None),
    };
    let ack = signer.sign_state(kind, reader_id, &state, body, now_unix_s);
    match contact {
        Some(c) => contact_gauges(reader_id, &c, now_unix_s),
        None => note_contact(db, reader_id, reader_time_unix_s, now_unix_s, 1)?,
    }
    // The gauge `GET /v1/readers` also sets, kept current on every answer.
    metrics::gauge!("settlement_reader_acked_seq", "reader" => reader_id.to_string())
        .set(state.acked_seq as f64);
    match result {
        Ok(s) => {
            let mut v = serde_json::to_value(s.ack).expect("ack serialises");
            v["ack"] = serde_json::Value::String(ack);
            v["server_time_unix_s"] = now_unix_s.into();
            Ok(v)
        }
        Err(e) => {
            let mut e = ApiError::from(e);
            let mut extra = e.extra.take().unwrap_or_else(|| serde_json::json!({}));
            extra["ack"] = serde_json::Value::String(ack);
            extra["server_time_unix_s"] = now_unix_s.into();
            Err(e.with_extra(extra))
        }
    }
}

/// Header in which a reader reports its clock (unix s) with each batch.
pub const READER_TIME_HEADER: &str = "x-reader-time";

/// The reader's clock from [`READER_TIME_HEADER`], if present and numeric.
pub fn reader_time_header(headers: &axum::http::HeaderMap) -> Option<u64> {
    headers
        .get(READER_TIME_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}
