//! The dashboard in a real browser: Debian's headless Chromium driven by
//! chromedriver over WebDriver (fantoccini). After a small day of rides it
//! logs in, reads the overview and checks its numbers against the JSON API,
//! downloads the report CSV, records a payment and sees the account leave
//! the deny list, reads the bundle a reader holds, resolves an incident,
//! awards a disputed fare, starts a settlement run and watches it finish;
//! it screenshots each page into the test's temporary directory under
//! `target/`, or into `docs/` (the README's pictures) when
//! `FARE_UPDATE_SCREENSHOTS=1`: a test run leaves the source tree as it was.
//!
//! Needs `chromium` and `chromedriver` (Debian: `apt-get install chromium
//! chromium-driver`). Without them it prints SKIPPED and passes, unless
//! `FARE_REQUIRE_CHROMIUM=1` (CI sets it), when it fails.

use crate::common::*;
use crate::ui_common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Tries (100 ms apart) for chromedriver to answer before giving up.
const DRIVER_START_TRIES: u32 = 200;
/// Tries (100 ms apart) for a downloaded file to appear.
const DOWNLOAD_TRIES: u32 = 200;

fn find_binary(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|n| {
        std::env::split_paths(&path)
            .map(|d| d.join(n))
            .find(|p| p.is_file())
    })
}

/// The chromedriver process, killed when dropped.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn start_driver(driver: &Path) -> (Driver, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // Wrapped at once: every path (a panic too) kills and reaps it.
    let child = Driver(
        Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts"),
    );
    let url = format!("http://127.0.0.1:{port}");
    for _ in 0..DRIVER_START_TRIES {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return (child, url);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not listen on {url}");
}

async fn browser(driver_url: &str, chromium: &Path, downloads: &Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,1000", "--hide-scrollbars"],
            "prefs": {
                "download.default_directory": downloads,
                "download.prompt_for_download": false,
            },
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(driver_url)
        .await
        .expect("a WebDriver session on chromium")
}

/// Where the screenshots go: `docs/` when `FARE_UPDATE_SCREENSHOTS=1`,
/// else the test's temporary directory.
fn screenshots() -> PathBuf {
    match std::env::var("FARE_UPDATE_SCREENSHOTS").as_deref() {
        Ok("1") => Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs"),
        _ => Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots"),
    }
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "{name}: not a PNG screenshot");
    let dir = screenshots();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("ui-{name}.png")), png).unwrap();
}

async fn text(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn attr(c: &Client, css: &str, a: &str) -> String {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .attr(a)
        .await
        .unwrap()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_in_headless_chromium() {
    let required = std::env::var("FARE_REQUIRE_CHROMIUM").is_ok_and(|v| v == "1");
    let (Some(chromium), Some(driver)) = (
        find_binary(&["chromium", "chromium-browser"]),
        find_binary(&["chromedriver"]),
    ) else {
        assert!(
            !required,
            "FARE_REQUIRE_CHROMIUM=1 but chromium / chromedriver are not on PATH (apt-get install chromium chromium-driver)"
        );
        println!("SKIPPED: chromium and chromedriver not found (apt-get install chromium chromium-driver)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let downloads = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), config()).await;
    let mut readers = small_day(&srv).await;
    let (charged, _) = disputed_ride(&srv, &mut readers).await;
    // Reader 3 installs the bundle it is served at 21:06 and says so at
    // 21:09; reader 4 fetches once (holds none).
    let v = reader_fetches_bundle(&srv, &readers[2], 0).await;
    srv.clock.set(at(21, 9));
    reader_fetches_bundle(&srv, &readers[2], v).await;
    reader_fetches_bundle(&srv, &readers[3], 0).await;
    let (_driver, driver_url) = start_driver(&driver).await;
    let c = browser(&driver_url, &chromium, downloads.path()).await;
    let result = drive(&c, &srv, downloads.path(), charged).await;
    c.close().await.unwrap();
    result.unwrap();
}

async fn drive(
    c: &Client,
    srv: &Server,
    downloads: &Path,
    charged: (u32, u64),
) -> Result<(), fantoccini::error::CmdError> {
    login(c, srv).await?;
    overview(c, srv).await?;
    reports(c, srv, downloads).await?;
    payment(c, srv).await?;
    readers(c, srv).await?;
    incident(c, srv).await?;
    dispute(c, srv, charged).await?;
    run(c, srv).await?;
    phone(c).await
}

async fn login(c: &Client, srv: &Server) -> Result<(), fantoccini::error::CmdError> {
    c.goto(&format!("{}/ui", srv.url)).await?;
    assert!(c.current_url().await?.path().ends_with("/ui/login"));
    shot(c, "login").await;
    c.find(Locator::Css("input[name=name]"))
        .await?
        .send_keys("Ann")
        .await?;
    c.find(Locator::Css("input[name=token]"))
        .await?
        .send_keys(TOKEN)
        .await?;
    c.find(Locator::Css("#login button")).await?.click().await?;
    c.wait().for_element(Locator::Id("rides-today")).await?;
    // The token never reaches a URL.
    assert!(!c.current_url().await?.as_str().contains(TOKEN));
    Ok(())
}

async fn overview(c: &Client, srv: &Server) -> Result<(), fantoccini::error::CmdError> {
    let (_, daily) = srv.get(&format!("/v1/reports/daily?day={DAY}")).await;
    assert_eq!(
        text(c, "#rides-today").await,
        sum(&daily, "rides").to_string()
    );
    assert_eq!(
        attr(c, "#revenue-today .money", "data-minor").await,
        sum(&daily, "revenue_minor").to_string()
    );
    let (_, readers) = srv.get("/v1/readers").await;
    assert_eq!(
        text(c, "#open-incidents").await,
        sum(&readers, "open_incidents").to_string()
    );
    assert_eq!(text(c, "#readers-contact").await, "4");
    let (_, disputes) = srv.get("/v1/reports/disputes").await;
    assert_eq!(text(c, "#open-disputes").await, "1", "{disputes}");
    shot(c, "overview").await;
    Ok(())
}

async fn reports(
    c: &Client,
    srv: &Server,
    downloads: &Path,
) -> Result<(), fantoccini::error::CmdError> {
    c.goto(&format!("{}/ui/reports?from={DAY}&to={DAY}", srv.url))
        .await?;
    c.find(Locator::Css("svg#rides-per-hour")).await?;
    shot(c, "reports").await;
    c.find(Locator::Id("csv-download")).await?.click().await?;
    let file = downloads.join("daily.csv");
    let mut got = None;
    for _ in 0..DOWNLOAD_TRIES {
        if let Ok(s) = std::fs::read_to_string(&file) {
            if !s.is_empty() {
                got = Some(s);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got = got.expect("the CSV was downloaded");
    assert_eq!(got, api_daily_csv(srv).await);
    Ok(())
}

async fn payment(c: &Client, srv: &Server) -> Result<(), fantoccini::error::CmdError> {
    c.goto(&format!("{}/ui/accounts", srv.url)).await?;
    shot(c, "accounts").await;
    c.goto(&format!("{}/ui/accounts/carol", srv.url)).await?;
    assert_eq!(text(c, "#deny-state").await, "denied");
    let amount = c.find(Locator::Id("amount")).await?;
    amount.clear().await?;
    amount.send_keys("250").await?;
    c.find(Locator::Css("#pay-form button"))
        .await?
        .click()
        .await?;
    c.wait()
        .for_element(Locator::XPath(
            "//*[@id='deny-state'][normalize-space()='allowed']",
        ))
        .await?;
    let (_, st) = srv.get("/v1/accounts/carol").await;
    assert_eq!(
        (st["balance_minor"].as_i64(), st["revoked"].as_bool()),
        (Some(0), Some(false))
    );
    shot(c, "account").await;
    Ok(())
}

/// Reader 3's bundle as the API reports it, on the page; the payment just
/// published a newer one, so it is behind.
async fn readers(c: &Client, srv: &Server) -> Result<(), fantoccini::error::CmdError> {
    c.goto(&format!("{}/ui/readers", srv.url)).await?;
    let (_, api) = srv.get("/v1/readers").await;
    let held = &api[2]["bundle"];
    let row = "tr[data-reader='3']";
    assert_eq!(
        attr(c, &format!("{row} td.bundle-version"), "data-version").await,
        held["held_version"].to_string()
    );
    let version = text(c, &format!("{row} td.bundle-version")).await;
    assert_eq!(version, format!("{} behind", held["held_version"]));
    let age = srv.app.now() - held["held_served_unix_s"].as_u64().unwrap();
    assert_eq!(
        attr(c, &format!("{row} td.bundle-age"), "data-age-s").await,
        age.to_string()
    );
    assert_eq!(text(c, &format!("{row} td.bundle-age")).await, "3 min");
    assert_eq!(
        text(c, "tr[data-reader='4'] td.bundle-version").await,
        "none"
    );
    shot(c, "readers").await;
    Ok(())
}

async fn incident(c: &Client, srv: &Server) -> Result<(), fantoccini::error::CmdError> {
    c.goto(&format!("{}/ui/incidents", srv.url)).await?;
    let row = "tr[data-incident='4/sequence_gap/1']";
    c.find(Locator::Css(&format!("{row} input[name=note]")))
        .await?
        .send_keys("reader 4 re-sent from 1")
        .await?;
    c.find(Locator::Css(&format!(
        "{row} form[action='/ui/incidents/resolve'] button"
    )))
    .await?
    .click()
    .await?;
    c.wait()
        .for_element(Locator::XPath("//tr[@data-incident='4/sequence_gap/1']/td[contains(., 'resolved: reader 4 re-sent from 1 (by Ann')]"))
        .await?;
    let (_, readers) = srv.get("/v1/readers").await;
    assert_eq!(sum(&readers, "open_incidents"), 0);
    Ok(())
}

/// Awards the disputed fare by the rule (its pre-selected choice: reader 1,
/// the first sighting by reader time); the suspense account empties.
async fn dispute(
    c: &Client,
    srv: &Server,
    (r, s): (u32, u64),
) -> Result<(), fantoccini::error::CmdError> {
    let row = format!("tr[data-dispute='{r}/{s}']");
    let held = ledger_balance(srv, "suspense").await;
    assert!(held > 0);
    shot(c, "incidents").await;
    c.find(Locator::Css(&format!("{row} form.award button")))
        .await?
        .click()
        .await?;
    c.wait()
        .for_element(Locator::XPath(&format!(
            "//tr[@data-dispute='{r}/{s}']/td[contains(., 'awarded to reader 1 (city-bus)') and contains(., 'by Ann')]"
        )))
        .await?;
    let (_, d) = srv.get("/v1/reports/disputes").await;
    assert_eq!(d[0]["resolution"]["award_reader_id"], 1, "{d}");
    assert_eq!(ledger_balance(srv, "suspense").await, 0);
    Ok(())
}

async fn run(c: &Client, srv: &Server) -> Result<(), fantoccini::error::CmdError> {
    c.goto(&format!("{}/ui/runs", srv.url)).await?;
    c.find(Locator::Css("#start-run button"))
        .await?
        .click()
        .await?;
    let done = c
        .wait()
        .for_element(Locator::Css("#run-status[data-status='done']"))
        .await?;
    let id: String = c
        .current_url()
        .await?
        .path()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    let (_, api) = srv.get(&format!("/v1/settlement/runs/{id}")).await;
    assert_eq!(api["status"], "done");
    let rides = done.find(Locator::Id("run-rides")).await?.text().await?;
    assert_eq!(rides, api["summary"]["rides"].to_string());
    shot(c, "run").await;
    Ok(())
}

async fn phone(c: &Client) -> Result<(), fantoccini::error::CmdError> {
    c.set_window_size(390, 844).await?;
    let url = c.current_url().await?;
    c.goto(url.join("/ui")?.as_str()).await?;
    // Nothing wider than the phone's screen but the scrolling tables.
    let fits = c
        .execute(
            "return document.documentElement.scrollWidth <= window.innerWidth;",
            vec![],
        )
        .await?;
    assert_eq!(fits, json!(true), "the overview fits 390 px");
    shot(c, "overview-phone").await;
    Ok(())
}
