//! Validator decision pipeline (DESIGN.md §6; numbers in validator/README.md).
//!
//! criterion groups:
//! - `validator/payload_cold`: new rider, payload → durable accept (two
//!   `verify_strict`, one sled insert, the ride ring's real `fdatasync`
//!   on this disk);
//! - `validator/payload_repeat_rider`: same credential, next device sequence
//!   (issuer signature cached: one `verify_strict`);
//! - `validator/frame_640x480`: camera frame → QR decode → durable accept;
//! - `validator/reject_forged`: a forged code (no disk write);
//!
//! then a per-stage latency report (p50/p99 per stage and end to end, via
//! hdrhistogram) and sequential throughput, printed to stdout, with the new
//! rider's path measured twice: as shipped (the record in the ride ring +
//! its `fdatasync`, the power-cut-safe durability point; sled flushed and
//! its data file synced every 256 accepts) and with `device_sync = false`
//! (no device flush: crash-safe only), so the sync's cost shows; then
//! again with the reader idle 5 ms before each rider (`a-idle`: riders come
//! seconds apart on a bus, and an idle virtual disk flushes several times
//! slower than a busy one); last, the device alone (the same write +
//! `fdatasync`, nothing else), back to back and idle, which bounds the
//! durable accept.
//! `VALIDATOR_BENCH_SAMPLES` sets the report's sample count (default 2000).

// criterion_group! generates an undocumented function.
#![allow(missing_docs)]

use criterion::{criterion_group, BatchSize, Criterion};
use fare_credential::testkit::{deny_filler, TestDeployment, TestWallet};
use fare_credential::DenyUpdate;
use fare_validator::{Decision, Reader, ReaderConfig, ReaderIdentityConfig, Stage};
use hdrhistogram::Histogram;
use std::time::{Duration, Instant};

const NOW: u64 = 1_800_000_000;

struct Fixture {
    minter: Minter,
    reader: Reader,
    _tmp: tempfile::TempDir,
}

/// Makes wallets (kept apart from the reader so benchmark closures can
/// borrow both).
struct Minter {
    deployment: TestDeployment,
}

/// A phone and its next device sequence.
struct Wallet {
    phone: TestWallet,
    seq: u32,
}

impl Wallet {
    fn next_code(&mut self) -> Vec<u8> {
        self.seq += 1;
        self.phone.code(NOW, self.seq)
    }
}

impl Fixture {
    fn new(deny_entries: u32, device_sync: bool) -> Fixture {
        let mut deployment = TestDeployment::new(1, NOW - 86_400, NOW + 86_400);
        let bundle = deployment.bundle_v1(1, NOW, DenyUpdate::Snapshot(deny_filler(deny_entries)));
        let tmp = tempfile::tempdir_in(
            std::env::var("VALIDATOR_BENCH_DIR").unwrap_or_else(|_| "/tmp".into()),
        )
        .unwrap();
        let mut cfg = ReaderConfig::new(ReaderIdentityConfig {
            reader_id: 1,
            operator: "bench".into(),
            vehicle: "bus-1".into(),
            route: "R1".into(),
            stop: None,
        });
        cfg.storage.max_log_bytes = 1 << 40;
        cfg.storage.device_sync = device_sync;
        let key = deployment.next_key();
        let reader = Reader::provision(
            &tmp.path().join("r"),
            cfg,
            deployment.root.verifying_key(),
            key,
            &bundle,
            NOW,
        )
        .unwrap();
        Fixture {
            minter: Minter { deployment },
            reader,
            _tmp: tmp,
        }
    }
}

impl Minter {
    fn wallet(&mut self) -> Wallet {
        Wallet {
            phone: self.deployment.wallet_between(NOW - 60, NOW + 3600),
            seq: 0,
        }
    }
}

/// A 640×480 camera-like frame: the code rendered at 7 px per module,
/// centred on a white background.
fn frame(code: &[u8]) -> image::GrayImage {
    let sym = fare_qr::render_luma(code, 7, 4).unwrap();
    let mut canvas = image::GrayImage::from_pixel(640, 480, image::Luma([255u8]));
    let x = (640 - sym.width() as i64) / 2;
    let y = (480 - sym.height() as i64) / 2;
    image::imageops::overlay(&mut canvas, &sym, x, y);
    canvas
}

fn expect_accept(d: &Decision) {
    assert!(
        d.is_accept(),
        "benchmark decision not accepted: {}",
        d.message()
    );
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("validator");
    g.sample_size(200);
    let Fixture {
        mut minter,
        mut reader,
        _tmp,
    } = Fixture::new(1000, true);

    g.bench_function("payload_cold", |b| {
        b.iter_batched(
            || {
                let mut w = minter.wallet();
                w.next_code()
            },
            |code| expect_accept(&reader.decide_payload(&code, NOW)),
            BatchSize::SmallInput,
        )
    });

    let mut rider = minter.wallet();
    g.bench_function("payload_repeat_rider", |b| {
        b.iter_batched(
            || rider.next_code(),
            |code| expect_accept(&reader.decide_payload(&code, NOW)),
            BatchSize::SmallInput,
        )
    });

    g.sample_size(30);
    g.bench_function("frame_640x480", |b| {
        b.iter_batched(
            || frame(&rider.next_code()),
            |f| expect_accept(&reader.decide_frame(&f, NOW)),
            BatchSize::SmallInput,
        )
    });

    g.sample_size(200);
    let mut forged = minter.wallet();
    forged.phone.device = minter.deployment.next_key();
    let forged_code = forged.next_code();
    g.bench_function("reject_forged", |b| {
        b.iter(|| assert!(!reader.decide_payload(&forged_code, NOW).is_accept()))
    });
    g.finish();
}

fn report(name: &str, decisions: &[Decision]) {
    let mut stages: Vec<(&str, Histogram<u64>)> = Stage::ALL
        .iter()
        .map(|s| {
            (
                s.name(),
                Histogram::new_with_bounds(1, 10_000_000_000, 3).unwrap(),
            )
        })
        .collect();
    let mut total = Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3).unwrap();
    for d in decisions {
        for (i, s) in Stage::ALL.iter().enumerate() {
            if let Some(ns) = d.stages.get(*s) {
                stages[i].1.record(ns.max(1)).unwrap();
            }
        }
        total.record(d.total_ns.max(1)).unwrap();
    }
    println!("{name} ({} decisions), µs:", decisions.len());
    println!(
        "  {:<12} {:>10} {:>10} {:>10}",
        "stage", "p50", "p99", "max"
    );
    for (s, h) in stages.iter().filter(|(_, h)| !h.is_empty()) {
        print_row(s, h);
    }
    print_row("end_to_end", &total);
}

/// One report line: p50, p99 and max of `h` (nanoseconds) in µs.
fn print_row(name: &str, h: &Histogram<u64>) {
    println!(
        "  {:<12} {:>10.1} {:>10.1} {:>10.1}",
        name,
        h.value_at_quantile(0.5) as f64 / 1e3,
        h.value_at_quantile(0.99) as f64 / 1e3,
        h.max() as f64 / 1e3
    );
}

/// The pause before each decision or write of the rows measured "idle":
/// long enough for the CPU and the disk to go idle between riders, as they
/// do between passengers on a bus (seconds apart); short enough to measure
/// 2,000 riders in ten seconds. On a virtual machine an idle disk answers a
/// flush several times slower than a busy one.
const IDLE_GAP: Duration = Duration::from_millis(5);

/// `n` new riders, one code each: the cold path's report, and its
/// throughput when they come back to back (`gap` `None`).
fn new_riders(fx: &mut Fixture, n: usize, name: &str, gap: Option<Duration>) {
    let codes: Vec<Vec<u8>> = (0..n).map(|_| fx.minter.wallet().next_code()).collect();
    let t = Instant::now();
    let cold: Vec<Decision> = codes
        .iter()
        .map(|c| {
            if let Some(gap) = gap {
                std::thread::sleep(gap);
            }
            fx.reader.decide_payload(c, NOW)
        })
        .collect();
    let secs = t.elapsed().as_secs_f64();
    cold.iter().for_each(expect_accept);
    report(name, &cold);
    if gap.is_none() {
        println!(
            "  throughput: {:.0} accepts/s (sequential)",
            n as f64 / secs
        );
    }
}

fn stage_report() {
    let n: usize = fare_benches::env_setting("VALIDATOR_BENCH_SAMPLES", 2000);
    println!("\n== validator stage report (reader with 1,000,000 deny-list entries) ==");
    {
        // For comparison: no device flush (`device_sync = false`; the ring
        // write reaches the page cache only).
        let mut fx = Fixture::new(1_000_000, false);
        new_riders(
            &mut fx,
            n,
            "(a0) payload -> accept, new rider, no device flush (crash-safe, NOT power-cut safe)",
            None,
        );
    }
    let mut fx = Fixture::new(1_000_000, true);
    new_riders(
        &mut fx,
        n,
        "(a) payload -> durable accept, new rider (ring fdatasync; sled flush + fdatasync every 256)",
        None,
    );
    new_riders(
        &mut fx,
        n,
        "(a-idle) the same, one rider every 5 ms (the reader idles between riders, as on a bus)",
        Some(IDLE_GAP),
    );

    let mut rider = fx.minter.wallet();
    let codes: Vec<Vec<u8>> = (0..n).map(|_| rider.next_code()).collect();
    let repeat: Vec<Decision> = codes
        .iter()
        .map(|c| fx.reader.decide_payload(c, NOW))
        .collect();
    repeat.iter().for_each(expect_accept);
    report("(c) repeat rider (cached credential)", &repeat);

    let nf = (n / 10).max(50);
    let frames: Vec<image::GrayImage> = (0..nf).map(|_| frame(&rider.next_code())).collect();
    let t = Instant::now();
    let fr: Vec<Decision> = frames
        .iter()
        .map(|f| fx.reader.decide_frame(f, NOW))
        .collect();
    let secs = t.elapsed().as_secs_f64();
    fr.iter().for_each(expect_accept);
    report("(b) 640x480 frame -> durable accept", &fr);
    println!(
        "  throughput: {:.0} frame decisions/s (sequential)",
        nf as f64 / secs
    );
    device_alone(n, None);
    device_alone(n, Some(IDLE_GAP));
}

/// What bounds the durable accept: the same device write with nothing
/// else, a 1 KiB `pwrite` into a preallocated slot + `fdatasync`, the way
/// the ride ring writes (same file system as the readers above); back to
/// back, or each after `gap`.
fn device_alone(n: usize, gap: Option<Duration>) {
    use std::os::unix::fs::FileExt;
    const SLOT_BYTES: u64 = 1024;
    const SLOTS: u64 = 256;
    let tmp = tempfile::tempdir_in(
        std::env::var("VALIDATOR_BENCH_DIR").unwrap_or_else(|_| "/tmp".into()),
    )
    .unwrap();
    let file = std::fs::File::create(tmp.path().join("slots")).unwrap();
    file.write_all_at(&vec![0u8; (SLOT_BYTES * SLOTS) as usize], 0)
        .unwrap();
    file.sync_all().unwrap();
    let mut h = Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3).unwrap();
    let slot = [0x5Au8; 300];
    for i in 0..n as u64 {
        if let Some(gap) = gap {
            std::thread::sleep(gap);
        }
        let t = Instant::now();
        file.write_all_at(&slot, (i % SLOTS) * SLOT_BYTES).unwrap();
        file.sync_data().unwrap();
        h.record(t.elapsed().as_nanos().max(1) as u64).unwrap();
    }
    let (row, when) = match gap {
        None => ("(d)", "back to back"),
        Some(_) => ("(d-idle)", "one every 5 ms"),
    };
    println!(
        "{row} the device alone: 300-byte pwrite into a 1 KiB slot + fdatasync ({n} writes, {when}), µs:"
    );
    print_row("write+sync", &h);
}

criterion_group!(benches, bench);

fn main() {
    benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
    // `cargo bench -- <filter>` passes a filter; the report runs only unfiltered or for "report".
    // The values of criterion's options (`--measurement-time 3`) are not filters.
    const VALUE_OPTIONS: &[&str] = &[
        "--warm-up-time",
        "--measurement-time",
        "--sample-size",
        "--nresamples",
        "--noise-threshold",
        "--confidence-level",
        "--significance-level",
        "--save-baseline",
        "--baseline",
        "--load-baseline",
        "--profile-time",
        "--output-format",
        "--color",
        "--plotting-backend",
        "--format",
    ];
    let mut args: Vec<String> = Vec::new();
    let mut raw = std::env::args().skip(1);
    while let Some(a) = raw.next() {
        if VALUE_OPTIONS.contains(&a.as_str()) {
            raw.next();
        } else if !a.starts_with('-') {
            args.push(a);
        }
    }
    if args.is_empty() || args.iter().any(|a| a == "report") {
        stage_report();
    }
}
