//! `fare-keys`: the deployment's key ceremony on the command line.
//! A thin wrapper over the `fare_keys` library; see `fare-keys --help`.

use clap::{Parser, Subcommand};
use fare_credential::bundle::{DenyUpdate, ReaderBundle};
use fare_credential::{Clock, CredentialId, Profile, SystemClock};
use fare_keys::files::{parse_duration_s, write_atomic};
use fare_keys::{IssueRequest, KeyStore};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "fare-keys",
    version,
    about = "Deployment keys, credential issuance and reader bundles"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create a deployment: root key and the first issuer key.
    Init {
        /// Directory for the keys (created owner-only).
        #[arg(long)]
        dir: PathBuf,
        /// Pin the clock (unix seconds) for drills and tests.
        #[arg(long)]
        at: Option<u64>,
    },
    /// Add a new issuer key; older keys stay valid until their end.
    RotateIssuer {
        /// Keys directory.
        #[arg(long)]
        dir: PathBuf,
        /// Pin the clock (unix seconds).
        #[arg(long)]
        at: Option<u64>,
    },
    /// End an issuer key's window (e.g. suspected compromise); readers
    /// refuse its credentials after that once they have the next bundle.
    RetireIssuer {
        /// Keys directory.
        #[arg(long)]
        dir: PathBuf,
        /// The key id (`fare-keys show` lists them).
        #[arg(long)]
        key_id: u32,
        /// End of the window (unix seconds); default now.
        #[arg(long)]
        at: Option<u64>,
    },
    /// Issue a credential for a device key and print its id.
    Issue {
        /// Keys directory.
        #[arg(long)]
        dir: PathBuf,
        /// The back office's account id (recorded in issued.jsonl, never in the credential).
        #[arg(long)]
        account: String,
        /// The device public key, 64 hex characters (`fare-wallet init` prints it).
        #[arg(long)]
        device_key: String,
        /// Concession profile: adult, senior, student or child.
        #[arg(long, default_value = "adult")]
        profile: Profile,
        /// Lifetime, e.g. 72h, 7d (at most 31d).
        #[arg(long, default_value = "72h")]
        valid_for: String,
        /// Output file for the credential (126 bytes, binary).
        #[arg(long)]
        out: PathBuf,
        /// Pin the clock (unix seconds).
        #[arg(long)]
        at: Option<u64>,
    },
    /// Write a root-signed reader bundle (trust list, deny list, tariff).
    Bundle {
        /// Keys directory.
        #[arg(long)]
        dir: PathBuf,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
        /// Credential ids to deny, comma separated (hex).
        #[arg(long, value_delimiter = ',')]
        deny: Vec<String>,
        /// Tariff JSON file to embed (default: none).
        #[arg(long)]
        tariff: Option<PathBuf>,
        /// Pin the clock (unix seconds); becomes the bundle's server time.
        #[arg(long)]
        at: Option<u64>,
    },
    /// Print the trust list and the root public key.
    Show {
        /// Keys directory.
        #[arg(long)]
        dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fare-keys: error: {e}");
            ExitCode::from(2)
        }
    }
}

fn now(at: Option<u64>) -> u64 {
    at.unwrap_or_else(|| SystemClock.now_unix_s())
}

fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    let mut rng = rand_core::OsRng;
    match cli.cmd {
        Cmd::Init { dir, at } => {
            let ks = KeyStore::init(&dir, now(at), &mut rng)?;
            println!(
                "root public key: {}",
                hex::encode(ks.root_public_key().to_bytes())
            );
            println!(
                "issuer key 1 valid until {}",
                ks.trust_list()[0].valid_until_unix_s
            );
            println!("provision readers with {}", dir.join("root.pub").display());
        }
        Cmd::RotateIssuer { dir, at } => {
            let mut ks = KeyStore::open(&dir)?;
            let id = ks.rotate_issuer(now(at), &mut rng)?;
            println!("issuer key {id} created; older keys stay valid until their end");
            println!("a running fare-settlement on this KEYS dir publishes it in its next bundle; offline, `fare-keys bundle`");
        }
        Cmd::RetireIssuer { dir, key_id, at } => {
            let mut ks = KeyStore::open(&dir)?;
            let t = now(at);
            ks.retire_issuer(key_id, t)?;
            println!("issuer key {key_id} ends at {t}; readers refuse its credentials after that once they have the next bundle");
            if ks.current_issuer(t.saturating_add(1)).is_err() {
                eprintln!("fare-keys: warning: no issuer key is valid after {t}: run `fare-keys rotate-issuer`");
            }
        }
        Cmd::Issue {
            dir,
            account,
            device_key,
            profile,
            valid_for,
            out,
            at,
        } => {
            let ks = KeyStore::open(&dir)?;
            let key = hex::decode(device_key.trim())
                .map_err(|e| format!("--device-key: expected 64 hex characters: {e}"))?;
            let device_public_key: [u8; 32] = key.try_into().map_err(|v: Vec<u8>| {
                format!(
                    "--device-key: expected 32 bytes (64 hex characters), got {}",
                    v.len()
                )
            })?;
            let t = now(at);
            let req = IssueRequest {
                device_public_key,
                profile,
                valid_from_unix_s: t,
                valid_for_s: parse_duration_s(&valid_for)
                    .map_err(|e| format!("--valid-for: {e}"))?,
            };
            let cred = ks.issue_credential(&req, t, &mut rng)?;
            write_atomic(&out, cred.as_bytes(), false)
                .map_err(|e| format!("{}: {e}", out.display()))?;
            ks.record_issued(&cred, &account)?;
            println!("{}", cred.id());
            eprintln!(
                "credential for account {account} ({}), valid {}..={}, written to {}",
                profile.name(),
                cred.body().valid_from_unix_s,
                cred.body().valid_until_unix_s,
                out.display()
            );
        }
        Cmd::Bundle {
            dir,
            out,
            deny,
            tariff,
            at,
        } => {
            let mut ks = KeyStore::open(&dir)?;
            let ids = deny
                .iter()
                .filter(|s| !s.trim().is_empty())
                .map(|s| CredentialId::from_hex(s).map_err(|e| format!("--deny {s}: {e}")))
                .collect::<Result<Vec<_>, _>>()?;
            let tariff = match tariff {
                Some(p) => {
                    std::fs::read(&p).map_err(|e| format!("--tariff {}: {e}", p.display()))?
                }
                None => Vec::new(),
            };
            let bundle = ReaderBundle {
                bundle_version: ks.next_bundle_version()?,
                server_time_unix_s: now(at),
                trust: ks.trust_list(),
                deny: DenyUpdate::Snapshot(ids),
                tariff,
            };
            let bytes = ks.sign_bundle(&bundle)?;
            write_atomic(&out, &bytes, false).map_err(|e| format!("{}: {e}", out.display()))?;
            println!(
                "bundle version {} ({} issuer keys, {} denied, {} bytes) written to {}",
                bundle.bundle_version,
                bundle.trust.len(),
                match &bundle.deny {
                    DenyUpdate::Snapshot(v) => v.len(),
                    DenyUpdate::Delta { add, .. } => add.len(),
                },
                bytes.len(),
                out.display()
            );
        }
        Cmd::Show { dir } => {
            let ks = KeyStore::open(&dir)?;
            println!(
                "root public key: {}",
                hex::encode(ks.root_public_key().to_bytes())
            );
            for k in ks.trust_list() {
                println!(
                    "issuer key {}: {} valid {}..={}",
                    k.key_id,
                    hex::encode(k.public_key),
                    k.valid_from_unix_s,
                    k.valid_until_unix_s
                );
            }
        }
    }
    Ok(())
}
