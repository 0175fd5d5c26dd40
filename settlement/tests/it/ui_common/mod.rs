//! Shared by the dashboard tests: a small day of rides (the hand-worked day
//! of e2e_day.rs, plus a reader that skips a sequence), a dashboard client
//! that keeps its session cookie and CSRF token, and HTML probes.
#![allow(dead_code)]

use crate::common::day::DayCast;
use crate::common::*;
use serde_json::Value;

/// The service day of the small day.
pub const DAY: &str = "2026-03-10";
/// Token of the metro operator's staff in [`config`].
pub const METRO_TOKEN: &str = "metro-staff-token-0123456789";

/// The test configuration with one operator's staff login.
pub fn config() -> fare_settlement::Config {
    let mut c = test_config();
    c.ui_staff.insert("metro".into(), METRO_TOKEN.into());
    c
}

/// Uploads and settles a small day: 11 rated rides on readers 1–3 (carol
/// ends over her credit limit, on the deny list), one forged code, and reader 4 uploading its
/// second ride without its first (an open `sequence_gap` incident).
/// Returns the four readers (index 0 is reader 1), their logs as uploaded.
pub async fn small_day(srv: &Server) -> [FakeReader; 4] {
    let DayCast {
        readers: [mut r1, mut r2, mut r3, mut r4],
        mut alice,
        mut bob,
        mut carol,
    } = DayCast::on(srv).await;
    r2.accept(carol.code(at(7, 0)), at(7, 0));
    r1.accept(carol.code(at(7, 20)), at(7, 20));
    r1.accept(alice.code(at(8, 0)), at(8, 0));
    r3.accept(alice.code(at(8, 30)), at(8, 30));
    r1.accept(bob.code(at(9, 0)), at(9, 0));
    r3.accept(bob.code(at(10, 0)), at(10, 0));
    r3.accept(alice.code(at(12, 0)), at(12, 0));
    r1.accept(alice.code(at(12, 30)), at(12, 30));
    r3.accept(carol.code(at(15, 0)), at(15, 0));
    r2.accept(alice.code(at(18, 0)), at(18, 0));
    r1.accept(alice.code(at(20, 0)), at(20, 0));
    // A code whose signature a reader should never have accepted: settlement
    // refuses it (a refusal by reason on the overview, an incident).
    let mut forged = carol.code(at(19, 10));
    let last = forged.len() - 1;
    forged[last] ^= 1;
    r2.accept(forged, at(19, 10));
    r4.accept(bob.code(at(19, 0)), at(19, 0));
    r4.accept(bob.code(at(19, 30)), at(19, 30));
    srv.clock.set(at(21, 0));
    srv.upload_all(&[&r1, &r2, &r3]).await;
    let (s, v) = srv.upload(r4.batch(2, 2)).await;
    assert_eq!(s, 409, "a batch skipping sequence 1 is a gap: {v}");
    let run = srv.settle().await;
    assert_eq!(run["rides"], 12, "{run}");
    [r1, r2, r3, r4]
}

/// A dispute, after [`small_day`] (the clock at 21:00): dave (enrolled
/// now) shows one ride code that reader 1 (city-bus) accepts at 21:05 and
/// reader 3 (metro) 20 s later by its clock; both are uploaded at 21:06
/// (the clock is left there) and settled. Returns the charged ride (reader 1's: the first by reader
/// time) as `(reader_id, reader_seq)` and the fare held in suspense.
pub async fn disputed_ride(srv: &Server, readers: &mut [FakeReader; 4]) -> ((u32, u64), i64) {
    let mut dave = srv.adult_rider("dave", 4).await;
    let code = dave.code(at(21, 5));
    srv.clock.set(at(21, 6));
    for (i, t) in [(0, at(21, 5)), (2, at(21, 5) + 20)] {
        let r = &mut readers[i];
        r.accept(code.clone(), t);
        let n = r.log.len() as u64;
        let (s, v) = srv.upload(r.batch(n, n)).await;
        assert_eq!(s, 200, "{v}");
    }
    srv.settle().await;
    let (_, d) = srv.get("/v1/reports/disputes").await;
    let d = &d.as_array().expect("disputes")[0];
    assert!(d["resolution"].is_null(), "{d}");
    let charged = &d["charged_ride"];
    let charged = (
        charged["reader_id"].as_u64().unwrap() as u32,
        charged["reader_seq"].as_u64().unwrap(),
    );
    assert_eq!(charged.0, 1, "first by reader time: {d}");
    (charged, d["held_minor"].as_i64().unwrap())
}

/// A bundle fetch as reader `r` sends it (signed with its key, at the
/// service's clock), saying it holds version `since`; returns the version
/// served (from the bundle, verified with the deployment's root key).
pub async fn reader_fetches_bundle(srv: &Server, r: &FakeReader, since: u64) -> u64 {
    static NONCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let target = format!("/v1/readers/{}/bundle?since={since}", r.id);
    let nonce = NONCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let auth = fare_credential::RequestAuth::sign_v1(
        &r.key,
        r.id,
        srv.app.now(),
        nonce,
        "GET",
        &target,
        b"",
    )
    .unwrap();
    let resp = srv
        .http
        .get(format!("{}{target}", srv.url))
        .header(
            fare_credential::request::REQUEST_AUTH_HEADER,
            auth.to_header(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let root = srv.app.keys.lock().unwrap().root_public_key();
    fare_credential::bundle::PublishedBundle::verify(&resp.bytes().await.unwrap(), &root)
        .unwrap()
        .bundle
        .bundle_version
}

/// `GET path` on the JSON API with bearer `token`.
pub async fn get_with_token(srv: &Server, path: &str, token: &str) -> reqwest::Response {
    srv.http
        .get(format!("{}{path}", srv.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

/// The API's daily report of [`DAY`] as CSV: what the dashboard's download
/// must equal byte for byte.
pub async fn api_daily_csv(srv: &Server) -> String {
    let path = format!("/v1/reports/daily?day={DAY}&format=csv");
    get_with_token(srv, &path, TOKEN)
        .await
        .text()
        .await
        .unwrap()
}

/// The ledger's balance of `account` (`GET /v1/reports/ledger`).
pub async fn ledger_balance(srv: &Server, account: &str) -> i64 {
    let (_, v) = srv.get("/v1/reports/ledger").await;
    assert_eq!(v["sum_minor"], 0, "the ledger balances: {v}");
    v["balances"][account].as_i64().unwrap_or(0)
}

/// A dashboard session over real HTTP (no redirects followed: each test
/// sees the 303s).
pub struct UiClient {
    pub base: String,
    pub http: reqwest::Client,
    pub cookie: String,
    pub csrf: String,
}

/// The value of cookie `name` set by a response.
pub fn set_cookie(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(str::to_string)
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The text of the `value` attribute of the first `name="csrf"` input.
pub fn csrf_of(html: &str) -> String {
    let i = html.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    html[i..i + html[i..].find('"').unwrap()].to_string()
}

/// Posts the login form; returns the response (for status and cookies).
pub async fn post_login(base: &str, name: &str, token: &str) -> reqwest::Response {
    let http = no_redirects();
    let page = http.get(format!("{base}/ui/login")).send().await.unwrap();
    let pre = set_cookie(&page, "fare_ui_login").expect("login cookie");
    let pre = pre.split(';').next().unwrap().to_string();
    let csrf = csrf_of(&page.text().await.unwrap());
    http.post(format!("{base}/ui/login"))
        .header("cookie", pre)
        .form(&[("csrf", csrf.as_str()), ("name", name), ("token", token)])
        .send()
        .await
        .unwrap()
}

impl UiClient {
    /// Logs in (asserting it worked).
    pub async fn login(base: &str, name: &str, token: &str) -> UiClient {
        let resp = post_login(base, name, token).await;
        assert_eq!(resp.status(), 303, "login");
        assert_eq!(resp.headers()["location"], "/ui");
        let c = set_cookie(&resp, "fare_ui_session").expect("session cookie");
        let mut ui = UiClient {
            base: base.into(),
            http: no_redirects(),
            cookie: c.split(';').next().unwrap().to_string(),
            csrf: String::new(),
        };
        let (s, html) = ui.get("/ui").await;
        assert_eq!(s, 200, "{html}");
        ui.csrf = csrf_of(&html);
        ui
    }

    /// GET: status and body.
    pub async fn get(&self, path: &str) -> (u16, String) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// POSTs a form with this session's CSRF token: status and `Location`
    /// (or the body when there is none).
    pub async fn post(&self, path: &str, fields: &[(&str, &str)]) -> (u16, String) {
        let mut f: Vec<(&str, &str)> = vec![("csrf", &self.csrf)];
        f.extend_from_slice(fields);
        self.post_raw(path, &f).await
    }

    /// POSTs exactly these fields.
    pub async fn post_raw(&self, path: &str, fields: &[(&str, &str)]) -> (u16, String) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .form(fields)
            .send()
            .await
            .unwrap();
        let s = r.status().as_u16();
        match r.headers().get("location") {
            Some(l) => (s, l.to_str().unwrap().to_string()),
            None => (s, r.text().await.unwrap()),
        }
    }
}

/// The inner text of the element with `id` (up to the next tag).
pub fn text_of(html: &str, id: &str) -> String {
    let at = html
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in the page"));
    let rest = &html[at..];
    let start = rest.find('>').unwrap() + 1;
    let rest = &rest[start..];
    rest[..rest.find('<').unwrap()].trim().to_string()
}

/// The `data-minor` amount inside the element with `id`.
pub fn minor_of(html: &str, id: &str) -> i64 {
    let at = html
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in the page"));
    let rest = &html[at..];
    let i = rest.find("data-minor=\"").unwrap() + 12;
    rest[i..i + rest[i..].find('"').unwrap()].parse().unwrap()
}

/// Sum of an integer field over a JSON array.
pub fn sum(v: &Value, field: &str) -> i64 {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x[field].as_i64().unwrap())
        .sum()
}
