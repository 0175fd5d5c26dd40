//! `fare-demo`: the main job. One scripted service day through every real
//! component; exits 0 only if settlement agrees with the hand-worked amounts.

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "fare-demo",
    version,
    about = "An end-to-end day: keys → wallets → readers → settlement"
)]
struct Cli {
    /// Where to keep the run's files (default: a new `demo-out/run-<unix time>`).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Seed for every key and id, so a run replays exactly.
    #[arg(long, default_value_t = 2017)]
    seed: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let out = cli.out.unwrap_or_else(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        PathBuf::from("demo-out").join(format!("run-{t}"))
    });
    fare_qr::install_quiet_panic_hook();
    match fare_demo::run(&out, cli.seed, true).await {
        Err(e) => {
            eprintln!("fare-demo: error: {e}");
            ExitCode::from(2)
        }
        Ok(summary) => {
            let (revenue, balances) = fare_demo::hand_worked();
            println!("== 8. check against the hand-worked day");
            let ok = summary.revenue_by_operator == revenue && summary.balances == balances;
            println!(
                "   revenue  expected {revenue:?}\n            settled  {:?}",
                summary.revenue_by_operator
            );
            println!(
                "   balances expected {balances:?}\n            settled  {:?}",
                summary.balances
            );
            println!("   files: {} (wallets, readers' sled logs, settlement db, alice-0730.png, daily-report.csv)", summary.out_dir.display());
            if ok {
                println!("OK: every ride accounted for, amounts match the hand-worked example");
                ExitCode::SUCCESS
            } else {
                eprintln!("MISMATCH: settlement disagrees with the hand-worked example");
                ExitCode::from(1)
            }
        }
    }
}
