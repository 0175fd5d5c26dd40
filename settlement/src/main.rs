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
    /// Operator commands against a running service (issuer keys, accounts,
    /// passenger enrolment, lost phones) over its HTTP API.
    Admin {
        /// The service's base URL, e.g. http://127.0.0.1:8080.
        #[arg(long)]
        server: String,
        /// Operator token (default: $FARE_OPERATOR_TOKEN, else --operator-token-file).
        #[arg(long)]
        operator_token: Option<String>,
        /// File holding the operator token (e.g. DATA/operator-token).
        #[arg(long)]
        operator_token_file: Option<PathBuf>,
        /// The command.
        #[command(subcommand)]
        cmd: fare_settlement::admin::AdminCmd,
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

fn load_config(p: &Option<PathBuf>) -> Result<Config, String> {
    let mut c = match p {
        Some(p) => Config::load(p).map_err(|e| e.to_string())?,
        None => Config::default(),
    };
    // The environment wins over the file (containers, systemd credentials).
    if let Ok(t) = std::env::var(fare_settlement::config::OPERATOR_TOKEN_ENV) {
        c.operator_token = t.trim().to_string();
        c.validate()
            .map_err(|e| format!("${}: {e}", fare_settlement::config::OPERATOR_TOKEN_ENV))?;
    }
    Ok(c)
}

/// The admin command's operator token: flag, environment, then file.
fn admin_token(flag: Option<String>, file: Option<PathBuf>) -> Result<String, String> {
    if let Some(t) = flag {
        return Ok(t);
    }
    if let Ok(t) = std::env::var(fare_settlement::config::OPERATOR_TOKEN_ENV) {
        return Ok(t.trim().to_string());
    }
    match file {
        Some(p) => std::fs::read_to_string(&p)
            .map(|t| t.trim().to_string())
            .map_err(|e| format!("--operator-token-file {}: {e}", p.display())),
        None => Err(format!(
            "no operator token: pass --operator-token, set ${} or pass --operator-token-file DATA/{}",
            fare_settlement::config::OPERATOR_TOKEN_ENV,
            fare_settlement::config::OPERATOR_TOKEN_FILE
        )),
    }
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
    match cli.cmd {
        Cmd::Serve {
            data,
            listen,
            config,
        } => {
            let config = load_config(&config)?;
            let addr = listen.unwrap_or_else(|| config.listen.clone());
            let app = Arc::new(open(&data, config)?);
            eprintln!(
                "fare-settlement: operator token {} (send it as `Authorization: Bearer <token>`; \
                 `fare-settlement admin --operator-token-file` reads it)",
                app.operator_token_source
            );
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
        Cmd::Admin {
            server,
            operator_token,
            operator_token_file,
            cmd,
        } => {
            let token = admin_token(operator_token, operator_token_file)?;
            let v = fare_settlement::admin::run(&server, &token, &cmd)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&v).expect("JSON serialises")
            );
            Ok(())
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
