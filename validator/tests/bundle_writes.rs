//! What a quiet contact costs the reader's flash: re-installing a bundle
//! that changes only its version and times (the hourly freshness
//! re-publication, most installs) must not write the tariff again. Its
//! own test binary, outside `tests/it`: the bytes are counted for the
//! whole process (`/proc/self/io`, `wchar`: every `write`/`pwrite`, sled's
//! I/O threads included), so no other test may run beside it.

#[path = "it/common/mod.rs"]
mod common;

use common::{deployment, DeploymentExt, NOW};
use fare_credential::{CredentialId, DenyUpdate};

/// Bytes this process has passed to write calls so far.
fn written_bytes() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").expect("/proc/self/io (Linux)");
    io.lines()
        .find_map(|l| l.strip_prefix("wchar: "))
        .and_then(|v| v.trim().parse().ok())
        .expect("a wchar line")
}

#[test]
fn re_published_bundles_do_not_rewrite_the_tariff() {
    const INSTALLS: u64 = 20;
    // A city's tariff is tens of KB (the demo tariff's JSON: ~38 KB).
    let tariff: Vec<u8> = br#"{"pad":""#
        .iter()
        .copied()
        .chain(std::iter::repeat_n(b'x', 40_000))
        .chain(*br#""}"#)
        .collect();
    let mut dep = deployment(31);
    let tmp = tempfile::tempdir().unwrap();
    let deny = || DenyUpdate::Snapshot(vec![CredentialId([1; 16])]);
    dep.tariff = tariff.clone();
    let first = dep.bundle_v2([9; 16], 1, NOW, deny(), None);
    let mut reader = dep.provision_lib(tmp.path(), &first);
    let bundles: Vec<Vec<u8>> = (2..2 + INSTALLS)
        .map(|v| dep.bundle_v2([9; 16], v, NOW + v, deny(), None))
        .collect();
    let before = written_bytes();
    for b in &bundles {
        reader.install_bundle(b, NOW).expect("installed");
    }
    let per_install = (written_bytes() - before) / INSTALLS;
    // Each install writes its meta (a few hundred bytes, sled's framing
    // and a leaf now and then): far below one copy of the tariff.
    assert!(
        per_install < tariff.len() as u64 / 4,
        "{per_install} bytes written per install of a {}-byte tariff",
        tariff.len()
    );
    assert_eq!(reader.bundle_version(), 1 + INSTALLS);
}
