//! Ingest of reader batches: signature, chain continuity, sequence gaps,
//! de-duplication, atomic storage, acknowledgement.
//!
//! A refused batch changes no ride, cursor or ledger data. A sequence gap or
//! a fork is also recorded as a reader incident (idempotent per reader, kind
//! and sequence, so a reader retrying does not grow the log); batches from
//! unknown keys are not recorded at all (anyone can send those).

pub use crate::error::IngestError;
use crate::model::{Incident, RMark, ReaderState, RideId};
use crate::reverify::ingest_marks;
use crate::store::{typed::ride_block_key, Db, RideBlocks, WriteSet};
use fare_credential::keys::parse_public_key;
use fare_credential::{Batch, RideRecord, SignedBatch};

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
/// cursor are durably stored, or nothing. ([`check_batch`] then
/// [`store_batch`]; the service runs the first outside its write lock.)
pub fn ingest_batch(db: &Db, body: &[u8], now_unix_s: u64) -> Result<IngestAck, IngestError> {
    let checked = check_batch(db, body, true)?;
    store_batch(db, checked, now_unix_s, None).map(|s| s.ack)
}

/// A batch parsed, its signature verified under the reader's registered
/// key, and each record's mark computed: the CPU work of ingest,
/// which reads nothing that a write changes under the write lock except
/// the reader's key, checked again by [`store_batch`].
#[derive(Debug)]
pub struct CheckedBatch {
    reader_id: u32,
    /// The registered key the batch signature verified under.
    public_key: [u8; 32],
    batch: Batch,
    /// Per record of `batch`: may its device signature be batch-verified
    /// (`reverify::ingest_marks`)?
    marks: Vec<RMark>,
}

impl CheckedBatch {
    /// The reader the batch names (and whose key signed it).
    pub fn reader_id(&self) -> u32 {
        self.reader_id
    }
}

/// Parses and authenticates a batch and marks its records for
/// re-verification (once per ride, as it arrives: is its `R` one a batch
/// verification could wrongly accept? One group test of the batch's `R`;
/// a batch too small for it is left to the settlement run's group test:
/// see `reverify::ingest_marks`). The group test runs on all cores
/// (rayon) with `all_cores`, else on the calling thread: the service
/// checks several batches at once on its request threads, and spreads one
/// over the cores only when nothing else is using them
/// ([`crate::app::CoreUsers`]). Needs no write lock.
pub fn check_batch(db: &Db, body: &[u8], all_cores: bool) -> Result<CheckedBatch, IngestError> {
    let (reader_id, public_key, batch) = authenticate(db, body)?;
    let codes: Vec<&[u8]> = batch.records.iter().map(|r| r.code.as_slice()).collect();
    let marks = ingest_marks(&codes, all_cores);
    Ok(CheckedBatch {
        reader_id,
        public_key,
        batch,
        marks,
    })
}

/// What [`store_batch`] did.
#[derive(Clone, Debug)]
pub struct Stored {
    /// The answer.
    pub ack: IngestAck,
    /// The reader's state after it (what an acknowledgement states).
    pub state: ReaderState,
    /// The reader's contact record, when it was committed together with
    /// the records (`contact` given and new records stored).
    pub contact: Option<crate::acks::ReaderContact>,
}

/// Stores a checked batch's new records and the reader's new cursor in one
/// commit, after the continuity checks against what is held (run it under
/// the write lock). With `contact` (the reader's reported clock), the
/// reader's contact record is updated in the same commit when records are
/// stored (see [`Stored::contact`]).
pub fn store_batch(
    db: &Db,
    checked: CheckedBatch,
    now_unix_s: u64,
    contact: Option<Option<u64>>,
) -> Result<Stored, IngestError> {
    let CheckedBatch {
        reader_id,
        public_key,
        batch,
        marks,
    } = checked;
    // The reader may have been retired since the batch was checked. Its
    // key cannot have changed (`ops::provision_reader` refuses another key
    // for an existing id), which is checked too.
    let reader = db
        .reader(reader_id)?
        .ok_or(IngestError::UnknownReader { reader_id })?;
    if reader.retired {
        return Err(IngestError::ReaderRetired { reader_id });
    }
    if reader.public_key != public_key {
        return Err(IngestError::UnknownReader { reader_id });
    }
    let (state, raw_state) = db.reader_state(reader_id)?;
    let held = |state: ReaderState| Stored {
        ack: IngestAck {
            reader_id,
            acked_seq: state.acked_seq,
            result: "exists".into(),
            stored: 0,
        },
        state,
        contact: None,
    };
    if batch.records.is_empty() {
        return Ok(held(state));
    }
    check_continuity(db, reader_id, &batch, &state)
        .map_err(|refusal| record_incident(db, refusal, now_unix_s))?;
    let last = batch.last_seq();
    if last <= state.acked_seq {
        return Ok(held(state));
    }
    let (stored, state, contact) = store_new_records(
        db, reader_id, &batch, &marks, state, raw_state, contact, now_unix_s,
    )?;
    metrics::counter!("settlement_ingested_rides_total").increment(stored);
    Ok(Stored {
        ack: IngestAck {
            reader_id,
            acked_seq: last,
            result: "created".into(),
            stored,
        },
        state,
        contact,
    })
}

/// Parses the batch and verifies its signature under the key provisioned
/// for the reader it names (returned with the batch).
fn authenticate(db: &Db, body: &[u8]) -> Result<(u32, [u8; 32], Batch), IngestError> {
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
    Ok((reader_id, reader.public_key, signed.verify(&vk)?))
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

/// Stores the records past `state.acked_seq` (with their marks) and
/// the reader's new cursor in one commit, with the reader's contact record
/// when `contact` is given; returns how many were stored, the new state and
/// the contact record written.
#[allow(clippy::too_many_arguments)]
fn store_new_records(
    db: &Db,
    reader_id: u32,
    batch: &Batch,
    marks: &[RMark],
    state: ReaderState,
    raw_state: Option<Vec<u8>>,
    contact: Option<Option<u64>>,
    now_unix_s: u64,
) -> Result<(u64, ReaderState, Option<crate::acks::ReaderContact>), IngestError> {
    let new_records: Vec<(&RideRecord, RMark)> = batch
        .records
        .iter()
        .zip(marks.iter().copied())
        .filter(|(r, _)| r.reader_seq > state.acked_seq)
        .collect();
    // Rides are stored in blocks (one record per 64 rides): the touched
    // blocks are read (all in one batched read), extended and written once,
    // each checked against the bytes read.
    let id = |rec: &RideRecord| RideId {
        reader_id,
        reader_seq: rec.reader_seq,
    };
    let mut blocks = RideBlocks::default();
    blocks.prefetch(
        db,
        new_records.iter().map(|(rec, _)| ride_block_key(id(rec))),
    )?;
    for &(rec, mark) in &new_records {
        blocks.put(db, id(rec), rec.encode_v1()?, mark)?;
        if mark == RMark::Strict {
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
    let contact = match contact {
        Some(reader_time) => Some(crate::acks::queue_contact(
            db,
            &mut w,
            reader_id,
            reader_time,
            now_unix_s,
            1,
        )?),
        None => None,
    };
    db.commit(w)?;
    Ok((new_records.len() as u64, new_state, contact))
}
