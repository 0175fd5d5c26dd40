//! Side-by-side decode rates and times (an example: prints, never asserts
//! timings): fare-qr with the default 20 ms budget, fare-qr unbounded,
//! plain rqrr, and `zbarimg` on the very same frames (the public photo sets
//! at 0/90/180/270° and the seeded phone-screen set), written to PNG in a
//! temporary directory.
//!
//! ```sh
//! cargo run --release -p fare-qr --example compare -- [compare_with_zbar|slowest_default_frames|one_phone_frame]
//! SHOW_WRONG=1 ...   # also print every payload that differs from the label
//! ```
//!
//! zbar's times are per `zbarimg` process (start, PNG load and decode), so
//! they overstate its decode time; its rates are what matters. Without
//! `zbarimg` on `PATH` its column is skipped.

#[path = "../tests/common/mod.rs"]
mod common;

use common::{alternate_label, classify, phone_frame, photo_frames, Outcome};
use fare_credential::code::RIDE_CODE_V1_LEN;
use fare_qr::{decode_all_with, decode_luma_with, Attempt, DecodeOptions, GrayImage, QrError};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// Phone-screen frames compared (seeds as in `tests/phone_screen.rs`).
const PHONE_FRAMES: u64 = 240;

struct Case {
    group: &'static str,
    frame: GrayImage,
    expected: Vec<u8>,
    multi: bool,
}

fn cases() -> Vec<Case> {
    let mut out: Vec<Case> = photo_frames()
        .into_iter()
        .map(|p| Case {
            group: p.set,
            expected: alternate_label(&p.path).map_or(p.expected, <[u8]>::to_vec),
            frame: p.frame,
            multi: p.multi,
        })
        .collect();
    for i in 0..PHONE_FRAMES {
        let payload = common::payload(i, RIDE_CODE_V1_LEN);
        let (frame, _) = phone_frame(&payload, 1000 + i);
        out.push(Case {
            group: "phone-screen",
            frame,
            expected: payload,
            multi: false,
        });
    }
    out
}

/// Per group: (read, total); plus every frame's time and the wrong count.
struct Tally {
    groups: Vec<(&'static str, usize, usize)>,
    times_ms: Vec<f64>,
    wrong: usize,
}

impl Tally {
    fn new() -> Self {
        Tally {
            groups: Vec::new(),
            times_ms: Vec::new(),
            wrong: 0,
        }
    }

    fn add(&mut self, group: &'static str, outcome: Outcome, ms: f64) {
        let ok = matches!(outcome, Outcome::Match | Outcome::Charset);
        self.wrong += usize::from(outcome == Outcome::Wrong);
        self.times_ms.push(ms);
        match self.groups.iter_mut().find(|g| g.0 == group) {
            Some(g) => {
                g.1 += usize::from(ok);
                g.2 += 1;
            }
            None => self.groups.push((group, usize::from(ok), 1)),
        }
    }

    fn print(&mut self, name: &str) {
        self.times_ms.sort_by(f64::total_cmp);
        let n = self.times_ms.len();
        let (corpus_ok, corpus_n) = self
            .groups
            .iter()
            .filter(|g| g.0 != "phone-screen")
            .fold((0, 0), |a, g| (a.0 + g.1, a.1 + g.2));
        println!(
            "{name:<26} photos {corpus_ok}/{corpus_n} ({:.1} %) | {} | wrong {} | ms/frame p50 {:.2} p99 {:.2} max {:.2}",
            100.0 * corpus_ok as f64 / corpus_n.max(1) as f64,
            self.groups
                .iter()
                .map(|g| format!("{} {}/{}", g.0, g.1, g.2))
                .collect::<Vec<_>>()
                .join(", "),
            self.wrong,
            self.times_ms[n / 2],
            self.times_ms[(n * 99 / 100).min(n - 1)],
            self.times_ms[n - 1]
        );
    }
}

fn run_fare_qr(cases: &[Case], opts: &DecodeOptions) -> Tally {
    let mut tally = Tally::new();
    for c in cases {
        let t = Instant::now();
        let decoded = if c.multi {
            let all = decode_all_with(&c.frame, opts);
            all.iter()
                .find(|p| **p == c.expected)
                .or(all.first())
                .cloned()
                .ok_or(QrError::NoCodeFound)
        } else {
            decode_luma_with(&c.frame, opts)
        };
        let ms = t.elapsed().as_secs_f64() * 1e3;
        let outcome = classify(&decoded, &c.expected);
        if outcome == Outcome::Wrong && std::env::var_os("SHOW_WRONG").is_some() {
            println!(
                "  wrong: {} {}x{}: got {:?}",
                c.group,
                c.frame.width(),
                c.frame.height(),
                decoded.map(|p| String::from_utf8_lossy(&p).into_owned())
            );
        }
        tally.add(c.group, outcome, ms);
    }
    tally
}

fn run_zbar(cases: &[Case], dir: &std::path::Path) -> Option<Tally> {
    Command::new("zbarimg").arg("--version").output().ok()?;
    let mut tally = Tally::new();
    for (i, c) in cases.iter().enumerate() {
        let path = dir.join(format!("{i}.png"));
        c.frame.save(&path).unwrap();
        let t = Instant::now();
        let out = Command::new("zbarimg")
            .args(["--raw", "-q", "-Sbinary"])
            .arg(&path)
            .output()
            .unwrap();
        let ms = t.elapsed().as_secs_f64() * 1e3;
        // zbarimg prints every symbol it finds, back to back: a read is the
        // expected payload, exactly (the multi-code image may hold it among
        // others).
        let decoded = if !out.status.success() || out.stdout.is_empty() {
            Err(QrError::NoCodeFound)
        } else if c.multi
            && out
                .stdout
                .windows(c.expected.len())
                .any(|w| w == c.expected.as_slice())
        {
            Ok(c.expected.clone())
        } else {
            Ok(out.stdout)
        };
        tally.add(c.group, classify(&decoded, &c.expected), ms);
    }
    Some(tally)
}

fn compare_with_zbar() {
    fare_qr::install_quiet_panic_hook();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average: {}", load.trim());
    let cases = cases();
    let unbounded = Duration::from_secs(60);
    for (name, opts) in [
        ("fare-qr default (20 ms)", DecodeOptions::default()),
        (
            "fare-qr unbounded budget",
            DecodeOptions::with_budget(unbounded),
        ),
        (
            "fare-qr locator only",
            DecodeOptions::with_attempts(unbounded, Vec::new()).with_locator(true),
        ),
        (
            "rqrr 0.11 plain",
            DecodeOptions::with_attempts(unbounded, vec![Attempt::PLAIN]),
        ),
    ] {
        run_fare_qr(&cases, &opts).print(name);
    }
    let dir: PathBuf = std::env::temp_dir().join(format!("fare-qr-compare-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    match run_zbar(&cases, &dir) {
        Some(mut tally) => tally.print("zbarimg (per process)"),
        None => println!("zbarimg: SKIPPED (not on PATH)"),
    }
    std::fs::remove_dir_all(&dir).ok();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average: {}", load.trim());
}

/// The slowest frames under the default options, timed again (budget
/// overruns are printed with the frame's group and index).
fn slowest_default_frames() {
    fare_qr::install_quiet_panic_hook();
    let cases = cases();
    let opts = DecodeOptions::default();
    let mut times: Vec<(f64, usize)> = cases
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let t = Instant::now();
            let _ = decode_luma_with(&c.frame, &opts);
            (t.elapsed().as_secs_f64() * 1e3, i)
        })
        .collect();
    times.sort_by(|a, b| b.0.total_cmp(&a.0));
    for &(ms, i) in times.iter().take(10) {
        let c = &cases[i];
        let again: Vec<String> = (0..3)
            .map(|_| {
                let t = Instant::now();
                let _ = decode_luma_with(&c.frame, &opts);
                format!("{:.1}", t.elapsed().as_secs_f64() * 1e3)
            })
            .collect();
        println!(
            "{} #{i} {}x{}: {ms:.1} ms, again {} ms",
            c.group,
            c.frame.width(),
            c.frame.height(),
            again.join(" / ")
        );
    }
}

/// One phone-screen frame (`I`, default 0) decoded 30 times with the default
/// options (for `perf record`).
fn one_phone_frame() {
    fare_qr::install_quiet_panic_hook();
    let i: u64 = std::env::var("I")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let payload = common::payload(i, RIDE_CODE_V1_LEN);
    let (frame, params) = phone_frame(&payload, 1000 + i);
    println!("{params:?}");
    for _ in 0..30 {
        let t = Instant::now();
        let ok = decode_luma_with(&frame, &DecodeOptions::default()).as_ref() == Ok(&payload);
        println!("{ok} {:.2} ms", t.elapsed().as_secs_f64() * 1e3);
    }
}

/// Runs the probe named by the first argument (default `compare_with_zbar`).
fn main() {
    let probe = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "compare_with_zbar".to_string());
    match probe.as_str() {
        "compare_with_zbar" => compare_with_zbar(),
        "slowest_default_frames" => slowest_default_frames(),
        "one_phone_frame" => one_phone_frame(),
        other => {
            eprintln!("unknown probe `{other}`: expected one of compare_with_zbar, slowest_default_frames, one_phone_frame");
            std::process::exit(2);
        }
    }
}
