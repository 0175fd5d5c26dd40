//! The reader's integration tests: real sled logs and ride rings, real
//! signatures, the CLI, crash and power-cut tests.
//!
//! One test binary for the crate (each file below a module): one link
//! and one executable instead of one per file, which kept `target` large.
//! `../bundle_writes.rs` is its own binary: it counts the process's writes.

mod common;

mod bundle_lines;
mod cli_decisions;
mod crash;
mod log_model;
mod log_tail;
mod powercut;
mod ring;
