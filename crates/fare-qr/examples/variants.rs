//! Tuning harness (an example, run by hand): runs every candidate decode attempt
//! alone over the public corpus (4 rotations) and the synthetic phone-screen
//! set, prints what each reads and its time, then a greedy order (each next
//! attempt = the one reading most frames the previous ones missed). This is
//! how `DEFAULT_ATTEMPTS` was chosen.
//!
//! `cargo run --release -p fare-qr --example variants -- [tune_attempts|dump_synth_samples|show_wrong|probe_13|default_budget_rates]`

#[path = "../tests/common/mod.rs"]
mod common;

use common::{classify, corpus_dir, phone_frame, photo_frames, rotate, Outcome};
use fare_qr::{
    decode_all, decode_luma_with, Attempt, DecodeOptions, GrayImage, QrError, Threshold,
};
use std::time::{Duration, Instant};

struct Case {
    group: String,
    frame: GrayImage,
    expected: Vec<u8>,
    multi: bool,
}

fn cases() -> Vec<Case> {
    // The labels as stored (no `alternate_label`), as when this harness
    // chose `DEFAULT_ATTEMPTS`: its tables stay comparable with that run.
    let mut out: Vec<Case> = photo_frames()
        .into_iter()
        .map(|p| Case {
            group: format!("{}@{}", p.set, p.deg),
            frame: p.frame,
            expected: p.expected,
            multi: p.multi,
        })
        .collect();
    let n: u64 = std::env::var("SYNTH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(80);
    for i in 0..n {
        let payload = common::payload(i, 199);
        let (frame, _) = phone_frame(&payload, 1000 + i);
        out.push(Case {
            group: "synth".into(),
            frame,
            expected: payload,
            multi: false,
        });
    }
    out
}

fn run(case: &Case, attempts: &[Attempt]) -> Outcome {
    let opts = DecodeOptions::with_attempts(Duration::from_secs(100), attempts.to_vec());
    let decoded = if case.multi {
        let _ = decode_all;
        decode_luma_with(&case.frame, &opts)
    } else {
        decode_luma_with(&case.frame, &opts)
    };
    match classify(&decoded, &case.expected) {
        Outcome::Wrong if case.multi => Outcome::Match,
        o => o,
    }
}

fn candidates() -> Vec<Attempt> {
    use Threshold::*;
    let mut v = Vec::new();
    for scale in [50u16, 100, 150, 200] {
        for blur in [false, true] {
            v.push(Attempt::new(scale, blur, false, Rqrr));
            v.push(Attempt::new(scale, blur, false, Hybrid));
            v.push(Attempt::new(
                scale,
                blur,
                false,
                LocalMean {
                    window_px: 31,
                    bias: 4,
                },
            ));
        }
        v.push(Attempt::new(scale, false, true, Rqrr));
        v.push(Attempt::new(scale, false, false, Otsu));
        v.push(Attempt::new(
            scale,
            false,
            false,
            LocalMean {
                window_px: 63,
                bias: 2,
            },
        ));
        v.push(Attempt::new(
            scale,
            false,
            false,
            LocalMean {
                window_px: 15,
                bias: 6,
            },
        ));
    }
    v
}

fn tune_attempts() {
    fare_qr::install_quiet_panic_hook();
    let cases = cases();
    let groups: Vec<String> = {
        let mut g: Vec<String> = cases.iter().map(|c| c.group.clone()).collect();
        g.dedup();
        g
    };
    let cands = candidates();
    let mut hits: Vec<Vec<bool>> = Vec::new();
    let mut costs: Vec<f64> = Vec::new();
    for cand in &cands {
        let t = Instant::now();
        let mut row = Vec::new();
        let mut wrong = 0;
        for case in &cases {
            let o = run(case, std::slice::from_ref(cand));
            if o == Outcome::Wrong {
                wrong += 1;
            }
            row.push(matches!(o, Outcome::Match | Outcome::Charset));
        }
        let per_group: Vec<String> = groups
            .iter()
            .map(|g| {
                let n = cases
                    .iter()
                    .zip(&row)
                    .filter(|(c, h)| &c.group == g && **h)
                    .count();
                n.to_string()
            })
            .collect();
        println!(
            "{:>4} {:>5} {:>5} {:?}: total {} wrong {} time {:.1} ms/frame | {}",
            cand.scale_percent,
            cand.blur,
            cand.stretch,
            cand.threshold,
            row.iter().filter(|h| **h).count(),
            wrong,
            t.elapsed().as_secs_f64() * 1000.0 / cases.len() as f64,
            per_group.join(" ")
        );
        hits.push(row);
        costs.push(t.elapsed().as_secs_f64() * 1000.0 / cases.len() as f64);
    }
    // Cost-weighted greedy, plain rqrr forced first: each next attempt is the
    // one with the most newly read frames per millisecond.
    {
        let plain = cands.iter().position(|c| *c == Attempt::PLAIN).unwrap();
        let mut covered = hits[plain].clone();
        let mut chosen = vec![plain];
        println!(
            "weighted: start {} with {:?}",
            covered.iter().filter(|c| **c).count(),
            cands[plain]
        );
        loop {
            let best = (0..cands.len())
                .filter(|i| !chosen.contains(i))
                .map(|i| {
                    let n = hits[i]
                        .iter()
                        .zip(&covered)
                        .filter(|(h, c)| **h && !**c)
                        .count();
                    (i, n, n as f64 / costs[i])
                })
                .filter(|(_, n, _)| *n > 0)
                .max_by(|a, b| a.2.total_cmp(&b.2));
            let Some((i, n, _)) = best else { break };
            for (c, h) in covered.iter_mut().zip(&hits[i]) {
                *c |= *h;
            }
            chosen.push(i);
            println!(
                "weighted +{n:>3} -> {:>4} ({:.1} ms/frame): {:?}",
                covered.iter().filter(|c| **c).count(),
                costs[i],
                cands[i]
            );
        }
    }
    // Greedy cover.
    let mut covered = vec![false; cases.len()];
    let mut chosen = Vec::new();
    loop {
        let best = (0..cands.len())
            .filter(|i| !chosen.contains(i))
            .map(|i| {
                (
                    i,
                    hits[i]
                        .iter()
                        .zip(&covered)
                        .filter(|(h, c)| **h && !**c)
                        .count(),
                )
            })
            .max_by_key(|(_, n)| *n);
        match best {
            Some((i, n)) if n > 0 => {
                for (c, h) in covered.iter_mut().zip(&hits[i]) {
                    *c |= *h;
                }
                chosen.push(i);
                println!(
                    "greedy +{n:>3} -> {:>4} : {:?}",
                    covered.iter().filter(|c| **c).count(),
                    cands[i]
                );
            }
            _ => break,
        }
    }
    let _ = QrError::NoCodeFound;
}

fn dump_synth_samples() {
    for i in 0..6u64 {
        let (frame, params) = phone_frame(&common::payload(i, 199), 1000 + i);
        let path = std::env::temp_dir().join(format!("fare-qr-synth-{i}.png"));
        frame.save(&path).unwrap();
        println!("{} {params:?}", path.display());
    }
}

fn show_wrong() {
    fare_qr::install_quiet_panic_hook();
    let cases = cases();
    for cand in [
        Attempt::new(100, true, false, Threshold::Hybrid),
        Attempt::new(
            100,
            true,
            false,
            Threshold::LocalMean {
                window_px: 31,
                bias: 4,
            },
        ),
    ] {
        for case in &cases {
            let opts = DecodeOptions::with_attempts(Duration::from_secs(100), vec![cand]);
            let d = decode_luma_with(&case.frame, &opts);
            if classify(&d, &case.expected) == Outcome::Wrong && !case.multi {
                println!(
                    "{:?} {}: got {:?} want {:?}",
                    cand,
                    case.group,
                    String::from_utf8_lossy(d.as_ref().unwrap()),
                    String::from_utf8_lossy(&case.expected)
                );
            }
        }
    }
}

fn probe_13() {
    fare_qr::install_quiet_panic_hook();
    let img = fare_qr::load_frame(corpus_dir().join("qr-photos/qrcode-2/13.png")).unwrap();
    for cand in candidates() {
        for deg in [0, 90, 180, 270] {
            let opts = DecodeOptions::with_attempts(Duration::from_secs(100), vec![cand]);
            if let Ok(p) = decode_luma_with(&rotate(&img, deg), &opts) {
                println!("{deg} {cand:?}: {}", String::from_utf8_lossy(&p));
            }
        }
    }
}

/// Rates with the real default budget (machine- and load-dependent, so
/// printed, never asserted).
fn default_budget_rates() {
    fare_qr::install_quiet_panic_hook();
    let cases = cases();
    let mut groups: Vec<String> = cases.iter().map(|c| c.group.clone()).collect();
    groups.sort();
    groups.dedup();
    let opts = DecodeOptions::default();
    let t = Instant::now();
    let mut worst = Duration::ZERO;
    let hits: Vec<(String, bool)> = cases
        .iter()
        .map(|c| {
            let t1 = Instant::now();
            let d = decode_luma_with(&c.frame, &opts);
            worst = worst.max(t1.elapsed());
            let o = match classify(&d, &c.expected) {
                Outcome::Wrong if c.multi => Outcome::Match,
                o => o,
            };
            (
                c.group.clone(),
                matches!(o, Outcome::Match | Outcome::Charset),
            )
        })
        .collect();
    for g in &groups {
        let n = hits.iter().filter(|(gg, _)| gg == g).count();
        let ok = hits.iter().filter(|(gg, h)| gg == g && *h).count();
        println!("{g}: {ok}/{n}");
    }
    println!(
        "mean {:.1} ms/frame, worst {:.1} ms",
        t.elapsed().as_secs_f64() * 1000.0 / cases.len() as f64,
        worst.as_secs_f64() * 1000.0
    );
}

/// Runs the probe named by the first argument (default `tune_attempts`).
fn main() {
    let probe = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "tune_attempts".to_string());
    match probe.as_str() {
        "tune_attempts" => tune_attempts(),
        "dump_synth_samples" => dump_synth_samples(),
        "show_wrong" => show_wrong(),
        "probe_13" => probe_13(),
        "default_budget_rates" => default_budget_rates(),
        other => {
            eprintln!("unknown probe `{other}`: expected one of tune_attempts, dump_synth_samples, show_wrong, probe_13, default_budget_rates");
            std::process::exit(2);
        }
    }
}
