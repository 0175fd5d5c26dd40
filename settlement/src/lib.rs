//! The fare system's back office: turns uploaded ride logs into money,
//! correctly and exactly once, and feeds the deny list back to the fleet.
//!
//! * [`ingest`]: reader-signed, hash-chained batches → durable rides;
//!   [`acks`]: the signed acknowledgement of each.
//! * [`reverify`]: every ride code verified again (batched, all cores).
//! * [`core`]: pure settlement (dedup, rating, postings, credit limits).
//! * [`settle`]: resumable, idempotent runs over the [`store`].
//! * [`bundle`]: versioned deny list and root-signed reader bundles.
//! * [`ops`], [`reports`], [`http`]: accounts, readers, reports, the service.
//! * [`passengers`]: passenger tokens, device keys used once, lost phones;
//!   [`issuers`]: issuer key rotation and retirement on a live service;
//!   [`admin`]: the operator CLI over the HTTP API.
//! * [`ui`]: the operator's web dashboard under `/ui`.
//!
//! See `README.md` for the HTTP API, policies and measured numbers.
#![forbid(unsafe_code)]

pub mod acks;
pub mod admin;
pub mod app;
pub mod bundle;
pub mod config;
pub mod core;
pub mod error;
pub mod http;
pub mod ingest;
pub mod intake;
pub mod issuers;
pub mod model;
pub mod ops;
pub mod passengers;
pub mod readers;
pub mod reports;
pub mod reverify;
pub mod server;
pub mod settle;
pub mod store;
pub mod ui;

pub use app::App;
pub use config::Config;
pub use error::{ApiError, ErrorCode, IngestError, OpsError, StoreError};
pub use http::{router, serve};
