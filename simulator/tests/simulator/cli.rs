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

#[test]
fn an_interrupted_run_removes_its_data() {
    for (signal, code) in [("-INT", 130), ("-TERM", 143)] {
        interrupted_run_removes_its_data(signal, code);
    }
}

/// A demo run, sent `signal` once it has written its first files, exits
/// with `code` and leaves nothing in its `--work-dir`.
fn interrupted_run_removes_its_data(signal: &str, code: i32) {
    let tmp = tempfile::tempdir().unwrap();
    let mut child = sim()
        .args(["run", "--scenario", "demo", "--seed", "1", "--work-dir"])
        .arg(tmp.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the run has written into its directory more than its
    // owner file (settlement's database under
    // `fare-sim-run-*/fare-sim-*/settlement`).
    let started = std::time::Instant::now();
    while walk_files(tmp.path()) <= 1 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(120),
            "the run wrote nothing in 2 minutes"
        );
        assert!(child.try_wait().unwrap().is_none(), "the run ended early");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let kill = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{signal}: {stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert!(left.is_empty(), "{signal}: left behind: {left:?}");
}

/// What a killed run left in the work dir (its owner file no longer
/// locked: no handler runs on SIGKILL or the out-of-memory killer, but the
/// kernel releases the lock) is removed by the next run, which says so; a
/// live run's directory (its owner file locked) and one without an owner
/// file stay.
#[test]
fn a_killed_runs_data_is_removed_by_the_next_run() {
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = |name: &str, owned: bool| {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(dir.join("fare-sim-1/settlement")).unwrap();
        std::fs::write(dir.join("fare-sim-1/settlement/db"), [0u8; 4096]).unwrap();
        if owned {
            std::fs::write(dir.join("owner.lock"), "12345").unwrap();
        }
        dir
    };
    let killed = run_dir("fare-sim-run-killed", true);
    let live = run_dir("fare-sim-run-live", true);
    let held = std::fs::File::open(live.join("owner.lock")).unwrap();
    held.lock().unwrap();
    let unmarked = run_dir("fare-sim-run-unmarked", false);
    let out = sim()
        .args(["run", "--scenario", "demo", "--seed", "1", "--work-dir"])
        .arg(tmp.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!killed.exists(), "{stderr}");
    assert!(
        stderr.contains("removed") && stderr.contains("fare-sim-run-killed"),
        "{stderr}"
    );
    assert!(live.exists() && unmarked.exists());
    // The run removed its own directory at the end.
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 2);
    drop(held);
}

/// Files under `dir`, at any depth.
fn walk_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.file_type() {
                    Ok(t) if t.is_dir() => walk_files(&e.path()),
                    Ok(_) => 1,
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}
