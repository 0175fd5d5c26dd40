//! Shared helpers for the end-to-end tests: locating the workspace's
//! binaries and the shared corpus, and running commands with clear failures.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

/// Path of a workspace binary (`fare-keys`, `fare-wallet`, ...).
///
/// `cargo test --workspace` builds every binary before running any test
/// (each binary's package has integration tests), and they land next to the
/// `deps/` folder holding this test executable.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe
        .parent()
        .and_then(|p| p.parent())
        .expect("test executables live in target/<profile>/deps");
    let p = dir.join(name);
    assert!(
        p.exists(),
        "binary `{name}` not found at {}: run the tests with `cargo test --workspace`, which builds every binary first",
        p.display()
    );
    p
}

/// A command for a workspace binary.
pub fn cmd(name: &str) -> Command {
    Command::new(bin(name))
}

/// The shared corpus folder (`../shared/corpus` beside the repository).
pub fn shared_corpus() -> PathBuf {
    fare_credential::testkit::corpus_path("")
}

/// Runs a command and returns its output, failing with its stderr if it did not exit 0.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} exited {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Stdout of a successful command as a trimmed string.
pub fn stdout_ok(cmd: &mut Command) -> String {
    String::from_utf8(run_ok(cmd).stdout)
        .expect("utf-8 stdout")
        .trim()
        .to_string()
}

pub mod sync_fixture;
