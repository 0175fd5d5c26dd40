//! The reader → settlement link, in process, behind a trait, with injected
//! faults: drop, duplicate, reorder and a lost reply after commit.

use crate::adapters::{Backoffice, IngestAnswer};
use rand_chacha::ChaCha20Rng;
use rand_core::RngCore;

/// What the reader sees of one upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Settlement's answer arrived.
    Answer(IngestAnswer),
    /// Nothing came back (the request or the answer was lost, or it is delayed).
    Timeout,
}

/// How the fault injection treated one request (counted in the report).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct LinkStats {
    /// Requests sent.
    pub sent: u64,
    /// Lost before settlement.
    pub dropped: u64,
    /// Delivered twice.
    pub duplicated: u64,
    /// Delayed past a later request.
    pub reordered: u64,
    /// Committed, answer lost.
    pub lost_replies: u64,
    /// Bundle fetches lost.
    pub bundle_fetches_lost: u64,
}

/// A link from readers to settlement.
pub trait Link {
    /// Sends one batch; settlement may or may not have seen it, whatever the answer.
    fn send(&mut self, settlement: &Backoffice, batch: &[u8]) -> Delivery;
    /// Whether a bundle fetch gets through.
    fn fetch_ok(&mut self) -> bool;
    /// Delivers everything still delayed (the network heals).
    fn flush(&mut self, settlement: &Backoffice);
    /// Counters.
    fn stats(&self) -> LinkStats;
}

/// Fault percentages.
#[derive(Clone, Copy, Debug, Default)]
pub struct Faults {
    /// Lost on the way in.
    pub drop: u32,
    /// Delivered twice.
    pub duplicate: u32,
    /// Delayed past the next request.
    pub reorder: u32,
    /// Answer lost after commit.
    pub lost_reply: u32,
}

/// The in-process link with seeded fault injection.
#[derive(Debug)]
pub struct FaultyLink {
    rng: ChaCha20Rng,
    faults: Faults,
    healed: bool,
    delayed: Vec<Vec<u8>>,
    stats: LinkStats,
}

impl FaultyLink {
    /// A link drawing its faults from `rng`.
    pub fn new(rng: ChaCha20Rng, faults: Faults) -> FaultyLink {
        FaultyLink {
            rng,
            faults,
            healed: false,
            delayed: Vec::new(),
            stats: LinkStats::default(),
        }
    }
    /// No more faults from now on (the liveness phase).
    pub fn heal(&mut self) {
        self.healed = true;
    }
    fn roll(&mut self, percent: u32) -> bool {
        !self.healed && percent > 0 && (self.rng.next_u32() % 100) < percent
    }
}

impl Link for FaultyLink {
    fn send(&mut self, settlement: &Backoffice, batch: &[u8]) -> Delivery {
        self.stats.sent += 1;
        let out = if self.roll(self.faults.drop) {
            self.stats.dropped += 1;
            Delivery::Timeout
        } else if self.roll(self.faults.reorder) {
            self.stats.reordered += 1;
            self.delayed.push(batch.to_vec());
            Delivery::Timeout
        } else {
            let answer = settlement.ingest(batch);
            if self.roll(self.faults.duplicate) {
                self.stats.duplicated += 1;
                let _ = settlement.ingest(batch);
            }
            if self.roll(self.faults.lost_reply) {
                self.stats.lost_replies += 1;
                Delivery::Timeout
            } else {
                Delivery::Answer(answer)
            }
        };
        // Whatever was delayed arrives after this request.
        if !self.delayed.is_empty()
            && !matches!(out, Delivery::Timeout if self.delayed.last().map(Vec::as_slice) == Some(batch))
        {
            self.flush(settlement);
        }
        out
    }
    fn fetch_ok(&mut self) -> bool {
        if self.roll(self.faults.drop) {
            self.stats.bundle_fetches_lost += 1;
            false
        } else {
            true
        }
    }
    fn flush(&mut self, settlement: &Backoffice) {
        for b in std::mem::take(&mut self.delayed) {
            let _ = settlement.ingest(&b);
        }
    }
    fn stats(&self) -> LinkStats {
        self.stats
    }
}
