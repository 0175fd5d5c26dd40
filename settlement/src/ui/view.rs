//! The page frame and small rendering helpers shared by every page.

use super::session::{Scope, Session};
use axum::http::StatusCode;
use maud::{html, Markup, DOCTYPE};

/// The navigation: (path, label, visible to one operator's staff).
const NAV: &[(&str, &str, bool)] = &[
    ("/ui", "Overview", true),
    ("/ui/reports", "Reports", true),
    ("/ui/accounts", "Accounts", false),
    ("/ui/readers", "Readers", true),
    ("/ui/incidents", "Incidents", true),
    ("/ui/runs", "Settlement runs", false),
];

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            // htmx must not inject a <style> (the CSP allows styles from /ui only).
            meta name="htmx-config" content=r#"{"includeIndicatorStyles":false}"#;
            title { (title) " · fare settlement" }
            link rel="stylesheet" href="/ui/assets/ui.css";
            script src="/ui/assets/htmx.min.js" defer {}
        }
    }
}

/// A full page for a logged-in session.
pub fn page(s: &Session, title: &str, body: Markup) -> Markup {
    let staff = matches!(s.scope, Scope::Operator(_));
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                header {
                    nav {
                        @for (href, label, for_staff) in NAV {
                            @if !staff || *for_staff { a href=(href) { (label) } }
                        }
                    }
                    div.who {
                        span #who { (s.name) " · " (s.scope.label()) }
                        form method="post" action="/ui/logout" {
                            (csrf_field(s))
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main { h1 { (title) } (body) }
            }
        }
    }
}

/// A page without a session (login, errors).
pub fn bare_page(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body { main { h1 { (title) } (body) } }
        }
    }
}

/// The error page.
pub fn error_page(status: StatusCode, code: &str, message: &str) -> Markup {
    bare_page(
        &format!(
            "{} {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        ),
        html! {
            p.error { code #error-code { (code) } ": " span #error-message { (message) } }
            p { a href="/ui" { "Back to the overview" } }
        },
    )
}

/// The hidden CSRF field of every form.
pub fn csrf_field(s: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(s.csrf); }
}

/// Money in minor units as `12.34` (two decimals: the tariff's currency
/// codes here all have two), the exact minor amount kept in `data-minor`.
pub fn money(minor: i64) -> Markup {
    let sign = if minor < 0 { "-" } else { "" };
    let a = minor.unsigned_abs();
    html! { span.money data-minor=(minor) { (sign) (a / 100) "." (format!("{:02}", a % 100)) } }
}

/// A duration in seconds, short (`45 s`, `12 min`, `3 h`, `2 d`).
pub fn ago(seconds: u64) -> String {
    match seconds {
        s if s < 120 => format!("{s} s"),
        s if s < 2 * 3600 => format!("{} min", s / 60),
        s if s < 2 * 86_400 => format!("{} h", s / 3600),
        s => format!("{} d", s / 86_400),
    }
}

/// Unix seconds as UTC `YYYY-MM-DD HH:MM`.
pub fn utc(unix_s: u64) -> String {
    jiff::Timestamp::from_second(unix_s as i64)
        .map(|t| t.strftime("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|_| unix_s.to_string())
}

/// A table in a scroller (wide tables scroll sideways on a phone).
pub fn table(id: &str, head: &[&str], rows: Markup) -> Markup {
    html! {
        div.scroll {
            table id=(id) {
                thead { tr { @for h in head { th { (h) } } } }
                tbody { (rows) }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_keeps_sign_and_cents() {
        assert!(money(-250).into_string().contains(">-2.50<"));
        assert!(money(5).into_string().contains(">0.05<"));
        assert!(money(123_456)
            .into_string()
            .contains("data-minor=\"123456\""));
    }
}
