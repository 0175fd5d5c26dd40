//! The bus reader: an offline decision pipeline over ride codes and a
//! power-cut-safe, hash-chained ride log on sled 0.34.
//!
//! ```text
//! camera frame | payload → decode → parse → credential (issuer sig, cached)
//!   → device sig → time windows → deny list → replay cache
//!   → durable append (one sled insert + flush, the record in the ride
//!     ring + one fdatasync) → Decision
//! ```
//!
//! The reader answers *accept* only after `flush()` returned and the
//! record is on the device in the ride ring ([`hwm`]). See the
//! crate's README for the config reference, the CLI and the threat model.
#![forbid(unsafe_code)]

pub mod agent;
pub mod config;
pub mod decision;
pub mod error;
pub mod frames;
pub mod hwm;
pub mod onboard;
pub mod reader;
mod replay;
pub mod sync;

pub use config::{
    CameraConfig, ReaderConfig, ReaderIdentityConfig, StorageConfig, SyncConfig, TrustPolicy,
};
pub use decision::{Decision, Outcome, RideId, Stage, StageTimes};
pub use error::{BundleError, ValidatorError};
pub use reader::{read_public_key_file, Reader, ReaderState, RejectedScan, Status};
