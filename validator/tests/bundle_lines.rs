//! Bundle publishers and exact-base deltas (issue #9, onboarding): a bundle
//! made offline (`fare-keys bundle`, v1) and one the service publishes (v2,
//! its own publisher id) are never confused, and a deny-list delta applies
//! only to the exact list it was computed from; a tariff named by digest
//! (v3) installs only over the same tariff.

mod common;

use common::{deployment, DeploymentExt, NOW};
use fare_credential::{CredentialId, DenyUpdate};
use fare_validator::ValidatorError;

fn id(b: u8) -> CredentialId {
    CredentialId([b; 16])
}

fn code_of(r: Result<u64, ValidatorError>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(ValidatorError::Bundle(e)) => e.code(),
        Err(e) => panic!("not a bundle refusal: {e}"),
    }
}

#[test]
fn the_offline_line_and_the_service_line_are_told_apart_by_publisher() {
    let mut dep = deployment(21);
    let tmp = tempfile::tempdir().unwrap();
    // Offline bundle (v1) at version 5, signed an hour ago.
    let offline = dep.bundle_v1(5, NOW - 3600, DenyUpdate::Snapshot(vec![id(1)]));
    let mut reader = dep.provision_lib(tmp.path(), &offline);
    // The service's own counter is at 3: another line, signed later: installed.
    let service = dep.bundle_v2([9; 16], 3, NOW, DenyUpdate::Snapshot(vec![id(2)]), None);
    assert_eq!(code_of(reader.install_bundle(&service, NOW)), "ok");
    assert_eq!(reader.bundle_version(), 3);
    // An offline bundle with a higher version but signed before: refused.
    let old_offline = dep.bundle_v1(6, NOW - 60, DenyUpdate::Snapshot(vec![]));
    assert_eq!(
        code_of(reader.install_bundle(&old_offline, NOW)),
        "bundle_publisher_rollback"
    );
    // Within the service's line, versions still only go forward.
    let older = dep.bundle_v2([9; 16], 2, NOW + 10, DenyUpdate::Snapshot(vec![]), None);
    assert_eq!(
        code_of(reader.install_bundle(&older, NOW)),
        "bundle_rollback"
    );
    // A delta from another service whose version and base list happen to match.
    let base = [id(2)];
    let foreign = dep.bundle_v2(
        [8; 16],
        4,
        NOW + 20,
        DenyUpdate::Delta {
            base_version: 3,
            add: vec![id(3)],
            remove: vec![],
        },
        Some(&base),
    );
    assert_eq!(
        code_of(reader.install_bundle(&foreign, NOW)),
        "bundle_other_publisher"
    );
    assert_eq!(reader.bundle_version(), 3);
    assert_eq!(reader.deny_len(), 1);
    // The publisher survives a restart: the foreign delta is still refused.
    drop(reader);
    let mut reader = fare_validator::Reader::open(tmp.path(), NOW).unwrap();
    assert_eq!(
        code_of(reader.install_bundle(&foreign, NOW)),
        "bundle_other_publisher"
    );
}

#[test]
fn a_delta_applies_only_to_the_exact_list_it_was_computed_from() {
    let mut dep = deployment(22);
    let tmp = tempfile::tempdir().unwrap();
    let held = vec![id(1), id(2)];
    let first = dep.bundle_v2([9; 16], 10, NOW, DenyUpdate::Snapshot(held.clone()), None);
    let mut reader = dep.provision_lib(tmp.path(), &first);
    let delta = |base: &[CredentialId]| {
        dep.bundle_v2(
            [9; 16],
            11,
            NOW + 1,
            DenyUpdate::Delta {
                base_version: 10,
                add: vec![id(3)],
                remove: vec![id(1)],
            },
            Some(base),
        )
    };
    // Same base version, computed from another list (e.g. another
    // service's version 10): refused by its base hash.
    assert_eq!(
        code_of(reader.install_bundle(&delta(&[id(1)]), NOW)),
        "bundle_delta_base_hash"
    );
    // A v1 delta names its base by version alone: refused.
    let v1_delta = dep.bundle_v1(
        11,
        NOW + 1,
        DenyUpdate::Delta {
            base_version: 10,
            add: vec![id(3)],
            remove: vec![],
        },
    );
    assert_eq!(
        code_of(reader.install_bundle(&v1_delta, NOW)),
        "bundle_other_publisher"
    );
    assert_eq!(reader.deny_len(), 2);
    // Computed from exactly the held list (order and duplicates do not matter).
    assert_eq!(
        code_of(reader.install_bundle(&delta(&[id(2), id(1), id(2)]), NOW)),
        "ok"
    );
    assert_eq!(reader.bundle_version(), 11);
    assert_eq!(reader.deny_len(), 2);
    let w = dep.wallet();
    assert!(reader.decide_payload(&w.code(NOW, 1), NOW).is_accept());
}

#[test]
fn a_tariff_named_by_digest_installs_only_over_the_same_tariff() {
    use fare_credential::bundle::tariff_digest;
    let mut dep = deployment(23);
    let tmp = tempfile::tempdir().unwrap();
    let first = dep.bundle_v2([9; 16], 10, NOW, DenyUpdate::Snapshot(vec![id(1)]), None);
    let mut reader = dep.provision_lib(tmp.path(), &first);
    let tariff = reader.tariff().expect("installed").to_vec();
    let held = reader.tariff_digest().expect("installed");
    assert_eq!(held, tariff_digest(&tariff));
    let by_digest = |version, digest| {
        dep.bundle_v3_by_digest(
            [9; 16],
            version,
            NOW + 1,
            DenyUpdate::Snapshot(vec![id(2)]),
            None,
            digest,
        )
    };
    // Another tariff's digest: refused, nothing changes.
    let other = by_digest(11, tariff_digest(b"{}"));
    assert_eq!(
        code_of(reader.install_bundle(&other, NOW)),
        "bundle_tariff_not_held"
    );
    assert_eq!(reader.bundle_version(), 10);
    // The held tariff's digest: installed, the tariff kept, across a restart.
    assert_eq!(
        code_of(reader.install_bundle(&by_digest(11, held), NOW)),
        "ok"
    );
    assert_eq!((reader.bundle_version(), reader.deny_len()), (11, 1));
    drop(reader);
    let mut reader = fare_validator::Reader::open(tmp.path(), NOW).unwrap();
    assert_eq!(reader.tariff(), Some(tariff.as_slice()));
    assert_eq!(reader.tariff_digest(), Some(held));
    let w = dep.wallet();
    assert!(reader.decide_payload(&w.code(NOW, 1), NOW).is_accept());
}

#[test]
fn an_unchanged_deny_list_keeps_its_file() {
    let mut dep = deployment(24);
    let tmp = tempfile::tempdir().unwrap();
    let files = || {
        let mut names: Vec<String> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("deny-"))
            .collect();
        names.sort();
        names
    };
    let first = dep.bundle_v2([9; 16], 10, NOW, DenyUpdate::Snapshot(vec![id(1)]), None);
    let mut reader = dep.provision_lib(tmp.path(), &first);
    assert_eq!(files(), ["deny-10.bin"]);
    // Re-published for freshness, the list unchanged: the file stays.
    let empty_delta = DenyUpdate::Delta {
        base_version: 10,
        add: vec![],
        remove: vec![],
    };
    let same = dep.bundle_v2([9; 16], 11, NOW + 1, empty_delta, Some(&[id(1)]));
    assert_eq!(code_of(reader.install_bundle(&same, NOW)), "ok");
    assert_eq!(
        (reader.bundle_version(), files()),
        (11, vec!["deny-10.bin".into()])
    );
    // Changed: a new file, and the old one goes.
    let changed = dep.bundle_v2(
        [9; 16],
        12,
        NOW + 2,
        DenyUpdate::Snapshot(vec![id(1), id(2)]),
        None,
    );
    assert_eq!(code_of(reader.install_bundle(&changed, NOW)), "ok");
    assert_eq!(files(), ["deny-12.bin"]);
    drop(reader);
    let reader = fare_validator::Reader::open(tmp.path(), NOW).unwrap();
    assert_eq!((reader.bundle_version(), reader.deny_len()), (12, 2));
}
