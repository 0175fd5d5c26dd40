//! The dashboard (/ui) over real HTTP on loopback: every page and form,
//! with its key numbers checked against the JSON API after a small day of
//! rides; login, sessions, CSRF and the per-operator scope.

use crate::common::*;
use crate::ui_common::*;
use serde_json::Value;

async fn day() -> (tempfile::TempDir, Server, [FakeReader; 4]) {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), config()).await;
    let readers = small_day(&srv).await;
    (dir, srv, readers)
}

/// The small day with `name` signed in to the dashboard with `token`:
/// where most tests here begin.
async fn day_signed_in(name: &str, token: &str) -> (tempfile::TempDir, Server, UiClient) {
    let (dir, srv, _) = day().await;
    let ui = UiClient::login(&srv.url, name, token).await;
    (dir, srv, ui)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overview_numbers_equal_the_api() {
    let (_d, srv, ui) = day_signed_in("Ann", TOKEN).await;
    let (s, html) = ui.get("/ui").await;
    assert_eq!(s, 200);
    let (_, daily) = srv.get(&format!("/v1/reports/daily?day={DAY}")).await;
    assert_eq!(text_of(&html, "service-day"), DAY);
    assert_eq!(
        text_of(&html, "rides-today"),
        sum(&daily, "rides").to_string()
    );
    assert_eq!(
        minor_of(&html, "revenue-today"),
        sum(&daily, "revenue_minor")
    );
    assert_eq!(
        minor_of(&html, "revenue-today"),
        850,
        "200 + 200 + 450: e2e_day's hand-worked day"
    );
    assert_eq!(
        text_of(&html, "refused-today"),
        sum(&daily, "refused_rides").to_string()
    );
    let (_, readers) = srv.get("/v1/readers").await;
    let open: i64 = sum(&readers, "open_incidents");
    assert_eq!(open, 1, "reader 4's gap");
    assert_eq!(text_of(&html, "open-incidents"), open.to_string());
    // All four readers uploaded at 21:00 (the clock): all in contact.
    assert_eq!(text_of(&html, "readers-contact"), "4");
    assert_eq!(text_of(&html, "readers-stale"), "0");
    // Two hours later they are silent; a day later stale.
    srv.clock.set(at(23, 0));
    let (_, html) = ui.get("/ui").await;
    assert_eq!(text_of(&html, "readers-silent"), "4");
    assert_eq!(text_of(&html, "upload-lag"), "2 h");
    // Two days on, today is empty and the small day is one `?day=` away
    // (how an operator looks back, or opens the simulator's kept data).
    srv.clock.set(at(21, 0) + 2 * 86_400);
    let ui = UiClient::login(&srv.url, "Ann", TOKEN).await; // the session expired
    let (_, html) = ui.get("/ui").await;
    assert_ne!(text_of(&html, "service-day"), DAY);
    assert_eq!(text_of(&html, "rides-today"), "0");
    let (s, html) = ui.get(&format!("/ui?day={DAY}")).await;
    assert_eq!(s, 200);
    assert_eq!(text_of(&html, "service-day"), DAY);
    assert_eq!(minor_of(&html, "revenue-today"), 850);
    assert_eq!(text_of(&html, "readers-stale"), "4", "contact is as of now");
    let (s, html) = ui.get("/ui?day=10-03-2026").await;
    assert_eq!(s, 400);
    assert!(
        html.contains("day `10-03-2026`: expected YYYY-MM-DD"),
        "{html}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_page_csv_and_chart_equal_the_api() {
    let (_d, srv, ui) = day_signed_in("Ann", TOKEN).await;
    let (s, html) = ui.get(&format!("/ui/reports?from={DAY}&to={DAY}")).await;
    assert_eq!(s, 200, "{html}");
    let (_, daily) = srv.get(&format!("/v1/reports/daily?day={DAY}")).await;
    assert_eq!(
        text_of(&html, "report-rides"),
        sum(&daily, "rides").to_string()
    );
    assert_eq!(
        minor_of(&html, "report-revenue"),
        sum(&daily, "revenue_minor")
    );
    // The chart's bars add up to the rides, at the local hours they happened.
    let bars: Vec<(u64, u64)> = html
        .match_indices("data-hour=\"")
        .map(|(i, _)| {
            let rest = &html[i + 11..];
            let h: u64 = rest[..rest.find('"').unwrap()].parse().unwrap();
            let j = rest.find("data-rides=\"").unwrap() + 12;
            (
                h,
                rest[j..j + rest[j..].find('"').unwrap()].parse().unwrap(),
            )
        })
        .collect();
    assert_eq!(bars.len(), 24);
    assert_eq!(
        bars.iter().map(|b| b.1 as i64).sum::<i64>(),
        sum(&daily, "rides")
    );
    assert_eq!(bars[8].1, 2, "08:00 and 08:30 (Asia/Shanghai)");
    // The CSV is the API's, byte for byte.
    let (s, csv) = ui
        .get(&format!("/ui/reports.csv?from={DAY}&to={DAY}"))
        .await;
    assert_eq!(s, 200);
    assert_eq!(csv, api_daily_csv(&srv).await);
    assert!(csv.lines().count() > 1, "{csv}");
    // A range without rides; a bad date.
    let (_, html) = ui.get("/ui/reports?from=2026-03-11").await;
    assert_eq!(text_of(&html, "report-rides"), "0");
    let (s, html) = ui.get("/ui/reports?from=10%2F03%2F2026").await;
    assert_eq!(s, 400);
    assert!(text_of(&html, "error-message").contains("from `10/03/2026`: expected YYYY-MM-DD"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_payment_and_freeze_go_through_the_api_operations() {
    let (_d, srv, ui) = day_signed_in("Ann", TOKEN).await;
    let (s, html) = ui.get("/ui/accounts?q=car").await;
    assert_eq!(s, 200);
    assert!(html.contains("href=\"/ui/accounts/carol\""));
    assert!(!html.contains("href=\"/ui/accounts/alice\""));
    let (s, html) = ui.get("/ui/accounts/carol").await;
    assert_eq!(s, 200);
    let (_, st) = srv.get("/v1/accounts/carol").await;
    assert_eq!(
        minor_of(&html, "balance"),
        st["balance_minor"].as_i64().unwrap()
    );
    assert_eq!(minor_of(&html, "debt"), 250);
    // The statement's signed amounts add up to the API's balance.
    let postings = &html[html.find("id=\"postings\"").unwrap()..];
    let postings = &postings[..postings.find("</table>").unwrap()];
    let total: i64 = postings
        .match_indices("data-minor=\"")
        .map(|(i, _)| {
            let v = &postings[i + 12..];
            v[..v.find('"').unwrap()].parse::<i64>().unwrap()
        })
        .sum();
    assert_eq!(total, st["balance_minor"].as_i64().unwrap());
    assert_eq!(
        postings.matches("<tr>").count(),
        st["postings"].as_array().unwrap().len() + 1
    );
    assert_eq!(text_of(&html, "deny-state"), "denied");
    assert_eq!(st["revoked"], true);
    let (_, exp) = srv.get("/v1/reports/exposure").await;
    let carol = exp
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["account_id"] == "carol")
        .unwrap();
    assert_eq!(
        minor_of(&html, "exposure"),
        carol["exposure_bound_minor"].as_i64().unwrap()
    );

    // A bad amount is refused with the field named; nothing recorded.
    let (s, body) = ui
        .post(
            "/ui/accounts/carol/payments",
            &[("payment_id", "p1"), ("amount_minor", "2.50")],
        )
        .await;
    assert_eq!(s, 400);
    assert!(body.contains("amount_minor `2.50`"), "{body}");
    assert_eq!(srv.balance("carol").await, -250);
    // Paying the debt takes carol off the deny list.
    let (s, loc) = ui
        .post(
            "/ui/accounts/carol/payments",
            &[("payment_id", "p1"), ("amount_minor", "250")],
        )
        .await;
    assert_eq!((s, loc.as_str()), (303, "/ui/accounts/carol"));
    let (_, st) = srv.get("/v1/accounts/carol").await;
    assert_eq!(
        (st["balance_minor"].as_i64(), st["revoked"].as_bool()),
        (Some(0), Some(false))
    );
    let (_, html) = ui.get("/ui/accounts/carol").await;
    assert_eq!(text_of(&html, "deny-state"), "allowed");
    // The same payment id with another amount: the API's refusal, as a page.
    let (s, body) = ui
        .post(
            "/ui/accounts/carol/payments",
            &[("payment_id", "p1"), ("amount_minor", "10")],
        )
        .await;
    assert_eq!(s, 409, "{body}");
    assert!(body.contains("payment_id_reused"));
    // Freeze: on the deny list again, as the API reports.
    let (s, _) = ui
        .post("/ui/accounts/carol/freeze", &[("frozen", "true")])
        .await;
    assert_eq!(s, 303);
    let (_, st) = srv.get("/v1/accounts/carol").await;
    assert_eq!(
        (st["account"]["frozen"].as_bool(), st["revoked"].as_bool()),
        (Some(true), Some(true))
    );
    let (s, _) = ui.get("/ui/accounts/nobody").await;
    assert_eq!(s, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_incidents_and_runs() {
    let (_d, srv, ui) = day_signed_in("Ann", TOKEN).await;
    let (s, html) = ui.get("/ui/readers").await;
    assert_eq!(s, 200);
    let (_, readers) = srv.get("/v1/readers").await;
    for r in readers.as_array().unwrap() {
        let id = r["reader"]["reader_id"].as_u64().unwrap();
        let row = &html[html.find(&format!("data-reader=\"{id}\"")).unwrap()..];
        let acked = &row[row.find("class=\"num acked\">").unwrap() + 18..];
        assert_eq!(
            acked[..acked.find('<').unwrap()],
            r["acked_seq"].to_string(),
            "reader {id}"
        );
    }
    // Retire reader 2.
    let (s, _) = ui.post("/ui/readers/2/retire", &[]).await;
    assert_eq!(s, 303);
    let (_, readers) = srv.get("/v1/readers").await;
    assert_eq!(readers[1]["reader"]["retired"], true);

    // Incidents: the gap is open; acknowledge, then resolve, with who did it.
    let (s, html) = ui.get("/ui/incidents").await;
    assert_eq!(s, 200);
    assert!(
        html.contains("data-incident=\"4/sequence_gap/1\""),
        "{html}"
    );
    let gap = [("reader_id", "4"), ("kind", "sequence_gap"), ("seq", "1")];
    let (s, _) = ui.post("/ui/incidents/acknowledge", &gap).await;
    assert_eq!(s, 303);
    let (_, html) = ui.get("/ui/incidents").await;
    assert!(
        html.contains("acknowledged by Ann (all operators)"),
        "{html}"
    );
    let mut f = gap.to_vec();
    f.push(("note", "reader 4 re-sent from 1"));
    let (s, _) = ui.post("/ui/incidents/resolve", &f).await;
    assert_eq!(s, 303);
    let (_, readers) = srv.get("/v1/readers").await;
    assert_eq!(sum(&readers, "open_incidents"), 0);
    let (_, html) = ui.get("/ui/incidents").await;
    assert!(
        html.contains("resolved: reader 4 re-sent from 1 (by Ann (all operators))"),
        "{html}"
    );
    let (s, body) = ui
        .post(
            "/ui/incidents/resolve",
            &[
                ("reader_id", "4"),
                ("kind", "chain_fork"),
                ("seq", "9"),
                ("note", "x"),
            ],
        )
        .await;
    assert_eq!(s, 404, "{body}");
    assert!(body.contains("unknown_incident"));

    // A settlement run: started here, followed here, the same in the API.
    let (s, loc) = ui.post("/ui/runs", &[]).await;
    assert_eq!(s, 303);
    let id = loc.strip_prefix("/ui/runs/").unwrap().to_string();
    let status = loop {
        let (s, frag) = ui.get(&format!("/ui/runs/{id}/status")).await;
        assert_eq!(s, 200);
        if !frag.contains("data-status=\"running\"") {
            break frag;
        }
        assert!(
            frag.contains("hx-trigger=\"every 1s\""),
            "a running run polls: {frag}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(status.contains("data-status=\"done\""), "{status}");
    assert!(
        !status.contains("hx-trigger"),
        "a finished run stops polling"
    );
    let (_, api) = srv.get(&format!("/v1/settlement/runs/{id}")).await;
    assert_eq!(api["status"], "done");
    assert_eq!(
        text_of(&status, "run-rides"),
        api["summary"]["rides"].to_string()
    );
    let (s, html) = ui.get("/ui/runs").await;
    assert_eq!(s, 200);
    assert!(html.contains(&format!("href=\"/ui/runs/{id}\"")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_sessions_and_csrf() {
    let (_d, srv, _) = day().await;
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // Without a session every page sends to the login page.
    for p in [
        "/ui",
        "/ui/reports",
        "/ui/accounts",
        "/ui/accounts/carol",
        "/ui/readers",
        "/ui/incidents",
        "/ui/runs",
        "/ui/runs/1",
        "/ui/reports.csv",
    ] {
        let r = plain.get(format!("{}{p}", srv.url)).send().await.unwrap();
        assert_eq!(
            (
                r.status().as_u16(),
                r.headers()["location"].to_str().unwrap()
            ),
            (303, "/ui/login"),
            "{p}"
        );
    }
    // A wrong token: 401, no session cookie, the token not echoed.
    let r = post_login(&srv.url, "Mallory", "guess-guess-guess").await;
    assert_eq!(r.status(), 401);
    assert!(set_cookie(&r, "fare_ui_session").is_none());
    assert!(!r.text().await.unwrap().contains("guess-guess-guess"));
    // A login without the login form's cookie is refused (login CSRF).
    let r = plain
        .post(format!("{}/ui/login", srv.url))
        .form(&[("csrf", "x"), ("name", "a"), ("token", TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // The session cookie: HttpOnly, SameSite=Strict; the token nowhere.
    let r = post_login(&srv.url, "Ann", TOKEN).await;
    let c = set_cookie(&r, "fare_ui_session").unwrap();
    assert!(
        c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Path=/ui"),
        "{c}"
    );
    assert!(!c.contains(TOKEN) && !r.headers()["location"].to_str().unwrap().contains(TOKEN));
    let ui = UiClient::login(&srv.url, "Ann", TOKEN).await;
    for p in [
        "/ui",
        "/ui/reports",
        "/ui/accounts/carol",
        "/ui/readers",
        "/ui/incidents",
        "/ui/runs",
    ] {
        let (s, html) = ui.get(p).await;
        assert_eq!(s, 200, "{p}");
        assert!(!html.contains(TOKEN), "{p} shows the token");
        assert!(html.contains("name=\"viewport\""), "{p}: phone width");
    }
    // A form without the session's CSRF token does nothing.
    let (s, body) = ui
        .post_raw(
            "/ui/accounts/carol/payments",
            &[
                ("csrf", "0000"),
                ("payment_id", "p9"),
                ("amount_minor", "250"),
            ],
        )
        .await;
    assert_eq!(
        (s, text_of(&body, "error-code").as_str()),
        (403, "csrf_rejected")
    );
    let (s, _) = ui.post_raw("/ui/readers/1/retire", &[]).await;
    assert_eq!(s, 400, "no csrf field at all");
    assert_eq!(srv.balance("carol").await, -250);
    let (_, readers) = srv.get("/v1/readers").await;
    assert_eq!(readers[0]["reader"]["retired"], false);
    // Sessions expire on the injected clock (8 h idle).
    srv.clock.set(at(21, 0) + 8 * 3600);
    let (s, _) = ui.get("/ui").await;
    assert_eq!(s, 303);
    // Logout ends a session.
    let ui = UiClient::login(&srv.url, "Ann", TOKEN).await;
    let (s, loc) = ui.post("/ui/logout", &[]).await;
    assert_eq!((s, loc.as_str()), (303, "/ui/login"));
    let (s, _) = ui.get("/ui").await;
    assert_eq!(s, 303);
}

/// A form far over `MAX_FORM_BYTES` (a pasted file, say) gets the 413 page
/// that says why, every time (drained, not reset while the browser is still
/// sending it), and does nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_form_gets_the_413_page() {
    let (_d, srv, ui) = day_signed_in("Ann", TOKEN).await;
    let before = srv.balance("carol").await;
    let note = "x".repeat(900 * 1024);
    for round in 0..20 {
        for path in ["/ui/accounts/carol/payments", "/ui/login"] {
            let r = ui
                .http
                .post(format!("{}{path}", srv.url))
                .header("cookie", &ui.cookie)
                .form(&[
                    ("csrf", ui.csrf.as_str()),
                    ("payment_id", "big-1"),
                    ("amount_minor", "250"),
                    ("note", &note),
                ])
                .send()
                .await
                .unwrap_or_else(|e| panic!("round {round}: {path}: {e:?}"));
            assert_eq!(r.status(), 413, "round {round}: {path}");
            let html = r.text().await.unwrap();
            assert_eq!(text_of(&html, "error-code"), "body_too_large", "{path}");
        }
    }
    assert_eq!(srv.balance("carol").await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operators_staff_see_only_its_readers_and_revenue() {
    let (_d, srv, ui) = day_signed_in("Mei", METRO_TOKEN).await;
    let (_, daily) = srv.get(&format!("/v1/reports/daily?day={DAY}")).await;
    let metro: Vec<Value> = daily
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["operator"] == "metro")
        .cloned()
        .collect();
    let metro = Value::Array(metro);
    let (s, html) = ui.get("/ui").await;
    assert_eq!(s, 200);
    assert_eq!(
        text_of(&html, "rides-today"),
        sum(&metro, "rides").to_string()
    );
    assert_eq!(
        minor_of(&html, "revenue-today"),
        sum(&metro, "revenue_minor")
    );
    assert_eq!(minor_of(&html, "revenue-today"), 450);
    assert_eq!(text_of(&html, "readers-contact"), "2", "readers 3 and 4");
    assert!(
        !html.contains("href=\"/ui/accounts\""),
        "no accounts link for staff"
    );
    let (_, html) = ui.get("/ui/reports").await;
    assert!(!html.contains("city-bus"));
    let (_, csv) = ui.get("/ui/reports.csv").await;
    assert!(!csv.contains("city-bus") && csv.contains("metro"), "{csv}");
    let (_, html) = ui.get("/ui/readers").await;
    assert!(html.contains("data-reader=\"3\"") && html.contains("data-reader=\"4\""));
    assert!(!html.contains("data-reader=\"1\"") && !html.contains("data-reader=\"2\""));
    // Deployment-wide pages and other operators' readers are refused.
    for p in ["/ui/accounts", "/ui/accounts/carol", "/ui/runs"] {
        let (s, body) = ui.get(p).await;
        assert_eq!(
            (s, text_of(&body, "error-code").as_str()),
            (403, "out_of_scope"),
            "{p}"
        );
    }
    assert_eq!(ui.post("/ui/runs", &[]).await.0, 403);
    assert_eq!(ui.post("/ui/readers/1/retire", &[]).await.0, 403);
    assert_eq!(
        ui.post(
            "/ui/accounts/carol/payments",
            &[("payment_id", "x"), ("amount_minor", "1")]
        )
        .await
        .0,
        403
    );
    let (_, readers) = srv.get("/v1/readers").await;
    assert_eq!(readers[0]["reader"]["retired"], false);
    // Its own reader's incident it may resolve.
    let f = [
        ("reader_id", "4"),
        ("kind", "sequence_gap"),
        ("seq", "1"),
        ("note", "checked"),
    ];
    assert_eq!(ui.post("/ui/incidents/resolve", &f).await.0, 303);
    // The JSON API takes none of the staff tokens.
    let r = get_with_token(&srv, "/v1/readers", METRO_TOKEN).await;
    assert_eq!(r.status(), 401);
}

/// The `data-*` attribute `attr` of the readers-page cell `class` in reader `id`'s row.
fn reader_cell(html: &str, id: u32, class: &str, attr: &str) -> (Option<String>, String) {
    let row = &html[html.find(&format!("data-reader=\"{id}\"")).unwrap()..];
    let row = &row[..row.find("</tr>").unwrap()];
    let cell = &row[row.find(&format!("class=\"num {class}\"")).unwrap()..];
    let tag = &cell[..cell.find('>').unwrap()];
    let value = tag.find(&format!("{attr}=\"")).map(|i| {
        let v = &tag[i + attr.len() + 2..];
        v[..v.find('"').unwrap()].to_string()
    });
    let text = &cell[cell.find('>').unwrap() + 1..cell.find("</td>").unwrap()];
    (value, text.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_page_shows_the_bundle_each_reader_holds_and_its_age() {
    let (_d, srv, r) = day().await;
    // Reader 3 fetches with nothing installed at 21:00, installs what it
    // got, and says so at its next fetch four minutes later (within
    // bundle_refresh_s, so nothing newer is published meanwhile).
    let v = reader_fetches_bundle(&srv, &r[2], 0).await;
    srv.clock.set(at(21, 4));
    assert_eq!(reader_fetches_bundle(&srv, &r[2], v).await, v);
    // Reader 4 fetched once: it holds none yet.
    assert_eq!(reader_fetches_bundle(&srv, &r[3], 0).await, v);
    // An operator fetching reader 1's bundle says nothing about reader 1.
    let resp = get_with_token(&srv, &format!("/v1/readers/1/bundle?since={v}"), TOKEN).await;
    assert_eq!(resp.status(), 200);

    let (_, api) = srv.get("/v1/readers").await;
    assert_eq!(
        api[2]["bundle"],
        serde_json::json!({"held_version": v, "reported_unix_s": at(21, 4),
            "held_served_unix_s": at(21, 0), "served_version": v, "served_first_unix_s": at(21, 0)})
    );
    assert_eq!(api[3]["bundle"]["held_version"], 0);
    assert!(api[0]["bundle"].is_null() && api[1]["bundle"].is_null());
    let ui = UiClient::login(&srv.url, "Ann", TOKEN).await;
    let (s, html) = ui.get("/ui/readers").await;
    assert_eq!(s, 200);
    assert_eq!(
        reader_cell(&html, 3, "bundle-version", "data-version"),
        (Some(v.to_string()), v.to_string())
    );
    assert_eq!(
        reader_cell(&html, 3, "bundle-age", "data-age-s"),
        (Some("240".into()), "4 min".into())
    );
    assert_eq!(
        reader_cell(&html, 4, "bundle-version", "data-version"),
        (Some("0".into()), "none".into())
    );
    assert_eq!(
        reader_cell(&html, 1, "bundle-version", "data-version"),
        (None, "never fetched".into())
    );

    // Carol pays: the deny list changes, a new version is published, and
    // reader 3 is behind until it installs it.
    let (s, _) = ui
        .post(
            "/ui/accounts/carol/payments",
            &[("payment_id", "p1"), ("amount_minor", "250")],
        )
        .await;
    assert_eq!(s, 303);
    let (_, html) = ui.get("/ui/readers").await;
    let published: u64 = text_of(&html, "bundle-version").parse().unwrap();
    assert!(published > v);
    assert!(reader_cell(&html, 3, "bundle-version", "data-version")
        .1
        .contains("behind"));
    srv.clock.set(at(21, 6));
    assert_eq!(reader_fetches_bundle(&srv, &r[2], v).await, published);
    srv.clock.set(at(21, 8));
    reader_fetches_bundle(&srv, &r[2], published).await;
    let (_, html) = ui.get("/ui/readers").await;
    assert_eq!(
        reader_cell(&html, 3, "bundle-version", "data-version"),
        (Some(published.to_string()), published.to_string())
    );
    assert_eq!(
        reader_cell(&html, 3, "bundle-age", "data-age-s").0,
        Some("120".into()),
        "dated by the serving at 21:06"
    );
    let (_, api) = srv.get("/v1/readers").await;
    assert_eq!(api[2]["bundle"]["held_version"], published);
    // And in /metrics, beside the readers' other gauges.
    let m = srv.metrics().await;
    assert!(
        m.contains(&format!(
            "settlement_reader_bundle_version{{reader=\"3\"}} {published}"
        )),
        "{m}"
    );
    assert!(
        m.contains(&format!(
            "settlement_reader_bundle_served_unix_s{{reader=\"3\"}} {}",
            at(21, 6)
        )),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disputed_fare_is_awarded_from_the_incidents_page_with_who_did_it() {
    let (_d, srv, mut r) = day().await;
    let ((cr, cs), held) = disputed_ride(&srv, &mut r).await;
    assert!(held > 0);
    assert_eq!(ledger_balance(&srv, "suspense").await, held);
    let metro_before = ledger_balance(&srv, "operator:metro").await;
    let row = format!("data-dispute=\"{cr}/{cs}\"");
    let action = format!("/ui/disputes/{cr}/{cs}/award");

    // Staff of metro see the dispute (reader 3 is theirs) but may not award it.
    let mei = UiClient::login(&srv.url, "Mei", METRO_TOKEN).await;
    let (_, html) = mei.get("/ui/incidents").await;
    assert!(html.contains(&row), "{html}");
    assert!(!html.contains(&action), "no award form for staff");
    let (s, body) = mei.post(&action, &[("award_reader_id", "3")]).await;
    assert_eq!(
        (s, text_of(&body, "error-code").as_str()),
        (403, "out_of_scope")
    );

    let ui = UiClient::login(&srv.url, "Ann", TOKEN).await;
    let (_, html) = ui.get("/ui").await;
    assert_eq!(text_of(&html, "open-disputes"), "1");
    let (s, html) = ui.get("/ui/incidents").await;
    assert_eq!(s, 200);
    let tr = &html[html.find(&row).unwrap()..];
    let tr = &tr[..tr.find("</tr>").unwrap()];
    assert!(tr.contains(&format!("action=\"{action}\"")), "{tr}");
    assert!(
        tr.contains("<option value=\"1\" selected>reader 1 (city-bus) — the rule's choice"),
        "the rule's choice is pre-selected: {tr}"
    );
    assert!(tr.contains("<option value=\"3\">reader 3 (metro)"), "{tr}");
    assert!(tr.contains(&format!("data-minor=\"{held}\"")), "held: {tr}");

    // Refused: without the session's CSRF token, a bad field, a reader
    // not in the dispute. Nothing moves.
    let (s, _) = ui
        .post_raw(&action, &[("csrf", "00"), ("award_reader_id", "3")])
        .await;
    assert_eq!(s, 403);
    let (s, body) = ui.post(&action, &[("award_reader_id", "three")]).await;
    assert_eq!(s, 400);
    assert!(text_of(&body, "error-message").contains("award_reader_id `three`"));
    let (s, body) = ui.post(&action, &[("award_reader_id", "2")]).await;
    assert_eq!(
        (s, text_of(&body, "error-code").as_str()),
        (400, "invalid_field")
    );
    let (s, body) = ui
        .post("/ui/disputes/4/1/award", &[("award_reader_id", "4")])
        .await;
    assert_eq!(
        (s, text_of(&body, "error-code").as_str()),
        (404, "unknown_dispute")
    );
    assert_eq!(ledger_balance(&srv, "suspense").await, held);

    // Awarded to reader 3 (not the rule's choice): metro is paid once.
    let (s, loc) = ui.post(&action, &[("award_reader_id", "3")]).await;
    assert_eq!((s, loc.as_str()), (303, "/ui/incidents"));
    let (_, d) = srv.get("/v1/reports/disputes").await;
    assert_eq!(d[0]["resolution"]["award_reader_id"], 3, "{d}");
    assert_eq!(d[0]["resolution"]["operator"], "metro", "{d}");
    assert_eq!(ledger_balance(&srv, "suspense").await, 0);
    assert_eq!(
        ledger_balance(&srv, "operator:metro").await,
        metro_before + held
    );
    let (_, html) = ui.get("/ui/incidents").await;
    let tr = &html[html.find(&row).unwrap()..];
    let tr = &tr[..tr.find("</tr>").unwrap()];
    assert!(tr.contains("awarded to reader 3 (metro)"), "{tr}");
    assert!(tr.contains("by Ann (all operators)"), "{tr}");
    assert!(
        !tr.contains("<form"),
        "a resolved dispute has no form: {tr}"
    );
    // Another award: the API's refusal, as a page; the first stands.
    let (s, body) = ui.post(&action, &[("award_reader_id", "1")]).await;
    assert_eq!(
        (s, text_of(&body, "error-code").as_str()),
        (409, "dispute_resolved")
    );
    assert_eq!(ledger_balance(&srv, "suspense").await, 0);
    let (_, html) = ui.get("/ui").await;
    assert_eq!(text_of(&html, "open-disputes"), "0");
}
