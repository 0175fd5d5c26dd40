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
pub async fn small_day(srv: &Server) {
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
    for r in [&r1, &r2, &r3] {
        let (s, v) = srv.upload(r.all()).await;
        assert_eq!(s, 200, "{v}");
    }
    let (s, v) = srv.upload(r4.batch(2, 2)).await;
    assert_eq!(s, 409, "a batch skipping sequence 1 is a gap: {v}");
    let run = srv.settle().await;
    assert_eq!(run["rides"], 12, "{run}");
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
