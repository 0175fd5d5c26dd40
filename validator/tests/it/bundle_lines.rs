//! Bundle publishers and exact-base deltas (issue #9, onboarding): a bundle
//! made offline (`fare-keys bundle`, v1) and one the service publishes (v2,
//! its own publisher id) are never confused, and a deny-list delta applies
//! only to the exact list it was computed from; a tariff named by digest
//! (v3) installs only over the same tariff.

use crate::common::{deployment, open_log, DeploymentExt, NOW};
use fare_credential::testkit::TestDeployment;
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
    let files = || files_named(tmp.path(), "deny-");
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

/// The names in `dir` that start with `prefix`, sorted.
fn files_named(dir: &std::path::Path, prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect();
    names.sort();
    names
}

/// The reader directory's `tariff-*` files, sorted.
fn tariff_files(dir: &std::path::Path) -> Vec<String> {
    files_named(dir, "tariff-")
}

#[test]
fn an_unchanged_tariff_keeps_its_file_and_a_changed_one_replaces_it() {
    use std::os::unix::fs::MetadataExt;
    let mut dep = deployment(25);
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (br#"{"tariff":"a"}"#, br#"{"tariff":"b"}"#);
    let bundle = |dep: &mut TestDeployment, version, tariff: &[u8]| {
        dep.tariff = tariff.to_vec();
        let deny = DenyUpdate::Snapshot(vec![id(1)]);
        dep.bundle_v2([9; 16], version, NOW + version, deny, None)
    };
    let first = bundle(&mut dep, 10, a);
    let mut reader = dep.provision_lib(tmp.path(), &first);
    let files = tariff_files(tmp.path());
    assert_eq!(files.len(), 1, "{files:?}");
    let inode = |name: &str| std::fs::metadata(tmp.path().join(name)).unwrap().ino();
    let first_inode = inode(&files[0]);
    // Re-published with the same tariff (bytes inline): the file is not
    // written again (a rewrite renames a new file over it: a new inode).
    assert_eq!(
        code_of(reader.install_bundle(&bundle(&mut dep, 11, a), NOW)),
        "ok"
    );
    assert_eq!(tariff_files(tmp.path()), files);
    assert_eq!(inode(&files[0]), first_inode);
    // Another tariff: its own file, the old one removed, kept across a restart.
    assert_eq!(
        code_of(reader.install_bundle(&bundle(&mut dep, 12, b), NOW)),
        "ok"
    );
    let now_files = tariff_files(tmp.path());
    assert_eq!(now_files.len(), 1);
    assert_ne!(now_files, files);
    assert_eq!(reader.tariff(), Some(&b[..]));
    drop(reader);
    let reader = fare_validator::Reader::open(tmp.path(), NOW).unwrap();
    assert_eq!(
        (reader.bundle_version(), reader.tariff()),
        (12, Some(&b[..]))
    );
}

#[test]
fn a_damaged_tariff_file_is_refused_at_open_naming_it() {
    let mut dep = deployment(26);
    let tmp = tempfile::tempdir().unwrap();
    let first = dep.bundle_v2([9; 16], 10, NOW, DenyUpdate::Snapshot(vec![id(1)]), None);
    drop(dep.provision_lib(tmp.path(), &first));
    let name = tariff_files(tmp.path()).pop().expect("a tariff file");
    let path = tmp.path().join(&name);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[0] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let Err(err) = fare_validator::Reader::open(tmp.path(), NOW) else {
        panic!("opened over a damaged tariff file");
    };
    assert!(matches!(err, ValidatorError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains(&name), "{err}");
    std::fs::remove_file(&path).unwrap();
    let Err(err) = fare_validator::Reader::open(tmp.path(), NOW) else {
        panic!("opened without its tariff file");
    };
    assert!(err.to_string().contains(&name), "{err}");
}

/// The bundle meta as the reader stores it under `bundle2`.
#[derive(serde::Serialize, serde::Deserialize)]
struct MetaNow {
    version: u64,
    server_time_unix_s: u64,
    installed_at_unix_s: u64,
    trust: Vec<fare_credential::IssuerKey>,
    tariff_file: String,
    tariff_digest: [u8; 32],
    deny_file: String,
    deny_count: u64,
    deny_blake3: [u8; 32],
}

/// The layout readers wrote before the tariff had its own file: `bundle`,
/// the tariff inline.
#[derive(serde::Serialize)]
struct MetaV1 {
    version: u64,
    server_time_unix_s: u64,
    installed_at_unix_s: u64,
    trust: Vec<fare_credential::IssuerKey>,
    #[serde(with = "serde_bytes")]
    tariff: Vec<u8>,
    deny_file: String,
    deny_count: u64,
    deny_blake3: [u8; 32],
}

#[test]
fn a_reader_holding_the_old_layout_opens_and_its_next_install_moves_the_tariff_out() {
    use fare_credential::codec;
    let mut dep = deployment(27);
    let tmp = tempfile::tempdir().unwrap();
    let first = dep.bundle_v2([9; 16], 10, NOW, DenyUpdate::Snapshot(vec![id(1)]), None);
    let reader = dep.provision_lib(tmp.path(), &first);
    let tariff = reader.tariff().unwrap().to_vec();
    drop(reader);
    // Rewrite the meta as an older reader left it, and remove the file.
    {
        let db = open_log(tmp.path());
        let meta = db.open_tree("meta").unwrap();
        let now: MetaNow = codec::decode("meta", &meta.get("bundle2").unwrap().unwrap()).unwrap();
        std::fs::remove_file(tmp.path().join(&now.tariff_file)).unwrap();
        let v1 = MetaV1 {
            version: now.version,
            server_time_unix_s: now.server_time_unix_s,
            installed_at_unix_s: now.installed_at_unix_s,
            trust: now.trust,
            tariff: tariff.clone(),
            deny_file: now.deny_file,
            deny_count: now.deny_count,
            deny_blake3: now.deny_blake3,
        };
        meta.remove("bundle2").unwrap();
        meta.insert("bundle", codec::encode("meta", &v1).unwrap())
            .unwrap();
        db.flush().unwrap();
    }
    assert!(tariff_files(tmp.path()).is_empty());
    let mut reader = fare_validator::Reader::open(tmp.path(), NOW).unwrap();
    assert_eq!(
        (reader.bundle_version(), reader.tariff()),
        (10, Some(&tariff[..]))
    );
    let w = dep.wallet();
    assert!(reader.decide_payload(&w.code(NOW, 1), NOW).is_accept());
    // The next install (the same tariff) writes the file and drops `bundle`.
    let again = dep.bundle_v2(
        [9; 16],
        11,
        NOW + 1,
        DenyUpdate::Snapshot(vec![id(1)]),
        None,
    );
    assert_eq!(code_of(reader.install_bundle(&again, NOW)), "ok");
    assert_eq!(tariff_files(tmp.path()).len(), 1);
    drop(reader);
    {
        let db = open_log(tmp.path());
        let meta = db.open_tree("meta").unwrap();
        assert!(meta.get("bundle").unwrap().is_none());
        assert!(meta.get("bundle2").unwrap().is_some());
    }
    let reader = fare_validator::Reader::open(tmp.path(), NOW).unwrap();
    assert_eq!(
        (reader.bundle_version(), reader.tariff()),
        (11, Some(&tariff[..]))
    );
}
