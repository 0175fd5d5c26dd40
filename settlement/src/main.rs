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
    let url = cli
        .database_url
        .or_else(|| std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty()));
    let _ = DATABASE_URL.set(url);
    match cli.cmd {
        Cmd::Migrate { config } => migrate(&config),
        Cmd::Serve {
            data,
            listen,
            config,
        } => serve(&data, listen, &config),
        Cmd::Admin {
            server,
            operator_token,
            operator_token_file,
            cmd,
        } => {
            let token = admin_token(operator_token, operator_token_file)?;
            print_json(&fare_settlement::admin::run(&server, &token, &cmd)?);
            Ok(())
        }
        Cmd::Settle { data, config } => {
            let app = open(&data, load_config(&config)?)?;
            print_json(&app.settle().map_err(|e| e.to_string())?);
            Ok(())
        }
        Cmd::Purge { data, config } => {
            let app = open(&data, load_config(&config)?)?;
            print_json(&app.purge().map_err(|e| e.to_string())?);
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
            let out = report(&app, &kind, day.as_deref(), csv)?;
            println!("{}", out.trim_end());
            Ok(())
        }
    }
}

/// `migrate`: the PostgreSQL schema brought up to date; prints the report.
fn migrate(config: &Option<PathBuf>) -> Result<(), String> {
    let config = load_config(config)?;
    let url = config.database_url.as_deref().ok_or(
        "migrate: no database (give --database-url, DATABASE_URL or database_url in the config)",
    )?;
    let store = fare_settlement::store::PostgresStore::connect_with(url, config.database_pool())
        .map_err(|e| e.to_string())?;
    let report = store.migrate().map_err(|e| e.to_string())?;
    println!("{}", serde_json::to_string(&report).expect("serialises"));
    Ok(())
}

fn print_json<T: serde::Serialize>(v: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).expect("summary serialises")
    );
}

fn serve(data: &Path, listen: Option<String>, config: &Option<PathBuf>) -> Result<(), String> {
    let config = load_config(config)?;
    let addr = listen.unwrap_or_else(|| config.listen.clone());
    let app = Arc::new(open(data, config)?);
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

/// Rows as pretty JSON, or as CSV made by `to_csv`.
fn rows_as<T: serde::Serialize + ?Sized>(
    csv: bool,
    rows: &T,
    to_csv: impl FnOnce(&T) -> String,
) -> String {
    if csv {
        to_csv(rows)
    } else {
        serde_json::to_string_pretty(rows).expect("serialises")
    }
}

fn report(app: &App, kind: &str, day: Option<&str>, csv: bool) -> Result<String, String> {
    let e = |e: fare_settlement::StoreError| e.to_string();
    Ok(match kind {
        "daily" => rows_as(
            csv,
            &reports::daily(&app.db, day).map_err(e)?[..],
            reports::daily_csv,
        ),
        "exposure" => {
            let rows =
                reports::exposure(&app.db, &app.tariff, app.now(), app.config.skew_tolerance_s)
                    .map_err(e)?;
            rows_as(csv, &rows[..], reports::exposure_csv)
        }
        "fraud" => rows_as(
            csv,
            &app.db.fraud_events().map_err(e)?[..],
            reports::fraud_csv,
        ),
        "incidents" => rows_as(
            csv,
            &app.db.incidents().map_err(e)?[..],
            reports::incidents_csv,
        ),
        "ledger" => {
            serde_json::to_string_pretty(&reports::ledger(&app.db).map_err(e)?).expect("serialises")
        }
        k => {
            return Err(format!(
                "--kind {k}: expected daily, exposure, fraud, incidents or ledger"
            ))
        }
    })
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
