//! `fare-settlement admin`: the operator's command line over the HTTP API
//! of a running service (issuer keys, accounts, passenger enrolment, lost
//! phones). Each command is one request; the answer's JSON is printed.

use clap::Subcommand;
use serde_json::{json, Value};
use std::time::Duration;

/// Time allowed for one admin request.
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

/// What to do.
#[derive(Clone, Debug, Subcommand)]
pub enum AdminCmd {
    /// List the issuer keys with their windows and states.
    IssuerKeys,
    /// Add a new issuer key (new credentials get it; older keys stay valid until their end).
    RotateIssuer,
    /// End an issuer key's window (now, or at --at); readers refuse its credentials after it.
    RetireIssuer {
        /// The key id (`issuer-keys` lists them).
        #[arg(long)]
        key_id: u32,
        /// End of the window (unix seconds, not in the past); default now.
        #[arg(long)]
        at: Option<u64>,
    },
    /// Create a passenger account.
    CreateAccount {
        /// Account id ([A-Za-z0-9_-], ≤ 64).
        #[arg(long)]
        account: String,
        /// adult, senior, student or child.
        #[arg(long)]
        profile: Option<String>,
        /// Credit limit in minor units (default from the service's config).
        #[arg(long)]
        credit_limit: Option<i64>,
    },
    /// Make a passenger token for a new phone of the account (prints it: give it to the passenger for `fare-wallet enroll`).
    Enrol {
        /// Account id.
        #[arg(long)]
        account: String,
        /// A label for the phone, e.g. "alice's phone".
        #[arg(long, default_value = "")]
        label: String,
    },
    /// List an account's passenger tokens (one per enrolled phone).
    Tokens {
        /// Account id.
        #[arg(long)]
        account: String,
    },
    /// A lost or stolen phone: revoke its passenger token and deny-list its credentials.
    RevokePhone {
        /// Account id.
        #[arg(long)]
        account: String,
        /// The phone's token id (`tokens` lists them).
        #[arg(long, conflicts_with = "all", required_unless_present = "all")]
        token_id: Option<String>,
        /// Every phone of the account, and every credential it holds.
        #[arg(long)]
        all: bool,
    },
    /// An account's statement.
    Statement {
        /// Account id.
        #[arg(long)]
        account: String,
    },
}

fn request(cmd: &AdminCmd) -> (reqwest::Method, String, Option<Value>) {
    use reqwest::Method;
    match cmd {
        AdminCmd::IssuerKeys => (Method::GET, "/v1/issuer-keys".into(), None),
        AdminCmd::RotateIssuer => (Method::POST, "/v1/issuer-keys/rotate".into(), None),
        AdminCmd::RetireIssuer { key_id, at } => (
            Method::POST,
            format!("/v1/issuer-keys/{key_id}/retire"),
            Some(json!({ "at_unix_s": at })),
        ),
        AdminCmd::CreateAccount {
            account,
            profile,
            credit_limit,
        } => (
            Method::POST,
            "/v1/accounts".into(),
            Some(
                json!({"account_id": account, "profile": profile, "credit_limit_minor": credit_limit}),
            ),
        ),
        AdminCmd::Enrol { account, label } => (
            Method::POST,
            format!("/v1/accounts/{account}/tokens"),
            Some(json!({ "label": label })),
        ),
        AdminCmd::Tokens { account } => {
            (Method::GET, format!("/v1/accounts/{account}/tokens"), None)
        }
        AdminCmd::RevokePhone {
            account,
            token_id,
            all,
        } => {
            let target = if *all {
                "all".to_string()
            } else {
                token_id.clone().unwrap_or_default()
            };
            (
                Method::POST,
                format!("/v1/accounts/{account}/tokens/{target}/revoke"),
                None,
            )
        }
        AdminCmd::Statement { account } => (Method::GET, format!("/v1/accounts/{account}"), None),
    }
}

/// Runs one admin command against `server` with the operator token; the
/// answer's JSON, or the service's `error: message` (or the network error).
pub fn run(server: &str, operator_token: &str, cmd: &AdminCmd) -> Result<Value, String> {
    let (method, path, body) = request(cmd);
    let url = format!("{}{path}", server.trim_end_matches('/'));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(ADMIN_TIMEOUT)
            .build()
            .map_err(|e| e.to_string())?;
        let mut rq = client
            .request(method.clone(), &url)
            .bearer_auth(operator_token);
        if let Some(b) = body {
            rq = rq.json(&b);
        }
        let resp = rq
            .send()
            .await
            .map_err(|e| format!("{method} {url}: {e}"))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| format!("{url}: {e}"))?;
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status.is_success() {
            Ok(v)
        } else {
            Err(format!(
                "{method} {path}: {} {}: {}",
                status.as_u16(),
                v["error"].as_str().unwrap_or("error"),
                v["message"].as_str().unwrap_or("")
            ))
        }
    })
}
