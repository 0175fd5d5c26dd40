//! The simulator's tests, in one binary (each test file linked on its own
//! cost about 78 MB of `target` apiece): the `demo` preset end to end, the
//! command line, the scripted walkthrough, and the attacks and oracle
//! corners that once failed on particular seeds.

mod cli;
mod compromised_reader;
mod demo;
mod over_limit;
mod walkthrough;
