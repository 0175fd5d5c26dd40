//! The background sync agent of `fare-validator run --server URL`.
//!
//! One task per reader, one batch in flight: a contact ([`crate::sync::contact`])
//! uploads until everything is acknowledged and fetches the bundle; the
//! batch an attempt could not get acknowledged (connect error, timeout, 5xx,
//! answer lost after settlement committed, refused acknowledgement) is kept
//! and re-sent byte for byte on the next attempt. Failed contacts are
//! retried after a capped exponential delay (backon's
//! `ExponentialBuilder`) plus jitter drawn from a seeded ChaCha8 RNG, so a
//! fleet coming back online spreads out and a test replays exactly. After a
//! power cut the agent starts again from the acknowledged sequence persisted
//! in the log (settlement de-duplicates what it already holds).
//!
//! The agent never delays a decision beyond the short moments it holds the
//! reader: building one batch from the log, applying one answer (one
//! flush), installing one bundle. Network I/O runs without the lock.

use crate::reader::Reader;
use crate::sync::{contact, InFlight, Link, ReaderAccess, SyncReport};
use backon::BackoffBuilder;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;
use std::time::Duration;

/// Retry schedule: capped exponential delays with seeded jitter.
#[derive(Debug)]
pub struct Backoff {
    builder: backon::ExponentialBuilder,
    current: backon::ExponentialBackoff,
    max: Duration,
    rng: ChaCha8Rng,
}

impl Backoff {
    /// Delays from `min` doubling up to `max`, each plus a jitter uniform in
    /// `[0, delay)` from ChaCha8 seeded with `seed`.
    pub fn new(min: Duration, max: Duration, seed: u64) -> Backoff {
        let builder = backon::ExponentialBuilder::default()
            .with_min_delay(min)
            .with_max_delay(max)
            .with_factor(2.0)
            .without_max_times();
        Backoff {
            builder,
            current: builder.build(),
            max,
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// The next delay (never above twice the cap).
    pub fn next_delay(&mut self) -> Duration {
        let base = self.current.next().unwrap_or(self.max);
        let nanos = base.as_nanos().min(u64::MAX as u128) as u64;
        let jitter = if nanos == 0 {
            0
        } else {
            self.rng.next_u64() % nanos
        };
        base + Duration::from_nanos(jitter)
    }

    /// Back to the first delay (after a successful contact).
    pub fn reset(&mut self) {
        self.current = self.builder.build();
    }
}

/// The jitter seed of a reader: `sync.jitter_seed`, or derived from the reader id.
pub fn jitter_seed(reader: &Reader) -> u64 {
    match reader.config().sync.jitter_seed {
        0 => 0x5eed_0000_0000_0000 ^ u64::from(reader.reader_id()),
        s => s,
    }
}

/// What the agent reports after each contact (for `run`'s log and tests).
#[derive(Clone, Debug)]
pub enum AgentEvent {
    /// A contact that uploaded everything and fetched the bundle.
    Synced(SyncReport),
    /// A contact that failed; the next is after `retry_in`.
    Failed {
        /// What the contact did before failing.
        report: SyncReport,
        /// Stable code of the error.
        code: &'static str,
        /// The error.
        message: String,
        /// Delay before the next attempt.
        retry_in: Duration,
    },
}

/// Runs contacts until `stop` resolves: after a success, the next contact
/// is `sync.interval_ms` later; after a failure, per [`Backoff`]. `now`
/// is the reader clock (unix s). `events` receives each contact's result.
// Longer than a screen: the retry loop with its backoff state; the contact itself is `sync::contact`.
pub async fn run<A, L>(
    reader: Arc<A>,
    link: L,
    now: Arc<dyn Fn() -> u64 + Send + Sync>,
    events: Option<tokio::sync::mpsc::UnboundedSender<AgentEvent>>,
    stop: tokio::sync::watch::Receiver<bool>,
) where
    A: ReaderAccess + 'static,
    L: Link,
{
    let (cfg, seed) = reader.with(|r| (r.config().sync, jitter_seed(r)));
    let mut backoff = Backoff::new(
        Duration::from_millis(cfg.min_backoff_ms),
        Duration::from_millis(cfg.max_backoff_ms),
        seed,
    );
    let interval = Duration::from_millis(cfg.interval_ms);
    let mut in_flight = InFlight::default();
    let mut stop = stop;
    loop {
        if *stop.borrow() {
            return;
        }
        let res = contact(&*reader, &link, &mut in_flight, &*now).await;
        let wait = match res {
            Ok(report) => {
                backoff.reset();
                let t = now();
                if let Err(e) = reader.with(|r| r.compact(t)) {
                    tracing::warn!(error = %e, "compaction after sync failed");
                }
                if let Some(tx) = &events {
                    let _ = tx.send(AgentEvent::Synced(report));
                }
                interval
            }
            Err(failure) => {
                let (report, e) = (failure.report, failure.error);
                let retry_in = backoff.next_delay();
                tracing::warn!(error = %e, code = e.code(), retry_in_ms = retry_in.as_millis() as u64, "sync failed; retrying");
                if let Some(tx) = &events {
                    let _ = tx.send(AgentEvent::Failed {
                        report,
                        code: e.code(),
                        message: e.to_string(),
                        retry_in,
                    });
                }
                retry_in
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
    }
}
