//! `fare-simulator run --scenario demo|wuhan|FILE --seed N [--out DIR]`.
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
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
    Run {
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
        /// Drive the readers and settlement over the network (not yet available).
        #[arg(long)]
        network: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let Cmd::Run {
        scenario,
        seed,
        out,
        work_dir,
        real_buses,
        network,
    } = cli.cmd;
    if network {
        eprintln!(
            "fare-simulator: --network is not yet available: needs the sync agent (issue #9)"
        );
        return ExitCode::from(2);
    }
    let mut sc = match fare_simulator::Scenario::load(&scenario) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("fare-simulator: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(n) = real_buses {
        sc.execution.real_buses = n;
    }
    let opts = fare_simulator::RunOptions {
        seed,
        work_dir,
        progress: std::io::stderr().is_terminal(),
        log_phases: true,
    };
    let replay = fare_simulator::replay_command(&scenario, seed);
    match fare_simulator::run(sc, &scenario, &opts, out.as_deref()) {
        Ok(o) => {
            print!("{}", fare_simulator::report::summary(&o.report));
            if let Some(d) = &out {
                println!("report: {}", d.join("report.json").display());
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
