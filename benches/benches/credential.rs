//! Formats and wallet: ride-code verification (cold, and with the issuer
//! signature cached per credential), parsing alone, code generation on the
//! phone, and credential issuance in the back office.
// criterion_group! generates undocumented public functions.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use fare_credential::testkit::{deny_filler, TestIssuer};
use fare_credential::{
    verify_ride_code, Credential, CredentialCache, CredentialId, DenyList, Policy, Profile,
    RideCode, SigningKey, TrustList,
};
use fare_wallet::DeviceWallet;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use std::hint::black_box;

const NOW: u64 = fare_credential::testkit::TEST_NOW;

struct Setup {
    trust: TrustList,
    deny: DenyList,
    code: RideCode,
    cred: Credential,
    device: SigningKey,
}

fn setup() -> Setup {
    let mut issuer = TestIssuer::new(1);
    let device = issuer.next_key();
    let trust = issuer.trust.clone();
    let cred = issuer.credential(&device, CredentialId([1; 16]), Profile::Adult, NOW, 3600);
    // A realistic deny list: 1M revoked credentials.
    let deny = DenyList::from_ids(deny_filler(1_000_000));
    let code = RideCode::sign_v1(&cred, NOW as u32, 1, &device);
    Setup {
        trust,
        deny,
        code,
        cred,
        device,
    }
}

fn bench(c: &mut Criterion) {
    let s = setup();
    let policy = Policy::default();
    let mut g = c.benchmark_group("ride_code");
    g.bench_function("parse", |b| {
        b.iter(|| RideCode::from_bytes(black_box(s.code.as_bytes())).unwrap())
    });
    g.bench_function("verify_cold_two_signatures", |b| {
        b.iter(|| {
            verify_ride_code(
                black_box(s.code.as_bytes()),
                &s.trust,
                &s.deny,
                &policy,
                NOW,
                None,
            )
            .unwrap()
        })
    });
    let mut cache = CredentialCache::new(10_000);
    verify_ride_code(
        s.code.as_bytes(),
        &s.trust,
        &s.deny,
        &policy,
        NOW,
        Some(&mut cache),
    )
    .unwrap();
    g.bench_function("verify_cached_credential", |b| {
        b.iter(|| {
            verify_ride_code(
                black_box(s.code.as_bytes()),
                &s.trust,
                &s.deny,
                &policy,
                NOW,
                Some(&mut cache),
            )
            .unwrap()
        })
    });
    g.bench_function("deny_lookup_1m", |b| {
        b.iter(|| s.deny.contains(black_box(&CredentialId([7; 16]))))
    });
    g.bench_function("sign_code_on_phone", |b| {
        b.iter(|| RideCode::sign_v1(black_box(&s.cred), NOW as u32, 2, &s.device))
    });
    g.bench_function("wallet_make_code", |b| {
        b.iter_batched(
            || {
                let mut w = DeviceWallet::from_key(s.device.clone());
                w.install(s.cred.clone()).unwrap();
                w
            },
            |mut w| w.make_code(NOW).unwrap(),
            BatchSize::SmallInput,
        )
    });
    g.finish();

    let dir = tempfile::tempdir().unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let ks = fare_keys::KeyStore::init(dir.path(), NOW, &mut rng).unwrap();
    let req = fare_keys::IssueRequest {
        device_public_key: s.device.verifying_key().to_bytes(),
        profile: Profile::Senior,
        valid_from_unix_s: NOW,
        valid_for_s: 72 * 3600,
    };
    c.bench_function("issue_credential", |b| {
        b.iter(|| ks.issue_credential(black_box(&req), NOW, &mut rng).unwrap())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
