//! Decode rates on the shared public QR corpora (zxing black-box photos and
//! rqrr's regression images). Run with `--nocapture` to see the table.
//!
//! Asserts: no panic escapes, no payload ever differs from the expected one
//! (a miss is allowed, a wrong read is not), and a per-set floor of decoded
//! images (measured, minus a small margin) so a regression shows.

use fare_qr::{decode_all, decode_luma, load_frame, GrayImage, QrError};
use std::path::{Path, PathBuf};

fn corpus_dir() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus");
    assert!(
        root.join("qr-photos").is_dir() && root.join("qr-rqrr").is_dir(),
        "QR corpus missing: expected qr-photos/ and qr-rqrr/ under {} \
         (../shared/corpus as seen from the workspace root)",
        root.display()
    );
    root
}

fn rotate(img: &GrayImage, deg: u32) -> GrayImage {
    match deg {
        0 => img.clone(),
        90 => image::imageops::rotate90(img),
        180 => image::imageops::rotate180(img),
        270 => image::imageops::rotate270(img),
        _ => unreachable!(),
    }
}

/// How a decoded payload compares with the expected text.
#[derive(Debug, PartialEq)]
enum Outcome {
    Match,
    /// Same ASCII content but the non-ASCII part is in another charset
    /// (rqrr returns Kanji-mode and Shift_JIS byte data as raw Shift_JIS
    /// bytes; the .txt holds UTF-8). Not a wrong read.
    Charset,
    Miss,
    Wrong,
}

fn classify(decoded: &Result<Vec<u8>, QrError>, expected: &[u8]) -> Outcome {
    match decoded {
        Err(QrError::NoCodeFound) => Outcome::Miss,
        Err(e) => panic!("unexpected decode error: {e}"),
        Ok(got) if got == expected => Outcome::Match,
        Ok(got) if !expected.is_ascii() && sjis_skeleton(got) == utf8_skeleton(expected) => {
            Outcome::Charset
        }
        Ok(_) => Outcome::Wrong,
    }
}

/// ASCII bytes kept, each non-ASCII character replaced by one marker.
fn utf8_skeleton(text: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(text).ok()?;
    Some(
        text.chars()
            .map(|c| if c.is_ascii() { c as u8 } else { 0xFF })
            .collect(),
    )
}

/// The same skeleton of Shift_JIS bytes: ASCII kept, each half-width katakana
/// (one byte) or double-byte character replaced by one marker. `None` when
/// the bytes are not Shift_JIS. Comparing skeletons checks every ASCII byte
/// and the number and position of the other characters exactly, without a
/// Shift_JIS table.
fn sjis_skeleton(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b @ 0x00..=0x7F => out.push(b),
            0xA1..=0xDF => out.push(0xFF),
            0x81..=0x9F | 0xE0..=0xFC => {
                bytes.get(i + 1).filter(|t| (0x40..=0xFC).contains(*t))?;
                out.push(0xFF);
                i += 1;
            }
            _ => return None,
        }
        i += 1;
    }
    Some(out)
}

/// Images holding more than one code: another real code found first is not
/// a wrong read (corpus README: "16.png has two codes (a code inside a
/// code); the .txt is the outer one"). For these, success = the expected
/// payload is among all decoded ones.
const MULTI_CODE: &[&str] = &["qrcode-2/16.png"];

/// Minimum decoded images per set and rotation (0/90/180/270°), charset-only
/// differences counted as decoded. Measured rate minus a small margin.
const FLOORS: &[(&str, [usize; 4])] = &[
    ("qrcode-1", [14, 13, 14, 13]),
    ("qrcode-2", [24, 23, 22, 25]),
    ("qrcode-3", [29, 26, 26, 26]),
    ("qrcode-6", [7, 7, 7, 5]),
];

fn images_of(set: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(set).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "png") {
            let txt = path.with_extension("txt");
            let expected = std::fs::read(&txt).unwrap_or_else(|e| panic!("{}: {e}", txt.display()));
            out.push((path, expected));
        }
    }
    out.sort();
    out
}

#[test]
fn zxing_photo_sets() {
    // Contained rqrr panics would otherwise print backtraces into the table.
    fare_qr::install_quiet_panic_hook();
    let root = corpus_dir().join("qr-photos");
    let mut wrong = Vec::new();
    let mut below_floor = Vec::new();
    let mut total = [0usize; 4];
    let mut total_n = 0;
    println!("set        n   0°     90°    180°   270°   (decoded incl. charset-only / images)");
    for (set, floors) in FLOORS {
        let images = images_of(&root.join(set));
        assert!(!images.is_empty(), "{set}: no images");
        let mut ok = [0usize; 4];
        let mut charset = [0usize; 4];
        for (path, expected) in &images {
            let img = load_frame(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            for (r, deg) in [0u32, 90, 180, 270].into_iter().enumerate() {
                let frame = rotate(&img, deg);
                let multi = MULTI_CODE.iter().any(|m| path.ends_with(m));
                let decoded = if multi {
                    let all = decode_all(&frame);
                    all.iter()
                        .find(|p| classify(&Ok((*p).clone()), expected) != Outcome::Wrong)
                        .or(all.first())
                        .cloned()
                        .ok_or(QrError::NoCodeFound)
                } else {
                    decode_luma(&frame)
                };
                match classify(&decoded, expected) {
                    Outcome::Match => ok[r] += 1,
                    Outcome::Charset => {
                        ok[r] += 1;
                        charset[r] += 1;
                    }
                    Outcome::Miss => {}
                    Outcome::Wrong => wrong.push(format!(
                        "{} at {deg}°: got {:?}",
                        path.display(),
                        decoded
                            .as_ref()
                            .map(|p| String::from_utf8_lossy(p).into_owned())
                    )),
                }
            }
        }
        let n = images.len();
        println!(
            "{set}  {n:>3}  {:>2}/{n}  {:>2}/{n}  {:>2}/{n}  {:>2}/{n}   all {}/{} (charset-only {})",
            ok[0],
            ok[1],
            ok[2],
            ok[3],
            ok.iter().sum::<usize>(),
            4 * n,
            charset.iter().sum::<usize>()
        );
        for r in 0..4 {
            total[r] += ok[r];
            if ok[r] < floors[r] {
                below_floor.push(format!(
                    "{set} rotation {}°: {} < floor {}",
                    r * 90,
                    ok[r],
                    floors[r]
                ));
            }
        }
        total_n += n;
    }
    println!(
        "total     {total_n:>3}  {}/{total_n} {}/{total_n} {}/{total_n} {}/{total_n}  all {}/{}",
        total[0],
        total[1],
        total[2],
        total[3],
        total.iter().sum::<usize>(),
        4 * total_n
    );
    assert!(
        wrong.is_empty(),
        "wrong payloads decoded:\n{}",
        wrong.join("\n")
    );
    assert!(
        below_floor.is_empty(),
        "decode rate regressed:\n{}",
        below_floor.join("\n")
    );
}

#[test]
fn rqrr_regression_images() {
    fare_qr::install_quiet_panic_hook();
    let dir = corpus_dir().join("qr-rqrr");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let mut checked = 0;
    for (name, spec) in manifest.as_object().unwrap() {
        if name.starts_with('_') {
            continue;
        }
        let expect = spec["expect"].as_str().unwrap();
        let mut want: Vec<Vec<u8>> = spec["payloads"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().as_bytes().to_vec())
            .collect();
        want.sort();
        let img = load_frame(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut got = decode_all(&img);
        got.sort();
        println!("{name}: expect {expect}, decoded {} payload(s)", got.len());
        match expect {
            "decode" => assert_eq!(got, want, "{name}: every listed payload, nothing else"),
            // Any result is fine; reaching here proves nothing unwound.
            "no-panic" => {}
            "decode-error" => {
                assert!(
                    got.is_empty(),
                    "{name}: damaged symbol must not yield a payload"
                );
                assert_eq!(decode_luma(&img), Err(QrError::NoCodeFound));
            }
            other => panic!("{name}: unknown expectation {other}"),
        }
        checked += 1;
    }
    assert_eq!(checked, 9, "manifest lists 9 images");
}
