//! `fare-settlement`: the back office binary (thin over the library).

use clap::{Parser, Subcommand};
use fare_credential::SystemClock;
use fare_settlement::{reports, App, Config};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

// Settlement allocates and frees millions of small values per run across
// threads; with glibc's malloc that was about a quarter of the CPU of a
// 1M-ride run (mimalloc: 22 → 19 CPU-s, see README "Numbers").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "fare-settlement",
    version,
    about = "Fare system back office: ingest, re-verify, rate, charge, deny-list, report"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// PostgreSQL connection string (postgres://…): settlement on
    /// PostgreSQL instead of sled in DATA/db. Else `DATABASE_URL`, else the
    /// config's `database_url`.
    #[arg(long, global = true)]
    database_url: Option<String>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the HTTP service until Ctrl-C / SIGTERM.
    Serve {
        /// Data directory (sled database; keys in DATA/keys unless configured).
        #[arg(long)]
        data: PathBuf,
        /// Listen address (default from config: 127.0.0.1:8080).
        #[arg(long)]
        listen: Option<String>,
        /// TOML configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Settle everything ingested so far (the service must not be running on DATA).
    Settle {
        /// Data directory.
        #[arg(long)]
        data: PathBuf,
        /// TOML configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Delete ride history older than `ride_retention_days` (privacy).
    Purge {
        /// Data directory.
        #[arg(long)]
        data: PathBuf,
        /// TOML configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Apply the missing PostgreSQL migrations and exit (`serve` also
    /// applies them at start).
    Migrate {
        /// TOML configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Print a report.
    Report {
        /// Data directory.
        #[arg(long)]
        data: PathBuf,
        /// Service day (YYYY-MM-DD) for the daily report.
        #[arg(long)]
        day: Option<String>,
        /// json or csv.
        #[arg(long, default_value = "json")]
        format: String,
        /// daily, exposure, fraud, incidents, ledger.
        #[arg(long, default_value = "daily")]
        kind: String,
        /// TOML configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

/// The `--database-url` flag, else `DATABASE_URL`, else the config's.
static DATABASE_URL: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();

fn load_config(p: &Option<PathBuf>) -> Result<Config, String> {
    let mut c = match p {
        Some(p) => Config::load(p).map_err(|e| e.to_string())?,
        None => Config::default(),
    };
    if let Some(url) = DATABASE_URL.get().cloned().flatten() {
        c.database_url = Some(url);
        c.validate().map_err(|e| e.to_string())?;
    }
    Ok(c)
}

fn open(data: &Path, config: Config) -> Result<App, String> {
    App::open(data, config, Arc::new(SystemClock), None).map_err(|e| e.to_string())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down: finishing in-flight requests");
}

fn run(cli: Cli) -> Result<(), String> {
    let url = cli
        .database_url
        .or_else(|| std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty()));
    let _ = DATABASE_URL.set(url);
    match cli.cmd {
        Cmd::Migrate { config } => {
            let config = load_config(&config)?;
            let url = config.database_url.as_deref().ok_or(
                "migrate: no database (give --database-url, DATABASE_URL or database_url in the config)",
            )?;
            let store =
                fare_settlement::store::PostgresStore::connect(url, config.database_pool_size)
                    .map_err(|e| e.to_string())?;
            let report = store.migrate().map_err(|e| e.to_string())?;
            println!("{}", serde_json::to_string(&report).expect("serialises"));
            Ok(())
        }
        Cmd::Serve {
            data,
            listen,
            config,
        } => {
            let config = load_config(&config)?;
            let addr = listen.unwrap_or_else(|| config.listen.clone());
            let app = Arc::new(open(&data, config)?);
            let rt = tokio::runtime::Runtime::new().map_err(|e| format!("tokio runtime: {e}"))?;
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind(&addr)
                    .await
                    .map_err(|e| format!("listen on {addr}: {e}"))?;
                eprintln!(
                    "fare-settlement listening on {}",
                    listener.local_addr().map_err(|e| e.to_string())?
                );
                fare_settlement::serve(listener, app, shutdown_signal())
                    .await
                    .map_err(|e| format!("serve: {e}"))
            })
        }
        Cmd::Settle { data, config } => {
            let app = open(&data, load_config(&config)?)?;
            let s = app.settle().map_err(|e| e.to_string())?;
            println!(
                "{}",
                serde_json::to_string_pretty(&s).expect("summary serialises")
            );
            Ok(())
        }
        Cmd::Purge { data, config } => {
            let app = open(&data, load_config(&config)?)?;
            let s = app.purge().map_err(|e| e.to_string())?;
            println!(
                "{}",
                serde_json::to_string_pretty(&s).expect("summary serialises")
            );
            Ok(())
        }
        Cmd::Report {
            data,
            day,
            format,
            kind,
            config,
        } => {
            let app = open(&data, load_config(&config)?)?;
            let csv = match format.as_str() {
                "json" => false,
                "csv" => true,
                f => return Err(format!("--format {f}: expected json or csv")),
            };
            let e = |e: fare_settlement::StoreError| e.to_string();
            let out = match kind.as_str() {
                "daily" => {
                    let lines = reports::daily(&app.db, day.as_deref()).map_err(e)?;
                    if csv {
                        reports::daily_csv(&lines)
                    } else {
                        serde_json::to_string_pretty(&lines).expect("serialises")
                    }
                }
                "exposure" => {
                    let rows = reports::exposure(
                        &app.db,
                        &app.tariff,
                        app.now(),
                        app.config.skew_tolerance_s,
                    )
                    .map_err(e)?;
                    if csv {
                        reports::exposure_csv(&rows)
                    } else {
                        serde_json::to_string_pretty(&rows).expect("serialises")
                    }
                }
                "fraud" => {
                    let rows = app.db.fraud_events().map_err(e)?;
                    if csv {
                        reports::fraud_csv(&rows)
                    } else {
                        serde_json::to_string_pretty(&rows).expect("serialises")
                    }
                }
                "incidents" => {
                    let rows = app.db.incidents().map_err(e)?;
                    if csv {
                        reports::incidents_csv(&rows)
                    } else {
                        serde_json::to_string_pretty(&rows).expect("serialises")
                    }
                }
                "ledger" => serde_json::to_string_pretty(&reports::ledger(&app.db).map_err(e)?)
                    .expect("serialises"),
                k => {
                    return Err(format!(
                        "--kind {k}: expected daily, exposure, fraud, incidents or ledger"
                    ))
                }
            };
            println!("{}", out.trim_end());
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,tower_http=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fare-settlement: {e}");
            ExitCode::from(2)
        }
    }
}
