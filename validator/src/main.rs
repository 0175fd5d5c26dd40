//! `fare-validator`: the bus reader's command line (DESIGN.md §8).
//!
//! Exit status: 0 accept / success, 1 reject (or `decode`: no code found),
//! 2 usage or I/O error.

use clap::{Args, Parser, Subcommand};
use fare_credential::code::MAX_RIDE_CODE_BYTES;
use fare_credential::{Clock, SystemClock};
use fare_validator::{
    read_public_key_file, Reader, ReaderConfig, ReaderIdentityConfig, ValidatorError,
};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "fare-validator",
    version,
    about = "Bus reader: offline ride-code decisions and a durable ride log"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create a reader: key (0600), config with defaults, log, first bundle.
    Provision(ProvisionArgs),
    /// Decide on one code: a QR image or a hex payload.
    Scan {
        /// Reader directory.
        #[arg(long)]
        dir: PathBuf,
        /// Camera frame / QR image file.
        #[arg(long, conflicts_with = "payload", required_unless_present = "payload")]
        image: Option<PathBuf>,
        /// Ride code bytes as hex.
        #[arg(long)]
        payload: Option<String>,
        /// Pin the clock (unix seconds).
        #[arg(long)]
        at: Option<u64>,
        /// Print the decision as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Decode a QR image to its bytes (no verification).
    Decode {
        /// Image file.
        #[arg(long)]
        image: PathBuf,
        /// Write the bytes exactly to stdout (default: hex line).
        #[arg(long)]
        raw: bool,
        /// Time the decoder may spend on the image, milliseconds (a photo,
        /// not a live frame: more than a reader's per-frame budget).
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=60_000))]
        budget_ms: u64,
    },
    /// Decide on a stream: image files in a directory (sorted by name), or
    /// hex payloads on stdin (`-`), one JSON decision per line.
    Run {
        /// Reader directory.
        #[arg(long)]
        dir: PathBuf,
        /// Directory of frames, or `-` for hex payload lines on stdin.
        #[arg(long)]
        frames: String,
        /// Pin the clock for every decision (unix seconds).
        #[arg(long)]
        at: Option<u64>,
        /// Settlement base URL: upload and fetch bundles in the background
        /// (retrying with backoff) while deciding.
        #[arg(long)]
        server: Option<String>,
    },
    /// Upload unacknowledged rides and fetch a newer bundle (one contact;
    /// exits 2 on any failure, a fork or a refused acknowledgement).
    Sync {
        /// Reader directory.
        #[arg(long)]
        dir: PathBuf,
        /// Settlement base URL, e.g. http://127.0.0.1:8080.
        #[arg(long)]
        server: String,
        /// Pin the clock (unix seconds).
        #[arg(long)]
        at: Option<u64>,
    },
    /// Install a bundle file (refuses bad signatures and rollback).
    InstallBundle {
        /// Reader directory.
        #[arg(long)]
        dir: PathBuf,
        /// Bundle file.
        #[arg(long)]
        bundle: PathBuf,
        /// Pin the clock (unix seconds).
        #[arg(long)]
        at: Option<u64>,
    },
    /// Reader state, trust age, log usage.
    Status {
        /// Reader directory.
        #[arg(long)]
        dir: PathBuf,
        /// Pin the clock (unix seconds).
        #[arg(long)]
        at: Option<u64>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The ride log as JSON lines (after verifying the chain).
    Export {
        /// Reader directory.
        #[arg(long)]
        dir: PathBuf,
        /// Export the rejected-scan analytics log instead.
        #[arg(long)]
        rejected: bool,
    },
}

/// Arguments of `provision`.
#[derive(Args)]
struct ProvisionArgs {
    /// Reader directory (created).
    #[arg(long)]
    dir: PathBuf,
    /// Reader id registered with settlement.
    #[arg(long)]
    reader_id: u32,
    /// Vehicle name (≤ 32 bytes).
    #[arg(long)]
    vehicle: String,
    /// Route name (≤ 32 bytes).
    #[arg(long)]
    route: String,
    /// Root-signed reader bundle file (offline provisioning).
    #[arg(long, required_unless_present = "server", conflicts_with = "server")]
    bundle: Option<PathBuf>,
    /// Settlement base URL: register the new key there and fetch the
    /// first bundle (online provisioning, with --operator-token).
    #[arg(long, requires = "operator_token")]
    server: Option<String>,
    /// Operator bearer token for registering the reader.
    #[arg(long)]
    operator_token: Option<String>,
    /// Deployment root public key (hex file, `root.pub` from fare-keys).
    #[arg(long)]
    root_key: PathBuf,
    /// Operator name.
    #[arg(long, default_value = "")]
    operator: String,
    /// Stop id, if the reader is fixed at one.
    #[arg(long)]
    stop: Option<u32>,
    /// Pin the clock (unix seconds).
    #[arg(long)]
    at: Option<u64>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn now(at: Option<u64>) -> u64 {
    at.unwrap_or_else(|| SystemClock.now_unix_s())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    // rqrr panics on some real photos; fare-qr contains them, this keeps
    // stderr quiet about it.
    fare_qr::install_quiet_panic_hook();
    let cli = Cli::parse();
    match run(cli.cmd) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn read_file(path: &Path, what: &'static str) -> Result<Vec<u8>, ValidatorError> {
    std::fs::read(path).map_err(|source| ValidatorError::Io {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a bundle file, refusing one over the reader's bundle limit
/// before reading it.
fn read_file_bounded(path: &Path, what: &'static str) -> Result<Vec<u8>, ValidatorError> {
    let limit = fare_validator::sync::MAX_FETCHED_BUNDLE_BYTES;
    let len = std::fs::metadata(path)
        .map_err(|source| ValidatorError::Io {
            what,
            path: path.to_path_buf(),
            source,
        })?
        .len();
    if len > limit as u64 {
        return Err(ValidatorError::Config {
            field: "--bundle",
            why: format!(
                "{}: {len} bytes, over the reader's {limit}-byte bundle limit",
                path.display()
            ),
        });
    }
    read_file(path, what)
}

fn runtime(dir: &Path) -> Result<tokio::runtime::Runtime, ValidatorError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|source| ValidatorError::Io {
            what: "start async runtime",
            path: dir.to_path_buf(),
            source,
        })
}

fn print_json(v: &serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

/// One command: each arm hands its arguments to the function that does it.
fn run(cmd: Cmd) -> Result<ExitCode, ValidatorError> {
    match cmd {
        Cmd::Provision(args) => provision(args),
        Cmd::Scan {
            dir,
            image,
            payload,
            at,
            json,
        } => scan(&dir, image.as_deref(), payload.as_deref(), now(at), json),
        Cmd::Decode {
            image,
            raw,
            budget_ms,
        } => decode(&image, raw, budget_ms),
        Cmd::Run {
            dir,
            frames,
            at,
            server,
        } => run_stream(&dir, &frames, at, server.as_deref()),
        Cmd::Sync { dir, server, at } => sync_once(&dir, &server, now(at)),
        Cmd::InstallBundle { dir, bundle, at } => install_bundle(&dir, &bundle, now(at)),
        Cmd::Status { dir, at, json } => status(&dir, now(at), json),
        Cmd::Export { dir, rejected } => export(&dir, rejected),
    }
}

/// `provision`: a new key, the first bundle (from a file, or registered
/// and fetched from settlement), then the reader directory.
fn provision(a: ProvisionArgs) -> Result<ExitCode, ValidatorError> {
    let root = read_public_key_file(&a.root_key)?;
    let reader_id = a.reader_id;
    let config = ReaderConfig::new(ReaderIdentityConfig {
        reader_id,
        operator: a.operator,
        vehicle: a.vehicle,
        route: a.route,
        stop: a.stop,
    });
    let key = fare_credential::keys::generate_signing_key_os();
    let bundle = match (a.bundle, a.server) {
        (Some(path), _) => read_file_bounded(&path, "read bundle")?,
        (None, Some(url)) => {
            let rt = runtime(&a.dir)?;
            rt.block_on(fare_validator::onboard::register_and_fetch(
                &url,
                a.operator_token.as_deref().unwrap_or_default(),
                &config,
                &key,
                now(a.at),
            ))?
        }
        (None, None) => unreachable!("clap requires --bundle or --server"),
    };
    let reader = Reader::provision(&a.dir, config, root, key, &bundle, now(a.at))?;
    let pk = hex::encode(reader.public_key().as_bytes());
    if a.json {
        print_json(&serde_json::json!({
            "reader_id": reader_id,
            "public_key": pk,
            "bundle_version": reader.bundle_version(),
        }));
    } else {
        println!("{pk}");
        eprintln!(
            "reader {reader_id} provisioned in {} (bundle {}); register the public key above with settlement",
            a.dir.display(),
            reader.bundle_version()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `scan`: one decision on an image file or a hex payload; exit 0 on
/// accept, 1 on reject.
fn scan(
    dir: &Path,
    image: Option<&Path>,
    payload: Option<&str>,
    t: u64,
    json: bool,
) -> Result<ExitCode, ValidatorError> {
    let mut reader = Reader::open(dir, t)?;
    let decision = match (image, payload) {
        (Some(path), _) => reader.decide_image_file(path, t),
        (None, Some(hex_payload)) => match decode_hex_payload(hex_payload) {
            Ok(bytes) => reader.decide_payload(&bytes, t),
            Err(why) => {
                return Err(ValidatorError::Config {
                    field: "--payload",
                    why,
                })
            }
        },
        (None, None) => unreachable!("clap requires --image or --payload"),
    };
    reader.flush()?;
    if json {
        print_json(&decision.to_json());
    } else if decision.ride_id().is_some() {
        println!(
            "ACCEPT {} ({} µs)",
            decision.message(),
            decision.total_ns / 1000
        );
    } else {
        println!(
            "REJECT {}: {}",
            decision.reason_code().unwrap_or("unknown"),
            decision.message()
        );
    }
    Ok(if decision.is_accept() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `decode`: the bytes of the QR code in `image`, hex or raw; exit 1 when
/// none is found within `budget_ms`.
fn decode(image: &Path, raw: bool, budget_ms: u64) -> Result<ExitCode, ValidatorError> {
    let budget = std::time::Duration::from_millis(budget_ms);
    let bytes = match fare_validator::frames::decode_file(image, budget) {
        Ok(bytes) => bytes,
        Err(why) => {
            eprintln!("no code found in {}: {why}", image.display());
            return Ok(ExitCode::from(1));
        }
    };
    let mut out = std::io::stdout().lock();
    let res = if raw {
        out.write_all(&bytes)
    } else {
        writeln!(out, "{}", hex::encode(&bytes))
    };
    res.and_then(|_| out.flush()).map_err(write_stdout_error)?;
    Ok(ExitCode::SUCCESS)
}

/// The error of a failed write to stdout.
fn write_stdout_error(source: std::io::Error) -> ValidatorError {
    ValidatorError::Io {
        what: "write stdout",
        path: PathBuf::from("-"),
        source,
    }
}

/// `sync`: one contact with settlement, its report as JSON.
fn sync_once(dir: &Path, server: &str, t: u64) -> Result<ExitCode, ValidatorError> {
    let mut reader = Reader::open(dir, t)?;
    let rt = runtime(dir)?;
    let report = rt.block_on(fare_validator::sync::sync(&mut reader, server, t))?;
    print_json(&serde_json::to_value(&report).expect("report serialises"));
    Ok(ExitCode::SUCCESS)
}

/// `install-bundle`: a bundle file installed (or refused).
fn install_bundle(dir: &Path, bundle: &Path, t: u64) -> Result<ExitCode, ValidatorError> {
    let mut reader = Reader::open(dir, t)?;
    let bytes = read_file_bounded(bundle, "read bundle")?;
    let v = reader.install_bundle(&bytes, t)?;
    println!(
        "bundle {v} installed ({} deny-list entries)",
        reader.deny_len()
    );
    Ok(ExitCode::SUCCESS)
}

/// `status`: the reader's state as JSON, or as lines for a person.
fn status(dir: &Path, t: u64, json: bool) -> Result<ExitCode, ValidatorError> {
    let reader = Reader::open(dir, t)?;
    let s = reader.status(t);
    if json {
        print_json(&serde_json::to_value(&s).expect("status serialises"));
    } else {
        print_status(&s);
    }
    Ok(ExitCode::SUCCESS)
}

/// The lines of `status` without `--json`.
fn print_status(s: &fare_validator::Status) {
    println!(
        "reader {} ({} on {}), key {}",
        s.reader_id, s.vehicle, s.route, s.public_key
    );
    println!(
        "rides {} (acked up to {}, {} unacked, oldest held {}), log {} of {} bytes",
        s.rides_total, s.acked_up_to, s.unacked, s.oldest_seq, s.used_bytes, s.max_log_bytes
    );
    println!(
        "bundle {} age {} s: trust {}; {} issuer keys, {} denied; clock offset at install {} s",
        s.bundle_version,
        s.bundle_age_s,
        s.trust_state,
        s.trust_keys,
        s.deny_entries,
        s.clock_offset_at_install_s
    );
    let opt = |v: Option<u64>| v.map_or("never".to_string(), |x| x.to_string());
    println!(
        "sync {}: pending {} (oldest ride at {}), last contact {}, last success {}, clock offset {}, refused acks {}",
        s.sync_state,
        s.unacked,
        opt(s.oldest_pending_unix_s),
        opt(s.sync.last_contact_unix_s),
        opt(s.sync.last_success_unix_s),
        s.sync.clock_offset_s.map_or("unknown".into(), |o| format!("{o} s")),
        s.sync.refused_acks
    );
    if let Some(e) = &s.sync.last_error {
        println!("last error: {e}");
    }
    if let Some(f) = &s.sync.forked {
        println!("FORKED at {}: {}", f.at_seq, f.why);
    }
    if let Some(r) = &s.refusing {
        println!("REFUSING RIDES: {r}");
    }
}

/// `export`: the ride log (chain verified first) or the rejected scans,
/// one JSON object a line.
fn export(dir: &Path, rejected: bool) -> Result<ExitCode, ValidatorError> {
    let reader = Reader::open(dir, SystemClock.now_unix_s())?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if rejected {
        for r in reader.rejected_scans()? {
            writeln!(out, "{}", serde_json::to_string(&r).expect("serialises"))
                .map_err(write_stdout_error)?;
        }
    } else {
        reader.verify_chain()?;
        for r in reader.records() {
            writeln!(out, "{}", serde_json::to_string(&r?).expect("serialises"))
                .map_err(write_stdout_error)?;
        }
    }
    out.flush().map_err(write_stdout_error)?;
    Ok(ExitCode::SUCCESS)
}

/// Longest stdin line accepted by `run` (hex of the largest payload plus slack).
const MAX_LINE_BYTES: usize = 2 * MAX_RIDE_CODE_BYTES + 64;

fn decode_hex_payload(s: &str) -> Result<Vec<u8>, String> {
    let s = s.trim();
    if s.len() > 2 * MAX_RIDE_CODE_BYTES {
        return Err(format!(
            "payload is {} hex characters, over the {}-byte ride code limit",
            s.len(),
            MAX_RIDE_CODE_BYTES
        ));
    }
    hex::decode(s).map_err(|e| format!("payload is not hex: {e}"))
}

/// Reads one line of at most `max` bytes; longer lines are consumed and
/// reported as `Err(len)` so one bad line cannot exhaust memory.
fn read_bounded_line(
    r: &mut impl BufRead,
    max: usize,
) -> std::io::Result<Option<Result<String, usize>>> {
    let mut buf = Vec::new();
    let mut total = 0usize;
    loop {
        let avail = r.fill_buf()?;
        if avail.is_empty() {
            if total == 0 {
                return Ok(None);
            }
            break;
        }
        let (take, done) = match avail.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (avail.len(), false),
        };
        if buf.len() < max {
            let keep = take.min(max - buf.len());
            buf.extend_from_slice(&avail[..keep]);
        }
        total += take;
        r.consume(take);
        if done {
            break;
        }
    }
    if total > max {
        return Ok(Some(Err(total)));
    }
    Ok(Some(Ok(String::from_utf8_lossy(&buf).into_owned())))
}

fn input_reject(line_no: usize, why: String, at: u64) -> serde_json::Value {
    serde_json::json!({
        "decision": "reject",
        "reason": "malformed",
        "ride_id": null,
        "message": format!("input line {line_no}: {why}"),
        "latency_us": 0,
        "stages_ns": {},
        "at_unix_s": at,
        "warnings": [],
    })
}

fn run_stream(
    dir: &Path,
    frames: &str,
    at: Option<u64>,
    server: Option<&str>,
) -> Result<ExitCode, ValidatorError> {
    let reader = Reader::open(dir, now(at))?;
    let shared = std::sync::Arc::new(std::sync::Mutex::new(reader));
    // The agent runs on its own runtime thread; decisions never wait for the network.
    let agent = match server {
        None => None,
        Some(url) => {
            let rt = runtime(dir)?;
            let timeout = shared
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .config()
                .sync
                .request_timeout_ms;
            let link = fare_validator::sync::HttpLink::new(
                url,
                std::time::Duration::from_millis(timeout),
            )?;
            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            let clock: std::sync::Arc<dyn Fn() -> u64 + Send + Sync> =
                std::sync::Arc::new(move || now(at));
            let task = rt.spawn(fare_validator::agent::run(
                shared.clone(),
                link,
                clock,
                None,
                stop_rx,
            ));
            Some((rt, stop_tx, task))
        }
    };
    let res = decide_stream(&shared, frames, at);
    if let Some((rt, stop_tx, task)) = agent {
        let _ = stop_tx.send(true);
        let _ = rt.block_on(task);
    }
    let reader = shared.lock().unwrap_or_else(|p| p.into_inner());
    reader.flush()?;
    res
}

/// Decides every input of `run`: hex payload lines on stdin (`-`) or the
/// image files of a directory, with the reader's maintenance after each.
fn decide_stream(
    shared: &std::sync::Mutex<Reader>,
    frames: &str,
    at: Option<u64>,
) -> Result<ExitCode, ValidatorError> {
    let decide = |t: u64, decide: &mut dyn FnMut(&mut Reader)| {
        let mut reader = shared.lock().unwrap_or_else(|p| p.into_inner());
        decide(&mut reader);
        if let Err(e) = reader.maintenance(t) {
            tracing::warn!(error = %e, "maintenance failed");
        }
    };
    if frames == "-" {
        decide_stdin_lines(at, decide)?;
    } else {
        for f in frame_files(Path::new(frames))? {
            let t = now(at);
            decide(t, &mut |reader| {
                let mut v = reader.decide_image_file(&f, t).to_json();
                v["frame"] = serde_json::json!(f.display().to_string());
                print_json(&v);
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One decision per hex line on stdin; an over-long or malformed line is
/// answered with a `malformed` reject (and decides nothing), blank and `#`
/// lines are skipped. `decide(t, f)` runs `f` on the locked reader.
fn decide_stdin_lines(
    at: Option<u64>,
    decide: impl Fn(u64, &mut dyn FnMut(&mut Reader)),
) -> Result<(), ValidatorError> {
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let mut line_no = 0;
    while let Some(line) =
        read_bounded_line(&mut input, MAX_LINE_BYTES).map_err(|source| ValidatorError::Io {
            what: "read stdin",
            path: PathBuf::from("-"),
            source,
        })?
    {
        line_no += 1;
        let t = now(at);
        let line = match line {
            Ok(l) => l,
            Err(len) => {
                print_json(&input_reject(
                    line_no,
                    format!("{len} bytes, over the {MAX_LINE_BYTES}-byte line limit"),
                    t,
                ));
                continue;
            }
        };
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        decide(t, &mut |reader| match decode_hex_payload(trimmed) {
            Ok(bytes) => print_json(&reader.decide_payload(&bytes, t).to_json()),
            Err(why) => print_json(&input_reject(line_no, why, t)),
        });
    }
    Ok(())
}

/// The files of the frame directory `path`, sorted by name.
fn frame_files(path: &Path) -> Result<Vec<PathBuf>, ValidatorError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|source| ValidatorError::Io {
            what: "list frames",
            path: path.to_path_buf(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    Ok(files)
}
