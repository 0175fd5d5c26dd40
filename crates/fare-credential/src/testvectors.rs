//! Seeded generator of the golden test vectors in `testvectors/`.
//!
//! Everything is derived from one seed with ChaCha20, so the output is
//! byte-identical on every machine. The `golden` test regenerates the file
//! and fails on any difference; `cargo run -p fare-credential --example
//! gen_vectors` rewrites it after an intended format change.

use crate::code::{RideCode, RIDE_CODE_V1_LEN};
use crate::credential::{Credential, CredentialBody, CredentialId, Profile};
use crate::trust::IssuerKey;
use crate::verify::Policy;
use ed25519_dalek::SigningKey;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::Serialize;

/// The seed of the committed vectors.
pub const SEED: u64 = 20_171_201;
/// The reader time most vectors are checked at.
pub const NOW_UNIX_S: u64 = 1_800_000_000;

/// One vector.
#[derive(Serialize, Debug, Clone)]
pub struct Vector {
    /// Short unique name.
    pub name: String,
    /// What it exercises.
    pub description: String,
    /// Reader time to verify at.
    pub now_unix_s: u64,
    /// The ride code bytes, hex.
    pub code_hex: String,
    /// `accept` or the expected reject reason code.
    pub expect: String,
}

/// The whole file.
#[derive(Serialize, Debug, Clone)]
pub struct VectorFile {
    /// What this is.
    pub about: String,
    /// Generator seed.
    pub seed: u64,
    /// Policy to verify with.
    pub policy: Policy,
    /// Trust list to verify with.
    pub trust: Vec<IssuerKey>,
    /// Deny list (credential ids, hex).
    pub deny: Vec<CredentialId>,
    /// The vectors.
    pub vectors: Vec<Vector>,
}

/// Byte ranges of each ride code v1 field (start, end, name, expected reason for a flipped bit).
pub const CODE_FIELDS: &[(usize, usize, &str, &str)] = &[
    (0, 1, "code_version", "unsupported_version"),
    (1, 2, "credential_version", "unsupported_version"),
    (2, 6, "issuer_key_id", "unknown_issuer_key"),
    (6, 22, "credential_id", "bad_issuer_signature"),
    (22, 54, "device_public_key", "bad_issuer_signature"),
    (54, 55, "profile", "bad_issuer_signature|malformed"),
    (55, 59, "valid_from_unix_s", "bad_issuer_signature"),
    (59, 63, "valid_until_unix_s", "bad_issuer_signature"),
    (63, 127, "issuer_signature", "bad_issuer_signature"),
    (127, 131, "issued_at_unix_s", "bad_device_signature"),
    (131, 135, "device_seq", "bad_device_signature"),
    (135, 199, "device_signature", "bad_device_signature"),
];

const _: () = assert!(RIDE_CODE_V1_LEN == 199);

fn key(rng: &mut ChaCha20Rng) -> SigningKey {
    let mut seed = [0u8; 32];
    rng.fill_bytes(&mut seed);
    SigningKey::from_bytes(&seed)
}

/// Generates the vector file from `seed`.
pub fn generate(seed: u64) -> VectorFile {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let now = NOW_UNIX_S;
    let issuer1 = key(&mut rng);
    let issuer2_retired = key(&mut rng);
    let stranger = key(&mut rng);
    let trust = vec![
        IssuerKey {
            key_id: 1,
            public_key: issuer1.verifying_key().to_bytes(),
            valid_from_unix_s: now - 100 * 86_400,
            valid_until_unix_s: now + 300 * 86_400,
        },
        IssuerKey {
            key_id: 2,
            public_key: issuer2_retired.verifying_key().to_bytes(),
            valid_from_unix_s: now - 500 * 86_400,
            valid_until_unix_s: now - 86_400,
        },
    ];
    let mut next_id = |rng: &mut ChaCha20Rng| {
        let mut id = [0u8; 16];
        rng.fill_bytes(&mut id);
        CredentialId(id)
    };
    let mk_cred = |rng: &mut ChaCha20Rng,
                   next_id: &mut dyn FnMut(&mut ChaCha20Rng) -> CredentialId,
                   issuer: &SigningKey,
                   key_id: u32,
                   device: &SigningKey,
                   profile: Profile,
                   from: u64,
                   until: u64| {
        Credential::issue_v1(
            CredentialBody {
                issuer_key_id: key_id,
                credential_id: next_id(rng),
                device_public_key: device.verifying_key().to_bytes(),
                profile,
                valid_from_unix_s: from as u32,
                valid_until_unix_s: until as u32,
            },
            issuer,
        )
    };
    let mut vectors = Vec::new();
    let mut push = |name: &str, description: &str, now_unix_s: u64, code: &[u8], expect: &str| {
        vectors.push(Vector {
            name: name.into(),
            description: description.into(),
            now_unix_s,
            code_hex: hex::encode(code),
            expect: expect.into(),
        });
    };

    let day = 86_400;
    // Positive vectors: one per profile.
    let mut good = None;
    for profile in Profile::ALL {
        let device = key(&mut rng);
        let cred = mk_cred(
            &mut rng,
            &mut next_id,
            &issuer1,
            1,
            &device,
            profile,
            now - day,
            now + 2 * day,
        );
        let code = RideCode::sign_v1(&cred, (now - 5) as u32, 1, &device);
        push(
            &format!("valid_{}", profile.name()),
            &format!("a fresh code from a valid {} credential", profile.name()),
            now,
            code.as_bytes(),
            "accept",
        );
        if good.is_none() {
            good = Some((cred, device, code));
        }
    }
    let (cred, device, code) = good.expect("at least one profile");
    let policy = Policy::default();
    let edge = policy.code_validity_s + policy.skew_tolerance_s;
    let c = RideCode::sign_v1(&cred, now as u32, 2, &device);
    push(
        "valid_last_second",
        "code checked at issue + validity + skew: still valid",
        now + edge,
        c.as_bytes(),
        "accept",
    );
    push(
        "expired_first_second",
        "one second after issue + validity + skew",
        now + edge + 1,
        c.as_bytes(),
        "code_expired",
    );
    let c = RideCode::sign_v1(&cred, (now + policy.skew_tolerance_s) as u32, 3, &device);
    push(
        "valid_future_within_skew",
        "phone clock ahead by exactly the skew tolerance",
        now,
        c.as_bytes(),
        "accept",
    );
    let c = RideCode::sign_v1(
        &cred,
        (now + policy.skew_tolerance_s + 1) as u32,
        4,
        &device,
    );
    push(
        "future_beyond_skew",
        "phone clock ahead by skew + 1 s",
        now,
        c.as_bytes(),
        "code_from_future",
    );
    let c = RideCode::sign_v1(&cred, (now - 600) as u32, 5, &device);
    push(
        "expired_code",
        "a screenshot replayed 10 minutes later",
        now,
        c.as_bytes(),
        "code_expired",
    );

    // One flipped bit in each field (the lowest bit of the field's last byte,
    // and for the profile byte the highest bit too).
    for &(start, end, field, reason) in CODE_FIELDS {
        let mut b = code.as_bytes().to_vec();
        b[end - 1] ^= 0x01;
        let expect = match field {
            "profile" => "bad_issuer_signature",
            _ => reason,
        };
        push(
            &format!("flip_{field}"),
            &format!("lowest bit of byte {} ({field}) flipped", end - 1),
            now,
            &b,
            expect,
        );
        if field == "profile" {
            let mut b = code.as_bytes().to_vec();
            b[start] ^= 0x80;
            push(
                "flip_profile_high",
                "profile byte 0x80 | adult: unknown profile",
                now,
                &b,
                "malformed",
            );
        }
    }
    let b = code.as_bytes();
    push(
        "truncated",
        "last byte missing",
        now,
        &b[..b.len() - 1],
        "malformed",
    );
    push(
        "truncated_to_credential",
        "only version + credential",
        now,
        &b[..127],
        "malformed",
    );
    push(
        "extended",
        "one trailing zero byte",
        now,
        &[b.as_slice(), &[0]].concat(),
        "malformed",
    );
    push("empty", "no bytes at all", now, &[], "malformed");
    let mut v2 = b.to_vec();
    v2[0] = 2;
    push(
        "wrong_version",
        "version byte 2 (a future format)",
        now,
        &v2,
        "unsupported_version",
    );

    // Trust and time classes.
    let cu = mk_cred(
        &mut rng,
        &mut next_id,
        &stranger,
        77,
        &device,
        Profile::Adult,
        now - day,
        now + day,
    );
    let c = RideCode::sign_v1(&cu, now as u32, 1, &device);
    push(
        "unknown_issuer_key",
        "credential signed by key id 77, not in the trust list",
        now,
        c.as_bytes(),
        "unknown_issuer_key",
    );
    let cf = mk_cred(
        &mut rng,
        &mut next_id,
        &stranger,
        1,
        &device,
        Profile::Adult,
        now - day,
        now + day,
    );
    let c = RideCode::sign_v1(&cf, now as u32, 1, &device);
    push(
        "forged_issuer",
        "credential claims key 1 but is signed by another key",
        now,
        c.as_bytes(),
        "bad_issuer_signature",
    );
    let cr = mk_cred(
        &mut rng,
        &mut next_id,
        &issuer2_retired,
        2,
        &device,
        Profile::Adult,
        now - day,
        now + day,
    );
    let c = RideCode::sign_v1(&cr, now as u32, 1, &device);
    push(
        "retired_issuer_key",
        "issuer key 2 retired a day ago",
        now,
        c.as_bytes(),
        "issuer_key_not_valid",
    );
    let ce = mk_cred(
        &mut rng,
        &mut next_id,
        &issuer1,
        1,
        &device,
        Profile::Adult,
        now - 4 * day,
        now - day,
    );
    let c = RideCode::sign_v1(&ce, now as u32, 1, &device);
    push(
        "credential_expired",
        "credential ended a day ago",
        now,
        c.as_bytes(),
        "credential_expired",
    );
    let cn = mk_cred(
        &mut rng,
        &mut next_id,
        &issuer1,
        1,
        &device,
        Profile::Adult,
        now + day,
        now + 3 * day,
    );
    let c = RideCode::sign_v1(&cn, now as u32, 1, &device);
    push(
        "credential_not_yet_valid",
        "credential starts tomorrow",
        now,
        c.as_bytes(),
        "credential_not_yet_valid",
    );
    let other = key(&mut rng);
    let c = RideCode::sign_v1(&cred, now as u32, 9, &other);
    push(
        "other_device",
        "valid credential, code signed by a different device key",
        now,
        c.as_bytes(),
        "bad_device_signature",
    );
    let revoked_device = key(&mut rng);
    let cd = mk_cred(
        &mut rng,
        &mut next_id,
        &issuer1,
        1,
        &revoked_device,
        Profile::Adult,
        now - day,
        now + day,
    );
    let c = RideCode::sign_v1(&cd, now as u32, 1, &revoked_device);
    push(
        "revoked",
        "credential id is on the deny list",
        now,
        c.as_bytes(),
        "revoked",
    );
    let mut weak = [0u8; 32];
    weak[0] = 1; // the identity point: small order
    let cw = Credential::issue_v1(
        CredentialBody {
            issuer_key_id: 1,
            credential_id: next_id(&mut rng),
            device_public_key: weak,
            profile: Profile::Adult,
            valid_from_unix_s: (now - day) as u32,
            valid_until_unix_s: (now + day) as u32,
        },
        &issuer1,
    );
    let c = RideCode::sign_v1(&cw, now as u32, 1, &device);
    push(
        "weak_device_key",
        "issuer (wrongly) signed a small-order device key",
        now,
        c.as_bytes(),
        "bad_device_key",
    );

    VectorFile {
        about: "Ride code v1 test vectors (see testvectors/README.md). Verify each `code_hex` with \
                the given trust list, deny list and policy at `now_unix_s`; the result must be `expect`."
            .into(),
        seed,
        policy,
        trust,
        deny: vec![cd.id()],
        vectors,
    }
}

/// The committed JSON text for `seed` (pretty, trailing newline).
pub fn to_json(file: &VectorFile) -> String {
    let mut s = serde_json::to_string_pretty(file).expect("vectors serialise");
    s.push('\n');
    s
}

/// One acknowledgement vector.
#[derive(Serialize, Debug, Clone)]
pub struct AckVector {
    /// Short unique name.
    pub name: String,
    /// What it exercises.
    pub description: String,
    /// The acknowledgement bytes, hex.
    pub ack_hex: String,
    /// `ok` or the expected refusal (`bad_signature`, `bad_cert_signature`, `invalid`).
    pub expect: String,
}

/// The acknowledgement vector file (`testvectors/acks_v1.json`).
#[derive(Serialize, Debug, Clone)]
pub struct AckVectorFile {
    /// What this is.
    pub about: String,
    /// Generator seed.
    pub seed: u64,
    /// Deployment root public key, hex.
    pub root_public_key: String,
    /// The acknowledgement-key certificate, hex.
    pub ack_key_cert_hex: String,
    /// The vectors.
    pub vectors: Vec<AckVector>,
}

/// Acknowledgement v1 vectors (SPEC.md §8) from `seed`.
pub fn generate_acks(seed: u64) -> AckVectorFile {
    use crate::ack::{request_digest, Ack, AckKeyCert, AckKind};
    let mut rng = ChaCha20Rng::seed_from_u64(seed ^ 0xac4);
    let root = key(&mut rng);
    let ack_key = key(&mut rng);
    let other = key(&mut rng);
    let cert = AckKeyCert {
        public_key: ack_key.verifying_key().to_bytes(),
        valid_from_unix_s: NOW_UNIX_S - 86_400,
        valid_until_unix_s: NOW_UNIX_S + 365 * 86_400,
    }
    .sign_v1(&root);
    let base = Ack {
        kind: AckKind::Held,
        reader_id: 7,
        acked_seq: 10,
        chain_hash: *blake3::hash(b"record 10").as_bytes(),
        server_time_unix_s: NOW_UNIX_S,
        request_digest: request_digest(b"batch bytes"),
    };
    let mut vectors = Vec::new();
    let mut push = |name: &str, description: &str, bytes: Vec<u8>, expect: &str| {
        vectors.push(AckVector {
            name: name.into(),
            description: description.into(),
            ack_hex: hex::encode(bytes),
            expect: expect.into(),
        })
    };
    let sign = |a: &Ack, c: &[u8], k: &SigningKey| a.sign_v1(c, k).expect("vector signs");
    push(
        "held",
        "batch stored or already held",
        sign(&base, &cert, &ack_key),
        "ok",
    );
    let gap = Ack {
        kind: AckKind::SequenceGap,
        acked_seq: 3,
        ..base.clone()
    };
    push(
        "sequence_gap",
        "settlement holds less than the batch assumes",
        sign(&gap, &cert, &ack_key),
        "ok",
    );
    let fork = Ack {
        kind: AckKind::ChainFork,
        ..base.clone()
    };
    push(
        "chain_fork",
        "batch disagrees with the held chain",
        sign(&fork, &cert, &ack_key),
        "ok",
    );
    let mut t = sign(&base, &cert, &ack_key);
    t[6 + 7] ^= 1; // a bit of acked_seq
    push(
        "tampered_seq",
        "acked_seq changed after signing",
        t,
        "bad_signature",
    );
    let other_cert = AckKeyCert {
        public_key: other.verifying_key().to_bytes(),
        valid_from_unix_s: 0,
        valid_until_unix_s: u64::MAX,
    }
    .sign_v1(&other);
    push(
        "uncertified_key",
        "signed by a key the root did not certify",
        sign(&base, &other_cert, &other),
        "bad_cert_signature",
    );
    let late = Ack {
        server_time_unix_s: NOW_UNIX_S + 400 * 86_400,
        ..base.clone()
    };
    push(
        "outside_cert_window",
        "settlement time after the key's window",
        sign(&late, &cert, &ack_key),
        "invalid",
    );
    AckVectorFile {
        about: "Batch acknowledgement v1 test vectors (SPEC.md §8). Verify each `ack_hex` with \
                `root_public_key`; the result must be `expect`."
            .into(),
        seed,
        root_public_key: hex::encode(root.verifying_key().to_bytes()),
        ack_key_cert_hex: hex::encode(&cert),
        vectors,
    }
}

/// The committed JSON text of the acknowledgement vectors.
pub fn acks_to_json(file: &AckVectorFile) -> String {
    let mut s = serde_json::to_string_pretty(file).expect("vectors serialise");
    s.push('\n');
    s
}

/// One bundle v2 vector.
#[derive(Serialize, Debug, Clone)]
pub struct BundleVector {
    /// Short unique name.
    pub name: String,
    /// What it exercises.
    pub description: String,
    /// The bundle bytes, hex.
    pub bundle_hex: String,
    /// `ok` or the refusal: `bad_signature`, `unsupported_version`,
    /// `invalid` (a field refused), `malformed` (truncated or trailing bytes).
    pub expect: String,
    /// For `ok`: the publisher id, hex.
    pub publisher: Option<String>,
    /// For an `ok` delta: its `deny_base_hash`, hex.
    pub deny_base_hash: Option<String>,
    /// v3, for an `ok` bundle that names its tariff by digest alone: the
    /// digest, hex (absent when the tariff's bytes follow).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tariff_by_digest: Option<String>,
}

/// The bundle v2 vector file (`testvectors/bundles_v2.json`).
#[derive(Serialize, Debug, Clone)]
pub struct BundleVectorFile {
    /// What this is.
    pub about: String,
    /// Generator seed.
    pub seed: u64,
    /// Deployment root public key, hex.
    pub root_public_key: String,
    /// The vectors.
    pub vectors: Vec<BundleVector>,
}

/// Offset of `deny_base_hash` in the vectors' bundles (one trust key).
const V2_BASE_HASH_AT: usize = 1 + 16 + 8 + 8 + 4 + 52 + 1 + 8;

/// What both bundle vector generators draw from their seed: the root and
/// issuer keys, a publisher id, three credential ids.
struct BundleVectorKeys {
    root: SigningKey,
    issuer: SigningKey,
    publisher: [u8; 16],
    ids: Vec<CredentialId>,
}

impl BundleVectorKeys {
    fn draw(seed: u64) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let root = key(&mut rng);
        let issuer = key(&mut rng);
        let mut publisher = [0u8; 16];
        rng.fill_bytes(&mut publisher);
        let ids = (1..=3u8).map(|b| CredentialId([b; 16])).collect();
        BundleVectorKeys {
            root,
            issuer,
            publisher,
            ids,
        }
    }

    /// The vectors' trust list: the issuer's key 1.
    fn trust(&self) -> Vec<IssuerKey> {
        vec![IssuerKey {
            key_id: 1,
            public_key: self.issuer.verifying_key().to_bytes(),
            valid_from_unix_s: NOW_UNIX_S - 86_400,
            valid_until_unix_s: NOW_UNIX_S + 365 * 86_400,
        }]
    }

    /// `bytes` (signature dropped) after `edit`, signed again under `domain`.
    fn resign(&self, bytes: &[u8], domain: &[u8], edit: &dyn Fn(&mut Vec<u8>)) -> Vec<u8> {
        use crate::keys::{sign_domain, SIGNATURE_LEN};
        let mut body = bytes[..bytes.len() - SIGNATURE_LEN].to_vec();
        edit(&mut body);
        let sig = sign_domain(&self.root, domain, &body);
        body.extend_from_slice(&sig);
        body
    }

    /// The vector file of `section` (e.g. "v2 test vectors (SPEC.md §4.1)").
    fn file(&self, section: &str, seed: u64, vectors: Vec<BundleVector>) -> BundleVectorFile {
        BundleVectorFile {
            about: format!(
                "Reader bundle {section}. Verify each `bundle_hex` with `root_public_key`; \
                 the result must be `expect`."
            ),
            seed,
            root_public_key: hex::encode(self.root.verifying_key().to_bytes()),
            vectors,
        }
    }
}

/// Bundle v2 vectors (SPEC.md §4.1) from `seed`.
pub fn generate_bundles_v2(seed: u64) -> BundleVectorFile {
    use crate::bundle::{deny_digest, DenyUpdate, PublishedBundle, ReaderBundle, BUNDLE_DOMAIN_V1};
    let keys = BundleVectorKeys::draw(seed ^ 0xb2);
    let BundleVectorKeys {
        root,
        publisher,
        ids,
        ..
    } = &keys;
    let publisher = *publisher;
    let content = |deny| ReaderBundle {
        bundle_version: 42,
        server_time_unix_s: NOW_UNIX_S,
        trust: keys.trust(),
        deny,
        tariff: br#"{"note":"vector"}"#.to_vec(),
    };
    let base_hash = deny_digest(&ids[..2]);
    let snapshot = PublishedBundle {
        publisher,
        deny_base_hash: None,
        tariff_by_digest: None,
        bundle: content(DenyUpdate::Snapshot(ids.clone())),
    }
    .sign_v2(root)
    .expect("vector signs");
    let delta = PublishedBundle {
        publisher,
        deny_base_hash: Some(base_hash),
        tariff_by_digest: None,
        bundle: content(DenyUpdate::Delta {
            base_version: 41,
            add: vec![ids[2]],
            remove: vec![ids[0]],
        }),
    }
    .sign_v2(root)
    .expect("vector signs");
    let resign =
        |bytes: &[u8], domain: &[u8], edit: &dyn Fn(&mut Vec<u8>)| keys.resign(bytes, domain, edit);
    let v2 = crate::bundle::BUNDLE_DOMAIN_V2;
    let hexs = |b: &[u8]| Some(hex::encode(b));
    let mut vectors = Vec::new();
    let mut push = |name: &str, description: &str, bytes: Vec<u8>, expect: &str| {
        let ok = expect == "ok";
        let is_delta = name == "delta";
        vectors.push(BundleVector {
            name: name.into(),
            description: description.into(),
            bundle_hex: hex::encode(bytes),
            expect: expect.into(),
            publisher: if ok { hexs(&publisher) } else { None },
            deny_base_hash: if ok && is_delta {
                hexs(&base_hash)
            } else {
                None
            },
            tariff_by_digest: None,
        })
    };
    push(
        "snapshot",
        "a service's snapshot of three ids",
        snapshot.clone(),
        "ok",
    );
    push(
        "delta",
        "from version 41 holding ids 01.. and 02..: add 03.., remove 01..",
        delta.clone(),
        "ok",
    );
    let mut t = delta.clone();
    t[1] ^= 1;
    push(
        "tampered_publisher",
        "publisher changed after signing",
        t,
        "bad_signature",
    );
    let mut t = delta.clone();
    t[V2_BASE_HASH_AT] ^= 1;
    push(
        "tampered_base_hash",
        "base hash changed after signing",
        t,
        "bad_signature",
    );
    push(
        "v1_domain",
        "v2 bytes signed under the v1 domain tag",
        resign(&delta, BUNDLE_DOMAIN_V1, &|_| {}),
        "bad_signature",
    );
    push(
        "zero_publisher",
        "publisher all zeros (reserved for the v1 line)",
        resign(&snapshot, v2, &|b| b[1..17].fill(0)),
        "invalid",
    );
    push(
        "snapshot_with_base_hash",
        "a snapshot naming a base hash",
        resign(&snapshot, v2, &|b| b[V2_BASE_HASH_AT] = 1),
        "invalid",
    );
    let mut t = snapshot.clone();
    t[0] = 4;
    push("wrong_version", "version byte 4", t, "unsupported_version");
    push(
        "truncated",
        "the last tariff byte removed, re-signed",
        resign(&snapshot, v2, &|b| {
            b.pop();
        }),
        "malformed",
    );
    keys.file("v2 test vectors (SPEC.md §4.1)", seed, vectors)
}

/// Bundle v3 vectors (SPEC.md §4.2) from `seed`: a delta naming its
/// tariff by digest, a snapshot with the tariff's bytes, and their refusals.
pub fn generate_bundles_v3(seed: u64) -> BundleVectorFile {
    use crate::bundle::{
        deny_digest, tariff_digest, DenyUpdate, PublishedBundle, ReaderBundle, BUNDLE_DOMAIN_V2,
        BUNDLE_DOMAIN_V3,
    };
    use crate::keys::SIGNATURE_LEN;
    let keys = BundleVectorKeys::draw(seed ^ 0xb3);
    let (root, publisher, ids) = (&keys.root, keys.publisher, &keys.ids);
    let tariff = br#"{"note":"vector"}"#.to_vec();
    let digest = tariff_digest(&tariff);
    let base_hash = deny_digest(&ids[..2]);
    let published = |deny, deny_base_hash, by_digest: bool| PublishedBundle {
        publisher,
        deny_base_hash,
        tariff_by_digest: by_digest.then_some(digest),
        bundle: ReaderBundle {
            bundle_version: 43,
            server_time_unix_s: NOW_UNIX_S,
            trust: keys.trust(),
            deny,
            tariff: if by_digest { vec![] } else { tariff.clone() },
        },
    };
    let delta = DenyUpdate::Delta {
        base_version: 42,
        add: vec![ids[2]],
        remove: vec![ids[0]],
    };
    let by_digest = published(delta, Some(base_hash), true)
        .sign_v3(root)
        .expect("vector signs");
    let snapshot = published(DenyUpdate::Snapshot(ids.clone()), None, false)
        .sign_v3(root)
        .expect("vector signs");
    let resign =
        |bytes: &[u8], domain: &[u8], edit: &dyn Fn(&mut Vec<u8>)| keys.resign(bytes, domain, edit);
    // The by-digest bundle ends with the digest and its kind byte.
    let kind_at = by_digest.len() - SIGNATURE_LEN - 1;
    let vector = |name: &str, description: &str, bytes: &[u8], expect: &str| BundleVector {
        name: name.into(),
        description: description.into(),
        bundle_hex: hex::encode(bytes),
        expect: expect.into(),
        publisher: (expect == "ok").then(|| hex::encode(publisher)),
        deny_base_hash: (name == "tariff_by_digest").then(|| hex::encode(base_hash)),
        tariff_by_digest: (name == "tariff_by_digest").then(|| hex::encode(digest)),
    };
    let mut t = by_digest.clone();
    t[kind_at - 1] ^= 1;
    let vectors = vec![
        vector(
            "tariff_by_digest",
            "a delta from version 42 (ids 01.., 02..: add 03.., remove 01..) naming its tariff by digest",
            &by_digest,
            "ok",
        ),
        vector(
            "tariff_bytes",
            "a snapshot of three ids with the tariff's bytes",
            &snapshot,
            "ok",
        ),
        vector(
            "tampered_tariff_digest",
            "the tariff digest changed after signing",
            &t,
            "bad_signature",
        ),
        vector(
            "tariff_bytes_differ",
            "the last tariff byte changed, re-signed: the bytes no longer hash to the digest",
            &resign(&snapshot, BUNDLE_DOMAIN_V3, &|b| *b.last_mut().unwrap() ^= 1),
            "invalid",
        ),
        vector(
            "tariff_kind_2",
            "tariff kind 2 (only 0 and 1 exist), re-signed",
            &resign(&by_digest, BUNDLE_DOMAIN_V3, &|b| b[kind_at] = 2),
            "invalid",
        ),
        vector(
            "v2_domain",
            "v3 bytes signed under the v2 domain tag",
            &resign(&by_digest, BUNDLE_DOMAIN_V2, &|_| {}),
            "bad_signature",
        ),
        vector(
            "truncated",
            "the tariff kind byte removed, re-signed",
            &resign(&by_digest, BUNDLE_DOMAIN_V3, &|b| {
                b.pop();
            }),
            "malformed",
        ),
    ];
    keys.file("v3 test vectors (SPEC.md §4.2)", seed, vectors)
}

/// The committed JSON text of the bundle v2 or v3 vectors.
pub fn bundles_to_json(file: &BundleVectorFile) -> String {
    let mut s = serde_json::to_string_pretty(file).expect("vectors serialise");
    s.push('\n');
    s
}
