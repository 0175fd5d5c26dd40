//! Power-cut test of ingest (issue #15): a child `fare-settlement serve`
//! keeps its data directory on a `fare-lazyfs` mount (a disk whose write
//! cache is lost on a power cut unless `fsync`ed). Readers upload signed
//! batches (new ones, overlapping re-sends, and forged ones that must be
//! refused); at a random instant the parent kills the server (SIGKILL) and
//! cuts the power (torn on half the cycles), restarts it on the same data
//! and checks that every batch acknowledged before the cut is still held:
//! re-sending records `1..=acked` answers `exists` with the same
//! `acked_seq`. At the end every reader's whole log is uploaded and one
//! settlement run must charge each ride exactly once (nothing a refused or
//! cut-off upload wrote is left behind).
//!
//! 30 cycles by default; `POWERCUT_CYCLES=N` for more, `POWERCUT_SEED=S` to
//! replay (failures print both and the command). Needs FUSE (`/dev/fuse`,
//! root): prints `SKIPPED:` without it, except in CI where that fails.

use crate::common;

use crate::common::serve_child::ServeChild;
use crate::common::*;
use fare_credential::Credential;
use fare_lazyfs::{mount_or_skip, PowerCut};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde_json::{json, Value};
use std::process::Command;
use std::time::Duration;

const TEST: &str = "acknowledged_batches_survive_power_cuts";

/// Blocking HTTP on a private runtime (the test drives processes).
struct Http {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
}

impl Http {
    fn new() -> Http {
        Http {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
        }
    }

    fn op(&self, url: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.rt.block_on(async {
            let rq = match body {
                Some(b) => self.client.post(format!("{url}{path}")).json(&b),
                None => self.client.get(format!("{url}{path}")),
            };
            let resp = rq.bearer_auth(TOKEN).send().await.unwrap();
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap();
            (
                status,
                serde_json::from_str(&text).unwrap_or(Value::String(text)),
            )
        })
    }

    /// `Err` when the connection broke (the server was killed). The request
    /// is signed by the reader the batch names, at the real time (the
    /// service's clock).
    fn upload(&self, url: &str, body: Vec<u8>) -> Result<(u16, Value), reqwest::Error> {
        let id = common::signer_of(&body);
        let key = fare_credential::testkit::test_reader_key(id);
        let auth = fare_credential::testkit::batch_request_auth(&key, id, unix_now(), &body);
        self.rt.block_on(async {
            let resp = self
                .client
                .post(format!("{url}/v1/batches"))
                .header("content-type", "application/octet-stream")
                .header(fare_credential::request::REQUEST_AUTH_HEADER, auth)
                .body(body)
                .send()
                .await?;
            let status = resp.status().as_u16();
            let text = resp.text().await?;
            Ok((
                status,
                serde_json::from_str(&text).unwrap_or(Value::String(text)),
            ))
        })
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Long by design: one scenario told in order, whose steps share the
/// service, readers and phones it builds; each assertion reads as the next
/// line of the story (split, the state would travel through many arguments).
#[test]
fn acknowledged_batches_survive_power_cuts() {
    let Some(lfs) = mount_or_skip(TEST) else {
        return;
    };
    let seed = env_u64("POWERCUT_SEED", 15);
    let cycles = env_u64("POWERCUT_CYCLES", 30);
    let ctx = |cycle: u64| {
        format!(
            "cycle {cycle} of {cycles}, seed {seed} (replay: POWERCUT_SEED={seed} \
             POWERCUT_CYCLES={cycles} cargo test -p fare-settlement --test it powercut_ingest::)"
        )
    };
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let data = lfs.mountpoint().join("data");
    // `serve` creates the data directory itself, durably (its parent is
    // synced): the first cycle may cut power right after the first start.
    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg = cfg_dir.path().join("settlement.toml");
    std::fs::write(
        &cfg,
        format!("operator_token = \"{TOKEN}\"\nsettle_chunk_rides = 16\n"),
    )
    .unwrap();
    let http = Http::new();

    // Setup over HTTP: readers, accounts, devices.
    let svc = ServeChild::start(&data, &cfg);
    let mut readers: Vec<FakeReader> = (1..=4)
        .map(|i| FakeReader::new(i, "city-bus", &format!("R{i}")))
        .collect();
    for r in &readers {
        let (s, v) = http.op(
            &svc.url,
            "/v1/readers",
            Some(json!({"reader_id": r.id, "public_key": hex::encode(r.key.verifying_key().to_bytes()),
                        "operator": r.operator, "vehicle": format!("bus-{}", r.id), "route": r.route})),
        );
        assert_eq!(s, 201, "provision reader: {v}");
    }
    let mut phones = Vec::new();
    for a in 0..6u64 {
        let id = format!("acc-{a}");
        let (s, v) = http.op(
            &svc.url,
            "/v1/accounts",
            Some(json!({"account_id": id, "profile": "adult", "credit_limit_minor": 1_000_000})),
        );
        assert_eq!(s, 201, "create account: {v}");
        let device = fare_credential::testkit::seeded_key(seed ^ (100 + a));
        let (s, v) = http.op(
            &svc.url,
            &format!("/v1/accounts/{id}/devices"),
            Some(
                json!({"device_public_key": hex::encode(device.verifying_key().to_bytes()),
                        "valid_for_s": 3 * 86_400}),
            ),
        );
        assert_eq!(s, 201, "register device: {v}");
        let cred = Credential::from_bytes(&hex::decode(v["credential"].as_str().unwrap()).unwrap())
            .unwrap();
        phones.push(Phone {
            device,
            cred,
            seq: 0,
        });
    }
    // Every reader's whole log, made up front: rides a few seconds after
    // the credentials were issued (all in the past by settlement time).
    let t0 = unix_now() + 10;
    let per_reader = 6 * cycles.max(10);
    for i in 0..per_reader {
        for r in readers.iter_mut() {
            let p = (rng.next_u32() as usize) % phones.len();
            let t = t0 + i % 50;
            r.accept(phones[p].code(t), t);
        }
    }
    let total: u64 = readers.iter().map(|r| r.log.len() as u64).sum();

    // Setup answered 201s: it must survive the first cut.
    svc.kill();
    let rep = lfs.power_cut(PowerCut::clean());
    let mut svc = ServeChild::start(&data, &cfg);
    let (s, v) = http.op(&svc.url, "/v1/accounts/acc-5", None);
    assert_eq!(
        s, 200,
        "accounts created before a power cut are gone ({rep:?}): {v}"
    );

    let mut acked = vec![0u64; readers.len()];
    let (mut kills_mid_upload, mut refused, mut cuts_that_lost) = (0u64, 0u64, 0u64);
    for cycle in 0..cycles {
        let ctx = ctx(cycle);
        // The uploads of this cycle, decided up front (deterministic).
        let mut plan: Vec<(usize, u64, u64, bool)> = Vec::new();
        let mut next = acked.clone();
        for _ in 0..8 {
            let r = rng.next_u32() as usize % readers.len();
            let n = readers[r].log.len() as u64;
            if next[r] >= n {
                continue;
            }
            let k = 1 + rng.next_u64() % 6;
            let forged = rng.next_u32() % 6 == 0;
            // Sometimes re-send what is held along with the new records.
            let from = if next[r] > 0 && rng.next_u32() % 3 == 0 {
                1 + rng.next_u64() % next[r]
            } else {
                next[r] + 1
            };
            let to = (next[r] + k).min(n);
            plan.push((r, from, to, forged));
            if !forged {
                next[r] = to;
            }
        }
        let kill_after = rng.next_u32() as usize % (plan.len() + 1);
        let tear = rng.next_u32() % 2 == 0;
        let tear_seed = rng.next_u64();
        let delay_us = rng.next_u64() % 3000;

        // Upload on this thread; the killer fires `delay_us` after the
        // `kill_after`-th upload starts (so it can land inside that one).
        let mut killer = None;
        for (i, &(r, from, to, forged)) in plan.iter().enumerate() {
            let mut body = readers[r].batch(from, to);
            if forged {
                // A flipped byte in the last record's code: the batch
                // signature no longer verifies.
                let at = body.len() - 100;
                body[at] ^= 0x40;
            }
            if i == kill_after {
                let pid = svc.child.id();
                killer = Some(std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_micros(delay_us));
                    let _ = Command::new("kill")
                        .args(["-KILL", &pid.to_string()])
                        .status();
                }));
            }
            match http.upload(&svc.url, body) {
                Ok((200, v)) => {
                    assert!(!forged, "{ctx}: a forged batch was accepted: {v}");
                    let a = v["acked_seq"].as_u64().unwrap();
                    assert!(
                        a >= to && a >= acked[r],
                        "{ctx}: reader {} acked_seq {a} after sending {from}..={to} (held {})",
                        readers[r].id,
                        acked[r]
                    );
                    acked[r] = a;
                }
                Ok((s, v)) => {
                    assert!(
                        forged && (400..500).contains(&s),
                        "{ctx}: reader {} batch {from}..={to} answered {s}: {v}",
                        readers[r].id
                    );
                    refused += 1;
                }
                Err(_) => {
                    // Killed under this request: no answer, nothing acked.
                    kills_mid_upload += 1;
                    break;
                }
            }
        }
        if let Some(k) = killer {
            k.join().unwrap();
        }
        svc.kill();
        let cut = if tear {
            PowerCut::torn(tear_seed)
        } else {
            PowerCut::clean()
        };
        let rep = lfs.power_cut(cut);
        cuts_that_lost += u64::from(rep.lost_anything());
        svc = ServeChild::start(&data, &cfg);

        // Every acknowledged batch is still held: re-sending 1..=acked adds
        // nothing and answers the same acked_seq (a loss would answer
        // `created`, or refuse with a sequence gap).
        for (r, reader) in readers.iter().enumerate() {
            if acked[r] == 0 {
                continue;
            }
            let (s, v) = http
                .upload(&svc.url, reader.batch(1, acked[r]))
                .unwrap_or_else(|e| panic!("{ctx}: upload after restart: {e}"));
            assert_eq!(
                s, 200,
                "{ctx}: reader {} re-send 1..={}: {v}",
                reader.id, acked[r]
            );
            let a = v["acked_seq"].as_u64().unwrap();
            assert!(
                v["result"] == "exists" && a >= acked[r],
                "{ctx}: reader {} had acked {} before the power cut ({cut:?}, {rep:?}); \
                 re-sending them answered {v}",
                reader.id,
                acked[r]
            );
            // The server may hold more than it acknowledged (cut off
            // before the answer): continue from there.
            acked[r] = a;
        }
    }

    // Everything, then one settlement: each ride charged exactly once.
    for (r, reader) in readers.iter().enumerate() {
        let n = reader.log.len() as u64;
        let (s, v) = http.upload(&svc.url, reader.all()).unwrap();
        assert_eq!(
            (s, v["acked_seq"].as_u64()),
            (200, Some(n)),
            "final upload of reader {} (held {}): {v}",
            reader.id,
            acked[r]
        );
    }
    let (s, v) = http.op(&svc.url, "/v1/settlement/runs", Some(json!({})));
    let summary = match s {
        200 => v,
        202 => loop {
            let (s, st) = http.op(&svc.url, v["status_url"].as_str().unwrap(), None);
            assert_eq!(s, 200, "{st}");
            if st["status"] != "running" {
                assert_eq!(st["status"], "done", "{st}");
                break st["summary"].clone();
            }
            std::thread::sleep(Duration::from_millis(50));
        },
        _ => panic!("settlement run: {s} {v}"),
    };
    assert_eq!(
        summary["rides"].as_u64(),
        Some(total),
        "seed {seed}: settlement after the cuts saw a different number of rides: {summary}"
    );
    let (s, again) = http.op(&svc.url, "/v1/settlement/runs", Some(json!({})));
    assert!(s == 200 || s == 202, "{again}");
    if s == 200 {
        assert_eq!(again["rides"], 0, "a second run settles nothing: {again}");
    }
    svc.kill();
    eprintln!(
        "{cycles} cycles (seed {seed}): {kills_mid_upload} kills under an upload, {refused} \
         forged batches refused, {cuts_that_lost} cuts lost unsynced data, {total} rides \
         settled once; fs {:?}",
        lfs.stats()
    );
    assert!(refused > 0, "no forged batch was tried (seed {seed})");
}
