//! Wire formats of the offline fare system and their verification.
//!
//! Everything that crosses between the phone, the reader and the back office
//! is defined here, byte by byte (see `SPEC.md` beside this crate):
//!
//! | object | module | signed by | domain tag |
//! |---|---|---|---|
//! | credential | [`credential`] | issuer key | `FARE-CRED\0v1` |
//! | ride code (QR payload) | [`code`] | device key | `FARE-CODE\0v1` |
//! | reader bundle | [`bundle`] | deployment root key | `FARE-BUNDLE\0v1` |
//! | ride record (hash-chained) | [`record`] | (chain hash) | `FARE-RIDE\0v1` |
//! | batch | [`batch`] | reader key | `FARE-BATCH\0v1` |
//! | acknowledgement-key certificate | [`ack`] | deployment root key | `FARE-ACKKEY\0v1` |
//! | batch acknowledgement | [`ack`] | acknowledgement key | `FARE-ACK\0v1` |
//!
//! The verification core ([`verify`]) does no I/O and reads no clock.
//! Every refusal is a [`RejectReason`] with a stable code.
#![forbid(unsafe_code)]

pub mod ack;
pub mod batch;
pub mod bundle;
pub mod clock;
pub mod code;
pub mod codec;
pub mod credential;
pub mod error;
pub mod keys;
pub mod reason;
pub mod record;
pub mod request;
pub mod subgroup;
pub mod testkit;
pub mod testvectors;
pub mod trust;
pub mod verify;
mod wire;

pub use ack::{Ack, AckKeyCert, AckKind};
pub use batch::{Batch, SignedBatch};
pub use bundle::{DenyUpdate, ReaderBundle};
pub use clock::{Clock, ManualClock, SystemClock};
pub use code::RideCode;
pub use credential::{Credential, CredentialBody, CredentialId, Profile};
pub use error::FormatError;
pub use reason::{RejectClass, RejectReason};
pub use record::RideRecord;
pub use request::RequestAuth;
pub use trust::{DenyList, IssuerKey, TrustList};
pub use verify::{verify_ride_code, CredentialCache, Policy, VerifiedRide};

pub use ed25519_dalek::{SigningKey, VerifyingKey};
