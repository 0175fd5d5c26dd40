//! `fare-simulator`'s exit status (README: 0 every invariant held, 1 one
//! failed, 2 a usage error), through the real binary.

use std::process::Command;

fn sim() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fare-simulator"))
}

#[test]
fn a_non_empty_keep_data_directory_is_a_usage_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("earlier-run");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("settlement.toml"), "# an earlier run's\n").unwrap();
    let out = sim()
        .args(["run", "--scenario", "demo", "--seed", "1", "--keep-data"])
        .arg(&dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--keep-data") && stderr.contains("not empty"),
        "{stderr}"
    );
    // Refused before the day: nothing written into it, no report.
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("invariants"));
}

#[test]
fn a_keep_data_path_that_is_a_file_is_a_usage_error() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    let out = sim()
        .args(["run", "--scenario", "demo", "--seed", "1", "--keep-data"])
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--keep-data"), "{stderr}");
}

#[test]
fn an_unknown_scenario_is_a_usage_error() {
    let out = sim()
        .args(["run", "--scenario", "no-such-city", "--seed", "1"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
