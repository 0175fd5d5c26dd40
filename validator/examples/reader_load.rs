//! Load driver for machine-independent and memory measurements.
//!
//! ```text
//! reader_load decisions N cold|repeat   # N durable accepts in a temp reader (run under callgrind)
//! reader_load frames N                  # N 640x480 frame → durable accept decisions
//! reader_load fill DIR RIDES DENY       # provision DIR with DENY deny-list entries, log RIDES rides,
//!                                       # all at one instant (worst case for the replay cache)
//! reader_load fill DIR RIDES DENY PER_DAY ack|noack
//!                                       # realistic service: PER_DAY rides a day spread evenly,
//!                                       # each code issued at its ride time, maintenance between
//!                                       # scans (replay pruning), a restart every day (power
//!                                       # cycle at the depot); `ack`: the day's rides are
//!                                       # acknowledged at the depot (then compacted after
//!                                       # `retention_s`), `noack`: never synced (worst case)
//! reader_load measure DIR N [AT]        # open DIR at reader time AT (default: the fill's end),
//!                                       # make N more decisions, print open time and peak RSS (VmHWM)
//! ```
//!
//! callgrind: `valgrind --tool=callgrind --collect-atstart=no
//! --toggle-collect='*Reader*decide_payload*' reader_load decisions 200 cold`
//! counts only the decisions (key and code generation excluded).

use fare_credential::testkit::{deny_filler, TestDeployment, TestIssuer, TestWallet};
use fare_credential::DenyUpdate;
use fare_validator::{Reader, ReaderConfig, ReaderIdentityConfig};
use std::path::Path;
use std::time::Instant;

const NOW: u64 = 1_800_000_000;

/// Credentials of the load driver stay valid this long (months of service).
const CREDENTIAL_VALID_S: u64 = 2 * 365 * 86_400;

/// The seed of the load's reader root and issuer.
const KEYS_SEED: u64 = 11;

/// The load's deployment: the same keys in every invocation (`fill` and
/// `measure` run apart on one reader), its riders' wallets drawn from
/// `seed`'s own stream.
fn deployment(seed: u64) -> TestDeployment {
    TestDeployment::new(seed, NOW - 86_400, NOW + CREDENTIAL_VALID_S)
}

fn provision(dir: &Path, deny: u32) -> Reader {
    let mut keys = deployment(KEYS_SEED);
    let bundle = keys.bundle_v1(1, NOW, DenyUpdate::Snapshot(deny_filler(deny)));
    let mut cfg = ReaderConfig::new(ReaderIdentityConfig {
        reader_id: 1,
        operator: "load".into(),
        vehicle: "bus-1".into(),
        route: "R1".into(),
        stop: None,
    });
    cfg.storage.max_log_bytes = 1 << 40;
    // Months of simulated service without a bundle update: an explicit
    // operator choice (`0` disables the staleness refusal), so the load is
    // about the log, not about trust material ageing.
    cfg.trust.reject_after_s = 0;
    let key = keys.next_key();
    Reader::provision(dir, cfg, keys.root.verifying_key(), key, &bundle, NOW).unwrap()
}

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn vm_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// Where `fill` records the reader time it ended at, for `measure`.
fn end_file(dir: &Path) -> std::path::PathBuf {
    dir.with_extension("load-end")
}

/// Codes from `riders` credentials, round-robin, `n` in all, with device
/// sequences starting after `seq_base`, all issued at `NOW`.
fn codes(n: usize, riders: usize, seq_base: u32, seed: u64) -> Vec<Vec<u8>> {
    codes_at(n, riders, seq_base, seed, |_| NOW)
}

/// Like [`codes`], code `i` issued at `at(i)`.
fn codes_at(
    n: usize,
    riders: usize,
    seq_base: u32,
    seed: u64,
    at: impl Fn(usize) -> u64,
) -> Vec<Vec<u8>> {
    // Signed by the issuer `provision`'s reader trusts; device keys and
    // credential ids drawn from `seed`'s stream.
    let issuer = deployment(KEYS_SEED).issuer.key;
    let mut stream = deployment(seed);
    let wallets: Vec<TestWallet> = (0..riders.max(1))
        .map(|_| {
            stream.wallet_with(
                TestIssuer::KEY_ID,
                Some(&issuer),
                NOW - 60,
                NOW + CREDENTIAL_VALID_S,
            )
        })
        .collect();
    (0..n)
        .map(|i| {
            let w = &wallets[i % wallets.len()];
            let seq = seq_base + (i / wallets.len()) as u32 + 1;
            w.code(at(i), seq)
        })
        .collect()
}

/// Realistic service: `per_day` rides a day, evenly spread, each code issued
/// at its ride time by one of 1,000 riders; maintenance after every decision
/// (as `fare-validator run` does); at the end of every day the reader is
/// closed and reopened (depot power cycle) and, with `ack`, the day's rides are
/// acknowledged first (a depot sync).
fn fill_realistic(dir: &Path, rides: usize, deny: u32, per_day: u64, ack: bool) {
    let interval_s = (86_400 / per_day.max(1)).max(1);
    let mut reader = provision(dir, deny);
    let t = Instant::now();
    let chunk = per_day as usize;
    let mut done = 0usize;
    let mut now = NOW;
    while done < rides {
        let n = chunk.min(rides - done);
        let base = (done / 1000) as u32;
        let start = now;
        // Rider `i % 1000`; device sequences keep increasing across days.
        let codes = codes_at(n, 1000, base, 9, |i| start + i as u64 * interval_s);
        for (i, c) in codes.iter().enumerate() {
            now = start + i as u64 * interval_s;
            let d = reader.decide_payload(c, now);
            assert!(d.is_accept(), "{}", d.message());
            reader.maintenance(now).unwrap();
        }
        done += n;
        now = start + 86_400;
        if ack {
            let last = reader.state().next_seq - 1;
            reader.acknowledge(last).unwrap();
        }
        drop(reader);
        reader = Reader::open(dir, now).unwrap();
        if done % 100_000 < chunk {
            let s = reader.status(now);
            eprintln!(
                "{done} rides logged ({} days), {:?}, holding {} rides, {} replay entries, \
                 VmHWM {} KiB, RSS {} KiB",
                (now - NOW) / 86_400,
                t.elapsed(),
                s.next_seq - s.oldest_seq,
                s.replay_entries,
                vm_hwm_kib(),
                vm_rss_kib()
            );
        }
    }
    std::fs::write(end_file(dir), format!("{now}\n")).unwrap();
    println!(
        "fill: {rides} rides at {per_day}/day ({} days), ack={ack}, {deny} deny entries, \
         peak RSS (VmHWM) {} KiB; measure at {now}",
        (now - NOW) / 86_400,
        vm_hwm_kib()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    match arg(0).as_str() {
        "decisions" => {
            let n: usize = arg(1).parse().unwrap_or(200);
            let tmp = tempfile::tempdir().unwrap();
            let mut reader = provision(&tmp.path().join("r"), 1000);
            let riders = if arg(2) == "repeat" { 1 } else { n };
            let codes = codes(n, riders, 0, 5);
            let t = Instant::now();
            for c in &codes {
                let d = reader.decide_payload(c, NOW);
                assert!(d.is_accept(), "{}", d.message());
            }
            eprintln!("{n} decisions in {:?}", t.elapsed());
        }
        "frames" => {
            // 640x480 frames, code at 7 px per module, centred on white.
            let n: usize = arg(1).parse().unwrap_or(20);
            let tmp = tempfile::tempdir().unwrap();
            let mut reader = provision(&tmp.path().join("r"), 1000);
            let frames: Vec<image::GrayImage> = codes(n, 1, 0, 5)
                .iter()
                .map(|c| {
                    let sym = fare_qr::render_luma(c, 7, 4).unwrap();
                    let mut canvas = image::GrayImage::from_pixel(640, 480, image::Luma([255u8]));
                    let (x, y) = (
                        (640 - sym.width() as i64) / 2,
                        (480 - sym.height() as i64) / 2,
                    );
                    image::imageops::overlay(&mut canvas, &sym, x, y);
                    canvas
                })
                .collect();
            let t = Instant::now();
            for f in &frames {
                let d = reader.decide_frame(f, NOW);
                assert!(d.is_accept(), "{}", d.message());
            }
            eprintln!("{n} frame decisions in {:?}", t.elapsed());
        }
        "fill" if args.len() > 4 => {
            let dir = Path::new(&args[1]);
            let rides: usize = arg(2).parse().unwrap();
            let deny: u32 = arg(3).parse().unwrap();
            let per_day: u64 = arg(4).parse().unwrap();
            let ack = match arg(5).as_str() {
                "ack" => true,
                "noack" => false,
                other => panic!("expected ack|noack, got {other:?}"),
            };
            fill_realistic(dir, rides, deny, per_day, ack);
        }
        "fill" => {
            let dir = Path::new(&args[1]);
            let rides: usize = arg(2).parse().unwrap();
            let deny: u32 = arg(3).parse().unwrap();
            let mut reader = provision(dir, deny);
            // 1000 riders, each riding rides/1000 times: the issuer
            // signature is cached, as on a real bus.
            let t = Instant::now();
            let chunk = 100_000;
            let mut done = 0;
            while done < rides {
                let n = chunk.min(rides - done);
                let base = (done / 1000) as u32;
                for c in codes(n, 1000, base, 9) {
                    let d = reader.decide_payload(&c, NOW);
                    assert!(d.is_accept(), "{}", d.message());
                }
                done += n;
                eprintln!(
                    "{done} rides logged, {:?}, VmHWM {} KiB",
                    t.elapsed(),
                    vm_hwm_kib()
                );
            }
            println!(
                "fill: {rides} rides, {deny} deny entries, peak RSS (VmHWM) {} KiB",
                vm_hwm_kib()
            );
        }
        "measure" => {
            let dir = Path::new(&args[1]);
            let n: usize = arg(2).parse().unwrap_or(1000);
            let at: u64 = arg(3).parse().unwrap_or_else(|_| {
                std::fs::read_to_string(end_file(dir))
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                    .unwrap_or(NOW)
            });
            let codes = codes_at(n, n, 1_000_000, 77, |_| at);
            let rss_before = vm_rss_kib();
            let t = Instant::now();
            let mut reader = Reader::open(dir, at).unwrap();
            let opened = t.elapsed();
            let open_hwm = vm_hwm_kib();
            let s = reader.status(at);
            for c in &codes {
                let d = reader.decide_payload(c, at);
                assert!(d.is_accept(), "{}", d.message());
            }
            println!(
                "measure: opened in {opened:?} holding {} rides ({} unacknowledged, {} total, \
                 {} bytes logical), {} replay entries, {} deny entries; {n} more decisions; RSS before open {} KiB, \
                 peak after open {} KiB, peak RSS (VmHWM) {} KiB, RSS now {} KiB",
                s.next_seq - s.oldest_seq,
                s.unacked,
                s.rides_total,
                s.used_bytes,
                s.replay_entries,
                s.deny_entries,
                rss_before,
                open_hwm,
                vm_hwm_kib(),
                vm_rss_kib()
            );
        }
        _ => {
            eprintln!(
                "usage: reader_load decisions N cold|repeat | fill DIR RIDES DENY | measure DIR N"
            );
            std::process::exit(2);
        }
    }
}
