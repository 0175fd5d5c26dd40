//! Fleet simulator: a city's fare day end to end through the real wallet,
//! reader and settlement code, with faults and attackers, checked by an
//! oracle (issue #12).
//!
//! One process, simulated time, every random choice from a ChaCha20 RNG
//! per component seeded from the run seed (as TigerBeetle's VOPR drives
//! real replicas): phones ([`adapters::Phone`]) make real signed ride
//! codes, real readers ([`adapters::BusReader`]) decide on payloads and on
//! rendered camera frames and log to sled in a temp dir, uploads and bundle
//! fetches go through the validator's own sync code (`sync::contact`,
//! signed acknowledgements) over a link with injected faults ([`link`]) to
//! the real settlement library ([`adapters::Backoffice`]) on its own sled
//! store, served in process or (`--network`) by `fare-settlement serve` on
//! loopback HTTP. The
//! [`oracle`] then checks DESIGN.md §4's invariants and its own rating of
//! the day against settlement's ledger and reports.
//!
//! Every call into the wallet, validator and settlement crates is in
//! [`adapters`], so API changes on other branches are fixed in one place.
#![forbid(unsafe_code)]

pub mod adapters;
pub mod charts;
pub mod link;
pub mod oracle;
pub mod report;
pub mod scenario;
pub mod sim;
pub mod walkthrough;

pub use report::Report;
pub use scenario::Scenario;
pub use sim::RunOptions;

use std::path::Path;

/// What a run produced.
#[derive(Debug)]
pub struct Outcome {
    /// The report.
    pub report: Report,
    /// `report.json`'s text.
    pub json: String,
    /// Every invariant held.
    pub ok: bool,
    /// Chart files written (in `out`).
    pub charts: Vec<String>,
}

/// The commit the simulator runs from (`git rev-parse HEAD` beside the
/// crate), or `unknown` when git or the repository is absent.
pub fn commit() -> String {
    std::process::Command::new("git")
        .args(["-C", env!("CARGO_MANIFEST_DIR"), "rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// The command that replays a run (`extra`: further arguments, e.g. `--scale 0.1`).
pub fn replay_command(scenario_arg: &str, seed: u64, network: bool, extra: &str) -> String {
    let net = if network { " --network" } else { "" };
    let extra = if extra.is_empty() {
        String::new()
    } else {
        format!(" {extra}")
    };
    format!(
        "cargo run --release -p fare-simulator -- run --scenario {scenario_arg} --seed {seed}{net}{extra}"
    )
}

/// Runs a scenario; writes `report.json` and the charts into `out` when given.
pub fn run(
    scenario: Scenario,
    scenario_arg: &str,
    opts: &RunOptions,
    out: Option<&Path>,
) -> Result<Outcome, String> {
    let start = std::time::Instant::now();
    let mut world = sim::World::build(scenario, opts)?;
    world.run(opts)?;
    let t = std::time::Instant::now();
    let verdict = oracle::check(&world)?;
    world
        .phase_wall_s
        .insert("oracle".into(), t.elapsed().as_secs_f64());
    let commit = commit();
    let replay = replay_command(scenario_arg, opts.seed, opts.network, &opts.replay_args);
    let mut charts = Vec::new();
    if let Some(dir) = out {
        std::fs::create_dir_all(dir).map_err(|e| format!("--out {}: {e}", dir.display()))?;
        let t = std::time::Instant::now();
        charts = charts::write_all(dir, &world)?;
        world
            .phase_wall_s
            .insert("charts".into(), t.elapsed().as_secs_f64());
    }
    let report = report::build(
        &world,
        &verdict,
        &commit,
        &replay,
        start.elapsed().as_secs_f64(),
    );
    let json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    if let Some(dir) = out {
        std::fs::write(dir.join("report.json"), &json).map_err(|e| e.to_string())?;
    }
    let ok = report.invariants.values().all(|v| *v);
    Ok(Outcome {
        report,
        json,
        ok,
        charts,
    })
}
