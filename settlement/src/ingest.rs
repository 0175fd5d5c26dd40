//! Ingest of reader batches: signature, chain continuity, sequence gaps,
//! de-duplication, atomic storage, acknowledgement.
//!
//! A refused batch changes no ride, cursor or ledger data. A sequence gap or
//! a fork is also recorded as a reader incident (idempotent per reader, kind
//! and sequence, so a reader retrying does not grow the log); batches from
//! unknown keys are not recorded at all (anyone can send those).

pub use crate::error::IngestError;
use crate::model::{Incident, ReaderState, RideId};
use crate::reverify::code_needs_strict;
use crate::store::{Db, RideBlocks, WriteSet};
use fare_credential::keys::parse_public_key;
use fare_credential::{Batch, SignedBatch};
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

/// Verifies and stores one batch. Atomic: either all new records and the new
/// cursor are durably stored, or nothing.
pub fn ingest_batch(db: &Db, body: &[u8], now_unix_s: u64) -> Result<IngestAck, IngestError> {
    let (reader_id, batch) = authenticate(db, body)?;
    let (state, raw_state) = db.reader_state(reader_id)?;
    let held = IngestAck {
        reader_id,
        acked_seq: state.acked_seq,
        result: "exists".into(),
        stored: 0,
    };
    if batch.records.is_empty() {
        return Ok(held);
    }
    check_continuity(db, reader_id, &batch, &state)
        .map_err(|refusal| record_incident(db, refusal, now_unix_s))?;
    let last = batch.last_seq();
    if last <= state.acked_seq {
        return Ok(held);
    }
    let stored = store_new_records(db, reader_id, &batch, state, raw_state)?;
    metrics::counter!("settlement_ingested_rides_total").increment(stored);
    Ok(IngestAck {
        reader_id,
        acked_seq: last,
        result: "created".into(),
        stored,
    })
}

/// Parses the batch and verifies its signature under the key provisioned
/// for the reader it names.
fn authenticate(db: &Db, body: &[u8]) -> Result<(u32, Batch), IngestError> {
    if body.is_empty() {
        return Err(IngestError::EmptyBody);
    }
    let signed = SignedBatch::parse_v1(body)?;
    let reader_id = signed.reader_id();
    let reader = db
        .reader(reader_id)?
        .ok_or(IngestError::UnknownReader { reader_id })?;
    if reader.retired {
        return Err(IngestError::ReaderRetired { reader_id });
    }
    let vk = parse_public_key(&reader.public_key)
        .map_err(|error| IngestError::StoredKeyUnusable { reader_id, error })?;
    Ok((reader_id, signed.verify(&vk)?))
}

/// Refuses a batch that starts beyond `acked_seq + 1` (a gap) or that
/// disagrees with what is held (a fork: records we hold must be
/// byte-identical, and a batch past them must continue the held chain).
fn check_continuity(
    db: &Db,
    reader_id: u32,
    batch: &Batch,
    state: &ReaderState,
) -> Result<(), IngestError> {
    let (first, acked_seq) = (batch.first_seq(), state.acked_seq);
    if first > acked_seq + 1 {
        return Err(IngestError::SequenceGap {
            reader_id,
            first,
            acked_seq,
        });
    }
    let fork = |seq, why| IngestError::ChainFork {
        reader_id,
        seq,
        why,
        acked_seq,
    };
    let held_to = batch.last_seq().min(acked_seq);
    if first <= held_to {
        let stored = db.ride_bytes(reader_id, first, held_to)?;
        for (rec, old) in batch.records.iter().zip(stored.iter()) {
            if &rec.encode_v1()? != old {
                return Err(fork(
                    rec.reader_seq,
                    "record differs from the one already held",
                ));
            }
        }
    } else if batch.prev_hash != state.head_hash {
        return Err(fork(
            first,
            "batch does not continue the chain from the last held record",
        ));
    }
    Ok(())
}

/// Records a sequence gap or a chain fork as a reader incident (idempotent
/// per reader, kind and sequence) and returns the refusal, or the storage
/// error that kept it from being recorded.
fn record_incident(db: &Db, refusal: IngestError, now_unix_s: u64) -> IngestError {
    let incident = match &refusal {
        IngestError::SequenceGap {
            reader_id,
            first,
            acked_seq,
        } => Incident {
            reader_id: *reader_id,
            kind: "sequence_gap".into(),
            seq: acked_seq + 1,
            detail: format!("batch starts at {first}, settlement holds up to {acked_seq}"),
            at_unix_s: now_unix_s,
        },
        IngestError::ChainFork {
            reader_id,
            seq,
            why,
            ..
        } => Incident {
            reader_id: *reader_id,
            kind: "chain_fork".into(),
            seq: *seq,
            detail: (*why).into(),
            at_unix_s: now_unix_s,
        },
        // Other refusals name no reader whose signature verified (or are
        // our own fault): nothing to record.
        IngestError::EmptyBody
        | IngestError::BodyTooLarge { .. }
        | IngestError::Format { .. }
        | IngestError::UnknownReader { .. }
        | IngestError::ReaderRetired { .. }
        | IngestError::StoredKeyUnusable { .. }
        | IngestError::Store(_) => return refusal,
    };
    let mut w = WriteSet::default();
    Db::put_incident(&mut w, &incident);
    match db.commit(w) {
        Ok(()) => refusal,
        Err(e) => e.into(),
    }
}

/// Stores the records past `state.acked_seq` and the reader's new cursor in
/// one commit; returns how many were stored.
fn store_new_records(
    db: &Db,
    reader_id: u32,
    batch: &Batch,
    state: ReaderState,
    raw_state: Option<Vec<u8>>,
) -> Result<u64, IngestError> {
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
    // Rides are stored in blocks (one record per 64 rides): the touched
    // blocks are read, extended and written once, each checked against the
    // bytes read.
    let mut blocks = RideBlocks::default();
    for (rec, strict) in new_records.iter().zip(strict) {
        let id = RideId {
            reader_id,
            reader_seq: rec.reader_seq,
        };
        blocks.put(db, id, rec.encode_v1()?, strict)?;
        if strict {
            metrics::counter!("settlement_strict_rides_total").increment(1);
        }
    }
    let mut w = WriteSet::default();
    blocks.write(&mut w);
    let new_state = ReaderState {
        acked_seq: batch.last_seq(),
        head_hash: batch.head_hash()?,
        settled_seq: state.settled_seq,
    };
    Db::put_reader_state(&mut w, reader_id, raw_state, &new_state);
    db.commit(w)?;
    Ok(new_records.len() as u64)
}
