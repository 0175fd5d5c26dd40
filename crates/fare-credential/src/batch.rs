//! Batch, wire version 1: a run of consecutive ride records from one reader,
//! continuing its hash chain, signed by the reader key. See SPEC.md §6.

use crate::error::FormatError;
use crate::keys::{sign_domain, verify_domain, SIGNATURE_LEN};
use crate::record::{RideRecord, MAX_RECORD_BYTES};
use crate::wire::Reader;
use ed25519_dalek::{SigningKey, VerifyingKey};

/// Version byte of batch format v1.
pub const BATCH_V1: u8 = 1;
/// Domain-separation tag prefixed to the reader-signed bytes.
pub const BATCH_DOMAIN_V1: &[u8] = b"FARE-BATCH\0v1";
/// At most this many records per batch.
pub const MAX_BATCH_RECORDS: usize = 4096;
/// Fixed header length.
pub const BATCH_HEADER_LEN: usize = 1 + 4 + 8 + 8 + 32 + 4;
/// Largest encoded batch (the HTTP body limit derives from it).
pub const MAX_BATCH_BYTES: usize =
    BATCH_HEADER_LEN + MAX_BATCH_RECORDS * (2 + MAX_RECORD_BYTES) + SIGNATURE_LEN;

/// A batch's content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    /// The uploading reader.
    pub reader_id: u32,
    /// The chain hash the first record continues from.
    pub prev_hash: [u8; 32],
    /// Consecutive records, `reader_seq` increasing by one.
    pub records: Vec<RideRecord>,
}

fn invalid(field: &'static str, why: String) -> FormatError {
    FormatError::Invalid {
        object: "batch",
        field,
        why,
    }
}

impl Batch {
    /// First sequence number (0 for an empty batch).
    pub fn first_seq(&self) -> u64 {
        self.records.first().map_or(0, |r| r.reader_seq)
    }
    /// Last sequence number (0 for an empty batch).
    pub fn last_seq(&self) -> u64 {
        self.records.last().map_or(0, |r| r.reader_seq)
    }
    /// The chain hash after the last record.
    pub fn head_hash(&self) -> Result<[u8; 32], FormatError> {
        match self.records.last() {
            Some(r) => r.hash(),
            None => Ok(self.prev_hash),
        }
    }

    /// Checks the batch is internally consistent: one reader, consecutive
    /// sequence numbers, and each record chained to the one before.
    pub fn check_chain(&self) -> Result<(), FormatError> {
        let mut prev = self.prev_hash;
        let first = self.first_seq();
        for (expect_seq, rec) in (first..).zip(&self.records) {
            if rec.reader_id != self.reader_id {
                return Err(invalid(
                    "records.reader_id",
                    format!(
                        "record {} names reader {}, batch is from reader {}",
                        rec.reader_seq, rec.reader_id, self.reader_id
                    ),
                ));
            }
            if rec.reader_seq != expect_seq {
                return Err(invalid(
                    "records.reader_seq",
                    format!("expected sequence {expect_seq}, found {}", rec.reader_seq),
                ));
            }
            if rec.prev_hash != prev {
                return Err(invalid(
                    "records.prev_hash",
                    format!("record {} does not continue the hash chain", rec.reader_seq),
                ));
            }
            prev = rec.hash()?;
        }
        Ok(())
    }

    /// Encodes and signs with the reader key. Refuses inconsistent batches.
    pub fn sign_v1(&self, reader_key: &SigningKey) -> Result<Vec<u8>, FormatError> {
        if self.records.len() > MAX_BATCH_RECORDS {
            return Err(FormatError::TooLarge {
                object: "batch",
                field: "record_count",
                limit: MAX_BATCH_RECORDS,
                found: self.records.len(),
            });
        }
        self.check_chain()?;
        let mut out =
            Vec::with_capacity(BATCH_HEADER_LEN + self.records.len() * 300 + SIGNATURE_LEN);
        out.push(BATCH_V1);
        out.extend_from_slice(&self.reader_id.to_be_bytes());
        out.extend_from_slice(&self.first_seq().to_be_bytes());
        out.extend_from_slice(&self.last_seq().to_be_bytes());
        out.extend_from_slice(&self.prev_hash);
        out.extend_from_slice(&(self.records.len() as u32).to_be_bytes());
        for rec in &self.records {
            let enc = rec.encode_v1()?;
            out.extend_from_slice(&(enc.len() as u16).to_be_bytes());
            out.extend_from_slice(&enc);
        }
        let sig = sign_domain(reader_key, BATCH_DOMAIN_V1, &out);
        out.extend_from_slice(&sig);
        Ok(out)
    }
}

/// A received batch whose structure parsed but whose signature is not yet
/// checked. Settlement reads `reader_id` to find the key, then [`SignedBatch::verify`].
#[derive(Clone, Debug)]
pub struct SignedBatch<'a> {
    body: &'a [u8],
    signature: &'a [u8],
    batch: Batch,
    first_seq: u64,
    last_seq: u64,
}

impl<'a> SignedBatch<'a> {
    /// Parses a v1 batch strictly (lengths, counts, trailing bytes).
    pub fn parse_v1(bytes: &'a [u8]) -> Result<SignedBatch<'a>, FormatError> {
        if bytes.len() > MAX_BATCH_BYTES {
            return Err(FormatError::TooLarge {
                object: "batch",
                field: "length",
                limit: MAX_BATCH_BYTES,
                found: bytes.len(),
            });
        }
        if let Some(&v) = bytes.first() {
            if v != BATCH_V1 {
                return Err(FormatError::UnsupportedVersion {
                    object: "batch",
                    found: v,
                    supported: BATCH_V1,
                });
            }
        }
        if bytes.len() < BATCH_HEADER_LEN + SIGNATURE_LEN {
            return Err(FormatError::Truncated {
                object: "batch",
                field: "header",
                needed: BATCH_HEADER_LEN + SIGNATURE_LEN,
                remaining: bytes.len(),
            });
        }
        let (body, signature) = bytes.split_at(bytes.len() - SIGNATURE_LEN);
        let mut r = Reader::new("batch", body);
        let _v = r.u8("version")?;
        let reader_id = r.u32("reader_id")?;
        let first_seq = r.u64("first_seq")?;
        let last_seq = r.u64("last_seq")?;
        let prev_hash = r.array("prev_hash")?;
        let n = r.count("record_count", MAX_BATCH_RECORDS)?;
        let mut records = Vec::with_capacity(n);
        for _ in 0..n {
            let len = r.u16("record_len")? as usize;
            let rec = r.bytes("record", len)?;
            records.push(RideRecord::decode_v1(rec)?);
        }
        r.finish()?;
        let batch = Batch {
            reader_id,
            prev_hash,
            records,
        };
        if batch.first_seq() != first_seq || batch.last_seq() != last_seq {
            return Err(invalid(
                "first_seq",
                format!(
                    "header says {first_seq}..={last_seq}, records say {}..={}",
                    batch.first_seq(),
                    batch.last_seq()
                ),
            ));
        }
        Ok(SignedBatch {
            body,
            signature,
            batch,
            first_seq,
            last_seq,
        })
    }

    /// The reader that claims to have signed it.
    pub fn reader_id(&self) -> u32 {
        self.batch.reader_id
    }
    /// Sequence range (0..=0 when empty).
    pub fn seq_range(&self) -> (u64, u64) {
        (self.first_seq, self.last_seq)
    }

    /// Checks the reader signature over the received bytes, then the chain.
    pub fn verify(self, reader_key: &VerifyingKey) -> Result<Batch, FormatError> {
        if !verify_domain(reader_key, BATCH_DOMAIN_V1, self.body, self.signature) {
            return Err(FormatError::BadSignature { object: "batch" });
        }
        self.batch.check_chain()?;
        Ok(self.batch)
    }
}
