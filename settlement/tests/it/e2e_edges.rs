//! The service's edges under hostile clients, over real HTTP on loopback:
//! every answer is JSON with a stable code (404, 405, 408, 413, path and
//! query rejections, bodies that are not objects); slow clients trickling
//! headers byte by byte are cut off by the header-read timeout while
//! `/healthz` and ingest keep answering; connections past the cap get
//! `503 too_many_connections` with `Retry-After`, not a hang.

use crate::common::*;
use serde_json::{json, Value};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Guard against a hang (not a timing assertion): any single wait below
/// that takes longer than this fails the test instead of blocking CI.
const HANG_GUARD: Duration = Duration::from_secs(60);

/// Slow clients in the slow-client test.
const SLOW_CLIENTS: usize = 150;

/// A raw HTTP/1.1 answer: status, headers (lower-case names), body.
struct RawAnswer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Value,
}

impl RawAnswer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `request` as is on a new connection and reads the answer to the
/// end (the request must ask `Connection: close`, or the server closes).
async fn raw(url: &str, request: &[u8]) -> RawAnswer {
    let addr = url.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(HANG_GUARD, s.read_to_end(&mut buf))
        .await
        .expect("answer within the hang guard")
        .unwrap();
    parse_answer(&buf)
}

fn parse_answer(buf: &[u8]) -> RawAnswer {
    let text = String::from_utf8_lossy(buf);
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete head");
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let body = serde_json::from_str(body).unwrap_or(Value::String(body.to_string()));
    RawAnswer {
        status,
        headers,
        body,
    }
}

fn assert_json_error(a: &RawAnswer, status: u16, code: &str) {
    assert_eq!(a.status, status, "{}", a.body);
    assert!(
        a.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "content type of a {status}: {:?}",
        a.header("content-type")
    );
    assert_eq!(a.body["error"], code, "{}", a.body);
    assert!(
        a.body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{}",
        a.body
    );
}

fn get_req(path: &str, auth: bool) -> Vec<u8> {
    let auth = if auth {
        format!("Authorization: Bearer {TOKEN}\r\n")
    } else {
        String::new()
    };
    format!("GET {path} HTTP/1.1\r\nHost: t\r\n{auth}Connection: close\r\n\r\n").into_bytes()
}

fn post_req(path: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Long by design: one scenario told in order, whose steps share the
/// service, readers and phones it builds; each assertion reads as the next
/// line of the story (split, the state would travel through many arguments).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_is_json_with_a_stable_code() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), test_config()).await;
    srv.create_account("alice", "adult", 1_000).await;

    // 405 on a wrong method, with `Allow` kept.
    let a = raw(&srv.url, &get_req("/v1/batches", false)).await;
    assert_json_error(&a, 405, "method_not_allowed");
    assert!(
        a.header("allow").is_some_and(|v| v.contains("POST")),
        "{:?}",
        a.headers
    );
    let a = raw(&srv.url, &post_req("/healthz", "{}")).await;
    assert_json_error(&a, 405, "method_not_allowed");

    // 404: no such endpoint.
    let a = raw(&srv.url, &get_req("/v2/nothing", true)).await;
    assert_json_error(&a, 404, "not_found");

    // Path rejections: not UTF-8, not an integer.
    let a = raw(&srv.url, &get_req("/v1/accounts/%FF", true)).await;
    assert_json_error(&a, 400, "invalid_path");
    let a = raw(&srv.url, &get_req("/v1/readers/seven/bundle", false)).await;
    assert_json_error(&a, 400, "invalid_path");
    let a = raw(&srv.url, &get_req("/v1/settlement/runs/%FF%FE", true)).await;
    assert_json_error(&a, 400, "invalid_path");

    // Query rejections.
    let a = raw(&srv.url, &get_req("/v1/reports/daily?day=tomorrow", true)).await;
    assert_json_error(&a, 400, "invalid_query");
    let a = raw(&srv.url, &get_req("/v1/readers/1/bundle?since=-1", false)).await;
    assert_json_error(&a, 400, "invalid_query");

    // 401 without the operator token.
    let a = raw(&srv.url, &get_req("/v1/accounts/alice", false)).await;
    assert_json_error(&a, 401, "unauthorized");

    // Bodies must be JSON objects: arrays change nothing.
    let a = raw(&srv.url, &post_req("/v1/accounts", "[]")).await;
    assert_json_error(&a, 400, "json_not_object");
    let a = raw(
        &srv.url,
        &post_req("/v1/accounts", r#"["bob","adult",100]"#),
    )
    .await;
    assert_json_error(&a, 400, "json_not_object");
    let a = raw(
        &srv.url,
        &post_req("/v1/accounts/alice/payments", r#" ["pay-arr",1]"#),
    )
    .await;
    assert_json_error(&a, 400, "json_not_object");
    for body in [r#""text""#, "42", "null", "true"] {
        let a = raw(&srv.url, &post_req("/v1/accounts/alice/freeze", body)).await;
        assert_json_error(&a, 400, "json_not_object");
    }
    let a = raw(&srv.url, &post_req("/v1/accounts", "")).await;
    assert_json_error(&a, 400, "invalid_json");
    let a = raw(&srv.url, &post_req("/v1/accounts", "{")).await;
    assert_json_error(&a, 400, "invalid_json");
    // Unknown fields are still refused.
    let a = raw(
        &srv.url,
        &post_req(
            "/v1/accounts/alice/payments",
            r#"{"payment_id":"p","amount_minor":1,"x":1}"#,
        ),
    )
    .await;
    assert_json_error(&a, 400, "invalid_json");
    assert_eq!(srv.balance("alice").await, 0, "no payment booked");
    let (s, v) = srv.get("/v1/reports/exposure").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v.as_array().unwrap().len(), 1, "only alice exists: {v}");

    // 413: a JSON body over the limit, a batch over MAX_BATCH_BYTES.
    let big = format!(r#"{{"account_id":"{}"}}"#, "a".repeat(70_000));
    let a = raw(&srv.url, &post_req("/v1/accounts", &big)).await;
    assert_json_error(&a, 413, "body_too_large");
    let n = fare_credential::batch::MAX_BATCH_BYTES + 1;
    let mut req = format!(
        "POST /v1/batches HTTP/1.1\r\nHost: t\r\nContent-Length: {n}\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    req.extend(std::iter::repeat_n(1u8, n));
    let a = raw(&srv.url, &req).await;
    assert_json_error(&a, 413, "batch_too_large");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_body_never_comes_is_a_json_408() {
    let dir = tempfile::tempdir().unwrap();
    let config = fare_settlement::Config {
        request_timeout_ms: 300,
        run_wait_ms: 200,
        ..test_config()
    };
    let srv = Server::start(dir.path(), config).await;
    // Announces 100 bytes, sends 2, then waits for the answer.
    let req = format!(
        "POST /v1/accounts HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{{\""
    );
    let a = raw(&srv.url, req.as_bytes()).await;
    assert_json_error(&a, 408, "request_timeout");
    srv.stop().await;
}

/// One slow client: sends a request line, then header bytes one at a time
/// (never the end of the head) until the server closes the connection.
/// Returns how many bytes it sent.
async fn trickle(url: String) -> usize {
    let addr = url.trim_start_matches("http://").to_string();
    let s = TcpStream::connect(&addr).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let head = b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: ";
    let mut sent = 0usize;
    let writer = async {
        for b in head.iter().chain(std::iter::repeat(&b'a')) {
            if wr.write_all(&[*b]).await.is_err() {
                break;
            }
            sent += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let mut buf = [0u8; 256];
    tokio::select! {
        // The server closed (or reset) the connection.
        _ = rd.read(&mut buf) => {}
        () = writer => {}
    }
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_while_healthz_and_ingest_keep_answering() {
    let dir = tempfile::tempdir().unwrap();
    let config = fare_settlement::Config {
        header_read_timeout_ms: 1_500,
        ..test_config()
    };
    let srv = Server::start(dir.path(), config).await;
    let mut r1 = FakeReader::new(1, "city-bus", "1");
    srv.provision(&r1).await;
    srv.create_account("alice", "adult", 10_000).await;
    let mut phone = srv.phone("alice", 1).await;

    let slow: Vec<_> = (0..SLOW_CLIENTS)
        .map(|_| tokio::spawn(trickle(srv.url.clone())))
        .collect();
    // An idle connection that never sends a byte.
    let idle = TcpStream::connect(srv.url.trim_start_matches("http://"))
        .await
        .unwrap();

    // While they trickle: health checks and uploads are answered.
    for i in 0..10u64 {
        let (s, v) = srv.get("/healthz").await;
        assert_eq!((s, &v["status"]), (200, &json!("ok")), "{v}");
        let t = at(8, i);
        r1.accept(phone.code(t), t);
        let (s, v) = srv.upload(r1.batch(i + 1, i + 1)).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["acked_seq"], i + 1, "{v}");
    }

    // Every slow client is cut off by the header-read timeout (none ever
    // completes its head), and so is the idle connection.
    for h in slow {
        let sent = tokio::time::timeout(HANG_GUARD, h)
            .await
            .expect("slow client cut off")
            .unwrap();
        assert!(sent > 0);
    }
    let mut idle = idle;
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(HANG_GUARD, idle.read(&mut buf))
        .await
        .expect("idle connection closed")
        .unwrap_or(0);
    assert_eq!(n, 0, "an idle connection gets no answer, only a close");
    // A fresh connection (the client's pooled one may have idled out too).
    let a = raw(&srv.url, &get_req("/healthz", false)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_get_503_with_retry_after() {
    const CAP: usize = 8;
    let dir = tempfile::tempdir().unwrap();
    let config = fare_settlement::Config {
        max_connections: CAP,
        ..test_config()
    };
    let srv = Server::start(dir.path(), config).await;
    let addr = srv.url.trim_start_matches("http://").to_string();
    // CAP keep-alive connections, each proven served (holding a slot).
    let mut held = Vec::new();
    for _ in 0..CAP {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0u8; 1024];
        let n = tokio::time::timeout(HANG_GUARD, s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        held.push(s);
    }
    // One more: refused at once, with a JSON body and Retry-After.
    let a = raw(&srv.url, &get_req("/healthz", false)).await;
    assert_json_error(&a, 503, "too_many_connections");
    assert_eq!(a.header("retry-after"), Some("1"), "{:?}", a.headers);
    // A slot freed is a slot served again (the server notices the close
    // asynchronously: retry a bounded number of times).
    drop(held.pop());
    let mut served = false;
    for _ in 0..200 {
        let a = raw(&srv.url, &get_req("/healthz", false)).await;
        if a.status == 200 {
            served = true;
            break;
        }
        assert_json_error(&a, 503, "too_many_connections");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(served, "a freed slot is served again");
    drop(held);
    srv.stop().await;
}
