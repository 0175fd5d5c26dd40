//! Benchmarks: credential (being written).
fn main() {}
