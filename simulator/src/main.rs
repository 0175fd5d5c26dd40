//! `fare-simulator run --scenario demo|wuhan|FILE --seed N [--out DIR] [--network]`
//! and `fare-simulator walkthrough [--out DIR] [--seed N]`.
#![forbid(unsafe_code)]

use clap::{Args, Parser, Subcommand};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

/// jemalloc instead of glibc's malloc: the city's day builds and frees a
/// heap of several GB from both cores; with jemalloc it runs about 15 %
/// faster with no environment to set (glibc needed `MALLOC_ARENA_MAX=2` to
/// stay under 8 GiB). Its options (one arena; freed pages kept 20 s for
/// reuse, those of allocations of 1 MiB or more returned at once) are
/// built in from `.cargo/config.toml`; simulator/README.md, "Scale", has
/// the measurements.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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

/// Exit status of a run ended by a signal (the shell's 128 + number).
const EXIT_SIGINT: i32 = 130;
/// As [`EXIT_SIGINT`], for SIGTERM.
#[cfg(unix)]
const EXIT_SIGTERM: i32 = 143;
/// As [`EXIT_SIGINT`], for SIGHUP.
#[cfg(unix)]
const EXIT_SIGHUP: i32 = 129;
/// Attempts at removing the run's data on a signal (threads still writing
/// into it can make one attempt fail with "directory not empty").
const CLEANUP_ATTEMPTS: u32 = 20;

/// A new directory for the run's data inside `base` (default
/// `fare_simulator::sim::default_work_base`), removed when it drops or
/// when the process gets SIGINT, SIGTERM or SIGHUP; first, what killed
/// runs left in `base` is removed.
fn scratch_dir(
    base: Option<&std::path::Path>,
) -> Result<(tempfile::TempDir, std::fs::File), String> {
    use fare_simulator::sim::{mark_run_dir, remove_dead_runs, RUN_DIR_PREFIX};
    let base = base
        .map(PathBuf::from)
        .unwrap_or_else(fare_simulator::sim::default_work_base);
    for (dir, bytes) in remove_dead_runs(&base) {
        eprintln!(
            "fare-simulator: removed {} ({:.1} GB), left by a run that was killed",
            dir.display(),
            bytes as f64 / 1e9
        );
    }
    let dir = tempfile::Builder::new()
        .prefix(RUN_DIR_PREFIX)
        .tempdir_in(&base)
        .map_err(|e| format!("--work-dir {}: {e}", base.display()))?;
    remove_on_signal(dir.path().to_path_buf())
        .map_err(|e| format!("listening for interrupts: {e}"))?;
    // After the signal handler: a run that leaves its directory on an
    // interrupt is never marked.
    let owner =
        mark_run_dir(dir.path()).map_err(|e| format!("--work-dir {}: {e}", base.display()))?;
    Ok((dir, owner))
}

/// A thread that, at the first SIGINT, SIGTERM or SIGHUP, removes `dir`
/// and exits with 128 + the signal's number.
#[cfg(unix)]
fn remove_on_signal(dir: PathBuf) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    // Registered here, before the run writes anything.
    let (mut int, mut term, mut hup) = rt.block_on(async {
        Ok::<_, std::io::Error>((
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
            signal(SignalKind::hangup())?,
        ))
    })?;
    std::thread::Builder::new()
        .name("fare-sim-signals".into())
        .spawn(move || {
            let code = rt.block_on(async {
                tokio::select! {
                    _ = int.recv() => EXIT_SIGINT,
                    _ = term.recv() => EXIT_SIGTERM,
                    _ = hup.recv() => EXIT_SIGHUP,
                }
            });
            remove_and_exit(&dir, code)
        })?;
    Ok(())
}

/// Elsewhere: Ctrl-C only.
#[cfg(not(unix))]
fn remove_on_signal(dir: PathBuf) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    std::thread::Builder::new()
        .name("fare-sim-signals".into())
        .spawn(move || {
            if rt.block_on(tokio::signal::ctrl_c()).is_ok() {
                remove_and_exit(&dir, EXIT_SIGINT)
            }
        })?;
    Ok(())
}

/// Set by the signal thread before it removes the run's data.
static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Once a signal has arrived, its thread owns the exit: it removes the
/// run's data and ends the process with 128 + the signal's number. The
/// run itself may meanwhile end, most likely with an error because its
/// files vanished; its outcome must neither be printed nor end the process
/// first (with 1), so this thread waits for that exit.
fn yield_to_interrupt() {
    if INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst) {
        loop {
            std::thread::park();
        }
    }
}

/// Removes the run's data and ends the process with `code`.
fn remove_and_exit(dir: &std::path::Path, code: i32) -> ! {
    INTERRUPTED.store(true, std::sync::atomic::Ordering::SeqCst);
    eprintln!(
        "fare-simulator: interrupted; removing the run's data {}",
        dir.display()
    );
    for _ in 0..CLEANUP_ATTEMPTS {
        match std::fs::remove_dir_all(dir) {
            Ok(()) => break,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
        }
    }
    std::process::exit(code)
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
    // The run's data lives in a directory of its own, removed when the run
    // ends, or is interrupted (a signal ends the process without dropping
    // anything: left behind in /dev/shm, a city's day would hold its
    // memory until someone deletes it). `--keep-data` keeps it.
    let scratch = match &keep_data {
        Some(_) => None,
        // The directory and its owner lock, both held to the end.
        None => match scratch_dir(work_dir.as_deref()) {
            Ok(dir_and_owner) => Some(dir_and_owner),
            Err(e) => {
                eprintln!("fare-simulator: {e}");
                return ExitCode::from(2);
            }
        },
    };
    let opts = fare_simulator::RunOptions {
        seed,
        work_dir: scratch.as_ref().map(|(d, _owner)| d.path().to_path_buf()),
        progress: std::io::stderr().is_terminal(),
        log_phases: true,
        network,
        replay_args: replay_args.join(" "),
        keep_data,
    };
    let replay = fare_simulator::replay_command(&scenario, seed, network, &opts.replay_args);
    let day = sc.day.clone();
    let outcome = fare_simulator::run(sc, &scenario, &opts, out.as_deref());
    yield_to_interrupt();
    match outcome {
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
