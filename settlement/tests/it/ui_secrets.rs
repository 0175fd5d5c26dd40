//! No secret in the service's log or in a URL. The real `fare-settlement
//! serve` binary runs over a small day's data with every log level on
//! (`RUST_LOG=trace`, its own subscriber on stderr); through it go logins
//! (a wrong token too), every page, every form and JSON API calls with the
//! operator token. Then its whole stderr and stdout must hold neither the
//! operator token, a staff token, the wrong token, a session cookie nor a
//! CSRF token; and no link, form target, redirect or GET form of any page
//! may carry one in a URL.

use crate::common::*;
use crate::ui_common::*;
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

/// Lines of the child's stderr read while waiting for its address (at
/// trace level sled alone logs hundreds while opening the database).
const MAX_START_LINES: usize = 100_000;
/// Polls (20 ms apart) of a run's status before giving up.
const RUN_POLLS: u32 = 1500;
/// A token someone typed wrongly at the login form.
const WRONG: &str = "wrong-token-typed-at-login-4711";

/// The serve child, stopped (SIGTERM, then reaped) when dropped.
struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One output stream of the child: what a thread collected of it so far,
/// and that thread (joined once the child has exited).
type Collected = (Arc<Mutex<Vec<u8>>>, std::thread::JoinHandle<()>);

/// Everything the child wrote on one stream, collected by a thread.
fn collect(
    mut r: impl Read + Send + 'static,
) -> (Arc<Mutex<Vec<u8>>>, std::thread::JoinHandle<()>) {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let b = buf.clone();
    let t = std::thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        while let Ok(n) = r.read(&mut chunk) {
            if n == 0 {
                break;
            }
            b.lock().unwrap().extend_from_slice(&chunk[..n]);
        }
    });
    (buf, t)
}

/// Starts `fare-settlement serve` on `data`; returns it, its base URL and
/// the collectors of its stderr and stdout.
fn serve(data: &std::path::Path) -> (Serve, String, Vec<Collected>) {
    let cfg = data.join("ui-secrets.toml");
    std::fs::write(
        &cfg,
        format!("operator_token = \"{TOKEN}\"\nsettle_chunk_rides = 5\n\n[ui_staff]\nmetro = \"{METRO_TOKEN}\"\n"),
    )
    .unwrap();
    let mut child = Serve(
        Command::new(env!("CARGO_BIN_EXE_fare-settlement"))
            .args([
                "serve",
                "--data",
                data.to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
            ])
            .args(["--config", cfg.to_str().unwrap()])
            .env("RUST_LOG", "trace")
            .env_remove(fare_settlement::config::OPERATOR_TOKEN_ENV)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("fare-settlement serve starts"),
    );
    let stderr = child.0.stderr.take().unwrap();
    let stdout = child.0.stdout.take().unwrap();
    // Read up to the address line by hand, keeping every byte read.
    let mut head = Vec::new();
    let mut reader = std::io::BufReader::new(stderr);
    let mut addr = None;
    for _ in 0..MAX_START_LINES {
        let mut line = String::new();
        if std::io::BufRead::read_line(&mut reader, &mut line).unwrap() == 0 {
            break;
        }
        head.extend_from_slice(line.as_bytes());
        if let Some(a) = line.trim().strip_prefix("fare-settlement listening on ") {
            addr = Some(a.to_string());
            break;
        }
    }
    let addr = addr.unwrap_or_else(|| panic!("no address: {}", String::from_utf8_lossy(&head)));
    let err = collect(reader);
    err.0.lock().unwrap().extend_from_slice(&head);
    (child, format!("http://{addr}"), vec![err, collect(stdout)])
}

/// What the dashboard showed and said: page bodies, redirect targets.
#[derive(Default)]
struct Seen {
    pages: Vec<(String, String)>,
    locations: Vec<String>,
}

impl Seen {
    async fn page(&mut self, ui: &UiClient, path: &str, status: u16) {
        let (s, body) = ui.get(path).await;
        assert_eq!(s, status, "{path}: {body}");
        self.pages.push((path.to_string(), body));
    }
    async fn post(
        &mut self,
        ui: &UiClient,
        path: &str,
        fields: &[(&str, &str)],
        status: u16,
    ) -> String {
        let (s, loc) = ui.post(path, fields).await;
        assert_eq!(s, status, "{path}: {loc}");
        if s == 303 {
            self.locations.push(loc.clone());
        }
        loc
    }
}

/// Every page as the deployment operator sees it, and every form.
async fn operator_session(base: &str, charged: (u32, u64), seen: &mut Seen) -> UiClient {
    let ui = UiClient::login(base, "Ann", TOKEN).await;
    for p in [
        "/ui",
        &format!("/ui/reports?from={DAY}&to={DAY}"),
        "/ui/reports.csv",
        "/ui/accounts?q=car",
        "/ui/accounts/carol",
        "/ui/readers",
        "/ui/incidents",
        "/ui/runs",
    ] {
        seen.page(&ui, p, 200).await;
    }
    seen.page(&ui, "/ui/no-such-page", 404).await;
    seen.post(
        &ui,
        "/ui/accounts/carol/payments",
        &[("payment_id", "p1"), ("amount_minor", "250")],
        303,
    )
    .await;
    seen.post(&ui, "/ui/accounts/carol/freeze", &[("frozen", "true")], 303)
        .await;
    let gap = [("reader_id", "4"), ("kind", "sequence_gap"), ("seq", "1")];
    seen.post(&ui, "/ui/incidents/acknowledge", &gap, 303).await;
    let mut f = gap.to_vec();
    f.push(("note", "re-sent from 1"));
    seen.post(&ui, "/ui/incidents/resolve", &f, 303).await;
    let award = format!("/ui/disputes/{}/{}/award", charged.0, charged.1);
    seen.post(&ui, &award, &[("award_reader_id", "3")], 303)
        .await;
    seen.post(&ui, "/ui/readers/2/retire", &[], 303).await;
    let run = seen.post(&ui, "/ui/runs", &[], 303).await;
    for _ in 0..RUN_POLLS {
        let (_, frag) = ui.get(&format!("{run}/status")).await;
        if !frag.contains("data-status=\"running\"") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    seen.page(&ui, &run, 200).await;
    for p in ["/ui", "/ui/accounts/carol", "/ui/readers", "/ui/incidents"] {
        seen.page(&ui, p, 200).await;
    }
    let (s, _) = ui
        .post_raw(
            "/ui/accounts/carol/freeze",
            &[("csrf", "0"), ("frozen", "false")],
        )
        .await;
    assert_eq!(s, 403);
    ui
}

/// JSON API calls with the operator token (and one with a wrong one).
async fn api_calls(base: &str) {
    let http = reqwest::Client::new();
    for p in [
        "/v1/readers",
        &format!("/v1/reports/daily?day={DAY}"),
        "/v1/reports/disputes",
        "/v1/accounts/carol",
    ] {
        let r = http
            .get(format!("{base}{p}"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{p}");
    }
    let r = http
        .post(format!("{base}/v1/accounts/carol/payments"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"payment_id": "api-1", "amount_minor": 10}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = http
        .get(format!("{base}/v1/readers"))
        .bearer_auth(WRONG)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

/// The `attr="..."` values of every tag in `html`.
fn attr_values<'a>(html: &'a str, attr: &str) -> Vec<&'a str> {
    let key = format!(" {attr}=\"");
    html.match_indices(&key)
        .map(|(i, _)| {
            let v = &html[i + key.len()..];
            &v[..v.find('"').unwrap()]
        })
        .collect()
}

/// No URL a page holds (links, form targets, scripts, styles) carries a
/// secret, and no form that submits by GET (into the URL) has a secret
/// field (a password, a token, the CSRF token).
fn assert_no_secret_in_urls(path: &str, html: &str, secrets: &[&str]) {
    for a in ["href", "action", "src"] {
        for url in attr_values(html, a) {
            for s in secrets {
                assert!(!url.contains(s), "{path}: {a}={url} holds a secret");
            }
            assert!(
                !url.contains("token=") && !url.contains("csrf="),
                "{path}: {a}={url}"
            );
        }
    }
    for form in html.split("<form").skip(1) {
        let form = &form[..form.find("</form>").unwrap_or(form.len())];
        let tag = &form[..form.find('>').unwrap()];
        if !tag.contains("method=\"post\"") {
            for bad in ["type=\"password\"", "name=\"token\"", "name=\"csrf\""] {
                assert!(!form.contains(bad), "{path}: a GET form with {bad}: {form}");
            }
        }
    }
}

/// Long by design: one service's log, gathered through every kind of
/// request in order, is the thing checked at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_or_session_in_the_log_or_in_a_url() {
    let dir = tempfile::tempdir().unwrap();
    let charged = {
        let srv = Server::start(dir.path(), config()).await;
        let mut readers = small_day(&srv).await;
        let (charged, _) = disputed_ride(&srv, &mut readers).await;
        srv.stop().await;
        charged
    };
    let (mut child, base, streams) = serve(dir.path());

    let mut seen = Seen::default();
    let (s, login_page) = reqwest::get(format!("{base}/ui/login"))
        .await
        .map(|r| (r.status(), r))
        .unwrap();
    assert_eq!(s, 200);
    seen.pages
        .push(("/ui/login".into(), login_page.text().await.unwrap()));
    let wrong = post_login(&base, "Mallory", WRONG).await;
    assert_eq!(wrong.status(), 401);
    let ann = operator_session(&base, charged, &mut seen).await;
    let mei = UiClient::login(&base, "Mei", METRO_TOKEN).await;
    for (p, status) in [
        ("/ui", 200),
        ("/ui/readers", 200),
        ("/ui/incidents", 200),
        ("/ui/accounts", 403),
    ] {
        seen.page(&mei, p, status).await;
    }
    api_calls(&base).await;
    seen.post(&ann, "/ui/logout", &[], 303).await;

    // Stop the service so that every line it would log is written.
    let pid = child.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    child.0.wait().unwrap();
    let mut log = Vec::new();
    for (buf, thread) in streams {
        thread.join().unwrap();
        log.extend_from_slice(&buf.lock().unwrap());
    }
    let log = String::from_utf8_lossy(&log);

    // The capture is real: the log holds the logins and the requests.
    assert!(log.contains("dashboard login"), "{log}");
    assert!(log.contains("dashboard login refused"), "{log}");
    assert!(
        log.contains("/ui/accounts/carol/payments"),
        "request URIs are logged at trace"
    );
    assert!(
        log.contains("disputed fare awarded from the dashboard"),
        "{log}"
    );
    let cookie = |c: &UiClient| c.cookie.split_once('=').unwrap().1.to_string();
    let secrets = [
        TOKEN.to_string(),
        METRO_TOKEN.to_string(),
        WRONG.to_string(),
        cookie(&ann),
        cookie(&mei),
        ann.csrf.clone(),
        mei.csrf.clone(),
    ];
    for s in &secrets {
        assert!(
            s.len() >= 16,
            "a secret long enough not to occur by chance: {s}"
        );
        assert!(!log.contains(s.as_str()), "the log holds a secret: {s}");
    }
    // Nor does any URL.
    let urls: Vec<&str> = secrets[..5].iter().map(String::as_str).collect();
    assert_eq!((seen.pages.len(), seen.locations.len()), (19, 8));
    for (path, html) in &seen.pages {
        assert!(
            !html.contains(TOKEN) && !html.contains(METRO_TOKEN),
            "{path} shows a token"
        );
        assert_no_secret_in_urls(path, html, &urls);
    }
    for l in &seen.locations {
        for s in &secrets {
            assert!(!l.contains(s.as_str()), "redirect to {l}");
        }
    }
}
