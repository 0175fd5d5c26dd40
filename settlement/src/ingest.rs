//! Ingest of reader batches: signature, chain continuity, sequence gaps,
//! de-duplication, atomic storage, acknowledgement.
//!
//! A refused batch changes no ride, cursor or ledger data. A sequence gap or
//! a fork is also recorded as a reader incident (idempotent per reader, kind
//! and sequence, so a reader retrying does not grow the log); batches from
//! unknown keys are not recorded at all (anyone can send those).

use crate::error::{ApiError, ErrorCode};
use crate::model::{Incident, ReaderState, RideId};
use crate::reverify::code_needs_strict;
use crate::store::{Db, RideBlocks, WriteSet};
use fare_credential::keys::parse_public_key;
use fare_credential::{FormatError, SignedBatch};
use rayon::prelude::*;

/// The answer to an accepted (or already held) batch.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IngestAck {
    /// The reader.
    pub reader_id: u32,
    /// Highest contiguous sequence now held for it.
    pub acked_seq: u64,
    /// `created` when new records were stored, `exists` when all were held already.
    pub result: String,
    /// Number of new records stored.
    pub stored: u64,
}

fn format_error(e: FormatError) -> ApiError {
    match &e {
        FormatError::TooLarge {
            field: "length", ..
        } => ApiError::of(ErrorCode::BatchTooLarge, e.to_string()),
        FormatError::UnsupportedVersion { .. } => {
            ApiError::of(ErrorCode::UnsupportedVersion, e.to_string())
        }
        FormatError::BadSignature { .. } => ApiError::of(
            ErrorCode::BadBatchSignature,
            format!("{e}: the batch is not signed by the key provisioned for this reader"),
        ),
        FormatError::Invalid { field, .. } if field.starts_with("records.") => {
            ApiError::of(ErrorCode::BrokenChain, e.to_string())
        }
        _ => ApiError::of(ErrorCode::MalformedBatch, e.to_string()),
    }
}

/// Verifies and stores one batch. Atomic: either all new records and the new
/// cursor are durably stored, or nothing.
pub fn ingest_batch(db: &Db, body: &[u8], now_unix_s: u64) -> Result<IngestAck, ApiError> {
    if body.is_empty() {
        return Err(ApiError::of(
            ErrorCode::MalformedBatch,
            "empty body: expected a batch v1 (binary)",
        ));
    }
    let signed = SignedBatch::parse_v1(body).map_err(format_error)?;
    let reader_id = signed.reader_id();
    let reader = db.reader(reader_id)?.ok_or_else(|| {
        ApiError::of(
            ErrorCode::UnknownReader,
            format!("reader {reader_id} is not provisioned: POST /v1/readers first"),
        )
    })?;
    if reader.retired {
        return Err(ApiError::of(
            ErrorCode::ReaderRetired,
            format!("reader {reader_id} was retired: its uploads are refused"),
        ));
    }
    let vk = parse_public_key(&reader.public_key).map_err(|e| {
        ApiError::of(
            ErrorCode::UnknownReader,
            format!("stored key unusable: {e}"),
        )
    })?;
    let batch = signed.verify(&vk).map_err(format_error)?;
    let (state, raw_state) = db.reader_state(reader_id)?;
    let ack = |result: &str, stored| IngestAck {
        reader_id,
        acked_seq: state.acked_seq,
        result: result.into(),
        stored,
    };
    if batch.records.is_empty() {
        return Ok(ack("exists", 0));
    }
    let first = batch.first_seq();
    let last = batch.last_seq();
    if first > state.acked_seq + 1 {
        let mut w = WriteSet::default();
        Db::put_incident(
            &mut w,
            &Incident {
                reader_id,
                kind: "sequence_gap".into(),
                seq: state.acked_seq + 1,
                detail: format!(
                    "batch starts at {first}, settlement holds up to {}",
                    state.acked_seq
                ),
                at_unix_s: now_unix_s,
            },
        );
        db.commit(w)?;
        return Err(ApiError::of(ErrorCode::SequenceGap,
            format!(
                "batch starts at sequence {first} but settlement holds reader {reader_id} only up to {}: resend from {}",
                state.acked_seq,
                state.acked_seq + 1
            ),
        )
        .with_extra(serde_json::json!({"reader_id": reader_id, "acked_seq": state.acked_seq})));
    }
    // Records we already hold must be byte-identical (the chain makes any
    // difference a fork: the reader rewrote its history).
    let held_to = last.min(state.acked_seq);
    let fork = |seq: u64, why: &str| -> Result<IngestAck, ApiError> {
        let mut w = WriteSet::default();
        Db::put_incident(
            &mut w,
            &Incident {
                reader_id,
                kind: "chain_fork".into(),
                seq,
                detail: why.into(),
                at_unix_s: now_unix_s,
            },
        );
        db.commit(w)?;
        Err(ApiError::of(ErrorCode::ChainFork,
            format!("reader {reader_id} sequence {seq}: {why}; the reader's log disagrees with what it uploaded before"),
        )
        .with_extra(serde_json::json!({"reader_id": reader_id, "acked_seq": state.acked_seq})))
    };
    if first <= held_to {
        let stored = db.ride_bytes(reader_id, first, held_to)?;
        for (rec, old) in batch.records.iter().zip(stored.iter()) {
            let enc = rec.encode_v1().map_err(format_error)?;
            if &enc != old {
                return fork(rec.reader_seq, "record differs from the one already held");
            }
        }
    } else if batch.prev_hash != state.head_hash {
        return fork(
            first,
            "batch does not continue the chain from the last held record",
        );
    }
    if last <= state.acked_seq {
        return Ok(ack("exists", 0));
    }
    let mut w = WriteSet::default();
    let mut n = 0u64;
    // Rides are stored in blocks (one record per 64 rides): the touched
    // blocks are read, extended and written once, each checked against the
    // bytes read.
    let mut blocks = RideBlocks::default();
    let new_records: Vec<_> = batch
        .records
        .iter()
        .filter(|r| r.reader_seq > state.acked_seq)
        .collect();
    // Once per ride, as it arrives: is its `R` one a batch verification
    // could wrongly accept? (About one scalar multiplication per ride, on
    // all cores; see `reverify`.) The mark is stored in the ride's block
    // entry.
    let strict: Vec<bool> = new_records
        .par_iter()
        .with_min_len(64)
        .map(|r| code_needs_strict(&r.code))
        .collect();
    for (rec, strict) in new_records.iter().zip(strict) {
        let id = RideId {
            reader_id,
            reader_seq: rec.reader_seq,
        };
        blocks.put(db, id, rec.encode_v1().map_err(format_error)?, strict)?;
        if strict {
            metrics::counter!("settlement_strict_rides_total").increment(1);
        }
        n += 1;
    }
    blocks.write(&mut w);
    let head_hash = batch.head_hash().map_err(format_error)?;
    let new_state = ReaderState {
        acked_seq: last,
        head_hash,
        settled_seq: state.settled_seq,
    };
    Db::put_reader_state(&mut w, reader_id, raw_state, &new_state);
    db.commit(w)?;
    metrics::counter!("settlement_ingested_rides_total").increment(n);
    Ok(IngestAck {
        reader_id,
        acked_seq: last,
        result: "created".into(),
        stored: n,
    })
}
