//! The settlement service's integration tests: a real service on
//! loopback, real stores (sled, PostgreSQL), a real browser.
//!
//! One test binary for the crate (each file below a module): one link
//! and one executable instead of one per file, which kept `target` large.

mod common;
mod ui_common;

mod batch_crash;
mod e2e_day;
mod e2e_disputes;
mod e2e_edges;
mod e2e_fraud;
mod e2e_refusals;
mod e2e_restart;
mod incremental;
mod ledger_props;
mod passengers;
mod pg_instances;
mod pg_partitions;
mod powercut_ingest;
mod store_conformance;
mod ui_browser;
mod ui_pages;
mod ui_secrets;
