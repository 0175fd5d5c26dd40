//! Deterministic issuers and credentials for tests, benchmarks and
//! simulations: one seeded issuer key, its one-key trust list, and
//! credentials it signs. Never for production keys (the seed is public).

use crate::code::RideCode;
use crate::credential::{Credential, CredentialBody, CredentialId, Profile};
use crate::trust::{IssuerKey, TrustList};
use ed25519_dalek::SigningKey;
use rand_chacha::rand_core::{CryptoRngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

mod deployment;
pub use deployment::{
    deny_filler, deny_snapshot, verified_bundle, TestDeployment, TestWallet, TEST_BUNDLE_TARIFF,
};

/// A seeded issuer with key id 1, trusted forever.
pub struct TestIssuer {
    /// The issuer signing key.
    pub key: SigningKey,
    /// A trust list holding only this key.
    pub trust: TrustList,
    /// The RNG the key came from, for further seeded keys.
    pub rng: ChaCha20Rng,
}

impl TestIssuer {
    /// The issuer key id.
    pub const KEY_ID: u32 = 1;

    /// An issuer whose key (and later keys from `rng`) derive from `seed`,
    /// trusted forever.
    pub fn new(seed: u64) -> TestIssuer {
        Self::with_validity(seed, 0, u64::MAX)
    }

    /// As [`TestIssuer::new`], the key trusted only from
    /// `valid_from_unix_s` to `valid_until_unix_s`.
    ///
    /// # Panics
    /// When the window ends before it starts (a test's own mistake).
    pub fn with_validity(seed: u64, valid_from_unix_s: u64, valid_until_unix_s: u64) -> TestIssuer {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let key = SigningKey::generate(&mut rng);
        let trust = TrustList::new([IssuerKey {
            key_id: Self::KEY_ID,
            public_key: key.verifying_key().to_bytes(),
            valid_from_unix_s,
            valid_until_unix_s,
        }])
        .expect("a fresh key in a non-empty window is a valid trust list");
        TestIssuer { key, trust, rng }
    }

    /// Another seeded key (a device, a reader, a root...).
    pub fn next_key(&mut self) -> SigningKey {
        SigningKey::generate(&mut self.rng)
    }

    /// A credential for `device` valid from `valid_from_unix_s` to
    /// `valid_until_unix_s` (inclusive).
    pub fn credential_between(
        &self,
        device: &SigningKey,
        id: CredentialId,
        profile: Profile,
        valid_from_unix_s: u64,
        valid_until_unix_s: u64,
    ) -> Credential {
        issue(
            &self.key,
            Self::KEY_ID,
            device,
            id,
            profile,
            valid_from_unix_s,
            valid_until_unix_s,
        )
    }

    /// A credential for `device`, valid `now ± window_s`.
    pub fn credential(
        &self,
        device: &SigningKey,
        id: CredentialId,
        profile: Profile,
        now_unix_s: u64,
        window_s: u64,
    ) -> Credential {
        self.credential_between(
            device,
            id,
            profile,
            now_unix_s - window_s,
            now_unix_s + window_s,
        )
    }
}

/// A credential signed by `issuer` (key id `issuer_key_id`) for `device`,
/// valid from `valid_from_unix_s` to `valid_until_unix_s` inclusive: the one
/// way tests, benchmarks and examples build credentials by hand (with an
/// issuer key that is not a [`TestIssuer`]'s, e.g. one a deployment made).
///
/// # Panics
/// When a time does not fit the credential's 32-bit fields (a test's own
/// mistake).
pub fn issue(
    issuer: &SigningKey,
    issuer_key_id: u32,
    device: &SigningKey,
    id: CredentialId,
    profile: Profile,
    valid_from_unix_s: u64,
    valid_until_unix_s: u64,
) -> Credential {
    let t32 = |t: u64| u32::try_from(t).expect("a credential time fits 32 bits");
    Credential::issue_v1(
        CredentialBody {
            issuer_key_id,
            credential_id: id,
            device_public_key: device.verifying_key().to_bytes(),
            profile,
            valid_from_unix_s: t32(valid_from_unix_s),
            valid_until_unix_s: t32(valid_until_unix_s),
        },
        issuer,
    )
}

/// Credential id `n` of a numbered test population: `n` big-endian in the
/// first 8 bytes, the rest zero.
pub fn numbered_credential_id(n: u64) -> CredentialId {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&n.to_be_bytes());
    CredentialId(id)
}

/// A public key a device could present but no honest one makes: the point
/// `[12345]B + T₈` (large order with an order-8 component). It decodes as a
/// key (`keys::parse_public_key` accepts it); issuance must refuse it.
pub fn mixed_order_public_key() -> [u8; 32] {
    use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
    use curve25519_dalek::scalar::Scalar;
    (ED25519_BASEPOINT_POINT * Scalar::from(12_345u64) + EIGHT_TORSION[1])
        .compress()
        .to_bytes()
}

/// `code` (a ride code v1) re-signed by its own `device` with a nonce point
/// `R = [r]B + T` of mixed order, where `T = EIGHT_TORSION[torsion]`
/// (`torsion` in 1..=7; orders 8, 4, 8, 2, 8, 4, 8) and `r` comes from `rng`.
///
/// `s = r + H(R‖A‖M)·a` as in a genuine signature, so `[s]B = R + [H]A − T`:
/// `verify_strict` (cofactorless, single) always refuses it, a cofactorless
/// batch verification accepts it with probability 1/ord(T), a cofactored
/// check always accepts it. Only the holder of the device key can make one:
/// it models a rider colluding with a compromised reader, for tests that
/// settlement refuses whatever a reader must refuse.
///
/// # Panics
/// When `code` is not a parseable ride code or `torsion` is not in 1..=7
/// (a test's own mistake).
pub fn resign_with_mixed_order_r(
    code: &[u8],
    device: &SigningKey,
    torsion: usize,
    rng: &mut impl CryptoRngCore,
) -> Vec<u8> {
    use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
    use curve25519_dalek::scalar::Scalar;
    use sha2::{Digest, Sha512};
    assert!(
        (1..=7).contains(&torsion),
        "torsion index {torsion}: expected 1..=7"
    );
    let parsed = RideCode::from_bytes(code).expect("a ride code v1");
    let message = parsed.device_message();
    let mut wide = [0u8; 64];
    rng.fill_bytes(&mut wide);
    let r = Scalar::from_bytes_mod_order_wide(&wide);
    let big_r = (ED25519_BASEPOINT_POINT * r + EIGHT_TORSION[torsion])
        .compress()
        .to_bytes();
    let k = Scalar::from_hash(
        Sha512::new()
            .chain_update(big_r)
            .chain_update(device.verifying_key().as_bytes())
            .chain_update(&message),
    );
    let s = r + k * device.to_scalar();
    let mut out = code.to_vec();
    let sig_at = out.len() - 64;
    out[sig_at..sig_at + 32].copy_from_slice(&big_r);
    out[sig_at + 32..].copy_from_slice(&s.to_bytes());
    debug_assert_eq!(
        RideCode::from_bytes(&out).map(|c| c.device_message()).ok(),
        Some(message),
        "the signature is the code's last 64 bytes"
    );
    out
}

/// 2026-03-10 00:00 UTC (08:00 in Asia/Shanghai): the start of service day
/// 2026-03-10 of the demo tariff, the day settlement's tests, benchmarks
/// and examples ride on.
pub const DEMO_DAY_T0: u64 = 1_773_100_800;

/// A fixed "now" for tests that need only some valid moment (2027-01-15).
pub const TEST_NOW: u64 = 1_800_000_000;

/// The ed25519 key derived from `seed` (ChaCha20): a device, a reader or
/// an issuer key a test can make again from its number.
pub fn seeded_key(seed: u64) -> SigningKey {
    SigningKey::generate(&mut ChaCha20Rng::seed_from_u64(seed))
}

/// An acknowledgement (SPEC §8) whose two signatures check, its content
/// from arbitrary bytes: for fuzzing and property tests of the parser and
/// the window check that sit behind the signatures, which random bytes
/// never reach. See [`signed_ack_from`].
pub struct SignedAckInput {
    /// The acknowledgement bytes ([`crate::ack::ACK_LEN`]).
    pub bytes: Vec<u8>,
    /// Its embedded certificate.
    pub cert: Vec<u8>,
    /// The deployment root that signed the certificate.
    pub root: SigningKey,
    /// The acknowledgement key that signed the acknowledgement.
    pub ack_key: SigningKey,
}

/// The seed of the root key [`signed_ack_from`] certifies its
/// acknowledgement key with (that key: the next seed).
pub const SIGNED_ACK_ROOT_SEED: u64 = 0xAC0;

/// The certificate window's bytes in a [`signed_ack_from`] input.
const ACK_INPUT_WINDOW_LEN: usize = 16;
/// The acknowledgement's bytes after its version byte in such an input.
const ACK_INPUT_FIELDS_LEN: usize =
    crate::ack::ACK_LEN - 1 - crate::ack::ACK_KEY_CERT_LEN - crate::keys::SIGNATURE_LEN;

/// `input` zero-padded or cut to a whole [`signed_ack_from`] input.
fn ack_input(input: &[u8]) -> [u8; ACK_INPUT_WINDOW_LEN + ACK_INPUT_FIELDS_LEN] {
    let mut padded = [0u8; ACK_INPUT_WINDOW_LEN + ACK_INPUT_FIELDS_LEN];
    let n = input.len().min(padded.len());
    padded[..n].copy_from_slice(&input[..n]);
    padded
}

/// Builds a [`SignedAckInput`] from `input` (zero-padded, extra bytes
/// ignored): 16 bytes of certificate window (`valid_from`, `valid_until`,
/// big-endian), then the acknowledgement's fields after its version byte
/// in wire order (kind, reader id, acknowledged sequence, chain hash,
/// settlement time, request digest: 85 bytes), so any kind byte and any
/// window, inverted ones included, reach the parser.
pub fn signed_ack_from(input: &[u8]) -> SignedAckInput {
    use crate::ack::{ACK_DOMAIN_V1, ACK_KEY_CERT_DOMAIN_V1, ACK_KEY_CERT_V1, ACK_V1};
    use crate::keys::sign_domain;
    let padded = ack_input(input);
    let (window, fields) = padded.split_at(ACK_INPUT_WINDOW_LEN);
    let root = seeded_key(SIGNED_ACK_ROOT_SEED);
    let ack_key = seeded_key(SIGNED_ACK_ROOT_SEED + 1);
    let mut cert = vec![ACK_KEY_CERT_V1];
    cert.extend_from_slice(&ack_key.verifying_key().to_bytes());
    cert.extend_from_slice(window);
    let sig = sign_domain(&root, ACK_KEY_CERT_DOMAIN_V1, &cert);
    cert.extend_from_slice(&sig);
    let mut bytes = vec![ACK_V1];
    bytes.extend_from_slice(fields);
    bytes.extend_from_slice(&cert);
    let sig = sign_domain(&ack_key, ACK_DOMAIN_V1, &bytes);
    bytes.extend_from_slice(&sig);
    SignedAckInput {
        bytes,
        cert,
        root,
        ack_key,
    }
}

/// Checks what [`crate::Ack::verify_v1`] makes of [`signed_ack_from`]`(input)`
/// against what the input says it must be: refused as `kind` when the kind
/// byte is not 0, 1 or 2, else refused as `server_time_unix_s` when that
/// time is outside the certificate's window, else accepted with exactly
/// the input's fields, re-encoding to the same bytes. `Err` names the
/// first disagreement (for the fuzz target and the property test).
pub fn check_signed_ack(input: &[u8]) -> Result<(), String> {
    use crate::ack::{Ack, AckKeyCert};
    use crate::error::FormatError;
    let a = signed_ack_from(input);
    let p = ack_input(input);
    let be = |at: usize| u64::from_be_bytes(p[at..at + 8].try_into().expect("8 bytes"));
    // The fields in wire order: kind u8, reader id u32, sequence u64,
    // chain hash [32], settlement time u64.
    let w = ACK_INPUT_WINDOW_LEN;
    let (from, until, kind) = (be(0), be(8), p[w]);
    let time = be(w + 1 + 4 + 8 + 32);
    let vk = a.root.verifying_key();
    let (cert, _) = AckKeyCert::verify_v1(&a.cert, &vk).map_err(|e| format!("cert: {e}"))?;
    if cert.sign_v1(&a.root) != a.cert {
        return Err("the certificate does not re-encode to its bytes".into());
    }
    let expected_field = if kind > 2 {
        Some("kind")
    } else if time < from || time > until {
        Some("server_time_unix_s")
    } else {
        None
    };
    match (Ack::verify_v1(&a.bytes, &vk), expected_field) {
        (Err(FormatError::Invalid { field, .. }), Some(want)) if field == want => Ok(()),
        (Ok(ack), None) => {
            let again = ack
                .sign_v1(&a.cert, &a.ack_key)
                .map_err(|e| e.to_string())?;
            if again != a.bytes {
                return Err(format!("{ack:?} does not re-encode to its bytes"));
            }
            if ack.kind as u8 != kind || ack.server_time_unix_s != time {
                return Err(format!("{ack:?}: kind {kind}, time {time} expected"));
            }
            Ok(())
        }
        (got, want) => Err(format!("got {got:?}, expected a refusal of {want:?}")),
    }
}

/// `<workspace root>/../shared/corpus/<sub>`, the shared test corpus beside
/// the checkout, or a clear failure naming where it was expected.
///
/// # Panics
/// When that directory or file does not exist.
pub fn corpus_path(sub: &str) -> std::path::PathBuf {
    // crates/fare-credential -> workspace root -> ../shared/corpus
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/corpus")
        .join(sub);
    assert!(
        p.exists(),
        "missing shared corpus at {}: the tests need ../shared/corpus beside the repository checkout",
        p.display()
    );
    p
}

/// Runs a command (a workspace binary under test) and returns its stdout,
/// failing with its stderr when it did not exit 0.
///
/// # Panics
/// When the command cannot start, fails, or prints non-UTF-8.
pub fn run_stdout(cmd: &mut std::process::Command) -> String {
    let out = cmd.output().expect("the command starts");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("stdout is UTF-8")
}

/// Ride records of reader `reader_id` chained from `prev_hash`, sequences
/// from `from_seq`, one per `(reader time, ride code)`; returns them and
/// the hash of the last (the next batch's `prev_hash`).
///
/// # Panics
/// When a record does not encode (a code over its limit: a test's mistake).
pub fn chain_records(
    reader_id: u32,
    from_seq: u64,
    prev_hash: [u8; 32],
    vehicle: &str,
    route: &str,
    codes: &[(u64, Vec<u8>)],
) -> (Vec<crate::RideRecord>, [u8; 32]) {
    let mut prev = prev_hash;
    let mut out = Vec::with_capacity(codes.len());
    for (k, (t, code)) in codes.iter().enumerate() {
        let r = crate::RideRecord {
            reader_id,
            reader_seq: from_seq + k as u64,
            reader_time_unix_s: *t,
            vehicle: vehicle.into(),
            route: route.into(),
            stop: None,
            code: code.clone(),
            prev_hash: prev,
        };
        prev = r.hash().expect("a test record encodes");
        out.push(r);
    }
    (out, prev)
}

/// Copies directory `from` into `to`, recursively (a reader's or
/// settlement's data as a backup or a power cut would leave it).
///
/// # Panics
/// On any I/O error (a test helper).
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// The key [`TestReaderLog::new`] gives reader `reader_id`: `seeded_key(1000 + reader_id)`.
pub fn test_reader_key(reader_id: u32) -> SigningKey {
    seeded_key(1000 + reader_id as u64)
}

/// The `X-Reader-Auth` header value (SPEC §9) of `POST /v1/batches`
/// carrying `body`, signed by `key` as reader `reader_id` at
/// `time_unix_s`. Every call takes a new nonce (a process-wide counter),
/// so two calls are two requests, never a replay.
///
/// # Panics
/// Never for this method and target (both far below their limits).
pub fn batch_request_auth(
    key: &SigningKey,
    reader_id: u32,
    time_unix_s: u64,
    body: &[u8],
) -> String {
    static NONCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let nonce = NONCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    crate::RequestAuth::sign_v1(
        key,
        reader_id,
        time_unix_s,
        nonce,
        "POST",
        crate::request::BATCH_TARGET,
        body,
    )
    .expect("method and target within limits")
    .to_header()
}

/// A reader's log without the reader: real hash-chained records and real
/// reader-signed batches of them, for tests that play a reader (honest or
/// not) against settlement.
#[derive(Clone, Debug)]
pub struct TestReaderLog {
    /// Reader id.
    pub reader_id: u32,
    /// The reader's signing key.
    pub key: SigningKey,
    /// Vehicle written in each record.
    pub vehicle: String,
    /// Route written in each record.
    pub route: String,
    /// The records, sequence 1 first.
    pub log: Vec<crate::RideRecord>,
}

impl TestReaderLog {
    /// An empty log of reader `reader_id` on `route`, key [`test_reader_key`].
    pub fn new(reader_id: u32, route: &str) -> TestReaderLog {
        TestReaderLog {
            reader_id,
            key: test_reader_key(reader_id),
            vehicle: format!("bus-{reader_id}"),
            route: route.into(),
            log: Vec::new(),
        }
    }

    /// Appends an accepted ride (`code` at reader time `t`); returns its sequence.
    pub fn accept(&mut self, code: Vec<u8>, t: u64) -> u64 {
        let seq = self.log.len() as u64 + 1;
        let prev = self.hash_before(seq);
        let (mut recs, _) = chain_records(
            self.reader_id,
            seq,
            prev,
            &self.vehicle,
            &self.route,
            &[(t, code)],
        );
        self.log.append(&mut recs);
        seq
    }

    /// The chain hash before sequence `seq` (the genesis hash before 1).
    pub fn hash_before(&self, seq: u64) -> [u8; 32] {
        match seq {
            0 | 1 => crate::record::genesis_hash(self.reader_id),
            s => self.log[(s - 2) as usize]
                .hash()
                .expect("a test record encodes"),
        }
    }

    /// The signed batch of records `from..=to` (1-based).
    pub fn batch(&self, from: u64, to: u64) -> Vec<u8> {
        crate::Batch {
            reader_id: self.reader_id,
            prev_hash: self.hash_before(from),
            records: self.log[(from - 1) as usize..to as usize].to_vec(),
        }
        .sign_v1(&self.key)
        .expect("a test batch encodes")
    }

    /// The signed batch of the whole log.
    pub fn all(&self) -> Vec<u8> {
        self.batch(1, self.log.len() as u64)
    }

    /// The `X-Reader-Auth` header for posting `body` at `time_unix_s`,
    /// signed with this log's key ([`batch_request_auth`]).
    pub fn batch_request_auth(&self, body: &[u8], time_unix_s: u64) -> String {
        batch_request_auth(&self.key, self.reader_id, time_unix_s, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::verify_ride_code;
    use crate::{DenyList, Policy, RejectReason};
    use ed25519_dalek::Signature;

    /// The re-signed code is exactly what the docs say: refused by the
    /// reader's verifier for every torsion index, while a cofactorless batch
    /// verification accepts an order-2 one about half the time.
    #[test]
    fn mixed_order_code_is_refused_strictly_and_slips_through_batches() {
        let mut issuer = TestIssuer::new(3);
        let device = issuer.next_key();
        let now = 1_800_000_000;
        let cred = issuer.credential(&device, CredentialId([9; 16]), Profile::Adult, now, 3600);
        let mut rng = ChaCha20Rng::seed_from_u64(4);
        let verify = |bytes: &[u8]| {
            verify_ride_code(
                bytes,
                &issuer.trust,
                &DenyList::default(),
                &Policy::default(),
                now,
                None,
            )
        };
        let mut batch_accepted = 0;
        for seq in 1..=64u32 {
            let code = RideCode::sign_v1(&cred, now as u32, seq, &device);
            assert!(verify(code.as_bytes()).is_ok());
            let torsion = if seq <= 7 { seq as usize } else { 4 };
            let bad = resign_with_mixed_order_r(code.as_bytes(), &device, torsion, &mut rng);
            assert_eq!(bad.len(), code.as_bytes().len());
            assert_eq!(
                verify(&bad),
                Err(RejectReason::BadDeviceSignature),
                "seq {seq}"
            );
            let parsed = RideCode::from_bytes(&bad).unwrap();
            let sig = Signature::from_slice(parsed.device_signature()).unwrap();
            let msg = parsed.device_message();
            if ed25519_dalek::verify_batch(&[&msg], &[sig], &[device.verifying_key()]).is_ok() {
                batch_accepted += 1;
            }
        }
        // 57 order-2 codes (each accepted with probability 1/2) plus 7 others:
        // none accepted would happen with probability below 2^-57.
        assert!(batch_accepted > 0);
    }
}
