//! End-to-end tests: real readers, phones and a real settlement service
//! on loopback, with network faults between them.
//!
//! One test binary for the crate (each file below a module): one link
//! and one executable instead of one per file, which kept `target` large.

mod svc;

mod cli_flow;
mod passenger_online;
mod settlement_validator;
mod sync_network;
mod validator_sync;
