//! `fare-simulator walkthrough`: one scripted service day of the fare
//! system, end to end, on the embedded default store, with every component real: a settlement server on
//! loopback HTTP (sled), phones with device keys and issued credentials,
//! readers deciding on rendered 640×480 camera frames with a flushed sled
//! log, uploads of signed batches, a settlement run, and the reports.
//!
//! The day is scripted (deterministic from the seed) so its amounts can be
//! worked out by hand; the demo checks the settled amounts against that
//! hand-worked answer and fails loudly if they differ. (It was the
//! `fare-demo` crate; the seeded, faulty, city-scale day is [`crate::run`].)

use fare_credential::{Clock, ManualClock, RideCode, SigningKey};
use fare_validator::{Reader, ReaderConfig, ReaderIdentityConfig};
use fare_wallet::Wallet;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The operator token the walkthrough's settlement service uses.
pub const OPERATOR_TOKEN: &str = "demo-operator-token";

/// What the demo established.
#[derive(Debug)]
pub struct Summary {
    /// Decisions at the readers: (what, decision, reason).
    pub decisions: Vec<(String, String, Option<String>)>,
    /// Settled revenue per operator, minor units.
    pub revenue_by_operator: BTreeMap<String, i64>,
    /// Balance per account after the day (negative = owes).
    pub balances: BTreeMap<String, i64>,
    /// Where the files are.
    pub out_dir: PathBuf,
}

type DemoResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

struct Rider {
    wallet: Wallet,
}

struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> DemoResult<Value> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(OPERATOR_TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let text = resp.text().await?;
        if !status.is_success() {
            return Err(format!("{path}: HTTP {status}: {text}").into());
        }
        Ok(if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        })
    }
    async fn post(&self, path: &str, body: Value) -> DemoResult<Value> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }
    async fn get(&self, path: &str) -> DemoResult<Value> {
        self.call(reqwest::Method::GET, path, None).await
    }
    async fn bytes(&self, path: &str) -> DemoResult<Vec<u8>> {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(OPERATOR_TOKEN)
            .send()
            .await?;
        if !resp.status().is_success() {
            return Err(format!("{path}: HTTP {}", resp.status()).into());
        }
        Ok(resp.bytes().await?.to_vec())
    }
}

/// Unix seconds of a local wall-clock time on the demo day (Asia/Shanghai,
/// the demo tariff's zone).
fn at(day: &str, hh_mm: &str) -> u64 {
    let s = format!("{day}T{hh_mm}:00[Asia/Shanghai]");
    let z: jiff::Zoned = s.parse().expect("demo times are valid");
    z.timestamp().as_second() as u64
}

/// A 640×480 camera frame holding the code's QR (4 px modules), centred,
/// on a light grey background, as the reader's camera would see a phone.
pub fn camera_frame(code: &[u8]) -> DemoResult<image::GrayImage> {
    let qr = fare_qr::render_luma(code, 4, 4)?;
    let mut frame = image::GrayImage::from_pixel(640, 480, image::Luma([200]));
    let x0 = (640 - qr.width()) / 2;
    let y0 = (480 - qr.height()) / 2;
    image::imageops::replace(&mut frame, &qr, x0 as i64, y0 as i64);
    Ok(frame)
}

/// Runs the demo in `out_dir` (created; must not hold a previous run).
pub async fn run(out_dir: &Path, seed: u64, verbose: bool) -> DemoResult<Summary> {
    let say = |s: String| {
        if verbose {
            println!("{s}");
        }
    };
    if out_dir.join("settlement").exists() {
        return Err(format!(
            "{} already holds a demo run: choose another --out or delete it",
            out_dir.display()
        )
        .into());
    }
    std::fs::create_dir_all(out_dir)?;
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let day = "2027-03-15";
    let clock = ManualClock::new(at(day, "06:00"));

    // 1. The back office: settlement on loopback, keys initialised on first start.
    say("== 1. settlement service (sled store, HTTP on loopback)".into());
    let config = fare_settlement::Config {
        operator_token: OPERATOR_TOKEN.into(),
        ..Default::default()
    };
    let app = Arc::new(fare_settlement::App::open(
        &out_dir.join("settlement"),
        config,
        Arc::new(clock.clone()),
        Some(seed),
    )?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(fare_settlement::serve(listener, app, async {
        let _ = stop_rx.await;
    }));
    let api = Api {
        base: format!("http://{addr}"),
        http: reqwest::Client::new(),
    };
    let root_pub = out_dir.join("settlement/keys/root.pub");
    say(format!(
        "   listening on {}; deployment root key {}",
        api.base,
        root_pub.display()
    ));

    // 2. Accounts and phones: each phone makes its own device key; the back
    //    office issues a credential for it (the only place id → account is known).
    say("== 2. accounts, phones, credentials".into());
    let people = [
        ("alice", "adult", 2000),
        ("bob", "senior", 2000),
        ("carol", "student", 2000),
        ("dave", "adult", 300),
    ];
    let mut riders = BTreeMap::new();
    for (name, profile, limit) in people {
        api.post(
            "/v1/accounts",
            json!({"account_id": name, "profile": profile, "credit_limit_minor": limit}),
        )
        .await?;
        let mut wallet = Wallet::init(&out_dir.join("wallets").join(name), false, &mut rng)?;
        let issued = api
            .post(
                &format!("/v1/accounts/{name}/devices"),
                json!({"device_public_key": hex::encode(wallet.core().public_key()), "valid_for_s": 3 * 86_400}),
            )
            .await?;
        let cred = hex::decode(
            issued["credential"]
                .as_str()
                .ok_or("no credential in answer")?,
        )?;
        // The phone's clock is 20 s slow; it learns the offset at this online contact.
        wallet.install(&cred, Some((clock.now_unix_s(), clock.now_unix_s() - 20)))?;
        say(format!(
            "   {name:<6} {profile:<8} credit limit {limit:>5}  credential {}",
            issued["credential_id"].as_str().unwrap_or("?")
        ));
        riders.insert(name, Rider { wallet });
    }

    // 3. Readers: each makes its key, is registered, and installs the bundle.
    say("== 3. readers provisioned with the root-signed bundle".into());
    let root = fare_validator::read_public_key_file(&root_pub)?;
    let fleet = [
        (101u32, "city-bus", "BUS-0042", "15"),
        (102, "city-bus", "BUS-0107", "7"),
        (103, "metro", "L1-GATE-3", "L1"),
    ];
    let mut readers = BTreeMap::new();
    for (id, operator, vehicle, route) in fleet {
        let key = SigningKey::generate(&mut rng);
        api.post(
            "/v1/readers",
            json!({"reader_id": id, "public_key": hex::encode(key.verifying_key().to_bytes()),
                   "operator": operator, "vehicle": vehicle, "route": route}),
        )
        .await?;
        let bundle = api.bytes(&format!("/v1/readers/{id}/bundle")).await?;
        let cfg = ReaderConfig::new(ReaderIdentityConfig {
            reader_id: id,
            operator: operator.into(),
            vehicle: vehicle.into(),
            route: route.into(),
            stop: None,
        });
        let reader = Reader::provision(
            &out_dir.join("readers").join(id.to_string()),
            cfg,
            root,
            key,
            &bundle,
            clock.now_unix_s(),
        )?;
        say(format!(
            "   reader {id}: {operator} route {route} ({vehicle}), bundle v{}",
            reader.bundle_version()
        ));
        readers.insert(id, reader);
    }

    // 4. The day's rides, decided offline from camera frames.
    say(format!(
        "== 4. service day {day} (Asia/Shanghai): rides decided offline from 640x480 frames"
    ));
    let mut decisions = Vec::new();
    let mut scan = |readers: &mut BTreeMap<u32, Reader>,
                    what: String,
                    reader: u32,
                    code: &[u8],
                    now: u64|
     -> DemoResult<String> {
        let frame = camera_frame(code)?;
        let r = readers.get_mut(&reader).ok_or("no such reader")?;
        let d = r.decide_frame(&frame, now);
        let j = d.to_json();
        let decision = j["decision"].as_str().unwrap_or("?").to_string();
        let reason = j["reason"].as_str().map(str::to_string);
        say(format!(
            "   {:>5} reader {reader}  {what:<42} {decision:<6} {:<22} {:>6} us",
            jiff::Timestamp::from_second(now as i64)
                .map(|t| t
                    .to_zoned(
                        jiff::tz::TimeZone::get("Asia/Shanghai").unwrap_or(jiff::tz::TimeZone::UTC)
                    )
                    .strftime("%H:%M")
                    .to_string())
                .unwrap_or_default(),
            reason.clone().unwrap_or_else(|| j["ride_id"].to_string()),
            j["latency_us"].as_u64().unwrap_or(0),
        ));
        decisions.push((what, decision.clone(), reason));
        Ok(decision)
    };
    let ride = |riders: &mut BTreeMap<&str, Rider>, who: &str, t: u64| -> DemoResult<RideCode> {
        let r = riders.get_mut(who).ok_or("no such rider")?;
        // Phone clock is 20 s slow; the wallet corrects it.
        Ok(r.wallet.next_code(t - 20)?)
    };
    let schedule: [(&str, &str, u32); 11] = [
        ("07:30", "alice", 101),
        ("07:45", "dave", 101),
        ("08:00", "carol", 101),
        ("08:10", "alice", 103),
        ("09:00", "bob", 102),
        ("10:00", "bob", 101),
        ("12:00", "alice", 102),
        ("13:00", "dave", 102),
        ("17:00", "carol", 103),
        ("18:00", "alice", 101),
        ("19:30", "alice", 103),
    ];
    let mut first_alice_code = None;
    for (hhmm, who, reader) in schedule.iter() {
        let t = at(day, hhmm);
        clock.set(t);
        let code = ride(&mut riders, who, t)?;
        if first_alice_code.is_none() && *who == "alice" {
            first_alice_code = Some(code.clone());
            let png = fare_qr::render_png(code.as_bytes(), 6)?;
            std::fs::write(out_dir.join("alice-0730.png"), png)?;
        }
        let d = scan(
            &mut readers,
            format!("{who} shows a fresh code"),
            *reader,
            code.as_bytes(),
            t,
        )?;
        if d != "accept" {
            return Err(format!("{who} at {hhmm} was refused").into());
        }
        if *hhmm == "07:30" {
            // Attacks on alice's first code.
            let c = first_alice_code.as_ref().expect("set above");
            scan(
                &mut readers,
                "alice's same code again (same reader)".into(),
                101,
                c.as_bytes(),
                t + 5,
            )?;
            scan(
                &mut readers,
                "screenshot of it, 15 min later".into(),
                102,
                c.as_bytes(),
                t + 900,
            )?;
            let mut forged = c.as_bytes().to_vec();
            forged[130] ^= 0x01; // issued_at altered
            scan(
                &mut readers,
                "forged: its time field altered".into(),
                102,
                &forged,
                t + 30,
            )?;
        }
    }

    // 5. Uploads and settlement.
    say("== 5. readers upload signed batches; settlement re-verifies, rates, charges".into());
    let evening = at(day, "20:00");
    clock.set(evening);
    for (id, r) in readers.iter_mut() {
        let rep = fare_validator::sync::sync(r, &api.base, evening).await?;
        say(format!(
            "   reader {id}: {} batch(es), acknowledged up to {}, bundle v{}",
            rep.batches_sent, rep.acked_up_to, rep.bundle_version
        ));
    }
    let run = api.post("/v1/settlement/runs", json!({})).await?;
    say(format!("   settlement run: {run}"));

    let daily = api.get(&format!("/v1/reports/daily?day={day}")).await?;
    let lines = daily
        .as_array()
        .cloned()
        .or_else(|| daily.get("lines").and_then(|l| l.as_array().cloned()))
        .ok_or_else(|| format!("unexpected daily report shape: {daily}"))?;
    let mut revenue_by_operator = BTreeMap::new();
    say(format!("== 6. daily report {day}"));
    say(format!(
        "   {:<10} {:<6} {:>5} {:>13}",
        "operator", "route", "rides", "revenue_minor"
    ));
    for l in &lines {
        let op = l["operator"].as_str().unwrap_or("?").to_string();
        let rev = l["revenue_minor"].as_i64().unwrap_or(0);
        say(format!(
            "   {:<10} {:<6} {:>5} {:>13}",
            op,
            l["route"].as_str().unwrap_or("?"),
            l["rides"].as_u64().unwrap_or(0),
            rev
        ));
        *revenue_by_operator.entry(op).or_insert(0) += rev;
    }
    let csv = api
        .http
        .get(format!(
            "{}/v1/reports/daily?day={day}&format=csv",
            api.base
        ))
        .bearer_auth(OPERATOR_TOKEN)
        .send()
        .await?
        .text()
        .await?;
    std::fs::write(out_dir.join("daily-report.csv"), csv)?;

    let mut balances = BTreeMap::new();
    for name in riders.keys() {
        let st = api.get(&format!("/v1/accounts/{name}")).await?;
        let bal = st["balance_minor"]
            .as_i64()
            .ok_or_else(|| format!("no balance_minor in {st}"))?;
        say(format!(
            "   account {name:<6} balance {bal:>6}  revoked: {}",
            st["revoked"].as_bool().unwrap_or(false)
        ));
        balances.insert(name.to_string(), bal);
    }

    // 7. Dave passed his credit limit: the next bundle denies his credential.
    say("== 7. over the credit limit → deny list → refused; payment → allowed again".into());
    for (_, r) in readers.iter_mut() {
        fare_validator::sync::sync(r, &api.base, evening + 60).await?;
    }
    let t = evening + 120;
    let code = ride(&mut riders, "dave", t)?;
    scan(
        &mut readers,
        "dave after passing his credit limit".into(),
        101,
        code.as_bytes(),
        t,
    )?;
    api.post(
        "/v1/accounts/dave/payments",
        json!({"payment_id": "pay-dave-1", "amount_minor": 400}),
    )
    .await?;
    // Re-sending the same payment is harmless.
    api.post(
        "/v1/accounts/dave/payments",
        json!({"payment_id": "pay-dave-1", "amount_minor": 400}),
    )
    .await?;
    clock.set(evening + 600);
    for (_, r) in readers.iter_mut() {
        fare_validator::sync::sync(r, &api.base, evening + 600).await?;
    }
    let t = evening + 660;
    let code = ride(&mut riders, "dave", t)?;
    scan(
        &mut readers,
        "dave after paying 400".into(),
        101,
        code.as_bytes(),
        t,
    )?;

    let _ = stop_tx.send(());
    server.await??;
    Ok(Summary {
        decisions,
        revenue_by_operator,
        balances,
        out_dir: out_dir.to_path_buf(),
    })
}

/// The day worked out by hand from the demo tariff (`fare_tariff::Tariff::demo()`:
/// city-bus 200, metro 300, seniors free, students 50%, one free transfer within
/// 90 min to another route, daily cap 600):
///
/// | rider | rides | charged |
/// |---|---|---|
/// | alice (adult) | 07:30 bus 15 (200), 08:10 metro L1 (transfer, 0), 12:00 bus 7 (200), 18:00 bus 15 (200, daily cap of 600 reached), 19:30 metro (transfer within 90 min of the 18:00 ride, 0) | 600 |
/// | bob (senior) | 09:00 bus 7, 10:00 bus 15 | 0 |
/// | carol (student) | 08:00 bus 15 (100), 17:00 metro (150) | 250 |
/// | dave (adult, limit 300) | 07:45 bus 15 (200), 13:00 bus 7 (200: debt 400 > 300) | 400 |
///
/// Revenue: city-bus 600 + 100 + 400 = 1100; metro 150.
pub fn hand_worked() -> (BTreeMap<String, i64>, BTreeMap<String, i64>) {
    let revenue = [("city-bus".to_string(), 1100), ("metro".to_string(), 150)].into();
    let balances = [
        ("alice".to_string(), -600),
        ("bob".to_string(), 0),
        ("carol".to_string(), -250),
        ("dave".to_string(), -400),
    ]
    .into();
    (revenue, balances)
}

/// Runs the walkthrough (printing each step when `verbose`) and compares
/// settlement's amounts with [`hand_worked`]: `Ok(true)` when they agree.
pub fn run_and_check(out_dir: &Path, seed: u64, verbose: bool) -> DemoResult<bool> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let summary = rt.block_on(run(out_dir, seed, verbose))?;
    let (revenue, balances) = hand_worked();
    let ok = summary.revenue_by_operator == revenue && summary.balances == balances;
    println!("== 8. check against the hand-worked day");
    println!(
        "   revenue  expected {revenue:?}\n            settled  {:?}",
        summary.revenue_by_operator
    );
    println!(
        "   balances expected {balances:?}\n            settled  {:?}",
        summary.balances
    );
    println!(
        "   files: {} (wallets, readers' sled logs, settlement db, alice-0730.png, daily-report.csv)",
        summary.out_dir.display()
    );
    Ok(ok)
}
