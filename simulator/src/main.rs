//! `fare-simulator run --scenario demo|wuhan|FILE --seed N [--out DIR] [--network]`
//! and `fare-simulator walkthrough [--out DIR] [--seed N]`.
#![forbid(unsafe_code)]

use clap::{Args, Parser, Subcommand};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "fare-simulator",
    about = "A city's fare day end to end, with faults and attackers, checked by an oracle"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Runs one scenario with one seed.
    Run(RunArgs),
    /// The scripted, hand-worked day (four riders, three readers, settlement
    /// on loopback HTTP); exits 0 only if settlement agrees with the hand-worked amounts.
    Walkthrough {
        /// Where to keep the run's files (default: a new `demo-out/run-<unix time>`).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Seed for every key and id, so a run replays exactly.
        #[arg(long, default_value_t = 2017)]
        seed: u64,
    },
}

/// `fare-simulator run`'s options.
#[derive(Args)]
struct RunArgs {
    /// `demo`, `wuhan` or a scenario TOML file.
    #[arg(long)]
    scenario: String,
    /// Run seed (same seed, same report).
    #[arg(long)]
    seed: u64,
    /// Where report.json and the charts go.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Where readers' and settlement's data go (default /dev/shm or the temp dir).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Buses run on real readers (overrides the scenario; 0 = all).
    #[arg(long)]
    real_buses: Option<u32>,
    /// Most readers with their log open at once (overrides the
    /// scenario's `execution.max_open_readers`; the others are closed
    /// and reopened when next used).
    #[arg(long)]
    max_open_readers: Option<u32>,
    /// Runs the city scaled by this factor in (0, 1]: routes, rides and
    /// accounts shrink in proportion (for measuring at reduced scale).
    #[arg(long)]
    scale: Option<f64>,
    /// Readers talk to a real `fare-settlement` HTTP server on loopback
    /// (the validator's sync code over reqwest) instead of in process.
    #[arg(long)]
    network: bool,
    /// Keep the run's data (readers' and settlement's) in this new or
    /// empty directory, and say how to open the dashboard on it.
    #[arg(long)]
    keep_data: Option<PathBuf>,
}

fn walkthrough(out: Option<PathBuf>, seed: u64) -> ExitCode {
    let out = out.unwrap_or_else(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        PathBuf::from("demo-out").join(format!("run-{t}"))
    });
    fare_qr::install_quiet_panic_hook();
    match fare_simulator::walkthrough::run_and_check(&out, seed, true) {
        Err(e) => {
            eprintln!("fare-simulator walkthrough: error: {e}");
            ExitCode::from(2)
        }
        Ok(true) => {
            println!("OK: every ride accounted for, amounts match the hand-worked example");
            ExitCode::SUCCESS
        }
        Ok(false) => {
            eprintln!("MISMATCH: settlement disagrees with the hand-worked example");
            ExitCode::from(1)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let RunArgs {
        scenario,
        seed,
        out,
        work_dir,
        real_buses,
        max_open_readers: max_open,
        scale,
        network,
        keep_data,
    } = match cli.cmd {
        Cmd::Walkthrough { out, seed } => return walkthrough(out, seed),
        Cmd::Run(args) => args,
    };
    let mut sc = match fare_simulator::Scenario::load(&scenario) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("fare-simulator: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(f) = scale {
        sc = match sc.scaled(f) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("fare-simulator: {e}");
                return ExitCode::from(2);
            }
        };
    }
    if let Some(n) = real_buses {
        sc.execution.real_buses = n;
    }
    if let Some(n) = max_open {
        sc.execution.max_open_readers = n;
        if let Err(e) = sc.validate() {
            eprintln!("fare-simulator: --max-open-readers: {e}");
            return ExitCode::from(2);
        }
    }
    // A non-empty or unusable --keep-data directory is a usage error (2),
    // found before the day runs rather than as a failed run (1).
    if let Some(dir) = &keep_data {
        if let Err(e) = fare_simulator::sim::check_keep_data(dir) {
            eprintln!("fare-simulator: {e}");
            return ExitCode::from(2);
        }
    }
    let mut replay_args = Vec::new();
    if let Some(f) = scale {
        replay_args.push(format!("--scale {f}"));
    }
    if let Some(n) = real_buses {
        replay_args.push(format!("--real-buses {n}"));
    }
    if let Some(n) = max_open {
        replay_args.push(format!("--max-open-readers {n}"));
    }
    let opts = fare_simulator::RunOptions {
        seed,
        work_dir,
        progress: std::io::stderr().is_terminal(),
        log_phases: true,
        network,
        replay_args: replay_args.join(" "),
        keep_data,
    };
    let replay = fare_simulator::replay_command(&scenario, seed, network, &opts.replay_args);
    let day = sc.day.clone();
    match fare_simulator::run(sc, &scenario, &opts, out.as_deref()) {
        Ok(o) => {
            print!("{}", fare_simulator::report::summary(&o.report));
            if let Some(d) = &out {
                println!("report: {}", d.join("report.json").display());
            }
            if let Some(dir) = &opts.keep_data {
                match fare_simulator::sim::keep_note(dir, &day) {
                    Ok(note) => print!("{note}"),
                    Err(e) => eprintln!("fare-simulator: {e}"),
                }
            }
            if o.ok {
                ExitCode::SUCCESS
            } else {
                eprintln!(
                    "FAILED: seed {seed}, commit {}; replay with: {replay}",
                    fare_simulator::commit()
                );
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!(
                "fare-simulator: {e}\nseed {seed}, commit {}; replay with: {replay}",
                fare_simulator::commit()
            );
            ExitCode::from(1)
        }
    }
}
