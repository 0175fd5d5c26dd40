//! `fare-wallet`: the phone, on the command line. A thin wrapper over the
//! `fare_wallet` library; see `fare-wallet --help`.

use clap::{Parser, Subcommand};
use fare_credential::{Clock, SystemClock};
use fare_wallet::{online, Wallet, CODE_REFRESH_S};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "fare-wallet",
    version,
    about = "Phone-side wallet: device key, credential, ride codes"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create the device key and print its public key (hex).
    Init {
        /// Wallet directory (created owner-only).
        #[arg(long)]
        dir: PathBuf,
        /// Replace an existing key (do this at each credential renewal).
        #[arg(long)]
        rotate: bool,
    },
    /// Install a credential issued for this device.
    Install {
        /// Wallet directory.
        #[arg(long)]
        dir: PathBuf,
        /// Credential file: the 126-byte binary (`fare-keys issue --out`) or
        /// its 252 hex characters (the `credential` field settlement answers).
        #[arg(long)]
        credential: PathBuf,
        /// Server time (unix s) seen at this online contact, to correct the phone's clock.
        #[arg(long)]
        server_time: Option<u64>,
        /// Pin the phone's clock (unix seconds).
        #[arg(long)]
        at: Option<u64>,
    },
    /// Make one fresh ride code. Default: show it as a QR in the terminal.
    Code {
        /// Wallet directory.
        #[arg(long)]
        dir: PathBuf,
        /// Pin the phone's clock (unix seconds).
        #[arg(long)]
        at: Option<u64>,
        /// Write the QR as a PNG file.
        #[arg(long)]
        png: Option<PathBuf>,
        /// Pixels per QR module in the PNG.
        #[arg(long, default_value_t = 6)]
        module_px: u32,
        /// Print the code bytes as hex.
        #[arg(long)]
        hex: bool,
    },
    /// Enrol this phone online with the passenger token the operator gave
    /// (`fare-settlement admin enrol`): keeps a token only this phone knows,
    /// then gets a first credential for a fresh device key.
    Enroll {
        /// Wallet directory (created if missing).
        #[arg(long)]
        dir: PathBuf,
        /// Settlement's base URL, e.g. https://fares.example.org.
        #[arg(long)]
        server: String,
        /// The account id.
        #[arg(long)]
        account: String,
        /// The passenger token from the operator (`fpt_…`); used once.
        #[arg(long)]
        token: String,
        /// Credential lifetime asked for (settlement caps it), e.g. 72h.
        #[arg(long, default_value = "72h")]
        valid_for: String,
        /// Pin the phone's clock (unix seconds).
        #[arg(long)]
        at: Option<u64>,
    },
    /// Renew online: a fresh device key, a new credential for it, the clock
    /// offset from the server's time.
    Renew {
        /// Wallet directory.
        #[arg(long)]
        dir: PathBuf,
        /// Settlement's base URL (default: the one used at enrolment).
        #[arg(long)]
        server: Option<String>,
        /// Credential lifetime asked for (settlement caps it), e.g. 72h.
        #[arg(long, default_value = "72h")]
        valid_for: String,
        /// Pin the phone's clock (unix seconds).
        #[arg(long)]
        at: Option<u64>,
    },
    /// List the account's enrolled phones (token ids; this one is marked).
    Phones {
        /// Wallet directory.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Revoke another phone of the account (lost or stolen): its token
    /// stops working and its credentials go on the readers' deny list.
    RevokePhone {
        /// Wallet directory (of a phone you still have).
        #[arg(long)]
        dir: PathBuf,
        /// The lost phone's token id (`fare-wallet phones` lists them).
        #[arg(long)]
        token_id: String,
    },
    /// A live QR in the terminal, refreshed every 30 s.
    Show {
        /// Wallet directory.
        #[arg(long)]
        dir: PathBuf,
        /// Seconds between codes.
        #[arg(long, default_value_t = CODE_REFRESH_S)]
        refresh_s: u64,
        /// Stop after this many codes (default: until interrupted).
        #[arg(long)]
        count: Option<u64>,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fare-wallet: error: {e}");
            ExitCode::from(2)
        }
    }
}

fn now(at: Option<u64>) -> u64 {
    at.unwrap_or_else(|| SystemClock.now_unix_s())
}

fn valid_for_s(s: &str) -> Result<u64, String> {
    fare_keys::files::parse_duration_s(s).map_err(|e| format!("--valid-for: {e}"))
}

fn report_renewal(what: &str, r: &online::Renewed) {
    println!("{}", r.credential_id);
    eprintln!(
        "{what}: credential {} valid until {}, fresh device key {}, phone clock offset {} s",
        r.credential_id, r.valid_until_unix_s, r.device_public_key, r.clock_offset_s
    );
}

fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    match cli.cmd {
        Cmd::Init { dir, rotate } => {
            let w = Wallet::init(&dir, rotate, &mut rand_core::OsRng)?;
            println!("{}", hex::encode(w.core().public_key()));
        }
        Cmd::Install {
            dir,
            credential,
            server_time,
            at,
        } => {
            let mut w = Wallet::open(&dir)?;
            let bytes =
                std::fs::read(&credential).map_err(|e| format!("{}: {e}", credential.display()))?;
            w.install(&bytes, server_time.map(|s| (s, now(at))))
                .map_err(|e| format!("{}: {e}", credential.display()))?;
            let c = w.core().credential().expect("just installed");
            println!(
                "installed credential {} ({}), valid {}..={}",
                c.id(),
                c.body().profile.name(),
                c.body().valid_from_unix_s,
                c.body().valid_until_unix_s
            );
        }
        Cmd::Code {
            dir,
            at,
            png,
            module_px,
            hex,
        } => {
            let mut w = Wallet::open(&dir)?;
            let code = w.next_code(now(at))?;
            if let Some(warning) = w.expiry_warning(now(at)) {
                eprintln!("fare-wallet: warning: {warning}");
            }
            if let Some(p) = &png {
                let bytes = fare_qr::render_png(code.as_bytes(), module_px)?;
                fare_keys::files::write_atomic(p, &bytes, false)
                    .map_err(|e| format!("{}: {e}", p.display()))?;
                eprintln!(
                    "code seq {} issued at {} written to {}",
                    code.device_seq(),
                    code.issued_at_unix_s(),
                    p.display()
                );
            }
            if hex {
                println!("{}", ::hex::encode(code.as_bytes()));
            } else if png.is_none() {
                print!("{}", fare_qr::render_terminal(code.as_bytes())?);
                println!(
                    "code seq {} issued at {}",
                    code.device_seq(),
                    code.issued_at_unix_s()
                );
            }
        }
        Cmd::Enroll {
            dir,
            server,
            account,
            token,
            valid_for,
            at,
        } => {
            let r = online::enroll(
                &dir,
                &server,
                &account,
                &token,
                valid_for_s(&valid_for)?,
                &|| now(at),
                &mut rand_core::OsRng,
            )?;
            report_renewal("enrolled", &r);
        }
        Cmd::Renew {
            dir,
            server,
            valid_for,
            at,
        } => {
            let mut w = Wallet::open(&dir)?;
            let r = online::renew(
                &mut w,
                server.as_deref(),
                valid_for_s(&valid_for)?,
                &|| now(at),
                &mut rand_core::OsRng,
            )?;
            report_renewal("renewed", &r);
        }
        Cmd::Phones { dir } => {
            let v = online::phones(&Wallet::open(&dir)?)?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Cmd::RevokePhone { dir, token_id } => {
            let v = online::revoke_phone(&Wallet::open(&dir)?, &token_id)?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Cmd::Show {
            dir,
            refresh_s,
            count,
        } => {
            let mut w = Wallet::open(&dir)?;
            let mut shown = 0u64;
            loop {
                let code = w.next_code(now(None))?;
                let warning = w.expiry_warning(now(None));
                let mut out = std::io::stdout().lock();
                // Clear the screen and home the cursor, then draw.
                write!(
                    out,
                    "\x1b[2J\x1b[H{}",
                    fare_qr::render_terminal(code.as_bytes())?
                )?;
                writeln!(
                    out,
                    "ride code seq {} (refreshes every {refresh_s} s; Ctrl-C to stop)",
                    code.device_seq()
                )?;
                if let Some(warning) = warning {
                    writeln!(out, "warning: {warning}")?;
                }
                out.flush()?;
                shown += 1;
                if count.is_some_and(|c| shown >= c) {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_secs(refresh_s));
            }
        }
    }
    Ok(())
}
