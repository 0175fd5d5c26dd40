//! Dashboard sessions: login with a token, a server-side session behind an
//! `HttpOnly; SameSite=Strict` cookie, a CSRF token per session, expiry on
//! the application's (injected) clock.
//!
//! Who logs in with what, and what they see (the scope rule):
//! * the deployment's `operator_token` → [`Scope::All`]: every page, every
//!   operator's readers and revenue, accounts and settlement runs;
//! * a token of `ui_staff` (config: operator id → token) → [`Scope::Operator`]:
//!   only rides, revenue, readers and incidents of that operator's readers;
//!   accounts (passengers ride with every operator) and settlement runs
//!   (one run settles every operator) are refused with 403.

use rand_core::RngCore;
use std::collections::HashMap;

/// Session lifetime after the last request (idle expiry), seconds.
pub const SESSION_IDLE_S: u64 = 8 * 3600;
/// Longest a session lives however busy, seconds.
pub const SESSION_MAX_S: u64 = 24 * 3600;
/// Sessions kept at once; past it the one idle longest is dropped.
pub const MAX_SESSIONS: usize = 1024;
/// Longest name a person may give at login (shown as "who did it").
pub const MAX_NAME_BYTES: usize = 64;
/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "fare_ui_session";
/// Name of the login form's double-submit cookie (CSRF before a session exists).
pub const LOGIN_COOKIE: &str = "fare_ui_login";

/// What a session may see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// The deployment operator: everything.
    All,
    /// Staff of one operator (tariff operator id): its readers and revenue.
    Operator(String),
}

impl Scope {
    /// Whether rides / readers of `operator` are visible.
    pub fn sees(&self, operator: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Operator(o) => o == operator,
        }
    }
    /// Short label for pages and "who did it".
    pub fn label(&self) -> String {
        match self {
            Scope::All => "all operators".into(),
            Scope::Operator(o) => format!("operator {o}"),
        }
    }
}

/// One logged-in person.
#[derive(Clone, Debug)]
pub struct Session {
    /// Name given at login.
    pub name: String,
    /// What they see.
    pub scope: Scope,
    /// CSRF token of every form of this session (hex).
    pub csrf: String,
    created_unix_s: u64,
    last_seen_unix_s: u64,
}

impl Session {
    /// "who did it" as recorded beside an action.
    pub fn who(&self) -> String {
        format!("{} ({})", self.name, self.scope.label())
    }
    /// Whether `token` is this session's CSRF token.
    pub fn csrf_ok(&self, token: &str) -> bool {
        // Digests: the comparison time does not depend on the token.
        blake3::hash(token.as_bytes()) == blake3::hash(self.csrf.as_bytes())
    }
}

/// The server-side session table (keys: the cookie's random id, hashed so a
/// memory dump holds no usable cookie).
#[derive(Debug, Default)]
pub struct Sessions {
    by_id: HashMap<[u8; 32], Session>,
}

/// Random 32 bytes as hex.
pub fn random_hex(rng: &mut impl RngCore) -> String {
    let mut b = [0u8; 32];
    rng.fill_bytes(&mut b);
    hex::encode(b)
}

fn key(cookie: &str) -> [u8; 32] {
    *blake3::hash(cookie.as_bytes()).as_bytes()
}

impl Sessions {
    /// Opens a session; returns the cookie value.
    pub fn open(&mut self, name: String, scope: Scope, now: u64, rng: &mut impl RngCore) -> String {
        self.by_id.retain(|_, s| live(s, now));
        if self.by_id.len() >= MAX_SESSIONS {
            let oldest = self
                .by_id
                .iter()
                .min_by_key(|(_, s)| s.last_seen_unix_s)
                .map(|(k, _)| *k);
            if let Some(k) = oldest {
                self.by_id.remove(&k);
            }
        }
        let cookie = random_hex(rng);
        let session = Session {
            name,
            scope,
            csrf: random_hex(rng),
            created_unix_s: now,
            last_seen_unix_s: now,
        };
        self.by_id.insert(key(&cookie), session);
        cookie
    }

    /// The live session of a cookie (its idle time restarts), else `None`
    /// (an expired one is dropped).
    pub fn touch(&mut self, cookie: &str, now: u64) -> Option<Session> {
        let k = key(cookie);
        let s = self.by_id.get_mut(&k)?;
        if !live(s, now) {
            self.by_id.remove(&k);
            return None;
        }
        s.last_seen_unix_s = now;
        Some(s.clone())
    }

    /// Ends a session.
    pub fn close(&mut self, cookie: &str) {
        self.by_id.remove(&key(cookie));
    }

    /// Live sessions (for tests and the log).
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether no session is open.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

fn live(s: &Session, now: u64) -> bool {
    now < s.last_seen_unix_s.saturating_add(SESSION_IDLE_S)
        && now < s.created_unix_s.saturating_add(SESSION_MAX_S)
}

/// The scope a login token grants, if any (digest comparisons, so the time
/// taken does not depend on how much of a token matched).
pub fn scope_of_token(config: &crate::Config, operator_token: &str, token: &str) -> Option<Scope> {
    let t = blake3::hash(token.trim().as_bytes());
    if !operator_token.is_empty() && t == blake3::hash(operator_token.as_bytes()) {
        return Some(Scope::All);
    }
    config
        .ui_staff
        .iter()
        .find(|(_, tok)| !tok.is_empty() && t == blake3::hash(tok.as_bytes()))
        .map(|(op, _)| Scope::Operator(op.clone()))
}

/// The value of cookie `name` in a request's `Cookie` headers.
pub fn cookie_value(headers: &axum::http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Strict, path /ui.
pub fn set_cookie(name: &str, value: &str, max_age_s: u64) -> String {
    format!("{name}={value}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={max_age_s}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;

    #[test]
    fn sessions_expire_on_idle_and_on_age() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
        let mut s = Sessions::default();
        let c = s.open("ann".into(), Scope::All, 1000, &mut rng);
        assert!(s.touch(&c, 1000 + SESSION_IDLE_S - 1).is_some());
        // Kept alive by use, it still ends at SESSION_MAX_S.
        let mut t = 1000;
        while t + SESSION_IDLE_S / 2 < 1000 + SESSION_MAX_S {
            t += SESSION_IDLE_S / 2;
            assert!(s.touch(&c, t).is_some(), "at {t}");
        }
        assert!(s.touch(&c, 1000 + SESSION_MAX_S).is_none());
        assert!(s.is_empty());
        let c2 = s.open("bob".into(), Scope::All, 0, &mut rng);
        assert!(s.touch(&c2, SESSION_IDLE_S).is_none());
        assert!(s.touch("not-a-session", 0).is_none());
    }

    #[test]
    fn the_table_is_bounded() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(2);
        let mut s = Sessions::default();
        let first = s.open("a".into(), Scope::All, 0, &mut rng);
        for i in 0..MAX_SESSIONS as u64 {
            s.open("a".into(), Scope::All, 1 + i, &mut rng);
        }
        assert_eq!(s.len(), MAX_SESSIONS);
        assert!(s.touch(&first, 2).is_none(), "the oldest went first");
    }

    #[test]
    fn cookies_parse_and_are_strict() {
        let mut h = axum::http::HeaderMap::new();
        h.insert("cookie", "a=1; fare_ui_session=abc; b=2".parse().unwrap());
        assert_eq!(cookie_value(&h, SESSION_COOKIE).as_deref(), Some("abc"));
        assert_eq!(cookie_value(&h, "zzz"), None);
        let c = set_cookie(SESSION_COOKIE, "v", 10);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict"));
    }
}
