//! Injected time. The verification core never reads a clock: callers pass
//! `now_unix_s`. Binaries use [`SystemClock`]; tests and the simulator use
//! [`ManualClock`] so every run replays exactly.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of wall-clock time in whole unix seconds.
pub trait Clock: Send + Sync {
    /// The current time, unix seconds.
    fn now_unix_s(&self) -> u64;
}

/// The operating system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_unix_s(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            // A clock set before 1970 is a broken clock; 0 makes every
            // credential "not yet valid", which names the cause.
            .unwrap_or(0)
    }
}

/// A clock that only moves when told to. Cloning shares the same time.
#[derive(Debug, Default, Clone)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A clock reading `now_unix_s`.
    pub fn new(now_unix_s: u64) -> Self {
        ManualClock(Arc::new(AtomicU64::new(now_unix_s)))
    }
    /// Set the time.
    pub fn set(&self, now_unix_s: u64) {
        self.0.store(now_unix_s, Ordering::SeqCst);
    }
    /// Move the time forward.
    pub fn advance(&self, by_s: u64) {
        self.0.fetch_add(by_s, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_unix_s(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now_unix_s(&self) -> u64 {
        (**self).now_unix_s()
    }
}

impl<C: Clock + ?Sized> Clock for &C {
    fn now_unix_s(&self) -> u64 {
        (**self).now_unix_s()
    }
}
